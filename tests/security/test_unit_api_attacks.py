"""Attacks on the unit API and the server's edges (issues 18 and 19), over HTTP against the real
server: stalling a unit's sync without its key, floods of bad signatures and replays, bodies too
large or too deep on any route, a 422 that echoed a password, QA password hashes sent to units,
a short admin token, and units of a new site enrolled at once."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from ebr_core.keys import UnitSigner
from ebr_core.requestsig import sign_request
from server.app import create_app
from server.db import make_engine, migrate
from server.settings import Settings
from tests.server.conftest import BACKENDS, Server, server_settings, start_server
from tests.server.qa import add_people

SECRET = "Correct-Horse-Battery-Staple-9"


def signed_get(
    server: Server, signer: UnitSigner, what: str = "head", *, claim: UnitSigner | None = None
) -> httpx.Request:
    """A signed GET; ``claim``: name that unit's key in the headers (a forged signature)."""
    path = f"/v1/units/{signer.unit_id}/{what}"
    h = sign_request(signer, "GET", path, b"", timestamp=int(time.time()),
                     nonce=secrets.token_hex(16))  # fmt: skip
    if claim is not None:
        h = replace(h, key_id=claim.key_id)
    return httpx.Request("GET", server.url + path, headers=h.as_dict())


def send(req: httpx.Request) -> httpx.Response:
    with httpx.Client() as c:
        return c.send(req)


@pytest.fixture
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A server whose per-unit budget is small (3 requests, then one every 2 s) and whose
    refusal audit window is 2 s."""
    settings = server_settings("sqlite", request, tmp_path, rate_per_second=0.5, rate_burst=3,
                               failure_audit_interval_s=2)  # fmt: skip
    with start_server(settings) as srv:
        yield srv


# -- 2. rate limit before authentication ------------------------------------------------------


def test_nobody_without_the_key_can_spend_a_units_budget(limited: Server) -> None:
    unit = UnitSigner.generate("UNIT-R")
    limited.enrol(unit)
    forger = UnitSigner.generate("UNIT-R")  # the unit's id, not its key
    answers = [send(signed_get(limited, forger, claim=unit)).status_code for _ in range(10)]
    answers += [send(signed_get(limited, forger)).status_code for _ in range(10)]
    assert answers == [401] * 20
    # The unit's own budget is untouched ...
    assert [send(signed_get(limited, unit)).status_code for _ in range(3)] == [200] * 3
    # ... and still limits the unit itself once its signature has verified.
    r = send(signed_get(limited, unit))
    assert r.status_code == 429 and "unit UNIT-R sends more than" in r.json()["detail"]


def test_refused_requests_are_limited_per_address(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Checked before the signature, spent only by refused requests: good units behind one
    address (NAT) are never stopped by it, a flood of bad requests is."""
    settings = server_settings("sqlite", request, tmp_path, address_rate_burst=5,
                               address_rate_per_second=0.01)  # fmt: skip
    with start_server(settings) as srv, httpx.Client(base_url=srv.url) as c:
        unit = UnitSigner.generate("UNIT-NAT")
        srv.enrol(unit)
        assert [send(signed_get(srv, unit)).status_code for _ in range(10)] == [200] * 10
        codes = [c.get("/v1/units/UNIT-X/head").status_code for _ in range(8)]
        assert codes == [401] * 5 + [429] * 3
        r = send(signed_get(srv, unit))
        assert r.status_code == 429 and "client address" in r.json()["detail"]


def test_naming_a_revoked_key_raises_no_alert_flood(server: Server) -> None:
    unit = UnitSigner.generate("UNIT-RV")
    server.enrol(unit)
    with server.admin() as c:
        assert c.post("/admin/units/UNIT-RV/revoke", json={"reason": "stolen"}).status_code == 200
    forger = UnitSigner.generate("UNIT-RV")
    assert [send(signed_get(server, forger, claim=unit)).status_code for _ in range(10)] == [
        401
    ] * 10
    assert [send(signed_get(server, unit)).status_code for _ in range(5)] == [403] * 5
    with server.admin() as c:
        kinds = [a["kind"] for a in c.get("/admin/alerts").json()]
    assert kinds.count("unit.revoked_request") == 1


# -- 8. refused signatures and replays are audited, rate-limited --------------------------------


def audit_rows(server: Server, unit_id: str) -> list[dict[str, Any]]:
    with server.admin() as c:
        r = c.get("/v1/audit", params={"object_type": "unit", "object_id": unit_id})
        assert r.status_code == 200, r.text
        return [e for e in r.json()["entries"] if e["action"].startswith("unit.")]


