"""Signed requests from a unit to the server (pure: builds and checks the signed message).

The unit key signs ``REQUEST_TAG || canonical({method, path, unit_id, key_id, timestamp, nonce,
body_sha256})``: a captured request cannot be replayed (nonce, time window), re-routed to another
path or method, attributed to another unit, or given another body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from ebr_core.canonical import canonical
from ebr_core.errors import EbrError
from ebr_core.keys import PublicKey, UnitSigner

REQUEST_TAG = b"ctgtp/request/v1\x00"
HEADERS = ("X-Ctgtp-Unit", "X-Ctgtp-Key", "X-Ctgtp-Time", "X-Ctgtp-Nonce", "X-Ctgtp-Signature")
_NONCE = re.compile(r"[0-9a-f]{32}")
# ASCII digits only ("²" and "٢" pass str.isdigit), and few of them: int() of 5,000 digits
# raises, and no clock is 10**12 seconds on.
_TIME = re.compile(r"[0-9]{1,12}")


class RequestSignatureError(EbrError):
    """A unit request's signature headers are missing, malformed or do not verify."""


@dataclass(frozen=True)
class SignedHeaders:
    unit_id: str
    key_id: str
    timestamp: int  # unix seconds
    nonce: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return dict(
            zip(
                HEADERS,
                (self.unit_id, self.key_id, str(self.timestamp), self.nonce, self.signature),
                strict=True,
            )
        )


def _message(
    method: str, path: str, unit_id: str, key_id: str, timestamp: int, nonce: str, body: bytes
) -> bytes:
    return REQUEST_TAG + canonical(
        {
            "method": method.upper(),
            "path": path,
            "unit_id": unit_id,
            "key_id": key_id,
            "timestamp": timestamp,
            "nonce": nonce,
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
    )


def sign_request(
    signer: UnitSigner, method: str, path: str, body: bytes, *, timestamp: int, nonce: str
) -> SignedHeaders:
    msg = _message(method, path, signer.unit_id, signer.key_id, timestamp, nonce, body)
    sig = base64.b64encode(signer.sign(msg)).decode("ascii")
    return SignedHeaders(signer.unit_id, signer.key_id, timestamp, nonce, sig)


def parse_headers(headers: dict[str, str]) -> SignedHeaders:
    """Read the signature headers (case-insensitive mapping expected from the shell)."""
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in HEADERS if h.lower() not in lower]
    if missing:
        raise RequestSignatureError(f"unsigned request: missing header(s) {', '.join(missing)}")
    unit, key, ts, nonce, sig = (lower[h.lower()] for h in HEADERS)
    if not _TIME.fullmatch(ts):
        raise RequestSignatureError(
            f"X-Ctgtp-Time must be unix seconds (1 to 12 ASCII digits), got {ts[:20]!r}"
            + ("…" if len(ts) > 20 else "")
        )
    if not _NONCE.fullmatch(nonce):
        raise RequestSignatureError("X-Ctgtp-Nonce must be 32 lower-case hex digits")
    return SignedHeaders(unit, key, int(ts), nonce, sig)


def verify_request(
    key: PublicKey,
    h: SignedHeaders,
    method: str,
    path: str,
    body: bytes,
    *,
    now: int,
    window: int = 300,
) -> None:
    """Raise :class:`RequestSignatureError` unless ``h`` signs exactly this request."""
    if abs(now - h.timestamp) > window:
        raise RequestSignatureError(
            f"request time {h.timestamp} is {abs(now - h.timestamp)} s from the server's clock "
            f"(at most {window} s allowed)"
        )
    try:
        sig = base64.b64decode(h.signature, validate=True)
    except binascii.Error as e:
        raise RequestSignatureError("X-Ctgtp-Signature is not base64") from e
    if not key.verify(sig, _message(method, path, h.unit_id, h.key_id, h.timestamp, h.nonce, body)):
        raise RequestSignatureError(
            "request signature does not verify for this method, path and body"
        )


RECEIPT_TAG = b"ctgtp/receipt/v1\x00"


def sign_receipt(server: UnitSigner, body: dict[str, object]) -> dict[str, object]:
    """The server's signed receipt for a stored segment."""
    sig = base64.b64encode(server.sign(RECEIPT_TAG + canonical(body))).decode("ascii")
    return {**body, "signature": sig}


def verify_receipt(server_key: PublicKey, receipt: dict[str, object]) -> bool:
    body = {k: v for k, v in receipt.items() if k != "signature"}
    try:
        sig = base64.b64decode(str(receipt.get("signature", "")), validate=True)
    except binascii.Error:
        return False
    return server_key.verify(sig, RECEIPT_TAG + canonical(body))
