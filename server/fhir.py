"""FHIR R5 exports shaped by HL7's Pharmaceutical Quality IG (PQ, ``hl7.fhir.uv.pharm-quality``).

:func:`batch_bundle` is a batch analysis (``Bundle-batch-analysis-pq``): a ``collection`` Bundle of

* the manufacturer (``Organization``; it also stands for the QC laboratory unless a result names
  its own), the active substance (``SubstanceDefinition``);
* the batch (``Medication`` with ``batch.lotNumber``, the manufacturing date and the expiry; the
  chain of identity as an identifier);
* the specification in force in the jurisdiction (``PlanDefinition``, one action per attribute,
  each pointing at its ``ObservationDefinition``: method and acceptance criteria);
* the analysis (``DiagnosticReport``, concluding with the disposition) and one ``Observation`` per
  attribute: value in UCUM, ``method``, ``effective``, ``performer``, a numeric ``referenceRange``,
  a v3-ObservationInterpretation code, and R5's status (``registered`` when there is no result yet).

:func:`spec_bundle` is a specification (``Bundle-drug-product-specification-pq``): product,
ingredient, substance, manufacturer, the ``PlanDefinition`` and its ``ObservationDefinition``\\s,
one per attribute and jurisdiction group (identical definitions are shared).

Every entry's ``fullUrl`` is a ``urn:uuid`` derived (UUID v5) from what it describes, and every
reference inside the bundle is that ``urn:uuid``, which R5 resolves by exact match (Bundle,
"Resolving references in Bundles").  The same record gives the same bundle, bar ``timestamp``.
Every resource carries a generated narrative.  Identifier and code systems are HL7's where HL7
has one (UCUM, v3-ObservationInterpretation, data-absent-reason, PQ's organisation types) and
otherwise this project's URL namespace, :data:`NS` (``docs/standards.md`` lists them).

What this module does not do: read the database or a clock (the caller passes the batch view,
the specification and the time), or check the result: the tests validate it against the R5 JSON
schema, the R5 invariants (FHIRPath) and the PQ profiles' cardinalities.

Over 400 lines: one short builder per resource of the PQ bundle, read together against the
profiles.
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ebr_core.errors import SpecificationError
from ebr_core.spec.calculators import dose_range
from ebr_core.spec.model import Attribute, Bound, Spec
from ebr_core.spec.units import LEGACY, convert, legacy_note
from ebr_core.ucum import is_ucum
from ebr_core.units_display import display_quantity, display_unit
from server.quality.views import cqa_panel

if TYPE_CHECKING:  # fhir.resources takes a quarter of a second to import: only exports load it
    from fhir.resources.bundle import Bundle


def _bundle(data: dict[str, Any]) -> Bundle:
    """``data`` validated as a FHIR R5 Bundle (fhir.resources is imported here, at first use)."""
    from fhir.resources.bundle import Bundle

    return Bundle.model_validate(data)


UCUM = "http://unitsofmeasure.org"
NS = "https://ctgtp.dev/fhir"
COI_SYSTEM = f"{NS}/sid/coi"  # the chain of identity as the batch carries it (ISBT 128 / GS1)
BATCH_SYSTEM = f"{NS}/sid/batch"
SITE_SYSTEM = f"{NS}/sid/site"
LAB_SYSTEM = f"{NS}/sid/laboratory"
SPEC_SYSTEM = f"{NS}/sid/specification"
ANALYSIS_SYSTEM = f"{NS}/sid/batch-analysis"
ATTRIBUTE = f"{NS}/CodeSystem/cqa"
METHOD = f"{NS}/CodeSystem/method"
JURISDICTION = f"{NS}/CodeSystem/jurisdiction"
OBSDEF_URL = f"{NS}/ObservationDefinition"
PLAN_URL = f"{NS}/PlanDefinition"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/pharmaceutical-organization-type"
ISO3166 = "urn:iso:std:iso:3166"
PQ = "http://hl7.org/fhir/uv/pharm-quality/StructureDefinition/"
PROFILE = {
    "Bundle": PQ + "Bundle-batch-analysis-pq",
    "SpecBundle": PQ + "Bundle-drug-product-specification-pq",
    "Organization": PQ + "Organization-drug-pq",
    "SubstanceDefinition": PQ + "SubstanceDefinition-component-substance-drug-pq",
    "Medication": PQ + "Medication-batch-information-drug-pq",
    "PlanDefinition": PQ + "PlanDefinition-drug-pq",
    "ObservationDefinition": PQ + "ObservationDefinition-test-method-drug-pq",
    "DiagnosticReport": PQ + "DiagnosticReport-analysis-drug-pq",
    "Observation": PQ + "Observation-test-result-drug-pq",
    "MedicinalProductDefinition": PQ + "MedicinalProductDefinition-drug-product-pq",
    "Ingredient": PQ + "Ingredient-drug-pq",
}
QUALIFIED_TEXT = PQ + "Extension-qualified-value-text-pq"

# Verdict -> (v3-ObservationInterpretation code, display).  N: within the reference range; EX:
# outside the inclusion range of the protocol (here, the specification).
_INTERPRETATION = {"pass": ("N", "Normal"), "fail": ("EX", "outside threshold")}
# ISO 3166 where the jurisdiction is a country (the UK is GB); the EU is not one.
_COUNTRY = {
    "UK": ("GB", "United Kingdom"),
    "US": ("US", "United States"),
    "SG": ("SG", "Singapore"),
}
_JURISDICTION_NAME = {"EU": "European Union", **{k: v[1] for k, v in _COUNTRY.items()}}
_ROOT = uuid.UUID("8a0f6c1e-4be4-5a55-9b0e-2d6c0c2f7c19")  # this project's UUID v5 namespace


@dataclass(frozen=True)
class Manufacturer:
    """Who made (and, unless a result says otherwise, tested) the batch."""

    site_id: str
    name: str
    country: str | None = None  # ISO 3166 alpha-2


def _uuid(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_ROOT, chr(31).join(parts))}"


def _narrative(title: str, rows: list[tuple[str, str]]) -> dict[str, Any]:
    e = html.escape
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows if v)
    div = f'<div xmlns="http://www.w3.org/1999/xhtml"><p><b>{e(title)}</b></p>'
    div += f"<table>{body}</table></div>" if body else "</div>"
    return {"status": "generated", "div": div}


def _ref(url: str, display: str | None = None) -> dict[str, Any]:
    return {"reference": url, **({"display": display} if display else {})}


def _jurisdiction_cc(j: str) -> dict[str, Any]:
    coding = [{"system": JURISDICTION, "code": j, "display": _JURISDICTION_NAME.get(j, j)}]
    if j in _COUNTRY:
        coding.insert(0, {"system": ISO3166, "code": _COUNTRY[j][0], "display": _COUNTRY[j][1]})
    return {"coding": coding, "text": _JURISDICTION_NAME.get(j, j)}


def _ucum_code(unit: str) -> str:
    """The UCUM code the export states: a legacy record's ``[EU]/mL`` meant ``{EU}/mL``."""
    return LEGACY.get(unit, unit)


