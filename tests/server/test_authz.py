"""The authorization matrix: every endpoint x every role x own site / other site / every site,
through the real API.  Bodies are empty, so an allowed call stops at validation (422) and a
refused one at the guard (403) without changing anything.  What each route requires is read
from the app's routes (their ``require(...)`` dependencies), not from a table kept beside them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from server.app import create_app
from server.db import make_engine, migrate
from server.people.auth import Requirement, Scope, requirement_of
from server.people.service import ROLES, Principal
from server.settings import Settings

from .conftest import Server
from .qa import (
    add_people,
    enter_results,
    example_results,
    login,
    publish_spec,
    push_batch,
    spec_content,
)

UNSIGNED_PUBLIC = {
    ("GET", "/health"),
    ("GET", "/server-key"),
    ("POST", "/v1/auth/token"),
    ("POST", "/v1/auth/password"),
}
UNIT_SIGNED = re.compile(r"^/v1/units/\{unit_id\}/")
# The transparency log is public by design (anyone may mirror and check it; its leaves hold ids
# and hashes, no patient data): docs/transparency.md.
PUBLIC_LOG = re.compile(r"^/v1/log/")


def _requirements(d: Dependant) -> list[Requirement]:
    own = requirement_of(d.call)
    return ([own] if own is not None else []) + [
        r for sub in d.dependencies for r in _requirements(sub)
    ]


def routes(app: FastAPI) -> dict[tuple[str, str], list[Requirement]]:
    """(method, path) -> the requirements its dependencies declare, for every API route."""
    return {
        (m, r.path): _requirements(r.dependant) for r in api_routes(app) for m in r.methods or ()
    }


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route the app serves, those of its included routers too."""
    found = (c.original_route for c in iter_route_contexts(app.routes))
    return [r for r in found if isinstance(r, APIRoute)]


def _app(tmp_path: Path) -> FastAPI:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", data_dir=tmp_path / "d")
    migrate(make_engine(settings.database_url))
    return create_app(settings)


def test_every_route_states_one_requirement(tmp_path: Path) -> None:
    """Every route a person calls declares exactly one permission dependency; the public routes
    and the unit API (signed by the unit's key) declare none."""
    for (method, path), reqs in routes(_app(tmp_path)).items():
        public = (
            (method, path) in UNSIGNED_PUBLIC or UNIT_SIGNED.match(path) or PUBLIC_LOG.match(path)
        )
        assert len(reqs) == (0 if public else 1), (method, path, reqs)
    self_service = {k for k, v in routes(_app(tmp_path)).items() if v and v[0].self_service}
    assert self_service == {
        ("GET", "/v1/me"), ("POST", "/v1/me/password"), ("POST", "/v1/auth/logout")
    }  # fmt: skip


POLICY = [
    # a reviewer of site A never sees site B's batches
    ("qa_reviewer.site-a", "GET", "/v1/batches/{batch_id}", "SITE-B", False),
    ("qa_reviewer.site-a", "GET", "/v1/batches/{batch_id}", "SITE-A", True),
    # an admin cannot release (nor run the OOS workflow)
    ("admin.all", "POST", "/v1/batches/{batch_id}/oos", "SITE-A", False),
    ("admin.all", "POST", "/v1/people", "SITE-A", True),
    # a reviewer reviews but does not decide
    ("qa_reviewer.site-a", "POST", "/v1/batches/{batch_id}/oos", "SITE-A", False),
    ("qa_approver.site-a", "POST", "/v1/batches/{batch_id}/oos", "SITE-A", True),
    # operators read their site's batches, not the QA queue or the audit trail
    ("operator.site-a", "GET", "/v1/batches/{batch_id}", "SITE-A", True),
    ("operator.site-a", "GET", "/v1/review/queue", "SITE-A", False),
    ("operator.all", "GET", "/v1/audit", "SITE-A", False),
    # auditors read everything and write nothing
    ("auditor.all", "GET", "/v1/audit", "SITE-A", True),
    ("auditor.all", "POST", "/v1/batches/{batch_id}/results", "SITE-A", False),
    ("auditor.site-a", "GET", "/v1/audit", "SITE-A", False),
    # an approver of site A cannot publish an organisation-wide specification
    ("qa_approver.site-a", "POST", "/v1/specs", "SITE-A", False),
    ("qa_approver.all", "POST", "/v1/specs", "SITE-A", True),
    # custody: operators of the site record hand-offs; QA reads the timeline but records none
    ("operator.site-a", "POST", "/v1/custody/{coi}/events", "SITE-A", True),
    ("operator.site-b", "POST", "/v1/custody/{coi}/events", "SITE-A", False),
    ("qa_reviewer.site-a", "GET", "/v1/custody/{coi}", "SITE-A", True),
    ("qa_reviewer.site-a", "POST", "/v1/custody/{coi}/events", "SITE-A", False),
]


