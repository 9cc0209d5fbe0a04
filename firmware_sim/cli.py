"""``ctgtp sim``: simulated devices for demos, manual testing and hardware-in-the-loop benches."""

from __future__ import annotations

import time

import click


@click.group()
def sim() -> None:
    """Simulated devices for tests and demos."""


@sim.command()
@click.option("--unit", "unit_id", default="UNIT-SIM-01", show_default=True)
@click.option("--duration", default=10.0, show_default=True, help="Seconds to run (0: forever).")
@click.option("--rate", default=5.0, show_default=True, help="Telemetry messages per second.")
@click.option("--alarm-after", default=0.0, help="Raise a DO_LOW alarm after this many seconds.")
@click.option("--drift", default=0.0, help="Device clock drift in seconds (fault).")
@click.option("--duplicate", default=0.0, help="Probability of a duplicate delivery (fault).")
def unit(
    unit_id: str, duration: float, rate: float, alarm_after: float, drift: float, duplicate: float
) -> None:
    """Run a whole simulated production unit: broker, bioreactor, scanner and cell counter."""
    from firmware_sim.bioreactor import BioreactorSim
    from firmware_sim.broker import Broker
    from firmware_sim.devices import CellCounterSim, ScannerSim
    from firmware_sim.pty import PtyDevice

    with Broker() as broker:
        scanner, counter = PtyDevice(), PtyDevice()
        bio = BioreactorSim("127.0.0.1", broker.port, unit_id, duplicate=duplicate, drift_s=drift)
        click.echo(f"broker   mqtt://127.0.0.1:{broker.port}  topics units/{unit_id}/#")
        click.echo(f"scanner  {scanner.port}  (CR LF, symbology ids)")
        click.echo(f"counter  {counter.port}  (CC1 protocol)")
        start = time.monotonic()
        n = 0
        alarmed = False
        try:
            while duration == 0 or time.monotonic() - start < duration:
                n += 1
                bio.reading("temperature", f"37.{n % 10}", "Cel")
                bio.reading("ph", f"7.{20 + n % 5}", "[pH]")
                if n % 20 == 0:
                    scanner.write(ScannerSim().frame("&/CHA999926ABC123", "]C0"))
                    counter.write(CellCounterSim().frame(f"S-{n}", 2_000_000 + n, 1_840_000))
                if alarm_after and not alarmed and time.monotonic() - start >= alarm_after:
                    bio.alarm("DO_LOW", "dissolved oxygen below 20 %")
                    alarmed = True
                time.sleep(1 / rate)
        except KeyboardInterrupt:
            pass
        finally:
            bio.wait_published()
            bio.close()
            scanner.close()
            counter.close()
        click.echo(f"published {bio.sent} MQTT messages")
