"""The identity of a reading through a real mosquitto: two devices counting from 1, and a device
restarted with its counter reset, are all recorded; a redelivery (same device, same boot, same
message id) is recorded once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.transports.mqtt import MqttIngest
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker

pytestmark = pytest.mark.hil
T0 = datetime(2026, 11, 30, 8, tzinfo=UTC)


@pytest.fixture
def broker(mosquitto_broker: Broker) -> Broker:
    return mosquitto_broker  # the ctgtp plugin's fixture (firmware_sim/pytest_plugin.py)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-I"), lambda: datetime.now(UTC))
    yield led
    led.close()


@pytest.fixture
def ingest(broker: Broker, ledger: Ledger) -> Iterator[MqttIngest]:
    ing = MqttIngest(ledger, "127.0.0.1", broker.port, "UNIT-I").start()
    assert ing.subscribed.wait(10)
    yield ing
    ing.stop()


@pytest.fixture
def pub(broker: Broker) -> Iterator[mqtt.Client]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="identity", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    yield c
    c.loop_stop()
    c.disconnect()


def wait_for(cond, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def readings(led: Ledger) -> list[dict[str, Any]]:
    return [e.payload for e in led.events() if e.kind == "reading.recorded"]


def send(c: mqtt.Client, topic: str, doc: dict[str, Any]) -> None:
    c.publish(topic, json.dumps(doc), qos=1).wait_for_publish(10)


def reading(msg_id: int, i: int, **extra: Any) -> dict[str, Any]:
    t = (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"msg_id": msg_id, "channel": "c", "value": str(i), "unit": "Cel", "t": t} | extra


def settle(ing: MqttIngest, n: int) -> None:
    assert wait_for(lambda: ing.stats.received >= n), ing.stats
    time.sleep(0.3)


def test_two_devices_counting_from_one_are_all_recorded(
    ledger: Ledger, ingest: MqttIngest, pub: mqtt.Client
) -> None:
    # Two instruments on their own topics, and two on one topic naming themselves (device):
    # all count msg_id from 1, with the same device times.
    for i in range(1, 21):
        send(pub, "units/UNIT-I/telemetry/incubator", reading(i, i))
        send(pub, "units/UNIT-I/telemetry/bioreactor", reading(i, i))
        send(pub, "units/UNIT-I/telemetry/shared", reading(i, i, device="probe-A", boot="1"))
        send(pub, "units/UNIT-I/telemetry/shared", reading(i, i, device="probe-B", boot="1"))
    settle(ingest, 80)
    assert len(readings(ledger)) == 80, ingest.stats
    assert ingest.stats.duplicates == 0


def test_a_restarted_device_is_all_recorded_and_a_redelivery_once(
    broker: Broker, ledger: Ledger, ingest: MqttIngest, pub: mqtt.Client
) -> None:
    sim = BioreactorSim("127.0.0.1", broker.port, "UNIT-I")
    try:
        for i in range(20):
            sim.reading("temperature", f"37.{i % 10}", "Cel", t=T0)
        sim.restart()  # a power cycle: msg_id from 1 again, a new boot
        for i in range(20):
            sim.reading("temperature", f"36.{i % 10}", "Cel", t=T0)
        sim.wait_published()
    finally:
        sim.close()
    # A device that sends no boot id, restarted: its device time tells the boots apart.
    for i in range(1, 11):
        send(pub, "units/UNIT-I/telemetry/old", reading(i, i))
    for i in range(1, 11):
        send(pub, "units/UNIT-I/telemetry/old", reading(i, 1000 + i))
    # True redeliveries: same device, same boot, same message id (and same bytes).
    for _ in range(3):
        send(pub, "units/UNIT-I/telemetry/temperature", reading(7, 7, boot="b1"))
        send(pub, "units/UNIT-I/telemetry/old", reading(1, 1))
    settle(ingest, 40 + 20 + 6)
    got = readings(ledger)
    assert len(got) == 40 + 20 + 1, ingest.stats
    assert ingest.stats.duplicates == 2 + 3
    boots = {r["boot"] for r in got if "boot" in r}
    assert len(boots) == 3  # the simulator's two boots, and b1
