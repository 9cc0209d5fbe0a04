"""``witness run --push`` against a log that does not take cosignatures (a static file server:
POST is not supported): the cosignature is kept in the state directory, the witness says it
was not pushed and exits 1 with ``--once``; without ``--push`` nothing is posted."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ebr_core.keys import UnitSigner
from ebr_core.tlog import Cosigner, Ed25519NoteSigner, open_checkpoint
from tests.witness.conftest import ORIGIN, TiledLog, entries
from witness.cli import EXIT_UNCHECKED, witness


def test_a_push_the_log_refuses_keeps_the_cosignature_and_says_so(
    tmp_path: Path,
    static_server: tuple[str, Path],
    log_signer: Ed25519NoteSigner,
    witness_signer: UnitSigner,
    cosigner: Cosigner,
) -> None:
    url, www = static_server
    log_key = tmp_path / "log.vkey"
    log_key.write_text(log_signer.verifier.vkey() + "\n")
    key = tmp_path / "w1.key"
    key.write_bytes(witness_signer.to_pem())
    state = tmp_path / "state"
    TiledLog(log_signer, entries(5)).publish(www)
    args = ["run", "--log", url, "--log-key", str(log_key), "--key", str(key),
            "--name", "witness.example/w1", "--state", str(state), "--once", "--timeout", "5"]  # fmt: skip
    r = CliRunner().invoke(witness, [*args, "--push"])
    assert r.exit_code == EXIT_UNCHECKED, r.output
    assert f"cosigned {ORIGIN} size 5" in r.output
    assert f"not pushed: POST {url}/cosignatures: HTTP 501" in r.output
    saved = open_checkpoint((state / "checkpoint").read_bytes(), log_signer.verifier,
                            [cosigner.verifier])  # fmt: skip
    assert saved.checkpoint.size == 5 and saved.witnessed(1)
    r = CliRunner().invoke(witness, args)  # no --push: nothing posted
    assert r.exit_code == 0 and "push" not in r.output, r.output
