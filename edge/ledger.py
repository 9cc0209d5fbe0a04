"""The unit's durable ledger: SQLite (WAL, synchronous=FULL) through SQLAlchemy, append-only.

What this module promises:

* **Acknowledged means durable.** :meth:`Ledger.append` and :meth:`Ledger.append_many` return
  only after the transaction holding the events *and* the checkpoint signing them has committed
  (``synchronous=FULL``: fsynced).  Callers show "recorded" to the operator, or ack an instrument,
  only after the call returned.
* **Append-only.** Triggers refuse UPDATE and DELETE of events and checkpoints; corrections are new
  events that reference the corrected one.
* **Exactly what was signed is stored.** Each event and checkpoint is stored as its canonical line
  of the exchange format (:mod:`ebr_core.ledgerfile`), so export and sync copy bytes and never
  re-encode.
* **Checked on open.** The last commit group is verified with the one verifier (hashes, links,
  the checkpoint signature) and ``seq`` continues with no gap.  ``PRAGMA integrity_check``
  (which reads every page: 2.5 s for a million-reading ledger) runs when a writer opens a ledger
  whose previous writer did not close it cleanly (the lock file still names a process, or is
  new), so a command after a clean one starts in constant time and a crash is always followed
  by a full check.
* **Fail closed.** On an I/O error the transaction is rolled back, nothing is acknowledged, and
  every later append is refused with the reason; the agent must be restarted (and re-verifies).
* **One writing process.**  Opening takes an exclusive lock on ``<ledger>.lock`` (waiting up to
  ``lock_wait`` seconds for a command that holds it to finish), so two processes never both act
  on what they read (the batch does not exist yet, the step is the current one) and then append.
  Each commit also checks, inside its write transaction, that the stored head is the one it
  built on; if not (a file system without locks), nothing is written and the ledger closes.
  ``writer=False`` opens for reading (sync, status, export) without the lock, alongside the
  writer: appends are refused, and :meth:`Ledger.refresh` moves the head to what the writer has
  committed since.  ``readonly=True`` opens for reading through SQLite's ``mode=ro`` and writes
  nothing at all (no lock file, no schema, no meta), so ``status`` and ``export`` work on a
  ledger they may not write (a read-only file system, another user's files).
* **Clean failures.**  A path that cannot be created, opened or locked (permissions, a read-only
  file system) is a :class:`~edge.errors.LedgerError` naming the path and the reason, never a
  traceback.
* **Clock jumps are recorded, not hidden.**  ``recorded_at`` is what the unit's clock said when
  the commit group was made: times are **not** forced to be non-decreasing (a clock set back a
  year would otherwise stamp a year of events with one frozen time), and the order of events is
  their ``seq``.  Instead, a commit group whose clock reading is more than ``clock_back_s``
  seconds (default 60) *before* the head's ``recorded_at``, or, when ``clock_leap_s`` is set,
  more than that many seconds further ahead of this process's previous group than the monotonic
  clock has advanced, starts with a ``clock.jumped`` event (``old_time``, ``new_time``,
  ``delta_s``, ``direction``) and a ``deviation.raised`` (category ``clock``, severity major) on
  each running batch (started, not completed), all in the same transaction.  So every time that
  runs backwards in the record is preceded by the event that says so, and the batch record shows
  it as a deviation to review.
* **Shared by the agent's threads.** Instrument readers (serial, MQTT) append from their own
  threads while the operator's steps append from the main one.  One lock serialises commit groups
  and every query on the one connection; readers fetch in bounded seq windows under the lock, so a
  long export never holds up a writer, and they see only committed events (:attr:`head` is the
  last *committed* head).

Over 400 lines because each promise above is kept by the same few pieces (the one connection and
its lock, the commit group, the head check inside the write transaction, the lock file): split
across modules, a reader would have to hold them all at once to see that a promise holds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import orjson
from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ebr_core.chain import ChainBuilder
from ebr_core.errors import RecordFormatError, VerificationError
from ebr_core.keys import Keyring, PublicKey, UnitSigner
from ebr_core.record import GENESIS_HASH, Checkpoint, Event, decode_record, format_time, parse_time
from ebr_core.verify import ChainVerifier, Verified
from edge.errors import (
    LedgerBusyError,
    LedgerClosedError,
    LedgerCorruptError,
    LedgerError,
    LedgerIOError,
)

_SORT = orjson.OPT_SORT_KEYS
_READ_WINDOW = 2000  # seqs fetched per lock hold by the readers
CLOCK_BACK_S = 60.0  # a clock reading this far before the head's time is a jump back
# What the wall clock is compared with for a leap: time since boot, suspend included (Linux), so
# a host that slept is not taken for a clock that leapt.
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def _elapsed() -> float:
    return time.clock_gettime(_BOOTTIME)


# The condition of the events_batch_steps index, written the same way so SQLite uses it.
_STEP_KINDS = "AND kind <> 'reading.recorded' "

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        batch_id TEXT,
        kind TEXT NOT NULL,
        dedupe_key TEXT UNIQUE,
        line BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS events_batch ON events (batch_id, seq)",
    # A batch's step events without its telemetry: the engine folds these, so an operator action
    # costs the same at the end of a million-reading batch as at its start.
    (
        "CREATE INDEX IF NOT EXISTS events_batch_steps ON events (batch_id, seq) "
        "WHERE kind <> 'reading.recorded'"
    ),
    # Events of one kind but telemetry (refused messages, clock jumps), without a scan.
    (
        "CREATE INDEX IF NOT EXISTS events_kind ON events (kind, seq) "
        "WHERE kind <> 'reading.recorded'"
    ),
    """CREATE TABLE IF NOT EXISTS checkpoints (
        seq INTEGER PRIMARY KEY,
        line BLOB NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Append-only (21 CFR 11.10(e): records are never overwritten; corrections are new events).
    """CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
       BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
       BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only: DELETE refused'); END""",
]


