"""FHIR exports checked by tools and tables nobody here wrote the rules of: the official R5 JSON
schema, the R5 invariants (FHIRPath, fhirpathpy), R5's rules for references in bundles, and the
cardinalities of HL7's Pharmaceutical Quality (PQ) profiles.  Each validator is also shown to
refuse a broken bundle, so a pass means something."""

from __future__ import annotations

import copy
import gzip
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ebr_core.document import load_yaml
from ebr_core.spec import Spec, parse_spec
from server.errors import Unprocessable
from server.fhir import NS, batch_bundle_json, spec_bundle_json

fhirpathpy = pytest.importorskip("fhirpathpy")
R5 = pytest.importorskip("fhirpathpy.models").models["r5"]
jsonschema_rs = pytest.importorskip("jsonschema_rs")

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "fhir"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PQ = "http://hl7.org/fhir/uv/pharm-quality/StructureDefinition/"


def view() -> dict[str, Any]:
    return json.loads((FIX / "batch_view.json").read_text())


def spec() -> Spec:
    return parse_spec(load_yaml((ROOT / "ebr_core/spec/examples/cd19_commercial.yaml").read_text()))


def batch(j: str = "EU") -> dict[str, Any]:
    return json.loads(batch_bundle_json(view(), j, spec=spec(), now=NOW))


def specification() -> dict[str, Any]:
    return json.loads(spec_bundle_json(spec(), now=NOW))


BUNDLES = {"batch-EU": lambda: batch("EU"), "batch-SG": lambda: batch("SG"),
           "batch-US-undecided": lambda: batch("US"), "specification": specification}  # fmt: skip


# -- the R5 JSON schema ---------------------------------------------------------------------


@cache
def schema_validator() -> Any:
    text = gzip.decompress((FIX / "fhir.schema.json.gz").read_bytes()).decode()
    # The published decimal pattern has a stray "}" (README.md beside the fixture).
    return jsonschema_rs.validator_for(json.loads(text.replace("{1,9}})?$", "{1,9})?$")))


def schema_errors(doc: dict[str, Any]) -> list[str]:
    return [
        f"{list(e.instance_path)}: {e.message[:200]}" for e in schema_validator().iter_errors(doc)
    ]


@pytest.mark.parametrize("name", BUNDLES)
def test_the_r5_json_schema_accepts_the_exports(name: str) -> None:
    assert schema_errors(BUNDLES[name]()) == []


def test_the_schema_refuses_what_r5_does_not_have() -> None:
    """Each change alone makes the bundle invalid (the schema names the bundle, as a discriminated
    union's failure does, not the element).  The schema does not hold the value sets (a status
    'pending' passes it): test_observations_carry_r5_status... checks those."""

    def observation(b: dict[str, Any]) -> dict[str, Any]:
        return next(e["resource"] for e in b["entry"]
                    if e["resource"]["resourceType"] == "Observation")  # fmt: skip

    for change in (
        lambda o: o.update(result="92 %"),  # not an element of Observation
        lambda o: o.update(code="viability"),  # a CodeableConcept, not a string
        lambda o: o.update(performer={"reference": "x"}),  # 0..*: an array
        lambda o: o.pop("code"),  # 1..1
    ):
        b = batch()
        change(observation(b))
        assert schema_errors(b), "the schema accepted a broken bundle"


# -- the R5 invariants (FHIRPath) -----------------------------------------------------------

INVARIANTS = json.loads((FIX / "r5-invariants.json").read_text())["constraints"]
DATATYPES = {"Reference", "Quantity", "Range", "Period", "Coding", "Identifier", "Extension"}
# Need FHIRPath functions fhirpathpy does not implement (htmlChecks, lowBoundary, highBoundary,
# comparable): each is checked by a test of its own below.
NOT_FHIRPATH = {"txt-1", "txt-2", "rng-2", "per-1"}


