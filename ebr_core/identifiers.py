"""One entry for whatever a scanner sends: GS1, ISBT 128 or a plain code.

The symbology identifier (ISO/IEC 15424, e.g. ``]C1``) is what the decoder saw; it is never guessed
from the content. A plain Code 128 (``]C0``) is not GS1 even when its data looks like element
strings (``10064908`` is an in-house code, not lot ``064908``): it is read as ISBT 128 when it
starts with ``=`` or ``&`` and otherwise refused with :class:`PlainCodeError`, which names the
symbology and carries the text (no step of a batch record can be satisfied by a plain code: every
check compares GS1 or ISBT 128 fields). Without an identifier (a scanner not configured to send
one) the caller may say which symbology the scanner reads; otherwise the content decides between
ISBT 128 and GS1, and ``symbology`` stays None.

``parse_scan`` returns a :class:`ScanData` whose fields the step engine compares (patient COI,
cartridge, reagent lot, equipment) or raises an :class:`~ebr_core.errors.IdentifierError` subclass
with a message that says what was wrong and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ebr_core.errors import IdentifierError
from ebr_core.gs1 import (
    DIGITAL_LINK_SYMBOLOGIES,
    GS1_SYMBOLOGIES,
    GTIN_SYMBOLOGIES,
    is_digital_link,
    parse_gs1,
    split_symbology,
)
from ebr_core.isbt128 import parse_isbt128

MAX_SCAN = 512  # no label this system reads carries more; longer input is a device fault
# Symbologies without FNC1 in first position: their data is plain text unless it is ISBT 128
# (or, in a 2D symbol, a GS1 Digital Link URI).
PLAIN_SYMBOLOGIES = {
    "]C0": "Code 128",
    "]A0": "Code 39",
    "]d1": "Data Matrix",
    "]Q1": "QR Code",
}


class PlainCodeError(IdentifierError):
    """The scan is a plain code (no FNC1, not ISBT 128): data, but not a GS1 or ISBT 128 label."""

    def __init__(self, symbology: str, text: str) -> None:
        self.symbology = symbology
        self.text = text
        super().__init__(
            f"{PLAIN_SYMBOLOGIES[symbology]} ({symbology}) {text!r} is a plain code: not GS1 (the "
            "symbol has no FNC1) and not ISBT 128 (data starting with '=' or '&'); expected a GS1 "
            "or ISBT 128 label"
        )


@dataclass(frozen=True)
class ScanData:
    standard: str  # "gs1" | "isbt128"
    symbology: str | None = None
    gtin: str | None = None
    batch: str | None = None
    expiry: date | None = None
    expiry_time: datetime | None = None
    production_date: date | None = None
    serial: str | None = None
    source_ref: str | None = None  # GS1 AI 251
    din: str | None = None  # 13 characters, without flags
    din_check: str | None = None
    coi: str | None = None  # '&/CH…' data form
    coi_check: str | None = None
    product_code: str | None = None
    collection_type: str | None = None
    elements: dict[str, str] = field(default_factory=dict)

    @property
    def patient_ref(self) -> str | None:
        """What identifies the patient material: the COI, else an AI 251 reference, else a DIN."""
        return self.coi or self.source_ref or self.din

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in (
            "standard",
            "symbology",
            "gtin",
            "batch",
            "serial",
            "source_ref",
            "din",
            "din_check",
            "coi",
            "coi_check",
            "product_code",
            "collection_type",
        ):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        for k in ("expiry", "production_date"):
            d = getattr(self, k)
            if d is not None:
                out[k] = d.isoformat()
        if self.expiry_time is not None:
            out["expiry_time"] = self.expiry_time.isoformat()
        out["elements"] = dict(self.elements)
        return out


def parse_scan(raw: str, *, gs_substitutes: str = "", symbology: str | None = None) -> ScanData:
    """Parse one scan as GS1 or ISBT 128; a plain code is refused with :class:`PlainCodeError`.

    ``symbology`` is the identifier the decoder reported, for a scanner that does not prefix it to
    its data (its profile says which symbology it reads); an identifier in ``raw`` must agree. A
    GS1 symbology identifier, sent or declared, vouches that the scanner transmits every separator
    FNC1 (as GS or ``gs_substitutes``), so the last field is never split by guessing.
    """
    if not isinstance(raw, str):
        raise IdentifierError(f"a scan must be text, got {type(raw).__name__}")
    text = raw.strip("\r\n")
    if not text:
        raise IdentifierError("empty scan: no characters were received")
    if len(text) > MAX_SCAN:
        raise IdentifierError(f"scan is {len(text)} characters long; at most {MAX_SCAN} expected")
    bad = next((c for c in text if not c.isprintable() and c != "\x1d"), None)
    if bad is not None:
        raise IdentifierError(
            f"scan contains the control character {bad!r}; expected printable characters and GS"
        )
    sent, body = split_symbology(text)
    if symbology is not None:
        if sent is None:
            text, sent = symbology + text, symbology
        elif sent != symbology:
            raise IdentifierError(
                f"the scan says symbology {sent}, but the scanner reads {symbology}"
            )
    if body[:1] in ("=", "&") and sent not in GS1_SYMBOLOGIES and sent not in GTIN_SYMBOLOGIES:
        m = parse_isbt128(text)
        return ScanData(
            standard="isbt128",
            symbology=m.symbology,
            din=m.din.din if m.din else None,
            din_check=m.din.check if m.din else None,
            coi=m.coi.data() if m.coi else None,
            coi_check=m.coi.check if m.coi else None,
            product_code=m.product.code if m.product else None,
            collection_type=m.product.collection_type if m.product else None,
            expiry=(e.when.date() if (e := m.date("expiration")) else None),
            expiry_time=(e.when if (e := m.date("expiration")) and e.time_specified else None),
            production_date=(p.when.date() if (p := m.date("production")) else None),
            elements={s[:2]: s for s in m.structures},
        )
    digital_link = sent in DIGITAL_LINK_SYMBOLOGIES and is_digital_link(body)
    if sent in PLAIN_SYMBOLOGIES and not digital_link:
        # No FNC1 in first position: whatever the data looks like, it is not an element string.
        raise PlainCodeError(sent, body)
    g = parse_gs1(text, gs_substitutes=gs_substitutes)
    return ScanData(
        standard="gs1",
        symbology=g.symbology,
        gtin=g.gtin,
        batch=g.batch,
        expiry=g.expiry,
        expiry_time=g.expiry_time,
        production_date=g.production_date,
        serial=g.serial,
        source_ref=g.source_ref,
        elements=dict(g.elements),
    )
