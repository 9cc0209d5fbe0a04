"""The server's own Ed25519 key: it signs receipts (``server.key``, mode 0600; ``server.pub``)."""

from __future__ import annotations

import os
from pathlib import Path

from ebr_core.keys import UnitSigner

SERVER_ID = "ctgtp-server"


def load_server_key(data_dir: Path) -> UnitSigner:
    data_dir.mkdir(parents=True, exist_ok=True)
    key = data_dir / "server.key"
    if key.exists():
        return UnitSigner.from_pem(key.read_bytes(), SERVER_ID)
    signer = UnitSigner.generate(SERVER_ID)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signer.to_pem())
    (data_dir / "server.pub").write_bytes(signer.public.to_json())
    return signer
