"""The sync client's segments: the ledger's exact bytes, cut at checkpoints, none too small."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.keys import UnitSigner
from edge import sync as sync_mod
from edge.errors import LedgerCorruptError
from edge.ledger import Append, Ledger
from edge.sync import SyncClient

from .test_ledger import clock

SIGNER = UnitSigner.from_seed(bytes(range(3, 35)), "UNIT-SEG")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    led = Ledger.open(tmp_path_factory.mktemp("seg") / "edge.db", SIGNER, clock())
    rng = random.Random(7)
    for g in range(120):  # commit groups of 1..60 events, some crossing the read windows
        n = rng.choice((1, 2, 7, 60))
        led.append_many([Append("reading.recorded", {"g": g, "i": i}, "B-1") for i in range(n)])
    yield led
    led.close()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), max_events=st.integers(1, 400), page=st.sampled_from([1, 3, 10_000]))
def test_segments_are_the_ledger_cut_at_checkpoints(
    ledger: Ledger, data: st.DataObject, max_events: int, page: int
) -> None:
    cps = ledger.checkpoint_seqs(0)
    assert ledger.checkpoint_seqs(cps[4], limit=3) == cps[5:8]
    after = data.draw(st.sampled_from([0, *cps]))  # the server's head is always a checkpoint
    client = SyncClient(ledger, "http://127.0.0.1:9", max_events=max_events)
    saved, sync_mod.CHECKPOINT_PAGE = sync_mod.CHECKPOINT_PAGE, page  # pages of any size
    try:
        segs = list(client.segments(after))
    finally:
        sync_mod.CHECKPOINT_PAGE = saved
    expected = b"".join(line + b"\n" for line in ledger.lines(after + 1))
    assert b"".join(body for _, body in segs) == expected
    lo = after + 1
    for k, (last, body) in enumerate(segs):
        assert last in cps and body.splitlines()[-1].startswith(b'{"head_hash":')
        events = last - lo + 1
        assert body.count(b'"type":"event"') == events
        ends = [c for c in cps if lo <= c < last]
        # Cut at the first checkpoint closing max_events events: no earlier one would do.
        assert all(c - lo + 1 < max_events for c in ends)
        if k < len(segs) - 1:
            assert events >= max_events
        lo = last + 1
    assert lo == ledger.head[0] + 1 or (after == ledger.head[0] and segs == [])


def test_a_gap_in_the_ledger_is_reported_not_skipped(tmp_path: Path) -> None:
    led = Ledger.open(tmp_path / "edge.db", SIGNER, clock())
    led.append_many([Append("reading.recorded", {"i": i}) for i in range(10)])
    raw = led._raw()
    raw.execute("DROP TRIGGER events_no_delete")
    raw.execute("DELETE FROM events WHERE seq = 4")  # what a disk editor could do
    with pytest.raises(LedgerCorruptError, match=r"events 1\.\.10: 1 missing"):
        led.wire_bytes(1, 10)
    # Reading for verification keeps going in seq order, so the verifier names the hole.
    seqs = [orjson.loads(line)["seq"] for line in led.lines()]
    assert seqs == [1, 2, 3, 5, 6, 7, 8, 9, 10, 10]
    with pytest.raises(LedgerCorruptError, match="seq is 5, expected 4"):
        led.verify_all()
    led.close()
