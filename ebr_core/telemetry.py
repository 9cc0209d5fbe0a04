"""Telemetry summaries: what a batch's instrument readings amount to, kept incrementally.

A 10-day expansion records 0.5 to 1 million ``reading.recorded`` events.  They never enter the
step-state fold (:mod:`ebr_core.batch`); instead each measured quantity of each channel is
summarised here: count, minimum, maximum, first and last value, limit excursions, and a series
of min/max buckets for plots.

The summary is a *monoid*: :func:`summarise` over any cut of a batch's readings, with the parts'
summaries merged in order (:meth:`Telemetry.merge`), gives exactly the summary of the whole (the
law tests check this), so the edge advances it by the new readings only and the server by each
segment.  Nothing is rounded: minimum, maximum and last value are the recorded decimal strings;
only the plot series holds floats.

The series never hides an excursion: each bucket keeps the minimum and maximum of its readings.
Buckets are ``60 s × 2**k`` wide, aligned to the Unix epoch, with ``k`` the smallest that keeps
the span of the readings within :data:`MAX_BUCKETS` buckets; widening merges pairs of buckets
exactly, so the series depends only on the set of readings, not on how they arrived.  A reading's
time is its device time (``device_time``, the instrument's clock, which a compressed simulation
runs fast) when that is an ISO 8601 UTC time, else the time it was recorded.

What this module does not do: judge readings against limits (the edge marks each reading it
judged with ``limit``: ``ok``, ``low`` or ``high``; this module counts the ones not ``ok``), or
read any clock, file or database.

Over 400 lines: the summary, its series buckets and their exact merge share one invariant (every
excursion stays visible), proven together by the property tests.
"""

from __future__ import annotations

import hashlib
from calendar import timegm
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby, repeat
from math import isfinite
from operator import itemgetter
from typing import Any

import orjson

BASE_WIDTH_S = 60
MAX_BUCKETS = 512
READING = "reading.recorded"

_CHANNEL = itemgetter("channel")
_VALUE = itemgetter("value")
_UNIT = itemgetter("unit")
_MINUTE_KEY = itemgetter(slice(0, 16))

# Minute prefix "YYYY-MM-DDTHH:MM" -> the minute's number since the epoch.  Readings arrive in
# time order, so a small cache turns almost every parse into one dict lookup.
_MINUTES: dict[str, int | None] = {}


def minute_of(t: object) -> int | None:
    """The minute since the Unix epoch of an ISO 8601 UTC time string, or None if it is not one."""
    if not isinstance(t, str) or len(t) < 17:
        return None
    key = t[:16]
    m = _MINUTES.get(key)
    if m is None and key not in _MINUTES:
        m = _parse_minute(key)
        if len(_MINUTES) > 100_000:
            _MINUTES.clear()
        _MINUTES[key] = m
    return m


def _parse_minute(key: str) -> int | None:
    if key[4] != "-" or key[7] != "-" or key[10] != "T" or key[13] != ":":
        return None
    digits = key[0:4] + key[5:7] + key[8:10] + key[11:13] + key[14:16]
    if not (digits.isascii() and digits.isdigit()):
        return None
    y, mo, d = int(key[0:4]), int(key[5:7]), int(key[8:10])
    h, mi = int(key[11:13]), int(key[14:16])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60):
        return None
    return timegm((y, mo, d, h, mi, 0, 0, 0, 0)) // 60


def _bands(times: list[Any], xs: list[float]) -> list[tuple[int, int, float, float]] | None:
    """(minute, count, min, max) of each run of readings in the same minute; None if a time
    is not an ISO 8601 UTC time."""
    out = []
    i = 0
    try:
        for key, group in groupby(map(_MINUTE_KEY, times)):
            k = len(list(group))
            m = _MINUTES.get(key)
            if m is None:
                m = minute_of(times[i])
                if m is None:
                    return None
            part = xs[i : i + k]
            out.append((m, k, min(part), max(part)))
            i += k
    except TypeError:  # a time that is not a string (a number, a list)
        return None
    return out


def _is_quantity(v: object) -> bool:
    return (
        isinstance(v, dict) and isinstance(v.get("value"), str) and isinstance(v.get("unit"), str)
    )


