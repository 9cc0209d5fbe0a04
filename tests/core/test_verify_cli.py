"""`ctgtp verify` and `ctgtp keys new` as an auditor runs them: a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ebr_core.keys import UnitSigner

from .conftest import ledger_bytes, make_ledger


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctgtp", *args], capture_output=True, text=True, check=False
    )


def test_verify_ok_and_tampered(tmp_path: Path, signer: UnitSigner) -> None:
    ledger = tmp_path / "ledger.jsonl"
    pub = tmp_path / "unit.pub"
    ledger.write_bytes(ledger_bytes(make_ledger(signer, 5, every=2)))
    pub.write_bytes(signer.public.to_json())

    ok = run("verify", str(ledger), "--public-key", str(pub))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK ledger.jsonl: unit UNIT-A, 5 events (seq 1..5), 3 checkpoints")

    lines = ledger.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"i":2', b'"i":7')
    ledger.write_bytes(b"\n".join(lines))
    bad = run("verify", str(ledger), "--public-key", str(pub))
    assert bad.returncode == 1
    assert bad.stderr.startswith("INVALID ledger.jsonl: line 4 (seq 3): content does not match")
    assert "Traceback" not in bad.stderr


def test_verify_with_wrong_key_and_bad_key_file(tmp_path: Path, signer: UnitSigner) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_bytes(ledger_bytes(make_ledger(signer, 2, every=2)))
    other = tmp_path / "other.pub"
    other.write_bytes(UnitSigner.from_seed(bytes(32), "UNIT-A").public.to_json())
    r = run("verify", str(ledger), "--public-key", str(other))
    assert r.returncode == 1
    assert "line 3 (seq 2): checkpoint is signed by key" in r.stderr
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    r = run("verify", str(ledger), "--public-key", str(junk))
    assert r.returncode == 1
    assert "public key: public key file is neither a PEM key nor a ctgtp JSON key" in r.stderr


def test_keys_new_then_verify_with_pem_public_key(tmp_path: Path) -> None:
    r = run("keys", "new", "UNIT-Z", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    signer = UnitSigner.from_pem((tmp_path / "UNIT-Z.key").read_bytes(), "UNIT-Z")
    assert (tmp_path / "UNIT-Z.key").stat().st_mode & 0o777 == 0o600
    ledger = tmp_path / "l.jsonl"
    ledger.write_bytes(ledger_bytes(make_ledger(signer, 3, every=3)))
    r = run("verify", str(ledger), "--public-key", str(tmp_path / "UNIT-Z.pub"), "--json")
    assert r.returncode == 0, r.stderr
    assert '"valid":true' in r.stdout and '"events":3' in r.stdout
    again = run("keys", "new", "UNIT-Z", "--out", str(tmp_path))
    assert again.returncode == 1 and "refusing to overwrite a private key" in again.stderr
