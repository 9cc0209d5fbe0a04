"""MQTT instruments: readings and alarms into the ledger, exactly once.

paho-mqtt, MQTT v5, QoS 1, a persistent session (clean_start False, session expiry 72 h+) and
**manual acknowledgement**: a message is acked to the broker only after the commit group holding
it has returned, so a crash before the commit makes the broker redeliver it.  Readings are
group-committed (one transaction and one checkpoint per drained batch).  Alarms become
``alarm.raised`` plus ``deviation.raised`` on the running batch.

**Identity of a message** (the dedupe key, see ``hardware/README.md``): the topic, the optional
``device`` field, the device's boot (``boot``, a value the device draws anew at every start) and
its ``msg_id``.  Two instruments that both count from 1, or one instrument restarted with its
counter reset, never collide; a redelivery (same topic, device, boot and ``msg_id``) is recorded
once.  A message without ``boot`` is identified by its device time ``t`` in the boot's place: a
redelivery carries the same bytes, so it is still recorded once, and a restarted device's
messages are kept unless it repeats a ``msg_id`` with the very same ``t`` (then they cannot be
told apart from a redelivery, and the second is dropped as one).

**Poison messages are quarantined, never fatal.**  Every field is checked before anything reaches
the ledger: the payload's size and nesting depth (before it is parsed), its JSON, each field's
type (an object is refused, never stringified), length, control characters and lone surrogates,
and the device time.  A message that cannot become a valid event is recorded as
``reading.refused`` (the topic, the reason, the first :data:`RAW_KEPT` bytes as base64, the
size and digest of the whole), then acked, and ingest goes on: the broker must not redeliver it
forever, and the record must show it was received.  :func:`refused_counts` counts them per topic
for ``ctgtp edge status``.  Only the ledger refusing a commit group (closed, disk) stops the
ingest, with nothing of that group acked.

The running batch and step (``context``) are read once per commit group, not per message: the
group's events are recorded together, and the cost of a reading stays the same however many
readings the batch already holds.  Readings of a channel with in-process limits (the master
batch record's ``telemetry`` section, passed as ``limits``) are judged as they are recorded: the
payload carries ``limit`` (``ok``, ``low`` or ``high``), which the telemetry summaries count.

Over 400 lines: the MQTT v5 session, the acknowledgement after the group commit and the dedupe keys
are one exactly-once protocol, read together.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ebr_core.custody import ExcursionMonitor
from ebr_core.mbr import TelemetryLimit
from ebr_core.quantity import quantity
from ebr_core.record import Event
from edge.errors import EdgeError, LedgerError
from edge.ledger import Append, Ledger

log = logging.getLogger("ctgtp.edge.mqtt")
SESSION_EXPIRY_S = 72 * 3600 + 3600

REFUSED = "reading.refused"
MAX_PAYLOAD = 64 * 1024  # bytes; an instrument message is a few hundred
MAX_DEPTH = 4  # JSON nesting; a message is one flat object
RAW_KEPT = 4096  # bytes of a refused message kept in its reading.refused event
MAX_TOPIC = 256
# The longest text each field may hold (characters).
TEXT_MAX = {
    "msg_id": 128,
    "boot": 128,
    "device": 128,
    "channel": 128,
    "unit": 64,
    "value": 64,
    "t": 64,
    "state": 128,
    "code": 128,
    "message": 1024,
    "temperature_c": 64,
}
# C0 and C1 controls, DEL, and the surrogate range (a lone surrogate cannot be encoded as UTF-8,
# so the canonical bytes of an event holding one cannot exist).
_BAD_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SORT = orjson.OPT_SORT_KEYS

Context = Callable[[], tuple[str | None, str | None]]  # (batch_id, step_id) now running


class PoisonMessage(EdgeError, ValueError):
    """A message that cannot become a valid event (its text says what was wrong and what was
    expected); it is recorded as ``reading.refused`` and acked."""


def _depth_within(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` nests at most ``limit`` arrays and objects deep, checked
    before it is parsed (a parser recurses once per level)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True  # the usual flat message, at C speed
    depth, in_str, esc = 0, False, False
    for b in raw:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif b in (0x5D, 0x7D):
            depth -= 1
    return True


def _safe(text: str) -> str:
    """``text`` with any lone surrogate escaped, so it can be recorded in an event."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean(what: str, v: str, limit: int) -> str:
    if not v:
        raise PoisonMessage(f"{what} is empty; expected text")
    if len(v) > limit:
        raise PoisonMessage(f"{what} is {len(v)} characters long; at most {limit} allowed")
    bad = _BAD_CHAR.search(v)
    if bad is not None:
        raise PoisonMessage(
            f"{what} holds U+{ord(bad.group()):04X} at position {bad.start()}; expected text "
            "without control characters or lone surrogates"
        )
    return v


