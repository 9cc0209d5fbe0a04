"""Build and verify a 100k-event chain with a checkpoint every 1,000 events.

Ceiling: the raw primitives over the same event bodies in the same run: orjson canonical encoding
plus SHA-256 (building), and orjson parse + encode + SHA-256 (verifying a file).  The file
ceiling is what a verifier that parses and re-encodes each line needs; the project's verifier
checks runs of like lines against their fixed bytes and parses only the payloads
(ebr_core.verify.ChainVerifier.feed_run, the bytes in ebr_core._verify_run), so its ratio can
pass 1.
Building goes as the edge ledger builds (Ledger.append_many): a commit group of 1,000 events at
once (ChainBuilder.next_events, one clock reading for the group), then its checkpoint.
Floors (issue 2): build ratio >= 0.5, verification >= 300k events/s.
"""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_rates, emit

from ebr_core.chain import ChainBuilder, NewEvent, sign_seal
from ebr_core.keys import Keyring, UnitSigner
from ebr_core.ledgerfile import encode_record, verify_ledger_chunks
from ebr_core.record import EVENT_TAG, Checkpoint, Event, Seal
from ebr_core.verify import verify

N = 100_000
EVERY = 1_000
T0 = datetime(2026, 11, 24, tzinfo=UTC)
STEP = timedelta(milliseconds=10)


def payload(i: int) -> dict[str, Any]:
    return {"channel": "temperature", "value": {"value": f"37.{i % 10}", "unit": "Cel"}}


def main() -> None:
    signer = UnitSigner.from_seed(bytes(32), "UNIT-BENCH")
    payloads = [payload(i) for i in range(N)]
    times = [T0 + STEP * i for i in range(N)]
    records: list[Event | Checkpoint | Seal] = []

    items = [NewEvent("reading.recorded", p, "B-0001") for p in payloads]

    def build(keep: bool) -> int:
        # As the edge ledger uses it (Ledger.append_many): a commit group of events, its
        # checkpoint, then the group is written and dropped (``keep`` holds every record, for
        # the verification figures).
        it = iter(times)
        b = ChainBuilder(signer, lambda: next(it))
        for i in range(0, N, EVERY):
            group: list[Event | Checkpoint | Seal] = []
            group += b.next_events(items[i : i + EVERY])
            group.append(b.checkpoint())
            if keep:
                records.extend(group)
        if keep:
            records.append(sign_seal(signer, 1, b.seq, b.head_hash))
        return N

    build(keep=True)
    bodies = []
    for r in records:
        if isinstance(r, Event):
            d = r.to_dict()
            del d["hash"]
            bodies.append(d)

    def raw_hash() -> int:
        sha = hashlib.sha256
        dumps = orjson.dumps
        opt = orjson.OPT_SORT_KEYS
        for b in bodies:
            sha(EVENT_TAG + dumps(b, option=opt)).hexdigest()
        return len(bodies)

    raw_build, build_rate = best_rates(raw_hash, lambda: build(keep=False))
    emit("chain build (events hashed, linked, checkpointed)", build_rate, "events/s", raw_build)

    keyring = Keyring([signer.public])
    data = b"".join(encode_record(r) for r in records)
    lines = data.split(b"\n")[:-1]
    dicts = [orjson.loads(x) for x in lines]

    def verify_records() -> int:
        v = verify(dicts, keyring, require_seal=True)
        assert v.event_count == N
        return N

    def verify_file() -> int:
        v = verify_ledger_chunks([data], keyring)
        assert v.event_count == N
        return N

    def raw_file() -> int:
        sha = hashlib.sha256
        dumps, loads = orjson.dumps, orjson.loads
        opt = orjson.OPT_SORT_KEYS
        for line in lines:
            d = loads(line)
            sha(EVENT_TAG + dumps(d, option=opt)).hexdigest()
        return N

    raw_v, verify_rate = best_rates(raw_hash, verify_records)
    emit("chain verify (parsed records)", verify_rate, "events/s", raw_v)
    raw_f, file_rate = best_rates(raw_file, verify_file)
    emit("chain verify (JSONL file)", file_rate, "events/s", raw_f)


if __name__ == "__main__":
    main()
