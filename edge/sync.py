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
  any other refusal (tampering, fork, revoked unit) stops with the server's message.
* One run drains the whole backlog it found at its start, however large: there is no cap on
  segments per run and no deadline on the run (only each request has a timeout, and each is
  retried).  The ledger is read a segment at a time (at most the segment on the wire and the next
  one being prepared are in memory), so the memory a run takes does not grow with the backlog.
* ``sync_once(progress=...)`` reports how far the run is (:class:`SyncProgress`): after a stored
  segment at most every :data:`PROGRESS_INTERVAL_S` seconds, and once at the end.
"""

from __future__ import annotations

import gzip
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import zstandard

from ebr_core.keys import PublicKey
from ebr_core.requestsig import sign_request, verify_receipt
from edge.errors import EdgeError
from edge.ledger import Ledger

ACKED = "sync.acked_seq"
CHECKPOINT_PAGE = 10_000  # checkpoint seqs read at a time when cutting segments
PROGRESS_INTERVAL_S = 0.5  # sync_once calls its progress callback at most this often (+ the end)


class SyncError(EdgeError):
    """The server could not be reached in time; nothing is lost, the next run resumes."""


class SyncRefused(SyncError):
    """The server refused a segment (its message says why); retrying will not help."""


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


def _error_type(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


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

    def _send(
        self, method: str, path: str, body: bytes = b"", extra: dict[str, str] | None = None
    ) -> httpx.Response:
        h = sign_request(
            self.ledger.signer,
            method,
            path,
            body,
            timestamp=int(time.time()),
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
                replayed = r.status_code == 409 and _error_type(r) == "Replayed"
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
        path = f"/v1/units/{self.unit_id}/head"
        r = self._retrying(lambda: self._send("GET", path), report, attempts)
        if r.status_code != 200:
            raise SyncRefused(f"server refused the head request: {r.status_code} {r.text}")
        seq = int(r.json()["head_seq"])
        local = self.ledger.head[0]
        if seq > local:
            raise SyncRefused(
                f"the server holds seq {seq} but this ledger ends at {local}: "
                "this is not the ledger the server knows for the unit"
            )
        return seq

    def fetch_operators(self, attempts: int = 8) -> list[dict[str, Any]]:
        """The operators the server publishes for this unit's site, with their argon2id hashes
        (for offline re-authentication at the station)."""
        path = f"/v1/units/{self.unit_id}/operators"
        r = self._retrying(lambda: self._send("GET", path), SyncReport(), attempts)
        if r.status_code != 200:
            raise SyncRefused(f"server refused the operators request: {r.status_code} {r.text}")
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
        self, attempts: int = 8, progress: Callable[[SyncProgress], None] | None = None
    ) -> SyncReport:
        """Send everything the ledger holds beyond the server's head, in one run.

        ``attempts`` bounds the tries of each request, not the run.  ``progress`` is called after
        a stored segment (at most every :data:`PROGRESS_INTERVAL_S` seconds) and once at the end.
        """
        started = time.perf_counter()
        # A sync process reads the ledger alongside its writer: first, what it has committed.
        report = SyncReport(local_head=self.ledger.refresh()[0])
        acked = self.server_head(report, attempts)
        self.ledger.set_meta(ACKED, str(acked))
        backlog = report.local_head - acked
        next_report = 0.0  # perf_counter time of the next progress call (the first: at once)

        def progress_at(last: int, now: float, done: bool) -> SyncProgress:
            sent, elapsed = last - acked, now - started
            rate = sent / elapsed if elapsed > 0 else 0.0
            left = backlog - sent
            eta = left / rate if left > 0 and rate > 0 and not done else 0.0
            return SyncProgress(sent, backlog, elapsed, rate, eta, done)

        path = f"/v1/units/{self.unit_id}/segments"
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
                raise SyncRefused(
                    f"server refused the segment ending at seq {last}: "
                    f"{r.status_code} {r.json().get('detail', r.text)}"
                )
            receipt = r.json()
            if self.server_key is not None and not verify_receipt(self.server_key, receipt):
                raise SyncRefused("the receipt's server signature does not verify")
            if int(receipt["head_seq"]) != last:
                raise SyncRefused(f"receipt head {receipt['head_seq']} is not seq {last}")
            self.ledger.set_meta(ACKED, str(last))
            report.segment_ms.append((time.perf_counter() - t0) * 1000)
            report.server_ms.append(int(receipt.get("ingest_us", 0)) / 1000)
            report.pushed += int(receipt["stored"])
            report.duplicates += int(receipt["duplicates"])
            report.segments += 1
            report.server_head = last
            # (The last segment's report is the final one, below.)
            end = last == report.local_head
            if progress is not None and not end and (now := time.perf_counter()) >= next_report:
                next_report = now + PROGRESS_INTERVAL_S
                progress(progress_at(last, now, done=False))
        report.server_head = max(report.server_head, acked)
        if progress is not None:
            progress(progress_at(report.server_head, time.perf_counter(), done=True))
        return report


class BackgroundSync:
    """The agent's background mode: sync every ``interval`` seconds until stopped.

    An unreachable server is retried on the next round (nothing is lost: the ledger is the
    outbox); a refusal (tampering, fork, revoked unit) stops the loop and is kept in ``error``
    for the operator, because retrying cannot help.
    """

    def __init__(self, client: SyncClient, interval: float = 30.0) -> None:
        self.client = client
        self.interval = interval
        self.stop_event = threading.Event()
        self.reports: list[SyncReport] = []
        self.error: str | None = None
        self.unreachable = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="edge-sync")

    def start(self) -> BackgroundSync:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.reports.append(self.client.sync_once(attempts=3))
            except SyncRefused as e:
                self.error = str(e)
                return
            except SyncError:
                self.unreachable += 1
            self.stop_event.wait(self.interval)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True while the loop is still running."""
        self._thread.join(timeout)
        return self._thread.is_alive()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(10)