def _text(doc: dict[str, Any], key: str, *, number: bool = False) -> str:
    """Field ``key`` of ``doc`` as checked text; ``number``: a JSON number is taken as written."""
    if key not in doc:
        raise PoisonMessage(f"field {key!r} is missing")
    v = doc[key]
    if number and type(v) in (int, Decimal):
        v = str(v)
    if type(v) is not str:
        expected = "a string or a number" if number else "a string"
        raise PoisonMessage(f"field {key!r} is {_json_type(v)}; expected {expected}")
    return _clean(f"field {key!r}", v, TEXT_MAX[key])


def _optional(doc: dict[str, Any], key: str) -> str | None:
    return _text(doc, key, number=True) if key in doc else None


def _json_type(v: Any) -> str:
    names = {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}
    names[float] = "NaN or Infinity"  # the only numbers parsed as float (see parse_message)
    return names.get(type(v), "a number")


def _device_time(doc: dict[str, Any]) -> str:
    """The device's own time ``t``: ISO 8601 with a zone (``Z`` or an offset), recorded as sent
    (kept for review, never used as the record's time)."""
    t = _text(doc, "t")
    try:
        parsed = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise PoisonMessage(
            f"field 't' is {t!r}; expected an ISO 8601 time such as 2026-11-24T08:00:00.000Z"
        ) from None
    if parsed.tzinfo is None:
        raise PoisonMessage(f"field 't' is {t!r}, a time without a zone; expected Z or an offset")
    return t


def parse_message(raw: bytes) -> dict[str, Any]:
    """The JSON object of a message, refused (:class:`PoisonMessage`) if it is too large, nested
    too deep, not JSON, or not an object.  Numbers with a fraction are kept as written
    (``Decimal``), so a reading is never rounded."""
    if len(raw) > MAX_PAYLOAD:
        raise PoisonMessage(f"payload is {len(raw)} bytes; at most {MAX_PAYLOAD} allowed")
    if not _depth_within(raw, MAX_DEPTH):
        raise PoisonMessage(f"payload nests deeper than {MAX_DEPTH} levels; expected flat JSON")
    try:
        doc = json.loads(raw, parse_float=Decimal)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise PoisonMessage(f"payload is not JSON in UTF-8: {_safe(str(e))[:200]}") from None
    if not isinstance(doc, dict):
        raise PoisonMessage(f"payload is {_json_type(doc)}; expected a JSON object")
    return doc


def identity(topic: str, doc: dict[str, Any]) -> str:
    """The identity of a device message (see the module docstring and ``hardware/README.md``):
    topic, device, boot (or the device time when there is none) and message id, unambiguous
    whatever characters they hold."""
    msg_id = _text(doc, "msg_id", number=True)
    device = _optional(doc, "device")
    boot = _optional(doc, "boot")
    session = ["boot", boot] if boot is not None else ["t", _text(doc, "t")]
    return json.dumps([topic, device, *session, msg_id], ensure_ascii=False, separators=(",", ":"))


def _topic(m: mqtt.MQTTMessage) -> str:
    topic = bytes(m._topic).decode("utf-8", "backslashreplace")  # the raw bytes
    return _clean("topic", topic, MAX_TOPIC)