class Append(NamedTuple):
    kind: str
    payload: dict[str, Any]
    batch_id: str | None = None
    actor: str | None = None
    dedupe_key: str | None = None


def event_line(ev: Event) -> bytes:
    d = ev._asdict()
    d["type"] = "event"
    return orjson.dumps(d, option=_SORT)


def checkpoint_line(cp: Checkpoint) -> bytes:
    d = cp.to_dict()
    d["type"] = "checkpoint"
    return orjson.dumps(d, option=_SORT)


def event_from_line(line: bytes) -> Event:
    """A stored event line; one that does not decode means the file was altered."""
    try:
        return decode_record(line, Event)
    except RecordFormatError as e:
        raise LedgerCorruptError(f"a stored event line does not decode: {e}") from e


def checkpoint_from_line(line: bytes) -> Checkpoint:
    """A stored checkpoint line; one that does not decode means the file was altered."""
    try:
        return decode_record(line, Checkpoint)
    except RecordFormatError as e:
        raise LedgerCorruptError(f"a stored checkpoint line does not decode: {e}") from e


def _line_bytes(line: Any) -> bytes:
    # A line stored as TEXT was written by something other than this module: hand its bytes to
    # the verifier (here or on the server), which will say what is wrong with them.
    return line.encode() if isinstance(line, str) else bytes(line)


