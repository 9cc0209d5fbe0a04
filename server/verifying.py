"""Verifying the new lines of a segment: serially, or in two parts on two processes.

Verification is the larger half of ingest (a SHA-256 and a canonical check per event, in
Python).  The chain is sequential, but a checkpoint line fixes the state the next line starts
from (its ``seq`` and ``head_hash``), so a large segment is cut after a checkpoint near its
middle (:meth:`~ebr_core.verify.ChainVerifier.split_at_checkpoint`, the verifier's rule): this
process verifies the first part *including that checkpoint* (which proves the checkpoint's
state is the chain's true state there), while a worker process verifies the second part
starting from the checkpoint's claimed state.  Both must pass; the first error in line order is
reported, typed (its :class:`~ebr_core.errors.VerificationError` subclass, so a bad signature
and a malformed line stay apart) and with its line index in the whole segment, exactly as
serial verification reports it; :meth:`Part.finish` is the verifier's end check.

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

from ebr_core.errors import CheckpointError, MalformedRecordError, VerificationError
from ebr_core.keys import Keyring, PublicKey
from ebr_core.verify import ChainHead, ChainVerifier, check_signed_head
from server import projections

Start = ChainHead
"""The chain state a part continues from (the verifier's :class:`~ebr_core.verify.ChainHead`)."""


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
    # The first error, typed (SignatureError, MalformedRecordError, ...), its ``index`` the
    # line's within the part (within the whole segment once Verifier.verify has merged).
    failure: VerificationError | None = None
    seal_at: int | None = None  # index of a seal line (segments carry none)
    start: Start | None = None  # the state the part continued from
    size: int = 0  # the lines it was given

    @property
    def error(self) -> tuple[str, int] | None:
        """``(reason, line index)`` of :attr:`failure`: its text without its class."""
        if self.failure is None:
            return None
        return self.failure.reason, self.failure.index or 0

    def finish(self) -> Start:
        """The chain head the lines verified to, or raise the typed
        :class:`~ebr_core.errors.VerificationError` that refuses them, its ``index`` the line's
        (``len(lines)`` for what is missing after the last one).

        The end check of :meth:`ebr_core.verify.ChainVerifier.finish`, for a segment: the
        part's :attr:`failure`; a seal line (a segment is not a whole exported file, so it
        carries none); events after the last checkpoint (every stored event must be signed).
        A segment with nothing new (all of it stored before) verifies to where it started.
        """
        if self.failure is not None:
            raise self.failure
        if self.seal_at is not None:
            raise MalformedRecordError(
                "a segment carries no seal (a seal ends an exported ledger file)",
                index=self.seal_at,
            )
        head = self.end or self.start
        if head is None:
            raise ValueError("Part.finish() on a part that verify_lines() did not make")
        check_signed_head(head, index=self.size)
        return head


def verify_lines(
    keys: list[tuple[bytes, str | None]],
    unit_id: str,
    start: Start,
    lines: list[bytes],
    first_seq: int | None = None,
) -> Part:
    """Verify ``lines`` from ``start``; collect the rows to store and the review deltas.
    ``first_seq``: the segment's, when these lines are its second part."""
    v = ChainVerifier(
        Keyring([PublicKey(raw, uid) for raw, uid in keys]),
        unit_id=unit_id,
        start_seq=start.seq,
        start_hash=start.head_hash,
        start_checkpoint_seq=start.checkpoint_seq,
        first_seq=first_seq,
    )
    out = Part(start=start, size=len(lines))
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
        out.failure = e
        return out
    if v.seq > start.seq or v.checkpoint_seq > start.checkpoint_seq:
        out.end = v.head
    return out


def with_lines(part: Part, lines: list[bytes]) -> list[tuple[Any, ...]]:
    """The event rows to store: each row with its line appended."""
    return [(*row, lines[i]) for row, i in zip(part.events, part.event_at, strict=True)]


merge_deltas = projections.merge_deltas


def split_point(lines: list[bytes], at: float = 0.5) -> tuple[int, Start] | None:
    """Index just after the checkpoint line nearest ``at`` (a fraction of the lines), and the
    state it claims (:meth:`ebr_core.verify.ChainVerifier.split_at_checkpoint`)."""
    return ChainVerifier.split_at_checkpoint(lines, at)


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
            if on_part is not None and whole.failure is None and whole.seal_at is None:
                on_part(whole, lines)
            return whole
        at, mid = cut
        try:
            try:
                future: Future[Part] | None = pool.submit(
                    verify_lines, keys, unit_id, mid, lines[at:], start.seq + 1
                )
            except (BrokenProcessPool, RuntimeError):  # broken, or shut down: verify here
                future = None
                self._restart()
            first = verify_lines(keys, unit_id, start, lines[:at])
            if first.failure is None and first.end != mid:
                # Cannot happen: the first part verified that checkpoint against the chain.
                first.failure = CheckpointError(
                    "checkpoint does not match the chain head", index=at - 1
                )
            if first.failure is not None or first.seal_at is not None:
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
                second = verify_lines(keys, unit_id, mid, lines[at:], start.seq + 1)
        finally:
            self._release()
        if on_part is not None and second.failure is None and second.seal_at is None:
            on_part(second, lines[at:])
        if second.failure is not None:
            first.failure = second.failure.shifted(at)
        if second.seal_at is not None:
            first.seal_at = second.seal_at + at
        first.events.extend(second.events)
        first.event_at.extend(i + at for i in second.event_at)
        first.checkpoints.extend(second.checkpoints)
        merge_deltas(first.deltas, second.deltas)
        first.end = second.end or first.end
        first.size += second.size
        return first

    def _restart(self) -> None:
        with self._lock:
            old, self._pool, self._ready = self._pool, None, False
        if old is not None:  # the next large segment starts a new one
            old.shutdown(wait=False, cancel_futures=True)


def _warm() -> None:
    return None