def _quantity(value: Decimal, unit: str) -> dict[str, Any]:
    code = _ucum_code(unit)
    shown = display_unit(code)
    return {"value": value, **({"unit": shown} if shown else {}), "system": UCUM, "code": code}


def _organization(m: Manufacturer, url: str, lab: bool) -> dict[str, Any]:
    kinds = [("drug-product-manufacture", "Drug Product Manufacture")]
    if lab:
        kinds.append(("analytical-testing-release", "Analytical Testing - Release"))
    org: dict[str, Any] = {
        "resourceType": "Organization",
        "id": url.rsplit(":", 1)[-1],
        "meta": {"profile": [PROFILE["Organization"]]},
        "text": _narrative(f"Manufacturer {m.name}", [("Site", m.site_id)]),
        "identifier": [{"system": SITE_SYSTEM, "value": m.site_id}],
        "active": True,
        "type": [
            {"coding": [{"system": ORG_TYPE, "code": c, "display": d}], "text": d} for c, d in kinds
        ],
        "name": m.name,
    }
    if m.country:
        org["contact"] = [{"address": {"use": "work", "country": m.country}}]
    return org


def _substance(product: str, url: str, org_url: str) -> dict[str, Any]:
    return {
        "resourceType": "SubstanceDefinition",
        "id": url.rsplit(":", 1)[-1],
        "meta": {"profile": [PROFILE["SubstanceDefinition"]]},
        "text": _narrative("Active substance", [("Name", product)]),
        "classification": [{"text": "Cellular therapy: genetically modified autologous cells"}],
        "manufacturer": [_ref(org_url)],
        "name": [{"name": product, "preferred": True}],
    }


