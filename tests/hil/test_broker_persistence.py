"""The project's broker keeps QoS 1 messages queued for an offline edge across a SIGKILL and a
graceful restart: none is lost (the edge records every one once it is back)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.transports.mqtt import MqttIngest
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import AUTOSAVE_S, Broker

pytestmark = pytest.mark.hil
N = 300  # readings queued per fault


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


def _queue_while_offline(broker: Broker, sim: BioreactorSim, channel: str) -> None:
    assert wait_for(sim.client.is_connected)
    for i in range(N):
        sim.reading(channel, str(i), "mL")
    sim.wait_published()
    # Every PUBACK is in, so the broker holds them all for the edge's session.
    assert wait_for(lambda: not sim.client._out_messages, 10)


def test_queued_messages_survive_a_broker_sigkill_and_a_restart(
    broker: Broker, tmp_path: Path
) -> None:
    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-Q"), lambda: datetime.now(UTC))
    first = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-Q").start()
    assert first.subscribed.wait(10)
    first.stop()  # the edge goes offline; its persistent session stays in the broker
    sim = BioreactorSim("127.0.0.1", broker.port, "UNIT-Q")
    try:
        _queue_while_offline(broker, sim, "volume")
        time.sleep(AUTOSAVE_S * 2.5)  # past the autosave window
        broker.kill()
        broker.start()
        _queue_while_offline(broker, sim, "weight")
        broker.restart()  # graceful: SIGTERM saves the store
    finally:
        sim.close()
    again = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-Q").start()
    try:

        def got() -> int:
            return sum(1 for e in led.events() if e.kind == "reading.recorded")

        assert wait_for(lambda: got() >= 2 * N), (got(), broker.log_tail())
        time.sleep(0.3)
        assert got() == 2 * N
    finally:
        again.stop()
    assert "Error" not in broker.log_tail(200), broker.log_tail()
