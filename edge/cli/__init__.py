"""``ctgtp edge``: the commands an operator uses at the station.

One module per area: :mod:`.unit` (publish an MBR, set up a unit, status, export),
:mod:`.batch` (the steps of a batch and its deviations), :mod:`.custody` (labels, hand-offs,
receipt, infusion, shipper logs), :mod:`.users` and :mod:`.sync`; the station agent's ``run`` and
``station-check`` come from :mod:`edge.station.cli`.  Each command calls the engine and renders
its outcome (:mod:`.render`); :mod:`.exits` maps every error to its exit code, in one place.
"""

from __future__ import annotations

import click

from edge.station.cli import run, station_check

from . import batch, custody, sync, unit, users
from .exits import EdgeGroup


@click.group(cls=EdgeGroup)
def edge() -> None:
    """The edge agent an operator runs on a production unit.

    \b
    Exit codes: 0 done; 1 refused or invalid (nothing already recorded is altered);
    2 usage; 75 busy or unavailable, try again later (another process holds the ledger or
    the sync lock, the disk failed, the server could not be reached).
    The commands take --json (run and station-check aside): the outcome as one JSON object on
    stdout, a refusal as one on stderr.  Passwords are read from a hidden prompt, or one line of
    standard input with --password-stdin; never from the command line.
    """


for _command in (
    *unit.COMMANDS,
    *batch.COMMANDS,
    *custody.COMMANDS,
    *users.COMMANDS,
    *sync.COMMANDS,
    run,
    station_check,
):
    edge.add_command(_command)

__all__ = ["edge"]
