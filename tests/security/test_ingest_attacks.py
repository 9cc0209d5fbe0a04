"""Attacks on ingest (issue 18) through the real server over HTTP: writing into another unit's
batch, server-only event kinds, colliding batch ids, junk lines below the head, deep JSON,
malformed request times, impossible and implausible event times, identical segments at once."""

from __future__ import annotations

import gzip
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from ebr_core.chain import ChainBuilder, sign_checkpoint
from ebr_core.keys import UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.record import GENESIS_HASH, Event, event_hash
from ebr_core.requestsig import sign_request
from edge.ledger import Ledger
from tests.server.conftest import Server, clock, make_ledger
from tests.server.qa import add_people, login

START = {"coi": "&/CHA999926ABC123", "mbr_id": "M", "mbr_version": "1", "mbr_hash": "0" * 64,
         "product": "p"}  # fmt: skip


def post(server: Server, signer: UnitSigner, data: bytes) -> httpx.Response:
    path = f"/v1/units/{signer.unit_id}/segments"
    body = gzip.compress(data)
    h = sign_request(signer, "POST", path, body, timestamp=int(time.time()),
                     nonce=secrets.token_hex(16))  # fmt: skip
    return httpx.post(
        server.url + path,
        content=body,
        headers=h.as_dict() | {"Content-Encoding": "gzip"},
        timeout=60,
    )


def segment(led: Ledger, after: int = 0) -> bytes:
    return b"".join(ln + b"\n" for ln in led.lines(after) if ln)


def admin_json(server: Server, path: str) -> Any:
    with server.admin() as c:
        r = c.get(path)
        assert r.status_code == 200, r.text
        return r.json()


def alerts(server: Server, kind: str) -> list[dict[str, Any]]:
    return [a for a in admin_json(server, "/admin/alerts") if a["kind"] == kind]


def unit(server: Server, unit_id: str, site: str) -> UnitSigner:
    u = UnitSigner.generate(unit_id)
    server.enrol(u, site=site)
    return u


def started(tmp_path: Path, u: UnitSigner, batch: str) -> Ledger:
    led = Ledger.open(tmp_path / f"{u.unit_id}.db", u, clock())  # type: ignore[arg-type]
    led.append("batch.started", START, batch_id=batch, actor="op.alice")
    return led


# -- 1. batch ownership -------------------------------------------------------------------------


def test_a_unit_cannot_write_into_another_sites_batch(server: Server, tmp_path: Path) -> None:
    """Site A's unit pushed deviation.closed and signature.applied into site B's batch; site B
    then released it with the deviation never closed."""
    a, b = unit(server, "UNIT-A", "SITE-A"), unit(server, "UNIT-B", "SITE-B")
    led_b = started(tmp_path, b, "B-SITE-B")
    led_b.append("deviation.raised", {"deviation_id": "DEV-1", "reason": "r", "step": None,
                                      "category": "operator", "severity": "major"},
                 batch_id="B-SITE-B", actor="op.bob")  # fmt: skip
    assert post(server, b, segment(led_b)).status_code == 200

    led_a = Ledger.open(tmp_path / "a.db", a, clock())  # type: ignore[arg-type]
    led_a.append("step.completed", {"step": "x"}, batch_id="B-A-OWN", actor="op.ann")
    led_a.append("signature.applied", {"step": "review", "user_id": "rev.b", "printed_name": "R",
                                       "meaning": "reviewed", "signed_hash": "0" * 64},
                 batch_id="B-SITE-B", actor="rev.b")  # fmt: skip
    r = post(server, a, segment(led_a))
    assert r.status_code == 403, r.text
    # It never got as far as B-SITE-B: its first batch was never started (a batch has an owner).
    assert "batch B-A-OWN was never started" in r.json()["detail"]

    led_a2 = Ledger.open(tmp_path / "a2.db", UnitSigner.generate("UNIT-A2"), clock())  # type: ignore[arg-type]
    a2 = led_a2.signer
    server.enrol(a2, site="SITE-A")
    led_a2.append("batch.started", START, batch_id="B-A2", actor="op.ann")
    led_a2.append("signature.applied", {"step": "review", "user_id": "rev.b", "printed_name": "R",
                                        "meaning": "reviewed", "signed_hash": "0" * 64},
                  batch_id="B-SITE-B", actor="rev.b")  # fmt: skip
    r = post(server, a2, segment(led_a2))
    detail = r.json()["detail"]
    assert r.status_code == 403, r.text
    assert "batch B-SITE-B belongs to unit UNIT-B at site SITE-B" in detail
    assert "seq 2 (signature.applied)" in detail and "nothing stored" in detail
    assert server.events("UNIT-A2") == 0  # nothing of the segment was kept, B-A2 neither
    assert admin_json(server, "/admin/units/UNIT-A2")["head_seq"] == 0

    found = alerts(server, "security.foreign_batch")
    assert {a["site_id"] for a in found if a["batch_id"] == "B-SITE-B"} == {"SITE-A", "SITE-B"}
    trail = admin_json(server, "/v1/audit?object_type=batch&object_id=B-SITE-B")["entries"]
    assert [e["action"] for e in trail] == ["segment.refused"]
    assert trail[0]["actor"] == "UNIT-A2" and trail[0]["new"]["seq"] == 2

    view = admin_json(server, "/v1/batches/B-SITE-B")
    assert view["events"] == 2 and [d["open"] for d in view["deviations"]] == [True]


