"""The plugin's ``ctgtp_server`` on PostgreSQL on request: overriding the
``ctgtp_server_database_url`` fixture (as a test engineer would) gives a real server process
migrated onto, and writing to, that database."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest

from ebr_core.keys import UnitSigner
from server.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def ctgtp_server_database_url() -> Iterator[str]:
    with PgCluster() as cluster:
        yield cluster.create_db("plugin")


def test_ctgtp_server_runs_on_postgresql(  # type: ignore[no-untyped-def]
    ctgtp_server, ctgtp_server_database_url: str
) -> None:
    assert httpx.get(ctgtp_server.url + "/health", timeout=5).status_code == 200
    unit = UnitSigner.generate("UNIT-PG-PLUGIN")
    with httpx.Client(
        base_url=ctgtp_server.url, headers={"Authorization": f"Bearer {ctgtp_server.admin_token}"}
    ) as c:
        r = c.post(
            "/admin/units",
            json={
                "site_id": "SITE-A",
                "unit_id": unit.unit_id,
                "public_key": unit.public.to_json().decode(),
            },
        )
        assert r.status_code == 201, r.text
    # The enrolment is in PostgreSQL, not in a SQLite file beside the server.
    dsn = ctgtp_server_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as con:
        row = con.execute("SELECT site_id FROM units WHERE unit_id = %s", (unit.unit_id,)).fetchone()
    assert row == ("SITE-A",)
