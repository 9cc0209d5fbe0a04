"""Custody rules: temperature excursions at the right boundary (streaming = offline reference),
logger files with clear errors, label reconciliation, and the custody chain check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.custody import (
    CustodyError,
    LabelCount,
    check_custody,
    find_excursions,
    parse_logger_csv,
    signed_content_hash,
)
from ebr_core.record import Event

T0 = datetime(2026, 11, 25, 8, tzinfo=UTC)
LIMIT = Decimal(-150)
ALLOWED = timedelta(minutes=5)


def series(temps: list[int], step_s: int = 60) -> list[tuple[datetime, Decimal]]:
    return [(T0 + timedelta(seconds=i * step_s), Decimal(t)) for i, t in enumerate(temps)]


def test_excursion_boundaries() -> None:
    warm_exactly = series([-190] + [-140] * 5 + [-190])  # warm from 1 min, cold at 6 min: 5 min
    assert find_excursions(warm_exactly, LIMIT, ALLOWED) == []
    warm_longer = series([-190] + [-140] * 6 + [-190])  # warm 1 min .. cold at 7 min: 6 min
    (x,) = find_excursions(warm_longer, LIMIT, ALLOWED)
    assert x.started_at == T0 + timedelta(minutes=1) and x.duration == timedelta(minutes=6)
    # Exactly at the limit is not warmer than it.
    assert find_excursions(series([-150] * 20), LIMIT, ALLOWED) == []
    # Still warm at the end of the log and past the allowed time: reported, open-ended.
    (y,) = find_excursions(series([-190] + [-149] * 10), LIMIT, ALLOWED)
    assert y.ended_at is None and y.peak_c == Decimal(-149)


def reference(samples: list[tuple[datetime, Decimal]]) -> list[datetime]:
    """Brute force: start times of warm runs whose span (first warm sample to the next cold
    sample, or to the last sample) exceeds the allowed time."""
    out, i = [], 0
    while i < len(samples):
        if samples[i][1] <= LIMIT:
            i += 1
            continue
        j = i
        while j < len(samples) and samples[j][1] > LIMIT:
            j += 1
        end = samples[j][0] if j < len(samples) else samples[j - 1][0]
        if end - samples[i][0] > ALLOWED:
            out.append(samples[i][0])
        i = j
    return out


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(1, 400), st.sampled_from([-196, -160, -151, -150, -149, -120, -20])),
        max_size=40,
    )
)
def test_streaming_monitor_matches_the_reference(steps: list[tuple[int, int]]) -> None:
    t, samples = T0, []
    for dt, c in steps:
        t += timedelta(seconds=dt)
        samples.append((t, Decimal(c)))
    assert [x.started_at for x in find_excursions(samples, LIMIT, ALLOWED)] == reference(samples)


def test_samples_out_of_order_are_refused() -> None:
    with pytest.raises(CustodyError, match="time order"):
        find_excursions([(T0, Decimal(-190)), (T0, Decimal(-190))], LIMIT, ALLOWED)


def test_logger_csv_errors_name_the_line() -> None:
    good = "timestamp,temperature_c\n2026-11-25T08:00:00Z,-190.5\n2026-11-25T08:01:00Z,-189\n"
    assert [c for _, c in parse_logger_csv(good)] == [Decimal("-190.5"), Decimal(-189)]
    with pytest.raises(CustodyError, match="expected columns timestamp, temperature_c"):
        list(parse_logger_csv("time,temp\n"))
    with pytest.raises(CustodyError, match="line 3: temperature 'cold'"):
        list(
            parse_logger_csv(
                good.splitlines()[0] + "\n2026-11-25T08:00:00Z,-190\n2026-11-25T08:01:00Z,cold\n"
            )
        )
    with pytest.raises(CustodyError, match=r"line 2: timestamp .* has no time zone"):
        list(parse_logger_csv("timestamp,temperature_c\n2026-11-25T08:00:00,-190\n"))


def test_label_count_balance() -> None:
    assert LabelCount(3, 2, 1).balanced and not LabelCount(3, 2, 0).balanced


COI = "&/CHA999926ABC123"


def ev(seq: int, kind: str, payload: dict[str, object]) -> Event:
    return Event(
        unit_id="U", seq=seq, prev_hash="0" * 64, hash=f"{seq:064d}", recorded_at="t",
        kind=kind, batch_id="B", actor=None, payload=payload,
    )  # fmt: skip


def signed(payload: dict[str, object], *sigs: tuple[str, str]) -> dict[str, object]:
    h = signed_content_hash(payload)
    return {
        **payload,
        "signatures": [{"user_id": u, "meaning": m, "signed_hash": h} for u, m in sigs],
    }


def chain(coi_on_bag: str = COI) -> list[Event]:
    return [
        ev(1, "batch.started", {"coi": COI}),
        ev(2, "custody.handoff", signed({"coi": COI, "from": "mfg", "to": "courier", "bag": COI},
                                         ("a", "handed_over"), ("b", "received"))),
        ev(3, "custody.handoff", signed({"coi": COI, "from": "courier", "to": "hospital",
                                         "bag": coi_on_bag}, ("b", "handed_over"), ("c", "received"))),
        ev(4, "custody.received", signed({"coi": COI, "site": "H", "bag": COI}, ("c", "received"))),
        ev(5, "custody.infused", signed({"coi": COI, "site": "H", "bag": COI}, ("d", "administered"))),
    ]  # fmt: skip


def test_custody_chain_check() -> None:
    assert check_custody(chain()) == []
    (p,) = check_custody(chain("&/CHA999926ZZZ999"))
    assert p.seq == 3 and "does not carry the batch's COI" in p.message
    broken = chain()
    broken[2] = ev(3, "custody.handoff", signed({"coi": COI, "from": "elsewhere", "to": "h",
                                                 "bag": COI}, ("b", "handed_over"), ("c", "received")))  # fmt: skip
    assert any("custody was with 'courier'" in p.message for p in check_custody(broken))
    one_sided = chain()
    one_sided[1] = ev(2, "custody.handoff", signed({"coi": COI, "from": "mfg", "to": "courier",
                                                    "bag": COI}, ("a", "handed_over")))  # fmt: skip
    assert any("both parties" in p.message for p in check_custody(one_sided))
    altered = chain()
    p2 = dict(altered[1].payload)
    p2["to"] = "someone else"  # changed after signing
    altered[1] = ev(2, "custody.handoff", p2)
    assert any("not over this content" in p.message for p in check_custody(altered))
    after = [*chain(), ev(6, "custody.received", signed({"coi": COI, "site": "X", "bag": COI},
                                                         ("e", "received")))]  # fmt: skip
    assert any("after the infusion" in p.message for p in check_custody(after))
