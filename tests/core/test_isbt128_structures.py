"""ISBT 128 structures one by one: what each reads, and each refusal's exact message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ebr_core.isbt128 import (
    COLLECTION_TYPES,
    ISBT128Error,
    IsbtPatientDataError,
    UnknownStructureError,
    compound,
    parse_isbt128,
)


def test_din() -> None:
    m = parse_isbt128("=G12341765432170")
    assert m.din is not None and (m.din.din, m.din.flags, m.din.check) == (
        "G123417654321",
        "70",
        "A",
    )


@pytest.mark.parametrize("t", sorted(COLLECTION_TYPES))
def test_product_code_every_collection_type(t: str) -> None:
    m = parse_isbt128(f"=<S1234{t}A0")
    assert m.product is not None
    assert (m.product.code, m.product.collection_type, m.product.division) == ("S1234", t, "A0")
    assert m.product.collection_type_name == COLLECTION_TYPES[t]
    assert m.product.data() == f"=<S1234{t}A0"


def test_product_code_classes_without_a_collection_type() -> None:
    # ST-001 2.4.3 Figure 4: for tissue (T) and the other classes, tds is a 3-digit division code.
    m = parse_isbt128("=<T1295003")
    assert m.product is not None
    assert (m.product.code, m.product.collection_type, m.product.division) == ("T1295", None, "003")
    assert m.product.collection_type_name is None and m.product.data() == "=<T1295003"


def test_product_code_division_99_says_product_divisions_follow() -> None:
    m = parse_isbt128("=+02000=<S1234V99=,000025")
    assert m.product is not None and m.product.divisions_follow
    assert m.divisions is not None and m.divisions.code == "000025"


@pytest.mark.parametrize(
    ("raw", "kind", "when", "timed", "date_only"),
    [
        ("=>026165", "expiration", datetime(2026, 6, 14, 23, 59, tzinfo=UTC), False, True),
        ("&>0261651030", "expiration", datetime(2026, 6, 14, 10, 30, tzinfo=UTC), True, False),
        ("=*026001", "collection", datetime(2026, 1, 1, 23, 59, tzinfo=UTC), False, True),
        ("&*0240600815", "collection", datetime(2024, 2, 29, 8, 15, tzinfo=UTC), True, False),
        ("=}999365", "production", datetime(1999, 12, 31, 23, 59, tzinfo=UTC), False, True),
        ("&}1000010000", "production", datetime(2100, 1, 1, 0, 0, tzinfo=UTC), True, False),
    ],
)
def test_dates(raw: str, kind: str, when: datetime, timed: bool, date_only: bool) -> None:
    d = parse_isbt128(raw).date(kind)
    assert d is not None
    assert (d.when, d.time_specified, d.date_only) == (when, timed, date_only)
    assert d.data() == raw


def test_expiry_is_available_under_both_names() -> None:
    m = parse_isbt128("=>026165")
    assert m.date("expiry") == m.date("expiration") is not None


def test_processor_product_identification_code() -> None:
    m = parse_isbt128("=/A9997AB3456T0123")  # ST-017 Figure 1
    assert m.ppic is not None
    assert (m.ppic.facility, m.ppic.product, m.ppic.description) == ("A9997", "AB3456", "T0123")
    assert m.to_json()["ppic"] == "A9997AB3456T0123"


def test_processing_facility_information_code() -> None:
    m = parse_isbt128("&+A9999AB0001")
    assert m.pfic is not None and (m.pfic.facility, m.pfic.product) == ("A9999", "AB0001")


def test_product_divisions() -> None:
    m = parse_isbt128("=,000025")
    assert m.divisions is not None and m.divisions.code == "000025"


@pytest.mark.parametrize(
    ("raw", "number", "name"),
    [
        # ST-001 2.4.17 Figure 5 and the padding examples of 2.4.18, 2.4.21, 2.4.22 and 2.4.35.
        ("=)2XX00AB123", "017", "container manufacturer and catalogue number"),
        ("&)00001234rZ", "018", "container lot number"),
        ("=-AB00027QzE", "021", "manufacturer and catalogue number (items other than containers)"),
        ("&-00001234rZ", "022", "lot number (items other than containers)"),
        ("&,10000000000005434RZ", "035", "MPHO lot number"),
    ],
)
def test_container_and_lot_structures(raw: str, number: str, name: str) -> None:
    ident = raw[:3] if raw.startswith("&,") else raw[:2]
    item = parse_isbt128(raw).item(ident)
    assert item is not None
    assert (item.value, item.number, item.name, item.data()) == (
        raw[len(ident) :],
        number,
        name,
        raw,
    )


def test_coi_kept() -> None:
    m = parse_isbt128("&/CHA999926ABC123")
    assert m.coi is not None and m.coi.data() == "&/CHA999926ABC123" and m.coi.check == "P"


def test_compound_message_with_every_kind() -> None:
    parts = [
        "=A99992612345600",
        "=<S1234V99",
        "=/A9999XYZ100T0944",
        "=,000025",
        "=>026165",
        "&*0261600800",
        "=}026160",
        "=)1AB1234567",
        "&)LOT0000042",
        "&,1000000000000XYZ123",
        "&+A9999AB0001",
        "&/CHA999926ABC123",
    ]
    m = parse_isbt128("]d1" + compound(parts))
    assert m.structures == tuple(parts)
    assert (m.symbology, m.compound_reference) == ("]d1", "000")
    assert [d.kind for d in m.dates] == ["expiration", "collection", "production"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            "=<S1234900",
            "product code '=<S1234900': collection type '9' is not one of "
            "0VRSTPrsA1XDd2LEQ3456FC78BHJG (ST-001 Table 7)",
        ),
        (
            "=<S12341a0",
            "product code '=<S12341a0' is not '=<' + A-Z + 4 characters (A-Z, 0-9) + 3 "
            "characters (collection type or division, then A-Z or 0-9, then a-z or 0-9)",
        ),
        ("=>026366", "expiration date: Julian day 366 does not exist in 2026 (1-365)"),
        (
            "=>0261651030",
            "expiration date '=>0261651030' is not '=>' + cyy (last 3 digits of the year) + "
            "Julian day jjj",
        ),
        (
            "&>026165",
            "expiration date and time '&>026165' is not '&>' + cyy (last 3 digits of the year) + "
            "Julian day jjj + hhmm",
        ),
        ("&*0261652460", "collection date: time 2460 is not a time of day (0000-2359)"),
        (
            "=/A9999XYZ100T094",
            "processor product identification code '=/A9999XYZ100T094' is not '=/' + FIN(P) "
            "(5 characters A-N, P-Z, 0-9) + 6-character product code + 5-character product "
            "description code (A-Z, 0-9)",
        ),
        ("=,00002a", "product divisions '=,00002a' is not '=,' + 6 characters (A-Z, 0-9)"),
        (
            "&)lot00000-2",
            "container lot number '&)lot00000-2' is not '&)' + 10 characters (A-Z, a-z, 0-9)",
        ),
        (
            "=)2xx00AB123",
            "container manufacturer and catalogue number '=)2xx00AB123' is not '=)' + container "
            "character + 2-character manufacturer code (A-Z, 0-9) + 7-character catalogue number",
        ),
        (
            "&,1000000000000xyz123",
            "MPHO lot number '&,1000000000000xyz123' is not '&,1' + 18 characters (A-Z, 0-9)",
        ),
        (
            "&+O9999AB0001",
            "processing facility information code '&+O9999AB0001' is not '&+' + FIN(P) "
            "(5 characters A-N, P-Z, 0-9) + 6-character product code (A-Z, 0-9)",
        ),
        (
            "=O12341765432100",
            "DIN '=O12341765432100' is not '=' + facility (α + 4 digits, α in A-N, P-Z, 1-9) + "
            "2-digit year + 6-digit sequence + 2 flag characters",
        ),
        (
            "=+02000=>026165&>0261701030",
            "two different expiration dates in one message: 2026-06-14 and 2026-06-19",
        ),
        ("=+02000=G12341765432100", "compound message announces 2 structures but carries 1"),
        ("=+01000=>02616", "compound message: expiration date '=>02616' is cut short"),
        ("=+0100", "compound message header '=+0100' is not '=+aabbb'"),
        (
            "=+04035=/A9997XYZ100T0479=A99991712345600=,000012=>019031",
            "compound message 035 carries structures 034, 001, 032, 004; expected 034, 032, 001, "
            "004 in that order",
        ),
        (
            "=+01123=>019031",
            "compound message reference 123 is not one this system can verify; expected 000 "
            "(unspecified sequence) or one of 034, 035, 036, 037",
        ),
    ],
)
def test_refusals(raw: str, message: str) -> None:
    with pytest.raises(ISBT128Error) as e:
        parse_isbt128(raw)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            "=#0120000101",
            "data structure identifier '=#' is patient date of birth, data structure 024: "
            "patient data must not be on a label this system reads",
        ),
        (
            "&#0110MRN1234567",
            "data structure identifier '&#' is patient identification number, data structure "
            "025: patient data must not be on a label this system reads",
        ),
        (
            "=+02000=G12341765432100=#0120000101",
            "compound message: data structure identifier '=#' is patient date of birth, data "
            "structure 024: patient data must not be on a label this system reads",
        ),
    ],
)
def test_patient_structures_are_refused(raw: str, message: str) -> None:
    with pytest.raises(IsbtPatientDataError) as e:
        parse_isbt128(raw)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("&x12345", "data structure identifier '&x' is not one this system reads"),
        ("=%5100", "data structure identifier '=%' is not one this system reads"),
        ("&,2000000000000000042", "data structure identifier '&,2' is not one this system reads"),
        (
            "=+02000=G12341765432100&x12345",
            "compound message: data structure identifier '&x' is not one this system reads",
        ),
    ],
)
def test_unknown_structure_is_named_never_a_bad_din(raw: str, message: str) -> None:
    with pytest.raises(UnknownStructureError) as e:
        parse_isbt128(raw)
    assert str(e.value) == message
    assert "DIN" not in str(e.value)


def test_compound_builder_refusals() -> None:
    with pytest.raises(ISBT128Error, match=r"^compound message reference '01' is not 3 digits$"):
        compound(["=>026165"], "01")
    with pytest.raises(ISBT128Error, match=r"^a compound message carries 1-99 structures, not 0$"):
        compound([])
