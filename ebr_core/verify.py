"""The one verifier: chain, checkpoints and seal, used by the edge self-check, the server ingest
and the offline auditor (``ctgtp verify``).  There is no second copy "for speed".

Records are the wire form: JSON objects with a ``type`` of ``event``, ``checkpoint`` or ``seal``
(see :mod:`ebr_core.ledgerfile`).  :class:`ChainVerifier` takes them one at a time, so the result
cannot depend on how a file or a request body was chunked; :func:`verify` is the whole-input form.

Per event the cost is one canonical encoding and one SHA-256; signatures are checked once per
checkpoint, not once per event (the hash links make one signature cover the prefix).  Runs of
like event lines are checked in bulk against their fixed bytes (:mod:`ebr_core._verify_run`,
where the byte offsets are named and held to the layout); a large input can be verified in two
parts cut after a checkpoint (:meth:`ChainVerifier.split_at_checkpoint`).

Longer than most modules (about 600 lines) on purpose: :class:`ChainVerifier` is one state
machine whose hot path (``_event``) and the slow paths that name each error share its state
and must be read side by side; only the stateless byte work is apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

import orjson

from ebr_core._verify_run import check_run
from ebr_core.canonical import _ok, check_value
from ebr_core.errors import (
    CanonicalError,
    ChainBrokenError,
    CheckpointError,
    EmptyLedgerError,
    HashMismatchError,
    MalformedRecordError,
    RecordFormatError,
    SequenceError,
    SignatureError,
    UnitMismatchError,
    UnsignedTailError,
)
from ebr_core.keys import Keyring
from ebr_core.record import (
    _ID,
    _TIME,
    CHECKPOINT_FIELDS,
    EVENT_FIELDS,
    GENESIS_HASH,
    SEAL_FIELDS,
    LineShape,
    check_signed_shape,
    checkpoint_message,
    event_line_shape,
    event_line_template,
    event_template,
    id_ok,
    kind_ok,
    real_time,
    seal_message,
)

_EVENT_LINE = EVENT_FIELDS | {"type"}
_CHECKPOINT_LINE = CHECKPOINT_FIELDS | {"type"}
_SEAL_LINE = SEAL_FIELDS | {"type"}
_OPTS = orjson.OPT_SORT_KEYS
_sha256 = hashlib.sha256
_dumps = orjson.dumps
_time_ok = _TIME.fullmatch
_UNSET = object()
_NOT_CANONICAL = "line is not in canonical form (sorted keys, no spaces, UTF-8, no floats)"


class EventRun(NamedTuple):
    """``size`` events from ``first_seq`` verified in one run (:meth:`ChainVerifier.feed_run`):
    they share ``kind``, ``batch_id`` and ``actor``; the lists are per event."""

    first_seq: int
    size: int
    hashes: list[str]
    payloads: list[dict[str, Any]]
    recorded_at: list[str]
    kind: Any
    batch_id: Any
    actor: Any


class ChainHead(NamedTuple):
    """A point of a unit's chain that verification starts from or reaches: the last event's
    ``seq`` and ``head_hash``, and the ``seq`` of the last checkpoint (0: none yet)."""

    seq: int
    head_hash: str
    checkpoint_seq: int


GENESIS = ChainHead(0, GENESIS_HASH, 0)
# Canonical key order puts "head_hash" first in a checkpoint line ('{"head_hash":'); an event
# line starts with '{"actor":', a seal with '{"first_seq":'.
_CHECKPOINT_START = b'{"' + min(_CHECKPOINT_LINE).encode() + b'":'


@dataclass(frozen=True)
class Verified:
    """What was proven: events ``first_seq..head_seq`` of ``unit_id`` are intact and signed."""

    unit_id: str
    first_seq: int
    head_seq: int
    head_hash: str
    event_count: int
    checkpoint_count: int
    sealed: bool
    key_ids: frozenset[str] = field(default_factory=frozenset)


class ChainVerifier:
    """Streaming verification of one unit's records.

    ``start_seq``/``start_hash``/``start_checkpoint_seq`` continue from a head already verified
    (the server's stored head); the defaults verify a ledger from its first event.  A verifier
    that takes the later part of an input cut in two (:meth:`split_at_checkpoint`) is given the
    whole input's ``first_seq``, which a seal must cover (the default: ``start_seq + 1``).
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        unit_id: str | None = None,
        start_seq: int = 0,
        start_hash: str = GENESIS_HASH,
        start_checkpoint_seq: int = 0,
        first_seq: int | None = None,
    ) -> None:
        self.keyring = keyring
        self.unit_id = unit_id
        self.first_seq = start_seq + 1 if first_seq is None else first_seq
        self.seq = start_seq
        self.head_hash = start_hash
        self.checkpoint_seq = start_checkpoint_seq
        self.checkpoints = 0
        self.sealed = False
        self.index = 0
        self.key_ids: set[str] = set()
        # The last event's (kind, batch_id, actor) and the hash template made for them.
        self._kind: object = _UNSET
        self._batch: object = _UNSET
        self._actor: object = _UNSET
        self._template = b""
        self._line_template = b""
        self._shape: LineShape | None = None  # the last event's line shape (for feed_run)
        self._second = "\0"  # the last timestamp's first 20 characters, matched by the regex

    # -- records --------------------------------------------------------------------------

    def feed(self, record: Any) -> None:
        """Verify the next record (a parsed JSON object); raise at the first problem."""
        i = self.index
        if self.sealed:
            raise MalformedRecordError(
                "record after the seal: the seal must be the last line", index=i
            )
        if type(record) is not dict:
            raise MalformedRecordError(
                f"expected a JSON object, got {type(record).__name__}", index=i
            )
        t = record.get("type")
        if t == "event":
            self._event(record, i)
        elif t == "checkpoint":
            self._checkpoint(record, i)
        elif t == "seal":
            self._seal(record, i)
        else:
            raise MalformedRecordError(
                f"type {t!r} is not one of 'event', 'checkpoint', 'seal'", index=i
            )
        self.index = i + 1

    def feed_line(self, line: bytes) -> dict[str, Any]:
        """Verify one line of the exchange format (without its newline); return what it parses
        to.

        The line must be byte-identical to the canonical form of what it parses to: what is
        stored and exchanged is exactly what was hashed and signed, not merely equivalent JSON.
        """
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise MalformedRecordError(f"not valid JSON ({e})", index=self.index) from e
        if type(record) is dict and record.get("type") == "event" and not self.sealed:
            # An event line is compared with its canonical form filled from the line template
            # inside _event (only the payload is encoded there).
            i = self.index
            self._event(record, i, line)
            self.index = i + 1
            return record
        try:
            canonical_line = _dumps(record, option=_OPTS)
        except TypeError as e:
            raise MalformedRecordError(
                f"cannot be encoded canonically: {e}", index=self.index
            ) from e
        if canonical_line != line:
            raise MalformedRecordError(_NOT_CANONICAL, index=self.index)
        self.feed(record)
        return record  # type: ignore[no-any-return]

    def check_lines(self, lines: Sequence[bytes]) -> None:
        """:meth:`feed_line` each line in turn, runs of like events in bulk (:meth:`feed_run`).

        A blank line is refused as such (a line removed by hand leaves a trace the verifier
        should report, not skip)."""
        i, n = 0, len(lines)
        run, feed = self.feed_run, self.feed_line
        while i < n:
            r = run(lines, i, False)
            if r is not None:
                i += r.size
                continue
            line = lines[i]
            if not line.strip():
                raise MalformedRecordError(
                    "blank line: expected one record per line", index=self.index
                )
            feed(line)
            i += 1

    def feed_run(self, lines: Sequence[bytes], i: int, decode: bool = True) -> EventRun | None:
        """Verify, in bulk, the run of event lines from ``lines[i]`` that have the previous
        event's (kind, batch_id, actor).

        Each line is checked against the fixed bytes of its :class:`~ebr_core.record.LineShape`
        (:func:`ebr_core._verify_run.check_run`, where the byte layout is).  A run that passes
        is, line for line, the canonical line of a well-formed event that links to the one
        before and matches its hash: exactly what :meth:`feed_line` accepts
        (tests/core/test_verify_runs.py holds the two to the same verdicts).  Returns None when
        ``lines[i]`` starts no run of two or more, or when anything in the run is wrong; nothing
        is changed then, and the caller feeds the lines one by one, so every error is named by
        the line-by-line path.  ``decode=False`` leaves the run's ``recorded_at`` list empty.
        """
        shape = self._shape
        if shape is None or self.sealed:
            return None
        r = check_run(shape, self.seq, self.head_hash, lines, i, decode)
        if r is None:
            return None
        s0, m = self.seq + 1, len(r.hashes)
        self.seq = s0 + m - 1
        self.head_hash = r.hashes[-1]
        self.index += m
        return EventRun(
            first_seq=s0,
            size=m,
            hashes=r.hashes,
            payloads=r.payloads,
            recorded_at=r.recorded_at,
            kind=self._kind,
            batch_id=self._batch,
            actor=self._actor,
        )

    def _unit(self, unit_id: Any, i: int, seq: Any) -> None:
        if self.unit_id is None:
            if type(unit_id) is not str or not _ID.fullmatch(unit_id):
                raise MalformedRecordError(f"unit_id {unit_id!r} is not a valid unit id", index=i)
            self.unit_id = unit_id
        elif unit_id != self.unit_id:
            raise UnitMismatchError(
                f"record is for unit {unit_id!r}, expected {self.unit_id!r}", seq=seq, index=i
            )

    def feed_many(self, records: Iterable[Any]) -> None:
        """:meth:`feed` each record in turn; events take the direct path."""
        event = self._event
        for r in records:
            if type(r) is dict and r.get("type") == "event" and not self.sealed:
                i = self.index
                event(r, i)
                self.index = i + 1
            else:
                self.feed(r)

    def _event(self, d: dict[str, Any], i: int, line: bytes | None = None) -> None:
        # The hot path (one call per event): kept flat, with the rare error branches out of line.
        # Ten keys, and every one of the ten is read below (a missing one raises KeyError):
        # that proves the exact key set without hashing the keys into a set.
        if len(d) != 10:
            self._bad_fields(d, i)
        try:
            seq = d["seq"]
            if d["unit_id"] != self.unit_id:
                self._unit(d["unit_id"], i, seq)
            if type(seq) is not int or seq != self.seq + 1:
                raise SequenceError(
                    f"seq is {seq!r}, expected {self.seq + 1}", seq=self.seq + 1, index=i
                )
            prev = d["prev_hash"]
            if prev != self.head_hash:
                raise ChainBrokenError(
                    f"prev_hash {str(prev)[:16]}… does not link to the previous event "
                    f"{self.head_hash[:16]}… (an event was deleted, reordered or spliced in)",
                    seq=seq,
                    index=i,
                )
            # The hash input is the canonical body (every field but hash and type), written
            # from a template for the previous event's (kind, batch_id, actor) when they
            # repeat, so only the payload is encoded (record.event_template; test_chain.py
            # holds it to canonical()).  Fields are checked before they go into the template.
            kind = d["kind"]
            batch = d["batch_id"]
            actor = d["actor"]
            if kind == self._kind and batch == self._batch and actor == self._actor:
                template = self._template
            else:
                template = self._new_template(d, seq, i)
            ra = d["recorded_at"]
            payload = d["payload"]
            stored = d["hash"]
        except KeyError:
            self._bad_fields(d, i)
        # The timestamp's "YYYY-MM-DDThh:mm:ss." repeats for every event of a second: it is
        # matched by the regex once, then only the six ASCII digits and the Z are checked.
        if (
            type(ra) is not str
            or len(ra) != 27
            or not ra.startswith(self._second)
            or ra[26] != "Z"
            or not ra.isascii()
            or not ra[20:26].isdigit()
        ):
            if type(ra) is not str or not _time_ok(ra) or not real_time(ra):
                self._event_fields(d, seq, i)
            self._second = ra[:20]
        if type(payload) is not dict:
            self._event_fields(d, seq, i)
        for v in payload.values():  # values only: orjson refuses a key that is not a string
            if type(v) is not str:
                if type(v) is dict:  # a quantity: strings, checked without a call
                    for v2 in v.values():
                        if type(v2) is not str and not _ok(v2):
                            self._event_fields(d, seq, i)
                elif not _ok(v):
                    self._event_fields(d, seq, i)
        try:
            pb = _dumps(payload, option=_OPTS)
        except TypeError as e:
            raise MalformedRecordError(
                f"event cannot be encoded canonically: {e}", seq=seq, index=i
            ) from e
        prev_b = prev.encode()
        ra_b = ra.encode()
        h = _sha256(template % (pb, prev_b, ra_b, seq)).hexdigest()
        if line is not None and (
            type(stored) is not str
            or self._line_template % (stored.encode(), pb, prev_b, ra_b, seq) != line
        ):
            raise MalformedRecordError(_NOT_CANONICAL, seq=seq, index=i)
        if h != stored:
            raise HashMismatchError(
                f"content does not match its hash (stored {str(stored)[:16]}…, "
                f"computed {h[:16]}…): the event was altered",
                seq=seq,
                index=i,
            )
        self.seq = seq
        self.head_hash = h

    def _new_template(self, d: dict[str, Any], seq: int, i: int) -> bytes:
        kind, batch, actor = d["kind"], d["batch_id"], d["actor"]
        if (
            not kind_ok(kind)
            or (batch is not None and not id_ok(batch))
            or (actor is not None and (type(actor) is not str or not actor))
        ):
            self._event_fields(d, seq, i)
        assert self.unit_id is not None  # set by the unit check before
        self._template = event_template(self.unit_id, kind, batch, actor)
        self._line_template = event_line_template(self.unit_id, kind, batch, actor)
        self._shape = event_line_shape(self.unit_id, kind, batch, actor)
        self._kind, self._batch, self._actor = kind, batch, actor
        return self._template

    def _bad_fields(self, d: dict[str, Any], i: int) -> NoReturn:
        missing = sorted(_EVENT_LINE - d.keys())
        extra = sorted(d.keys() - _EVENT_LINE)
        raise MalformedRecordError(
            f"event fields wrong: missing {missing}, unexpected {extra}", index=i
        )

    @staticmethod
    def _event_fields(d: dict[str, Any], seq: int, i: int) -> None:
        """The slow path: explain exactly which field is malformed (or remember valid ids)."""
        ra, kind, batch, actor, payload = (
            d["recorded_at"],
            d["kind"],
            d["batch_id"],
            d["actor"],
            d["payload"],
        )
        if type(ra) is not str or not _TIME.fullmatch(ra):
            raise MalformedRecordError(
                f"recorded_at {ra!r} is not a UTC timestamp", seq=seq, index=i
            )
        if not real_time(ra):
            raise MalformedRecordError(
                f"recorded_at {ra!r} is not a real calendar time (expected month 01-12, a day "
                "the month has, hour 00-23, minute and second 00-59)",
                seq=seq,
                index=i,
            )
        if not kind_ok(kind):
            raise MalformedRecordError(
                f"kind {kind!r} is not dotted lower-case words", seq=seq, index=i
            )
        if batch is not None and not id_ok(batch):
            raise MalformedRecordError(f"batch_id {batch!r} is not a valid id", seq=seq, index=i)
        if actor is not None and (type(actor) is not str or not actor):
            raise MalformedRecordError("actor must be a non-empty string or null", seq=seq, index=i)
        if type(payload) is not dict:
            raise MalformedRecordError("payload is not a JSON object", seq=seq, index=i)
        try:
            check_value(payload, "payload")
        except CanonicalError as e:
            raise MalformedRecordError(str(e), seq=seq, index=i) from e

    def _signed(self, d: dict[str, Any], fields: frozenset[str], what: str, i: int) -> bytes:
        body = {k: v for k, v in d.items() if k != "type"}
        if d.keys() != fields | {"type"}:
            missing = sorted(fields - body.keys())
            extra = sorted(body.keys() - fields)
            raise MalformedRecordError(
                f"{what} fields wrong: missing {missing}, unexpected {extra}", index=i
            )
        try:
            check_signed_shape(body, fields, what)
        except RecordFormatError as e:
            raise MalformedRecordError(str(e), seq=d.get("seq"), index=i) from e
        self._unit(d["unit_id"], i, d["seq"])
        key = self.keyring.for_unit(d["key_id"], d["unit_id"])
        if key is None:
            raise SignatureError(
                f"{what} is signed by key {d['key_id']}, which is not trusted for unit "
                f"{d['unit_id']!r}",
                seq=d["seq"],
                index=i,
            )
        try:
            sig = base64.b64decode(d["signature"], validate=True)
        except binascii.Error as e:
            raise MalformedRecordError(
                f"{what} signature is not base64", seq=d["seq"], index=i
            ) from e
        self.key_ids.add(d["key_id"])
        return sig

    def _checkpoint(self, d: dict[str, Any], i: int) -> None:
        sig = self._signed(d, CHECKPOINT_FIELDS, "checkpoint", i)
        seq = d["seq"]
        if seq != self.seq or d["head_hash"] != self.head_hash:
            raise CheckpointError(
                f"checkpoint claims head seq {seq} hash {d['head_hash'][:16]}…, but the chain head "
                f"here is seq {self.seq} hash {self.head_hash[:16]}…",
                seq=seq,
                index=i,
            )
        if d["prev_seq"] != self.checkpoint_seq or seq == self.checkpoint_seq:
            raise CheckpointError(
                f"checkpoint links to previous checkpoint seq {d['prev_seq']}, expected "
                f"{self.checkpoint_seq} (a checkpoint was deleted, duplicated or reordered)",
                seq=seq,
                index=i,
            )
        key = self.keyring.for_unit(d["key_id"], d["unit_id"])
        assert key is not None  # checked in _signed
        msg = checkpoint_message(d["unit_id"], seq, d["prev_seq"], d["head_hash"], d["key_id"])
        if not key.verify(sig, msg):
            raise SignatureError("checkpoint signature is invalid", seq=seq, index=i)
        self.checkpoint_seq = seq
        self.checkpoints += 1

    def _seal(self, d: dict[str, Any], i: int) -> None:
        sig = self._signed(d, SEAL_FIELDS, "seal", i)
        seq = d["seq"]
        if seq != self.seq or d["head_hash"] != self.head_hash or d["first_seq"] != self.first_seq:
            raise CheckpointError(
                f"seal covers seq {d['first_seq']}..{seq}, but the file holds "
                f"{self.first_seq}..{self.seq} (the file was cut or extended)",
                seq=seq,
                index=i,
            )
        key = self.keyring.for_unit(d["key_id"], d["unit_id"])
        assert key is not None
        msg = seal_message(d["unit_id"], d["first_seq"], seq, d["head_hash"], d["key_id"])
        if not key.verify(sig, msg):
            raise SignatureError("seal signature is invalid", seq=seq, index=i)
        self.sealed = True

    # -- parts ----------------------------------------------------------------------------

    @property
    def head(self) -> ChainHead:
        """Where the chain stands after the records fed so far."""
        return ChainHead(self.seq, self.head_hash, self.checkpoint_seq)

    @staticmethod
    def split_at_checkpoint(
        lines: Sequence[bytes], at: float = 0.5
    ) -> tuple[int, ChainHead] | None:
        """Where to cut ``lines`` so that two verifiers can take one part each (the server's
        parallel ingest): the index just after the checkpoint line nearest ``at`` (a fraction
        of the lines; never the first or the last line), and the chain state that checkpoint
        claims, for the second part's verifier to start from (``start_seq`` etc.).

        Sound because the first part ends with that checkpoint line, which its verifier checks
        against the chain (signature, seq, head hash, the previous checkpoint): a false claim
        fails there, before any line of the second part.  So the first error in line order, the
        second part's shifted by the cut (:meth:`VerificationError.shifted`), or else the
        second part's end, is exactly what one verifier over all the lines gives
        (tests/core/test_verify_split.py).  None when no checkpoint line is found, or the line
        found is odd (not a checkpoint record after all): verify in one part, which names what
        is wrong.
        """
        n = len(lines)
        mid = min(max(int(n * at), 1), n - 2) if n > 2 else 0
        for d in range(n):
            for i in (mid - d, mid + d):
                if 0 < i < n - 1 and lines[i].startswith(_CHECKPOINT_START):
                    return _after_checkpoint(lines, i)
        return None

    # -- end ------------------------------------------------------------------------------

    def finish(self, *, require_seal: bool = False) -> Verified:
        """Check the end of the input and return what was verified."""
        if self.seq < self.first_seq:
            raise EmptyLedgerError("no events to verify", index=self.index)
        check_signed_head(self.head, index=self.index)
        if require_seal and not self.sealed:
            raise UnsignedTailError(
                "the file has no seal record at its end: it was truncated or is not a complete "
                "export",
                index=self.index,
            )
        assert self.unit_id is not None
        return Verified(
            unit_id=self.unit_id,
            first_seq=self.first_seq,
            head_seq=self.seq,
            head_hash=self.head_hash,
            event_count=self.seq - self.first_seq + 1,
            checkpoint_count=self.checkpoints,
            sealed=self.sealed,
            key_ids=frozenset(self.key_ids),
        )


