"""The transparency log's pure library: RFC 9162 Merkle trees, C2SP checkpoints and tiles.

* :mod:`~ebr_core.tlog.merkle`: hashing, tree heads, proof generation, appends, the store
  interface a log keeps its hashes behind;
* :mod:`~ebr_core.tlog.proof`: inclusion and consistency proof verification;
* :mod:`~ebr_core.tlog.note`, :mod:`~ebr_core.tlog.checkpoint`,
  :mod:`~ebr_core.tlog.cosignature`: signed notes, checkpoints, witness cosignatures;
* :mod:`~ebr_core.tlog.tiles`: tile paths and bytes, and proofs read from tiles;
* :mod:`~ebr_core.tlog.monitor`: whether a new checkpoint extends a trusted one (the one rule);
* :mod:`~ebr_core.tlog.tlogproof`: offline ``.tlog-proof`` files (entry, proof, checkpoint);
* :mod:`~ebr_core.tlog.entries`: the typed entries the server's log holds, as leaf bytes.

No I/O: stores and tile fetchers are passed in.  The design and who catches what are in
docs/transparency.md.
"""

from ebr_core.tlog.checkpoint import (
    Checkpoint,
    OpenedCheckpoint,
    add_signatures,
    open_checkpoint,
    sign_checkpoint,
)
from ebr_core.tlog.cosignature import Cosignature, CosignatureVerifier, Cosigner
from ebr_core.tlog.entries import EntryFormatError, EntryKind, LogEntry
from ebr_core.tlog.errors import (
    NoteFormatError,
    NoteSignatureError,
    ProofError,
    TileError,
    TlogError,
    TreeError,
)
from ebr_core.tlog.merkle import (
    EMPTY_ROOT,
    Frontier,
    HashStore,
    LeafHashes,
    LeafHashStore,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
)
from ebr_core.tlog.monitor import ViewError, ViewKind, check_extends
from ebr_core.tlog.note import (
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    NoteSignature,
    SignedNote,
    open_note,
    sign_note,
)
from ebr_core.tlog.proof import root_from_inclusion_proof, verify_consistency, verify_inclusion
from ebr_core.tlog.tiles import Tile, TileReader, parse_tile_path, tile_bytes, tile_files
from ebr_core.tlog.tlogproof import TlogProof, make_tlog_proof

__all__ = [
    "EMPTY_ROOT",
    "Checkpoint",
    "Cosignature",
    "CosignatureVerifier",
    "Cosigner",
    "Ed25519NoteSigner",
    "Ed25519NoteVerifier",
    "EntryFormatError",
    "EntryKind",
    "Frontier",
    "HashStore",
    "LeafHashStore",
    "LeafHashes",
    "LogEntry",
    "MerkleTree",
    "NoteFormatError",
    "NoteSignature",
    "NoteSignatureError",
    "OpenedCheckpoint",
    "ProofError",
    "SignedNote",
    "Tile",
    "TileError",
    "TileReader",
    "TlogError",
    "TlogProof",
    "TreeError",
    "ViewError",
    "ViewKind",
    "add_signatures",
    "check_extends",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "make_tlog_proof",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "parse_tile_path",
    "root_from_inclusion_proof",
    "root_hash",
    "sign_checkpoint",
    "sign_note",
    "tile_bytes",
    "tile_files",
    "verify_consistency",
    "verify_inclusion",
]
