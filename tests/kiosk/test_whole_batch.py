"""A whole CAR-T batch through the kiosk in a real headless Chromium.

The kiosk is served by the station agent (``StationAgent``, what ``ctgtp edge run`` runs) from
a unit's home and its station file.  Scans come from the simulated scanner on its
pseudo-terminal (read by the agent's serial transport and handed to the kiosk's scan sink), and
one from a keyboard-wedge scanner typing into the page; readings come from the simulated
bioreactor over a real mosquitto, bound by the agent to the running batch.
On the way: the wrong patient refused on the page, an out-of-limit value entered again, a
correction, second-person verification, a hand-off signed by two people, labels printed, applied
by scanning, destroyed and reconciled after a dry run, deviations raised, commented and linked;
every screen passes axe-core.  At the end the exported ledger verifies offline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from ebr_core.batch import current_values
from ebr_core.keys import Keyring
from ebr_core.verify import verify
from edge.export import export_ledger
from tests.kiosk.conftest import COI, PW, UNIT, WRONG_COI, sign_in, wedge

pytestmark = pytest.mark.hil  # simulated devices on real ptys and a real broker

GS = "\x1d"
GTIN_BAG = "09506000134345"
BATCH = "B-2026-0042"


def expiry(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%y%m%d")


@dataclass
class Rig:
    """The station agent (``StationAgent``, what ``ctgtp edge run`` runs) serving the kiosk, with
    its simulated devices: a scanner on a pseudo-terminal and a bioreactor publishing to a real
    mosquitto."""

    agent: Any
    scanner_dev: Any
    scanner_sim: Any
    bioreactor: Any

    def scan(self, data: str, symbology: str = "]d2") -> None:
        """The operator pulls the scanner's trigger: bytes on the serial line."""
        self.scanner_dev.write(self.scanner_sim.frame(data, symbology))

    def readings(self, n: int) -> None:
        self.bioreactor.state("expansion")
        for i in range(n):
            self.bioreactor.reading("temperature", f"37.{i % 3}", "Cel")
            self.bioreactor.reading("ph", f"7.{2 + i % 2}", "[pH]")
        self.bioreactor.wait_published()


def station_toml(home: Path, scanner_port: str, broker_port: int) -> Path:
    f = home / "station.toml"
    f.write_text(
        f'''unit_id = "{UNIT}"

[devices.scanner]
profile = "scanner_serial_generic"
port = "{scanner_port}"

[devices.bioreactor]
profile = "bioreactor_cartridge"
broker = "mqtt://127.0.0.1:{broker_port}"

[kiosk]
bind = "127.0.0.1:0"
'''
    )
    return f


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    from edge.station.agent import StationAgent
    from firmware_sim.bioreactor import BioreactorSim
    from firmware_sim.broker import Broker
    from firmware_sim.devices import ScannerSim
    from firmware_sim.pty import PtyDevice
    from tests.station.conftest import make_home

    home = make_home(tmp_path / "unit", UNIT)
    dev = PtyDevice()
    broker = Broker().start()
    agent = StationAgent.from_file(station_toml(home, dev.port, broker.port)).start()
    try:
        down = agent.wait_connected(20)
        assert not down, f"devices not connected: {down}"
        bio = BioreactorSim("127.0.0.1", broker.port, UNIT)
        yield Rig(agent, dev, ScannerSim(), bio)
        bio.close()
    finally:
        agent.stop()
        dev.close()
        broker.stop()


@pytest.fixture
def kiosk_url(rig: Rig) -> str:
    assert rig.agent.kiosk_url, rig.agent.kiosk_error
    return str(rig.agent.kiosk_url)


def fresh_banner(page: Any, kind: str, text: str | None = None) -> Any:
    return page.locator(f"#banner.{kind}:not([data-seen])", has_text=text)


def act(page: Any, do: Any, kind: str = "ok", text: str | None = None) -> str:
    """Do something on the page and wait for the banner it brings (not an earlier one)."""
    page.evaluate("document.querySelectorAll('#banner').forEach(b => b.dataset.seen = '1')")
    do()
    loc = fresh_banner(page, kind, text)
    loc.wait_for()
    return str(loc.inner_text())


def live(page: Any) -> None:
    page.locator("body[data-live]").wait_for(state="attached")


def goto(page: Any, url: str) -> None:
    page.goto(url)
    live(page)


