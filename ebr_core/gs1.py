"""GS1 element strings as scanned from GS1-128, GS1 DataMatrix and GS1 QR labels.

Parsing of each element string is biip's (the AI table is not re-implemented here); this module
owns what a GMP reader must add on top:

* symbology identifiers (``]d2`` GS1 DataMatrix, ``]C1`` GS1-128, ``]Q3`` GS1 QR, ``]e0`` DataBar)
  are stripped and reported;
* FNC1 arrives as ASCII GS (0x1D) or a configured substitute (``|``, ``^``, ``~``; none of them is
  in GS1's character set 82, so a substitution can never hit data);
* a scan whose fields cannot be split without guessing is **refused**: a variable-length field
  followed by more data without a separator, or a final variable-length field whose tail would
  itself read as valid element strings (a keyboard-wedge scanner that dropped the GS);
* AIs 7250-7259 (patient date of birth, names, sex, address ...) are **refused**: patient data must
  not be on a label this system reads;
* check digits and dates are checked, with messages that say what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from biip import ParseError
from biip._config import ParseConfig
from biip.gs1_element_strings import GS1ElementString

from ebr_core.errors import IdentifierError

GS = "\x1d"
GS1_SYMBOLOGIES = {
    "]d2": "GS1 DataMatrix",
    "]C1": "GS1-128",
    "]Q3": "GS1 QR Code",
    "]e0": "GS1 DataBar",
}
# AIs whose tail after a dropped GS is taken as evidence of a guessed split.
CORE_AIS = ("01", "10", "11", "17", "21", "7003", "251", "7240")
_DATE_AIS = {
    "11": "production date",
    "13": "packaging date",
    "15": "best before date",
    "16": "sell by date",
    "17": "expiry date",
}
_CONFIG = ParseConfig(separator_chars=(GS,))


class GS1Error(IdentifierError):
    """A GS1 scan is malformed."""


class PatientDataRefusedError(GS1Error):
    """The scan carries patient data (AIs 7250-7259)."""


class AmbiguousScanError(GS1Error):
    """The fields of the scan cannot be split without guessing."""


def gs1_check_digit(body: str) -> int:
    """Check digit for a GTIN/SSCC/GLN body (digits without the check digit).

    Weights 3, 1, 3, 1 ... from the rightmost digit; check = (10 - sum mod 10) mod 10.
    """
    if not body.isdigit() or not body.isascii():
        raise GS1Error(f"{body!r} is not all digits")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


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


def parse_gs1(raw: str, *, gs_substitutes: str = "") -> GS1Data:
    """Parse a GS1 scan (element string data, optionally with a symbology identifier)."""
    symbology, data = split_symbology(raw.strip("\r\n"))
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
    pos = 0
    while pos < len(data):
        es = _extract(data, pos)
        elements.append(es)
        end = pos + len(es)
        if end < len(data):
            if data[end] == GS:
                end += 1
            elif _variable(es):
                raise AmbiguousScanError(
                    f"AI ({es.ai.ai}) is variable-length and is followed by more data without a "
                    "GS separator: the fields cannot be split without guessing (was the FNC1/GS "
                    "dropped by a keyboard-wedge scanner?)"
                )
        pos = end
    last = elements[-1]
    if _variable(last):
        _refuse_hidden_fields(last)
    return _collect(symbology, elements)


def _variable(es: GS1ElementString) -> bool:
    """True if the AI's value has a variable length (``..`` in its format, e.g. ``X..20``).

    GS1 asks for FNC1 after some fixed-length AIs too (7003); omitting it there is sloppy but
    leaves nothing to guess, so only variable-length values make a split ambiguous."""
    return ".." in es.ai.format


def _extract(data: str, pos: int) -> GS1ElementString:
    rest = data[pos:]
    if rest.startswith(GS):
        raise GS1Error(f"empty field at position {pos}: two separators in a row")
    if rest[:3] == "725" and len(rest) >= 4 and rest[3].isdigit():
        raise PatientDataRefusedError(
            f"AI ({rest[:4]}) carries patient data (AIs 7250-7259: name, date of birth, sex, "
            "address); patient data must not be on a label this system reads"
        )
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


def _refuse_hidden_fields(last: GS1ElementString) -> None:
    """A final variable-length value whose tail reads as valid element strings of the core AIs is
    what a scan looks like after a keyboard wedge dropped the GS: refuse rather than guess."""
    value = last.value
    for k in range(1, len(value) - 1):
        tail = value[k:]
        if not tail.startswith(CORE_AIS):
            continue
        try:
            pos = 0
            while pos < len(tail):
                es = GS1ElementString.extract(tail[pos:], config=_CONFIG)
                if es.gtin_error:
                    raise ParseError(es.gtin_error)
                pos += len(es)
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
        if ai in seen and seen[ai] != es.value:
            raise GS1Error(f"AI ({ai}) appears twice with different values")
        seen[ai] = es.value
        if ai == "01":
            expected = gs1_check_digit(es.value[:-1])
            if int(es.value[-1]) != expected:
                raise GS1Error(
                    f"GTIN {es.value} check digit is {es.value[-1]}, expected {expected}"
                )
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
