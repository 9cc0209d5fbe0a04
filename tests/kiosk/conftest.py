"""Shared fixtures of the kiosk's tests: a unit (real SQLite ledger, the example CAR-T MBR), the
kiosk served by uvicorn on a free port (real HTTP), and Debian's headless Chromium driven by
Playwright, with an accessibility check (the vendored axe-core) and a screenshot of each screen.
On failure the screenshots' directory and the failing page's screenshot are printed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from ebr_core.document import content_hash, load_yaml
from ebr_core.keys import UnitSigner
from ebr_core.mbr import parse_mbr
from edge.agent import EdgeAgent
from edge.engine import Engine
from edge.kiosk.app import KioskSettings, create_app
from edge.kiosk.local import LocalStation
from edge.ledger import Ledger
from edge.materials import load_materials
from edge.users import load_users
from server.pgcluster import free_port
from tests.edge.conftest import EXAMPLES, PW
from webui import AXE

COI = "&/CHA999926ABC123"
WRONG_COI = "&/CHA999926XYZ789"
UNIT = "UNIT-KIOSK"
SIZES = {"small": (1280, 800), "large": (1920, 1080)}

__all__ = ["COI", "PW", "WRONG_COI"]


class RealClock:
    """The unit's clock: real time (label expiry dates are read against it), never repeating."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def __call__(self) -> datetime:
        self.t = max(datetime.now(UTC), self.t + timedelta(microseconds=1))
        return self.t


def make_engine(home: Path, clock: Any = None) -> Engine:
    content = load_yaml((EXAMPLES / "car_t_mbr.yaml").read_text())
    clock = clock or RealClock()
    ledger = Ledger.open(home / "edge.db", UnitSigner.generate(UNIT), clock)
    return Engine(
        ledger,
        parse_mbr(content),
        content_hash(content),
        load_users((EXAMPLES / "users.yaml").read_text()),
        load_materials((EXAMPLES / "materials.yaml").read_text()),
        clock,
    )


@pytest.fixture
def station(tmp_path: Path) -> Iterator[LocalStation]:
    engine = make_engine(tmp_path)
    st = LocalStation(EdgeAgent(tmp_path, UNIT, engine.ledger, engine))
    yield st
    engine.ledger.close()


class Served:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread (real HTTP)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > end or not self.thread.is_alive():
                raise RuntimeError("the kiosk did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.app.state.kiosk.close()  # end the event streams, then the server
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def settings() -> KioskSettings:
    return KioskSettings(live_period_s=0.5)


@pytest.fixture
def kiosk(station: LocalStation, settings: KioskSettings) -> Iterator[Served]:
    served = Served(create_app(station, settings))
    yield served
    served.stop()


@pytest.fixture
def kiosk_url(kiosk: Served) -> str:
    """Where the browser goes: the kiosk over a LocalStation, unless a test module serves it
    otherwise (the whole batch runs it in the station agent)."""
    return kiosk.url


@dataclass
class Screens:
    """Checks each screen the test visits: axe-core's serious and critical violations must be
    none, and a screenshot is kept (printed on failure)."""

    page: Any
    base: str
    out: Path
    shots: list[Path] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def check(self, name: str) -> None:
        shot = self.out / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(shot), full_page=True)
        self.shots.append(shot)
        violations = axe_violations(self.page, self.base)
        assert not violations, f"accessibility ({name}): {violations}"
        self.checked.append(name)


def wedge(
    page: Any, code: str, gap_s: float = 0.005, before: Callable[[int], None] | None = None
) -> None:
    """A keyboard-wedge scanner types ``code`` and Enter into the page: trusted key events
    (Chrome DevTools' ``Input.dispatchKeyEvent``), each stamped ``gap_s`` after the last, the
    scanner's own rhythm whatever the machine's load (Playwright's ``keyboard.type`` stamps a key
    when it reaches a browser that may be busy, so a loaded machine "types" slowly).
    ``before(i)`` runs before the ``i``-th key is sent."""
    cdp = page.context.new_cdp_session(page)
    t0 = time.time()
    for i, ch in enumerate([*code, "Enter"]):
        if before is not None:
            before(i)
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}
        if ch != "Enter":
            key = {"key": ch, "text": ch}
        at = {"timestamp": t0 + i * gap_s}
        cdp.send("Input.dispatchKeyEvent", {"type": "keyDown", **key, **at})
        cdp.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key["key"], **at})
    cdp.detach()


def axe_violations(page: Any, base: str) -> list[str]:
    """Serious and critical axe-core violations of the page, one line each."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=f"{base}/static/webui/{AXE.directory}/axe.min.js")
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
    )
    return list(result)


@pytest.fixture
def page(
    browser: Any, kiosk_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Any]:
    width, height = SIZES["small"]
    ctx = browser.new_context(viewport={"width": width, "height": height})
    ctx.set_default_timeout(10_000)
    pg = ctx.new_page()
    shots = tmp_path / "screens"
    shots.mkdir()
    pg.screens = Screens(pg, kiosk_url, shots)  # type: ignore[attr-defined]
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        final = shots / "failure.png"
        try:
            pg.screenshot(path=str(final), full_page=True)
        except Exception as e:  # the page may be gone; the earlier screens are kept
            print(f"no screenshot of the failing page: {e}")
        print(f"kiosk screenshots (each screen visited, then the failure): {shots}")
    ctx.close()


def sign_in(page: Any, base: str, user: str) -> None:
    page.goto(f"{base}/signin")
    page.fill("#f-user_id", user)
    page.click("#signin-user button[type=submit]")
    page.fill("#f-password", PW[user])
    page.click("#signin-password button[type=submit]")
    page.wait_for_url(f"{base}/batches")
