"""Issue 18, item 11 (403s and bad tokens): refused authorizations and bad or expired tokens were
not audited.  Now each is, rate-limited: one audit row per kind and principal (or address) per
minute, carrying how many refusals it stands for, so a flood cannot fill the trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.server.conftest import Server
from tests.server.qa import add_people, login


def refusals(server: Server, action: str) -> list[dict[str, Any]]:
    with server.admin() as c:
        r = c.get("/v1/audit", params={"object_type": "access", "limit": 1000})
        assert r.status_code == 200, r.text
    return [e for e in r.json()["entries"] if e["action"] == action]


def test_refusals_are_audited_without_filling_the_trail(server: Server, tmp_path: Path) -> None:
    add_people(
        server,
        {
            "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
            "op.a": ("Olga Operator", [("operator", "SITE-A")]),
        },
    )
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer forged"}) as c:
        for _ in range(40):
            assert c.get("/v1/me").status_code == 401
    rows = refusals(server, "token.refused")
    assert len(rows) == 1, rows
    assert rows[0]["actor"] == "127.0.0.1" and rows[0]["new"]["refusals"] == 1
    assert "not valid" in rows[0]["reason"]

    rev, op = login(server, "rev.a"), login(server, "op.a")
    for _ in range(40):
        assert rev.get("/v1/people").status_code == 403
    assert op.get("/v1/audit").status_code == 403
    rows = refusals(server, "authz.refused")
    assert sorted((e["actor"], e["object_id"]) for e in rows) == [
        ("op.a", "GET /v1/audit"),
        ("rev.a", "GET /v1/people"),
    ], rows
    assert all("may not" in e["reason"] for e in rows)
