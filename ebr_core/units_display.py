"""How a UCUM unit code is shown to a person: one table for the reports, the FHIR narratives, the
kiosk and the console.

Records keep the UCUM code (``Cel``, ``10*6{cells}/kg``); screens and printed records show its
display name (``°C``, ``× 10⁶ cells/kg``).  A code not in :data:`DISPLAY` is rendered by rule
(annotations lose their braces, ``10*6`` becomes ``× 10⁶``, the micro prefix ``u`` becomes
``µ``), never dropped.  What this module does not do: check that a code is UCUM
(:mod:`ebr_core.ucum`) or convert (:mod:`ebr_core.spec.units`).
"""

from __future__ import annotations

import re

DISPLAY: dict[str, str] = {
    "1": "",
    "%": "%",
    "Cel": "°C",
    "[pH]": "pH",
    "{cells}": "cells",
    "10*6{cells}": "× 10⁶ cells",
    "{cells}/mL": "cells/mL",
    "10*6{cells}/mL": "× 10⁶ cells/mL",
    "{cells}/kg": "cells/kg",
    "10*6{cells}/kg": "× 10⁶ cells/kg",
    "/mL": "/mL",
    "/uL": "/µL",
    "10*6/mL": "× 10⁶/mL",
    "10*6/kg": "× 10⁶/kg",
    "{EU}/mL": "EU/mL",
    "{EU}/kg": "EU/kg",
    # Records before the v3 specification wrote endotoxin as UCUM's Ehrlich unit; they meant EU.
    "[EU]/mL": "EU/mL",
    "[EU]/kg": "EU/kg",
    "{copies}/{cell}": "copies/cell",
    "pg/mL": "pg/mL",
    "ng/mL": "ng/mL",
    "mL": "mL",
    "uL": "µL",
    "L": "L",
    "kg": "kg",
    "g": "g",
    "d": "d",
    "h": "h",
    "min": "min",
    "s": "s",
    "mm[Hg]": "mmHg",
}

# Units written before the number (pH 7.20), not after it.
_BEFORE = frozenset({"[pH]"})
_SUPERSCRIPT = str.maketrans("0123456789-+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺")
_POWER_OF_TEN = re.compile(r"10[*^]([+-]?\d+)")
_ANNOTATION = re.compile(r"\{([^{}]*)\}")
_MICRO = re.compile(r"(?<![A-Za-z\[])u(?=(?:L|g|m|mol|s)\b)")


def display_unit(code: str) -> str:
    """The display name of a UCUM code: ``Cel`` -> ``°C``, ``{EU}/mL`` -> ``EU/mL``."""
    known = DISPLAY.get(code)
    if known is not None:
        return known
    text = _POWER_OF_TEN.sub(lambda m: "× 10" + m.group(1).translate(_SUPERSCRIPT) + " ", code)
    text = _ANNOTATION.sub(r"\1", text)
    text = _MICRO.sub("µ", text).replace("Cel", "°C").replace(".", "·")
    return text.replace(" /", "/").strip()


def display_quantity(value: object, code: str) -> str:
    """A value with its unit as a person reads it: ``36.9 °C``, ``pH 7.20``, ``5 EU/mL``,
    ``2.0 × 10⁶ cells/kg``, ``145000000`` (unit ``1``)."""
    v = "" if value is None else str(value)
    if code in _BEFORE:
        return f"{display_unit(code)} {v}".strip()
    unit = display_unit(code)
    return f"{v} {unit}".strip() if unit else v
