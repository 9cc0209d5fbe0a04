"""The witness's memory: the last checkpoint it cosigned, and the alerts it raised.

Owns the state directory's files:

* ``checkpoint``: the last cosigned checkpoint, as the full note (the log's signature and this
  witness's cosignature), replaced atomically (temp file, fsync, rename, fsync of the
  directory), so a crash leaves the old state or the new, never half of one;
* ``alerts.jsonl``: one JSON line per alert, appended and fsynced;
* ``evidence/``: the log's signed checkpoints that contradict what was cosigned (a signed
  statement by the log is the proof of its misbehaviour).

Reading the state checks it: a file this witness did not cosign is refused, not trusted.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ebr_core.tlog import (
    CosignatureVerifier,
    Ed25519NoteVerifier,
    OpenedCheckpoint,
    SignedNote,
    TlogError,
    open_checkpoint,
)
from witness.errors import StateError

STATE_FILE = "checkpoint"
ALERTS_FILE = "alerts.jsonl"
EVIDENCE_DIR = "evidence"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: the old bytes or the new survive a crash, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class Alert:
    kind: str  # "split-view", "rewound", "inconsistent"
    message: str
    origin: str
    at: int
    evidence: str  # the offending signed checkpoint, as text

    def line(self) -> str:
        return f"ALERT {self.kind}: {self.message}"


class StateDir:
    """One witnessed log's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_path(self) -> Path:
        return self.root / STATE_FILE

    def load(self, log: Ed25519NoteVerifier, me: CosignatureVerifier) -> OpenedCheckpoint | None:
        """The last cosigned checkpoint, checked again; None when this witness has none yet."""
        path = self.checkpoint_path
        if not path.exists():
            return None
        data = path.read_bytes()
        try:
            opened = open_checkpoint(SignedNote.parse(data), log, [me])
        except TlogError as e:
            raise StateError(f"state file {path} is not a checkpoint of this log: {e}") from e
        if not opened.cosignatures:
            raise StateError(
                f"state file {path} has no cosignature by this witness ({me.name}); "
                "refusing to trust it"
            )
        return opened

    def save(self, note: SignedNote) -> None:
        write_atomically(self.checkpoint_path, note.to_bytes())

    def record_alert(self, alert: Alert) -> Path:
        """Append the alert and keep the evidence; return the evidence file."""
        ev_dir = self.root / EVIDENCE_DIR
        ev_dir.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", alert.kind)
        ev = ev_dir / f"{alert.at}-{safe}.checkpoint"
        write_atomically(ev, alert.evidence.encode())
        row = {
            "at": alert.at,
            "kind": alert.kind,
            "origin": alert.origin,
            "message": alert.message,
            "evidence": str(ev.relative_to(self.root)),
        }
        with (self.root / ALERTS_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return ev
