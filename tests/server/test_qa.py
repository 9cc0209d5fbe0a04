"""QA release review through the real API: review by exception, e-signatures bound to the record
and evaluation (11.70), separation of duties, lockout (11.300(d)), dispositions per jurisdiction,
the OOS exceptional release with its 48-hour notification, and the audit trail."""

from __future__ import annotations

import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fhir.resources.bundle import Bundle
from pypdf import PdfReader

from ctgtp.cli import cli
from server.settings import Settings
from tests.security.test_review_record import settled_push_batch as push_batch

from .conftest import ADMIN, Server, start_server
from .qa import (
    PASSWORD,
    add_people,
    enter_results,
    example_results,
    login,
    publish_spec,
    sign,
)


def audit_entries(server: Server, **query: str) -> list[dict[str, object]]:
    with server.admin() as c:
        r = c.get("/v1/audit", params={**query, "limit": 1000})
        assert r.status_code == 200, r.text
        return list(r.json()["entries"])


def pdf_text(data: bytes) -> str:
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)
    return " ".join(text.split())


def test_review_sign_release_conditional_then_late_failure(server: Server, tmp_path: Path) -> None:
    add_people(server)
    publish_spec(server)
    push_batch(server, tmp_path, unit_id="UNIT-A1", site="SITE-A", batch_id="B-A1")
    rev, appr = login(server, "rev.a"), login(server, "appr.a")

    q = rev.get("/v1/review/queue").json()
    assert [b["batch_id"] for b in q["batches"]] == ["B-A1"]
    assert q["batches"][0]["exceptions"] == 2  # the rejected scan and the deviation

    assert enter_results(rev, "B-A1", example_results()).status_code == 201
    view = rev.get("/v1/batches/B-A1").json()
    assert view["exceptions"]["rejected_scans"] == 1 and view["exceptions"]["open_deviations"] == 1
    assert {j: c["disposition"] for j, c in view["cqa"].items()} == {
        "EU": "conditional",
        "SG": "conditional",
        "UK": "conditional",
        "US": "conditional",
    }

    # A bad request names what is wrong (every rule of the release: test_release_rules.py).
    r = sign(rev, "B-A1", "rev.a", "blessed")
    assert r.status_code == 422 and "meaning" in r.json()["detail"]
    assert sign(rev, "B-A1", "rev.a", "reviewed").status_code == 201
    # The approver cannot release over an open deviation.
    r = sign(appr, "B-A1", "appr.a", "released")
    assert r.status_code == 409 and "DEV-1" in r.json()["detail"]
    # Closing it changes the record: the review signature no longer applies.
    r = appr.post(
        "/v1/batches/B-A1/deviations/DEV-1/close",
        json={"reason": "wrong bag refused by the scan; correct bag used; no impact",
              "user_id": "appr.a", "password": PASSWORD, "meaning": "closed"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    stale = view
    r = sign(appr, "B-A1", "appr.a", "released", view=stale)
    assert r.status_code == 409 and "changed since it was reviewed" in r.json()["detail"]
    view = appr.get("/v1/batches/B-A1").json()
    assert [s["applies"] for s in view["qa_signatures"]] == [False]
    r = sign(appr, "B-A1", "appr.a", "released", view=view)
    assert r.status_code == 409 and "review signature by another person" in r.json()["detail"]
    # A reviewer cannot release; the approver cannot be the only reviewer.
    assert sign(rev, "B-A1", "rev.a", "released").status_code == 403
    assert sign(appr, "B-A1", "appr.a", "reviewed").status_code == 201
    r = sign(appr, "B-A1", "appr.a", "released")
    assert r.status_code == 409  # their own review does not count
    assert sign(rev, "B-A1", "rev.a", "reviewed").status_code == 201
    r = sign(appr, "B-A1", "appr.a", "released")
    assert r.status_code == 201, r.text
    assert r.json()["disposition"] == "conditional_release"

    view = appr.get("/v1/batches/B-A1").json()
    (d,) = view["dispositions"]
    assert d["disposition"] == "conditional_release"
    assert d["jurisdiction"] == "EU" and set(d["pending"]) == {"rcl", "sterility", "vcn"}
    assert d["signature"]["printed_name"] == "Paul Approver" and d["signature"]["applies"]
    assert rev.get("/v1/review/queue").json()["batches"][0]["review_state"] == "in_review"
    r = sign(appr, "B-A1", "appr.a", "released")
    assert r.status_code == 409 and "already conditionally released" in r.json()["detail"]
    # A final disposition is not signed twice; other jurisdictions are decided on their own.
    r = sign(appr, "B-A1", "appr.a", "rejected")
    assert r.status_code == 201  # a conditional release can still end in rejection ...
    r = sign(appr, "B-A1", "appr.a", "released")
    assert r.status_code == 409 and "already rejected" in r.json()["detail"]  # ... and stays so
    assert sign(rev, "B-A1", "rev.a", "reviewed", "US").status_code == 201
    assert sign(appr, "B-A1", "appr.a", "released", "US").status_code == 201

    # Reports carry the signature manifestations.
    rep = pdf_text(appr.get("/v1/batches/B-A1/report.pdf").content)
    assert (
        "Paul Approver" in rep and "released" in rep and view["record_hash"] in rep.replace(" ", "")
    )
    coa = appr.get("/v1/batches/B-A1/coa.pdf", params={"jurisdiction": "EU"})
    assert coa.headers["content-type"] == "application/pdf"
    assert "Certificate of analysis" in pdf_text(coa.content)
    assert appr.get("/v1/batches/B-A1/coa.pdf", params={"jurisdiction": "JP"}).status_code == 422
    bundle = Bundle.model_validate_json(
        appr.get("/v1/batches/B-A1/fhir", params={"jurisdiction": "EU"}).content
    )
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds[:2] == ["Medication", "DiagnosticReport"] and kinds.count("Observation") >= 10

    # A late failing sterility result reaches site A as an alert; the batch is re-queued.
    late = example_results() | {
        "sterility": {"value": "growth", "method": "bact-alert", "status": "final"}
    }
    assert enter_results(rev, "B-A1", late).status_code == 201
    alerts = rev.get("/v1/alerts").json()
    assert any(a["kind"] == "quality.late_failure" and a["batch_id"] == "B-A1" for a in alerts)
    assert rev.get("/v1/review/queue").json()["batches"][0]["review_state"] == "changed"
    view = rev.get("/v1/batches/B-A1").json()
    assert not any(s["applies"] for s in view["qa_signatures"])
    assert login(server, "rev.b").get("/v1/alerts").json() == []  # site B sees none of it

    # Every write above is in the audit trail, and the trail verifies.
    actions = [e["action"] for e in audit_entries(server, object_id="B-A1")]
    for a in ("results.entered", "signature.reviewed", "signature.released", "batch.disposition"):
        assert a in actions
    dev = audit_entries(server, object_type="deviation")
    assert dev[0]["actor"] == "appr.a" and dev[0]["new"]["open"] is False


def test_signature_needs_the_password_and_locks_after_five_failures(
    server: Server, tmp_path: Path
) -> None:
    add_people(server)
    publish_spec(server)
    push_batch(server, tmp_path, unit_id="UNIT-A2", site="SITE-A", batch_id="B-A2")
    rev = login(server, "rev.a")
    enter_results(rev, "B-A2", example_results())
    r = sign(rev, "B-A2", "appr.a", "reviewed")
    assert r.status_code == 403 and "own user id" in r.json()["detail"]
    for i in range(4):
        r = sign(rev, "B-A2", "rev.a", "reviewed", password="Wrong-Password-1")
        assert r.status_code == 401 and "locked" not in r.json()["detail"], i
    r = sign(rev, "B-A2", "rev.a", "reviewed", password="Wrong-Password-1")
    assert r.status_code == 401 and "now locked" in r.json()["detail"]
    # The session is gone, the right password no longer opens one, and the alert is raised.
    assert rev.get("/v1/me").status_code == 401
    r = httpx.post(server.url + "/v1/auth/token", json={"user_id": "rev.a", "password": PASSWORD})
    assert r.status_code == 401 and "locked" in r.json()["detail"]
    with server.admin() as c:
        alerts = c.get("/admin/alerts").json()
        assert any(a["kind"] == "security.lockout" and "rev.a" in a["message"] for a in alerts)
        assert (
            c.post(
                "/v1/people/rev.a/status", json={"status": "active", "reason": "identity checked"}
            ).status_code
            == 200
        )
    trail = audit_entries(server, object_id="rev.a")
    assert [e["action"] for e in trail].count("signature.failed") == 5
    assert "person.locked" in [e["action"] for e in trail]
    assert "person.unlocked" in [e["action"] for e in trail]
    assert login(server, "rev.a").get("/v1/me").json()["user_id"] == "rev.a"
    # No QA signature was recorded by any of it.
    assert login(server, "appr.a").get("/v1/batches/B-A2").json()["qa_signatures"] == []


@pytest.fixture
def clocked(tmp_path: Path) -> object:
    t = [datetime.now(UTC)]  # the units' clocks keep real time (tests.server.conftest.clock)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'server.db'}",
        data_dir=tmp_path / "server",
        admin_token=ADMIN,
        rate_per_second=1000,
        rate_burst=1000,
    )
    with start_server(settings, lambda: t[0]) as srv:
        yield srv, t


def test_oos_exceptional_release_and_48h_notification(clocked: object, tmp_path: Path) -> None:
    server, t = clocked  # type: ignore[misc]
    add_people(server)
    publish_spec(server)
    push_batch(server, tmp_path, unit_id="UNIT-A4", site="SITE-A", batch_id="B-A4", deviation=False)
    t[0] += timedelta(minutes=5)  # QA signs after the batch's events (never before them)
    rev, appr = login(server, "rev.a"), login(server, "appr.a")
    oos = example_results() | {"viability": {"value": "62.0", "unit": "%", "method": "flow-7aad"}}
    assert enter_results(rev, "B-A4", oos).status_code == 201
    view = rev.get("/v1/batches/B-A4").json()
    assert view["cqa"]["EU"]["disposition"] == "not_releasable"
    assert view["exceptions"]["failing_attributes"]["EU"] == ["viability"]
    assert sign(rev, "B-A4", "rev.a", "reviewed").status_code == 201
    r = sign(appr, "B-A4", "appr.a", "released")
    assert r.status_code == 409 and "exceptional-release" in r.json()["detail"]

    r = appr.post(
        "/v1/batches/B-A4/oos",
        json={"jurisdiction": "EU", "physician": "Dr. Ines Lopez", "request": "no alternative"},
    )
    assert r.status_code == 201, r.text
    case = r.json()["id"]
    # Steps in order only.
    r = appr.post(f"/v1/oos/{case}/physician-acceptance", json={"text": "accepted"})
    assert r.status_code == 409, r.text
    assert (
        appr.post(f"/v1/oos/{case}/risk-evaluation", json={"text": "low risk"}).status_code == 200
    )
    assert (
        appr.post(
            f"/v1/oos/{case}/physician-acceptance", json={"text": "signed form 7"}
        ).status_code
        == 200
    )
    r = sign(appr, "B-A4", "appr.a", "released")
    assert r.status_code == 201 and r.json()["disposition"] == "exceptional_release"
    c = appr.get("/v1/oos").json()[0]
    assert c["state"] == "released" and not c["notification_overdue"]
    assert datetime.fromisoformat(c["notification_due_at"]) == t[0] + timedelta(hours=48)

    t[0] += timedelta(hours=47, minutes=59)
    assert appr.get("/v1/oos").status_code == 401  # the session expired long ago
    appr = login(server, "appr.a")
    assert appr.get("/v1/oos", params={"overdue": True}).json() == []
    t[0] += timedelta(minutes=2)
    appr = login(server, "appr.a")
    (c,) = appr.get("/v1/oos", params={"overdue": True}).json()
    assert c["notification_overdue"]
    r = appr.post(f"/v1/oos/{case}/notification", json={"text": "EMA ref 2026-1234"})
    assert r.status_code == 200 and not r.json()["notification_overdue"]
    assert appr.get("/v1/oos", params={"overdue": True}).json() == []


def test_tokens_expire(clocked: object) -> None:
    server, t = clocked  # type: ignore[misc]
    add_people(server, {"rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")])})
    c = login(server, "rev.a")
    assert c.get("/v1/me").status_code == 200
    t[0] += timedelta(seconds=server.settings.token_ttl_s + 1)
    r = c.get("/v1/me")
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_password_policy_names_the_rule(server: Server) -> None:
    with server.admin() as c:
        for pw, rule in [
            ("short-1A", "at least 12"),
            ("alllowercaseletters", "three of"),
            ("Password-2026!", "common password"),
            ("Rev.a-Harbour-2026", "user id"),
        ]:
            r = c.post(
                "/v1/people",
                json={"user_id": "rev.a", "printed_name": "R", "password": pw, "reason": "x"},
            )
            assert r.status_code == 422 and rule in r.json()["detail"], (pw, r.text)