def check_signed_head(head: ChainHead, *, index: int) -> None:
    """Raise :class:`UnsignedTailError` if events after ``head``'s last checkpoint are not
    covered by one (``index``: the record after the input's last, where the checkpoint is
    missing).  The end check of :meth:`ChainVerifier.finish`, for inputs verified in parts."""
    if head.checkpoint_seq != head.seq:
        raise UnsignedTailError(
            f"events {head.checkpoint_seq + 1}..{head.seq} are not covered by a checkpoint "
            "(the final checkpoint is missing)",
            seq=head.checkpoint_seq + 1,
            index=index,
        )


def _after_checkpoint(lines: Sequence[bytes], i: int) -> tuple[int, ChainHead] | None:
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
    return i + 1, ChainHead(cp["seq"], cp["head_hash"], cp["seq"])


def verify(
    records: Iterable[Any],
    keyring: Keyring,
    *,
    unit_id: str | None = None,
    start_seq: int = 0,
    start_hash: str = GENESIS_HASH,
    start_checkpoint_seq: int = 0,
    require_seal: bool = False,
) -> Verified:
    """Verify records (parsed JSON objects) and return what was verified, or raise the
    :class:`~ebr_core.errors.VerificationError` subclass naming the first bad record."""
    v = ChainVerifier(
        keyring,
        unit_id=unit_id,
        start_seq=start_seq,
        start_hash=start_hash,
        start_checkpoint_seq=start_checkpoint_seq,
    )
    v.feed_many(records)
    return v.finish(require_seal=require_seal)
