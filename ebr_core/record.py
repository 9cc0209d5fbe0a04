"""Events and checkpoints: the two kinds of record a unit's ledger holds.

An **event** is one thing that happened on a unit; its ``hash`` covers every other field, and
``prev_hash`` links it to the unit's previous event, so the events of a unit form one chain.
A **checkpoint** is the unit key's Ed25519 signature over
``(unit_id, seq, prev_seq, head_hash, key_id)``; because of the links, one signature covers the
whole prefix of the chain up to ``seq``.  ``prev_seq`` (the seq of the unit's previous checkpoint,
0 for the first) chains the checkpoints too, so a deleted checkpoint is detected.
A **seal** ends an exported ledger file: a signature over ``(unit_id, first_seq, seq, head_hash)``
under its own domain tag, so a file cut short at a checkpoint boundary is still detected.

Domain tags keep an event hash, a checkpoint message and any other hash of this project from ever
being confused with one another (the reason RFC 6962 uses 0x00 / 0x01 for leaves and nodes).

This module owns the byte definitions only, and :func:`decode_record`, the one way back from a
stored line to its record; building is in :mod:`ebr_core.chain`, checking in
:mod:`ebr_core.verify`.  It is about 500 lines because the record formats, their time form and
the line shapes that the builder and the verifier fill all change together when the format does.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar, overload

import orjson

from ebr_core.canonical import canonical, check_value
from ebr_core.errors import CanonicalError, RecordFormatError

EVENT_TAG = b"ctgtp/event/v1\x00"
CHECKPOINT_TAG = b"ctgtp/checkpoint/v1\x00"
SEAL_TAG = b"ctgtp/seal/v1\x00"
GENESIS_HASH = "0" * 64

EVENT_FIELDS = frozenset(
    {"unit_id", "seq", "prev_hash", "recorded_at", "batch_id", "kind", "actor", "payload", "hash"}
)
CHECKPOINT_FIELDS = frozenset({"unit_id", "seq", "prev_seq", "head_hash", "key_id", "signature"})
SEAL_FIELDS = frozenset({"unit_id", "first_seq", "seq", "head_hash", "key_id", "signature"})

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
# [0-9], not \d: in a str pattern \d also matches other scripts' digits ("٢٠٢٦-…").
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def format_time(t: datetime) -> str:
    """UTC timestamp with microseconds, the only time form in a record."""
    # Events arrive many per second: the "YYYY-MM-DDThh:mm:ss." prefix is formatted once per
    # second and kept with the second's bounds in one tuple (one atomic read, so threads that
    # format different seconds never mix a prefix with another second's bounds).
    w = _window
    if t.tzinfo is UTC and w[0] <= t < w[1]:
        us = t.microsecond
        return w[2] + _D3[us // 1000] + _D3Z[us % 1000]
    return _format_slow(t)


def _format_slow(t: datetime) -> str:
    global _window
    if t.tzinfo is not UTC:
        if t.tzinfo is None:
            raise RecordFormatError(
                "recorded_at must be timezone-aware (UTC); got a naive datetime"
            )
        t = t.astimezone(UTC)
    if t.year < 1000:
        raise RecordFormatError(f"time {t!r} is before the year 1000")
    lo = t.replace(microsecond=0)
    prefix = lo.replace(tzinfo=None).isoformat() + "."
    with contextlib.suppress(OverflowError):  # the last second of 9999 gets no window
        _window = (lo, lo + timedelta(seconds=1), prefix)
    us = t.microsecond
    return prefix + _D3[us // 1000] + _D3Z[us % 1000]


_D3 = tuple(f"{i:03d}" for i in range(1000))
_D3Z = tuple(f"{i:03d}Z" for i in range(1000))
_EMPTY = datetime(1, 1, 1, tzinfo=UTC)
_window: tuple[datetime, datetime, str] = (_EMPTY, _EMPTY, "")


def parse_time(s: str) -> datetime:
    if not _TIME.fullmatch(s):
        raise RecordFormatError(f"time {s!r} is not of the form YYYY-MM-DDThh:mm:ss.ffffffZ")
    try:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as e:
        raise RecordFormatError(f"time {s!r} is not a real date and time") from e


_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def real_time(ra: str) -> bool:
    """True if ``ra``, which matches the timestamp pattern (``YYYY-MM-DDThh:mm:ss.ffffffZ``,
    ASCII digits), names a real UTC calendar time: month 01-12, a day the month has (29 February
    in leap years only), hour 00-23, minute and second 00-59, year 0001 or later.  The pattern
    alone let ``2026-13-45T99:99:99.000000Z`` through; checked once per distinct second."""
    mo, day = ra[5:7], ra[8:10]
    if not (
        "01" <= mo <= "12"
        and "01" <= day <= "31"
        and ra[11:13] <= "23"
        and ra[14:16] <= "59"
        and ra[17:19] <= "59"
        and ra[:4] != "0000"
    ):
        return False
    m, d = int(mo), int(day)
    if d > _MONTH_DAYS[m]:
        return False
    if m == 2 and d == 29:
        y = int(ra[:4])
        return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    return True


def event_hash(body: dict[str, Any]) -> str:
    """Hash of an event's fields without ``hash`` (``body`` must not contain the key)."""
    return hashlib.sha256(EVENT_TAG + canonical(body)).hexdigest()