def scan(page: Any, rig: Rig, data: str, symbology: str = "]d2", text: str = "accepted") -> str:
    return act(page, lambda: rig.scan(data, symbology), "ok", text)


def value(page: Any, name: str, v: str) -> str:
    def do() -> None:
        page.fill(f"#f-value-{name}", v)
        page.press(f"#f-value-{name}", "Enter")

    return act(page, do, "ok", f"{name} = {v}")


def sign(page: Any, user: str = "op.alice") -> str:
    def do() -> None:
        page.fill("#f-password-sign", PW[user])
        page.press("#f-password-sign", "Enter")

    return act(page, do, "ok", "signed 'performed'")


def verify_step(page: Any, user: str, batch: str = BATCH) -> str:
    page.click("#open-verify")
    page.locator("#verify-dialog").wait_for()
    live(page)
    page.fill("#f-user_id-verifier", user)
    page.fill("#f-password-verifier", PW[user])
    return act(page, lambda: page.click("#verify-form button[type=submit]"), "ok", "'verified'")


def wait_value(page: Any, selector: str, value: str, timeout: float = 10.0) -> None:
    """Wait for a field's value (polled: the page's CSP allows no evaluated predicate)."""
    end = time.monotonic() + timeout
    while page.input_value(selector) != value:
        assert time.monotonic() < end, f"{selector} is {page.input_value(selector)!r}"
        time.sleep(0.05)


def header(page: Any) -> str:
    return str(page.inner_text("#h-step .count"))


