"""The hub of the kiosk's event streams: which page a scan goes to."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from edge.kiosk import live
from edge.kiosk.live import Hub


def _pages(hub: Hub, n: int) -> list[Any]:
    """``n`` pages opened on an event loop of their own thread (a browser test of the same
    worker may hold a running loop in this one)."""

    async def open_n() -> list[Any]:
        return [hub.open("sid", "step", "B1") for _ in range(n)]

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, open_n()).result()


def test_the_latest_page_is_the_newest_open_one() -> None:
    hub = Hub()
    assert hub.latest() is None
    a, b = _pages(hub, 2)
    assert hub.latest() is b
    hub.close_page(a)
    assert hub.latest() is b


def test_a_page_whose_stream_opens_again_is_still_the_latest_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A form's answer replaced the part holding the stream: until the new one opens, a scan goes
    to the page it replaces, for ``RECONNECT_S`` and no longer."""
    hub = Hub()
    a, b = _pages(hub, 2)
    hub.close_page(b)
    assert hub.latest() is b  # closed a moment ago: newer than the open a
    (c,) = _pages(hub, 1)
    assert hub.latest() is c  # its successor opened
    hub.close_page(c)
    now = live.time.monotonic()
    monkeypatch.setattr(live.time, "monotonic", lambda: now + live.RECONNECT_S + 0.1)
    assert hub.latest() is a  # c closed too long ago: the newest open page again
    hub.close_page(a)
    assert hub.latest() is None
