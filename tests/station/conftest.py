"""A unit's home and a station file, as ``ctgtp edge init`` and a commissioning engineer make
them; a real mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ebr_core.document import load_yaml, sign_document
from ebr_core.keys import UnitSigner
from edge.agent import init_home
from firmware_sim.broker import Broker

EXAMPLES = Path(__file__).resolve().parents[2] / "edge" / "examples"
UNIT = "UNIT-ST-01"
COI = "&/CHA999926ABC123"
PW = {"op.alice": "alice-demo-pass", "op.bob": "bob-demo-pass", "op.chen": "chen-demo-pass"}


def make_home(folder: Path, unit: str = UNIT) -> Path:
    """An initialised edge home for ``unit`` with the example MBR, users and materials."""
    qa = UnitSigner.generate("qa.approver")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qa.pub").write_bytes(qa.public.to_json())
    content = load_yaml((EXAMPLES / "car_t_mbr.yaml").read_text())
    doc = sign_document(
        content,
        doc_type="mbr",
        doc_id=content["mbr_id"],
        version=str(content["version"]),
        signer=qa,
        signed_at=datetime.now(UTC),
    )
    (folder / "mbr.signed.json").write_bytes(doc.to_bytes())
    home = folder / "home"
    init_home(
        home,
        unit_id=unit,
        mbr=folder / "mbr.signed.json",
        publisher_key=folder / "qa.pub",
        users=EXAMPLES / "users.yaml",
        materials=EXAMPLES / "materials.yaml",
    )
    return home


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path / "unit")


@pytest.fixture
def broker() -> Iterator[Broker]:
    with Broker() as b:
        yield b