def test_no_unit_writes_a_kind_only_the_server_writes(server: Server, tmp_path: Path) -> None:
    """deviation.closed is the server's (QA closes deviations there): even the batch's own unit
    cannot close one from its ledger."""
    b = unit(server, "UNIT-B", "SITE-B")
    led = started(tmp_path, b, "B-1")
    led.append("deviation.raised", {"deviation_id": "DEV-1", "reason": "r", "step": None,
                                    "category": "operator", "severity": "major"},
               batch_id="B-1", actor="op.bob")  # fmt: skip
    led.append("deviation.closed", {"deviation_id": "DEV-1", "reason": "fixed"}, batch_id="B-1",
               actor="op.bob")  # fmt: skip
    r = post(server, b, segment(led))
    assert r.status_code == 403, r.text
    detail = r.json()["detail"]
    assert "batch B-1 (held by unit UNIT-B): seq 3 is a deviation.closed event" in detail
    assert "which only the server records" in detail
    assert server.events("UNIT-B") == 0
    assert len(alerts(server, "security.foreign_batch")) == 1


def test_one_batch_id_at_two_sites_is_refused_not_a_500(server: Server, tmp_path: Path) -> None:
    """Two sites using the same batch id made GET /v1/batches/{id} and report.pdf answer 500."""
    a, b = unit(server, "UNIT-A", "SITE-A"), unit(server, "UNIT-B", "SITE-B")
    led_a, led_b = started(tmp_path, a, "B-SAME"), started(tmp_path, b, "B-SAME")
    led_b.append("step.completed", {"step": "s"}, batch_id="B-SAME", actor="op.bob")
    assert post(server, a, segment(led_a)).status_code == 200
    r = post(server, b, segment(led_b))
    assert r.status_code == 403, r.text
    assert "batch B-SAME belongs to unit UNIT-A at site SITE-A" in r.json()["detail"]
    assert "seq 1 (batch.started)" in r.json()["detail"]
    assert "start this batch under a new id" in r.json()["detail"]
    # The refused unit stays refused (two batches never merge) and says why each time.
    again = post(server, b, segment(led_b))
    assert again.status_code == 403 and "B-SAME" in again.json()["detail"]
    add_people(server, {"rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")])})
    with login(server, "rev.a") as c:
        assert c.get("/v1/batches/B-SAME").status_code == 200
        assert c.get("/v1/batches/B-SAME").json()["events"] == 1
        assert c.get("/v1/batches/B-SAME/report.pdf").status_code == 200
    assert server.events("UNIT-B") == 0


def test_two_units_starting_one_batch_id_at_once(server: Server, tmp_path: Path) -> None:
    """The race: both see no owner; exactly one gets the batch, the other 403, never a merge."""
    units = [unit(server, f"UNIT-R{i}", f"SITE-R{i}") for i in range(4)]
    segs = [segment(started(tmp_path, u, "B-RACE")) for u in units]
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda us: post(server, *us).status_code, zip(units, segs)))
    assert codes == [200, 403, 403, 403]
    assert admin_json(server, "/v1/batches/B-RACE")["events"] == 1


