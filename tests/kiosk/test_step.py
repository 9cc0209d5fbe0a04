"""The step screen in a real Chromium: a batch started by scanning the COI, the wrong patient
refused in a red full-width banner, a code from the attached scanner (the station's scan sink,
pushed over SSE) and from a keyboard-wedge scanner reaching the step without a touch."""

from __future__ import annotations

from typing import Any

from tests.kiosk.conftest import COI, PW, WRONG_COI, Served, sign_in, wedge


def start(page: Any, base: str, batch: str = "B1") -> None:
    page.fill("#f-batch_id", batch)
    page.fill("#f-coi", COI)
    page.fill("#f-password", PW["op.alice"])
    page.click("#start-batch button[type=submit]")
    page.wait_for_url(f"{base}/b/{batch}/step")


def test_wrong_patient_is_a_red_full_width_stop(page: Any, kiosk: Served, station: Any) -> None:
    sign_in(page, kiosk.url, "op.alice")
    page.screens.check("batches")
    start(page, kiosk.url)
    assert page.inner_text("#h-step").startswith("Step 1 of 13")
    assert "ISBT 128" in page.inner_text("#h-expects + h3 + p")
    page.screens.check("step")
    page.fill("#f-code", WRONG_COI)
    page.press("#f-code", "Enter")
    banner = page.locator("#banner.refusal.stop")
    banner.wait_for()
    text = banner.inner_text()
    assert "STOP" in text and "(wrong patient)" in text
    colour = banner.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(176, 0, 32)"
    box, main = banner.bounding_box(), page.locator("#main").bounding_box()
    assert box["width"] >= main["width"] - 40  # full width of the content
    page.screens.check("step-refused")
    st = station.engine.state("B1")
    assert len(st.scans_rejected) == 1 and not st.completed_steps


def test_scanner_and_wedge_reach_the_step(page: Any, kiosk: Served, station: Any) -> None:
    sign_in(page, kiosk.url, "op.alice")
    start(page, kiosk.url)
    # The attached scanner: the station's reader thread hands the code to the kiosk's sink.
    page.locator("body[data-live]").wait_for(state="attached")  # its event stream is open
    station.scan(COI)
    page.locator("#banner.ok", has_text="patient material accepted").wait_for()
    assert station.engine.state("B1").step_scans("receipt/apheresis/coi-scan")
    # Sign, verify, then the wedge on the cartridge step (no field focused: keys to the page).
    page.fill("#f-password-sign", PW["op.alice"])
    page.press("#f-password-sign", "Enter")
    page.click("#open-verify")
    page.fill("#f-user_id-verifier", "op.bob")
    page.fill("#f-password-verifier", PW["op.bob"])
    page.click("#verify-form button[type=submit]")
    page.locator("#banner.ok", has_text="step receipt/apheresis/coi-scan completed").wait_for()


def on_the_step_with_no_field_focused(page: Any, base: str) -> None:
    sign_in(page, base, "op.alice")
    start(page, base)
    page.locator("#f-code").evaluate("e => e.blur()")  # keys go to the page


def accepted_once(page: Any, station: Any) -> None:
    """The COI scan reached the step once, and nothing was refused on the way."""
    page.locator("#banner.ok", has_text="patient material accepted").wait_for()
    st = station.engine.state("B1")
    assert len(st.step_scans("receipt/apheresis/coi-scan")) == 1
    assert not st.scans_rejected


def test_a_wedge_burst_is_a_scan_and_slow_typing_is_not(
    page: Any, kiosk: Served, station: Any
) -> None:
    """With no field focused, keys 5 ms apart ending in Enter (a keyboard-wedge scanner) are the
    step's scan; keys 150 ms apart (a person at the keyboard: here the wrong patient's code,
    which would be refused) are not taken as one."""
    on_the_step_with_no_field_focused(page, kiosk.url)
    wedge(page, WRONG_COI, gap_s=0.15)
    wedge(page, COI)
    accepted_once(page, station)


def test_a_wedge_burst_stays_whole_when_a_field_takes_the_focus_half_way(
    page: Any, kiosk: Served, station: Any
) -> None:
    """A panel swapped in focuses its scan field: a burst begun on the page before that keeps
    all its keys (none lost to the field, none left out of the code)."""
    on_the_step_with_no_field_focused(page, kiosk.url)

    def focus_the_field(i: int) -> None:
        if i == 3:
            page.locator("#f-code").focus()

    wedge(page, COI, before=focus_the_field)
    accepted_once(page, station)


def test_a_scan_before_the_page_s_stream_opens_reaches_it_when_it_does(
    page: Any, kiosk: Served, station: Any
) -> None:
    """A page drawn, its event stream not open yet (reloaded, on a slow or broken link): a scan
    taken meanwhile goes to the step the operator is at, and the step's panel (with its banner)
    reaches the page once its stream opens."""
    sign_in(page, kiosk.url, "op.alice")
    start(page, kiosk.url)
    page.locator("body[data-live]").wait_for(state="attached")
    page.route("**/events?*", lambda route: route.abort())  # the new stream cannot open yet
    page.reload()
    page.locator("#f-code").wait_for()
    station.scan(COI)
    st = station.engine.state("B1")
    assert len(st.step_scans("receipt/apheresis/coi-scan")) == 1  # recorded at once
    assert page.locator("#banner.ok").count() == 0  # not on the page yet
    page.unroute("**/events?*")
    page.locator("#banner.ok", has_text="patient material accepted").wait_for()
    assert page.locator("#f-password-sign").count() == 1  # the panel after the scan


def test_a_scan_just_after_a_form_s_answer_reaches_the_page(
    page: Any, kiosk: Served, station: Any
) -> None:
    """A form's answer replaces the page's main part: a scan the moment its banner shows (before
    htmx has set the new part up) still reaches the page."""
    sign_in(page, kiosk.url, "op.alice")
    start(page, kiosk.url)
    page.locator("body[data-live]").wait_for(state="attached")
    page.fill("#f-code", WRONG_COI)
    page.press("#f-code", "Enter")
    page.locator("#banner.refusal").wait_for()
    station.scan(COI)
    page.locator("#banner.ok", has_text="patient material accepted").wait_for()


def test_badge_scan_signs_in_and_the_operator_never_types_their_id(
    page: Any, kiosk: Served, station: Any
) -> None:
    page.goto(f"{kiosk.url}/signin")
    page.locator("body[data-live]").wait_for(state="attached")
    page.locator("#f-user_id").evaluate("e => e.blur()")
    station.scan("op.bob")  # the badge, read by the attached scanner
    page.locator("#signin-password").wait_for()
    assert "Password for Bob Okafor (op.bob)" in page.inner_text("#main")
    page.fill("#f-password", PW["op.bob"])
    page.press("#f-password", "Enter")
    page.wait_for_url(f"{kiosk.url}/batches")
    assert "Signed in: Bob Okafor (op.bob)" in page.inner_text("header")
    # No screen of the session asks for the operator's own id again, only for a password.
    station.engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
    for path in ("/batches", "/b/B1/step", "/b/B1/handoff", "/b/B1/labels", "/b/B1/deviations"):
        page.goto(kiosk.url + path)
        own_id = page.locator("input[name=user_id], input[name=giver]")
        assert own_id.count() == 0, path
