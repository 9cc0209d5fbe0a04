"""The unit's watch on the server's transparency log (issue 24; docs/transparency.md, "The unit
and the auditor").

At every sync the unit holds the server to what it signed before:

* **Each receipt** carries ``log``: the segment's leaf ``index``, the ``tree_size``, the
  ``inclusion`` proof and the signed ``checkpoint``.  The unit rebuilds the leaf it expects from
  the segment it sent (``segment`` entry: its unit id, first and last seq, the hash of its last
  event in *this* ledger) and proves it is that leaf of the checkpointed tree.
* **Each new checkpoint** (a receipt's, and the latest, ``GET /v1/log/checkpoint``, at the end
  of the run) must extend the one the unit trusts: a consistency proof from the server
  (``GET /v1/log/proof/consistency``) and :func:`ebr_core.tlog.check_extends`, the one rule
  every monitor applies.  Only then is it stored (ledger meta :data:`LOG_CHECKPOINT`, the whole
  signed note).  The first checkpoint a unit sees is trusted on first use.
* **The log's key is the server's receipt key** the unit was configured with (``server.pub``),
  never the server's ``/v1/log/vkey`` (a rogue server would serve its own); the key name is the
  checkpoint's origin (pinned at first contact: a later origin must be the same) or, for a
  server that names its key otherwise, the name on a signature line whose key ID that key and
  name give.

Anything else (a proof that fails, a smaller tree, two roots for one size, a refused or
missing proof, a checkpoint the server's key did not sign) is a :class:`SecurityAlert`: a
``security.alert`` event in the unit's own ledger (the offending signed checkpoint kept as
evidence), the old checkpoint kept, the ``sync.alarm`` raised.  One alert per kind of failure
against one trusted checkpoint, so never two for the same offending checkpoint (its id is
remembered in :data:`LOG_ALERTS` and is the event's dedupe key), and the log is not checked
further in that run.  A sync process that reads the ledger beside its writer
cannot append: it keeps the alert in :data:`LOG_PENDING` and the next writer records it.

Over 400 lines: the checks of a receipt and of a checkpoint, and the recording of what they
find, are one monitor's rules, read together when a rule changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ebr_core.keys import PublicKey
from ebr_core.tlog import (
    Checkpoint,
    Ed25519NoteVerifier,
    EntryKind,
    LogEntry,
    OpenedCheckpoint,
    SignedNote,
    TlogError,
    ViewError,
    check_extends,
    leaf_hash,
    open_checkpoint,
    verify_inclusion,
)
from ebr_core.tlog.cosignature import CosignatureVerifier
from ebr_core.tlog.note import ED25519_TYPE, key_id
from ebr_core.vocab import EventKind
from edge.errors import EdgeError, LedgerError
from edge.ledger import Ledger

log = logging.getLogger("ctgtp.edge.logwatch")

LOG_CHECKPOINT = "log.checkpoint"  # ledger meta: the trusted signed checkpoint (note text)
LOG_ALERTS = "log.alerts"  # ledger meta: ids of the alerts already raised (JSON list)
LOG_PENDING = "log.alerts.pending"  # ledger meta: alerts a reading sync could not append
ALARM = "sync.alarm"  # the sync alarm (edge.sync), raised with kind "security"
SECURITY = "security"
MAX_REMEMBERED = 200  # alert ids kept (the ledger's dedupe keys hold them all anyway)
MAX_INCLUSION_HASHES = 64
ALERT_KIND = str(EventKind.SECURITY_ALERT)  # (the record format takes a plain str)


class Failure(StrEnum):
    """What a security alert says went wrong with the server's log."""

    REWOUND = "rewound"  # a smaller tree than the trusted one
    SPLIT_VIEW = "split-view"  # two roots for one size, or a larger tree that does not extend
    ORIGIN = "origin"  # a checkpoint of another log
    INCLUSION = "inclusion"  # a receipt's inclusion proof does not prove this unit's segment
    SIGNATURE = "signature"  # a checkpoint not signed by the server's key
    PROOF_REFUSED = "proof-refused"  # the server refused a consistency proof, or sent a bad one
    MISSING = "missing"  # no log part in a receipt, or no checkpoint, once one is trusted
    MALFORMED = "malformed"  # a receipt's log part or a checkpoint that cannot be read


