"""Issue 18, item 2: the lockout could be bypassed with parallel guesses (``failed_logins += 1``
was a read-modify-write): 60 parallel wrong passwords had 59 checked, and the right password was
then accepted.  Now a guess is checked only after it took an attempt slot in one atomic
statement: at most ``max_failed_logins`` guesses are ever checked, and the account is locked."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import BACKENDS, Server, server_settings, start_server
from tests.server.qa import PASSWORD, add_people

GUESSES = 25


def audit_of(server: Server, user_id: str) -> list[dict[str, object]]:
    with server.admin() as c:
        r = c.get("/v1/audit", params={"object_id": user_id, "limit": 1000})
        assert r.status_code == 200, r.text
        return list(r.json()["entries"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.usefixtures("production_argon2")  # the guesses overlap as long as argon2 runs
def test_parallel_guesses_check_at_most_five_and_lock(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Enough password-check slots that the gate never hides the race: every guess gets through
    # the gate, only the attempt slots stop them.
    settings = server_settings(backend, request, tmp_path, password_checks_max=GUESSES)
    with start_server(settings) as server:
        add_people(server, {"rev.victim": ("Vic Tim", [("qa_reviewer", "SITE-A")])})
        barrier = threading.Barrier(GUESSES)

        def guess(i: int) -> int:
            barrier.wait()
            r = httpx.post(
                server.url + "/v1/auth/token",
                json={"user_id": "rev.victim", "password": f"Wrong-Guess-{i:04d}!"},
                timeout=120,
            )
            assert "Wrong-Guess" not in r.text
            return r.status_code

        with ThreadPoolExecutor(GUESSES) as pool:
            codes = list(pool.map(guess, range(GUESSES)))
        assert set(codes) <= {401, 503}, codes

        checked = [
            e
            for e in audit_of(server, "rev.victim")
            if e["action"] == "login.failed" and e["reason"] == "wrong password"
        ]
        assert 1 <= len(checked) <= settings.max_failed_logins, len(checked)
        # The right password is refused now: the account is locked.
        r = httpx.post(
            server.url + "/v1/auth/token", json={"user_id": "rev.victim", "password": PASSWORD}
        )
        assert r.status_code == 401, r.text
        with server.admin() as c:
            victim = [p for p in c.get("/v1/people").json() if p["user_id"] == "rev.victim"]
            alerts = [a for a in c.get("/admin/alerts").json() if a["kind"] == "security.lockout"]
        assert victim[0]["status"] == "locked"
        assert len(alerts) == 1, alerts
