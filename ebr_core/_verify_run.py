"""Runs of like event lines, checked in bulk against their fixed bytes: the verifier's fast path.

Private to :mod:`ebr_core.verify` (:meth:`~ebr_core.verify.ChainVerifier.feed_run` calls
:func:`check_run` and keeps the chain state; this module keeps none).  An event line of the
exchange format is, in canonical key order (:class:`~ebr_core.record.LineShape`)::

    head HASH mid PAYLOAD ,"prev_hash":"PREV","recorded_at":"TIME","seq":SEQ,"type":...}
    |    |    |   |       |<---------------- PREV_BACK ------------>|<--------- tail -------->
    0    hp   |   payload_at                                 TIME_BACK

Within a run (one kind, batch and actor, seqs of one width) everything but HASH, PAYLOAD,
PREV, TIME and SEQ is the same bytes on every line, so each field is found by a fixed offset:
from the line's start up to the payload, and back from the end of the line after it (the tail
``","seq":SEQ,...`` has one length in a run).  The offsets below are derived from the field
names and the value formats, and :func:`_check_layout` holds them to a line written by
:func:`~ebr_core.canonical.canonical` when this module is imported: a change of the layout
fails loudly at import, never as a quietly wrong slice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, NamedTuple

import orjson

from ebr_core.canonical import MAX_DEPTH, _ok, canonical
from ebr_core.record import EVENT_TAG, LineShape, event_line_shape, format_time, real_time

# -- the layout -------------------------------------------------------------------------------

HASH_HEX = 2 * hashlib.sha256().digest_size  # HASH and PREV: a SHA-256 in lower-case hex
TIME_LEN = len("YYYY-MM-DDThh:mm:ss.ffffffZ")  # TIME: record.format_time's one form
HASH_CLOSE = b'",'  # after HASH: the event's hash input goes on from the "kind" key after it
PREV_OPEN = b',"prev_hash":"'  # between PAYLOAD and PREV
PREV_CLOSE = b'","recorded_at":"'  # between PREV and TIME

BODY_FROM_HASH = HASH_HEX + len(HASH_CLOSE)
"""From where HASH starts to where the rest of the hash input (``"kind":...``) starts."""
TIME_BACK = TIME_LEN
"""TIME ends where the tail starts and begins this many bytes before it."""
PREV_BACK = len(PREV_OPEN) + HASH_HEX + len(PREV_CLOSE) + TIME_LEN
"""From where PAYLOAD ends (``,"prev_hash":"`` starts) to where the tail starts."""

# TIME with its digits mapped to 0 is this, or it does not match the timestamp pattern.
_DIGITS_TO_0 = bytes.maketrans(b"0123456789", b"0" * 10)
_TIME_ZEROS = b"0000-00-00T00:00:00.000000Z"
# The bytes of one TIME that are the tens of the minutes and of the seconds, and the length of
# the "YYYY-MM-DDThh" before them.
_MINUTE_TENS = _TIME_ZEROS.index(b":") + 1
_SECOND_TENS = _TIME_ZEROS.rindex(b":") + 1
_HOUR_END = _TIME_ZEROS.index(b":")
# A number in canonical JSON starts with "-" or a digit right after ":", "[" or ",": with those
# three mapped to ":" and a number's first character to "0", text without ':0' holds no number.
_NUMBER_START = bytes.maketrans(b",[-0123456789", b"::" + b"0" * 11)

RUN_MAX = 4096  # lines checked in one run at most
# A payload nested deeper than MAX_DEPTH needs at least two bytes per level: shorter payloads of
# a run need no depth check.
_DEEP_BYTES = 2 * MAX_DEPTH

# The PREV fields of a run, one after another, are joined as text (one encode for the run).
_PREV_OPEN, _PREV_CLOSE = PREV_OPEN.decode(), PREV_CLOSE.decode()
_PREV_SEP = _PREV_CLOSE + _PREV_OPEN
_sha256 = hashlib.sha256
_dumps = orjson.dumps
_loads = orjson.loads
_OPTS = orjson.OPT_SORT_KEYS


def _check_layout() -> None:
    """Find every field of a canonical event line at the offset the constants give."""
    unit, kind, batch, actor, seq = "U-1", "a.b", "B-1", None, 7
    prev, stored = _sha256(b"prev").hexdigest(), _sha256(b"stored").hexdigest()
    ra = format_time(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    payload = {"k": "v"}
    body = {"unit_id": unit, "seq": seq, "prev_hash": prev, "recorded_at": ra}
    body |= {"batch_id": batch, "kind": kind, "actor": actor, "payload": payload}
    line = canonical({**body, "hash": stored, "type": "event"})
    shape = event_line_shape(unit, kind, batch, actor)
    hp, t = len(shape.head), len(shape.seq_tail % seq)
    found = {
        "TIME_LEN": len(ra) == TIME_LEN and ra.encode().translate(_DIGITS_TO_0) == _TIME_ZEROS,
        "HASH_HEX": line[hp : hp + HASH_HEX] == stored.encode(),
        "BODY_FROM_HASH": shape.body_head
        + line[hp + BODY_FROM_HASH : -shape.suffix_len]
        + shape.body_tail
        == EVENT_TAG + canonical(body),
        "TIME_BACK": line[-t - TIME_BACK : -t] == ra.encode(),
        "PREV_BACK": line[shape.payload_at : -t - PREV_BACK] == canonical(payload)
        and line[-t - PREV_BACK : -t - TIME_BACK] == PREV_OPEN + prev.encode() + PREV_CLOSE,
    }
    wrong = [name for name, ok in found.items() if not ok]
    if wrong:
        raise AssertionError(
            f"the event line layout no longer matches ebr_core._verify_run's offsets {wrong}: "
            f"line {line!r}"
        )


_check_layout()


# -- the run ----------------------------------------------------------------------------------


class Run(NamedTuple):
    """What a run that passed holds, one entry per line (``recorded_at`` may be left empty)."""

    hashes: list[str]
    payloads: list[dict[str, Any]]
    recorded_at: list[str]


def _cut(start: int, stop: int | None) -> Callable[[bytes], bytes]:
    """``line[start:stop]`` as a function, for map() over a run (no bytecode per line)."""
    return itemgetter(slice(start, stop))


def _maybe_number(text: bytes) -> bool:
    return b":0" in text.translate(_NUMBER_START)


def real_times(times: bytes, m: int) -> bool:
    """:func:`~ebr_core.record.real_time` for ``m`` timestamps of :data:`TIME_LEN` bytes each,
    joined, that match the pattern: without a Python step per timestamp.  Minutes and seconds
    are real when their tens digits are 0-5 (one strided slice each); the ``YYYY-MM-DDThh``
    before them is checked once when every timestamp shares the first one's (a run rarely
    crosses an hour), else once per distinct value."""
    n = TIME_LEN
    if times[_MINUTE_TENS::n].translate(None, b"012345") or times[_SECOND_TENS::n].translate(
        None, b"012345"
    ):
        return False
    head = times[:_HOUR_END]
    if all(times[k::n] == head[k : k + 1] * m for k in range(_HOUR_END)):
        return real_time(head.decode() + ":00:00")
    heads = {times[i : i + _HOUR_END] for i in range(0, n * m, n)}
    return all(real_time(h.decode() + ":00:00") for h in heads)


def check_run(
    shape: LineShape, seq: int, head_hash: str, lines: Sequence[bytes], i: int, decode: bool
) -> Run | None:
    """The run of event lines from ``lines[i]`` that have ``shape`` and follow the chain head
    ``(seq, head_hash)``, if it has two lines or more and every one of them is, byte for byte,
    the canonical line of a well-formed event that links to the one before and matches its
    hash; else None (the caller then feeds the lines one by one, which names the error).

    Only the payloads are parsed (each alone) and re-encoded (all at once); the hash input is
    each line's own bytes without ``hash`` and ``type``; the links, seqs, timestamps and stored
    hashes are compared run by run.
    """
    s0 = seq + 1
    head, mid, hp = shape.head, shape.mid + b"{", len(shape.head)
    # A run stops before the seq that needs one more digit (the tail's length is fixed within
    # a run) and at RUN_MAX lines.
    j, end = i, min(len(lines), i + RUN_MAX, i + 10 ** len(str(s0)) - s0)
    # Windows of lines that all match, compared at once (each window twice the last), then
    # line by line within the first window that does not.
    w, heads, mids = 2, _cut(0, hp), _cut(hp + HASH_HEX, hp + HASH_HEX + len(mid))
    while j < end:
        window = lines[j : min(end, j + w)]
        n = len(window)
        if b"".join(map(heads, window)) == head * n and b"".join(map(mids, window)) == mid * n:
            j += n
            w *= 2
            continue
        for line in window:
            if not line.startswith(head) or not line.startswith(mid, hp + HASH_HEX):
                break
            j += 1
        break
    m = j - i
    if m < 2:
        return None
    run = lines[i:j]
    t = len(shape.seq_tail % s0)  # ","seq":SEQ,"type":"event","unit_id":U}
    if b"".join(map(_cut(-t, None), run)) != (shape.seq_tail * m) % tuple(range(s0, s0 + m)):
        return None
    times = b"".join(map(_cut(-t - TIME_BACK, -t), run))
    if times.translate(_DIGITS_TO_0) != _TIME_ZEROS * m:  # the timestamp pattern
        return None
    if not real_times(times, m):  # ... naming real calendar times
        return None
    payload_bytes = list(map(_cut(shape.payload_at, -t - PREV_BACK), run))
    try:
        payloads = list(map(_loads, payload_bytes))
    except orjson.JSONDecodeError:
        return None
    # Each slice parsed alone as one value (an object: the run's lines have "{" after
    # "payload":), so the joined slices are a JSON array whose elements are exactly the
    # slices (the grammar is unambiguous): one encoding checks them all canonical.
    joined = b"[" + b",".join(payload_bytes) + b"]"
    try:
        if _dumps(payloads, option=_OPTS) != joined:
            return None
    except TypeError:  # nested beyond the encoder's limit: the line-by-line path names it
        return None
    # As the line-by-line path: no floats, 64-bit integers, nesting within MAX_DEPTH.
    if _maybe_number(joined) or max(map(len, payload_bytes)) >= _DEEP_BYTES:
        for p in payloads:
            for v in p.values():
                if type(v) is not str and not _ok(v):
                    return None
    bh, bt, a, e = shape.body_head, shape.body_tail, hp + BODY_FROM_HASH, -shape.suffix_len
    hashes = [_sha256(bh + x[a:e] + bt).hexdigest() for x in run]
    if b"".join(map(_cut(hp, hp + HASH_HEX), run)) != "".join(hashes).encode():
        return None
    # Each PREV is the hash before it: the head's, then the run's own but the last.
    if (
        b"".join(map(_cut(-t - PREV_BACK, -t - TIME_BACK), run))
        != (_PREV_OPEN + _PREV_SEP.join([head_hash, *hashes[:-1]]) + _PREV_CLOSE).encode()
    ):
        return None
    recorded_at = [x[-t - TIME_BACK : -t].decode() for x in run] if decode else []
    return Run(hashes, payloads, recorded_at)
