"""GS1 data as scanned: element strings (GS1-128, GS1 DataMatrix, GS1 QR, DataBar), GTINs in linear
symbols (EAN-13, UPC-A, EAN-8, ITF-14) and GS1 Digital Link URIs.

Parsing of each element string is biip's, through its public API (the AI table is not
re-implemented here); this module owns what a GMP reader must add on top:

* symbology identifiers are stripped and reported; the identifier is what the decoder saw and is
  never guessed from the content (a plain Code 128, ``]C0``, is not GS1: see
  :mod:`ebr_core.identifiers`);
* FNC1 arrives as ASCII GS (0x1D) or a configured substitute (``|``, ``^``, ``~``; none of them is
  in GS1's character set 82, so a substitution can never hit data);
* a scan whose fields cannot be split without guessing is **refused**: a variable-length field
  followed by more data without a separator, or, from a scanner that may drop FNC1 (no symbology
  identifier, no separator anywhere in the scan and no substitute configured: a keyboard wedge),
  a final variable-length value whose tail reads as other element strings the label could carry
  (AIs it does not already hold, valid check digits and dates);
* AIs 7250-7259 (patient date of birth, names, sex, address ...) are **refused**: patient data must
  not be on a label this system reads;
* every check digit the GS1 General Specifications define for an AI is verified (GTIN, SSCC, GLN,
  GDTI, GCN, GSIN, GRAI, ITIP, GSRN), and dates are checked, with messages that say what was read
  and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from biip import ParseConfig, ParseError
from biip.checksums import gs1_standard_check_digit
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString

from ebr_core.errors import IdentifierError

GS = "\x1d"
# Symbologies whose data is a GS1 element string (FNC1 in first position).
GS1_SYMBOLOGIES = {
    "]d2": "GS1 DataMatrix",
    "]C1": "GS1-128",
    "]Q3": "GS1 QR Code",
    "]e0": "GS1 DataBar",
}
# Linear symbols that carry one GTIN and nothing else (ISO/IEC 15424 identifiers). A scanner sends
# UPC-A as EAN-13 with a leading 0 under ]E0; some send the 12 digits.
GTIN_SYMBOLOGIES = {"]E0": "EAN-13 / UPC-A", "]E4": "EAN-8", "]I1": "ITF-14"}
_GTIN_LENGTHS = {"]E0": (12, 13), "]E4": (8,), "]I1": (14,)}
# Symbologies that may carry a GS1 Digital Link URI (GS1 Digital Link standard 1.x, section 4).
DIGITAL_LINK_SYMBOLOGIES = {"]Q1": "QR Code", "]Q3": "GS1 QR Code", "]d1": "Data Matrix"}
# AIs whose tail after a dropped GS is taken as evidence of a guessed split.
CORE_AIS = ("01", "10", "11", "17", "21", "7003", "251", "7240")
_DATE_AIS = {
    "11": "production date",
    "13": "packaging date",
    "15": "best before date",
    "16": "sell by date",
    "17": "expiry date",
}
# GS1 General Specifications (section 3 AI definitions, 7.9.1 check digit): AI -> (length of the
# key including its check digit, what the key is). AIs 401 (GINC) and 8004 (GIAI) have none.
CHECK_DIGIT_AIS: dict[str, tuple[int, str]] = {
    "00": (18, "SSCC"),
    "01": (14, "GTIN"),
    "02": (14, "GTIN of the contained items (AI 02)"),
    "03": (14, "GTIN of the made-to-order item (AI 03)"),
    "253": (13, "GDTI (AI 253)"),
    "255": (13, "GCN (AI 255)"),
    "402": (17, "GSIN (AI 402)"),
    "410": (13, "ship-to GLN (AI 410)"),
    "411": (13, "bill-to GLN (AI 411)"),
    "412": (13, "purchased-from GLN (AI 412)"),
    "413": (13, "ship-for GLN (AI 413)"),
    "414": (13, "location GLN (AI 414)"),
    "415": (13, "invoicing party GLN (AI 415)"),
    "416": (13, "production or service location GLN (AI 416)"),
    "417": (13, "party GLN (AI 417)"),
    "8003": (14, "GRAI (AI 8003)"),
    "8006": (14, "ITIP (AI 8006)"),
    "8017": (18, "GSRN of the provider (AI 8017)"),
    "8018": (18, "GSRN of the recipient (AI 8018)"),
    "8026": (14, "ITIP of the contained items (AI 8026)"),
}
_CONFIG = ParseConfig(separator_chars=(GS,))


class GS1Error(IdentifierError):
    """A GS1 scan is malformed."""


class PatientDataRefusedError(GS1Error):
    """The scan carries patient data (AIs 7250-7259)."""


class AmbiguousScanError(GS1Error):
    """The fields of the scan cannot be split without guessing."""


class CheckDigitError(GS1Error):
    """A GS1 key's check digit does not match its other digits."""


