"""Issue 18, items 6 and 7 (the QA API's part): a queue ``offset`` beyond 64 bits answered 500,
and a 20 MiB comment was stored in the append-only trail.  Now every integer parameter is bounded
and every reason, comment and free-text field has a length bound (2,000 characters; names 200),
refused with a 422 that names the field; nothing is stored."""

from __future__ import annotations

from pathlib import Path

from tests.server.conftest import Server
from tests.server.qa import add_people, login, push_batch

LONG = "x" * 2001


def test_integers_and_texts_are_bounded(server: Server, tmp_path: Path) -> None:
    add_people(
        server,
        {
            "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
            "aud": ("Aude Auditor", [("auditor", "*")]),
        },
    )
    push_batch(server, tmp_path, unit_id="UNIT-BND", site="SITE-A", batch_id="B-BND")
    rev, aud = login(server, "rev.a"), login(server, "aud")
    for path, params in [
        ("/v1/review/queue", {"offset": str(2**64)}),
        ("/v1/review/queue", {"offset": "-1"}),
        ("/v1/review/queue", {"limit": str(10**30)}),
        ("/v1/audit", {"after": str(2**70)}),
        ("/v1/audit", {"actor": LONG}),
    ]:
        c = aud if path == "/v1/audit" else rev
        r = c.get(path, params=params)
        assert r.status_code == 422, (path, params, r.status_code, r.text[:300])
    posts = [
        (rev, "/v1/batches/B-BND/deviations/DEV-1/comments", {"comment": LONG}, "comment"),
        (rev, "/v1/batches/B-BND/deviations/DEV-1/close", {
            "user_id": "rev.a", "password": "x", "meaning": "closed", "reason": LONG}, "reason"),
        (rev, "/v1/batches/B-BND/signatures", {
            "user_id": "rev.a", "password": "x", "meaning": "reviewed", "reason": LONG,
            "jurisdiction": "EU", "record_hash": "0", "evaluation_hash": "0"}, "reason"),
        (server.admin(), "/v1/people", {
            "user_id": "new.one", "printed_name": "N" * 201, "password": "x", "reason": "r"},
         "printed_name"),
        (server.admin(), "/v1/people/rev.a/status", {"status": "disabled", "reason": LONG},
         "reason"),
    ]  # fmt: skip
    for client, path, body, field in posts:
        r = client.post(path, json=body)
        assert r.status_code == 422 and field in r.text, (path, r.status_code, r.text[:300])
    # 2,000 characters is accepted; a 20 MiB comment never reaches the trail.
    ok = rev.post("/v1/batches/B-BND/deviations/DEV-1/comments", json={"comment": "y" * 2000})
    assert ok.status_code == 201, ok.text
    huge = rev.post(
        "/v1/batches/B-BND/deviations/DEV-1/comments", json={"comment": "z" * (20 << 20)}
    )
    assert huge.status_code in (413, 422), huge.status_code
    trail = aud.get("/v1/audit", params={"limit": 1000}).json()["entries"]
    assert not any(LONG in str(e) or "zzzz" in str(e) for e in trail)
