"""The kiosk's security over real HTTP (uvicorn): the session cookie's flags, CSRF on every
POST, the idle timeout, no password in a URL or a log, hostile input shown as text, and the
headers that keep the page to its own scripts."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from edge.kiosk.app import KioskSettings
from tests.kiosk.conftest import COI, PW, Served

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(r: httpx.Response) -> str:
    m = CSRF.search(r.text)
    assert m, r.text[:500]
    return m.group(1)


def signed_in(base: str, user: str = "op.alice") -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=base)
    token = csrf_of(c.get("/signin"))
    r = c.post("/signin", data={"csrf": token, "user_id": user})
    assert "Password for" in r.text
    r = c.post("/signin/password", data={"csrf": token, "password": PW[user]})
    assert r.status_code == 303 and r.headers["location"] == "/batches", r.text[:300]
    r = c.get("/batches")
    return c, csrf_of(r)


def start(c: httpx.Client, token: str, batch: str = "B1") -> None:
    r = c.post(
        "/batches",
        data={"csrf": token, "batch_id": batch, "coi": COI, "password": PW["op.alice"]},
    )
    assert r.status_code == 303, r.text[:500]


def test_session_cookie_is_httponly_and_strict(kiosk: Served) -> None:
    r = httpx.get(kiosk.url + "/signin")
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain HTTP on 127.0.0.1 ...


def test_secure_cookie_when_served_over_tls(station: Any) -> None:
    from edge.kiosk.app import create_app

    served = Served(create_app(station, KioskSettings(secure_cookies=True)))
    try:
        cookie = httpx.get(served.url + "/signin").headers["set-cookie"].lower()
        assert "; secure" in cookie  # ... and Secure once the station file says TLS
    finally:
        served.stop()


POSTS = [
    ("/signin", {"user_id": "op.alice"}),
    ("/batches", {"batch_id": "B2", "coi": COI, "password": PW["op.alice"]}),
    ("/b/B1/step/scan", {"code": COI}),
    ("/b/B1/step/value", {"name": "apheresis_volume", "value": "220"}),
    ("/b/B1/step/sign", {"password": PW["op.alice"]}),
    ("/b/B1/step/verify", {"user_id": "op.bob", "password": PW["op.bob"]}),
    ("/b/B1/step/calculate", {}),
    ("/b/B1/step/correct", {"key": "x:y", "value": "1", "reason": "r", "password": "p"}),
    ("/b/B1/deviations/raise", {"reason": "forged"}),
    ("/b/B1/deviations/comment", {"deviation_id": "DEV-B1-001", "comment": "forged"}),
    ("/b/B1/labels/print", {"kind": "apheresis_bag", "count": "5"}),
    ("/b/B1/labels/reconcile", {}),
    ("/b/B1/handoff/record", {"from_party": "A", "to_party": "B", "place": "P"}),
    ("/signout", {}),
]


def test_every_post_needs_the_sessions_csrf_token(kiosk: Served, station: Any) -> None:
    c, token = signed_in(kiosk.url)
    start(c, token)
    head = station.engine.ledger.head
    for path, data in POSTS:
        for forged in ({}, {"csrf": "not-the-token"}, {"csrf": token[:-1]}):
            r = c.post(path, data={**data, **forged})
            assert r.status_code == 403, (path, forged, r.status_code)
            assert "security token does not match" in r.text
    # another browser's valid token is no good in this session either
    _other, other_token = signed_in(kiosk.url, "op.bob")
    r = c.post("/b/B1/step/scan", data={"code": COI, "csrf": other_token})
    assert r.status_code == 403
    assert station.engine.ledger.head == head  # nothing recorded
    # htmx sends the token as a header: accepted
    r = c.post("/b/B1/step/scan", data={"code": COI}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and "patient material accepted" in r.text


def test_no_password_in_a_url_or_a_log(
    kiosk: Served, station: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c, token = signed_in(kiosk.url)
    start(c, token)
    c.post("/b/B1/step/scan", data={"csrf": token, "code": COI})
    r = c.post("/b/B1/step/sign", data={"csrf": token, "password": "wrong-" + PW["op.alice"]})
    assert "wrong password for user op.alice" in r.text
    assert PW["op.alice"] not in r.text
    for page in ("/batches", "/b/B1/step", "/b/B1/history"):
        html = c.get(page).text
        assert PW["op.alice"] not in html
        for form in re.findall(r"<form[^>]*>", html):
            assert 'method="post"' in form, form  # passwords only ever in a POST body
    assert PW["op.alice"] not in caplog.text
    # a password sent in a URL is not taken from there
    r = c.get("/signin", params={"password": PW["op.alice"], "user_id": "op.alice"})
    assert "Sign in" in r.text and c.get("/batches").status_code == 200


def test_sign_in_needs_the_right_password_and_counts_failures(kiosk: Served, station: Any) -> None:
    c = httpx.Client(base_url=kiosk.url)
    token = csrf_of(c.get("/signin"))
    r = c.post("/signin", data={"csrf": token, "user_id": "op.nobody"})
    assert "is not a user of this station" in r.text and "Password for" not in r.text
    c.post("/signin", data={"csrf": token, "user_id": "op.alice"})
    r = c.post("/signin/password", data={"csrf": token, "password": "guess"})
    assert r.status_code == 200 and "wrong password for user op.alice" in r.text
    assert c.get("/batches", follow_redirects=False).status_code == 303  # still signed out
    assert station.engine.ledger.get_meta("fails:op.alice") == "1"


def test_sign_in_replaces_the_session_id(kiosk: Served) -> None:
    c = httpx.Client(base_url=kiosk.url)
    token = csrf_of(c.get("/signin"))
    before = c.cookies["kiosk_session"]
    c.post("/signin", data={"csrf": token, "user_id": "op.alice"})
    c.post("/signin/password", data={"csrf": token, "password": PW["op.alice"]})
    after = c.cookies["kiosk_session"]
    assert after != before
    fixated = httpx.Client(base_url=kiosk.url, cookies={"kiosk_session": before})
    assert fixated.get("/batches", follow_redirects=False).headers["location"] == "/signin"


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_session_ends_after_fifteen_idle_minutes(station: Any) -> None:
    from edge.kiosk.app import create_app

    mono = FakeMonotonic()
    served = Served(create_app(station, KioskSettings(monotonic=mono)))
    try:
        c, token = signed_in(served.url)
        mono.t += 14 * 60 + 59
        assert c.get("/batches").status_code == 200  # activity: the idle time starts again
        mono.t += 15 * 60 + 1
        r = c.get("/batches", follow_redirects=False)
        assert r.headers["location"] == "/signin"
        r = c.get("/signin")
        assert "Your session ended after 15 minutes without activity" in r.text
        r = c.post("/b/B1/step/scan", data={"csrf": token, "code": COI}, follow_redirects=False)
        assert r.status_code == 303  # nothing can be done in the ended session
    finally:
        served.stop()


def test_hostile_input_is_shown_as_text(kiosk: Served, station: Any) -> None:
    c, token = signed_in(kiosk.url)
    r = c.post(
        "/batches",
        data={"csrf": token, "batch_id": "<script>x</script>", "coi": COI, "password": "p"},
    )
    assert "batch id &#39;&lt;script&gt;x&lt;/script&gt;&#39; is not valid" in r.text
    assert "<script>x" not in r.text
    start(c, token)
    evil = '<img src=x onerror="alert(1)">'
    r = c.post("/b/B1/deviations/raise", data={"csrf": token, "reason": evil})
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in r.text and evil not in r.text
    r = c.post("/b/B1/step/scan", data={"csrf": token, "code": "x" * 5000})
    assert "code is longer than 2000 characters" in r.text
    r = c.get("/b/..%2F..%2Fetc/step")
    assert r.status_code == 404
    r = c.get("/b/NOPE/step")
    assert r.status_code == 404 and "batch NOPE has not been started on this unit" in r.text


def test_pages_allow_only_their_own_scripts(kiosk: Served) -> None:
    r = httpx.get(kiosk.url + "/signin")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert "https://" not in r.text and "http://" not in r.text.replace(
        "http://www.w3.org", ""
    )  # nothing from a CDN


def test_health_is_the_stations(kiosk: Served, station: Any) -> None:
    r = httpx.get(kiosk.url + "/health")
    assert r.json() == station.health()


def test_any_text_is_recorded_as_given_or_refused_with_nothing_recorded(
    kiosk: Served, station: Any
) -> None:
    """Whatever a person types as a deviation's reason (any Unicode, markup, control characters):
    either it is recorded exactly (trimmed) and shown escaped, or it is refused in a banner and
    nothing is recorded."""
    from html import escape

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    c, token = signed_in(kiosk.url)
    start(c, token)
    ledger = station.engine.ledger

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(min_size=0, max_size=120))
    def law(reason: str) -> None:
        before = station.engine.state("B1").deviations
        head = ledger.head
        r = c.post("/b/B1/deviations/raise", data={"csrf": token, "reason": reason})
        assert r.status_code == 200
        after = station.engine.state("B1").deviations
        if len(after) == len(before) + 1:
            new = next(d for k, d in after.items() if k not in before)
            assert new.reason == reason.strip()
            assert escape(new.reason, quote=False) in r.text.replace("&#39;", "'").replace(
                "&#34;", '"'
            )
        else:
            assert ledger.head == head  # refused: nothing recorded
            assert 'class="banner refusal' in r.text

    law()
