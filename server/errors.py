"""The server's errors and their one wire format: RFC 9457 problem details.

Every refusal is a :class:`ServerError` subclass; one handler (:func:`install`) answers each as
``application/problem+json``::

    {"type": "https://ctgtp.dev/problems/replayed", "title": "Request replayed",
     "status": 409, "detail": "replayed request: nonce ... was already used"}

``type`` is stable: clients (the edge's sync client among them) branch on it, never on
``detail``, which is prose for people.  The HTTP status of each refusal is the one the server
always gave.  The same handler answers FastAPI's validation errors (``type`` ``validation``,
with ``errors``: where and what, never the submitted value, so a password never comes back in a
422) and Starlette's own 404/405, and :class:`server.app.BodyLimit` answers its refusals at the
door with the same shape.  The list of types is ``docs/api-problems.md``.

This module owns the types and the format, not the decision to refuse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

PROBLEM_BASE = "https://ctgtp.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class ServerError(Exception):
    """An error with the HTTP status, the problem type and the message a client should see.

    A subclass names its problem type in its header, ``class Replayed(Conflict, slug="replayed",
    title="Request replayed")``, and its status where it differs from its parent's; what it
    does not name it inherits."""

    status = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"
    retry_after_s: ClassVar[int | None] = None

    def __init_subclass__(
        cls,
        *,
        slug: str | None = None,
        title: str | None = None,
        status: int | None = None,
        retry_after_s: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if slug is not None:
            cls.slug = slug
        if title is not None:
            cls.title = title
        if status is not None:
            cls.status = status
        if retry_after_s is not None:
            cls.retry_after_s = retry_after_s

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    def extensions(self) -> dict[str, Any]:
        """Extension members of the problem document (RFC 9457 section 3.2)."""
        return {}

    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


# The types, by status: each header names the type; the docstring says when it is answered.


class Unauthorized(ServerError, status=401, slug="unauthenticated", title="Not authenticated"):
    """No valid bearer token or password, or a unit request whose signature does not verify."""


class ClockSkew(Unauthorized, slug="clock-skew", title="Request time outside the server's window"):
    """A unit's signed request is dated outside the server's window: set the unit's clock."""


class Forbidden(ServerError, status=403, slug="forbidden", title="Not permitted"):
    """The caller lacks the permission at the object's site, or a rule of separation of duties
    refuses it (every 403 is audited)."""


class UnknownWitness(Forbidden, slug="unknown-witness", title="Witness not configured"):
    """A cosignature pushed to the transparency log by a witness (name and key ID) the server
    is not configured to accept (``log_witnesses``)."""


class UnitRevoked(Forbidden, slug="unit-revoked", title="Unit revoked"):
    """The unit, or the key it signed with, is revoked."""


class ForeignBatch(
    Forbidden, slug="foreign-batch", title="Segment writes into a batch this unit does not own"
):
    """A segment writes into a batch another unit started, or an event kind only the server
    writes: refused, nothing of it kept."""


class NotFound(ServerError, status=404, slug="not-found", title="Not found"):
    """No such object or route."""


class MethodNotAllowed(
    ServerError, status=405, slug="method-not-allowed", title="Method not allowed"
):
    """The route exists, not with this method."""


class Conflict(ServerError, status=409, slug="conflict", title="Conflicts with the stored state"):
    """The request conflicts with the stored state (already decided, changed since read...)."""


class Replayed(Conflict, slug="replayed", title="Request replayed"):
    """A request whose nonce was already used: refused; the client may re-sign and retry."""


class HistoryFork(Conflict, slug="fork", title="History rewritten"):
    """A segment rewrites history the server holds: refused, kept as evidence, alerted."""


class TooLarge(ServerError, status=413, slug="too-large", title="Request too large"):
    """The body is over the route's limit (or a segment over its uncompressed limit)."""


class Unprocessable(ServerError, status=422, slug="unprocessable", title="Request refused"):
    """A value the rules refuse."""


class InvalidSegment(Unprocessable, slug="invalid-segment", title="Segment malformed"):
    """A segment line is not a well-formed record of this unit's chain."""


