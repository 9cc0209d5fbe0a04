"""`ctgtp edge` driven as an operator would, on a real state directory: in-process through the
``ctgtp`` root command with click's CliRunner (so coverage sees the CLI), and the entry point
itself, with a password on standard input, as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ctgtp.cli import cli
from ebr_core.keys import Keyring, PublicKey
from ebr_core.ledgerfile import verify_ledger_chunks

from .conftest import COI, EXAMPLES, PW


def invoke(*args: str, stdin: str | None = None) -> Result:
    """``ctgtp ARGS`` in this process, standard input given; exceptions end as exit codes."""
    return CliRunner().invoke(cli, list(args), input=stdin)


def ctgtp(
    *args: str, stdin: str = "", home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``ctgtp ARGS`` as a real process (``--home HOME`` after the command's name), for what a
    process shows: the entry point, a terminal, a process's resources."""
    if home is not None:
        args = (*args[:2], "--home", str(home), *args[2:])
    return subprocess.run(
        [sys.executable, "-m", "ctgtp", *args],
        input=stdin, capture_output=True, text=True, check=False,
    )  # fmt: skip


def at(home: Path, *args: str, stdin: str | None = None) -> Result:
    """``ctgtp edge ARGS --home HOME`` (options go anywhere after the command's name)."""
    return invoke("edge", *args, "--home", str(home), stdin=stdin)


def ok(r: Result) -> Result:
    assert r.exit_code == 0, (r.exit_code, r.output, r.exception)
    return r


def fails(r: Result, code: int) -> Result:
    """Exit ``code`` with a one-line message: never a traceback (an escaped exception)."""
    assert r.exit_code == code, (r.exit_code, r.output)
    assert isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output
    return r


def pw(*users: str) -> str:
    return "".join(f"{PW[u]}\n" for u in users)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A signed copy of the example MBR and its publisher's public key."""
    d = tmp_path_factory.mktemp("pub")
    ok(invoke("keys", "new", "qa.approver", "--out", str(d)))
    out = d / "mbr.signed.json"
    key = str(d / "qa.approver.key")
    r = ok(invoke("edge", "mbr-publish", str(EXAMPLES / "car_t_mbr.yaml"), "--key", key,
                 "--signer", "qa.approver", "--out", str(out)))  # fmt: skip
    assert r.stdout == (f"published CAR-T-CARTRIDGE v3 (13 steps) signed by qa.approver: {out}\n")
    return out, d / "qa.approver.pub"


def init(home: Path, mbr: Path, pub: Path) -> Result:
    return at(home, "init", "--unit", "UNIT-01", "--mbr", str(mbr), "--publisher-key", str(pub),
              "--users", str(EXAMPLES / "users.yaml"),
              "--materials", str(EXAMPLES / "materials.yaml"))  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, published: tuple[Path, Path]) -> Path:
    """A unit set up with ``ctgtp edge init``."""
    h = tmp_path / "home"
    assert ok(init(h, *published)).stdout == f"unit UNIT-01 ready in {h}\n"
    return h


@pytest.fixture
def started(home: Path) -> Path:
    """The unit with batch B-7 started by op.alice."""
    ok(at(home, "start", "--batch", "B-7", "--coi", COI, "--user", "op.alice",
          "--password-stdin", stdin=pw("op.alice")))  # fmt: skip
    return home


def test_unsigned_or_altered_mbr_is_refused(tmp_path: Path, published: tuple[Path, Path]) -> None:
    mbr, pub = published
    r = fails(init(tmp_path / "h1", EXAMPLES / "car_t_mbr.yaml", pub), 1)
    assert "master batch record car_t_mbr.yaml refused: not a signed mbr document" in r.stderr
    env = json.loads(mbr.read_text())
    env["content"]["dosing"]["max_total"] = 900000000
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(env))
    r = fails(init(tmp_path / "h2", altered, pub), 1)
    assert "document content was altered after signing" in r.stderr
    assert not (tmp_path / "h2").exists()  # nothing was set up
    ok(init(tmp_path / "h3", mbr, pub))
    r = fails(init(tmp_path / "h3", mbr, pub), 1)
    assert r.stderr == f"Error: {tmp_path / 'h3'} is already initialised for a unit\n"


