"""Re-entered passwords within a continuous session (issue 16: an e-signature in ≤ 50 ms).

The first authentication of a user is the full argon2id check; a re-entry by the same user
within the session's idle time is checked against an in-memory verifier.  Whatever the path,
the outcome is the same: these tests count the full checks (a ``User`` that counts its own
``check_password`` calls) and hold the outcomes to the old rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest

from ebr_core.reentry import ReentryVerifiers
from edge.engine import Engine, EngineRefusal
from edge.users import User, hash_password

from .conftest import COI, PW, Clock


@dataclass(frozen=True)
class Counting(User):
    calls: list[str] = field(default_factory=list, compare=False)

    def check_password(self, password: str) -> bool:
        self.calls.append(self.user_id)
        return super().check_password(password)


@pytest.fixture
def counted(engine: Engine) -> Engine:
    engine.verifiers = ReentryVerifiers()
    engine.users = {
        uid: Counting(u.user_id, u.printed_name, u.roles, u.password_hash, u.active)
        for uid, u in engine.users.items()
    }
    return engine


def full_checks(e: Engine, user_id: str) -> int:
    u = e.users[user_id]
    assert isinstance(u, Counting)
    return len(u.calls)


def auth(e: Engine, user_id: str, password: str | None = None) -> User:
    pw = PW[user_id] if password is None else password
    return e.authenticate(user_id, pw, batch_id="B1", step=None)


def test_a_reentry_within_the_session_needs_no_second_full_check(counted: Engine) -> None:
    for _ in range(5):
        assert auth(counted, "op.alice").user_id == "op.alice"
    assert full_checks(counted, "op.alice") == 1
    # each person has their own: the verifier's first signature is a full check
    auth(counted, "op.bob")
    auth(counted, "op.bob")
    assert full_checks(counted, "op.bob") == 1 and full_checks(counted, "op.alice") == 1


def test_a_wrong_password_is_checked_in_full_counted_and_ends_the_fast_path(
    counted: Engine,
) -> None:
    counted.start_batch("B1", COI, "op.alice", PW["op.alice"])
    assert full_checks(counted, "op.alice") == 1
    with pytest.raises(EngineRefusal, match=r"wrong password for user op\.alice"):
        auth(counted, "op.alice", "alice-demo-pas")
    assert full_checks(counted, "op.alice") == 2
    assert counted.ledger.get_meta("fails:op.alice") == "1"
    auth(counted, "op.alice")  # the right one again: a full check, the count reset
    assert full_checks(counted, "op.alice") == 3
    assert counted.ledger.get_meta("fails:op.alice") == "0"


def test_three_wrong_reentries_still_lock_the_user(counted: Engine) -> None:
    auth(counted, "op.alice")
    for _ in range(2):
        with pytest.raises(EngineRefusal, match="wrong password"):
            auth(counted, "op.alice", "nope")
    with pytest.raises(EngineRefusal, match="is now locked"):
        auth(counted, "op.alice", "nope")
    with pytest.raises(EngineRefusal):  # locked: the right password no longer works
        auth(counted, "op.alice")


def test_an_idle_session_goes_back_to_the_full_check(counted: Engine, clock: Clock) -> None:
    auth(counted, "op.alice")
    clock.advance(seconds=counted.session_idle.total_seconds() + 1)
    auth(counted, "op.alice")
    assert full_checks(counted, "op.alice") == 2


def test_a_changed_password_hash_is_never_answered_from_memory(counted: Engine) -> None:
    auth(counted, "op.alice")
    old = counted.users["op.alice"]
    # users-pull brought a new hash (the password was changed at the server)
    counted.users["op.alice"] = replace(old, password_hash=hash_password("alice-new-pass-2026"))
    with pytest.raises(EngineRefusal, match="wrong password"):
        auth(counted, "op.alice")
    auth(counted, "op.alice", "alice-new-pass-2026")


def test_the_verifier_keeps_no_password_and_forgets_on_request() -> None:
    v = ReentryVerifiers(max_entries=2)
    h = hash_password("x-secret-pass")
    now = Clock()()
    idle = timedelta(minutes=15)
    assert not v.matches("op.x", h, "x-secret-pass", now, idle)
    v.remember("op.x", h, "x-secret-pass", now)
    assert v.matches("op.x", h, "x-secret-pass", now + timedelta(minutes=14), idle)
    assert not v.matches("op.x", h, "x-secret-pas", now, idle)
    assert not v.matches("op.y", h, "x-secret-pass", now, idle)  # another person
    assert b"x-secret-pass" not in repr(v._entries).encode()
    later = now + timedelta(minutes=14)
    assert not v.matches("op.x", h, "x-secret-pass", later - timedelta(seconds=1), idle)  # back
    v.forget("op.x")
    assert not v.matches("op.x", h, "x-secret-pass", later, idle)
    for i in range(5):  # bounded: the least recently used goes first
        v.remember(f"op.{i}", h, "x-secret-pass", now + timedelta(seconds=i))
    assert len(v) == 2
    assert v.matches("op.4", h, "x-secret-pass", now + timedelta(seconds=5), idle)
    assert not v.matches("op.0", h, "x-secret-pass", now + timedelta(seconds=5), idle)