def _range(a: Attribute) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.lower is not None:
        out["low"] = _quantity(a.lower.value, a.unit)
    if a.upper is not None:
        out["high"] = _quantity(a.upper.value, a.unit)
    return out


def _limit_text(a: Attribute) -> str:
    """The limit as a person reads it (``< 5 EU/mL``); exclusive bounds are only in the text,
    since a FHIR range's ends are inclusive."""
    if a.kind == "qualitative":
        return " or ".join(a.accepted)
    if a.kind == "dose":
        return "per the dosing bands of the specification (weight-banded)"

    def one(b: Bound, lower: bool) -> str:
        op = (">=" if b.inclusive else ">") if lower else ("<=" if b.inclusive else "<")
        return f"{op} {display_quantity(b.value, _ucum_code(a.unit))}"

    parts = [one(b, lo) for b, lo in ((a.lower, True), (a.upper, False)) if b is not None]
    return " and ".join(parts)


def _obsdef(
    spec: Spec, a: Attribute, url: str, canonical: str, jurisdictions: list[str]
) -> dict[str, Any]:
    limit = _limit_text(a)
    methods = list(a.methods or ())
    od: dict[str, Any] = {
        "resourceType": "ObservationDefinition",
        "id": url.rsplit(":", 1)[-1],
        "meta": {"profile": [PROFILE["ObservationDefinition"]]},
        "text": _narrative(
            f"{a.name} ({', '.join(jurisdictions)})",
            [
                ("Acceptance", limit),
                ("Methods", ", ".join(methods) or "any validated method"),
                ("Due", a.timing.replace("_", " ")),
                ("Clause", a.clause),
            ],
        ),
        "url": canonical,
        "identifier": {"system": SPEC_SYSTEM, "value": f"{spec.spec_id}/{a.id}"},
        "version": spec.version,
        "title": a.name,
        "status": "active",
        "jurisdiction": [_jurisdiction_cc(j) for j in jurisdictions],
        "code": {
            "coding": [{"system": ATTRIBUTE, "code": a.id, "display": a.name}],
            "text": a.name,
        },
        "permittedDataType": ["Quantity"] if a.kind != "qualitative" else ["string"],
    }
    if methods:
        od["method"] = {
            "coding": [{"system": METHOD, "code": m} for m in methods],
            "text": " or ".join(methods),
        }
    if a.kind != "qualitative" and a.unit:
        code = _ucum_code(a.unit if a.kind == "numeric" else "{cells}" if a.unit == "1" else a.unit)
        od["permittedUnit"] = [{"system": UCUM, "code": code, "display": display_unit(code)}]
    qv: dict[str, Any] = {
        "extension": [{"url": QUALIFIED_TEXT, "valueString": limit}],
        "rangeCategory": "reference",
    }
    if a.kind == "numeric":
        qv.update({"range": _range(a)} if (a.lower or a.upper) else {})
    od["qualifiedValue"] = [qv]
    return od


