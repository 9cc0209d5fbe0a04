"""Laws of the engine's outcomes, for any field values: the JSON form is lossless (the outcome
rebuilds from it), carries its kind and its message, and encodes as JSON; ``str()`` is the
message (the deviation id for a raised deviation, as ``raise_deviation`` returned before)."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge.custody import (
    HandedOver,
    Infused,
    LabelsApplied,
    LabelsDestroyed,
    LabelsPrinted,
    LabelsReconciled,
    Received,
)
from edge.outcomes import (
    BatchStarted,
    DeviationCommented,
    DeviationLinked,
    DeviationRaised,
    DoseCalculated,
    Outcome,
    ScanAccepted,
    Signed,
    ValueCorrected,
    ValueRecorded,
)

text = st.text(max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(text, json_values, max_size=4)
place = st.fixed_dictionaries(
    {"from": text, "to": text, "place": text, "site": text}, optional={"bag": text}
)
tally = {"printed": st.integers(0), "applied": st.integers(0), "destroyed": st.integers(0)}
counts = st.dictionaries(text, st.fixed_dictionaries(tally | {"balanced": st.booleans()}))
OUTCOMES: st.SearchStrategy[Outcome] = st.one_of(
    st.builds(BatchStarted),
    st.builds(ScanAccepted, identifiers=json_objects),
    st.builds(ValueRecorded),
    st.builds(ValueCorrected),
    st.builds(DoseCalculated),
    st.builds(Signed),
    st.builds(DeviationRaised),
    st.builds(DeviationCommented),
    st.builds(DeviationLinked),
    st.builds(LabelsPrinted),
    st.builds(LabelsApplied),
    st.builds(LabelsDestroyed),
    st.builds(LabelsReconciled, counts=counts),
    st.builds(HandedOver, record=place),
    st.builds(Received, record=place),
    st.builds(Infused, record=place),
)


@given(OUTCOMES)
def test_the_json_form_is_lossless_and_names_its_kind(outcome: Outcome) -> None:
    data: dict[str, Any] = json.loads(json.dumps(outcome.to_json()))
    assert data.pop("outcome") == outcome.kind
    assert data.pop("message") == outcome.message
    assert set(data) == {f.name for f in fields(outcome)}
    assert type(outcome)(**data) == outcome


@given(OUTCOMES)
def test_the_text_form_is_the_message(outcome: Outcome) -> None:
    if isinstance(outcome, DeviationRaised):
        assert str(outcome) == outcome.deviation_id
        assert outcome.message == f"deviation {outcome.deviation_id} raised"
    else:
        assert str(outcome) == outcome.message
    assert f"{outcome}" == str(outcome)  # what a template or an f-string shows


def test_each_kind_is_its_own() -> None:
    kinds = [
        c.kind
        for c in (BatchStarted, ScanAccepted, ValueRecorded, ValueCorrected, DoseCalculated,
                  Signed, DeviationRaised, DeviationCommented, DeviationLinked, LabelsPrinted,
                  LabelsApplied, LabelsDestroyed, LabelsReconciled, HandedOver, Received, Infused)
    ]  # fmt: skip
    assert len(set(kinds)) == len(kinds)
