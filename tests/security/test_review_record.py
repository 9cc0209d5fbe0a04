"""Issue 18: what QA sees of a batch must be what happened.  Through the real server over HTTP:

* item 12: a value corrected at the station (900 to 220 mL) showed as 900 in the batch view and
  ``report.pdf``, with no corrections section; an edge deviation comment showed ``"by": "edge"``;
* item 7: a 3 KB deviation reason broke ``report.pdf`` (long text must wrap);
* item 8: a QA signature dated before the events it signs (the unit's clock ahead) was accepted;
  clock alerts on a batch must make it an exception for review.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.sync import SyncClient
from tests.server import qa
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

COI = "&/CHA999926ABC123"
START = {"coi": COI, "mbr_id": "CAR-T", "mbr_version": "3", "mbr_hash": "0" * 64, "product": "p"}
VOLUME = "receipt:apheresis_volume"
REVIEWER = {"rev.a": PEOPLE["rev.a"]}


def real_clock() -> Callable[[], datetime]:
    """A unit clock that keeps the server's time (never ahead of it, never backwards)."""
    t = [datetime.now(UTC)]

    def now() -> datetime:
        t[0] = max(datetime.now(UTC), t[0] + timedelta(microseconds=1))
        return t[0]

    return now


def settled_push_batch(*args: Any, **kwargs: Any) -> tuple[Ledger, SyncClient]:
    """:func:`tests.server.qa.push_batch`, returning once the batch's last event time has passed
    on this machine's clock: a test unit's clock steps 250 ms an event, so right after a push
    its last events are dated a little ahead, and a QA signature is never earlier than the
    events it signs."""
    led, client = qa.push_batch(*args, **kwargs)
    last = max(datetime.fromisoformat(e.recorded_at) for e in led.events())
    while datetime.now(UTC) <= last:
        time.sleep(0.05)
    return led, client


def push(
    server: Server,
    tmp_path: Path,
    batch_id: str,
    steps: Callable[[Callable[..., int]], None],
    *,
    now: Callable[[], datetime] | None = None,
) -> None:
    """Enrol a unit at SITE-A and sync one batch: ``steps(add)`` appends its events between
    ``batch.started`` and ``batch.completed``; ``add(kind, payload, actor)`` returns the seq."""
    unit = UnitSigner.generate(f"U-{batch_id}")
    server.enrol(unit, site="SITE-A")
    led = Ledger.open(tmp_path / f"{batch_id}.db", unit, now or real_clock())

    def add(kind: str, payload: dict[str, Any], actor: str | None = "op.alice") -> int:
        return led.append(kind, payload, batch_id=batch_id, actor=actor).seq

    add("batch.started", START)
    steps(add)
    add("batch.completed", {})
    assert SyncClient(led, server.url, server_key=server.key).sync_once().pushed == led.head[0]


def pdf_text(data: bytes) -> str:
    return " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages).split())


def quantity(v: str, unit: str = "mL") -> dict[str, str]:
    return {"value": v, "unit": unit}


