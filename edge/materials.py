"""The station's local materials list: reagent lots (expiry, release status) and equipment
(calibration due).  Checked offline at every scan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import yaml

from edge.errors import EdgeError


class MaterialsError(EdgeError):
    """The materials list is unreadable or malformed."""


@dataclass(frozen=True)
class Lot:
    material: str
    gtin: str
    batch: str
    expiry: date
    status: str  # released | quarantined | rejected


@dataclass(frozen=True)
class Equipment:
    id: str
    name: str
    calibration_due: date


@dataclass(frozen=True)
class Materials:
    lots: dict[tuple[str, str], Lot]
    equipment: dict[str, Equipment]


def load_materials(text: str) -> Materials:
    try:
        doc: Any = yaml.safe_load(text)
        lots = {}
        for r in doc.get("reagents", []):
            lot = Lot(
                str(r["material"]),
                str(r["gtin"]),
                str(r["batch"]),
                date.fromisoformat(str(r["expiry"])),
                str(r["status"]),
            )
            if lot.status not in ("released", "quarantined", "rejected"):
                raise MaterialsError(
                    f"lot {lot.batch}: status {lot.status!r} is not released, "
                    "quarantined or rejected"
                )
            lots[(lot.gtin, lot.batch)] = lot
        equipment = {}
        for e in doc.get("equipment", []):
            eq = Equipment(
                str(e["id"]), str(e["name"]), date.fromisoformat(str(e["calibration_due"]))
            )
            equipment[eq.id] = eq
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise MaterialsError(f"materials list is malformed: {e}") from e
    return Materials(lots, equipment)
