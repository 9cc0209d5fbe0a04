"""``ctgtp edge sync`` and the server's transparency log, against a real server: an honest log
passes silently (the summary as before); a log rewound in the database exits 3 with the security
alert on stderr, recorded once in the ledger by the reading sync, shown by ``status``, cleared
by ``--acknowledge-alert`` (the alert events stay)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ebr_core.keys import UnitSigner
from edge.agent import open_agent
from edge.keys import load_or_create_unit_key
from edge.logwatch import raise_alarm
from edge.sync import BackgroundSync, SyncClient, acknowledge_security_alarm, sync_alarm
from tests.security.test_log_unit_checks import RogueAdmin
from tests.server.conftest import Server, make_ledger, server_settings, start_server

from .test_cli import at, fails, home, ok, published, started

__all__ = ["home", "published", "started"]


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with start_server(server_settings("sqlite", request, tmp_path)) as srv:
        yield srv


def test_cli_sync_raises_the_alert_exits_3_and_it_is_acknowledged(
    server: Server, started: Path, tmp_path: Path
) -> None:
    server.enrol(load_or_create_unit_key(started, "UNIT-01"))
    for i in range(12):  # other units enrolled: audited, so a log with some history
        server.enrol(UnitSigner.generate(f"UNIT-X{i}"))
    key = tmp_path / "server.pub"
    key.write_bytes(server.key.to_json())
    args = ("sync", "--server", server.url, "--server-key", str(key), "--quiet")
    honest = ok(at(started, *args))
    assert honest.stdout.startswith("synced: ") and honest.stderr == ""
    rogue = RogueAdmin(server)
    try:
        leaves = rogue.leaves()
        rogue.rewrite(leaves[: len(leaves) // 2])
    finally:
        rogue.close()
    r = fails(at(started, *args), 3)
    assert "SECURITY ALERT (rewound)" in r.stderr and "trusted checkpoint kept" in r.stderr
    assert r.stdout.startswith("synced: 1 events pushed")  # the alert itself reached the server
    again = fails(at(started, *args, "--json"), 3)
    doc = json.loads(again.stdout)
    assert doc["pushed"] == 0 and "already recorded" in doc["log"] and len(doc["alerts"]) == 1
    status = ok(at(started, "status"))
    assert "alarm: SYNC: SECURITY ALERT (rewound)" in status.stdout
    cleared = ok(at(started, "sync", "--acknowledge-alert"))
    assert cleared.stdout.startswith("security alarm acknowledged: SECURITY ALERT (rewound)")
    assert json.loads(ok(at(started, "status", "--json")).stdout)["sync_alarm"] is None
    assert ok(at(started, "sync", "--acknowledge-alert")).stdout == "no security alarm stands\n"
    agent = open_agent(started, lambda: None, readonly=True)  # type: ignore[arg-type,return-value]
    try:
        [alert] = list(agent.ledger.events_of_kind("security.alert"))
    finally:
        agent.close()
    assert alert.payload["failure"] == "rewound" and alert.actor == "system"


def test_the_stations_security_alarm_stands_through_good_and_bad_rounds(
    server: Server, tmp_path: Path
) -> None:
    """The background sync (the station's) shows a standing security alarm from its start,
    keeps it through a good round and a refused one, and lets go only when acknowledged."""
    led = make_ledger(tmp_path / "edge.db", UnitSigner.generate("UNIT-BG"), groups=1)
    server.enrol(led.signer)
    raise_alarm(led, "SECURITY ALERT (rewound): the log shows 3 entries, fewer than 9", 1.0)
    bg = BackgroundSync(SyncClient(led, server.url, server_key=server.key), interval=0.05)
    assert bg.alarm is not None and bg.alarm.startswith("SECURITY ALERT (rewound)")
    assert bg._round() and bg.reports[-1].alerts == []  # a good round: pushed, log checked
    assert bg.alarm is not None and bg.alarm.startswith("SECURITY ALERT (rewound)")
    bg._raise_alarm("clock_skew", "clock skew: 400 s")  # a passing problem does not replace it
    assert bg.alarm.startswith("SECURITY ALERT (rewound)") and "clock skew" in bg.alarm
    assert (sync_alarm(led) or {})["kind"] == "security"
    bg._clear_alarm()
    assert bg.alarm.startswith("SECURITY ALERT") and acknowledge_security_alarm(led)
    assert bg._round() and bg.alarm is None and sync_alarm(led) is None
    led.close()
