"""The CAR-T run profile: the shape of its curves for any seed and length, its pacing rule on a
fake clock, and the whole path through a real broker with the simulated device time."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker
from firmware_sim.cli import sim
from firmware_sim.profiles import (
    CHANNELS,
    Kind,
    Message,
    Phase,
    car_t_10d,
    car_t_short,
    count_readings,
    paced,
)

DECIMAL = re.compile(r"-?\d+(\.\d+)?")  # no exponent, no sign on positives, no bare point
DAY = 86_400.0


@dataclass
class Summary:
    """What the laws look at, gathered in one pass without keeping the messages."""

    readings: int = 0
    first: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    hot_runs: list[list[float]] = field(default_factory=list)  # at_s of readings above 38 °C
    states: list[str] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)
    last_at: float = 0.0
    out_of_order: int = 0


def summarise(messages: Iterable[Message]) -> Summary:
    s = Summary()
    hot = False
    for m in messages:
        if m.at_s < s.last_at:
            s.out_of_order += 1
        s.last_at = m.at_s
        if m.kind is Kind.STATE:
            s.states.append(m.state)
        elif m.kind is Kind.ALARM:
            s.alarms.append(m.code)
        else:
            s.readings += 1
            v = float(m.value)
            s.first.setdefault(m.channel, v)
            s.last[m.channel] = v
            if m.channel == "temperature":
                if v > 38.0:
                    if not hot:
                        s.hot_runs.append([])
                    s.hot_runs[-1].append(m.at_s)
                hot = v > 38.0
    return s


def assert_car_t_shape(s: Summary, days: float) -> None:
    assert s.out_of_order == 0
    assert s.last_at < days * DAY
    assert s.readings == count_readings(days)
    assert set(s.first) == set(CHANNELS)
    growth = s.last["viable_cell_density"] / s.first["viable_cell_density"]
    assert 40 <= growth <= 60, growth
    assert s.first["ph"] > 7.35 and s.last["ph"] < 6.95
    assert s.last["glucose"] < s.first["glucose"]
    assert s.last["lactate"] > s.first["lactate"]
    assert len(s.hot_runs) == 1, [(r[0], r[-1]) for r in s.hot_runs]  # one, contiguous
    assert 0.39 * days * DAY <= s.hot_runs[0][0] <= 0.41 * days * DAY  # around day 4 of 10
    assert s.states == list(Phase)
    assert s.alarms == ["TEMP_HIGH", "DO_LOW", "FEED_LOW", "PH_LOW"]


def test_ten_days_make_a_batch_worth_of_readings_with_the_car_t_shape() -> None:
    s = summarise(car_t_10d())  # streamed: the ~920,000 messages are never held at once
    assert 500_000 <= s.readings <= 1_000_000
    assert s.readings == 923_040
    assert_car_t_shape(s, 10.0)
    minutes_hot = (s.hot_runs[0][-1] - s.hot_runs[0][0]) / 60
    assert 35 <= minutes_hot <= 45, minutes_hot
    assert s.last_at == 10 * DAY - 7.5


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), days=st.floats(0.02, 0.25))
def test_any_seed_and_length_keeps_the_shape(seed: int, days: float) -> None:
    assert_car_t_shape(summarise(car_t_10d(seed, days)), days)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), days=st.floats(0.01, 0.1))
def test_values_are_plain_decimals_in_the_channel_units(seed: int, days: float) -> None:
    decimals: dict[str, set[int]] = {}
    for m in car_t_10d(seed, days):
        if m.kind is not Kind.READING:
            assert (m.channel, m.value, m.unit) == ("", "", "")
            assert (m.state != "") is (m.kind is Kind.STATE) and (m.code != "") is (
                m.kind is Kind.ALARM
            )
            continue
        assert DECIMAL.fullmatch(m.value), m
        assert Decimal(m.value).as_tuple().exponent == -len(m.value.partition(".")[2])
        assert m.unit == CHANNELS[m.channel]
        decimals.setdefault(m.channel, set()).add(len(m.value.partition(".")[2]))
    # A fixed number of decimals per channel: no float repr noise such as 37.000000001.
    assert all(len(d) == 1 for d in decimals.values()), decimals


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), days=st.floats(0.01, 0.05))
def test_a_seed_gives_the_same_run(seed: int, days: float) -> None:
    assert list(car_t_10d(seed, days)) == list(car_t_10d(seed, days))
    assert list(car_t_10d(seed, days)) != list(car_t_10d(seed + 1, days))


def test_a_run_too_short_for_its_phases_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"a run of 0\.001 days at 7\.5 s holds 12 ticks, expected at least 100"
    ):
        car_t_10d(days=0.001)
    with pytest.raises(ValueError, match="days and interval_s must be positive, got 1 and 0"):
        car_t_10d(days=1, interval_s=0)


class FakeClock:
    """Real seconds, advanced by sleeps (which may end early) and by the consumer's work."""

    def __init__(self, early: float) -> None:
        self.now = 100.0
        self.early = early
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s * (1 - self.early)


