"""The real witness (``ctgtp witness run``) against the real server's ``/v1/log``: it recomputes
the root from the server's tiles at first sight, then checks growth across full and partial
tiles with consistency proofs it builds from them, and cosigns each checkpoint."""

from __future__ import annotations

from pathlib import Path

import httpx
from click.testing import CliRunner, Result
from sqlalchemy.orm import Session

from ebr_core.keys import UnitSigner
from ebr_core.tlog.checkpoint import Checkpoint
from ebr_core.tlog.note import SignedNote
from server.db import make_engine
from server.log import records, store
from witness.cli import witness as witness_cli

from .conftest import Server


class Witness:
    def __init__(self, server: Server, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.key = tmp / "w1.key"
        self.key.write_bytes(UnitSigner.generate("w1").to_pem())
        self.vkey = tmp / "log.vkey"
        self.vkey.write_text(httpx.get(server.url + "/v1/log/vkey").text)
        self.state = tmp / "state"
        self.url = server.url + "/v1/log"

    def look(self) -> Result:
        return CliRunner().invoke(witness_cli, [
            "run", "--log", self.url, "--log-key", str(self.vkey), "--key", str(self.key),
            "--name", "regulator.example/w1", "--state", str(self.state), "--once",
        ])  # fmt: skip

    def cosigned(self) -> Checkpoint:
        return Checkpoint.parse_text(SignedNote.parse((self.state / "checkpoint").read_bytes()).text)


def grow(server: Server, n: int) -> None:
    engine = make_engine(server.settings.database_url)
    try:
        with Session(engine) as db:
            store.append_leaves(
                db, [records.segment_entry("U-W", i + 1, i + 1, "ab" * 32).to_bytes()
                     for i in range(n)]
            )  # fmt: skip
            db.commit()
    finally:
        engine.dispose()


def test_the_witness_cosigns_the_servers_log_as_it_grows(server: Server, tmp_path: Path) -> None:
    w = Witness(server, tmp_path / "w")
    grow(server, 3)
    r = w.look()
    assert r.exit_code == 0, r.output
    assert "first sight" in r.output and w.cosigned().size == 3
    for n, size in ((300, 303), (250, 553)):  # a full tile, then across another boundary
        grow(server, n)
        r = w.look()
        assert r.exit_code == 0, r.output
        assert w.cosigned().size == size, r.output
    # The cosigned checkpoint is the server's: same size, same root as it serves now.
    served = Checkpoint.parse_text(
        SignedNote.parse(httpx.get(server.url + "/v1/log/checkpoint").content).text
    )
    assert (served.size, served.root) == (w.cosigned().size, w.cosigned().root)
    full = httpx.get(server.url + "/v1/log/tile/0/000")
    assert full.status_code == 200 and len(full.content) == 256 * 32
    part = httpx.get(server.url + "/v1/log/tile/0/002.p/41")
    assert part.status_code == 200 and len(part.content) == 41 * 32
    assert httpx.get(server.url + "/v1/log/tile/0/002.p/42").status_code == 404  # not yet
    bundle = httpx.get(server.url + "/v1/log/tile/entries/001")
    assert bundle.status_code == 200 and bundle.headers["cache-control"].endswith("immutable")
    assert httpx.get(server.url + "/v1/log/tile/1/000.p/2").status_code == 200
