"""Strict pydantic models for the documents people write by hand (the MBR, the materials list):
an unknown key is refused, naming it, the allowed keys and the closest one, so a typo such as
``critcal`` never silently drops a rule; and the helpers that word a refusal."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


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
