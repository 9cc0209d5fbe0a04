"""What every test shares: one headless Chromium for the whole run (Playwright's sync API allows
one running instance per thread, so the kiosk's and the console's tests must not each start
their own); the test's outcome on its node for the screenshot-on-failure fixtures; and cheap
argon2id parameters for the servers the tests run in their own process.

Argon2id at the library's defaults (64 MiB, 3 passes, 4 lanes) costs 0.1-0.2 s a hash and
every test person is hashed twice and checked at least twice; the suite spent minutes in it.
The tests' in-process servers therefore hash with argon2id at the smallest parameters; a test
that depends on the real cost (login timing, the password gate under a flood) asks for
:func:`production_argon2`, and ``tests/server/test_argon2_parameters.py`` checks that the
production hasher is the library's default argon2id.  Servers started as processes
(``ctgtp server run``) always use the production parameters.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, Type

CHROMIUM = Path("/usr/bin/chromium")


# Still argon2id, and still verified by the same code: only the cost differs.
TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=Type.ID)


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_is_python_s() -> Iterator[None]:
    """Ctrl-C as a command sees it: pytest-xdist's workers start with SIGINT ignored, so
    ``_thread.interrupt_main()`` did nothing (``sync --watch`` waited for its Ctrl-C until the
    timeout) and a child process inherited the ignored signal (an interrupted export finished
    its file instead of removing it).  Which tests failed depended on the order they ran in."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session", autouse=True)
def _cheap_argon2() -> Iterator[PasswordHasher]:
    """Yields the server's own hasher, set aside for the run."""
    from server.people import passwords

    production, dummy = passwords._HASHER, passwords._dummy
    passwords._HASHER, passwords._dummy = TEST_HASHER, []
    yield production
    passwords._HASHER, passwords._dummy = production, dummy


@pytest.fixture
def production_argon2(
    _cheap_argon2: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> PasswordHasher:
    """The server's own argon2id hasher for this test, with its own dummy hash (an unknown id
    is checked against a hash of the same cost as a known one)."""
    from server.people import passwords

    production = _cheap_argon2
    monkeypatch.setattr(passwords, "_HASHER", production)
    monkeypatch.setattr(passwords, "_dummy", [])
    return production


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's chromium is not installed at /usr/bin/chromium (make setup installs it "
            "with apt; Playwright's own browser download is not reachable here)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


# The longest tests (a minute or more each on two busy cores), started first: with pytest-xdist's
# work stealing, a long test that comes last sets the end of the run while the other worker idles.
LONGEST = (
    "tests/server/test_fleet.py::test_fleet_200_units_two_workers",
    "tests/server/test_authz.py::test_authorization_matrix",
    "tests/security/test_people_flood.py::",
    "tests/security/test_ingest_attacks.py::test_identical_segments_at_the_same_moment",
    "tests/test_demo.py::",
    "tests/security/test_people_duties.py::test_one_administrator_cannot_sign_or_release_alone",
    "tests/server/test_custody_api.py::test_custody_chain_through_the_api",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((n for n, p in enumerate(LONGEST) if item.nodeid.startswith(p)), len(LONGEST))

    items.sort(key=rank)  # stable: the others keep their order