class LogSuspect(EdgeError):
    """One check of the log failed (turned into a :class:`SecurityAlert` by :class:`LogWatch`)."""

    def __init__(
        self,
        failure: Failure,
        message: str,
        offered: Checkpoint | None = None,
        evidence: str | None = None,
    ) -> None:
        self.failure, self.offered, self.evidence = failure, offered, evidence
        super().__init__(message)


def _b64(root: bytes | None) -> str | None:
    return None if root is None else base64.b64encode(root).decode("ascii")


@dataclass(frozen=True)
class SecurityAlert:
    failure: Failure
    message: str
    trusted: Checkpoint | None
    offered: Checkpoint | None
    evidence: str | None  # the offending signed checkpoint (note text and signatures)

    @property
    def alert_id(self) -> str:
        """One alert per kind of failure against one trusted checkpoint: the same offending
        checkpoint seen again is the same alert, and so is a log that stays rewound (or forked)
        and grows: every sync would otherwise record another (and its push grow the log).  The
        evidence kept is the first offending checkpoint; the alarm stands meanwhile."""
        basis = "" if self.trusted is None else self.trusted.text()
        h = hashlib.sha256(f"{self.failure}\n{basis}".encode()).hexdigest()
        return h[:32]

    def payload(self, server: str) -> dict[str, Any]:
        t, o = self.trusted, self.offered
        either = t or o
        return {
            "alert_id": self.alert_id,
            "failure": str(self.failure),
            "message": self.message,
            "server": server,
            "origin": None if either is None else either.origin,
            "trusted_size": None if t is None else t.size,
            "trusted_root": None if t is None else _b64(t.root),
            "offered_size": None if o is None else o.size,
            "offered_root": None if o is None else _b64(o.root),
            "evidence": self.evidence,
        }

    def line(self) -> str:
        return f"SECURITY ALERT ({self.failure}): {self.message}"


def segment_leaf(unit_id: str, first_seq: int, last_seq: int, head_hash: str) -> bytes:
    """The log entry the server must have logged for a segment this unit sent."""
    fields: dict[str, str | int] = {
        "unit_id": unit_id,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "head_hash": head_hash,
    }
    return LogEntry(EntryKind.SEGMENT, fields).to_bytes()


def note_verifier(
    note: SignedNote, server_key: PublicKey, origin: str | None
) -> Ed25519NoteVerifier:
    """The log's note verifier: the server's key under the pinned origin (or the checkpoint's
    own origin at first contact), or under the name of a signature line whose key ID that key
    and name give (a server whose key name is not its origin)."""
    cp = Checkpoint.parse_text(note.text)
    name = origin or cp.origin
    try:
        v = Ed25519NoteVerifier(name, server_key)
    except TlogError:
        v = None
    if v is not None and any(s.name == v.name and s.key_id == v.key_id for s in note.signatures):
        return v
    for s in note.signatures:
        try:
            if key_id(s.name, ED25519_TYPE, server_key.raw) == s.key_id:
                return Ed25519NoteVerifier(s.name, server_key)
        except TlogError:
            continue
    raise LogSuspect(
        Failure.SIGNATURE,
        f"the checkpoint of {cp.origin} (size {cp.size}) carries no signature by the server's "
        f"key {server_key.key_id}",
        cp,
        note.to_bytes().decode(),
    )


def _hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list) or len(value) > MAX_INCLUSION_HASHES:
        raise LogSuspect(Failure.MALFORMED, f"{what} is not a list of at most 64 base64 hashes")
    out = []
    for i, h in enumerate(value):
        try:
            raw = base64.b64decode(str(h), validate=True) if isinstance(h, str) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise LogSuspect(Failure.MALFORMED, f"{what} hash {i + 1} is not 32 base64 bytes")
        out.append(raw)
    return out


def parse_consistency(body: Any, old: int, new: int) -> list[bytes]:
    """The proof hashes of a ``GET /v1/log/proof/consistency`` answer, checked to be for the
    sizes asked."""
    if not isinstance(body, dict) or body.get("old") != old or body.get("new") != new:
        raise LogSuspect(
            Failure.PROOF_REFUSED,
            f"the server answered the consistency proof {old} -> {new} with another one",
        )
    return _hashes(body.get("proof"), f"the consistency proof {old} -> {new}")