@given(
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.5, 7.5, 60.0]), max_size=200),
    speed=st.floats(0.5, 1e6),
    work=st.floats(0, 0.01),
    early=st.sampled_from([0.0, 0.5]),
)
def test_paced_never_early_never_skips_and_sleeps_in_batches(
    gaps: list[float], speed: float, work: float, early: float
) -> None:
    at, msgs = 0.0, []
    for g in gaps:
        at += g
        msgs.append(Message(at, Kind.READING, "ph", "7.40", "[pH]"))
    clock = FakeClock(early)
    out = []
    for m in paced(msgs, speed, clock=clock, sleep=clock.sleep, batch_s=0.01):
        assert clock.now - 100.0 >= m.at_s / speed  # never early
        out.append(m)
        clock.now += work  # publishing takes time
    assert out == msgs
    assert all(s >= 0.01 for s in clock.sleeps)  # no sleep shorter than a batch
    if early == 0.0:
        # A sleep is needed only when the run is ahead, and each covers at least one batch.
        assert len(clock.sleeps) <= (msgs[-1].at_s / speed / 0.01 + 1 if msgs else 0)


def test_paced_behind_time_publishes_without_sleeping() -> None:
    clock = FakeClock(0.0)
    msgs = [Message(i * 7.5, Kind.READING, "ph", "7.40", "[pH]") for i in range(1000)]
    out = []
    for m in paced(msgs, 1000.0, clock=clock, sleep=clock.sleep):
        out.append(m)
        clock.now += 0.1  # each publish takes longer than 7.5 ms: the run falls behind
    assert out == msgs
    assert clock.sleeps == []


# --- through a real broker ---------------------------------------------------------------------


@pytest.fixture
def broker(mosquitto_broker: Broker) -> Broker:
    return mosquitto_broker  # the ctgtp plugin's fixture (firmware_sim/pytest_plugin.py)


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        self.docs: list[tuple[str, dict[str, str]]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.docs.append(
            (m.topic, json.loads(m.payload))
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def wait_for(self, n: int, timeout: float = 15.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.docs) < n:
            time.sleep(0.05)
        return len(self.docs)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def device_time(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@pytest.mark.hil
def test_a_compressed_run_arrives_whole_with_simulated_device_time(broker: Broker) -> None:
    expected = list(car_t_short())
    sub = Subscriber(broker.port, "units/UNIT-P/#")
    assert sub.subscribed.wait(10)
    bio = BioreactorSim("127.0.0.1", broker.port, "UNIT-P")
    start = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
    began = time.monotonic()
    try:
        # 72 simulated minutes at 100,000x: due within 0.05 s, so it publishes as fast as it can.
        sent = bio.play(
            paced(car_t_short(), 100_000, clock=time.monotonic, sleep=time.sleep), start
        )
        bio.wait_published()
        got = sub.wait_for(len(expected))
    finally:
        bio.close()
        sub.close()
    assert sent == bio.sent == len(expected) == got
    assert time.monotonic() - began < 15
    by_id = {doc["msg_id"]: (topic, doc) for topic, doc in sub.docs}
    assert len(by_id) == len(expected)  # each once
    boots = {doc.get("boot") for _, doc in sub.docs}
    assert len(boots) == 1 and isinstance(next(iter(boots)), str)  # one boot of one device
    for n, m in enumerate(expected, 1):
        topic, doc = by_id[f"UNIT-P-{n}"]
        assert device_time(doc["t"]) == start + timedelta(seconds=m.at_s)
        if m.kind is Kind.READING:
            assert topic == f"units/UNIT-P/telemetry/{m.channel}"
            # The message format is a live reading's: the same six fields.
            assert doc == {
                "msg_id": f"UNIT-P-{n}",
                "boot": doc["boot"],
                "channel": m.channel,
                "value": m.value,
                "unit": m.unit,
                "t": doc["t"],
            }
        elif m.kind is Kind.STATE:
            assert (topic, doc["state"]) == ("units/UNIT-P/state", m.state)
        else:
            assert (topic, doc["code"], doc["message"]) == (
                "units/UNIT-P/alarms",
                m.code,
                m.message,
            )
    times = sorted(device_time(doc["t"]) for _, doc in sub.docs)
    assert times[-1] - times[0] == timedelta(days=0.05) - timedelta(seconds=7.5)


@pytest.mark.hil
def test_cli_plays_the_profile_and_keeps_the_flat_mode() -> None:
    runner = CliRunner()
    r = runner.invoke(
        sim, ["unit", "--profile", "car-t-10d", "--days", "0.02", "--speed", "1000000"]
    )
    assert r.exit_code == 0, r.output
    n = sum(1 for _ in car_t_10d(days=0.02))
    assert f"published {n} MQTT messages in " in r.output
    assert "state  expansion" in r.output and "alarm  TEMP_HIGH" in r.output
    r = runner.invoke(sim, ["unit", "--profile", "car-t-10d", "--days", "0.001"])
    assert r.exit_code == 2 and "holds 12 ticks, expected at least 100" in r.output
    r = runner.invoke(sim, ["unit", "--duration", "0.3", "--rate", "20"])
    assert r.exit_code == 0, r.output
    flat = re.search(r"published (\d+) MQTT messages\n", r.output)
    # 20 readings a second for 0.3 s (temperature and pH in turn), and the first state.
    assert flat and 1 + 5 <= int(flat[1]) <= 1 + 7
