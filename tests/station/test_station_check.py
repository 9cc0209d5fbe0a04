"""``ctgtp edge station-check`` on real simulated devices and a real server; and the agent's
background sync to that server."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from edge.station.agent import StationAgent
from edge.station.cli import station_check
from firmware_sim.broker import Broker
from firmware_sim.pty import PtyDevice
from tests.server.conftest import ADMIN, server_settings, start_server
from tests.station.conftest import COI, PW, UNIT

pytestmark = pytest.mark.hil


def test_a_good_file_with_every_device_opens_each_once(
    tmp_path: Path, broker: Broker, request: pytest.FixtureRequest
) -> None:
    counter = PtyDevice()
    f = tmp_path / "station.toml"
    try:
        with start_server(server_settings("sqlite", request, tmp_path)) as srv:
            (tmp_path / "server.pub").write_bytes(srv.key.to_json())
            f.write_text(
                '[devices.scanner]\nprofile = "scanner_serial_generic"\n'
                'port = "sim://scanner/check-1"\n'
                f'[devices.counter]\nprofile = "cell_counter_cc1"\nport = "{counter.port}"\n'
                '[devices.camera]\nprofile = "camera_scanner"\ncamera = "sim://camera"\n'
                '[devices.bioreactor]\nprofile = "bioreactor_cartridge"\n'
                f'broker = "mqtt://edge:pw-never-shown@127.0.0.1:{broker.port}"\n'
                f'[server]\nurl = "{srv.url}"\nkey = "server.pub"\n'
            )
            r = CliRunner().invoke(station_check, [str(f)])
    finally:
        counter.close()
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"{f}: valid (4 devices)"
    assert lines[1:] == [
        "ok    scanner (serial_scanner): opened sim://scanner/check-1 at 9600 baud",
        f"ok    counter (serial_instrument): opened {counter.port} at 19200 baud",
        "ok    camera (camera): frames are fed by the program running the agent; nothing to open",
        f"ok    bioreactor (mqtt): connected to mqtt://edge:***@127.0.0.1:{broker.port}",
        f"ok    server (sync): {srv.url} answers with the key in server.pub ({srv.key.key_id})",
    ]
    assert "pw-never-shown" not in r.output


def test_devices_that_cannot_be_opened_are_each_named(tmp_path: Path, broker: Broker) -> None:
    port = broker.port
    broker.stop()
    f = tmp_path / "station.toml"
    f.write_text(
        f'[devices.scanner]\nprofile = "scanner_serial_generic"\nport = "{tmp_path}/ttyNONE"\n'
        '[devices.camera]\nprofile = "camera_scanner"\ncamera = "no-such-video.mp4"\n'
        f'[devices.bio]\nprofile = "bioreactor_cartridge"\nbroker = "mqtt://127.0.0.1:{port}"\n'
    )
    r = CliRunner().invoke(station_check, [str(f)])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert lines[1].startswith(f"FAIL  scanner (serial_scanner): cannot open {tmp_path}/ttyNONE")
    assert lines[2] == f"FAIL  camera (camera): cannot open camera {tmp_path}/no-such-video.mp4"
    assert lines[3].startswith(f"FAIL  bio (mqtt): cannot reach the broker mqtt://127.0.0.1:{port}")
    assert lines[-1] == "Error: 3 could not be opened: scanner, camera, bio"


def test_a_wrong_file_is_refused_before_anything_is_opened(tmp_path: Path) -> None:
    f = tmp_path / "station.toml"
    f.write_text('[devices.scanner]\nprofile = "scanner_serial_generic"\nprot = "/dev/ttyUSB0"\n')
    r = CliRunner().invoke(station_check, [str(f)])
    assert r.exit_code == 1
    assert r.output == (
        f"Error: {f} is not a valid station file: devices.scanner: unknown key 'prot' (did you "
        "mean 'port'?); the allowed keys are profile, port, camera, broker\n"
    )


def test_the_agent_syncs_in_the_background(
    home: Path, tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ctgtp.edge.station")
    with start_server(server_settings("sqlite", request, tmp_path)) as srv:
        r = httpx.post(
            f"{srv.url}/admin/units",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={"site_id": "SITE-1", "unit_id": UNIT, "public_key": (home / "unit.pub").read_text()},
        )  # fmt: skip
        assert r.status_code < 300, r.text
        (home / "server.pub").write_bytes(srv.key.to_json())
        (home / "station.toml").write_text(
            f'[server]\nurl = "{srv.url}"\nkey = "server.pub"\ninterval_s = 1\n'
            '[kiosk]\nbind = "127.0.0.1:0"\n'
        )
        agent = StationAgent.from_file(home / "station.toml").start()
        try:
            agent.engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
            head = agent.agent.ledger.head[0]
            end = time.monotonic() + 20
            while time.monotonic() < end and (agent.sync_state().server_head or 0) < head:
                time.sleep(0.1)
            s = agent.sync_state()
            assert s.server_head == head and s.unsynced_events == 0, s
            assert s.last_receipt_at is not None and s.alarm is None
            h = httpx.get(f"{agent.kiosk_url}/health").json()
            assert h["sync"]["configured"] is True and h["sync"]["server_head"] == head
            # A round a second: the agent logs each and keeps none (months of rounds).
            time.sleep(2.5)
            assert agent.sync is not None and len(agent.sync.reports) <= 1
        finally:
            agent.stop()
        info = httpx.get(
            f"{srv.url}/admin/units/{UNIT}", headers={"Authorization": f"Bearer {ADMIN}"}
        ).json()
        assert info["events"] == head
    rounds = [r for r in caplog.records if getattr(r, "event", None) == "sync.round"]
    assert any(r.fields["pushed"] == head for r in rounds)  # type: ignore[attr-defined]
    port = srv.url.rsplit(":", 1)[1]
    # The server gone: rounds do not reach it; an alarm says so, and nothing else changes.
    (home / "station.toml").write_text(
        f'[server]\nurl = "http://127.0.0.1:{port}"\nkey = "server.pub"\ninterval_s = 1\n'
    )
    agent = StationAgent.from_file(home / "station.toml").start(kiosk=False)
    try:
        agent.engine.raise_deviation("B1", "offline test", "op.alice")
        end = time.monotonic() + 20
        while time.monotonic() < end and agent.sync_state().alarm is None:
            time.sleep(0.1)
        s = agent.sync_state()
        assert s.alarm is not None and s.alarm.startswith("server unreachable since "), s
        assert s.unsynced_events == 1 and s.server_head is None
        assert agent.health()["status"] == "degraded"
    finally:
        agent.stop()
    assert any(getattr(r, "event", None) == "sync.unreachable" for r in caplog.records)


def test_a_port_a_running_station_holds_is_reported_busy_and_left_alone(home: Path) -> None:
    """The station locks its serial ports: station-check beside it reports the port busy
    instead of opening it (an open flushes what waits in the port's input)."""
    from firmware_sim.devices import CellCounterSim

    counter = PtyDevice()
    f = home / "station.toml"
    f.write_text(f'[devices.counter]\nprofile = "cell_counter_cc1"\nport = "{counter.port}"\n')
    agent = StationAgent.from_file(f).start(kiosk=False)
    try:
        agent.engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
        assert not agent.wait_connected(10)
        r = CliRunner().invoke(station_check, [str(f)])
        assert r.exit_code == 1
        assert r.output.splitlines()[1] == (
            f"FAIL  counter (serial_instrument): {counter.port} is busy: another process holds "
            "it (is the station running?); check a station's devices before it starts"
        )
        counter.write(CellCounterSim().frame("S-1", 2_000_000, 1_840_000))
        end = time.monotonic() + 10
        while time.monotonic() < end and agent.devices()[0].last_reading is None:
            time.sleep(0.05)
        assert agent.devices()[0].last_reading == "cell count S-1: 1840000 viable /mL, 92.0 %"
    finally:
        agent.stop()
        counter.close()
