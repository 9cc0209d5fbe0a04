"""The tests run the server's password hashing at cheap argon2id parameters (tests/conftest.py);
production keeps argon2id at the library's defaults, checked here."""

from __future__ import annotations

from argon2 import PasswordHasher, Type, extract_parameters

from server.people import passwords
from tests.conftest import TEST_HASHER

PASSWORD = "Blue-Harbour-2026!"


def test_the_server_hashes_with_argon2id_at_the_library_defaults(
    production_argon2: PasswordHasher,
) -> None:
    params = extract_parameters(passwords.hash_password(PASSWORD))
    assert params.type is Type.ID
    assert (params.time_cost, params.memory_cost, params.parallelism) == (3, 65536, 4)
    # the dummy hash an unknown id is checked against costs the same
    assert extract_parameters(passwords.dummy_hash()) == params
    assert passwords.check_password_hash(passwords.hash_password(PASSWORD), PASSWORD)


def test_the_tests_cheap_hashes_are_argon2id_and_check_the_same_way() -> None:
    assert TEST_HASHER.type is Type.ID
    h = passwords.hash_password(PASSWORD)
    assert h.startswith("$argon2id$") and extract_parameters(h).time_cost == 1
    assert passwords.check_password_hash(h, PASSWORD)
    assert not passwords.check_password_hash(h, PASSWORD + "x")
