"""``ctgtp edge run`` as a process: started, fed by a scanner and a cell counter on
pseudo-terminals and a bioreactor over a real mosquitto, SIGTERMed mid-batch while the bioreactor
keeps publishing, restarted.  It exits 0 each time, the devices reconnect, and nothing
acknowledged is lost: every reading the broker acknowledged and every cell count sent is in the
ledger once, which an exported copy verifies like an auditor's (``ctgtp verify``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.agent import open_agent
from edge.station.agent import system_clock
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker
from firmware_sim.devices import CellCounterSim, ScannerSim
from firmware_sim.pty import PtyDevice
from tests.station.conftest import COI, PW, UNIT

pytestmark = pytest.mark.hil
REPO = Path(__file__).resolve().parents[2]
SECRET = "pw-never-logged-7"  # the broker password in the station file


def wait_for(cond: Callable[[], object], timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


class Run:
    """One ``ctgtp edge run`` process and its JSON log."""

    def __init__(self, home: Path, log: Path) -> None:
        self.log = log
        self.out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ctgtp", "edge", "run", "--home", str(home)],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "(not JSON)", "msg": line})
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.lines() if e.get("event") == name]

    def connected(self) -> set[str]:
        return {e["device"] for e in self.events("device.connected")}

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        finally:
            self.out.close()


class Publisher:
    """The bioreactor publishing a reading every few milliseconds until told to stop; it keeps
    each message's PUBACK state (the broker's acknowledgement)."""

    def __init__(self, broker: Broker) -> None:
        self.bio = BioreactorSim("127.0.0.1", broker.port, UNIT)
        self.sent: list[tuple[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            info = self.bio.reading("temperature", f"37.{n % 10}", "Cel")
            self.sent.append((f"{UNIT}-{self.bio.sent}", info))
            time.sleep(0.005)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.bio.wait_published()

    def acked(self) -> set[str]:
        out = set()
        for msg_id, info in self.sent:
            try:
                if info.is_published():
                    out.add(msg_id)
            except RuntimeError:  # published while disconnected: not acknowledged
                pass
        return out


def test_sigterm_mid_batch_loses_nothing_acknowledged_and_restarts(
    home: Path, tmp_path: Path, broker: Broker
) -> None:
    agent = open_agent(home, system_clock)
    agent.engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
    agent.close()
    scanner, counter = PtyDevice(), PtyDevice()
    (home / "station.toml").write_text(
        f'unit_id = "{UNIT}"\n'
        f'[devices.scanner]\nprofile = "scanner_serial_generic"\nport = "{scanner.port}"\n'
        f'[devices.counter]\nprofile = "cell_counter_cc1"\nport = "{counter.port}"\n'
        f'[devices.bioreactor]\nprofile = "bioreactor_cartridge"\n'
        f'broker = "mqtt://edge:{SECRET}@127.0.0.1:{broker.port}"\n'
        '[kiosk]\nbind = "127.0.0.1:0"\n'
    )
    pub: Publisher | None = None
    first = Run(home, tmp_path / "run1.log")
    try:
        assert wait_for(lambda: first.connected() == {"scanner", "counter", "bioreactor"}), (
            first.lines()
        )
        pub = Publisher(broker).start()
        for i in range(5):
            counter.write(CellCounterSim().frame(f"S-{i}", 2_000_000 + i, 1_800_000))
            scanner.write(ScannerSim().frame(COI, "]C0"))
        assert wait_for(lambda: len(first.events("scan.received")) == 5)
        time.sleep(0.5)
        assert first.terminate() == 0, first.lines()[-5:]  # mid-batch, mid-stream
        # Offline: the bioreactor goes on (the broker keeps the session's messages for the
        # unit).  (A serial line has no acknowledgement: what a counter sends while no station
        # listens is flushed when the port opens, so counts are sent while it runs.)
        time.sleep(0.5)
        pub.stop()
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    stopped = first.events("station.stopped")
    assert len(stopped) == 1 and first.events("station.stopping")

    second = Run(home, tmp_path / "run2.log")
    try:
        assert wait_for(lambda: second.connected() == {"scanner", "counter", "bioreactor"})
        assert pub is not None
        acked = pub.acked()
        assert len(acked) == len(pub.sent) > 20  # the broker was up throughout

        def recorded() -> set[str]:
            a = open_agent(home, system_clock, writer=False)
            try:
                return {
                    str(e.payload["msg_id"])
                    for e in a.ledger.batch_events("B1", telemetry=True)
                    if e.payload.get("channel") == "temperature"
                }
            finally:
                a.close()

        assert wait_for(lambda: recorded() >= acked, 30), len(acked - recorded())
        scanner.write(ScannerSim().frame(COI, "]C0"))
        counter.write(CellCounterSim().frame("S-5", 2_000_005, 1_800_000))
        assert wait_for(lambda: len(second.events("scan.received")) == 1)
        assert wait_for(lambda: len(second.events("reading.recorded")) == 1)
        assert second.terminate(signal.SIGINT) == 0  # Ctrl-C ends it the same way
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
        scanner.close()
        counter.close()

    a = open_agent(home, system_clock, readonly=True)
    try:
        temp_events = [
            e
            for e in a.ledger.batch_events("B1", telemetry=True)
            if e.payload.get("channel") == "temperature"
        ]
        temps = [e.payload for e in temp_events]
        counts = sorted(
            str(e.payload["sample_id"])
            for e in a.ledger.batch_events("B1", telemetry=True)
            if e.payload.get("channel") == "cell_count"
        )
    finally:
        a.close()
    assert len(temps) == len({t["msg_id"] for t in temps}) == len(acked)  # each once
    # Stopped mid-stream: the first run recorded some, the broker kept the rest for the second.
    first_head = stopped[0]["ledger_seq"]
    assert 0 < sum(e.seq <= first_head for e in temp_events) < len(temp_events)
    assert counts == [f"S-{i}" for i in range(6)]
    out = tmp_path / "export" / "ledger.jsonl"
    out.parent.mkdir()
    exported = subprocess.run(
        [sys.executable, "-m", "ctgtp", "edge", "export", "--home", str(home), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    verified = subprocess.run(
        [sys.executable, "-m", "ctgtp", "verify", str(out), "--public-key",
         str(out.with_name("unit.pub"))],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The log is JSON throughout, and no line of it is a traceback.
    for run in (first, second):
        assert all(e["event"] != "(not JSON)" for e in run.lines()), run.lines()
        assert SECRET not in run.log.read_text()
        assert f"mqtt://edge:***@127.0.0.1:{broker.port}" in run.log.read_text()
    assert second.events("signal")[0]["msg"] == "SIGINT received"


def test_a_station_that_cannot_start_says_why_and_exits_1(home: Path) -> None:
    (home / "station.toml").write_text('[kiosk]\nbind = "0.0.0.0:8470"\n')
    r = subprocess.run(
        [sys.executable, "-m", "ctgtp", "edge", "run", "--home", str(home)],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        f"Error: {home / 'station.toml'} is not a valid station file: kiosk: bind "
        "'0.0.0.0:8470' is reachable from other machines; the kiosk binds to 127.0.0.1 unless "
        "the station file also says allow_remote = true"
    )


def test_scans_answered_at_the_kiosk_are_kept_across_a_sigterm(home: Path, tmp_path: Path) -> None:
    """An operator signed in at the process's kiosk (real HTTP) starts a batch; the scanner on
    its pseudo-terminal reads a wrong bag, then the right one: each is answered on the screen's
    live stream.  SIGTERM with the screen still open ends the process with 0, and after a
    restart both answers are in the ledger as the engine gave them."""
    import re

    import httpx

    scanner = PtyDevice()
    (home / "station.toml").write_text(
        f'[devices.scanner]\nprofile = "scanner_serial_generic"\nport = "{scanner.port}"\n'
        '[kiosk]\nbind = "127.0.0.1:0"\n'
    )
    run = Run(home, tmp_path / "kiosk.log")
    answers: list[str] = []
    try:
        assert wait_for(lambda: run.events("kiosk.listening") and run.connected()), run.lines()
        c = httpx.Client(base_url=run.events("kiosk.listening")[0]["url"], timeout=10)
        csrf = re.compile(r'name="csrf" value="([^"]+)"')
        token = csrf.search(c.get("/signin").text).group(1)  # type: ignore[union-attr]
        c.post("/signin", data={"csrf": token, "user_id": "op.alice"})
        r = c.post("/signin/password", data={"csrf": token, "password": PW["op.alice"]})
        assert r.status_code == 303, r.text[:300]
        token = csrf.search(c.get("/batches").text).group(1)  # type: ignore[union-attr]
        r = c.post(
            "/batches",
            data={"csrf": token, "batch_id": "B1", "coi": COI, "password": PW["op.alice"]},
        )
        assert r.status_code == 303, r.text[:300]
        opened = threading.Event()

        def screen() -> None:
            params = {"screen": "step", "batch": "B1"}
            try:
                with c.stream("GET", "/events", params=params, timeout=None) as s:
                    for line in s.iter_lines():
                        opened.set()
                        if line.startswith("event: step"):
                            answers.append(line)
            except httpx.HTTPError:
                pass

        threading.Thread(target=screen, daemon=True).start()
        assert opened.wait(10)
        scanner.write(ScannerSim().frame("&/CHA999926XYZ789", "]C0"))  # another patient's bag
        assert wait_for(lambda: len(answers) == 1)
        scanner.write(ScannerSim().frame(COI, "]C0"))
        assert wait_for(lambda: len(answers) == 2)
        assert run.terminate() == 0  # the screen's stream still open
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    again = Run(home, tmp_path / "again.log")
    try:
        assert wait_for(lambda: again.connected() == {"scanner"})
        assert again.terminate() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()
        scanner.close()
    a = open_agent(home, system_clock, readonly=True)
    try:
        kinds = [e.kind for e in a.ledger.batch_events("B1", telemetry=False)]
        rejected = [e.payload for e in a.ledger.batch_events("B1") if e.kind == "scan.rejected"]
    finally:
        a.close()
    assert kinds.count("scan.rejected") == 1 and kinds.count("scan.accepted") == 1
    assert "wrong patient" in str(rejected[0])
    assert all(e["event"] != "(not JSON)" for e in run.lines()), run.lines()
    assert PW["op.alice"] not in run.log.read_text()