def test_signature_failures_and_replays_are_audited_without_flooding(limited: Server) -> None:
    unit = UnitSigner.generate("UNIT-AU")
    limited.enrol(unit)
    forger = UnitSigner.generate("UNIT-AU")
    t0 = time.monotonic()
    for _ in range(30):
        assert send(signed_get(limited, forger, claim=unit)).status_code == 401
    elapsed = time.monotonic() - t0
    rows = [e for e in audit_rows(limited, "UNIT-AU") if e["action"] == "unit.signature_refused"]
    # At most one row per window (2 s here), not one per refusal ...
    assert 1 <= len(rows) <= elapsed / 2 + 1 and len(rows) < 30
    assert rows[0]["actor"] == "address 127.0.0.1" and "does not verify" in rows[0]["reason"]
    assert rows[0]["new"]["refusals"] == 1
    time.sleep(2.1)
    assert send(signed_get(limited, forger)).status_code == 401
    rows = [e for e in audit_rows(limited, "UNIT-AU") if e["action"] == "unit.signature_refused"]
    # ... and every refusal is counted in one of them.
    assert sum(e["new"]["refusals"] for e in rows) == 31

    captured = signed_get(limited, unit)
    assert send(captured).status_code == 200
    t0 = time.monotonic()
    replays = [send(captured) for _ in range(10)]
    elapsed = time.monotonic() - t0
    assert {r.status_code for r in replays} == {409}
    rows = [e for e in audit_rows(limited, "UNIT-AU") if e["action"] == "unit.request_replayed"]
    assert 1 <= len(rows) <= elapsed / 2 + 1 and len(rows) < 10
    assert "replayed request" in rows[0]["reason"]


# -- 5. body size and JSON depth on every route -----------------------------------------------


def test_bodies_over_the_limit_are_refused_on_every_route(server: Server) -> None:
    limit = getattr(server.settings, "max_api_body_bytes", 1024 * 1024)  # (the default)
    big = b'{"user_id":"x","password":"' + b"a" * (limit + 10) + b'"}'

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    with httpx.Client(base_url=server.url) as c:
        for path in ("/v1/auth/token", "/v1/people", "/admin/units"):
            r = c.post(path, content=big, headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.text)
            assert f"request body over {limit} bytes" in r.json()["detail"]
            r = c.post(path, content=chunks(), headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.text)
        deep = b'{"user_id":' + b"[" * 900 + b"]" * 900 + b',"password":"x"}'
        r = c.post("/v1/auth/token", content=deep, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "nested deeper than 64 levels" in r.json()["detail"]
        ok = c.post("/v1/auth/token", json={"user_id": "nobody", "password": "x"})
        assert ok.status_code in (401, 422), ok.text  # an ordinary body is served as before


# -- 6. a 422 never echoes what was submitted ---------------------------------------------------


def test_validation_errors_never_echo_the_input(server: Server) -> None:
    with httpx.Client(base_url=server.url) as c:
        for body in ([{"user_id": "rev.a", "password": SECRET}],
                     {"user_id": ["rev.a"], "password": SECRET, "extra": SECRET}):  # fmt: skip
            r = c.post("/v1/auth/token", json=body)
            assert r.status_code == 422, r.text
            assert SECRET not in r.text
            problem = r.json()
            assert problem["type"] == "https://ctgtp.dev/problems/validation", problem
            errors = problem["errors"]
            assert errors and all(set(e) == {"loc", "msg", "type"} for e in errors), errors
        with server.admin() as admin:
            r = admin.post("/v1/people", json={"user_id": "x.y", "printed_name": ["X"],
                                               "password": SECRET, "roles": "operator"})  # fmt: skip
            assert r.status_code == 422 and SECRET not in r.text


# -- 7. units receive only operator credentials -------------------------------------------------


def test_units_receive_only_operators_hashes(server: Server) -> None:
    add_people(server, {
        "op.only": ("Olga Operator", [("operator", "SITE-A")]),
        "op.rev": ("Oscar Also-Reviewer", [("operator", "SITE-A"), ("qa_reviewer", "SITE-B")]),
        "op.adm": ("Omar Also-Admin", [("operator", "*"), ("admin", "SITE-C")]),
        "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
    })  # fmt: skip
    unit = UnitSigner.generate("UNIT-OPS")
    server.enrol(unit)
    r = send(signed_get(server, unit, "operators"))
    assert r.status_code == 200, r.text
    assert [u["user_id"] for u in r.json()["users"]] == ["op.only"]


# -- 10. the admin token ------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["...", "short-token", "x" * 31])
def test_a_short_admin_token_stops_the_server(tmp_path: Path, token: str) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", data_dir=tmp_path / "d",
                        admin_token=token)  # fmt: skip
    with pytest.raises(ValueError, match="at least 32 are required"):
        create_app(settings)
    migrate(make_engine(settings.database_url))
    create_app(settings.model_copy(update={"admin_token": ""}))  # off: allowed
    create_app(settings.model_copy(update={"admin_token": secrets.token_urlsafe(32)}))


# -- 11. (issue 19) units of a new site enrolled at once ----------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_units_of_a_new_site_enrolled_at_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with start_server(server_settings(backend, request, tmp_path)) as srv:
        for attempt in range(3):
            units = [UnitSigner.generate(f"UNIT-{attempt}-{i}") for i in range(12)]
            site = f"SITE-NEW-{attempt}"

            def enrol(u: UnitSigner, site: str = site) -> int:
                with srv.admin() as c:
                    return c.post("/admin/units", json={"site_id": site, "unit_id": u.unit_id,
                                  "public_key": u.public.to_json().decode()}).status_code  # fmt: skip

            with ThreadPoolExecutor(12) as pool:
                assert list(pool.map(enrol, units)) == [201] * 12
            # The same unit twice at once: one enrolment, one clean 409.
            twin = UnitSigner.generate(f"UNIT-TWIN-{attempt}")
            with ThreadPoolExecutor(2) as pool:
                assert sorted(pool.map(enrol, [twin, twin])) == [201, 409]
