"""The Alembic migrations produce exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner

from server.app import create_app
from server.cli import server as server_cli
from server.db import Base, SchemaNotAtHead, make_engine, migrate, revisions
from server.pgcluster import PgCluster
from server.settings import Settings


def diff(url: str) -> list[object]:
    engine = make_engine(url)
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    assert diff(f"sqlite:///{tmp_path / 's.db'}") == []


@pytest.mark.postgres
def test_postgres_schema_matches_models(pg: PgCluster) -> None:
    assert diff(pg.create_db("migrations")) == []


def test_migrating_is_a_deploy_step_and_run_refuses_a_database_behind(tmp_path: Path) -> None:
    """``ctgtp server run`` (and ``create_app``) refuse a database not at head, naming the
    command; ``ctgtp server migrate`` brings it there, once."""
    data = ["--data-dir", str(tmp_path / "srv")]
    runner = CliRunner()
    r = runner.invoke(server_cli, ["run", *data])
    assert r.exit_code == 1, r.output
    assert "is at schema revision (none: empty)" in r.output
    assert "run `ctgtp server migrate`" in r.output
    url = f"sqlite:///{tmp_path / 'srv' / 'server.db'}"
    with pytest.raises(SchemaNotAtHead, match="ctgtp server migrate"):
        create_app(Settings(database_url=url, data_dir=tmp_path / "srv"))
    r = runner.invoke(server_cli, ["migrate", *data])
    assert r.exit_code == 0 and "migrated from (empty) to 0" in r.output, r.output
    r = runner.invoke(server_cli, ["migrate", *data])
    assert r.exit_code == 0 and "already at schema revision" in r.output, r.output
    current, head = revisions(make_engine(url))
    assert current == head is not None
    create_app(Settings(database_url=url, data_dir=tmp_path / "srv"))  # at head: it starts
