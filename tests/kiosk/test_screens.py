"""Every screen at 1280×800 and 1920×1080 in a real Chromium: no serious or critical axe-core
violation, every control a touch target of at least 44 px, nothing wider than the screen, text
readable at arm's length, and no control that only hover reveals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import webui
from edge.custody import Custody
from edge.kiosk.local import LocalStation
from edge.ledger import Append
from tests.kiosk.conftest import COI, PW, SIZES, WRONG_COI, Served, axe_violations, sign_in

SCREENS = ["batches", "step", "deviations", "labels", "handoff", "telemetry", "history",
           "devices", "sync"]  # fmt: skip

SMALL_TARGETS = """() => [...document.querySelectorAll(
    'a, button, input:not([type=hidden]), select, textarea')]
  .filter(e => e.offsetParent !== null && !e.classList.contains('skip'))
  .map(e => { const r = e.getBoundingClientRect();
    return `${e.tagName}#${e.id} "${(e.innerText || e.name || '').slice(0, 30)}" `
      + `${Math.round(r.width)}x${Math.round(r.height)}`; })
  .filter(s => { const m = s.match(/(\\d+)x(\\d+)$/); return +m[1] < 44 || +m[2] < 44; })"""


def a_batch_in_progress(station: LocalStation) -> None:
    """A batch with something on every screen: steps done, a refused scan, deviations, labels,
    readings."""
    e = station.engine
    e.start_batch("B2", COI, "op.alice", PW["op.alice"])  # at its first step: a scan refused
    e.start_batch("B1", COI, "op.alice", PW["op.alice"])
    e.scan("B1", COI, "op.alice")
    e.sign("B1", PW["op.alice"], "performed", "op.alice")
    e.sign("B1", PW["op.bob"], "verified", "op.bob")
    e.record_value("B1", "apheresis_volume", "320", "mL", "op.alice")  # soft breach: deviation
    e.raise_deviation("B1", "bag label smudged", "op.alice")
    Custody(e).labels_printed("B1", "apheresis_bag", 2, "op.alice", {"coi": COI})
    t0 = datetime.now(UTC) - timedelta(hours=3)
    e.ledger.append_many(
        [
            Append(
                "reading.recorded",
                {
                    "channel": ch,
                    "value": {"value": f"{v + (i % 7) / 10:.1f}", "unit": unit},
                    "device_time": (t0 + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "msg_id": f"m{ch}{i}",
                    "step": "receipt/apheresis/inspect",
                    "limit": "ok",
                },
                "B1",
                None,
            )
            for i in range(180)
            for ch, v, unit in (("temperature", 36.8, "Cel"), ("ph", 7.1, "[pH]"))
        ]
    )


@pytest.mark.parametrize("size", list(SIZES))
def test_every_screen_is_accessible_and_touchable(
    browser: Any, kiosk: Served, station: LocalStation, size: str, tmp_path: Path
) -> None:
    a_batch_in_progress(station)
    width, height = SIZES[size]
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    try:
        page.goto(f"{kiosk.url}/signin")
        problems = check(page, kiosk.url, "signin", tmp_path)
        sign_in(page, kiosk.url, "op.alice")
        page.goto(f"{kiosk.url}/b/B2/step")
        page.fill("#f-code", WRONG_COI)
        page.press("#f-code", "Enter")
        page.locator("#banner.refusal").wait_for()
        problems += check(page, kiosk.url, "step-refused", tmp_path)
        for name in SCREENS:
            url = f"/b/B1/{name}" if name not in ("batches", "devices", "sync") else f"/{name}"
            page.goto(kiosk.url + url)
            problems += check(page, kiosk.url, name, tmp_path)
        page.goto(f"{kiosk.url}/b/B1/step?correct=receipt/apheresis/inspect:apheresis_volume")
        problems += check(page, kiosk.url, "correction-dialog", tmp_path)
        assert not problems, f"{size}: " + "\n".join(problems) + f"\nscreenshots: {tmp_path}"
    finally:
        ctx.close()


def check(page: Any, base: str, name: str, out: Path) -> list[str]:
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    found = [f"{name}: axe {v}" for v in axe_violations(page, base)]
    found += [f"{name}: touch target {s}" for s in page.evaluate(SMALL_TARGETS)]
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if wide > 0:
        found.append(f"{name}: {wide} px wider than the screen")
    size = float(page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)"))
    if size < 18:
        found.append(f"{name}: body text {size} px (at least 18 px at arm's length)")
    return found


def test_no_control_depends_on_hover() -> None:
    kiosk = Path(__file__).resolve().parents[2] / "edge" / "kiosk"
    styles = [webui.STATIC / "webui.css", *kiosk.glob("templates/**/*.html")]
    hover = [p.name for p in styles if ":hover" in p.read_text() or "mouseover" in p.read_text()]
    assert hover == []


def test_the_accessibility_check_sees_a_violation(browser: Any, kiosk: Served) -> None:
    """The check can fail: an image without a text alternative and light grey text on white (axe leaves identical colours to a person)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        page.goto(f"{kiosk.url}/signin")
        assert axe_violations(page, kiosk.url) == []
        page.evaluate(
            "() => { const i = document.createElement('img'); i.src = 'data:,';"
            " document.querySelector('main').append(i);"
            " const b = document.querySelector('main button');"
            " b.style.background = '#fff'; b.style.color = '#bbb'; }"
        )
        found = " ".join(axe_violations(page, kiosk.url))
        assert "image-alt (critical)" in found and "color-contrast (serious)" in found
    finally:
        ctx.close()
