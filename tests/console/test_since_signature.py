"""A batch signed and then changed says what changed: the events the unit sent after the record
the last QA signature covered (by kind, with their seqs), results entered and deviation
comments since, in the batch view's JSON and on the console's batch page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.ledger import Append
from edge.sync import SyncClient
from tests.server.qa import enter_results, example_results, login, sign

from .conftest import Served, push_batch, sign_in
from .test_queue_and_security import signed_in


def test_a_changed_batch_says_what_arrived_after_the_last_signature(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    led = push_batch(served, tmp_path, "B-SINCE", deviations=(("DEV-S", "minor"),), readings=10)
    signed_head = led.head[0]
    with login(served.server, "rev.a") as c:
        assert enter_results(c, "B-SINCE", example_results()).status_code == 201
        before = c.get("/v1/batches/B-SINCE").json()
        assert before["since_signature"] is None  # never signed
        assert sign(c, "B-SINCE", "rev.a", "reviewed").status_code == 201
        quiet = c.get("/v1/batches/B-SINCE").json()
        assert quiet["review_state"] == "in_review"
        assert quiet["since_signature"]["known"] is True
        assert quiet["since_signature"]["signed_last_seq"] == signed_head
        assert quiet["since_signature"]["events"] == []

        # after the signature: three readings and a late value from the unit, and a comment
        reading = {"channel": "temperature", "value": {"value": "37.1", "unit": "Cel"},
                   "limit": "ok"}  # fmt: skip
        led.append_many([Append("reading.recorded", reading, "B-SINCE", None, None)] * 3)
        led.append("value.recorded", {"step": "seed", "name": "late", "limit": "ok",
                   "value": {"value": "2", "unit": "1"}}, batch_id="B-SINCE", actor="op.alice")  # fmt: skip
        client = SyncClient(led, served.url, server_key=served.server.key)
        assert client.sync_once().pushed == 4
        r = c.post("/v1/batches/B-SINCE/deviations/DEV-S/comments",
                   json={"comment": "seen after the review"})  # fmt: skip
        assert r.status_code == 201, r.text
        v = c.get("/v1/batches/B-SINCE").json()
    since = v["since_signature"]
    assert v["review_state"] == "changed"
    assert since["signature"]["user_id"] == "rev.a" and since["signature"]["meaning"] == "reviewed"
    n = signed_head
    assert since["events"] == [  # readings counted from the summary (never read), without seqs
        {"kind": "value.recorded", "count": 1, "first_seq": n + 4, "last_seq": n + 4},
        {"kind": "reading.recorded", "count": 3, "first_seq": None, "last_seq": None},
    ]
    assert since["results_entered"] == [] and since["deviation_comments"] == 1

    page, _ = signed_in(served, "rev.a")
    try:
        html = page.get("/console/batches/B-SINCE").text
    finally:
        page.close()
    assert 'id="since-signature"' in html and "Changed since the last signature" in html
    assert f"on the record up to event seq {n}" in html
    assert "reading.recorded: <strong>3</strong></li>" in html
    assert f"value.recorded: <strong>1</strong> (seq {n + 4})" in html
    assert "deviation comments: <strong>1</strong>" in html
    assert '(<a href="#since-signature">what changed</a>)' in html  # from the signature's row

    pg = pages("reviewer")  # in Chromium: shown first, and axe-clean
    sign_in(pg, served.url, "rev.a")
    pg.goto(f"{served.url}/console/batches/B-SINCE")
    assert pg.locator("#since-signature").is_visible()
    pg.screens.check("since-signature")
