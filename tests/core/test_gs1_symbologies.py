"""The symbology identifier is what the decoder saw (issue 17): plain Code 128 is never GS1;
EAN-13, UPC-A, EAN-8 and ITF-14 are GTINs; GS1 Digital Link URIs are element strings; every
check digit the GS1 General Specifications define is verified, with exact messages."""

from __future__ import annotations

from datetime import date

import pytest

from ebr_core.errors import IdentifierError
from ebr_core.gs1 import CheckDigitError, PatientDataRefusedError, check_digit_error
from ebr_core.identifiers import PlainCodeError, parse_scan

GS = "\x1d"
DL = "https://id.gs1.org/01/09506000134376/10/ABC/21/123?17=261231"


@pytest.mark.parametrize("raw", ["]C010064908", "]C042094043"])
def test_a_plain_code_128_is_never_read_as_gs1(raw: str) -> None:
    # Issue 17: '10064908' was recorded as lot 064908, '42094043' as a ship-to postcode.
    with pytest.raises(PlainCodeError) as e:
        parse_scan(raw)
    assert str(e.value) == (
        f"Code 128 (]C0) {raw[3:]!r} is a plain code: not GS1 (the symbol has no FNC1) and not "
        "ISBT 128 (data starting with '=' or '&'); expected a GS1 or ISBT 128 label"
    )
    assert (e.value.symbology, e.value.text) == ("]C0", raw[3:])


def test_the_same_data_with_fnc1_is_gs1() -> None:
    s = parse_scan("]C110064908")
    assert (s.symbology, s.batch) == ("]C1", "064908")


def test_isbt_128_in_plain_code_128_is_still_isbt() -> None:
    s = parse_scan("]C0=G12341765432170")
    assert (s.standard, s.symbology, s.din) == ("isbt128", "]C0", "G123417654321")


def test_the_decoders_symbology_is_used_when_the_scanner_sends_none() -> None:
    with pytest.raises(PlainCodeError):
        parse_scan("10064908", symbology="]C0")
    s = parse_scan("10064908", symbology="]C1")
    assert (s.symbology, s.batch) == ("]C1", "064908")
    # Without either, the content decides and nothing is claimed about the symbology.
    assert parse_scan("10064908").symbology is None


def test_a_scan_that_contradicts_the_scanner_profile_is_refused() -> None:
    with pytest.raises(IdentifierError) as e:
        parse_scan("]C110064908", symbology="]C0")
    assert str(e.value) == "the scan says symbology ]C1, but the scanner reads ]C0"


@pytest.mark.parametrize(
    ("raw", "gtin"),
    [
        ("]E05901234123457", "05901234123457"),  # EAN-13
        ("]E00012345678905", "00012345678905"),  # UPC-A sent as EAN-13 with a leading 0
        ("]E0012345678905", "00012345678905"),  # UPC-A sent as its 12 digits
        ("]E496385074", "00000096385074"),  # EAN-8
        ("]I109501101530003", "09501101530003"),  # ITF-14
    ],
)
def test_linear_gtin_symbols_give_a_gtin_14(raw: str, gtin: str) -> None:
    s = parse_scan(raw)
    assert (s.standard, s.symbology, s.gtin, s.elements) == ("gs1", raw[:3], gtin, {"01": gtin})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("]E05901234123458", "GTIN 5901234123458 check digit is 8, expected 7"),
        ("]I109501101530004", "GTIN 09501101530004 check digit is 4, expected 3"),
        (
            "]E059012341234",
            "EAN-13 / UPC-A (]E0) data '59012341234' is not 12 or 13 digits (a GTIN)",
        ),
        ("]I10950110153000", "ITF-14 (]I1) data '0950110153000' is not 14 digits (a GTIN)"),
    ],
)
def test_linear_gtin_symbol_refusals(raw: str, message: str) -> None:
    with pytest.raises(IdentifierError) as e:
        parse_scan(raw)
    assert str(e.value) == message


