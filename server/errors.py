"""One error type for the server, mapped to HTTP in one handler (see app.py)."""

from __future__ import annotations


class ServerError(Exception):
    """An error with the HTTP status and the message a client should see."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class Unauthorized(ServerError):
    status = 401


class Forbidden(ServerError):
    status = 403


class NotFound(ServerError):
    status = 404


class Conflict(ServerError):
    status = 409


class TooLarge(ServerError):
    status = 413


class Unprocessable(ServerError):
    status = 422


class TooManyRequests(ServerError):
    status = 429


class Replayed(ServerError):
    """A request whose nonce was already used: refused; the client may re-sign and retry."""

    status = 409
