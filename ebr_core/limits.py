"""Limits as the record carries them: what a judged value was judged against, and the telemetry
limits of a batch, written by the edge into the events themselves so that a reader (the QA
console, the batch report, the FHIR export) needs no MBR to show them.

Two payload keys (both optional: events written before they existed have neither, and still
verify and display, as "no limits recorded"):

* ``limits`` on a judged value (``value.recorded``, the calculated dose, ``correction.recorded``):
  ``{"unit": UCUM, "hard": {"min": D, "max": D}, "soft": {...}}``, ``hard`` and ``soft`` each
  optional, ``min`` and ``max`` each optional but not both absent, ``D`` a decimal string (no
  floats in the record), the unit that of the value.  The ``limit`` key beside it keeps the
  station's judgement (``ok``, ``soft``, ``hard``).
* ``telemetry_limits`` on ``batch.started``: channel -> ``{"unit": UCUM, "min": D, "max": D}``
  (the MBR's ``telemetry:`` section), possibly empty: the MBR declares none.  Their source is the
  MBR the same payload names (``mbr_id``, ``mbr_version``).

:func:`value_limits` and :func:`telemetry_limits` build them from the MBR;
:func:`parse_value_limits` and :func:`parse_telemetry_limits` read them back, refusing a wrong
shape with a :class:`LimitsError` that names the key path, what was found and what was
expected; :func:`check_payload` applies them to an event's payload by kind (the edge runs it
before it records).  A reader shows limits it cannot read as such, with the reason
(:func:`describe_judged`).  What this module does not do: judge a value (the engine does,
:mod:`edge.engine`), or read a file or a clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ebr_core.errors import RecordFormatError
from ebr_core.mbr import Limit, Mbr, ValueSpec
from ebr_core.strict import show
from ebr_core.units_display import display_unit

VALUE_KEY = "limits"
TELEMETRY_KEY = "telemetry_limits"
# The kinds whose payload may carry each key.
JUDGED_KINDS = frozenset({"value.recorded", "correction.recorded"})
STARTED = "batch.started"

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_CHANNEL = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MAX_UNIT = 64


class LimitsError(RecordFormatError):
    """Limits recorded in an event's payload do not have the shape the record format requires."""


@dataclass(frozen=True)
class ValueLimits:
    """The limits a value was judged against, as recorded."""

    unit: str
    hard: Limit | None
    soft: Limit | None

    def describe(self) -> str:
        """``soft 6.8–7.6 pH, hard 6.5–7.8 pH`` (the tighter first; display units)."""
        parts = [
            f"{kind} {describe_range(lim, self.unit)}"
            for kind, lim in (("soft", self.soft), ("hard", self.hard))
            if lim is not None
        ]
        return ", ".join(parts)


@dataclass(frozen=True)
class ChannelLimits:
    """One telemetry channel's limits as recorded at the batch's start, with their source."""

    channel: str
    unit: str
    limit: Limit
    source: str  # "MBR CAR-T-CARTRIDGE v4"

    def describe(self) -> str:
        return f"{describe_range(self.limit, self.unit)} ({self.source})"


def describe_range(lim: Limit, unit: str) -> str:
    """``6.8–7.6 pH``, ``≥ 0.5 × 10⁶ cells/mL``: a limit with the unit's display name."""
    shown = display_unit(unit)
    return f"{lim.describe()} {shown}".strip()


# -- written by the edge ------------------------------------------------------------------------


def _bounds(lim: Limit) -> dict[str, str]:
    out = {}
    if lim.min is not None:
        out["min"] = str(lim.min)
    if lim.max is not None:
        out["max"] = str(lim.max)
    return out


def value_limits(spec: ValueSpec) -> dict[str, Any] | None:
    """The ``limits`` of a value recorded against ``spec`` (None: the MBR sets it none)."""
    if spec.hard is None and spec.soft is None:
        return None
    out: dict[str, Any] = {"unit": spec.unit}
    if spec.hard is not None:
        out["hard"] = _bounds(spec.hard)
    if spec.soft is not None:
        out["soft"] = _bounds(spec.soft)
    return out


def range_limits(unit: str, hard: Limit) -> dict[str, Any]:
    """The ``limits`` of a calculated value with one hard range (the dose per kg)."""
    return {"unit": unit, "hard": _bounds(hard)}


def telemetry_limits(mbr: Mbr) -> dict[str, Any]:
    """The ``telemetry_limits`` of a batch started under ``mbr`` (empty: it declares none)."""
    return {ch: {"unit": t.unit, **_bounds(t.limit)} for ch, t in sorted(mbr.telemetry.items())}


# -- read back ----------------------------------------------------------------------------------


def _decimal(v: Any, where: str) -> Decimal:
    if type(v) is not str or not _DECIMAL.fullmatch(v):
        raise LimitsError(f"{where} is {show(v)}; expected a decimal string such as '6.5'")
    return Decimal(v)


