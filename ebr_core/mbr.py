"""Master batch records: an ISA-88-shaped procedure (procedure → unit procedure → operation →
phase) that drives the edge's step engine.  Pure: parses and validates the document's content.

A phase (one step the operator performs) may declare:

* ``scans``: required scans, each a ``role`` (``patient_material``, ``cartridge``, ``reagent``,
  ``equipment``, ``final_product``) and for reagents (only) the ``material`` name expected;
* ``values``: values to record, each with a ``unit`` (UCUM) and optional ``limits``
  (``hard``/``soft`` with ``min``/``max`` as decimal strings; a soft bound lies within the hard
  limit);
* ``calculation``: ``dose`` (computed from recorded values and the MBR's ``dosing`` rule);
* ``signature``: the meaning of the operator's signature (default ``performed``);
* ``critical``: true when a second, different person must sign ``verified``.

The document is validated strictly (pydantic models with ``extra="forbid"``): a misspelt key
(``critcal: true``) would otherwise drop a rule without a word, here second-person verification,
so every unknown key is refused with the allowed ones; units must be valid UCUM
(:mod:`ebr_core.ucum`); numbers are integers or decimal strings, never YAML booleans.

Over 400 lines: the MBR's document models, its checks and the wording of its refusals are one
document format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ebr_core.errors import EbrError
from ebr_core.gs1 import gs1_check_digit
from ebr_core.strict import StrictModel, describe_errors, loc_path, missing_key, show
from ebr_core.ucum import UcumError, check_ucum

SCAN_ROLES = ("patient_material", "cartridge", "reagent", "equipment", "final_product")


class MbrError(EbrError):
    """The master batch record is malformed."""


@dataclass(frozen=True)
class Limit:
    min: Decimal | None = None
    max: Decimal | None = None

    def contains(self, v: Decimal) -> bool:
        return (self.min is None or v >= self.min) and (self.max is None or v <= self.max)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min}–{self.max}"
        if self.min is not None:
            return f"≥ {self.min}"
        return f"≤ {self.max}"


@dataclass(frozen=True)
class TelemetryLimit:
    """In-process limits of an instrument channel: a reading outside is an excursion."""

    channel: str
    unit: str
    limit: Limit

    def judge(self, value: Decimal) -> str:
        """``ok``, ``low`` or ``high`` (the ``limit`` field of a judged reading)."""
        lim = self.limit
        if lim.min is not None and value < lim.min:
            return "low"
        if lim.max is not None and value > lim.max:
            return "high"
        return "ok"


@dataclass(frozen=True)
class ValueSpec:
    name: str
    unit: str
    hard: Limit | None = None
    soft: Limit | None = None


@dataclass(frozen=True)
class ScanSpec:
    role: str
    material: str | None = None


@dataclass(frozen=True)
class Step:
    id: str  # "unit_procedure/operation/phase"
    name: str
    instruction: str
    scans: tuple[ScanSpec, ...]
    values: tuple[ValueSpec, ...]
    calculation: str | None
    signature: str
    critical: bool

    def value(self, name: str) -> ValueSpec | None:
        return next((v for v in self.values if v.name == name), None)


@dataclass(frozen=True)
class DosingRule:
    """Dose in viable CAR+ cells per kg, with a weight cap (as in approved CD19 products)."""

    target_per_kg: Decimal  # cells/kg
    max_total: Decimal  # cells
    min_per_kg: Decimal
    max_per_kg: Decimal


@dataclass(frozen=True)
class Mbr:
    mbr_id: str
    version: str
    product: str
    cartridge_gtin: str | None
    dosing: DosingRule | None
    steps: tuple[Step, ...]
    # channel -> limits; readings of these channels are judged as they are recorded
    telemetry: dict[str, TelemetryLimit] = field(default_factory=dict)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise MbrError(f"step {step_id!r} is not in {self.mbr_id} v{self.version}")


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _decimal(v: Any) -> Decimal:
    """A decimal written as an integer or a string ("0.5"; YAML floats arrive as strings)."""
    if isinstance(v, bool) or not isinstance(v, str | int) or not _NUMBER.fullmatch(str(v)):
        raise ValueError(f"{show(v)} is not a decimal number; expected one such as 50 or '0.5'")
    return Decimal(str(v))


def _ucum(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{show(v)} is not a UCUM unit code; expected one such as 'mL'")
    try:
        check_ucum(v)
    except UcumError as e:
        raise ValueError(str(e)) from e
    return v


def _text_id(v: Any) -> Any:
    """An id or version written as a YAML integer (``version: 3``) is the string '3'."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