def gs1_check_digit(body: str) -> int:
    """Check digit for a GTIN/SSCC/GLN body (digits without the check digit).

    Weights 3, 1, 3, 1 ... from the rightmost digit; check = (10 - sum mod 10) mod 10
    (GS1 General Specifications 7.9.1; biip's implementation).
    """
    if not body or not body.isdigit() or not body.isascii():
        raise GS1Error(f"{body!r} is not all digits")
    return gs1_standard_check_digit(body)


def check_digit_error(ai: str, value: str) -> str | None:
    """The refusal for a wrong check digit in the value of ``ai``, or None if it is right (or the
    AI has no check digit)."""
    spec = CHECK_DIGIT_AIS.get(ai)
    if spec is None:
        return None
    n, name = spec
    key = value[:n]
    if len(key) != n or not key.isdigit() or not key.isascii():
        return f"{name} {key!r} is not {n} digits"
    expected = gs1_standard_check_digit(key[:-1])
    if int(key[-1]) != expected:
        return f"{name} {key} check digit is {key[-1]}, expected {expected}"
    return None


@dataclass(frozen=True)
class GS1Data:
    symbology: str | None
    elements: tuple[tuple[str, str], ...]  # (AI, value) in scan order
    gtin: str | None = None
    batch: str | None = None
    production_date: date | None = None
    expiry: date | None = None
    expiry_time: datetime | None = None  # AI 7003
    serial: str | None = None
    source_ref: str | None = None  # AI 251: reference to the source entity (a COI or DIN)
    trial_protocol: str | None = None  # AI 7240

    def to_json(self) -> dict[str, Any]:
        return {
            "standard": "gs1",
            "symbology": self.symbology,
            "gtin": self.gtin,
            "batch": self.batch,
            "production_date": self.production_date.isoformat() if self.production_date else None,
            "expiry": self.expiry.isoformat() if self.expiry else None,
            "expiry_time": self.expiry_time.isoformat() if self.expiry_time else None,
            "serial": self.serial,
            "source_ref": self.source_ref,
            "trial_protocol": self.trial_protocol,
            "elements": [{"ai": ai, "value": v} for ai, v in self.elements],
        }


def split_symbology(raw: str) -> tuple[str | None, str]:
    if raw.startswith("]") and len(raw) >= 3:
        return raw[:3], raw[3:]
    return None, raw


def is_digital_link(data: str) -> bool:
    return data[:8].lower() == "https://" or data[:7].lower() == "http://"


