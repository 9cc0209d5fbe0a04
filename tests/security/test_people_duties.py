"""Issue 18, item 3: one administrator could release a batch alone.  They reset a reviewer's
password, logged in as that reviewer and signed the review; then granted themselves
``qa_approver``, revoked their own admin role, and released.  Every step was audited, none
refused.

Now: no one grants, revokes or changes their own roles or status (nor resets their own password
through the administrator's route); a password set by someone else opens a session that may only
change it; whoever administered access during a batch's review window, and any account whose
password someone else set during it, cannot sign that batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.server.conftest import Server
from tests.server.qa import (
    PASSWORD,
    TEMPORARY,
    add_people,
    enter_results,
    example_results,
    login,
    publish_spec,
    push_batch,
    sign,
    take_over,
)

STAFF = {
    "admin.ann": ("Ann Admin", [("admin", "*")]),
    "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
    "appr.a": ("Paul Approver", [("qa_approver", "SITE-A")]),
    "lab.a": ("Lara Lab", [("qa_reviewer", "SITE-A")]),
    "qa.global": ("Gina Global", [("qa_approver", "*")]),
}
KNOWN = "Reset-Known-2026!"  # a password the administrator sets, so knows
OWNED = "Taken-Over-2026!!"  # what the administrator changes it to, posing as the owner


def ready_batch(server: Server, tmp_path: Path, batch_id: str = "B-SOD") -> dict[str, Any]:
    """A completed batch at site A with results entered: ready to review and release."""
    push_batch(
        server, tmp_path, unit_id=f"U-{batch_id}", site="SITE-A", batch_id=batch_id,
        deviation=False,
    )  # fmt: skip
    with login(server, "lab.a") as lab:
        assert enter_results(lab, batch_id, example_results()).status_code == 201
        view: dict[str, Any] = lab.get(f"/v1/batches/{batch_id}").json()
    return view


def token_for(server: Server, user_id: str, password: str) -> tuple[httpx.Client, bool]:
    r = httpx.post(server.url + "/v1/auth/token", json={"user_id": user_id, "password": password})
    assert r.status_code == 200, r.text
    client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {r.json()['token']}"}, timeout=60
    )
    return client, bool(r.json().get("password_change_required"))


def signatures(server: Server, batch_id: str) -> list[dict[str, Any]]:
    with login(server, "lab.a") as lab:
        v = lab.get(f"/v1/batches/{batch_id}").json()
    return list(v["qa_signatures"]) + list(v["dispositions"])


def test_one_administrator_cannot_sign_or_release_alone(server: Server, tmp_path: Path) -> None:
    add_people(server, STAFF)
    publish_spec(server)
    view = ready_batch(server, tmp_path)
    admin = login(server, "admin.ann")

    # The administrator resets the reviewer's password (a legitimate act) ...
    r = admin.post("/v1/people/rev.a/password", json={"password": KNOWN, "reason": "forgot it"})
    assert r.status_code == 200, r.text
    # ... logs in as the reviewer: the session may only change the password.
    as_rev, must_change = token_for(server, "rev.a", KNOWN)
    assert must_change
    r = sign(as_rev, "B-SOD", "rev.a", "reviewed", password=KNOWN, view=view)
    assert r.status_code == 403 and "change it first" in r.json()["detail"], r.text
    # Posing as the owner, they change it; the account still cannot sign this batch, whose
    # review window saw its password set by the administrator.
    take_over(server, "rev.a", KNOWN, OWNED)
    as_rev, must_change = token_for(server, "rev.a", OWNED)
    assert not must_change
    r = sign(as_rev, "B-SOD", "rev.a", "reviewed", password=OWNED, view=view)
    assert r.status_code == 403 and "set by admin.ann" in r.json()["detail"], r.text

    # No one administers their own access.
    for path, body in [
        ("/v1/people/admin.ann/roles", {"role": "qa_approver", "site_id": "SITE-A"}),
        ("/v1/people/admin.ann/roles/revoke", {"role": "admin", "site_id": "*"}),
        ("/v1/people/admin.ann/status", {"status": "disabled"}),
        ("/v1/people/ADMIN.ANN/roles", {"role": "qa_reviewer", "site_id": "*"}),
    ]:
        r = admin.post(path, json=body | {"reason": "I decide alone"})
        assert r.status_code == 403 and "their own" in r.json()["detail"], (path, r.text)
    r = admin.post("/v1/people/admin.ann/password", json={"password": KNOWN, "reason": "mine"})
    assert r.status_code == 403, r.text
    me = admin.get("/v1/me").json()
    assert me["roles"] == [{"role": "admin", "site_id": "*"}]
    assert signatures(server, "B-SOD") == []


def test_password_set_by_an_administrator_must_be_changed_first(
    server: Server, tmp_path: Path
) -> None:
    add_people(server, {k: STAFF[k] for k in ("lab.a", "qa.global")})
    publish_spec(server)
    view = ready_batch(server, tmp_path)
    with server.admin() as c:
        r = c.post(
            "/v1/people",
            json={
                "user_id": "rev.new",
                "printed_name": "Nina New",
                "password": TEMPORARY,
                "roles": [{"role": "qa_reviewer", "site_id": "SITE-A"}],
                "reason": "joined QA",
            },
        )
        assert r.status_code == 201 and r.json()["password_change_required"], r.text
    c, must_change = token_for(server, "rev.new", TEMPORARY)
    assert must_change
    assert c.get("/v1/me").json()["password_change_required"] is True
    for method, path in [("GET", "/v1/batches/B-SOD"), ("GET", "/v1/review/queue")]:
        r = c.request(method, path)
        assert r.status_code == 403 and "change it first" in r.json()["detail"], (path, r.text)
    r = sign(c, "B-SOD", "rev.new", "reviewed", password=TEMPORARY, view=view)
    assert r.status_code == 403, r.text
    # The owner changes it with the current one; the same session then works.
    r = c.post("/v1/me/password", json={"current_password": TEMPORARY, "new_password": PASSWORD})
    assert r.status_code == 200, r.text
    assert c.get("/v1/batches/B-SOD").status_code == 200
    assert signatures(server, "B-SOD") == []
