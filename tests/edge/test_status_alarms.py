"""``ctgtp edge status`` shows the unit's standing alarms: messages refused per instrument topic,
the background sync's alarm (clock skew), and clock jumps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from edge.agent import open_agent
from edge.cli import edge
from edge.ledger import Ledger
from edge.sync import ALARM
from edge.transports.mqtt import refusal, refused_counts

from .test_readonly import shared_home

__all__ = ["shared_home"]


def _message(topic: str, payload: bytes) -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(topic=topic.encode())
    m.payload = payload
    return m


@pytest.fixture
def home(shared_home: Path) -> Iterator[Path]:
    yield shared_home


def test_status_shows_refused_messages_sync_alarm_and_clock_jumps(home: Path) -> None:
    a = open_agent(home, lambda: datetime.now(UTC))
    led: Ledger = a.ledger
    t = "units/UNIT-01/telemetry/temperature"
    led.append_many(
        [
            refusal(_message(t, b"\xff"), "payload is not JSON in UTF-8", None, None),
            refusal(_message(t, b"[1]"), "payload is an array", None, None),
            refusal(
                _message("units/UNIT-01/alarms", b"{}"), "field 'msg_id' is missing", None, None
            ),
        ]
    )
    led.set_meta(
        ALARM,
        json.dumps({"kind": "clock_skew", "message": "clock skew: request time 1 is 400 s off"}),
    )
    a.close()
    back = datetime.now(UTC) - timedelta(days=365)
    a = open_agent(home, lambda: back)
    a.ledger.append("note.added", {"n": "after the jump"})
    assert refused_counts(a.ledger) == {t: 2, "units/UNIT-01/alarms": 1}
    a.close()
    r = CliRunner().invoke(edge, ["status", "--home", str(home)])
    assert r.exit_code == 0, r.output
    assert "alarm: CLOCK SKEW: clock skew: request time 1 is 400 s off" in r.output
    assert f"alarm: 2 instrument message(s) refused on {t}" in r.output
    assert "alarm: 1 instrument message(s) refused on units/UNIT-01/alarms" in r.output
    assert "alarm: the clock jumped from" in r.output
    r = CliRunner().invoke(edge, ["status", "--home", str(home), "--json"])
    out = json.loads(r.output)
    assert out["refused_messages"] == {t: 2, "units/UNIT-01/alarms": 1}
    assert out["sync_alarm"]["kind"] == "clock_skew"
    assert len(out["clock_jumps"]) == 1
