"""Status columns typed by their vocabulary (issue 20): a word outside it is refused before the
database sees it, with the allowed words named, and stored words read back as plain strings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from ebr_core import vocab
from server.db import Base, Person, Site, Unit, Vocab, make_engine, migrate


def test_every_status_column_is_typed_by_its_vocabulary() -> None:
    typed = {
        (t.name, c.name): c.type.words
        for t in Base.metadata.tables.values()
        for c in t.columns
        if isinstance(c.type, Vocab)
    }
    assert typed == {
        ("units", "status"): vocab.UnitStatus,
        ("unit_keys", "status"): vocab.KeyStatus,
        ("people", "status"): vocab.PersonStatus,
        ("role_grants", "role"): vocab.Role,
        ("batches", "status"): vocab.BatchStatus,
        ("batches", "review_state"): vocab.ReviewState,
        ("deviation_actions", "action"): vocab.DeviationActionKind,
        ("qa_signatures", "meaning"): vocab.Meaning,
        ("dispositions", "disposition"): vocab.Disposition,
        ("oos_cases", "state"): vocab.OosState,
        ("custody_events", "kind"): vocab.CustodyStep,
    }


def test_a_word_outside_the_vocabulary_is_refused_naming_the_words(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}")
    migrate(engine)
    with Session(engine) as db:
        db.add(Site(site_id="S", name="Site S"))
        db.add(Unit(unit_id="U-1", site_id="S", status=vocab.UnitStatus.ACTIVE, head_seq=0,
                    head_hash="0" * 64, checkpoint_seq=0, enrolled_at=datetime.now(UTC)))  # fmt: skip
        db.commit()
        unit = db.get(Unit, "U-1")
        assert unit is not None and type(unit.status) is str and unit.status == "active"
        # a query may ask for any word: an unknown one matches nothing
        assert db.scalars(select(Unit).where(Unit.status == "")).all() == []
        unit.status = "frozen"
        with pytest.raises(ValueError) as e:
            db.commit()
        assert (
            "units.status: 'frozen' is not a word of UnitStatus: expected one of active, revoked"
            in str(e.value)
        )
        db.rollback()
        again = db.get(Unit, "U-1")
        assert again is not None and again.status == "active"  # nothing changed
    cols = {c["name"]: c for c in inspect(engine).get_columns("people")}
    assert "VARCHAR(16)" in str(cols["status"]["type"]).upper()  # stored as the word
    assert Person.__table__.c.status.type.words is vocab.PersonStatus
