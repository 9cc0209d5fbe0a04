"""The sync client: pushes the ledger's unsynced events to the server, exactly once.

* The outbox is the ledger itself: everything after ``sync.acked_seq`` (ledger meta).  Local
  events are never deleted.
* Each run first asks the server for its stored head and resumes from there (the server is the
  authority on what it has; a lost receipt costs one idempotent retry, never a gap).
* Segments end at a checkpoint (the server verifies each one alone), are JSON Lines compressed
  with zstd (level 1: a fifth of gzip's time for a smaller body; ``encoding="gzip"`` for a server
  that takes only gzip), and every request is signed by the unit key (method, path, time, nonce,
  body digest).
* A receipt counts only if the server's signature on it verifies; then ``sync.acked_seq``
  advances.  Network errors, 5xx and 429 are retried with exponential backoff and full jitter;
  any other refusal (tampering, fork, revoked unit) ends the run with the server's message.
* **One writer per unit.**  A run holds ``<ledger>.sync.lock`` (``fcntl.flock``, the holder's pid
  inside): a second sync process waits for it, up to ``lock_wait`` seconds, then stops with
  "another sync is running (pid N)" (:class:`SyncBusy`).  Should two runs still meet (a file
  system without locks), a server head or a receipt ahead of what this run knew is reconciled: the
  ledger is read again and the server's head compared with this ledger's event at that seq.  Only
  a head this ledger does not hold, or holds with another hash, is a fork (:class:`SyncFork`).
* **Clock skew.**  The server refuses a request signed more than its window (300 s) from its own
  clock with 401; that is :class:`SyncClockSkew`, transient: the background loop backs off, raises
  a "clock skew" alarm (ledger meta ``sync.alarm``, shown by ``ctgtp edge status``) and resumes by
  itself once the clock is right.  Only a verified fork or a revoked key (:class:`SyncFatal`)
  stops the background loop.
* One run drains the whole backlog it found at its start, however large: there is no cap on
  segments per run and no deadline on the run (only each request has a timeout, and each is
  retried).  The ledger is read a segment at a time (at most the segment on the wire and the next
  one being prepared are in memory), so the memory a run takes does not grow with the backlog.
* ``sync_once(progress=...)`` reports how far the run is (:class:`SyncProgress`): after a stored
  segment at most every :data:`PROGRESS_INTERVAL_S` seconds, and once at the end.

Over 400 lines: the run, its refusals (one class per way a run can end, each with its message)
and the reconciliation after a lost receipt are one protocol with the server, read together.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
import zstandard

from ebr_core.keys import PublicKey
from ebr_core.requestsig import sign_request, verify_receipt
from edge.errors import EdgeError
from edge.ledger import Ledger, flock_within
from edge.logwatch import (
    SECURITY,
    Failure,
    LogSuspect,
    LogWatch,
    flush_pending,
    parse_consistency,
    segment_leaf,
)

log = logging.getLogger("ctgtp.edge.sync")
ACKED = "sync.acked_seq"
ALARM = "sync.alarm"  # ledger meta: the background sync's standing problem (JSON), if any
CHECKPOINT_PAGE = 10_000  # checkpoint seqs read at a time when cutting segments
PROGRESS_INTERVAL_S = 0.5  # sync_once calls its progress callback at most this often (+ the end)
LOG_CHECKPOINT_PATH = "/v1/log/checkpoint"
LOG_CONSISTENCY = "/v1/log/proof/consistency"


class SyncError(EdgeError):
    """The server could not be reached in time; nothing is lost, the next run resumes."""


class SyncRefused(SyncError):
    """The server refused a request (its message says why); retrying at once will not help."""


class SyncFatal(SyncRefused):
    """A refusal that stops background sync: a verified fork, or a revoked unit or key."""


class SyncFork(SyncFatal):
    """The server holds another history for this unit than this ledger (a verified fork)."""


class SyncRevoked(SyncFatal):
    """The server has revoked this unit or its key."""


class SyncClockSkew(SyncError):
    """The server refused the request's time: this unit's clock is off by more than the server
    allows.  Transient: sync resumes once the clock is right."""


class SyncBusy(SyncError):
    """Another sync of this unit holds the sync lock."""


@contextmanager
def sync_lock(ledger_path: Path, wait: float) -> Iterator[None]:
    """Hold ``<ledger>.sync.lock`` (with this process's pid in it) for one sync run, waiting up to
    ``wait`` seconds for another run to finish (:class:`SyncBusy` after that).  The lock goes
    with the process, however it ends."""
    path = ledger_path.with_name(ledger_path.name + ".sync.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise SyncError(f"cannot open the sync lock {path}: {e.strerror}") from e
    try:
        holder = flock_within(fd, wait)
        if holder is not None:
            raise SyncBusy(
                f"another sync is running (pid {holder}) for {ledger_path.name}; one "
                f"sync at a time per unit: it did not finish within {wait:g} s"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass
class SyncReport:
    pushed: int = 0
    duplicates: int = 0
    segments: int = 0
    retries: int = 0
    server_head: int = 0
    local_head: int = 0
    segment_ms: list[float] = field(default_factory=list)  # round trip of each stored segment
    server_ms: list[float] = field(default_factory=list)  # the server's own time for each
    # The server's transparency log (edge.logwatch): one line saying what was checked or caught,
    # the alerts this run saw (recorded in the ledger once each), and the size of the
    # checkpoint the unit now trusts.
    log: str | None = None
    alerts: list[str] = field(default_factory=list)
    log_size: int | None = None
    log_index: int | None = None  # the log's leaf for the last segment stored (its receipt's)


@dataclass(frozen=True)
class SyncProgress:
    """How far one sync run is.  ``sent`` counts the events of the segments the server has
    stored (and receipted) this run; ``backlog`` is what the run set out to send (the local head
    minus the server's head at its start), so ``sent`` ends at ``backlog``."""

    sent: int
    backlog: int
    elapsed_s: float
    rate: float  # events/s over the run so far
    eta_s: float  # seconds left at that rate (0 when done)
    done: bool = False  # the run's last report

    @property
    def fraction(self) -> float:
        return self.sent / self.backlog if self.backlog else 1.0


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_progress(p: SyncProgress) -> str:
    """One line for the operator, e.g. ``sync: 412,000 / 1,000,000 events sent (41 %),
    98,000 events/s, about 6 s left``."""
    head = f"sync: {p.sent:,} / {p.backlog:,} events sent ({int(p.fraction * 100)} %)"
    rate = f"{p.rate:,.0f} events/s"
    if p.done:
        return f"{head}, {rate}, done in {p.elapsed_s:.1f} s"
    return f"{head}, {rate}, about {_duration(p.eta_s)} left"


class ProgressPrinter:
    """Prints :class:`SyncProgress` reports to ``stream`` (the CLI gives it stderr).

    On a terminal one line is rewritten in place (``\\r``) and ended by the last report; otherwise
    (a log file, a pipe) each printed report is its own line, at most one per ``interval``
    seconds plus the last one, so logs stay readable.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = interval
        self.clock = clock
        self._last: float | None = None
        self._width = 0  # of the line on screen (a shorter one is padded over it)
        self._open = False  # a rewritten line awaits its newline

    def __call__(self, p: SyncProgress) -> None:
        if p.backlog == 0:
            return
        line = format_progress(p)
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width) + ("\n" if p.done else ""))
            self._width, self._open = len(line), not p.done
        else:
            now = self.clock()
            if not p.done and self._last is not None and now - self._last < self.interval:
                return
            self._last = now
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End a rewritten line the run left open (it stopped on an error)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


# The server answers every refusal as an RFC 9457 problem document; its ``type`` is stable (the
# list: docs/api-problems.md) and is what this client branches on, never the prose of ``detail``.
PROBLEMS = "https://ctgtp.dev/problems/"
REPLAYED = PROBLEMS + "replayed"
CLOCK_SKEW = PROBLEMS + "clock-skew"
UNIT_REVOKED = PROBLEMS + "unit-revoked"
FORK = PROBLEMS + "fork"


def problem_type(r: httpx.Response) -> str | None:
    """The problem ``type`` of a refusal, or None when the body is not a problem document."""
    try:
        body = r.json()
    except ValueError:
        return None
    t = body.get("type") if isinstance(body, dict) else None
    return t if isinstance(t, str) else None


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return r.text[:500]


def _server_offset(r: httpx.Response, sent_at: float) -> float | None:
    """How far the server's clock (its ``Date`` header) is ahead of ours, in seconds."""
    date = r.headers.get("date")
    if date is None:
        return None
    try:
        return parsedate_to_datetime(date).timestamp() - sent_at
    except (TypeError, ValueError):
        return None


def refusal(what: str, r: httpx.Response, sent_at: float) -> SyncError:
    """The error for a refused request, classified: clock skew (transient), fork and revocation
    (fatal), or another refusal."""
    detail, kind = _detail(r), problem_type(r)
    msg = f"server refused {what}: {r.status_code} {detail}"
    if kind == CLOCK_SKEW:
        off = _server_offset(r, sent_at)
        by = ""
        if off is not None:
            side = "ahead of" if off < 0 else "behind"
            by = f" (this unit's clock is about {abs(off):.0f} s {side} the server's)"
        return SyncClockSkew(
            f"clock skew: {detail}{by}; set this unit's clock right (NTP); sync resumes by itself"
        )
    if kind == UNIT_REVOKED:
        return SyncRevoked(msg)
    if kind == FORK:
        return SyncFork(msg)
    return SyncRefused(msg)


def _zstd(data: bytes) -> bytes:
    # compress() returns its output in the allocation it made for the worst case (about the
    # input's size); copied, a segment's body holds only its own bytes (a tenth of the input
    # here), whoever keeps it a while.  The copy costs microseconds.
    return bytes(memoryview(zstandard.ZstdCompressor(level=1).compress(data)))


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


# Content-Encoding -> compressor of a segment body (the server accepts each).
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"zstd": _zstd, "gzip": _gzip}


class SyncClient:
    def __init__(
        self,
        ledger: Ledger,
        base_url: str,
        *,
        server_key: PublicKey | None = None,
        max_events: int = 5_000,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        base_delay: float = 0.2,
        max_delay: float = 30.0,
        encoding: str = "zstd",
        wall: Callable[[], float] = time.time,
        lock_wait: float = 60.0,
        exclusive: bool = True,
    ) -> None:
        if encoding not in COMPRESSORS:
            raise ValueError(f"encoding {encoding!r} is not one of {sorted(COMPRESSORS)}")
        self.encoding = encoding
        self.ledger = ledger
        self.server_key = server_key
        self.max_events = max_events
        self.http = client or httpx.Client(base_url=base_url, timeout=30.0)
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - backoff jitter, not a secret
        self.base_delay, self.max_delay = base_delay, max_delay
        self.unit_id = ledger.unit_id
        self.wall = wall  # the clock requests are signed with (this host's)
        self.lock_wait = lock_wait
        # Whether a run takes the sync lock (see the module docstring); off only to show that
        # two runs that meet anyway still converge.
        self.exclusive = exclusive
        self._sent_at = 0.0  # when the last request was signed (for clock skew messages)

    def _send(
        self, method: str, path: str, body: bytes = b"", extra: dict[str, str] | None = None
    ) -> httpx.Response:
        h = sign_request(
            self.ledger.signer,
            method,
            path,
            body,
            timestamp=int(self._stamp()),
            nonce=secrets.token_hex(16),
        )
        headers = h.as_dict() | (extra or {})
        if not body:
            return self.http.request(method, path, headers=headers)
        # The body goes as a one-shot iterator with its length: httpx keeps each request in a
        # reference cycle (response <-> its stream) that only the cyclic GC frees, and a body
        # given as bytes would stay in it; an exhausted iterator lets go of the segment at once,
        # so memory stays a couple of segments however long the backlog is.  (The wire bytes
        # are the same: Content-Length framing, never chunked.)
        headers["Content-Length"] = str(len(body))
        return self.http.request(method, path, content=iter((body,)), headers=headers)

    def _stamp(self) -> float:
        self._sent_at = self.wall()
        return self._sent_at

    def _retrying(
        self, fn: Callable[[], httpx.Response], report: SyncReport, attempts: int
    ) -> httpx.Response:
        for attempt in range(attempts):
            try:
                r = fn()
            except httpx.HTTPError as e:
                err: str = f"{type(e).__name__}: {e}"
            else:
                # A duplicated delivery of our own request reaches the server as a replay: the
                # original may or may not have been applied, so re-sign and ask again (the
                # server's head makes that idempotent).
                replayed = problem_type(r) == REPLAYED
                if r.status_code < 500 and r.status_code != 429 and not replayed:
                    return r
                err = f"HTTP {r.status_code}: {r.text[:200]}"
            report.retries += 1
            if attempt + 1 == attempts:
                raise SyncError(
                    f"server unreachable after {attempts} attempts ({err}); "
                    "nothing is lost, the next sync resumes"
                )
            # Exponential backoff with full jitter (spreads a fleet's retries apart).
            self.sleep(self.rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt)))
        raise AssertionError("unreachable")

    def server_head(self, report: SyncReport, attempts: int = 8) -> int:
        """The server's head for this unit, checked against this ledger: a head this ledger
        does not hold even after reading it again, or holds with another hash, is a fork."""
        path = f"/v1/units/{self.unit_id}/head"
        r = self._retrying(lambda: self._send("GET", path), report, attempts)
        if r.status_code != 200:
            raise refusal("the head request", r, self._sent_at)
        body = r.json()
        seq = int(body["head_seq"])
        self._check_head(seq, body.get("head_hash"))
        return seq

    def _check_head(self, seq: int, head_hash: Any) -> None:
        local = self.ledger.head[0]
        if seq > local:  # another sync may have sent what this one has not read yet
            local = self.ledger.refresh()[0]
        if seq > local:
            raise SyncFork(
                f"the server holds seq {seq} but this ledger ends at {local}: "
                "this is not the ledger the server knows for the unit"
            )
        if seq > 0 and isinstance(head_hash, str) and self.ledger.hash_at(seq) != head_hash:
            raise SyncFork(
                f"the server's event {seq} has hash {head_hash[:16]}…, this ledger's has "
                f"{(self.ledger.hash_at(seq) or '')[:16]}…: this is not the ledger the server "
                "knows for the unit (a fork)"
            )

    def _advance_acked(self, seq: int) -> None:
        """Record what the server holds; never moves back (another run may have gone further)."""
        if seq > int(self.ledger.get_meta(ACKED) or 0):
            self.ledger.set_meta(ACKED, str(seq))

    def fetch_operators(self, attempts: int = 8) -> list[dict[str, Any]]:
        """The operators the server publishes for this unit's site, with their argon2id hashes
        (for offline re-authentication at the station)."""
        path = f"/v1/units/{self.unit_id}/operators"
        r = self._retrying(lambda: self._send("GET", path), SyncReport(), attempts)
        if r.status_code != 200:
            raise refusal("the operators request", r, self._sent_at)
        users = r.json().get("users")
        if not isinstance(users, list):
            raise SyncRefused("server answered the operators request without a users list")
        return users

    def segments(self, after: int) -> Iterator[tuple[int, bytes]]:
        """(last seq, JSON Lines) for everything after ``after``, cut at the first checkpoint
        that closes at least ``max_events`` events (seqs are contiguous, so that is a count).
        Checkpoints are read a page at a time, so memory stays flat however many there are."""
        lo = after + 1
        last = after
        while page := self.ledger.checkpoint_seqs(last, limit=CHECKPOINT_PAGE):
            for cp in page:
                if cp - lo + 1 >= self.max_events:
                    yield cp, self.ledger.wire_bytes(lo, cp)
                    lo = cp + 1
            last = page[-1]
        if lo <= last:  # the rest, up to the last checkpoint
            yield last, self.ledger.wire_bytes(lo, last)

    def _prepared(self, after: int) -> Iterator[tuple[int, bytes]]:
        """The compressed segments, the next one prepared in a thread while the current one is on
        the wire and being verified by the server (reading and compressing overlap the wait)."""
        segs = self.segments(after)
        compress = COMPRESSORS[self.encoding]

        def next_body() -> tuple[int, bytes] | None:
            item = next(segs, None)
            return None if item is None else (item[0], compress(item[1]))

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-prep") as pool:
            pending = pool.submit(next_body)
            while (item := pending.result()) is not None:
                pending = pool.submit(next_body)
                yield item

    def sync_once(
        self,
        attempts: int = 8,
        progress: Callable[[SyncProgress], None] | None = None,
        *,
        lock_wait: float | None = None,
    ) -> SyncReport:
        """Send everything the ledger holds beyond the server's head, in one run.

        ``attempts`` bounds the tries of each request, not the run.  ``progress`` is called after
        a stored segment (at most every :data:`PROGRESS_INTERVAL_S` seconds) and once at the end.
        The run holds the unit's sync lock, waiting up to ``lock_wait`` seconds for it (default
        the client's ``lock_wait``).
        """
        path = self.ledger.path
        if not self.exclusive or path is None:
            return self._run(attempts, progress)
        with sync_lock(path, self.lock_wait if lock_wait is None else lock_wait):
            return self._run(attempts, progress)

    def _run(self, attempts: int, progress: Callable[[SyncProgress], None] | None) -> SyncReport:
        started = time.perf_counter()
        watch = self._watch(attempts)
        flush_pending(self.ledger)  # alerts a reading sync found, once this process can write
        # A sync process reads the ledger alongside its writer: first, what it has committed.
        report = SyncReport(local_head=self.ledger.refresh()[0])
        acked = self.server_head(report, attempts)
        self._advance_acked(acked)
        self._push(acked, report, attempts, progress, watch, started)
        if watch is not None:
            self._check_latest(watch, attempts)
            if watch.alerts and self.ledger.refresh()[0] > report.local_head:
                # The alert is one of this unit's signed events: the server gets it now.
                report.local_head = self.ledger.head[0]
                self._push(report.server_head, report, attempts, None, watch, started)
            report.log = watch.summary()
            report.alerts = [a.line() for a in [*watch.alerts, *watch.repeated]]
            report.log_size = None if watch.checkpoint is None else watch.checkpoint.size
        return report

    def _push(
        self,
        acked: int,
        report: SyncReport,
        attempts: int,
        progress: Callable[[SyncProgress], None] | None,
        watch: LogWatch | None,
        started: float,
    ) -> None:
        """Send the segments after ``acked``, checking each receipt (and its log proof)."""
        backlog = report.local_head - acked
        next_report = 0.0  # perf_counter time of the next progress call (the first: at once)

        def progress_at(last: int, now: float, done: bool) -> SyncProgress:
            sent, elapsed = last - acked, now - started
            rate = sent / elapsed if elapsed > 0 else 0.0
            left = backlog - sent
            eta = left / rate if left > 0 and rate > 0 and not done else 0.0
            return SyncProgress(sent, backlog, elapsed, rate, eta, done)

        path = f"/v1/units/{self.unit_id}/segments"
        first = acked + 1
        # The receipts' log checks (a consistency proof each: a round trip) run in order in one
        # thread while the next segment is on the wire; the run waits for them at its end.
        checks = (
            None
            if watch is None
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-log")
        )
        pending: deque[Future[None]] = deque()
        try:
            for last, body in self._prepared(acked):
                t0 = time.perf_counter()
                r = self._retrying(
                    lambda b=body: self._send(  # type: ignore[misc]
                        "POST",
                        path,
                        b,
                        {"Content-Encoding": self.encoding, "Content-Type": "application/x-ndjson"},
                    ),
                    report,
                    attempts,
                )
                if r.status_code != 200:
                    raise refusal(f"the segment ending at seq {last}", r, self._sent_at)
                receipt = r.json()
                if self.server_key is not None and not verify_receipt(self.server_key, receipt):
                    raise SyncRefused("the receipt's server signature does not verify")
                head = int(receipt["head_seq"])
                if head != last:
                    # Another run stored more (or the receipt is odd): what counts is the server's
                    # head, checked against this ledger.
                    head = self.server_head(report, attempts)
                    if head < last:
                        raise SyncError(
                            f"the receipt for the segment ending at seq {last} says head "
                            f"{receipt['head_seq']} and the server's head is {head}; nothing is "
                            "lost, the next sync resumes from the server's head"
                        )
                else:
                    self._check_head(head, receipt.get("head_hash"))
                self._advance_acked(head)
                if checks is not None and watch is not None:
                    leaves = self._leaves(first, last, receipt)
                    pending.append(checks.submit(watch.receipt, receipt.get("log"), leaves))
                    while pending and pending[0].done():  # a check that could not be made
                        pending.popleft().result()  # (the network) ends the run now
                logged = receipt.get("log")
                if isinstance(logged, dict) and type(logged.get("index")) is int:
                    report.log_index = int(logged["index"])
                first = last + 1
                report.segment_ms.append((time.perf_counter() - t0) * 1000)
                report.server_ms.append(int(receipt.get("ingest_us", 0)) / 1000)
                report.pushed += int(receipt["stored"])
                report.duplicates += int(receipt["duplicates"])
                report.segments += 1
                report.server_head = max(report.server_head, head)
                # (The last segment's report is the final one, below.)
                end = last == report.local_head
                if progress is not None and not end and (now := time.perf_counter()) >= next_report:
                    next_report = now + PROGRESS_INTERVAL_S
                    progress(progress_at(last, now, done=False))
            while pending:
                pending.popleft().result()
        finally:
            if checks is not None:
                checks.shutdown(wait=True, cancel_futures=True)
        report.server_head = max(report.server_head, acked)
        if progress is not None:
            progress(progress_at(report.server_head, time.perf_counter(), done=True))

    # -- the server's transparency log (edge.logwatch) --------------------------------------

    def _watch(self, attempts: int) -> LogWatch | None:
        """The run's log checks; none without the server's key (nothing could be verified)."""
        if self.server_key is None:
            return None
        base = str(self.http.base_url).rstrip("/")

        def consistency(old: int, new: int) -> list[bytes]:
            return self._consistency(old, new, attempts)

        return LogWatch(self.ledger, self.server_key, base, consistency, clock=self.wall)

    def _leaves(self, first: int, last: int, receipt: dict[str, Any]) -> list[bytes]:
        """The entries the server may have logged this segment as: the whole segment sent, or
        (some of it already stored) the part it stored; both end at this ledger's event."""
        head_hash = self.ledger.hash_at(last)
        if head_hash is None:
            return []
        out = [segment_leaf(self.unit_id, first, last, head_hash)]
        stored = receipt.get("stored")
        if type(stored) is int and 0 < stored < last - first + 1:
            out.append(segment_leaf(self.unit_id, last - stored + 1, last, head_hash))
        return out

    def _log_get(self, path: str, params: dict[str, int] | None, attempts: int) -> httpx.Response:
        # The log's endpoints are public (witnesses read them): plain GETs, retried like the rest.
        return self._retrying(
            lambda: self.http.request("GET", path, params=params), SyncReport(), attempts
        )

    def _consistency(self, old: int, new: int, attempts: int) -> list[bytes]:
        r = self._log_get(LOG_CONSISTENCY, {"old": old, "new": new}, attempts)
        if r.status_code != 200:
            raise LogSuspect(
                Failure.PROOF_REFUSED,
                f"the server refused the consistency proof from size {old} to {new}: "
                f"{r.status_code} {_detail(r)}",
            )
        try:
            body = r.json()
        except ValueError:
            body = None
        return parse_consistency(body, old, new)

    def _check_latest(self, watch: LogWatch, attempts: int) -> None:
        """The log's latest checkpoint against the trusted one (at every sync, pushed or not)."""
        if watch.stopped:
            return
        r = self._log_get(LOG_CHECKPOINT_PATH, None, attempts)
        if r.status_code == 404:  # no log here (an older server); an alert once one is trusted
            watch.latest(None)
        elif r.status_code != 200:
            watch.fail(
                LogSuspect(
                    Failure.MISSING,
                    f"the server refused its log checkpoint: {r.status_code} {_detail(r)}",
                )
            )
        else:
            watch.latest(r.text)


