"""Several API worker processes on one database (issue 25): ``serve(settings, host, port,
workers)`` is what ``ctgtp server run --workers N`` calls.

- The database must be at the migrations' head, checked once here before any worker starts and
  again by each worker (:func:`server.app.create_app`); nothing migrates as it starts.
- uvicorn starts the workers from an import string, so each builds its app with :func:`app`, a
  factory that reads the settings from the environment (``CTGTP_SERVER_*``): :func:`serve`
  exports the settings it was given, so every worker serves exactly them.
- Connections are pooled per worker: a region's database allows ``max_connections`` (100 by
  default), shared by every worker, ``migrate``, the administration commands and the console's
  readers.  ``CTGTP_SERVER_DB_CONNECTIONS`` (default :data:`DEFAULT_CONNECTIONS`) is the API's
  whole budget; each worker gets ``budget // workers`` connections (at most
  :data:`MAX_PER_WORKER`) and half as many request threads.  Twice as many connections as
  threads: a route's session is closed by its dependency's teardown, which waits for a thread
  of its own while the session still holds its connection; with no more connections than
  threads, those teardowns and new requests waiting on the pool starve each other (seen at 1,000
  units: ``QueuePool limit ... reached`` after 60 s).

What each worker keeps in memory, and why that is right with several (docs/region.md):

- the database holds everything that decides an outcome: the unit's head row (the per-unit
  lock that keeps one unit's segments in order), nonces (a replay is refused by whichever
  worker sees it), sessions, failed-login counts and locks, enrolments, signatures, custody;
- the rate limiters (per unit, per client address) are flood brakes, per worker: with N
  workers a unit may reach up to N times ``rate_per_second`` before a 429.  Nothing recorded
  depends on them;
- the refusal-audit limiters write at most one row per key and window per worker, each carrying
  its own count: the counts still add up to every refusal;
- the password gate bounds argon2's memory and CPU on the host: :func:`serve` gives each worker
  its share of ``password_checks_max`` (rounded up), so the host runs about the configured
  number at once;
- password re-entry (``server.people.passwords.REENTRY``) is a cache: a worker that missed the
  person's last success checks the password in full (same outcome, 0.1 s slower).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from server.settings import Settings

DEFAULT_CONNECTIONS = 80  # PostgreSQL's default max_connections (100) less room for the rest
MAX_PER_WORKER = 80  # connections; the threads, half as many, are anyio's default (40)
POOL_ENV = "CTGTP_SERVER_DB_CONNECTIONS"
_PER_WORKER_ENV = "CTGTP_SERVER_POOL_PER_WORKER"  # set by serve() for its workers
GRACE_S = 10


def per_worker_connections(workers: int, budget: int | None = None) -> int:
    """Pooled connections for each of ``workers`` workers (its request threads: half)."""
    if workers < 1:
        raise ValueError(f"workers: {workers} given, at least 1 expected")
    if budget is None:
        raw = os.environ.get(POOL_ENV, str(DEFAULT_CONNECTIONS))
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{POOL_ENV}={raw!r}: a whole number of connections (>= 1) expected")
        budget = int(raw)
    return max(4, min(MAX_PER_WORKER, budget // workers))


def worker_settings(settings: Settings, workers: int) -> Settings:
    """The settings each of ``workers`` workers serves: the same, with the host-wide password
    gate split between them."""
    share = max(1, math.ceil(settings.password_checks_max / workers))
    return settings.model_copy(update={"password_checks_max": share})


def environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the CTGTP_SERVER_* variables :class:`Settings` reads back."""
    out = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:  # unset: the default applies (never the text "None")
            continue
        # lists and mappings as JSON, as pydantic-settings reads them back
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        out[f"CTGTP_SERVER_{name.upper()}"] = text
    return out


LOCK_TIMEOUT_MS = 15_000