def event_template(unit_id: str, kind: str, batch_id: str | None, actor: str | None) -> bytes:
    """``EVENT_TAG`` + the canonical body of an event with these fixed fields, as a bytes
    ``%``-template taking ``(payload bytes, prev_hash, recorded_at, seq)``.

    The builder and the verifier fill it instead of encoding the whole body, so only the payload
    goes through the encoder.  The caller has validated the fields; ``prev_hash`` and
    ``recorded_at`` must be hex and a checked timestamp (nothing in them needs escaping).
    tests/core/test_chain.py holds the filled bytes to :func:`canonical`'s.
    """
    before, after = event_template_halves(unit_id, kind, batch_id, actor)
    return before + b'%b","recorded_at":"%b' + after


def event_template_halves(
    unit_id: str, kind: str, batch_id: str | None, actor: str | None
) -> tuple[bytes, bytes]:
    """:func:`event_template` in two: ``before`` takes the payload bytes and ends where the
    ``prev_hash`` value starts; ``after`` takes the seq and starts where the ``recorded_at``
    value ends.  Between them: ``PREV","recorded_at":"TIME``.

    The group builder (:meth:`ebr_core.chain.ChainBuilder.next_events`) fills ``before`` for
    every event of a group, and ``after`` with the group's one time, at once; only
    ``before + prev_hash + rest`` is left to the chain's sequential loop.
    """
    a, b, k, u = _template_parts(unit_id, kind, batch_id, actor)
    # The keys in sorted order, as canonical() writes them.
    before = (
        EVENT_TAG
        + b'{"actor":'
        + a
        + b',"batch_id":'
        + b
        + b',"kind":'
        + k
        + b',"payload":%b,"prev_hash":"'
    )
    return before, b'","seq":%d,"unit_id":' + u + b"}"


def event_line_template(unit_id: str, kind: str, batch_id: str | None, actor: str | None) -> bytes:
    """The canonical exchange-format line of such an event (:mod:`ebr_core.ledgerfile`), as a
    template taking ``(hash, payload bytes, prev_hash, recorded_at, seq)``: the fixed bytes of
    its :class:`LineShape` with the variable fields between them."""
    shape = event_line_shape(unit_id, kind, batch_id, actor)
    return (
        shape.head.replace(b"%", b"%%")
        + b"%b"
        + shape.mid.replace(b"%", b"%%")
        + b'%b,"prev_hash":"%b","recorded_at":"%b'
        + shape.seq_tail
    )


