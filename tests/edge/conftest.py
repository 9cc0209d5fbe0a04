from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ebr_core.document import content_hash, load_yaml
from ebr_core.keys import PublicKey, UnitSigner
from ebr_core.mbr import parse_mbr
from edge.engine import Engine
from edge.ledger import Ledger
from edge.materials import load_materials
from edge.users import load_users

EXAMPLES = Path(__file__).resolve().parents[2] / "edge" / "examples"
COI = "&/CHA999926ABC123"
GS = "\x1d"
PW = {"op.alice": "alice-demo-pass", "op.bob": "bob-demo-pass", "op.chen": "chen-demo-pass"}
ADMIN = "progress-admin-token-for-tests-0123456789"  # 32+ characters, as the server asks


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 24, 8, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=20)
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, clock: Clock) -> Engine:
    content = load_yaml((EXAMPLES / "car_t_mbr.yaml").read_text())
    ledger = Ledger.open(tmp_path / "edge.db", UnitSigner.generate("UNIT-T"), clock)
    return Engine(
        ledger,
        parse_mbr(content),
        content_hash(content),
        load_users((EXAMPLES / "users.yaml").read_text()),
        load_materials((EXAMPLES / "materials.yaml").read_text()),
        clock,
    )


@pytest.fixture
def started(engine: Engine) -> Engine:
    engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
    return engine


Step = Callable[[Engine], None]


@dataclass
class Srv:
    url: str
    key: PublicKey

    def enrol(self, unit: UnitSigner) -> None:
        r = httpx.post(
            self.url + "/admin/units",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={
                "site_id": "SITE-A",
                "unit_id": unit.unit_id,
                "public_key": unit.public.to_json().decode(),
            },
        )
        assert r.status_code == 201, r.text

    def unit(self, unit_id: str) -> dict[str, int]:
        r = httpx.get(
            f"{self.url}/admin/units/{unit_id}", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        r.raise_for_status()
        return {"head_seq": r.json()["head_seq"], "events": r.json()["events"]}


@pytest.fixture(scope="session")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srv]:
    """A real server in its own process on 127.0.0.1 (as in production: edge and server never
    share a GIL), one per session (a start takes seconds): each test enrols its own unit id and
    reads only that unit's state, so the tests sharing it do not depend on each other."""
    from server.process import serve_subprocess

    d = tmp_path_factory.mktemp("sync-server")
    url, proc = serve_subprocess(
        f"sqlite:///{d / 'server.db'}", d / "data", ADMIN,
        rate_per_second="1000", rate_burst="1000",
    )  # fmt: skip
    try:
        yield Srv(url, PublicKey.from_bytes((d / "data" / "server.pub").read_bytes()))
    finally:
        proc.terminate()
        proc.wait(10)