def _pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a commit returns only after fsync
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _ro_engine(path: Path) -> Engine:
    """An engine that reads ``path`` through SQLite's ``mode=ro``.  A WAL database needs its
    shared-memory file; where that cannot be created (a read-only folder) and no writer has one
    (no ``-wal`` file: nobody is writing), the file is read as ``immutable``."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    wal = path.with_name(path.name + "-wal")
    try:
        with closing(sqlite3.connect(uri, uri=True)) as probe:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        if not wal.exists():
            uri += "&immutable=1"
    engine = create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
    )
    event.listen(engine, "connect", _ro_pragmas)
    return engine


def _ro_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=1")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


_CLEAN = b"closed cleanly"  # what a writer leaves in the lock file when it closes the ledger


def _os_error(what: str, path: Path, e: OSError) -> LedgerError:
    """A one-line error for a file the ledger cannot use."""
    hint = ""
    if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM):
        hint = "; run as the user that owns it, or read it with a reading command (status, export)"
    elif e.errno == errno.EROFS:
        hint = "; the file system is read-only: reading commands (status, export) still work"
    return LedgerError(f"cannot {what} {path}: {e.strerror or e}{hint}")


def _lock_file(path: Path, wait: float) -> tuple[int, bool]:
    """Take the exclusive writer lock of the ledger at ``path``; return its file descriptor
    (closing it releases the lock, as does the process's end, however it ends) and whether the
    previous writer closed the ledger cleanly."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise _os_error("open the ledger's lock file", lock_path, e) from e
    try:
        return _take_lock(fd, path, wait)
    except OSError as e:
        os.close(fd)
        raise _os_error("write the ledger's lock file", lock_path, e) from e


def flock_within(fd: int, wait: float) -> str | None:
    """Take an exclusive ``flock`` on ``fd``, trying for ``wait`` seconds: None once taken, else
    the holder's pid as its lock file says (``unknown`` when it says nothing)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            time.sleep(0.05)


def _take_lock(fd: int, path: Path, wait: float) -> tuple[int, bool]:
    holder = flock_within(fd, wait)
    if holder is not None:
        os.close(fd)
        raise LedgerBusyError(
            f"the ledger {path.name} is in use by another process (pid {holder}) and "
            f"was not free within {wait:g} s; one unit's ledger has one writer at a "
            "time: wait for that command to finish, or stop the other agent"
        )
    clean = os.pread(fd, 32, 0) == _CLEAN
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd, clean


def _release(fd: int) -> None:
    """Mark a clean close in the lock file, then release the lock."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _CLEAN, 0)
    except OSError:
        pass  # not marked: the next writer checks every page, which is the safe side
    finally:
        os.close(fd)


class Ledger:
    """One unit's ledger; safe to share between threads (one lock, see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        conn: Connection,
        signer: UnitSigner,
        clock: Callable[[], datetime],
        previous_keys: Sequence[PublicKey] = (),
    ) -> None:
        self._engine = engine
        self._conn = conn
        self.path: Path | None = None  # the file, once opened (sync takes its lock beside it)
        self.signer = signer
        self.unit_id = signer.unit_id
        self.clock = clock
        self._closed_reason: str | None = None
        self._lock = threading.RLock()
        self._reader = False  # opened with writer=False (see open() and refresh())
        self._readonly = False  # opened with readonly=True: writes nothing, meta included
        self._write_failed = False
        # Releases the writer lock (see open()) on close(), or when the ledger is dropped.
        self._release_lock: Callable[[], object] = lambda: None
        self._builder = ChainBuilder(signer, clock)
        self._head: tuple[int, str] = (0, GENESIS_HASH)  # last committed (seq, hash)
        # Clock jumps (see the module docstring): the head's recorded_at, and the monotonic time
        # of this process's last commit group.
        self.clock_back_s = CLOCK_BACK_S
        self.clock_leap_s: float | None = None
        self._last_time: datetime | None = None
        self._last_mono: float | None = None
        # After a key rotation the history stays signed by the retired keys.
        self.keyring = Keyring([signer.public, *previous_keys])

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        signer: UnitSigner,
        clock: Callable[[], datetime],
        previous_keys: Sequence[PublicKey] = (),
        *,
        writer: bool = True,
        readonly: bool = False,
        lock_wait: float = 10.0,
        clock_back_s: float = CLOCK_BACK_S,
        clock_leap_s: float | None = None,
    ) -> Ledger:
        """Open (or create) the ledger at ``path``; see the module docstring for ``writer``,
        ``readonly``, and ``clock_back_s`` and ``clock_leap_s`` (the clock jumps recorded)."""
        path = Path(path)
        if readonly:
            if not path.is_file():
                raise LedgerError(f"there is no ledger at {path}")
            ledger = cls._open_file(path, signer, clock, previous_keys, integrity=False, ro=True)
            ledger._reader = ledger._readonly = True
            return ledger
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _os_error("create the ledger's folder", path.parent, e) from e
        if not writer:
            # A reader checks no pages: the writer does after an unclean end, and a page a
            # reader cannot read fails its query.
            ledger = cls._open_file(path, signer, clock, previous_keys, integrity=False)
            ledger._reader = True
            return ledger
        lock, clean = _lock_file(path, lock_wait)
        try:
            ledger = cls._open_file(path, signer, clock, previous_keys, integrity=not clean)
        except BaseException:
            os.close(lock)  # not marked clean: the next writer checks the file again
            raise
        ledger._release_lock = weakref.finalize(ledger, _release, lock)
        ledger.clock_back_s, ledger.clock_leap_s = clock_back_s, clock_leap_s
        return ledger

    @classmethod
    def _open_file(
        cls,
        path: Path,
        signer: UnitSigner,
        clock: Callable[[], datetime],
        previous_keys: Sequence[PublicKey],
        *,
        integrity: bool,
        ro: bool = False,
    ) -> Ledger:
        if ro:
            engine = _ro_engine(path)
        else:
            engine = create_engine(f"sqlite:///{path}")
            event.listen(engine, "connect", _pragmas)
        try:
            conn = engine.connect()
            # Autobegin off: we issue BEGIN IMMEDIATE ourselves so a commit group is one write
            # transaction from its first statement.
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.isolation_level = None
            ok = conn.exec_driver_sql("PRAGMA integrity_check").scalar() if integrity else "ok"
            if ok != "ok":
                raise LedgerCorruptError(f"{path.name}: SQLite integrity check failed: {ok}")
            for stmt in SCHEMA if not ro else ():
                conn.exec_driver_sql(stmt)
        except DBAPIError as e:
            engine.dispose()
            how = "read-only " if ro else ""
            raise LedgerError(f"cannot open the ledger {path} {how}({e.orig})") from e
        except OSError as e:
            engine.dispose()
            raise _os_error("open the ledger", path, e) from e
        ledger = cls(engine, conn, signer, clock, previous_keys)
        ledger.path = path
        try:
            ledger._resume()
        except DBAPIError as e:
            conn.close()
            engine.dispose()
            raise LedgerError(f"cannot read the ledger {path} ({e.orig})") from e
        except BaseException:
            conn.close()
            engine.dispose()
            raise
        return ledger

    def _resume(self) -> None:
        # The last event and the last checkpoint in one statement, so one read snapshot: read in
        # two, a writer's commit between them looked like events no checkpoint covers.
        both = self._conn.exec_driver_sql(
            "SELECT e.seq, e.hash, e.line, c.seq, c.line FROM (SELECT 1) AS one "
            "LEFT JOIN (SELECT seq, hash, line FROM events ORDER BY seq DESC LIMIT 1) AS e ON 1 "
            "LEFT JOIN (SELECT seq, line FROM checkpoints ORDER BY seq DESC LIMIT 1) AS c ON 1"
        ).one()
        row = None if both[0] is None else (both[0], both[1], both[2])
        cp_row = None if both[3] is None else (both[3], both[4])
        if row is None:
            if cp_row is not None:
                raise LedgerCorruptError("the ledger has checkpoints but no events")
            self._builder = ChainBuilder(self.signer, self.clock)
            return
        first = event_from_line(row[2])
        if first.unit_id != self.unit_id:
            raise LedgerCorruptError(
                f"this ledger belongs to unit {first.unit_id!r}, not {self.unit_id!r}"
            )
        if cp_row is None or cp_row[0] != row[0]:
            raise LedgerCorruptError(
                f"events after seq {cp_row[0] if cp_row else 0} are not covered by a checkpoint "
                "(every commit group ends with one: the file was altered)"
            )
        last_cp = checkpoint_from_line(cp_row[1])
        self._verify_range(last_cp.prev_seq, row[0], last_cp.prev_seq)
        self._builder = ChainBuilder(
            self.signer, self.clock, seq=row[0], head_hash=row[1], checkpoint_seq=row[0]
        )
        self._head = (row[0], row[1])
        self._last_time = parse_time(first.recorded_at)

    def _verify_range(self, after_seq: int, upto_seq: int, checkpoint_seq: int) -> Verified:
        """Verify events after_seq+1..upto_seq (with their checkpoints) from the stored head."""
        start_hash = GENESIS_HASH
        if after_seq > 0:
            r = self._conn.exec_driver_sql(
                "SELECT hash FROM events WHERE seq = ?", (after_seq,)
            ).first()
            if r is None:
                raise LedgerCorruptError(f"event {after_seq} is missing")
            start_hash = r[0]
        v = ChainVerifier(
            self.keyring,
            unit_id=self.unit_id,
            start_seq=after_seq,
            start_hash=start_hash,
            start_checkpoint_seq=checkpoint_seq,
        )
        try:
            for window in self._line_windows(after_seq + 1, upto_seq):
                v.check_lines(window)
            return v.finish()
        except VerificationError as e:
            raise LedgerCorruptError(f"ledger verification failed: {e}") from e

    def verify_all(self) -> Verified:
        """Verify every event and checkpoint from seq 1 with the one verifier."""
        return self._verify_range(0, self.head[0], 0)

    # -- writing --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise LedgerClosedError(
                f"the ledger refuses new events: {self._closed_reason}; nothing after that was "
                "recorded. Fix the cause and restart the agent (it re-verifies the ledger)."
            )

    def append(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        batch_id: str | None = None,
        actor: str | None = None,
        dedupe_key: str | None = None,
    ) -> Event:
        """Record one event durably with its own checkpoint; return it once committed.

        With ``dedupe_key``, an event already recorded under the key is returned instead.
        """
        out = self._append_group([Append(kind, payload, batch_id, actor, dedupe_key)], True)
        return out[0]

    def append_many(self, items: Sequence[Append]) -> list[Event]:
        """Record a commit group (one transaction, one checkpoint); duplicates are skipped."""
        return self._append_group(items, False)

    def _append_group(self, items: Sequence[Append], return_existing: bool) -> list[Event]:
        with self._lock:
            return self._append_group_locked(items, return_existing)

    def _append_group_locked(self, items: Sequence[Append], return_existing: bool) -> list[Event]:
        self._check_open()
        if self._reader:
            raise LedgerClosedError(
                "this ledger was opened for reading only (sync, status, export); events are "
                "recorded by the command or agent that writes it"
            )
        if not items:
            return []
        existing = self._existing(items)
        b = self._builder
        seq0, head0, cp0 = b.seq, b.head_hash, b.checkpoint_seq
        new: list[Append] = []
        # What append() returns per item: None for the event made for it, or the one already
        # recorded under its dedupe key.  append_many() skips those.
        slots: list[Event | None] = []
        seen: set[str] = set()
        for it in items:
            key = it.dedupe_key
            if key is not None:
                if key in existing or key in seen:
                    if return_existing and key in existing:
                        slots.append(existing[key])
                    continue
                seen.add(key)
            new.append(it)
            slots.append(None)
        now: datetime | None = None
        mono = 0.0
        jumped: list[Append] = []
        if new:  # (all duplicates: no clock reading)
            now, mono = self.clock(), _elapsed()
            jumped = self._clock_events(now, mono, seq0)
            at = now
            b.clock = lambda: at  # the one reading, for the events and for the jump check
        try:
            # One call for the group: next_events refuses it whole, head unmoved, if any item
            # is invalid.
            group = [*jumped, *new]
            made_all = b.next_events(group) if new else []
            rows = [
                (ev.seq, ev.hash, ev.batch_id, ev.kind, it.dedupe_key, event_line(ev))
                for ev, it in zip(made_all, group, strict=True)
            ]
        except Exception:
            b.seq, b.head_hash, b.checkpoint_seq = seq0, head0, cp0
            raise
        made = made_all[len(jumped) :]
        made_in_order = iter(made)
        events = [next(made_in_order) if ev is None else ev for ev in slots]
        if not rows:
            return events
        cp = b.checkpoint()
        try:
            self._write(rows, cp, seq0)
        except LedgerBusyError as e:
            b.seq, b.head_hash, b.checkpoint_seq = seq0, head0, cp0
            self._closed_reason = str(e)
            raise
        except (SQLAlchemyError, sqlite3.Error, OSError) as e:
            b.seq, b.head_hash, b.checkpoint_seq = seq0, head0, cp0
            orig = getattr(e, "orig", e)
            self._closed_reason = f"write failed at seq {seq0 + 1}: {orig}"
            self._write_failed = True  # not a clean close: the next writer checks every page
            raise LedgerIOError(
                f"the disk refused the write of seq {seq0 + 1}..{seq0 + len(rows)} ({orig}); "
                "it was NOT recorded and the ledger now refuses new events"
            ) from e
        self._head = (b.seq, b.head_hash)
        if now is not None:
            self._last_time, self._last_mono = now, mono
        return events

    def _clock_events(self, now: datetime, mono: float, seq0: int) -> list[Append]:
        """``clock.jumped`` and a deviation on each running batch, if the clock reading ``now``
        jumped (see the module docstring); else nothing."""
        last, last_mono = self._last_time, self._last_mono
        if last is None:
            return []
        delta = (now - last).total_seconds()
        if -delta > self.clock_back_s:
            direction = "back"
        elif (
            self.clock_leap_s is not None
            and last_mono is not None
            and delta - (mono - last_mono) > self.clock_leap_s
        ):
            direction = "forward"
        else:
            return []
        old_t, new_t = format_time(last.astimezone(UTC)), format_time(now.astimezone(UTC))
        out = [
            Append(
                "clock.jumped",
                {
                    "old_time": old_t,
                    "new_time": new_t,
                    "delta_s": f"{delta:.6f}",
                    "direction": direction,
                    "monotonic_s": None if last_mono is None else f"{mono - last_mono:.6f}",
                },
                None,
                "system",
            )
        ]
        what = "back" if direction == "back" else "forward"
        for batch_id in self._running_batches():
            out.append(
                Append(
                    "deviation.raised",
                    {
                        "deviation_id": f"DEV-{batch_id}-CLK-{seq0 + 1}",
                        "step": None,
                        "category": "clock",
                        "severity": "major",
                        "reason": (
                            f"the unit's clock jumped {what} by {abs(delta):.0f} s (from {old_t} "
                            f"to {new_t}, event {seq0 + 1}): the times recorded around it are "
                            "not reliable; review the batch's timeline by event order"
                        ),
                    },
                    batch_id,
                    "system",
                )
            )
        return out

    def _running_batches(self) -> list[str]:
        """Batches started and not completed, through the events_kind index."""
        rows = self._conn.exec_driver_sql(
            "SELECT batch_id FROM events WHERE kind = 'batch.started' "
            "AND kind <> 'reading.recorded' AND batch_id IS NOT NULL "
            "EXCEPT SELECT batch_id FROM events WHERE kind = 'batch.completed' "
            "AND kind <> 'reading.recorded' ORDER BY 1"
        ).all()
        return [str(r[0]) for r in rows]

    def _raw(self) -> sqlite3.Connection:
        raw = self._conn.connection.dbapi_connection
        assert isinstance(raw, sqlite3.Connection)
        return raw

    def _write(self, rows: list[tuple[Any, ...]], cp: Checkpoint, built_on: int) -> None:
        raw = self._raw()
        # The DBAPI connection directly: executemany of prepared tuples is the hot path of
        # telemetry, and SQLAlchemy Core adds nothing here but per-row overhead.
        try:
            raw.execute("BEGIN IMMEDIATE")
            stored = raw.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
            if stored != built_on:
                raise LedgerBusyError(
                    f"another process appended to the ledger (its head is seq {stored}, these "
                    f"events were built on seq {built_on}); nothing was recorded and this agent "
                    "refuses new events: restart it (it re-reads and re-verifies the ledger)"
                )
            raw.executemany(
                "INSERT INTO events (seq, hash, batch_id, kind, dedupe_key, line) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            raw.execute(
                "INSERT INTO checkpoints (seq, line) VALUES (?, ?)", (cp.seq, checkpoint_line(cp))
            )
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise

    def _existing(self, items: Sequence[Append]) -> dict[str, Event]:
        keys = [it.dedupe_key for it in items if it.dedupe_key is not None]
        if not keys:
            return {}
        found: dict[str, Event] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, line in self._conn.exec_driver_sql(
                f"SELECT dedupe_key, line FROM events WHERE dedupe_key IN ({marks})",  # noqa: S608
                tuple(chunk),
            ):
                found[key] = event_from_line(line)
        return found

    # -- reading --------------------------------------------------------------------------

    @property
    def writer(self) -> bool:
        """Whether this ledger was opened to write (not a reader for sync, status, export)."""
        return not self._reader

    @property
    def head(self) -> tuple[int, str]:
        """The last committed (seq, hash)."""
        return self._head

    def refresh(self) -> tuple[int, str]:
        """A reading ledger's head moves to the last event the writer has committed (commit
        groups are whole: the events and their checkpoint commit together); the writer's own
        head is always current."""
        with self._lock:
            if self._reader:
                row = self._conn.exec_driver_sql(
                    "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
                ).first()
                if row is not None:
                    self._head = (row[0], row[1])
            return self._head

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            return list(self._conn.exec_driver_sql(sql, params))

    def _windows(self, start_seq: int, end_seq: int | None) -> Iterator[tuple[int, int]]:
        end = end_seq if end_seq is not None else self.head[0]
        for lo in range(max(start_seq, 1), end + 1, _READ_WINDOW):
            yield lo, min(lo + _READ_WINDOW - 1, end)

    def _wire_window(self, lo: int, hi: int, *, gaps_ok: bool) -> list[Any]:
        """The stored lines of events ``lo..hi`` and their checkpoints, in wire order (each
        checkpoint after its event), read under one lock hold."""
        with self._lock:
            q = self._conn.exec_driver_sql
            events = (
                q("SELECT line FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq", (lo, hi))
                .scalars()
                .all()
            )
            cps = q(
                "SELECT seq, line FROM checkpoints WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (lo, hi),
            ).all()
        if len(events) != hi - lo + 1:  # seq is the key, so a short read is a gap
            if not gaps_ok:
                raise LedgerCorruptError(f"events {lo}..{hi}: {hi - lo + 1 - len(events)} missing")
            # A damaged ledger: merge by seq, and the verifier names the first missing event.
            rows = self._fetch(
                "SELECT seq, 0, line FROM events WHERE seq BETWEEN ? AND ? "
                "UNION ALL SELECT seq, 1, line FROM checkpoints WHERE seq BETWEEN ? AND ? "
                "ORDER BY 1, 2",
                (lo, hi, lo, hi),
            )
            return [line for _seq, _cp, line in rows]
        out: list[Any] = []
        at = lo
        for seq, line in cps:
            out.extend(events[at - lo : seq - lo + 1])
            out.append(line)
            at = seq + 1
        out.extend(events[at - lo :])
        return out

    def checkpoint_seqs(self, after_seq: int = 0, limit: int | None = None) -> list[int]:
        """The seqs of the checkpoints after ``after_seq`` (each ends a commit group), the first
        ``limit`` of them if given (a million single-event groups are paged, not listed)."""
        rows = self._fetch(
            "SELECT seq FROM checkpoints WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after_seq, self.head[0], -1 if limit is None else limit),
        )
        return [r[0] for r in rows]

    def wire_bytes(self, start_seq: int, end_seq: int) -> bytes:
        """Events ``start_seq..end_seq`` and their checkpoints as exchange-format bytes (each
        line ending in a newline), in wire order: the bulk read of sync, one join per call.
        A gap is refused: sync never sends a ledger with a hole in it."""
        out: list[Any] = []
        for lo, hi in self._windows(start_seq, end_seq):
            out.extend(self._wire_window(lo, hi, gaps_ok=False))
        out.append(b"")
        try:
            return b"\n".join(out)
        except TypeError:
            return b"\n".join(_line_bytes(x) for x in out)

    def lines(self, start_seq: int = 1, end_seq: int | None = None) -> Iterator[bytes]:
        """Canonical lines (no newline) in wire order: each checkpoint after its event."""
        for window in self._line_windows(start_seq, end_seq):
            yield from window

    def _line_windows(self, start_seq: int, end_seq: int | None) -> Iterator[list[bytes]]:
        """:meth:`lines`, a read window at a time (the verifier takes them whole)."""
        for lo, hi in self._windows(start_seq, end_seq):
            yield [
                x if type(x) is bytes else _line_bytes(x)
                for x in self._wire_window(lo, hi, gaps_ok=True)
            ]

    def events(self, start_seq: int = 1, end_seq: int | None = None) -> Iterator[Event]:
        for lo, hi in self._windows(start_seq, end_seq):
            for (line,) in self._fetch(
                "SELECT line FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq", (lo, hi)
            ):
                yield event_from_line(line)

    def events_of_kind(self, kind: str) -> Iterator[Event]:
        """The committed events of ``kind`` (not ``reading.recorded``) in seq order, read
        through their own index."""
        sql = (
            "SELECT seq, line FROM events WHERE kind = ? "
            "AND kind <> 'reading.recorded' AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
        )
        yield from self._windowed(sql, kind, 0, self.head[0])

    def has_batch(self, batch_id: str) -> bool:
        """Whether any committed event belongs to ``batch_id``."""
        return bool(
            self._fetch(
                "SELECT 1 FROM events WHERE batch_id = ? AND seq <= ? LIMIT 1",
                (batch_id, self.head[0]),
            )
        )

    def batch_events(
        self,
        batch_id: str,
        after_seq: int = 0,
        upto_seq: int | None = None,
        *,
        telemetry: bool | None = None,
    ) -> Iterator[Event]:
        """The committed events of ``batch_id`` after ``after_seq`` (up to ``upto_seq``, default
        the head), in seq order: all of them, only the telemetry (``telemetry=True``), or only
        the step events (``telemetry=False``, read through their own index)."""
        end = self.head[0] if upto_seq is None else upto_seq
        kinds = {None: "", True: "AND kind = 'reading.recorded' ", False: _STEP_KINDS}[telemetry]
        index = "INDEXED BY events_batch_steps " if telemetry is False else ""
        sql = (
            f"SELECT seq, line FROM events {index}WHERE batch_id = ? {kinds}"  # noqa: S608
            "AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
        )
        yield from self._windowed(sql, batch_id, after_seq, end)

    def _windowed(self, sql: str, key: str, after: int, end: int) -> Iterator[Event]:
        """The events ``sql`` selects for ``key`` with ``after < seq <= end``, fetched
        :data:`_READ_WINDOW` rows per lock hold; ``sql`` takes (key, after, end, limit) and
        orders by seq."""
        while True:
            rows = self._fetch(sql, (key, after, end, _READ_WINDOW))
            for _seq, line in rows:
                yield event_from_line(line)
            if len(rows) < _READ_WINDOW:
                return
            after = rows[-1][0]

    def hash_at(self, seq: int) -> str | None:
        """The hash of the committed event ``seq``, or None if there is none."""
        if seq > self.head[0]:
            return None
        rows = self._fetch("SELECT hash FROM events WHERE seq = ?", (seq,))
        return None if not rows else str(rows[0][0])

    def latest_checkpoint(self, upto_seq: int | None = None) -> Checkpoint | None:
        upto = upto_seq if upto_seq is not None else self.head[0]
        rows = self._fetch(
            "SELECT line FROM checkpoints WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (upto,)
        )
        return checkpoint_from_line(rows[0][0]) if rows else None

    def get_meta(self, key: str) -> str | None:
        rows = self._fetch("SELECT value FROM meta WHERE key = ?", (key,))
        return None if not rows else str(rows[0][0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._check_open()
            if self._readonly:
                raise LedgerClosedError(
                    f"this ledger was opened read-only (status, export): {key} not stored"
                )
            self._conn.exec_driver_sql(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def close(self) -> None:
        with self._lock:
            if self._closed_reason is None:
                self._closed_reason = "the ledger was closed"
            self._conn.close()
            self._engine.dispose()
            release = self._release_lock
            if self._write_failed and isinstance(release, weakref.finalize):
                detached = release.detach()  # release the lock without marking a clean close
                if detached is not None:
                    os.close(detached[2][0])
            else:
                release()
