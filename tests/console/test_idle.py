"""The console's idle timeout, with the server's clock injected (no sleeping): a session in use
through a 30-minute review is not cut off at the 15-minute idle timeout (its expiry slides with
each request), one left idle for longer is signed out, and a session in use still ends at its
absolute end.  The API's bearer sessions slide the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.settings import Settings
from tests.server.conftest import ADMIN, Server, start_server
from tests.server.qa import add_people, login

from .conftest import Served, new_page, sign_in


@contextmanager
def reviewer_server(
    tmp_path: Path, clock: Callable[[], datetime], **settings: Any
) -> Iterator[Server]:
    """A server (SQLite) with one reviewer, rev.a, at SITE-A."""
    s = Settings(
        database_url=f"sqlite:///{tmp_path / 'server.db'}",
        data_dir=tmp_path / "server",
        admin_token=ADMIN,
        rate_per_second=1000,
        rate_burst=1000,
        **settings,
    )
    with start_server(s, clock) as srv:
        add_people(srv, {"rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")])})
        yield srv


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[tuple[Server, list[datetime]]]:
    t = [datetime.now(UTC)]
    with reviewer_server(tmp_path, lambda: t[0]) as srv:
        yield srv, t


def test_idle_timeout_slides_with_use_and_ends_at_the_absolute_maximum(
    clocked: tuple[Server, list[datetime]], browser: Any, tmp_path: Path
) -> None:
    server, t = clocked
    assert server.settings.token_ttl_s == 15 * 60  # the default idle timeout
    page = new_page(browser, Served(server, server.url), tmp_path / "screens")
    try:
        sign_in(page, server.url, "rev.a")
        # A 30-minute review: a page every 5 minutes; never signed out.
        for _ in range(6):
            t[0] += timedelta(minutes=5)
            page.goto(f"{server.url}/console/queue")
            assert page.url.endswith("/console/queue"), page.url
        # Left idle for 16 minutes: signed out, and told why.
        t[0] += timedelta(minutes=16)
        page.goto(f"{server.url}/console/queue")
        assert "/console/signin?expired=1" in page.url
        assert "signed out after 15 minutes idle" in page.inner_text("main")
        page.screens.check("signed-out-idle")

        # In use, but not forever: the absolute end (40 minutes here) ends it.
        server.app.state.access.session_max_s = 40 * 60
        sign_in(page, server.url, "rev.a")
        for minute in (10, 20, 30):
            t[0] += timedelta(minutes=10)
            page.goto(f"{server.url}/console/queue")
            assert page.url.endswith("/console/queue"), minute
        t[0] += timedelta(minutes=10, seconds=1)
        page.goto(f"{server.url}/console/queue")
        assert "/console/signin?expired=1" in page.url
    finally:
        page.context.close()
        server.app.state.access.session_max_s = 12 * 3600

    # The API's sessions slide the same way (one request every 10 minutes for 40 minutes).
    c = login(server, "rev.a")
    for _ in range(4):
        t[0] += timedelta(minutes=10)
        assert c.get("/v1/me").status_code == 200
    t[0] += timedelta(minutes=15, seconds=1)
    r = c.get("/v1/me")
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_a_page_left_alone_is_cleared_when_its_session_ends(browser: Any, tmp_path: Path) -> None:
    """The browser side: after the idle time with no request, the page removes what it shows
    at once (even when the sign-in screen cannot be reached) and goes to the sign-in screen."""
    # an idle timeout of 3 s (15 minutes in production)
    with reviewer_server(tmp_path, lambda: datetime.now(UTC), token_ttl_s=3) as server:
        page = new_page(browser, Served(server, server.url), tmp_path / "screens")
        try:
            page.goto(f"{server.url}/console/signin")
            assert page.get_attribute("body", "data-idle-s") is None  # nobody signed in
            sign_in(page, server.url, "rev.a")
            assert page.get_attribute("body", "data-idle-s") == "3"
            assert page.locator("nav.screens").count() == 1
            page.wait_for_selector("#session-ended", timeout=10_000)  # cleared at once
            assert page.locator("nav.screens").count() == 0
            main = page.inner_text("main")
            assert "Your session ended after" in main and "Review queue" not in main
            assert main.strip() == page.inner_text("#session-ended").strip()
            # then the sign-in screen, where the server (which ended the session) says why
            page.wait_for_url("**/console/signin?expired=1", timeout=10_000)
            assert "sign in again" in page.inner_text("main")
            # and the session is over on the server too
            page.goto(f"{server.url}/console/queue")
            assert "/console/signin?expired=1" in page.url
        finally:
            page.context.close()
