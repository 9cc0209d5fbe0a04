"""``--json``: each command prints the engine's outcome as one JSON object (what was recorded,
its ledger seq, and for the steps what the current step expects next); the text form is the
outcome's message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.agent import open_agent

from .conftest import COI, PW
from .test_cli import at, home, ok, published, pw
from .test_engine import to_harvest_count

__all__ = ["home", "published"]


def as_json(home: Path, *args: str, stdin: str | None = None) -> Any:
    return json.loads(ok(at(home, *args, "--json", stdin=stdin)).stdout)


def test_a_batch_step_by_step_in_json(home: Path) -> None:
    started = as_json(home, "start", "--batch", "B-7", "--coi", COI, "--user", "op.alice",
                      "--password-stdin", stdin=pw("op.alice"))  # fmt: skip
    assert started == {
        "outcome": "batch_started",
        "batch_id": "B-7",
        "seq": started["seq"],
        "coi": COI,
        "mbr_id": "CAR-T-CARTRIDGE",
        "mbr_version": "3",
        "message": f"batch B-7 started for COI {COI} on MBR CAR-T-CARTRIDGE v3",
        "expects": {
            "step": {
                "id": "receipt/apheresis/coi-scan",
                "name": "Receive apheresis bag and scan its chain-of-identity label",
            },
            "scans": [{"role": "patient_material", "material": None}],
            "values": [],
            "calculation": None,
            "signatures": ["performed", "verified"],
        },
    }
    scanned = as_json(home, "scan", "--batch", "B-7", "--user", "op.alice", COI)
    assert (scanned["outcome"], scanned["role"], scanned["seq"]) == (
        "scan_accepted", "patient_material", started["seq"] + 1
    )  # fmt: skip
    assert scanned["identifiers"]["coi"] == COI
    assert scanned["expects"]["scans"] == []
    for user, meaning in (("op.alice", "performed"), ("op.bob", "verified")):
        signed = as_json(home, "sign", "--batch", "B-7", "--user", user, "--meaning", meaning,
                         "--password-stdin", stdin=pw(user))  # fmt: skip
    assert (signed["outcome"], signed["user_id"], signed["printed_name"]) == (
        "signed", "op.bob", "Bob Okafor"
    )  # fmt: skip
    assert signed["step_completed"] and not signed["batch_completed"]
    assert signed["expects"]["values"] == [{"name": "apheresis_volume", "unit": "mL"}]
    shown = as_json(home, "show", "--batch", "B-7")
    assert shown["batch_id"] == "B-7" and shown["step"]["id"] == "receipt/apheresis/inspect"
    value = as_json(home, "value", "--batch", "B-7", "--user", "op.alice", "apheresis_volume",
                    "40", "mL")  # fmt: skip
    assert (value["outcome"], value["limit"], value["deviation_id"]) == (
        "value_recorded", "hard", "DEV-B-7-001"
    )  # fmt: skip
    fixed = as_json(home, "correct", "--batch", "B-7", "--user", "op.alice", "--step",
                    "receipt/apheresis/inspect", "--reason", "misread", "--password-stdin",
                    "apheresis_volume", "220", "mL", stdin=pw("op.alice"))  # fmt: skip
    assert (fixed["outcome"], fixed["old_value"], fixed["value"], fixed["corrects"]) == (
        "value_corrected", "40", "220", value["seq"]
    )  # fmt: skip
    raised = as_json(home, "deviation", "raise", "--batch", "B-7", "--user", "op.bob", "smudge")
    assert (raised["message"], raised["deviation_id"]) == (
        "deviation DEV-B-7-002 raised", "DEV-B-7-002"
    )  # fmt: skip
    users = as_json(home, "users")["users"]
    assert users[1] == {
        "user_id": "op.bob", "printed_name": "Bob Okafor", "roles": ["operator"],
        "state": "active",
    }  # fmt: skip


def test_the_dose_in_text_and_json(home: Path) -> None:
    agent = open_agent(home, lambda: datetime.now(UTC))
    try:  # the steps before the dose, through the engine the CLI uses
        agent.engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
        to_harvest_count(agent.engine)
    finally:
        agent.close()
    for name, v, unit in [
        ("viable_per_ml", "25000000", "/mL"),
        ("harvest_volume", "60", "mL"),
        ("car_percent", "40", "%"),
        ("patient_weight", "72.5", "kg"),
    ]:
        ok(at(home, "value", "--batch", "B1", "--user", "op.alice", name, v, unit))
    ok(at(home, "sign", "--batch", "B1", "--user", "op.alice", "--meaning", "performed",
          "--password-stdin", stdin=pw("op.alice")))  # fmt: skip
    dose = as_json(home, "calc", "--batch", "B1", "--user", "op.alice")
    assert dose == {
        "outcome": "dose_calculated",
        "batch_id": "B1",
        "seq": dose["seq"],
        "step_id": dose["step_id"],
        "cells_to_infuse": "145000000",
        "per_kg": "2000000",
        "volume_to_infuse_ml": "14.5",
        "total_viable_car_cells": "600000000",
        "within_range": True,
        "deviation_id": None,
        "message": "cells_to_infuse: 145000000\nper_kg: 2000000\nvolume_to_infuse_ml: 14.5\n"
        "total_viable_car_cells: 600000000",
    }
    again = at(home, "calc", "--batch", "B1", "--user", "op.alice")
    assert (again.exit_code, again.stderr) == (
        1, "Error: the dose is already calculated for this batch\n"
    )  # fmt: skip
