"""A fleet: 50 simulated units running batches and syncing concurrently to one server (its own
process), on SQLite and on PostgreSQL: every acknowledged event arrives exactly once.  A short
version runs in CI; `make soak` runs the long one."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctgtp.fleet import run_fleet


def check(r: dict[str, object]) -> None:
    assert r["errors"] == [] and r["mismatches"] == []
    assert r["server_events"] == r["edge_events"]
    print(r)


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_fleet_short(database: str, tmp_path: Path) -> None:
    r = run_fleet(units=50, batches=1, readings=5, database=database, work=tmp_path)
    check(r)
    assert r["units"] == 50 and r["batches"] == 50 and r["edge_events"] == 50 * (2 + 6 * 9)


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_fleet_soak(database: str, tmp_path: Path) -> None:
    r = run_fleet(units=50, batches=10, readings=40, database=database, work=tmp_path)
    check(r)
    assert r["batches"] == 500
