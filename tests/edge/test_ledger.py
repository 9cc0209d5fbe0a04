"""The edge ledger: durable, append-only, verified on open, fail-closed, crash-safe."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ebr_core.keys import Keyring, UnitSigner
from ebr_core.ledgerfile import verify_ledger_chunks
from edge.errors import LedgerBusyError, LedgerClosedError, LedgerCorruptError, LedgerIOError
from edge.export import export_ledger
from edge.ledger import Append, Ledger

SIGNER = UnitSigner.from_seed(bytes(range(32)), "UNIT-CRASH")


def clock() -> Callable[[], datetime]:
    t = [datetime(2026, 11, 24, 8, tzinfo=UTC)]

    def now() -> datetime:
        t[0] += timedelta(milliseconds=5)
        return t[0]

    return now


def open_ledger(path: Path) -> Ledger:
    return Ledger.open(path, SIGNER, clock())


def test_append_reopen_continue(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    led = open_ledger(db)
    assert led.head[0] == 0
    e1 = led.append("batch.started", {"coi": "&/CHA999926ABC123"}, batch_id="B-1", actor="op")
    group = led.append_many([Append("reading.recorded", {"i": str(i)}, "B-1") for i in range(10)])
    assert [e.seq for e in group] == list(range(2, 12))
    assert led.latest_checkpoint() is not None and led.latest_checkpoint().seq == 11  # type: ignore[union-attr]
    led.close()
    led = open_ledger(db)
    assert led.head == (11, group[-1].hash)
    e12 = led.append("step.completed", {"step": "s1"}, batch_id="B-1", actor="op")
    assert (e12.seq, e12.prev_hash) == (12, group[-1].hash)
    assert led.verify_all().event_count == 12
    assert [e.seq for e in led.batch_events("B-1")] == list(range(1, 13))
    assert led.has_batch("B-1") and not led.has_batch("B-2")
    assert next(led.events(1, 1)) == e1


def test_threads_share_one_ledger(tmp_path: Path) -> None:
    """Instrument threads and the operator append at once, while a reader verifies: every
    acknowledged event is recorded once, seqs have no gap, and each read sees a verifiable
    committed prefix (the demo once failed with "cannot start a transaction within a
    transaction" when a serial reader thread and the operator appended together)."""
    db = tmp_path / "edge.db"
    led = open_ledger(db)
    acked: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    verified: list[int] = []
    done = threading.Event()
    start = threading.Barrier(5)

    def writer(w: int) -> None:
        try:
            start.wait()
            for i in range(40):
                if i % 2:
                    evs = led.append_many(
                        [
                            Append("reading.recorded", {"w": str(w), "i": f"{i}.{j}"}, "B-1")
                            for j in range(5)
                        ]
                    )
                else:
                    evs = [led.append("step.completed", {"w": str(w), "i": str(i)}, actor="op")]
                # A shared dedupe key: only one thread's event may be recorded under it.
                led.append("scan.accepted", {"w": str(w)}, dedupe_key=f"scan-{i}")
                acked[w].extend(e.seq for e in evs)
        except BaseException as e:  # pragma: no cover - the failure is asserted below
            errors.append(e)

    def reader() -> None:
        try:
            start.wait()
            while not done.is_set():
                if led.head[0]:  # nothing committed yet: nothing to verify
                    verified.append(led.verify_all().event_count)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads[:4]:
        t.join(timeout=120)
    done.set()
    threads[4].join(timeout=120)
    assert not errors, errors
    mine = sorted(s for w in acked for s in w)
    assert len(mine) == len(set(mine)) == 4 * 20 * 6
    head = led.head[0]
    assert head == len(mine) + 40  # plus one event per shared dedupe key
    assert led.verify_all().event_count == head
    kinds = [e.kind for e in led.events()]
    assert kinds.count("scan.accepted") == 40
    assert len(verified) > 1 and verified == sorted(verified)
    led.close()
    assert open_ledger(db).verify_all().event_count == head


def test_dedupe_key(tmp_path: Path) -> None:
    led = open_ledger(tmp_path / "edge.db")
    a = led.append("reading.recorded", {"v": "1"}, dedupe_key="mqtt:7")
    again = led.append("reading.recorded", {"v": "1"}, dedupe_key="mqtt:7")
    assert again == a and led.head[0] == 1
    out = led.append_many(
        [
            Append("reading.recorded", {"v": "1"}, dedupe_key="mqtt:7"),
            Append("reading.recorded", {"v": "2"}, dedupe_key="mqtt:8"),
            Append("reading.recorded", {"v": "2"}, dedupe_key="mqtt:8"),
        ]
    )
    assert [e.payload for e in out] == [{"v": "2"}] and led.head[0] == 2


def test_events_are_append_only(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    led = open_ledger(db)
    led.append("step.completed", {})
    led.close()
    con = sqlite3.connect(db)
    for sql in (
        "UPDATE events SET kind = 'x'",
        "DELETE FROM events",
        "UPDATE checkpoints SET line = x''",
        "DELETE FROM checkpoints",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute(sql)
    con.close()


def test_tampering_is_found_on_open(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    led = open_ledger(db)
    led.append_many([Append("reading.recorded", {"v": str(i)}) for i in range(5)])
    led.close()
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER events_no_update")  # what an attacker with the file could do
    con.execute('UPDATE events SET line = replace(line, \'"v":"3"\', \'"v":"9"\')')
    con.commit()
    con.close()
    with pytest.raises(LedgerCorruptError, match="content does not match its hash"):
        open_ledger(db)


def test_a_last_line_that_does_not_decode_is_a_corrupt_ledger(tmp_path: Path) -> None:
    """The last stored event is read on open: a line that is no event any more (altered with
    the triggers dropped) stops the ledger as corrupt, naming what is wrong, not a TypeError."""
    db = tmp_path / "edge.db"
    led = open_ledger(db)
    led.append_many([Append("reading.recorded", {"v": str(i)}) for i in range(3)])
    led.close()
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER events_no_update")
    con.execute('UPDATE events SET line = replace(line, \'"type":"event"\', \'"type":"seal"\')')
    con.commit()
    con.close()
    with pytest.raises(LedgerCorruptError, match="a stored event line does not decode"):
        open_ledger(db)


def test_ledger_of_another_unit_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    open_ledger(db).append("step.completed", {})
    with pytest.raises(LedgerCorruptError, match="belongs to unit 'UNIT-CRASH', not 'OTHER'"):
        Ledger.open(db, UnitSigner.generate("OTHER"), clock())


def test_disk_full_fails_closed(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    led = open_ledger(db)
    led.append("step.completed", {"n": 0})
    pages = led._conn.exec_driver_sql("PRAGMA page_count").scalar()
    led._conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")  # the disk is now "full"
    big = [Append("reading.recorded", {"pad": "x" * 2000, "i": i}) for i in range(50)]
    with pytest.raises(LedgerIOError, match=r"seq 2\.\.51 .*NOT recorded.*refuses new events"):
        led.append_many(big)
    with pytest.raises(LedgerClosedError, match="the ledger refuses new events: write failed"):
        led.append("step.completed", {"n": 1})
    assert led.head[0] == 1
    led.close()
    led = open_ledger(db)  # restart: re-verified, continues without a gap
    assert led.append("step.completed", {"n": 2}).seq == 2


def test_export_writes_a_sealed_verifiable_file(tmp_path: Path) -> None:
    led = open_ledger(tmp_path / "edge.db")
    led.append_many([Append("reading.recorded", {"i": i}) for i in range(20)])
    led.append("step.completed", {})
    v = export_ledger(led, tmp_path / "out" / "ledger.jsonl")
    assert (v.event_count, v.checkpoint_count, v.sealed) == (21, 2, True)
    again = verify_ledger_chunks(
        [(tmp_path / "out" / "ledger.jsonl").read_bytes()], Keyring([SIGNER.public])
    )
    assert again == v
    assert (tmp_path / "out" / "unit.pub").exists()


def crash_cycles(tmp_path: Path, kills: int) -> None:
    db = tmp_path / "edge.db"
    acked: set[int] = set()
    rng = random.Random(1234)
    child = Path(__file__).with_name("ledger_child.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for _ in range(kills):
        p = subprocess.Popen([sys.executable, str(child), str(db)], stdout=subprocess.PIPE, env=env)
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"  # a cold start must not eat the time window
        time.sleep(rng.uniform(0.05, 0.4))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        acked.update(int(x) for x in out.split())
    # The child wrote on the real clock: so does this reopen (a test clock from days before
    # would be a clock set back, recorded as clock.jumped, tests/edge/test_clock.py).
    led = Ledger.open(db, SIGNER, lambda: datetime.now(UTC))
    head = led.head[0]
    assert acked, "the child acknowledged nothing"
    assert max(acked) <= head
    present = {e.seq for e in led.events(1, head)}
    assert acked <= present, f"lost acknowledged events: {sorted(acked - present)[:10]}"
    assert present == set(range(1, head + 1))
    assert led.verify_all().head_seq == head
    assert led.append("step.completed", {}).seq == head + 1


def test_one_process_writes_a_ledger_at_a_time(tmp_path: Path) -> None:
    # A second opener (another CLI command, another agent) waits for the writer lock, then
    # gives up with a message naming the holder; once the holder closes, it gets in.
    db = tmp_path / "edge.db"
    first = open_ledger(db)
    first.append("batch.started", {"coi": "&/CHA999926ABC123"}, batch_id="B-1", actor="op")
    started = time.monotonic()
    with pytest.raises(LedgerBusyError, match=rf"in use by another process \(pid {os.getpid()}\)"):
        Ledger.open(db, SIGNER, clock(), lock_wait=0.3)
    assert time.monotonic() - started >= 0.3
    threading.Timer(0.3, first.close).start()
    second = Ledger.open(db, SIGNER, clock(), lock_wait=10)  # waits for the close
    assert second.head[0] == 1
    assert second.append("step.completed", {}, batch_id="B-1", actor="op").seq == 2
    second.close()


def test_a_reader_opens_beside_the_writer_and_follows_its_commits(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    writer = open_ledger(db)
    writer.append("batch.started", {"coi": "&/CHA999926ABC123"}, batch_id="B-1", actor="op")
    started = time.monotonic()
    reader = Ledger.open(db, SIGNER, clock(), writer=False, lock_wait=5)
    assert time.monotonic() - started < 2  # no writer lock: it did not wait for the writer
    writer.append_many([Append("reading.recorded", {"i": str(i)}, "B-1") for i in range(3)])
    assert reader.head[0] == 1  # what it saw when it opened ...
    assert reader.refresh() == writer.head == (4, writer.head[1])  # ... until it looks again
    assert [e.seq for e in reader.events(1)] == [1, 2, 3, 4]
    reader.set_meta("sync.acked_seq", "4")  # the sync process keeps its own progress
    assert writer.get_meta("sync.acked_seq") == "4"
    with pytest.raises(LedgerClosedError, match="opened for reading only"):
        reader.append("step.completed", {}, batch_id="B-1")
    assert writer.append("step.completed", {}, batch_id="B-1", actor="op").seq == 5
    reader.close()
    writer.close()


def test_a_head_moved_by_another_writer_refuses_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where file locks do not work, the check inside the write transaction still keeps two
    # writers from building on the same head: the stale one records nothing and closes.
    monkeypatch.setattr("edge.ledger._lock_file", lambda path, wait: (os.open(os.devnull, 0), True))
    db = tmp_path / "edge.db"
    a, b = open_ledger(db), open_ledger(db)
    a.append("batch.started", {"coi": "&/CHA999926ABC123"}, batch_id="B-1", actor="op")
    with pytest.raises(LedgerBusyError, match="another process appended to the ledger"):
        b.append("batch.started", {"coi": "&/CHA999926XYZ789"}, batch_id="B-1", actor="op2")
    with pytest.raises(LedgerClosedError, match="another process appended"):
        b.append("step.completed", {}, batch_id="B-1")
    a.append("step.completed", {}, batch_id="B-1", actor="op")
    assert [e.actor for e in a.events(1, 2)] == ["op", "op"]
    assert a.verify_all().event_count == 2
    a.close()
    b.close()


def test_sigkill_crash_short(tmp_path: Path) -> None:
    crash_cycles(tmp_path, 20)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 200 cold starts of a child process: minutes on a 2-core machine
def test_sigkill_crash_soak(tmp_path: Path) -> None:
    crash_cycles(tmp_path, 200)


def test_every_page_is_checked_after_an_unclean_end_and_not_after_a_clean_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A million-reading ledger takes seconds to check page by page, so a writer does it only
    when the previous writer did not close cleanly (a crash, a failed write)."""
    checks: list[bool] = []
    real = Ledger._open_file.__func__  # type: ignore[attr-defined]

    def spy(cls, *args, integrity: bool, **kw):  # type: ignore[no-untyped-def]
        checks.append(integrity)
        return real(cls, *args, integrity=integrity, **kw)

    monkeypatch.setattr(Ledger, "_open_file", classmethod(spy))
    path = tmp_path / "edge.db"
    signer = UnitSigner.generate("UNIT-IC")
    led = Ledger.open(path, signer, clock())  # a new file: checked
    led.append("note.added", {"i": 1})
    led.close()
    assert (tmp_path / "edge.db.lock").read_bytes() == b"closed cleanly"
    led = Ledger.open(path, signer, clock())  # after a clean close: not checked
    # a crash: the process ends holding the lock, which still names it
    detached = led._release_lock.detach()  # type: ignore[attr-defined]
    os.close(detached[2][0])
    assert (tmp_path / "edge.db.lock").read_bytes() == str(os.getpid()).encode()
    led = Ledger.open(path, signer, clock())  # after the crash: checked
    led.close()
    reader = Ledger.open(path, signer, clock(), writer=False)  # a reader never checks pages
    reader.close()
    assert checks == [True, False, True, False]


def test_readers_open_beside_a_committing_writer_process(tmp_path: Path) -> None:
    """A reader (sync, status) opening while another process commits: the last event and the
    last checkpoint are read in one snapshot.  Read in two statements, a commit between them
    looked like events no checkpoint covers, and 26 of 300 opens were refused as tampered."""
    db = tmp_path / "edge.db"
    child = Path(__file__).with_name("ledger_child.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.Popen([sys.executable, str(child), str(db)], stdout=subprocess.PIPE, env=env)
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"
        signer = UnitSigner.from_seed(bytes(range(32)), "UNIT-CRASH")
        heads = []
        for _ in range(150):
            reader = Ledger.open(db, signer, lambda: datetime.now(UTC), writer=False)
            heads.append(reader.head[0])
            reader.close()
        assert heads[-1] > heads[0], "the writer committed nothing while the readers opened"
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
