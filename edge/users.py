"""Local operators and their argon2id credential hashes (until the server publishes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

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

    def check_password(self, password: str) -> bool:
        try:
            return _HASHER.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def load_users(text: str) -> dict[str, User]:
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsersError(f"users file is not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("users"), list):
        raise UsersError("users file must be a mapping with a 'users' list")
    out: dict[str, User] = {}
    for i, u in enumerate(doc["users"]):
        try:
            user = User(
                str(u["user_id"]),
                str(u["printed_name"]),
                tuple(str(r) for r in u.get("roles", [])),
                str(u["password_hash"]),
            )
        except (KeyError, TypeError) as e:
            raise UsersError(f"user {i + 1}: needs user_id, printed_name, password_hash") from e
        if not user.password_hash.startswith("$argon2id$"):
            raise UsersError(f"user {user.user_id}: password_hash is not an argon2id hash")
        out[user.user_id] = user
    return out


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
