"""Ingest through the real API: exactly once, verified, and every tampering refused."""

from __future__ import annotations

import gzip
import secrets
import time
from pathlib import Path

import httpx
import orjson
import pytest

from ebr_core.chain import ChainBuilder
from ebr_core.keys import UnitSigner
from ebr_core.requestsig import sign_request
from edge.errors import LedgerClosedError
from edge.ledger import Append, Ledger
from edge.sync import BackgroundSync, SyncClient, SyncRefused
from server.errors import PROBLEM_BASE as PROBLEMS

from .conftest import BACKENDS, Server, clock, make_ledger, server_settings, start_server


def post_segment(
    server: Server, signer: UnitSigner, data: bytes, *, unit_id: str | None = None
) -> httpx.Response:
    path = f"/v1/units/{unit_id or signer.unit_id}/segments"
    body = gzip.compress(data)
    h = sign_request(
        signer, "POST", path, body, timestamp=int(time.time()), nonce=secrets.token_hex(16)
    )
    return httpx.post(
        server.url + path, content=body, headers=h.as_dict() | {"Content-Encoding": "gzip"}
    )


def lines(led: Ledger) -> list[bytes]:
    return [ln + b"\n" for ln in led.lines()]


def test_sync_exactly_once_and_projection(server: Server, tmp_path: Path) -> None:
    unit = UnitSigner.generate("UNIT-S1")
    server.enrol(unit)
    led = make_ledger(tmp_path / "e.db", unit, groups=5, per_group=30)
    client = SyncClient(led, server.url, server_key=server.key, max_events=40)
    r = client.sync_once()
    assert (r.pushed, r.server_head) == (151, 151) and r.segments >= 3
    assert server.events("UNIT-S1") == 151
    again = client.sync_once()
    assert (again.pushed, again.segments) == (0, 0)
    led.append(
        "deviation.raised",
        {
            "deviation_id": "DEV-1",
            "reason": "r",
            "step": None,
            "category": "operator",
            "severity": "minor",
        },
        batch_id="B-1",
        actor="op.alice",
    )
    assert client.sync_once().pushed == 1
    with server.admin() as c:
        b = c.get("/v1/batches/B-1").json()
        devs = {d["deviation_id"]: d for d in b["deviations"]}
    assert b["coi"] == "&/CHA999926ABC123" and b["events"] == 152
    assert devs["DEV-1"]["open"] is True


def tampered(led: Ledger, other_unit_key: UnitSigner) -> dict[str, bytes]:
    ls = lines(led)  # event 1, cp 1, events 2..11, cp 11, ...
    flip = orjson.loads(ls[3])
    flip["payload"]["i"] = 999
    flipped = list(ls)
    flipped[3] = orjson.dumps(flip, option=orjson.OPT_SORT_KEYS) + b"\n"
    raw_flip = bytearray(b"".join(ls))
    raw_flip[len(ls[0]) + len(ls[1]) + 40] ^= 0x01
    other = ChainBuilder(other_unit_key, clock())  # type: ignore[arg-type]
    foreign = [other.next_event("batch.started", {}, batch_id="B-1")]
    foreign_cp = other.checkpoint()
    from ebr_core.ledgerfile import encode_record

    splice_src = Ledger.open(
        led_path(led).with_name("splice.db"), UnitSigner.from_seed(b"z" * 32, led.unit_id), clock()
    )  # type: ignore[arg-type]
    splice_src.append_many([Append("reading.recorded", {"x": i}) for i in range(12)])
    sl = lines(splice_src)
    return {
        "byte flip": bytes(raw_flip),
        "edited payload": b"".join(flipped),
        "deleted event": b"".join(ls[:3] + ls[4:]),
        "reordered events": b"".join([*ls[:2], ls[3], ls[2], *ls[4:]]),
        "duplicated event": b"".join([*ls[:3], ls[2], *ls[3:]]),
        "truncated (no final checkpoint)": b"".join(ls[:-1]),
        "splice": b"".join(ls[:5] + sl[4:13]),
        "signed by another unit's key": encode_record(foreign[0]) + encode_record(foreign_cp),
    }


def led_path(led: Ledger) -> Path:
    return Path(str(led._engine.url.database))


def test_tamper_matrix_is_refused_and_nothing_is_stored(server: Server, tmp_path: Path) -> None:
    unit = UnitSigner.generate("UNIT-T1")
    server.enrol(unit)
    intruder = UnitSigner.generate("UNIT-T1")  # same unit id, a key the server never enrolled
    led = make_ledger(tmp_path / "e.db", unit, groups=2, per_group=10)
    for name, data in tampered(led, intruder).items():
        r = post_segment(server, unit, data)
        assert r.status_code in (409, 422), (name, r.status_code, r.text)
        assert server.events("UNIT-T1") == 0, name
    assert SyncClient(led, server.url, server_key=server.key).sync_once().pushed == 21


