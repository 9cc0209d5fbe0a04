"""Bounds and types every domain's request schemas share.

Text bounds (issue 18): a reason, comment or other free text is at most :data:`TEXT` characters,
a name :data:`NAME`, an identifier :data:`ID`; over them a 422 names the field and the bound.
Passwords are plain strings checked in code (``server.people.passwords.password_argument``),
so that no error repeats them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

MAX_ID = 2**62  # ids and sequence numbers fit a signed 64-bit column
TEXT = 2000
NAME = 200
ID = 64
HASH = 64
Reason = Annotated[str, Field(min_length=1, max_length=TEXT)]
Ident = Annotated[str, Field(min_length=1, max_length=ID)]
PathId = Annotated[str, Path(max_length=ID)]
PathCoi = Annotated[str, Path(max_length=128)]


class Document(BaseModel):
    """A response the read model builds as a document: the fields named are always there, and
    the rest of the document passes through as built (a batch view, a timeline)."""

    model_config = ConfigDict(extra="allow")
