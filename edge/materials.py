"""The station's local materials list: reagent lots (expiry, release status) and equipment
(calibration due).  Checked offline at every scan.

The file is validated strictly (pydantic models with ``extra="forbid"``): a misspelt key
(``expirey:``) or a second entry for the same lot would otherwise be dropped or win silently,
and a scan would then be judged against the wrong status or date.  Every problem names the file,
its path in it (``reagents[2].status``), what was wrong and what is expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ebr_core.gs1 import gs1_check_digit
from ebr_core.strict import StrictModel, describe_errors, show
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

    def trade_items(self) -> frozenset[str]:
        """The GTINs of the site's materials: a shipper label must never carry one as its own."""
        return frozenset(gtin for gtin, _ in self.lots)


def _iso_date(v: Any) -> date:
    """A calendar date written YYYY-MM-DD (YAML may hand it over already as a date)."""
    if isinstance(v, date):
        return v
    try:
        if not isinstance(v, str) or len(v) != 10:
            raise ValueError
        return date.fromisoformat(v)
    except ValueError:
        raise ValueError(
            f"{show(v)} is not a date; expected a calendar date YYYY-MM-DD such as '2027-03-31'"
        ) from None


def _text(v: Any) -> Any:
    """A lot, id or GTIN written as a YAML integer keeps its digits, not its leading zeros."""
    if isinstance(v, int) and not isinstance(v, bool):
        raise ValueError(f"{v} is a number; expected text in quotes (leading zeros matter)")
    return v


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Text = Annotated[str, BeforeValidator(_text), StringConstraints(min_length=1, max_length=200)]


class _Lot(StrictModel):
    material: Text
    gtin: Annotated[str, BeforeValidator(_text), StringConstraints(pattern=r"^[0-9]{14}$")]
    batch: Text
    expiry: IsoDate
    status: Literal["released", "quarantined", "rejected"]

    @field_validator("gtin")
    @classmethod
    def _check_digit(cls, v: str) -> str:
        want = gs1_check_digit(v[:13])
        if str(want) != v[13]:
            raise ValueError(f"GTIN {v} has a wrong check digit (expected {want})")
        return v


class _Equipment(StrictModel):
    id: Text
    name: Text
    calibration_due: IsoDate


class _Materials(StrictModel):
    reagents: list[_Lot] = Field(default_factory=list)
    equipment: list[_Equipment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> _Materials:
        lots = [(r.gtin, r.batch) for r in self.reagents]
        dup = next((k for k in lots if lots.count(k) > 1), None)
        if dup is not None:
            raise ValueError(
                f"lot {dup[1]} of GTIN {dup[0]} is listed twice; expected one entry per lot"
            )
        ids = [e.id for e in self.equipment]
        twice = next((i for i in ids if ids.count(i) > 1), None)
        if twice is not None:
            raise ValueError(f"equipment {twice} is listed twice; expected one entry per item")
        return self


def load_materials(text: str, source: str | None = None) -> Materials:
    """Parse and validate the materials file named ``source`` (in every error, when given)."""
    name = source or "the materials list"
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MaterialsError(f"{name} is not valid YAML: {e}") from e
    try:
        m = _Materials.model_validate({} if doc is None else doc)
    except ValidationError as e:
        raise MaterialsError(_describe(e, source)) from None
    return Materials(
        {
            (r.gtin, r.batch): Lot(r.material, r.gtin, r.batch, r.expiry, r.status)
            for r in m.reagents
        },
        {e.id: Equipment(e.id, e.name, e.calibration_due) for e in m.equipment},
    )


def _describe(e: ValidationError, source: str | None) -> str:
    head = (
        f"{source} is not a valid materials list" if source else "the materials list is not valid"
    )
    return describe_errors(e, head)