# -- 9. junk lines at or below the head ---------------------------------------------------------


def test_junk_at_or_below_the_head_is_refused_before_fork_detection(
    server: Server, tmp_path: Path
) -> None:
    u = unit(server, "UNIT-J", "SITE-A")
    led = make_ledger(tmp_path / "j.db", u, groups=1, per_group=4)
    assert post(server, u, segment(led)).status_code == 200
    lines = segment(led).split(b"\n")[:-1]
    ev = orjson.loads(lines[2])  # an event at or below the head, altered without its hash
    ev["payload"]["i"] = 999
    altered = orjson.dumps(ev, option=orjson.OPT_SORT_KEYS) + b"\n"
    for junk, why in [
        (b'{"seq":1,"type":"seal"}\n', "line 1"),
        (b'{"seq":2,"type":"checkpoint"}\n', "line 1"),
        (lines[0] + b"\n" + altered, "line 2"),
    ]:
        r = post(server, u, junk)
        assert r.status_code == 422, (junk, r.text)
        assert r.json()["detail"].startswith(why), r.text
        assert "must be this unit's signed events" in r.json()["detail"]
    assert alerts(server, "security.fork") == []
    # A real fork (the unit's own key, a different history) is still a fork.
    fork = Ledger.open(tmp_path / "fork.db", u, clock())  # type: ignore[arg-type]
    fork.append("batch.started", START | {"product": "other"}, batch_id="B-1", actor="op.x")
    r = post(server, u, segment(fork))
    assert r.status_code == 409 and "fork" in r.json()["detail"]
    assert len(alerts(server, "security.fork")) == 1
    # And a retry of what is stored is still a retry.
    r = post(server, u, segment(led))
    assert r.status_code == 200 and r.json()["duplicates"] == 5


# -- 3. 500s from unvalidated input -------------------------------------------------------------


def deep_segment(u: UnitSigner, n: int) -> bytes:
    return (
        b'{"actor":null,"batch_id":"B-1","hash":"' + b"0" * 64 + b'","kind":"reading.recorded",'
        b'"payload":{"v":' + b"[" * n + b"]" * n + b'},"prev_hash":"' + GENESIS_HASH.encode()
        + b'","recorded_at":"2026-11-30T10:00:00.000000Z","seq":1,"type":"event","unit_id":"'
        + u.unit_id.encode() + b'"}\n'
    )  # fmt: skip


def test_deep_json_and_bad_request_times_are_4xx(server: Server) -> None:
    u = unit(server, "UNIT-D", "SITE-A")
    for n in (900, 5000):
        r = post(server, u, deep_segment(u, n))
        assert r.status_code == 422, r.text
        assert "line 1" in r.json()["detail"]
    path = "/v1/units/UNIT-D/head"
    h = sign_request(u, "GET", path, b"", timestamp=int(time.time()), nonce=secrets.token_hex(16))
    for bad in ("²".encode("latin-1"), b"9" * 5000, b"-1", b"1e9"):
        headers = {k.encode(): v.encode() for k, v in h.as_dict().items()}
        r = httpx.get(server.url + path, headers=headers | {b"X-Ctgtp-Time": bad})
        assert r.status_code == 401, (bad[:10], r.text)
        assert "X-Ctgtp-Time must be unix seconds (1 to 12 ASCII digits)" in r.json()["detail"]


def test_identical_segments_at_the_same_moment(server: Server, tmp_path: Path) -> None:
    """Pushed 8 times at once: every answer is the same receipt head (or a clean 503 to retry),
    never a 500, and the events are stored once."""
    u = unit(server, "UNIT-I", "SITE-A")
    led = make_ledger(tmp_path / "i.db", u, groups=1, per_group=3000)
    data = segment(led)
    for _round in range(2):
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post(server, u, data), range(8)))
        assert {r.status_code for r in answers} <= {200, 503}, [r.text for r in answers]
        heads = {(r.json()["head_seq"], r.json()["head_hash"]) for r in answers if r.is_success}
        assert heads == {(led.head[0], led.head[1])}
    assert server.events("UNIT-I") == led.head[0]


# -- 4. time ------------------------------------------------------------------------------------


