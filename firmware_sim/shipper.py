"""A cryoshipper temperature logger: a profile of samples (cold, with an injected warm excursion)
exported as the logger's CSV file or published live over MQTT (QoS 1) on
``units/<unit>/shipper/<shipper id>``, each message with its own ``msg_id``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class Excursion:
    """Fault injection: warm to ``temperature_c`` from ``start`` for ``length`` (sample times)."""

    start: timedelta
    length: timedelta
    temperature_c: str = "-120.0"


def profile(
    t0: datetime,
    duration: timedelta,
    interval: timedelta,
    *,
    cold_c: str = "-190.0",
    excursions: tuple[Excursion, ...] = (),
) -> list[tuple[datetime, str]]:
    out = []
    t = t0
    while t - t0 <= duration:
        c = cold_c
        for x in excursions:
            if x.start <= t - t0 < x.start + x.length:
                c = x.temperature_c
        out.append((t, c))
        t += interval
    return out


def to_csv(samples: list[tuple[datetime, str]]) -> str:
    rows = ["timestamp,temperature_c"] + [
        f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{c}" for t, c in samples
    ]
    return "\n".join(rows) + "\n"


class ShipperLoggerSim:
    def __init__(self, host: str, port: int, unit_id: str, shipper_id: str) -> None:
        self.topic = f"units/{unit_id}/shipper/{shipper_id}"
        self.shipper_id = shipper_id
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"logger-{shipper_id}", protocol=mqtt.MQTTv5
        )
        self.client.connect(host, port)
        self.client.loop_start()
        self.sent = 0

    def publish(self, samples: list[tuple[datetime, str]], duplicate_every: int = 0) -> None:
        for t, c in samples:
            self.sent += 1
            doc = {
                "msg_id": f"{self.shipper_id}-{self.sent}",
                "t": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "temperature_c": c,
            }
            payload = json.dumps(doc)
            self.client.publish(self.topic, payload, qos=1).wait_for_publish(10)
            if duplicate_every and self.sent % duplicate_every == 0:
                self.client.publish(self.topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
