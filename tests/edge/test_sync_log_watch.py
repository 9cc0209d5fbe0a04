"""The unit's checks of the server's transparency log (edge.logwatch), on a real ledger, with a
log built by ebr_core.tlog in the test: receipts' inclusion proofs, consistency with the trusted
checkpoint, and the security alert (in the ledger, once, old checkpoint kept, alarm raised)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from ebr_core.keys import UnitSigner
from ebr_core.tlog import (
    Checkpoint,
    Ed25519NoteSigner,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    sign_checkpoint,
)
from edge.ledger import Ledger
from edge.logwatch import (
    LOG_CHECKPOINT,
    LOG_PENDING,
    Failure,
    LogSuspect,
    LogWatch,
    flush_pending,
    parse_consistency,
    segment_leaf,
)
from edge.sync import acknowledge_security_alarm, sync_alarm
from tests.server.conftest import clock, make_ledger

ORIGIN = "ebr.test/log"
SERVER = "http://server.test"


class Log:
    """A server's log as the test controls it: entries, tree, checkpoints signed by its key."""

    def __init__(self, key: UnitSigner, origin: str = ORIGIN) -> None:
        self.key, self.origin = key, origin
        self.signer = Ed25519NoteSigner(origin, key)
        self.entries: list[bytes] = []
        self.tree = MerkleTree()
        self.refuse = False  # answer consistency requests with a refusal

    def add(self, *entries: bytes) -> int:
        for e in entries:
            self.entries.append(e)
            self.tree.append(leaf_hash(e))
        return self.tree.size() - 1

    def filler(self, n: int) -> None:
        for i in range(n):
            self.add(f"ctgtp/tlog-entry/v1\0audit {len(self.entries)} {i}".encode())

    def note(self, size: int | None = None) -> str:
        n = self.tree.size() if size is None else size
        from ebr_core.tlog import root_hash

        cp = Checkpoint(self.origin, n, root_hash(self.tree, n))
        return sign_checkpoint(cp, self.signer).to_bytes().decode()

    def receipt_log(self, index: int | None) -> dict[str, Any]:
        size = self.tree.size()
        proof = [] if index is None else inclusion_proof(self.tree, index, size)
        return {
            "index": index,
            "tree_size": size,
            "inclusion": [base64.b64encode(h).decode() for h in proof],
            "checkpoint": self.note(),
        }

    def consistency(self, old: int, new: int) -> list[bytes]:
        if self.refuse:
            raise LogSuspect(Failure.PROOF_REFUSED, f"the server refused {old} -> {new}")
        body = {
            "old": old,
            "new": new,
            "proof": [base64.b64encode(h).decode() for h in consistency_proof(self.tree, old, new)],
        }
        return parse_consistency(json.loads(json.dumps(body)), old, new)


@pytest.fixture
def server_key() -> UnitSigner:
    return UnitSigner.generate("server")


@pytest.fixture
def led(tmp_path: Path) -> Ledger:
    return make_ledger(tmp_path / "edge.db", UnitSigner.generate("UNIT-L"), groups=4, per_group=4)


def watch(led: Ledger, log: Log, key: UnitSigner) -> LogWatch:
    return LogWatch(led, key.public, SERVER, log.consistency, clock=lambda: 1000.0)


def seg_leaf(led: Ledger, first: int, last: int) -> bytes:
    return segment_leaf(led.unit_id, first, last, led.hash_at(last) or "")


def alerts(led: Ledger) -> list[dict[str, Any]]:
    return [e.payload for e in led.events_of_kind("security.alert")]


