"""Station input as a new user tries it (issue 18, item 12): every action needs a known, active
user; a correction is re-authenticated and self-contained; negative values are values, not
options; the MBR and the materials list are refused when malformed, naming file, path and what
is expected.  Real SQLite ledgers, the real `ctgtp` command line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctgtp.cli import cli
from edge.agent import open_agent
from edge.custody import Custody
from edge.engine import Engine, EngineRefusal, UnknownUser
from edge.materials import MaterialsError, load_materials
from edge.users import hash_password, load_users

from .conftest import COI, EXAMPLES, PW

LISTING = (
    "the station's users are listed by 'ctgtp edge users' (users.yaml, published by the server "
    "with 'ctgtp edge users-pull')"
)
DANA_PW = "dana-left-pass"
USERS = (EXAMPLES / "users.yaml").read_text() + (
    "  - user_id: op.dana\n"
    "    printed_name: Dana Ruiz\n"
    "    roles: [operator]\n"
    "    active: false\n"
    f'    password_hash: "{hash_password(DANA_PW)}"\n'
)
INSPECT = "receipt/apheresis/inspect"


def unknown(user: str) -> str:
    return f"user {user!r} is not a user of this station; {LISTING}"


def inactive(user: str) -> str:
    return f"user {user!r} is not active on this station and can record nothing; {LISTING}"


@pytest.fixture
def station(started: Engine) -> Engine:
    """The started batch on a station whose users file also lists a person who left."""
    started.users = load_users(USERS)
    return started


def _custody(e: Engine) -> Custody:
    return Custody(e)


ACTIONS: dict[str, Callable[[Engine, str], Any]] = {
    "scan": lambda e, u: e.scan("B1", COI, u),
    "value": lambda e, u: e.record_value("B1", "apheresis_volume", "200", "mL", u),
    "calculation": lambda e, u: e.calculate("B1", u),
    "deviation": lambda e, u: e.raise_deviation("B1", "bag label smudged", u),
    "comment": lambda e, u: e.comment_deviation("B1", "DEV-B1-001", "re-printed", u),
    "link": lambda e, u: e.link_deviation("B1", "DEV-B1-001", "DEV-B1-001", u),
    "correction": lambda e, u: e.correct_value(
        "B1", INSPECT, "apheresis_volume", "202", "mL", "typo", u, DANA_PW
    ),
    "signature": lambda e, u: e.sign("B1", DANA_PW, "performed", u),
    "start": lambda e, u: e.start_batch("B2", COI, u, DANA_PW),
    "label printed": lambda e, u: _custody(e).labels_printed("B1", "apheresis_bag", 1, u, {}),
    "label applied": lambda e, u: _custody(e).labels_applied("B1", "apheresis_bag", 1, u),
    "label destroyed": lambda e, u: _custody(e).labels_destroyed(
        "B1", "apheresis_bag", 1, "torn", u
    ),
    "label reconciliation": lambda e, u: _custody(e).reconcile_labels("B1", u),
    "hand-off giver": lambda e, u: _custody(e).handoff(
        "B1", from_party="A", to_party="B", place="goods-in", bag_scan="]C0" + COI,
        shipper_scan=None, giver=(u, DANA_PW), receiver=("op.alice", PW["op.alice"]),
    ),
    "hand-off receiver": lambda e, u: _custody(e).handoff(
        "B1", from_party="A", to_party="B", place="goods-in", bag_scan="]C0" + COI,
        shipper_scan=None, giver=("op.alice", PW["op.alice"]), receiver=(u, DANA_PW),
    ),
    "receipt": lambda e, u: _custody(e).receive(
        "B1", site="S", bag_scan="]C0" + COI, receiver=(u, DANA_PW)
    ),
    "infusion": lambda e, u: _custody(e).infuse(
        "B1", site="S", bag_scan="]C0" + COI, clinician=(u, DANA_PW)
    ),
    "shipper log": lambda e, u: _custody(e).shipper_log(
        "B1", [(datetime(2026, 11, 24, tzinfo=UTC), Decimal(-180))], shipper="SHP-1",
        limit_c=Decimal(-150), allowed=timedelta(minutes=5), user_id=u,
    ),
}  # fmt: skip


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize(("user", "why"), [("nobody", unknown), ("op.dana", inactive)])
def test_every_action_needs_a_known_active_user_and_records_nothing_otherwise(
    station: Engine, action: str, user: str, why: Callable[[str], str]
) -> None:
    head, meta = station.ledger.head, station.ledger.get_meta(f"fails:{user}")
    with pytest.raises(UnknownUser) as e:
        ACTIONS[action](station, user)
    assert str(e.value) == why(user)
    assert station.ledger.head == head and station.ledger.get_meta(f"fails:{user}") == meta


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user=st.text(min_size=0, max_size=20).filter(lambda u: u not in PW and u != "op.dana"))
def test_any_id_not_in_the_users_file_is_refused_and_nothing_is_recorded(
    station: Engine, user: str
) -> None:
    head = station.ledger.head
    for action in ("scan", "value", "deviation", "label applied"):
        with pytest.raises(UnknownUser, match="is not a user of this station"):
            ACTIONS[action](station, user)
    assert station.ledger.head == head


def test_a_locked_user_records_nothing_until_unlocked(station: Engine) -> None:
    for _ in range(3):
        with pytest.raises(EngineRefusal, match=r"wrong password for user op\.bob"):
            station.sign("B1", "nope", "performed", "op.bob")
    head = station.ledger.head
    with pytest.raises(UnknownUser, match=r"user op\.bob is locked after 3 failed attempts"):
        station.raise_deviation("B1", "x", "op.bob")
    assert station.ledger.head == head


def test_a_deviation_comment_carries_its_author_as_the_events_actor(station: Engine) -> None:
    did = station.raise_deviation("B1", "bag label smudged", "op.alice").deviation_id
    station.comment_deviation("B1", did, "label re-printed from the system", "op.bob")
    ev = [e for e in station.ledger.batch_events("B1") if e.kind == "deviation.commented"]
    assert [(e.actor, e.payload["comment"]) for e in ev] == [
        ("op.bob", "label re-printed from the system")
    ]
    with pytest.raises(UnknownUser):
        station.comment_deviation("B1", did, "by whom?", "edge")
    with pytest.raises(EngineRefusal, match="a comment needs text"):
        station.comment_deviation("B1", did, "  ", "op.bob")


def _to_inspect(e: Engine) -> None:
    e.scan("B1", COI, "op.alice")
    e.sign("B1", PW["op.alice"], "performed", "op.alice")
    e.sign("B1", PW["op.bob"], "verified", "op.bob")
    e.record_value("B1", "apheresis_volume", "900", "mL", "op.alice")


def test_a_correction_is_authenticated_and_records_who_when_why_old_and_new(
    station: Engine,
) -> None:
    _to_inspect(station)
    original = next(e for e in station.ledger.batch_events("B1") if e.kind == "value.recorded")
    head = station.ledger.head
    with pytest.raises(EngineRefusal, match=r"wrong password for user op\.bob"):
        station.correct_value(
            "B1", INSPECT, "apheresis_volume", "220", "mL", "typo", "op.bob", "nope"
        )
    events = list(station.ledger.batch_events("B1"))
    assert [e.kind for e in events if e.seq > head[0]] == ["signature.failed"]
    msg = station.correct_value(
        "B1", INSPECT, "apheresis_volume", "220", "mL", "900 was a typo", "op.bob", PW["op.bob"]
    )
    assert str(msg) == (
        f"apheresis_volume corrected from 900 to 220 mL by Bob Okafor (op.bob) (correcting seq "
        f"{original.seq}): 900 was a typo"
    )
    again = station.correct_value(
        "B1", INSPECT, "apheresis_volume", "210", "mL", "re-weighed", "op.alice", PW["op.alice"]
    )
    assert str(again).startswith("apheresis_volume corrected from 220 to 210 mL by Alice Martin")
    first, second = (
        e for e in station.ledger.batch_events("B1") if e.kind == "correction.recorded"
    )
    assert first.actor == "op.bob" and first.recorded_at
    assert first.payload == {
        "corrects": original.seq,
        "step": INSPECT,
        "name": "apheresis_volume",
        "old_value": {"value": "900", "unit": "mL"},
        "value": {"value": "220", "unit": "mL"},
        "limit": "ok",
        "limits": {  # what the new value was judged against (the record carries its limits)
            "unit": "mL",
            "hard": {"min": "50", "max": "500"},
            "soft": {"min": "100", "max": "300"},
        },
        "reason": "900 was a typo",
        "user_id": "op.bob",
        "printed_name": "Bob Okafor",
    }
    assert second.payload["old_value"] == {"value": "220", "unit": "mL"}
    assert second.payload["corrects"] == original.seq and second.actor == "op.alice"


def test_a_correction_is_judged_against_the_limits_and_never_a_no_op(station: Engine) -> None:
    _to_inspect(station)
    msg = station.correct_value(
        "B1", INSPECT, "apheresis_volume", "40", "mL", "scale re-read", "op.alice", PW["op.alice"]
    )
    assert str(msg).endswith("(hard limit breached: deviation raised)")
    dev = list(station.state("B1").deviations.values())[-1]
    assert (dev.severity, dev.reason) == (
        "major",
        "apheresis_volume 40 mL is outside the hard limit 50–500 mL",
    )
    with pytest.raises(EngineRefusal, match="apheresis_volume is already 40 mL: nothing to"):
        station.correct_value(
            "B1", INSPECT, "apheresis_volume", "40.0", "mL", "same", "op.alice", PW["op.alice"]
        )


# -- the command line ----------------------------------------------------------------------------

COLD_MBR = """\
mbr_id: COLD
version: "1"
procedure:
  id: cold
  unit_procedures:
    - id: finish
      operations:
        - id: cryo
          phases:
            - id: freeze
              name: Controlled-rate freezing
              values:
                - {name: end_temperature, unit: Cel, limits: {hard: {max: -80}, soft: {max: "-85"}}}
            - id: qc
              name: QC sampling
              values:
                - {name: qc_samples_taken, unit: "1", limits: {hard: {min: 5}}}
