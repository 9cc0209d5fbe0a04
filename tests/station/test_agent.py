"""The station agent in-process, with real simulated devices: a scanner and a cell counter on
pseudo-terminals behind a ``/dev/serial/by-id``-style link, a simulated ``sim://`` scanner, a
bioreactor over a real mosquitto, ``/health`` over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from edge.station.agent import StationAgent, StationError
from edge.station.config import StationFileError
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker
from firmware_sim.devices import CellCounterSim, ScannerSim
from firmware_sim.pty import PtyDevice
from firmware_sim.urlhandler import protocol_sim
from tests.station.conftest import COI, PW, UNIT

pytestmark = pytest.mark.hil


def wait_for(cond: Callable[[], object], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


class Plug:
    """A USB-serial device behind a stable link (as udev's /dev/serial/by-id/ links are): it
    can be unplugged (the pty closes, the link goes) and plugged back (a new pty, same link)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.dev: PtyDevice | None = None
        self.plug()

    def plug(self) -> None:
        self.dev = PtyDevice()
        self.link.symlink_to(self.dev.port)

    def unplug(self) -> None:
        assert self.dev is not None
        self.link.unlink()
        self.dev.close()
        self.dev = None

    def write(self, data: bytes) -> None:
        assert self.dev is not None
        self.dev.write(data)


@pytest.fixture
def plugs(tmp_path: Path) -> Iterator[dict[str, Plug]]:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    p = {"scanner": Plug(by_id / "usb-Scanner-if00"), "counter": Plug(by_id / "usb-CC1-if00")}
    yield p
    for plug in p.values():
        if plug.dev is not None:
            plug.dev.close()


def station_file(home: Path, plugs: dict[str, Plug], broker: Broker, extra: str = "") -> Path:
    f = home / "station.toml"
    f.write_text(
        f"""
unit_id = "{UNIT}"

[devices.scanner]
profile = "scanner_serial_generic"
port = "{plugs["scanner"].link}"

[devices.cell_counter]
profile = "cell_counter_cc1"
port = "{plugs["counter"].link}"

[devices.bioreactor]
profile = "bioreactor_cartridge"
broker = "mqtt://127.0.0.1:{broker.port}"

[kiosk]
bind = "127.0.0.1:0"
{extra}"""
    )
    return f


def readings(
    agent: StationAgent, batch: str, channel: str | None = None
) -> list[dict[str, object]]:
    return [
        e.payload
        for e in agent.agent.ledger.batch_events(batch, telemetry=True)
        if channel is None or e.payload.get("channel") == channel
    ]


def test_devices_readings_scans_and_health(
    home: Path, plugs: dict[str, Plug], broker: Broker
) -> None:
    agent = StationAgent.from_file(station_file(home, plugs, broker)).start()
    bio = BioreactorSim("127.0.0.1", broker.port, UNIT)
    try:
        got: list[str] = []
        agent.set_scan_sink(got.append)
        assert wait_for(lambda: all(d.connected for d in agent.devices()))
        # Before any batch: a reading belongs to no batch.
        plugs["counter"].write(CellCounterSim().frame("S-0", 2_000_000, 1_800_000))
        assert wait_for(lambda: agent.devices()[1].last_reading is not None)
        agent.engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
        plugs["scanner"].write(ScannerSim().frame(COI, "]C0"))
        plugs["counter"].write(CellCounterSim().frame("S-1", 2_000_000, 1_840_000))
        bio.reading("temperature", "37.1", "Cel")
        bio.alarm("DO_LOW", "dissolved oxygen below 20 %")
        assert wait_for(lambda: got == [f"]C0{COI}"])
        assert wait_for(lambda: len(readings(agent, "B1")) == 2)
        step = agent.engine.running("B1")[1]
        assert {(r["channel"], r["step"]) for r in readings(agent, "B1")} == {
            ("cell_count", step),
            ("temperature", step),
        }
        assert agent.running() == ("B1", step)
        states = {d.name: d for d in agent.devices()}
        assert states["scanner"].last_reading == f"scan ]C0{COI}"
        assert states["bioreactor"].last_reading == "temperature 37.1 Cel"
        assert wait_for(
            lambda: agent.devices()[2].alarms == ("DO_LOW: dissolved oxygen below 20 %",)
        )
        h = httpx.get(f"{agent.kiosk_url}/health").json()
        assert h["status"] == "ok" and h["unit_id"] == UNIT and h["running_batch"] == "B1"
        assert [(d["name"], d["connected"], d["last_reading"]) for d in h["devices"]] == [
            ("scanner", True, f"scan ]C0{COI}"),
            ("cell_counter", True, "cell count S-1: 1840000 viable /mL, 92.0 %"),
            ("bioreactor", True, "temperature 37.1 Cel"),
        ]
        assert h["sync"]["configured"] is False
        # The kiosk is the agent's: its sign-in page, served on the station file's address.
        assert h["kiosk_error"] is None
        page = httpx.get(f"{agent.kiosk_url}/signin")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # The kiosk detached: a scan is received and dropped, never recorded.
        agent.set_scan_sink(None)
        plugs["scanner"].write(ScannerSim().frame(COI, "]C0"))
        assert wait_for(lambda: agent.scans == 2)
        assert got == [f"]C0{COI}"]
    finally:
        bio.close()
        agent.stop()
    assert agent.agent.ledger._closed_reason is not None  # closed cleanly by stop()


def test_devices_reconnect_after_an_unplug_and_a_broker_restart(
    home: Path, plugs: dict[str, Plug], broker: Broker
) -> None:
    agent = StationAgent.from_file(station_file(home, plugs, broker)).start()
    bio = BioreactorSim("127.0.0.1", broker.port, UNIT)
    try:
        agent.engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
        assert wait_for(lambda: all(d.connected for d in agent.devices()))
        plugs["counter"].unplug()
        plugs["scanner"].unplug()
        assert wait_for(lambda: not any(d.connected for d in agent.devices()[:2]))
        assert "port error" in agent.devices()[1].detail
        assert wait_for(lambda: "cannot open" in agent.devices()[1].detail)
        assert httpx.get(f"{agent.kiosk_url}/health").json()["status"] == "degraded"
        plugs["counter"].plug()
        plugs["scanner"].plug()
        assert wait_for(lambda: all(d.connected for d in agent.devices()[:2]))
        plugs["counter"].write(CellCounterSim().frame("S-2", 2_000_000, 1_840_000))
        assert wait_for(lambda: len(readings(agent, "B1", "cell_count")) == 1)

        broker.restart()
        bio.reading("temperature", "37.2", "Cel")  # queued by the device while the broker is down
        assert wait_for(lambda: len(readings(agent, "B1", "temperature")) == 1, 20)
        assert wait_for(lambda: agent.devices()[2].connected)
    finally:
        bio.close()
        agent.stop()


def test_a_station_starts_before_its_devices_are_there(
    home: Path, tmp_path: Path, broker: Broker
) -> None:
    link = tmp_path / "usb-CC1-late"
    f = home / "station.toml"
    broker.stop()
    f.write_text(
        f'[devices.cc]\nprofile = "cell_counter_cc1"\nport = "{link}"\n'
        f'[devices.bio]\nprofile = "bioreactor_cartridge"\nbroker = "mqtt://127.0.0.1:{broker.port}"\n'
        '[kiosk]\nbind = "127.0.0.1:0"\n'
    )
    agent = StationAgent.from_file(f).start()
    try:
        assert wait_for(lambda: "cannot open" in agent.devices()[0].detail)
        assert not agent.devices()[1].connected
        late = Plug(link)
        broker.start()
        assert wait_for(lambda: all(d.connected for d in agent.devices()), 20)
        assert agent.device("cc").reader.reconnects == 0  # type: ignore[attr-defined]
        late.dev.close()  # type: ignore[union-attr]
    finally:
        agent.stop()


def test_a_scan_from_a_sim_url_scanner(home: Path) -> None:
    f = home / "station.toml"
    f.write_text(
        '[devices.scanner]\nprofile = "scanner_serial_generic"\nport = "sim://scanner/st-agent"\n'
        '[kiosk]\nbind = "127.0.0.1:0"\n'
    )
    with StationAgent.from_file(f).start() as agent:
        got: list[str] = []
        agent.set_scan_sink(got.append)
        assert wait_for(lambda: agent.devices()[0].connected)
        protocol_sim.scan("st-agent", "010950600013435210TM2611")
        assert wait_for(lambda: got == ["]d2010950600013435210TM2611"])


def test_refusals_at_start(home: Path, tmp_path: Path) -> None:
    f = home / "station.toml"
    f.write_text('unit_id = "UNIT-OTHER"\n')
    with pytest.raises(StationFileError, match="unit_id 'UNIT-OTHER' does not match the home"):
        StationAgent.from_file(f)
    f.write_text("")
    with pytest.raises(StationError, match="is not an edge home"):
        StationAgent.from_file(f, tmp_path / "nowhere")
    taken = StationAgent.from_file(f).start()
    try:
        port = taken.kiosk_url.rsplit(":", 1)[1]  # type: ignore[union-attr]
        other = home.parent / "other"
        from tests.station.conftest import make_home

        h2 = make_home(other, "UNIT-ST-02")
        (h2 / "station.toml").write_text(f'[kiosk]\nbind = "127.0.0.1:{port}"\n')
        second = StationAgent.from_file(h2 / "station.toml")
        with pytest.raises(StationError, match=f"kiosk.bind '127.0.0.1:{port}': cannot listen"):
            second.start()
        second.stop()
    finally:
        taken.stop()


def test_a_camera_reads_labels_from_a_video_file(home: Path, tmp_path: Path) -> None:
    """A camera given a video file: its frames are read in a thread, each label that comes into
    view is one scan handed on; at the end of the file the camera says so."""
    import cv2

    from firmware_sim.camera import FrameStyle, frame, gs1_datamatrix

    video = tmp_path / "labels.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (1280, 720), False)
    label = gs1_datamatrix("(01)09506000134376(17)271231(21)CART-0001")
    for i in range(3):  # one label held for three frames, then gone: one scan
        w.write(frame(label, FrameStyle(angle=2, seed=i)))
    w.write(frame(None))
    w.release()
    f = home / "station.toml"
    f.write_text(f'[devices.camera]\nprofile = "camera_scanner"\ncamera = "{video.name}"\n')
    (home / video.name).write_bytes(video.read_bytes())  # relative to the station file
    agent = StationAgent.from_file(f)
    got: list[str] = []
    agent.set_scan_sink(got.append)
    with agent.start(kiosk=False):  # a kiosk would attach its own sink
        assert wait_for(lambda: agent.devices()[0].detail == "the video file has ended")
        assert got == ["]d2010950600013437617271231" + "21CART-0001"]
        assert not agent.devices()[0].connected


def test_an_open_kiosk_screen_does_not_hold_the_stop(home: Path) -> None:
    """A signed-in screen keeps a live stream (SSE) open; stopping the station does not wait
    for it to end by itself (it waited 15 s, then left the kiosk's thread running)."""
    import re
    import threading

    from edge.station.agent import KIOSK_GRACE_S

    f = home / "station.toml"
    f.write_text('[kiosk]\nbind = "127.0.0.1:0"\n')
    agent = StationAgent.from_file(f).start()
    c = httpx.Client(base_url=str(agent.kiosk_url))
    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    token = csrf.search(c.get("/signin").text).group(1)  # type: ignore[union-attr]
    c.post("/signin", data={"csrf": token, "user_id": "op.alice"})
    r = c.post("/signin/password", data={"csrf": token, "password": PW["op.alice"]})
    assert r.status_code == 303
    opened = threading.Event()

    def screen() -> None:
        try:
            with c.stream("GET", "/events", params={"screen": "devices"}, timeout=None) as s:
                for _ in s.iter_lines():
                    opened.set()
        except httpx.HTTPError:
            pass

    threading.Thread(target=screen, daemon=True).start()
    assert opened.wait(10)
    t0 = time.monotonic()
    agent.stop()
    assert time.monotonic() - t0 < KIOSK_GRACE_S + 3
    assert agent._server_thread is not None and not agent._server_thread.is_alive()
