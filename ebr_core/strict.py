"""Strict pydantic models for the documents people write by hand (the MBR, the materials list):
an unknown key is refused, naming it, the allowed keys and the closest one, so a typo such as
``critcal`` never silently drops a rule; and the helpers that word a refusal."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


def show(v: Any) -> str:
    """A value as quoted in an error, at most 60 characters."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def loc_path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a document path: ``steps[3].values[0].soft``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def missing_key(loc: tuple[Any, ...]) -> tuple[str, str]:
    """Where a missing key belongs (its parent's path) and what is wrong."""
    path = loc_path(loc)
    return path.rpartition(".")[0] or path.rpartition("[")[0], f"missing key {loc[-1]!r}"


MAX_REPORTED = 10


def error_line(err: Any) -> str:
    """One pydantic error as ``path: what (got value)``."""
    loc = tuple(err["loc"])
    path = loc_path(loc)
    if err["type"] == "missing":
        path, what = missing_key(loc)
    else:
        what = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] != "value_error":
            what += f" (got {show(err.get('input'))})"
    return f"{path or '(top level)'}: {what}"


def describe_errors(
    e: ValidationError, head: str, line: Callable[[Any], str] = error_line
) -> str:
    """Every problem of a document, one per line (the first :data:`MAX_REPORTED`), under
    ``head`` ("<file> is not a valid ...")."""
    errors = e.errors(include_url=False)
    lines = [line(err) for err in errors[:MAX_REPORTED]]
    if len(errors) > MAX_REPORTED:
        lines.append(f"... and {len(errors) - MAX_REPORTED} more")
    if len(lines) == 1:
        return f"{head}: {lines[0]}"
    return f"{head} ({len(errors)} problems):\n  " + "\n  ".join(lines)


class StrictModel(BaseModel):
    """A mapping of a hand-written document: no unknown keys, no coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        allowed = list(cls.model_fields)
        if not isinstance(data, dict):
            raise ValueError(
                f"expected a mapping with the keys {', '.join(allowed)}; got "
                f"{type(data).__name__} {show(data)}"
            )
        for key in data:
            if key not in cls.model_fields:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"unknown key {key!r}{hint}; the allowed keys are {', '.join(allowed)}"
                )
        return data
