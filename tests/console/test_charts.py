"""The console's telemetry chart: drawn from the stored downsampled series, a bounded number
of points however many buckets, never hiding a peak, every text escaped."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ebr_core.telemetry import Telemetry
from server.console.charts import Limits, Point, chart_svg, merge
from server.quality.views import telemetry_json


@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(0, 1e3)), max_size=3000),
       st.integers(1, 700))  # fmt: skip
def test_merge_keeps_the_envelope_within_the_limit(
    buckets: list[tuple[float, float]], limit: int
) -> None:
    pts = [Point(float(i), lo, lo + w) for i, (lo, w) in enumerate(buckets)]
    out = merge(pts, limit)
    assert len(out) <= limit
    if pts:
        assert min(p.lo for p in out) == min(p.lo for p in pts)
        assert max(p.hi for p in out) == max(p.hi for p in pts)
        assert out[0].t == pts[0].t


def test_a_million_readings_draw_from_the_series_in_milliseconds() -> None:
    t = Telemetry()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    n = 1_000_000
    payloads = [
        {"channel": "temperature", "value": {"value": "37.0" if i != n // 3 else "41.5",
                                             "unit": "Cel"}, "limit": "ok"}
        for i in range(n)
    ]  # fmt: skip
    t.add_run(payloads, [(start + timedelta(seconds=i)).isoformat() for i in range(n)], 1)
    began = time.perf_counter()
    series = telemetry_json(t, series=True)["temperature"]["series"]
    svg = chart_svg("temperature", "Cel", series, [(start + timedelta(days=3)).isoformat()], "c")
    took = time.perf_counter() - began
    assert took < 0.2, f"drawing took {took:.3f} s"
    assert "41.5" in svg and "37" in svg  # the one peak is on the chart's scale
    assert svg.count("<title>alarm at") == 1


def test_text_is_escaped() -> None:
    svg = chart_svg('<b>"x"</b>', "<u>", [{"t": 0, "n": 1, "min": 1.0, "max": 2.0}], [], "i")
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert str(chart_svg("x", "u", [], [], "i")).startswith("<p")


def test_limits_are_drawn_with_their_source_and_buckets_beyond_them_marked() -> None:
    series = [{"t": 60 * i, "n": 1, "min": 37.0, "max": 39.5 if i == 5 else 37.4}
              for i in range(10)]  # fmt: skip
    svg = str(chart_svg("temperature", "°C", series, [], "c",
                        limits=Limits(36.0, 38.0, "MBR M v1")))  # fmt: skip
    assert svg.count('class="limit"') == 2 and "nolimits" not in svg
    assert "<title>low limit 36 (MBR M v1)</title>" in svg
    assert "<title>high limit 38 (MBR M v1)</title>" in svg
    assert svg.count('class="outside"') == 1
    assert "<title>39.5 above the high limit 38 in the bucket from 1970-01-01 00:05 UTC" in svg
    low = str(chart_svg("t", "°C", series, [], "c", limits=Limits(37.2, None, "<MBR>")))
    assert low.count('class="limit"') == 1 and "&lt;MBR&gt;" in low
    assert low.count('class="outside"') == 10  # every bucket's minimum, 37.0, is below 37.2
    none = str(chart_svg("t", "°C", series, [], "c"))
    assert "no limits" in none and 'class="limit"' not in none and "outside" not in none
