"""What a witness checks before it cosigns, and what it refuses (no I/O but its state).

Given the log's latest signed checkpoint and a way to read the log's tiles, a witness:

1. verifies the log's signature and that the origin is the log it watches;
2. with no cosigned checkpoint yet, recomputes the root from the tiles (trust on first use,
   but only of a tree the log actually serves);
3. otherwise compares with the last checkpoint it cosigned:
   * a smaller tree: **rewound** (history removed, or a stale or forked view): alert;
   * the same size, another root: **split view**: alert;
   * a larger tree: builds the consistency proof from the tiles and verifies it against both
     signed roots; a proof that fails is a **fork**: alert;
4. cosigns (c2sp.org/tlog-cosignature) and saves the cosigned checkpoint *before* anyone can
   see the cosignature, so it never cosigns two views it could not compare.

An alert is never cosigned; it is recorded with the log's signed checkpoint as evidence.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from ebr_core.tlog import (
    Checkpoint,
    Cosigner,
    Ed25519NoteVerifier,
    SignedNote,
    TileError,
    TileReader,
    TlogError,
    add_signatures,
    consistency_proof,
    open_checkpoint,
    root_hash,
)
from ebr_core.tlog.monitor import ViewError, check_extends
from ebr_core.tlog.tiles import TileFetch
from witness.errors import UncheckableError
from witness.state import Alert, StateDir


@dataclass(frozen=True)
class Outcome:
    """What one look at the log gave: cosigned, or an alert (never both)."""

    status: str  # "cosigned", "alert"
    checkpoint: Checkpoint
    previous_size: int | None
    note: SignedNote | None = None
    alert: Alert | None = None
    proof_hashes: int = 0

    def line(self) -> str:
        cp = self.checkpoint
        root = base64.b64encode(cp.root).decode("ascii")
        if self.alert is not None:
            return self.alert.line()
        since = "first sight" if self.previous_size is None else f"from {self.previous_size}"
        return (
            f"cosigned {cp.origin} size {cp.size} root {root} ({since}, "
            f"{self.proof_hashes}-hash consistency proof)"
        )


class Witness:
    """One witness watching one log."""

    def __init__(
        self,
        log: Ed25519NoteVerifier,
        cosigner: Cosigner,
        state: StateDir,
        clock: Callable[[], int],
        origin: str | None = None,
    ) -> None:
        self.log = log
        self.cosigner = cosigner
        self.state = state
        self.clock = clock
        # c2sp.org/tlog-checkpoint: the log's key name should match the origin.
        self.origin = origin or log.name

    def witness(self, checkpoint: bytes, fetch_tile: TileFetch) -> Outcome:
        try:
            opened = open_checkpoint(checkpoint, self.log)
        except TlogError as e:
            raise UncheckableError(f"the log's checkpoint was refused: {e}") from e
        cp = opened.checkpoint
        if cp.origin != self.origin:
            raise UncheckableError(
                f"checkpoint origin {cp.origin!r} is not the watched log's {self.origin!r}"
            )
        last = self.state.load(self.log, self.cosigner.verifier)
        reader = TileReader(fetch_tile, cp.size)
        if last is None:
            try:
                got = root_hash(reader, cp.size)
            except TileError as e:
                raise UncheckableError(f"the log's tiles could not be read: {e}") from e
            if got != cp.root:
                return self._alert(
                    "inconsistent",
                    f"the log's tiles give root {got.hex()} for size {cp.size}, "
                    f"its checkpoint says {cp.root.hex()}",
                    opened.note,
                    None,
                )
            return self._cosign(opened.note, cp, None, 0)
        old = last.checkpoint
        proof: list[bytes] = []
        if cp.size > old.size > 0:
            try:
                proof = consistency_proof(reader, old.size, cp.size)
            except TileError as e:
                raise UncheckableError(f"the log's tiles could not be read: {e}") from e
        try:
            check_extends(old, cp, proof)
        except ViewError as e:
            return self._alert(str(e.kind), str(e), opened.note, old.size)
        return self._cosign(opened.note, cp, old.size, len(proof))

    def _cosign(
        self, note: SignedNote, cp: Checkpoint, previous: int | None, proof_hashes: int
    ) -> Outcome:
        sig = self.cosigner.cosign(note.text, self.clock())
        cosigned = add_signatures(note, [sig])
        # Saved before it is shown: a witness that crashes here has cosigned nothing yet.
        self.state.save(cosigned)
        return Outcome("cosigned", cp, previous, note=cosigned, proof_hashes=proof_hashes)

    def _alert(self, kind: str, message: str, note: SignedNote, previous: int | None) -> Outcome:
        cp = Checkpoint.parse_text(note.text)
        alert = Alert(kind, message, cp.origin, self.clock(), note.to_bytes().decode())
        self.state.record_alert(alert)
        return Outcome("alert", cp, previous, alert=alert)
