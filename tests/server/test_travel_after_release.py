"""A released batch travels: the hand-offs, the shipper's log, the receipt and the infusion the
unit syncs after the release leave the decision standing (the batch stays decided and every
signature applies to the record it signed, saying how many travel events followed), while
anything else after it (a refused hand-off here) puts the batch back in the queue and the
signatures no longer apply.  The record hash still changes with every event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from edge.ledger import Ledger
from edge.sync import SyncClient
from tests.server.test_qa import pdf_text

from .conftest import Server
from .qa import add_people, enter_results, example_results, login, publish_spec, push_batch, sign

COI = "&/CHA999926ABC123"
FINAL = example_results() | {
    "vcn": {"value": "1.8", "unit": "{copies}/{cell}", "method": "qpcr-vcn"},
    "sterility": {"value": "no growth", "method": "bact-alert"},
    "rcl": {"value": "not detected", "method": "qpcr-vsvg"},
}


def _handoff(giver: str, to: str) -> dict[str, Any]:
    return {"coi": COI, "from": giver, "to": to, "place": "dispatch", "bag": "]C0" + COI,
            "shipper": "SHP-1", "signatures": []}  # fmt: skip


def released_batch(
    server: Server, tmp_path: Path, unit_id: str, batch_id: str
) -> tuple[Ledger, SyncClient, httpx.Client, int]:
    """A batch synced, its final results entered, reviewed and released for every jurisdiction
    the specification covers: the unit's ledger and sync client, a reviewer's client, and the
    number of jurisdictions."""
    add_people(server)
    publish_spec(server)
    led, client = push_batch(
        server, tmp_path, unit_id=unit_id, site="SITE-A", batch_id=batch_id, coi=COI,
        deviation=False,
    )  # fmt: skip
    rev, appr = login(server, "rev.a"), login(server, "appr.a")
    assert enter_results(rev, batch_id, FINAL).status_code == 201
    view = rev.get(f"/v1/batches/{batch_id}").json()
    assert {c["disposition"] for c in view["cqa"].values()} == {"releasable"}
    for j in sorted(view["cqa"]):
        assert sign(rev, batch_id, "rev.a", "reviewed", j).status_code == 201
        r = sign(appr, batch_id, "appr.a", "released", j)
        assert r.status_code == 201 and r.json()["disposition"] == "released", r.text
    return led, client, rev, len(view["cqa"])


def test_travel_after_release_leaves_the_decision_standing(server: Server, tmp_path: Path) -> None:
    led, client, rev, jurisdictions = released_batch(server, tmp_path, "UNIT-T1", "B-T1")
    released = rev.get("/v1/batches/B-T1").json()
    assert released["review_state"] == "decided"
    assert {(s["applies"], s["travel_since"]) for s in released["qa_signatures"]} == {(True, 0)}

    a = {"batch_id": "B-T1", "actor": "op.alice"}
    led.append("custody.handoff", _handoff("UNIT-T1", "COURIER-7"), **a)
    led.append("shipping.log", {"coi": COI, "shipper": "SHP-1", "samples": 73,
               "min_c": "-190.0", "max_c": "-188.5", "excursions": []}, **a)  # fmt: skip
    led.append("custody.handoff", _handoff("COURIER-7", "INFUSION-SITE-1"), **a)
    led.append("custody.received", {"coi": COI, "site": "INFUSION-SITE-1", "bag": "]C0" + COI,
               "signatures": []}, **a)  # fmt: skip
    led.append("custody.infused", {"coi": COI, "site": "INFUSION-SITE-1", "bag": "]C0" + COI,
               "signatures": []}, **a)  # fmt: skip
    assert client.sync_once().pushed == 5

    travelled = rev.get("/v1/batches/B-T1").json()
    assert travelled["record_hash"] != released["record_hash"]  # it binds every event
    assert travelled["review_state"] == "decided"
    queue = rev.get("/v1/review/queue").json()["batches"]
    assert "B-T1" not in [b["batch_id"] for b in queue]
    sigs = travelled["qa_signatures"]
    assert len(sigs) == 2 * jurisdictions
    assert {(s["applies"], s["travel_since"]) for s in sigs} == {(True, 5)}
    assert all(d["signature"]["applies"] for d in travelled["dispositions"])
    report = pdf_text(rev.get("/v1/batches/B-T1/report.pdf").content)
    assert "NO LONGER APPLIES" not in report
    assert "applies to the record it signed; 5 travel event(s) since" in report
    page_sigs = rev.get("/v1/batches/B-T1").json()["qa_signatures"]
    assert page_sigs == sigs  # the same answer on a second read

    # A refused hand-off is not travel: the batch goes back to QA, and the signatures no longer
    # apply to the batch as it is.
    led.append("custody.refused", {"coi": COI, "scanned": "]C0&/CHA000000XYZ999",
               "role": "bag", "reason": "another patient's bag"}, **a)  # fmt: skip
    assert client.sync_once().pushed == 1
    refused = rev.get("/v1/batches/B-T1").json()
    assert refused["review_state"] == "changed"
    assert not any(s["applies"] for s in refused["qa_signatures"])
    assert [e["kind"] for e in refused["since_signature"]["events"]] == [
        "custody.handoff", "shipping.log", "custody.received", "custody.infused",
        "custody.refused",
    ]  # fmt: skip
    report = pdf_text(rev.get("/v1/batches/B-T1/report.pdf").content)
    assert "NO LONGER APPLIES" in report


def test_a_reading_after_release_is_a_change(server: Server, tmp_path: Path) -> None:
    """Telemetry after the release is not travel: the signatures no longer apply."""
    led, client, rev, _ = released_batch(server, tmp_path, "UNIT-T2", "B-T2")
    led.append("custody.handoff", _handoff("UNIT-T2", "COURIER-7"), batch_id="B-T2",
               actor="op.alice")  # fmt: skip
    led.append("reading.recorded", {"channel": "temperature", "limit": "ok",
               "value": {"value": "37.1", "unit": "Cel"}}, batch_id="B-T2")  # fmt: skip
    assert client.sync_once().pushed == 2
    v = rev.get("/v1/batches/B-T2").json()
    assert v["review_state"] == "changed"
    assert {(s["applies"], s["travel_since"]) for s in v["qa_signatures"]} == {(False, None)}
