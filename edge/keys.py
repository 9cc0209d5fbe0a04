"""The unit's signing key on disk: ``unit.key`` (PKCS#8 PEM, mode 0600) and ``unit.pub``."""

from __future__ import annotations

import os
from pathlib import Path

from ebr_core.errors import KeyFormatError
from ebr_core.keys import UnitSigner
from edge.errors import EdgeError


class UnitKeyError(EdgeError):
    """The unit key file is missing, unreadable or belongs to another unit."""


def load_or_create_unit_key(home: Path, unit_id: str) -> UnitSigner:
    """Load ``home/unit.key`` or, on first start, create the unit's key pair."""
    home.mkdir(parents=True, exist_ok=True)
    key = home / "unit.key"
    pub = home / "unit.pub"
    if key.exists():
        try:
            signer = UnitSigner.from_pem(key.read_bytes(), unit_id)
        except KeyFormatError as e:
            raise UnitKeyError(f"{key.name}: {e}") from e
        if not pub.exists():
            pub.write_bytes(signer.public.to_json())
        return signer
    signer = UnitSigner.generate(unit_id)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signer.to_pem())
        f.flush()
        os.fsync(f.fileno())
    pub.write_bytes(signer.public.to_json())
    return signer
