"""GS1 and ISBT 128 identifiers: worked examples, refusals with exact messages, no crashes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.errors import IdentifierError
from ebr_core.gs1 import AmbiguousScanError, PatientDataRefusedError, gs1_check_digit, parse_gs1
from ebr_core.identifiers import parse_scan
from ebr_core.isbt128 import (
    ISBT128Error,
    check_din_with_k,
    coi_from_text,
    mod37_2,
    new_coi,
    parse_din,
    parse_isbt128,
)

GS = "\x1d"
GTINS = ["09501101530003", "05901234123457", "00012345600012", "04006381333931"]


def test_gs1_worked_example() -> None:
    assert gs1_check_digit("950110153100") == 0
    assert all(gs1_check_digit(g[:-1]) == int(g[-1]) for g in GTINS)


@pytest.mark.parametrize("gtin", GTINS)
def test_every_single_digit_substitution_of_a_gtin_is_detected(gtin: str) -> None:
    for pos in range(14):
        for d in "0123456789":
            if d == gtin[pos]:
                continue
            bad = gtin[:pos] + d + gtin[pos + 1 :]
            with pytest.raises(IdentifierError, match=r"check digit is \d, expected \d"):
                parse_scan("01" + bad)


def test_full_gs1_scan() -> None:
    raw = f"]d2010950110153000317260600{GS}" + f"10LOT-7{GS}21SN1{GS}251&/CHA999926ABC123"
    raw = raw.replace("260600" + GS, "260600")  # AI 17 is fixed length: no separator needed
    s = parse_scan(raw)
    assert s.standard == "gs1" and s.symbology == "]d2"
    assert (s.gtin, s.batch, s.serial) == ("09501101530003", "LOT-7", "SN1")
    assert s.expiry == date(2026, 6, 30)  # DD 00: last day of the month
    assert s.source_ref == "&/CHA999926ABC123" == s.patient_ref


@pytest.mark.parametrize("sub", ["|", "^", "~", "#"])
@pytest.mark.parametrize("prefix", ["", "]C1", "]Q3", "]d2", GS])
def test_fnc1_variants_give_the_same_result(sub: str, prefix: str) -> None:
    canonical = parse_scan(f"010950110153000310AB{GS}21C{GS}7003261231235911260110")
    raw = f"{prefix}010950110153000310AB{sub}21C{sub}7003261231235911260110"
    got = parse_scan(raw, gs_substitutes=sub)
    assert (got.gtin, got.batch, got.serial, got.expiry_time) == (
        canonical.gtin,
        canonical.batch,
        canonical.serial,
        canonical.expiry_time,
    )
    assert got.expiry == date(2026, 12, 31)
    assert got.production_date == date(2026, 1, 10) == canonical.production_date


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (
            "01095011015300037250X",
            PatientDataRefusedError,
            "AI (7250) carries patient data (AIs 7250-7259: name, date of birth, sex, address); "
            "patient data must not be on a label this system reads",
        ),
        (
            "010950110153000310AB21C",
            AmbiguousScanError,
            "AI (10) value 'AB21C' ends with '21C', which reads as another element string: the "
            "fields cannot be split without guessing (was the FNC1/GS dropped by a keyboard-wedge "
            "scanner?)",
        ),
        ("0109501101530004", IdentifierError, "GTIN 09501101530004 check digit is 4, expected 3"),
        (
            "0109501101530003171302301",
            IdentifierError,
            "AI (17) expiry date '130230' is not a real date (expected YYMMDD; DD 00 means the last "
            "day of the month)",
        ),
        (
            "]X10109501101530003",
            IdentifierError,
            "symbology identifier ]X1 is not a GS1 symbology; expected one of ]d2, ]C1, ]Q3, ]e0",
        ),
        (
            "0109501101530003|10AB",
            IdentifierError,
            "at position 16: '|' is not a GS1 Application Identifier; if this scanner sends '|' for "
            "FNC1, configure it as the GS substitute",
        ),
        ("", IdentifierError, "empty scan: no characters were received"),
        (
            "01095011\x0701530003",
            IdentifierError,
            "scan contains the control character '\\x07'; expected printable characters and GS",
        ),
    ],
)
def test_refusals_say_what_was_wrong(raw: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as e:
        parse_scan(raw)
    assert str(e.value) == message


def test_variable_field_in_the_middle_without_separator_is_refused() -> None:
    # 21 (serial, variable) then 17 (fixed) but the serial eats everything: the tail reads as 17.
    with pytest.raises(AmbiguousScanError):
        parse_gs1("010950110153000321SER17260630")


def test_isbt_worked_example_and_din_flags() -> None:
    assert mod37_2("G123417654321") == "A"
    d = parse_din("=G12341765432170")  # flag 70 = 60 + value of 'A' (10)
    assert (d.din, d.flags, d.check) == ("G123417654321", "70", "A")
    assert d.eye_readable() == "G1234 17 654321 [A]"
    with pytest.raises(ISBT128Error, match="flag 61 carries check value 1, expected 10"):
        parse_din("=G12341765432161")
    with pytest.raises(ISBT128Error, match="keyboard check character is 'B', expected 'A'"):
        check_din_with_k("G123417654321", "B")


def test_isbt_compound_message() -> None:
    m = parse_isbt128("]d1=+04000=G12341765432100=<S1234100&>0261652359&/CHA999926ABC123")
    assert m.din is not None and m.din.din == "G123417654321"
    assert m.product is not None and m.product.collection_type_name == "autologous use only"
    assert m.coi is not None and m.coi.data() == "&/CHA999926ABC123"
    exp = m.date("expiration")
    assert exp is not None and exp.when.date() == date(2026, 6, 14) and not exp.time_specified
    s = parse_scan("=+04000=G12341765432100=<S1234100&>0261652359&/CHA999926ABC123")
    assert (s.coi, s.din, s.expiry) == ("&/CHA999926ABC123", "G123417654321", date(2026, 6, 14))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("&>0263662359", "expiration date: Julian day 366 does not exist in 2026 (1-365)"),
        ("&*0261652460", "collection date: time 2460 is not a time of day (0000-2359)"),
        (
            "=<S1234900",
            "product code '=<S1234900': collection type '9' is not one of "
            "0VRSTPrsA1XDd2LEQ3456FC78BHJG (ST-001 Table 7)",
        ),
        ("=+02000=G12341765432100", "compound message announces 2 structures but carries 1"),
        (
            "&/CHO999926ABC123",
            "chain-of-identity identifier '&/CHO999926ABC123' is not '&/CH' + "
            "facility (α + 4 digits) + 2-digit year + 6 characters A-Z or 0-9",
        ),
    ],
)
def test_isbt_refusals(raw: str, message: str) -> None:
    with pytest.raises(ISBT128Error) as e:
        parse_scan(raw)
    assert str(e.value) == message


@settings(max_examples=200)
@given(st.integers(0, 2**32))
def test_generated_cois_round_trip_with_their_check_character(seed: int) -> None:
    rnd = iter(seed.to_bytes(8, "big") * 8)
    coi = new_coi("A9999", 2026, lambda n: bytes(next(rnd) for _ in range(n)))
    assert parse_scan(coi.data()).coi == coi.data()
    assert coi_from_text(coi.eye_readable()) == coi
    wrong = "0" if coi.check != "0" else "1"
    with pytest.raises(ISBT128Error, match="check character is"):
        coi_from_text(f"CH{coi.body}[{wrong}]")


@settings(max_examples=200)
@given(st.from_regex(r"[A-NP-Z1-9][0-9]{4}[0-9]{2}[0-9]{6}", fullmatch=True))
def test_generated_dins_round_trip(din: str) -> None:
    k = mod37_2(din)
    flags = f"{60 + '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*'.index(k)}"
    s = parse_scan(f"={din}{flags}")
    assert (s.din, s.din_check) == (din, k)


@settings(max_examples=500)
@given(st.text(max_size=60) | st.text(alphabet="0123456789=&/<>*}+|CHA\x1d]dQ", max_size=60))
def test_parsers_never_crash(raw: str) -> None:
    try:
        out = parse_scan(raw, gs_substitutes="|")
    except IdentifierError:
        return
    assert out.standard in ("gs1", "isbt128")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctgtp", "scan", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


def test_scan_cli() -> None:
    ok = run("parse", "]C1010950110153000317260630|10AB", "--gs-substitute", "|")
    assert ok.returncode == 0, ok.stderr
    assert '"expiry": "2026-06-30"' in ok.stdout and '"batch": "AB"' in ok.stdout
    bad = run("parse", "0109501101530004")
    assert bad.returncode == 1
    assert bad.stderr == "error: GTIN 09501101530004 check digit is 4, expected 3\n"
    assert run("din-check", "G123417654321").stdout == "A\n"
    new = run("coi-new", "--facility", "A9999", "--year", "26")
    assert new.returncode == 0 and '"coi": "&/CHA999926' in new.stdout
