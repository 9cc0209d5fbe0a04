"""``witness run`` against a real HTTP static file server (``python -m http.server``) serving
the log's checkpoint and tiles: normal growth, a rewound log, a forked log, a log that cannot
be read."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from ebr_core.keys import UnitSigner
from ebr_core.tlog import Cosigner, Ed25519NoteSigner, TlogError, open_checkpoint
from tests.witness.conftest import ORIGIN, TiledLog, entries
from witness.cli import EXIT_ALERT, EXIT_UNCHECKED, witness


def setup_keys(tmp_path: Path, log_signer: Ed25519NoteSigner, witness_signer: UnitSigner) -> tuple[Path, Path]:
    log_key = tmp_path / "log.vkey"
    log_key.write_text(log_signer.verifier.vkey() + "\n")
    key = tmp_path / "w1.key"
    key.write_bytes(witness_signer.to_pem())
    return log_key, key


def run(url: str, log_key: Path, key: Path, state: Path) -> Result:
    args = ["run", "--log", url, "--log-key", str(log_key), "--key", str(key), "--name", "witness.example/w1"]
    return CliRunner().invoke(witness, [*args, "--state", str(state), "--once", "--timeout", "5"])


def test_growth_rewind_and_fork_over_http(
    tmp_path: Path,
    static_server: tuple[str, Path],
    log_signer: Ed25519NoteSigner,
    witness_signer: UnitSigner,
    cosigner: Cosigner,
) -> None:
    url, www = static_server
    log_key, key = setup_keys(tmp_path, log_signer, witness_signer)
    state = tmp_path / "state"
    log = TiledLog(log_signer, entries(7))
    log.publish(www)

    r = run(url, log_key, key, state)
    assert r.exit_code == 0, r.output
    assert f"cosigned {ORIGIN} size 7" in r.output and "first sight" in r.output

    # Normal growth, across a full tile and into the second tile level.
    for more in (300, 70_000):
        log.add(entries(more, f"group {more}"))
        log.publish(www)
        r = run(url, log_key, key, state)
        assert r.exit_code == 0, r.output
        assert f"size {log.tree.size()}" in r.output and "consistency proof" in r.output
    saved = open_checkpoint((state / "checkpoint").read_bytes(), log_signer.verifier, [cosigner.verifier])
    assert saved.checkpoint.size == 70_307 and saved.witnessed(1)
    cosigned_bytes = (state / "checkpoint").read_bytes()

    # A rewound log: the last entries deleted, the checkpoint re-signed.
    TiledLog(log_signer, log.entries[:70_000]).publish(www)
    r = run(url, log_key, key, state)
    assert r.exit_code == EXIT_ALERT
    assert "ALERT rewound: the log log.example/ebr shows 70000 entries, fewer than the 70307" in r.output
    assert (state / "checkpoint").read_bytes() == cosigned_bytes

    # A fork: one old entry rewritten, the tree regrown past the cosigned size.
    history = list(log.entries)
    history[5] = b"a disposition changed after the fact"
    TiledLog(log_signer, [*history, *entries(50, "after")]).publish(www)
    r = run(url, log_key, key, state)
    assert r.exit_code == EXIT_ALERT
    assert "ALERT split-view: the log's tree of size 70357 does not extend the tree of size 70307" in r.output
    assert (state / "checkpoint").read_bytes() == cosigned_bytes
    kinds = [json.loads(line)["kind"] for line in (state / "alerts.jsonl").read_text().splitlines()]
    assert kinds == ["rewound", "split-view"]
    assert len(list((state / "evidence").iterdir())) == 2

    # The honest log, grown, is still cosigned.
    log.add(entries(3, "honest"))
    log.publish(www)
    r = run(url, log_key, key, state)
    assert r.exit_code == 0, r.output


def test_a_log_that_cannot_be_read_or_checked_is_not_cosigned(
    tmp_path: Path, static_server: tuple[str, Path], log_signer: Ed25519NoteSigner, witness_signer: UnitSigner
) -> None:
    url, www = static_server
    log_key, key = setup_keys(tmp_path, log_signer, witness_signer)
    state = tmp_path / "state"
    r = run(url, log_key, key, state)  # nothing published yet
    assert r.exit_code == EXIT_UNCHECKED
    assert "not cosigned: GET " in r.output and "/log/checkpoint: HTTP 404" in r.output

    log = TiledLog(log_signer, entries(300))
    log.publish(www)
    (www / "tile" / "0" / "001.p" / "44").unlink()
    r = run(url, log_key, key, state)
    assert r.exit_code == EXIT_UNCHECKED
    assert "tile/0/001.p/44 is not available" in r.output

    (www / "checkpoint").write_bytes(b"log.example/ebr\n300\nnot a root\n\n")
    r = run(url, log_key, key, state)
    assert r.exit_code == EXIT_UNCHECKED
    assert "checkpoint was refused: note has no signature lines" in r.output

    r = run("http://127.0.0.1:9/log", log_key, key, state)
    assert r.exit_code == EXIT_UNCHECKED and "ConnectError" in r.output
    assert not (state / "checkpoint").exists()


def test_keys_are_checked_before_anything_is_fetched(
    tmp_path: Path, log_signer: Ed25519NoteSigner, witness_signer: UnitSigner
) -> None:
    log_key, key = setup_keys(tmp_path, log_signer, witness_signer)
    bad = tmp_path / "bad.vkey"
    bad.write_text(log_signer.verifier.vkey().replace("+", "-", 1) + "\n")
    r = run("http://127.0.0.1:9/log", bad, key, tmp_path / "s")
    assert r.exit_code == 1 and "not a log key" in r.output and "is not 8 lowercase hex digits" in r.output
    pub = tmp_path / "log.pub"
    pub.write_bytes(log_signer.verifier.public.to_json())
    r = run("http://127.0.0.1:9/log", pub, key, tmp_path / "s")
    assert r.exit_code == 1 and "give the log's --origin" in r.output
    r = run("http://127.0.0.1:9/log", log_key, log_key, tmp_path / "s")
    assert r.exit_code == 1 and "not a witness key" in r.output


def test_vkey_prints_the_cosignature_key(tmp_path: Path, log_signer: Ed25519NoteSigner, witness_signer: UnitSigner, cosigner: Cosigner) -> None:
    _, key = setup_keys(tmp_path, log_signer, witness_signer)
    r = CliRunner().invoke(witness, ["vkey", "--key", str(key), "--name", "witness.example/w1"])
    assert r.exit_code == 0
    assert r.output.strip() == cosigner.verifier.vkey()


def test_the_running_service_cosigns_growth_and_stops_loudly_on_a_fork(
    tmp_path: Path,
    static_server: tuple[str, Path],
    log_signer: Ed25519NoteSigner,
    witness_signer: UnitSigner,
    cosigner: Cosigner,
) -> None:
    """The witness as a real process polling a real HTTP server (no --once)."""
    url, www = static_server
    log_key, key = setup_keys(tmp_path, log_signer, witness_signer)
    state = tmp_path / "state"
    log = TiledLog(log_signer, entries(7))
    log.publish(www)
    out, err = (tmp_path / "out").open("wb"), (tmp_path / "err").open("wb")
    code = "import sys; from witness.cli import witness; sys.exit(witness(prog_name='witness'))"
    args = ["run", "--log", url, "--log-key", str(log_key), "--key", str(key), "--state", str(state)]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--name", "witness.example/w1", "--interval", "0.1"],
        stdout=out,
        stderr=err,
        cwd=Path(__file__).resolve().parents[2],
    )

    def cosigned_size() -> int | None:
        try:
            data = (state / "checkpoint").read_bytes()
            return open_checkpoint(data, log_signer.verifier, [cosigner.verifier]).checkpoint.size
        except (OSError, ValueError, TlogError):
            return None

    def wait_for(cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not cond():
            assert proc.poll() is None or what == "exit", (tmp_path / "err").read_text()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    try:
        wait_for(lambda: cosigned_size() == 7, "the first cosignature")
        log.add(entries(600, "grown"))
        log.publish(www)
        wait_for(lambda: cosigned_size() == 607, "the cosignature of the grown log")
        history = list(log.entries)
        history[3] = b"rewritten"
        TiledLog(log_signer, [*history, *entries(5, "fork")]).publish(www)
        wait_for(lambda: proc.poll() is not None, "exit")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        out.close()
        err.close()
    assert proc.returncode == EXIT_ALERT
    assert "ALERT split-view: the log's tree of size 612 does not extend" in (tmp_path / "err").read_text()
    assert cosigned_size() == 607
    assert "cosigned log.example/ebr size 607" in (tmp_path / "out").read_text()
