"""An out-of-specification batch taken to exceptional release through the console: the case
opened, the risk evaluation and the physician's acceptance recorded, the release signed in the
release dialog, the 48-hour notification clock shown, then the notification; a deviation
comment; the batch report as PDF for the cookie session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.server.qa import enter_results, example_results, login, sign

from .conftest import PASSWORD, Served, push_batch, sign_in
from .test_release import view_of


def test_an_oos_case_taken_to_exceptional_release(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_batch(served, tmp_path, "B-OOS", deviations=(("DEV-1", "minor"),))
    low = example_results() | {"viability": {"value": "50", "unit": "%", "method": "flow-7aad"}}
    with login(served.server, "rev.a") as c:
        assert enter_results(c, "B-OOS", low).status_code == 201

    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    rev.goto(f"{served.url}/console/batches/B-OOS")
    assert rev.locator("#open-case").count() == 0  # a reviewer does not decide
    rev.select_option("#comment-dev", "DEV-1")
    rev.fill("#comment-text", "checked the label stock: <b>no</b> impact")
    rev.click("#comment-submit")
    rev.wait_for_selector(".banner.ok")
    assert "<b>no</b> impact" in rev.inner_text("#deviations")  # shown as text, not markup
    rev.check("#close-deviations input[value=DEV-1]")
    rev.fill("#close-reason", "no impact")
    rev.fill("#close-password", PASSWORD)
    rev.click("#close-submit")
    rev.wait_for_selector(".banner.ok")
    with login(served.server, "rev.a") as c:
        assert sign(c, "B-OOS", "rev.a", "reviewed", "EU").status_code == 201

    appr = pages("approver")
    sign_in(appr, served.url, "appr.a")
    appr.goto(f"{served.url}/console/batches/B-OOS")
    assert "EU: viability" in appr.inner_text("#exceptions")
    appr.screens.check("oos-batch")
    appr.select_option("#oos-j", "EU")
    appr.fill("#oos-physician", "Dr Ada Lovelace")
    appr.fill("#oos-request", "no alternative therapy; patient condition requires infusion")
    appr.click("#open-case-submit")
    appr.wait_for_selector(".banner.ok")
    (case,) = view_of(served, "B-OOS")["oos_cases"]
    cid = case["id"]
    appr.fill(f"#case-{cid}-text", "risk acceptable given the clinical situation")
    appr.click(f"#case-{cid}-submit")
    appr.wait_for_selector(".banner.ok")
    appr.fill(f"#case-{cid}-text", "signed acceptance received from Dr Lovelace")
    appr.click(f"#case-{cid}-submit")
    appr.wait_for_selector(".banner.ok")
    assert "accepted" in appr.inner_text(f"#case-{cid}")

    appr.click("#open-release")
    appr.check("#j-EU")
    appr.fill("#f-reason", "exceptional release on the physician's request")
    appr.fill("#f-password", PASSWORD)
    appr.click("#sign-submit")
    appr.wait_for_selector(f"#case-{cid}-clock")
    appr.screens.check("oos-released")
    assert "due by" in appr.inner_text(f"#case-{cid}-clock")
    view = view_of(served, "B-OOS")
    (d,) = view["dispositions"]
    assert d["jurisdiction"] == "EU" and d["disposition"] == "exceptional_release"
    assert view["oos_cases"][0]["state"] == "released"

    appr.fill(f"#case-{cid}-text", "EMA notification ref EMA-2026-0042")
    appr.click(f"#case-{cid}-submit")
    appr.wait_for_selector(".banner.ok")
    assert "EMA-2026-0042" in appr.inner_text(f"#case-{cid}-clock")
    assert view_of(served, "B-OOS")["oos_cases"][0]["state"] == "notified"

    r = appr.request.get(f"{served.url}/console/batches/B-OOS/report.pdf")
    assert r.status == 200 and r.headers["content-type"] == "application/pdf"
    assert r.body()[:5] == b"%PDF-"


def test_alerts_inbox_and_the_coa_and_fhir_downloads(
    served: Served, pages: Any, tmp_path: Path
) -> None:
    push_batch(served, tmp_path, "B-LATE", deviations=())
    with login(served.server, "rev.a") as c:
        assert enter_results(c, "B-LATE", example_results()).status_code == 201
        assert sign(c, "B-LATE", "rev.a", "reviewed", "US").status_code == 201
    with login(served.server, "appr.a") as c:
        assert sign(c, "B-LATE", "appr.a", "released", "US").status_code == 201
    growth = example_results() | {
        "sterility": {"value": "growth", "method": "bact-alert", "status": "final"}
    }
    with login(served.server, "rev.a") as c:
        assert enter_results(c, "B-LATE", growth).status_code == 201

    rev = pages("reviewer")
    sign_in(rev, served.url, "rev.a")
    rev.click("nav.screens a[href='/console/alerts']")
    rev.wait_for_selector("#alerts")
    rev.screens.check("alerts")
    row = rev.locator("#alerts tbody tr", has_text="quality.late_failure").first
    alert_id = row.get_attribute("id")
    assert alert_id is not None and "B-LATE" in row.inner_text()
    rev.fill(f"#{alert_id} input[name=note]", "QP informed; patient's physician called")
    rev.click(f"#{alert_id} button")
    rev.wait_for_selector(".banner.ok")
    assert "by rev.a" in rev.inner_text(f"#{alert_id}")
    with login(served.server, "rev.a") as c:
        (a,) = [x for x in c.get("/v1/alerts").json() if f"alert-{x['id']}" == alert_id]
        assert a["acknowledged"]["note"] == "QP informed; patient's physician called"
    # A second acknowledgement is refused in the service's words.
    csrf = rev.input_value("form[action='/console/signout'] input[name=csrf]")
    r = rev.request.post(
        f"{served.url}/console/alerts/ack",
        form={"csrf": csrf, "alert": alert_id.removeprefix("alert-"), "note": "again"},
    )
    assert r.status == 409 and "already acknowledged by rev.a" in r.text()

    rev.goto(f"{served.url}/console/batches/B-LATE")
    coa = rev.request.get(f"{served.url}{rev.get_attribute('#coa-US', 'href')}")
    assert coa.status == 200 and coa.body()[:5] == b"%PDF-"
    fhir = rev.request.get(f"{served.url}{rev.get_attribute('#fhir-US', 'href')}")
    assert fhir.status == 200 and fhir.json()["resourceType"] == "Bundle"
    bad = rev.request.get(f"{served.url}/console/batches/B-LATE/coa.pdf?jurisdiction=JP")
    assert bad.status == 422