class LogWatch:
    """One sync run's checks of the log, and what they found (see the module docstring).

    ``consistency(old, new)`` returns the server's proof hashes, raising :class:`LogSuspect`
    (``proof-refused``) when the server refuses; network trouble propagates (the run is
    retried later, nothing is trusted meanwhile).
    """

    def __init__(
        self,
        ledger: Ledger,
        server_key: PublicKey,
        server: str,
        consistency: Callable[[int, int], list[bytes]],
        clock: Callable[[], float] = time.time,
        witnesses: Sequence[CosignatureVerifier] = (),
        quorum: int | None = None,
    ) -> None:
        self.ledger, self.server_key, self.server = ledger, server_key, server
        # The witnesses whose cosignatures count, and how many make a checkpoint witnessed
        # (default: 1 with witness keys).  Without keys the cosignature lines the server
        # serves are counted but cannot be verified, and the line says so.
        self.witnesses = list(witnesses)
        self.quorum = 1 if quorum is None else quorum
        self.consistency = consistency
        self.clock = clock
        raw = ledger.get_meta(LOG_CHECKPOINT)
        self.trusted: SignedNote | None = None
        if raw:
            self.trusted = SignedNote.parse(raw.encode())
        self.start_size = None if self.trusted is None else self._trusted_cp().size
        self.first_contact = False
        self.checked = 0  # checkpoints verified this run
        self.inclusions = 0  # receipts whose inclusion proof verified
        self.alerts: list[SecurityAlert] = []
        self.repeated: list[SecurityAlert] = []  # alerts raised before, seen again
        self.no_log = False  # the server publishes no log (and none was trusted)
        self.stopped = False  # after an alert, the run checks the log no further

    def _trusted_cp(self) -> Checkpoint:
        assert self.trusted is not None
        return Checkpoint.parse_text(self.trusted.text)

    @property
    def checkpoint(self) -> Checkpoint | None:
        return None if self.trusted is None else self._trusted_cp()

    # -- the checks --------------------------------------------------------------------------

    def open(self, text: Any) -> OpenedCheckpoint:
        if not isinstance(text, str):
            raise LogSuspect(Failure.MALFORMED, "the checkpoint is not a signed note's text")
        try:
            note = SignedNote.parse(text.encode())
            cp = Checkpoint.parse_text(note.text)
        except TlogError as e:
            raise LogSuspect(Failure.MALFORMED, f"the checkpoint cannot be read: {e}") from e
        pinned = None if self.trusted is None else self._trusted_cp().origin
        verifier = note_verifier(note, self.server_key, pinned)
        try:
            return open_checkpoint(note, verifier)
        except TlogError as e:
            raise LogSuspect(
                Failure.SIGNATURE,
                f"the checkpoint of {cp.origin} (size {cp.size}) is not signed by the server's "
                f"key: {e}",
                cp,
                text,
            ) from e

    def receipt(self, part: Any, leaves: Sequence[bytes]) -> None:
        """Check a receipt's ``log`` part: the checkpoint, the inclusion of one of ``leaves``
        (the entries this segment may have been logged as) when it names an index, and the
        checkpoint's consistency with the trusted one."""
        if self.stopped:
            return
        try:
            if part is None:
                self._absent("the server's receipt carries no log proof")
                return
            if not isinstance(part, dict):
                raise LogSuspect(Failure.MALFORMED, "the receipt's log part is not an object")
            opened = self.open(part.get("checkpoint"))
            cp, evidence = opened.checkpoint, opened.note.to_bytes().decode()
            if part.get("tree_size") != cp.size:
                raise LogSuspect(
                    Failure.MALFORMED,
                    f"the receipt's log part says tree size {part.get('tree_size')!r}, its "
                    f"checkpoint {cp.size}",
                    cp,
                    evidence,
                )
            index = part.get("index")
            if index is not None:
                self._inclusion(index, part.get("inclusion"), leaves, opened, evidence)
            self._advance(opened)
        except LogSuspect as e:
            self._raise(e)

    def _inclusion(
        self,
        index: Any,
        proof_json: Any,
        leaves: Sequence[bytes],
        opened: OpenedCheckpoint,
        evidence: str,
    ) -> None:
        cp = opened.checkpoint
        if type(index) is not int or not 0 <= index < cp.size:
            raise LogSuspect(
                Failure.INCLUSION,
                f"the receipt names leaf {index!r} of a tree of size {cp.size}",
                cp,
                evidence,
            )
        proof = _hashes(proof_json, "the receipt's inclusion proof")
        errors = []
        for leaf in leaves:
            try:
                verify_inclusion(index, cp.size, leaf_hash(leaf), proof, cp.root)
            except TlogError as e:
                errors.append(str(e))
            else:
                self.inclusions += 1
                return
        raise LogSuspect(
            Failure.INCLUSION,
            f"the receipt's inclusion proof does not prove this unit's segment is leaf {index} "
            f"of {cp.origin} size {cp.size}: {errors[0] if errors else 'no leaf'}",
            cp,
            evidence,
        )

    def latest(self, text: str | None) -> None:
        """Check the log's latest checkpoint (None: the server answered 404)."""
        if self.stopped:
            return
        try:
            if text is None:
                self._absent("the server publishes no log checkpoint")
                return
            self._advance(self.open(text))
        except LogSuspect as e:
            self._raise(e)

    def _absent(self, what: str) -> None:
        """The server showed no log: fine while this unit trusts no checkpoint (a server
        without a log), a ``MISSING`` failure once it does."""
        if self.trusted is None:
            self.no_log = True
            return
        raise LogSuspect(
            Failure.MISSING,
            f"{what}, though this unit holds its checkpoint of size {self._trusted_cp().size}",
        )

    def _advance(self, opened: OpenedCheckpoint) -> None:
        new = opened.checkpoint
        evidence = opened.note.to_bytes().decode()
        self.checked += 1
        if self.trusted is None:
            self.first_contact = True  # trust on first use (docs/transparency.md)
            self._store(opened.note)
            return
        trusted = self._trusted_cp()
        proof: list[bytes] = []
        if new.origin == trusted.origin and new.size > trusted.size > 0:
            try:
                proof = self.consistency(trusted.size, new.size)
            except LogSuspect as e:
                raise LogSuspect(e.failure, str(e), new, evidence) from e
        try:
            check_extends(trusted, new, proof)
        except ViewError as e:
            raise LogSuspect(Failure(str(e.kind)), str(e), new, evidence) from e
        if new != trusted or opened.note != self.trusted:
            self._store(opened.note)

    def _store(self, note: SignedNote) -> None:
        self.ledger.set_meta(LOG_CHECKPOINT, note.to_bytes().decode())
        self.trusted = note

    # -- alerts ------------------------------------------------------------------------------

    def fail(self, e: LogSuspect) -> None:
        """A check made outside (the server refused a request): raise its alert."""
        if not self.stopped:
            self._raise(e)

    def _raise(self, e: LogSuspect) -> None:
        self.stopped = True
        alert = SecurityAlert(e.failure, str(e), self.checkpoint, e.offered, e.evidence)
        seen = _json_list(self.ledger.get_meta(LOG_ALERTS))
        if alert.alert_id in seen:
            self.repeated.append(alert)
        else:
            log.warning("%s", alert.line())
            record_alert(self.ledger, alert.payload(self.server))
            self.ledger.set_meta(LOG_ALERTS, json.dumps([*seen, alert.alert_id][-MAX_REMEMBERED:]))
            self.alerts.append(alert)
        raise_alarm(self.ledger, alert.line(), self.clock())

    def summary(self) -> str:
        """One line for the sync's output: what was checked, or what was caught."""
        if self.alerts or self.repeated:
            a = (self.alerts or self.repeated)[-1]
            again = "" if self.alerts else " (already recorded)"
            kept = self.checkpoint
            size = "none" if kept is None else f"size {kept.size}"
            return f"{a.line()}{again}; trusted checkpoint kept ({size})"
        cp = self.checkpoint
        if cp is None:
            return (
                "log: not checked: the server publishes no log"
                if self.no_log
                else "log: not checked"
            )
        if self.first_contact:
            how = "trusted on first use"
        elif self.start_size == cp.size:
            how = "unchanged"
        else:
            how = f"consistent with size {self.start_size} trusted before"
        proofs = f"; {self.inclusions} receipt inclusion proofs verified" if self.inclusions else ""
        root = _b64(cp.root) or ""
        return (
            f"log: checkpoint {cp.origin} size {cp.size} root {root[:12]}… {how}{proofs}; "
            f"{self.witnessed()}"
        )

    def witnessed(self) -> str:
        """``witnessed by N`` or ``unwitnessed`` for the trusted checkpoint: its cosignatures by
        the configured witnesses that verify (no alert below the quorum: witnessing lags the
        log).  Without witness keys: the cosignature lines it carries, not verified."""
        note = self.trusted
        if note is None:
            return "unwitnessed"
        text = note.text.encode()
        if not self.witnesses:
            names = sorted({
                sg.name for sg in note.signatures
                if len(sg.signature) == 72 and sg.name != self._trusted_cp().origin
            })  # fmt: skip
            if not names:
                return "unwitnessed"
            return (
                f"{len(names)} cosignature(s) ({', '.join(names)}), not verified: "
                "no witness keys configured"
            )
        known = {(w.name, w.key_id): w for w in self.witnesses}
        ok = sorted({
            sg.name for sg in note.signatures
            if (sg.name, sg.key_id) in known
            and known[(sg.name, sg.key_id)].verify(text, sg.signature)
        })  # fmt: skip
        if len(ok) < self.quorum:
            return f"unwitnessed ({len(ok)} of the {self.quorum} witness cosignatures required)"
        return f"witnessed by {len(ok)} ({', '.join(ok)})"


