"""Local operators and their argon2id credential hashes (published by the server with
``ctgtp edge users-pull``, or written by hand for a demo station).

Every action at the station names one of these users, and only a known, active one may act: an
entry may say ``active: false`` (a person who left keeps their past records but can record no
more).  A misspelt key (``actve: false``) or a user listed twice is refused, never guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ebr_core.reentry import ReentryVerifiers
from edge.errors import EdgeError

_HASHER = PasswordHasher()


class UsersError(EdgeError):
    """The users file is unreadable or malformed."""


@dataclass(frozen=True)
class User:
    user_id: str
    printed_name: str
    roles: tuple[str, ...]
    password_hash: str
    active: bool = True

    def check_password(self, password: str) -> bool:
        try:
            return _HASHER.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


# One per process: every engine of a station process shares the operators' sessions
# (ebr_core.reentry: a re-entered password within a continuous session, checked in memory).
SESSION_VERIFIERS = ReentryVerifiers()


def load_users(text: str) -> dict[str, User]:
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsersError(f"users file is not valid YAML: {_one_line(e)}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("users"), list):
        raise UsersError("users file must be a mapping with a 'users' list")
    out: dict[str, User] = {}
    for i, u in enumerate(doc["users"]):
        user = _user(i, u)
        if user.user_id in out:
            raise UsersError(f"user {user.user_id} is listed twice in the users file")
        out[user.user_id] = user
    return out


def _one_line(e: yaml.YAMLError) -> str:
    """PyYAML's error in one line: what is wrong, and where."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        m = e.problem_mark
        return f"{e.problem} at line {m.line + 1}, column {m.column + 1}"
    return " ".join(str(e).split())


USER_KEYS = ("user_id", "printed_name", "roles", "password_hash", "active")


def _user(i: int, u: Any) -> User:
    if not isinstance(u, dict):
        raise UsersError(f"user {i + 1}: expected a mapping with {', '.join(USER_KEYS)}")
    unknown = sorted(str(k) for k in u if k not in USER_KEYS)
    if unknown:
        raise UsersError(
            f"user {i + 1}: unknown key {unknown[0]!r}; the allowed keys are {', '.join(USER_KEYS)}"
        )
    active = u.get("active", True)
    if not isinstance(active, bool):
        raise UsersError(f"user {i + 1}: active is {active!r}; expected true or false")
    try:
        user = User(
            str(u["user_id"]),
            str(u["printed_name"]),
            tuple(str(r) for r in u.get("roles", [])),
            str(u["password_hash"]),
            active,
        )
    except (KeyError, TypeError) as e:
        raise UsersError(f"user {i + 1}: needs user_id, printed_name, password_hash") from e
    if not user.password_hash.startswith("$argon2id$"):
        raise UsersError(f"user {user.user_id}: password_hash is not an argon2id hash")
    return user


def users_yaml(users: list[dict[str, Any]]) -> str:
    """The users file for operators published by the server; validated before it is written."""
    doc = {
        "users": [
            {
                "user_id": str(u["user_id"]),
                "printed_name": str(u["printed_name"]),
                "roles": [str(r) for r in u.get("roles", [])],
                "password_hash": str(u["password_hash"]),
            }
            for u in users
        ]
    }
    text = "# Published by the server (ctgtp edge users-pull); do not edit.\n" + yaml.safe_dump(
        doc, sort_keys=False
    )
    load_users(text)  # refuse anything the station could not use
    return text
