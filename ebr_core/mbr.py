"""Master batch records: an ISA-88-shaped procedure (procedure → unit procedure → operation →
phase) that drives the edge's step engine.  Pure: parses and validates the document's content.

A phase (one step the operator performs) may declare:

* ``scans``: required scans, each a ``role`` (``patient_material``, ``cartridge``, ``reagent``,
  ``equipment``, ``final_product``) and for reagents the ``material`` name expected;
* ``values``: values to record, each with a ``unit`` (UCUM) and optional ``limits``
  (``hard``/``soft`` with ``min``/``max`` as decimal strings);
* ``calculation``: ``dose`` (computed from recorded values and the MBR's ``dosing`` rule);
* ``signature``: the meaning of the operator's signature (default ``performed``);
* ``critical``: true when a second, different person must sign ``verified``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ebr_core.errors import EbrError

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


def _dec(v: Any, where: str) -> Decimal:
    try:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise InvalidOperation
        return Decimal(str(v))
    except InvalidOperation as e:
        raise MbrError(f"{where}: {v!r} is not a decimal number") from e


def _limit(d: Any, where: str) -> Limit | None:
    if d is None:
        return None
    if not isinstance(d, dict) or not d.keys() <= {"min", "max"} or not d:
        raise MbrError(f"{where}: a limit is a mapping with min and/or max")
    lo = _dec(d["min"], f"{where}.min") if "min" in d else None
    hi = _dec(d["max"], f"{where}.max") if "max" in d else None
    if lo is not None and hi is not None and lo > hi:
        raise MbrError(f"{where}: min {lo} is above max {hi}")
    return Limit(lo, hi)


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise MbrError(f"{where}: missing {key!r}")
    return d[key]


def parse_mbr(content: dict[str, Any]) -> Mbr:
    """Build and validate an :class:`Mbr` from a document's content."""
    proc = _req(content, "procedure", "mbr")
    steps: list[Step] = []
    for up in _req(proc, "unit_procedures", "procedure"):
        for op in _req(up, "operations", f"unit procedure {up.get('id')}"):
            for ph in _req(op, "phases", f"operation {op.get('id')}"):
                sid = f"{up['id']}/{op['id']}/{ph['id']}"
                scans = []
                for sc in ph.get("scans", []):
                    role = _req(sc, "role", sid)
                    if role not in SCAN_ROLES:
                        raise MbrError(f"{sid}: scan role {role!r} is not one of {SCAN_ROLES}")
                    if role == "reagent" and "material" not in sc:
                        raise MbrError(f"{sid}: a reagent scan names its material")
                    scans.append(ScanSpec(role, sc.get("material")))
                values = []
                for v in ph.get("values", []):
                    lim = v.get("limits", {})
                    values.append(
                        ValueSpec(
                            _req(v, "name", sid),
                            _req(v, "unit", sid),
                            _limit(lim.get("hard"), f"{sid}.{v['name']}.hard"),
                            _limit(lim.get("soft"), f"{sid}.{v['name']}.soft"),
                        )
                    )
                steps.append(
                    Step(
                        id=sid,
                        name=_req(ph, "name", sid),
                        instruction=ph.get("instruction", ""),
                        scans=tuple(scans),
                        values=tuple(values),
                        calculation=ph.get("calculation"),
                        signature=ph.get("signature", "performed"),
                        critical=bool(ph.get("critical", False)),
                    )
                )
    if not steps:
        raise MbrError("the procedure has no phases")
    ids = [s.id for s in steps]
    if len(set(ids)) != len(ids):
        raise MbrError("step ids are not unique")
    dosing = None
    if "dosing" in content:
        d = content["dosing"]
        dosing = DosingRule(
            target_per_kg=_dec(_req(d, "target_per_kg", "dosing"), "dosing.target_per_kg"),
            max_total=_dec(_req(d, "max_total", "dosing"), "dosing.max_total"),
            min_per_kg=_dec(_req(d, "min_per_kg", "dosing"), "dosing.min_per_kg"),
            max_per_kg=_dec(_req(d, "max_per_kg", "dosing"), "dosing.max_per_kg"),
        )
    if any(s.calculation == "dose" for s in steps) and dosing is None:
        raise MbrError("a phase calculates a dose but the MBR has no dosing rule")
    telemetry: dict[str, TelemetryLimit] = {}
    tel = content.get("telemetry", {})
    if not isinstance(tel, dict):
        raise MbrError("telemetry: a mapping of channel -> {unit, min, max}")
    for ch, d in tel.items():
        if not isinstance(d, dict) or not isinstance(d.get("unit"), str):
            raise MbrError(f"telemetry.{ch}: a mapping with a UCUM unit and min and/or max")
        lim = _limit({k: v for k, v in d.items() if k != "unit"}, f"telemetry.{ch}")
        assert lim is not None
        telemetry[str(ch)] = TelemetryLimit(str(ch), d["unit"], lim)
    return Mbr(
        mbr_id=str(_req(content, "mbr_id", "mbr")),
        version=str(_req(content, "version", "mbr")),
        product=str(content.get("product", "")),
        cartridge_gtin=content.get("cartridge_gtin"),
        dosing=dosing,
        steps=tuple(steps),
        telemetry=telemetry,
    )


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
