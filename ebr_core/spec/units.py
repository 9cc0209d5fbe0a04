"""UCUM units this project compares, with exact (Decimal) conversion factors.

Only units of the same dimension convert; everything else is refused with a message naming both.
"""

from __future__ import annotations

from decimal import Decimal

from ebr_core.errors import SpecificationError

# unit -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, Decimal]] = {
    # cell concentration, base: cells per mL
    "/mL": ("cells/volume", Decimal(1)),
    "/uL": ("cells/volume", Decimal(1000)),
    "10*3/uL": ("cells/volume", Decimal(10) ** 6),
    "10*6/mL": ("cells/volume", Decimal(10) ** 6),
    "10*6/L": ("cells/volume", Decimal(10) ** 3),
    "10*9/L": ("cells/volume", Decimal(10) ** 6),
    # counts, base: 1
    "1": ("count", Decimal(1)),
    "10*6": ("count", Decimal(10) ** 6),
    "10*8": ("count", Decimal(10) ** 8),
    "10*9": ("count", Decimal(10) ** 9),
    # dose per body mass, base: cells per kg
    "/kg": ("count/mass", Decimal(1)),
    "10*6/kg": ("count/mass", Decimal(10) ** 6),
    "%": ("fraction", Decimal(1)),
    "[EU]/mL": ("endotoxin/volume", Decimal(1)),
    "[EU]/kg": ("endotoxin/mass", Decimal(1)),
    "{copies}/{cell}": ("copies/cell", Decimal(1)),
    "pg/mL": ("mass/volume", Decimal(1)),
    "ng/mL": ("mass/volume", Decimal(1000)),
    "mL": ("volume", Decimal(1)),
    "L": ("volume", Decimal(1000)),
    "uL": ("volume", Decimal("0.001")),
    "kg": ("mass", Decimal(1)),
    "g": ("mass", Decimal("0.001")),
    "Cel": ("temperature", Decimal(1)),
    "d": ("time", Decimal(86400)),
    "h": ("time", Decimal(3600)),
    "min": ("time", Decimal(60)),
}


def known(unit: str) -> bool:
    return unit in _UNITS


def convert(value: Decimal, unit: str, to: str) -> Decimal:
    """``value`` in ``unit`` expressed in ``to`` (exact)."""
    if unit == to:
        return value
    try:
        d1, f1 = _UNITS[unit]
        d2, f2 = _UNITS[to]
    except KeyError as e:
        raise SpecificationError(
            f"unit {e.args[0]!r} is not a UCUM unit this system converts"
        ) from e
    if d1 != d2:
        raise SpecificationError(f"cannot convert {unit!r} ({d1}) to {to!r} ({d2})")
    return value * f1 / f2