def test_a_corrected_value_shows_as_corrected_with_who_when_why(
    server: Server, tmp_path: Path
) -> None:
    add_people(server, REVIEWER)

    def steps(add: Callable[..., int]) -> None:
        seq = add(
            "value.recorded",
            {"step": "receipt", "name": "apheresis_volume", "value": quantity("900"),
             "limit": "hard"},
        )  # fmt: skip
        add("deviation.raised", {"deviation_id": "DEV-1", "step": "receipt", "category": "other",
                                 "reason": "volume above the hard limit", "severity": "major"})  # fmt: skip
        add("deviation.commented", {"deviation_id": "DEV-1", "comment": "bag re-weighed"}, "op.bob")
        # today's edge: the old value in the payload (older edges wrote "old", newer "old_value")
        add("correction.recorded", {"corrects": seq, "step": "receipt", "name": "apheresis_volume",
                                    "old_value": quantity("900"), "value": quantity("220"),
                                    "reason": "transcription error: 220 read as 900"}, "op.bob")  # fmt: skip
        # a second correction without any old value: the record says it was 220
        add("correction.recorded", {"corrects": seq, "step": "receipt", "name": "apheresis_volume",
                                    "value": quantity("222"), "reason": "re-weighed on the "
                                    "calibrated scale"}, "op.carl")  # fmt: skip
        # a hostile correction naming an event that is not the value's recording: not applied
        add("correction.recorded", {"corrects": 1, "step": "receipt", "name": "apheresis_volume",
                                    "value": quantity("1"), "reason": "x"}, "op.mallory")  # fmt: skip

    push(server, tmp_path, "B-COR", steps)
    rev = login(server, "rev.a")
    view = rev.get("/v1/batches/B-COR").json()
    v = view["values"][VOLUME]
    assert v["value"] == quantity("222") and v["recorded_value"] == quantity("900")
    fixes = view["corrections"]
    assert [(c["old_value"], c["new_value"], c["by"], c["applied"]) for c in fixes] == [
        (quantity("900"), quantity("220"), "op.bob", True),
        (quantity("220"), quantity("222"), "op.carl", True),
        (None, quantity("1"), "op.mallory", False),
    ]
    assert fixes[0]["reason"] == "transcription error: 220 read as 900"
    at = {e["seq"]: e["recorded_at"] for e in view["timeline"]}
    assert [c["at"] for c in fixes] == [at[c["seq"]] for c in fixes]
    assert "not the recording of receipt:apheresis_volume" in fixes[2]["problem"]
    assert view["exceptions"]["corrections"] == 3
    comment = view["deviations"][0]["comments"][0]
    assert comment["by"] == "op.bob" and comment["text"] == "bag re-weighed"

    r = rev.get("/v1/batches/B-COR/report.pdf")
    assert r.status_code == 200, r.text
    text = "".join(pdf_text(r.content).split())  # a narrow column may wrap a word
    assert "Corrections" in text and "transcriptionerror:220readas900" in text
    assert "900mL220mLop.bob" in text and "220mL222mLop.carl" in text
    assert "222mL(corrected;recorded900mL)" in text
    assert "bagre-weighed(op.bob" in text
    assert "1mLop.mallory" in text and "notapplied" in text


LONG_WORDS = " ".join(f"word{i}" for i in range(600))  # about 5 KB of words


def unbroken(letter: str) -> str:
    """3 KB without a space, of one letter that appears nowhere else in the report (2,000, the
    most a reason sent to the server may have, for a reason given on the server)."""
    return letter * (2000 if letter == "K" else 3000)


