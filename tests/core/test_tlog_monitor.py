"""check_extends: the one rule a unit, a witness and an auditor apply to a new checkpoint."""

from __future__ import annotations

import pytest

from ebr_core.tlog import Checkpoint, MerkleTree, consistency_proof, leaf_hash
from ebr_core.tlog.monitor import ViewError, ViewKind, check_extends

ORIGIN = "log.example/ebr"


def tree(entries: list[bytes]) -> MerkleTree:
    return MerkleTree([leaf_hash(e) for e in entries])


def cp(t: MerkleTree, size: int | None = None, origin: str = ORIGIN) -> Checkpoint:
    n = t.size() if size is None else size
    return Checkpoint(origin, n, t.root(n))


HISTORY = [b"segment %d" % i for i in range(100)]


def test_growth_and_the_same_view_pass() -> None:
    t = tree(HISTORY)
    for old, new in [(1, 100), (37, 64), (64, 100), (100, 100)]:
        check_extends(cp(t, old), cp(t, new), consistency_proof(t, old, new))
    empty = MerkleTree()
    check_extends(cp(empty), cp(t), [])


def test_each_kind_of_bad_view_is_named() -> None:
    t = tree(HISTORY)
    trusted = cp(t, 60)
    cases: list[tuple[Checkpoint, list[bytes], ViewKind, str]] = [
        (cp(t, 50), [], ViewKind.REWOUND, "shows 50 entries, fewer than the 60 already trusted"),
        (cp(tree([*HISTORY[:59], b"other"])), [], ViewKind.SPLIT_VIEW, "two trees of size 60"),
        (cp(t, 60, "other.example/log"), [], ViewKind.ORIGIN, "is not the trusted log's"),
        (cp(t, 60), consistency_proof(t, 30, 60), ViewKind.SPLIT_VIEW, "must be empty"),
    ]
    rewritten = list(HISTORY)
    rewritten[10] = b"segment 10, deleted and replaced"
    fork = tree(rewritten)
    cases.append(
        (cp(fork), consistency_proof(fork, 60, 100), ViewKind.SPLIT_VIEW, "does not extend the tree of size 60")
    )
    # The server refuses the proof (sends none): a unit must not accept the new head either.
    cases.append((cp(t), [], ViewKind.SPLIT_VIEW, "is empty"))
    for new, proof, kind, message in cases:
        with pytest.raises(ViewError, match=message) as e:
            check_extends(trusted, new, proof)
        assert e.value.kind is kind
