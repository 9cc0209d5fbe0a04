"""Batch projections kept by ingest: equal to a full recomputation after any sequence of
segments, checked on read, and a record hash that changes whenever any event of the batch does."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session

from ebr_core.batch import fold, state_to_json
from ebr_core.keys import UnitSigner
from ebr_core.telemetry import summarise
from edge.ledger import Append, Ledger
from edge.sync import SyncClient
from server import projections
from server.db import BatchSummary, make_engine

from .conftest import Server, clock
from .qa import add_people, login
from .test_qa import pdf_text

_units = itertools.count(1)
START = {"coi": "&/CHA999926ABC123", "mbr_id": "M", "mbr_version": "1", "mbr_hash": "0" * 64}


def reading(i: int, batch: str, value: str = "37.0") -> Append:
    minute = f"{8 + i // 60 % 10:02d}:{i % 60:02d}"
    payload = {
        "channel": ("temperature", "ph")[i % 2],
        "value": {"value": value, "unit": "Cel"},
        "device_time": f"2026-11-24T{minute}:00.000000Z",
        "msg_id": f"{batch}-{i}",
        "limit": "high" if i % 17 == 0 else "ok",
    }
    return Append("reading.recorded", payload, batch, None, f"mqtt:{batch}-{i}:r")


def step_event(i: int, batch: str) -> Append:
    if i % 3 == 0:
        return Append(
            "deviation.raised",
            {"deviation_id": f"DEV-{i}", "step": "s", "category": "operator", "reason": "r",
             "severity": "minor"},
            batch, "op.alice",
        )  # fmt: skip
    if i % 3 == 1:
        return Append("signature.failed", {"step": "s", "user_id": "x", "reason": "bad"}, batch)
    return Append(
        "value.recorded",
        {"step": "s", "name": f"v{i}", "value": {"value": "1", "unit": "1"}, "limit": "soft"},
        batch, "op.alice",
    )  # fmt: skip


def db_session(server: Server) -> Session:
    return Session(make_engine(server.settings.database_url))


# a plan: groups of events, each a list of (batch index, is a reading)
plans = st.lists(
    st.lists(st.tuples(st.integers(0, 1), st.booleans()), min_size=1, max_size=40),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plans, st.integers(min_value=5, max_value=200), st.data())
def test_the_projection_after_any_ingests_equals_a_full_recomputation(
    server: Server, tmp_path: Path, plan: list[list[tuple[int, bool]]], max_events: int,
    data: st.DataObject,
) -> None:  # fmt: skip
    n = next(_units)
    unit = UnitSigner.generate(f"UNIT-P{n}")
    server.enrol(unit)
    led = Ledger.open(tmp_path / f"p{n}.db", unit, clock())  # type: ignore[arg-type]
    batches = [f"B-P{n}-0", f"B-P{n}-1"]
    for b in batches:
        led.append("batch.started", {**START, "product": "p"}, batch_id=b, actor="op.alice")
    client = SyncClient(led, server.url, server_key=server.key, max_events=max_events)
    i = 0
    for group in plan:
        items = []
        for b, is_reading in group:
            i += 1
            items.append(reading(i, batches[b]) if is_reading else step_event(i, batches[b]))
        led.append_many(items)
        if data.draw(st.booleans()):  # sync at any point: segments cut anywhere
            client.sync_once()
    client.sync_once()
    with db_session(server) as s:
        for b in batches:
            stored = projections._stored(s, b)
            assert stored is not None
            full = projections.rebuild(s, b)
            assert stored.to_json() == full.to_json()
            # the digests a read takes from the stored JSON are those of the objects
            assert stored.state_digest() == full.state_digest()
            assert stored.telemetry_digest() == full.telemetry_digest()
            # and equal to the edge's own fold and summary of the same events
            events = list(led.batch_events(b))
            assert stored.state is not None
            assert state_to_json(stored.state) == state_to_json(fold(events)[b])
            assert stored.telemetry.to_json() == summarise(events).to_json()
            summ = s.get(BatchSummary, b)
            assert summ is not None
            assert (summ.events, summ.last_seq, summ.head_hash) == (
                len(events), events[-1].seq, events[-1].hash,
            )  # fmt: skip
            # and a change after the read is not hidden by them
            before = stored.telemetry_digest()
            extra = reading(10_000, b, "99.5")
            late = SimpleNamespace(kind=extra.kind, payload=extra.payload, seq=10_000,
                                   recorded_at="2026-11-24T20:00:00.000000Z")  # fmt: skip
            stored.merge_telemetry(summarise([late]))
            assert stored.telemetry_digest() == stored.telemetry.digest() != before
    led.close()


def stepping(start: datetime) -> Callable[[], datetime]:
    """A clock from ``start``, 250 ms a call: the same events get the same times on every run."""
    t = [start]

    def now() -> datetime:
        t[0] += timedelta(milliseconds=250)
        return t[0]

    return now


def _batch_with(
    tmp_path: Path, server: Server, name: str, values: list[str], start: datetime
) -> str:
    unit = UnitSigner.generate(f"UNIT-{name}")
    server.enrol(unit)
    led = Ledger.open(tmp_path / f"{name}.db", unit, stepping(start))
    led.append("batch.started", {**START, "product": "p"}, batch_id="B-H", actor="op.alice")
    led.append_many([reading(i, "B-H", v) for i, v in enumerate(values)])
    SyncClient(led, server.url, server_key=server.key).sync_once()
    led.close()
    with db_session(server) as s:
        from server.quality import record as review

        return review.load_review(s, "B-H").record_hash


def test_the_record_hash_changes_whenever_any_reading_does(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same batch on fresh servers: one reading changed, added or removed changes the
    record hash a signature binds."""
    from .conftest import server_settings, start_server

    base = ["37.0", "37.1", "36.9", "37.2"]
    variants = {
        "same": base,
        "same again": base,
        "changed": ["37.0", "37.1", "36.8", "37.2"],
        "added": [*base, "37.0"],
        "removed": base[:-1],
    }
    hashes = {}
    start = datetime.now(UTC)
    for name, values in variants.items():
        with start_server(
            server_settings("sqlite", request, tmp_path / name),
            stepping(start - timedelta(minutes=1)),  # enrolled before the batch starts
        ) as srv:
            hashes[name] = _batch_with(tmp_path / name, srv, "H", values, start)
    # the same events give the same hash (so each difference below comes from the change)
    assert hashes["same"] == hashes["same again"]
    assert len({hashes["same"], hashes["changed"], hashes["added"], hashes["removed"]}) == 4


