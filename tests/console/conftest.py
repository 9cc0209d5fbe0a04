"""Shared fixtures of the console's tests: a real server (SQLite, migrated, uvicorn on a free port)
built with :func:`server.app.create_app` with the console's router included, QA people created
through the admin API (each takes over the password an administrator set), the example
specification published, batches synced from real unit ledgers over HTTP; and Debian's headless
Chromium driven by Playwright, with an accessibility check (the vendored axe-core) and a
screenshot of each screen.  On failure the screenshots' directory is printed.

The approach follows ``tests/kiosk/conftest.py``; the server helpers are ``tests/server``'s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from ebr_core.keys import PublicKey, UnitSigner
from edge.ledger import Ledger
from edge.sync import SyncClient
from server import console
from server.app import create_app
from server.db import make_engine, migrate
from server.pgcluster import free_port
from server.settings import Settings
from tests.server.conftest import ADMIN, Server, clock
from tests.server.qa import PASSWORD, add_people, publish_spec
from webui import AXE

COI = "&/CHA999926ABC123"

# user id -> (printed name, [(role, site)])
PEOPLE: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
    "appr.a": ("Paul Approver", [("qa_approver", "SITE-A")]),
    "rev.b": ("Rob Reviewer", [("qa_reviewer", "SITE-B")]),
    "qa.global": ("Gina Global", [("qa_approver", "*")]),
    "aud": ("Aude Auditor", [("auditor", "*")]),
    "admin.ann": ("Ann Admin", [("admin", "*")]),
}

__all__ = ["PASSWORD", "Served", "sign_in"]


@dataclass
class Served:
    server: Server
    url: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server per test module: people and the specification set up once."""
    tmp = tmp_path_factory.mktemp("console")
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'server.db'}",
        data_dir=tmp / "server",
        admin_token=ADMIN,
        rate_per_second=1000,
        rate_burst=1000,
    )
    engine = make_engine(settings.database_url)
    migrate(engine)
    engine.dispose()
    app = create_app(settings)
    app.include_router(console.router)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    end = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > end or not t.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    key = PublicKey.from_bytes((settings.data_dir / "server.pub").read_bytes())
    server = Server(f"http://127.0.0.1:{port}", settings, key, app)
    add_people(server, PEOPLE)
    publish_spec(server)
    try:
        yield Served(server, server.url)
    finally:
        srv.should_exit = True
        t.join(5)


def push_batch(
    served: Served,
    tmp_path: Path,
    batch_id: str,
    *,
    site: str = "SITE-A",
    deviations: tuple[tuple[str, str], ...] = (("DEV-1", "major"),),
    readings: int = 120,
    limits: dict[str, Any] | None = None,
) -> Ledger:
    """Enrol a unit and sync one completed batch: a rejected scan, a value, a step signature,
    the given deviations (id, severity), a channel of readings (one a minute, one excursion)
    and an alarm; with ``limits`` (``{"telemetry": ..., "value": ...}``), the limits an edge
    records in batch.started and in the value's event.  Returns once the batch's last event
    time has passed on this machine's clock (a QA signature is never earlier than the events it
    signs)."""
    unit = UnitSigner.generate(f"U-{batch_id}")
    served.server.enrol(unit, site=site)
    led = Ledger.open(tmp_path / f"{batch_id}.db", unit, clock())  # type: ignore[arg-type]
    a = {"batch_id": batch_id, "actor": "op.alice"}
    started: dict[str, Any] = {"coi": COI, "mbr_id": "CAR-T", "mbr_version": "3", "mbr_hash": "0" * 64,
               "product": "p"}  # fmt: skip
    if limits is not None:  # as an edge that records its limits writes them
        started["telemetry_limits"] = limits["telemetry"]
    led.append("batch.started", started, **a)
    led.append(
        "scan.rejected",
        {"step": "receipt", "role": "patient", "raw": "x", "expected": COI, "reason": "wrong COI"},
        **a,
    )
    led.append(
        "scan.accepted",
        {"step": "seed", "role": "material", "raw": "(01)09506000134352(10)LOT-77",
         "identifiers": {"gtin": "09506000134352", "lot": "LOT-77"}},
        **a,
    )  # fmt: skip
    value: dict[str, Any] = {"step": "seed", "name": "cells", "value": {"value": "1.2e8", "unit": "1"},
             "limit": "ok"}  # fmt: skip
    if limits is not None:
        value["limits"] = limits["value"]
    led.append("value.recorded", value, **a)
    led.append(
        "signature.applied",
        {"step": "seed", "user_id": "op.alice", "printed_name": "Alice Martin",
         "meaning": "performed", "signed_hash": "1" * 64},
        **a,
    )  # fmt: skip
    start = datetime.now(UTC) - timedelta(minutes=readings + 5)
    for i in range(readings):
        v = "39.5" if i == readings // 2 else f"{37 + (i % 7) / 10:.1f}"
        led.append(
            "reading.recorded",
            {"channel": "temperature", "value": {"value": v, "unit": "Cel"},
             "limit": "high" if v == "39.5" else "ok",
             "device_time": (start + timedelta(minutes=i)).isoformat()},
            batch_id=batch_id,
        )  # fmt: skip
    for dev_id, severity in deviations:
        led.append(
            "deviation.raised",
            {"deviation_id": dev_id, "step": "receipt", "category": "process",
             "reason": f"{dev_id}: found at receipt", "severity": severity},
            **a,
        )  # fmt: skip
    led.append("batch.completed", {}, **a)
    client = SyncClient(led, served.url, server_key=served.server.key)
    assert client.sync_once().pushed == led.head[0]
    last = max(datetime.fromisoformat(e.recorded_at) for e in led.events())
    while datetime.now(UTC) <= last:
        time.sleep(0.05)
    return led


@dataclass
class Screens:
    """Checks each screen the test visits: axe-core's serious and critical violations must be
    none, and a screenshot is kept (printed on failure)."""

    page: Any
    base: str
    out: Path
    shots: list[Path] = field(default_factory=list)

    def check(self, name: str) -> None:
        shot = self.out / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(shot), full_page=True)
        self.shots.append(shot)
        violations = axe_violations(self.page, self.base)
        assert not violations, f"accessibility ({name}): {violations}"


def axe_violations(page: Any, base: str) -> list[str]:
    """Serious and critical axe-core violations of the page, one line each."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=f"{base}/console/static/webui/{AXE.directory}/axe.min.js")
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
    )
    return list(result)


def new_page(browser: Any, served: Served, out: Path) -> Any:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(10_000)
    pg = ctx.new_page()
    out.mkdir(parents=True, exist_ok=True)
    pg.screens = Screens(pg, served.url, out)
    return pg


@pytest.fixture
def pages(
    browser: Any, served: Served, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Any]:
    """``pages(name)``: a new browser context and page (one per person), screenshots kept."""
    made: list[Any] = []
    shots = tmp_path / "screens"

    def make(name: str) -> Any:
        pg = new_page(browser, served, shots / name)
        made.append(pg)
        return pg

    yield make
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for i, pg in enumerate(made):
            try:
                pg.screenshot(path=str(shots / f"failure-{i}.png"), full_page=True)
            except Exception as e:  # the page may be gone; the earlier screens are kept
                print(f"no screenshot of page {i}: {e}")
        print(f"console screenshots (each screen visited, then the failure): {shots}")
    for pg in made:
        pg.context.close()


def sign_in(page: Any, base: str, user: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/console/signin")
    page.fill("#f-user_id", user)
    page.fill("#f-password", password)
    page.click("#signin button[type=submit]")
    page.wait_for_url(f"{base}/console/queue")
