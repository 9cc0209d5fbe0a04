"""Release calculators: endotoxin limit K/M, weight-banded dose ranges, total viable CAR+ cells."""

from __future__ import annotations

from decimal import Decimal

from ebr_core.errors import SpecificationError
from ebr_core.spec.model import DoseBand

K_INTRAVENOUS = Decimal(5)  # EU/kg (Ph. Eur. 2.6.14 / USP <85>)
K_INTRATHECAL = Decimal("0.2")


def endotoxin_limit(max_dose_ml_per_kg_per_hour: Decimal, k: Decimal = K_INTRAVENOUS) -> Decimal:
    """Endotoxin limit in EU/mL: K / M, M the maximum dose in mL per kg per hour."""
    if max_dose_ml_per_kg_per_hour <= 0:
        raise SpecificationError("M (maximum dose per kg per hour) must be positive")
    return k / max_dose_ml_per_kg_per_hour


def total_viable_car_cells(
    viable_per_ml: Decimal, volume_ml: Decimal, car_percent: Decimal
) -> Decimal:
    """Total viable CAR+ cells = viable count per mL × volume × %CAR+."""
    if not 0 <= car_percent <= 100:
        raise SpecificationError(f"%CAR+ {car_percent} is outside 0-100")
    return viable_per_ml * volume_ml * car_percent / 100


def dose_range(bands: tuple[DoseBand, ...], weight_kg: Decimal) -> tuple[Decimal, Decimal, int]:
    """(min, max) total viable CAR+ cells for a patient weight, and the 1-based band used."""
    for i, b in enumerate(bands, start=1):
        lo_ok = b.min_weight is None or (
            weight_kg >= b.min_weight.value
            if b.min_weight.inclusive
            else weight_kg > b.min_weight.value
        )
        hi_ok = b.max_weight is None or (
            weight_kg <= b.max_weight.value
            if b.max_weight.inclusive
            else weight_kg < b.max_weight.value
        )
        if lo_ok and hi_ok:
            if b.per_kg is not None:
                return b.per_kg[0] * weight_kg, b.per_kg[1] * weight_kg, i
            assert b.total is not None
            return b.total[0], b.total[1], i
    raise SpecificationError(f"no dosing band covers a patient weight of {weight_kg} kg")