def test_long_free_text_wraps_in_the_report(server: Server, tmp_path: Path) -> None:
    add_people(server, REVIEWER)
    name = "Dr " + "Bartholomew-" * 30 + "Smith"

    def steps(add: Callable[..., int]) -> None:
        add("scan.rejected", {"step": "receipt", "role": "patient", "raw": unbroken("X"),
                              "expected": COI, "reason": LONG_WORDS})  # fmt: skip
        add("value.recorded", {"step": "s" * 200, "name": "n" * 200,
                               "value": quantity("9" * 500), "limit": "ok"})  # fmt: skip
        add("signature.applied", {"step": "seed", "user_id": "op.alice", "printed_name": name,
                                  "meaning": "performed", "signed_hash": "1" * 64})  # fmt: skip
        add("deviation.raised", {"deviation_id": "DEV-1", "step": "receipt", "category": "other",
                                 "reason": LONG_WORDS, "severity": "major"})  # fmt: skip
        add("deviation.commented", {"deviation_id": "DEV-1", "comment": unbroken("Z")}, "op.bob")
        add("alarm.raised", {"source": "bioreactor", "code": "T-HIGH", "message": unbroken("Y")})

    push(server, tmp_path, "B-LONG", steps)
    rev = login(server, "rev.a")
    r = rev.post(
        "/v1/batches/B-LONG/deviations/DEV-1/close",
        json={"reason": unbroken("K"), "user_id": "rev.a", "password": PASSWORD,
              "meaning": "closed"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    r = rev.get("/v1/batches/B-LONG/report.pdf")
    assert r.status_code == 200, r.text
    # A row taller than a page continues on the next, beside its neighbours' lines, so the
    # text is checked by what it is made of: every letter and word is there, none cut off.
    flat = "".join(pdf_text(r.content).split())
    for letter, n in (("X", 3000), ("Z", 3000), ("Y", 3000), ("K", 2000)):
        assert sum(map(len, re.findall(f"{letter}{{2,}}", flat))) == n, letter
    assert flat.count("9" * 100) == 5  # the 500-digit value, whole
    words = re.findall(r"word(\d+)", flat)
    assert sorted(set(map(int, words))) == list(range(600)) and len(words) == 2 * 600
    assert in_order(flat, name) and in_order(flat, LONG_WORDS)


def in_order(flat: str, text: str) -> bool:
    """Every character of ``text`` (but spaces) appears in ``flat`` in order (a split row's
    lines may sit between its neighbours' lines, but nothing is lost or reordered)."""
    chars = iter(flat)
    return all(c in chars for c in "".join(text.split()))


@pytest.fixture
def ahead() -> Callable[[], datetime]:
    """A unit clock two hours ahead of the server's (real) clock."""
    t = [datetime.now(UTC) + timedelta(hours=2)]

    def now() -> datetime:
        t[0] += timedelta(milliseconds=250)
        return t[0]

    return now


def test_a_signature_is_never_earlier_than_the_events_it_signs(
    server: Server, tmp_path: Path, ahead: Callable[[], datetime]
) -> None:
    add_people(server, REVIEWER | {"qa.global": PEOPLE["qa.global"]})
    publish_spec(server)
    push(server, tmp_path, "B-AHEAD", lambda add: None, now=ahead)
    rev = login(server, "rev.a")
    assert enter_results(rev, "B-AHEAD", example_results()).status_code == 201
    last = rev.get("/v1/batches/B-AHEAD").json()["timeline"][-1]["recorded_at"]
    r = sign(rev, "B-AHEAD", "rev.a", "reviewed")
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "clock is ahead" in detail and last.replace("Z", "+00:00") in detail
    assert "cannot sign batch B-AHEAD at 20" in detail  # the signature's own time, named
    assert rev.get("/v1/batches/B-AHEAD").json()["qa_signatures"] == []


def test_clock_alerts_make_a_batch_an_exception(
    server: Server, tmp_path: Path, ahead: Callable[[], datetime]
) -> None:
    add_people(server, REVIEWER)
    push(server, tmp_path, "B-OK", lambda add: None)
    push(server, tmp_path, "B-CLK", lambda add: None, now=ahead)  # ingest raises clock.ahead
    rev = login(server, "rev.a")
    q = rev.get("/v1/review/queue").json()["batches"]
    assert [b["batch_id"] for b in q] == ["B-CLK", "B-OK"]  # the exception first
    assert q[0]["exceptions"] >= 1 and q[1]["exceptions"] == 0
    view = rev.get("/v1/batches/B-CLK").json()
    assert view["exceptions"]["clock_alerts"] == len(view["clock_alerts"]) == q[0]["exceptions"]
    alert = view["clock_alerts"][0]
    assert alert["kind"] == "clock.ahead" and alert["batch_id"] == "B-CLK"
    # Acknowledging it hides nothing: it still counts.
    r = rev.post("/v1/alerts/acknowledgements", json={"alert_id": alert["id"], "note": "seen"})
    assert r.status_code == 201, r.text
    assert rev.get("/v1/batches/B-CLK").json()["exceptions"]["clock_alerts"] >= 1
    r = rev.get("/v1/batches/B-CLK/report.pdf")
    assert r.status_code == 200, r.text
    text = pdf_text(r.content)
    assert "Clock alerts" in text and "clock.ahead" in text and "ahead of the server" in text
