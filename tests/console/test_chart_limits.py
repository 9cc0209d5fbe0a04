"""Charts with the limits the record holds, in Chromium against a real server that holds no MBR:
the batch's batch.started records the telemetry limits, so the chart draws them as limit lines
titled with their source, marks the bucket that reaches beyond them (and, zoomed, the reading
the unit marked), and the values table shows each value's recorded limits.  Every screen passes
axe-core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import Served, push_batch, sign_in

LIMITS = {
    "telemetry": {"temperature": {"unit": "Cel", "min": "36.0", "max": "38.0"}},
    "value": {
        "unit": "1",
        "hard": {"min": "50000000"},
        "soft": {"min": "100000000", "max": "500000000"},
    },
}
BOX = "#chart-box-0"


def _titles(page: Any, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(f"{selector} > title").all_text_contents()]


def test_a_chart_draws_the_recorded_limits_and_marks_what_lies_beyond(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_batch(served, tmp_path, "B-LIMITS", deviations=(), readings=600, limits=LIMITS)
    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    rev.goto(f"{served.url}/console/batches/B-LIMITS")

    assert rev.locator(f"{BOX} svg .nolimits").count() == 0
    assert _titles(rev, f"{BOX} svg line.limit") == [
        "low limit 36 (MBR CAR-T v3, recorded in the batch's record)",
        "high limit 38 (MBR CAR-T v3, recorded in the batch's record)",
    ]
    outside = _titles(rev, f"{BOX} svg line.outside")
    assert len(outside) == 1 and outside[0].startswith("39.5 above the high limit 38 in the bucket")
    note = rev.inner_text("#chart-note-0")
    assert "Limits: 36.0–38.0 °C (MBR CAR-T v3), recorded in batch.started at seq 1" in note
    assert "Buckets reaching beyond them are marked in red" in note
    # each value with the limits its own event records
    assert rev.inner_text("#values td.limits") == "ok (soft 100000000–500000000, hard ≥ 50000000)"
    rev.screens.check("chart-limits")

    rev.focus("#zoom-in-0")
    rev.keyboard.press("Enter")  # the middle quarter, where the excursion is
    rev.wait_for_selector("#chart-note-0:has-text('readings read')")
    assert rev.locator(f"{BOX} circle.excursion").count() == 1
    assert len(_titles(rev, f"{BOX} svg line.limit")) == 2
    assert "Limits: 36.0–38.0 °C (MBR CAR-T v3)" in rev.inner_text("#chart-note-0")
    rev.screens.check("chart-limits-zoomed")


def test_a_batch_whose_record_holds_no_limits_says_so(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_batch(served, tmp_path, "B-NOLIM", deviations=(), readings=60)
    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    rev.goto(f"{served.url}/console/batches/B-NOLIM")
    assert "no limits" in rev.text_content(f"{BOX} svg .nolimits")
    assert rev.locator(f"{BOX} svg line.limit").count() == 0
    assert rev.locator(f"{BOX} svg line.outside").count() == 0
    assert "this batch's record holds none" in rev.inner_text("#chart-note-0")
    assert rev.inner_text("#values td.limits") == "ok (no limits recorded)"