Dec = Annotated[Decimal, BeforeValidator(_decimal)]
Ucum = Annotated[str, BeforeValidator(_ucum)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Id = Annotated[
    str,
    BeforeValidator(_text_id),
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
Channel = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class _Limit(StrictModel):
    min: Dec | None = None
    max: Dec | None = None

    @model_validator(mode="after")
    def _bounded(self) -> _Limit:
        if self.min is None and self.max is None:
            raise ValueError("a limit needs min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}; expected min <= max")
        return self

    def limit(self) -> Limit:
        return Limit(self.min, self.max)


class _Limits(StrictModel):
    hard: _Limit | None = None
    soft: _Limit | None = None

    @field_validator("soft")
    @classmethod
    def _soft_within_hard(cls, soft: _Limit | None, info: ValidationInfo) -> _Limit | None:
        hard: _Limit | None = info.data.get("hard")
        if soft is None or hard is None:
            return soft
        problem = _outside(soft, hard)
        if problem:
            raise ValueError(
                f"the soft limit {soft.limit().describe()} does not lie within the hard limit "
                f"{hard.limit().describe()}: {problem}; expected soft limits within the hard limits"
            )
        return soft


def _outside(soft: _Limit, hard: _Limit) -> str | None:
    """Which bound of ``soft`` lies outside ``hard`` (None when every bound lies within)."""
    for which, v in (("min", soft.min), ("max", soft.max)):
        if v is None:
            continue
        if hard.min is not None and v < hard.min:
            return f"soft {which} {v} is below hard min {hard.min}"
        if hard.max is not None and v > hard.max:
            return f"soft {which} {v} is above hard max {hard.max}"
    return None


class _Value(StrictModel):
    name: Name
    unit: Ucum
    limits: _Limits | None = None


class _Scan(StrictModel):
    role: Literal["patient_material", "cartridge", "reagent", "equipment", "final_product"]
    material: Text | None = None

    @model_validator(mode="after")
    def _material_for_reagents(self) -> _Scan:
        if self.role == "reagent" and self.material is None:
            raise ValueError("a reagent scan names its material (material: ...)")
        if self.role != "reagent" and self.material is not None:
            raise ValueError(f"only a reagent scan names a material, not a {self.role} scan")
        return self


class _Phase(StrictModel):
    id: Id
    name: Text
    instruction: str = ""
    scans: list[_Scan] = Field(default_factory=list)
    values: list[_Value] = Field(default_factory=list)
    calculation: Literal["dose"] | None = None
    signature: Literal["performed", "verified"] = "performed"
    critical: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> _Phase:
        names = [v.name for v in self.values]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"value {dup!r} is listed twice; expected unique value names")
        if self.critical and self.signature == "verified":
            raise ValueError(
                "a critical phase is signed 'performed' and then 'verified' by a second person; "
                "expected signature: performed"
            )
        return self


class _Operation(StrictModel):
    id: Id
    name: Text | None = None
    phases: Annotated[list[_Phase], Field(min_length=1)]


class _UnitProcedure(StrictModel):
    id: Id
    name: Text | None = None
    operations: Annotated[list[_Operation], Field(min_length=1)]


class _Procedure(StrictModel):
    id: Id
    name: Text | None = None
    unit_procedures: Annotated[list[_UnitProcedure], Field(min_length=1)]


class _Dosing(StrictModel):
    target_per_kg: Dec
    max_total: Dec
    min_per_kg: Dec
    max_per_kg: Dec

    @model_validator(mode="after")
    def _ordered(self) -> _Dosing:
        if min(self.target_per_kg, self.max_total, self.min_per_kg, self.max_per_kg) <= 0:
            raise ValueError("every dosing figure is a positive number of cells")
        if not self.min_per_kg <= self.target_per_kg <= self.max_per_kg:
            raise ValueError(
                f"target_per_kg {self.target_per_kg} is not within min_per_kg "
                f"{self.min_per_kg} and max_per_kg {self.max_per_kg}"
            )
        return self


class _Telemetry(_Limit):
    unit: Ucum


class _Mbr(StrictModel):
    mbr_id: Id
    version: Id
    product: str = ""
    cartridge_gtin: Annotated[str, StringConstraints(pattern=r"^[0-9]{14}$")] | None = None
    dosing: _Dosing | None = None
    telemetry: dict[Channel, _Telemetry] = Field(default_factory=dict)
    procedure: _Procedure

    @field_validator("cartridge_gtin")
    @classmethod
    def _gtin_check_digit(cls, v: str | None) -> str | None:
        if v is not None and str(gs1_check_digit(v[:13])) != v[13]:
            raise ValueError(
                f"GTIN {v} has a wrong check digit (expected {gs1_check_digit(v[:13])})"
            )
        return v

    @model_validator(mode="after")
    def _coherent(self) -> _Mbr:
        phases = [
            (f"{up.id}/{op.id}/{ph.id}", ph)
            for up in self.procedure.unit_procedures
            for op in up.operations
            for ph in op.phases
        ]
        ids = [sid for sid, _ in phases]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup is not None:
            raise ValueError(f"step {dup} is listed twice; expected unique step ids")
        if self.dosing is None and any(ph.calculation == "dose" for _, ph in phases):
            raise ValueError("a phase calculates a dose but the MBR has no dosing rule (dosing:)")
        if self.cartridge_gtin is None and any(
            sc.role == "cartridge" for _, ph in phases for sc in ph.scans
        ):
            raise ValueError("a phase scans a cartridge but the MBR names no cartridge_gtin")
        return self


def parse_mbr(content: dict[str, Any], source: str = "MBR") -> Mbr:
    """Build and validate an :class:`Mbr` from a document's content.

    Every problem is reported at once, each as ``source: path: what is wrong; what is
    expected``, the path being where it sits in the document (``procedure.unit_procedures[0]
    .operations[0].phases[1].values[0].limits.soft``) followed by the step it belongs to.
    """
    try:
        m = _Mbr.model_validate(content)
    except ValidationError as e:
        raise MbrError(_describe(e, content, source)) from None
    steps = tuple(
        Step(
            id=f"{up.id}/{op.id}/{ph.id}",
            name=ph.name,
            instruction=ph.instruction,
            scans=tuple(ScanSpec(sc.role, sc.material) for sc in ph.scans),
            values=tuple(
                ValueSpec(
                    v.name,
                    v.unit,
                    v.limits.hard.limit() if v.limits and v.limits.hard else None,
                    v.limits.soft.limit() if v.limits and v.limits.soft else None,
                )
                for v in ph.values
            ),
            calculation=ph.calculation,
            signature=ph.signature,
            critical=ph.critical,
        )
        for up in m.procedure.unit_procedures
        for op in up.operations
        for ph in op.phases
    )
    d = m.dosing
    return Mbr(
        mbr_id=m.mbr_id,
        version=m.version,
        product=m.product,
        cartridge_gtin=m.cartridge_gtin,
        dosing=DosingRule(d.target_per_kg, d.max_total, d.min_per_kg, d.max_per_kg) if d else None,
        steps=steps,
        telemetry={ch: TelemetryLimit(ch, t.unit, t.limit()) for ch, t in m.telemetry.items()},
    )


def _describe(e: ValidationError, content: Any, source: str) -> str:
    head = f"{source} is not a valid master batch record"
    return describe_errors(e, head, lambda err: _line(err, content))


def _line(err: Any, content: Any) -> str:
    loc = tuple(err["loc"])
    path = loc_path(loc)
    if err["type"] == "missing":
        path, what = missing_key(loc)
    else:
        what = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] not in ("value_error", "assertion_error") and not isinstance(
            err.get("input"), dict | list
        ):
            what += f" (got {show(err.get('input'))})"
    step = _step_of(loc, content)
    return f"{path or '(top level)'}: {what}" + (f" [{step}]" if step else "")


