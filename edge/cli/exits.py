"""Exit codes, decided in one place for every ``ctgtp edge`` command.

===  =====================================================================================
0    done
1    refused or invalid: the engine refused the action, a record or document failed its
     verification, a value or file was not what is expected (the message says what was)
2    usage: an unknown command or option, a missing argument (Click's own)
75   try again later (``EX_TEMPFAIL``): the ledger or the sync lock is held by another
     process, the disk refused a write, the server could not be reached
===  =====================================================================================

Nothing already recorded is altered by a refusal; the message goes to stderr as one line
(``Error: ...``), or as one JSON object with ``--json``.
"""

from __future__ import annotations

import errno
from typing import IO, Any

import click
import orjson

from ebr_core.errors import EbrError
from edge.errors import EdgeError, LedgerBusyError, LedgerClosedError, LedgerIOError

from .options import JSON_META

OK = 0
REFUSED = 1
USAGE = 2
TEMPFAIL = 75

# An OSError with one of these is the disk failing or full, not a wrong path or permission.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EAGAIN, errno.EBUSY})


def classify(e: BaseException) -> tuple[int, str]:
    """The exit code for an error a command let through, and its kind in the JSON form:
    ``usage``, ``refused``, ``busy`` (another process holds the ledger or the sync lock) or
    ``unavailable`` (the disk or the server failed; nothing was recorded)."""
    from edge.sync import SyncBusy, SyncError, SyncRefused  # (httpx: only when an error ends)

    if isinstance(e, click.UsageError):
        return USAGE, "usage"
    if isinstance(e, LedgerBusyError | SyncBusy):
        return TEMPFAIL, "busy"
    if isinstance(e, LedgerIOError | LedgerClosedError):
        return TEMPFAIL, "unavailable"
    if isinstance(e, SyncError) and not isinstance(e, SyncRefused):
        return TEMPFAIL, "unavailable"  # unreachable, clock skew: the next sync resumes
    if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
        return TEMPFAIL, "unavailable"
    return REFUSED, "refused"


def describe(e: BaseException) -> str:
    """One line naming what was wrong (an OSError names its file, as the other errors do)."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"cannot use {e.filename}: {e.strerror or e}"
    return str(e)


class Failure(click.ClickException):
    """An error a command let through, shown as one line (or JSON) with its exit code."""

    def __init__(self, message: str, kind: str, as_json: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.as_json = as_json

    def show(self, file: IO[Any] | None = None) -> None:
        if not self.as_json:
            super().show(file)
            return
        body = {"error": self.kind, "message": self.message, "exit_code": self.exit_code}
        click.echo(orjson.dumps(body).decode(), err=True, file=file)


class Refused(Failure):
    exit_code = REFUSED


class Usage(Failure):
    exit_code = USAGE


class TryLater(Failure):
    exit_code = TEMPFAIL


def failure(message: str, code: int, kind: str, as_json: bool) -> Failure:
    cls = {USAGE: Usage, TEMPFAIL: TryLater}.get(code, Refused)
    return cls(message, kind, as_json)


class EdgeGroup(click.Group):
    """The ``edge`` group: an error from the agent, the engine, the ledger, sync or a file
    becomes its exit code (:func:`exit_code`) and one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Failure:
            raise
        except click.ClickException as e:
            if not ctx.meta.get(JSON_META):
                raise  # Click shows it (a usage error with the usage line)
            _, kind = classify(e)
            raise failure(e.format_message(), e.exit_code, kind, True) from e
        except (EdgeError, EbrError, OSError) as e:
            code, kind = classify(e)
            raise failure(describe(e), code, kind, bool(ctx.meta.get(JSON_META))) from e