class LineShape(NamedTuple):
    """The fixed bytes of an event line for one ``(unit_id, kind, batch_id, actor)``.

    A line of the exchange format is, in canonical key order::

        head HASH mid PAYLOAD ,"prev_hash":"PREV","recorded_at":"TIME","seq":SEQ suffix

    and the event's hash input is ``body_head`` + the line from ``"kind"`` to ``SEQ`` +
    ``body_tail`` (the line without its ``hash`` and ``type`` fields).  The verifier checks a line
    against these bytes instead of parsing the whole line (:mod:`ebr_core.verify`).
    """

    head: bytes  # {"actor":A,"batch_id":B,"hash":"
    mid: bytes  # ","kind":K,"payload":
    payload_at: int  # len(head) + 64 + len(mid): where the payload starts
    seq_tail: bytes  # ","seq":%d,"type":"event","unit_id":U}   (a %-template for the seq)
    suffix_len: int  # len(,"type":"event","unit_id":U})
    body_head: bytes  # EVENT_TAG{"actor":A,"batch_id":B,
    body_tail: bytes  # ,"unit_id":U}


def event_line_shape(unit_id: str, kind: str, batch_id: str | None, actor: str | None) -> LineShape:
    """The :class:`LineShape` of events with these fields (validated by the caller)."""
    d = orjson.dumps
    a, b, k, u = d(actor), d(batch_id), d(kind), d(unit_id)
    suffix = b',"type":"event","unit_id":' + u + b"}"
    head = b'{"actor":' + a + b',"batch_id":' + b + b',"hash":"'
    mid = b'","kind":' + k + b',"payload":'
    return LineShape(
        head=head,
        mid=mid,
        payload_at=len(head) + 64 + len(mid),
        seq_tail=b'","seq":%d' + suffix.replace(b"%", b"%%"),
        suffix_len=len(suffix),
        body_head=EVENT_TAG + b'{"actor":' + a + b',"batch_id":' + b + b",",
        body_tail=b',"unit_id":' + u + b"}",
    )


def _template_parts(
    unit_id: str, kind: str, batch_id: str | None, actor: str | None
) -> tuple[bytes, bytes, bytes, bytes]:
    def enc(v: str | None) -> bytes:  # a JSON value, with % escaped for the template
        return orjson.dumps(v).replace(b"%", b"%%")

    return enc(actor), enc(batch_id), enc(kind), enc(unit_id)


def checkpoint_message(unit_id: str, seq: int, prev_seq: int, head_hash: str, key_id: str) -> bytes:
    """The exact bytes a unit key signs for a checkpoint."""
    return CHECKPOINT_TAG + canonical(
        {
            "unit_id": unit_id,
            "seq": seq,
            "prev_seq": prev_seq,
            "head_hash": head_hash,
            "key_id": key_id,
        }
    )


def seal_message(unit_id: str, first_seq: int, seq: int, head_hash: str, key_id: str) -> bytes:
    """The exact bytes a unit key signs to seal an exported ledger file."""
    return SEAL_TAG + canonical(
        {
            "unit_id": unit_id,
            "first_seq": first_seq,
            "seq": seq,
            "head_hash": head_hash,
            "key_id": key_id,
        }
    )


class Event(NamedTuple):
    """One event (immutable).  A NamedTuple because the hot path makes a hundred thousand a
    second and a frozen dataclass costs three times as much to build."""

    unit_id: str
    seq: int
    prev_hash: str
    recorded_at: str
    batch_id: str | None
    kind: str
    actor: str | None
    payload: dict[str, Any]
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()

    @property
    def time(self) -> datetime:
        return parse_time(self.recorded_at)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    unit_id: str
    seq: int
    prev_seq: int
    head_hash: str
    key_id: str
    signature: str  # base64 (standard alphabet) of the 64-byte Ed25519 signature

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "seq": self.seq,
            "prev_seq": self.prev_seq,
            "head_hash": self.head_hash,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    def message(self) -> bytes:
        return checkpoint_message(
            self.unit_id, self.seq, self.prev_seq, self.head_hash, self.key_id
        )


