"""The telemetry chart's zoom in Chromium against a real server: "no limits" said (the server
holds none), a window fetched at finer resolution from the readings (htmx), the excursion the
unit marked drawn in it, the controls by keyboard, and the API's window route refusing bad
bounds by name.  Every screen passes axe-core."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.server.qa import login

from .conftest import Served, push_batch, sign_in


def test_zoom_fetches_a_window_at_finer_resolution(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_batch(served, tmp_path, "B-ZOOM", deviations=(), readings=600)
    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    rev.goto(f"{served.url}/console/batches/B-ZOOM")
    box = "#chart-box-0"
    assert "no limits" in rev.text_content(f"{box} svg .nolimits")  # never invented
    assert "Whole batch: the stored series" in rev.inner_text("#chart-note-0")
    assert rev.locator(f"{box} circle.excursion").count() == 0  # the overview has no positions
    rev.screens.check("chart-overview")

    rev.focus("#zoom-in-0")
    rev.keyboard.press("Enter")  # the middle quarter, where the excursion is
    rev.wait_for_selector("#chart-note-0:has-text('readings read')")
    note = rev.inner_text("#chart-note-0")
    assert "1 excursion(s) marked" in note and "buckets of 60 s" in note, note
    assert rev.locator(f"{box} circle.excursion").count() == 1
    rev.screens.check("chart-zoomed")

    # A window typed in, submitted with Enter: fewer readings than the zoom above.
    start = rev.input_value("#zf-0")
    rev.fill("#zt-0", start[:-2] + "59")  # the first minute of the window only
    rev.focus("#zt-0")
    before = rev.inner_text("#chart-note-0")
    rev.keyboard.press("Enter")
    # the previous window's note says "readings read" too: wait for the new one to replace it
    rev.wait_for_function(
        "old => document.querySelector('#chart-note-0').innerText !== old", arg=before
    )
    assert rev.inner_text("#chart-note-0").startswith(("1 readings read", "0 readings read"))
    # A bad bound is refused by name, in place.
    rev.fill("#zf-0", "yesterday")
    rev.click("#zoom-0")
    rev.wait_for_selector("#telemetry .banner.refusal")
    assert "from 'yesterday'" in rev.inner_text("#telemetry .banner.refusal")
    rev.screens.check("chart-refused")
    rev.click("#zoom-reset-0")  # back to the whole batch
    rev.wait_for_selector("#chart-note-0:has-text('Whole batch')")

    with login(served.server, "rev.a") as c:
        whole = c.get("/v1/batches/B-ZOOM/telemetry").json()["channels"]["temperature"]
        t0 = datetime.fromisoformat(whole["first_at"]).timestamp()
        r = c.get("/v1/batches/B-ZOOM/telemetry/temperature",
                  params={"from": _iso(t0), "to": _iso(t0 + 3600)})  # fmt: skip
        assert r.status_code == 200, r.text
        w = r.json()
        assert w["resolution"] == "readings" and w["readings"] == 60
        assert w["bucket_s"] == 60 < whole["bucket_s"] and w["limits"] is None
        assert "no limits" in w["limits_note"]
        r = c.get("/v1/batches/B-ZOOM/telemetry/pressure",
                  params={"from": _iso(t0), "to": _iso(t0 + 60)})  # fmt: skip
        assert r.status_code == 404 and "temperature" in r.json()["detail"]
        r = c.get("/v1/batches/B-ZOOM/telemetry/temperature",
                  params={"from": _iso(t0 + 60), "to": _iso(t0)})  # fmt: skip
        assert r.status_code == 422 and "before its end" in r.json()["detail"]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()