def options(b: dict[str, Any]) -> dict[str, Any]:
    """FHIRPath functions fhirpathpy does not implement: hasValue() (a primitive with a value),
    resolve() (within the bundle, by fullUrl, R5's rule)."""
    by_url = {e["fullUrl"]: e["resource"] for e in b.get("entry", [])}

    def resolve(xs: list[Any]) -> list[Any]:
        refs = [x.get("reference") if isinstance(x, dict) else x for x in xs]
        return [by_url[r] for r in refs if r in by_url]

    return {"userInvocationTable": {
        "hasValue": {"fn": lambda xs: [len(xs) == 1 and not isinstance(xs[0], dict | list)],
                     "arity": {0: []}},
        "resolve": {"fn": resolve, "arity": {0: []}},
    }}  # fmt: skip


def fp(data: Any, expression: str, env: dict[str, Any], base: str | None = None) -> list[Any]:
    """Evaluate with the R5 model (choice types such as value[x] resolve); ``base`` types a
    data type element that has no resourceType of its own."""
    path: Any = {"base": base, "expression": expression} if base else expression
    opts = options(env["rootResource"])
    return list(fhirpathpy.evaluate(copy.deepcopy(data), path, env, R5, options=opts))


def resources(b: dict[str, Any]) -> list[dict[str, Any]]:
    return [b, *(e["resource"] for e in b["entry"])]


def nodes_of_type(model: Any, wanted: set[str]) -> list[tuple[str, Any]]:
    """Every element of the typed model whose FHIR type is in ``wanted`` (by its class)."""
    from pydantic import BaseModel

    out: list[tuple[str, Any]] = []

    def walk(m: Any) -> None:
        if isinstance(m, list):
            for x in m:
                walk(x)
            return
        if not isinstance(m, BaseModel):
            return
        name = type(m).__name__
        if name in wanted:
            out.append((name, m))
        for f in type(m).model_fields:
            walk(getattr(m, f, None))

    walk(model)
    return out


def violations(b: dict[str, Any]) -> list[str]:
    from fhir.resources.bundle import Bundle

    bad = []
    for r in resources(b):
        rt = r["resourceType"]
        env = {"resource": r, "rootResource": r, "context": r}
        for c in INVARIANTS:
            if c["key"] in NOT_FHIRPATH or c["type"] in DATATYPES or c["severity"] != "error":
                continue
            if c["type"] not in (rt, "DomainResource") or (rt == "Bundle" and c["type"] != rt):
                continue
            path = c["path"].replace("DomainResource", rt)
            targets = fp(r, path, env) if "." in path else [r]
            for t in targets:
                if fp(t, c["expression"], env) != [True]:
                    bad.append(f"{rt}/{r.get('id')} {c['key']} ({c['human']})")
    env = {"resource": b, "rootResource": b, "context": b}
    for name, node in nodes_of_type(Bundle.model_validate(b), DATATYPES):
        data = json.loads(node.model_dump_json(exclude_none=True))
        for c in INVARIANTS:
            if c["type"] != name or c["severity"] != "error" or c["path"] != name:
                continue
            if c["key"] in NOT_FHIRPATH:
                continue
            if fp(data, c["expression"], env, name) != [True]:
                bad.append(f"{name} {data} {c['key']} ({c['human']})")
    return bad


@pytest.mark.parametrize("name", BUNDLES)
def test_every_r5_invariant_holds(name: str) -> None:
    assert violations(BUNDLES[name]()) == []


def test_the_invariants_catch_a_broken_bundle() -> None:
    b = batch()
    obs = next(e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "Observation")
    obs["dataAbsentReason"] = {"text": "x"}  # obs-6: a value and a reason for no value
    obs.setdefault("valueString", "x")
    obs["referenceRange"] = [{"appliesTo": [{"text": "adults"}]}]  # obs-3: no low, high or text
    b["total"] = 3  # bdl-1: total only in a search or history
    found = " ".join(violations(b))
    assert "obs-6" in found and "obs-3" in found and "bdl-1" in found, found


def ranges(x: Any) -> list[dict[str, Any]]:
    if isinstance(x, dict):
        here = [x] if "low" in x or "high" in x else []
        return here + [r for v in x.values() for r in ranges(v)]
    if isinstance(x, list):
        return [r for v in x for r in ranges(v)]
    return []