def test_first_contact_is_trusted_then_growth_is_checked(led: Ledger, server_key: UnitSigner) -> None:
    log = Log(server_key)
    log.filler(5)
    i = log.add(seg_leaf(led, 1, 5))
    w = watch(led, log, server_key)
    w.receipt(log.receipt_log(i), [seg_leaf(led, 1, 5)])
    assert w.first_contact and not w.alerts and w.inclusions == 1
    assert "trusted on first use" in w.summary()
    first = Checkpoint.parse_text(led.get_meta(LOG_CHECKPOINT).split("\n\n")[0] + "\n")
    assert first.size == 6
    # Many later syncs: the log grows (others' entries between), every receipt checks out.
    last = 5
    for _ in range(12):
        log.filler(3)
        i = log.add(seg_leaf(led, last + 1, last + 1))
        w = watch(led, log, server_key)
        w.receipt(log.receipt_log(i), [seg_leaf(led, last + 1, last + 1)])
        w.latest(log.note())
        assert not w.alerts and not w.stopped, w.summary()
        last += 1
    assert w.checkpoint is not None and w.checkpoint.size == log.tree.size() == 6 + 12 * 4
    assert "consistent with size" in w.summary() and alerts(led) == []
    assert sync_alarm(led) is None


def test_inclusion_of_another_segment_is_an_alert(led: Ledger, server_key: UnitSigner) -> None:
    log = Log(server_key)
    log.filler(3)
    w = watch(led, log, server_key)
    w.latest(log.note())
    before = led.get_meta(LOG_CHECKPOINT)
    # The server logged a segment with another head hash (not what this ledger holds).
    i = log.add(segment_leaf(led.unit_id, 1, 5, "ab" * 32))
    w = watch(led, log, server_key)
    w.receipt(log.receipt_log(i), [seg_leaf(led, 1, 5)])
    assert [a.failure for a in w.alerts] == [Failure.INCLUSION]
    assert led.get_meta(LOG_CHECKPOINT) == before  # the old checkpoint kept
    [a] = alerts(led)
    assert a["failure"] == "inclusion" and a["trusted_size"] == 3 and a["offered_size"] == 4
    assert a["evidence"].startswith(ORIGIN + "\n4\n")
    alarm = sync_alarm(led)
    assert alarm is not None and alarm["kind"] == "security" and "inclusion" in alarm["message"]


def test_rewound_log_is_an_alert_once(led: Ledger, server_key: UnitSigner) -> None:
    log = Log(server_key)
    log.filler(10)
    watch(led, log, server_key).latest(log.note())
    trusted = led.get_meta(LOG_CHECKPOINT)
    rewound = log.note(7)  # an administrator deleted the last three leaves, re-signed
    for offered in (rewound, rewound, log.note(8)):  # seen again; then regrown a little
        w = watch(led, log, server_key)
        w.latest(offered)
        assert w.stopped and led.get_meta(LOG_CHECKPOINT) == trusted
    # One alert for one offending checkpoint however often it is seen, and one for a log that
    # stays rewound against the same trusted checkpoint (not one per sync).
    [a] = alerts(led)
    assert a["failure"] == "rewound" and a["trusted_size"] == 10 and a["offered_size"] == 7
    assert a["evidence"] == rewound and a["server"] == SERVER and a["origin"] == ORIGIN
    assert "already recorded" in w.summary() and "trusted checkpoint kept (size 10)" in w.summary()


def test_split_view_same_size_and_fork(led: Ledger, server_key: UnitSigner) -> None:
    log = Log(server_key)
    log.filler(8)
    watch(led, log, server_key).latest(log.note())
    other = Log(server_key)  # another tree under the same key and origin: a fork
    other.filler(8)
    other.entries[3:4] = [b"rewritten"]
    other.tree = MerkleTree([leaf_hash(e) for e in other.entries])
    w = watch(led, other, server_key)
    w.latest(other.note())
    assert [a.failure for a in w.alerts] == [Failure.SPLIT_VIEW]
    other.filler(5)  # the fork grows: its consistency proof cannot extend the trusted tree
    w = watch(led, other, server_key)
    w.latest(other.note())
    # The same failure against the same trusted checkpoint: the alarm stands, no second event.
    assert w.alerts == [] and [a.failure for a in w.repeated] == [Failure.SPLIT_VIEW]
    assert "does not extend" in w.repeated[0].message
    assert [a["offered_size"] for a in alerts(led)] == [8]
    # Once the log is seen to extend the trusted checkpoint again (another trusted one), a
    # fork of that is a new alert.
    log.filler(4)
    w = watch(led, log, server_key)
    w.latest(log.note())
    assert not w.alerts and w.checkpoint is not None and w.checkpoint.size == 12
    w = watch(led, other, server_key)
    w.latest(other.note())
    assert [a.failure for a in w.alerts] == [Failure.SPLIT_VIEW]
    assert [a["offered_size"] for a in alerts(led)] == [8, 13]
    assert [a["trusted_size"] for a in alerts(led)] == [8, 12]
    assert Checkpoint.parse_text(led.get_meta(LOG_CHECKPOINT).split("\n\n")[0] + "\n") == (
        Checkpoint.parse_text(log.note().split("\n\n")[0] + "\n")
    )


