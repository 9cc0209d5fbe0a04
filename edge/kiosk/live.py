"""Server-Sent Events: each open kiosk page holds one stream; the hub pushes to it.

Codes read by the station's scanner arrive on the agent's reader threads
(:meth:`~edge.kiosk.port.StationPort.set_scan_sink`); the hub hands them to the page opened last
by a browser, so a scan goes where the operator is looking.  Pushing is thread-safe: a reader
thread puts the message on the page's queue through the page's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field

QUEUE_MAX = 64  # a page that stops reading loses its oldest messages, never blocks a scanner
RECONNECT_S = 5.0  # a page reloaded, or whose stream broke, opens its stream again


@dataclass
class Page:
    """One open page's stream."""

    number: int
    sid: str
    screen: str
    batch: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, str]] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))

    def push(self, event: str, data: str) -> None:
        """Queue an SSE message (from any thread)."""

        def put() -> None:
            if self.queue.full():
                self.queue.get_nowait()
            self.queue.put_nowait((event, data))

        with contextlib.suppress(RuntimeError):  # the loop has closed: the page is gone
            self.loop.call_soon_threadsafe(put)


class Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[int, Page] = {}
        self._numbers = itertools.count(1)
        self._gone: tuple[Page, float] | None = None  # the newest page closed, and when
        self.closed = False

    def open(self, sid: str, screen: str, batch: str | None) -> Page:
        page = Page(next(self._numbers), sid, screen, batch, asyncio.get_running_loop())
        with self._lock:
            self._pages[page.number] = page
        return page

    def close_page(self, page: Page) -> None:
        with self._lock:
            self._pages.pop(page.number, None)
            if self._gone is None or page.number > self._gone[0].number:
                self._gone = (page, time.monotonic())

    def latest(self) -> Page | None:
        """The page opened last (the one the operator is looking at); for ``RECONNECT_S`` after
        its stream closes (a page reloaded, a stream broken) while no newer one is open, that
        page still, since the operator is most likely still at its screen."""
        with self._lock:
            newest = self._pages[max(self._pages)] if self._pages else None
            gone = self._gone
        recent = gone is not None and time.monotonic() - gone[1] < RECONNECT_S
        if gone is not None and recent and (newest is None or gone[0].number > newest.number):
            return gone[0]
        return newest

    def pages_of(self, sid: str) -> list[Page]:
        with self._lock:
            return [p for p in self._pages.values() if p.sid == sid]

    def close(self) -> None:
        """End every stream (the kiosk is stopping)."""
        self.closed = True
        with self._lock:
            pages = list(self._pages.values())
        for p in pages:
            p.push("close", "")


def panel(element_id: str, html: str) -> str:
    """``html`` as the new content of the page's element ``element_id``: an out-of-band swap,
    taken by the layout's panel-sink (which a form's answer does not replace)."""
    return f'<div id="{element_id}" hx-swap-oob="true">{html}</div>'


def sse(event: str, data: str) -> str:
    """One SSE message; every line of ``data`` becomes a ``data:`` line (the client joins them
    with newlines), so HTML with line breaks arrives intact."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"
