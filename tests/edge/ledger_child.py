"""Crash-test child: append events forever, print each seq only after append() returned."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from ebr_core.keys import UnitSigner
from edge.ledger import Append, Ledger


def main() -> None:
    path = Path(sys.argv[1])
    signer = UnitSigner.from_seed(bytes(range(32)), "UNIT-CRASH")
    ledger = Ledger.open(path, signer, lambda: datetime.now(UTC))
    sys.stdout.write("ready\n")  # the parent starts its kill timer only now (imports are slow)
    sys.stdout.flush()
    i = 0
    while True:
        i += 1
        if i % 3:
            ev = ledger.append("step.completed", {"i": i}, batch_id="B-1", actor="op")
            sys.stdout.write(f"{ev.seq}\n")
        else:
            evs = ledger.append_many(
                [Append("reading.recorded", {"i": i, "j": j}, "B-1") for j in range(50)]
            )
            sys.stdout.write("".join(f"{e.seq}\n" for e in evs))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