def test_audit_trail_refuses_change_and_detects_tampering(server: Server, tmp_path: Path) -> None:
    add_people(server, {"rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")])})
    login(server, "rev.a")
    args = [
        "server",
        "audit",
        "verify",
        "--data-dir",
        str(server.settings.data_dir),
        "--database-url",
        server.settings.database_url,
    ]
    n = len(audit_entries(server))
    ok = CliRunner().invoke(cli, args)
    assert ok.exit_code == 0 and f"verified: {n} entries" in ok.output, ok.output
    if not server.settings.database_url.startswith("sqlite"):
        return
    db = server.settings.database_url.removeprefix("sqlite:///")
    con = sqlite3.connect(db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE audit_trail SET actor = 'someone' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM audit_trail WHERE seq = 3")
    # Below the guard (someone with the database file drops the trigger): the chain catches it.
    con.execute("DROP TRIGGER audit_trail_no_update")
    con.execute("""UPDATE audit_trail SET reason = 'nothing to see' WHERE seq = 2""")
    con.commit()
    con.close()
    bad = CliRunner().invoke(cli, args)
    assert bad.exit_code == 1 and "audit entry 2" in bad.output, bad.output


def test_password_change_and_reset(server: Server) -> None:
    add_people(server, {"rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")])})
    here, elsewhere = login(server, "rev.a"), login(server, "rev.a")
    new = "Granite-Lake-2027?"

    def change(current: str, new_pw: str) -> httpx.Response:
        return here.post(
            "/v1/me/password", json={"current_password": current, "new_password": new_pw}
        )

    assert change("Wrong-Password-1", new).status_code == 401
    r = change(PASSWORD, "short")
    assert r.status_code == 422 and "at least 12" in r.json()["detail"]
    r = change(PASSWORD, PASSWORD)
    assert r.status_code == 422 and "differ from the current" in r.json()["detail"]
    assert change(PASSWORD, new).status_code == 200
    assert here.get("/v1/me").status_code == 200  # this session goes on
    assert elsewhere.get("/v1/me").status_code == 401  # every other one ended
    assert (
        httpx.post(
            server.url + "/v1/auth/token", json={"user_id": "rev.a", "password": PASSWORD}
        ).status_code
        == 401
    )
    login(server, "rev.a", new)
    with server.admin() as c:
        r = c.post("/v1/people/rev.a/password",
                   json={"password": "Copper-Field-2028!", "reason": "forgotten"})  # fmt: skip
        assert r.status_code == 200
    assert here.get("/v1/me").status_code == 401
    actions = [e["action"] for e in audit_entries(server, object_id="rev.a")]
    assert "person.password_changed" in actions and "person.password_reset" in actions
    assert all("argon2" not in str(e) for e in audit_entries(server, object_id="rev.a"))


