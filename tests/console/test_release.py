"""The console in Chromium against a real server: a batch reviewed and released for three
jurisdictions, deviations closed with an e-signature (one and several minor ones), a signature
refused because the record changed while the dialog was open, and a reviewer who sees no release
control and whose forged release post is refused (403).  Every screen passes axe-core."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.server.qa import EXAMPLES, TEMPORARY, enter_results, example_results, login, sign

from .conftest import PASSWORD, Served, push_batch, sign_in


def view_of(served: Served, batch_id: str) -> dict[str, Any]:
    with login(served.server, "qa.global") as c:
        r = c.get(f"/v1/batches/{batch_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def audit(served: Served, **query: str) -> list[dict[str, Any]]:
    """The audit trail's entries matching ``query`` (``action`` is matched here)."""
    action = query.pop("action", None)
    with httpx.Client(base_url=served.url, headers={"Authorization": "Bearer " + ADMIN}) as c:
        r = c.get("/v1/audit", params=query | {"limit": "1000"})
        assert r.status_code == 200, r.text
        entries = r.json()["entries"]
    return [e for e in entries if action is None or e["action"] == action]


ADMIN = "test-admin-token-0123456789abcdef-32+"


def test_reviewed_and_released_for_three_jurisdictions(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_batch(served, tmp_path, "B-REL", deviations=())
    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    # The lab's results file uploaded through the batch view (a broken one refused first).
    rev.goto(f"{served.url}/console/batches/B-REL")
    rev.set_input_files("#r-file", files=[
        {"name": "bad.yaml", "mimeType": "text/yaml", "buffer": b"viability: [unclosed"}
    ])  # fmt: skip
    rev.fill("#r-reason", "QC results from the lab")
    rev.click("#r-submit")
    assert "results file: not valid YAML" in rev.inner_text(".banner.refusal")
    assert view_of(served, "B-REL")["results"] is None
    rev.set_input_files("#r-file", str(EXAMPLES / "results_example.yaml"))
    rev.fill("#r-reason", "QC results from the lab")
    rev.click("#r-submit")
    rev.wait_for_selector(".banner.ok")
    assert view_of(served, "B-REL")["results"]["results"]["viability"]["value"] == "91.5"
    rev.goto(f"{served.url}/console/queue")
    rev.screens.check("queue")
    row = rev.locator("#queue tr", has_text="B-REL")
    assert "SITE-A" in row.inner_text()
    row.get_by_role("link", name="B-REL").click()
    rev.wait_for_url(re.compile(r"/console/batches/B-REL$"))
    rev.screens.check("batch")
    # Exceptions come first: before the timeline, the values, the CQA panel and the charts.
    order = rev.evaluate(
        "['h-exceptions','h-timeline','h-values','h-used','h-cqa','h-custody','h-telemetry']"
        ".map(id => document.getElementById(id).getBoundingClientRect().top)"
    )
    assert order == sorted(order)
    assert "Rejected scans: 1" in rev.inner_text("#exceptions")
    assert "lot: LOT-77" in rev.inner_text("#used")
    assert rev.locator("#telemetry svg.chart polygon.band").count() == 1
    assert "1 excursion" in rev.inner_text("#telemetry")
    assert "temperature: 1" in rev.inner_text("#exceptions")
    assert "CQA" not in rev.title() and rev.locator("#cqa-table-EU tbody tr").count() >= 10
    assert rev.locator("#open-release").count() == 0  # a reviewer has no release control

    rev.click("#open-review")
    rev.screens.check("review-dialog")
    view = view_of(served, "B-REL")
    assert rev.input_value("input[name=record_hash]") == view["record_hash"]
    assert rev.input_value("input[name=evaluation_hash_UK]") == view["cqa"]["UK"]["evaluation_hash"]
    rev.fill("#f-reason", "reviewed by exception against CD19 v1")
    rev.fill("#f-password", "not-my-password")
    rev.click("#sign-submit")
    assert "password" in rev.inner_text("#sign-refused")  # the dialog again, nothing signed
    assert view_of(served, "B-REL")["qa_signatures"] == []
    rev.fill("#f-reason", "reviewed by exception against CD19 v1")
    rev.fill("#f-password", PASSWORD)
    rev.click("#sign-submit")
    rev.wait_for_selector("#qa-signatures")
    assert rev.locator(".banner.ok").count() == len(view["cqa"])  # one signature each

    appr = pages("approver")
    sign_in(appr, served.url, "appr.a")
    appr.goto(f"{served.url}/console/batches/B-REL")
    appr.click("#open-release")
    appr.screens.check("release-dialog")
    assert "result set #" in appr.inner_text("#h-covers + p")
    for j in ("EU", "US", "UK"):
        appr.check(f"#j-{j}")
    appr.select_option("#f-meaning", "released")
    appr.fill("#f-reason", "released: conforms, pending results tracked")
    appr.fill("#f-password", PASSWORD)
    appr.click("#sign-submit")
    appr.wait_for_selector("#dispositions")
    appr.screens.check("released")
    assert appr.locator("#dispositions tbody tr").count() == 3

    after = view_of(served, "B-REL")
    disps = {d["jurisdiction"]: d for d in after["dispositions"]}
    assert set(disps) == {"EU", "US", "UK"}
    for j, d in disps.items():
        assert d["disposition"] == "conditional_release"
        assert d["signature"]["evaluation_hash"] == after["cqa"][j]["evaluation_hash"]
        assert d["signature"]["printed_name"] == "Paul Approver" and d["signature"]["applies"]
    assert len({d["signature"]["evaluation_hash"] for d in disps.values()}) == 3
    assert len({d["signature"]["id"] for d in disps.values()}) == 3


def test_deviations_closed_with_an_e_signature(served: Served, pages: Any, tmp_path: Path) -> None:
    push_batch(
        served, tmp_path, "B-DEV",
        deviations=(("DEV-1", "major"), ("DEV-2", "minor"), ("DEV-3", "minor")),
    )  # fmt: skip
    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    rev.goto(f"{served.url}/console/batches/B-DEV")

    # A major deviation is not closed in bulk; a wrong password closes nothing.
    rev.check("#close-deviations input[value=DEV-1]")
    rev.check("#close-deviations input[value=DEV-2]")
    rev.fill("#close-reason", "investigated: no impact")
    rev.fill("#close-password", PASSWORD)
    rev.click("#close-submit")
    assert "DEV-1 (major) must be closed on its own" in rev.inner_text(".banner.refusal")
    rev.check("#close-deviations input[value=DEV-2]")
    rev.fill("#close-reason", "investigated: no impact")
    rev.fill("#close-password", "not-my-password")
    rev.click("#close-submit")
    assert rev.locator(".banner.refusal").count() == 1
    assert all(d["open"] for d in view_of(served, "B-DEV")["deviations"])

    # Two minor ones with one signature: two closures, recorded separately.
    rev.check("#close-deviations input[value=DEV-2]")
    rev.check("#close-deviations input[value=DEV-3]")
    rev.fill("#close-reason", "minor: label smudge and late entry, no impact")
    rev.fill("#close-password", PASSWORD)
    rev.click("#close-submit")
    rev.wait_for_selector(".banner.ok")
    rev.screens.check("deviations-closed")
    assert rev.locator(".banner.ok").count() == 2
    state = {d["deviation_id"]: d["open"] for d in view_of(served, "B-DEV")["deviations"]}
    assert state == {"DEV-1": True, "DEV-2": False, "DEV-3": False}
    closed = [
        e for e in audit(served, object_type="deviation") if e["action"] == "deviation.closed"
    ]
    assert sorted(e["object_id"] for e in closed) == ["B-DEV/DEV-2", "B-DEV/DEV-3"]
    assert {e["actor"] for e in closed} == {"rev.a"}

    # The major one on its own.
    rev.check("#close-deviations input[value=DEV-1]")
    rev.fill("#close-reason", "wrong bag refused by the scan; right bag used")
    rev.fill("#close-password", PASSWORD)
    rev.click("#close-submit")
    rev.wait_for_selector(".banner.ok")
    assert not any(d["open"] for d in view_of(served, "B-DEV")["deviations"])
    assert rev.locator("#close-deviations").count() == 0


def test_signature_refused_when_the_record_changed_while_the_dialog_was_open(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_batch(served, tmp_path, "B-STALE", deviations=())
    with login(served.server, "rev.a") as c:
        assert enter_results(c, "B-STALE", example_results()).status_code == 201
        assert sign(c, "B-STALE", "rev.a", "reviewed").status_code == 201

    appr = pages("approver")
    sign_in(appr, served.url, "appr.a")
    appr.goto(f"{served.url}/console/batches/B-STALE/sign?kind=release")
    opened = appr.input_value("input[name=record_hash]")
    # Meanwhile the lab's results are entered again: the record changes.
    late = example_results() | {"vcn": {"value": "2.1", "unit": "{copies}/{cell}"}}
    with login(served.server, "rev.a") as c:
        r = enter_results(c, "B-STALE", late)
        assert r.status_code == 201, r.text
    appr.check("#j-EU")
    appr.fill("#f-reason", "release")
    appr.fill("#f-password", PASSWORD)
    appr.click("#sign-submit")
    appr.wait_for_selector("#what-changed")
    appr.screens.check("stale-refused")
    assert "changed since it was reviewed" in appr.inner_text("#sign-refused")
    changed = appr.inner_text("#what-changed")
    assert f"record hash was {opened}" in changed and "results entered" in changed
    # The dialog now holds the current record; nothing was signed.
    assert appr.input_value("input[name=record_hash]") == view_of(served, "B-STALE")["record_hash"]
    assert appr.input_value("input[name=record_hash]") != opened
    assert view_of(served, "B-STALE")["dispositions"] == []


def test_reviewer_sees_no_release_control_and_a_forged_post_is_refused(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_batch(served, tmp_path, "B-FORGE", deviations=())
    with login(served.server, "rev.a") as c:
        assert enter_results(c, "B-FORGE", example_results()).status_code == 201
        assert sign(c, "B-FORGE", "rev.a", "reviewed").status_code == 201
    view = view_of(served, "B-FORGE")

    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    rev.goto(f"{served.url}/console/batches/B-FORGE")
    assert rev.locator("#open-review").count() == 1
    assert rev.locator("#open-release").count() == 0
    assert rev.get_by_text("Release", exact=False).filter(has_text="Release…").count() == 0
    csrf = rev.input_value("form[action='/console/signout'] input[name=csrf]")
    assert rev.goto(f"{served.url}/console/batches/B-FORGE/sign?kind=release").status == 403
    rev.screens.check("release-refused")
    assert "may not release" in rev.inner_text("#refusal")

    forged = {
        "csrf": csrf,
        "kind": "release",
        "meaning": "released",
        "jurisdiction": "EU",
        "record_hash": view["record_hash"],
        "evaluation_hash_EU": view["cqa"]["EU"]["evaluation_hash"],
        "reason": "forged",
        "password": PASSWORD,
        "audit_seq": "0",
    }
    r = rev.request.post(f"{served.url}/console/batches/B-FORGE/sign", form=forged)
    assert r.status == 403 and "may not release" in r.text()
    r = rev.request.post(
        f"{served.url}/console/batches/B-FORGE/sign", form=forged | {"csrf": "0" * 64}
    )
    assert r.status == 403 and "CSRF" in r.text()
    assert view_of(served, "B-FORGE")["dispositions"] == []
    refused = [e for e in audit(served, action="authz.refused") if e["actor"] == "rev.a"]
    assert refused, "the refused release is audited"

    # A reviewer of another site sees nothing of it.
    other = pages("other-site")
    sign_in(other, served.url, "rev.b")
    assert other.locator("#queue tr", has_text="B-FORGE").count() == 0
    assert other.goto(f"{served.url}/console/batches/B-FORGE").status == 403


def test_sign_in_with_a_password_set_by_an_administrator(served: Served, pages: Any) -> None:
    with httpx.Client(base_url=served.url, headers={"Authorization": "Bearer " + ADMIN}) as c:
        r = c.post(
            "/v1/people",
            json={"user_id": "rev.new", "printed_name": "Nora New", "password": TEMPORARY,
                  "roles": [{"role": "qa_reviewer", "site_id": "SITE-A"}], "reason": "hired"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
    pg = pages("new")
    pg.goto(f"{served.url}/console/signin")
    pg.screens.check("signin")
    pg.fill("#f-user_id", "rev.new")
    pg.fill("#f-password", "wrong-password-123")
    pg.click("#signin button[type=submit]")
    assert "user id or password is wrong" in pg.inner_text("#refusal")
    pg.fill("#f-user_id", "rev.new")
    pg.fill("#f-password", TEMPORARY)
    pg.click("#signin button[type=submit]")
    pg.wait_for_url(f"{served.url}/console/password")
    pg.screens.check("password")
    assert pg.goto(f"{served.url}/console/queue").url.endswith("/console/password")
    pg.fill("#f-current", TEMPORARY)
    pg.fill("#f-new", "Nora-Own-Passphrase-1")
    pg.fill("#f-again", "Nora-Own-Passphrase-1")
    pg.click("#password button[type=submit]")
    pg.wait_for_url(f"{served.url}/console/queue")
    cookie = next(c for c in pg.context.cookies() if c["name"] == "console_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    pg.click("#sign-out")
    pg.wait_for_url(f"{served.url}/console/signin")
    assert pg.goto(f"{served.url}/console/queue").url.endswith("/console/signin")


def tab_to(page: Any, selector: str, presses: int = 80) -> None:
    """Press Tab until ``selector`` has the focus (keyboard only: no click)."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} is not reachable with the Tab key")


def test_the_release_by_keyboard_alone(served: Served, pages: Any, tmp_path: Path) -> None:
    push_batch(served, tmp_path, "B-KEY", deviations=())
    with login(served.server, "rev.a") as c:
        assert enter_results(c, "B-KEY", example_results()).status_code == 201
        assert sign(c, "B-KEY", "rev.a", "reviewed", "EU").status_code == 201
    pg = pages("keyboard")
    sign_in(pg, served.url, "appr.a")
    tab_to(pg, "a[href='/console/batches/B-KEY']")
    pg.keyboard.press("Enter")
    pg.wait_for_url(re.compile(r"/console/batches/B-KEY$"))
    tab_to(pg, "#open-release")
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#sign-form")
    tab_to(pg, "#j-EU")
    pg.keyboard.press("Space")
    tab_to(pg, "#f-reason")
    pg.keyboard.type("released by keyboard")
    tab_to(pg, "#f-password")
    pg.keyboard.type(PASSWORD)
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#dispositions")
    (d,) = view_of(served, "B-KEY")["dispositions"]
    assert d["jurisdiction"] == "EU" and d["disposition"] == "conditional_release"