@pytest.mark.parametrize("name", BUNDLES)
def test_every_range_runs_low_to_high(name: str) -> None:
    """rng-2: low <= high, in the same unit (the exports write both ends in one UCUM code)."""
    found = ranges(BUNDLES[name]())
    assert found
    for r in found:
        if "low" in r and "high" in r:
            assert r["low"]["code"] == r["high"]["code"]
            assert r["low"]["value"] <= r["high"]["value"]


XHTML = "{http://www.w3.org/1999/xhtml}"
ALLOWED = {"div", "p", "b", "i", "table", "tr", "th", "td", "span", "br", "ul", "li", "a"}


@pytest.mark.parametrize("name", BUNDLES)
def test_every_resource_has_a_narrative_r5_accepts(name: str) -> None:
    """txt-1/txt-2 (FHIRPath's htmlChecks(), which fhirpathpy lacks): XHTML in a div with the
    XHTML namespace, basic elements only, no script or event attributes, some text."""
    for r in resources(BUNDLES[name]())[1:]:
        div = r["text"]["div"]
        root = ET.fromstring(div)
        assert root.tag == XHTML + "div" and r["text"]["status"] == "generated"
        for el in root.iter():
            assert el.tag.removeprefix(XHTML) in ALLOWED, (r["resourceType"], el.tag)
            assert not any(k.startswith("on") for k in el.attrib)
        assert "".join(root.itertext()).strip(), r["resourceType"]


def test_a_hostile_name_in_a_narrative_is_text_not_markup() -> None:
    v = view()
    v["dispositions"][0]["signature"]["printed_name"] = "<script>alert(1)</script> & co"
    b = json.loads(batch_bundle_json(v, "EU", spec=spec(), now=NOW))
    report = next(e["resource"] for e in b["entry"]
                  if e["resource"]["resourceType"] == "DiagnosticReport")  # fmt: skip
    root = ET.fromstring(report["text"]["div"])
    assert not [el for el in root.iter() if el.tag.endswith("script")]
    assert "<script>alert(1)</script> & co" in "".join(root.itertext())


# -- references and identifiers -------------------------------------------------------------


def references(x: Any) -> list[str]:
    if isinstance(x, dict):
        here = [x["reference"]] if isinstance(x.get("reference"), str) else []
        return here + [r for v in x.values() for r in references(v)]
    if isinstance(x, list):
        return [r for v in x for r in references(v)]
    return []


@pytest.mark.parametrize("name", BUNDLES)
def test_references_resolve_by_r5s_rules(name: str) -> None:
    """R5 Bundle, "Resolving references in Bundles": a reference that is a urn:uuid resolves to
    the entry whose fullUrl is exactly it; every entry's fullUrl is a urn:uuid naming its id."""
    b = BUNDLES[name]()
    full = [e["fullUrl"] for e in b["entry"]]
    assert len(set(full)) == len(full)
    for e in b["entry"]:
        assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", e["fullUrl"])
        assert e["fullUrl"] == f"urn:uuid:{e['resource']['id']}"
    refs = references(b["entry"])
    assert refs and set(refs) <= set(full), set(refs) - set(full)
    canon = {e["resource"].get("url") for e in b["entry"]}
    plan = next(
        e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "PlanDefinition"
    )
    wanted = {a["definitionCanonical"] for g in plan["action"] for a in g.get("action", [g])
              if "definitionCanonical" in a}  # fmt: skip
    assert wanted and wanted <= canon


def systems(x: Any) -> list[str]:
    if isinstance(x, dict):
        here = [x["system"]] if isinstance(x.get("system"), str) else []
        return here + [s for v in x.values() for s in systems(v)]
    if isinstance(x, list):
        return [s for v in x for s in systems(v)]
    return []


KNOWN = ("http://unitsofmeasure.org", "http://terminology.hl7.org/CodeSystem/", "http://hl7.org/fhir/",
         "urn:iso:std:iso:3166", NS + "/")  # fmt: skip


def check_system(s: str) -> str | None:
    if s.startswith("urn:oid:"):
        arcs = s.removeprefix("urn:oid:").split(".")
        if not all(re.fullmatch(r"0|[1-9][0-9]*", a) for a in arcs) or int(arcs[0]) > 2:
            return f"{s}: not an OID (RFC 3001: arcs are numbers without leading zeros)"
        return None
    if not s.startswith(KNOWN):
        return f"{s}: not a documented system (HL7, UCUM, ISO 3166 or {NS}/)"
    return None


