"""``ctgtp sim unit`` as a bench runs it (issue 26): the rate asked for, state messages, faults
from options and from a schedule file, and a bad schedule refused before anything starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.cli import sim

pytestmark = pytest.mark.hil
SIM = "from firmware_sim.cli import sim; sim()"


def _start(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SIM, "unit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    m = re.search(r"mqtt://127\.0\.0\.1:(\d+)", first)
    assert m, first
    return proc, int(m.group(1))


class Listener:
    def __init__(self, port: int) -> None:
        self.got: list[tuple[float, str, dict[str, object]]] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rate-listener")
        self.c.on_connect = lambda c, *_: (c.subscribe("units/#", qos=1), self.ready.set())
        self.c.on_message = lambda _c, _u, m: self.got.append(
            (time.monotonic(), m.topic, json.loads(m.payload))
        )
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.mark.parametrize("rate", [2.0, 10.0])
def test_rate_is_the_number_of_telemetry_messages_a_second(rate: float) -> None:
    proc, port = _start("--duration", "3.5", "--rate", str(rate), "--state-every", "1")
    lis = Listener(port)
    try:
        assert lis.ready.wait(5)
        out, _ = proc.communicate(timeout=30)
    finally:
        lis.close()
    tele = [t for t, topic, _ in lis.got if "/telemetry/" in topic]
    # Over the steady part (from the first received to the last), the rate asked for.
    span = tele[-1] - tele[0]
    measured = (len(tele) - 1) / span
    assert abs(measured - rate) / rate < 0.15, (measured, out)
    states = [d["state"] for _, topic, d in lis.got if topic.endswith("/state")]
    assert len(states) >= 3 and set(states) <= {"priming", "activation", "expansion", "harvest"}
    assert "published" in out and proc.returncode == 0


def test_a_bad_schedule_is_refused_naming_each_entry(tmp_path: Path) -> None:
    bad = tmp_path / "faults.yaml"
    bad.write_text("faults:\n  - {at: 1, device: scanner, fault: glare}\n  - {at: x}\n")
    result = CliRunner().invoke(sim, ["unit", "--faults", str(bad), "--duration", "1"])
    assert result.exit_code == 2
    assert "entry 1: fault glare does not apply to scanner; expected device camera" in result.output
    assert "entry 2: at is 'x'; expected seconds after the start, 0 or more" in result.output
    assert "broker" not in result.output  # nothing started


def test_camera_faults_need_a_folder() -> None:
    result = CliRunner().invoke(sim, ["unit", "--glare", "1", "--duration", "1"])
    assert result.exit_code == 2 and "needs a folder" in result.output


def test_faults_from_options_and_a_schedule_run_and_are_logged(tmp_path: Path) -> None:
    sched = tmp_path / "faults.yaml"
    sched.write_text(
        "faults:\n"
        "  - {at: 0.5, device: broker, fault: broker_kill, params: {down_s: 0.3}}\n"
        "  - {at: 0.2, device: counter, fault: bad_checksum}\n"
        "  - {at: 0.3, device: camera, fault: rotate, params: {degrees: 20}}\n"
    )
    result = CliRunner().invoke(
        sim,
        [
            "unit",
            "--duration",
            "2",
            "--rate",
            "20",
            "--faults",
            str(sched),
            "--noise",
            "0.5",
            "--camera-dir",
            str(tmp_path / "cam"),
            "--serial-buffer",
            "64",
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("fault    noise on scanner") == 3  # at 0.5, 1.0 and 1.5 s
    assert "fault    broker_kill on broker {'down_s': 0.3}" in out
    assert "fault    bad_checksum on counter" in out
    assert (tmp_path / "cam" / "frame-00001.png").exists()
    # Nobody read the ptys: a 64-byte line kept 64 bytes of each and lost the rest.
    lost = int(re.search(r"serial   (\d+) bytes lost", out).group(1))  # type: ignore[union-attr]
    assert lost > 0
