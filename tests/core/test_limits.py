"""Limits as the record carries them (ebr_core.limits): built from the MBR, read back, and every
wrong shape refused with the key path, what was found and what was expected."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ebr_core.document import load_yaml
from ebr_core.limits import (
    LimitsError,
    channel_limits,
    check_payload,
    describe_judged,
    parse_telemetry_limits,
    parse_value_limits,
    telemetry_limits,
    value_limits,
)
from ebr_core.mbr import Limit, ValueSpec, parse_mbr

MBR = Path(__file__).resolve().parents[2] / "edge" / "examples" / "car_t_mbr_v4.yaml"


def test_what_the_edge_writes_reads_back_as_the_mbr_states_it() -> None:
    mbr = parse_mbr(load_yaml(MBR.read_text()))
    limits = parse_telemetry_limits(telemetry_limits(mbr), "MBR X v4")
    assert set(limits) == set(mbr.telemetry)
    for ch, t in mbr.telemetry.items():
        assert (limits[ch].unit, limits[ch].limit) == (t.unit, t.limit)
    assert limits["ph"].describe() == "6.8–7.6 pH (MBR X v4)"
    for step in mbr.steps:
        for spec in step.values:
            got = value_limits(spec)
            if spec.hard is None and spec.soft is None:
                assert got is None
                continue
            back = parse_value_limits(got)
            assert (back.unit, back.hard, back.soft) == (spec.unit, spec.hard, spec.soft)
    assert value_limits(ValueSpec("x", "mL")) is None


def test_a_summary_channel_takes_its_channels_limits_in_their_unit_only() -> None:
    limits = parse_telemetry_limits(
        {"cell_count": {"unit": "%", "min": "70"}, "temperature": {"unit": "Cel", "max": "38"}},
        "MBR X v1",
    )
    assert channel_limits(limits, "cell_count.viability", "%") is limits["cell_count"]
    assert channel_limits(limits, "temperature", "Cel") is limits["temperature"]
    assert channel_limits(limits, "temperature", "[degF]") is None
    assert channel_limits(limits, "ph", "[pH]") is None


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("6.5-7.8", "value.recorded payload.limits is '6.5-7.8'; expected an object"),
        ({"hard": {"min": "1"}}, "value.recorded payload.limits has no unit"),
        ({"unit": "mL"}, "has neither hard nor soft; expected at least one limit"),
        ({"unit": "mL", "hard": {"min": 6.5}}, "hard.min is 6.5; expected a decimal string"),
        ({"unit": "mL", "hard": {"min": "low"}}, "hard.min is 'low'; expected a decimal string"),
        ({"unit": "mL", "hard": {}}, "hard has neither min nor max"),
        ({"unit": "mL", "hard": {"min": "9", "max": "1"}}, "min 9 is above max 1"),
        ({"unit": "mL", "hard": {"low": "1"}}, "hard has the unknown key 'low'"),
        ({"unit": 5, "soft": {"max": "1"}}, "payload.limits.unit is 5; expected a UCUM unit"),
        ({"unit": "mL", "hard": {"min": "1"}, "source": "x"}, "unknown key 'source'"),
    ],
)
def test_a_wrong_value_limits_shape_is_refused_by_name(limits: object, message: str) -> None:
    payload = {"step": "s", "name": "v", "value": {"value": "1", "unit": "mL"}, "limit": "ok"}
    with pytest.raises(LimitsError) as e:
        check_payload("value.recorded", {**payload, "limits": limits})
    assert message in str(e.value)
    # a reader shows it as unreadable, with the reason, instead of failing
    shown = describe_judged({**payload, "limits": limits})
    assert shown is not None and shown.startswith("ok (limits recorded but unreadable: ")


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ([], "batch.started payload.telemetry_limits is []; expected an object of channel"),
        ({"Temp C": {"unit": "Cel", "max": "38"}}, "names the channel 'Temp C'"),
        ({"temperature": {"max": "38"}}, "telemetry_limits.temperature has no unit"),
        ({"temperature": {"unit": "Cel", "max": 38}}, "temperature.max is 38; expected a decimal"),
        ({"temperature": {"unit": "Cel"}}, "temperature has neither min nor max"),
    ],
)
def test_a_wrong_telemetry_limits_shape_is_refused_by_name(limits: object, message: str) -> None:
    with pytest.raises(LimitsError) as e:
        check_payload("batch.started", {"mbr_id": "M", "mbr_version": "1",
                                        "telemetry_limits": limits})  # fmt: skip
    assert message in str(e.value)


def test_events_without_limits_pass_and_say_nothing() -> None:
    """Events written before the record carried limits stay valid: the keys are optional."""
    check_payload("value.recorded", {"step": "s", "name": "v", "limit": "ok"})
    check_payload("batch.started", {"coi": "c", "mbr_id": "M", "mbr_version": "1"})
    check_payload("reading.recorded", {"limits": "not checked for other kinds"})
    assert describe_judged({"step": "s", "name": "v", "limit": "ok"}) is None


def test_the_wording_uses_display_units_tighter_limit_first() -> None:
    v = parse_value_limits(
        {"unit": "[pH]", "hard": {"min": "6.5", "max": "7.8"}, "soft": {"min": "6.8", "max": "7.6"}}
    )
    assert v.describe() == "soft 6.8–7.6 pH, hard 6.5–7.8 pH"
    one = parse_value_limits({"unit": "10*6{cells}/mL", "hard": {"min": "0.5"}})
    assert one.describe() == "hard ≥ 0.5 × 10⁶ cells/mL"
    assert one.hard == Limit(Decimal("0.5"), None)
