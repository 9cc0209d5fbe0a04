"""Specification documents: a harmonised global baseline plus jurisdiction overlays.

YAML shape (values exact: decimals are strings or YAML numbers kept as written)::

    spec_id: CD19-COMMERCIAL
    version: "2"
    product: ...
    attributes:                       # the global baseline
      viability:
        name: Viability
        kind: numeric                 # numeric | qualitative | dose
        unit: "%"
        limit: {min: "70"}            # min (>=), above (>), max (<=), below (<)
        method: flow-7aad
        methods: [flow-7aad, trypan-blue]   # accepted methods (omit: any)
        timing: before_release        # or after_release
        clause: "Ph. Eur. 2.7.29"
      sterility:
        kind: qualitative
        accepted: ["no growth"]
        timing: after_release
    method_equivalence:               # which methods satisfy which jurisdiction
      sterility: {EU: [ph-eur-2.6.27], US: [usp-71, 21cfr610.12], UK: [ph-eur-2.6.27]}
    dosing:                           # weight bands (for kind: dose)
      bands:
        - {max_weight_kg: "50", per_kg: {min: "0.2", max: "5", unit: "10*6{cells}/kg"}}
        - {above_weight_kg: "50", total: {min: "10", max: "250", unit: "10*6{cells}"}}
    overlays:
      EU:
        clause: "EU GMP for ATMPs"
        tighten: {viability: {limit: {min: "80"}}}  # may only make a limit stricter
        add: {rcl: {...}}                         # a new attribute
        methods: {sterility: [ph-eur-2.6.27]}     # may only narrow the accepted methods

An overlay that loosens the baseline (a lower minimum, a higher maximum, a dropped bound, more
accepted qualitative results, an accepted method the baseline does not accept, moving a result
from before to after release) is refused with a message that names the attribute and the clause.

Over 400 lines: the specification's model, its overlays and the loosening check are one rule set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from ebr_core.errors import SpecificationError
from ebr_core.spec.units import convert, dimension
from ebr_core.ucum import UcumError, check_ucum

KINDS = ("numeric", "qualitative", "dose")
TIMINGS = ("before_release", "after_release")


class LooseningOverlayError(SpecificationError):
    """An overlay would make the baseline less strict."""


@dataclass(frozen=True)
class Bound:
    value: Decimal
    inclusive: bool

    def describe(self, lower: bool, unit: str) -> str:
        op = (">=" if self.inclusive else ">") if lower else ("<=" if self.inclusive else "<")
        return f"{op} {self.value} {unit}".rstrip()


@dataclass(frozen=True)
class Attribute:
    id: str
    name: str
    kind: str
    unit: str = ""
    lower: Bound | None = None
    upper: Bound | None = None
    accepted: tuple[str, ...] = ()
    methods: tuple[str, ...] | None = None  # None: any method
    timing: str = "before_release"
    clause: str = ""

    def describe_limit(self) -> str:
        if self.kind == "qualitative":
            return " or ".join(repr(a) for a in self.accepted)
        parts = []
        if self.lower:
            parts.append(self.lower.describe(True, self.unit))
        if self.upper:
            parts.append(self.upper.describe(False, self.unit))
        return " and ".join(parts) or "(no limit)"


@dataclass(frozen=True)
class DoseBand:
    min_weight: Bound | None
    max_weight: Bound | None
    per_kg: tuple[Decimal, Decimal] | None
    total: tuple[Decimal, Decimal] | None


@dataclass(frozen=True)
class Overlay:
    jurisdiction: str
    clause: str
    tighten: dict[str, dict[str, Any]] = field(default_factory=dict)
    add: dict[str, Attribute] = field(default_factory=dict)
    methods: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    spec_id: str
    version: str
    product: str
    attributes: dict[str, Attribute]
    overlays: dict[str, Overlay]
    method_equivalence: dict[str, dict[str, tuple[str, ...]]]
    dose_bands: tuple[DoseBand, ...] = ()
    strength: str = ""  # as the label and the certificate state it
    shelf_life_days: int | None = None  # from the end of manufacture
    # The effective attributes per jurisdiction, computed once (the spec is immutable).
    _effective: dict[str, dict[str, Attribute]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def for_jurisdiction(self, jurisdiction: str) -> dict[str, Attribute]:
        """The effective attributes in ``jurisdiction``: baseline, tightened, added, methods."""
        cached = self._effective.get(jurisdiction)
        if cached is None:
            cached = self._effective[jurisdiction] = self._compute(jurisdiction)
        return cached

    def _compute(self, jurisdiction: str) -> dict[str, Attribute]:
        if jurisdiction not in self.overlays:
            raise SpecificationError(
                f"specification {self.spec_id} v{self.version} has no overlay for jurisdiction "
                f"{jurisdiction!r}; it covers {', '.join(sorted(self.overlays)) or 'none'}"
            )
        ov = self.overlays[jurisdiction]
        out = dict(self.attributes)
        for aid, methods_by_j in self.method_equivalence.items():
            if aid in out and jurisdiction in methods_by_j:
                out[aid] = replace(out[aid], methods=methods_by_j[jurisdiction])
        for aid, change in ov.tighten.items():
            out[aid] = _apply_tighten(out[aid], change, ov)
        for aid, methods in ov.methods.items():
            out[aid] = replace(out[aid], methods=methods)
        out.update(ov.add)
        return out


def _dec(v: Any, where: str) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise SpecificationError(f"{where}: {v!r} is not a decimal number")
    try:
        return Decimal(str(v))
    except InvalidOperation as e:
        raise SpecificationError(f"{where}: {v!r} is not a decimal number") from e


def _bounds(lim: dict[str, Any], where: str) -> tuple[Bound | None, Bound | None]:
    unknown = set(lim) - {"min", "above", "max", "below"}
    if unknown:
        raise SpecificationError(
            f"{where}: unknown limit keys {sorted(unknown)}; use min "
            "(>=), above (>), max (<=), below (<)"
        )
    if ("min" in lim and "above" in lim) or ("max" in lim and "below" in lim):
        raise SpecificationError(f"{where}: give either min or above, and either max or below")
    lower = (
        Bound(_dec(lim["min"], where), True)
        if "min" in lim
        else Bound(_dec(lim["above"], where), False)
        if "above" in lim
        else None
    )
    upper = (
        Bound(_dec(lim["max"], where), True)
        if "max" in lim
        else Bound(_dec(lim["below"], where), False)
        if "below" in lim
        else None
    )
    if (
        lower
        and upper
        and (
            lower.value > upper.value
            or (lower.value == upper.value and not (lower.inclusive and upper.inclusive))
        )
    ):
        raise SpecificationError(f"{where}: the limit admits no value")
    return lower, upper


def _attribute(aid: str, d: Any, where: str) -> Attribute:
    if not isinstance(d, dict):
        raise SpecificationError(f"{where}: attribute {aid} must be a mapping")
    kind = d.get("kind", "numeric")
    if kind not in KINDS:
        raise SpecificationError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    timing = d.get("timing", "before_release")
    if timing not in TIMINGS:
        raise SpecificationError(f"{where}: timing {timing!r} is not one of {', '.join(TIMINGS)}")
    unit = str(d.get("unit", ""))
    lower = upper = None
    accepted: tuple[str, ...] = ()
    if kind in ("numeric", "dose"):
        try:
            dim = dimension(unit if unit or kind == "numeric" else "1")
        except SpecificationError as e:
            raise SpecificationError(f"{where}: {e}") from e
        if kind == "dose" and dim[0] != "count":
            raise SpecificationError(
                f"{where}: a dose is a number of cells ('{{cells}}', '10*6{{cells}}'), "
                f"not {unit!r} ({dim[0]})"
            )
    elif unit:
        try:
            check_ucum(unit)
        except UcumError as e:
            raise SpecificationError(f"{where}: {e}") from e
    if kind == "numeric":
        lower, upper = _bounds(d.get("limit") or {}, f"{where}.limit")
        if lower is None and upper is None:
            raise SpecificationError(f"{where}: a numeric attribute needs a limit")
    elif kind == "qualitative":
        accepted = tuple(str(a) for a in d.get("accepted", []))
        if not accepted:
            raise SpecificationError(f"{where}: a qualitative attribute lists its accepted results")
    methods = d.get("methods")
    return Attribute(
        id=aid,
        name=str(d.get("name", aid)),
        kind=kind,
        unit=unit,
        lower=lower,
        upper=upper,
        accepted=accepted,
        methods=tuple(str(m) for m in methods) if methods else None,
        timing=timing,
        clause=str(d.get("clause", "")),
    )


def _stricter_lower(new: Bound | None, base: Bound | None) -> bool:
    if base is None:
        return True
    if new is None:
        return False
    return new.value > base.value or (
        new.value == base.value and (base.inclusive or not new.inclusive)
    )


def _stricter_upper(new: Bound | None, base: Bound | None) -> bool:
    if base is None:
        return True
    if new is None:
        return False
    return new.value < base.value or (
        new.value == base.value and (base.inclusive or not new.inclusive)
    )


def _apply_tighten(base: Attribute, change: dict[str, Any], ov: Overlay) -> Attribute:
    where = f"overlay {ov.jurisdiction}: {base.id}"
    why = f" ({ov.clause})" if ov.clause else ""
    new = base
    if "limit" in change:
        if base.kind != "numeric":
            raise SpecificationError(f"{where}: a {base.kind} attribute has no numeric limit")
        lim = dict(change["limit"])
        unit = str(change.get("unit", base.unit))
        lower, upper = _bounds(lim, where)
        if unit != base.unit:
            lower = lower and Bound(convert(lower.value, unit, base.unit), lower.inclusive)
            upper = upper and Bound(convert(upper.value, unit, base.unit), upper.inclusive)
        # A bound the overlay does not mention stays as in the baseline.
        lower = lower if ("min" in lim or "above" in lim) else base.lower
        upper = upper if ("max" in lim or "below" in lim) else base.upper
        if not _stricter_lower(lower, base.lower):
            raise LooseningOverlayError(
                f"{where}: lower limit {lower.describe(True, base.unit) if lower else '(none)'} "
                f"loosens the baseline {base.lower.describe(True, base.unit) if base.lower else ''}"
                f"{why}; an overlay may only tighten"
            )
        if not _stricter_upper(upper, base.upper):
            raise LooseningOverlayError(
                f"{where}: upper limit {upper.describe(False, base.unit) if upper else '(none)'} "
                f"loosens the baseline "
                f"{base.upper.describe(False, base.unit) if base.upper else ''}{why}; an overlay "
                "may only tighten"
            )
        new = replace(new, lower=lower, upper=upper)
    if "accepted" in change:
        acc = tuple(str(a) for a in change["accepted"])
        extra = set(acc) - set(base.accepted)
        if extra or not acc:
            raise LooseningOverlayError(
                f"{where}: accepted results {sorted(extra) or '(none)'} are not accepted by the "
                f"baseline{why}; an overlay may only narrow them"
            )
        new = replace(new, accepted=acc)
    if "timing" in change:
        if change["timing"] not in TIMINGS:
            raise SpecificationError(f"{where}: timing {change['timing']!r} is not valid")
        if base.timing == "before_release" and change["timing"] == "after_release":
            raise LooseningOverlayError(
                f"{where}: moving the result from before to after release loosens the baseline{why}"
            )
        new = replace(new, timing=change["timing"])
    if "clause" in change:
        new = replace(new, clause=str(change["clause"]))
    unknown = set(change) - {"limit", "unit", "accepted", "timing", "clause"}
    if unknown:
        raise SpecificationError(f"{where}: cannot change {sorted(unknown)} in an overlay")
    return new


def _shelf_life(d: Any) -> int | None:
    """``shelf_life: {value: "9", unit: mo}``-style durations, in whole days (UCUM ``d``, ``wk``,
    ``h``; a month or year is refused: their length in days is not exact)."""
    if d is None:
        return None
    if not isinstance(d, dict) or set(d) != {"value", "unit"}:
        raise SpecificationError('shelf_life: give {value, unit}, e.g. {value: "270", unit: d}')
    unit = str(d["unit"])
    if unit not in ("d", "wk", "h"):
        raise SpecificationError(
            f"shelf_life: unit {unit!r} is not one of d, wk, h (months and years vary in length)"
        )
    days = convert(_dec(d["value"], "shelf_life"), unit, "d")
    if days <= 0 or days != days.to_integral_value():
        raise SpecificationError(
            f"shelf_life: {d['value']} {unit} is not a positive whole number of days"
        )
    return int(days)


def _dose_range(d: Any, base: str, where: str) -> tuple[Decimal, Decimal] | None:
    """A band's ``{min, max, unit}`` in cells (``total``) or cells per kg (``per_kg``).  The unit
    is optional (bare figures are cells, as before units were written: ``{cells}`` and
    ``{cells}/kg``); given, it is any count of that dimension, e.g. ``10*6{cells}/kg``."""
    if d is None:
        return None
    if not isinstance(d, dict) or "min" not in d or "max" not in d:
        raise SpecificationError(f"{where}: give {{min, max}} and, optionally, unit")
    unknown = set(d) - {"min", "max", "unit"}
    if unknown:
        raise SpecificationError(f"{where}: unknown keys {sorted(unknown)}; use min, max, unit")
    unit = str(d.get("unit", base))
    try:
        lo = convert(_dec(d["min"], where), unit, base)
        hi = convert(_dec(d["max"], where), unit, base)
    except SpecificationError as e:
        raise SpecificationError(f"{where}: {e}") from e
    if lo > hi:
        raise SpecificationError(f"{where}: min {d['min']} is above max {d['max']}")
    return lo, hi


def parse_spec(content: dict[str, Any]) -> Spec:
    """Validate a specification document's content; refuse loosening overlays."""
    for key in ("spec_id", "version", "attributes", "overlays"):
        if key not in content:
            raise SpecificationError(f"specification: missing {key!r}")
    attrs = {
        str(k): _attribute(str(k), v, f"attribute {k}") for k, v in content["attributes"].items()
    }
    equiv: dict[str, dict[str, tuple[str, ...]]] = {}
    for aid, by_j in (content.get("method_equivalence") or {}).items():
        if aid not in attrs:
            raise SpecificationError(f"method_equivalence: {aid} is not an attribute")
        equiv[aid] = {str(j): tuple(str(m) for m in ms) for j, ms in by_j.items()}
        base = attrs[aid].methods
        for j, ms in equiv[aid].items():
            if base is not None and set(ms) - set(base):
                raise LooseningOverlayError(
                    f"method_equivalence {aid} {j}: methods {sorted(set(ms) - set(base))} are "
                    "not accepted by the baseline"
                )
    bands = []
    for i, b in enumerate((content.get("dosing") or {}).get("bands", [])):
        where = f"dosing band {i + 1}"
        lo = (
            Bound(_dec(b["min_weight_kg"], where), True)
            if "min_weight_kg" in b
            else Bound(_dec(b["above_weight_kg"], where), False)
            if "above_weight_kg" in b
            else None
        )
        hi = (
            Bound(_dec(b["max_weight_kg"], where), True)
            if "max_weight_kg" in b
            else Bound(_dec(b["below_weight_kg"], where), False)
            if "below_weight_kg" in b
            else None
        )
        per_kg = _dose_range(b.get("per_kg"), "/kg", f"{where} per_kg")
        total = _dose_range(b.get("total"), "1", f"{where} total")
        if (per_kg is None) == (total is None):
            raise SpecificationError(f"{where}: give per_kg or total")
        bands.append(DoseBand(lo, hi, per_kg, total))
    spec = Spec(
        spec_id=str(content["spec_id"]),
        version=str(content["version"]),
        product=str(content.get("product", "")),
        strength=str(content.get("strength", "")),
        shelf_life_days=_shelf_life(content.get("shelf_life")),
        attributes=attrs,
        overlays={},
        method_equivalence=equiv,
        dose_bands=tuple(bands),
    )
    if any(a.kind == "dose" for a in attrs.values()) and not bands:
        raise SpecificationError("a dose attribute needs dosing bands")
    overlays = {}
    for j, raw in content["overlays"].items():
        o = raw or {}
        tighten = {str(k): dict(v) for k, v in (o.get("tighten") or {}).items()}
        for aid in tighten:
            if aid not in attrs:
                raise SpecificationError(
                    f"overlay {j}: tightens {aid}, which is not in the baseline (use add)"
                )
        add = {
            str(k): _attribute(str(k), v, f"overlay {j} attribute {k}")
            for k, v in (o.get("add") or {}).items()
        }
        for aid in add:
            if aid in attrs:
                raise SpecificationError(
                    f"overlay {j}: adds {aid}, which is already in the baseline (use tighten)"
                )
        methods = {str(k): tuple(str(m) for m in v) for k, v in (o.get("methods") or {}).items()}
        for aid, ms in methods.items():
            if aid not in attrs:
                raise SpecificationError(f"overlay {j}: methods for unknown attribute {aid}")
            allowed = equiv.get(aid, {}).get(str(j)) or attrs[aid].methods
            if allowed is not None and set(ms) - set(allowed):
                raise LooseningOverlayError(
                    f"overlay {j}: {aid} methods {sorted(set(ms) - set(allowed))} are not "
                    "accepted by the baseline; an overlay may only narrow them"
                )
        overlays[str(j)] = Overlay(str(j), str(o.get("clause", "")), tighten, add, methods)
    spec = replace(spec, overlays=overlays, _effective={})
    for j in overlays:
        spec.for_jurisdiction(j)  # applies every tightening now: loosening is refused at load
    return spec
