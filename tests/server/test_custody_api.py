"""Custody through the server API: a mismatched scan stops the hand-off (recorded and alerted),
both parties sign, receipt and infusion close the chain, the timeline of a COI merges what the
units and the server recorded, a late failing result reaches the receiving site, and transfer
licences alert before they expire."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from ctgtp.cli import cli
from tests.security.test_review_record import settled_push_batch as push_batch

from .conftest import Server
from .qa import (
    PASSWORD,
    add_people,
    enter_results,
    example_results,
    login,
    publish_spec,
    sign,
)

COI = "&/CHA999926ABC123"
PATH = "/v1/custody/CHA999926ABC123"


def party(user: str, meaning: str, password: str = PASSWORD) -> dict[str, str]:
    return {"user_id": user, "password": password, "meaning": meaning}


def test_custody_chain_through_the_api(server: Server, tmp_path: Path) -> None:
    add_people(
        server,
        {
            "op.ana": ("Ana Operator", [("operator", "SITE-A")]),
            "courier.kim": ("Kim Courier", [("operator", "SITE-A")]),
            "nurse.lee": ("Lee Nurse", [("operator", "HOSP-1")]),
            "op.bo": ("Bo Elsewhere", [("operator", "SITE-B")]),
            "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
            "appr.a": ("Paul Approver", [("qa_approver", "SITE-A")]),
            "qa.global": ("Gina Global", [("qa_approver", "*")]),
        },
    )
    push_batch(server, tmp_path, unit_id="UNIT-C1", site="SITE-A", batch_id="B-C1", deviation=False)
    ana, nurse = login(server, "op.ana"), login(server, "nurse.lee")
    assert nurse.get(PATH).status_code == 403  # custody has not reached the hospital yet

    handoff = {
        "kind": "handoff",
        "from_party": "SITE-A",
        "to_party": "HOSP-1",
        "place": "SITE-A dispatch",
        "bag_scan": "]C0&/CHA999926ZZZ999",
        "parties": [party("op.ana", "handed_over"), party("nurse.lee", "received")],
    }
    r = ana.post(PATH + "/events", json=handoff)
    assert r.status_code == 409 and "STOP: bag scan does not match" in r.json()["detail"]
    r = ana.post(PATH + "/events", json=handoff | {"bag_scan": "]C0" + COI,
                                                    "parties": [party("op.ana", "handed_over")]})  # fmt: skip
    assert r.status_code == 422 and "two different people" in r.json()["detail"]
    r = ana.post(PATH + "/events", json=handoff | {"bag_scan": "]C0" + COI, "from_party": "X"})
    assert r.status_code == 409 and "is with 'SITE-A'" in r.json()["detail"]
    r = ana.post(PATH + "/events", json=handoff | {"bag_scan": "]C0" + COI,
                                                    "shipper_scan": "]C0" + COI})  # fmt: skip
    assert r.status_code == 201, r.text

    # The hospital now sees the timeline and records receipt and infusion.
    r = nurse.post(PATH + "/events", json={"kind": "infused", "to_party": "HOSP-1", "place": "ward",
                                           "bag_scan": "]C0" + COI,
                                           "parties": [party("nurse.lee", "administered")]})  # fmt: skip
    assert r.status_code == 409 and "not received" in r.json()["detail"]
    for kind, meaning in (("received", "received"), ("infused", "administered")):
        r = nurse.post(PATH + "/events", json={"kind": kind, "to_party": "HOSP-1", "place": "ward 3",
                                               "bag_scan": "]C0" + COI,
                                               "parties": [party("nurse.lee", meaning)]})  # fmt: skip
        assert r.status_code == 201, r.text
    r = nurse.post(PATH + "/events", json={"kind": "received", "to_party": "HOSP-1", "place": "x",
                                           "bag_scan": "]C0" + COI,
                                           "parties": [party("nurse.lee", "received")]})  # fmt: skip
    assert r.status_code == 409 and "closed" in r.json()["detail"]

    tl = nurse.get(PATH).json()
    assert [e["kind"] for e in tl["events"]] == ["refused", "handoff", "received", "infused"]
    assert tl["holder"] == "HOSP-1" and tl["closed"] and tl["problems"] == []
    assert tl["events"][1]["signed_by"] == ["Ana Operator", "Lee Nurse"]
    assert login(server, "op.bo").get(PATH).status_code == 403
    alerts = nurse.get("/v1/alerts").json()
    assert [a["kind"] for a in alerts] == ["custody.refused"]

    # A late failing result after a conditional release reaches the infusion site too.
    publish_spec(server)
    rev, appr = login(server, "rev.a"), login(server, "appr.a")
    assert enter_results(rev, "B-C1", example_results()).status_code == 201
    assert sign(rev, "B-C1", "rev.a", "reviewed").status_code == 201
    assert sign(appr, "B-C1", "appr.a", "released").json()["disposition"] == "conditional_release"
    late = example_results() | {"sterility": {"value": "growth", "method": "bact-alert"}}
    assert enter_results(rev, "B-C1", late).status_code == 201
    kinds = [a["kind"] for a in nurse.get("/v1/alerts").json()]
    assert "quality.late_failure" in kinds


def test_transfer_licences_alert_before_expiry(server: Server, tmp_path: Path) -> None:
    add_people(
        server,
        {
            "op.ana": ("Ana Operator", [("operator", "SITE-A")]),
            "nurse.lee": ("Lee Nurse", [("operator", "HOSP-1")]),
        },
    )
    push_batch(server, tmp_path, unit_id="UNIT-C2", site="SITE-A", batch_id="B-C2", deviation=False)
    today = datetime.now(UTC).date()
    with server.admin() as c:
        for lid, days in (("EXP-1", 20), ("EXP-2", 400), ("EXP-OLD", -1)):
            r = c.post(
                "/v1/licences",
                json={
                    "licence_id": lid,
                    "classification": "EAR99",
                    "authority": "BIS",
                    "holder": "Maker GmbH",
                    "valid_until": (today + timedelta(days=days)).isoformat(),
                    "links": [{"object_type": "shipment", "object_id": f"SHP-{lid}"}],
                    "reason": "shipment to HOSP-1",
                },
            )
            assert r.status_code == 201, r.text
        r = c.post("/v1/licences", json={"licence_id": "X", "classification": "c", "authority": "a",
                                         "holder": "h", "valid_until": date.today().isoformat(),
                                         "links": [{"object_type": "car", "object_id": "1"}],
                                         "reason": "r"})  # fmt: skip
        assert r.status_code == 422 and "material or a shipment" in r.json()["detail"]
        first = c.post("/v1/licences/check").json()["alerts"]
        assert len(first) == 2 and any("EXP-1" in a and "expires" in a for a in first)
        assert any("EXP-OLD" in a and "expired" in a for a in first)
        assert c.post("/v1/licences/check").json()["alerts"] == []  # alerted once
        # The same check from the server host (cron) finds a licence registered since.
        r = c.post("/v1/licences", json={"licence_id": "EXP-3", "classification": "EAR99",
                                         "authority": "BIS", "holder": "Maker GmbH",
                                         "valid_until": (today + timedelta(days=10)).isoformat(),
                                         "reason": "new shipment"})  # fmt: skip
        assert r.status_code == 201, r.text
        args = ["server", "licences-check", "--data-dir", str(server.settings.data_dir),
                "--database-url", server.settings.database_url]  # fmt: skip
        out = CliRunner().invoke(cli, args)
        assert out.exit_code == 0 and "1 licence alert(s) raised" in out.output, out.output
        assert "EXP-3" in out.output
        assert "0 licence alert(s)" in CliRunner().invoke(cli, args).output
        kinds = [a["kind"] for a in c.get("/admin/alerts").json()]
        assert kinds.count("transfer.licence_expiring") == 2
        soon = c.get("/v1/licences", params={"expiring_within_days": 30}).json()
        assert [x["licence_id"] for x in soon] == ["EXP-OLD", "EXP-3", "EXP-1"]
    r = login(server, "op.ana").post(
        PATH + "/events",
        json={"kind": "handoff", "from_party": "SITE-A", "to_party": "HOSP-1", "place": "dock",
              "bag_scan": "]C0" + COI, "licence_id": "EXP-OLD",
              "parties": [party("op.ana", "handed_over"), party("nurse.lee", "received")]},
    )  # fmt: skip
    assert r.status_code == 409 and "expired" in r.json()["detail"]
