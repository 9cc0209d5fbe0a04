"""Attack tests against the real server over HTTP (issue 18): the server fixtures are shared with
``tests/server``."""

from __future__ import annotations

from tests.server.conftest import pg, server  # noqa: F401 - pytest fixtures
