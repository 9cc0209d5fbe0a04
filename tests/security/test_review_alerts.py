"""Issue 18, item 11: the ``alerts`` table could be updated and deleted, although the server says
it is append-only.  An alert stays as raised; acknowledging it is a new row, once, by a person
allowed to at the alert's site, audited."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from tests.server.conftest import Server
from tests.server.qa import PASSWORD, PEOPLE, add_people, login, push_batch

ACK = "/v1/alerts/acknowledgements"
CUSTODY = {
    "op.ana": ("Ana Operator", [("operator", "SITE-A")]),
    "nurse.lee": ("Lee Nurse", [("operator", "HOSP-1")]),
}


def raise_custody_alert(server: Server, tmp_path: Path) -> dict[str, object]:
    """A hand-off stopped by a wrong bag scan raises a custody.refused alert at SITE-A."""
    push_batch(server, tmp_path, unit_id="UNIT-AL", site="SITE-A", batch_id="B-AL", deviation=False)
    r = login(server, "op.ana").post(
        "/v1/custody/CHA999926ABC123/events",
        json={"kind": "handoff", "from_party": "SITE-A", "to_party": "HOSP-1", "place": "dock",
              "bag_scan": "]C0&/CHA999926ZZZ999",
              "parties": [{"user_id": "op.ana", "password": PASSWORD, "meaning": "handed_over"},
                          {"user_id": "nurse.lee", "password": PASSWORD,
                           "meaning": "received"}]},
    )  # fmt: skip
    assert r.status_code == 409, r.text
    (alert,) = login(server, "rev.a").get("/v1/alerts").json()
    assert alert["kind"] == "custody.refused" and alert["acknowledged"] is None
    return dict(alert)


def test_alerts_are_append_only_and_acknowledged_by_a_new_row(
    server: Server, tmp_path: Path
) -> None:
    names = ("rev.a", "appr.a", "rev.b", "aud")
    add_people(server, {u: PEOPLE[u] for u in names} | CUSTODY)
    alert = raise_custody_alert(server, tmp_path)
    engine = create_engine(server.settings.database_url)
    for sql in ("UPDATE alerts SET message = 'all clear'", "DELETE FROM alerts"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as db:
            db.execute(text(sql))

    rev = login(server, "rev.a")
    note = {"alert_id": alert["id"], "note": "wrong bag caught at the dock; right bag shipped"}
    for who, body, code in (
        ("op.ana", note, 403),  # operators see alerts but do not acknowledge them
        ("aud", note, 403),  # auditors write nothing
        ("rev.b", note, 403),  # another site's reviewer
        ("rev.a", {**note, "note": " "}, 422),
        ("rev.a", {**note, "note": "seen\x00"}, 422),  # a NUL: refused by name, not a 500
        ("rev.a", {**note, "alert_id": 999}, 404),
        ("rev.a", {**note, "alert_id": 2**40}, 422),  # beyond the column: refused, not a 500
    ):
        r = login(server, who).post(ACK, json=body)
        assert r.status_code == code, (who, r.text)
    r = rev.post(ACK, json=note)
    assert r.status_code == 201, r.text
    assert r.json()["by"] == "rev.a"
    (after,) = rev.get("/v1/alerts").json()
    assert {k: v for k, v in after.items() if k != "acknowledged"} == {
        k: v for k, v in alert.items() if k != "acknowledged"
    }  # the alert itself is exactly as raised
    assert after["acknowledged"]["by"] == "rev.a" and after["acknowledged"]["note"] == note["note"]
    r = login(server, "appr.a").post(ACK, json=note)
    assert r.status_code == 409 and "already acknowledged by rev.a" in r.json()["detail"]
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as db:
        db.execute(text("UPDATE alert_acks SET note = 'nothing happened'"))
    with server.admin() as c:
        entries = c.get("/v1/audit", params={"object_type": "alert"}).json()["entries"]
    assert [e["action"] for e in entries] == ["alert.acknowledged"]
    engine.dispose()


def test_two_people_acknowledging_at_once_make_one_acknowledgement(
    server: Server, tmp_path: Path
) -> None:
    add_people(
        server,
        {u: PEOPLE[u] for u in ("rev.a", "appr.a")} | CUSTODY,
    )
    alert = raise_custody_alert(server, tmp_path)
    # A client each: one httpx.Client shared by threads once read a socket another had closed.
    clients = [login(server, u) for u in ("rev.a", "appr.a") * 3]
    gate = threading.Barrier(len(clients))
    got: list[httpx.Response] = []

    def ack(c: httpx.Client) -> None:
        gate.wait()
        got.append(c.post(ACK, json={"alert_id": alert["id"], "note": "seen"}))

    threads = [threading.Thread(target=ack, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in got) == [201] + [409] * 5, [r.text for r in got]