class Lanes:
    """ASGI wrapper: at most ``threads - 1`` requests in the app at once, segment uploads at most
    half of them; the others wait here, before any thread, connection or lock is taken.

    Why: a transaction holds the rows it locked (a unit's head row, an audit stream's head)
    until it commits, and a route with the request session (``server.people.auth.session``)
    commits in its dependency's teardown, which needs a request thread.  Were every thread a
    request waiting for such a row, nothing would move again: seen at 1,000 units on two
    workers, when every write still took the one ``audit_head`` row (40 enrolments and
    segments waiting for it, the holder ``idle in transaction``).  Audit streams (migration
    0012) leave far fewer requests waiting on one row, but a unit's retries still wait on its
    own head row.  A request uses one thread at a time, so with fewer requests in the app than
    threads one is always free; and half of them stay for people while units upload."""

    def __init__(self, app: Any, threads: int) -> None:
        import asyncio

        self.app = app
        self._all = asyncio.Semaphore(max(1, threads - 1))
        self._segments = asyncio.Semaphore(max(1, threads // 2))

    def __getattr__(self, name: str) -> Any:  # app.state, app.router: the wrapped app's
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
        elif scope.get("method") == "POST" and scope.get("path", "").endswith("/segments"):
            async with self._segments, self._all:
                await self.app(scope, receive, send)
        else:
            async with self._all:
                await self.app(scope, receive, send)


def _size_pool(app: Any, per_worker: int) -> None:
    """Give the app's engine a pool of ``per_worker`` connections (PostgreSQL; SQLite keeps its
    own) and the worker half as many request threads."""
    from sqlalchemy import create_engine

    engine = app.state.engine
    threads = max(2, per_worker // 2)
    if engine.dialect.name == "postgresql":
        # create_app has connected once (the head check), so the engine's dialect is set up;
        # a pool built by an engine on the same URL opens the same connections.
        sized = create_engine(
            engine.url,
            pool_size=threads,
            max_overflow=max(0, per_worker - threads),
            pool_pre_ping=True,
            pool_timeout=60,
            # a lock wait that outlives this is refused (the segment is retried by its unit),
            # never a region that stops: the safety net under Lanes
            connect_args={"options": f"-c lock_timeout={LOCK_TIMEOUT_MS}"},
        )
        old, engine.pool = engine.pool, sized.pool
        old.dispose()
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        async with inner(a) as state:
            yield state

    app.router.lifespan_context = lifespan


def _sequencer(app: Any) -> None:
    """Run the log's sequencer in the worker (:class:`server.log.store.Sequencer`): at start,
    so leaves queued by writers that stopped between their commit and the sequencing (a crash,
    a kill) are in the tree before the worker serves, then every second."""
    from server.log.store import Sequencer

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        seq = Sequencer(app.state.engine, SEQUENCE_EVERY_S, app.state.log_key)
        seq.start()
        try:
            async with inner(a) as state:
                yield state
        finally:
            seq.stop()

    app.router.lifespan_context = lifespan


SEQUENCE_EVERY_S = 1.0


def app() -> Any:
    """The app factory each worker calls (``uvicorn ... --factory server.workers:app``)."""
    from server.app import create_app

    built = create_app(Settings())
    raw = os.environ.get(_PER_WORKER_ENV)
    per_worker = int(raw) if raw and raw.isdigit() else per_worker_connections(1)
    _size_pool(built, per_worker)
    _sequencer(built)
    return Lanes(built, max(2, per_worker // 2))


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Serve the API with ``workers`` uvicorn worker processes on ``settings``' database, which
    must be at head (``ctgtp server migrate``); raises :class:`server.db.SchemaNotAtHead`."""
    import uvicorn

    from server.db import make_engine, require_head

    per_worker = per_worker_connections(workers)
    engine = make_engine(settings.database_url)
    try:
        require_head(engine)
    finally:
        engine.dispose()
    if workers > 1 and settings.database_url.startswith("sqlite"):
        # works (WAL, busy timeout), but every writer waits on one file lock
        sys.stderr.write("note: several workers on SQLite share its one writer; use PostgreSQL\n")
    os.environ.update(environment(worker_settings(settings, workers)))
    os.environ[_PER_WORKER_ENV] = str(per_worker)
    uvicorn.run(
        "server.workers:app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        # a stop (SIGTERM) waits this long for requests in flight, then ends them: a worker
        # stuck behind a lock never keeps the server up
        timeout_graceful_shutdown=GRACE_S,
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m server.workers --port P --workers N`` (settings from the environment): what
    :func:`server.process.serve_subprocess` starts until ``ctgtp server run --workers`` exists."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m server.workers")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    if a.workers < 1:
        p.error(f"--workers: {a.workers} given, at least 1 expected")
    serve(Settings(), a.host, a.port, a.workers)


if __name__ == "__main__":
    main()
