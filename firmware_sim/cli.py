"""``ctgtp sim``: simulated devices for demos, manual testing and hardware-in-the-loop benches."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from firmware_sim.bioreactor import BioreactorSim
    from firmware_sim.profiles import Message
    from firmware_sim.pty import PtyDevice


@click.group()
def sim() -> None:
    """Simulated devices for tests and demos."""


@sim.command()
@click.option("--unit", "unit_id", default="UNIT-SIM-01", show_default=True)
@click.option(
    "--profile",
    type=click.Choice(["flat", "car-t-10d"]),
    default="flat",
    show_default=True,
    help="flat: a temperature/pH pair at --rate; car-t-10d: a CAR-T expansion run in "
    "simulated time.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1000.0,
    show_default=True,
    help="car-t-10d: simulated seconds per real second (1000: ten days in 864 s).",
)
@click.option(
    "--days", default=10.0, show_default=True, help="car-t-10d: length of the run in days."
)
@click.option(
    "--duration", default=10.0, show_default=True, help="flat: seconds to run (0: forever)."
)
@click.option("--rate", default=5.0, show_default=True, help="flat: telemetry messages per second.")
@click.option("--alarm-after", default=0.0, help="flat: raise a DO_LOW alarm after this many s.")
@click.option("--drift", default=0.0, help="Device clock drift in seconds (fault).")
@click.option("--duplicate", default=0.0, help="Probability of a duplicate delivery (fault).")
@click.option(
    "--reboot-every",
    type=click.FloatRange(min=0),
    default=0.0,
    help="flat: restart the bioreactor every N seconds (fault): a new boot id, msg_id from 1.",
)
def unit(
    unit_id: str,
    profile: str,
    speed: float,
    days: float,
    duration: float,
    rate: float,
    alarm_after: float,
    drift: float,
    duplicate: float,
    reboot_every: float,
) -> None:
    """Run a whole simulated production unit: broker, bioreactor, scanner and cell counter.

    The bioreactor sends what ``hardware/README.md`` asks of an MQTT device: its ``msg_id``
    (counted from 1 at each start) and its ``boot`` id (drawn anew at each start).  The broker
    keeps QoS 1 messages for an offline edge across its own restart and crash (persistence,
    autosave every second); its log is printed at the start.
    """
    from firmware_sim.bioreactor import BioreactorSim
    from firmware_sim.broker import Broker
    from firmware_sim.profiles import car_t_10d, paced
    from firmware_sim.pty import PtyDevice

    run = None
    if profile == "car-t-10d":
        try:
            run = car_t_10d(days=days)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--days") from e

    with Broker() as broker:
        scanner, counter = PtyDevice(), PtyDevice()
        bio = BioreactorSim("127.0.0.1", broker.port, unit_id, duplicate=duplicate, drift_s=drift)
        click.echo(f"broker   mqtt://127.0.0.1:{broker.port}  topics units/{unit_id}/#")
        click.echo(f"         log {broker.log}")
        click.echo(f"scanner  {scanner.port}  (CR LF, symbology ids)")
        click.echo(f"counter  {counter.port}  (CC1 protocol)")
        if run is not None:
            click.echo(
                f"profile  {profile}: {days:g} days at {speed:g}x, {days * 86_400 / speed:.1f} s"
            )
        start = time.monotonic()
        try:
            if run is not None:
                # Device time is the run's simulated clock, so a plot of t shows the ten days.
                bio.play(
                    _echo_states(paced(run, speed, clock=time.monotonic, sleep=time.sleep)),
                    datetime.now(UTC),
                )
            else:
                _flat(bio, scanner, counter, start, duration, rate, alarm_after, reboot_every)
        except KeyboardInterrupt:
            pass
        finally:
            bio.wait_published()
            bio.close()
            scanner.close()
            counter.close()
        if run is not None:
            took = time.monotonic() - start
            click.echo(
                f"published {bio.published} MQTT messages in {took:.1f} s "
                f"({bio.published / max(took, 1e-9):.0f}/s)"
            )
        else:
            click.echo(f"published {bio.published} MQTT messages")


def _flat(
    bio: BioreactorSim,
    scanner: PtyDevice,
    counter: PtyDevice,
    start: float,
    duration: float,
    rate: float,
    alarm_after: float,
    reboot_every: float = 0.0,
) -> None:
    """The flat signal: a temperature/pH pair at ``rate``, a scan and a count now and then;
    with ``reboot_every``, the bioreactor restarts that often (its message ids start over under
    a new boot id, which the edge records as new messages)."""
    from firmware_sim.devices import CellCounterSim, ScannerSim

    n = 0
    alarmed = False
    booted = start
    while duration == 0 or time.monotonic() - start < duration:
        n += 1
        if reboot_every and time.monotonic() - booted >= reboot_every:
            bio.restart()
            booted = time.monotonic()
            click.echo(f"bioreactor restarted: boot {bio.boot}")
        bio.reading("temperature", f"37.{n % 10}", "Cel")
        bio.reading("ph", f"7.{20 + n % 5}", "[pH]")
        if n % 20 == 0:
            scanner.write(ScannerSim().frame("&/CHA999926ABC123", "]C0"))
            counter.write(CellCounterSim().frame(f"S-{n}", 2_000_000 + n, 1_840_000))
        if alarm_after and not alarmed and time.monotonic() - start >= alarm_after:
            bio.alarm("DO_LOW", "dissolved oxygen below 20 %")
            alarmed = True
        time.sleep(1 / rate)


def _echo_states(messages: Iterator[Message]) -> Iterator[Message]:
    """Pass messages through, printing phase changes and alarms as they go out."""
    from firmware_sim.profiles import Kind

    for m in messages:
        if m.kind is not Kind.READING:
            what = m.state if m.kind is Kind.STATE else f"{m.code}: {m.message}"
            click.echo(f"day {m.at_s / 86_400:6.3f}  {m.kind:<5}  {what}")
        yield m


@sim.command("scan")
@click.option(
    "--unit",
    "unit_id",
    required=True,
    help="The unit whose simulated scanner reads the label (the demo's: UNIT-DEMO-01).",
)
@click.option(
    "--scanner",
    default=None,
    help="The simulated scanner's name, when it is not the unit's id (sim://scanner/NAME).",
)
@click.option(
    "--symbology",
    default="]d2",
    show_default=True,
    help="The AIM identifier the scanner reports: ]d2 GS1 DataMatrix, ]C1 GS1-128, "
    "]C0 Code 128 (ISBT 128), ]Q3 GS1 QR.  A CODE starting with one carries its own.",
)
@click.argument("code")
def scan_cmd(unit_id: str, scanner: str | None, symbology: str, code: str) -> None:
    """Pull the trigger of a running simulated unit's scanner (the demo's, with 'ctgtp demo
    --serve') on a label holding CODE.  Write the GS between GS1 fields as <GS>.

    \b
    ctgtp sim scan --unit UNIT-DEMO-01 '010950600013435210TM2611'
    ctgtp sim scan --unit UNIT-DEMO-01 ']C0&/CHA999926ABC123'
    """
    from firmware_sim.urlhandler.remote import RemoteError, send_scan

    data = code.replace("<GS>", "\x1d")
    if len(data) > 3 and data[0] == "]":
        symbology, data = data[:3], data[3:]
    name = scanner or unit_id
    try:
        send_scan(name, data, symbology)
    except RemoteError as e:
        raise click.ClickException(str(e)) from e
    shown = data.replace("\x1d", "<GS>")
    click.echo(f"{name}: scanned {symbology}{shown}")