def parse_gs1(raw: str, *, gs_substitutes: str = "") -> GS1Data:
    """Parse a GS1 scan: element string data, a GTIN from a linear symbol, or a GS1 Digital Link
    URI, optionally with a symbology identifier."""
    symbology, data = split_symbology(raw.strip("\r\n"))
    if symbology in GTIN_SYMBOLOGIES:
        return parse_gtin_symbol(symbology, data)
    if is_digital_link(data) and (symbology is None or symbology in DIGITAL_LINK_SYMBOLOGIES):
        return parse_digital_link(data, symbology=symbology)
    if symbology is not None and symbology not in GS1_SYMBOLOGIES:
        raise GS1Error(
            f"symbology identifier {symbology} is not a GS1 symbology; expected one of "
            f"{', '.join(GS1_SYMBOLOGIES)}"
        )
    for c in gs_substitutes:
        data = data.replace(c, GS)
    data = data.lstrip(GS)  # a leading FNC1 is the GS1 start character
    if not data:
        raise GS1Error("the scan holds no GS1 data")
    elements: list[GS1ElementString] = []
    separated = False  # a separator was transmitted between two fields
    pos = 0
    while pos < len(data):
        es = _extract(data, pos)
        elements.append(es)
        end = pos + len(es)
        if end < len(data):
            if data[end] == GS:
                end += 1
                separated = True
            elif _variable(es):
                raise AmbiguousScanError(
                    f"AI ({es.ai.ai}) is variable-length and is followed by more data without a "
                    "GS separator: the fields cannot be split without guessing (was the FNC1/GS "
                    "dropped by a keyboard-wedge scanner?)"
                )
        pos = end
    result = _collect(symbology, elements)  # check digits first: the more precise refusal
    last = elements[-1]
    # Only a scanner that may drop FNC1 leaves a guess to make. One that transmitted a separator,
    # that sends a configured substitute for FNC1, or that prefixes a GS1 symbology identifier
    # (with which GS1 transmits every separator FNC1 as GS) does not: its last field ends where
    # the data ends, whatever its value holds.
    may_drop_fnc1 = not (separated or gs_substitutes or symbology in GS1_SYMBOLOGIES)
    if _variable(last) and may_drop_fnc1:
        _refuse_hidden_fields(last, {es.ai.ai for es in elements})
    return result


def parse_gtin_symbol(symbology: str, data: str) -> GS1Data:
    """A GTIN from EAN-13, UPC-A, EAN-8 or ITF-14: check digit verified, reported as GTIN-14."""
    lengths = _GTIN_LENGTHS[symbology]
    name = GTIN_SYMBOLOGIES[symbology]
    if not (data.isdigit() and data.isascii() and len(data) in lengths):
        want = " or ".join(str(n) for n in lengths)
        raise GS1Error(f"{name} ({symbology}) data {data!r} is not {want} digits (a GTIN)")
    gtin = data.zfill(14)
    expected = gs1_standard_check_digit(gtin[:-1])
    if int(gtin[-1]) != expected:
        raise CheckDigitError(f"GTIN {data} check digit is {data[-1]}, expected {expected}")
    return GS1Data(symbology=symbology, elements=(("01", gtin),), gtin=gtin)


def parse_digital_link(uri: str, *, symbology: str | None = None) -> GS1Data:
    """A GS1 Digital Link URI (``https://id.gs1.org/01/09506000134376/10/ABC?17=261231``) read as
    the element strings it carries, validated like any other (biip splits the URI)."""
    parts = urlsplit(uri)
    keys: dict[str, str] = {}
    for key, value in [*_path_pairs(parts.path), *parse_qsl(parts.query)]:
        if not key.isdigit():
            continue  # other query parameters (linkType, ...) are not element strings
        _refuse_patient_ai(key)
        if key in keys and keys[key] != value:
            raise GS1Error(f"GS1 Digital Link URI gives AI ({key}) twice with different values")
        keys[key] = value
    try:
        link = GS1DigitalLinkURI.parse(uri, config=_CONFIG)
    except ParseError as e:
        raise GS1Error(f"{uri!r} is not a valid GS1 Digital Link URI: {e}") from e
    return _collect(symbology, list(link.element_strings))


def _path_pairs(path: str) -> list[tuple[str, str]]:
    segments = [s for s in path.split("/") if s]
    return [
        (segments[i], segments[i + 1])
        for i in range(len(segments) - 1)
        if segments[i].isdigit() and 2 <= len(segments[i]) <= 4
    ]


def _variable(es: GS1ElementString) -> bool:
    """True if the AI's value has a variable length (``..`` in its format, e.g. ``X..20``).

    GS1 asks for FNC1 after some fixed-length AIs too (7003); omitting it there is sloppy but
    leaves nothing to guess, so only variable-length values make a split ambiguous."""
    return ".." in es.ai.format


