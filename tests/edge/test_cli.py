"""`ctgtp edge` driven as an operator would: real subprocesses on a real state directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ebr_core.keys import Keyring, PublicKey
from ebr_core.ledgerfile import verify_ledger_chunks

from .conftest import COI, EXAMPLES


def ctgtp(
    *args: str, stdin: str = "", home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env_args = ["--home", str(home)] if home else []
    cmd = (
        [sys.executable, "-m", "ctgtp", *args[:2], *env_args, *args[2:]]
        if home
        else [sys.executable, "-m", "ctgtp", *args]
    )
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("pub")
    assert ctgtp("keys", "new", "qa.approver", "--out", str(d)).returncode == 0
    out = d / "mbr.signed.json"
    r = ctgtp(
        "edge",
        "mbr-publish",
        str(EXAMPLES / "car_t_mbr.yaml"),
        "--key",
        str(d / "qa.approver.key"),
        "--signer",
        "qa.approver",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert "published CAR-T-CARTRIDGE v3 (13 steps) signed by qa.approver" in r.stdout
    return out, d / "qa.approver.pub", d


def init(home: Path, mbr: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    return ctgtp(
        "edge",
        "init",
        "--unit",
        "UNIT-01",
        "--mbr",
        str(mbr),
        "--publisher-key",
        str(pub),
        "--users",
        str(EXAMPLES / "users.yaml"),
        "--materials",
        str(EXAMPLES / "materials.yaml"),
        home=home,
    )


def test_unsigned_or_altered_mbr_is_refused(
    tmp_path: Path, published: tuple[Path, Path, Path]
) -> None:
    mbr, pub, _ = published
    r = init(tmp_path / "h1", EXAMPLES / "car_t_mbr.yaml", pub)
    assert r.returncode == 1
    assert "master batch record car_t_mbr.yaml refused: not a signed mbr document" in r.stderr
    env = json.loads(mbr.read_text())
    env["content"]["dosing"]["max_total"] = 900000000
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(env))
    r = init(tmp_path / "h2", altered, pub)
    assert r.returncode == 1 and "document content was altered after signing" in r.stderr


def test_operator_session(tmp_path: Path, published: tuple[Path, Path, Path]) -> None:
    mbr, pub, _ = published
    home = tmp_path / "home"
    assert init(home, mbr, pub).returncode == 0
    r = ctgtp(
        "edge",
        "start",
        "--batch",
        "B-7",
        "--coi",
        COI,
        "--user",
        "op.alice",
        "--password-stdin",
        stdin="alice-demo-pass\n",
        home=home,
    )
    assert r.returncode == 0, r.stderr
    assert "current step: receipt/apheresis/coi-scan" in r.stdout
    assert "expects scan: patient material" in r.stdout
    bad = ctgtp(
        "edge", "scan", "--batch", "B-7", "--user", "op.alice", "&/CHA999926ZZZ999", home=home
    )
    assert bad.returncode == 1
    assert "COI &/CHA999926ZZZ999 does not match this batch's COI" in bad.stderr
    ok = ctgtp("edge", "scan", "--batch", "B-7", "--user", "op.alice", COI, home=home)
    assert ok.returncode == 0 and "patient material accepted" in ok.stdout
    s = ctgtp(
        "edge",
        "sign",
        "--batch",
        "B-7",
        "--user",
        "op.alice",
        "--meaning",
        "performed",
        "--password-stdin",
        stdin="alice-demo-pass\n",
        home=home,
    )
    assert s.returncode == 0 and "signed 'performed' by Alice Martin" in s.stdout
    st = ctgtp("edge", "status", "--batch", "B-7", "--json", home=home)
    status = json.loads(st.stdout)
    assert status["batch"]["rejected_scans"] == 1 and len(status["batch"]["deviations"]) == 1
    assert status["sync_lag"] == status["events"] > 0
    checked = ctgtp("edge", "status", "--batch", "B-7", "--check", home=home)
    assert checked.returncode == 0, checked.stderr
    assert "check: state and telemetry summary match a full fold of 0 readings" in checked.stdout
    out = tmp_path / "export" / "ledger.jsonl"
    ex = ctgtp("edge", "export", "--out", str(out), home=home)
    assert ex.returncode == 0, ex.stderr
    key = PublicKey.from_bytes((tmp_path / "export" / "unit.pub").read_bytes())
    v = verify_ledger_chunks([out.read_bytes()], Keyring([key]))
    assert v.event_count == status["events"] and v.unit_id == "UNIT-01"
    verify = ctgtp("verify", str(out), "--public-key", str(tmp_path / "export" / "unit.pub"))
    assert verify.returncode == 0 and verify.stdout.startswith("OK ledger.jsonl: unit UNIT-01")
