"""``ctgtp sim``: simulated devices for demos, manual testing and hardware-in-the-loop benches.

Over 400 lines: one click command per simulated device, each its options and a few lines.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from firmware_sim.pty import BUFFER, PTY_MAX

if TYPE_CHECKING:
    from firmware_sim.bioreactor import BioreactorSim
    from firmware_sim.faults import Injection
    from firmware_sim.profiles import Message
    from firmware_sim.unit import Injector


@click.group()
def sim() -> None:
    """Simulated devices for tests and demos."""


# The fault options: each injects its fault, with its default parameters, every N seconds on the
# device named here (a schedule file sets any other device or parameter).
FAULT_OPTIONS: dict[str, tuple[str, str]] = {
    "noise": ("noise", "scanner"),
    "split": ("split", "scanner"),
    "truncate": ("truncate", "scanner"),
    "concat": ("concat", "scanner"),
    "bad_checksum": ("bad_checksum", "counter"),
    "clock_jump": ("clock_jump", "bioreactor"),
    "poison": ("poison", "bioreactor"),
    "broker_restart": ("broker_restart", "broker"),
    "broker_kill": ("broker_kill", "broker"),
    "unplug": ("unplug", "scanner"),
    "glare": ("glare", "camera"),
    "blur": ("blur", "camera"),
    "rotate": ("rotate", "camera"),
}


def _fault_options(f: Callable[..., None]) -> Callable[..., None]:
    for name, (fault, device) in reversed(FAULT_OPTIONS.items()):
        f = click.option(
            f"--{name.replace('_', '-')}",
            name,
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            metavar="EVERY",
            help=f"Fault: {fault} on the {device} every EVERY seconds.",
        )(f)
    return f


@sim.command()
@click.option("--unit", "unit_id", default="UNIT-SIM-01", show_default=True)
@click.option(
    "--profile",
    type=click.Choice(["flat", "car-t-10d"]),
    default="flat",
    show_default=True,
    help="flat: temperature and pH readings at --rate; car-t-10d: a CAR-T expansion run in "
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
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="flat: telemetry messages per second (temperature and pH take turns).",
)
@click.option(
    "--state-every",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="flat: seconds between process-state messages (priming, activation, expansion, "
    "harvest, in turn).",
)
@click.option("--alarm-after", default=0.0, help="flat: raise a DO_LOW alarm after this many s.")
@click.option("--drift", default=0.0, help="Device clock offset in seconds (fault).")
@click.option("--drift-rate", default=0.0, help="Device clock gain in seconds per second (fault).")
@click.option("--duplicate", default=0.0, help="Probability of a duplicate delivery (fault).")
@click.option(
    "--reboot-every",
    type=click.FloatRange(min=0),
    default=0.0,
    help="flat: restart the bioreactor every N seconds (fault): a new boot id, msg_id from 1.",
)
@click.option(
    "--faults",
    "faults_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="flat: a fault schedule (YAML; see docs/hil.md).",
)
@click.option(
    "--serial-buffer",
    type=click.IntRange(min=1, max=PTY_MAX),
    default=BUFFER,
    show_default=True,
    help="Bytes a serial line holds unread; what does not fit is lost, as on a real line.",
)
@click.option(
    "--camera-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="flat: write camera frames here (frame-00001.png ...) for the camera faults.",
)
@_fault_options
def unit(
    unit_id: str,
    profile: str,
    speed: float,
    days: float,
    duration: float,
    rate: float,
    state_every: float,
    alarm_after: float,
    drift: float,
    drift_rate: float,
    duplicate: float,
    reboot_every: float,
    faults_file: Path | None,
    serial_buffer: int,
    camera_dir: Path | None,
    **every: float | None,
) -> None:
    """Run a whole simulated production unit: broker, bioreactor, scanner and cell counter.

    The bioreactor sends what ``hardware/README.md`` asks of an MQTT device: its ``msg_id``
    (counted from 1 at each start) and its ``boot`` id (drawn anew at each start).  The broker
    keeps QoS 1 messages for an offline edge across its own restart and crash (persistence,
    autosave every second); its log is printed at the start.  Faults come from the options and
    from a schedule file (--faults), validated before anything starts.
    """
    from firmware_sim.bioreactor import BioreactorSim
    from firmware_sim.broker import Broker
    from firmware_sim.faults import (
        Device,
        Fault,
        Injection,
        ScheduleError,
        check_params,
        load_schedule,
    )
    from firmware_sim.profiles import car_t_10d, paced
    from firmware_sim.pty import PtyDevice
    from firmware_sim.unit import Injector, Parts

    run = None
    if profile == "car-t-10d":
        try:
            run = car_t_10d(days=days)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--days") from e

    schedule: list[Injection] = []
    try:
        if faults_file is not None:
            schedule = load_schedule(faults_file.read_text(encoding="utf-8"))
    except (ScheduleError, OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(str(e), param_hint="--faults") from e
    for name, period in every.items():
        if period is not None:
            fault, device = FAULT_OPTIONS[name]
            params, _ = check_params(Device(device), Fault(fault), None, f"--{name}")
            schedule.append(Injection(period, Device(device), Fault(fault), params, period))
    if schedule and run is not None:
        raise click.BadParameter("faults run with the flat profile", param_hint="--faults")
    if any(j.device is Device.CAMERA for j in schedule) and camera_dir is None:
        raise click.BadParameter(
            "a camera fault needs a folder to write the frames in", param_hint="--camera-dir"
        )

    with Broker() as broker, tempfile.TemporaryDirectory(prefix="ctgtp-sim-") as links:
        scanner = PtyDevice(buffer=serial_buffer, link=Path(links) / "scanner")
        counter = PtyDevice(buffer=serial_buffer, link=Path(links) / "counter")
        bio = BioreactorSim("127.0.0.1", broker.port, unit_id, duplicate=duplicate, drift_s=drift)
        if drift_rate:
            bio.drift(drift_rate)
        if camera_dir is not None:
            camera_dir.mkdir(parents=True, exist_ok=True)
        injector = Injector(Parts(scanner, counter, bio, broker, camera_dir), log=click.echo)
        click.echo(f"broker   mqtt://127.0.0.1:{broker.port}  topics units/{unit_id}/#")
        click.echo(f"         log {broker.log}")
        click.echo(f"scanner  {scanner.port}  (CR LF, symbology ids; {scanner.tty} now)")
        click.echo(f"counter  {counter.port}  (CC1 protocol; {counter.tty} now)")
        if schedule:
            click.echo(f"faults   {len(schedule)} scheduled")
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
                _flat(
                    bio,
                    injector,
                    start,
                    duration,
                    rate,
                    alarm_after,
                    reboot_every,
                    state_every,
                    schedule,
                )
        except KeyboardInterrupt:
            pass
        finally:
            injector.settle()
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
        lost = scanner.lost + counter.lost
        click.echo(f"serial   {lost} bytes lost unread (buffer {serial_buffer} bytes a line)")


STATES = ("priming", "activation", "expansion", "harvest")


def _flat(
    bio: BioreactorSim,
    injector: Injector,
    start: float,
    duration: float,
    rate: float,
    alarm_after: float,
    reboot_every: float = 0.0,
    state_every: float = 5.0,
    schedule: Sequence[Injection] = (),
) -> None:
    """The flat signal: ``rate`` readings a second (temperature and pH in turn), a process state
    every ``state_every`` s, a scan and a count every 20 readings; with ``reboot_every``, the
    bioreactor restarts that often (its message ids start over under a new boot id, which the
    edge records as new messages).  The n-th reading is due at n / rate on the clock, so the
    time a publication takes does not slow the rate (and a pair per tick no longer doubles it)."""
    from firmware_sim.faults import due

    n = 0
    alarmed = False
    booted = start
    states = 0
    fired = -1.0
    parts = injector.parts
    assert parts.scanner is not None and parts.counter is not None
    while True:
        now = time.monotonic() - start
        if duration and now >= duration:
            break
        for j in due(schedule, fired, now):
            injector.inject(j)
        fired = now
        if reboot_every and time.monotonic() - booted >= reboot_every:
            bio.restart()
            booted = time.monotonic()
            click.echo(f"bioreactor restarted: boot {bio.boot}")
        if now >= states * state_every:
            bio.state(STATES[states % len(STATES)])
            states += 1
        if n % 2 == 0:
            bio.reading("temperature", f"37.{n % 10}", "Cel")
        else:
            bio.reading("ph", f"7.{20 + n % 5}", "[pH]")
        n += 1
        if n % 20 == 0:
            parts.scanner.write(injector.scan_frame())
            parts.counter.write(injector.count_frame())
        if alarm_after and not alarmed and now >= alarm_after:
            bio.alarm("DO_LOW", "dissolved oxygen below 20 %")
            alarmed = True
        wait = start + n / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)


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


def _broker_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``mqtt://host:port`` (port 1883 when left out)."""
    rest = text.removeprefix("mqtt://")
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "1883")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(
            f"{text!r} is not a broker address; expected HOST:PORT or mqtt://HOST:PORT",
            param_hint="BROKER",
        )
    return host, int(port)