def _plan(
    spec: Spec, url: str, groups: list[tuple[str, list[tuple[Attribute, str]]]]
) -> dict[str, Any]:
    """One action group per jurisdiction (or one for all), one action per attribute."""
    rows = [(j, ", ".join(a.name for a, _ in items)) for j, items in groups]
    return {
        "resourceType": "PlanDefinition",
        "id": url.rsplit(":", 1)[-1],
        "meta": {"profile": [PROFILE["PlanDefinition"]]},
        "text": _narrative(f"Specification {spec.spec_id} v{spec.version}", rows),
        "url": f"{PLAN_URL}/{spec.spec_id}",
        "identifier": [{"system": SPEC_SYSTEM, "value": spec.spec_id}],
        "version": spec.version,
        "name": "".join(c if c.isalnum() else "_" for c in spec.spec_id),
        "title": f"{spec.spec_id} v{spec.version}: {spec.product}".rstrip(": "),
        "type": {"text": "Specification"},
        "status": "active",
        "description": spec.product or spec.spec_id,
        "action": [
            {
                "title": j,
                "code": {"text": "Jurisdiction"},
                "action": [
                    {
                        "title": a.name,
                        "code": {"text": "Test"},
                        "definitionCanonical": canonical,
                    }
                    for a, canonical in items
                ],
            }
            for j, items in groups
        ],
    }


def _definitions(
    spec: Spec, jurisdictions: list[str], owner: str
) -> tuple[list[dict[str, Any]], list[tuple[str, list[tuple[Attribute, str]]]], dict[str, str]]:
    """ObservationDefinitions for the attributes in force in each jurisdiction (an attribute with
    the same effective definition in several jurisdictions gets one), the plan's groups, and the
    urn:uuid of each jurisdiction's definition per attribute (key ``J/attribute``)."""
    by_key: dict[tuple[str, Attribute], list[str]] = {}
    for j in jurisdictions:
        for aid, a in sorted(spec.for_jurisdiction(j).items()):
            by_key.setdefault((aid, a), []).append(j)
    defs: list[dict[str, Any]] = []
    where: dict[str, str] = {}
    canon: dict[tuple[str, Attribute], str] = {}
    for n, ((aid, a), js) in enumerate(by_key.items(), start=1):
        url = _uuid(owner, "od", spec.spec_id, spec.version, aid, *js)
        canonical = f"{OBSDEF_URL}/{spec.spec_id}-{spec.version}-{aid}-{n}"
        canon[(aid, a)] = canonical
        defs.append(_obsdef(spec, a, url, canonical, js))
        for j in js:
            where[f"{j}/{aid}"] = url
    groups = [
        (j, [(a, canon[(aid, a)]) for aid, a in sorted(spec.for_jurisdiction(j).items())])
        for j in jurisdictions
    ]
    return defs, groups, where


def _entries(resources: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"fullUrl": url, "resource": r} for url, r in resources]


def _manufacturing_dates(view: dict[str, Any], spec: Spec | None) -> tuple[str | None, str | None]:
    """(manufacturing date, expiry) as FHIR dateTimes: made when the batch completed (else when it
    started), expiring after the specification's shelf life, if it states one."""
    done = [t["recorded_at"] for t in view.get("timeline", []) if t["kind"] == "batch.completed"]
    made = done[-1] if done else view.get("started_at")
    if not made or spec is None or spec.shelf_life_days is None:
        return made, None
    t = datetime.fromisoformat(made.replace("Z", "+00:00"))
    return made, (t + timedelta(days=int(spec.shelf_life_days))).date().isoformat()


