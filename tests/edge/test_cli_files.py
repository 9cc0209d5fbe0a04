"""Files an operator hands to ``ctgtp edge``: a users file that is wrong is refused at ``init``
naming what is wrong and what is expected (and no home is made); an export clears what an
interrupted one left behind, never a running one's file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import COI, EXAMPLES
from .test_cli import at, fails, home, ok, published, pw, started

__all__ = ["home", "published", "started"]

HASH = "$argon2id$v=19$m=65536,t=3,p=4$OnQ7Lg9+sH0KBUgFX0poVQ$Iqfs0ieDvRhA0T9/UdFemzqmqimUjJ8B2"
ONE = f"  - user_id: op.x\n    printed_name: X\n    password_hash: '{HASH}'\n"
KEYS = "user_id, printed_name, roles, password_hash, active"


@pytest.mark.parametrize(
    ("users_yaml", "message"),
    [
        (
            "users: [",
            "users file is not valid YAML: expected the node content, but found '<stream end>' "
            "at line 1, column 9",
        ),
        ("- op.x\n", "users file must be a mapping with a 'users' list"),
        ("users:\n  - 3\n", f"user 1: expected a mapping with {KEYS}"),
        (
            f"users:\n{ONE}    actve: false\n",
            f"user 1: unknown key 'actve'; the allowed keys are {KEYS}",
        ),
        (f"users:\n{ONE}    active: 'no'\n", "user 1: active is 'no'; expected true or false"),
        ("users:\n  - user_id: op.x\n", "user 1: needs user_id, printed_name, password_hash"),
        (
            "users:\n  - {user_id: op.x, printed_name: X, password_hash: secret}\n",
            "user op.x: password_hash is not an argon2id hash",
        ),
        (f"users:\n{ONE}{ONE}", "user op.x is listed twice in the users file"),
    ],
)
def test_a_wrong_users_file_is_refused_at_init(
    tmp_path: Path, published: tuple[Path, Path], users_yaml: str, message: str
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(users_yaml)
    mbr, pub = published
    r = fails(at(tmp_path / "h", "init", "--unit", "UNIT-01", "--mbr", str(mbr),
                 "--publisher-key", str(pub), "--users", str(users),
                 "--materials", str(EXAMPLES / "materials.yaml")), 1)  # fmt: skip
    assert r.stderr.startswith(f"Error: {message}"), r.stderr
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "h").exists()


def test_an_inactive_user_records_nothing(tmp_path: Path, published: tuple[Path, Path]) -> None:
    users = tmp_path / "users.yaml"
    text = (EXAMPLES / "users.yaml").read_text()
    users.write_text(text.replace("printed_name: Bob Okafor", "printed_name: Bob Okafor\n    "
                                  "active: false"))  # fmt: skip
    mbr, pub = published
    h = tmp_path / "h"
    ok(at(h, "init", "--unit", "UNIT-01", "--mbr", str(mbr), "--publisher-key", str(pub),
          "--users", str(users), "--materials", str(EXAMPLES / "materials.yaml")))  # fmt: skip
    assert "op.bob\tBob Okafor\toperator\tinactive" in ok(at(h, "users")).stdout
    r = fails(at(h, "start", "--batch", "B-1", "--coi", COI, "--user", "op.bob",
                 "--password-stdin", stdin=pw("op.bob")), 1)  # fmt: skip
    assert r.stderr.startswith("Error: user 'op.bob' is not active on this station")


def test_an_export_clears_what_an_interrupted_one_left(started: Path, tmp_path: Path) -> None:
    out = tmp_path / "export" / "ledger.jsonl"
    out.parent.mkdir()
    gone = out.parent / ".ledger.jsonl.999999999.partial"  # its process is long gone
    legacy = out.parent / "ledger.jsonl.partial"  # the name before partials carried a pid
    running = out.parent / f".ledger.jsonl.{os.getppid()}.partial"  # a live process's
    for p in (gone, legacy, running):
        p.write_bytes(b"half an export")
    ok(at(started, "export", "--out", str(out)))
    assert not gone.exists() and not legacy.exists()
    assert running.read_bytes() == b"half an export"
    assert sorted(p.name for p in out.parent.iterdir()) == [
        running.name,
        "ledger.jsonl",
        "unit.pub",
    ]


def test_an_export_with_nothing_to_export_or_nowhere_to_go(home: Path, tmp_path: Path) -> None:
    r = fails(at(home, "export", "--out", str(tmp_path / "ledger.jsonl")), 1)
    assert r.stderr == f"Error: there is no ledger at {home / 'edge.db'}\n"
    ok(at(home, "start", "--batch", "B-1", "--coi", COI, "--user", "op.alice",
          "--password-stdin", stdin=pw("op.alice")))  # fmt: skip
    in_the_way = tmp_path / "file"
    in_the_way.write_text("")
    r = fails(at(home, "export", "--out", str(in_the_way / "ledger.jsonl")), 1)
    assert r.stderr == f"Error: cannot create the folder {in_the_way}: File exists\n"
