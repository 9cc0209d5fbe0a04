"""UCUM units this project compares, with exact (Decimal) conversion factors.

Only units of the same dimension convert; everything else is refused with a message naming both.

UCUM annotations (``{cells}``, ``{EU}``) are unity: ``{cells}/mL`` is ``/mL`` and ``{cells}`` is
``1``, so a result recorded as ``145000000 1`` meets a dose specified in ``{cells}``.  A code not in
the table is read with its annotations dropped (``10*6{CAR+T}/mL`` is ``10*6/mL``).  Every code is
first checked as UCUM (:func:`ebr_core.ucum.check_ucum`).

Endotoxin is the exception that keeps its own dimension: its units count endotoxin, not cells,
so ``{EU}/mL`` never converts to ``{cells}/mL`` (both are ``/mL`` to UCUM).  ``[EU]/mL``, which
specifications and results before CD19-COMMERCIAL v3 used, is in UCUM the *Ehrlich unit*
(urobilinogen): a different quantity.  Records are never rewritten, so results stored in it must
still evaluate; :data:`LEGACY` reads it as ``{EU}/mL`` and :func:`legacy_note` says so.
"""

from __future__ import annotations

import re
from decimal import Decimal

from ebr_core.errors import SpecificationError
from ebr_core.ucum import UcumError, check_ucum

_MEGA = Decimal(10) ** 6

# unit -> (dimension, factor to the dimension's base unit).  The dimension names appear in the
# evaluation's explanations, which QA signatures bind to (through the evaluation hash): they are
# kept as first written so a stored evaluation explains itself the same way tomorrow.
_UNITS: dict[str, tuple[str, Decimal]] = {
    # cell concentration, base: cells per mL
    "/mL": ("cells/volume", Decimal(1)),
    "/uL": ("cells/volume", Decimal(1000)),
    "10*3/uL": ("cells/volume", Decimal(10) ** 6),
    "10*6/mL": ("cells/volume", _MEGA),
    "10*6/L": ("cells/volume", Decimal(10) ** 3),
    "10*9/L": ("cells/volume", _MEGA),
    # counts, base: 1
    "1": ("count", Decimal(1)),
    "10*6": ("count", _MEGA),
    "10*8": ("count", Decimal(10) ** 8),
    "10*9": ("count", Decimal(10) ** 9),
    # dose per body mass, base: cells per kg
    "/kg": ("count/mass", Decimal(1)),
    "10*6/kg": ("count/mass", _MEGA),
    "%": ("fraction", Decimal(1)),
    "{EU}/mL": ("endotoxin/volume", Decimal(1)),
    "{EU}/kg": ("endotoxin/mass", Decimal(1)),
    "{copies}/{cell}": ("copies/cell", Decimal(1)),
    "pg/mL": ("mass/volume", Decimal(1)),
    "ng/mL": ("mass/volume", Decimal(1000)),
    "mL": ("volume", Decimal(1)),
    "L": ("volume", Decimal(1000)),
    "uL": ("volume", Decimal("0.001")),
    "kg": ("mass", Decimal(1)),
    "g": ("mass", Decimal("0.001")),
    "Cel": ("temperature", Decimal(1)),
    "wk": ("time", Decimal(604800)),
    "d": ("time", Decimal(86400)),
    "h": ("time", Decimal(3600)),
    "min": ("time", Decimal(60)),
}

# Codes written before CD19-COMMERCIAL v3 / CD19-POC-ACADEMIC v2 -> what they meant.
LEGACY: dict[str, str] = {"[EU]/mL": "{EU}/mL", "[EU]/kg": "{EU}/kg"}

# An annotation that stands for a unit of its own (at the start, or after '.', '/' or '(') is 1.
_LONE_ANNOTATION = re.compile(r"(?:^|(?<=[./(]))\{[^{}]*\}")
_ANNOTATION = re.compile(r"\{[^{}]*\}")


def _unannotated(unit: str) -> str:
    """``unit`` with its annotations dropped: ``{cells}/mL`` -> ``/mL``, ``{cells}`` -> ``1``."""
    s = _ANNOTATION.sub("", _LONE_ANNOTATION.sub("1", unit))
    s = s[1:] if s.startswith("1/") else s
    return s.removesuffix("/1") or "1"


def dimension(unit: str) -> tuple[str, Decimal]:
    """(dimension, factor to its base unit) of a UCUM code this system converts, or raise
    :class:`SpecificationError` naming the code (not UCUM, or UCUM but not convertible here)."""
    code = LEGACY.get(unit, unit)
    found = _UNITS.get(code)
    if found is not None:
        return found
    try:
        check_ucum(unit)
    except UcumError as e:
        why = str(e).split(": ", 1)[-1]
        raise SpecificationError(f"unit {unit!r} is not a UCUM unit: {why}") from e
    found = _UNITS.get(_unannotated(code))
    if found is None:
        raise SpecificationError(f"unit {unit!r} is not a UCUM unit this system converts")
    return found


def known(unit: str) -> bool:
    try:
        dimension(unit)
    except SpecificationError:
        return False
    return True


def legacy_note(unit: str) -> str | None:
    """Why ``unit`` is read as something other than UCUM says, or None if it is read as UCUM."""
    if unit in LEGACY:
        return (
            f"{unit!r} is UCUM's Ehrlich unit; records before the v3 specification used it for "
            f"endotoxin, read as {LEGACY[unit]!r}"
        )
    return None


def convert(value: Decimal, unit: str, to: str) -> Decimal:
    """``value`` in ``unit`` expressed in ``to`` (exact)."""
    if unit == to:
        return value
    d1, f1 = dimension(unit)
    d2, f2 = dimension(to)
    if d1 != d2:
        raise SpecificationError(f"cannot convert {unit!r} ({d1}) to {to!r} ({d2})")
    return value * f1 / f2
