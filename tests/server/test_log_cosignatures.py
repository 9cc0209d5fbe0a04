"""Witnesses push their cosignatures back to the server (``ctgtp witness run --push`` ->
``POST /v1/log/cosignatures``); the server keeps those of configured witnesses that verify over
a checkpoint it signed, serves them with the checkpoint, and says which checkpoint reached the
quorum (``GET /v1/log/witnessed``).  A real server over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ctgtp.core_cli import verify as verify_cli
from ebr_core.keys import UnitSigner
from ebr_core.tlog.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ebr_core.tlog.cosignature import Cosigner
from ebr_core.tlog.note import Ed25519NoteSigner, Ed25519NoteVerifier, NoteSignature, SignedNote
from ebr_core.tlog.tlogproof import TlogProof
from edge.logwatch import LogWatch
from server.db import make_engine
from server.log import records, store
from server.log.tables import LogCosignature
from server.log.verify import Finding, Report, verify_log
from server.settings import Settings
from witness.cli import witness as witness_cli

from .conftest import BACKENDS, Server, make_ledger, server_settings, start_server

W1 = "regulator.example/w1"
W2 = "region-b.example/w2"


class Witness:
    def __init__(self, name: str, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.signer = UnitSigner.generate(name.replace("/", "-"))
        self.key = tmp / "w.key"
        self.key.write_bytes(self.signer.to_pem())
        self.cosigner = Cosigner(name, self.signer)
        self.state = tmp / "state"

    def run(self, server: Server, *more: str) -> Result:
        vkey = self.state.parent / "log.vkey"
        vkey.write_text(httpx.get(server.url + "/v1/log/vkey").text)
        return CliRunner().invoke(witness_cli, [
            "run", "--log", server.url + "/v1/log", "--log-key", str(vkey), "--key",
            str(self.key), "--name", self.name, "--state", str(self.state), "--once", *more,
        ])  # fmt: skip


@pytest.fixture(params=BACKENDS)
def witnessed_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Server, Witness, Witness]]:
    """A server configured with two witnesses and a quorum of one."""
    w1, w2 = Witness(W1, tmp_path / "w1"), Witness(W2, tmp_path / "w2")
    settings = server_settings(
        request.param, request, tmp_path,
        log_witnesses=[w1.cosigner.verifier.vkey(), w2.cosigner.verifier.vkey()],
        log_witness_quorum=1,
    )  # fmt: skip
    with start_server(settings) as srv:
        yield srv, w1, w2


def grow(server: Server, n: int) -> None:
    engine = make_engine(server.settings.database_url)
    try:
        with Session(engine) as db:
            start = store.head(db).size
            store.append_leaves(db, [
                records.segment_entry("U-C", start + i + 1, start + i + 1, "cd" * 32).to_bytes()
                for i in range(n)
            ])  # fmt: skip
            db.commit()
    finally:
        engine.dispose()


def stored(server: Server) -> int:
    engine = make_engine(server.settings.database_url)
    try:
        with Session(engine) as db:
            return int(db.scalar(select(func.count()).select_from(LogCosignature)) or 0)
    finally:
        engine.dispose()


def log_key(server: Server) -> Ed25519NoteVerifier:
    return Ed25519NoteVerifier.from_vkey(httpx.get(server.url + "/v1/log/vkey").text)


def served(server: Server, *witnesses: Witness) -> tuple[Checkpoint, list[str]]:
    opened = open_checkpoint(
        httpx.get(server.url + "/v1/log/checkpoint").content,
        log_key(server),
        [w.cosigner.verifier for w in witnesses],
    )
    return opened.checkpoint, sorted(c.name for c in opened.cosignatures)


def push(server: Server, body: bytes) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/log/cosignatures", content=body, headers={"Content-Type": "text/plain"}
    )


def test_a_pushed_cosignature_is_served_with_its_checkpoint_and_counted(
    witnessed_server: tuple[Server, Witness, Witness], tmp_path: Path
) -> None:
    server, w1, w2 = witnessed_server
    grow(server, 5)
    assert served(server, w1, w2)[1] == []  # a new checkpoint: no cosignature yet
    before = httpx.get(server.url + "/v1/log/witnessed").json()
    assert before["size"] is None and before["latest_size"] == 5
    assert before["latest_witnessed"] is False and before["quorum"] == 1

    r = w1.run(server, "--push")
    assert r.exit_code == 0, r.output
    assert "pushed the cosignature of size 5" in r.output
    cp, names = served(server, w1, w2)
    assert cp.size == 5 and names == [W1]
    w = httpx.get(server.url + "/v1/log/witnessed").json()
    assert (w["size"], w["cosigned_by"], w["latest_witnessed"]) == (5, [W1], True)
    assert w["witnesses"] == [W1, W2]

    # Idempotent: the same cosignature again is kept once.
    again = push(server, (w1.state / "checkpoint").read_bytes())
    assert again.status_code == 200, again.text
    assert again.json() == {"size": 5, "witnesses": [W1], "new": []}
    assert stored(server) == 1

    # The proof file carries the cosignature: the auditor's verify counts it.
    proof = httpx.get(server.url + "/v1/log/proof/2.tlog-proof")
    assert proof.status_code == 200
    pf = tmp_path / "leaf2.tlog-proof"
    pf.write_bytes(proof.content)
    assert any(s.name == W1 for s in TlogProof.parse(proof.content).checkpoint.signatures)
    entry = tmp_path / "leaf2.entry"
    entry.write_bytes(base64.b64decode(
        httpx.get(server.url + "/v1/log/proof/inclusion", params={"index": 2, "size": 5})
        .json()["leaf"]
    ))  # fmt: skip
    lk, wk = tmp_path / "log.vkey", tmp_path / "w1.vkey"
    lk.write_text(log_key(server).vkey())
    wk.write_text(w1.cosigner.verifier.vkey())
    v = CliRunner().invoke(verify_cli, [
        "--log-checkpoint", str(pf), "--entry", str(entry), "--log-key", str(lk),
        "--witness-key", str(wk),
    ])  # fmt: skip
    assert v.exit_code == 0, v.output
    assert f"witnessed: cosigned by {W1}" in v.output

    # The tree grows: the new checkpoint is unwitnessed until a witness pushes again.
    grow(server, 3)
    cp, names = served(server, w1, w2)
    assert cp.size == 8 and names == []
    w = httpx.get(server.url + "/v1/log/witnessed").json()
    assert (w["size"], w["latest_size"], w["latest_witnessed"]) == (5, 8, False)
    assert w2.run(server, "--push").exit_code == 0
    assert w1.run(server, "--push").exit_code == 0
    assert served(server, w1, w2)[1] == sorted([W1, W2])
    w = httpx.get(server.url + "/v1/log/witnessed").json()
    assert (w["size"], w["cosigned_by"], w["latest_witnessed"]) == (8, sorted([W1, W2]), True)


def test_an_unknown_witness_is_refused_403_and_nothing_is_kept(
    witnessed_server: tuple[Server, Witness, Witness], tmp_path: Path
) -> None:
    server, w1, _ = witnessed_server
    grow(server, 2)
    stranger = Witness("stranger.example/w9", tmp_path / "w9")
    r = stranger.run(server, "--push")
    assert r.exit_code == 1, r.output
    assert "HTTP 403" in r.output and "stranger.example/w9" in r.output
    raw = push(server, (stranger.state / "checkpoint").read_bytes())
    assert raw.status_code == 403
    assert raw.json()["type"].endswith("/unknown-witness")
    assert stored(server) == 0 and served(server, w1)[1] == []


def _cosigned(server: Server, w: Witness, text: str | None = None) -> SignedNote:
    note = SignedNote.parse(httpx.get(server.url + "/v1/log/checkpoint").content)
    t = note.text if text is None else text
    return SignedNote(t, (*note.signatures, w.cosigner.cosign(t, 1_800_000_000)))


def test_a_forged_cosignature_is_refused_422(
    witnessed_server: tuple[Server, Witness, Witness],
) -> None:
    server, w1, _ = witnessed_server
    grow(server, 4)
    good = _cosigned(server, w1)
    sig = good.signatures[-1]
    bad = NoteSignature(sig.name, sig.key_id, sig.signature[:20] + bytes([sig.signature[20] ^ 1])
                        + sig.signature[21:])  # fmt: skip
    r = push(server, SignedNote(good.text, (*good.signatures[:-1], bad)).to_bytes())
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("/cosignature-refused")
    assert "does not verify" in r.json()["detail"] and W1 in r.json()["detail"]
    # Another witness's key under w1's name and key ID does not verify either.
    other = Cosigner(W1, UnitSigner.generate("x")).cosign(good.text, 1_800_000_000)
    impostor = NoteSignature(W1, sig.key_id, other.signature)
    assert push(server, SignedNote(good.text, (impostor,)).to_bytes()).status_code == 422
    assert stored(server) == 0 and served(server, w1)[1] == []
    assert push(server, good.to_bytes()).status_code == 200  # the genuine one is taken
    assert served(server, w1)[1] == [W1]


def test_a_checkpoint_the_server_never_signed_is_refused_422(
    witnessed_server: tuple[Server, Witness, Witness],
) -> None:
    server, w1, _ = witnessed_server
    grow(server, 3)
    cp = Checkpoint.parse_text(
        SignedNote.parse(httpx.get(server.url + "/v1/log/checkpoint").content).text
    )
    # Same size, another root: a view the server did not sign.
    forked = Checkpoint(cp.origin, cp.size, bytes(32)).text()
    r = push(server, _cosigned(server, w1, forked).to_bytes())
    assert r.status_code == 422, r.text
    assert "root" in r.json()["detail"] and "signed root" in r.json()["detail"]
    # A size it never signed (signed by a key of the attacker's, cosigned by the real witness).
    evil = Ed25519NoteSigner(cp.origin, UnitSigner.generate("evil"))
    fake = sign_checkpoint(Checkpoint(cp.origin, 99, bytes(32)), evil)
    note = SignedNote(fake.text, (*fake.signatures, w1.cosigner.cosign(fake.text, 1)))
    r = push(server, note.to_bytes())
    assert r.status_code == 422 and "never signed a checkpoint of size 99" in r.json()["detail"]
    # Another log's origin, and a body that is not a note.
    other = Checkpoint("other.example/log", cp.size, cp.root).text()
    r = push(server, _cosigned(server, w1, other).to_bytes())
    assert r.status_code == 422 and "origin" in r.json()["detail"]
    r = push(server, b"not a note")
    assert r.status_code == 422 and "not a cosigned checkpoint note" in r.json()["detail"]
    assert stored(server) == 0 and served(server, w1)[1] == []


def test_a_witness_key_that_does_not_parse_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"log_witnesses\[0\].*not a witness verifier key"):
        Settings(data_dir=tmp_path, log_witnesses=["w1+0000+AAAA"])
    signer = Cosigner(W1, UnitSigner.generate("w")).verifier.vkey()
    with pytest.raises(ValidationError, match="log_witness_quorum 2"):
        Settings(data_dir=tmp_path, log_witnesses=[signer], log_witness_quorum=2)
    long = Cosigner("w" * 201, UnitSigner.generate("w")).verifier.vkey()
    with pytest.raises(ValidationError, match="longer than 200"):
        Settings(data_dir=tmp_path, log_witnesses=[long])
    # a log key (type 0x01) is not a witness key (type 0x04)
    logk = Ed25519NoteVerifier(W1, UnitSigner.generate("l").public).vkey()
    with pytest.raises(ValidationError, match="expected 0x04"):
        Settings(data_dir=tmp_path, log_witnesses=[logk])


def _verify(server: Server, w: Witness, require: bool = False) -> Report:
    engine = make_engine(server.settings.database_url)
    try:
        with Session(engine) as db:
            return verify_log(
                db, log_key(server), witnesses=[w.cosigner.verifier], quorum=1,
                require_witnessed=require,
            )  # fmt: skip
    finally:
        engine.dispose()


def wit(rep: Report) -> list[Finding]:
    return [f for f in rep.findings if f.part == "witness"]


def test_server_log_verify_shows_the_latest_checkpoint_unwitnessed_below_the_quorum(
    witnessed_server: tuple[Server, Witness, Witness],
) -> None:
    server, w1, _ = witnessed_server
    grow(server, 3)
    httpx.get(server.url + "/v1/log/checkpoint")  # signed
    # (the leaves grown here name segments the server does not hold: only the witness part)
    rep = _verify(server, w1)
    assert wit(rep) == [] and not rep.witnessed
    assert "latest checkpoint size 3 unwitnessed: 0 of the 1" in rep.witness_line()
    strict = _verify(server, w1, require=True)
    assert [f.detail for f in wit(strict)] == [strict.witness_line()]
    assert w1.run(server, "--push").exit_code == 0
    rep = _verify(server, w1, require=True)
    assert wit(rep) == [] and rep.witnessed and rep.witness_line() == (
        f"latest checkpoint size 3 witnessed by 1 ({W1})"
    )
    assert rep.to_json()["witnessed_by"] == [W1]
    # A cosignature row written into the database behind the server's back does not verify.
    cp = SignedNote.parse(httpx.get(server.url + "/v1/log/checkpoint").content)
    forged = w1.cosigner.cosign(cp.text + "x\n", 5).line().rstrip("\n")
    engine = make_engine(server.settings.database_url)
    try:
        with Session(engine) as db:
            db.add(LogCosignature(size=3, witness_name=W1, line=forged,
                                  received_at=datetime.now(UTC)))  # fmt: skip
            db.commit()
    finally:
        engine.dispose()
    rep = _verify(server, w1)
    assert [f.detail for f in wit(rep)] == [
        f"cosignature by {W1} of checkpoint 3 does not verify under the witness's key"
    ]


def test_the_units_log_check_says_witnessed_by_n_or_unwitnessed(
    witnessed_server: tuple[Server, Witness, Witness], tmp_path: Path
) -> None:
    server, w1, w2 = witnessed_server
    grow(server, 3)
    led = make_ledger(tmp_path / "unit.db", UnitSigner.generate("UNIT-W"), groups=1, per_group=1)

    def look(**kw: Any) -> LogWatch:
        def no_proof(old: int, new: int) -> list[bytes]:
            raise AssertionError("the tree did not grow")

        w = LogWatch(led, server.key, server.url, no_proof, **kw)
        w.latest(httpx.get(server.url + "/v1/log/checkpoint").text)
        assert not w.alerts, w.summary()
        return w

    keys = [w1.cosigner.verifier, w2.cosigner.verifier]
    assert look(witnesses=keys).summary().endswith(
        "; unwitnessed (0 of the 1 witness cosignatures required)"
    )
    assert look().summary().endswith("; unwitnessed")
    assert w1.run(server, "--push").exit_code == 0
    assert look(witnesses=keys).summary().endswith(f"; witnessed by 1 ({W1})")
    assert look(witnesses=keys, quorum=2).summary().endswith(
        "; unwitnessed (1 of the 2 witness cosignatures required)"
    )
    # Without witness keys the unit counts the lines but cannot vouch for them.
    assert look().summary().endswith(f"; 1 cosignature(s) ({W1}), not verified: "
                                     "no witness keys configured")  # fmt: skip
    # A cosignature by a key the unit does not know does not count.
    stranger = Cosigner(W1, UnitSigner.generate("s")).verifier
    assert "unwitnessed (0 of the 1" in look(witnesses=[stranger]).summary()
