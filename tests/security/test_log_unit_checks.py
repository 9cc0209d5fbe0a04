"""A rogue administrator rewinds or forks the server's transparency log directly in the database
of a running server (SQLite and PostgreSQL), re-signing with the server's key file as someone
with database and key access would: the unit's next sync raises a security alert in its own
ledger, keeps its old checkpoint and raises the alarm; the alert is recorded once.  And the
honest path: many syncs, no alert, the trusted checkpoint grows (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import text

from ebr_core.keys import UnitSigner
from ebr_core.tlog import (
    Checkpoint,
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    Frontier,
    SignedNote,
    leaf_hash,
    open_checkpoint,
    sign_checkpoint,
)
from edge.ledger import Append, Ledger
from edge.logwatch import LOG_CHECKPOINT
from edge.sync import SyncClient, SyncReport, sync_alarm
from server.db import make_engine
from server.keys import load_server_key
from tests.server.conftest import Server, clock

LOG_TABLES = ("tlog_leaves", "tlog_nodes", "tlog_checkpoints")


def grow(led: Ledger, n: int = 6) -> None:
    batch = f"B-{led.unit_id}"
    led.append_many(
        [
            Append("reading.recorded", {"channel": "temp", "i": i, "value": {"value": "37.0", "unit": "Cel"}}, batch)
            for i in range(n)
        ]
    )


def sync(led: Ledger, srv: Server) -> SyncReport:
    return SyncClient(led, srv.url, server_key=srv.key, max_events=5).sync_once(attempts=2)


def trusted(led: Ledger) -> Checkpoint:
    raw = led.get_meta(LOG_CHECKPOINT)
    assert raw is not None
    return Checkpoint.parse_text(SignedNote.parse(raw.encode()).text)


def alerts(led: Ledger) -> list[dict[str, Any]]:
    return [e.payload for e in led.events_of_kind("security.alert")]


class RogueAdmin:
    """Someone with the server's database and its key file: rebuilds the log's tables from the
    leaves they choose and signs a checkpoint over them with the server's own key."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.engine = make_engine(srv.settings.database_url)
        self.key = load_server_key(srv.settings.data_dir)
        self.origin = srv.settings.log_origin

    def leaves(self) -> list[bytes]:
        with self.engine.connect() as c:
            return [bytes(r[0]) for r in c.execute(text("SELECT leaf FROM tlog_leaves ORDER BY idx"))]

    def rewrite(self, leaves: list[bytes]) -> SignedNote:
        f = Frontier()
        leaf_rows, node_rows = [], []
        for leaf in leaves:
            for level, idx, h in f.append(leaf_hash(leaf)):
                if level == 0:
                    leaf_rows.append({"idx": idx, "leaf": leaf, "leaf_hash": h})
                else:
                    node_rows.append({"level": level, "idx": idx, "hash": h})
        note = sign_checkpoint(Checkpoint(self.origin, f.size, f.root()), Ed25519NoteSigner(self.origin, self.key))
        with self.engine.begin() as c:
            for t in LOG_TABLES:  # the append-only guards go first: it is their database
                if c.dialect.name == "sqlite":
                    c.execute(text(f"DROP TRIGGER IF EXISTS {t}_no_update"))
                    c.execute(text(f"DROP TRIGGER IF EXISTS {t}_no_delete"))
                else:
                    c.execute(text(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}"))
                c.execute(text(f"DELETE FROM {t}"))
            c.execute(text("INSERT INTO tlog_leaves (idx, leaf, leaf_hash) VALUES (:idx, :leaf, :leaf_hash)"), leaf_rows)
            if node_rows:
                c.execute(text("INSERT INTO tlog_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"), node_rows)
            c.execute(
                text("UPDATE tlog_head SET size = :n, peaks = :p WHERE id = 1"),
                {"n": f.size, "p": b"".join(f.peaks)},
            )
            c.execute(
                text("INSERT INTO tlog_checkpoints (size, note, signed_at) VALUES (:s, :n, CURRENT_TIMESTAMP)"),
                {"s": f.size, "n": note.to_bytes().decode()},
            )
        return note

    def close(self) -> None:
        self.engine.dispose()


def unit(srv: Server, tmp_path: Path, name: str) -> Ledger:
    signer = UnitSigner.generate(name)
    srv.enrol(signer)
    led = Ledger.open(tmp_path / f"{name}.db", signer, clock())  # type: ignore[arg-type]
    led.append(
        "batch.started",
        {"coi": "&/CHA999926ABC123", "mbr_id": "M", "mbr_version": "1", "mbr_hash": "0" * 64, "product": "p"},
        batch_id=f"B-{name}",
        actor="op.alice",
    )
    grow(led, 8)
    return led


def test_honest_log_many_syncs_no_alert_checkpoint_grows(server: Server, tmp_path: Path) -> None:
    led = unit(server, tmp_path, "UNIT-HONEST")
    other = unit(server, tmp_path, "UNIT-OTHER")  # another unit's segments grow the log between
    sizes = []
    for i in range(4):
        grow(led, 7)
        grow(other, 3)
        r = sync(led, server)
        assert r.alerts == [] and r.log is not None, r.log
        assert "receipt inclusion proofs verified" in r.log
        assert ("trusted on first use" if i == 0 else "consistent with size") in r.log
        sizes.append(trusted(led).size)
        sync(other, server)
    r = sync(led, server)  # nothing to push: the latest checkpoint is still checked
    assert r.segments == 0 and r.alerts == [] and trusted(led).size > sizes[-1]
    assert sizes == sorted(set(sizes)) and len(sizes) == 4
    assert alerts(led) == [] and sync_alarm(led) is None
    # The trusted checkpoint is the server's, signed by its key under the log's origin.
    note = SignedNote.parse((led.get_meta(LOG_CHECKPOINT) or "").encode())
    open_checkpoint(note, Ed25519NoteVerifier(server.settings.log_origin, server.key))
    assert server.events(led.unit_id) == led.head[0]


def test_rewound_log_raises_the_units_security_alert(server: Server, tmp_path: Path) -> None:
    led = unit(server, tmp_path, "UNIT-REWOUND")
    for _ in range(3):
        grow(led)
        assert sync(led, server).alerts == []
    before = led.get_meta(LOG_CHECKPOINT)
    size = trusted(led).size
    rogue = RogueAdmin(server)
    try:
        leaves = rogue.leaves()
        assert len(leaves) == size
        cut = size // 2  # the tail deleted (the unit's last segments with it), re-signed
        rewound = rogue.rewrite(leaves[:cut])
    finally:
        rogue.close()
    grow(led)
    head = led.head[0]
    r = sync(led, server)
    # The events went (the unit's own, signed), the log's view did not.
    assert len(r.alerts) == 1 and "SECURITY ALERT (rewound)" in r.alerts[0], r.log
    assert r.log is not None and f"trusted checkpoint kept (size {size})" in r.log
    assert led.get_meta(LOG_CHECKPOINT) == before
    [a] = alerts(led)
    assert a["failure"] == "rewound" and a["trusted_size"] == size
    assert a["offered_size"] is not None and a["offered_size"] < size
    assert a["server"] == server.url and a["origin"] == server.settings.log_origin
    # The evidence is a checkpoint the server's key signed: it proves the server misbehaved.
    ev = open_checkpoint(
        SignedNote.parse(a["evidence"].encode()),
        Ed25519NoteVerifier(server.settings.log_origin, server.key),
    )
    assert ev.checkpoint.size == a["offered_size"] and ev.checkpoint.size >= cut
    assert rewound.text.split("\n")[0] == ev.checkpoint.origin
    alarm = sync_alarm(led)
    assert alarm is not None and alarm["kind"] == "security" and "rewound" in alarm["message"]
    # The alert is one of the unit's events: it reached the server in the same run, and the
    # server raised its own alert for QA and the administrators from it.
    assert led.head[0] == head + 1 and server.events(led.unit_id) == led.head[0]
    with server.admin() as c:
        raised = [x for x in c.get("/admin/alerts").json() if x["kind"] == "security.unit_log"]
    assert len(raised) == 1 and raised[0]["unit_id"] == led.unit_id, raised
    assert "transparency log failed its check" in raised[0]["message"]
    assert "rewound" in raised[0]["message"]
    # Later syncs: the alarm stands and the checkpoint stays.  The rewound log is recorded once
    # however often it is seen; regrown past the trusted size it is a fork (split view), once.
    for _ in range(5):
        grow(led)
        r = sync(led, server)
        assert r.alerts and r.log is not None and r.log.startswith("SECURITY ALERT")
    assert "already recorded" in r.log
    assert [x["failure"] for x in alerts(led)] == ["rewound", "split-view"]
    assert led.get_meta(LOG_CHECKPOINT) == before
    assert json.loads(led.get_meta("sync.alarm") or "null")["kind"] == "security"
    assert server.events(led.unit_id) == led.head[0]


def test_forked_log_raises_the_units_security_alert(server: Server, tmp_path: Path) -> None:
    led = unit(server, tmp_path, "UNIT-FORKED")
    for _ in range(2):
        grow(led)
        assert sync(led, server).alerts == []
    before = led.get_meta(LOG_CHECKPOINT)
    size = trusted(led).size
    rogue = RogueAdmin(server)
    try:
        leaves = rogue.leaves()
        # A leaf rewritten (the first segment's head hash), the tree re-signed at the same size:
        # the tree this unit is shown from now on is another one.
        i = next(n for n, leaf in enumerate(leaves) if b'"kind":"segment"' in leaf)
        leaves[i] = leaves[i].replace(b'"head_hash":"', b'"head_hash":"0', 1)[:-66] + leaves[i][-65:]
        assert len(leaves[i]) == len(rogue.leaves()[i]) and leaves[i] != rogue.leaves()[i]
        forked = rogue.rewrite(leaves)
    finally:
        rogue.close()
    head = led.head[0]
    r = sync(led, server)  # nothing to push: the latest checkpoint alone shows the fork
    assert len(r.alerts) == 1 and "(split-view)" in r.alerts[0]
    assert r.pushed == 1 and led.head[0] == head + 1  # the alert itself, sent in the same run
    [a] = alerts(led)
    assert a["failure"] == "split-view" and a["trusted_size"] == a["offered_size"] == size
    assert a["evidence"] == forked.to_bytes().decode()
    assert a["trusted_root"] != a["offered_root"]
    assert led.get_meta(LOG_CHECKPOINT) == before
    # The forked log grows: its consistency proof cannot join the trusted tree; the alarm
    # stands and the same failure is not recorded again.
    grow(led)
    r = sync(led, server)
    assert r.alerts and "split-view" in r.alerts[0] and "already recorded" in (r.log or "")
    assert len(alerts(led)) == 1 and led.get_meta(LOG_CHECKPOINT) == before
    assert server.events(led.unit_id) == led.head[0]
