"""Issue 18, item 3: whoever administered a person's access (a password reset, a grant, a revoke,
a status change) within a batch's review window cannot sign that batch.  The signatures route
refuses it (``duties.signing_barred``); the review's own ``sign`` refuses it too, so no other
caller of the review can skip the rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from server.db import make_engine
from server.errors import Forbidden
from server.people.service import Principal
from server.quality import release, review
from server.quality.record import load_review
from tests.security.test_review_record import settled_push_batch as push_batch
from tests.server.conftest import Server
from tests.server.qa import (
    PEOPLE,
    add_people,
    enter_results,
    example_results,
    login,
    publish_spec,
    sign,
)

STAFF = {
    "adm.rev": ("Ada Both", [("admin", "*"), ("qa_reviewer", "SITE-A")]),
    "rev.b": PEOPLE["rev.b"],
    "rev.a": PEOPLE["rev.a"],
    "qa.global": PEOPLE["qa.global"],
}


def test_who_administered_access_since_the_batch_began_cannot_sign_it(
    server: Server, tmp_path: Path
) -> None:
    add_people(server, STAFF)
    publish_spec(server)
    ada = login(server, "adm.rev")
    # Before the batch: a grant by Ada does not bar her from reviewing it.
    r = ada.post("/v1/people/rev.b/roles", json={"role": "auditor", "site_id": "SITE-B",
                                                 "reason": "audit of site B"})  # fmt: skip
    assert r.status_code == 200, r.text
    push_batch(server, tmp_path, unit_id="U-SOD", site="SITE-A", batch_id="B-SOD", deviation=False)
    rev = login(server, "rev.a")
    assert enter_results(rev, "B-SOD", example_results()).status_code == 201
    assert sign(ada, "B-SOD", "adm.rev", "reviewed", "UK").status_code == 201
    # During the batch's review window: a revoke, and she may sign it no more.
    r = ada.post("/v1/people/rev.b/roles/revoke", json={"role": "auditor", "site_id": "SITE-B",
                                                        "reason": "audit done"})  # fmt: skip
    assert r.status_code == 200, r.text
    r = sign(ada, "B-SOD", "adm.rev", "reviewed", "EU")
    assert r.status_code == 403 and "separation of duties" in r.json()["detail"], r.text
    # The review itself refuses, whoever calls it.
    engine = make_engine(server.settings.database_url)
    with Session(engine) as db:
        r_ = load_review(db, "B-SOD")
        later = datetime.now(UTC) + timedelta(minutes=1)
        req = release.Signing(
            "reviewed", "reviewed", "EU", r_.record_hash, r_.evaluations["EU"].hash(), at=later
        )
        who = Principal("adm.rev", "Ada Both", frozenset(STAFF["adm.rev"][1]))
        with pytest.raises(Forbidden, match=r"administered people's access .* since"):
            review.sign(db, who, batch_id="B-SOD", req=req)
        db.rollback()
        # ... while a reviewer who administered nothing signs.
        rita = Principal("rev.a", "Rita Reviewer", frozenset(STAFF["rev.a"][1]))
        sig, _ = review.sign(db, rita, batch_id="B-SOD", req=req)
        assert sig.user_id == "rev.a"
        db.rollback()
    engine.dispose()
    assert [s["user_id"] for s in rev.get("/v1/batches/B-SOD").json()["qa_signatures"]] == [
        "adm.rev"
    ]
