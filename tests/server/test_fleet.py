"""A region's fleet (ctgtp.fleet): units, each with its own key and ledger, send telemetry,
operator events and syncs over real HTTP to a server with two API workers for a set time; every
event each unit recorded arrives exactly once.  No timing is asserted: the figures are printed.
`make test` runs 200 units for about a minute; `make soak` runs 1,000 for ten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctgtp.fleet import Mix, run_fleet


def check(r: dict[str, object], units: int) -> None:
    print(json.dumps(r))
    assert r["errors"] == [] and r["mismatches"] == []
    assert r["units"] == units
    assert r["server_events"] == r["edge_events"]
    # every unit started and completed its batch and sent telemetry in between
    assert isinstance(r["edge_events"], int) and r["edge_events"] > units * 3
    assert isinstance(r["segments"], int) and r["segments"] >= units


@pytest.mark.postgres
def test_fleet_200_units_two_workers(tmp_path: Path) -> None:
    r = run_fleet(200, 30, "postgres", tmp_path, workers=2, mix=Mix(threads=12))
    check(r, 200)
    assert r["workers"] == 2


def test_fleet_sqlite(tmp_path: Path) -> None:
    r = run_fleet(10, 8, "sqlite", tmp_path, mix=Mix(sync_s=2.0, step_s=2.0))
    check(r, 10)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(1800)  # ten minutes of a 1,000-unit region, then the exactly-once check
def test_fleet_soak_1000_units(tmp_path: Path) -> None:
    r = run_fleet(1000, 600, "postgres", tmp_path, workers=2)
    check(r, 1000)
