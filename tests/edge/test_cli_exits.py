"""Exit codes of ``ctgtp edge``: 0 done, 1 refused or invalid, 2 usage, 75 busy or unavailable
(try again later); one line on stderr, or one JSON object with ``--json``; nothing recorded by a
refusal."""

from __future__ import annotations

import errno
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest

from ebr_core.errors import EbrError
from edge.agent import open_agent
from edge.cli.exits import REFUSED, TEMPFAIL, USAGE, classify
from edge.engine import EngineRefusal, ScanRejected
from edge.errors import (
    LedgerBusyError,
    LedgerClosedError,
    LedgerCorruptError,
    LedgerError,
    LedgerIOError,
)
from edge.ledger import _lock_file
from edge.sync import SyncBusy, SyncClockSkew, SyncError, SyncFork, SyncRefused, sync_lock

from .conftest import COI
from .test_cli import at, fails, home, ok, published, pw, started

__all__ = ["home", "published", "started"]


@pytest.mark.parametrize(
    ("error", "code", "kind"),
    [
        (EngineRefusal("refused"), REFUSED, "refused"),
        (ScanRejected("wrong patient"), REFUSED, "refused"),
        (EbrError("not a signed document"), REFUSED, "refused"),
        (LedgerCorruptError("chain broken"), REFUSED, "refused"),
        (LedgerError("cannot open the ledger's lock file: Permission denied"), REFUSED, "refused"),
        (SyncRefused("HTTP 403"), REFUSED, "refused"),
        (SyncFork("another history"), REFUSED, "refused"),
        (PermissionError(errno.EACCES, "Permission denied", "x"), REFUSED, "refused"),
        (click.UsageError("no such option"), USAGE, "usage"),
        (LedgerBusyError("in use"), TEMPFAIL, "busy"),
        (SyncBusy("another sync is running"), TEMPFAIL, "busy"),
        (LedgerIOError("disk full"), TEMPFAIL, "unavailable"),
        (LedgerClosedError("failed closed"), TEMPFAIL, "unavailable"),
        (SyncError("server unreachable"), TEMPFAIL, "unavailable"),
        (SyncClockSkew("clock skew"), TEMPFAIL, "unavailable"),
        (OSError(errno.ENOSPC, "No space left on device", "x"), TEMPFAIL, "unavailable"),
    ],
)
def test_each_error_has_one_exit_code(error: BaseException, code: int, kind: str) -> None:
    assert classify(error) == (code, kind)


def head(home: Path) -> int:
    return int(json.loads(ok(at(home, "status", "--json")).stdout)["events"])


def test_0_done_and_1_refused_with_nothing_recorded(started: Path) -> None:
    before = head(started)
    r = fails(at(started, "value", "--batch", "B-7", "--user", "op.alice", "apheresis_volume",
                 "200", "mL"), 1)  # fmt: skip
    assert r.stdout == ""
    assert r.stderr == (
        "Error: step receipt/apheresis/coi-scan first expects a scan of patient material; "
        "signatures performed, verified\n"
    )
    r = fails(at(started, "scan", "--batch", "B-7", "--user", "op.nobody", COI), 1)
    assert r.stderr.startswith("Error: user 'op.nobody' is not a user of this station; ")
    assert head(started) == before
    ok(at(started, "scan", "--batch", "B-7", "--user", "op.alice", COI))
    assert head(started) == before + 1


def test_1_a_bad_value_and_a_refusal_in_json(started: Path) -> None:
    ok(at(started, "scan", "--batch", "B-7", "--user", "op.alice", COI))
    for user, meaning in (("op.alice", "performed"), ("op.bob", "verified")):
        ok(at(started, "sign", "--batch", "B-7", "--user", user, "--meaning", meaning,
              "--password-stdin", stdin=pw(user)))  # fmt: skip
    before = head(started)
    r = fails(at(started, "value", "--json", "--batch", "B-7", "--user", "op.alice",
                 "apheresis_volume", "lots", "mL"), 1)  # fmt: skip
    assert r.stdout == ""
    assert json.loads(r.stderr) == {
        "error": "refused",
        "message": "apheresis_volume: 'lots' is not a decimal number such as 87.5",
        "exit_code": 1,
    }
    r = fails(at(started, "value", "--batch", "B-7", "--user", "op.alice", "apheresis_volume",
                 "-5", "L"), 1)  # fmt: skip
    assert r.stderr == "Error: apheresis_volume is recorded in 'mL', got 'L'\n"
    assert head(started) == before


def test_1_an_altered_master_batch_record_in_the_home(home: Path) -> None:
    signed = home / "mbr.signed.json"
    env = json.loads(signed.read_text())
    env["content"]["dosing"]["max_total"] = 900000000
    signed.write_text(json.dumps(env))
    r = fails(at(home, "show", "--batch", "B-7"), 1)
    assert "document content was altered after signing" in r.stderr


def test_1_a_file_in_the_way_is_named_in_one_line(started: Path, tmp_path: Path) -> None:
    in_the_way = tmp_path / "labels"
    in_the_way.write_text("not a folder")
    before = head(started)
    out = in_the_way / "B-7"
    r = fails(at(started, "labels", "print", "--batch", "B-7", "--user", "op.alice",
                 "--label", "apheresis_bag", "--out", str(out)), 1)  # fmt: skip
    assert r.stderr == f"Error: cannot use {out}: Not a directory\n"
    assert head(started) == before  # the print was not recorded


def test_2_usage(home: Path) -> None:
    r = fails(at(home, "scan", "--batch", "B-7", "--user", "op.alice"), 2)
    assert "Missing argument 'RAW'" in r.stderr
    r = fails(at(home, "sign", "--batch", "B-7", "--meaning", "approved"), 2)
    assert "'approved' is not one of 'performed', 'verified'" in r.stderr
    r = fails(at(home, "scna", "--batch", "B-7"), 2)
    assert "No such command 'scna'" in r.stderr


def test_75_the_ledger_is_held_by_another_writer(
    started: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = open_agent(started, lambda: datetime.now(UTC))  # the writer's lock, as a process
    # A command waits up to 10 s (Ledger.open's lock_wait) for the writer to finish: here, with
    # the real lock and its real wait, only for 0.5 s (the wait itself: test_ledger.py).
    monkeypatch.setattr(
        "edge.ledger._lock_file", lambda path, wait: _lock_file(path, min(wait, 0.5))
    )
    try:
        before = holder.ledger.head[0]
        r = fails(at(started, "deviation", "raise", "--json", "--batch", "B-7", "--user",
                     "op.alice", "smudged"), 75)  # fmt: skip
        err = json.loads(r.stderr)
        assert (err["error"], err["exit_code"]) == ("busy", 75)
        assert "is in use by another process" in err["message"]
        assert "was not free within 0.5 s" in err["message"]  # it waited, then gave up
        assert holder.ledger.refresh()[0] == before
    finally:
        holder.close()


def test_75_another_sync_holds_the_unit(home: Path) -> None:
    with sync_lock(home / "edge.db", 0):
        r = fails(at(home, "sync", "--server", "http://127.0.0.1:9", "--lock-wait", "0"), 75)
    assert r.stderr.startswith("Error: another sync is running (pid ")


def test_75_the_server_cannot_be_reached(home: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = fails(at(home, "sync", "--server", f"http://127.0.0.1:{port}", "--attempts", "1",
                 "--quiet"), 75)  # fmt: skip
    assert r.stderr.startswith("Error: server unreachable after 1 attempts (ConnectError")
    assert r.stderr.endswith("nothing is lost, the next sync resumes\n")
