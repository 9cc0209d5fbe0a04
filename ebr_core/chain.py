"""Building a unit's hash chain: the writer's half of the record format.

:class:`ChainBuilder` holds the head of one unit's chain, turns (kind, payload, ...) into hashed
:class:`~ebr_core.record.Event` objects and signs checkpoints over the head.  It does no I/O: the
edge ledger persists what it returns, and only then acknowledges.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import groupby, repeat
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

import orjson

from ebr_core.canonical import _ok
from ebr_core.errors import RecordFormatError
from ebr_core.keys import UnitSigner
from ebr_core.record import (
    GENESIS_HASH,
    Checkpoint,
    Event,
    Seal,
    checkpoint_message,
    event_template_halves,
    format_time,
    id_ok,
    kind_ok,
    new_event_body,
    seal_message,
)

Clock = Callable[[], datetime]

_sha256 = hashlib.sha256
_dumps = orjson.dumps
_SORT = orjson.OPT_SORT_KEYS
_new = tuple.__new__
_TEMPLATES_MAX = 1_000


class EventInput(Protocol):
    """What :meth:`ChainBuilder.next_events` needs of each new event (:class:`NewEvent`, or any
    record with these attributes, such as the edge ledger's ``Append``)."""

    @property
    def kind(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def batch_id(self) -> str | None: ...
    @property
    def actor(self) -> str | None: ...


class NewEvent(NamedTuple):
    """One new event of a commit group (:meth:`ChainBuilder.next_events`)."""

    kind: str
    payload: dict[str, Any]
    batch_id: str | None = None
    actor: str | None = None


_FIXED = attrgetter("kind", "batch_id", "actor")
_PAYLOAD = attrgetter("payload")


class ChainBuilder:
    """Appends events to one unit's chain, continuing from ``(seq, head_hash)``."""

    def __init__(
        self,
        signer: UnitSigner,
        clock: Clock,
        *,
        seq: int = 0,
        head_hash: str = GENESIS_HASH,
        checkpoint_seq: int = 0,
    ) -> None:
        self.signer = signer
        self.unit_id = signer.unit_id
        self.clock = clock
        self.seq = seq
        self.head_hash = head_hash
        self.checkpoint_seq = checkpoint_seq
        if not id_ok(self.unit_id):
            raise RecordFormatError(f"unit_id {self.unit_id!r} is not a valid unit id")
        # The body template, in two around prev_hash, per (kind, batch_id, actor) seen.
        self._halves: dict[tuple[str, str | None, str | None], tuple[bytes, bytes]] = {}

    def next_event(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        batch_id: str | None = None,
        actor: str | None = None,
    ) -> Event:
        """Make the next event and advance the head (the caller persists it): a commit group of
        one (:meth:`next_events`).

        The event owns ``payload`` from here on: the caller must not change it afterwards.
        """
        return self.next_events([NewEvent(kind, payload, batch_id, actor)])[0]

    def next_events(self, items: Sequence[EventInput]) -> list[Event]:
        """Make the next events of a commit group, in order; all or nothing.

        The clock is read once: the events of a group are recorded together (the ledger makes
        them durable in one transaction), so they carry one ``recorded_at``.  However a sequence
        of events is cut into groups, the events are the same under the same readings, and their
        bytes are the record format's (tests/core/test_chain.py holds them to both).  If any item
        is refused, the error names what was wrong and the head has not moved.  The events own
        their payloads from here on.
        """
        # Each step runs over a whole run of like events (same kind, batch and actor) in C:
        # map and zip over the run, one orjson call per payload, one template fill per event.
        # Per event, bytecode runs only in the payload type check and the chain's own loop.
        now = self.clock()
        seq0, head0 = self.seq, self.head_hash
        out: list[Event] = []
        try:
            for fixed, run in groupby(items, _FIXED):
                out += self._run(fixed, list(run), now)
        except BaseException:
            self.seq, self.head_hash = seq0, head0
            raise
        return out

    def _run(
        self, fixed: tuple[str, str | None, str | None], run: list[EventInput], now: datetime
    ) -> list[Event]:
        kind, batch_id, actor = fixed
        payloads: list[dict[str, Any]] = list(map(_PAYLOAD, run))
        try:
            before, after = self._halves[fixed]
        except (KeyError, TypeError):
            self._check_fixed(kind, batch_id, actor, payloads[0], now)
            # Only the payload is encoded per event: the fixed fields are in the template, with
            # the keys in canonical order (record.event_template_halves).
            before, after = event_template_halves(self.unit_id, kind, batch_id, actor)
            if len(self._halves) >= _TEMPLATES_MAX:
                self._halves.clear()
            self._halves[fixed] = (before, after)
        # Values only (orjson refuses a key that is not a string); a dict of strings (a quantity)
        # without a call.  A loop costs less here than set(map(type, ...)).
        for p in payloads:
            if type(p) is not dict:
                self._explain(kind, batch_id, actor, p, now)
            for v in p.values():
                if type(v) is not str:
                    if type(v) is dict:
                        for v2 in v.values():
                            if type(v2) is not str and not _ok(v2):
                                self._explain(kind, batch_id, actor, p, now)
                    elif not _ok(v):
                        self._explain(kind, batch_id, actor, p, now)
        try:
            bodies = list(map(before.__mod__, map(_dumps, payloads, repeat(None), repeat(_SORT))))
        except TypeError:  # a key that is not a string: find it
            for p in payloads:
                try:
                    _dumps(p, option=_SORT)
                except TypeError:
                    self._explain(kind, batch_id, actor, p, now)
            raise
        recorded_at = format_time(now)
        n = len(payloads)
        seq = self.seq
        seqs = range(seq + 1, seq + 1 + n)
        # The rest of each hash input after prev_hash: the time is the group's, so only the seq
        # is filled per event (a timestamp holds no "%").
        tails = list(map((b'","recorded_at":"' + recorded_at.encode() + after).__mod__, seqs))
        hashes: list[str] = []
        append = hashes.append
        head = self.head_hash
        prev = head.encode()
        for body, tail in zip(bodies, tails, strict=True):
            h = _sha256(body + prev + tail).hexdigest()
            append(h)
            prev = h.encode()
        prevs = hashes[:-1]
        prevs.insert(0, head)
        self.seq = seq + n
        self.head_hash = hashes[-1]
        return list(
            map(
                _new,
                repeat(Event),
                zip(
                    repeat(self.unit_id),
                    seqs,
                    prevs,
                    repeat(recorded_at),
                    repeat(batch_id),
                    repeat(kind),
                    repeat(actor),
                    payloads,
                    hashes,
                ),
            )
        )

    def _explain(
        self,
        kind: str,
        batch_id: str | None,
        actor: str | None,
        payload: Any,
        now: datetime,
    ) -> None:
        """Raise the precise error for inputs the fast path refused."""
        new_event_body(
            unit_id=self.unit_id,
            seq=self.seq + 1,
            prev_hash=self.head_hash,
            recorded_at=now,
            batch_id=batch_id,
            kind=kind,
            actor=actor,
            payload=payload,
        )
        raise RecordFormatError(f"payload cannot be encoded canonically: {payload!r:.200}")

    def _check_fixed(
        self, kind: str, batch_id: str | None, actor: str | None, payload: Any, now: datetime
    ) -> None:
        """Validate the fields a template fixes (once per (kind, batch_id, actor))."""
        if (
            type(kind) is not str
            or not kind_ok(kind)
            or (batch_id is not None and (type(batch_id) is not str or not id_ok(batch_id)))
            or (actor is not None and (type(actor) is not str or not actor))
        ):
            self._explain(kind, batch_id, actor, payload, now)

    def checkpoint(self) -> Checkpoint:
        """Sign the current head (chained to the previous checkpoint)."""
        cp = sign_checkpoint(self.signer, self.seq, self.checkpoint_seq, self.head_hash)
        self.checkpoint_seq = self.seq
        return cp


def sign_checkpoint(signer: UnitSigner, seq: int, prev_seq: int, head_hash: str) -> Checkpoint:
    msg = checkpoint_message(signer.unit_id, seq, prev_seq, head_hash, signer.key_id)
    sig = base64.b64encode(signer.sign(msg)).decode("ascii")
    return Checkpoint(signer.unit_id, seq, prev_seq, head_hash, signer.key_id, sig)


def sign_seal(signer: UnitSigner, first_seq: int, seq: int, head_hash: str) -> Seal:
    msg = seal_message(signer.unit_id, first_seq, seq, head_hash, signer.key_id)
    sig = base64.b64encode(signer.sign(msg)).decode("ascii")
    return Seal(signer.unit_id, first_seq, seq, head_hash, signer.key_id, sig)