def _step_of(loc: tuple[Any, ...], content: Any) -> str:
    """The ids met along ``loc`` (``receipt/apheresis/inspect``, then a value's name)."""
    ids: list[str] = []
    node = content
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(part, int) and isinstance(node, dict):
            label = node.get("id", node.get("name"))
            if isinstance(label, str | int) and not isinstance(label, bool):
                ids.append(str(label))
    if len(ids) > 3:
        return "step " + "/".join(ids[:3]) + ", value " + ids[3]
    return ("step " if len(ids) == 3 else "") + "/".join(ids)


@dataclass(frozen=True)
class Dose:
    total_viable_car_cells: Decimal
    per_kg: Decimal
    volume_to_infuse_ml: Decimal
    cells_to_infuse: Decimal
    within_range: bool


def calculate_dose(
    rule: DosingRule,
    *,
    viable_per_ml: Decimal,
    volume_ml: Decimal,
    car_percent: Decimal,
    weight_kg: Decimal,
) -> Dose:
    """Total viable CAR+ cells = concentration × volume × %CAR+; the dose to infuse is the
    target per kg × weight, capped at ``max_total`` (weight-capped dosing)."""
    if weight_kg <= 0:
        raise MbrError(f"patient weight {weight_kg} kg must be positive")
    if viable_per_ml <= 0 or volume_ml <= 0 or not 0 < car_percent <= 100:
        raise MbrError("viable concentration and volume must be positive and %CAR+ in (0, 100]")
    car_per_ml = viable_per_ml * car_percent / 100
    total = car_per_ml * volume_ml
    want = min(rule.target_per_kg * weight_kg, rule.max_total)
    give = min(want, total)
    per_kg = give / weight_kg
    vol = (give / car_per_ml).quantize(Decimal("0.1"))
    return Dose(
        total_viable_car_cells=total,
        per_kg=per_kg.quantize(Decimal("1")),
        volume_to_infuse_ml=vol,
        cells_to_infuse=give.quantize(Decimal("1")),
        within_range=rule.min_per_kg <= per_kg <= rule.max_per_kg,
    )