def test_refused_proof_foreign_key_and_missing_log(led: Ledger, server_key: UnitSigner) -> None:
    log = Log(server_key)
    log.filler(4)
    watch(led, log, server_key).latest(log.note())
    log.filler(2)
    log.refuse = True
    w = watch(led, log, server_key)
    w.latest(log.note())
    assert [a.failure for a in w.alerts] == [Failure.PROOF_REFUSED]
    log.refuse = False
    rogue = Log(UnitSigner.generate("rogue"))
    rogue.filler(9)
    w = watch(led, log, server_key)
    w.latest(rogue.note())
    assert [a.failure for a in w.alerts] == [Failure.SIGNATURE]
    w = watch(led, log, server_key)
    w.receipt(None, [])
    assert [a.failure for a in w.alerts] == [Failure.MISSING]
    w = watch(led, log, server_key)
    w.receipt({"index": 0, "tree_size": "x", "inclusion": [], "checkpoint": log.note()}, [])
    assert [a.failure for a in w.alerts] == [Failure.MALFORMED]
    assert [a["failure"] for a in alerts(led)] == [
        "proof-refused",
        "signature",
        "missing",
        "malformed",
    ]
    assert Checkpoint.parse_text(led.get_meta(LOG_CHECKPOINT).split("\n\n")[0] + "\n").size == 4
    # Someone looked into it: the alarm goes, the alerts and the trusted checkpoint stay.
    assert acknowledge_security_alarm(led) is not None and sync_alarm(led) is None
    assert len(alerts(led)) == 4


def test_a_server_without_a_log_is_not_an_alert_before_first_contact(
    led: Ledger, server_key: UnitSigner
) -> None:
    w = watch(led, Log(server_key), server_key)
    w.receipt(None, [])
    w.latest(None)
    assert not w.alerts and w.no_log and "publishes no log" in w.summary()
    assert led.get_meta(LOG_CHECKPOINT) is None


def test_a_reading_sync_keeps_the_alert_for_the_writer(tmp_path: Path, server_key: UnitSigner) -> None:
    signer = UnitSigner.generate("UNIT-R")
    make_ledger(tmp_path / "edge.db", signer, groups=1, per_group=2).close()
    writer = Ledger.open(tmp_path / "edge.db", signer, clock())  # type: ignore[arg-type]
    reader = Ledger.open(tmp_path / "edge.db", signer, clock(), writer=False)  # type: ignore[arg-type]
    log = Log(server_key)
    log.filler(6)
    watch(reader, log, server_key).latest(log.note())
    w = watch(reader, log, server_key)
    w.latest(log.note(2))
    assert [a.failure for a in w.alerts] == [Failure.REWOUND]
    # The writer holds the ledger: the alert waits in the meta, not in the ledger yet.
    assert len(json.loads(reader.get_meta(LOG_PENDING) or "[]")) == 1
    assert alerts(reader) == []
    assert flush_pending(writer) == 1
    reader.refresh()
    [a] = alerts(reader)
    assert a["failure"] == "rewound"
    assert json.loads(writer.get_meta(LOG_PENDING) or "[]") == []
    writer.close()
    # No writer now: a reading sync records its alert itself, opening the ledger a moment.
    log.origin, log.signer = "elsewhere.test/log", Ed25519NoteSigner("elsewhere.test/log", server_key)
    w = watch(reader, log, server_key)
    w.latest(log.note(4))
    reader.refresh()
    assert [(x["failure"], x["offered_size"]) for x in alerts(reader)] == [
        ("rewound", 2),
        ("origin", 4),
    ]
    reader.close()
