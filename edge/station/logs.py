"""The station agent's structured log: one JSON object per line (ASCII), one line per event.

Every line has ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` (``device.connected``,
``device.lost``, ``sync.round``, ``scan.received``, ``error``…; ``log`` for a library's plain
message) and ``msg``; an event's own fields follow.  Passwords never reach it: URLs are logged
through :func:`edge.station.config.redact`, and no field carries a password or a secret.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

log = logging.getLogger("ctgtp.edge.station")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if k not in doc})
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        # ASCII only: JSON leaves U+0085, U+2028 and U+2029 as they are otherwise, and a reader
        # that splits on any line break (Python's splitlines) would cut the event in two.
        return json.dumps(doc, ensure_ascii=True, default=str)


def event(name: str, msg: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log the event ``name`` with its fields."""
    log.log(level, msg, extra={"event": name, "fields": fields})


def configure(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send every logger's records (the transports', uvicorn's, the agent's) as JSON lines to
    ``stream`` (standard error by default); returns the handler, for :func:`unconfigure`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own logging setup (if anything in the process ran it) gives its loggers their
    # own handlers and stops them propagating: its lines would bypass the JSON log.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    threading.excepthook = _thread_error
    return handler


def _thread_error(args: threading.ExceptHookArgs) -> None:
    """A thread's uncaught exception: an ``error`` line like any other, not a bare traceback."""
    if args.exc_type is SystemExit:
        return
    where = args.thread.name if args.thread is not None else "a thread"
    log.error(
        "uncaught in %s: %s",
        where,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
        extra={"event": "error", "fields": {"thread": where}},
    )


def unconfigure(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
