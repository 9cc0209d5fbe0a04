"""A cartridge production unit publishing telemetry, process state and alarms over MQTT (QoS 1).

Each message carries the device's own message id (``msg_id``, counted from 1 at every start) and
its boot id (``boot``, drawn anew at every start), as ``hardware/README.md`` asks of a device:
MQTT packet ids are reused, so the edge deduplicates on the topic, boot and message id.
``restart`` starts a new boot with the counter reset, as a power cycle does.  Faults:
``duplicate`` republishes a message (a probability; :meth:`duplicate_next` forces the next ones),
``drift_s`` skews the device clock, :meth:`drift` makes it run fast or slow from now on,
:meth:`jump` steps it, and :meth:`poison` publishes a message that cannot become a reading.
``play`` publishes a process profile (``firmware_sim.profiles``) with the device time ``t``
taken from the profile's simulated clock instead of the wall clock.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim.profiles import Kind, Message


@dataclass
class BioreactorSim:
    host: str
    port: int
    unit_id: str
    duplicate: float = 0.0
    drift_s: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(5))
    sent: int = 0  # messages of this boot (the last msg_id)
    published: int = 0  # messages of all boots
    boot: str = field(default_factory=lambda: secrets.token_hex(8))
    drift_rate: float = 0.0  # seconds the device clock gains per real second, since drift_from
    drift_from: float = 0.0  # time.monotonic() when drift_rate was set
    _copies: int = 0  # extra copies owed to the next publications (duplicate_next)

    def restart(self) -> None:
        """A power cycle: a new boot id and the message counter from 1 again."""
        self.boot = secrets.token_hex(8)
        self.sent = 0

    def __post_init__(self) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sim-{self.unit_id}", protocol=mqtt.MQTTv5
        )
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        # A persistent session, like the edge's: QoS 1 messages in flight when the broker goes
        # down are resent after the reconnect instead of being dropped with a clean session.
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 72 * 3600
        self.client.connect(self.host, self.port, clean_start=False, properties=props)
        self.client.loop_start()

    def _publish(self, topic: str, doc: dict[str, object]) -> mqtt.MQTTMessageInfo:
        payload = json.dumps(doc, separators=(",", ":"))
        info = self.client.publish(topic, payload, qos=1)
        self.published += 1
        if self.duplicate and self.rng.random() < self.duplicate:
            self.client.publish(topic, payload, qos=1)  # a duplicate delivery
        while self._copies > 0:
            self._copies -= 1
            self.client.publish(topic, payload, qos=1)
        return info

    def duplicate_next(self, copies: int = 1) -> None:
        """The next publication goes out ``1 + copies`` times (the same bytes)."""
        self._copies += copies

    def drift(self, rate: float) -> None:
        """From now on the device clock gains ``rate`` seconds per second (negative: loses)."""
        self.drift_s = self.drift_seconds()
        self.drift_rate, self.drift_from = rate, time.monotonic()

    def jump(self, seconds: float) -> None:
        """The device clock steps by ``seconds`` (an NTP step, a dead RTC battery)."""
        self.drift_s += seconds

    def drift_seconds(self) -> float:
        return self.drift_s + self.drift_rate * (time.monotonic() - self.drift_from)

    def poison(self, kind: str, channel: str = "temperature") -> mqtt.MQTTMessageInfo:
        """Publish a message that cannot become a reading (``firmware_sim.faults.POISON_KINDS``)
        on the telemetry topic of ``channel``; it takes a message id like any other."""
        self.sent += 1
        payload = poison_payload(kind, f"{self.unit_id}-{self.sent}", self.boot, channel)
        info = self.client.publish(f"units/{self.unit_id}/telemetry/{channel}", payload, qos=1)
        self.published += 1
        return info

    def now(self, t: datetime | None = None) -> str:
        """The device time: the wall clock, or ``t`` (a simulated clock), skewed by ``drift_s``."""
        t = (t or datetime.now(UTC)) + timedelta(seconds=self.drift_seconds())
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def reading(
        self, channel: str, value: str, unit: str, *, t: datetime | None = None
    ) -> mqtt.MQTTMessageInfo:
        self.sent += 1
        return self._publish(
            f"units/{self.unit_id}/telemetry/{channel}",
            {
                "msg_id": f"{self.unit_id}-{self.sent}",
                "boot": self.boot,
                "channel": channel,
                "value": value,
                "unit": unit,
                "t": self.now(t),
            },
        )

    def state(self, state: str, *, t: datetime | None = None) -> mqtt.MQTTMessageInfo:
        """A process-state change (e.g. idle, priming, activation, expansion, harvest)."""
        self.sent += 1
        return self._publish(
            f"units/{self.unit_id}/state",
            {
                "msg_id": f"{self.unit_id}-{self.sent}",
                "boot": self.boot,
                "state": state,
                "t": self.now(t),
            },
        )

    def alarm(self, code: str, message: str, *, t: datetime | None = None) -> mqtt.MQTTMessageInfo:
        self.sent += 1
        return self._publish(
            f"units/{self.unit_id}/alarms",
            {
                "msg_id": f"{self.unit_id}-{self.sent}",
                "boot": self.boot,
                "code": code,
                "message": message,
                "t": self.now(t),
            },
        )

    def send(self, m: Message, t: datetime | None = None) -> mqtt.MQTTMessageInfo:
        """Publish one profile message, with device time ``t``."""
        if m.kind is Kind.READING:
            return self.reading(m.channel, m.value, m.unit, t=t)
        if m.kind is Kind.STATE:
            return self.state(m.state, t=t)
        return self.alarm(m.code, m.message, t=t)

    def play(self, messages: Iterable[Message], start: datetime, window: int = 1000) -> int:
        """Publish each message with device time ``start + at_s``; return how many were sent.

        At most about ``window`` messages wait for the broker's PUBACK: paho queues without limit
        (``max_queued_messages_set(0)``), so a profile played faster than the broker takes it
        would otherwise sit whole in memory.
        """
        pending: deque[mqtt.MQTTMessageInfo] = deque()
        n = 0
        for m in messages:
            info = self.send(m, start + timedelta(seconds=m.at_s))
            n += 1
            if n % 100 == 0:  # one in a hundred stands for those published before it
                pending.append(info)
                while len(pending) > window // 100:
                    _wait_acked(pending.popleft())
        return n

    def wait_published(self, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.client.want_write():
            time.sleep(0.01)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _wait_acked(info: mqtt.MQTTMessageInfo) -> None:
    try:
        while not info.is_published():
            time.sleep(0.001)
    except RuntimeError:
        # Published while disconnected: paho keeps it and sends it after the reconnect, but its
        # info cannot be waited on.  The next one in the window can.
        pass


def poison_payload(kind: str, msg_id: str, boot: str, channel: str) -> bytes:
    """A payload that can become no valid reading: its defect is ``kind``."""
    good = {"msg_id": msg_id, "boot": boot, "channel": channel, "value": "37.0", "unit": "Cel"}
    t = '"t":"2026-11-30T08:00:00.000Z"'
    body = json.dumps(good)[:-1]
    if kind == "garbage":
        return b"\xff\xfe" + random.Random(msg_id).randbytes(64)
    if kind == "deep_json":
        return (body + ',"x":' + "[" * 100_000 + "]" * 100_000 + "," + t + "}").encode()
    if kind == "surrogate":
        return (body.replace(f'"{channel}"', '"\\ud800"', 1) + "," + t + "}").encode()
    if kind == "object_channel":
        return (body.replace(f'"{channel}"', '{"x":[1,2]}', 1) + "," + t + "}").encode()
    if kind == "nul":
        return (body.replace(f'"{channel}"', '"tem\\u0000p"', 1) + "," + t + "}").encode()
    if kind == "not_json":
        return f"{channel}=37.0 msg_id={msg_id}".encode()
    raise ValueError(f"unknown poison kind {kind!r}")