def _refuse_patient_ai(ai: str) -> None:
    if len(ai) == 4 and ai.startswith("725") and ai[3].isdigit():
        raise PatientDataRefusedError(
            f"AI ({ai}) carries patient data (AIs 7250-7259: name, date of birth, sex, "
            "address); patient data must not be on a label this system reads"
        )


def _extract(data: str, pos: int) -> GS1ElementString:
    rest = data[pos:]
    if rest.startswith(GS):
        raise GS1Error(f"empty field at position {pos}: two separators in a row")
    _refuse_patient_ai(rest[:4])
    try:
        return GS1ElementString.extract(rest, config=_CONFIG)
    except ParseError as e:
        ai = rest[:2]
        if ai in _DATE_AIS:
            raise GS1Error(
                f"AI ({ai}) {_DATE_AIS[ai]} {rest[2:8]!r} is not a real date "
                "(expected YYMMDD; DD 00 means the last day of the month)"
            ) from e
        if rest[:4] == "7003":
            raise GS1Error(
                f"AI (7003) expiry date and time {rest[4:14]!r} is not a real date and time "
                "(expected YYMMDDhhmm)"
            ) from e
        if rest[0] in "|^~":
            raise GS1Error(
                f"at position {pos}: {rest[0]!r} is not a GS1 Application Identifier; if this "
                f"scanner sends {rest[0]!r} for FNC1, configure it as the GS substitute"
            ) from e
        raise GS1Error(
            f"at position {pos}: no valid GS1 element string starts at {rest[:12]!r} ({e})"
        ) from e


def _hidden_fields(tail: str, present: set[str]) -> bool:
    """True if ``tail`` reads in full as valid element strings of AIs the scan does not already
    carry (a message holds each AI once), each with a correct check digit and a real date."""
    seen = set(present)
    pos = 0
    try:
        while pos < len(tail):
            es = GS1ElementString.extract(tail[pos:], config=_CONFIG)
            if es.ai.ai in seen or check_digit_error(es.ai.ai, es.value):
                return False
            seen.add(es.ai.ai)
            pos += len(es)
    except ParseError:
        return False
    return True


def _refuse_hidden_fields(last: GS1ElementString, present: set[str]) -> None:
    """From a scanner that may drop FNC1, a final variable-length value whose tail reads as other
    element strings is what a scan looks like after a keyboard wedge dropped the GS: the data
    would parse differently with the separator, so refuse rather than guess."""
    value = last.value
    for k in range(1, len(value) - 1):
        tail = value[k:]
        if not tail.startswith(CORE_AIS) or not _hidden_fields(tail, present):
            continue
        try:  # the value before the split must itself be valid for the AI
            GS1ElementString.parse(last.ai.ai + value[:k], config=_CONFIG)
        except ParseError:
            continue
        raise AmbiguousScanError(
            f"AI ({last.ai.ai}) value {value!r} ends with {tail!r}, which reads as another "
            "element string: the fields cannot be split without guessing (was the FNC1/GS "
            "dropped by a keyboard-wedge scanner?)"
        )


def _collect(symbology: str | None, elements: list[GS1ElementString]) -> GS1Data:
    fields: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for es in elements:
        ai = es.ai.ai
        _refuse_patient_ai(ai)
        if ai in seen and seen[ai] != es.value:
            raise GS1Error(f"AI ({ai}) appears twice with different values")
        seen[ai] = es.value
        error = check_digit_error(ai, es.value)
        if error is not None:
            raise CheckDigitError(error)
        if ai == "01":
            fields["gtin"] = es.value
        elif ai == "10":
            fields["batch"] = es.value
        elif ai == "11":
            fields["production_date"] = es.date
        elif ai == "17":
            fields["expiry"] = es.date
        elif ai == "7003":
            fields["expiry_time"] = es.datetime
            if "expiry" not in fields and es.datetime is not None:
                fields["expiry"] = es.datetime.date()
        elif ai == "21":
            fields["serial"] = es.value
        elif ai == "251":
            fields["source_ref"] = es.value
        elif ai == "7240":
            fields["trial_protocol"] = es.value
    return GS1Data(
        symbology=symbology,
        elements=tuple((es.ai.ai, es.value) for es in elements),
        **fields,
    )
