"""Poison messages through a real mosquitto: each is recorded as ``reading.refused`` and acked,
and the good reading published right after it is recorded; nothing stops the ingest, and the
broker has nothing left to redeliver."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.transports.mqtt import MAX_DEPTH, MqttIngest, _depth_within, refused_counts
from firmware_sim.broker import Broker

pytestmark = pytest.mark.hil

T = "2026-11-30T08:00:00.000Z"
DEEP = b'{"msg_id":"deep","x":' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # within the size bound


def _good(msg_id: str, **over: Any) -> dict[str, Any]:
    return {
        "msg_id": msg_id,
        "channel": "temperature",
        "value": "37.0",
        "unit": "Cel",
        "t": T,
    } | over


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()  # ensure_ascii: a lone surrogate goes as the escape \ud800


# (name, payload): each can become no valid event.
POISON: list[tuple[str, bytes]] = [
    ("deep nesting", DEEP),
    ("deep nesting, 100,000 levels", b"[" * 100_000 + b"]" * 100_000),
    ("surrogate in channel", _raw(_good("s1", channel="\ud800"))),
    ("surrogate in t", _raw(_good("s2", t="\ud800"))),
    ("surrogate in msg_id", _raw(_good("\ud800"))),
    ("object as channel", _raw(_good("o1", channel={"x": [1, 2]}))),
    ("NUL in channel", _raw(_good("n1", channel="temp\x00erature"))),
    ("device time not a time", _raw(_good("d1", t="yesterday"))),
    ("device time without zone", _raw(_good("d2", t="2026-11-30T08:00:00"))),
    ("not UTF-8", b'{"msg_id":"u1","channel":"\xff\xfe"}'),
    ("not JSON", b"temperature=37.0"),
    ("an array", b"[1, 2, 3]"),
    ("missing value", _raw({k: v for k, v in _good("m1").items() if k != "value"})),
    (
        "value NaN",
        b'{"msg_id":"f1","channel":"temperature","value":NaN,"unit":"Cel","t":"'
        + T.encode()
        + b'"}',
    ),
    ("msg_id too long", _raw(_good("x" * 10_000))),
    ("payload too large", _raw(_good("big", note="y" * 100_000))),
]


@pytest.fixture
def broker(mosquitto_broker: Broker) -> Broker:
    return mosquitto_broker  # the ctgtp plugin's fixture (firmware_sim/pytest_plugin.py)


def wait_for(cond, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _publisher(port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="poisoner", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _recorded(led: Ledger, kind: str) -> list[Any]:
    return [e for e in led.events() if e.kind == kind]


def test_each_poison_is_refused_and_the_next_good_reading_recorded(
    broker: Broker, tmp_path: Path
) -> None:
    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-P"), lambda: datetime.now(UTC))
    ingest = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-P", context=lambda: ("B1", "s1"))
    ingest.start()
    assert ingest.subscribed.wait(10)
    pub = _publisher(broker.port)
    topic = "units/UNIT-P/telemetry/temperature"
    try:
        for i, (_name, payload) in enumerate(POISON):
            pub.publish(topic, payload, qos=1).wait_for_publish(10)
            pub.publish(topic, _raw(_good(f"good-{i}")), qos=1).wait_for_publish(10)
        n = len(POISON)
        assert wait_for(lambda: len(_recorded(led, "reading.recorded")) == n), ingest.stats
        assert wait_for(lambda: len(_recorded(led, "reading.refused")) == n), ingest.stats
        assert ingest.error is None
    finally:
        pub.loop_stop()
        pub.disconnect()
        ingest.stop()
    good = [e.payload["msg_id"] for e in _recorded(led, "reading.recorded")]
    assert sorted(good) == sorted(f"good-{i}" for i in range(len(POISON)))
    refused = _recorded(led, "reading.refused")
    for (name, payload), ev in zip(POISON, refused, strict=True):
        p = ev.payload
        assert p["topic"] == topic and p["raw_bytes"] == len(payload), name
        assert base64.b64decode(p["raw_b64"]) == payload[:4096], name
        assert p["reason"], name
        assert ev.batch_id == "B1"
    reasons = {name: ev.payload["reason"] for (name, _), ev in zip(POISON, refused, strict=True)}
    assert "deeper than" in reasons["deep nesting"]
    assert "U+D800" in reasons["surrogate in channel"]
    assert "an object; expected a string" in reasons["object as channel"]
    assert "U+0000" in reasons["NUL in channel"]
    assert "ISO 8601" in reasons["device time not a time"]
    assert "NaN or Infinity" in reasons["value NaN"]
    assert refused_counts(led) == {topic: len(POISON)}
    assert led.verify_all().event_count == led.head[0]
    # Everything was acked: a new ingest on the same session gets nothing again.
    again = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-P").start()
    try:
        assert again.subscribed.wait(10)
        time.sleep(1.0)
        assert again.stats.received == 0
    finally:
        again.stop()


@st.composite
def _json(draw: st.DrawFn) -> Any:
    leaves = st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}"\\,:')
    return draw(
        st.recursive(
            leaves,
            lambda kids: (
                st.lists(kids, max_size=3)
                | st.dictionaries(st.text(alphabet='k[{"\\', max_size=3), kids, max_size=3)
            ),
            max_leaves=20,
        )
    )


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


@given(_json())
def test_depth_is_measured_before_parsing_as_the_parser_would(v: Any) -> None:
    raw = json.dumps(v).encode()
    for limit in (0, 1, 2, MAX_DEPTH):
        assert _depth_within(raw, limit) == (_depth(v) <= limit)
