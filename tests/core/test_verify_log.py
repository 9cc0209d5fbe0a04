"""``ctgtp verify --log-checkpoint``: an auditor proves offline that an exported ledger's segment,
or a QA decision's entry, is in the server's transparency log (a .tlog-proof file, the log's
key, the witnesses' keys), and is told by name what did not match."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ctgtp.core_cli import verify
from ebr_core.keys import UnitSigner
from ebr_core.tlog import (
    Checkpoint,
    Cosigner,
    Ed25519NoteSigner,
    EntryKind,
    LogEntry,
    MerkleTree,
    add_signatures,
    leaf_hash,
    make_tlog_proof,
    sign_checkpoint,
)
from edge.export import export_ledger
from tests.server.conftest import make_ledger

ORIGIN = "ebr.test/log"


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        unit = UnitSigner.generate("UNIT-V")
        led = make_ledger(tmp / "edge.db", unit, groups=3, per_group=5)
        self.ledger = tmp / "ledger.jsonl"
        v = export_ledger(led, self.ledger, tmp / "unit.pub")
        self.head_seq, self.head_hash = v.head_seq, v.head_hash
        self.hash6 = led.hash_at(6) or ""
        led.close()
        self.server = UnitSigner.generate("server")
        (tmp / "server.pub").write_bytes(self.server.public.to_json())
        self.log_signer = Ed25519NoteSigner(ORIGIN, self.server)
        (tmp / "log.vkey").write_text(self.log_signer.verifier.vkey() + "\n")
        self.w1 = Cosigner("regulator.test/w1", UnitSigner.generate("w1"))
        (tmp / "w1.vkey").write_text(self.w1.verifier.vkey() + "\n")
        self.w2 = Cosigner("site-b.test/w2", UnitSigner.generate("w2"))
        (tmp / "w2.vkey").write_text(self.w2.verifier.vkey() + "\n")
        # The log: other entries, the unit's two segments (1..6 and 7..head), a disposition.
        self.entries = [f"ctgtp/tlog-entry/v1\0other {i}".encode() for i in range(5)]
        self.seg1 = segment("UNIT-V", 1, 6, self.hash6)
        self.seg2 = segment("UNIT-V", 7, self.head_seq, self.head_hash)
        self.decision = LogEntry(
            EntryKind.DISPOSITION,
            {"batch_id": "B-1", "disposition": "released", "content_hash": "c" * 64},
        ).to_bytes()
        self.entries += [self.seg1, b"ctgtp/tlog-entry/v1\0between", self.seg2, self.decision]
        self.tree = MerkleTree([leaf_hash(e) for e in self.entries])

    def proof(self, entry: bytes, *, cosign: tuple[Cosigner, ...] = (), name: str = "p") -> Path:
        note = sign_checkpoint(
            Checkpoint(ORIGIN, self.tree.size(), self.tree.root()), self.log_signer
        )
        note = add_signatures(note, [c.cosign(note.text, 1_790_000_000) for c in cosign])
        p = make_tlog_proof(self.tree, self.entries.index(entry), note)
        path = self.tmp / f"{name}.tlog-proof"
        path.write_bytes(p.to_bytes())
        return path

    def run(self, *args: str | Path, ledger: bool = True) -> Result:
        argv = [str(self.ledger), "--public-key", str(self.tmp / "unit.pub")] if ledger else []
        return CliRunner().invoke(verify, [*argv, *map(str, args)])


def segment(unit: str, first: int, last: int, head: str) -> bytes:
    fields: dict[str, str | int] = {
        "unit_id": unit,
        "first_seq": first,
        "last_seq": last,
        "head_hash": head,
    }
    return LogEntry(EntryKind.SEGMENT, fields).to_bytes()


@pytest.fixture
def s(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_a_ledgers_segments_are_found_and_proven(s: Setup) -> None:
    for seg, first, last in ((s.seg2, 7, s.head_seq), (s.seg1, 1, 6)):
        r = s.run(
            "--log-checkpoint", s.proof(seg, cosign=(s.w1,)),
            "--log-key", s.tmp / "log.vkey", "--witness-key", s.tmp / "w1.vkey",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        assert f"OK {s.ledger.name}" in r.output
        assert f"first_seq {first}" in r.output and f"last_seq {last}" in r.output
        assert f"is leaf {s.entries.index(seg)} of {ORIGIN}, tree size 9" in r.output
        assert "witnessed: cosigned by regulator.test/w1" in r.output


def test_too_few_cosignatures_show_unwitnessed(s: Setup) -> None:
    p = s.proof(s.seg2, cosign=(s.w1,))
    r = s.run("--log-checkpoint", p, "--log-key", s.tmp / "log.vkey",
              "--witness-key", s.tmp / "w1.vkey", "--witness-key", s.tmp / "w2.vkey",
              "--quorum", "2")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "UNWITNESSED: 1 of the 2 witness cosignatures required" in r.output
    r = s.run("--log-checkpoint", p, "--log-key", s.tmp / "log.vkey",
              "--witness-key", s.tmp / "w2.vkey", "--json")  # fmt: skip
    doc = json.loads(r.output.strip().splitlines()[-1])
    assert doc["valid"] and doc["witnessed"] is False and doc["cosigned_by"] == []
    assert doc["entry"]["kind"] == "segment" and doc["entry"]["last_seq"] == s.head_seq


def test_a_qa_decision_entry_alone_and_the_servers_public_key(s: Setup) -> None:
    p = s.proof(s.decision)
    (s.tmp / "decision.entry").write_bytes(s.decision)
    r = s.run("--log-checkpoint", p, "--log-key", s.tmp / "server.pub",
              "--entry", s.tmp / "decision.entry", ledger=False)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "disposition (batch_id B-1, content_hash cccc" in r.output
    assert "disposition released" in r.output
    # The JSON answer of GET /v1/log/proof/inclusion works as the entry too.
    doc = {"index": 8, "size": 9, "leaf": base64.b64encode(s.decision).decode(), "proof": []}
    (s.tmp / "inclusion.json").write_text(json.dumps(doc))
    r = s.run("--log-checkpoint", p, "--log-key", s.tmp / "log.vkey",
              "--entry", s.tmp / "inclusion.json", ledger=False)  # fmt: skip
    assert r.exit_code == 0, r.output
    # A changed decision is not the logged one.
    changed = s.decision.replace(b"released", b"rejected")
    (s.tmp / "changed.entry").write_bytes(changed)
    r = s.run("--log-checkpoint", p, "--log-key", s.tmp / "log.vkey",
              "--entry", s.tmp / "changed.entry", ledger=False)  # fmt: skip
    assert r.exit_code == 1
    assert "INVALID log proof: leaf: the disposition entry is not leaf 8 of" in r.output


def test_refusals_name_what_did_not_match(s: Setup) -> None:
    p = s.proof(s.seg2)
    # Another key than the log's.
    other = Ed25519NoteSigner(ORIGIN, UnitSigner.generate("rogue"))
    (s.tmp / "rogue.vkey").write_text(other.verifier.vkey())
    r = s.run("--log-checkpoint", p, "--log-key", s.tmp / "rogue.vkey")
    assert r.exit_code == 1 and "checkpoint: ebr.test/log size 9 is not signed by the log's key" in r.output
    # A segment entry of this unit whose head hash is not the ledger's.
    forged = segment("UNIT-V", 7, s.head_seq, "ab" * 32)
    (s.tmp / "forged.entry").write_bytes(forged)
    r = s.run("--log-checkpoint", p, "--log-key", s.tmp / "log.vkey", "--entry", s.tmp / "forged.entry")
    assert r.exit_code == 1
    assert f"the segment's head hash {'ab' * 32} is not ledger.jsonl's event {s.head_seq}" in r.output
    # Another unit's segment.
    (s.tmp / "foreign.entry").write_bytes(segment("UNIT-X", 1, 2, "ab" * 32))
    r = s.run("--log-checkpoint", p, "--log-key", s.tmp / "log.vkey", "--entry", s.tmp / "foreign.entry")
    assert r.exit_code == 1 and "the segment is unit UNIT-X's, ledger.jsonl is UNIT-V's" in r.output
    # The proof of another leaf: no segment of this ledger is that leaf.
    r = s.run("--log-checkpoint", s.proof(s.decision), "--log-key", s.tmp / "log.vkey")
    assert r.exit_code == 1
    assert f"leaf: no segment of ledger.jsonl (unit UNIT-V, seq 1..{s.head_seq}) is leaf 8" in r.output
    # A proof file altered (a hash of its inclusion proof flipped).
    lines = p.read_text().split("\n")
    lines[2] = base64.b64encode(bytes(32)).decode()
    (s.tmp / "bad.tlog-proof").write_text("\n".join(lines))
    r = s.run("--log-checkpoint", s.tmp / "bad.tlog-proof", "--log-key", s.tmp / "log.vkey")
    assert r.exit_code == 1 and "OK log" not in r.output and "INVALID log proof: leaf" in r.output
    (s.tmp / "junk.tlog-proof").write_text("not a proof\n\n")
    r = s.run("--log-checkpoint", s.tmp / "junk.tlog-proof", "--log-key", s.tmp / "log.vkey")
    assert r.exit_code == 1 and "junk.tlog-proof: not a tlog-proof file" in r.output
    r = s.run("--log-checkpoint", p)
    assert r.exit_code == 2 and "--log-key" in r.output


def test_against_the_real_servers_proof_files(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The server's own .tlog-proof for the unit's last segment (the index its receipt named),
    and any leaf given as the JSON of GET /v1/log/proof/inclusion, verify offline with the key
    the server publishes; a proof for another leaf is refused naming the leaf."""
    import httpx

    from edge.ledger import Append
    from edge.sync import SyncClient
    from tests.server.conftest import server_settings, start_server

    with start_server(server_settings("sqlite", request, tmp_path)) as srv:
        unit = UnitSigner.generate("UNIT-E2E")
        srv.enrol(unit)
        led = make_ledger(tmp_path / "edge.db", unit, groups=2, per_group=3)
        client = SyncClient(led, srv.url, server_key=srv.key, max_events=4)
        first = client.sync_once()
        led.append_many([Append("reading.recorded", {"channel": "t", "i": 9, "value": {"value": "1", "unit": "Cel"}}, "B-1")])
        last = client.sync_once()
        assert first.log_index is not None and last.log_index is not None
        assert last.log_index > first.log_index and last.alerts == []
        export_ledger(led, tmp_path / "ledger.jsonl", tmp_path / "unit.pub")
        led.close()
        (tmp_path / "log.vkey").write_text(httpx.get(srv.url + "/v1/log/vkey").text)
        for i, name in ((last.log_index, "last"), (first.log_index, "first"), (0, "zero")):
            r = httpx.get(f"{srv.url}/v1/log/proof/{i}.tlog-proof")
            assert r.status_code == 200, r.text
            (tmp_path / f"{name}.tlog-proof").write_bytes(r.content)
        size = proof_size(tmp_path / "zero.tlog-proof")
        inc = httpx.get(f"{srv.url}/v1/log/proof/inclusion", params={"index": 0, "size": size})
        (tmp_path / "zero.json").write_text(inc.text)
    args = ["--public-key", str(tmp_path / "unit.pub"), "--log-key", str(tmp_path / "log.vkey")]
    ledger = str(tmp_path / "ledger.jsonl")
    r = CliRunner().invoke(verify, [ledger, *args, "--log-checkpoint", str(tmp_path / "last.tlog-proof")])
    assert r.exit_code == 0, r.output
    assert f"is leaf {last.log_index} of ctgtp-server.local/log" in r.output
    assert f"last_seq {last.local_head}" in r.output and "no cosignature (no --witness-key given)" in r.output
    r = CliRunner().invoke(verify, [ledger, *args, "--log-checkpoint", str(tmp_path / "first.tlog-proof")])
    assert r.exit_code == 0 and f"is leaf {first.log_index} of" in r.output, r.output
    r = CliRunner().invoke(verify, ["--log-key", str(tmp_path / "log.vkey"), "--log-checkpoint",
                                    str(tmp_path / "zero.tlog-proof"), "--entry", str(tmp_path / "zero.json")])
    assert r.exit_code == 0 and "is leaf 0 of ctgtp-server.local/log" in r.output, r.output
    # Leaf 0 (logged at the enrolment, before any segment) is no segment of this ledger.
    r = CliRunner().invoke(verify, [ledger, *args, "--log-checkpoint", str(tmp_path / "zero.tlog-proof")])
    assert r.exit_code == 1 and "no segment of ledger.jsonl (unit UNIT-E2E" in r.output, r.output


def proof_size(path: Path) -> int:
    from ebr_core.tlog import TlogProof

    p = TlogProof.parse(path.read_bytes())
    return Checkpoint.parse_text(p.checkpoint.text).size
