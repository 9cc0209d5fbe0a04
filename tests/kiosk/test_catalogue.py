"""The kiosk's texts and its one judgement of its own: every text key used exists in the
catalogue with the fields given, and the re-entry prompt agrees with the engine's limits."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ebr_core.mbr import Limit, ValueSpec
from edge.engine import Engine
from edge.kiosk import strings
from edge.kiosk.app import outside_limits

KIOSK = Path(strings.__file__).resolve().parent
KEY = re.compile(r"""\bt(?:r)?\(\s*["']([a-z_]+\.[a-z_0-9]+)["']""")
QUOTED = re.compile(r"""["']([a-z_]+\.[a-z_0-9]+)["']""")


def sources() -> list[str]:
    return [p.read_text() for p in [*KIOSK.glob("*.py"), *KIOSK.glob("templates/**/*.html")]]


def used_keys() -> set[str]:
    """Keys asked for with t("...") or tr("...")."""
    return {k for text in sources() for k in KEY.findall(text)}


def test_every_key_used_is_in_the_catalogue() -> None:
    used = used_keys()
    assert len(used) > 100
    dynamic = {k for k in strings.EN if k.split(".")[0] in ("role", "fmt", "ex", "nav")}
    assert not used - set(strings.EN), sorted(used - set(strings.EN))
    mentioned = {k for text in sources() for k in QUOTED.findall(text)}  # "a" if x else "b"
    unused = set(strings.EN) - mentioned - dynamic
    assert not unused, sorted(unused)


def test_a_translation_is_checked_against_english() -> None:
    assert strings.check_catalogue(strings.EN) == []
    fr = dict(strings.EN)
    fr["step.header"] = "Étape {n} sur {totl}"
    del fr["nav.sync"]
    assert strings.check_catalogue(fr) == [
        "missing key nav.sync",
        "key step.header: fields ['n', 'total'], translation has ['n', 'totl']",
    ]
    strings.CATALOGUES["fr"] = {"step.header": "Étape {n} sur {total}"}
    try:
        assert strings.t("step.header", "fr", n=5, total=13) == "Étape 5 sur 13"
        assert strings.t("nav.sync", "fr") == "Sync"  # untranslated: English
    finally:
        del strings.CATALOGUES["fr"]


def test_every_scan_role_has_a_format_and_an_example() -> None:
    for role in ("patient_material", "final_product", "cartridge", "reagent", "equipment"):
        assert strings.EN[f"fmt.{role}"] and strings.EN[f"ex.{role}"]


decimals = st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False)
limits = st.builds(
    lambda a, b, lo, hi: Limit(min(a, b) if lo else None, max(a, b) if hi else None),
    decimals, decimals, st.booleans(), st.booleans(),
).filter(lambda lim: lim.min is not None or lim.max is not None)  # fmt: skip


@given(hard=st.one_of(st.none(), limits), soft=st.one_of(st.none(), limits), v=decimals)
def test_reentry_prompt_agrees_with_the_engines_limits(
    hard: Limit | None, soft: Limit | None, v: Decimal
) -> None:
    """The kiosk asks for a value again exactly when the engine would record it as breaching
    a limit (hard before soft): one rule, judged by the engine's own check."""
    spec = ValueSpec("x", "mL", hard, soft)
    engine_status = Engine.limit_status(spec, str(v))
    kiosk = outside_limits(spec, str(v))
    assert (kiosk[0] if kiosk else "ok") == engine_status