@dataclass(frozen=True, slots=True)
class Seal:
    unit_id: str
    first_seq: int
    seq: int
    head_hash: str
    key_id: str
    signature: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "first_seq": self.first_seq,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    def message(self) -> bytes:
        return seal_message(self.unit_id, self.first_seq, self.seq, self.head_hash, self.key_id)


Record = Event | Checkpoint | Seal
_R = TypeVar("_R", Event, Checkpoint, Seal)
Source = bytes | bytearray | memoryview | str | dict[str, Any]
"""What :func:`decode_record` takes: a line of the exchange format, or the dict it parses to."""


class _Decoding(NamedTuple):
    cls: type[Record]
    names: frozenset[str]
    # The field values in the class's order, picked from the dict as they are: no copy of it,
    # no "type" to delete first.
    values: Callable[[dict[str, Any]], tuple[Any, ...]]


def _decoding(cls: type[Record], names: tuple[str, ...]) -> _Decoding:
    return _Decoding(cls, frozenset(names), itemgetter(*names))


_DECODING = {
    "event": _decoding(Event, Event._fields),
    "checkpoint": _decoding(Checkpoint, tuple(f.name for f in fields(Checkpoint))),
    "seal": _decoding(Seal, tuple(f.name for f in fields(Seal))),
}
_TYPE_NAMES = {Event: "event", Checkpoint: "checkpoint", Seal: "seal"}


@overload
def decode_record(src: Source) -> Record: ...
@overload
def decode_record(src: Source, expect: type[_R]) -> _R: ...
def decode_record(src: Source, expect: type[Any] | None = None) -> Record:
    """The :class:`Event`, :class:`Checkpoint` or :class:`Seal` a record of the exchange format
    (:mod:`ebr_core.ledgerfile`) holds, given as its line or as the dict the line parses to.

    The one decoder of records that were verified before (a stored line, a file checked by
    ``ctgtp verify``).  It checks the form, not the content: the line is a JSON object, its
    ``type`` is one of the three (``expect``'s, when given) and its fields are exactly that
    type's; anything else is a :class:`RecordFormatError` naming what was wrong and what was
    expected.  Hashes, links, signatures and field values are the verifier's
    (:mod:`ebr_core.verify`).  The dict is not changed.
    """
    if isinstance(src, dict):
        d = src
    else:
        try:
            d = orjson.loads(src)
        except orjson.JSONDecodeError as e:
            raise RecordFormatError(f"a record is not valid JSON ({e})") from e
        if type(d) is not dict:
            raise RecordFormatError(f"a record must be a JSON object, got {type(d).__name__}")
    t = d.get("type")
    decoding = _DECODING.get(t) if type(t) is str else None
    if decoding is None:
        raise RecordFormatError(f"record type {t!r} is not one of 'event', 'checkpoint', 'seal'")
    cls, names, values = decoding
    if expect is not None and cls is not expect:
        raise RecordFormatError(f"record type is {t!r}, expected {_TYPE_NAMES[expect]!r}")
    if len(d) == len(names) + 1:  # the fields and "type": all present if the getter finds them
        with contextlib.suppress(KeyError):
            return cls(*values(d))
    keys = d.keys() - {"type"}
    raise RecordFormatError(
        f"{t} fields wrong: missing {sorted(names - keys)}, unexpected {sorted(keys - names)}"
    )


