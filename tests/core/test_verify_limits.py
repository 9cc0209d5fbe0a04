"""Input limits of the one verifier (issue 18): impossible calendar times and JSON nested deeper
than :data:`ebr_core.canonical.MAX_DEPTH` are refused with a named line, by the library and by the
offline ``ctgtp verify`` (one line, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebr_core._verify_run import real_times
from ebr_core.canonical import MAX_DEPTH, check_value, depth
from ebr_core.chain import sign_checkpoint
from ebr_core.errors import CanonicalError, MalformedRecordError
from ebr_core.keys import Keyring, UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.record import GENESIS_HASH, Event, event_hash
from ebr_core.verify import ChainVerifier, real_time


def forged(signer: UnitSigner, times: list[str], payload: dict[str, Any] | None = None) -> bytes:
    """Events with the given ``recorded_at`` values, correctly hashed and chained, and a signed
    checkpoint: only the times can be wrong."""
    prev, out = GENESIS_HASH, []
    for seq, ra in enumerate(times, 1):
        body: dict[str, Any] = {"unit_id": signer.unit_id, "seq": seq, "prev_hash": prev, "recorded_at": ra,
                "batch_id": "B-1", "kind": "reading.recorded", "actor": None,
                "payload": payload or {"i": seq}}  # fmt: skip
        ev = Event(**body, hash=event_hash(body))
        prev = ev.hash
        out.append(encode_record(ev))
    out.append(encode_record(sign_checkpoint(signer, len(times), 0, prev)))
    return b"".join(out)


def verdict(signer: UnitSigner, data: bytes) -> str:
    v = ChainVerifier(Keyring([signer.public]))
    try:
        v.check_lines(data.split(b"\n")[:-1])
        v.finish()
    except MalformedRecordError as e:
        return str(e)
    return "ok"


@pytest.mark.parametrize(
    "bad",
    [
        "2026-13-45T99:99:99.000000Z",
        "2026-02-30T10:00:00.000000Z",
        "2026-11-31T10:00:00.000000Z",
        "2025-02-29T10:00:00.000000Z",
        "2026-11-30T24:00:00.000000Z",
        "2026-11-30T10:60:00.000000Z",
        "2026-11-30T10:00:60.000000Z",
        "0000-01-01T00:00:00.000000Z",
    ],
)
def test_impossible_times_are_refused(signer: UnitSigner, bad: str) -> None:
    ok = "2026-11-30T10:00:00.000000Z"
    # Alone, first, and inside a run of like events (the bulk path must refuse it too).
    for times in ([bad], [bad, ok, ok], [ok, ok, ok, bad, ok]):
        msg = verdict(signer, forged(signer, times))
        assert f"recorded_at {bad!r} is not a real calendar time" in msg, msg


def test_real_times_pass_leap_days_included(signer: UnitSigner) -> None:
    times = ["2024-02-29T23:59:59.999999Z", "2000-02-29T00:00:00.000000Z",
             "2026-12-31T23:59:59.000000Z", "2026-12-31T23:59:59.000001Z"]  # fmt: skip
    assert verdict(signer, forged(signer, times)) == "ok"
    assert not real_time("1900-02-29T00:00:00.000000Z")


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_every_real_time_is_accepted(t: datetime) -> None:
    assert real_time(f"{t.year:04d}-" + t.strftime("%m-%dT%H:%M:%S.%fZ"))


@given(st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z"))
def test_real_time_agrees_with_the_calendar(s: str) -> None:
    try:
        datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
        parsed = True
    except ValueError:
        parsed = False
    assert real_time(s) is parsed


def nested(n: int) -> Any:
    v: Any = "x"
    for i in range(n):
        v = [v] if i % 2 else {"k": v}
    return v


def test_depth_limit_in_canonical_values() -> None:
    check_value(nested(MAX_DEPTH))
    for n in (MAX_DEPTH + 1, 900, 5000):
        with pytest.raises(CanonicalError, match=f"nested deeper than {MAX_DEPTH} levels"):
            check_value(nested(n))
    assert depth(orjson.loads(orjson.dumps(nested(MAX_DEPTH)))) == MAX_DEPTH
    assert depth(orjson.loads(b"[" * 900 + b"]" * 900)) == 900


def deep_line(signer: UnitSigner, n: int, seq: int = 1, prev: str = GENESIS_HASH) -> bytes:
    """An event line whose payload nests ``n`` levels (written by hand: no encoder goes there)."""
    payload = b'{"v":' + b"[" * n + b"]" * n + b"}"
    return (
        b'{"actor":null,"batch_id":"B-1","hash":"' + b"0" * 64 + b'","kind":"reading.recorded",'
        b'"payload":' + payload + b',"prev_hash":"' + prev.encode() + b'","recorded_at":'
        b'"2026-11-30T10:00:00.000000Z","seq":' + str(seq).encode() + b',"type":"event",'
        b'"unit_id":"' + signer.unit_id.encode() + b'"}\n'
    )


@pytest.mark.parametrize("n", [MAX_DEPTH + 1, 250, 900, 5000])
def test_deep_payloads_are_refused_by_the_verifier(signer: UnitSigner, n: int) -> None:
    # Alone, and after like events (a run).
    msg = verdict(signer, deep_line(signer, n))
    assert "record 1" in msg and ("nested deeper" in msg or "not valid JSON" in msg), msg
    good = forged(signer, ["2026-11-30T10:00:00.000000Z"] * 3, {"v": []}).split(b"\n")[:3]
    prev = orjson.loads(good[2])["hash"]
    data = b"\n".join(good) + b"\n" + deep_line(signer, n, 4, prev)
    msg = verdict(signer, data)
    assert "record 4" in msg and ("nested deeper" in msg or "not valid JSON" in msg), msg


def test_ctgtp_verify_one_line_errors(tmp_path: Path, signer: UnitSigner) -> None:
    pub = tmp_path / "unit.pub"
    pub.write_bytes(signer.public.to_json())
    cases = {
        "deep": deep_line(signer, 900),
        "deeper": deep_line(signer, 5000),
        "time": forged(signer, ["2026-13-45T99:99:99.000000Z"]),
    }
    for name, data in cases.items():
        led = tmp_path / f"{name}.jsonl"
        led.write_bytes(data)
        r = subprocess.run(
            [sys.executable, "-m", "ctgtp", "verify", str(led), "--public-key", str(pub)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert r.returncode == 1, r.stdout
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"INVALID {name}.jsonl: line 1"), r.stderr


def test_times_near_now_still_pass(signer: UnitSigner) -> None:
    t = datetime.now(UTC)
    times = [(t + timedelta(microseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for i in range(5)]
    assert verdict(signer, forged(signer, times)) == "ok"


_STAMP = st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z")
_REAL = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
)


@given(st.lists(_REAL | _STAMP, min_size=1, max_size=40), st.data())
def test_a_run_of_times_is_checked_as_each_time_alone(
    times: list[str], data: st.DataObject
) -> None:
    """The bulk check of a run (strided, no step per timestamp) gives the verdict of checking
    every timestamp alone, in runs sharing one hour or not."""
    if data.draw(st.booleans()):  # most runs: one hour, one bad timestamp at most
        head = times[0][:13]
        times = [head + t[13:] for t in times]
    joined = "".join(times).encode()
    assert real_times(joined, len(times)) is all(real_time(t) for t in times)
