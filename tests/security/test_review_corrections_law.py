"""The law of :func:`ebr_core.batch.current_values` (what the batch view and report show for a
corrected value): whatever the corrections, a value is the last correction's new value (or the
recorded one), each correction's old value is what stood before it (never the correction's own
claim), and applying corrections in two parts gives what applying them at once does."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ebr_core.batch import current_values

KEYS = ["s1:a", "s1:b", "s2:a"]


def q(v: int) -> dict[str, str]:
    return {"value": str(v), "unit": "mL"}


values = st.dictionaries(st.sampled_from(KEYS), st.integers(0, 999).map(q), max_size=3).map(
    lambda d: {k: {"step": k.split(":")[0], "name": k.split(":")[1], "value": v, "limit": "ok"}
               for k, v in d.items()}
)  # fmt: skip
corrections = st.lists(
    st.tuples(
        st.sampled_from([*KEYS, "s9:z"]),
        st.integers(0, 999),
        st.one_of(st.none(), st.integers(0, 999)),  # a claimed old value, right or wrong
    ),
    max_size=12,
).map(
    lambda cs: [
        {"step": k.split(":")[0], "name": k.split(":")[1], "value": q(v), "reason": "r",
         "seq": 100 + i, **({} if old is None else {"old_value": q(old)})}
        for i, (k, v, old) in enumerate(cs)
    ]
)  # fmt: skip


@given(values, corrections, st.integers(0, 12))
def test_current_values_law(
    recorded: dict[str, dict[str, Any]], fixes: list[dict[str, Any]], cut: int
) -> None:
    before = copy.deepcopy(recorded)
    now, applied = current_values(recorded, fixes)
    assert recorded == before  # the recorded values are never changed in place
    assert len(applied) == len(fixes)
    standing = {k: v["value"] for k, v in recorded.items()}
    for c, a in zip(fixes, applied, strict=True):
        key = f"{c['step']}:{c['name']}"
        if key not in recorded:
            assert a["key"] is None  # names no recorded value: nothing applied
            continue
        assert a["key"] == key and a["old_value"] == standing[key]
        assert a["claimed_old_value"] == c.get("old_value")
        standing[key] = c["value"]
    assert {k: v["value"] for k, v in now.items()} == standing
    for k, v in now.items():
        if v["value"] != recorded[k]["value"] or "corrected_by" in v:
            assert v["recorded_value"] == recorded[k]["value"]
    # in two parts: the first part's values carry the recorded value forward
    first, _ = current_values(recorded, fixes[:cut])
    both, _ = current_values(first, fixes[cut:])
    assert {k: v["value"] for k, v in both.items()} == standing
