"""`make soak`: issue 19's fault campaign (``tests/hil/campaign.py``) against real parts.

Kills of writing and syncing edges, server and broker; TCP faults between edge and server;
poison MQTT messages, colliding message ids and clock jumps, mixed at random for
``CAMPAIGN_SECONDS`` seconds (default 300) with a fixed seed (``CAMPAIGN_SEED``, default 19), then
an exactly-once check per unit, whose figures are printed.  ``CAMPAIGN_KEEP`` names a
folder to work in and keep (logs of every process, ledgers, the server's database, the timeline of
faults), for a failure to be looked into; pytest's own temporary folders are recycled.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hil.campaign import run_campaign

SECONDS = float(os.environ.get("CAMPAIGN_SECONDS", "300"))
SEED = int(os.environ.get("CAMPAIGN_SEED", "19"))

pytestmark = [
    pytest.mark.hil,
    pytest.mark.slow,
    # The faults run SECONDS; setting up, healing, the final sync and the checks take a few
    # minutes more on a loaded machine.
    pytest.mark.timeout(SECONDS + 900),
]


def test_fault_campaign_loses_and_duplicates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = os.environ.get("CAMPAIGN_KEEP")
    work = tmp_path
    if keep:  # a folder of its own, kept after the run
        work = Path(keep) / f"seed-{SEED}"
        work.mkdir(parents=True, exist_ok=False)
    result = run_campaign(SECONDS, SEED, work=work)
    with capsys.disabled():  # the figures show in `make soak` whether it passes or not
        print("\n" + result.figures(), flush=True)
    passed = result.lost == 0 and result.duplicated == 0 and not result.failures
    assert passed, result.figures()