def refusal(m: mqtt.MQTTMessage, reason: str, batch_id: str | None, step: str | None) -> Append:
    """The ``reading.refused`` event of a message that cannot become a valid event.  Its dedupe
    key is the digest of topic and bytes: a redelivery is recorded once."""
    raw = bytes(m.payload)
    topic_b = bytes(m._topic)
    digest = hashlib.sha256(topic_b + b"\0" + raw).hexdigest()
    payload = {
        "topic": _safe(topic_b.decode("utf-8", "backslashreplace"))[:MAX_TOPIC],
        "reason": _safe(reason)[:1000],
        "raw_b64": base64.b64encode(raw[:RAW_KEPT]).decode(),
        "raw_bytes": len(raw),
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
        "step": step,
    }
    return Append(REFUSED, payload, batch_id, None, f"mqtt-refused:{digest}")


def refused_counts(ledger: Ledger) -> dict[str, int]:
    """How many messages were refused (``reading.refused``), per topic (one device's stream)."""
    out: dict[str, int] = {}
    for ev in ledger.events_of_kind(REFUSED):
        topic = str(ev.payload.get("topic"))
        out[topic] = out.get(topic, 0) + 1
    return out


def _short(key: str) -> str:
    """A short id derived from a message identity, for deviation ids (they appear in URLs)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class MqttStats:
    received: int = 0
    recorded: int = 0
    duplicates: int = 0
    malformed: int = 0  # refused messages (each recorded as reading.refused)


@dataclass
class ShipperWatch:
    """A cryoshipper logger publishing on ``units/<unit>/shipper/<shipper id>`` for a batch."""

    batch_id: str
    monitor: ExcursionMonitor
    seen: set[str] = field(default_factory=set)  # message identities fed to the monitor


class MessageReader:
    """Turns one MQTT message into its events, or into its ``reading.refused`` event: the checks
    and the identity of the module docstring, with no broker and no ledger (the ingest commits
    what it returns)."""

    def __init__(
        self,
        unit_id: str,
        limits: dict[str, TelemetryLimit],
        shippers: dict[str, ShipperWatch],
        stats: MqttStats | None = None,
    ) -> None:
        self.unit_id = unit_id
        self.limits = limits
        self.shippers = shippers
        self.stats = stats or MqttStats()

    def events_or_refusal(
        self, m: mqtt.MQTTMessage, ctx: tuple[str | None, str | None]
    ) -> list[Append]:
        """The events of one message, or its ``reading.refused`` event: whatever a message
        holds, it can make neither its group nor the ingest fail."""
        self.stats.received += 1
        try:
            items = self.to_events(m, ctx)
            for it in items:  # the canonical bytes and the stored key must exist
                orjson.dumps(it.payload, option=_SORT)
                if it.dedupe_key is not None:
                    it.dedupe_key.encode("utf-8")
            return items
        except Exception as e:  # RecursionError, encoding errors, all others
            reason = str(e) if isinstance(e, PoisonMessage) else f"{type(e).__name__}: {e}"
            return [self.refuse(m, reason, ctx)]

    def refuse(
        self, m: mqtt.MQTTMessage, reason: str, ctx: tuple[str | None, str | None]
    ) -> Append:
        self.stats.malformed += 1
        log.warning(
            "message on %r refused: %s",
            _safe(bytes(m._topic).decode(errors="replace")),
            _safe(reason),
        )
        return refusal(m, reason, *ctx)

    def to_events(self, m: mqtt.MQTTMessage, ctx: tuple[str | None, str | None]) -> list[Append]:
        topic = _topic(m)
        doc = parse_message(bytes(m.payload))
        key = identity(topic, doc)
        msg_id = _text(doc, "msg_id", number=True)
        batch_id, step = ctx
        parts = topic.split("/")
        if len(parts) >= 4 and parts[2] == "telemetry":
            channel, unit = _text(doc, "channel"), _text(doc, "unit")
            q = quantity(_text(doc, "value", number=True), unit)
            payload: dict[str, Any] = {
                "channel": channel,
                "value": q,
                "device_time": _device_time(doc),
                "msg_id": msg_id,
                "step": step,
            }
            self._source(doc, payload)
            lim = self.limits.get(channel)
            if lim is not None and lim.unit == unit:
                payload["limit"] = lim.judge(Decimal(q["value"]))
            return [Append("reading.recorded", payload, batch_id, None, f"mqtt:{key}:r")]
        if len(parts) == 4 and parts[2] == "shipper":
            return self._shipper(parts[3], doc, msg_id, key)
        if len(parts) == 3 and parts[2] == "state":
            state = {
                "state": _text(doc, "state"),
                "device_time": _device_time(doc),
                "msg_id": msg_id,
                "step": step,
            }
            self._source(doc, state)
            return [Append("process.state", state, batch_id, None, f"mqtt:{key}:s")]
        if len(parts) >= 3 and parts[2] == "alarms":
            code, message = _text(doc, "code"), _text(doc, "message")
            alarm = {
                "source": "instrument",
                "code": code,
                "message": message,
                "device_time": _device_time(doc),
                "msg_id": msg_id,
                "step": step,
            }
            self._source(doc, alarm)
            out = [Append("alarm.raised", alarm, batch_id, None, f"mqtt:{key}:a")]
            if batch_id is not None:
                out.append(
                    Append(
                        "deviation.raised",
                        {
                            "deviation_id": f"DEV-{batch_id}-ALM-{_short(key)}",
                            "step": step,
                            "category": "instrument_alarm",
                            "severity": "major",
                            "reason": f"instrument alarm {code}: {message}",
                        },
                        batch_id,
                        None,
                        f"mqtt:{key}:d",
                    )
                )
            return out
        raise PoisonMessage(
            f"unexpected topic {topic!r}; expected units/{self.unit_id}/telemetry/<channel>, "
            "/state, /alarms or /shipper/<shipper id>"
        )

    @staticmethod
    def _source(doc: dict[str, Any], payload: dict[str, Any]) -> None:
        """Record the device and boot a message names (its identity, with the topic)."""
        for k in ("device", "boot"):
            v = _optional(doc, k)
            if v is not None:
                payload[k] = v

    def _shipper(self, shipper: str, doc: dict[str, Any], msg_id: str, key: str) -> list[Append]:
        watch = self.shippers.get(shipper)
        if watch is None:
            raise PoisonMessage(f"shipper {shipper} is not being watched for any batch")
        t_text = _device_time(doc)
        t = datetime.fromisoformat(t_text.replace("Z", "+00:00"))
        c = Decimal(_text(doc, "temperature_c", number=True))
        if not c.is_finite():
            raise PoisonMessage(f"field 'temperature_c' is {c}; expected a finite number")
        reading = {
            "channel": f"shipper:{shipper}",
            "value": quantity(str(c), "Cel"),
            "device_time": t_text,
            "msg_id": msg_id,
        }
        self._source(doc, reading)
        out = [Append("reading.recorded", reading, watch.batch_id, None, f"mqtt:{key}:r")]
        if key in watch.seen:
            return out  # a redelivery: the ledger drops the reading; the monitor saw it already
        watch.seen.add(key)
        x = watch.monitor.feed(t, c)
        if x is not None:
            out.append(
                Append(
                    "deviation.raised",
                    {
                        "deviation_id": f"DEV-{watch.batch_id}-SHP-{_short(key)}",
                        "step": None,
                        "category": "shipping_temperature",
                        "severity": "major",
                        "reason": f"shipper {shipper}: "
                        + x.describe(watch.monitor.limit_c, watch.monitor.allowed),
                    },
                    watch.batch_id,
                    None,
                    f"mqtt:{key}:x",
                )
            )
        return out


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
        *,
        wait_for_broker: bool = False,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        on_recorded: Callable[[list[Event]], None] | None = None,
    ) -> None:
        """``wait_for_broker``: a broker not reachable yet is retried in the background (a
        station starting before its broker) instead of raising here.  ``on_recorded`` is
        called with each committed group's new events (a station's device panel)."""
        self.ledger = ledger
        self.limits = limits or {}
        self.shippers = shippers or {}
        self.unit_id = unit_id
        self.context = context
        self.max_batch = max_batch
        self.stats = MqttStats()
        self.reader = MessageReader(unit_id, self.limits, self.shippers, self.stats)
        self._q: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        # Set once the broker has granted the subscription: from then on, what devices publish
        # reaches this unit (or its session, while it is away).
        self.subscribed = threading.Event()
        # Why recording stopped (the ledger refused a commit group), or None while it runs.
        self.error: str | None = None
        self.on_recorded = on_recorded
        # Whether the broker connection is up now, and why not when it is not.
        self.connected = False
        self.last_error: str | None = None
        self._accepting = True  # False once drain() began: new messages stay with the broker
        # Messages taken (network thread) and finished (writer thread): drain() waits until
        # they are equal.
        self._taken = 0
        self._finished = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-{unit_id}",
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.client.reconnect_delay_set(1, 2)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        if wait_for_broker:
            self.client.connect_async(host, port, clean_start=False, properties=props)
        else:
            self.client.connect(host, port, clean_start=False, properties=props)
        self._writer = threading.Thread(target=self._write_loop, daemon=True)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._accepting:  # else never acked: the broker keeps it for the next session
            self._taken += 1
            self._q.put(msg)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.connected, self.last_error = False, f"the broker refused the connection: {rc}"
            return
        self.connected, self.last_error = True, None
        client.subscribe(f"units/{self.unit_id}/#", qos=1)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected = False
        self.last_error = f"disconnected from the broker: {rc}"

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
            self._finished += len(batch)

    def _commit(self, msgs: list[mqtt.MQTTMessage]) -> None:
        ctx = self.context()  # once per group (see the module docstring)
        per_msg = [self.reader.events_or_refusal(m, ctx) for m in msgs]
        items = [it for evs in per_msg for it in evs]
        try:
            recorded = self.ledger.append_many(items) if items else []  # durable before any ack
        except LedgerError:
            raise  # the ledger itself refused: stop, ack nothing (see _write_loop)
        except Exception as e:  # one message the checks missed: find it
            log.error("commit group refused (%s); recording its messages one by one", e)
            recorded = self._one_by_one(msgs, per_msg, ctx)
        delivered = sum(1 for it in items if it.kind == "reading.recorded")
        new = sum(1 for e in recorded if e.kind == "reading.recorded")
        self.stats.recorded += new
        self.stats.duplicates += max(0, delivered - new)
        for m in msgs:
            self.client.ack(m.mid, m.qos)
        if self.on_recorded is not None and recorded:
            try:
                self.on_recorded(recorded)
            except Exception:  # an observer's defect never stops recording
                log.exception("on_recorded observer failed")

    def _one_by_one(
        self,
        msgs: list[mqtt.MQTTMessage],
        per_msg: list[list[Append]],
        ctx: tuple[str | None, str | None],
    ) -> list[Any]:
        """Record a refused group a message at a time; a message whose events the ledger
        refuses is recorded as ``reading.refused`` instead (a ledger error still stops all)."""
        out: list[Any] = []
        for m, items in zip(msgs, per_msg, strict=True):
            try:
                out += self.ledger.append_many(items)
            except LedgerError:
                raise
            except Exception as e:
                out += self.ledger.append_many(
                    [self.reader.refuse(m, f"the ledger refused it: {e}", ctx)]
                )
        return out

    def _to_events(self, m: mqtt.MQTTMessage, ctx: tuple[str | None, str | None]) -> list[Append]:
        return self.reader.to_events(m, ctx)

    def drain(self, timeout: float = 10.0) -> bool:
        """Stop taking messages, commit (and ack) those already received, then stop: what
        arrives meanwhile is never acked, so the broker keeps it for the next session.  True
        when everything received was committed within ``timeout`` seconds."""
        self._accepting = False
        end = time.monotonic() + timeout
        done = False
        while time.monotonic() < end and not self._stop.is_set():
            if self._finished == self._taken:
                done = True
                break
            time.sleep(0.01)
        self._stop.set()
        if self._writer.is_alive():
            self._writer.join(5)
        # DISCONNECT goes after the acks already queued; then the network loop ends.
        self.client.disconnect()
        self.client.loop_stop()
        self.connected = False
        return done

    def stop(self, *, ack_pending: bool = True) -> None:
        self._stop.set()
        self._writer.join(5)
        self.client.loop_stop()
        self.client.disconnect()
