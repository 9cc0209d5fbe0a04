"""ISBT 128 data structures on cellular therapy and tissue labels (ICCBBA ST-001, ST-017).

Owns: reading one ISBT 128 data structure or a compound message (data structure 023) into an
:class:`IsbtMessage`, the mod 37-2 keyboard check character, and the chain-of-identity (COI)
identifier.  Does not own: what a scan means for a batch (the engine), the GS1 side
(``ebr_core.gs1``), or ICCBBA's licensed lookup tables: no product description, facility or
manufacturer table is shipped; this module checks structure and check characters only.

Structures read (data identifier, ST-001 data structure number; layouts from ST-001 v6.2.2
section 2.4 and ST-017 v1.0.0):

* ``=α`` 001 DIN: ``αppppyynnnnnn`` + ``ff``.  α in A-N, P-Z, 1-9; a flag value 60-96 carries
  60 + the mod 37-2 check value of the 13 characters.
* ``=<`` 003 product code ``αoooo tds``.  For classes E, F, H, S (cellular therapy), P, X0 and
  YA-YZ, t is the collection type (every value of ST-001 Table 7, :data:`COLLECTION_TYPES`) and
  ``ds`` the division code (``99``: Product Divisions, 032, carries it); for the other classes
  ``tds`` is a three-character division code.
* ``=>`` 004 / ``&>`` 005 expiration date / date and time, ``=*`` 006 / ``&*`` 007 collection,
  ``=}`` 008 / ``&}`` 009 production: ``cyyjjj`` [``hhmm``]; ``c`` the century, ``yy`` the year in
  it (``019`` = 2019; we read ``9yy`` as 19yy), ``jjj`` the day of the year.  A date without a
  time, and the time ``2359``, mean the end of that day (ST-001 2.4.4, 2.4.5).
* ``=)`` 017 container manufacturer and catalogue number, ``&)`` 018 container lot number,
  ``=-`` 021 manufacturer and catalogue number and ``&-`` 022 lot number of items other than
  containers, ``&,1`` 035 MPHO lot number.
* ``=,`` 032 product divisions (six characters A-Z, 0-9).
* ``&+`` 033 processing facility information code: FIN(P) + six characters.
* ``=/`` 034 processor product identification code (PPIC, the UDI device identifier): FIN(P) +
  facility-defined product code (6) + product description code (5).
* ``=+`` 023 compound message ``aabbb``: ``aa`` structures follow; ``bbb`` is ``000`` (order not
  specified) or an ICCBBA-specified sequence, whose order is verified (only the ST-017 excerpt
  of RT017 is known here: 034-037).
* ``&/`` 040 chain-of-identity identifier: ``CH`` + ``αpppp`` + ``yy`` + six characters A-Z / 0-9.
  ST-001 2.4.40 defines no check character for it (it refers to ST-028, not read here).
  **Our choice**: its keyboard check character is mod 37-2 over the 13 characters after ``CH``
  (facility, year, serial), the same length and rule as the DIN's; ``CH`` is the same on every
  COI, so covering it would catch nothing more.  docs/identifiers.md gives the reasoning.

Refused: patient date of birth (``=#``, 024) and patient identification number (``&#``, 025), as
GS1 AIs 7250-7259 are: patient data must not be on a label this system reads.  Any other data
identifier is named as one this system does not read; it is never reported as a bad DIN.

Over 400 lines because ISBT 128 is one specification: its data structures, check characters and
refusals are read and changed together against ST-001.
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
# ST-001 2.4.1: flag characters are 0-9 and A-H, J-N, P, R-Y; only 60-96 carry a check value.
_DIN_DS = re.compile(rf"=({_FIN}[0-9]{{2}}[0-9]{{6}})([0-9A-HJ-NPR-Y]{{2}})")
_PRODUCT = re.compile(r"=<([A-Z][0-9A-Z]{4})([0-9A-Za-z])([0-9A-Z][0-9a-z])")
# ST-001 2.4.3: for these product classes the 6th character is the collection type and the
# last two the division code; for the others (M, N, R, T, V, W, X1-X9, national A-D) the last
# three characters together are the division (or reserved) code.
_TYPED_CLASSES = re.compile(r"[EFHSP]|X0|Y[A-Z]")
_DATE = re.compile(r"([=&])([>*}])([0-9]{3})([0-9]{3})([0-9]{4})?")
_COMPOUND = re.compile(r"=\+([0-9]{2})([0-9]{3})")
_COI = re.compile(rf"&/CH({_FIN})([0-9]{{2}})([A-Z0-9]{{6}})")
# FIN(P) in 033 and 034: five characters from A-N, P-Z, 0-9 (ST-001 2.4.33, 2.4.34).
_FINP = r"[A-NP-Z0-9]{5}"
_PPIC = re.compile(rf"=/({_FINP})([0-9A-Z]{{6}})([0-9A-Z]{{5}})")
_PFIC = re.compile(rf"&\+({_FINP})([0-9A-Z]{{6}})")
_DIVISIONS = re.compile(r"=,([0-9A-Z]{6})")

# ST-001 v6.2.2 Table 7 [RT008], type of collection in the 6th position of the product code.
COLLECTION_TYPES = {
    "0": "not specified",
    "V": "volunteer allogeneic",
    "R": "volunteer research",
    "S": "volunteer source",
    "T": "volunteer therapeutic",
    "P": "paid allogeneic",
    "r": "paid research",
    "s": "paid source",
    "A": "autologous, eligible for crossover",
    "1": "autologous use only",
    "X": "autologous use only, biohazard",
    "D": "volunteer directed, eligible for crossover",
    "d": "paid directed, eligible for crossover",
    "2": "directed recipient use only",
    "L": "directed recipient use only, limited exposure",
    "E": "medical exception, for specified recipient only",
    "Q": "see special testing bar code",
    "3": "directed recipient use only, biohazard",
    "4": "designated",
    "5": "dedicated",
    "6": "designated, biohazard",
    "F": "family reserved",
    "C": "replacement",
    "7": "allogeneic use",
    "8": "autologous use, contains allogeneic material",
    "B": "directed/dedicated/designated collection use only",
    "H": "directed/dedicated/designated collection, biohazard",
    "J": "directed/dedicated/designated collection, eligible for crossover",
    "G": "emergency use only",
}
DATE_KINDS = {">": "expiration", "*": "collection", "}": "production"}
# ``date("expiry")`` is the name the GS1 side uses for the same thing.
_KIND_ALIASES = {"expiry": "expiration"}
ISBT_SYMBOLOGIES = {"]C0": "Code 128", "]d1": "Data Matrix", "]Q1": "QR Code"}

# Patient-identifying structures: refused, as GS1 AIs 7250-7259 are.
PATIENT_STRUCTURES = {
    "=#": "patient date of birth, data structure 024",
    "&#": "patient identification number, data structure 025",
}

# Structures held as an identifier and a fixed-length value, not interpreted further: the
# manufacturer, catalogue and lot values are the manufacturer's own.  Number, name, the value's
# pattern (ST-001 2.4.17, 2.4.18, 2.4.21, 2.4.22, 2.4.35) and how to say it in an error.
_ITEM_STRUCTURES: dict[str, tuple[str, str, str, str]] = {
    "=)": (
        "017",
        "container manufacturer and catalogue number",
        r"[0-9A-Za-z][0-9A-Z]{2}[0-9A-Za-z]{7}",
        (
            "container character + 2-character manufacturer code (A-Z, 0-9) + 7-character "
            "catalogue number"
        ),
    ),
    "&)": ("018", "container lot number", r"[0-9A-Za-z]{10}", "10 characters (A-Z, a-z, 0-9)"),
    "=-": (
        "021",
        "manufacturer and catalogue number (items other than containers)",
        r"[0-9A-Z]{2}[0-9A-Za-z]{8}",
        "2-character manufacturer code (A-Z, 0-9) + 8-character catalogue number",
    ),
    "&-": (
        "022",
        "lot number (items other than containers)",
        r"[0-9A-Za-z]{10}",
        "10 characters (A-Z, a-z, 0-9)",
    ),
    "&,1": ("035", "MPHO lot number", r"[0-9A-Z]{18}", "18 characters (A-Z, 0-9)"),
}

# ST-017 Table 3, the ICCBBA-specified compound messages for MPHO devices (an excerpt of RT017,
# which is not shipped): reference number -> the structures in their required order.
SPECIFIED_SEQUENCES: dict[str, tuple[str, ...]] = {
    "034": ("034", "032", "001"),
    "035": ("034", "032", "001", "004"),
    "036": ("034", "032", "001", "008"),
    "037": ("034", "032", "001", "004", "008"),
}


@dataclass(frozen=True)
class StructureSpec:
    """One data structure this module reads: its identifier, number, name and total length."""

    identifier: str
    number: str
    name: str
    length: int  # identifier included


# Every structure this module reads, with its fixed length (ST-001 Table 2 [RT003]): a compound
# message is split by these lengths.  The DIN's identifier is recorded as ``=`` alone.
STRUCTURES: tuple[StructureSpec, ...] = (
    StructureSpec("=<", "003", "product code", 10),
    StructureSpec("=>", "004", "expiration date", 8),
    StructureSpec("&>", "005", "expiration date and time", 12),
    StructureSpec("=*", "006", "collection date", 8),
    StructureSpec("&*", "007", "collection date and time", 12),
    StructureSpec("=}", "008", "production date", 8),
    StructureSpec("&}", "009", "production date and time", 12),
    StructureSpec("=)", "017", _ITEM_STRUCTURES["=)"][1], 12),
    StructureSpec("&)", "018", _ITEM_STRUCTURES["&)"][1], 12),
    StructureSpec("=-", "021", _ITEM_STRUCTURES["=-"][1], 12),
    StructureSpec("&-", "022", _ITEM_STRUCTURES["&-"][1], 12),
    StructureSpec("&,1", "035", _ITEM_STRUCTURES["&,1"][1], 21),
    StructureSpec("=,", "032", "product divisions", 8),
    StructureSpec("&+", "033", "processing facility information code", 13),
    StructureSpec("=/", "034", "processor product identification code", 18),
    StructureSpec("&/", "040", "chain-of-identity identifier", 17),
    StructureSpec("=", "001", "donation identification number", 16),
)
_BY_IDENTIFIER = {s.identifier: s for s in STRUCTURES}


class ISBT128Error(IdentifierError):
    """An ISBT 128 data structure is malformed or its check fails."""


class IsbtPatientDataError(ISBT128Error):
    """The scan carries a patient-identifying structure (024, 025)."""


class UnknownStructureError(ISBT128Error):
    """The data identifier is not one of the structures this module reads."""


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
    code: str  # αoooo, the product description code
    # The 6th character for classes E, F, H, S, P, X0, YA-YZ; None for the others, whose last
    # three characters are all division code.
    collection_type: str | None
    division: str  # ds (2 characters) or tds (3)

    @property
    def collection_type_name(self) -> str | None:
        return COLLECTION_TYPES[self.collection_type] if self.collection_type else None

    @property
    def divisions_follow(self) -> bool:
        """ST-001 2.4.32: division ``99`` means Product Divisions (032) must be scanned too."""
        return self.collection_type is not None and self.division == "99"

    def data(self) -> str:
        return f"=<{self.code}{self.collection_type or ''}{self.division}"


@dataclass(frozen=True)
class IsbtDate:
    kind: str  # expiration | collection | production
    when: datetime  # UTC-naive wall time as printed, given tz=UTC for convenience
    time_specified: bool
    # True for the date-only structures (004, 006, 008): ``when`` is then 23:59 on that day.
    date_only: bool = False

    def data(self) -> str:
        sym = {v: k for k, v in DATE_KINDS.items()}[self.kind]
        cyy = f"{self.when.year % 1000:03d}"
        jjj = f"{self.when.timetuple().tm_yday:03d}"
        if self.date_only:
            return f"={sym}{cyy}{jjj}"
        return f"&{sym}{cyy}{jjj}{self.when:%H%M}"


@dataclass(frozen=True)
class Ppic:
    """Processor product identification code (034): FIN(P), processor product code, PDC."""

    facility: str
    product: str
    description: str

    def data(self) -> str:
        return f"=/{self.facility}{self.product}{self.description}"


@dataclass(frozen=True)
class Pfic:
    """Processing facility information code (033): FIN and facility-defined product code."""

    facility: str
    product: str

    def data(self) -> str:
        return f"&+{self.facility}{self.product}"


@dataclass(frozen=True)
class Divisions:
    """Product divisions (032): six characters naming a division of the product."""

    code: str

    def data(self) -> str:
        return f"=,{self.code}"


@dataclass(frozen=True)
class Item:
    """A container or supply identifier (017, 018, 021, 022), kept as the manufacturer wrote it."""

    identifier: str
    value: str

    @property
    def name(self) -> str:
        return _ITEM_STRUCTURES[self.identifier][1]

    @property
    def number(self) -> str:
        return _ITEM_STRUCTURES[self.identifier][0]

    def data(self) -> str:
        return f"{self.identifier}{self.value}"


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
    ppic: Ppic | None = None
    pfic: Pfic | None = None
    divisions: Divisions | None = None
    items: tuple[Item, ...] = ()

    def date(self, kind: str) -> IsbtDate | None:
        """The date of ``kind``: expiration (or ``expiry``), collection or production."""
        kind = _KIND_ALIASES.get(kind, kind)
        return next((d for d in self.dates if d.kind == kind), None)

    def item(self, identifier: str) -> Item | None:
        return next((i for i in self.items if i.identifier == identifier), None)

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
            "ppic": self.ppic.data()[2:] if self.ppic else None,
            "pfic": self.pfic.data()[2:] if self.pfic else None,
            "divisions": self.divisions.code if self.divisions else None,
            "items": {i.identifier: i.value for i in self.items},
        }


def parse_din(text: str) -> Din:
    """Parse 13 DIN characters (``G123417654321``), or the data structure (``=G12341765432100``)."""
    if text.startswith("="):
        m = _DIN_DS.fullmatch(text)
        if not m:
            raise ISBT128Error(
                f"DIN {text!r} is not '=' + facility (α + 4 digits, α in A-N, P-Z, 1-9) + "
                "2-digit year + 6-digit sequence + 2 flag characters"
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
    value = int(flags) if flags.isdigit() else -1
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


def _date(sym: str, cyy: str, jjj: str, hhmm: str | None) -> IsbtDate:
    # ST-001: cyy are the last three digits of the year; read 9yy as 19yy (dates before 2000).
    year = 1000 + int(cyy) if cyy.startswith("9") else 2000 + int(cyy)
    day = int(jjj)
    length = 366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365
    kind = DATE_KINDS[sym]
    if not 1 <= day <= length:
        raise ISBT128Error(f"{kind} date: Julian day {jjj} does not exist in {year} (1-{length})")
    hh, mm = (23, 59) if hhmm is None else (int(hhmm[:2]), int(hhmm[2:]))
    if hh > 23 or mm > 59:
        raise ISBT128Error(f"{kind} date: time {hhmm} is not a time of day (0000-2359)")
    when = datetime(year, 1, 1, hh, mm, tzinfo=UTC) + timedelta(days=day - 1)
    return IsbtDate(
        kind=kind, when=when, time_specified=hhmm not in (None, "2359"), date_only=hhmm is None
    )


def _identifier(text: str) -> str:
    """The data identifier ``text`` starts with: ``=`` for a DIN, ``&,`` + one character for
    035-038, else the first two characters."""
    if re.match(r"=[A-Z0-9]", text):
        return "="
    if text.startswith("&,"):
        return text[:3]
    return text[:2]


def _refuse_unknown(ident: str, where: str = "") -> ISBT128Error:
    if ident in PATIENT_STRUCTURES:
        return IsbtPatientDataError(
            f"{where}data structure identifier {ident!r} is {PATIENT_STRUCTURES[ident]}: "
            "patient data must not be on a label this system reads"
        )
    return UnknownStructureError(
        f"{where}data structure identifier {ident!r} is not one this system reads"
    )


def _one(text: str, msg: dict[str, Any]) -> None:
    ident = _identifier(text)
    spec = _BY_IDENTIFIER.get(ident)
    if spec is None:
        raise _refuse_unknown(ident)
    if ident == "&/":
        m = _COI.fullmatch(text)
        if not m:
            raise ISBT128Error(
                f"chain-of-identity identifier {text!r} is not '&/CH' + facility (α + 4 digits) + "
                "2-digit year + 6 characters A-Z or 0-9"
            )
        _set(msg, "coi", Coi(m.group(1), m.group(2), m.group(3)), text)
    elif ident == "=<":
        m = _PRODUCT.fullmatch(text)
        if not m:
            raise ISBT128Error(
                f"product code {text!r} is not '=<' + A-Z + 4 characters (A-Z, 0-9) + 3 "
                "characters (collection type or division, then A-Z or 0-9, then a-z or 0-9)"
            )
        code, t, ds = m.groups()
        if _TYPED_CLASSES.match(code):
            if t not in COLLECTION_TYPES:
                raise ISBT128Error(
                    f"product code {text!r}: collection type {t!r} is not one of "
                    f"{''.join(COLLECTION_TYPES)} (ST-001 Table 7)"
                )
            product = ProductCode(code, t, ds)
        else:
            product = ProductCode(code, None, t + ds)
        _set(msg, "product", product, text)
    elif ident[1:] in DATE_KINDS:
        m = _DATE.fullmatch(text)
        if not m or (m.group(1) == "=") != (m.group(5) is None):
            tail = "" if ident[0] == "=" else " + hhmm"
            raise ISBT128Error(
                f"{spec.name} {text!r} is not {ident!r} + cyy (last 3 digits of the year) + "
                f"Julian day jjj{tail}"
            )
        d = _date(m.group(2), m.group(3), m.group(4), m.group(5))
        for other in msg.get("dates", []):
            if other.kind == d.kind and other.when.date() != d.when.date():
                raise ISBT128Error(
                    f"two different {d.kind} dates in one message: {other.when.date()} and "
                    f"{d.when.date()}"
                )
        msg.setdefault("dates", []).append(d)
    elif ident == "=/":
        m = _PPIC.fullmatch(text)
        if not m:
            raise ISBT128Error(
                f"processor product identification code {text!r} is not '=/' + FIN(P) (5 "
                "characters A-N, P-Z, 0-9) + 6-character product code + 5-character product "
                "description code (A-Z, 0-9)"
            )
        _set(msg, "ppic", Ppic(*m.groups()), text)
    elif ident == "&+":
        m = _PFIC.fullmatch(text)
        if not m:
            raise ISBT128Error(
                f"processing facility information code {text!r} is not '&+' + FIN(P) (5 "
                "characters A-N, P-Z, 0-9) + 6-character product code (A-Z, 0-9)"
            )
        _set(msg, "pfic", Pfic(*m.groups()), text)
    elif ident == "=,":
        m = _DIVISIONS.fullmatch(text)
        if not m:
            raise ISBT128Error(f"product divisions {text!r} is not '=,' + 6 characters (A-Z, 0-9)")
        _set(msg, "divisions", Divisions(m.group(1)), text)
    elif ident in _ITEM_STRUCTURES:
        _, _, pattern, shape = _ITEM_STRUCTURES[ident]
        value = text[len(ident) :]
        if not re.fullmatch(pattern, value):
            raise ISBT128Error(f"{spec.name} {text!r} is not {ident!r} + {shape}")
        items = msg.setdefault("items", {})
        item = Item(ident, value)
        if ident in items and items[ident] != item:
            raise ISBT128Error(f"two different {spec.name} structures in one message ({text!r})")
        items[ident] = item
    else:
        _set(msg, "din", parse_din(text), text)


def _set(msg: dict[str, Any], key: str, value: object, text: str) -> None:
    if key in msg and msg[key] != value:
        raise ISBT128Error(f"two different {key} structures in one message ({text!r})")
    msg[key] = value


def _split_compound(text: str) -> tuple[str, list[str]]:
    m = _COMPOUND.match(text)
    if not m:
        raise ISBT128Error(f"compound message header {text[:7]!r} is not '=+aabbb'")
    count, ref = int(m.group(1)), m.group(2)
    rest = text[7:]
    structures: list[str] = []
    while rest:
        ident = _identifier(rest)
        spec = _BY_IDENTIFIER.get(ident)
        if spec is None:
            # Its length is unknown, so nothing after it can be read either.
            raise _refuse_unknown(ident, "compound message: ")
        if len(rest) < spec.length:
            raise ISBT128Error(f"compound message: {spec.name} {rest!r} is cut short")
        structures.append(rest[: spec.length])
        rest = rest[spec.length :]
    if len(structures) != count:
        raise ISBT128Error(
            f"compound message announces {count} structures but carries {len(structures)}"
        )
    if ref != "000":
        # ST-001 2.4.23: a specified sequence is interpreted only once its order is verified.
        expected = SPECIFIED_SEQUENCES.get(ref)
        if expected is None:
            raise ISBT128Error(
                f"compound message reference {ref} is not one this system can verify; expected "
                f"000 (unspecified sequence) or one of {', '.join(SPECIFIED_SEQUENCES)}"
            )
        got = tuple(_BY_IDENTIFIER[_identifier(s)].number for s in structures)
        if got != expected:
            raise ISBT128Error(
                f"compound message {ref} carries structures {', '.join(got)}; expected "
                f"{', '.join(expected)} in that order"
            )
    return ref, structures


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
    if text.startswith("=+"):
        msg["compound_reference"], structures = _split_compound(text)
    else:
        structures = [text]
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
        ppic=msg.get("ppic"),
        pfic=msg.get("pfic"),
        divisions=msg.get("divisions"),
        items=tuple(msg.get("items", {}).values()),
    )


def compound(structures: list[str] | tuple[str, ...], reference: str = "000") -> str:
    """A compound message (023) carrying ``structures``, each one ISBT 128 data structure."""
    if not re.fullmatch(r"[0-9]{3}", reference):
        raise ISBT128Error(f"compound message reference {reference!r} is not 3 digits")
    if not 1 <= len(structures) <= 99:
        raise ISBT128Error(f"a compound message carries 1-99 structures, not {len(structures)}")
    return f"=+{len(structures):02d}{reference}{''.join(structures)}"


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
