"""The edge agent: one production unit's state directory, opened and checked as a whole.

``home/`` holds ``config.json`` (the unit id), ``unit.key``/``unit.pub``, the signed master batch
record ``mbr.signed.json`` with the trusted publisher key ``publisher.pub``, the local
``users.yaml`` and ``materials.yaml``, and the ledger ``edge.db``.  Opening the agent re-verifies
the MBR's signature and the ledger, every time: an altered MBR or ledger stops the agent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ebr_core.document import DocumentError, open_document
from ebr_core.errors import EbrError, KeyFormatError
from ebr_core.keys import Keyring, PublicKey
from ebr_core.mbr import MbrError, parse_mbr
from edge.engine import Engine
from edge.errors import EdgeError
from edge.keys import load_or_create_unit_key
from edge.ledger import Ledger
from edge.materials import load_materials
from edge.users import User, load_users, users_yaml


class AgentError(EdgeError):
    """The agent's state directory is missing something or holds something invalid."""


@dataclass
class EdgeAgent:
    home: Path
    unit_id: str
    ledger: Ledger
    engine: Engine

    def close(self) -> None:
        self.ledger.close()

    def replace_users(self, operators: list[dict[str, Any]], source: str) -> dict[str, User]:
        """Replace the station's ``users.yaml`` with the operators a server published (their
        argon2id hashes, for offline re-authentication): validated first, written beside it and
        synced, the change recorded in the ledger (``users.updated``: source, ids, digest), then
        renamed into place.  The engine of this agent keeps the users it was opened with."""
        if not operators:
            raise AgentError(
                "the server publishes no operators for this unit's site: users.yaml is kept "
                "(an empty list would lock every operator out of the station); give the site's "
                "operators their grants on the server, then pull again"
            )
        try:
            text = users_yaml(operators)
        except KeyError as e:
            raise AgentError(f"server published an operator without {e}") from e
        users = load_users(text)
        target = self.home / "users.yaml"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        self.ledger.append(
            "users.updated",
            {
                "source": source,
                "user_ids": sorted(users),
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
            },
            actor="system",
        )
        tmp.replace(target)
        return users


def _load_mbr(path: Path, publisher: Path) -> tuple[dict[str, object], str]:
    try:
        key = PublicKey.from_bytes(publisher.read_bytes())
        doc = open_document(path.read_bytes(), Keyring([key]), doc_type="mbr")
        parse_mbr(doc.content, path.name)
    except (DocumentError, MbrError, KeyFormatError) as e:
        raise AgentError(f"master batch record {path.name} refused: {e}") from e
    except FileNotFoundError as e:
        raise AgentError(f"missing {e.filename}") from e
    return doc.content, doc.content_hash


def init_home(
    home: Path, *, unit_id: str, mbr: Path, publisher_key: Path, users: Path, materials: Path
) -> None:
    """Set up a unit's state directory (refuses an unsigned or altered MBR)."""
    if (home / "config.json").exists():
        raise AgentError(f"{home} is already initialised for a unit")
    _load_mbr(mbr, publisher_key)
    try:
        load_users(users.read_text())
        load_materials(materials.read_text(), materials.name)
    except FileNotFoundError as e:
        raise AgentError(f"missing {e.filename}") from e
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mbr, home / "mbr.signed.json")
    shutil.copyfile(publisher_key, home / "publisher.pub")
    shutil.copyfile(users, home / "users.yaml")
    shutil.copyfile(materials, home / "materials.yaml")
    load_or_create_unit_key(home, unit_id)
    (home / "config.json").write_text(json.dumps({"unit_id": unit_id}) + "\n")


def open_agent(
    home: Path,
    clock: Callable[[], datetime],
    *,
    writer: bool = True,
    readonly: bool = False,
    clock_leap_s: float | None = None,
) -> EdgeAgent:
    """Open the unit's home; ``writer=False`` for commands that record nothing, ``readonly``
    for those that must write nothing at all, not even beside the ledger (``status``,
    ``export``), and ``clock_leap_s`` for a process that records a leap of its clock (see
    :meth:`edge.ledger.Ledger.open`).  A file it cannot read is a one-line error naming it."""
    try:
        return _open_agent(home, clock, writer, readonly, clock_leap_s)
    except OSError as e:
        where = e.filename if e.filename is not None else home
        raise AgentError(f"cannot read {where}: {e.strerror or e}") from e


def _open_agent(
    home: Path,
    clock: Callable[[], datetime],
    writer: bool,
    readonly: bool,
    clock_leap_s: float | None,
) -> EdgeAgent:
    cfg = home / "config.json"
    if not cfg.exists():
        raise AgentError(f"{home} is not an edge home; run 'ctgtp edge init' first")
    unit_id = str(json.loads(cfg.read_text())["unit_id"])
    content, mbr_hash = _load_mbr(home / "mbr.signed.json", home / "publisher.pub")
    try:
        signer = load_or_create_unit_key(home, unit_id)
        ledger = Ledger.open(
            home / "edge.db",
            signer,
            clock,
            writer=writer and not readonly,
            readonly=readonly,
            clock_leap_s=clock_leap_s,
        )
        engine = Engine(
            ledger,
            parse_mbr(content, "mbr.signed.json"),
            mbr_hash,
            load_users((home / "users.yaml").read_text()),
            load_materials((home / "materials.yaml").read_text(), "materials.yaml"),
            clock,
        )
    except EbrError as e:
        raise AgentError(str(e)) from e
    return EdgeAgent(home, unit_id, ledger, engine)