def test_a_corrupt_or_stale_projection_is_rebuilt_not_trusted(
    server: Server, tmp_path: Path
) -> None:
    unit = UnitSigner.generate("UNIT-C1")
    server.enrol(unit)
    led = Ledger.open(tmp_path / "c.db", unit, clock())  # type: ignore[arg-type]
    led.append("batch.started", {**START, "product": "p"}, batch_id="B-C", actor="op.alice")
    led.append_many([reading(i, "B-C") for i in range(50)] + [step_event(3, "B-C")])
    SyncClient(led, server.url, server_key=server.key).sync_once()
    with server.admin() as c:
        truth = c.get("/v1/batches/B-C").json()
    assert truth["readings"] == 50 and truth["telemetry"]["temperature"]["count"] == 25
    with db_session(server) as s:
        s.execute(  # an edit that does not fix the digest: a deviation disappears
            text("UPDATE batch_projections SET body = replace(body, 'DEV-3', 'DEV-X')")
        )
        s.commit()
    with server.admin() as c:
        assert c.get("/v1/batches/B-C").json() == truth
    with db_session(server) as s:  # a projection that lags the event head
        s.execute(text("UPDATE batches SET events = events + 1 WHERE batch_id = 'B-C'"))
        s.commit()
        summ = s.get(BatchSummary, "B-C")
        assert summ is not None
        assert projections.load(s, summ).events == summ.events - 1  # rebuilt from the events
    # a later segment repairs the stored projection
    with db_session(server) as s:
        s.execute(text("UPDATE batches SET events = events - 1 WHERE batch_id = 'B-C'"))
        s.execute(text("UPDATE batch_projections SET digest = 'x' WHERE batch_id = 'B-C'"))
        s.commit()
    led.append_many([reading(100, "B-C")])
    SyncClient(led, server.url, server_key=server.key).sync_once()
    with db_session(server) as s:
        stored = projections._stored(s, "B-C")
        assert stored is not None and stored.telemetry.readings == 51
        assert stored.to_json() == projections.rebuild(s, "B-C").to_json()
    led.close()


def test_the_telemetry_route_serves_each_channel_with_its_series(
    server: Server, tmp_path: Path
) -> None:
    unit = UnitSigner.generate("UNIT-T1")
    server.enrol(unit)
    led = Ledger.open(tmp_path / "t.db", unit, clock())  # type: ignore[arg-type]
    led.append("batch.started", {**START, "product": "p"}, batch_id="B-T", actor="op.alice")
    led.append_many([reading(i, "B-T", f"37.{i % 7}") for i in range(600)])
    led.append_many([reading(602, "B-T", "39.5")])  # one excursion, in its own commit group
    SyncClient(led, server.url, server_key=server.key, max_events=100).sync_once()
    led.close()
    with server.admin() as c:
        got = c.get("/v1/batches/B-T/telemetry").json()
        missing = c.get("/v1/batches/B-NONE/telemetry")
    add_people(server, {"aud.t": ("Aude Auditor", [("auditor", "*")])})
    with login(server, "aud.t") as auditor:
        r = auditor.get("/v1/batches/B-T/report.pdf")
        assert r.status_code == 200, r.text
        report = pdf_text(r.content)
    # the batch report shows each channel's summary, the excursion included
    assert "Instrument telemetry (601 readings)" in report
    assert "temperature 301 37.0 °C 39.5 °C 39.5 °C" in report  # units by display name
    assert got["readings"] == 601
    temp = got["channels"]["temperature"]
    assert (temp["count"], temp["max"]) == (301, "39.5")
    assert max(p["max"] for p in temp["series"]) == 39.5
    assert sum(p["n"] for p in temp["series"]) == 301
    # about 600 minutes of readings: 512 one-minute buckets are too few, so two-minute ones
    assert temp["bucket_s"] == 120 and len(temp["series"]) <= 512
    assert missing.status_code == 404
