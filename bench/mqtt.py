"""Readings persisted per second through mosquitto into the edge ledger (QoS 1, manual ack after
group commit).  Ceiling: raw paho QoS 1 publish → subscribe of the same number of messages
through the same broker in the same run.  Floor (issue 4): >= 2,000/s and ratio >= 0.5.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit

from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.transports.mqtt import MqttIngest
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker

N = 20_000


def raw_rate(port: int) -> float:
    got = threading.Event()
    count = [0]

    def on_message(_c: object, _u: object, _m: object) -> None:
        count[0] += 1
        if count[0] == N:
            got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-sub", protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("raw/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-pub", protocol=mqtt.MQTTv5)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    t0 = time.perf_counter()
    for i in range(N):
        pub.publish("raw/t", f'{{"i":{i}}}', qos=1)
    got.wait(120)
    dt = time.perf_counter() - t0
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return N / dt


def main() -> None:
    with Broker() as broker:
        ceiling = raw_rate(broker.port)
        tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
        led = Ledger.open(tmp / "e.db", UnitSigner.generate("UNIT-B"), lambda: datetime.now(UTC))
        ingest = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-B").start()
        assert ingest.subscribed.wait(10), "the broker granted no subscription"
        sim = BioreactorSim("127.0.0.1", broker.port, "UNIT-B")
        time.sleep(0.3)
        t0 = time.perf_counter()
        for i in range(N):
            sim.reading("temperature", f"37.{i % 10}", "Cel")
        while ingest.stats.recorded < N and time.perf_counter() - t0 < 120:
            time.sleep(0.01)
        dt = time.perf_counter() - t0
        sim.close()
        ingest.stop()
        emit(
            "mqtt readings persisted (QoS 1, acked after group commit)",
            ingest.stats.recorded / dt,
            "readings/s",
            ceiling,
        )


if __name__ == "__main__":
    main()
