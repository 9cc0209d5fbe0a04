"""Helpers for the quality-review tests: people, a synced batch, the shipped spec and results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from ebr_core.canonical import canonical
from ebr_core.document import load_yaml
from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.sync import SyncClient

from .conftest import Server, clock

EXAMPLES = Path(__file__).resolve().parents[2] / "ebr_core" / "spec" / "examples"
PASSWORD = "Blue-Harbour-2026!"

# user id -> (printed name, [(role, site)])
PEOPLE: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "admin.ann": ("Ann Admin", [("admin", "*")]),
    "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
    "appr.a": ("Paul Approver", [("qa_approver", "SITE-A")]),
    "appr.a2": ("Petra Approver", [("qa_approver", "SITE-A")]),
    "rev.b": ("Rob Reviewer", [("qa_reviewer", "SITE-B")]),
    "aud": ("Aude Auditor", [("auditor", "*")]),
    "op.alice": ("Alice Martin", [("operator", "SITE-A")]),
    "qa.global": ("Gina Global", [("qa_approver", "*")]),
    "admin.appr": ("Adam Both", [("admin", "SITE-A"), ("qa_approver", "SITE-A")]),
}


def json_of(yaml_path: Path) -> Any:
    """A YAML example as plain JSON (exact decimals become strings)."""
    return orjson.loads(canonical(load_yaml(yaml_path.read_text())))


def spec_content() -> Any:
    return json_of(EXAMPLES / "cd19_commercial.yaml")


def example_results() -> dict[str, Any]:
    return dict(json_of(EXAMPLES / "results_example.yaml"))


TEMPORARY = "Temp-Lighthouse-2026?"  # what the administrator sets; the owner changes it


def add_people(
    server: Server, people: dict[str, tuple[str, list[tuple[str, str]]]] = PEOPLE
) -> None:
    """Create each person through the admin API, then, as the person, change the password the
    administrator set to :data:`PASSWORD` (a password set by someone else cannot be used for
    anything else)."""
    with server.admin() as c:
        for uid, (name, grants) in people.items():
            r = c.post(
                "/v1/people",
                json={
                    "user_id": uid,
                    "printed_name": name,
                    "password": TEMPORARY,
                    "roles": [{"role": r, "site_id": s} for r, s in grants],
                    "reason": "test set-up",
                },
            )
            assert r.status_code == 201, r.text
    for uid in people:
        take_over(server, uid)


def take_over(server: Server, user_id: str, given: str = TEMPORARY, own: str = PASSWORD) -> None:
    """The person changes the password an administrator gave them to their own."""
    r = httpx.post(
        server.url + "/v1/auth/password",
        json={"user_id": user_id, "current_password": given, "new_password": own},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def login(server: Server, user_id: str, password: str = PASSWORD) -> httpx.Client:
    r = httpx.post(server.url + "/v1/auth/token", json={"user_id": user_id, "password": password})
    assert r.status_code == 200, r.text
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {r.json()['token']}"}, timeout=30
    )


def push_batch(
    server: Server,
    tmp_path: Path,
    *,
    unit_id: str,
    site: str,
    batch_id: str,
    coi: str = "&/CHA999926ABC123",
    operator: str = "op.alice",
    deviation: bool = True,
) -> tuple[Ledger, SyncClient]:
    """Enrol a unit and sync one completed batch with a rejected scan and an open deviation."""
    unit = UnitSigner.generate(unit_id)
    server.enrol(unit, site=site)
    led = Ledger.open(tmp_path / f"{unit_id}.db", unit, clock())  # type: ignore[arg-type]
    a = {"batch_id": batch_id, "actor": operator}
    led.append(
        "batch.started",
        {"coi": coi, "mbr_id": "CAR-T", "mbr_version": "3", "mbr_hash": "0" * 64, "product": "p"},
        **a,
    )
    led.append(
        "scan.rejected",
        {"step": "receipt", "role": "patient", "raw": "x", "expected": coi, "reason": "wrong COI"},
        **a,
    )
    led.append(
        "value.recorded",
        {"step": "seed", "name": "cells", "value": {"value": "1.2e8", "unit": "1"}, "limit": "ok"},
        **a,
    )
    led.append(
        "signature.applied",
        {
            "step": "seed",
            "user_id": operator,
            "printed_name": PEOPLE.get(operator, (operator, []))[0],
            "meaning": "performed",
            "signed_hash": "1" * 64,
        },
        **a,
    )
    if deviation:
        led.append(
            "deviation.raised",
            {
                "deviation_id": "DEV-1",
                "step": "receipt",
                "category": "chain_of_identity",
                "reason": "wrong-patient bag scanned and refused",
                "severity": "major",
            },
            **a,
        )
    led.append("batch.completed", {}, **a)
    client = SyncClient(led, server.url, server_key=server.key)
    assert client.sync_once().pushed == led.head[0]
    return led, client


def publish_spec(server: Server) -> None:
    with login(server, "qa.global") as c:
        r = c.post("/v1/specs", json={"content": spec_content(), "reason": "release spec v1"})
        assert r.status_code == 201, r.text


def enter_results(c: httpx.Client, batch_id: str, results: dict[str, Any]) -> httpx.Response:
    spec = spec_content()
    return c.post(
        f"/v1/batches/{batch_id}/results",
        json={
            "spec_id": spec["spec_id"],
            "spec_version": str(spec["version"]),
            "results": results,
            "reason": "QC results from the lab",
        },
    )


def sign(
    c: httpx.Client,
    batch_id: str,
    user_id: str,
    meaning: str,
    jurisdiction: str = "EU",
    *,
    password: str = PASSWORD,
    view: dict[str, Any] | None = None,
    reason: str = "reviewed against the specification",
) -> httpx.Response:
    v = view if view is not None else c.get(f"/v1/batches/{batch_id}").json()
    return c.post(
        f"/v1/batches/{batch_id}/signatures",
        json={
            "user_id": user_id,
            "password": password,
            "meaning": meaning,
            "reason": reason,
            "jurisdiction": jurisdiction,
            "record_hash": v["record_hash"],
            "evaluation_hash": v["cqa"].get(jurisdiction, {}).get("evaluation_hash", ""),
        },
    )