@pytest.mark.parametrize("prefix", ["", "]Q1", "]Q3", "]d1"])
def test_a_gs1_digital_link_uri_reads_as_element_strings(prefix: str) -> None:
    s = parse_scan(prefix + DL)
    assert s.standard == "gs1"
    assert (s.gtin, s.batch, s.serial, s.expiry) == (
        "09506000134376",
        "ABC",
        "123",
        date(2026, 12, 31),
    )
    assert s.symbology == (prefix or None)


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (
            "https://id.gs1.org/01/09506000134377/10/ABC",
            CheckDigitError,
            "GTIN 09506000134377 check digit is 7, expected 6",
        ),
        (
            "https://example.com/01/09506000134376?7251=X",
            PatientDataRefusedError,
            "AI (7251) carries patient data (AIs 7250-7259: name, date of birth, sex, address); "
            "patient data must not be on a label this system reads",
        ),
        (
            "https://id.gs1.org/01/09506000134376/10/ABC?10=XYZ",
            IdentifierError,
            "GS1 Digital Link URI gives AI (10) twice with different values",
        ),
        (
            "https://id.gs1.org/414/5412345000014",
            CheckDigitError,
            "location GLN (AI 414) 5412345000014 check digit is 4, expected 3",
        ),
        (
            "]Q1https://example.com/menu",
            IdentifierError,
            "'https://example.com/menu' is not a valid GS1 Digital Link URI: Expected a primary "
            "identifier in the path, got '/menu'.",
        ),
    ],
)
def test_digital_link_refusals(raw: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as e:
        parse_scan(raw)
    assert str(e.value) == message


# One valid example per AI with a check digit (GS1 General Specifications section 3), the message
# for the same key with its check digit one off.
KEYED = [
    ("00", "106141412345678908", "SSCC 106141412345678909 check digit is 9, expected 8"),
    ("01", "09501101530003", "GTIN 09501101530004 check digit is 4, expected 3"),
    (
        "02",
        "09501101530003",
        "GTIN of the contained items (AI 02) 09501101530004 check digit is 4, expected 3",
    ),
    ("253", "4602443000331XYZ", "GDTI (AI 253) 4602443000332 check digit is 2, expected 1"),
    ("255", "0614141000425123", "GCN (AI 255) 0614141000426 check digit is 6, expected 5"),
    ("402", "95011010000000001", "GSIN (AI 402) 95011010000000002 check digit is 2, expected 1"),
    ("410", "5412345000013", "ship-to GLN (AI 410) 5412345000014 check digit is 4, expected 3"),
    ("411", "5412345000013", "bill-to GLN (AI 411) 5412345000014 check digit is 4, expected 3"),
    (
        "412",
        "5412345000013",
        "purchased-from GLN (AI 412) 5412345000014 check digit is 4, expected 3",
    ),
    ("413", "5412345000013", "ship-for GLN (AI 413) 5412345000014 check digit is 4, expected 3"),
    ("414", "5412345000013", "location GLN (AI 414) 5412345000014 check digit is 4, expected 3"),
    (
        "415",
        "5412345000013",
        "invoicing party GLN (AI 415) 5412345000014 check digit is 4, expected 3",
    ),
    (
        "416",
        "5412345000013",
        "production or service location GLN (AI 416) 5412345000014 check digit is 4, expected 3",
    ),
    ("417", "5412345000013", "party GLN (AI 417) 5412345000014 check digit is 4, expected 3"),
    ("8003", "04012345000016A1", "GRAI (AI 8003) 04012345000017 check digit is 7, expected 6"),
    (
        "8006",
        "095011015300030102",
        "ITIP (AI 8006) 09501101530004 check digit is 4, expected 3",
    ),
    (
        "8017",
        "795011010000000000",
        "GSRN of the provider (AI 8017) 795011010000000001 check digit is 1, expected 0",
    ),
    (
        "8018",
        "795011010000000000",
        "GSRN of the recipient (AI 8018) 795011010000000001 check digit is 1, expected 0",
    ),
    (
        "8026",
        "095011015300030102",
        "ITIP of the contained items (AI 8026) 09501101530004 check digit is 4, expected 3",
    ),
]


def _one_off(ai: str, value: str, message: str) -> str:
    key = message.split(" check digit", maxsplit=1)[0].rsplit(maxsplit=1)[-1]
    return key + value[len(key) :]


@pytest.mark.parametrize(("ai", "value", "message"), KEYED, ids=[k[0] for k in KEYED])
def test_every_gs1_check_digit_is_verified(ai: str, value: str, message: str) -> None:
    assert parse_scan(ai + value).elements == {ai: value}
    assert check_digit_error(ai, value) is None
    with pytest.raises(CheckDigitError) as e:
        parse_scan(ai + _one_off(ai, value, message))
    assert str(e.value) == message


@pytest.mark.parametrize("ai_value", ["401GINC-0001", "8004UNIT-0001"])
def test_ais_without_a_check_digit_are_not_checked(ai_value: str) -> None:
    assert parse_scan(ai_value).elements == {ai_value[:-9]: ai_value[-9:]}


def test_isbt_expiry_is_carried_in_scan_data() -> None:
    s = parse_scan("&>0261652359")
    assert (s.standard, s.expiry) == ("isbt128", date(2026, 6, 14))