def _observation(
    v: dict[str, Any],
    r: dict[str, Any] | None,
    url: str,
    med: str,
    org: str,
    od: str | None,
    entered_at: str | None,
    limit: dict[str, Any] | None,
) -> dict[str, Any]:
    has_value = bool(r) and "value" in (r or {}) and v["status"] != "missing"
    status = (
        "final" if v["status"] in ("pass", "fail") else "preliminary" if has_value else "registered"
    )
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": url.rsplit(":", 1)[-1],
        "meta": {"profile": [PROFILE["Observation"]]},
        "status": status,
        "code": {
            "coding": [{"system": ATTRIBUTE, "code": v["attribute"], "display": v["name"]}],
            "text": v["name"],
        },
        "subject": _ref(med),
        "performer": [_ref(org)],
    }
    if od:
        obs["instantiatesReference"] = _ref(od)
    tested = _iso_time((r or {}).get("tested_at")) or _iso_time(entered_at)
    if tested and status != "registered":
        obs["effectiveDateTime"] = tested
    shown = "no result yet"
    if has_value and r is not None:
        value, unit = r["value"], str(r.get("unit", "1"))
        try:
            d = Decimal(str(value))
        except InvalidOperation:
            d = Decimal("NaN")
        if not d.is_finite():  # text, or NaN / Infinity, which FHIR's decimal cannot carry
            obs["valueString"] = str(value)
            shown = str(value)
        elif not is_ucum(_ucum_code(unit)):
            # As entered: a unit that is not UCUM is text, never claimed as a UCUM code.
            obs["valueQuantity"] = {"value": d, "unit": unit}
            shown = f"{value} {unit}"
        else:
            obs["valueQuantity"] = _quantity(d, unit)
            shown = display_quantity(value, _ucum_code(unit))
        note = legacy_note(unit)
        if note:
            obs["note"] = [{"text": f"Unit as recorded: {note}."}]
    else:
        obs["dataAbsentReason"] = {
            "coding": [
                {"system": ABSENT, "code": "temp-unknown", "display": "Temporarily Unknown"}
                if v["status"] == "pending"
                else {"system": ABSENT, "code": "unknown", "display": "Unknown"}
            ],
            "text": "result pending" if v["status"] == "pending" else "no result entered",
        }
    if r and r.get("method"):
        obs["method"] = {
            "coding": [{"system": METHOD, "code": str(r["method"])}],
            "text": str(r["method"]),
        }
    if v["status"] in _INTERPRETATION:
        code, display = _INTERPRETATION[v["status"]]
        obs["interpretation"] = [
            {
                "coding": [{"system": INTERPRETATION, "code": code, "display": display}],
                "text": "conforms" if v["status"] == "pass" else "does not conform",
            }
        ]
    obs["referenceRange"] = [{**(limit or {}), "text": v["limit"]}]
    obs["note"] = [*obs.get("note", []), {"text": f"{v['explanation']} ({v['clause']})"}]
    obs["text"] = _narrative(
        v["name"],
        [
            ("Result", shown),
            ("Limit", v["limit"]),
            ("Verdict", v["status"]),
            ("Method", str((r or {}).get("method") or "")),
            ("Clause", v["clause"]),
        ],
    )
    return obs


def _iso_time(t: object) -> str | None:
    """``t`` if it is an ISO 8601 date-time with a time zone (what FHIR's dateTime needs with a
    time), else None: a result's free-text test date is left out rather than break the export."""
    if not isinstance(t, str) or len(t) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if parsed.tzinfo is not None else None


def _laboratory(name: str, url: str) -> dict[str, Any]:
    """A testing laboratory a result names (its name is all the record says of it)."""
    return {
        "resourceType": "Organization",
        "id": url.rsplit(":", 1)[-1],
        "meta": {"profile": [PROFILE["Organization"]]},
        "text": _narrative(f"Laboratory {name}", [("Role", "release testing")]),
        "identifier": [{"system": LAB_SYSTEM, "value": name}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": ORG_TYPE,
                        "code": "analytical-testing-release",
                        "display": "Analytical Testing - Release",
                    }
                ],
                "text": "Analytical Testing - Release",
            }
        ],
        "name": name,
    }


def _numeric_limit(
    a: Attribute | None, spec: Spec | None, results: dict[str, Any]
) -> dict[str, Any] | None:
    """The reference range as numbers: the attribute's bounds, or for a dose the band's range
    for this patient's weight."""
    if a is None:
        return None
    if a.kind == "numeric":
        return _range(a) or None
    if a.kind == "dose" and spec is not None:
        w = results.get("patient_weight")
        if not isinstance(w, dict) or "value" not in w:
            return None
        try:
            weight = convert(Decimal(str(w["value"])), str(w.get("unit", "kg")), "kg")
            lo, hi, _ = dose_range(spec.dose_bands, weight)
        except (InvalidOperation, SpecificationError):
            return None  # a weight that is no number, or no band covers: the verdict says so
        return {
            "low": _quantity(lo.normalize(), "{cells}"),
            "high": _quantity(hi.normalize(), "{cells}"),
        }
    return None


