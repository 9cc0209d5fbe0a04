"""The specification's FHIR export over HTTP: an HL7 PQ specification (a PlanDefinition with
its ObservationDefinitions) for any signed-in person; an unknown jurisdiction is a 422 problem
naming the ones the specification has; an unknown version is a 404 problem."""

from __future__ import annotations

from .conftest import Server
from .qa import add_people, login, publish_spec, spec_content


def test_a_published_specification_exports_as_fhir(server: Server) -> None:
    add_people(server, {"qa.global": ("Gina Global", [("qa_approver", "*")])})
    publish_spec(server)
    spec = spec_content()
    base = f"/v1/specs/{spec['spec_id']}/{spec['version']}/fhir"
    with login(server, "qa.global") as c:
        r = c.get(base)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+json")
        bundle = r.json()
        kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
        assert {"PlanDefinition", "ObservationDefinition"} <= kinds
        only_eu = c.get(base, params={"jurisdiction": "EU"})
        assert only_eu.status_code == 200, only_eu.text
        bad = c.get(base, params={"jurisdiction": "JP"})
        assert bad.status_code == 422
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert "JP" in bad.json()["detail"]
        missing = c.get(f"/v1/specs/{spec['spec_id']}/999/fhir")
        assert missing.status_code == 404
