"""The batch view and the review signature read a batch's events only by primary key (the seqs
the projection's timeline holds), never by batch and kind: on PostgreSQL, right after a bulk
sync (a unit back with a million readings), such a query was planned on statistics from before
the sync and read the whole batch through the wrong index, 0.5 s a query, until autovacuum's
next ANALYZE.  The notes (comments, closures, corrections) and the labels still come through."""

from __future__ import annotations

import re
from pathlib import Path

from ebr_core.keys import UnitSigner
from edge.ledger import Append, Ledger
from edge.sync import SyncClient

from .conftest import Server, clock
from .qa import add_people, enter_results, example_results, login, publish_spec, sign
from .test_projections import START


def _events_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if re.search(r"\bFROM events\b", s)]


def test_a_view_and_a_signature_read_events_by_primary_key_only(
    server: Server, tmp_path: Path, statements: list[str]
) -> None:
    unit = UnitSigner.generate("UNIT-READS")
    server.enrol(unit)
    led = Ledger.open(tmp_path / "u.db", unit, clock())  # type: ignore[arg-type]
    a = {"batch_id": "B-READS", "actor": "op.alice"}
    led.append("batch.started", {**START, "product": "p"}, **a)
    led.append("deviation.raised", {"deviation_id": "DEV-R", "step": "s", "category": "process",
               "reason": "found", "severity": "minor"}, **a)  # fmt: skip
    led.append("deviation.commented", {"deviation_id": "DEV-R", "comment": "seen"}, **a)
    led.append("label.printed", {"label": "bag", "count": 2}, **a)
    led.append_many([Append("reading.recorded", {"channel": "temperature",
                     "value": {"value": "37.0", "unit": "Cel"}, "limit": "ok"}, "B-READS",
                     None)] * 50)  # fmt: skip
    led.append("batch.completed", {}, **a)
    assert SyncClient(led, server.url, server_key=server.key).sync_once().pushed == led.head[0]
    led.close()
    add_people(
        server,
        {
            "rev.r": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
            "qa.global": ("Gina Global", [("qa_approver", "*")]),
        },
    )
    publish_spec(server)
    with login(server, "rev.r") as c:
        assert enter_results(c, "B-READS", example_results()).status_code == 201
        statements.clear()
        view = c.get("/v1/batches/B-READS").json()
        assert sign(c, "B-READS", "rev.r", "reviewed", view=view).status_code == 201
    reads = _events_reads(statements)
    assert reads, "the view reads the notes' and labels' events"
    by_batch = [s for s in reads if "batch_id" in s]
    assert by_batch == [], by_batch
    # what those reads are for still shows: the comment's author, the labels printed
    dev = next(d for d in view["deviations"] if d["deviation_id"] == "DEV-R")
    assert [x["by"] for x in dev["comments"]] == ["op.alice"]
    assert view["labels"]["bag"]["printed"] == 2
