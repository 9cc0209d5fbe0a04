"""``ctgtp edge sync`` and ``users-pull`` in-process against a real server in its own process,
and the station's users file replaced by what a server published (``EdgeAgent.replace_users``)."""

from __future__ import annotations

import _thread
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.agent import AgentError, open_agent
from edge.keys import load_or_create_unit_key
from edge.users import hash_password, load_users

from .conftest import COI, EXAMPLES, Srv
from .test_cli import at, fails, home, ok, published, pw, started

__all__ = ["home", "published", "started"]


def test_sync_pushes_the_record_once(srv: Srv, started: Path, tmp_path: Path) -> None:
    srv.enrol(load_or_create_unit_key(started, "UNIT-01"))
    key = tmp_path / "server.pub"
    key.write_bytes(srv.key.to_json())
    events = json.loads(ok(at(started, "status", "--json")).stdout)["events"]
    args = ("sync", "--server", srv.url, "--server-key", str(key), "--quiet")
    pushed = json.loads(ok(at(started, *args, "--json")).stdout)
    assert pushed == {
        "pushed": events, "segments": 1, "duplicates": 0, "retries": 0,
        "server_head": events, "local_head": events,
    }  # fmt: skip
    again = ok(at(started, *args))
    assert again.stdout == (
        f"synced: 0 events pushed in 0 segments (0 already there, 0 retries); server head "
        f"{events}, local head {events}\n"
    )
    status = json.loads(ok(at(started, "status", "--json")).stdout)
    assert (status["synced_seq"], status["sync_lag"]) == (events, 0)


def test_users_pull_from_a_server_that_does_not_know_the_unit(srv: Srv, home: Path) -> None:
    before = (home / "users.yaml").read_text()
    r = fails(at(home, "users-pull", "--server", srv.url), 1)
    assert "refused" in r.stderr
    assert (home / "users.yaml").read_text() == before


OPERATOR = {"user_id": "op.dee", "printed_name": "Dee Operator", "roles": ["operator"]}


def test_the_users_a_server_published_replace_the_stations(home: Path) -> None:
    agent = open_agent(home, lambda: datetime.now(UTC))
    try:
        head = agent.ledger.head[0]
        with pytest.raises(AgentError, match="server published an operator without 'password_"):
            agent.replace_users([OPERATOR], "http://server")
        assert agent.ledger.head[0] == head  # nothing recorded, the file untouched
        assert "op.alice" in load_users((home / "users.yaml").read_text())
        users = agent.replace_users(
            [OPERATOR | {"password_hash": hash_password("dee-pass")}], "http://server"
        )
        assert list(users) == ["op.dee"]
        (updated,) = agent.ledger.events_of_kind("users.updated")
        assert updated.payload["user_ids"] == ["op.dee"]
        assert updated.payload["source"] == "http://server" and updated.actor == "system"
    finally:
        agent.close()
    assert list(load_users((home / "users.yaml").read_text())) == ["op.dee"]
    assert not (home / "users.tmp").exists()
    listed = ok(at(home, "users")).stdout
    assert listed == "op.dee\tDee Operator\toperator\tactive\n"


def test_sync_in_the_background_shows_its_alarm_until_interrupted(
    srv: Srv, published: tuple[Path, Path], tmp_path: Path
) -> None:
    """``sync --watch``: a unit the server does not know yet is an alarm on stderr, retried;
    once enrolled, the record goes and the alarm clears; Ctrl-C ends the loop with a summary."""
    unit, mbr, pub = "UNIT-W", *published
    home = tmp_path / "watch"
    ok(at(home, "init", "--unit", unit, "--mbr", str(mbr), "--publisher-key", str(pub),
          "--users", str(EXAMPLES / "users.yaml"),
          "--materials", str(EXAMPLES / "materials.yaml")))  # fmt: skip
    ok(at(home, "start", "--batch", "B-W", "--coi", COI, "--user", "op.alice",
          "--password-stdin", stdin=pw("op.alice")))  # fmt: skip
    events = json.loads(ok(at(home, "status", "--json")).stdout)["events"]

    def operator() -> None:
        try:
            time.sleep(2)
            srv.enrol(load_or_create_unit_key(home, unit))
            deadline = time.monotonic() + 60
            while srv.unit(unit)["head_seq"] < events and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.5)  # the loop notices the alarm is gone
        finally:
            _thread.interrupt_main()  # Ctrl-C

    t = threading.Thread(target=operator)
    t.start()
    try:
        r = ok(at(home, "sync", "--server", srv.url, "--watch", "0.2"))
    finally:
        t.join()
    alarms = r.stderr.splitlines()
    assert alarms[0].startswith("alarm: ") and "refused" in alarms[0], r.stderr
    assert alarms[-1] == "sync resumed"
    rounds = int(r.stdout.removeprefix("background sync stopped after ").split()[0])
    assert r.stdout == f"background sync stopped after {rounds} rounds\n" and rounds >= 1
    assert srv.unit(unit)["head_seq"] == events
