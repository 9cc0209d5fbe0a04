"""The witness's decisions over a log's files (read from memory): growth is cosigned; a
rewound log, a split view and a fork are refused and recorded with the evidence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebr_core.keys import UnitSigner
from ebr_core.tlog import Cosigner, Ed25519NoteSigner, open_checkpoint
from tests.witness.conftest import TiledLog, entries
from witness import Outcome, StateDir, StateError, UncheckableError, Witness
from witness.state import write_atomically


def make_witness(log_signer: Ed25519NoteSigner, cosigner: Cosigner, state: Path) -> Witness:
    t = iter(range(1_790_000_000, 1_790_001_000))
    return Witness(log_signer.verifier, cosigner, StateDir(state), lambda: next(t))


def look(w: Witness, log: TiledLog) -> Outcome:
    files = log.files()
    return w.witness(files["checkpoint"], files.get)


def test_growth_is_checked_and_cosigned(
    tmp_path: Path, log_signer: Ed25519NoteSigner, cosigner: Cosigner
) -> None:
    w = make_witness(log_signer, cosigner, tmp_path)
    log = TiledLog(log_signer, entries(5))
    first = look(w, log)
    assert first.status == "cosigned" and first.previous_size is None
    for more in (1, 250, 800, 70_000):
        log.add(entries(more, f"batch {more}"))
        out = look(w, log)
        assert out.status == "cosigned", out.line()
        assert out.proof_hashes > 0
        saved = open_checkpoint((tmp_path / "checkpoint").read_bytes(), log_signer.verifier, [cosigner.verifier])
        assert saved.checkpoint.size == log.tree.size()
        assert saved.witnessed(1)
    assert "cosigned log.example/ebr size 71056" in out.line()
    again = look(w, log)
    assert again.status == "cosigned" and again.previous_size == log.tree.size()
    assert not (tmp_path / "alerts.jsonl").exists()


def test_a_rewound_log_is_refused(tmp_path: Path, log_signer: Ed25519NoteSigner, cosigner: Cosigner) -> None:
    w = make_witness(log_signer, cosigner, tmp_path)
    assert look(w, TiledLog(log_signer, entries(300))).status == "cosigned"
    before = (tmp_path / "checkpoint").read_bytes()
    out = look(w, TiledLog(log_signer, entries(290)))
    assert out.status == "alert" and out.alert is not None and out.alert.kind == "rewound"
    assert "shows 290 entries, fewer than the 300 already trusted" in out.line()
    assert (tmp_path / "checkpoint").read_bytes() == before
    row = json.loads((tmp_path / "alerts.jsonl").read_text())
    assert row["kind"] == "rewound"
    assert (tmp_path / row["evidence"]).read_text().startswith("log.example/ebr\n290\n")


def test_a_split_view_of_the_same_size_is_refused(
    tmp_path: Path, log_signer: Ed25519NoteSigner, cosigner: Cosigner
) -> None:
    w = make_witness(log_signer, cosigner, tmp_path)
    assert look(w, TiledLog(log_signer, entries(300))).status == "cosigned"
    other = TiledLog(log_signer, [*entries(299), b"a different last entry"])
    out = look(w, other)
    assert out.alert is not None and out.alert.kind == "split-view"
    assert "two trees of size 300" in out.line()


def test_a_fork_that_grows_is_caught_by_the_consistency_proof(
    tmp_path: Path, log_signer: Ed25519NoteSigner, cosigner: Cosigner
) -> None:
    w = make_witness(log_signer, cosigner, tmp_path)
    honest = TiledLog(log_signer, entries(300))
    assert look(w, honest).status == "cosigned"
    history = entries(300)
    history[123] = b"entry 123, rewritten by the administrator"
    fork = TiledLog(log_signer, [*history, *entries(500, "later")])
    out = look(w, fork)
    assert out.alert is not None and out.alert.kind == "split-view"
    assert "does not extend the tree of size 300 already trusted (a fork)" in out.line()
    # Nothing is cosigned after an alert: the honest log, grown, is still consistent.
    honest.add(entries(10, "more"))
    assert look(w, honest).status == "cosigned"


def test_tiles_that_disagree_with_the_checkpoint_on_first_sight(
    tmp_path: Path, log_signer: Ed25519NoteSigner, cosigner: Cosigner
) -> None:
    w = make_witness(log_signer, cosigner, tmp_path)
    log = TiledLog(log_signer, entries(40))
    files = log.files()
    files["tile/0/000.p/40"] = TiledLog(log_signer, entries(40, "other")).files()["tile/0/000.p/40"]
    out = w.witness(files["checkpoint"], files.get)
    assert out.alert is not None and out.alert.kind == "inconsistent"
    assert not (tmp_path / "checkpoint").exists()


def test_what_cannot_be_checked_is_not_cosigned(
    tmp_path: Path, log_signer: Ed25519NoteSigner, cosigner: Cosigner, witness_signer: UnitSigner
) -> None:
    w = make_witness(log_signer, cosigner, tmp_path)
    log = TiledLog(log_signer, entries(300))
    files = log.files()
    with pytest.raises(UncheckableError, match=r"tiles could not be read: tile/0/001\.p/44 is not available"):
        w.witness(files["checkpoint"], {k: v for k, v in files.items() if not k.startswith("tile/0/001")}.get)
    stranger = Ed25519NoteSigner("log.example/ebr", witness_signer)
    forged = TiledLog(stranger, entries(300)).files()
    with pytest.raises(UncheckableError, match="checkpoint was refused: note has no signature by a known key"):
        w.witness(forged["checkpoint"], forged.get)
    other_origin = Ed25519NoteSigner("other.example/log", UnitSigner.from_seed(bytes(range(32)), "log"))
    with pytest.raises(UncheckableError, match="no signature by a known key"):
        w.witness(TiledLog(other_origin, entries(3)).files()["checkpoint"], files.get)
    assert not (tmp_path / "checkpoint").exists()


def test_a_state_file_the_witness_did_not_cosign_is_refused(
    tmp_path: Path, log_signer: Ed25519NoteSigner, cosigner: Cosigner
) -> None:
    w = make_witness(log_signer, cosigner, tmp_path)
    log = TiledLog(log_signer, entries(300))
    # Someone with access to the witness's disk "resets" it to a smaller, uncosigned checkpoint.
    write_atomically(tmp_path / "checkpoint", TiledLog(log_signer, entries(10)).checkpoint().to_bytes())
    with pytest.raises(StateError, match="has no cosignature by this witness"):
        look(w, log)
    (tmp_path / "checkpoint").write_bytes(b"garbage\n")
    with pytest.raises(StateError, match="is not a checkpoint of this log"):
        look(w, log)


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    p = tmp_path / "checkpoint"
    write_atomically(p, b"one")
    write_atomically(p, b"two")
    assert p.read_bytes() == b"two"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["checkpoint"]
