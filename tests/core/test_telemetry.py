"""Telemetry summaries: the laws that let the edge and the server keep them incrementally."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ebr_core.telemetry import MAX_BUCKETS, Telemetry, minute_of, summarise

T0 = datetime(2026, 11, 20, 6, tzinfo=UTC)


def reading(seq: int, channel: str, value: str, at: datetime, limit: str | None = None) -> Any:
    payload: dict[str, Any] = {
        "channel": channel,
        "value": {"value": value, "unit": "Cel"},
        "device_time": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "msg_id": str(seq),
    }
    if limit is not None:
        payload["limit"] = limit
    return SimpleNamespace(
        kind="reading.recorded", payload=payload, recorded_at="2026-11-30T00:00:00.000000Z", seq=seq
    )


values = st.decimals(min_value=-50, max_value=200, places=2, allow_nan=False).map(str)
steps_s = st.integers(min_value=0, max_value=4 * 3600)  # gaps between readings, up to 4 h


@st.composite
def readings(draw: st.DrawFn) -> list[Any]:
    n = draw(st.integers(min_value=0, max_value=120))
    out, at = [], T0
    for i in range(n):
        at += timedelta(seconds=draw(steps_s))
        ch = draw(st.sampled_from(["temperature", "ph", "do"]))
        lim = draw(st.sampled_from([None, "ok", "high", "low"]))
        out.append(reading(i + 1, ch, draw(values), at, lim))
    return out


@settings(max_examples=60, deadline=None)  # 150 took 15 s under coverage
@given(readings(), st.lists(st.integers(min_value=0, max_value=120), max_size=5))
def test_summaries_of_any_cut_merged_in_order_equal_the_whole(
    evs: list[Any], cuts: list[int]
) -> None:
    whole = summarise(evs).to_json()
    points = sorted({min(c, len(evs)) for c in cuts} | {0, len(evs)})
    merged = Telemetry()
    for a, b in itertools.pairwise(points):
        merged.merge(summarise(evs[a:b]))
    assert merged.to_json() == whole
    # and through the stored form, as the server and the edge snapshot keep it
    assert Telemetry.from_json(merged.to_json()).digest() == summarise(evs).digest()


@settings(max_examples=50, deadline=None)  # 100 took 11 s under coverage
@given(readings())
def test_the_series_is_bounded_and_hides_no_excursion(evs: list[Any]) -> None:
    t = summarise(evs)
    assert t.readings == len(evs)
    for name, c in t.channels.items():
        mine = [e for e in evs if e.payload["channel"] == name]
        assert c.count == len(mine)
        assert c.excursions == sum(1 for e in mine if e.payload.get("limit", "ok") != "ok")
        assert Decimal(c.max) == max(Decimal(e.payload["value"]["value"]) for e in mine)
        assert Decimal(c.min) == min(Decimal(e.payload["value"]["value"]) for e in mine)
        assert c.last == mine[-1].payload["value"]["value"]
        pts = c.series.points()
        assert len(pts) <= MAX_BUCKETS
        assert sum(p["n"] for p in pts) == c.count
        assert max(p["max"] for p in pts) == float(c.max)  # the peak is always plotted
        assert min(p["min"] for p in pts) == float(c.min)
        width = (1 << c.series.k) * 60
        for e in mine:  # every reading lies inside its own bucket's band
            m = minute_of(e.payload["device_time"])
            assert m is not None
            b = next(p for p in pts if p["t"] <= m * 60 < p["t"] + width)
            assert b["min"] <= float(e.payload["value"]["value"]) <= b["max"]


def test_ten_days_of_readings_stay_within_the_bucket_budget() -> None:
    evs = [
        reading(i, "temperature", "37.0", T0 + timedelta(seconds=7.5 * i)) for i in range(115_200)
    ]
    evs[50_000] = reading(50_000, "temperature", "38.9", T0 + timedelta(seconds=7.5 * 50_000))
    c = summarise(evs).channels["temperature"]
    pts = c.series.points()
    assert len(pts) <= MAX_BUCKETS
    assert max(p["max"] for p in pts) == 38.9
    assert pts[-1]["t"] - pts[0]["t"] >= 9 * 86400  # the plot spans the 10 days


def test_a_changed_reading_changes_the_digest() -> None:
    evs = [reading(i, "ph", f"7.{i % 10}", T0 + timedelta(minutes=i)) for i in range(1, 50)]
    before = summarise(evs).digest()
    evs[20] = reading(21, "ph", "7.05", T0 + timedelta(minutes=21))
    assert summarise(evs).digest() != before


def test_a_reading_with_several_quantities_is_one_channel_each() -> None:
    ev = SimpleNamespace(
        kind="reading.recorded",
        payload={
            "channel": "cell_count",
            "sample_id": "S-1",
            "total": {"value": "2000000", "unit": "/mL"},
            "viability": {"value": "92.0", "unit": "%"},
        },
        recorded_at="2026-11-30T08:00:00.000000Z",
        seq=7,
    )
    t = summarise([ev])
    assert sorted(t.channels) == ["cell_count.total", "cell_count.viability"]
    assert (t.channels["cell_count.viability"].last, t.readings) == ("92.0", 1)


def test_malformed_times_fall_back_to_the_recorded_time() -> None:
    assert minute_of("2026-11-30T08:01:59Z") == minute_of("2026-11-30T08:01:00.000000Z")
    for bad in ("", "yesterday", "2026-13-30T08:01:00Z", "２０２６-11-30T08:01:00Z", None, 5):
        assert minute_of(bad) is None
    ev = reading(1, "temperature", "37.0", T0)
    ev.payload["device_time"] = "not a time"
    c = summarise([ev]).channels["temperature"]
    assert c.last_at == ev.recorded_at


odd_payloads = st.one_of(
    st.builds(
        lambda ch, v, t, lim: {"channel": ch, "value": v, "device_time": t, "limit": lim},
        st.sampled_from(["temperature", "ph", 7, None]),
        st.one_of(
            values.map(lambda x: {"value": x, "unit": "Cel"}),
            st.just({"value": "1" * 400, "unit": "Cel"}),  # a decimal too large for a float
            st.just({"value": 5, "unit": "Cel"}),
            st.just("37.0"),
        ),
        st.one_of(
            st.integers(0, 3000).map(
                lambda m: (T0 + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            ),
            st.just("garbage-time-string"),
            st.just(17),
            st.none(),
        ),
        st.sampled_from(["ok", "high", None]),
    ),
    st.just({"channel": "cell_count", "viability": {"value": "91.5", "unit": "%"}}),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(odd_payloads, max_size=30), max_size=5))
@example([[{"channel": "temperature", "value": {"value": "1", "unit": "Cel"}, "device_time": 17}]])
@example([[{"channel": "ph", "value": {"value": "7", "unit": "[pH]"}, "device_time": ["x"]}]])
@example([[{"channel": "ph", "value": {"value": "7", "unit": "[pH]"}}] * 3])  # no device time
def test_a_run_in_bulk_equals_its_readings_one_at_a_time(runs: list[list[dict[str, Any]]]) -> None:
    """The bulk path the server's ingest takes gives what one at a time gives, for any payloads,
    malformed ones included (they take the slow path whole)."""
    bulk, single = Telemetry(), Telemetry()
    seq = 1
    for run in runs:
        at = ["2026-11-30T08:00:00.000000Z"] * len(run)
        bulk.add_run(run, at, seq)
        for i, p in enumerate(run):
            single.add(p, at[i], seq + i)
        seq += len(run)
    assert bulk.to_json() == single.to_json()