def test_operator_session(home: Path, tmp_path: Path) -> None:
    r = ok(at(home, "start", "--batch", "B-7", "--coi", COI, "--user", "op.alice",
              "--password-stdin", stdin=pw("op.alice")))  # fmt: skip
    assert r.stdout == (
        f"batch B-7 started for COI {COI} on MBR CAR-T-CARTRIDGE v3\n"
        "current step: receipt/apheresis/coi-scan: Receive apheresis bag and scan its chain-of-identity label\n"
        "  expects scan: patient material\n"
        "  expects signature: performed\n"
        "  expects signature: verified\n"
    )
    bad = fails(at(home, "scan", "--batch", "B-7", "--user", "op.alice", "&/CHA999926ZZZ999"), 1)
    assert "COI &/CHA999926ZZZ999 does not match this batch's COI" in bad.stderr
    good = ok(at(home, "scan", "--batch", "B-7", "--user", "op.alice", COI))
    assert good.stdout.startswith("patient material accepted\ncurrent step: receipt/apheresis/")
    s = ok(at(home, "sign", "--batch", "B-7", "--user", "op.alice", "--meaning", "performed",
              "--password-stdin", stdin=pw("op.alice")))  # fmt: skip
    assert s.stdout.startswith("signed 'performed' by Alice Martin (op.alice) at 20")
    assert s.stdout.endswith("  expects signature: verified\n")
    shown = ok(at(home, "show", "--batch", "B-7"))
    assert shown.stdout == (
        "current step: receipt/apheresis/coi-scan: Receive apheresis bag and scan its chain-of-identity label\n"
        "  expects signature: verified\n"
    )
    status = json.loads(ok(at(home, "status", "--batch", "B-7", "--json")).stdout)
    assert status["batch"]["rejected_scans"] == 1 and len(status["batch"]["deviations"]) == 1
    assert status["sync_lag"] == status["events"] > 0
    text = ok(at(home, "status", "--batch", "B-7", "--check")).stdout
    assert text.startswith(f"unit UNIT-01: {status['events']} events, head {status['head'][:16]}")
    assert (
        "batch B-7 (COI &/CHA999926ABC123): in_progress, step receipt/apheresis/coi-scan, 0 "
        "steps done, 1 deviations, 1 rejected scans, 0 instrument readings\n"
    ) in text
    assert text.endswith("check: state and telemetry summary match a full fold of 0 readings\n")
    out = tmp_path / "export" / "ledger.jsonl"
    ex = ok(at(home, "export", "--out", str(out)))
    assert ex.stdout.startswith(f"exported {status['events']} events (seq 1..")
    key = PublicKey.from_bytes((tmp_path / "export" / "unit.pub").read_bytes())
    v = verify_ledger_chunks([out.read_bytes()], Keyring([key]))
    assert v.event_count == status["events"] and v.unit_id == "UNIT-01"
    verify = ok(invoke("verify", str(out), "--public-key", str(tmp_path / "export" / "unit.pub")))
    assert verify.stdout.startswith("OK ledger.jsonl: unit UNIT-01")


def test_deviations_values_and_corrections_at_the_command_line(started: Path) -> None:
    r = ok(at(started, "deviation", "raise", "--batch", "B-7", "--user", "op.alice", "smudged"))
    assert r.stdout == "deviation DEV-B-7-001 raised\n"
    r = ok(at(started, "deviation", "raise", "--batch", "B-7", "--user", "op.bob", "again"))
    r = ok(at(started, "deviation", "comment", "--batch", "B-7", "--user", "op.bob",
              "DEV-B-7-001", "label re-printed"))  # fmt: skip
    assert r.stdout == "comment added to DEV-B-7-001\n"
    r = ok(at(started, "deviation", "link", "--batch", "B-7", "--user", "op.bob",
              "DEV-B-7-002", "DEV-B-7-001"))  # fmt: skip
    assert r.stdout == "DEV-B-7-002 linked to DEV-B-7-001\n"
    r = fails(at(started, "deviation", "link", "--batch", "B-7", "--user", "op.bob",
                 "DEV-B-7-002", "DEV-X"), 1)  # fmt: skip
    assert r.stderr == "Error: deviation DEV-X does not exist in batch B-7\n"
    ok(at(started, "scan", "--batch", "B-7", "--user", "op.alice", COI))
    for user, meaning in (("op.alice", "performed"), ("op.bob", "verified")):
        ok(at(started, "sign", "--batch", "B-7", "--user", user, "--meaning", meaning,
              "--password-stdin", stdin=pw(user)))  # fmt: skip
    r = ok(at(started, "value", "--batch", "B-7", "--user", "op.alice", "apheresis_volume",
              "501", "mL"))  # fmt: skip
    assert (
        r.stdout == "apheresis_volume = 501 mL recorded (hard limit breached: deviation raised)\n"
    )
    r = ok(at(started, "correct", "--batch", "B-7", "--user", "op.bob", "--step",
              "receipt/apheresis/inspect", "--reason", "misread", "--password-stdin",
              "apheresis_volume", "201", "mL", stdin=pw("op.bob")))  # fmt: skip
    assert r.stdout.startswith("apheresis_volume corrected from 501 to 201 mL by Bob Okafor")
    assert r.stdout.endswith("): misread\n")
    users = ok(at(started, "users")).stdout.splitlines()
    assert users[0] == "op.alice\tAlice Martin\toperator\tactive"
    assert len(users) == 3


def test_the_entry_point_reads_the_password_from_standard_input(home: Path) -> None:
    """The installed entry point as a real process: a password on stdin, a refusal's exit
    code and its one line on stderr."""
    r = ctgtp("edge", "start", "--batch", "B-9", "--coi", COI, "--user", "op.alice",
              "--password-stdin", stdin=pw("op.alice"), home=home)  # fmt: skip
    assert r.returncode == 0 and "batch B-9 started" in r.stdout, r.stderr
    r = ctgtp("edge", "sign", "--batch", "B-9", "--user", "op.bob", "--meaning", "performed",
              "--password-stdin", stdin="not-bobs\n", home=home)  # fmt: skip
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == "Error: wrong password for user op.bob\n"
