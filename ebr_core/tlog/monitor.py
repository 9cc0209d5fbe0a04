"""Does a new checkpoint extend the one a party already trusts?  The one rule for every monitor.

A unit at sync (with the consistency proof the server sends), a witness (with the proof it
builds from tiles) and an auditor all compare checkpoints with :func:`check_extends`; none keeps
its own copy of the rule.  It raises :class:`ViewError` with a ``kind`` a caller can act on:

* ``origin``: the checkpoint is for another log;
* ``rewound``: fewer entries than the trusted tree (history removed, or a stale or forked view);
* ``split-view``: two different roots for the same size, or a larger tree that does not extend
  the trusted one (the consistency proof fails: a fork).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from ebr_core.tlog.checkpoint import Checkpoint
from ebr_core.tlog.errors import ProofError
from ebr_core.tlog.proof import verify_consistency


class ViewKind(StrEnum):
    ORIGIN = "origin"
    REWOUND = "rewound"
    SPLIT_VIEW = "split-view"


class ViewError(ProofError):
    """The log shows a view that cannot follow the trusted one."""

    def __init__(self, kind: ViewKind, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def check_extends(trusted: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """Raise :class:`ViewError` unless ``new`` is ``trusted`` or an append-only extension of it.

    ``proof`` is the consistency proof from ``trusted.size`` to ``new.size`` (empty when the
    sizes are equal).  Both checkpoints must already have had their signatures checked.
    """
    if new.origin != trusted.origin:
        raise ViewError(
            ViewKind.ORIGIN,
            f"checkpoint origin {new.origin!r} is not the trusted log's {trusted.origin!r}",
        )
    if new.size < trusted.size:
        raise ViewError(
            ViewKind.REWOUND,
            f"the log {new.origin} shows {new.size} entries, fewer than the {trusted.size} "
            "already trusted: history was removed, or this is a stale or forked view",
        )
    if new.size == trusted.size:
        if new.root != trusted.root:
            raise ViewError(
                ViewKind.SPLIT_VIEW,
                f"two trees of size {new.size} for {new.origin}: root {new.root.hex()} now, "
                f"{trusted.root.hex()} trusted before",
            )
        if proof:
            raise ViewError(
                ViewKind.SPLIT_VIEW,
                f"a consistency proof between equal sizes {new.size} must be empty, "
                f"has {len(proof)} hashes",
            )
        return
    if trusted.size == 0:
        return  # every tree extends the empty one; there is nothing to prove
    try:
        verify_consistency(trusted.size, new.size, trusted.root, new.root, proof)
    except ProofError as e:
        raise ViewError(
            ViewKind.SPLIT_VIEW,
            f"the log's tree of size {new.size} does not extend the tree of size "
            f"{trusted.size} already trusted (a fork): {e}",
        ) from e