class BackgroundSync:
    """The agent's background mode: sync every ``interval`` seconds until stopped.

    It stops only on a verified fork or a revoked unit or key (:class:`SyncFatal`, kept in
    ``error``), because retrying cannot help.  Everything else is retried: an unreachable server
    on the next round (nothing is lost: the ledger is the outbox), another sync holding the lock
    likewise, and a refusal (clock skew above all) with exponential backoff up to ``max_backoff``
    seconds, while ``alarm`` (and the ledger meta ``sync.alarm``, which ``ctgtp edge status``
    shows) says what is wrong; a round that succeeds clears it.
    """

    def __init__(
        self,
        client: SyncClient,
        interval: float = 30.0,
        *,
        max_backoff: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.interval = interval
        self.max_backoff = max_backoff
        self.clock = clock
        self.stop_event = threading.Event()
        self.reports: list[SyncReport] = []
        self.error: str | None = None  # why the loop stopped (fork, revocation)
        # What keeps it from syncing now (it retries), or the security alarm that stands.
        self.alarm: str | None = _security_alarm(client.ledger)
        self.unreachable = 0
        self.busy = 0  # rounds skipped because another sync held the lock
        self.skewed = 0  # rounds refused for clock skew
        self.refused = 0  # rounds refused otherwise (retried with backoff)
        self._failures = 0  # refusals in a row (the backoff's exponent)
        self._thread = threading.Thread(target=self._run, daemon=True, name="edge-sync")

    def start(self) -> BackgroundSync:
        self._thread.start()
        return self

    def _round(self) -> bool:
        """One round; False when the loop must stop."""
        try:
            self.reports.append(self.client.sync_once(attempts=3, lock_wait=0))
        except SyncFatal as e:
            self.error = str(e)
            self._raise_alarm("stopped", str(e))
            return False
        except SyncBusy:
            self.busy += 1
        except SyncClockSkew as e:
            self.skewed += 1
            self._failures += 1
            self._raise_alarm("clock_skew", str(e))
        except SyncRefused as e:
            self.refused += 1
            self._failures += 1
            self._raise_alarm("refused", str(e))
        except SyncError:
            self.unreachable += 1
        except Exception as e:  # a defect or the ledger (locked, closing): never end silently
            log.exception("background sync round failed")
            self._failures += 1
            self._raise_alarm("refused", f"sync round failed: {type(e).__name__}: {e}")
        else:
            self._failures = 0
            report = self.reports[-1]
            security = _security_alarm(self.client.ledger)
            if report.alerts:
                self.alarm = report.alerts[-1]  # (stored by the log watch with kind "security")
            elif security is not None:
                self.alarm = security  # stands until acknowledged (acknowledge_security_alarm)
            elif self.alarm is not None:
                self._clear_alarm()
        return True

    def _run(self) -> None:
        while not self.stop_event.is_set():
            if not self._round():
                return
            self.stop_event.wait(self._delay())

    def _delay(self) -> float:
        if self._failures == 0:
            return self.interval
        top = min(self.max_backoff, self.interval * 2 ** min(self._failures, 20))
        return max(self.interval, self.client.rng.uniform(top / 2, top))

    def _raise_alarm(self, kind: str, message: str) -> None:
        self.alarm = message
        since = self.clock()
        try:
            security = _security_alarm(self.client.ledger)
            if security is not None:  # a security alarm is never replaced by a passing one
                self.alarm = f"{security} (and now: {message})"
                return
            old = json.loads(self.client.ledger.get_meta(ALARM) or "null")
            if isinstance(old, dict) and old.get("kind") == kind:
                since = float(old.get("since", since))
            doc = {"kind": kind, "message": message, "since": since, "updated": self.clock()}
            self.client.ledger.set_meta(ALARM, json.dumps(doc))
        except Exception as e:  # the alarm in memory stands; the ledger may be closing
            log.warning("sync alarm not stored in the ledger: %s", e)

    def _clear_alarm(self) -> None:
        self.alarm = None
        try:
            security = _security_alarm(self.client.ledger)
            if security is not None:
                self.alarm = security
                return
            self.client.ledger.set_meta(ALARM, "null")
        except Exception as e:
            log.warning("sync alarm not cleared in the ledger: %s", e)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True while the loop is still running."""
        self._thread.join(timeout)
        return self._thread.is_alive()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(10)


def sync_alarm(ledger: Ledger) -> dict[str, Any] | None:
    """The background sync's standing alarm (``kind``: ``clock_skew``, ``refused``,
    ``stopped`` or ``security``; ``message``; ``since``), or None when the last round succeeded
    and no security alert stands."""
    doc = json.loads(ledger.get_meta(ALARM) or "null")
    return doc if isinstance(doc, dict) else None


def _security_alarm(ledger: Ledger) -> str | None:
    """The standing security alarm's message (the server's log misbehaved), if any."""
    try:
        doc = sync_alarm(ledger)
    except ValueError:
        return None
    if doc is None or doc.get("kind") != SECURITY:
        return None
    return str(doc.get("message"))


def acknowledge_security_alarm(ledger: Ledger) -> str | None:
    """Clear a standing security alarm (someone has looked into it); return its message.  The
    ``security.alert`` events stay in the ledger, and the trusted checkpoint stays what it was:
    a log that still does not extend it raises the alarm again at the next sync (the alert
    event is not repeated)."""
    message = _security_alarm(ledger)
    if message is not None:
        ledger.set_meta(ALARM, "null")
    return message