@pytest.mark.parametrize("name", BUNDLES)
def test_identifier_and_code_systems_are_real(name: str) -> None:
    assert [p for s in systems(BUNDLES[name]()) if (p := check_system(s))] == []
    assert check_system("urn:oid:1.3.6.1.4.1.57346.040") is not None  # the old COI system
    assert check_system("urn:ctgtp:fhir:conformance") is not None


# -- the PQ profiles' cardinalities ----------------------------------------------------------
# (resource type, min, max) of each entry slice, from the IG's StructureDefinitions
# (hl7.fhir.uv.pharm-quality, source HL7/uv-dx-pq, input/resources/structuredefinition/):
BATCH_SLICES = [  # Bundle-batch-analysis-pq.xml: Bundle.type = collection, Bundle.entry 6..*
    ("MedicinalProductDefinition", 0, 1),  # Product-Identification
    ("SubstanceDefinition", 1, None),  # Component-Substance
    ("Medication", 0, None),  # Batch-Lot-Information
    ("PlanDefinition", 1, None),  # Protocol
    ("ObservationDefinition", 1, None),  # Test-Method
    ("DiagnosticReport", 1, None),  # Report
    ("Observation", 1, None),  # Result-Observations
    ("Organization", 1, None),  # Organizations
]
SPEC_SLICES = [  # Bundle-drug-product-specification-pq.xml: collection, entry 6..*
    ("MedicinalProductDefinition", 1, 1),  # Product-Identification
    ("Ingredient", 1, None),  # Drug-Ingredient
    ("SubstanceDefinition", 1, None),  # Component-Substance
    ("PlanDefinition", 1, 1),  # Protocol
    ("ObservationDefinition", 1, None),  # Test-Method
    ("Organization", 1, None),  # Organization
]