@dataclass
class Series:
    """Min/max buckets: ``buckets[minute_index] = [count, min, max]`` at width ``60 s × 2**k``."""

    k: int = 0
    buckets: dict[int, list[float]] = field(default_factory=dict)

    def width_min(self) -> int:
        return 1 << self.k

    def add(self, minute: int, x: float) -> None:
        key = minute >> self.k
        b = self.buckets.get(key)
        if b is None:
            if self.buckets and not self._fits(key):
                self._widen_for(key)
                key = minute >> self.k
                b = self.buckets.get(key)
            if b is None:
                self.buckets[key] = [1.0, x, x]
                return
        b[0] += 1.0
        b[1] = min(b[1], x)
        b[2] = max(b[2], x)

    def add_band(self, minute: int, n: int, lo: float, hi: float) -> None:
        """``n`` readings of one minute, ranging ``lo``..``hi`` (what :meth:`add` does n times)."""
        self.add(minute, lo)
        b = self.buckets[minute >> self.k]
        b[0] += n - 1
        b[2] = max(b[2], hi)

    def _fits(self, key: int) -> bool:
        lo, hi = min(self.buckets), max(self.buckets)
        return max(hi, key) - min(lo, key) < MAX_BUCKETS

    def _widen_for(self, key: int) -> None:
        lo, hi = min(*self.buckets, key), max(*self.buckets, key)
        k = self.k
        while (hi >> (k - self.k)) - (lo >> (k - self.k)) >= MAX_BUCKETS:
            k += 1
        self._rebucket(k)

    def _rebucket(self, k: int) -> None:
        shift = k - self.k
        if shift <= 0:
            return
        out: dict[int, list[float]] = {}
        for key, (n, lo, hi) in sorted(self.buckets.items()):
            nk = key >> shift
            o = out.get(nk)
            if o is None:
                out[nk] = [n, lo, hi]
            else:
                o[0] += n
                o[1] = min(o[1], lo)
                o[2] = max(o[2], hi)
        self.k = k
        self.buckets = out

    def merge(self, other: Series) -> None:
        if not other.buckets:
            return
        k = max(self.k, other.k)
        self._rebucket(k)
        theirs = Series(other.k, {key: list(b) for key, b in other.buckets.items()})
        theirs._rebucket(k)
        for key, (n, lo, hi) in theirs.buckets.items():
            b = self.buckets.get(key)
            if b is None:
                self.buckets[key] = [n, lo, hi]
            else:
                b[0] += n
                b[1] = min(b[1], lo)
                b[2] = max(b[2], hi)
        if self.buckets:
            lo_key, hi_key = min(self.buckets), max(self.buckets)
            while hi_key - lo_key >= MAX_BUCKETS:
                self._rebucket(self.k + 1)
                lo_key, hi_key = min(self.buckets), max(self.buckets)

    def points(self) -> list[dict[str, Any]]:
        """The buckets in time order: start (epoch seconds), width, count, min, max."""
        w = self.width_min()
        return [
            {"t": key * w * BASE_WIDTH_S, "n": int(b[0]), "min": b[1], "max": b[2]}
            for key, b in sorted(self.buckets.items())
        ]

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "buckets": [[key, *b] for key, b in sorted(self.buckets.items())]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Series:
        """The series a :meth:`to_json` wrote; its buckets are decoded when first used (a batch
        view or an e-signature reads the summary and never the plot)."""
        rows = d["buckets"]
        if not isinstance(rows, list):
            raise TypeError(f"a series' buckets are a list, not {type(rows).__name__}")
        return _StoredSeries(int(d["k"]), rows)


class _StoredSeries(Series):
    """A :class:`Series` read from JSON, its rows decoded on first access to :attr:`buckets`
    (decoding a 1,000,000-reading batch's eight channels costs more than the rest of a view).
    ``to_json`` of an undecoded series gives back its rows as they were read."""

    def __init__(self, k: int, rows: list[Any]) -> None:  # no super(): buckets stay undecoded
        self.k = k
        self._rows: list[Any] | None = rows
        self._decoded: dict[int, list[float]] = {}

    @property
    def buckets(self) -> dict[int, list[float]]:
        if self._rows is not None:
            rows, self._rows = self._rows, None
            self._decoded = {int(r[0]): [float(r[1]), float(r[2]), float(r[3])] for r in rows}
        return self._decoded

    @buckets.setter
    def buckets(self, value: dict[int, list[float]]) -> None:
        self._rows, self._decoded = None, value

    def __eq__(self, other: object) -> bool:  # equal to the series it was read from
        if not isinstance(other, Series):
            return NotImplemented
        return (self.k, self.buckets) == (other.k, other.buckets)

    __hash__ = None  # type: ignore[assignment]  # mutable, like Series

    def to_json(self) -> dict[str, Any]:
        if self._rows is not None:
            return {"k": self.k, "buckets": [list(r) for r in self._rows]}
        return super().to_json()


