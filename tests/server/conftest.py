"""A real server on 127.0.0.1 (uvicorn in a thread), on SQLite and on PostgreSQL."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.engine import Engine

from ebr_core.keys import PublicKey, UnitSigner
from edge.ledger import Append, Ledger
from server.app import create_app
from server.db import make_engine, migrate
from server.pgcluster import PgCluster, free_port
from server.settings import Settings

ADMIN = "test-admin-token-0123456789abcdef-32+"


# The tests' clusters live in memory where the machine has a tmpfs: a worker's cluster holds a
# database for each PostgreSQL test (about 120, 56,000 files), and removing it from disk at the
# end of the session took 50 s, the last thing each worker did.  A process kill, the failure
# these tests inject, is survived the same way in memory (the server's WAL is not lost).
_SHM = Path("/dev/shm")


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    in_memory = _SHM.is_dir() and os.access(_SHM, os.W_OK)
    with PgCluster(_SHM if in_memory else None) as cluster:
        yield cluster


@dataclass
class Server:
    url: str
    settings: Settings
    key: PublicKey
    app: FastAPI

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"})

    def enrol(self, unit: UnitSigner, site: str = "SITE-A") -> None:
        with self.admin() as c:
            r = c.post(
                "/admin/units",
                json={
                    "site_id": site,
                    "unit_id": unit.unit_id,
                    "public_key": unit.public.to_json().decode(),
                },
            )
            assert r.status_code == 201, r.text

    def events(self, unit_id: str) -> int:
        with self.admin() as c:
            return int(c.get(f"/admin/units/{unit_id}").json()["events"])


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine executes during the test, whitespace folded."""
    seen: list[str] = []

    def record(_c: Any, _cur: Any, stmt: str, *_a: Any) -> None:
        seen.append(" ".join(stmt.split()))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


_AT_HEAD: dict[object, str] = {}  # per test process: the copies' templates, made on first use


def _sqlite_at_head() -> str:
    """A SQLite database migrated to head once per test process: test servers start on a copy
    (migrating each took 0.5 to 0.9 s, a tenth of the suite's time)."""
    if "sqlite" not in _AT_HEAD:
        folder = Path(tempfile.mkdtemp(prefix="ctgtp-head-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        engine = make_engine(f"sqlite:///{folder / 'head.db'}")
        migrate(engine)
        engine.dispose()  # the last connection closes: nothing is left in a WAL file
        _AT_HEAD["sqlite"] = str(folder / "head.db")
    return _AT_HEAD["sqlite"]


def _pg_at_head(cluster: PgCluster) -> str:
    """The name of a database of ``cluster`` migrated to head once, nothing connected to it:
    test servers' databases are created as copies of it."""
    if cluster not in _AT_HEAD:
        engine = make_engine(cluster.create_db("at_head"))
        migrate(engine)
        engine.dispose()
        _AT_HEAD[cluster] = "at_head"
    return _AT_HEAD[cluster]


_dbs = iter(range(10_000))


def server_settings(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, **overrides: object
) -> Settings:
    """Settings for a test server on ``backend`` ("sqlite" or "postgres"), its database a copy
    of one at the migrations' head (:func:`start_server` still runs the deploy step, which
    finds nothing to do)."""
    if backend == "sqlite":
        db = tmp_path / "server.db"
        if not db.exists():
            db.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_sqlite_at_head(), db)
        url = f"sqlite:///{db}"
    else:
        cluster = request.getfixturevalue("pg")
        url = cluster.create_db(f"t{next(_dbs)}_{int(time.time())}", template=_pg_at_head(cluster))
    values: dict[str, object] = {
        "database_url": url,
        "data_dir": tmp_path / "server",
        "admin_token": ADMIN,
        "rate_per_second": 1000,
        "rate_burst": 1000,
        "max_body_bytes": 4 * 1024 * 1024,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with start_server(server_settings(request.param, request, tmp_path)) as srv:
        yield srv


@contextmanager
def start_server(
    settings: Settings, clock: Callable[[], datetime] | None = None
) -> Iterator[Server]:
    """Serve ``create_app(settings, clock)`` with uvicorn on a free 127.0.0.1 port."""
    engine = make_engine(settings.database_url)
    migrate(engine)  # the deploy step a real server has had before it starts
    engine.dispose()
    app = create_app(settings, clock)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.02)
    key = PublicKey.from_bytes((settings.data_dir / "server.pub").read_bytes())
    try:
        yield Server(f"http://127.0.0.1:{port}", settings, key, app)
    finally:
        srv.should_exit = True
        t.join(5)


def clock(start: datetime | None = None) -> object:
    """A unit's clock.  By default real time, strictly increasing: the server flags events dated
    before the unit's enrolment or ahead of its own clock (``clock.*`` alerts), and refuses a QA
    signature dated before a batch's last event, so test units keep real time.  A test that
    needs the same timestamps twice passes a fixed ``start``: 250 ms a reading from there."""
    if start is not None:
        t = [start]

        def fixed() -> datetime:
            t[0] += timedelta(milliseconds=250)
            return t[0]

        return fixed
    last = [datetime.now(UTC)]

    def now() -> datetime:
        last[0] = max(datetime.now(UTC), last[0] + timedelta(microseconds=1))
        return last[0]

    return now


def make_ledger(path: Path, signer: UnitSigner, groups: int = 3, per_group: int = 10) -> Ledger:
    led = Ledger.open(path, signer, clock())  # type: ignore[arg-type]
    led.append(
        "batch.started",
        {
            "coi": "&/CHA999926ABC123",
            "mbr_id": "M",
            "mbr_version": "1",
            "mbr_hash": "0" * 64,
            "product": "p",
        },
        batch_id="B-1",
        actor="op.alice",
    )
    for g in range(groups):
        led.append_many(
            [
                Append(
                    "reading.recorded",
                    {
                        "channel": "temp",
                        "i": g * 100 + i,
                        "value": {"value": "37.0", "unit": "Cel"},
                    },
                    "B-1",
                )
                for i in range(per_group)
            ]
        )
    return led