def _json_list(raw: str | None) -> list[Any]:
    try:
        v = json.loads(raw or "[]")
    except ValueError:
        return []
    return v if isinstance(v, list) else []


def raise_alarm(ledger: Ledger, message: str, now: float) -> None:
    """The standing ``security`` sync alarm (``ctgtp edge status``, the station's health)."""
    since = now
    try:
        old = json.loads(ledger.get_meta(ALARM) or "null")
    except ValueError:
        old = None
    if isinstance(old, dict) and old.get("kind") == SECURITY:
        since = float(old.get("since", now))
    doc = {"kind": SECURITY, "message": message, "since": since, "updated": now}
    ledger.set_meta(ALARM, json.dumps(doc))


def record_alert(ledger: Ledger, payload: dict[str, Any]) -> None:
    """Append the ``security.alert`` event (once: its alert id is the dedupe key), or, on a
    ledger opened for reading, keep it for the next writer (:func:`flush_pending`)."""
    if ledger.writer:
        ledger.append(
            ALERT_KIND,
            payload,
            actor="system",
            dedupe_key=f"security.alert:{payload['alert_id']}",
        )
        return
    pending = _json_list(ledger.get_meta(LOG_PENDING))
    ledger.set_meta(LOG_PENDING, json.dumps([*pending, payload]))
    flush_pending(ledger)


def flush_pending(ledger: Ledger) -> int:
    """Record the alerts a reading sync kept (:data:`LOG_PENDING`); how many were recorded.

    A writer appends them; a reader opens the ledger to write for a moment, if no other
    process writes it (the station agent then records them at its next sync)."""
    pending = [p for p in _json_list(ledger.get_meta(LOG_PENDING)) if isinstance(p, dict)]
    if not pending:
        return 0
    if ledger.writer:
        _append_alerts(ledger, pending)
    else:
        if ledger.path is None:
            return 0
        try:
            w = Ledger.open(ledger.path, ledger.signer, ledger.clock, writer=True, lock_wait=0)
        except LedgerError as e:
            log.info("security alert kept for the ledger's writer: %s", e)
            return 0
        try:
            _append_alerts(w, pending)
        finally:
            w.close()
        ledger.refresh()
    ledger.set_meta(LOG_PENDING, "[]")
    return len(pending)


def _append_alerts(ledger: Ledger, pending: list[dict[str, Any]]) -> None:
    for p in pending:
        ledger.append(
            ALERT_KIND,
            p,
            actor="system",
            dedupe_key=f"security.alert:{p.get('alert_id')}",
        )
