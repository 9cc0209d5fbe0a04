"""Telemetry charts: an excursion is never hidden, the limits are drawn where they are, and a
million readings draw no more points than a few hundred."""

from __future__ import annotations

import re
from decimal import Decimal

from ebr_core.mbr import Limit
from ebr_core.telemetry import Channel
from edge.kiosk.charts import chart


def channel(values: list[float]) -> Channel:
    ch = Channel("temperature", "Cel")
    for i, v in enumerate(values):
        ch.add(f"{v:.2f}", "Cel", "2026-11-24T08:00:00Z", 29_000_000 + i // 60, v > 38)
    return ch


def points(svg: str) -> list[tuple[float, float]]:
    m = re.search(r'<polygon class="band" points="([^"]+)"', svg)
    assert m
    return [(float(a), float(b)) for a, b in (p.split(",") for p in m.group(1).split())]


def limit_ys(svg: str) -> list[float]:
    return [float(y) for y in re.findall(r'<line class="limit" x1="\d+" y1="([\d.]+)"', svg)]


def test_an_excursion_shows_above_the_limit() -> None:
    values = [37.0] * 600
    values[300] = 39.5  # one reading in one minute, among 599 in range
    svg = chart(channel(values), Limit(Decimal("36.0"), Decimal("38.0")), "t")
    top = min(y for _, y in points(svg))
    upper_limit = min(limit_ys(svg))  # y grows downwards
    assert top < upper_limit
    assert len(limit_ys(svg)) == 2
    svg_ok = chart(channel([37.0] * 600), Limit(Decimal("36.0"), Decimal("38.0")), "t")
    assert min(y for _, y in points(svg_ok)) > min(limit_ys(svg_ok))


def test_a_million_readings_draw_at_most_two_points_per_bucket() -> None:
    ch = Channel("ph", "[pH]")
    ch.series.add_band(29_000_000, 1_000_000 // 2, 7.0, 7.4)
    for m in range(0, 14_400, 1):  # ten days of minutes
        ch.series.add(29_000_000 + m, 7.2)
    svg = chart(ch, None, "ph")
    assert len(points(svg)) <= 2 * 512
    assert 'aria-label="ph"' in svg and "<title>ph</title>" in svg


def test_text_is_escaped() -> None:
    svg = chart(channel([37.0]), None, '<script>"x"</script>')
    assert "<script>" not in svg and "&lt;script&gt;" in svg
