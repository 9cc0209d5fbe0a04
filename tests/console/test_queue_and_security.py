"""The review queue (the caller's sites only, most exceptions first, filters, counts) in
Chromium, and the console's session, CSRF, headers and hostile input over real HTTP."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.server.qa import EXAMPLES, TEMPORARY, enter_results, example_results, login, sign

from .conftest import PASSWORD, Served, push_batch, sign_in


def csrf_of(page_html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', page_html)
    assert m is not None, "the page has a CSRF field"
    return m.group(1)


def signed_in(served: Served, user: str) -> tuple[httpx.Client, str]:
    """An HTTP client signed in through the console's form; its CSRF token."""
    c = httpx.Client(base_url=served.url, timeout=30)
    token = csrf_of(c.get("/console/signin").text)
    r = c.post("/console/signin", data={"csrf": token, "user_id": user, "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/console/queue", r.text
    return c, csrf_of(c.get("/console/queue").text)


def test_queue_scoped_ordered_filtered_and_counted(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_batch(served, tmp_path, "B-Q1", deviations=(("DEV-1", "major"), ("DEV-2", "minor")))
    push_batch(served, tmp_path, "B-Q2", deviations=())
    push_batch(served, tmp_path, "B-Q3", site="SITE-B", deviations=())
    with login(served.server, "rev.a") as c:
        assert enter_results(c, "B-Q2", example_results()).status_code == 201
        assert sign(c, "B-Q2", "rev.a", "reviewed").status_code == 201  # now in review

    pg = pages("global")
    sign_in(pg, served.url, "qa.global")
    pg.screens.check("queue-all")
    ids = pg.locator("#queue tbody tr td:first-child").all_inner_texts()
    assert ids == ["B-Q1", "B-Q2", "B-Q3"]  # most exceptions first (3, then 1 and 1)
    counts = pg.inner_text("#queue-counts")
    assert "3 batches" in counts and "2 awaiting review" in counts and "1 in review" in counts
    pg.select_option("#q-site", "SITE-B")
    pg.click("#queue-filters button")
    assert pg.locator("#queue tbody tr td:first-child").all_inner_texts() == ["B-Q3"]
    pg.select_option("#q-site", "")
    pg.select_option("#q-state", "in_review")
    pg.click("#queue-filters button")
    pg.screens.check("queue-filtered")
    assert pg.locator("#queue tbody tr td:first-child").all_inner_texts() == ["B-Q2"]
    pg.select_option("#q-state", "")
    pg.select_option("#q-age", "1")  # completed more than a day ago: none
    pg.click("#queue-filters button")
    assert pg.locator("#queue").count() == 0 and "No batch matches" in pg.inner_text("main")

    # Paged (a page of one here): most exceptions first across pages, the filters kept.
    from server.console import pages as console_pages

    size, console_pages.QUEUE_PAGE = console_pages.QUEUE_PAGE, 1
    try:
        pg.goto(f"{served.url}/console/queue?site=SITE-A")
        assert pg.locator("#queue tbody tr td:first-child").all_inner_texts() == ["B-Q1"]
        assert pg.locator("#queue-prev").count() == 0
        pg.click("#queue-next")
        assert pg.locator("#queue tbody tr td:first-child").all_inner_texts() == ["B-Q2"]
        assert "site=SITE-A" in pg.url and "2 to 2 shown" in pg.inner_text("#queue-counts")
        pg.screens.check("queue-paged")
        assert pg.locator("#queue-next").count() == 0 and pg.locator("#queue-prev").count() == 1
    finally:
        console_pages.QUEUE_PAGE = size

    # A reviewer of site A sees site A only, and may not ask for site B.
    rev = pages("site-a")
    sign_in(rev, served.url, "rev.a")
    assert rev.locator("#queue tbody tr td:first-child").all_inner_texts() == ["B-Q1", "B-Q2"]
    assert rev.locator("#q-site option").all_inner_texts() == ["all my sites", "SITE-A"]
    r = rev.goto(f"{served.url}/console/queue?site=SITE-B")
    assert r.status == 403 and "rev.a may not queue.read at site SITE-B" in rev.inner_text("main")
    r = rev.goto(f"{served.url}/console/queue?state=shipped")
    assert r.status == 422 and "state 'shipped' is not one of" in rev.inner_text("#refusal")


def test_session_csrf_headers_and_hostile_input(served: Served, tmp_path: Path) -> None:
    push_batch(served, tmp_path, "B-SEC", deviations=(("DEV-1", "minor"),))
    with httpx.Client(base_url=served.url) as anon:
        r = anon.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/console/queue"
        r = anon.get("/console/queue")
        assert r.status_code == 303 and r.headers["location"] == "/console/signin"
        r = anon.get("/console/signin")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
        pre = r.headers["set-cookie"].lower()
        assert "httponly" in pre and "samesite=strict" in pre and "secure" not in pre
        # No CSRF token, or another session's: refused before the password is looked at.
        for token in ("", "0" * 64):
            r = anon.post(
                "/console/signin",
                data={"csrf": token, "user_id": "rev.a", "password": PASSWORD},
            )
            assert r.status_code == 403 and "CSRF" in r.text
            assert "console_session" not in r.headers.get("set-cookie", "")
        # A password in the query string is not read.
        token = csrf_of(anon.get("/console/signin").text)
        r = anon.post(
            f"/console/signin?password={PASSWORD}", data={"csrf": token, "user_id": "rev.a"}
        )
        assert r.status_code == 422 and "password is required" in r.text
        assert PASSWORD not in r.text

    c, token = signed_in(served, "rev.a")
    try:
        session = c.cookies["console_session"]
        # An over-long reason is refused naming the limit; nothing is closed.
        r = c.post(
            "/console/batches/B-SEC/deviations/close",
            data={"csrf": token, "deviation": "DEV-1", "reason": "x" * 2001, "password": PASSWORD},
        )
        assert r.status_code == 422 and "reason: at most 2000 characters" in r.text
        # Hostile text is escaped, never markup.
        r = c.post(
            "/console/batches/B-SEC/deviations/close",
            data={"csrf": token, "deviation": "<script>x</script>", "reason": "r",
                  "password": PASSWORD},
        )  # fmt: skip
        assert r.status_code == 404 and "<script>x" not in r.text and "&lt;script&gt;" in r.text
        # htmx sends the token as a header: accepted as the form field is.
        r = c.post(
            "/console/batches/B-SEC/deviations/close",
            data={"deviation": "DEV-9", "reason": "r", "password": PASSWORD},
            headers={"X-CSRF-Token": token},
        )
        assert r.status_code == 404 and "batch B-SEC has no deviation DEV-9" in r.text
        r = c.get("/console/batches/NOPE")
        assert r.status_code == 404 and "batch NOPE has no events on this server" in r.text
        r = c.get("/console/static/webui/%2e%2e/%2e%2e/server/settings.py")
        assert r.status_code == 404
        assert c.get("/console/static/webui/webui.css").status_code == 200
        # Sign-out ends the server's session: the token is refused by the API too.
        assert (
            httpx.get(
                served.url + "/v1/me", headers={"Authorization": f"Bearer {session}"}
            ).status_code
            == 200
        )
        assert c.post("/console/signout", data={"csrf": token}).status_code == 303
        r = httpx.get(served.url + "/v1/me", headers={"Authorization": f"Bearer {session}"})
        assert r.status_code == 401
    finally:
        c.close()
    with login(served.server, "qa.global") as api:
        devs = api.get("/v1/batches/B-SEC").json()["deviations"]
        assert [d["open"] for d in devs] == [True]


def test_cookie_is_secure_over_https(served: Served) -> None:
    tc = TestClient(served.server.app, base_url="https://console.test", follow_redirects=False)
    r = tc.get("/console/signin")
    assert "secure" in r.headers["set-cookie"].lower()
    r = tc.post(
        "/console/signin",
        data={"csrf": csrf_of(r.text), "user_id": "rev.a", "password": PASSWORD},
    )
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith("console_session=") and "secure" in cookie and "httponly" in cookie


def test_audit_trail_browser_and_export(served: Served, pages: Any) -> None:
    pg = pages("auditor")
    sign_in(pg, served.url, "aud")
    pg.click("nav.screens a[href='/console/audit']")
    pg.wait_for_selector("#audit")
    pg.fill("#a-type", "person")
    pg.fill("#a-actor", "system")
    pg.click("#audit-filters button")
    pg.wait_for_selector("#audit")
    pg.screens.check("audit")
    rows = pg.locator("#audit tbody tr").all_inner_texts()
    assert rows and all("system" in r and "person" in r for r in rows)
    assert any("person.created" in r for r in rows)
    r = pg.request.get(f"{served.url}{pg.get_attribute('#audit-export', 'href')}")
    assert r.status == 200
    lines = [json.loads(x) for x in r.text().splitlines()]
    assert len(lines) == len(rows) and {e["object_type"] for e in lines} == {"person"}
    assert all(len(e["hash"]) == 64 for e in lines)
    assert pg.goto(f"{served.url}/console/audit?after=x").status == 422
    pg.click("nav.screens a[href='/console/specs']")
    pg.wait_for_selector("#specs")
    pg.screens.check("specs")
    assert pg.locator("#spec-check").count() == 0  # an auditor publishes nothing

    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    assert rev.locator("nav.screens a[href='/console/audit']").count() == 0
    assert rev.goto(f"{served.url}/console/audit").status == 403
    assert rev.request.get(f"{served.url}/console/audit/export.jsonl").status == 403


def test_people_administered_through_the_service(served: Served, pages: Any) -> None:
    adm = pages("admin")
    sign_in(adm, served.url, "admin.ann")
    adm.click("nav.screens a[href='/console/people']")
    adm.wait_for_selector("#people")
    adm.screens.check("people")
    adm.fill("#c-uid", "rev.c")
    adm.fill("#c-name", "Cora Checker")
    adm.fill("#c-pw", TEMPORARY)
    adm.select_option("#c-role", "qa_reviewer")
    adm.fill("#c-site", "SITE-A")
    adm.fill("#c-reason", "new reviewer")
    adm.click("#c-submit")
    adm.wait_for_selector(".banner.ok")
    row = adm.locator("#people tr", has_text="rev.c").inner_text()
    assert "must change password" in row and "qa_reviewer (SITE-A)" in row
    # No one administers their own access (the service's rule, in its words).
    adm.select_option("#p-uid", "admin.ann")
    adm.select_option("#p-action", "status")
    adm.select_option("#p-status", "disabled")
    adm.fill("#p-reason", "test")
    adm.click("#p-submit")
    assert "may not change the status of their own account" in adm.inner_text(".banner.refusal")
    adm.select_option("#p-uid", "rev.c")
    adm.select_option("#p-action", "status")
    adm.select_option("#p-status", "disabled")
    adm.fill("#p-reason", "left the company")
    adm.click("#p-submit")
    adm.wait_for_selector(".banner.ok")
    assert "disabled" in adm.locator("#people tr", has_text="rev.c").inner_text()
    with httpx.Client(base_url=served.url) as c:
        token = csrf_of(c.get("/console/signin").text)
        r = c.post(
            "/console/signin", data={"csrf": token, "user_id": "rev.c", "password": TEMPORARY}
        )
        assert r.status_code == 401 and "user id or password is wrong" in r.text

    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    assert rev.locator("nav.screens a[href='/console/people']").count() == 0
    assert rev.goto(f"{served.url}/console/people").status == 403


def test_a_specification_checked_then_published(served: Served) -> None:
    commercial = (EXAMPLES / "cd19_commercial.yaml").read_text()
    loose = commercial.replace('viability: {limit: {min: "80"}}', 'viability: {limit: {min: "60"}}')
    assert loose != commercial
    c, token = signed_in(served, "qa.global")
    try:
        r = c.post(
            "/console/specs/check",
            data={"csrf": token},
            files={"spec_file": ("loose.yaml", loose.encode(), "text/yaml")},
        )
        assert r.status_code == 422 and "loosens the baseline" in r.text
        academic = (EXAMPLES / "cd19_poc_academic.yaml").read_bytes()
        r = c.post(
            "/console/specs/check",
            data={"csrf": token},
            files={"spec_file": ("academic.yaml", academic, "text/yaml")},
        )
        assert r.status_code == 200 and "passes the checks" in r.text
        m = re.search(r'name="content" value="([^"]+)"', r.text)
        assert m is not None
        content = html.unescape(m.group(1))
        with login(served.server, "qa.global") as api:
            before = len(api.get("/v1/specs").json())
        r = c.post(
            "/console/specs/publish",
            data={"csrf": token, "content": content, "reason": "academic protocol v1"},
        )
        assert r.status_code == 200 and " published" in r.text, r.text
        with login(served.server, "qa.global") as api:
            specs = [f"{x['spec_id']}@{x['version']}" for x in api.get("/v1/specs").json()]
            assert len(specs) == before + 1
        # Compared: the academic and the commercial specification differ; one with itself not.
        r = c.get("/console/specs/compare", params={"a": specs[0], "b": specs[1]})
        assert r.status_code == 200 and "difference" in r.text
        assert "<td>viability</td>" in r.text and "IMPD P.5.1" in r.text
        r = c.get("/console/specs/compare", params={"a": specs[0], "b": specs[0]})
        assert "0 differences" in r.text and "No difference" in r.text
        r = c.get("/console/specs/compare", params={"a": specs[0], "b": "NOPE@9"})
        assert r.status_code == 404 and "NOPE v9 is not published" in r.text
    finally:
        c.close()
    rev, rtoken = signed_in(served, "rev.a")
    try:
        r = rev.post(
            "/console/specs/check",
            data={"csrf": rtoken},
            files={"spec_file": ("academic.yaml", academic, "text/yaml")},
        )
        assert r.status_code == 403 and "may not spec.publish" in r.text
    finally:
        rev.close()