@sim.command("record")
@click.argument("port")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Capture file."
)
@click.option("--duration", default=0.0, help="Seconds to record (0: until Ctrl-C).")
@click.option("--baudrate", default=9600, show_default=True)
@click.option("--note", default="", help="What was recorded (device, model, firmware, faults).")
def record_cmd(port: str, out: Path, duration: float, baudrate: int, note: str) -> None:
    """Record what a serial device sends (PORT: /dev/ttyUSB0, or any pyserial URL), with its
    timing, to a capture (JSON Lines) that sim://replay?file=... plays back."""
    import serial

    from firmware_sim.capture import record_serial

    try:
        with out.open("w", encoding="utf-8") as f:
            n = record_serial(port, f, duration=duration, baudrate=baudrate, note=note)
    except (serial.SerialException, OSError) as e:
        raise click.ClickException(f"cannot record {port}: {e}") from e
    click.echo(f"recorded {n} reads from {port} to {out}")


@sim.command("record-mqtt")
@click.argument("broker")
@click.argument("topic")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Capture file."
)
@click.option("--duration", default=0.0, help="Seconds to record (0: until Ctrl-C).")
@click.option("--note", default="", help="What was recorded (device, model, firmware, faults).")
def record_mqtt_cmd(broker: str, topic: str, out: Path, duration: float, note: str) -> None:
    """Record the messages an MQTT device publishes on TOPIC (wildcards allowed) at BROKER
    (HOST:PORT), with their timing, to a capture that 'ctgtp sim replay-mqtt' plays back."""
    from firmware_sim.capture import record_mqtt

    host, port = _broker_address(broker)
    try:
        with out.open("w", encoding="utf-8") as f:
            n = record_mqtt(host, port, topic, f, duration=duration, note=note)
    except OSError as e:
        raise click.ClickException(f"cannot record from {broker}: {e}") from e
    click.echo(f"recorded {n} messages on {topic} to {out}")


@sim.command("replay-mqtt")
@click.argument("capture", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--broker", required=True, help="HOST:PORT of the broker to publish to.")
@click.option(
    "--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True
)
def replay_mqtt_cmd(capture: Path, broker: str, speed: float) -> None:
    """Publish a recorded MQTT capture again, paced at SPEED times its recorded timing."""
    from firmware_sim.capture import CaptureError, load, replay_mqtt

    host, port = _broker_address(broker)
    try:
        n = replay_mqtt(load(capture), host, port, speed=speed)
    except (CaptureError, OSError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"replayed {n} messages to {broker}")
