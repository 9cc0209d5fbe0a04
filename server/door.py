"""The door: what every request passes before any route sees it.

:class:`BodyLimit` answers a request body over the route's limit with 413 before the app parses
it, counting the bytes as they arrive, and refuses JSON nested deeper than
:data:`ebr_core.canonical.MAX_DEPTH` levels or holding a NUL character in any text (422, naming
where), in the same problem-details format as the app's handler (:mod:`server.errors`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from ebr_core.canonical import MAX_DEPTH, depth
from server.errors import (
    MEDIA_TYPE,
    NulCharacter,
    ServerError,
    TooDeep,
    TooLarge,
    Unprocessable,
    problem_json,
)
from server.settings import Settings

UNIT_API = "/v1/units/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


async def _answer(send: Send, e: ServerError) -> None:
    """Answer at the door with the same problem document the app's handler gives."""
    body = problem_json(e)
    await send(
        {
            "type": "http.response.start",
            "status": e.status,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: a request body over the route's limit is answered 413 before the app
    parses it (a 200 MiB login body was once parsed).  ``Content-Length`` is checked first, but
    the bytes are counted as they arrive, so a chunked or lying body is stopped too.  Bodies of
    routes other than the unit API (which streams its own, up to ``max_body_bytes``) are read
    here, and JSON nested deeper than :data:`MAX_DEPTH` is answered 422 before any parser
    recurses into it."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        unit_api = str(scope.get("path", "")).startswith(UNIT_API)
        limit = self.settings.max_body_bytes if unit_api else self.settings.max_api_body_bytes
        too_large = f"request body over {limit} bytes (the limit of this route)"
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or len(length) > 18):
            await _answer(send, ServerError("Content-Length is not a byte count"))
            return
        if length is not None and int(length) > limit:
            await _answer(send, TooLarge(too_large))
            return
        if unit_api:
            await self._counted(scope, receive, send, limit, too_large)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnected: nothing to limit
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, TooLarge(too_large))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and b"json" in headers.get(b"content-type", b""):
            problem = _json_problem(body)
            if problem is not None:
                await _answer(send, problem)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _counted(
        self, scope: Scope, receive: Receive, send: Send, limit: int, too_large: str
    ) -> None:
        size, started = 0, False

        async def counting() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise _BodyTooLarge
            return message

        async def watching(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, watching)
        except _BodyTooLarge:
            if not started:
                await _answer(send, TooLarge(too_large))


def _json_problem(body: bytes) -> Unprocessable | None:
    """Why a JSON body is refused before parsing (nesting), or None: invalid JSON is left to the
    route's own validation, which names the problem."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if "recursion" in str(e).lower() or "depth" in str(e).lower():
            return TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
        return None
    if depth(value) > MAX_DEPTH:
        return TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    where = _nul_at(value, "body")
    if where is not None:
        return NulCharacter(
            f"{where} contains a NUL character (\\u0000), which no record can hold "
            "(PostgreSQL text refuses it); send the text without it"
        )
    return None


def _nul_at(value: Any, path: str) -> str | None:
    """Where the first NUL character is in a parsed JSON value (a key or a string), or None.
    Any route's text may end up in a record or the audit trail, so it is refused at the door."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                return f"a key of {path}"
            found = _nul_at(v, f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _nul_at(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None