def _site_tag(site: str) -> str:
    return "all" if site == "*" else site.lower()


# On PostgreSQL in ``make soak`` only: the guards and the site-scoped statements are the same
# SQLAlchemy code on both (every other server test runs on both), and the 1,400 requests took
# 40-47 s under coverage, the longest test of the suite but one.
@pytest.mark.parametrize(
    "server",
    ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])],
    indirect=True,
)
def test_authorization_matrix(server: Server, tmp_path: Path) -> None:
    people = {
        f"{role}.{_site_tag(site)}": (f"{role} at {site}", [(role, site)])
        for role in ROLES
        for site in ("SITE-A", "SITE-B", "*")
    }
    add_people(server, people)
    # Objects at site A and site B: a batch each, a unit each, and an OOS case at site A.
    add_people(server, {"qa.global": ("Gina Global", [("qa_approver", "*")])})
    publish_spec(server)
    push_batch(server, tmp_path, unit_id="UNIT-MA", site="SITE-A", batch_id="B-A")
    push_batch(
        server, tmp_path, unit_id="UNIT-MB", site="SITE-B", batch_id="B-B", coi="&/CHA999926BBB222"
    )
    rev = login(server, "qa_reviewer.site-a")
    oos = example_results() | {"viability": {"value": "50", "unit": "%", "method": "flow-7aad"}}
    assert enter_results(rev, "B-A", oos).status_code == 201
    r = login(server, "qa_approver.site-a").post(
        "/v1/batches/B-A/oos", json={"jurisdiction": "EU", "physician": "Dr X", "request": "r"}
    )
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]

    callers: dict[str, tuple[Principal | None, httpx.Client]] = {
        "anonymous": (None, httpx.Client(base_url=server.url)),
        "system": (
            Principal("system", "", frozenset({("admin", "*")})),
            server.admin(),
        ),
    }
    for uid, (_, grants) in people.items():
        callers[uid] = (Principal(uid, "", frozenset(grants)), login(server, uid))

    objects = {
        "SITE-A": {
            "batch_id": "B-A",
            "unit_id": "UNIT-MA",
            "case_id": str(case_id),
            "coi": "CHA999926ABC123",
        },
        "SITE-B": {
            "batch_id": "B-B",
            "unit_id": "UNIT-MB",
            "case_id": str(case_id),
            "coi": "CHA999926BBB222",
        },
    }
    checked = 0
    failures: list[str] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    matrix = {k: v[0] for k, v in routes(server.app).items() if v}
    assert len(matrix) == 41, sorted(matrix)
    for (method, path), req in sorted(matrix.items()):
        perm, scope = req.permission or "-", req.scope
        if path == "/v1/auth/logout":
            continue  # ends the caller's session: tested on its own below
        targets = ["SITE-A", "SITE-B"] if "{" in path else ["SITE-A"]
        if scope == Scope.OOS:
            targets = ["SITE-A"]
        for target in targets:
            fill: dict[str, Any] = {
                **objects[target],
                "user_id": "nobody",
                "deviation_id": "DEV-1",
                "channel": "temperature",
                "step": "risk-evaluation",
                "spec_id": spec_content()["spec_id"],
                "version": str(spec_content()["version"]),
            }
            url = re.sub(r"\{(\w+)\}", lambda m: str(fill[m.group(1)]), path)
            for name, (who, client) in callers.items():
                if who is None:
                    expect_allowed: bool | None = None
                elif scope == Scope.SELF:
                    expect_allowed = True
                elif scope == Scope.ORG:
                    expect_allowed = who.can(perm, None)
                elif scope == Scope.SITES:
                    expect_allowed = who.sites(perm) != set()
                else:
                    expect_allowed = who.can(perm, target)
                resp = client.request(method, url, json={} if method == "POST" else None)
                checked += 1
                got = resp.status_code
                seen[(name, method, path, target)] = got
                ok = (
                    got == 401
                    if expect_allowed is None
                    else got not in (401, 403)
                    if expect_allowed
                    else got == 403
                )
                if not ok or got >= 500:
                    failures.append(f"{name} {method} {url}: {got} (allowed={expect_allowed})")
    assert not failures, "\n".join(failures[:40])
    assert checked > 500
    # The policy in plain words, independent of the permission table.
    for name, method, path, target, allowed in POLICY:
        got = seen[(name, method, path, target)]
        assert (got not in (401, 403)) is allowed, (name, method, path, target, got)

    # Logout ends exactly that session.
    c = login(server, "auditor.all")
    assert c.post("/v1/auth/logout").status_code == 200
    assert c.get("/v1/me").status_code == 401
