"""Signed documents (MBRs, specifications): exact YAML loading; unsigned or altered is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from ebr_core.document import DocumentError, load_yaml, open_document, sign_document
from ebr_core.keys import Keyring, UnitSigner

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
YAML = (
    "name: CAR-T\nlimits:\n  viability: {min: 70.0, unit: '%'}\nsteps: 3\neffective: 2026-12-01\n"
)


@pytest.fixture
def publisher() -> UnitSigner:
    return UnitSigner.from_seed(b"p" * 32, "qa.approver")


def test_yaml_numbers_and_dates_are_kept_exactly() -> None:
    doc = load_yaml(YAML)
    assert doc == {
        "name": "CAR-T",
        "limits": {"viability": {"min": "70.0", "unit": "%"}},
        "steps": 3,
        "effective": "2026-12-01",
    }


def test_signed_document_opens(publisher: UnitSigner) -> None:
    signed = sign_document(
        load_yaml(YAML),
        doc_type="mbr",
        doc_id="CAR-T",
        version="3",
        signer=publisher,
        signed_at=NOW,
    )
    opened = open_document(signed.to_bytes(), Keyring([publisher.public]), doc_type="mbr")
    assert opened == signed
    assert opened.signer == "qa.approver"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["content"]["limits"]["viability"].update(min="60.0"), "content was altered"),
        (lambda e: e.update(version="4"), "document signature is invalid"),
        (lambda e: e.update(doc_type="spec"), "document is a 'spec', expected a 'mbr'"),
        (lambda e: e.pop("signature"), "envelope fields wrong: missing ['signature']"),
    ],
)
def test_altered_documents_are_refused(publisher: UnitSigner, change, message: str) -> None:
    env = sign_document(
        load_yaml(YAML),
        doc_type="mbr",
        doc_id="CAR-T",
        version="3",
        signer=publisher,
        signed_at=NOW,
    ).envelope()
    change(env)
    with pytest.raises(DocumentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        open_document(orjson.dumps(env), Keyring([publisher.public]), doc_type="mbr")


def test_unsigned_yaml_and_untrusted_signer_are_refused(publisher: UnitSigner) -> None:
    with pytest.raises(DocumentError, match="an unsigned YAML file must be published first"):
        open_document(YAML.encode(), Keyring([publisher.public]), doc_type="mbr")
    stranger = UnitSigner.from_seed(b"s" * 32, "someone")
    signed = sign_document(
        {"a": "1"}, doc_type="mbr", doc_id="X", version="1", signer=stranger, signed_at=NOW
    )
    with pytest.raises(DocumentError, match="not a trusted publisher key"):
        open_document(signed.to_bytes(), Keyring([publisher.public]), doc_type="mbr")


def test_bad_yaml_is_explained() -> None:
    with pytest.raises(DocumentError, match="must be a YAML mapping, got list"):
        load_yaml("- a\n- b\n")
    with pytest.raises(DocumentError, match="not valid YAML"):
        load_yaml("a: [\n")


def test_exact_loading_leaves_other_yaml_readers_alone() -> None:
    """Documents keep numbers and dates as written; every other ``yaml.safe_load`` in the process
    (fault schedules, station tooling) still reads floats and dates as YAML says."""
    import datetime

    import yaml

    from ebr_core.document import load_yaml

    assert load_yaml("a: 0.5\nd: 2026-11-30\n") == {"a": "0.5", "d": "2026-11-30"}
    assert yaml.safe_load("a: 0.5\nd: 2026-11-30\n") == {"a": 0.5, "d": datetime.date(2026, 11, 30)}
