from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ebr_core.document import content_hash, load_yaml
from ebr_core.keys import UnitSigner
from ebr_core.mbr import parse_mbr
from edge.engine import Engine
from edge.ledger import Ledger
from edge.materials import load_materials
from edge.users import load_users

EXAMPLES = Path(__file__).resolve().parents[2] / "edge" / "examples"
COI = "&/CHA999926ABC123"
GS = "\x1d"
PW = {"op.alice": "alice-demo-pass", "op.bob": "bob-demo-pass", "op.chen": "chen-demo-pass"}


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