"""


def run(*args: str, stdin: str = "") -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    assert run("keys", "new", "qa.approver", "--out", str(d)).exit_code == 0
    return d


def publish(keys: Path, text: str, name: str = "cold.yaml") -> Result:
    src = keys / name
    src.write_text(text)
    return run(
        "edge", "mbr-publish", str(src), "--key", str(keys / "qa.approver.key"),
        "--signer", "qa.approver", "--out", str(keys / f"{name}.signed.json"),
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, keys: Path) -> Path:
    assert publish(keys, COLD_MBR).exit_code == 0
    users = tmp_path / "users.yaml"
    users.write_text(USERS)
    h = tmp_path / "home"
    r = run(
        "edge", "init", "--home", str(h), "--unit", "UNIT-01",
        "--mbr", str(keys / "cold.yaml.signed.json"), "--publisher-key",
        str(keys / "qa.approver.pub"), "--users", str(users),
        "--materials", str(EXAMPLES / "materials.yaml"),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run(
        "edge", "start", "--home", str(h), "--batch", "B-9", "--coi", COI, "--user", "op.alice",
        "--password-stdin", stdin="alice-demo-pass\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return h


def events(home: Path) -> list[Any]:
    a = open_agent(home, lambda: datetime.now(UTC), writer=False)
    try:
        return list(a.ledger.batch_events("B-9"))
    finally:
        a.close()


def test_negative_values_are_values_on_the_command_line(home: Path) -> None:
    h = ("--home", str(home), "--batch", "B-9")
    r = run("edge", "value", *h, "--user", "op.alice", "end_temperature", "-90", "Cel")
    assert r.exit_code == 0, r.output
    assert "end_temperature = -90 Cel recorded" in r.output
    r = run(
        "edge", "correct", *h, "--user", "op.bob", "--step", "finish/cryo/freeze", "--reason",
        "probe read late", "--password-stdin", "end_temperature", "-95.5", "Cel",
        stdin="bob-demo-pass\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "end_temperature corrected from -90 to -95.5 Cel by Bob Okafor (op.bob)" in r.output
    typo = run("edge", "value", *h, "--usr", "op.alice", "end_temperature", "-90", "Cel")
    assert typo.exit_code == 2 and "No such option '--usr'. Did you mean '--user'?" in typo.output
    kinds = [(e.kind, e.actor) for e in events(home)]
    assert kinds[-2:] == [("value.recorded", "op.alice"), ("correction.recorded", "op.bob")]


def test_unknown_and_inactive_users_are_refused_by_the_command_line(home: Path) -> None:
    h = ("--home", str(home), "--batch", "B-9")
    before = len(events(home))
    for user, why in (("nobody", unknown), ("op.dana", inactive)):
        for args in (
            ("value", *h, "--user", user, "end_temperature", "-90", "Cel"),
            ("deviation", "raise", *h, "--user", user, "freezer door open"),
            ("scan", *h, "--user", user, COI),
        ):
            r = run("edge", *args)
            assert r.exit_code == 1 and f"Error: {why(user)}" in r.output, (args, r.output)
    assert len(events(home)) == before
    listed = run("edge", "users", "--home", str(home))
    assert listed.exit_code == 0
    assert listed.output.splitlines() == [
        "op.alice\tAlice Martin\toperator\tactive",
        "op.bob\tBob Okafor\toperator\tactive",
        "op.chen\tWei Chen\toperator\tactive",
        "op.dana\tDana Ruiz\toperator\tinactive",
    ]


def test_a_correction_on_the_command_line_needs_the_password(home: Path) -> None:
    h = ("--home", str(home), "--batch", "B-9")
    assert (
        run("edge", "value", *h, "--user", "op.alice", "end_temperature", "-90", "Cel").exit_code
        == 0
    )
    r = run(
        "edge", "correct", *h, "--user", "op.alice", "--step", "finish/cryo/freeze", "--reason",
        "typo", "--password-stdin", "end_temperature", "-91", "Cel", stdin="wrong\n",
    )  # fmt: skip
    assert r.exit_code == 1 and "wrong password for user op.alice" in r.output
    kinds = [e.kind for e in events(home)]
    assert "correction.recorded" not in kinds and kinds[-1] == "signature.failed"


def test_a_misspelt_mbr_key_is_refused_at_publishing(keys: Path) -> None:
    r = publish(
        keys,
        COLD_MBR.replace("name: QC sampling", "name: QC sampling\n              critcal: true"),
        "typo.yaml",
    )
    assert r.exit_code == 1
    assert r.output == (
        "Error: typo.yaml is not a valid master batch record: procedure.unit_procedures[0]"
        ".operations[0].phases[1]: unknown key 'critcal' (did you mean 'critical'?); the "
        "allowed keys are id, name, instruction, scans, values, calculation, signature, "
        "critical [step finish/cryo/qc]\n"
    )
    wide = publish(keys, COLD_MBR.replace('soft: {max: "-85"}', 'soft: {max: "-70"}'), "wide.yaml")
    assert wide.exit_code == 1 and (
        "phases[0].values[0].limits.soft: the soft limit ≤ -70 does not lie within the hard "
        "limit ≤ -80: soft max -70 is above hard max -80" in wide.output
    )


MATERIALS = (EXAMPLES / "materials.yaml").read_text()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("expiry:", "expirey:", 1), "reagents[0]: unknown key 'expirey' (did you mean 'expiry'?); "
         "the allowed keys are material, gtin, batch, expiry, status"),
        (("released}", "released, note: x}", 1), "reagents[0]: unknown key 'note'"),
        (('"2027-03-31"', '"2027-02-30"', 1), "reagents[0].expiry: '2027-02-30' is not a date; "
         "expected a calendar date YYYY-MM-DD"),
        (("status: released", "status: relased", 1), "reagents[0].status: Input should be "
         "'released', 'quarantined' or 'rejected' (got 'relased')"),
        (('"09506000134352"', '"09506000134353"', 1), "reagents[0].gtin: GTIN 09506000134353 has "
         "a wrong check digit (expected 2)"),
        (("IL2-0039", "IL2-0042", 1), "(top level): lot IL2-0042 of GTIN 09506000134369 is listed "
         "twice; expected one entry per lot"),
        (("calibration_due", "calibration", 1), "equipment[0]: unknown key 'calibration' (did you"
         " mean 'calibration_due'?)"),
    ],
)  # fmt: skip
def test_the_materials_list_is_validated_strictly(
    change: tuple[str, str, int], problem: str
) -> None:
    with pytest.raises(MaterialsError) as e:
        load_materials(MATERIALS.replace(*change), "materials.yaml")
    assert str(e.value).startswith(f"materials.yaml is not a valid materials list: {problem}")
