"""A kiosk screen left alone locks itself after the session's idle time (here 4 s; 15 minutes
at a station), in a real Chromium."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from edge.kiosk.app import KioskSettings
from tests.kiosk.conftest import Served, sign_in


@pytest.fixture
def settings() -> KioskSettings:
    return KioskSettings(live_period_s=0.5, session_idle=timedelta(seconds=4))


def test_a_screen_left_alone_locks_itself(page: Any, kiosk: Served) -> None:
    sign_in(page, kiosk.url, "op.alice")
    assert "Signed in: Alice Martin" in page.inner_text("header")
    # Nobody touches the screen: after the idle time it shows the sign-in screen, and why.
    page.locator("#banner.notice", has_text="Your session ended").wait_for(timeout=15_000)
    assert page.url == f"{kiosk.url}/signin" and "Signed in" not in page.inner_text("header")
    assert page.goto(f"{kiosk.url}/batches").url == f"{kiosk.url}/signin"


def test_scans_taken_by_the_step_are_activity(page: Any, kiosk: Served, station: Any) -> None:
    from tests.kiosk.conftest import COI, PW, WRONG_COI

    station.engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
    sign_in(page, kiosk.url, "op.alice")
    page.goto(f"{kiosk.url}/b/B1/step")
    page.locator("body[data-live]").wait_for(state="attached")
    for _ in range(7):  # 7 s of scanning, longer than the idle time, no touch on the screen
        page.evaluate("document.querySelectorAll('#banner').forEach(b => b.dataset.seen = '1')")
        station.scan(WRONG_COI)
        page.locator("#banner.refusal:not([data-seen])").wait_for()
        page.wait_for_timeout(1000)
    assert page.url == f"{kiosk.url}/b/B1/step"
    assert len(station.engine.state("B1").scans_rejected) == 7
