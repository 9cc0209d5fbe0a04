"""Issue 18, item 4: two simultaneous decisions on one batch both succeeded (the latest
disposition was read, checked, then inserted, without a lock).  Parallel requests through the real
server, on SQLite and PostgreSQL: one decision per state, one custody step per state."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx

from tests.security.test_review_record import settled_push_batch as push_batch
from tests.server.conftest import Server
from tests.server.qa import (
    PASSWORD,
    PEOPLE,
    add_people,
    enter_results,
    example_results,
    login,
    publish_spec,
    sign,
)

FINAL = {"released", "exceptional_release", "rejected"}
COI = "&/CHA999926ABC123"
PATH = "/v1/custody/CHA999926ABC123/events"


def together(calls: Sequence[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run the calls at the same moment (a barrier releases them together)."""
    gate = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        gate.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def valid_sequence(decisions: list[str]) -> bool:
    """A jurisdiction's dispositions in order: at most one conditional release, first; at most
    one final decision, last."""
    if decisions.count("conditional_release") > 1 or sum(d in FINAL for d in decisions) > 1:
        return False
    if "conditional_release" in decisions and decisions[0] != "conditional_release":
        return False
    return all(d not in FINAL for d in decisions[:-1])


def test_parallel_decisions_give_one_decision_per_state(server: Server, tmp_path: Path) -> None:
    add_people(server, {u: PEOPLE[u] for u in ("rev.a", "appr.a", "appr.a2", "qa.global")})
    publish_spec(server)
    push_batch(server, tmp_path, unit_id="UNIT-R1", site="SITE-A", batch_id="B-R1", deviation=False)
    rev = login(server, "rev.a")
    assert enter_results(rev, "B-R1", example_results()).status_code == 201
    for j in ("EU", "UK"):
        assert sign(rev, "B-R1", "rev.a", "reviewed", j).status_code == 201
    # Four at once: the server checks at most four passwords at a time (more are answered 503).
    # A client each: one httpx.Client shared by threads once read a socket another had closed.
    approvers = [login(server, u) for u in ("appr.a", "appr.a2") * 2]
    view = rev.get("/v1/batches/B-R1").json()

    def decide(i: int, j: str, meaning: str = "released") -> Callable[[], httpx.Response]:
        uid = ("appr.a", "appr.a2")[i % 2]
        c = approvers[i]
        return lambda: sign(c, "B-R1", uid, meaning, j, view=view, reason=f"{meaning} {j}")

    # Four conditional releases of the same state at once: exactly one is decided.
    got = together([decide(i, "EU") for i in range(4)])
    codes = sorted(r.status_code for r in got)
    assert codes.count(201) == 1 and set(codes) <= {201, 409, 503}, [r.text for r in got]
    assert 409 in codes  # the race was run: a second decision reached the check
    # Rejections and releases of the same state at once: a valid sequence of decisions.
    got = together([decide(i, "UK", ("rejected", "released")[i // 2]) for i in range(4)])
    assert all(r.status_code in (201, 409, 503) for r in got), [r.text for r in got]
    after = rev.get("/v1/batches/B-R1").json()
    by_j: dict[str, list[str]] = {}
    for d in after["dispositions"]:
        by_j.setdefault(d["jurisdiction"], []).append(d["disposition"])
    assert by_j["EU"] == ["conditional_release"]
    assert valid_sequence(by_j["UK"]), by_j["UK"]
    assert len(by_j["UK"]) == sum(r.status_code == 201 for r in got)


def party(user: str, meaning: str) -> dict[str, str]:
    return {"user_id": user, "password": PASSWORD, "meaning": meaning}


def test_parallel_custody_steps_give_one_step_per_state(server: Server, tmp_path: Path) -> None:
    add_people(
        server,
        {
            "op.ana": ("Ana Operator", [("operator", "SITE-A")]),
            "nurse.lee": ("Lee Nurse", [("operator", "HOSP-1")]),
            "nurse.kai": ("Kai Nurse", [("operator", "HOSP-1")]),
        },
    )
    push_batch(server, tmp_path, unit_id="UNIT-R2", site="SITE-A", batch_id="B-R2", deviation=False)
    # A client per thread (see above); each nurse twice.
    anas = [login(server, "op.ana") for _ in range(4)]
    nurses = [login(server, u) for u in ("nurse.lee", "nurse.kai") * 2]
    handoff = {
        "kind": "handoff", "from_party": "SITE-A", "to_party": "HOSP-1", "place": "dispatch",
        "bag_scan": "]C0" + COI, "parties": [party("op.ana", "handed_over")],
    }  # fmt: skip
    # Four hand-offs of the bag held by SITE-A at once: it is handed over once.
    calls = [
        partial(ana.post, PATH, json=handoff | {"parties": [
            party("op.ana", "handed_over"), party(who, "received")]})
        for ana, who in zip(anas, ("nurse.lee", "nurse.kai") * 2, strict=True)
    ]  # fmt: skip
    got = together(calls)
    assert sorted(r.status_code for r in got) == [201, 409, 409, 409], [r.text for r in got]
    received = {"kind": "received", "to_party": "HOSP-1", "place": "ward 3",
                "bag_scan": "]C0" + COI}  # fmt: skip
    r = nurses[0].post(PATH, json=received | {"parties": [party("nurse.lee", "received")]})
    assert r.status_code == 201, r.text
    # Four infusions of the one bag at once: it is infused once.
    infused = received | {"kind": "infused", "place": "ward 3 bed 2"}
    got = together(
        [
            partial(c.post, PATH, json=infused | {"parties": [party(who, "administered")]})
            for c, who in zip(nurses, ("nurse.lee", "nurse.kai") * 2, strict=True)
        ]
    )  # fmt: skip
    assert sorted(r.status_code for r in got) == [201, 409, 409, 409], [r.text for r in got]
    kinds = [e["kind"] for e in nurses[0].get(PATH.removesuffix("/events")).json()["events"]]
    assert kinds == ["handoff", "received", "infused"]