def new_event_body(
    *,
    unit_id: str,
    seq: int,
    prev_hash: str,
    recorded_at: datetime,
    batch_id: str | None,
    kind: str,
    actor: str | None,
    payload: dict[str, Any],
) -> dict[str, Any]:
    """Validate the inputs of a new event and return its body (everything but ``hash``)."""
    if not id_ok(unit_id):
        raise RecordFormatError(
            f"unit_id {unit_id!r} is not 1-64 letters, digits or . _ : - (starting alphanumeric)"
        )
    if batch_id is not None and not id_ok(batch_id):
        raise RecordFormatError(f"batch_id {batch_id!r} is not 1-64 letters, digits or . _ : -")
    if not kind_ok(kind):
        raise RecordFormatError(
            f"kind {kind!r} is not dotted lower-case words like 'scan.accepted'"
        )
    if actor is not None and (type(actor) is not str or not actor):
        raise RecordFormatError("actor must be a non-empty string or null")
    if type(payload) is not dict:
        raise RecordFormatError(f"payload must be a JSON object, got {type(payload).__name__}")
    try:
        check_value(payload, "payload")
    except CanonicalError as e:
        raise RecordFormatError(str(e)) from e
    _remember(unit_id, batch_id, kind)
    return {
        "unit_id": unit_id,
        "seq": seq,
        "prev_hash": prev_hash,
        "recorded_at": format_time(recorded_at),
        "batch_id": batch_id,
        "kind": kind,
        "actor": actor,
        "payload": payload,
    }


# Ids and kinds repeat from one event to the next: remember the valid ones (bounded) so the hot
# path does not run the same regex a hundred thousand times.
_valid_ids: set[str] = set()
_valid_kinds: set[str] = set()
_CACHE_MAX = 10_000


def _remember(unit_id: str, batch_id: str | None, kind: str) -> None:
    if len(_valid_ids) > _CACHE_MAX:
        _valid_ids.clear()
    if len(_valid_kinds) > _CACHE_MAX:
        _valid_kinds.clear()
    _valid_ids.add(unit_id)
    if batch_id is not None:
        _valid_ids.add(batch_id)
    _valid_kinds.add(kind)


def id_ok(s: Any) -> bool:
    """True if ``s`` is a valid unit or batch id (cached)."""
    if type(s) is not str:
        return False
    if s in _valid_ids:
        return True
    if _ID.fullmatch(s):
        if len(_valid_ids) > _CACHE_MAX:
            _valid_ids.clear()
        _valid_ids.add(s)
        return True
    return False


def kind_ok(s: Any) -> bool:
    if type(s) is not str:
        return False
    if s in _valid_kinds:
        return True
    if _KIND.fullmatch(s):
        if len(_valid_kinds) > _CACHE_MAX:
            _valid_kinds.clear()
        _valid_kinds.add(s)
        return True
    return False


_B64SIG = re.compile(r"[A-Za-z0-9+/]{86}==")
_KEYID = re.compile(r"[0-9a-f]{16}")


def check_signed_shape(d: Any, fields: frozenset[str], what: str) -> None:
    """Shape of a checkpoint or a seal (the signed records)."""
    if type(d) is not dict:
        raise RecordFormatError(f"a {what} must be a JSON object, got {type(d).__name__}")
    keys = d.keys()
    if keys != fields:
        missing = sorted(fields - keys)
        extra = sorted(keys - fields)
        raise RecordFormatError(f"{what} fields wrong: missing {missing}, unexpected {extra}")
    if type(d["unit_id"]) is not str or not _ID.fullmatch(d["unit_id"]):
        raise RecordFormatError(f"unit_id {d['unit_id']!r} is not a valid unit id")
    for k in ("seq", "prev_seq", "first_seq"):
        if k in d and (type(d[k]) is not int or d[k] < (0 if k == "prev_seq" else 1)):
            raise RecordFormatError(f"{k} {d[k]!r} is not a valid sequence number")
    if type(d["head_hash"]) is not str or not _HEX64.fullmatch(d["head_hash"]):
        raise RecordFormatError("head_hash is not 64 lower-case hex digits")
    if type(d["key_id"]) is not str or not _KEYID.fullmatch(d["key_id"]):
        raise RecordFormatError("key_id is not 16 lower-case hex digits")
    if type(d["signature"]) is not str or not _B64SIG.fullmatch(d["signature"]):
        raise RecordFormatError("signature is not a base64 Ed25519 signature (88 characters)")
