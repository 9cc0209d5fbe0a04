"""Limits from the record, on a server that holds no MBR: the batch projection keeps the
telemetry limits batch.started records, the zoom route returns them with their source, and
report.pdf prints each value's recorded limits in its Limit column and draws the channels'.
A batch whose record holds none still says so, and a projection stored before projections kept
limits takes them from the batch's batch.started when read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy import text

from ebr_core.keys import UnitSigner
from edge.ledger import Append, Ledger
from edge.sync import SyncClient
from server import projections
from server.db import BatchSummary

from .conftest import Server, clock
from .qa import add_people, login
from .test_projections import START, db_session
from .test_qa import pdf_text

LIMITS = {
    "temperature": {"unit": "Cel", "min": "36.0", "max": "38.0"},
    "ph": {"unit": "[pH]", "min": "6.8", "max": "7.6"},
}
PH = {"unit": "[pH]", "hard": {"min": "6.5", "max": "7.8"}, "soft": {"min": "6.8", "max": "7.6"}}


def _reading(i: int, batch: str) -> Append:
    """Temperature a minute apart, one excursion (39.5 °C, marked high by the unit)."""
    v = "39.5" if i == 21 else "37.0"
    payload = {
        "channel": "temperature" if i % 4 else "ph",  # "ph" in Cel: its limits (pH) do not apply
        "value": {"value": v, "unit": "Cel"},
        "device_time": f"2026-11-24T08:{i:02d}:00.000000Z",
        "msg_id": f"{batch}-{i}",
        "limit": "high" if v == "39.5" else "ok",
    }
    return Append("reading.recorded", payload, batch, None, f"mqtt:{batch}-{i}:r")


def _push(server: Server, tmp_path: Path, batch: str, *, limits: bool) -> None:
    unit = UnitSigner.generate(f"UNIT-{batch}")
    server.enrol(unit)
    led = Ledger.open(tmp_path / f"{batch}.db", unit, clock())  # type: ignore[arg-type]
    started = {**START, "product": "p"} | ({"telemetry_limits": LIMITS} if limits else {})
    led.append("batch.started", started, batch_id=batch, actor="op.alice")
    value = {"step": "s", "name": "ph", "value": {"value": "7.7", "unit": "[pH]"}, "limit": "soft"}
    led.append("value.recorded", value | ({"limits": PH} if limits else {}), batch_id=batch,
               actor="op.alice")  # fmt: skip
    led.append_many([_reading(i, batch) for i in range(40)])
    SyncClient(led, server.url, server_key=server.key).sync_once()
    led.close()


def test_the_record_gives_the_limits_to_the_zoom_route_and_the_report(
    server: Server, tmp_path: Path
) -> None:
    _push(server, tmp_path, "B-LIM", limits=True)
    _push(server, tmp_path, "B-OLD", limits=False)
    add_people(server, {"aud.l": ("Aude Auditor", [("auditor", "*")])})
    with login(server, "aud.l") as c:
        whole = c.get("/v1/batches/B-LIM/telemetry").json()["channels"]["temperature"]
        t0 = datetime.fromisoformat(whole["first_at"]).timestamp()
        window = {"from": _iso(t0), "to": _iso(t0 + 7200)}
        w = c.get("/v1/batches/B-LIM/telemetry/temperature", params=window).json()
        old = c.get("/v1/batches/B-OLD/telemetry/temperature", params=window).json()
        old_whole = c.get("/v1/batches/B-OLD/telemetry").json()["channels"]["temperature"]
        r = c.get("/v1/batches/B-LIM/report.pdf")
        assert r.status_code == 200, r.text
        report = pdf_text(r.content)
        r = c.get("/v1/batches/B-OLD/report.pdf")
        assert r.status_code == 200, r.text
        old_report = pdf_text(r.content)
    assert w["limits"] == {"unit": "Cel", "min": "36.0", "max": "38.0", "source": "MBR M v1"}
    assert "(MBR M v1), recorded in batch.started at seq 1" in w["limits_note"]
    # the whole series' route gives each channel the same limits as its zoom
    assert (whole["limits"], whole["limits_note"]) == (w["limits"], w["limits_note"])
    assert len(w["excursions"]) == 1  # the unit's mark, inside the window read
    assert old["limits"] is None and "its batch.started records no telemetry" in old["limits_note"]
    assert (old_whole["limits"], old_whole["limits_note"]) == (None, old["limits_note"])
    # the Limit column: the judgement and the limits the value's own event records (no MBR)
    assert "s:ph pH 7.7 soft (soft 6.8–7.6 pH, hard 6.5–7.8 pH)" in report
    assert "outside the limits (dashed), 36.0–38.0 °C (MBR M v1)" in report
    assert "6.8–7.6 pH (MBR M v1)" not in report  # the ph channel's readings are in °C here
    # a record without limits: said so, never invented
    assert "s:ph pH 7.7 soft (limit in the MBR; MBR not supplied)" in old_report
    said = "marked outside limits; each bar spans a bucket's minimum to maximum; no limits: this"
    assert f"{said} batch's record holds none" in old_report


def test_a_projection_stored_before_it_kept_limits_takes_them_from_batch_started(
    server: Server, tmp_path: Path
) -> None:
    _push(server, tmp_path, "B-PRE", limits=True)
    with db_session(server) as s:
        stored = projections._stored(s, "B-PRE")
        assert stored is not None and stored.limits is not None
        assert stored.limits["channels"] == LIMITS and stored.limits["source"] == "MBR M v1"
        assert stored.to_json() == projections.rebuild(s, "B-PRE").to_json()
        # as a server before this change stored it: no telemetry_limits key, a valid digest
        body = stored.to_json()
        del body["telemetry_limits"]
        raw = orjson.dumps(body)
        s.execute(
            text("UPDATE batch_projections SET body = :b, digest = :d WHERE batch_id = 'B-PRE'"),
            {"b": raw.decode(), "d": projections._digest(raw)},
        )
        s.commit()
        summ = s.get(BatchSummary, "B-PRE")
        assert summ is not None
        loaded = projections.load(s, summ)
        assert loaded.limits == stored.limits and loaded.telemetry.readings == 40
        lim, note = projections.channel_limits(loaded, "temperature", "Cel")
        assert lim is not None and (str(lim.limit.min), str(lim.limit.max)) == ("36.0", "38.0")
        assert note.startswith("Limits: 36.0–38.0 °C (MBR M v1)")
        assert projections.channel_limits(loaded, "ph", "Cel")[1].startswith(
            "no limits in Cel: MBR M v1 sets ph's in [pH] (recorded in batch.started at seq 1"
        )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def test_limits_of_a_wrong_shape_are_shown_as_unreadable_with_the_reason(
    server: Server, tmp_path: Path
) -> None:
    """An event the unit signed is evidence and is kept; limits in it that do not have the
    record's shape (numbers, not decimal strings) are named as unreadable, never drawn."""
    unit = UnitSigner.generate("UNIT-B-BAD")
    server.enrol(unit)
    led = Ledger.open(tmp_path / "bad.db", unit, clock())  # type: ignore[arg-type]
    bad = {"temperature": {"unit": "Cel", "min": 36, "max": 38}}
    led.append("batch.started", {**START, "product": "p", "telemetry_limits": bad},
               batch_id="B-BAD", actor="op.alice")  # fmt: skip
    value = {"step": "s", "name": "ph", "value": {"value": "7.7", "unit": "[pH]"}, "limit": "ok",
             "limits": {"unit": "[pH]", "hard": {"min": 6}}}  # fmt: skip
    led.append("value.recorded", value, batch_id="B-BAD", actor="op.alice")
    led.append_many([_reading(i, "B-BAD") for i in range(1, 4)])
    assert SyncClient(led, server.url, server_key=server.key).sync_once().pushed == led.head[0]
    led.close()
    add_people(server, {"aud.b": ("Aude Auditor", [("auditor", "*")])})
    with login(server, "aud.b") as c:
        whole = c.get("/v1/batches/B-BAD/telemetry").json()["channels"]["temperature"]
        t0 = datetime.fromisoformat(whole["first_at"]).timestamp()
        w = c.get("/v1/batches/B-BAD/telemetry/temperature",
                  params={"from": _iso(t0), "to": _iso(t0 + 600)}).json()  # fmt: skip
        r = c.get("/v1/batches/B-BAD/report.pdf")
        assert r.status_code == 200, r.text
        report = pdf_text(r.content)
    assert w["limits"] is None and whole["limits"] is None
    assert whole["limits_note"] == w["limits_note"]
    assert w["limits_note"] == (
        "no limits drawn: the telemetry limits recorded in batch.started at seq 1 are "
        "unreadable: telemetry_limits.temperature.min is 36; expected a decimal string such as "
        "'6.5'"
    )
    assert "ok (limits recorded but unreadable: limits.hard.min is 6; expected a decimal" in report
