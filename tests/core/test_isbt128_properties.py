"""Laws of the ISBT 128 reader: mod 37-2 catches every single substitution; structures round-trip."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ebr_core.isbt128 import (
    ALPHABET,
    COLLECTION_TYPES,
    DATE_KINDS,
    ISBT128Error,
    IsbtDate,
    compound,
    mod37_2,
    parse_isbt128,
)

FIN = r"[A-NP-Z1-9][0-9]{4}"
dins = st.from_regex(rf"{FIN}[0-9]{{8}}", fullmatch=True)
DIN_CHARS = ALPHABET[:36]


@settings(max_examples=300)
@given(dins, st.data())
def test_any_single_substitution_in_a_din_changes_its_check_character(
    din: str, data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, 12))
    c = data.draw(st.sampled_from(DIN_CHARS).filter(lambda c: c != din[i]))
    assert mod37_2(din[:i] + c + din[i + 1 :]) != mod37_2(din)


@settings(max_examples=300)
@given(dins, st.data())
def test_a_din_whose_flags_carry_the_check_refuses_any_substitution(
    din: str, data: st.DataObject
) -> None:
    flags = f"{60 + ALPHABET.index(mod37_2(din))}"
    assert parse_isbt128(f"={din}{flags}").din is not None
    i = data.draw(st.integers(1, 12))  # the first character also names the structure
    c = data.draw(st.sampled_from("0123456789").filter(lambda c: c != din[i]))
    try:
        parse_isbt128(f"={din[:i]}{c}{din[i + 1 :]}{flags}")
    except ISBT128Error:
        return
    raise AssertionError("a substituted DIN was accepted")


def _date_text(kind: str, when: datetime, date_only: bool) -> str:
    return IsbtDate(kind=kind, when=when, time_specified=True, date_only=date_only).data()


structures = st.one_of(
    dins.flatmap(
        lambda d: st.from_regex(r"[0-9]{2}", fullmatch=True).map(lambda f: f"={d}{f}")
    ).filter(lambda s: not 60 <= int(s[-2:]) <= 96),
    st.builds(
        lambda code, t, div: f"=<{code}{t}{div}",
        st.from_regex(r"[EFHSP][0-9A-Z]{4}", fullmatch=True),
        st.sampled_from(sorted(COLLECTION_TYPES)),
        st.from_regex(r"[0-9A-Z][0-9a-z]", fullmatch=True),
    ),
    st.from_regex(r"=<[MNRTVW][0-9A-Z]{4}[0-9]{3}", fullmatch=True),
    st.builds(
        _date_text,
        st.sampled_from(sorted(DATE_KINDS.values())),
        st.datetimes(datetime(1900, 1, 1), datetime(2899, 12, 31)).map(
            lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC)
        ),
        st.booleans(),
    ),
    st.from_regex(r"=/[A-NP-Z0-9]{5}[0-9A-Z]{6}[0-9A-Z]{5}", fullmatch=True),
    st.from_regex(r"&\+[A-NP-Z0-9]{5}[0-9A-Z]{6}", fullmatch=True),
    st.from_regex(r"=,[0-9A-Z]{6}", fullmatch=True),
    st.from_regex(r"=\)[0-9A-Za-z][0-9A-Z]{2}[0-9A-Za-z]{7}", fullmatch=True),
    st.from_regex(r"(&\)|&-)[0-9A-Za-z]{10}", fullmatch=True),
    st.from_regex(r"=-[0-9A-Z]{2}[0-9A-Za-z]{8}", fullmatch=True),
    st.from_regex(r"&,1[0-9A-Z]{18}", fullmatch=True),
    st.from_regex(rf"&/CH{FIN}[0-9]{{2}}[0-9A-Z]{{6}}", fullmatch=True),
)


def _identifier(s: str) -> str:
    if s[0] == "=" and s[1].isalnum():
        return "="
    return s[:3] if s.startswith("&,") else s[:2]


def _data(raw: str) -> str:
    m = parse_isbt128(raw)
    parts = [
        *(x.data() for x in (m.din, m.product, m.ppic, m.pfic, m.divisions, m.coi) if x),
        *(d.data() for d in m.dates),
        *(i.data() for i in m.items),
    ]
    assert len(parts) == 1
    return parts[0]


@settings(max_examples=500)
@given(structures)
def test_a_formatted_structure_round_trips(raw: str) -> None:
    assert _data(raw) == raw


@settings(max_examples=200)
@given(
    st.lists(
        structures,
        min_size=1,
        max_size=8,
        unique_by=_identifier,
    )
)
def test_a_compound_message_splits_back_into_its_structures(parts: list[str]) -> None:
    # One structure per identifier and date kind: a message may not carry two different DINs or
    # two different expiries.
    kinds = [s[1] for s in parts if s[1] in DATE_KINDS]
    assume(len(kinds) == len(set(kinds)))
    m = parse_isbt128(compound(parts))
    assert m.structures == tuple(parts)
