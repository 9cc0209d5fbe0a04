"""``ctgtp edge run`` and ``ctgtp edge station-check`` (being built: issue 21)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run")
@click.option("--home", required=True, type=click.Path(file_okay=False, path_type=Path))
def run(home: Path) -> None:
    """Run the station agent for the unit at HOME."""
    raise click.UsageError("ctgtp edge run is not built yet")


@click.command("station-check")
@click.argument("station_file", type=click.Path(dir_okay=False, path_type=Path))
def station_check(station_file: Path) -> None:
    """Validate STATION_FILE and open each device once."""
    raise click.UsageError("ctgtp edge station-check is not built yet")