def pq_problems(b: dict[str, Any], slices: list[tuple[str, int, int | None]]) -> list[str]:
    out = []
    if b["type"] != "collection":
        out.append(f"Bundle.type {b['type']!r}, the profile fixes 'collection'")
    if len(b["entry"]) < 6:
        out.append(f"Bundle.entry has {len(b['entry'])}, the profile needs 6..*")
    n = Counter(e["resource"]["resourceType"] for e in b["entry"])
    for rt, lo, hi in slices:
        if n[rt] < lo or (hi is not None and n[rt] > hi):
            out.append(f"{rt}: {n[rt]} entries, the profile allows {lo}..{hi or '*'}")
    for e in b["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Organization":  # Organization-drug-pq.xml
            ids = r.get("identifier", [])
            if not ids or not all(i.get("system") and i.get("value") for i in ids):
                out.append("Organization.identifier 1..* with system 1..1 and value 1..1")
            if not r.get("type"):
                out.append("Organization.type 1..*")
            for c in r.get("contact", []):
                a = c.get("address")
                if a and (a.get("use", "work") != "work" or not a.get("country")):
                    out.append("Organization.contact.address: use = work, country 1..1")
        claimed = r.get("meta", {}).get("profile", [])
        if not any(p.startswith(PQ) for p in claimed):
            out.append(f"{r['resourceType']} claims no PQ profile")
    return out


def test_the_batch_export_meets_pq_batch_analysis() -> None:
    b = batch()
    assert b["meta"]["profile"] == [PQ + "Bundle-batch-analysis-pq"]
    assert b["timestamp"] == "2026-11-30T12:00:00Z"
    assert pq_problems(b, BATCH_SLICES) == []


def test_the_specification_export_meets_pq_specification() -> None:
    b = specification()
    assert b["meta"]["profile"] == [PQ + "Bundle-drug-product-specification-pq"]
    assert pq_problems(b, SPEC_SLICES) == []
    od = [
        e["resource"]
        for e in b["entry"]
        if e["resource"]["resourceType"] == "ObservationDefinition"
    ]
    via = next(o for o in od if o["code"]["coding"][0]["code"] == "viability"
               and "Singapore" in {c["text"] for c in o["jurisdiction"]})  # fmt: skip
    assert via["qualifiedValue"][0]["range"]["low"] == {
        "value": 80, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}  # fmt: skip
    endo = next(o for o in od if o["code"]["coding"][0]["code"] == "endotoxin")
    assert endo["permittedUnit"][0]["code"] == "{EU}/mL"
    assert endo["qualifiedValue"][0]["extension"][0]["valueString"] == "< 5 EU/mL"


def test_the_cardinality_check_bites() -> None:
    b = batch()
    b["entry"] = [e for e in b["entry"] if e["resource"]["resourceType"] != "Organization"]
    b["type"] = "document"
    problems = " ".join(pq_problems(b, BATCH_SLICES))
    assert "Organization: 0 entries" in problems and "collection" in problems


# -- what the batch analysis says -----------------------------------------------------------


def by_code(b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in b["entry"]
            if e["resource"]["resourceType"] == "Observation"}  # fmt: skip


def test_observations_carry_r5_status_interpretation_method_and_range() -> None:
    b = batch()
    obs = by_code(b)
    assert obs["vcn"]["status"] == "registered" and "valueQuantity" not in obs["vcn"]
    assert obs["vcn"]["dataAbsentReason"]["coding"][0]["code"] == "temp-unknown"
    assert obs["sterility"]["status"] == "preliminary"  # negative to date: a result, not final
    via = obs["viability"]
    assert via["status"] == "final"
    assert via["interpretation"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "code": "N", "display": "Normal"}  # fmt: skip
    assert via["method"]["text"] == "flow-7aad"
    assert via["effectiveDateTime"] and via["performer"][0]["reference"].startswith("urn:uuid:")
    assert via["referenceRange"][0]["low"]["value"] == 80
    endo = obs["endotoxin"]
    assert endo["valueQuantity"] == {"value": 0.25, "unit": "EU/mL",
                                     "system": "http://unitsofmeasure.org", "code": "{EU}/mL"}  # fmt: skip
    assert endo["referenceRange"][0]["high"]["code"] == "{EU}/mL"
    dose = obs["dose"]["referenceRange"][0]  # 72.5 kg: band 2, 0.1-2.5 x 10^8 cells
    assert (dose["low"]["value"], dose["high"]["value"]) == (10_000_000, 250_000_000)
    assert dose["low"]["code"] == "{cells}"


def test_a_result_recorded_in_the_old_endotoxin_unit_exports_as_endotoxin() -> None:
    v = view()
    v["results"]["results"]["endotoxin"]["unit"] = "[EU]/mL"
    obs = by_code(json.loads(batch_bundle_json(v, "EU", spec=spec(), now=NOW)))["endotoxin"]
    assert obs["valueQuantity"]["code"] == "{EU}/mL"
    assert "Ehrlich" in obs["note"][0]["text"]


def test_a_failing_result_is_outside_threshold() -> None:
    v = view()
    v["cqa"]["EU"]["verdicts"] = [dict(x, status="fail") if x["attribute"] == "potency" else x
                                  for x in v["cqa"]["EU"]["verdicts"]]  # fmt: skip
    obs = by_code(json.loads(batch_bundle_json(v, "EU", spec=spec(), now=NOW)))["potency"]
    assert obs["interpretation"][0]["coding"][0]["code"] == "EX"


def test_the_batch_has_its_dates_manufacturer_and_substance() -> None:
    b = batch("SG")
    kinds = {e["resource"]["resourceType"]: e["resource"] for e in b["entry"]}
    med = kinds["Medication"]
    made = med["batch"]["extension"][0]["extension"][0]["valueDateTime"]
    assert made.startswith("2026-") and med["batch"]["expirationDate"] > made[:10]
    assert med["batch"]["lotNumber"] == "B-STD-1"
    released = med["batch"]["extension"][1]
    assert released["url"] == PQ + "Extension-batch-release-date-pq"
    assert released["valueDateTime"].startswith("2026-11-30T")
    assert {"system": NS + "/sid/coi", "value": "&/CHA999926ABC123"} in med["identifier"]
    assert kinds["Organization"]["identifier"][0] == {"system": NS + "/sid/site", "value": "SITE-A"}
    org = next(e["fullUrl"] for e in b["entry"] if e["resource"]["resourceType"] == "Organization")
    assert kinds["SubstanceDefinition"]["manufacturer"][0]["reference"] == org
    assert b["entry"][0]["resource"]["resourceType"] == "Medication"  # the batch comes first
    report = kinds["DiagnosticReport"]
    assert report["conclusion"].startswith("conditional_release in SG by Paul Approver")
    assert {j["text"] for o in (e["resource"] for e in b["entry"])
            if o["resourceType"] == "ObservationDefinition" for j in o["jurisdiction"]} == {"Singapore"}  # fmt: skip


def test_the_export_is_reproducible_and_refuses_an_unevaluated_jurisdiction() -> None:
    assert batch_bundle_json(view(), "EU", spec=spec(), now=NOW) == batch_bundle_json(
        view(), "EU", spec=spec(), now=NOW
    )
    with pytest.raises(Unprocessable, match="evaluated for EU, SG, UK, US"):
        batch_bundle_json(view(), "JP", spec=spec(), now=NOW)


def test_the_first_signature_still_works() -> None:
    """The route calls batch_bundle_json(view, jurisdiction): without the specification the
    bundle is still valid R5 and resolves."""
    b = json.loads(batch_bundle_json(view(), "EU"))
    assert schema_errors(b) == [] and violations(b) == []
    assert set(references(b["entry"])) <= {e["fullUrl"] for e in b["entry"]}


def test_the_export_of_a_batch_is_a_copy_not_a_change() -> None:
    v = view()
    before = copy.deepcopy(v)
    batch_bundle_json(v, "EU", spec=spec(), now=NOW)
    assert v == before


def test_what_a_result_says_of_itself_is_used_and_never_breaks_the_export() -> None:
    """A named laboratory becomes the Observation's performer; a test time that is not an ISO
    date-time, a value FHIR cannot carry as a number, and a unit that is not UCUM are each
    written as what they are (or left out), and the bundle stays valid."""
    v = view()
    res = v["results"]["results"]
    res["potency"]["laboratory"] = "Central QC Lab <Singapore> & Co"
    res["potency"]["tested_at"] = "2026-11-29T09:00:00Z"
    res["viability"]["tested_at"] = "yesterday afternoon"
    res["car_positive"]["value"] = "NaN"
    res["t_cell_purity"]["unit"] = "percent"
    b = json.loads(batch_bundle_json(v, "EU", spec=spec(), now=NOW))
    assert schema_errors(b) == [] and violations(b) == []
    assert set(references(b["entry"])) <= {e["fullUrl"] for e in b["entry"]}
    obs = by_code(b)
    lab = next(
        e for e in b["entry"] if e["resource"].get("name") == "Central QC Lab <Singapore> & Co"
    )
    assert obs["potency"]["performer"][0]["reference"] == lab["fullUrl"]
    assert obs["potency"]["effectiveDateTime"] == "2026-11-29T09:00:00Z"
    assert obs["viability"]["effectiveDateTime"] == v["results"]["entered_at"].replace(
        "+00:00", "Z"
    )
    assert obs["car_positive"]["valueString"] == "NaN"
    assert obs["t_cell_purity"]["valueQuantity"] == {"value": 96.2, "unit": "percent"}
    assert [p for s in systems(b) if (p := check_system(s))] == []


def test_the_specification_export_per_jurisdiction_and_refusal() -> None:
    from ebr_core.errors import SpecificationError
    from server.fhir import spec_bundle

    b = json.loads(
        spec_bundle(spec(), now=NOW, jurisdictions=["SG"]).model_dump_json(exclude_none=True)
    )
    plan = next(
        e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "PlanDefinition"
    )
    assert [g["title"] for g in plan["action"]] == ["SG"]
    codes = {
        e["resource"]["code"]["coding"][0]["code"]
        for e in b["entry"]
        if e["resource"]["resourceType"] == "ObservationDefinition"
    }
    assert "rcl" in codes and len(plan["action"][0]["action"]) == len(codes)
    with pytest.raises(
        SpecificationError, match="no overlay for jurisdiction 'JP'; it covers EU, SG, UK, US"
    ):
        spec_bundle_json(spec(), now=NOW, jurisdictions=["JP"])
