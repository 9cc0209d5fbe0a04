"""Issue 18, item 7 (500s from unvalidated input), for the review's free text: a NUL character
cannot be stored in a PostgreSQL text column, so a comment, reason or note carrying one is
refused with a 422 naming the field (on both databases alike), never a 500, and nothing is
recorded."""

from __future__ import annotations

from pathlib import Path

from tests.security.test_review_record import settled_push_batch
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

NUL = "no impact\x00; DROP"


def test_a_nul_in_review_text_is_refused_by_name(server: Server, tmp_path: Path) -> None:
    add_people(server, {u: PEOPLE[u] for u in ("rev.a", "appr.a", "qa.global")})
    publish_spec(server)
    settled_push_batch(server, tmp_path, unit_id="U-NUL", site="SITE-A", batch_id="B-NUL")
    rev, appr = login(server, "rev.a"), login(server, "appr.a")
    oos = example_results() | {"viability": {"value": "50", "unit": "%", "method": "flow-7aad"}}
    assert enter_results(rev, "B-NUL", oos).status_code == 201
    before = rev.get("/v1/batches/B-NUL").json()
    calls = {
        "comment": rev.post("/v1/batches/B-NUL/deviations/DEV-1/comments", json={"comment": NUL}),
        "reason": rev.post(
            "/v1/batches/B-NUL/deviations/DEV-1/close",
            json={"reason": NUL, "user_id": "rev.a", "password": PASSWORD, "meaning": "closed"},
        ),
        "request": appr.post(
            "/v1/batches/B-NUL/oos",
            json={"jurisdiction": "EU", "physician": "Dr X", "request": NUL},
        ),
        "physician": appr.post(
            "/v1/batches/B-NUL/oos", json={"jurisdiction": "EU", "physician": NUL, "request": "r"}
        ),
        "body.reason": sign(rev, "B-NUL", "rev.a", "reviewed", reason=NUL),
    }
    for field, r in calls.items():
        assert r.status_code == 422, (field, r.status_code, r.text)
        assert field in r.json()["detail"] and "NUL" in r.json()["detail"], (field, r.text)
    after = rev.get("/v1/batches/B-NUL").json()
    assert after["record_hash"] == before["record_hash"] and after["qa_signatures"] == []
    assert appr.get("/v1/oos").json() == []