def batch_bundle(
    view: dict[str, Any],
    jurisdiction: str,
    *,
    spec: Spec | None = None,
    now: datetime | None = None,
    manufacturer: Manufacturer | None = None,
) -> Bundle:
    """The batch analysis of ``view`` in ``jurisdiction`` (PQ ``Bundle-batch-analysis-pq``).

    ``spec`` is the specification the results were evaluated against (its structured limits,
    methods and shelf life); without it the specification entries carry the verdicts' limit
    text only.  ``now`` is the export time (``Bundle.timestamp``)."""
    cqa = cqa_panel(view, jurisdiction)
    stored = view.get("results") or {}
    results: dict[str, Any] = stored.get("results", {})
    entered_at = stored.get("entered_at")
    disp = [d for d in view["dispositions"] if d["jurisdiction"] == jurisdiction]
    m = manufacturer or Manufacturer(view["site_id"], f"Manufacturing site {view['site_id']}")
    key = (view["batch_id"], jurisdiction, view["record_hash"])
    org, sub, med, plan, rep = (_uuid(*key, k) for k in ("org", "sub", "med", "plan", "report"))
    product = (spec.product if spec else "") or view["mbr"]
    made, expires = _manufacturing_dates(view, spec)

    medication: dict[str, Any] = {
        "resourceType": "Medication",
        "id": med.rsplit(":", 1)[-1],
        "meta": {"profile": [PROFILE["Medication"]]},
        "text": _narrative(
            f"Batch {view['batch_id']}",
            [
                ("Product", product),
                ("Chain of identity", view.get("coi") or ""),
                ("Manufactured", made or ""),
                ("Expires", expires or "not stated"),
                ("Manufacturer", m.name),
            ],
        ),
        "identifier": [{"system": BATCH_SYSTEM, "value": view["batch_id"]}]
        + ([{"system": COI_SYSTEM, "value": view["coi"]}] if view.get("coi") else []),
        "code": {"text": product},
        "status": "active",
        "marketingAuthorizationHolder": _ref(org, m.name),
        "ingredient": [{"item": {"reference": _ref(sub)}, "isActive": True}],
        "batch": {
            "lotNumber": view["batch_id"],
            **({"expirationDate": expires} if expires else {}),
        },
    }
    if made:
        # R5 Medication.batch has no manufacturing date element: HL7's extension
        # medication-manufacturingBatch carries it, as PQ's own batch analysis example writes it.
        medication["batch"]["extension"] = [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/medication-manufacturingBatch",
                "extension": [{"url": "manufacturingDate", "valueDateTime": made}],
            }
        ]
    if disp:  # PQ's release date of the batch, in this jurisdiction
        medication["batch"].setdefault("extension", []).append(
            {"url": PQ + "Extension-batch-release-date-pq", "valueDateTime": disp[-1]["decided_at"]}
        )
    resources: list[tuple[str, dict[str, Any]]] = [
        (org, _organization(m, org, lab=True)),
        (sub, _substance(product, sub, org)),
    ]
    where: dict[str, str] = {}
    attrs: dict[str, Attribute] = {}
    if spec is not None:
        defs, groups, where = _definitions(spec, [jurisdiction], "/".join(key))
        attrs = spec.for_jurisdiction(jurisdiction)
        resources.append((plan, _plan(spec, plan, groups)))
        resources += [(f"urn:uuid:{d['id']}", d) for d in defs]
    else:
        defs_free = []
        for v in cqa["verdicts"]:
            url = _uuid(*key, "od", v["attribute"])
            where[f"{jurisdiction}/{v['attribute']}"] = url
            canonical = f"{OBSDEF_URL}/{cqa['spec_id']}-{cqa['spec_version']}-{v['attribute']}"
            defs_free.append((url, v, canonical))
        plan_res = {
            "resourceType": "PlanDefinition",
            "id": plan.rsplit(":", 1)[-1],
            "meta": {"profile": [PROFILE["PlanDefinition"]]},
            "text": _narrative(f"Specification {cqa['spec_id']} v{cqa['spec_version']}", []),
            "url": f"{PLAN_URL}/{cqa['spec_id']}",
            "identifier": [{"system": SPEC_SYSTEM, "value": cqa["spec_id"]}],
            "version": cqa["spec_version"],
            "type": {"text": "Specification"},
            "status": "active",
            "action": [
                {"title": v["name"], "code": {"text": "Test"}, "definitionCanonical": c}
                for _, v, c in defs_free
            ],
        }
        resources.append((plan, plan_res))
        for url, v, c in defs_free:
            resources.append(
                (
                    url,
                    {
                        "resourceType": "ObservationDefinition",
                        "id": url.rsplit(":", 1)[-1],
                        "meta": {"profile": [PROFILE["ObservationDefinition"]]},
                        "text": _narrative(v["name"], [("Acceptance", v["limit"])]),
                        "url": c,
                        "version": cqa["spec_version"],
                        "title": v["name"],
                        "status": "active",
                        "code": {
                            "coding": [{"system": ATTRIBUTE, "code": v["attribute"]}],
                            "text": v["name"],
                        },
                        "qualifiedValue": [
                            {"extension": [{"url": QUALIFIED_TEXT, "valueString": v["limit"]}]}
                        ],
                    },
                )
            )
    observations: list[tuple[str, dict[str, Any]]] = []
    labs: dict[str, str] = {}
    for v in cqa["verdicts"]:
        url = _uuid(*key, "obs", v["attribute"])
        r = results.get(v["attribute"])
        lab = r.get("laboratory") if isinstance(r, dict) else None
        performer = org
        if isinstance(lab, str) and lab.strip():
            performer = labs.setdefault(lab, _uuid(*key, "lab", lab))
        limit = _numeric_limit(attrs.get(v["attribute"]), spec, results)
        observations.append(
            (
                url,
                _observation(
                    v,
                    r if isinstance(r, dict) else None,
                    url,
                    med,
                    performer,
                    where.get(f"{jurisdiction}/{v['attribute']}"),
                    entered_at,
                    limit,
                ),
            )
        )
    final = cqa["disposition"] in ("releasable", "not_releasable")
    conclusion = (
        f"{disp[-1]['disposition']} in {jurisdiction} by {disp[-1]['signature']['printed_name']}"
        if disp
        else f"candidate disposition in {jurisdiction}: {cqa['disposition']} (not yet decided)"
    )
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": rep.rsplit(":", 1)[-1],
        "meta": {"profile": [PROFILE["DiagnosticReport"]]},
        "text": _narrative(
            f"Batch analysis {view['batch_id']} ({jurisdiction})",
            [
                ("Specification", f"{cqa['spec_id']} v{cqa['spec_version']}"),
                ("Evaluation hash", cqa.get("evaluation_hash", "")),
                ("Record hash", view["record_hash"]),
                ("Conclusion", conclusion),
            ],
        ),
        "identifier": [
            {
                "system": ANALYSIS_SYSTEM,
                "value": f"{view['batch_id']}/{jurisdiction}/{view['record_hash'][:16]}",
            }
        ],
        "status": "final" if final or disp else "partial",
        "category": [{"text": "Batch analysis (release testing)"}],
        "code": {
            "text": f"Batch analysis against {cqa['spec_id']} v{cqa['spec_version']} "
            f"({jurisdiction})"
        },
        "subject": _ref(med),
        "performer": [_ref(org)],
        "result": [_ref(url) for url, _ in observations],
        "conclusion": conclusion,
    }
    if entered_at:
        report["effectiveDateTime"] = entered_at
    if disp:
        report["issued"] = disp[-1]["decided_at"]
    # The batch, its analysis and results first (what a reader looks for), then what they cite.
    resources += [(url, _laboratory(name, url)) for name, url in sorted(labs.items())]
    resources = [(med, medication), (rep, report), *observations, *resources]
    stamp = (now or datetime.now(UTC)).astimezone(UTC).isoformat()
    return _bundle(
        {
            "resourceType": "Bundle",
            "id": _uuid(*key, "bundle").rsplit(":", 1)[-1],
            "meta": {"profile": [PROFILE["Bundle"]]},
            "identifier": {
                "system": ANALYSIS_SYSTEM,
                "value": f"{view['batch_id']}/{jurisdiction}/{view['record_hash'][:16]}",
            },
            "type": "collection",
            "timestamp": stamp,
            "entry": _entries(resources),
        }
    )