def _unit(v: Any, where: str) -> str:
    if type(v) is not str or not v or len(v) > _MAX_UNIT:
        raise LimitsError(f"{where} is {show(v)}; expected a UCUM unit code such as 'Cel'")
    return v


def _keys(d: Any, where: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if type(d) is not dict:
        raise LimitsError(
            f"{where} is {show(d)}; expected an object with the keys {', '.join(allowed)}"
        )
    extra = sorted(set(d) - set(allowed))
    if extra:
        raise LimitsError(
            f"{where} has the unknown key {extra[0]!r}; the allowed keys are {', '.join(allowed)}"
        )
    return d


def _limit(d: Any, where: str, allowed: tuple[str, ...] = ("min", "max")) -> Limit:
    m = _keys(d, where, allowed)
    lo = _decimal(m["min"], f"{where}.min") if "min" in m else None
    hi = _decimal(m["max"], f"{where}.max") if "max" in m else None
    if lo is None and hi is None:
        raise LimitsError(f"{where} has neither min nor max; expected at least one bound")
    if lo is not None and hi is not None and lo > hi:
        raise LimitsError(f"{where}: min {lo} is above max {hi}; expected min <= max")
    return Limit(lo, hi)


def parse_value_limits(d: Any, where: str = VALUE_KEY) -> ValueLimits:
    """A value's recorded ``limits``, or a :class:`LimitsError` naming what is wrong."""
    m = _keys(d, where, ("unit", "hard", "soft"))
    if "unit" not in m:
        raise LimitsError(f"{where} has no unit; expected the unit the limits are in")
    unit = _unit(m["unit"], f"{where}.unit")
    hard = _limit(m["hard"], f"{where}.hard") if "hard" in m else None
    soft = _limit(m["soft"], f"{where}.soft") if "soft" in m else None
    if hard is None and soft is None:
        raise LimitsError(f"{where} has neither hard nor soft; expected at least one limit")
    return ValueLimits(unit, hard, soft)


def limits_source(started: Mapping[str, Any]) -> str:
    """Where a batch's telemetry limits come from: the MBR its ``batch.started`` names."""
    return f"MBR {started.get('mbr_id', '?')} v{started.get('mbr_version', '?')}"


def parse_telemetry_limits(
    d: Any, source: str, where: str = TELEMETRY_KEY
) -> dict[str, ChannelLimits]:
    """A batch's recorded ``telemetry_limits`` by channel, or a :class:`LimitsError`."""
    if type(d) is not dict:
        raise LimitsError(
            f"{where} is {show(d)}; expected an object of channel -> {{unit, min, max}}"
        )
    out = {}
    for ch, v in d.items():
        if not _CHANNEL.fullmatch(ch):
            raise LimitsError(
                f"{where} names the channel {show(ch)}; expected lower-case letters, digits "
                "and _ (as in the MBR)"
            )
        at = f"{where}.{ch}"
        m = _keys(v, at, ("unit", "min", "max"))
        if "unit" not in m:
            raise LimitsError(f"{at} has no unit; expected the unit the limits are in")
        unit = _unit(m["unit"], f"{at}.unit")
        lim = _limit({k: x for k, x in m.items() if k != "unit"}, at)
        out[ch] = ChannelLimits(ch, unit, lim, source)
    return out


def check_payload(kind: str, payload: Mapping[str, Any]) -> None:
    """Refuse an event payload whose recorded limits have a wrong shape (absent is fine)."""
    if kind in JUDGED_KINDS and VALUE_KEY in payload:
        parse_value_limits(payload[VALUE_KEY], f"{kind} payload.{VALUE_KEY}")
    elif kind == STARTED and TELEMETRY_KEY in payload:
        parse_telemetry_limits(
            payload[TELEMETRY_KEY], limits_source(payload), f"{kind} payload.{TELEMETRY_KEY}"
        )


def channel_limits(
    limits: Mapping[str, ChannelLimits], channel: str, unit: str
) -> ChannelLimits | None:
    """The limits that apply to a summary channel (``temperature``, or a quantity of a
    channel: ``cell_count.viability`` takes ``cell_count``'s), in the channel's unit; None when
    none apply (the edge judges a reading only in the limits' own unit)."""
    lim = limits.get(channel) or limits.get(channel.split(".", 1)[0])
    return lim if lim is not None and lim.unit == unit else None


def describe_judged(payload: Mapping[str, Any]) -> str | None:
    """A judged value's judgement with the limits it records: ``ok (soft 6.8–7.6 pH, hard
    6.5–7.8 pH)``; None when the payload records no limits (the caller may look elsewhere)."""
    judged = str(payload.get("limit", "not judged"))
    if VALUE_KEY not in payload:
        return None
    try:
        lim = parse_value_limits(payload[VALUE_KEY])
    except LimitsError as e:
        return f"{judged} (limits recorded but unreadable: {e})"
    return f"{judged} ({lim.describe()})"
