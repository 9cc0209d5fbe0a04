"""Telemetry charts as inline SVG, drawn on the server from a channel's stored downsampled series
(:meth:`ebr_core.telemetry.Series.points`: per bucket its start, count, minimum and maximum), so
the cost depends on the number of buckets, never on the number of readings.

Drawn: a band from each bucket's minimum to its maximum, the scale's extremes, the channel's
limits as dashed lines, each titled with its source, when the record holds them (the batch's
``batch.started``, :func:`server.projections.channel_limits`; else the words "no limits": a limit
is never invented), every bucket whose minimum or maximum lies outside those limits marked in
red, a marker on the time axis for each alarm of the batch, and a dot for each excursion the
unit marked in a zoomed window (read from the readings: the stored series keeps no positions of
single readings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from math import isfinite
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 900, 260
LEFT, RIGHT, TOP, BOTTOM = 90, 20, 20, 40
MAX_POINTS = 600  # buckets drawn at most; more are merged pairwise (min of mins, max of maxes)


@dataclass(frozen=True)
class Point:
    t: float  # epoch seconds
    lo: float
    hi: float


def merge(points: Sequence[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most ``limit`` points, each the envelope of neighbouring buckets (never hides a peak)."""
    out = list(points)
    while len(out) > limit:
        out = [
            Point(a.t, min(a.lo, b.lo), max(a.hi, b.hi)) if b is not None else a
            for a, b in zip(out[::2], [*out[1::2], None], strict=False)
        ]
    return out


def _number(v: object) -> float | None:
    try:
        x = float(str(v))
    except ValueError:
        return None
    return x if isfinite(x) else None


def _epoch(t: str) -> float | None:
    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        return None
    return d.timestamp() if d.tzinfo else None


def _outside(pts: Sequence[Point], limits: Limits, x: Any, y: Any) -> list[str]:
    """A red bar over each bucket that reaches beyond the limits (from its extreme to the limit
    it crosses), titled with what it reached."""
    out = []
    for p in pts:
        for beyond, edge, v, what in (
            (limits.hi is not None and p.hi > limits.hi, limits.hi, p.hi, "above the high"),
            (limits.lo is not None and p.lo < limits.lo, limits.lo, p.lo, "below the low"),
        ):
            if beyond and edge is not None:
                out.append(
                    f'<line class="outside" x1="{x(p.t):.1f}" y1="{y(edge):.1f}" '
                    f'x2="{x(p.t):.1f}" y2="{y(v):.1f}"><title>{v:g} {what} limit {edge:g} in '
                    f"the bucket from {datetime.fromtimestamp(p.t, UTC):%Y-%m-%d %H:%M} UTC"
                    "</title></line>"
                )
    return out


@dataclass(frozen=True)
class Limits:
    """A channel's limits as the server holds them, and where they come from."""

    lo: float | None
    hi: float | None
    source: str


def chart_svg(
    name: str,
    unit: str,
    series: Sequence[dict[str, Any]],
    alarm_times: Sequence[str],
    title_id: str,
    *,
    limits: Limits | None = None,
    excursions: Sequence[dict[str, Any]] = (),
    span: tuple[float, float] | None = None,
) -> Markup:
    """The chart of one channel; ``series`` as :meth:`Series.points` gives it; ``excursions``:
    ``{"t", "value", "limit", "at"}`` each; ``span``: the time axis (a zoomed window)."""
    pts = merge([Point(float(p["t"]), float(p["min"]), float(p["max"])) for p in series])
    if not pts:
        return Markup('<p class="muted">no plottable readings in this window</p>')
    t0, t1 = span if span is not None else (pts[0].t, pts[-1].t)
    lo, hi = min(p.lo for p in pts), max(p.hi for p in pts)
    bounds = [v for v in (limits.lo, limits.hi) if v is not None] if limits else []
    lo, hi = min([lo, *bounds]), max([hi, *bounds])
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    if bounds:  # room above a high limit and below a low one for the bound's label
        pad = (hi - lo) * 0.1
        lo, hi = lo - pad, hi + pad
    if t1 == t0:
        t1 = t0 + 1
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * pw

    def y(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * ph

    upper = " ".join(f"{x(p.t):.1f},{y(p.hi):.1f}" for p in pts)
    lower = " ".join(f"{x(p.t):.1f},{y(p.lo):.1f}" for p in reversed(pts))
    parts = [
        (
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-labelledby="{escape(title_id)}" xmlns="http://www.w3.org/2000/svg">'
        ),
        (
            f'<title id="{escape(title_id)}">{escape(name)} ({escape(unit)}): {len(series)} '
            f"buckets from {lo:g} to {hi:g}</title>"
        ),
        f'<line class="axis" x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}"/>',
        f'<text x="4" y="{TOP + 18}">{hi:g}</text>',
        f'<text x="4" y="{TOP + ph}">{lo:g}</text>',
        f'<polygon class="band" points="{upper} {lower}"/>',
    ]
    if limits is None:
        parts.append(
            f'<text class="nolimits" x="{LEFT + pw - 130}" y="{TOP + 18}">no limits</text>'
        )
    else:
        for v, what in ((limits.lo, "low"), (limits.hi, "high")):
            if v is not None:
                parts.append(
                    f'<line class="limit" x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + pw}" '
                    f'y2="{y(v):.1f}"><title>{what} limit {v:g} ({escape(limits.source)})'
                    "</title></line>"
                )
                # the bound's value at the right end, above a high limit and below a low one
                ty = y(v) - 6 if what == "high" else y(v) + 22
                parts.append(
                    f'<text class="limitlabel" x="{LEFT + pw - 4}" y="{ty:.1f}" '
                    f'text-anchor="end">{what} {v:g}</text>'
                )
        parts += _outside(pts, limits, x, y)
    for e in excursions:
        t, v = e.get("t"), _number(e.get("value"))
        if isinstance(t, int | float) and v is not None and t0 <= t <= t1:
            parts.append(
                f'<circle class="excursion" cx="{x(float(t)):.1f}" cy="{y(v):.1f}" r="6">'
                f"<title>excursion ({escape(str(e.get('limit')))}) {v:g} at "
                f"{escape(str(e.get('at')))}</title></circle>"
            )
    for when in alarm_times:
        t = _epoch(when)
        if t is not None and t0 <= t <= t1:
            parts.append(
                f'<line class="alarm" x1="{x(t):.1f}" y1="{TOP}" x2="{x(t):.1f}" '
                f'y2="{TOP + ph}"><title>alarm at {escape(when)}</title></line>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text above is escaped or a number)