def batch_bundle_json(
    view: dict[str, Any],
    jurisdiction: str,
    *,
    spec: Spec | None = None,
    now: datetime | None = None,
    manufacturer: Manufacturer | None = None,
) -> bytes:
    b = batch_bundle(view, jurisdiction, spec=spec, now=now, manufacturer=manufacturer)
    return b.model_dump_json(exclude_none=True).encode()


def spec_bundle(
    spec: Spec,
    *,
    now: datetime,
    manufacturer: Manufacturer | None = None,
    jurisdictions: list[str] | None = None,
) -> Bundle:
    """The specification as PQ's ``Bundle-drug-product-specification-pq``: product, ingredient,
    substance, manufacturer, one ``PlanDefinition`` (an action group per jurisdiction) and the
    ``ObservationDefinition``\\s (method and acceptance criteria)."""
    js = jurisdictions or sorted(spec.overlays)
    for j in js:
        spec.for_jurisdiction(j)  # an unknown jurisdiction is refused, naming those covered
    m = manufacturer or Manufacturer("unknown", "Manufacturer not stated")
    key = ("spec", spec.spec_id, spec.version)
    org, sub, plan, mpd, ing = (_uuid(*key, k) for k in ("org", "sub", "plan", "mpd", "ing"))
    product = spec.product or spec.spec_id
    defs, groups, _ = _definitions(spec, js, "/".join(key))
    strength = spec.strength or ""
    resources: list[tuple[str, dict[str, Any]]] = [
        (
            mpd,
            {
                "resourceType": "MedicinalProductDefinition",
                "id": mpd.rsplit(":", 1)[-1],
                "meta": {"profile": [PROFILE["MedicinalProductDefinition"]]},
                "text": _narrative(
                    product,
                    [("Strength", strength), ("Specification", f"{spec.spec_id} v{spec.version}")],
                ),
                "identifier": [{"system": SPEC_SYSTEM, "value": f"{spec.spec_id}/product"}],
                "description": product,
                "name": [{"productName": product}],
            },
        ),
        (
            ing,
            {
                "resourceType": "Ingredient",
                "id": ing.rsplit(":", 1)[-1],
                "meta": {"profile": [PROFILE["Ingredient"]]},
                "text": _narrative("Active ingredient", [("Substance", product)]),
                "status": "active",
                "for": [_ref(mpd)],
                "role": {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/ingredient-role",
                            "code": "100000072072",
                            "display": "Active",
                        }
                    ],
                    "text": "Active",
                },
                "substance": {"code": {"reference": _ref(sub)}},
            },
        ),
        (sub, _substance(product, sub, org)),
        (org, _organization(m, org, lab=False)),
        (plan, _plan(spec, plan, groups)),
        *[(f"urn:uuid:{d['id']}", d) for d in defs],
    ]
    return _bundle(
        {
            "resourceType": "Bundle",
            "id": _uuid(*key, "bundle").rsplit(":", 1)[-1],
            "meta": {"profile": [PROFILE["SpecBundle"]]},
            "identifier": {"system": SPEC_SYSTEM, "value": f"{spec.spec_id}/{spec.version}"},
            "type": "collection",
            "timestamp": now.astimezone(UTC).isoformat(),
            "entry": _entries(resources),
        }
    )


def spec_bundle_json(
    spec: Spec,
    *,
    now: datetime,
    manufacturer: Manufacturer | None = None,
    jurisdictions: list[str] | None = None,
) -> bytes:
    """:func:`spec_bundle` as JSON; an unknown jurisdiction raises ``SpecificationError``
    naming those the specification covers."""
    return (
        spec_bundle(spec, now=now, manufacturer=manufacturer, jurisdictions=jurisdictions)
        .model_dump_json(exclude_none=True)
        .encode()
    )
