"""Bioreactor → mosquitto → edge ledger: QoS 1, exactly once across duplicates, a broker restart
and an edge crash between commit and ack."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.transports.mqtt import MqttIngest
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker

pytestmark = pytest.mark.hil


@pytest.fixture
def broker(mosquitto_broker: Broker) -> Broker:
    return mosquitto_broker  # the ctgtp plugin's fixture (firmware_sim/pytest_plugin.py)


def readings(led: Ledger) -> list[str]:
    return [e.payload["msg_id"] for e in led.events() if e.kind == "reading.recorded"]


def wait_for(cond, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_readings_exactly_once_across_duplicates_and_a_broker_restart(
    broker: Broker, tmp_path: Path
) -> None:
    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-M"), lambda: datetime.now(UTC))
    ingest = MqttIngest(
        led,
        "127.0.0.1",
        broker.port,
        "UNIT-M",
        context=lambda: ("B1", "manufacture/expansion/expand"),
    ).start()
    assert ingest.subscribed.wait(10)  # a first connection: no session holds earlier messages
    sim = BioreactorSim("127.0.0.1", broker.port, "UNIT-M", duplicate=0.2)
    try:
        for i in range(150):
            sim.reading("temperature", f"37.{i % 10}", "Cel")
        sim.wait_published()
        assert wait_for(lambda: len(readings(led)) == 150)
        broker.restart()
        # The device's own buffering while its broker is down is the device's business; the
        # edge's promise starts when the broker has the message.
        assert wait_for(lambda: sim.client.is_connected() and ingest.client.is_connected())
        for i in range(150):
            sim.reading("ph", f"7.{i % 10}", "[pH]")
        sim.alarm("DO_LOW", "dissolved oxygen below 20 %")
        assert wait_for(lambda: len(readings(led)) == 300), len(readings(led))
        assert wait_for(lambda: any(e.kind == "deviation.raised" for e in led.events()))
    finally:
        sim.close()
        ingest.stop()
    ids = readings(led)
    assert len(ids) == len(set(ids)) == 300
    assert ingest.stats.duplicates > 0  # duplicates were delivered, and dropped
    dev = [e for e in led.events() if e.kind == "deviation.raised"]
    assert dev[0].batch_id == "B1" and "DO_LOW" in dev[0].payload["reason"]
    assert led.verify_all().event_count == led.head[0]


class CrashBeforeAck(MqttIngest):
    """Commits readings, then dies before acking them (the process was killed)."""

    def _commit(self, msgs: list[mqtt.MQTTMessage]) -> None:
        items = []
        for m in msgs:
            items.extend(self._to_events(m, self.context()))
        self.ledger.append_many(items)


def test_a_crash_between_commit_and_ack_records_each_reading_once(
    broker: Broker, tmp_path: Path
) -> None:
    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-C"), lambda: datetime.now(UTC))
    first = CrashBeforeAck(led, "127.0.0.1", broker.port, "UNIT-C").start()
    assert first.subscribed.wait(10)
    sim = BioreactorSim("127.0.0.1", broker.port, "UNIT-C")
    try:
        for i in range(100):
            sim.reading("volume", str(100 + i), "mL")
        sim.wait_published()
        assert wait_for(lambda: len(readings(led)) == 100)
        first._stop.set()
        first.client.loop_stop()
        sock = first.client.socket()
        assert sock is not None
        sock.close()  # killed: no DISCONNECT, no acks
        second = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-C").start()
        assert wait_for(lambda: second.stats.received >= 100), second.stats
        second.stop()
    finally:
        sim.close()
    assert second.stats.duplicates >= 100 - 1  # the broker redelivered the unacked readings
    ids = readings(led)
    assert len(ids) == len(set(ids)) == 100


def test_device_clock_drift_is_recorded_not_trusted(broker: Broker, tmp_path: Path) -> None:
    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-D"), lambda: datetime.now(UTC))
    ingest = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-D").start()
    assert ingest.subscribed.wait(10)
    sim = BioreactorSim("127.0.0.1", broker.port, "UNIT-D", drift_s=3600)
    try:
        sim.reading("temperature", "37.0", "Cel")
        assert wait_for(lambda: len(readings(led)) == 1)
    finally:
        sim.close()
        ingest.stop()
    ev = next(e for e in led.events() if e.kind == "reading.recorded")
    device = datetime.strptime(ev.payload["device_time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    edge = datetime.strptime(ev.recorded_at, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert 3590 < (device - edge).total_seconds() < 3610  # kept for review, not used as time


def test_ctgtp_sim_unit_runs_a_whole_unit() -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctgtp",
            "sim",
            "unit",
            "--duration",
            "1",
            "--rate",
            "10",
            "--alarm-after",
            "0.3",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "broker   mqtt://127.0.0.1:" in r.stdout
    # The scanner's port is a stable path (a by-id link), naming the pty behind it now.
    assert re.search(r"scanner  \S+/scanner  \(CR LF, symbology ids; /dev/pts/\d+ now\)", r.stdout)
    assert int(r.stdout.rsplit("published ", 1)[1].split()[0]) >= 10


def test_cryoshipper_feed_flags_an_excursion_like_the_logger_file(
    broker: Broker, tmp_path: Path
) -> None:
    from datetime import timedelta
    from decimal import Decimal

    from ebr_core.custody import ExcursionMonitor, find_excursions, parse_logger_csv
    from edge.transports.mqtt import ShipperWatch
    from firmware_sim.shipper import Excursion, ShipperLoggerSim, profile, to_csv

    t0 = datetime(2026, 11, 25, 8, tzinfo=UTC)
    samples = profile(
        t0,
        timedelta(hours=2),
        timedelta(minutes=1),
        excursions=(
            Excursion(timedelta(minutes=20), timedelta(minutes=5)),  # exactly the allowed 5 min
            Excursion(timedelta(minutes=60), timedelta(minutes=6)),  # one minute too long
        ),
    )
    limit, allowed = Decimal(-150), timedelta(minutes=5)
    from_file = find_excursions(parse_logger_csv(to_csv(samples)), limit, allowed)
    assert [x.started_at - t0 for x in from_file] == [timedelta(minutes=60)]

    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-S"), lambda: datetime.now(UTC))
    led.append("batch.started", {"coi": "&/CHA999926ABC123"}, batch_id="B1")
    watch = ShipperWatch("B1", ExcursionMonitor(limit, allowed))
    ingest = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-S", shippers={"SHP-9": watch}).start()
    # A first connection has no session yet: what is published before the subscription is
    # granted reaches nobody (under load that took long enough to lose samples here).
    assert ingest.subscribed.wait(10)
    sim = ShipperLoggerSim("127.0.0.1", broker.port, "UNIT-S", "SHP-9")
    try:
        sim.publish(samples, duplicate_every=17)
        assert wait_for(lambda: ingest.stats.recorded == len(samples))
        devs = [e for e in led.events() if e.kind == "deviation.raised"]
        assert len(devs) == 1 and devs[0].payload["category"] == "shipping_temperature"
        assert "09:00:00" in devs[0].payload["reason"]  # started at minute 60
        assert ingest.stats.duplicates >= len(samples) // 17
    finally:
        sim.close()
        ingest.stop()


def test_a_refused_commit_stops_the_ingest_and_loses_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    # The ledger refuses a group (here: closed under the ingest): the ingest stops and says why,
    # acks nothing, and the broker delivers the reading again to the next ingest.
    signer = UnitSigner.generate("UNIT-E")
    led = Ledger.open(tmp_path / "e.db", signer, lambda: datetime.now(UTC))
    ingest = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-E").start()
    assert ingest.subscribed.wait(10)
    sim = BioreactorSim("127.0.0.1", broker.port, "UNIT-E")
    try:
        led.close()
        sim.reading("temperature", "37.0", "Cel")
        sim.wait_published()
        assert wait_for(lambda: ingest.error is not None)
        assert "recording stopped" in str(ingest.error) and "closed" in str(ingest.error)
        ingest.stop()
        led = Ledger.open(tmp_path / "e.db", signer, lambda: datetime.now(UTC))
        assert readings(led) == []
        again = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-E").start()
        assert wait_for(lambda: len(readings(led)) == 1), again.stats
        again.stop()
    finally:
        sim.close()
