"""Every device path ends in the ledger, bound to the running batch and step."""

from __future__ import annotations

import time

import pytest

from edge.engine import Engine
from edge.transports.camera import CameraScanner
from edge.transports.mqtt import MqttIngest
from edge.transports.record import record_cell_count
from edge.transports.serial import SerialReader
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker
from firmware_sim.camera import FrameStyle, frame, gs1_128
from firmware_sim.devices import CellCounterSim
from firmware_sim.pty import PtyDevice
from hardware.profile import shipped_profile
from tests.edge.conftest import COI

pytestmark = pytest.mark.hil


@pytest.fixture
def broker(mosquitto_broker: Broker) -> Broker:
    return mosquitto_broker  # the ctgtp plugin's fixture (firmware_sim/pytest_plugin.py)


def wait_for(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.05)
    return bool(cond())


def test_camera_counter_and_bioreactor_into_the_running_batch(
    started: Engine, broker: Broker
) -> None:
    e = started
    step0 = e.expectation("B1").step
    assert step0 is not None
    # Camera: the apheresis bag's COI on Code 128 would be ISBT; here a GS1-128 bag label with
    # AI 251 carrying the COI, seen in three consecutive frames: one scan, accepted.
    cam = CameraScanner()
    label = gs1_128("0109506000134345" + "17271231" + "21BAG1\x1d251" + COI)
    scans = []
    for i in range(3):
        scans += cam.process(frame(label, FrameStyle(angle=3, noise=4, seed=i)))
    assert len(scans) == 1
    assert str(e.scan("B1", scans[0], "op.alice")) == "patient material accepted"

    led = e.ledger
    ctx = lambda: e.running("B1")  # noqa: E731
    dev = PtyDevice()
    reader = SerialReader(
        dev.port, shipped_profile("cell_counter_cc1"), lambda c: record_cell_count(led, c, ctx)
    ).start()  # type: ignore[arg-type]
    ingest = MqttIngest(led, "127.0.0.1", broker.port, "UNIT-T", context=ctx).start()
    assert ingest.subscribed.wait(10)  # a first connection: no session holds earlier messages
    sim = BioreactorSim("127.0.0.1", broker.port, "UNIT-T")
    try:
        dev.write(CellCounterSim().frame("S-42", 2_000_000, 1_840_000))
        sim.state("expansion")
        sim.reading("temperature", "37.0", "Cel")
        sim.alarm("TEMP_HIGH", "temperature above 38 Cel")
        assert wait_for(
            lambda: any(
                ev.kind == "deviation.raised" and "TEMP_HIGH" in ev.payload["reason"]
                for ev in led.batch_events("B1")
            )
        )
        assert wait_for(
            lambda: any(ev.payload.get("channel") == "cell_count" for ev in led.batch_events("B1"))
        )
    finally:
        sim.close()
        ingest.stop()
        reader.stop()
        dev.close()
    events = list(led.batch_events("B1"))
    kinds = {ev.kind for ev in events}
    assert {
        "scan.accepted",
        "reading.recorded",
        "process.state",
        "alarm.raised",
        "deviation.raised",
    } <= kinds
    bound = [ev for ev in events if ev.kind in ("reading.recorded", "process.state")]
    assert all(ev.payload["step"] == step0.id for ev in bound)
    st = e.state("B1")
    assert st.batch_id == "B1"
    viability = e.telemetry("B1").channels["cell_count.viability"]
    assert (viability.last, viability.unit) == ("92.0", "%")
    assert led.verify_all().event_count == led.head[0]