def test_deviation_closure_is_an_e_signature_and_bulk_closes_only_minor_ones(
    server: Server, tmp_path: Path
) -> None:
    """POST .../close asks the password again with meaning ``closed`` and a reason, and records
    a signature per closure; a bulk closure with one signature is refused unless every
    deviation is minor, and records each closure separately."""
    from tests.security.test_review_record import push

    add_people(server)

    def steps(add: Any) -> None:
        for dev, sev in (("DEV-1", "major"), ("DEV-2", "minor"), ("DEV-3", "minor")):
            add("deviation.raised", {"deviation_id": dev, "step": "receipt",
                                     "category": "process", "reason": f"{dev} at receipt",
                                     "severity": sev})  # fmt: skip

    push(server, tmp_path, "B-CL", steps)
    rev = login(server, "rev.a")
    body = {"user_id": "rev.a", "password": PASSWORD, "meaning": "closed", "reason": "no impact"}
    one = "/v1/batches/B-CL/deviations/DEV-1/close"
    bulk = "/v1/batches/B-CL/deviations/close"
    before = rev.get("/v1/batches/B-CL").json()
    # The old request (a reason alone) is refused by name; so are a wrong meaning or user id.
    r = rev.post(one, json={"reason": "no impact"})
    assert r.status_code == 422 and "password" in r.text and "user_id" in r.text, r.text
    r = rev.post(one, json=body | {"meaning": "reviewed"})
    assert r.status_code == 422 and "'closed'" in r.json()["detail"], r.text
    r = rev.post(one, json=body | {"user_id": "appr.a"})
    assert r.status_code == 403 and "own user id" in r.json()["detail"], r.text
    r = rev.post(one, json=body | {"password": "not-the-password-1A"})
    assert r.status_code == 401, r.text
    # A major deviation is not closed with others; nothing is recorded.
    r = rev.post(bulk, json=body | {"deviations": ["DEV-1", "DEV-2"]})
    assert r.status_code == 422 and "DEV-1 (major)" in r.json()["detail"], r.text
    r = rev.post(bulk, json=body | {"deviations": ["DEV-2", "DEV-9"]})
    assert r.status_code == 404 and "DEV-9" in r.json()["detail"], r.text
    assert rev.get("/v1/batches/B-CL").json()["record_hash"] == before["record_hash"]

    r = rev.post(one, json=body)
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["printed_name"] == "Rita Reviewer" and c["meaning"] == "closed"
    assert c["record_hash"] == before["record_hash"]  # what the signature covers
    r = rev.post(bulk, json=body | {"deviations": ["DEV-2", "DEV-3"], "reason": "both minor"})
    assert r.status_code == 200, r.text
    closures = r.json()["closures"]
    assert [x["deviation_id"] for x in closures] == ["DEV-2", "DEV-3"]
    assert len({x["signature"] for x in closures}) == 2  # one record per closure
    assert rev.post(one, json=body).status_code == 409  # already closed

    view = rev.get("/v1/batches/B-CL").json()
    closed = {d["deviation_id"]: d["closed"] for d in view["deviations"]}
    assert closed["DEV-3"]["printed_name"] == "Rita Reviewer"
    assert closed["DEV-3"]["meaning"] == "closed" and closed["DEV-3"]["reason"] == "both minor"
    trail = audit_entries(server, object_type="deviation")
    shut = [e for e in trail if e["action"] == "deviation.closed"]
    assert [e["object_id"] for e in shut] == ["B-CL/DEV-1", "B-CL/DEV-2", "B-CL/DEV-3"]
    assert shut[2]["new"]["together_with"] == ["DEV-2"]
    # The signature records are append-only (the guard on both databases: test_migrations).
    if server.settings.database_url.startswith("sqlite"):
        db = server.settings.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(db) as conn, pytest.raises(sqlite3.DatabaseError, match="append-"):
            conn.execute("UPDATE closure_signatures SET reason = 'x'")
