"""Small rules for text and times every domain of the server shares: free text a record can
hold, a required reason, and stored times written as ISO 8601 UTC.  Pure (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

from server.errors import Unprocessable


def aware(t: datetime) -> datetime:
    """A stored time as an aware datetime (SQLite hands back naive datetimes; every stored time
    is UTC)."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def iso(t: datetime | None) -> str | None:
    """ISO 8601 in UTC."""
    if t is None:
        return None
    return aware(t).isoformat()


def storable(field_: str, value: str) -> str:
    """Refuse free text a record cannot hold as given: a NUL character (PostgreSQL text refuses
    it; SQLite would keep it and every reader after would see a cut string), named by field."""
    if "\x00" in value:
        raise Unprocessable(
            f"the {field_} contains a NUL character (\\x00), which a record cannot hold: "
            "send the text without it"
        )
    return value


def need_reason(reason: str, field_: str = "reason") -> None:
    if not reason or not reason.strip():
        raise Unprocessable("a reason is required")
    storable(field_, reason)