def test_whole_car_t_batch(page: Any, kiosk_url: str, rig: Rig, tmp_path: Path) -> None:
    base, engine, screens = kiosk_url, rig.agent.engine, page.screens
    page.goto(f"{base}/signin")
    screens.check("signin")
    sign_in(page, base, "op.alice")
    live(page)

    # Batches: the batch is started by scanning the patient's COI (the scanner fills the field).
    page.fill("#f-batch_id", BATCH)
    page.fill("#f-password", PW["op.alice"])
    screens.check("batches")
    rig.scan(COI, "]C0")
    page.wait_for_url(f"{base}/b/{BATCH}/step")
    live(page)
    assert header(page) == "Step 1 of 13"
    screens.check("step")

    # The wrong patient: a hard stop, red and full width, with the engine's own words.
    text = act(page, lambda: rig.scan(WRONG_COI, "]C0"), "refusal", "wrong patient")
    assert "STOP" in text and f"does not match this batch's COI {COI}" in text
    screens.check("step-wrong-patient")
    scan(page, rig, COI, "]C0", "patient material accepted")

    # The apheresis bag arrives: a hand-off signed by two people, the bag scanned.
    goto(page, f"{base}/b/{BATCH}/handoff")
    page.fill("#f-from_party", "APHERESIS-CENTRE-1")
    page.fill("#f-to_party", UNIT)
    page.fill("#f-place", f"{UNIT} goods-in")
    page.fill("#f-password", PW["op.alice"])
    page.fill("#f-receiver", "op.bob")
    page.fill("#f-receiver_password", PW["op.bob"])
    screens.check("handoff")
    rig.scan(COI, "]C0")  # the bag's label, then the shipper's: each into its field
    wait_value(page, "#f-bag", "]C0" + COI)  # as read, symbology identifier and all
    rig.scan(COI, "]C0")
    wait_value(page, "#f-shipper", "]C0" + COI)
    act(
        page,
        lambda: page.click("#handoff button[type=submit]"),
        "ok",
        f"handed over {COI} from APHERESIS-CENTRE-1",
    )
    assert rig.agent.engine.state(BATCH).custody[-1]["shipper"] == COI
    assert "Bob Okafor received" in page.inner_text("#custody-chain")

    goto(page, f"{base}/b/{BATCH}/step")
    sign(page)
    screens.check("step-verify-button")
    page.click("#open-verify")
    page.locator("#verify-dialog").wait_for()
    screens.check("verify-dialog")
    page.goto(f"{base}/b/{BATCH}/step")
    # The performer cannot verify their own step: the engine's refusal, in the dialog.
    page.click("#open-verify")
    page.fill("#f-user_id-verifier", "op.alice")
    page.fill("#f-password-verifier", PW["op.alice"])
    act(
        page,
        lambda: page.click("#verify-form button[type=submit]"),
        "refusal",
        "second, different person",
    )
    page.goto(f"{base}/b/{BATCH}/step")
    verify_step(page, "op.bob")
    assert header(page) == "Step 2 of 13"

    # A value outside its hard limit is asked for again before anything is recorded.
    def typo() -> None:
        page.fill("#f-value-apheresis_volume", "2200")
        page.press("#f-value-apheresis_volume", "Enter")

    text = act(page, typo, "notice", "outside the hard limit")
    assert "2200 mL" in text and "50–500" in text
    assert "inspect:apheresis_volume" not in str(engine.state(BATCH).values)
    screens.check("step-reenter")
    page.fill("#f-again-apheresis_volume", "220")
    act(
        page,
        lambda: page.press("#f-again-apheresis_volume", "Enter"),
        "ok",
        "apheresis_volume = 220 mL recorded",
    )
    sign(page)

    # Cartridge from the scanner; equipment from a keyboard-wedge scanner into the page.
    assert header(page) == "Step 3 of 13"
    scan(page, rig, f"0109506000134376{'17' + expiry(365)}21CART-0001", text="cartridge accepted")
    page.locator("#f-code").evaluate("e => e.blur()")

    act(page, lambda: wedge(page, "8004UNIT-0001"), "ok", "equipment accepted")
    sign(page)
    scan(page, rig, "010950600013435210TM2611", text="reagent accepted")
    scan(page, rig, "010950600013436910IL2-0042", text="reagent accepted")
    sign(page)
    scan(page, rig, "010950600013438310ACT-7731", text="reagent accepted")
    scan(page, rig, COI, "]C0", "patient material accepted")
    sign(page)
    verify_step(page, "op.chen")
    scan(page, rig, "010950600013439010LV-19-0007", text="reagent accepted")
    value(page, "moi", "3")
    sign(page)
    verify_step(page, "op.chen")

    # Expansion: the bioreactor publishes; its readings are bound to this batch and charted.
    assert header(page) == "Step 7 of 13"
    rig.readings(12)
    goto(page, f"{base}/b/{BATCH}/telemetry")
    page.locator("#chart-temperature svg polygon.band").wait_for()
    assert page.locator("#chart-temperature svg line.limit").count() == 2
    assert "24 readings" not in page.inner_text("#telemetry")  # per channel, not per event
    page.locator("#chart-ph figcaption", has_text="12 readings").wait_for()
    screens.check("telemetry")
    goto(page, f"{base}/b/{BATCH}/step")
    value(page, "expansion_days", "9")
    sign(page)
    value(page, "viable_cell_density", "2.1")
    value(page, "viability", "91.5")

    # A correction, from the history screen: re-authenticated, shown as a correction.
    goto(page, f"{base}/b/{BATCH}/history")
    screens.check("history")
    page.click("#value-row-viability a")
    page.locator("#correct-dialog").wait_for()
    page.fill("#f-value-correct", "92.5")
    page.fill("#f-reason-correct", "transcription error: the counter printed 92.5")
    page.fill("#f-password-correct", PW["op.alice"])
    screens.check("correction-dialog")
    text = act(page, lambda: page.click("#correct-form button[type=submit]"), "ok", "corrected")
    assert "viability corrected from 91.5 to 92.5 %" in text
    sign(page)
    for name, v in (("viable_per_ml", "25000000"), ("harvest_volume", "60"),
                    ("car_percent", "40"), ("patient_weight", "72.5")):  # fmt: skip
        value(page, name, v)
    sign(page)
    act(page, lambda: page.click("#calculate button"), "ok", "per_kg")
    sign(page)
    verify_step(page, "op.chen")

    # Deviations: raise, comment, link.
    goto(page, f"{base}/b/{BATCH}/deviations")
    page.fill("#f-reason", "final bag label printed twice; spare label destroyed")
    act(page, lambda: page.click("#raise-deviation button"), "ok")
    page.select_option("#f-dev-c", f"DEV-{BATCH}-002")
    page.fill("#f-comment", "spare destroyed in front of a witness")
    act(page, lambda: page.click("#comment-deviation button"), "ok", "Comment added")
    page.select_option("#f-dev-l", f"DEV-{BATCH}-002")
    page.select_option("#f-dev-o", f"DEV-{BATCH}-001")
    act(page, lambda: page.click("#link-deviation button"), "ok", "linked")
    screens.check("deviations")
    devs = engine.state(BATCH).deviations
    assert devs[f"DEV-{BATCH}-002"].links == (f"DEV-{BATCH}-001",)
    assert devs[f"DEV-{BATCH}-002"].comments == ("spare destroyed in front of a witness",)

    goto(page, f"{base}/b/{BATCH}/step")
    scan(page, rig, f"01{GTIN_BAG}17{expiry(14)}21BAG1{GS}251{COI}", text="final product accepted")
    sign(page)
    verify_step(page, "op.chen")
    value(page, "end_temperature", "-90")
    sign(page)
    value(page, "qc_samples_taken", "5")
    sign(page)
    page.locator("#batch-completed").wait_for()
    screens.check("step-completed")

    # Labels: preview, print 2, apply one by scanning it, destroy the spare, dry run, reconcile.
    goto(page, f"{base}/b/{BATCH}/labels")
    page.select_option("#f-kind-p", "product_bag")
    page.fill("#f-count", "2")
    page.fill("#f-gtin", GTIN_BAG)
    page.fill("#f-expiry", (datetime.now(UTC) + timedelta(days=14)).strftime("%Y-%m-%d"))
    page.fill("#f-serial", "BAG1")
    act(page, lambda: page.click("#preview-labels button"), "notice", "Preview")
    img = page.locator("#label-preview")
    assert img.evaluate("i => i.complete && i.naturalWidth") > 500
    screens.check("labels-preview")
    act(
        page,
        lambda: page.click("#print-labels button"),
        "ok",
        f"printed 2 product_bag label(s) for {COI}",
    )
    page.select_option("#f-kind-a", "product_bag")
    act(page, lambda: rig.scan(COI, "]C0"), "ok", "1 product_bag label(s) applied")
    page.select_option("#f-kind-d", "product_bag")
    page.fill("#f-reason-d", "spare label, printed twice")
    act(page, lambda: page.click("#destroy-labels button"), "ok", "destroyed")
    act(page, lambda: page.click("#dry-run button"), "notice", "Dry run")
    assert "Every label kind balances" in page.inner_text("#dry-run-verdict")
    row = page.inner_text("#dry-run-counts tbody tr")
    assert row.split() == ["product_bag", "2", "1", "1", "yes"]
    reconciled_before = [
        e for e in engine.ledger.batch_events(BATCH) if e.kind == "label.reconciled"
    ]
    assert reconciled_before == []  # the dry run recorded nothing
    screens.check("labels-dry-run")
    text = act(page, lambda: page.click("#reconcile button"), "ok", "Labels reconciled: balanced")
    assert "product_bag: printed 2, applied 1, destroyed 1" in text

    # Devices: the station's, live (a new reading arrives on the open page over SSE).
    goto(page, f"{base}/devices")
    table = page.locator("#device-table")
    assert "scanner" in table.inner_text() and "not connected" not in table.inner_text()
    screens.check("devices")
    rig.bioreactor.reading("temperature", "37.4", "Cel")
    rig.bioreactor.wait_published()
    page.locator("#device-table", has_text="37.4").wait_for()
    goto(page, f"{base}/sync")
    shown = int(page.inner_text("#unsynced"))
    assert shown > 0 and shown == rig.agent.sync_state().unsynced_events  # no server
    screens.check("sync")
    goto(page, f"{base}/b/{BATCH}/history")
    correction = page.locator("#timeline tr.correction")
    assert "CORRECTION of event" in correction.inner_text()
    assert "from 91.5 % to 92.5 %" in correction.inner_text()

    # What the kiosk recorded is the engine's record: complete, corrected, verifiable offline.
    st = engine.state(BATCH)
    assert st.status == "completed" and len(st.completed_steps) == 13
    values, _ = current_values(st.values, st.corrections)
    assert values["manufacture/expansion/ipc-count:viability"]["value"]["value"] == "92.5"
    assert values["receipt/apheresis/inspect:apheresis_volume"]["value"]["value"] == "220"
    assert len(st.scans_rejected) == 1
    verifiers = {s.user_id for s in st.signatures if s.meaning == "verified"}
    assert verifiers == {"op.bob", "op.chen"}
    out = tmp_path / "export" / "unit.ledger"
    export_ledger(engine.ledger, out)
    records = [orjson.loads(line) for line in out.read_bytes().splitlines() if line]
    v = verify(records, Keyring([engine.ledger.signer.public]), unit_id=UNIT, require_seal=True)
    assert v.head_seq == engine.ledger.head[0] and v.sealed
    assert len(screens.checked) >= 15
