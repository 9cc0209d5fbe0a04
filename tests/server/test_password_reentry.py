"""A person's re-entered password within a review session is checked in memory (issue 16: the
server's e-signature p99), with the same outcomes as the full argon2id check."""

from __future__ import annotations

import pytest

from server.people import passwords
from server.people.passwords import Attempt, check_attempt, hash_password

PASSWORD = "Correct-Horse-2026!"


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = passwords.check_password_hash

    def counted(password_hash: str, password: str) -> bool:
        calls.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "check_password_hash", counted)
    monkeypatch.setattr(passwords, "REENTRY", passwords.ReentryVerifiers())
    return calls


def attempt(h: str, user: str = "qa.rita", slot: int = 1) -> Attempt:
    return Attempt(user, user if slot else None, h, slot, None if slot else "locked")


def test_a_second_signature_in_the_session_needs_no_second_argon2(full_checks: list[str]) -> None:
    h = hash_password(PASSWORD)
    assert check_attempt(attempt(h), PASSWORD)
    assert check_attempt(attempt(h), PASSWORD)
    assert check_attempt(attempt(h), PASSWORD)
    assert len(full_checks) == 1


def test_wrong_locked_and_changed_are_never_answered_from_memory(full_checks: list[str]) -> None:
    h = hash_password(PASSWORD)
    assert check_attempt(attempt(h), PASSWORD)
    assert not check_attempt(attempt(h), PASSWORD + "x")  # full check, and the entry is gone
    assert check_attempt(attempt(h), PASSWORD)
    assert len(full_checks) == 3
    # no slot (locked, disabled, too many attempts): refused even with the right password
    assert not check_attempt(attempt(passwords.dummy_hash(), slot=0), PASSWORD)
    # a new hash (reset or changed password): the old password no longer matches
    new = hash_password("Another-Horse-2026!")
    assert not check_attempt(attempt(new), PASSWORD)
    assert check_attempt(attempt(new), "Another-Horse-2026!")
