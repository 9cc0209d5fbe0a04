"""Verifying the new lines of a segment: serially, or in two parts on two processes.

Verification is the larger half of ingest (a SHA-256 and a canonical check per event, in
Python).  The chain is sequential, but a checkpoint line fixes the state the next line starts
from (its ``seq`` and ``head_hash``), so a large segment is cut after a checkpoint near its
middle: this process verifies the first part *including that checkpoint* (which proves the
checkpoint's state is the chain's true state there), while a worker process verifies the second
part starting from the checkpoint's claimed state.  Both must pass; the first error in line
order is reported, with its line number in the whole segment, exactly as serial verification
reports it.

The caller may store each part as soon as it has passed (``on_part``), inside its transaction:
the first part's rows are written while the worker is still verifying the second, and if the
second fails the caller rolls the whole transaction back, so nothing of the segment is kept.
That overlap is why the worker takes the larger, later share (``worker_share``): this process
has the first part's insert to do in the same time.

Only the pure :class:`~ebr_core.verify.ChainVerifier` runs in the worker; the keys go as bytes.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import orjson

from ebr_core.errors import VerificationError
from ebr_core.keys import Keyring, PublicKey
from ebr_core.verify import ChainVerifier
from server import projections


@dataclass
class Start:
    """The chain state a part continues from."""

    seq: int
    head_hash: str
    checkpoint_seq: int


@dataclass
class Part:
    """What verifying some lines produced (picklable: it may come from the worker)."""

    # (unit_id, seq, hash, batch_id, kind, recorded_at[, line]): the line is added by
    # with_lines(), so a worker does not send back the bytes it was given.
    events: list[tuple[Any, ...]] = field(default_factory=list)
    event_at: list[int] = field(default_factory=list)  # the line index of each event
    checkpoints: list[tuple[Any, ...]] = field(default_factory=list)
    deltas: dict[str, projections.Delta] = field(default_factory=dict)
    end: Start | None = None  # the state after the last line (None if nothing verified)
    error: tuple[str, int] | None = None  # (reason, index of the line within the part)
    seal_at: int | None = None  # index of a seal line (segments carry none)


def verify_lines(
    keys: list[tuple[bytes, str | None]], unit_id: str, start: Start, lines: list[bytes]
) -> Part:
    """Verify ``lines`` from ``start``; collect the rows to store and the review deltas."""
    v = ChainVerifier(
        Keyring([PublicKey(raw, uid) for raw, uid in keys]),
        unit_id=unit_id,
        start_seq=start.seq,
        start_hash=start.head_hash,
        start_checkpoint_seq=start.checkpoint_seq,
    )
    out = Part()
    events, event_at, checkpoints, deltas = out.events, out.event_at, out.checkpoints, out.deltas
    tally, tally_run = projections.tally, projections.tally_run
    feed_line, feed_run = v.feed_line, v.feed_run
    i, n = 0, len(lines)
    try:
        while i < n:
            r = feed_run(lines, i)
            if r is not None:  # a run of like events, verified in bulk
                m = r.size
                tally_run(
                    deltas, r.batch_id, r.kind, r.payloads, r.recorded_at, r.first_seq, r.hashes
                )
                events.extend(
                    zip(
                        repeat(unit_id, m),
                        range(r.first_seq, r.first_seq + m),
                        r.hashes,
                        repeat(r.batch_id, m),
                        repeat(r.kind, m),
                        r.recorded_at,
                        strict=True,
                    )
                )
                event_at.extend(range(i, i + m))
                i += m
                continue
            line = lines[i]
            rec = feed_line(line)
            t = rec["type"]
            if t == "event":
                tally(deltas, rec)
                events.append(
                    (
                        unit_id,
                        rec["seq"],
                        rec["hash"],
                        rec["batch_id"],
                        rec["kind"],
                        rec["recorded_at"],
                    )
                )
                event_at.append(i)
            elif t == "checkpoint":
                checkpoints.append((unit_id, rec["seq"], line))
            else:
                out.seal_at = i
                return out
            i += 1
    except VerificationError as e:
        out.error = (e.reason, e.index or 0)
        return out
    if v.seq > start.seq or v.checkpoint_seq > start.checkpoint_seq:
        out.end = Start(v.seq, v.head_hash, v.checkpoint_seq)
    return out


def with_lines(part: Part, lines: list[bytes]) -> list[tuple[Any, ...]]:
    """The event rows to store: each row with its line appended."""
    return [(*row, lines[i]) for row, i in zip(part.events, part.event_at, strict=True)]


merge_deltas = projections.merge_deltas


def split_point(lines: list[bytes], at: float = 0.5) -> tuple[int, Start] | None:
    """Index just after the checkpoint line nearest ``at`` (a fraction of the lines), and the
    state it claims."""
    n = len(lines)
    mid = min(max(int(n * at), 1), n - 2) if n > 2 else 0
    for d in range(n):
        for i in (mid - d, mid + d):
            if 0 < i < n - 1 and lines[i].startswith(b'{"head_hash":'):
                return _after_checkpoint(lines, i)
    return None


def _after_checkpoint(lines: list[bytes], i: int) -> tuple[int, Start] | None:
    # '{"head_hash":' is how a checkpoint line starts (canonical key order); events start
    # with '{"actor":'.  Anything odd here: verify serially, which reports it properly.
    try:
        cp = orjson.loads(lines[i])
    except orjson.JSONDecodeError:
        return None
    if (
        type(cp) is not dict
        or cp.get("type") != "checkpoint"
        or type(cp.get("seq")) is not int
        or type(cp.get("head_hash")) is not str
    ):
        return None
    return i + 1, Start(cp["seq"], cp["head_hash"], cp["seq"])


class Verifier:
    """Verifies segments, handing the second half of large ones to one worker process.

    The worker is started by the first large segment and used once it has started, and only
    when it is idle: under many concurrent units a busy worker would make a request wait, so
    that request verifies here instead.
    """

    def __init__(self, workers: int, min_lines: int, worker_share: float = 0.5) -> None:
        if not 0 < worker_share < 1:
            raise ValueError(f"worker_share must be between 0 and 1, not {worker_share}")
        self.min_lines = min_lines
        self.worker_share = worker_share
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._busy = 0
        self._ready = False  # the worker has imported what it needs
        self.worker_parts = 0  # parts the worker verified (a figure for tests and operators)

    def start(self) -> None:
        """Start the worker (the first large segment does this: small ones never need it)."""
        if self._workers > 0 and self._pool is None:
            # spawn, not fork: the server has threads, and a forked copy of held locks hangs.
            self._pool = ProcessPoolExecutor(
                self._workers, mp_context=multiprocessing.get_context("spawn")
            )
            # Import in the worker now; until it is ready, segments verify here (no waiting).
            self._pool.submit(_warm).add_done_callback(self._warmed)

    def wait_ready(self, timeout: float) -> bool:
        """Start the worker if needed and wait up to ``timeout`` seconds for it to be ready."""
        self.start()
        deadline = time.monotonic() + timeout
        while not self._ready and time.monotonic() < deadline:
            time.sleep(0.05)
        return self._ready

    def _warmed(self, f: Future[None]) -> None:
        self._ready = f.exception() is None if not f.cancelled() else False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _claim(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._pool is None:
                self.start()
                return None
            if not self._ready or self._busy >= self._workers:
                return None
            self._busy += 1
            return self._pool

    def _release(self) -> None:
        with self._lock:
            self._busy -= 1

    def verify(
        self,
        keys: list[tuple[bytes, str | None]],
        unit_id: str,
        start: Start,
        lines: list[bytes],
        on_part: Callable[[Part, list[bytes]], None] | None = None,
    ) -> Part:
        """Verify ``lines``: the result equals :func:`verify_lines` over all of them.

        ``on_part(part, its_lines)`` is called for each part, in order, as soon as it has passed
        (never for a part with an error or a seal): the first part while the worker may still be
        verifying the second.  The part is the caller's only during the call (it is merged into
        the result afterwards).  The caller must undo what it did if the result has an error."""
        cut = None
        if len(lines) >= self.min_lines:
            cut = split_point(lines, 1 - self.worker_share)
        pool = self._claim() if cut is not None else None
        if cut is None or pool is None:
            whole = verify_lines(keys, unit_id, start, lines)
            if on_part is not None and whole.error is None and whole.seal_at is None:
                on_part(whole, lines)
            return whole
        at, mid = cut
        try:
            try:
                future: Future[Part] | None = pool.submit(
                    verify_lines, keys, unit_id, mid, lines[at:]
                )
            except (BrokenProcessPool, RuntimeError):  # broken, or shut down: verify here
                future = None
                self._restart()
            first = verify_lines(keys, unit_id, start, lines[:at])
            if first.error is None and first.end != mid:
                # Cannot happen: the first part verified that checkpoint against the chain.
                first.error = ("checkpoint does not match the chain head", at - 1)
            if first.error is not None or first.seal_at is not None:
                if future is not None:
                    future.cancel()
                return first
            if on_part is not None:
                on_part(first, lines[:at])
            second = None
            if future is not None:
                try:
                    second = future.result()
                    self.worker_parts += 1
                except BrokenProcessPool:
                    self._restart()
            if second is None:
                second = verify_lines(keys, unit_id, mid, lines[at:])
        finally:
            self._release()
        if on_part is not None and second.error is None and second.seal_at is None:
            on_part(second, lines[at:])
        if second.error is not None:
            first.error = (second.error[0], second.error[1] + at)
        if second.seal_at is not None:
            first.seal_at = second.seal_at + at
        first.events.extend(second.events)
        first.event_at.extend(i + at for i in second.event_at)
        first.checkpoints.extend(second.checkpoints)
        merge_deltas(first.deltas, second.deltas)
        first.end = second.end or first.end
        return first

    def _restart(self) -> None:
        with self._lock:
            old, self._pool, self._ready = self._pool, None, False
        if old is not None:  # the next large segment starts a new one
            old.shutdown(wait=False, cancel_futures=True)


def _warm() -> None:
    return None