def test_a_malformed_line_and_a_failed_signature_are_different_problems(
    server: Server, tmp_path: Path
) -> None:
    """A unit can tell a bug in its encoder (invalid-segment) from records that do not verify
    (signature-invalid): the problem type says which, the detail names the line."""
    unit = UnitSigner.generate("UNIT-P1")
    server.enrol(unit)
    intruder = UnitSigner.generate("UNIT-P1")  # same unit id, a key the server never enrolled
    led = make_ledger(tmp_path / "e.db", unit, groups=1, per_group=5)
    t = tampered(led, intruder)
    ls = lines(led)
    for data, slug, line in [
        (b"".join([*ls[:2], b"{not json\n", *ls[3:]]), "invalid-segment", 3),
        (b"".join([*ls[:2], b'{"type": "seal"}\n', *ls[3:]]), "invalid-segment", 3),
        (t["edited payload"], "signature-invalid", 4),
        (t["signed by another unit's key"], "signature-invalid", 2),
        (t["deleted event"], "signature-invalid", 4),
    ]:
        r = post_segment(server, unit, data)
        assert r.status_code == 422, r.text
        assert r.json()["type"] == PROBLEMS + slug, r.text
        assert f"line {line}:" in r.json()["detail"], r.text
    assert server.events("UNIT-P1") == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_segment_refused_in_the_workers_part_stores_nothing(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    """A large segment is verified in two parts and the first part is written while the worker
    verifies the second: a tampered line in the second part must still leave nothing stored."""
    settings = server_settings(backend, request, tmp_path, parallel_verify_min_lines=20)
    with start_server(settings) as server:
        verifier = server.app.state.verifier
        assert verifier.wait_ready(30), "the verify worker did not start"
        unit = UnitSigner.generate("UNIT-W1")
        server.enrol(unit)
        led = make_ledger(tmp_path / "e.db", unit, groups=6, per_group=10)
        ls = lines(led)
        i = len(ls) - 4  # an event in the last group: the worker's part
        rec = orjson.loads(ls[i])
        assert rec["type"] == "event"
        rec["payload"]["i"] = 999
        bad = [*ls[:i], orjson.dumps(rec, option=orjson.OPT_SORT_KEYS) + b"\n", *ls[i + 1 :]]
        before = verifier.worker_parts
        r = post_segment(server, unit, b"".join(bad))
        assert r.status_code == 422, r.text
        assert f"line {i + 1}:" in r.json()["detail"], r.text
        assert verifier.worker_parts == before + 1  # the second part was the worker's
        assert server.events("UNIT-W1") == 0  # the first part, already written, was rolled back
        assert SyncClient(led, server.url, server_key=server.key).sync_once().pushed == 61
        assert verifier.worker_parts == before + 2
        assert server.events("UNIT-W1") == 61


def test_fork_is_refused_kept_as_evidence_and_alerted(server: Server, tmp_path: Path) -> None:
    unit = UnitSigner.generate("UNIT-F1")
    server.enrol(unit)
    led = make_ledger(tmp_path / "e.db", unit, groups=1, per_group=5)
    SyncClient(led, server.url).sync_once()
    # History rewritten and re-signed with the genuine key.
    fork = Ledger.open(tmp_path / "fork.db", unit, clock())  # type: ignore[arg-type]
    fork.append_many([Append("reading.recorded", {"rewritten": i}, "B-1") for i in range(8)])
    r = post_segment(server, unit, b"".join(lines(fork)))
    assert r.status_code == 409 and r.json()["type"] == PROBLEMS + "fork"
    assert r.json()["detail"].startswith("fork: seq 1 differs from the stored event")
    assert server.events("UNIT-F1") == 6
    with server.admin() as c:
        alerts = c.get("/admin/alerts").json()
    assert any(a["kind"] == "security.fork" and a["unit_id"] == "UNIT-F1" for a in alerts)
    with pytest.raises(SyncRefused, match="this is not the ledger the server knows"):
        SyncClient(Ledger.open(tmp_path / "short.db", unit, clock()), server.url).sync_once()  # type: ignore[arg-type]


def test_replay_reroute_revoked_and_limits(server: Server, tmp_path: Path) -> None:
    unit = UnitSigner.generate("UNIT-R1")
    server.enrol(unit)
    led = make_ledger(tmp_path / "e.db", unit, groups=1, per_group=3)
    path = "/v1/units/UNIT-R1/segments"
    body = gzip.compress(b"".join(lines(led)))
    h = sign_request(
        unit, "POST", path, body, timestamp=int(time.time()), nonce=secrets.token_hex(16)
    ).as_dict() | {"Content-Encoding": "gzip"}
    assert httpx.post(server.url + path, content=body, headers=h).status_code == 200
    replay = httpx.post(server.url + path, content=body, headers=h)
    assert replay.status_code == 409 and replay.json()["type"] == PROBLEMS + "replayed"
    assert "replayed request" in replay.json()["detail"]
    assert server.events("UNIT-R1") == 4
    other_path = "/v1/units/UNIT-R1/head"
    rerouted = httpx.get(server.url + other_path, headers=h)
    assert rerouted.status_code == 401
    unsigned = httpx.post(server.url + path, content=body)
    assert unsigned.status_code == 401 and "unsigned request" in unsigned.json()["detail"]
    big = httpx.post(
        server.url + path, content=b"x" * (server.settings.max_body_bytes + 1), headers=h
    )
    assert big.status_code == 413
    with server.admin() as c:
        assert c.post("/admin/units/UNIT-R1/revoke", json={"reason": "stolen"}).status_code == 200
    led.append("step.completed", {"step": "s"}, batch_id="B-1")
    with pytest.raises(SyncRefused, match="403"):
        SyncClient(led, server.url).sync_once()
    no_admin = httpx.post(server.url + "/admin/units", json={})
    assert no_admin.status_code == 401


def append_and_wait_for_sync(server: Server, unit_id: str, writer: Ledger) -> None:
    """Wait for the background sync to push the 6 events of make_ledger(groups=1, per_group=5),
    append a 7th through ``writer``, and wait for that one too (10 s in all)."""
    deadline = time.time() + 10
    while server.events(unit_id) < 6 and time.time() < deadline:
        time.sleep(0.05)
    writer.append("step.completed", {"step": "s"}, batch_id="B-1", actor="op.alice")
    while server.events(unit_id) < 7 and time.time() < deadline:
        time.sleep(0.05)


def test_background_sync_follows_new_events_and_stops_on_refusal(
    server: Server, tmp_path: Path
) -> None:
    unit = UnitSigner.generate("UNIT-BG")
    server.enrol(unit)
    led = make_ledger(tmp_path / "e.db", unit, groups=1, per_group=5)
    bg = BackgroundSync(SyncClient(led, server.url, server_key=server.key), interval=0.05)
    bg.start()
    try:
        append_and_wait_for_sync(server, "UNIT-BG", led)
        assert server.events("UNIT-BG") == 7
        with server.admin() as c:
            c.post("/admin/units/UNIT-BG/revoke", json={"reason": "test"})
        led.append("step.completed", {"step": "t"}, batch_id="B-1")
        deadline = time.time() + 10
        while bg.error is None and time.time() < deadline:
            time.sleep(0.05)
    finally:
        bg.stop()
    assert bg.error is not None and "403" in bg.error


def test_a_sync_process_reads_alongside_the_writer(server: Server, tmp_path: Path) -> None:
    # ``ctgtp edge sync --watch`` opens the ledger for reading (no writer lock), so operator
    # commands keep writing; each round it syncs what the writer has committed since.
    unit = UnitSigner.generate("UNIT-RD")
    server.enrol(unit)
    writer = make_ledger(tmp_path / "e.db", unit, groups=1, per_group=5)
    reader = Ledger.open(tmp_path / "e.db", unit, clock(), writer=False)  # type: ignore[arg-type]
    bg = BackgroundSync(SyncClient(reader, server.url, server_key=server.key), interval=0.05)
    bg.start()
    try:
        append_and_wait_for_sync(server, "UNIT-RD", writer)
    finally:
        bg.stop()
    assert (server.events("UNIT-RD"), bg.error) == (7, None)
    assert reader.head == writer.head
    with pytest.raises(LedgerClosedError, match="opened for reading only"):
        reader.append("step.completed", {"step": "t"}, batch_id="B-1")
    reader.close()
    writer.close()


def test_key_rotation_old_history_verifies_old_key_is_retired(
    server: Server, tmp_path: Path
) -> None:
    old = UnitSigner.generate("UNIT-ROT")
    server.enrol(old)
    led = make_ledger(tmp_path / "e.db", old, groups=1, per_group=4)
    SyncClient(led, server.url, server_key=server.key).sync_once()
    led.close()
    new = UnitSigner.generate("UNIT-ROT")
    with server.admin() as c:
        r = c.post(
            "/admin/units/UNIT-ROT/rotate", json={"public_key": new.public.to_json().decode()}
        )
        assert r.status_code == 200 and r.json()["key_id"] == new.key_id
    # The edge continues its ledger with the new key; its history stays signed by the old one.
    led = Ledger.open(tmp_path / "e.db", new, clock(), previous_keys=[old.public])  # type: ignore[arg-type]
    led.append("step.completed", {"step": "after-rotation"}, batch_id="B-1")
    assert led.verify_all().key_ids == {old.key_id, new.key_id}
    report = SyncClient(led, server.url, server_key=server.key).sync_once()
    assert (report.pushed, server.events("UNIT-ROT")) == (1, 6)
    led.close()  # one process writes a ledger at a time: reopened below with the old key
    # A request still signed with the retired key is refused.
    retired = Ledger.open(tmp_path / "e.db", old, clock(), previous_keys=[new.public])  # type: ignore[arg-type]
    with pytest.raises(SyncRefused, match="rotated out"):
        SyncClient(retired, server.url).sync_once()
    retired.close()
    with pytest.raises(Exception, match="not trusted"):
        Ledger.open(tmp_path / "e.db", new, clock()).verify_all()  # type: ignore[arg-type]
