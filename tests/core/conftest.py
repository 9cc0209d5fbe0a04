from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ebr_core.chain import ChainBuilder, sign_seal
from ebr_core.keys import UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.record import Checkpoint, Event, Seal


def step_clock(start: datetime | None = None, step_ms: int = 7) -> Callable[[], datetime]:
    t = [start or datetime(2026, 11, 24, 8, 0, tzinfo=UTC)]

    def clock() -> datetime:
        t[0] += timedelta(milliseconds=step_ms)
        return t[0]

    return clock


def make_ledger(
    signer: UnitSigner, n: int, every: int = 3, *, seal: bool = True
) -> list[Event | Checkpoint | Seal]:
    """n events with a checkpoint every `every` events and one at the end, then a seal."""
    b = ChainBuilder(signer, step_clock())
    out: list[Event | Checkpoint | Seal] = []
    for i in range(n):
        out.append(
            b.next_event(
                "reading.recorded" if i % 2 else "step.completed",
                {"i": i, "value": {"value": f"{i}.5", "unit": "Cel"}, "note": "naïve µ"},
                batch_id="B-1",
                actor="op1" if i % 3 == 0 else None,
            )
        )
        if (i + 1) % every == 0:
            out.append(b.checkpoint())
    if b.checkpoint_seq != b.seq:
        out.append(b.checkpoint())
    if seal:
        out.append(sign_seal(signer, 1, b.seq, b.head_hash))
    return out


def ledger_bytes(records: list[Event | Checkpoint | Seal]) -> bytes:
    return b"".join(encode_record(r) for r in records)


@pytest.fixture(scope="session")
def signer() -> UnitSigner:
    return UnitSigner.from_seed(bytes(range(32)), "UNIT-A")


@pytest.fixture(scope="session")
def other_signer() -> UnitSigner:
    return UnitSigner.from_seed(bytes(range(1, 33)), "UNIT-A")
