"""A bearer session's expiry slides with use, written at most once a minute, on SQLite and
PostgreSQL.  On PostgreSQL the renewal's commit does not wait for the WAL flush (a read request is
not held up by an fsync queued behind a checkpoint): the renewal transaction says so first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import Token, make_engine
from tests.server.conftest import BACKENDS, server_settings, start_server
from tests.server.qa import add_people, login


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_session_in_use_slides_and_the_renewal_is_written_once_a_minute(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, statements: list[str]
) -> None:
    t = [datetime.now(UTC)]
    settings = server_settings(backend, request, tmp_path)
    with start_server(settings, lambda: t[0]) as srv:
        add_people(srv, {"rev.r": ("Rita Reviewer", [("qa_reviewer", "SITE-A")])})
        c = login(srv, "rev.r")
        engine = make_engine(settings.database_url)

        def expiry() -> datetime:
            with Session(engine) as s:
                q = select(Token.expires_at).where(Token.user_id == "rev.r")
                e = s.scalars(q.order_by(Token.expires_at.desc()).limit(1)).one()
                return e if e.tzinfo else e.replace(tzinfo=UTC)

        first = expiry()
        t[0] += timedelta(seconds=30)  # within the minute: nothing written
        statements.clear()
        assert c.get("/v1/me").status_code == 200
        assert expiry() == first
        assert not [s for s in statements if "synchronous_commit" in s]
        t[0] += timedelta(minutes=10)
        statements.clear()
        assert c.get("/v1/me").status_code == 200
        assert abs(expiry() - (t[0] + timedelta(minutes=15))) < timedelta(seconds=1)
        relaxed = [i for i, s in enumerate(statements) if "synchronous_commit" in s]
        if backend == "postgres":
            assert len(relaxed) == 1, statements
            (i,) = relaxed
            assert statements[i] == "SET LOCAL synchronous_commit TO OFF"
            assert "FOR UPDATE" in statements[i + 1] and "tokens" in statements[i + 1]
        else:
            assert relaxed == []
        engine.dispose()
