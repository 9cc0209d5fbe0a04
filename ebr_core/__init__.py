"""ebr_core: the pure shared library of the project.

It owns the record format (events, checkpoints, seals, canonical bytes), signing keys, the one
chain verifier, identifiers (GS1, ISBT 128), specifications and the batch-state fold.  It does no
I/O: no files, sockets, ports, clocks or databases (the clock is injected).
"""

from ebr_core.chain import ChainBuilder, sign_checkpoint, sign_seal
from ebr_core.errors import EbrError, VerificationError
from ebr_core.keys import Keyring, PublicKey, UnitSigner
from ebr_core.record import GENESIS_HASH, Checkpoint, Event, Seal
from ebr_core.verify import ChainVerifier, Verified, verify

__all__ = [
    "GENESIS_HASH",
    "ChainBuilder",
    "ChainVerifier",
    "Checkpoint",
    "EbrError",
    "Event",
    "Keyring",
    "PublicKey",
    "Seal",
    "UnitSigner",
    "VerificationError",
    "Verified",
    "sign_checkpoint",
    "sign_seal",
    "verify",
]
