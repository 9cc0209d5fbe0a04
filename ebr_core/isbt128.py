"""ISBT 128 data structures for cellular therapy, written from the standard's published structure.

No licensed lookup tables are shipped: this module checks structure and check characters only.

* DIN, data structure 001: ``=`` + ``αppppyynnnnnn`` + ``ff``.  ``αpppp`` is the facility
  identification number (α in A-N, P-Z, 1-9; pppp digits), ``yy`` the year, ``nnnnnn`` the
  sequence, ``ff`` two flag digits; a flag value 60-96 carries 60 + the mod 37-2 check value.
* Keyboard check character K: ISO/IEC 7064 mod 37-2 over the 13 DIN characters.  It is printed
  beside the eye-readable DIN and is never part of the barcode data.
* Product code, data structure 003: ``=<`` + ``αoooo`` + ``t`` + ``ds`` (α = S: cellular therapy;
  t the collection type; ds the division code).
* Dates: expiration ``&>cyyjjjhhmm``, collection ``&*cyyjjjhhmm``, production ``&}cyyjjjhhmm``
  (``jjj`` Julian day, ``hhmm`` 2359 when unspecified).  ``c`` is read as the century digit:
  ``0`` = 2000-2099, ``1`` = 2100-2199, ``9`` = 1900-1999 (our reading; confirm against the
  standard before relying on dates outside 2000-2099).
* Compound message, data structure 023: ``=+aabbb``: ``aa`` structures follow, ``bbb`` is the
  reference number of the message layout.
* Chain of Identity identifier, data structure 040: ``&/CH`` + ``αpppp`` + ``yy`` + six
  characters A-Z / 0-9.  **Our choice** (the reference leaves it unverified): its keyboard check
  character is mod 37-2 over the 13 characters after ``CH`` (facility, year, serial), the same
  length and rule as the DIN's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ebr_core.errors import IdentifierError

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_FIN = r"[A-NP-Z1-9][0-9]{4}"
_DIN = re.compile(rf"({_FIN})([0-9]{{2}})([0-9]{{6}})")
_DIN_DS = re.compile(rf"=({_FIN}[0-9]{{2}}[0-9]{{6}})([0-9]{{2}})")
_PRODUCT = re.compile(r"=<([A-Z][0-9]{4})([0-9A-Z])([0-9A-Za-z]{2})")
_DATE = re.compile(r"&([>*}])([0-9])([0-9]{2})([0-9]{3})([0-9]{4})")
_COMPOUND = re.compile(r"=\+([0-9]{2})([0-9]{3})")
_COI = re.compile(rf"&/CH({_FIN})([0-9]{{2}})([A-Z0-9]{{6}})")

COLLECTION_TYPES = {
    "1": "autologous use only",
    "X": "autologous use only, biohazard",
    "A": "autologous, eligible for crossover",
    "V": "volunteer allogeneic",
}
DATE_KINDS = {">": "expiration", "*": "collection", "}": "production"}
ISBT_SYMBOLOGIES = {"]C0": "Code 128", "]d1": "Data Matrix", "]Q1": "QR Code"}


class ISBT128Error(IdentifierError):
    """An ISBT 128 data structure is malformed or its check fails."""


def mod37_2(chars: str) -> str:
    """ISO/IEC 7064 mod 37-2 check character (ISBT 128 keyboard check character K).

    Sum v * 2**n with n the position from the right (1 for the last character); r = sum mod 37;
    K = alphabet[(38 - r) mod 37].
    """
    total = 0
    for n, c in enumerate(reversed(chars), start=1):
        if c not in _VALUE or c == "*":
            raise ISBT128Error(f"character {c!r} is not allowed in {chars!r} (expected A-Z, 0-9)")
        total += _VALUE[c] * 2**n
    return ALPHABET[(38 - total % 37) % 37]


@dataclass(frozen=True)
class Din:
    din: str  # the 13 characters αppppyynnnnnn
    flags: str  # two flag digits
    facility: str
    year: str
    sequence: str

    @property
    def check(self) -> str:
        return mod37_2(self.din)

    def eye_readable(self) -> str:
        """Facility, year and sequence with the keyboard check character boxed beside them."""
        return f"{self.facility} {self.year} {self.sequence} [{self.check}]"

    def data(self) -> str:
        return f"={self.din}{self.flags}"


@dataclass(frozen=True)
class ProductCode:
    code: str  # αoooo
    collection_type: str
    division: str

    @property
    def collection_type_name(self) -> str:
        return COLLECTION_TYPES[self.collection_type]

    def data(self) -> str:
        return f"=<{self.code}{self.collection_type}{self.division}"


@dataclass(frozen=True)
class IsbtDate:
    kind: str  # expiration | collection | production
    when: datetime  # UTC-naive wall time as printed, given tz=UTC for convenience
    time_specified: bool

    def data(self) -> str:
        sym = {v: k for k, v in DATE_KINDS.items()}[self.kind]
        c = (self.when.year // 100 - 20) % 10
        hhmm = self.when.strftime("%H%M")
        return f"&{sym}{c}{self.when:%y}{self.when.timetuple().tm_yday:03d}{hhmm}"


@dataclass(frozen=True)
class Coi:
    facility: str
    year: str
    serial: str

    @property
    def body(self) -> str:
        return f"{self.facility}{self.year}{self.serial}"

    @property
    def check(self) -> str:
        return mod37_2(self.body)

    def data(self) -> str:
        return f"&/CH{self.body}"

    def eye_readable(self) -> str:
        return f"CH {self.facility} {self.year} {self.serial} [{self.check}]"


@dataclass(frozen=True)
class IsbtMessage:
    symbology: str | None
    din: Din | None = None
    product: ProductCode | None = None
    coi: Coi | None = None
    dates: tuple[IsbtDate, ...] = ()
    compound_reference: str | None = None
    structures: tuple[str, ...] = field(default=())

    def date(self, kind: str) -> IsbtDate | None:
        return next((d for d in self.dates if d.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        exp = self.date("expiration")
        return {
            "standard": "isbt128",
            "symbology": self.symbology,
            "din": self.din.din if self.din else None,
            "din_flags": self.din.flags if self.din else None,
            "din_check": self.din.check if self.din else None,
            "product_code": self.product.code if self.product else None,
            "collection_type": self.product.collection_type if self.product else None,
            "coi": self.coi.data() if self.coi else None,
            "coi_check": self.coi.check if self.coi else None,
            "expiry": exp.when.date().isoformat() if exp else None,
            "dates": {d.kind: d.when.isoformat() for d in self.dates},
            "compound_reference": self.compound_reference,
        }


def parse_din(text: str) -> Din:
    """Parse 13 DIN characters (``G123417654321``), or the data structure (``=G12341765432100``)."""
    if text.startswith("="):
        m = _DIN_DS.fullmatch(text)
        if not m:
            raise ISBT128Error(
                f"DIN {text!r} is not '=' + facility (α + 4 digits, α in A-N, P-Z, 1-9) + "
                "2-digit year + 6-digit sequence + 2 flag digits"
            )
        return _din(m.group(1), m.group(2))
    m = _DIN.fullmatch(text)
    if not m:
        raise ISBT128Error(
            f"DIN {text!r} is not 13 characters: facility (α + 4 digits, α in A-N, P-Z, 1-9), "
            "2-digit year, 6-digit sequence"
        )
    return _din(text, "00")


def _din(din: str, flags: str) -> Din:
    value = int(flags)
    if 60 <= value <= 96:
        expected = 60 + _VALUE[mod37_2(din)]
        if value != expected:
            raise ISBT128Error(
                f"DIN {din} flag {flags} carries check value {value - 60}, expected "
                f"{expected - 60} ({expected})"
            )
    return Din(din=din, flags=flags, facility=din[:5], year=din[5:7], sequence=din[7:])


def check_din_with_k(din13: str, k: str) -> Din:
    """Check a DIN typed with its keyboard check character (the eye-readable form)."""
    d = parse_din(din13)
    if k != d.check:
        raise ISBT128Error(f"DIN {din13} keyboard check character is {k!r}, expected {d.check!r}")
    return d


def _date(sym: str, c: str, yy: str, jjj: str, hhmm: str) -> IsbtDate:
    century = 1900 if c == "9" else 2000 + 100 * int(c)
    year = century + int(yy)
    day = int(jjj)
    length = 366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365
    kind = DATE_KINDS[sym]
    if not 1 <= day <= length:
        raise ISBT128Error(f"{kind} date: Julian day {jjj} does not exist in {year} (1-{length})")
    hh, mm = int(hhmm[:2]), int(hhmm[2:])
    if hh > 23 or mm > 59:
        raise ISBT128Error(f"{kind} date: time {hhmm} is not a time of day (0000-2359)")
    when = datetime(year, 1, 1, hh, mm, tzinfo=UTC) + timedelta(days=day - 1)
    return IsbtDate(kind=kind, when=when, time_specified=hhmm != "2359")


# Fixed lengths of the structures a compound message may carry, by data identifier.
_STRUCTURES: list[tuple[str, int]] = [
    ("&/", 17),
    ("=<", 10),
    ("&>", 12),
    ("&*", 12),
    ("&}", 12),
    ("=", 16),
]


def _one(text: str, msg: dict[str, Any]) -> None:
    if text.startswith("&/"):
        m = _COI.fullmatch(text)
        if not m:
            raise ISBT128Error(
                f"chain-of-identity identifier {text!r} is not '&/CH' + facility (α + 4 digits) + "
                "2-digit year + 6 characters A-Z or 0-9"
            )
        _set(msg, "coi", Coi(m.group(1), m.group(2), m.group(3)), text)
    elif text.startswith("=<"):
        m = _PRODUCT.fullmatch(text)
        if not m:
            raise ISBT128Error(
                f"product code {text!r} is not '=<' + α + 4 digits + collection type + 2-char "
                "division"
            )
        if m.group(2) not in COLLECTION_TYPES:
            known = ", ".join(f"{k} ({v})" for k, v in COLLECTION_TYPES.items())
            raise ISBT128Error(f"collection type {m.group(2)!r} is not one of {known}")
        _set(msg, "product", ProductCode(m.group(1), m.group(2), m.group(3)), text)
    elif text[:2] in ("&>", "&*", "&}"):
        m = _DATE.fullmatch(text)
        if not m:
            raise ISBT128Error(
                f"date {text!r} is not '{text[:2]}' + century digit + yy + Julian day jjj + hhmm"
            )
        msg.setdefault("dates", []).append(_date(*m.groups()))
    elif text.startswith("=") and not text.startswith("=+"):
        _set(msg, "din", parse_din(text), text)
    else:
        raise ISBT128Error(f"{text[:12]!r} is not an ISBT 128 data structure this system reads")


def _set(msg: dict[str, Any], key: str, value: object, text: str) -> None:
    if key in msg and msg[key] != value:
        raise ISBT128Error(f"two different {key} structures in one message ({text!r})")
    msg[key] = value


def parse_isbt128(raw: str) -> IsbtMessage:
    """Parse one ISBT 128 data structure or a compound message (023)."""
    text = raw.strip("\r\n")
    symbology = None
    if text.startswith("]") and len(text) >= 3:
        symbology, text = text[:3], text[3:]
        if symbology not in ISBT_SYMBOLOGIES:
            raise ISBT128Error(
                f"symbology identifier {symbology} is not used for ISBT 128; expected one of "
                f"{', '.join(ISBT_SYMBOLOGIES)}"
            )
    if not text or text[0] not in "=&":
        raise ISBT128Error(f"{text[:12]!r} does not start with '=' or '&' (ISBT 128 data)")
    msg: dict[str, Any] = {}
    structures: list[str] = []
    if text.startswith("=+"):
        m = _COMPOUND.match(text)
        if not m:
            raise ISBT128Error(f"compound message header {text[:7]!r} is not '=+aabbb'")
        count, ref = int(m.group(1)), m.group(2)
        rest = text[7:]
        while rest:
            n = next((n for p, n in _STRUCTURES if rest.startswith(p)), None)
            if n is None:
                raise ISBT128Error(
                    f"compound message: {rest[:12]!r} is not a data structure this system reads"
                )
            if len(rest) < n:
                raise ISBT128Error(f"compound message: structure {rest!r} is cut short")
            structures.append(rest[:n])
            rest = rest[n:]
        if len(structures) != count:
            raise ISBT128Error(
                f"compound message announces {count} structures but carries {len(structures)}"
            )
        msg["compound_reference"] = ref
    else:
        structures.append(text)
    for s in structures:
        _one(s, msg)
    return IsbtMessage(
        symbology=symbology,
        din=msg.get("din"),
        product=msg.get("product"),
        coi=msg.get("coi"),
        dates=tuple(msg.get("dates", ())),
        compound_reference=msg.get("compound_reference"),
        structures=tuple(structures),
    )


def new_coi(facility: str, year: int, random_bytes: Callable[[int], bytes]) -> Coi:
    """A new chain-of-identity identifier for ``facility`` (e.g. ``A9999``) in ``year``.

    ``random_bytes`` is injected (``os.urandom`` in the shells, a fixed source in tests); six
    characters from A-Z0-9 give 36**6 ≈ 2.2 billion identifiers per facility and year.
    """
    if not re.fullmatch(_FIN, facility):
        raise ISBT128Error(
            f"facility {facility!r} is not α + 4 digits (α in A-N, P-Z, 1-9), e.g. 'A9999'"
        )
    if not 0 <= year <= 99 and not 2000 <= year <= 2099:
        raise ISBT128Error(f"year {year} is not 2000-2099 or two digits")
    alnum = ALPHABET[:36]
    serial: list[str] = []
    while len(serial) < 6:
        for b in random_bytes(8):
            if b < 252:  # 252 = 7 * 36: reject to keep the characters uniform
                serial.append(alnum[b % 36])
                if len(serial) == 6:
                    break
    return Coi(facility, f"{year % 100:02d}", "".join(serial))


def coi_from_text(text: str) -> Coi:
    """Parse a COI written as data (``&/CH…``) or eye-readable with its check character."""
    t = text.replace(" ", "")
    k = None
    m = re.fullmatch(r"(?:&/)?CH(.{13})\[?([0-9A-Z*])?\]?", t)
    if not m:
        raise ISBT128Error(f"{text!r} is not a chain-of-identity identifier ('&/CH' + 13 chars)")
    body, k = m.group(1), m.group(2)
    coi_m = _COI.fullmatch("&/CH" + body)
    if not coi_m:
        raise ISBT128Error(
            f"chain-of-identity identifier {text!r} is not facility (α + 4 digits) + 2-digit year "
            "+ 6 characters A-Z or 0-9"
        )
    coi = Coi(coi_m.group(1), coi_m.group(2), coi_m.group(3))
    if k is not None and k != coi.check:
        raise ISBT128Error(f"COI {coi.data()} check character is {k!r}, expected {coi.check!r}")
    return coi


def today_julian(d: date) -> str:
    return f"{d.timetuple().tm_yday:03d}"
