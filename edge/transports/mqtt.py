"""MQTT instruments: readings and alarms into the ledger, exactly once.

paho-mqtt, MQTT v5, QoS 1, a persistent session (clean_start False, session expiry 72 h+) and
**manual acknowledgement**: a message is acked to the broker only after the commit group holding
it has returned, so a crash before the commit makes the broker redeliver it; the device's message
id becomes the event's dedupe key, so a redelivery or a duplicate is recorded once.  Readings are
group-committed (one transaction and one checkpoint per drained batch).  Alarms become
``alarm.raised`` plus ``deviation.raised`` on the running batch.  A malformed payload is logged and
acked (a poison message must not be redelivered forever) and counted.

The running batch and step (``context``) are read once per commit group, not per message: the
group's events are recorded together, and the cost of a reading stays the same however many
readings the batch already holds.  Readings of a channel with in-process limits (the master
batch record's ``telemetry`` section, passed as ``limits``) are judged as they are recorded: the
payload carries ``limit`` (``ok``, ``low`` or ``high``), which the telemetry summaries count.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ebr_core.custody import ExcursionMonitor
from ebr_core.errors import EbrError
from ebr_core.mbr import TelemetryLimit
from ebr_core.quantity import quantity
from edge.ledger import Append, Ledger

log = logging.getLogger("ctgtp.edge.mqtt")
SESSION_EXPIRY_S = 72 * 3600 + 3600

Context = Callable[[], tuple[str | None, str | None]]  # (batch_id, step_id) now running


@dataclass
class MqttStats:
    received: int = 0
    recorded: int = 0
    duplicates: int = 0
    malformed: int = 0


@dataclass
class ShipperWatch:
    """A cryoshipper logger publishing on ``units/<unit>/shipper/<shipper id>`` for a batch."""

    batch_id: str
    monitor: ExcursionMonitor
    seen: set[str] = field(default_factory=set)  # message ids fed to the monitor


class MqttIngest:
    def __init__(
        self,
        ledger: Ledger,
        host: str,
        port: int,
        unit_id: str,
        context: Context = lambda: (None, None),
        max_batch: int = 500,
        shippers: dict[str, ShipperWatch] | None = None,
        limits: dict[str, TelemetryLimit] | None = None,
    ) -> None:
        self.ledger = ledger
        self.limits = limits or {}
        self.shippers = shippers or {}
        self.unit_id = unit_id
        self.context = context
        self.max_batch = max_batch
        self.stats = MqttStats()
        self._q: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        # Set once the broker has granted the subscription: from then on, what devices publish
        # reaches this unit (or its session, while it is away).
        self.subscribed = threading.Event()
        # Why recording stopped (the ledger refused a commit group), or None while it runs.
        self.error: str | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-{unit_id}",
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: self._q.put(msg)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect(host, port, clean_start=False, properties=props)
        self._writer = threading.Thread(target=self._write_loop, daemon=True)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        client.subscribe(f"units/{self.unit_id}/#", qos=1)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, codes: list[Any], _p: Any) -> None:
        if all(not c.is_failure for c in codes):
            self.subscribed.set()
        else:
            log.error("the broker refused the subscription to units/%s/#: %s", self.unit_id, codes)

    def start(self) -> MqttIngest:
        self.client.loop_start()
        self._writer.start()
        return self

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._q.get(timeout=0.05)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(batch)
            except Exception as e:  # the ledger refused the group (closed, disk): stop, loudly
                # Nothing of this group was acked, so the broker keeps it for this unit's
                # session and delivers it again to the next ingest.
                self.error = f"recording stopped, nothing after it acknowledged: {e}"
                log.error("MQTT ingest for %s: %s", self.unit_id, self.error)
                self._stop.set()
                return

    def _commit(self, msgs: list[mqtt.MQTTMessage]) -> None:
        items: list[Append] = []
        ctx = self.context()  # once per group (see the module docstring)
        for m in msgs:
            self.stats.received += 1
            try:
                items.extend(self._to_events(m, ctx))
            except (ValueError, KeyError, TypeError, InvalidOperation, EbrError) as e:
                self.stats.malformed += 1
                log.warning("malformed message on %s dropped: %s", m.topic, e)
        recorded = self.ledger.append_many(items) if items else []  # durable before any ack
        delivered = sum(1 for it in items if it.kind == "reading.recorded")
        new = sum(1 for e in recorded if e.kind == "reading.recorded")
        self.stats.recorded += new
        self.stats.duplicates += delivered - new
        for m in msgs:
            self.client.ack(m.mid, m.qos)

    def _to_events(self, m: mqtt.MQTTMessage, ctx: tuple[str | None, str | None]) -> list[Append]:
        doc = json.loads(m.payload)
        if not isinstance(doc, dict):
            raise ValueError("payload is not a JSON object")
        msg_id = str(doc["msg_id"])
        batch_id, step = ctx
        parts = m.topic.split("/")
        if len(parts) >= 4 and parts[2] == "telemetry":
            channel, unit = str(doc["channel"]), str(doc["unit"])
            q = quantity(str(doc["value"]), unit)
            payload: dict[str, Any] = {
                "channel": channel,
                "value": q,
                "device_time": str(doc["t"]),
                "msg_id": msg_id,
                "step": step,
            }
            lim = self.limits.get(channel)
            if lim is not None and lim.unit == unit:
                payload["limit"] = lim.judge(Decimal(q["value"]))
            return [Append("reading.recorded", payload, batch_id, None, f"mqtt:{msg_id}:r")]
        if len(parts) == 4 and parts[2] == "shipper":
            return self._shipper(parts[3], doc, msg_id)
        if len(parts) == 3 and parts[2] == "state":
            state = {
                "state": str(doc["state"]),
                "device_time": str(doc["t"]),
                "msg_id": msg_id,
                "step": step,
            }
            return [Append("process.state", state, batch_id, None, f"mqtt:{msg_id}:s")]
        if len(parts) >= 3 and parts[2] == "alarms":
            alarm = {
                "source": "instrument",
                "code": str(doc["code"]),
                "message": str(doc["message"]),
                "device_time": str(doc["t"]),
                "msg_id": msg_id,
                "step": step,
            }
            out = [Append("alarm.raised", alarm, batch_id, None, f"mqtt:{msg_id}:a")]
            if batch_id is not None:
                out.append(
                    Append(
                        "deviation.raised",
                        {
                            "deviation_id": f"DEV-{batch_id}-ALM-{msg_id}",
                            "step": step,
                            "category": "instrument_alarm",
                            "severity": "major",
                            "reason": f"instrument alarm {doc['code']}: {doc['message']}",
                        },
                        batch_id,
                        None,
                        f"mqtt:{msg_id}:d",
                    )
                )
            return out
        raise ValueError(f"unexpected topic {m.topic}")

    def _shipper(self, shipper: str, doc: dict[str, Any], msg_id: str) -> list[Append]:
        watch = self.shippers.get(shipper)
        if watch is None:
            raise ValueError(f"shipper {shipper} is not being watched for any batch")
        t = datetime.fromisoformat(str(doc["t"]).replace("Z", "+00:00"))
        c = Decimal(str(doc["temperature_c"]))
        out = [
            Append(
                "reading.recorded",
                {
                    "channel": f"shipper:{shipper}",
                    "value": quantity(str(c), "Cel"),
                    "device_time": str(doc["t"]),
                    "msg_id": msg_id,
                },
                watch.batch_id,
                None,
                f"mqtt:{msg_id}:r",
            )
        ]
        if msg_id in watch.seen:
            return out  # a redelivery: the ledger drops the reading; the monitor saw it already
        watch.seen.add(msg_id)
        x = watch.monitor.feed(t, c)
        if x is not None:
            out.append(
                Append(
                    "deviation.raised",
                    {
                        "deviation_id": f"DEV-{watch.batch_id}-SHP-{msg_id}",
                        "step": None,
                        "category": "shipping_temperature",
                        "severity": "major",
                        "reason": f"shipper {shipper}: "
                        + x.describe(watch.monitor.limit_c, watch.monitor.allowed),
                    },
                    watch.batch_id,
                    None,
                    f"mqtt:{msg_id}:x",
                )
            )
        return out

    def stop(self, *, ack_pending: bool = True) -> None:
        self._stop.set()
        self._writer.join(5)
        self.client.loop_stop()
        self.client.disconnect()
