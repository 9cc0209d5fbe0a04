"""User ids: ASCII ``[a-z0-9._-]``, stored lower case, refused when their :func:`skeleton`
(what they look like) equals an existing one's; found case-insensitively.  :func:`audit_person`
writes the audit entry of an action on the account an id names."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from server.audit import trail as audit
from server.db import Person
from server.errors import (
    Unprocessable,
)

# -- user ids ----------------------------------------------------------------------------------

MAX_USER_ID = 64
_USER_ID = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")
RESERVED_IDS = frozenset({"system", "edge", "anonymous"})
_SKELETON_PAIRS = (("m", "rn"), ("w", "vv"), ("0", "o"), ("1", "l"), ("i", "l"))
_SEPARATORS = re.compile(r"[._-]+")


def skeleton(user_id: str) -> str:
    """The form two ids share when a reader could take one for the other: lower case; ``0`` as
    ``o``; ``1``, ``i`` and ``l`` as ``l``; ``m`` as ``rn`` and ``w`` as ``vv`` (expanded, so
    that no order of replacements matters); every run of ``.``, ``_`` and ``-`` as one ``.``.
    Two ids with the same skeleton cannot both exist.  At most twice the id's length."""
    s = user_id.lower()
    for a, b in _SKELETON_PAIRS:
        s = s.replace(a, b)
    return _SEPARATORS.sub(".", s)


def canonical_user_id_problem(user_id: str) -> str | None:
    """Why ``user_id`` is not a canonical id (None if it is)."""
    if not user_id or len(user_id) > MAX_USER_ID:
        return f"1-{MAX_USER_ID} characters"
    bad = sorted({c for c in user_id if not (c.isascii() and (c.isalnum() or c in "._-"))})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
        return f"only ASCII letters, digits, '.', '_' and '-' (not {shown})"
    if user_id != user_id.lower():
        return "lower case only"
    if not _USER_ID.fullmatch(user_id):
        return "must start and end with a letter or digit"
    return None


def new_user_id(user_id: str) -> str:
    """The stored form of a new id (ASCII lower case), or a refusal saying what is expected."""
    folded = user_id.lower() if user_id.isascii() else user_id
    why = canonical_user_id_problem(folded)
    if why is not None:
        raise Unprocessable(
            f"user id: {why}; expected 1-{MAX_USER_ID} of a-z, 0-9, '.', '_', '-' "
            "(stored in lower case)"
        )
    if folded in RESERVED_IDS:
        raise Unprocessable(f"user id {folded!r} is reserved")
    return folded


def find_person(db: Session, given: str) -> Person | None:
    """The person a typed id names: the id in lower case (ids are stored so), else, for an id
    kept from before the rules (migration 0006), its exact spelling."""
    if not given or len(given) > MAX_USER_ID:
        return None
    p = db.get(Person, given.lower()) if given.isascii() else None
    if p is None and given != given.lower():
        p = db.get(Person, given)
    return p


def audit_person(
    db: Session,
    at: datetime,
    actor: str,
    action: str,
    user_id: str,
    *,
    old: Any = None,
    new: Any = None,
    reason: str | None = None,
) -> None:
    """Append, in the caller's transaction, the audit entry of ``action`` by ``actor`` on the
    account ``user_id`` (object type ``person``)."""
    audit.append(
        db, at=at, actor=actor, action=action, object_type="person", object_id=user_id,
        old=old, new=new, reason=reason,
    )  # fmt: skip
