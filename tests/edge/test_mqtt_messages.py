"""Laws of the MQTT message reader (no broker): whatever bytes arrive on whatever topic, the
reader returns either valid events or exactly one ``reading.refused``, and the ledger records
them; and a message's identity is its topic, device, boot (or device time) and msg_id."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.transports.mqtt import REFUSED, MessageReader, identity

TOPICS = st.sampled_from(
    [
        "units/U/telemetry/temperature",
        "units/U/state",
        "units/U/alarms",
        "units/U/shipper/SHP-1",
        "units/U/other",
        "units/U/telemetry/t\u00e9",
    ]
)
FIELDS = ["msg_id", "boot", "device", "channel", "value", "unit", "t", "state", "code", "message"]
TEXT = st.text(max_size=20) | st.sampled_from(["37.5", "Cel", "2026-11-30T08:00:00Z", "\ud800"])
VALUES = (
    TEXT
    | st.integers()
    | st.none()
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
DOCS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=len(FIELDS))


def message(topic: str, payload: bytes) -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(topic=topic.encode())
    m.payload = payload
    return m


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    path = tmp_path_factory.mktemp("law") / "e.db"
    return Ledger.open(path, UnitSigner.generate("U"), lambda: datetime.now(UTC))


def _encoded(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()  # lone surrogates go as \\ud800 escapes


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(TOPICS, DOCS | st.binary(max_size=64).map(lambda b: {"raw": b}))
def test_any_message_becomes_events_or_one_refusal_and_is_recorded(
    ledger: Ledger, topic: str, doc: dict[str, Any]
) -> None:
    raw = doc["raw"] if set(doc) == {"raw"} and isinstance(doc["raw"], bytes) else _encoded(doc)
    reader = MessageReader("U", {}, {})
    items = reader.events_or_refusal(message(topic, raw), ("B-1", "s1"))
    assert items
    kinds = [it.kind for it in items]
    assert REFUSED not in kinds or kinds == [REFUSED]
    ledger.append_many(items)  # never refused by the ledger


VALID = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=8)


@given(VALID, VALID, VALID, VALID)
def test_identity_is_injective_in_topic_device_boot_and_msg_id(
    topic: str, device: str, boot: str, msg_id: str
) -> None:
    base = {"msg_id": msg_id, "device": device, "boot": boot, "t": "2026-11-30T08:00:00Z"}
    key = identity(topic, base)
    assert identity(topic, base | {"t": "2026-12-01T08:00:00Z", "value": "1"}) == key
    assert identity(topic + "x", base) != key
    assert identity(topic, base | {"device": device + "x"}) != key
    assert identity(topic, base | {"boot": boot + "x"}) != key
    assert identity(topic, base | {"msg_id": msg_id + "x"}) != key
    no_boot = {k: v for k, v in base.items() if k != "boot"}
    assert identity(topic, no_boot) != identity(topic, no_boot | {"t": "2026-12-01T08:00:00Z"})
