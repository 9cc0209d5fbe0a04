"""Measured values as exact decimal strings with a UCUM unit: ``{"value": "87.5", "unit": "%"}``.

No floats anywhere in a record: every party must hash the same bytes and nothing may be rounded.
Unit conversion belongs to the specification module; this module only makes and checks the form.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from ebr_core.errors import RecordFormatError

_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_UNIT = re.compile(r"[!-~]{1,32}")  # UCUM case-sensitive codes are printable ASCII


def quantity(value: Decimal | int | str, unit: str) -> dict[str, str]:
    """A quantity for a record payload; refuses floats and malformed decimals."""
    if isinstance(value, float):
        raise RecordFormatError(
            f"value {value!r} is a float; give a Decimal or a decimal string such as '87.5'"
        )
    text = format(value, "f") if isinstance(value, Decimal) else str(value)
    if not _DECIMAL.fullmatch(text):
        raise RecordFormatError(f"value {text!r} is not a plain decimal such as '87.5' or '-3'")
    if not _UNIT.fullmatch(unit):
        raise RecordFormatError(f"unit {unit!r} is not a UCUM code such as '%' or '10*6/mL'")
    return {"value": text, "unit": unit}


def parse_quantity(q: Any) -> tuple[Decimal, str]:
    if not isinstance(q, dict) or q.keys() != {"value", "unit"}:
        raise RecordFormatError(f"{q!r} is not a quantity {{'value': ..., 'unit': ...}}")
    v, u = q["value"], q["unit"]
    if not isinstance(v, str) or not _DECIMAL.fullmatch(v):
        raise RecordFormatError(f"quantity value {v!r} is not a decimal string")
    if not isinstance(u, str) or not _UNIT.fullmatch(u):
        raise RecordFormatError(f"quantity unit {u!r} is not a UCUM code")
    try:
        return Decimal(v), u
    except InvalidOperation as e:  # pragma: no cover - the regex admits only valid decimals
        raise RecordFormatError(f"quantity value {v!r} is not a decimal") from e
