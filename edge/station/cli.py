"""``ctgtp edge run`` (the station agent) and ``ctgtp edge station-check`` (its file and devices).

``run`` logs one JSON object per line on standard error (``edge.station.logs``) and ends on
SIGTERM or SIGINT: it stops taking input, commits what is in flight, closes the devices and the
ledger, and exits 0.  A station that cannot start (a wrong station file, a ledger another process
writes, a kiosk address in use) exits 1 with one line saying why.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from ebr_core.errors import EbrError
from edge.errors import EdgeError


@click.command("run")
@click.option(
    "--home",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CTGTP_EDGE_HOME",
    help="The unit's state directory (env CTGTP_EDGE_HOME).",
)
@click.option(
    "--station",
    "station_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The station file (default: HOME/station.toml).",
)
def run(home: Path, station_file: Path | None) -> None:
    """Run the station agent for the unit at HOME: its devices, background sync and kiosk,
    until SIGTERM or Ctrl-C."""
    from edge.station import logs
    from edge.station.agent import StationAgent

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logs.event("signal", f"{signal.Signals(signum).name} received", signal=signum)
        stop.set()

    logs.configure()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            agent = StationAgent.from_file(station_file or home / "station.toml", home)
        except (EdgeError, EbrError) as e:
            raise click.ClickException(str(e)) from e
        try:
            agent.start()
        except (EdgeError, EbrError) as e:
            agent.stop()
            raise click.ClickException(str(e)) from e
        try:
            while not stop.wait(1.0):
                pass
        finally:
            agent.stop()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@click.command("station-check")
@click.argument("station_file", type=click.Path(dir_okay=False, path_type=Path))
def station_check(station_file: Path) -> None:
    """Validate STATION_FILE and open each device once, reporting each."""
    from edge.station.check import check_station
    from edge.station.config import load_station

    try:
        station = load_station(station_file)
    except EdgeError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{station_file}: valid ({len(station.config.devices)} devices)")
    results = check_station(station)
    for r in results:
        click.echo(r.line())
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} could not be opened: {', '.join(failed)}")