@dataclass
class Channel:
    """One measured quantity of one channel (``temperature``; ``cell_count.viability``)."""

    name: str
    unit: str
    count: int = 0
    min: str | None = None
    max: str | None = None
    first: str | None = None
    first_at: str | None = None
    last: str | None = None
    last_at: str | None = None
    excursions: int = 0
    unparsed: int = 0  # readings whose value is not a finite decimal (counted, not plotted)
    series: Series = field(default_factory=Series)
    _min_f: float = field(default=float("inf"), repr=False, compare=False)
    _max_f: float = field(default=float("-inf"), repr=False, compare=False)

    def add(self, value: str, unit: str, at: str, minute: int | None, excursion: bool) -> None:
        self.count += 1
        if excursion:
            self.excursions += 1
        if self.first is None:
            self.first, self.first_at = value, at
        self.last, self.last_at, self.unit = value, at, unit
        try:
            x = float(value)
        except ValueError:
            self.unparsed += 1
            return
        if not isfinite(x):
            self.unparsed += 1
            return
        # Ties keep the earlier reading, so merging in order equals adding one at a time.
        if x < self._min_f:
            self._min_f, self.min = x, value
        if x > self._max_f:
            self._max_f, self.max = x, value
        if minute is not None:
            self.series.add(minute, x)

    def add_many(
        self,
        xs: list[float],
        values: list[str],
        last_unit: str,
        times: list[str],
        limits: list[Any],
        bands: list[tuple[int, int, float, float]],
    ) -> None:
        """:meth:`add` for finite values with valid times, in bulk (see Telemetry.add_run);
        ``bands``: (minute, count, min, max) of each minute's readings, in order."""
        n = len(xs)
        self.count += n
        self.excursions += n - limits.count("ok") - limits.count(None)
        if self.first is None:
            self.first, self.first_at = values[0], times[0]
        self.last, self.last_at, self.unit = values[-1], times[-1], last_unit
        lo = min(xs)
        if lo < self._min_f:  # the first occurrence, as one at a time would keep it
            self._min_f, self.min = lo, values[xs.index(lo)]
        hi = max(xs)
        if hi > self._max_f:
            self._max_f, self.max = hi, values[xs.index(hi)]
        add_band = self.series.add_band
        for minute, k, b_lo, b_hi in bands:
            add_band(minute, k, b_lo, b_hi)

    def merge(self, later: Channel) -> None:
        """Add the summary of readings that came after this one's."""
        if later.count == 0:
            return
        self.count += later.count
        self.excursions += later.excursions
        self.unparsed += later.unparsed
        if self.first is None:
            self.first, self.first_at = later.first, later.first_at
        self.last, self.last_at, self.unit = later.last, later.last_at, later.unit
        if later.min is not None and later._min_f < self._min_f:
            self._min_f, self.min = later._min_f, later.min
        if later.max is not None and later._max_f > self._max_f:
            self._max_f, self.max = later._max_f, later.max
        self.series.merge(later.series)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "first": self.first,
            "first_at": self.first_at,
            "last": self.last,
            "last_at": self.last_at,
            "excursions": self.excursions,
            "unparsed": self.unparsed,
            "series": self.series.to_json(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Channel:
        c = cls(
            name=str(d["name"]),
            unit=str(d["unit"]),
            count=int(d["count"]),
            min=d["min"],
            max=d["max"],
            first=d["first"],
            first_at=d["first_at"],
            last=d["last"],
            last_at=d["last_at"],
            excursions=int(d["excursions"]),
            unparsed=int(d["unparsed"]),
            series=Series.from_json(d["series"]),
        )
        if c.min is not None:
            c._min_f = float(c.min)
        if c.max is not None:
            c._max_f = float(c.max)
        return c


@dataclass
class Telemetry:
    """The telemetry summary of one batch: a :class:`Channel` per measured quantity."""

    channels: dict[str, Channel] = field(default_factory=dict)
    readings: int = 0  # reading events (one event may carry several quantities)
    last_seq: int = 0

    def add(self, payload: Mapping[str, Any], recorded_at: str, seq: int) -> None:
        """Count one ``reading.recorded`` event (payload as recorded; anything malformed in it is
        counted as a reading and otherwise skipped: the record is what it is)."""
        self.readings += 1
        self.last_seq = seq
        ch = payload.get("channel")
        channel = ch if isinstance(ch, str) else "?"
        dt = payload.get("device_time")
        at = dt if isinstance(dt, str) and minute_of(dt) is not None else recorded_at
        minute = minute_of(at)
        excursion = payload.get("limit") not in ("ok", None)  # absent or null: not judged
        v = payload.get("value")
        if v is not None:
            if _is_quantity(v):
                self._channel(channel, v["unit"]).add(v["value"], v["unit"], at, minute, excursion)
            return
        for key in sorted(payload):
            q = payload[key]
            if _is_quantity(q):
                name = f"{channel}.{key}"
                self._channel(name, q["unit"]).add(q["value"], q["unit"], at, minute, excursion)

    def add_run(
        self, payloads: Sequence[Mapping[str, Any]], recorded_at: Sequence[str], first_seq: int
    ) -> None:
        """:meth:`add` for consecutive readings (seqs from ``first_seq``), the same result in
        bulk: per channel, the values are parsed with one ``map`` and each minute's readings
        fold into the series at once.  Anything unusual in the run takes the one-at-a-time
        path."""
        n = len(payloads)
        if n == 0:
            return
        xs: list[float] = []
        try:
            chans = list(map(_CHANNEL, payloads))
            qs = list(map(_VALUE, payloads))
            vals = list(map(_VALUE, qs))
            units = list(map(_UNIT, qs))
            times: list[Any] = list(map(dict.get, payloads, repeat("device_time", n)))  # type: ignore[arg-type]
            if None in times:  # no device time: the recorded time, as add() takes it
                times = [at if t is None else t for t, at in zip(times, recorded_at, strict=True)]
            names = set(chans)
            if set(map(type, vals)) == {str} and set(map(type, names)) == {str}:
                xs = list(map(float, vals))
        except (KeyError, TypeError, ValueError):
            xs = []
        if len(xs) != n or not all(map(isfinite, xs)):
            self._add_each(payloads, recorded_at, first_seq)
            return
        limits: list[Any] = list(map(dict.get, payloads, repeat("limit", n)))  # type: ignore[arg-type]
        if len(names) == 1:
            groups: list[tuple[str, list[int] | None]] = [(chans[0], None)]
        else:  # a stable sort by channel keeps each channel's readings in seq order
            order = sorted(range(n), key=chans.__getitem__)
            groups = [(ch, list(g)) for ch, g in groupby(order, key=chans.__getitem__)]
        done: list[tuple[Channel, tuple[Any, ...]]] = []
        for ch, idx in groups:
            part: tuple[list[Any], ...]
            if idx is None:
                part = (xs, vals, units, times, limits)
            else:
                part = tuple(
                    list(map(a.__getitem__, idx)) for a in (xs, vals, units, times, limits)
                )
            bands = _bands(part[3], part[0])
            if bands is None:  # a device time that is not one: the one-at-a-time path
                self._add_each(payloads, recorded_at, first_seq)
                return
            done.append((self._channel(ch, part[2][0]), (*part, bands)))
        # every channel checked: now count (so a fallback above never counts twice)
        self.readings += n
        self.last_seq = first_seq + n - 1
        for c, (cx, cv, cu, ct, cl, bands) in done:
            c.add_many(cx, cv, cu[-1], ct, cl, bands)

    def _add_each(
        self, payloads: Sequence[Mapping[str, Any]], recorded_at: Sequence[str], first_seq: int
    ) -> None:
        for i, (p, at) in enumerate(zip(payloads, recorded_at, strict=True)):
            self.add(p, at, first_seq + i)

    def _channel(self, name: str, unit: str) -> Channel:
        c = self.channels.get(name)
        if c is None:
            c = self.channels[name] = Channel(name, unit)
        return c

    def merge(self, later: Telemetry) -> None:
        """Add the summary of the readings recorded after this one's (seq order)."""
        self.readings += later.readings
        self.last_seq = max(self.last_seq, later.last_seq)
        for name, c in later.channels.items():
            mine = self.channels.get(name)
            if mine is None:
                self.channels[name] = Channel.from_json(c.to_json())
            else:
                mine.merge(c)

    def to_json(self) -> dict[str, Any]:
        return {
            "readings": self.readings,
            "last_seq": self.last_seq,
            "channels": {n: c.to_json() for n, c in sorted(self.channels.items())},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Telemetry:
        return cls(
            {str(n): Channel.from_json(c) for n, c in d["channels"].items()},
            int(d["readings"]),
            int(d["last_seq"]),
        )

    def digest(self) -> str:
        """SHA-256 over the summary's JSON (sorted keys; floats in orjson's shortest round-trip
        form, the same on every machine)."""
        return self.digest_of(self.to_json())

    @staticmethod
    def digest_of(summary_json: Mapping[str, Any]) -> str:
        """:meth:`digest` of the summary whose :meth:`to_json` is ``summary_json`` (as written
        or as read back: ``from_json`` then ``to_json`` gives back the same JSON)."""
        body = orjson.dumps(summary_json, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(b"ctgtp/telemetry/v1\x00" + body).hexdigest()


def summarise(events: Iterable[Any], into: Telemetry | None = None) -> Telemetry:
    """Summarise the ``reading.recorded`` events among ``events`` (records with ``kind``,
    ``payload``, ``recorded_at`` and ``seq`` attributes, in seq order); others are skipped."""
    t = into if into is not None else Telemetry()
    for ev in events:
        if ev.kind == READING:
            t.add(ev.payload, ev.recorded_at, ev.seq)
    return t
