"""Signed notes, checkpoints and cosignatures against the Go sumdb/note and C2SP vectors,
and the strict parser's refusals (each names what was wrong)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ebr_core.keys import PublicKey, UnitSigner
from ebr_core.tlog import (
    Checkpoint,
    CosignatureVerifier,
    Cosigner,
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    NoteFormatError,
    NoteSignatureError,
    SignedNote,
    add_signatures,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
)
from ebr_core.tlog.cosignature import cosignature_timestamp, cosigned_message
from ebr_core.tlog.note import NoteSignature, key_id

V = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "tlog" / "signed_note.json").read_text())
GO = V["go_note"]


def go_signer() -> Ed25519NoteSigner:
    # skey = PRIVATE+KEY+<name>+<id>+base64(0x01 || 32-byte seed)
    _, _, name, _, b64 = GO["skey"].split("+", 4)
    seed = base64.b64decode(b64)[1:]
    return Ed25519NoteSigner(name, UnitSigner.from_seed(seed, name))


def test_signing_reproduces_the_go_note_byte_for_byte() -> None:
    signer = go_signer()
    assert signer.verifier.vkey() == GO["vkey"]
    note = sign_note(GO["text"], [signer])
    assert note.to_bytes().decode() == GO["signed"]


def test_go_vectors_open_with_the_right_keys() -> None:
    peter = Ed25519NoteVerifier.from_vkey(GO["vkey"])
    enoch = Ed25519NoteVerifier.from_vkey(GO["other_vkey"])
    both = GO["signed_by_both"].encode()
    opened = open_note(both, [peter])
    assert [s.name for s in opened.verified] == ["PeterNeumann"]
    assert [s.name for s in opened.unknown] == ["EnochRoot"]
    assert opened.note.text == GO["text"]
    opened = open_note(both, [peter, enoch])
    assert [s.name for s in opened.verified] == ["PeterNeumann", "EnochRoot"]
    with pytest.raises(NoteSignatureError, match="no signature by a known key"):
        open_note(both, [])
    assert SignedNote.parse(both).to_bytes() == both


def test_a_known_key_whose_signature_fails_refuses_the_note() -> None:
    peter = Ed25519NoteVerifier.from_vkey(GO["vkey"])
    sig_line = GO["signed"].split("\n\n")[1]
    tampered = GO["text"] + "\n" + sig_line[:60] + "ABCD" + sig_line[60:]
    with pytest.raises(NoteSignatureError, match="invalid signature by key PeterNeumann\\+c74f20a3"):
        open_note(tampered.encode(), [peter])
    changed_text = GO["signed"].replace("answer", "ANSWER")
    with pytest.raises(NoteSignatureError, match="invalid signature"):
        open_note(changed_text.encode(), [peter])


def test_the_c2sp_example_note_verifies() -> None:
    v = Ed25519NoteVerifier.from_vkey(V["c2sp_note"]["vkey"])
    opened = open_note(V["c2sp_note"]["signed"].encode(), [v])
    assert opened.note.text == "This is an example message.\n"


@pytest.mark.parametrize(
    ("i", "message"),
    [
        (0, "no blank line separating its text from its signatures"),
        (1, "no signature lines after its blank line"),
        (2, "does not end with a newline"),
        (3, "control character '\\\\x01' at character 0"),
        (4, "does not end with a newline"),
        (5, "signature line 2 does not start with an em dash"),
    ],
)
def test_go_malformed_notes_are_refused_with_a_reason(i: int, message: str) -> None:
    with pytest.raises(NoteFormatError, match=message):
        SignedNote.parse(GO["malformed"][i].encode())


def test_more_malformed_notes() -> None:
    sig = GO["signed"].split("\n\n")[1]
    cases = {
        b"\xff" + GO["signed"].encode(): "not valid UTF-8 \\(byte 0\\)",
        (GO["text"] + "\n" + sig.replace("x08go", "x08g!")).encode(): "not valid standard base64",
        (GO["text"] + "\n" + "— PeterNeumann AAAA\n").encode(): "the signature is 3 bytes",
        (GO["text"] + "\n" + sig.replace("Neumann ", "Neumann  ")).encode(): "got 3 fields",
        (GO["text"] + "\n" + sig.replace("PeterNeumann", "Peter+Neumann")).encode(): "contains '\\+'",
        (GO["text"] + "\n" + sig.replace("PeterNeumann", "")).encode(): "key name must not be empty",
        (GO["text"] + "\n" + sig * 101).encode(): "101 signature lines, more than 100",
        # Padding bits that are not zero: another spelling of the same bytes.
        (GO["text"] + "\n" + sig.replace("nAM=", "nAN=")).encode(): "not canonical base64",
    }
    for data, message in cases.items():
        with pytest.raises(NoteFormatError, match=message):
            SignedNote.parse(data)


def test_verifier_keys_are_read_strictly() -> None:
    for bad, message in [
        (GO["bad_vkeys"][0], "public key is not canonical base64"),
        (GO["vkey"] + "AAAA", "an Ed25519 public key is 32 bytes, got 35"),
        (GO["bad_vkeys"][1], "signature type 0x65, expected 0x01"),
        (GO["vkey"].replace("c74f20a3", "c74f20a4"), "does not match its name and key \\(expected c74f20a3\\)"),
        (GO["vkey"].replace("c74f20a3", "C74F20A3"), "not 8 lowercase hex digits"),
        ("PeterNeumann+c74f20a3", "2 '\\+'-separated parts, expected 3"),
    ]:
        with pytest.raises(NoteFormatError, match=message):
            Ed25519NoteVerifier.from_vkey(bad)


def test_the_c2sp_checkpoint_example_parses_and_its_cosignature_time_is_read() -> None:
    note = SignedNote.parse(V["c2sp_checkpoint"]["signed"].encode())
    cp = Checkpoint.parse_text(note.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert cp.text() == note.text
    assert cosignature_timestamp(note.signatures[1]) == V["c2sp_checkpoint"]["cosignature_time"]
    td = V["transparency_dev_cosignature_time"]
    raw = base64.b64decode(td["signature_b64"])
    assert cosignature_timestamp(NoteSignature("w", 0, raw[4:])) == td["time"]


@pytest.fixture()
def log_signer() -> Ed25519NoteSigner:
    return Ed25519NoteSigner("log.example/ebr", UnitSigner.from_seed(bytes(range(32)), "log"))


@pytest.fixture()
def cosigner() -> Cosigner:
    return Cosigner("witness.example/w1", UnitSigner.from_seed(bytes(range(7, 39)), "w1"))


def test_checkpoint_sign_open_and_cosign(log_signer: Ed25519NoteSigner, cosigner: Cosigner) -> None:
    cp = Checkpoint("log.example/ebr", 12, bytes(range(32)), ("ext line",))
    note = sign_checkpoint(cp, log_signer)
    assert note.text == f"log.example/ebr\n12\n{base64.b64encode(bytes(range(32))).decode()}\next line\n"
    opened = open_checkpoint(note.to_bytes(), log_signer.verifier, [cosigner.verifier])
    assert opened.checkpoint == cp
    assert not opened.witnessed(1)
    cosigned = add_signatures(note, [cosigner.cosign(note.text, 1_790_000_000)])
    opened = open_checkpoint(cosigned.to_bytes(), log_signer.verifier, [cosigner.verifier])
    assert opened.witnessed(1) and not opened.witnessed(2)
    assert opened.cosignatures[0].timestamp == 1_790_000_000
    # Without the witness configured its line is ignored, as the spec asks.
    assert open_checkpoint(cosigned.to_bytes(), log_signer.verifier).cosignatures == ()


def test_cosignature_is_over_the_spec_message(log_signer: Ed25519NoteSigner, cosigner: Cosigner) -> None:
    note = sign_checkpoint(Checkpoint("log.example/ebr", 3, bytes(32)), log_signer)
    sig = cosigner.cosign(note.text, 1679315147)
    assert sig.key_id == key_id("witness.example/w1", 0x04, cosigner.verifier.public.raw)
    assert sig.signature[:8] == (1679315147).to_bytes(8, "big")
    msg = cosigned_message(note.text, 1679315147)
    assert msg == b"cosignature/v1\ntime 1679315147\n" + note.text.encode()
    assert cosigner.verifier.public.verify(sig.signature[8:], msg)
    # The same key as a plain Ed25519 note key has another ID: the two types cannot be confused.
    assert Ed25519NoteVerifier(cosigner.name, cosigner.verifier.public).key_id != sig.key_id
    assert CosignatureVerifier.from_vkey(cosigner.verifier.vkey()).key_id == sig.key_id


def test_a_checkpoint_must_be_signed_by_the_log(log_signer: Ed25519NoteSigner, cosigner: Cosigner) -> None:
    note = sign_checkpoint(Checkpoint("log.example/ebr", 3, bytes(32)), log_signer)
    only_witness = SignedNote(note.text, (cosigner.cosign(note.text, 5),))
    with pytest.raises(NoteSignatureError, match=r"not signed by the log's key log\.example/ebr"):
        open_checkpoint(only_witness.to_bytes(), log_signer.verifier, [cosigner.verifier])
    other = Ed25519NoteSigner("log.example/ebr", UnitSigner.from_seed(bytes(32), "x"))
    forged = sign_checkpoint(Checkpoint("log.example/ebr", 3, bytes(32)), other)
    with pytest.raises(NoteSignatureError, match="no signature by a known key"):
        open_checkpoint(forged.to_bytes(), log_signer.verifier)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("o\n1\n", "has 2 lines, expected at least 3"),
        ("\n1\n" + base64.b64encode(bytes(32)).decode() + "\n", "origin line \\(line 1\\) is empty"),
        ("o\n01\n" + base64.b64encode(bytes(32)).decode() + "\n", "'01' is not a decimal number"),
        ("o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n", "'-1' is not a decimal number"),
        ("o\n١\n" + base64.b64encode(bytes(32)).decode() + "\n", "is not a decimal number"),
        ("o\n99999999999999999999\n" + base64.b64encode(bytes(32)).decode() + "\n", "too large"),
        ("o\n9223372036854775808\n" + base64.b64encode(bytes(32)).decode() + "\n", "outside \\[0, 2\\*\\*63 - 1\\]"),
        ("o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", "is 31 bytes, expected 32"),
        ("o\n1\nnot base64!\n", "not valid standard base64"),
        ("o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\nx\n", "extension line \\(line 4\\) is empty"),
        ("o\n1\n" + base64.b64encode(bytes(32)).decode(), "must end with a newline"),
    ],
)
def test_malformed_checkpoint_bodies(text: str, message: str) -> None:
    with pytest.raises(NoteFormatError, match=message):
        Checkpoint.parse_text(text)


def test_public_key_round_trip_through_vkey() -> None:
    pk = PublicKey(UnitSigner.from_seed(bytes(32), "x").public.raw)
    v = Ed25519NoteVerifier("a.example/log", pk)
    assert Ed25519NoteVerifier.from_vkey(v.vkey() + "\n").public == pk
