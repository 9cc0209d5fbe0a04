"""FHIR R5 export of a batch analysis (PQ/CMC style), built and validated with ``fhir.resources``.

A ``collection`` Bundle holding: the batch as ``Medication.batch`` (lot number; the COI as an
identifier); a ``DiagnosticReport`` whose subject is that Medication, naming the specification
and jurisdiction and concluding with the disposition; one ``Observation`` per attribute with its
value (``valueQuantity`` in UCUM for numeric results, ``valueString`` otherwise), the limit as a
reference range, and a conforms / does-not-conform interpretation.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fhir.resources.bundle import Bundle

from server.review import cqa_panel

UCUM = "http://unitsofmeasure.org"
CONFORMANCE = "urn:ctgtp:fhir:conformance"  # conforms | does-not-conform | pending | missing
ATTRIBUTE = "urn:ctgtp:fhir:cqa"
COI_SYSTEM = "urn:oid:1.3.6.1.4.1.57346.040"  # ISBT 128 data structure 040 (COI)

_INTERPRETATION = {
    "pass": ("conforms", "Conforms"),
    "fail": ("does-not-conform", "Does not conform"),
    "pending": ("pending", "Result pending"),
    "missing": ("missing", "No result"),
}


def _value(result: dict[str, Any] | None, unit: str | None) -> dict[str, Any]:
    if not result or "value" not in result:
        return {}
    v = result["value"]
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        return {"valueString": str(v)}
    u = str(result.get("unit", unit or "1"))
    return {"valueQuantity": {"value": d, "unit": u, "system": UCUM, "code": u}}


def batch_bundle(view: dict[str, Any], jurisdiction: str) -> Bundle:
    cqa = cqa_panel(view, jurisdiction)
    results = (view.get("results") or {}).get("results", {})
    disp = [d for d in view["dispositions"] if d["jurisdiction"] == jurisdiction]
    med_id = "batch"
    med: dict[str, Any] = {
        "resourceType": "Medication",
        "id": med_id,
        "identifier": [{"system": COI_SYSTEM, "value": view["coi"]}] if view.get("coi") else [],
        "code": {"text": view["mbr"]},
        "batch": {"lotNumber": view["batch_id"]},
    }
    observations = []
    for i, v in enumerate(cqa["verdicts"]):
        code, display = _INTERPRETATION[v["status"]]
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"obs-{i + 1}",
            "status": "final" if v["status"] in ("pass", "fail") else "preliminary",
            "code": {
                "coding": [{"system": ATTRIBUTE, "code": v["attribute"], "display": v["name"]}],
                "text": v["name"],
            },
            "subject": {"reference": f"Medication/{med_id}"},
            "interpretation": [
                {
                    "coding": [{"system": CONFORMANCE, "code": code, "display": display}],
                    "text": display,
                }
            ],
            "referenceRange": [{"text": v["limit"]}],
            "note": [{"text": f"{v['explanation']} ({v['clause']})"}],
            **_value(results.get(v["attribute"]), None),
        }
        observations.append(obs)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": "batch-analysis",
        "status": "final" if cqa["disposition"] in ("releasable", "not_releasable") else "partial",
        "code": {
            "text": f"Batch analysis against {cqa['spec_id']} v{cqa['spec_version']} "
            f"({jurisdiction})"
        },
        "subject": {"reference": f"Medication/{med_id}"},
        "result": [{"reference": f"Observation/{o['id']}"} for o in observations],
        "conclusion": (
            f"{disp[-1]['disposition']} by {disp[-1]['signature']['printed_name']}"
            if disp
            else f"candidate disposition: {cqa['disposition']} (not yet decided)"
        ),
    }
    if disp:
        report["issued"] = disp[-1]["decided_at"]
    entries = [
        {"fullUrl": f"urn:ctgtp:{r['resourceType']}/{r['id']}", "resource": r}
        for r in (med, report, *observations)
    ]
    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "identifier": {
                "system": "urn:ctgtp:batch-analysis",
                "value": f"{view['batch_id']}/{jurisdiction}/{view['record_hash'][:16]}",
            },
            "entry": entries,
        }
    )


def batch_bundle_json(view: dict[str, Any], jurisdiction: str) -> bytes:
    return batch_bundle(view, jurisdiction).model_dump_json(exclude_none=True).encode()
