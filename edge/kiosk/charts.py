"""Telemetry charts as inline SVG, drawn on the server from the downsampled series.

Each channel's series (:mod:`ebr_core.telemetry`) holds at most 512 min/max buckets however many
readings the batch has, so a chart of a million readings costs the same as one of a hundred.
The band spans each bucket's minimum and maximum (an excursion is never hidden by averaging),
outlined so that a flat series still shows as a line; the limits of the MBR are dashed lines.
No JavaScript library.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

from ebr_core.mbr import Limit
from ebr_core.telemetry import Channel

W, H = 960, 320
LEFT, RIGHT, TOP, BOTTOM = 90, 20, 28, 48


@dataclass(frozen=True)
class Chart:
    channel: str
    unit: str
    svg: Markup
    limit: Limit | None


def _fmt_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _num(v: float) -> str:
    return f"{v:.1f}"


def chart(ch: Channel, limit: Limit | None, title: str) -> Markup:
    """The SVG of one channel; ``title`` is its accessible name."""
    pts = ch.series.points()
    lows = [float(p["min"]) for p in pts]
    highs = [float(p["max"]) for p in pts]
    bounds = [float(v) for v in (limit.min, limit.max) if v is not None] if limit else []
    ys = lows + highs + bounds
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    pad = (y1 - y0) * 0.08
    y0, y1 = y0 - pad, y1 + pad
    if pts:
        t0 = float(pts[0]["t"])
        t1 = float(pts[-1]["t"]) + ch.series.width_min() * 60
    else:
        t0, t1 = 0.0, 1.0
    span = max(t1 - t0, 1.0)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - t0) / span * pw

    def y(v: float) -> float:
        return TOP + (y1 - v) / (y1 - y0) * ph

    width = ch.series.width_min() * 60
    out = [
        (
            f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
            f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        ),
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}"/>',
    ]
    if pts:
        # One point per bucket at its middle (two for a lone bucket, so it has a width): at
        # most 512 a side, under the plot's width in pixels.
        ts = [float(p["t"]) + width / 2 for p in pts] if len(pts) > 1 else [t0, t1]
        if len(pts) == 1:
            lows, highs = lows * 2, highs * 2
        upper = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(ts, highs, strict=True))
        lower = " ".join(
            f"{x(a):.1f},{y(b):.1f}" for a, b in zip(reversed(ts), reversed(lows), strict=True)
        )
        out.append(f'<polygon class="band" points="{upper} {lower}"/>')
    for v in bounds:
        out.append(
            f'<line class="limit" x1="{LEFT}" y1="{_num(y(v))}" x2="{LEFT + pw}" '
            f'y2="{_num(y(v))}"/>'
        )
        out.append(
            f'<text x="{LEFT + pw - 4}" y="{_num(y(v) - 4)}" text-anchor="end">{escape(v)}</text>'
        )
    out.append(f'<text x="{LEFT - 6}" y="{TOP + 16}" text-anchor="end">{_num(y1)}</text>')
    out.append(f'<text x="{LEFT - 6}" y="{TOP + ph}" text-anchor="end">{_num(y0)}</text>')
    if pts:
        out.append(f'<text x="{LEFT}" y="{H - 12}">{_fmt_time(t0)}</text>')
        out.append(f'<text x="{LEFT + pw}" y="{H - 12}" text-anchor="end">{_fmt_time(t1)}</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 (numbers and escaped text only)
