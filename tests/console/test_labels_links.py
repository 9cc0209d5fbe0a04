"""The batch view's label reconciliation (printed, applied, voided, from the batch's label events,
with the unit's own reconciliation checked against them) and deviation links (where each came
from: its event and its step's values; related deviations, linked at the unit or by QA through
the console and the API).  Every screen passes axe-core."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.sync import SyncClient
from tests.server.conftest import clock
from tests.server.qa import login

from .conftest import COI, Served, sign_in


def push_labelled(served: Served, tmp_path: Path, batch_id: str) -> None:
    unit = UnitSigner.generate(f"U-{batch_id}")
    served.server.enrol(unit, site="SITE-A")
    led = Ledger.open(tmp_path / f"{batch_id}.db", unit, clock())  # type: ignore[arg-type]
    a = {"batch_id": batch_id, "actor": "op.alice"}
    led.append("batch.started", {"coi": COI, "mbr_id": "CAR-T", "mbr_version": "3",
                                 "mbr_hash": "0" * 64, "product": "p"}, **a)  # fmt: skip
    led.append("value.recorded", {"step": "seed", "name": "cells",
                                  "value": {"value": "1.2e8", "unit": "1"}, "limit": "ok"}, **a)
    for dev, sev in (("DEV-1", "major"), ("DEV-2", "minor"), ("DEV-3", "minor")):
        led.append("deviation.raised", {"deviation_id": dev, "step": "seed",
                                        "category": "process", "reason": f"{dev} at seeding",
                                        "severity": sev}, **a)  # fmt: skip
    led.append("deviation.linked", {"deviation_id": "DEV-1", "linked_to": "DEV-2"}, **a)
    led.append("label.printed", {"label": "product_bag", "count": 3, "content": {}}, **a)
    led.append("label.applied", {"label": "product_bag", "count": 1}, **a)
    led.append("label.destroyed", {"label": "product_bag", "count": 2, "reason": "smudged"}, **a)
    counts = {"product_bag": {"printed": 3, "applied": 1, "destroyed": 2, "balanced": True}}
    led.append("label.reconciled", {"counts": counts, "balanced": True}, **a)
    led.append("label.printed", {"label": "shipper", "count": 2, "content": {}}, **a)
    led.append("label.applied", {"label": "shipper", "count": 1}, **a)
    led.append("batch.completed", {}, **a)
    SyncClient(led, served.url, server_key=served.server.key).sync_once()
    last = max(datetime.fromisoformat(e.recorded_at) for e in led.events())
    while datetime.now(UTC) <= last:
        time.sleep(0.05)


def test_label_reconciliation_and_deviation_links(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_labelled(served, tmp_path, "B-LAB")
    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    rev.goto(f"{served.url}/console/batches/B-LAB")
    order = rev.evaluate(
        "['h-exceptions','h-timeline','h-values','h-used','h-labels','h-cqa','h-custody']"
        ".map(id => document.getElementById(id).getBoundingClientRect().top)"
    )
    assert order == sorted(order)
    rows = [r.split("\t") for r in rev.inner_text("#label-counts tbody").splitlines()]
    assert rows == [["product bag", "3", "1", "2", "balanced"],
                    ["shipper", "2", "1", "0", "does not balance"]]  # fmt: skip
    assert "Labels not balanced: 1" in rev.inner_text("#exceptions")
    assert "its counts agree with the label events" in rev.inner_text("#labels")
    rev.screens.check("labels-and-links")

    # Where each deviation came from, and what it is related to.
    dev1 = rev.locator("#dev-DEV-1")
    assert "DEV-2 (linked at the unit)" in dev1.inner_text()
    assert "DEV-1 (linked at the unit)" in rev.inner_text("#dev-DEV-2")
    dev1.get_by_role("link", name=re.compile(r"^event seq \d+$")).click()
    seq = rev.evaluate("location.hash")
    assert rev.inner_text(f"{seq} td:nth-child(3)") == "deviation.raised"
    assert dev1.get_by_role("link", name="value seed:cells").count() == 1

    # QA links two deviations (the console calls the API's service); a second time is refused.
    before = _view(served)["record_hash"]
    rev.select_option("#link-dev", "DEV-2")
    rev.select_option("#link-to", "DEV-3")
    rev.fill("#link-reason", "same label roll")
    rev.click("#link-submit")
    rev.wait_for_selector(".banner.ok")
    assert "DEV-3 (linked by rev.a: same label roll)" in rev.inner_text("#dev-DEV-2")
    assert "DEV-2 (linked by rev.a: same label roll)" in rev.inner_text("#dev-DEV-3")
    assert _view(served)["record_hash"] != before  # a link is part of what is signed
    with login(served.server, "rev.a") as c:
        r = c.post("/v1/batches/B-LAB/deviations/DEV-3/links",
                   json={"linked_to": "DEV-2", "reason": "again"})  # fmt: skip
        assert r.status_code == 409 and "already linked" in r.json()["detail"]
        r = c.post("/v1/batches/B-LAB/deviations/DEV-3/links",
                   json={"linked_to": "DEV-3", "reason": "self"})  # fmt: skip
        assert r.status_code == 422 and "itself" in r.json()["detail"]
        r = c.post("/v1/batches/B-LAB/deviations/DEV-3/links",
                   json={"linked_to": "DEV-1", "reason": "same seeding"})  # fmt: skip
        assert r.status_code == 201, r.text
    with login(served.server, "rev.b") as c:  # another site's reviewer
        r = c.post("/v1/batches/B-LAB/deviations/DEV-3/links",
                   json={"linked_to": "DEV-2", "reason": "x"})  # fmt: skip
        assert r.status_code == 403


def _view(served: Served) -> dict[str, Any]:
    with login(served.server, "qa.global") as c:
        return dict(c.get("/v1/batches/B-LAB").json())
