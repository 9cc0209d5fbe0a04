"""The Alembic migrations produce exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from server.db import Base, create_schema, make_engine
from server.pgcluster import PgCluster


def diff(url: str) -> list[object]:
    engine = make_engine(url)
    create_schema(engine)
    create_schema(engine)  # idempotent
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    assert diff(f"sqlite:///{tmp_path / 's.db'}") == []


@pytest.mark.postgres
def test_postgres_schema_matches_models(pg: PgCluster) -> None:
    assert diff(pg.create_db("migrations")) == []