def forged(u: UnitSigner, times: list[str], batch: str = "B-T") -> bytes:
    """Correctly hashed, chained and signed events with the given times (no clock check)."""
    prev, out = GENESIS_HASH, []
    for seq, ra in enumerate(times, 1):
        kind, payload = ("batch.started", START) if seq == 1 else ("step.completed", {"step": "s"})
        body: dict[str, Any] = {"unit_id": u.unit_id, "seq": seq, "prev_hash": prev,
                                "recorded_at": ra, "batch_id": batch, "kind": kind,
                                "actor": "op.t", "payload": payload}  # fmt: skip
        ev = Event(**body, hash=event_hash(body))
        prev = ev.hash
        out.append(encode_record(ev))
    out.append(encode_record(sign_checkpoint(u, len(times), 0, prev)))
    return b"".join(out)


def test_an_impossible_time_is_refused(server: Server) -> None:
    u = unit(server, "UNIT-T", "SITE-A")
    r = post(server, u, forged(u, ["2026-13-45T99:99:99.000000Z"]))
    assert r.status_code == 422, r.text
    assert "is not a real calendar time" in r.json()["detail"]
    assert server.events("UNIT-T") == 0


def chain_at(u: UnitSigner, times: list[datetime], batch: str) -> bytes:
    it = iter(times)
    b = ChainBuilder(u, lambda: next(it))
    evs: list[Event] = [b.next_event("batch.started", START, batch_id=batch, actor="op.t")]
    evs += [b.next_event("step.completed", {"step": f"s{i}"}, batch_id=batch, actor="op.t")
            for i in range(len(times) - 1)]  # fmt: skip
    return b"".join(encode_record(e) for e in evs) + encode_record(b.checkpoint())


def test_clocks_ahead_before_enrolment_and_backwards_are_flagged(
    server: Server, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    cases: dict[str, tuple[list[datetime], str]] = {
        "clock.ahead": ([now + timedelta(hours=1, seconds=i) for i in range(20)], "B-AHEAD"),
        "clock.before_enrolment": ([now - timedelta(days=1, seconds=-i) for i in range(20)],
                                   "B-EARLY"),
        "clock.backwards": ([now + timedelta(seconds=10 - (5 if i == 7 else 0) + i)
                             for i in range(20)], "B-BACK"),
    }  # fmt: skip
    for n, (kind, (times, batch)) in enumerate(cases.items()):
        u = unit(server, f"UNIT-C{n}", "SITE-A")
        r = post(server, u, chain_at(u, times, batch))
        assert r.status_code == 200, r.text  # flagged, not refused: it is what the unit signed
        flagged = alerts(server, kind)
        assert len(flagged) == 1, (kind, flagged)  # one per segment and kind, not per event
        assert flagged[0]["batch_id"] == batch and flagged[0]["unit_id"] == u.unit_id
        assert flagged[0]["site_id"] == "SITE-A"
    assert "seq 1 is dated" in alerts(server, "clock.ahead")[0]["message"]
    assert "20 event(s)" in alerts(server, "clock.ahead")[0]["message"]
    assert "seq 8 is dated" in alerts(server, "clock.backwards")[0]["message"]
    # A clock in step raises nothing.
    u = unit(server, "UNIT-OK", "SITE-A")
    now = datetime.now(UTC)
    assert post(server, u, chain_at(u, [now + timedelta(seconds=i) for i in range(5)], "B-OK"))
    kinds = {a["kind"] for a in admin_json(server, "/admin/alerts") if a["batch_id"] == "B-OK"}
    assert kinds == set()
    # Backwards across segments: the next segment starts before the stored head's time.
    later = ChainBuilder(u, _times([now + timedelta(seconds=2)]), seq=5,
                         head_hash=admin_json(server, "/admin/units/UNIT-OK")["head_hash"],
                         checkpoint_seq=5)  # fmt: skip
    ev = later.next_event("step.completed", {"step": "late"}, batch_id="B-OK", actor="op.t")
    assert post(server, u, encode_record(ev) + encode_record(later.checkpoint())).status_code == 200
    back = [a for a in alerts(server, "clock.backwards") if a["batch_id"] == "B-OK"]
    assert len(back) == 1 and "seq 6" in back[0]["message"]


def _times(ts: list[datetime]) -> Callable[[], datetime]:
    it = iter(ts)
    return lambda: next(it)