class SignatureInvalid(Unprocessable, slug="signature-invalid", title="Segment does not verify"):
    """A segment's records are well formed but do not verify: a signature, a hash, a link to
    the event before, the sequence, the unit, or a checkpoint covering the events."""


class LogRange(Unprocessable, slug="log-range", title="Outside the log"):
    """A proof or tile asked of the transparency log for sizes or indexes it does not have (an
    old size above the new one, a size beyond the tree, an index outside it)."""


class CosignatureRefused(Unprocessable, slug="cosignature-refused", title="Cosignature refused"):
    """A pushed witness cosignature refused: the note is malformed, its checkpoint is not one
    the server signed (no stored checkpoint of that size, or another root or origin), or a
    cosignature does not verify under the configured witness key.  Nothing is stored."""


class TooDeep(Unprocessable, slug="nesting-too-deep", title="JSON nested too deeply"):
    """JSON nested deeper than the parser is allowed to recurse."""


class NulCharacter(Unprocessable, slug="nul-character", title="Text contains a NUL character"):
    """A text of a JSON body contains a NUL character."""


class ValidationFailed(Unprocessable, slug="validation", title="Request does not match the schema"):
    """The body, path or query does not match the route's schema."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:10])
        super().__init__(f"{len(errors)} error(s): {where}")
        self.errors = errors

    def extensions(self) -> dict[str, Any]:
        return {"errors": self.errors}


class TooManyRequests(
    ServerError, status=429, slug="rate-limited", title="Too many requests", retry_after_s=1
):
    """More requests than the caller's budget: try again after ``Retry-After``."""


class Unavailable(
    ServerError, status=503, slug="unavailable", title="Try again shortly", retry_after_s=1
):
    """Try again shortly: nothing of the request was kept."""


class Busy(Unavailable, slug="busy", title="Password checks busy"):
    """Every password-check slot is taken: try again shortly (answered 503 with Retry-After)."""


class ValidationItem(BaseModel):
    loc: list[str]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem details document (the body of every error response)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=[PROBLEM_BASE + "not-found"])
    title: str
    status: int
    detail: str
    errors: list[ValidationItem] | None = None


def problem_json(e: ServerError) -> bytes:
    return orjson.dumps(
        {"type": e.type, "title": e.title, "status": e.status, "detail": e.message} | e.extensions()
    )


def problem_response(e: ServerError) -> Response:
    return Response(problem_json(e), status_code=e.status, media_type=MEDIA_TYPE,
                    headers=e.headers())  # fmt: skip


def validation_errors(e: RequestValidationError) -> list[dict[str, Any]]:
    """Where and what, never the submitted value: ``input`` and ``ctx`` are dropped (a 422 once
    echoed the submitted password)."""
    return [
        {"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg", "")),
         "type": str(err.get("type", ""))}
        for err in e.errors()
    ]  # fmt: skip


_STARLETTE = {404: NotFound, 405: MethodNotAllowed}


def install(app: FastAPI, on_forbidden: Callable[[Request, Forbidden], Awaitable[None]]) -> None:
    """The one handler: every refusal leaves as a problem document.  ``on_forbidden`` runs before
    a 403 is answered (the audit of refused authorizations)."""

    async def server_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, ServerError)
        if isinstance(e, Forbidden):
            await on_forbidden(request, e)
        return problem_response(e)

    async def invalid(_request: Request, e: Exception) -> Response:
        assert isinstance(e, RequestValidationError)
        return problem_response(ValidationFailed(validation_errors(e)))

    async def http(_request: Request, e: Exception) -> Response:
        assert isinstance(e, HTTPException)
        cls = _STARLETTE.get(e.status_code, ServerError)
        return problem_response(cls(str(e.detail), status=e.status_code))

    app.add_exception_handler(ServerError, server_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http)


# The error responses every route may give, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": d}
    for status, d in (
        (401, "Not authenticated (problem details)"),
        (403, "Not permitted (problem details)"),
        (404, "Not found (problem details)"),
        (409, "Conflicts with the stored state (problem details)"),
        (413, "Request too large (problem details)"),
        (422, "Refused or invalid request (problem details; `errors` for schema errors)"),
        (429, "Too many requests (problem details)"),
        (503, "Try again shortly (problem details)"),
    )
}
