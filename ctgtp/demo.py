"""``ctgtp demo``: the main job end to end on embedded defaults, printing what happened.

1. A QA approver's key publishes (signs) the CAR-T master batch record and the specification.
2. A production unit's edge agent is set up; a server starts on 127.0.0.1 and enrols the unit;
   mosquitto starts, and the station agent (``edge.station``, what ``ctgtp edge run`` runs) with
   a simulated unit: a barcode scanner (``sim://``, reachable by ``ctgtp sim scan``), a cell
   counter on a pseudo-terminal, a camera (frames of rendered labels), a bioreactor publishing
   over MQTT; the station binds their readings to the running batch.
3. Operators run the whole autologous CAR-T batch from the signed MBR through those devices, with
   e-signatures and a second-person verification on critical steps; a wrong-patient scan is
   refused (hard stop, recorded with a deviation) and an operator raises a deviation.  The
   station prints, applies and reconciles the labels (``labels/*.png``).
4. The unit syncs its signed ledger to the server over HTTP (verified, stored once, receipted).
5. QA on the server: results are entered, the deviations closed with a reason, the batch reviewed
   and released per jurisdiction (EU, US, UK and Singapore's HSA) with e-signatures through the
   web API; the batch report (PDF) and the FHIR R5 batch-analysis bundle are exported.
6. The released product travels: hand-offs signed by both parties with bag and shipper scans, the
   cryoshipper log, receipt and infusion at the hospital; the unit syncs again.
7. The ledger is exported and verified offline as an auditor would (chain and custody); one
   witness (``ctgtp witness run``) cosigns the server's transparency log, and the auditor proves
   the unit's last segment is in that witnessed log (``ctgtp verify --log-checkpoint``).  The
   unit's own check of the log (each receipt's inclusion proof, each checkpoint consistent with
   the one it trusts) is printed at each sync.

Everything is written to ``demo-output/``; everything started is stopped.  With ``--serve`` the
station (its kiosk and simulated devices) and the server keep running until Ctrl-C or SIGTERM,
for a second batch by hand.

Over 400 lines because it is a script read top to bottom, in the order of the steps above: each
step is a short function, and splitting the story across modules would hide its order.
"""

from __future__ import annotations

import json
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import httpx
import orjson

from ebr_core.canonical import canonical
from ebr_core.document import load_yaml, sign_document
from ebr_core.keys import UnitSigner

EXAMPLES = Path(__file__).resolve().parents[1] / "edge" / "examples"
# The newest example MBR (version 4: counts as UCUM annotations, {cells}/mL ...).
MBR_FILE = "car_t_mbr_v4.yaml"
SPECS = Path(__file__).resolve().parents[1] / "ebr_core" / "spec" / "examples"
COI = "&/CHA999926ABC123"
WRONG_COI = "&/CHA999926XYZ789"
DIN = "=A99992612345600"
GTIN_BAG = "09506000134345"
GS = "\x1d"
# The demo server's bootstrap admin token: random per run (the server refuses one shorter than 32
# characters).
DEMO_ADMIN = secrets.token_urlsafe(32)
UNIT = "UNIT-DEMO-01"
WITNESS = "witness.demo/w1"  # the demo's one witness of the server's transparency log
WITNESS_INTERVAL_S = 10.0  # with --serve, the witness looks at the log this often
SERVE_READING_S = 5.0  # with --serve, the bioreactor reports this often
SITE = "HOSPITAL-A"
PW = {"op.alice": "alice-demo-pass", "op.bob": "bob-demo-pass", "op.chen": "chen-demo-pass"}
QA_PW = "Demo-Release-2026!"  # DEMO ONLY: the QA people created on the demo server
# DEMO ONLY: the password the administrator gives them, which each changes to QA_PW before
# anything else (a password an administrator set cannot sign).
QA_TEMPORARY = "Demo-Temporary-2026!"
QA = {
    "qa.gina": ("Gina Global", "qa_approver", "*"),
    "qa.rita": ("Rita Reviewer", "qa_reviewer", SITE),
    "qa.paul": ("Paul Approver", "qa_approver", SITE),
}


def _say(msg: str) -> None:
    click.echo(msg)


class DemoClock:
    """The unit's clock: real time, never repeating a reading.  It once ran a minute ahead per
    action, so the batch report showed the EU release signed before the batch started; the
    server now flags a unit clock ahead of its own (``clock.ahead``) and refuses a signature
    earlier than the events it signs, so the demo's unit and server keep the same time."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def __call__(self) -> datetime:
        self.t = max(datetime.now(UTC), self.t + timedelta(microseconds=1))
        return self.t


def _station_toml(counter_port: str, broker_port: int, server: str | None) -> str:
    """The demo unit's station file: its scanner a simulated ``sim://`` one that ``ctgtp sim
    scan`` can reach from a shell, the cell counter on a pseudo-terminal, the camera fed frames
    by the demo, the bioreactor over mosquitto; the kiosk on a free loopback port."""
    sync = f'[server]\nurl = "{server}"\nkey = "server.pub"\ninterval_s = 5\n' if server else ""
    return (
        f'unit_id = "{UNIT}"\n\n'
        f'[devices.scanner]\nprofile = "scanner_serial_generic"\n'
        f'port = "sim://scanner/{UNIT}?remote=1"\n\n'
        f'[devices.cell_counter]\nprofile = "cell_counter_cc1"\nport = "{counter_port}"\n\n'
        f'[devices.camera]\nprofile = "camera_scanner"\ncamera = "sim://camera"\n\n'
        f'[devices.bioreactor]\nprofile = "bioreactor_cartridge"\n'
        f'broker = "mqtt://127.0.0.1:{broker_port}"\n\n'
        f"{sync}"
        '[kiosk]\nbind = "127.0.0.1:0"\n\n[clock]\nleap_s = 60\n'
    )


class SimulatedUnit:
    """The simulated production unit around the station agent (``edge.station``, the code
    ``ctgtp edge run`` runs): the demo pulls the scanner's trigger (``sim://``), writes the cell
    counter's results to its pseudo-terminal, holds labels under the camera and runs the
    bioreactor; the agent reads them through the transports and binds readings to the running
    batch.  The demo takes the scans the agent hands on, as the kiosk does for an operator."""

    def __init__(self, station: Any, counter: Any, broker_port: int, batch: str) -> None:
        from firmware_sim.bioreactor import BioreactorSim
        from firmware_sim.devices import CellCounterSim

        self.station, self.counter, self.batch = station, counter, batch
        self.engine = station.engine
        self.scans: queue.Queue[str] = queue.Queue()
        self.kiosk_sink = station.swap_scan_sink(self.scans.put)
        self.counter_sim = CellCounterSim()
        self.bioreactor = BioreactorSim("127.0.0.1", broker_port, UNIT)
        self.devices = {"scanner": 0, "camera": 0, "cell_counter": 0, "bioreactor": 0}

    def scan(self, data: str, user: str, symbology: str = "]d2") -> str:
        """The operator pulls the trigger: the scanner sends bytes over its serial line."""
        from firmware_sim.urlhandler import protocol_sim

        protocol_sim.scan(UNIT, data, symbology)
        raw = self.scans.get(timeout=10)
        self.devices["scanner"] += 1
        return str(self.engine.scan(self.batch, raw, user))

    def camera_scan(self, hri: str, user: str) -> str:
        """The label held under the station camera: frames until it is read once."""
        from firmware_sim.camera import FrameStyle, frame, gs1_datamatrix

        camera = self.station.device("camera")
        label = gs1_datamatrix(hri)
        for i in range(5):
            if camera.feed(frame(label, FrameStyle(angle=2, noise=3, seed=i))):
                self.devices["camera"] += 1
                camera.feed(frame(None))  # the label leaves the view
                return str(self.engine.scan(self.batch, self.scans.get(timeout=10), user))
        raise click.ClickException("the camera did not read the label")

    def count_cells(self, sample: str, total: int, viable: int) -> None:
        before = self._readings("cell_count")
        self.counter.write(self.counter_sim.frame(sample, total, viable))
        self._wait(lambda: self._readings("cell_count") > before)
        self.devices["cell_counter"] += 1

    def bioreactor_run(self, n: int) -> None:
        before = self._readings(None)
        self.bioreactor.state("expansion")
        for i in range(n):
            self.bioreactor.reading("temperature", f"37.{i % 3}", "Cel")
            self.bioreactor.reading("ph", f"7.{2 + i % 2}", "[pH]")
        self.bioreactor.wait_published()
        self._wait(lambda: self._readings(None) >= before + 2 * n)
        self.devices["bioreactor"] += 2 * n

    def _readings(self, channel: str | None) -> int:
        return sum(
            1
            for e in self.engine.ledger.batch_events(self.batch, telemetry=True)
            if (channel is None or e.payload.get("channel") == channel)
        )

    @staticmethod
    def _wait(cond: Any, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise click.ClickException("a simulated device did not deliver in time")
            time.sleep(0.02)

    def hand_back(self) -> None:
        """The scripted batch is done: the scanner's codes go to the kiosk again."""
        self.station.set_scan_sink(self.kiosk_sink)

    def close(self) -> None:
        self.bioreactor.close()


def _run_batch(station: SimulatedUnit) -> list[str]:
    """Scripted operator input for the whole MBR; returns what was refused."""
    from edge.custody import Custody
    from edge.engine import EngineRefusal

    engine, batch = station.engine, station.batch
    refused: list[str] = []

    def sign(user: str, meaning: str = "performed") -> None:
        engine.sign(batch, PW[user], meaning, user)

    engine.start_batch(batch, COI, "op.alice", PW["op.alice"])
    try:
        station.scan(WRONG_COI, "op.alice", "]C0")
    except EngineRefusal as e:
        refused.append(str(e))
    station.scan(COI, "op.alice", "]C0")
    # The apheresis bag arrives from the collection centre: scanned and signed by both sides.
    Custody(engine).handoff(
        batch,
        from_party="APHERESIS-CENTRE-1",
        to_party=UNIT,
        place=f"{UNIT} goods-in",
        bag_scan="]C0" + COI,
        shipper_scan=None,
        giver=("op.bob", PW["op.bob"]),
        receiver=("op.alice", PW["op.alice"]),
    )
    sign("op.alice")
    sign("op.bob", "verified")
    engine.record_value(batch, "apheresis_volume", "220", "mL", "op.alice")
    sign("op.alice")
    station.camera_scan(f"(01)09506000134376(17){_expiry(365)}(21)CART-0001", "op.alice")
    station.scan("8004UNIT-0001", "op.alice")
    sign("op.alice")
    station.scan("010950600013435210TM2611", "op.alice")
    station.scan("010950600013436910IL2-0042", "op.alice")
    sign("op.alice")
    station.scan("010950600013438310ACT-7731", "op.alice")
    station.scan(COI, "op.alice", "]C0")
    sign("op.alice")
    sign("op.chen", "verified")
    station.scan("010950600013439010LV-19-0007", "op.alice")
    engine.record_value(batch, "moi", "3", "{TU}/{cell}", "op.alice")
    sign("op.alice")
    sign("op.chen", "verified")
    station.bioreactor_run(12)  # expansion telemetry, bound to the expansion step
    engine.record_value(batch, "expansion_days", "9", "d", "op.alice")
    sign("op.alice")
    station.count_cells("IPC-D9", 2_282_609, 2_100_000)
    engine.record_value(batch, "viable_cell_density", "2.1", "10*6{cells}/mL", "op.alice")
    engine.record_value(batch, "viability", "91.5", "%", "op.alice")
    sign("op.alice")
    station.count_cells("HARVEST-1", 27_322_405, 25_000_000)
    for name, value, unit in (
        ("viable_per_ml", "25000000", "{cells}/mL"),
        ("harvest_volume", "60", "mL"),
        ("car_percent", "40", "%"),
        ("patient_weight", "72.5", "kg"),
    ):
        engine.record_value(batch, name, value, unit, "op.alice")
    sign("op.alice")
    engine.calculate(batch, "op.alice")
    sign("op.alice")
    sign("op.chen", "verified")
    engine.raise_deviation(
        batch, "final bag label printed twice; spare label destroyed", "op.alice"
    )
    # The bag carries the patient's COI (AI 251) and an expiry ahead of the unit's date.
    station.scan(f"01{GTIN_BAG}17{_expiry(14)}21BAG1{GS}251{COI}", "op.alice")
    sign("op.alice")
    sign("op.chen", "verified")
    engine.record_value(batch, "end_temperature", "-90", "Cel", "op.alice")
    sign("op.alice")
    engine.record_value(batch, "qc_samples_taken", "5", "{samples}", "op.alice")
    sign("op.alice")
    return refused


def _expiry(days: int) -> str:
    """A GS1 date (YYMMDD) ``days`` after today: the demo runs on the real clock, and the engine
    refuses an item whose expiry has passed."""
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%y%m%d")


def _labels(engine: Any, batch: str, out: Path) -> list[str]:
    """Print the three labels (PNG, and PDF for the printer), apply them, destroy the spare
    product label (the deviation), and reconcile."""
    from datetime import date

    from edge.custody import Custody
    from edge.labels import LabelData, pdf, png, sscc

    c = Custody(engine)
    out.mkdir(parents=True, exist_ok=True)
    labels = [
        (LabelData("apheresis_bag", COI, DIN, product="Apheresis, autologous"), 1),
        (LabelData("product_bag", COI, DIN, GTIN_BAG, "B-2026-0042", date(2027, 5, 31), "BAG1",
                   "CD19 CAR-T cells, autologous"), 2),
        (LabelData("shipper", COI, sscc=sscc("9506000", 42)), 1),
    ]  # fmt: skip
    for d, n in labels:
        (out / f"{d.kind}.png").write_bytes(png(d))
        (out / f"{d.kind}.pdf").write_bytes(pdf([d] * n))
        content = {"coi": COI, "serial": d.serial, "gtin": d.gtin, "sscc": d.sscc}
        c.labels_printed(batch, d.kind, n, "op.alice", content)
        c.labels_applied(batch, d.kind, 1, "op.alice")
    c.labels_destroyed(batch, "product_bag", 1, "spare label, printed twice", "op.alice")
    r = c.reconcile_labels(batch, "op.bob")
    if not r.balanced:
        raise click.ClickException(f"labels do not reconcile: {r}")
    return sorted(p.name for p in out.glob("*.png"))


def _witness_key(work: Path) -> str:
    """The demo witness's key (``ctgtp keys new``) and its cosignature verifier key, which the
    server is configured with before it starts (``log_witnesses``)."""
    from ebr_core.tlog import Cosigner

    wdir = work / "witness-key"
    _ctgtp("keys", "new", "demo-witness", "--out", str(wdir))
    signer = UnitSigner.from_pem((wdir / "demo-witness.key").read_bytes(), "demo-witness")
    return Cosigner(WITNESS, signer).verifier.vkey()


def _start_server(data: Path, witness_vkey: str) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    from server.app import create_app
    from server.pgcluster import free_port
    from server.settings import Settings

    settings = Settings(
        database_url=f"sqlite:///{data / 'server.db'}",
        data_dir=data,
        admin_token=DEMO_ADMIN,
        log_witnesses=[witness_vkey],  # the demo's witness pushes its cosignatures here
        log_witness_quorum=1,
    )
    # The deploy step (``ctgtp server migrate``) before the server starts, where the server has
    # one (a server that migrates nothing itself refuses an empty database).
    from server import db as server_db

    migrate = getattr(server_db, "migrate", None)
    if migrate is not None:
        data.mkdir(parents=True, exist_ok=True)
        migrate(server_db.make_engine(settings.database_url))
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    )
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    while not srv.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", srv, t


def _ok(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        raise click.ClickException(
            f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
        )
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r


def _session(url: str, uid: str) -> httpx.Client:
    tok = _ok(httpx.post(url + "/v1/auth/token", json={"user_id": uid, "password": QA_PW}))
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tok['token']}"})


def _chart_limits(url: str, batch: str) -> dict[str, str]:
    """What each channel's chart says of its limits (the zoom route over the whole batch): the
    MBR's telemetry limits, which the unit recorded in batch.started, with their source."""
    with _session(url, "qa.rita") as c:
        channels = _ok(c.get(f"/v1/batches/{batch}/telemetry"))["channels"]
        out = {}
        for name, ch in channels.items():
            last = datetime.fromisoformat(ch["last_at"].replace("Z", "+00:00"))
            window = {"from": ch["first_at"], "to": (last + timedelta(minutes=1)).isoformat()}
            w = _ok(c.get(f"/v1/batches/{batch}/telemetry/{name}", params=window))
            out[name] = str(w["limits_note"])
    return out


def _qa_release(url: str, batch: str, dose: str, out_dir: Path) -> dict[str, Any]:
    """QA on the server through the web API: people, specification, results, deviations closed,
    review and release per jurisdiction with e-signatures, report and FHIR export."""
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {DEMO_ADMIN}"})
    for uid, (name, role, site) in QA.items():
        _ok(admin.post("/v1/people", json={
            "user_id": uid, "printed_name": name, "password": QA_TEMPORARY,
            "roles": [{"role": role, "site_id": site}], "reason": "demo QA staff"}))  # fmt: skip
        _ok(httpx.post(url + "/v1/auth/password", json={
            "user_id": uid, "current_password": QA_TEMPORARY, "new_password": QA_PW}))  # fmt: skip

    gina, rita, paul = _session(url, "qa.gina"), _session(url, "qa.rita"), _session(url, "qa.paul")
    spec = orjson.loads(canonical(load_yaml((SPECS / "cd19_commercial.yaml").read_text())))
    _ok(gina.post("/v1/specs", json={"content": spec, "reason": "commercial release spec"}))
    results = orjson.loads(canonical(load_yaml((SPECS / "results_example.yaml").read_text())))
    results["dose"] = {"value": dose, "unit": "1"}
    _ok(rita.post(f"/v1/batches/{batch}/results", json={
        "spec_id": spec["spec_id"], "spec_version": str(spec["version"]), "results": results,
        "reason": "QC release testing results"}))  # fmt: skip
    view = _ok(rita.get(f"/v1/batches/{batch}"))
    q = _ok(rita.get("/v1/review/queue"))
    _say(f"5. QA queue at {SITE}: {q['total']} batch(es); {batch} shows "
         f"{view['exceptions']['rejected_scans']} rejected scan, "
         f"{view['exceptions']['open_deviations']} open deviations")  # fmt: skip
    for d in view["deviations"]:
        if d["open"]:
            reason = (
                "wrong-patient bag refused by the scan; the correct bag was scanned; no impact"
                if "wrong patient" in d["reason"]
                else "spare label destroyed and reconciled; no impact"
            )
            # A closure is an e-signature: Rita's user id and password again, meaning "closed".
            _ok(rita.post(f"/v1/batches/{batch}/deviations/{d['deviation_id']}/close",
                          json={"user_id": "qa.rita", "password": QA_PW, "meaning": "closed",
                                "reason": reason}))  # fmt: skip
            _say(f"   closed {d['deviation_id']}: {reason}")
    view = _ok(rita.get(f"/v1/batches/{batch}"))
    dispositions: dict[str, Any] = {}
    for j in ("EU", "US", "UK", "SG"):
        for who, meaning, uid in ((rita, "reviewed", "qa.rita"), (paul, "released", "qa.paul")):
            r = _ok(who.post(f"/v1/batches/{batch}/signatures", json={
                "user_id": uid, "password": QA_PW, "meaning": meaning,
                "reason": f"{meaning} against {spec['spec_id']} for {j}", "jurisdiction": j,
                "record_hash": view["record_hash"],
                "evaluation_hash": view["cqa"][j]["evaluation_hash"]}))  # fmt: skip
        final = _ok(paul.get(f"/v1/batches/{batch}"))
        d = [x for x in final["dispositions"] if x["jurisdiction"] == j][-1]
        dispositions[j] = {
            "disposition": d["disposition"],
            "pending": d["pending"],
            "signed_by": d["signature"]["printed_name"],
            "signed_at": r["signed_at"],
            "evaluation_hash": view["cqa"][j]["evaluation_hash"],
        }
        pend = f" (pending after release: {', '.join(d['pending'])})" if d["pending"] else ""
        _say(f"   {j}: {d['disposition']}{pend}, e-signed by {d['signature']['printed_name']}")
    (out_dir / "batch-report.pdf").write_bytes(
        _ok(paul.get(f"/v1/batches/{batch}/report.pdf")).content
    )
    coa = _ok(paul.get(f"/v1/batches/{batch}/coa.pdf", params={"jurisdiction": "EU"}))
    (out_dir / "coa-EU.pdf").write_bytes(coa.content)
    fhir = _ok(paul.get(f"/v1/batches/{batch}/fhir", params={"jurisdiction": "EU"}))
    (out_dir / "fhir-bundle.json").write_bytes(fhir.content)
    _say("   exported batch-report.pdf, coa-EU.pdf and fhir-bundle.json (FHIR R5, validated)")
    return dispositions


def _travel(engine: Any, batch: str) -> dict[str, Any]:
    """Hand-offs from the unit to the courier and to the infusion site, the shipper's temperature
    log, receipt and infusion: each scanned and signed."""
    from ebr_core.custody import parse_logger_csv
    from edge.custody import Custody
    from firmware_sim.shipper import profile, to_csv

    c = Custody(engine)
    bag, shipper = "]C0" + COI, "]C0" + COI
    a, b, ch = (("op.alice", PW["op.alice"]), ("op.bob", PW["op.bob"]),
                ("op.chen", PW["op.chen"]))  # fmt: skip
    c.handoff(batch, from_party=UNIT, to_party="COURIER-7", place=f"{UNIT} dispatch",
              bag_scan=bag, shipper_scan=shipper, giver=a, receiver=b)  # fmt: skip
    log = to_csv(profile(engine.clock(), timedelta(hours=6), timedelta(minutes=5)))
    found = c.shipper_log(
        batch,
        list(parse_logger_csv(log)),
        shipper="SHP-0042",
        limit_c=Decimal(-150),
        allowed=timedelta(minutes=5),
        user_id="op.bob",
    )
    c.handoff(batch, from_party="COURIER-7", to_party="INFUSION-SITE-1", place="cell therapy unit",
              bag_scan=bag, shipper_scan=shipper, giver=b, receiver=ch)  # fmt: skip
    c.receive(batch, site="INFUSION-SITE-1", bag_scan=bag, receiver=ch)
    c.infuse(batch, site="INFUSION-SITE-1", bag_scan=bag, clinician=a)
    return {"hand_offs": 3, "temperature_excursions": len(found), "infused": True}


def _log_check(report: Any) -> str:
    """The unit's check of the server's transparency log in a sync (edge.logwatch)."""
    if report.alerts or not report.log:
        raise click.ClickException(f"the unit's check of the server's log: {report.log}")
    return "   unit's log check: " + str(report.log).removeprefix("log: ")


def _witness_and_prove(
    url: str, work: Path, out_dir: Path, ledger_path: Path, index: int | None, witness_vkey: str
) -> dict[str, Any]:
    """One witness (``ctgtp witness run --push``, its key from ``ctgtp keys new``, its state
    in ``witness/``) cosigns the server's log and pushes its cosignature to the server; the
    auditor then proves offline, with the proof file the server gives for the unit's last
    segment (its checkpoint carries the cosignatures the server collected), that the exported
    ledger's segment is in the witnessed log (``ctgtp verify --log-checkpoint``)."""
    from ebr_core.tlog import TlogProof

    if index is None:
        raise click.ClickException("the server's receipts named no log leaf for the segments")
    (out_dir / "witness.vkey").write_text(witness_vkey + "\n")
    (out_dir / "log.vkey").write_text(_ok(httpx.get(url + "/v1/log/vkey")).text)
    # The witness's look (cosign, push), then the server's proof file: the server serves the
    # checkpoint with the cosignatures it collected.  If the log grew in between (the
    # station's sync), the witness looks again.
    for _ in range(5):
        looked = _ctgtp(*_witness_args(url, work, out_dir), "--once")
        first = looked.splitlines()[0] if looked else looked
        raw = _ok(httpx.get(f"{url}/v1/log/proof/{index}.tlog-proof")).content
        proof = TlogProof.parse(raw)
        if any(sig.name == WITNESS for sig in proof.checkpoint.signatures):
            break
    _say(f"   witness {WITNESS}: {first}")
    (out_dir / "segment.tlog-proof").write_bytes(raw)
    verdict = _ctgtp("verify", str(ledger_path), "--public-key", str(out_dir / "unit.pub"),
                     "--log-checkpoint", str(out_dir / "segment.tlog-proof"), "--log-key",
                     str(out_dir / "log.vkey"), "--witness-key",
                     str(out_dir / "witness.vkey")).splitlines()[-1]  # fmt: skip
    _say(f"   auditor, log: {verdict}")
    server = _ok(httpx.get(url + "/v1/log/witnessed"))  # what the server says it collected
    return {"witness": first, "auditor": verdict, "witnessed": "UNWITNESSED" not in verdict,
            "server_witnessed": server}  # fmt: skip


def _witness_args(url: str, work: Path, out_dir: Path) -> list[str]:
    """``ctgtp witness run --push`` for the demo's witness (without --once or --interval)."""
    return ["witness", "run", "--log", url + "/v1/log", "--log-key", str(out_dir / "log.vkey"),
            "--key", str(work / "witness-key" / "demo-witness.key"), "--name", WITNESS,
            "--state", str(out_dir / "witness"), "--push"]  # fmt: skip


def _ctgtp(*args: str) -> str:
    """A ``ctgtp`` command in its own process, as a person would run it; its stdout."""
    r = subprocess.run([sys.executable, "-m", "ctgtp", *args], capture_output=True, text=True,
                       check=False)  # fmt: skip
    if r.returncode != 0:
        raise click.ClickException(f"ctgtp {args[0]} {args[1]}: {r.stderr.strip() or r.stdout}")
    return r.stdout.strip()


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
)
@click.option(
    "--serve",
    is_flag=True,
    help="After the demo, keep the station (its simulated devices and kiosk) and the server "
    "running until Ctrl-C or SIGTERM, for a second batch by hand.",
)
@click.option(
    "--urls-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='With --serve: write {"kiosk": URL, "console": URL} there as JSON.',
)
def demo(out_dir: Path, serve: bool, urls_file: Path | None) -> None:
    """Run the end-to-end demonstration."""
    from ebr_core.keys import PublicKey
    from edge.agent import init_home, open_agent
    from edge.export import export_ledger
    from edge.station.agent import StationAgent
    from edge.station.config import load_station
    from edge.sync import SyncClient
    from firmware_sim.broker import Broker
    from firmware_sim.pty import PtyDevice
    from firmware_sim.urlhandler import register

    if urls_file is not None and not serve:
        raise click.UsageError("--urls-file goes with --serve")
    started = time.monotonic()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work = out_dir / "work"
    work.mkdir(parents=True)
    clock = DemoClock()

    qa = UnitSigner.generate("qa.approver")
    (work / "qa.approver.pub").write_bytes(qa.public.to_json())
    mbr_content = load_yaml((EXAMPLES / MBR_FILE).read_text())
    mbr_doc = sign_document(
        mbr_content,
        doc_type="mbr",
        doc_id=mbr_content["mbr_id"],
        version=str(mbr_content["version"]),
        signer=qa,
        signed_at=clock(),
    )
    (work / "mbr.signed.json").write_bytes(mbr_doc.to_bytes())
    _say(f"1. QA approver published MBR {mbr_doc.doc_id} v{mbr_doc.version} (Ed25519 key "
         f"{qa.key_id})")  # fmt: skip

    home = work / "edge-home"
    init_home(
        home,
        unit_id=UNIT,
        mbr=work / "mbr.signed.json",
        publisher_key=work / "qa.approver.pub",
        users=EXAMPLES / "users.yaml",
        materials=EXAMPLES / "materials.yaml",
    )
    witness_vkey = _witness_key(work)
    url, srv, thread = _start_server(work / "server", witness_vkey)
    broker = Broker().start()
    counter = PtyDevice()
    register()  # sim:// ports: the demo's scanner
    station: Any = None
    unit: SimulatedUnit | None = None
    try:
        _ok(httpx.post(
            url + "/admin/units",
            headers={"Authorization": f"Bearer {DEMO_ADMIN}"},
            json={"site_id": SITE, "unit_id": UNIT, "public_key": (home / "unit.pub").read_text()},
        ))  # fmt: skip
        (home / "server.pub").write_bytes(httpx.get(url + "/server-key").content)
        # The station file says where the simulated devices are (ctgtp sim scan finds the
        # scanner by the unit's id).
        (home / "station.toml").write_text(_station_toml(counter.port, broker.port, url))
        agent = open_agent(home, clock, clock_leap_s=60)  # a long-running station watches its clock
        station = StationAgent(agent, load_station(home / "station.toml"), clock=clock)
        # The scripted batch syncs by hand (step 4); sync and the kiosk start with --serve.
        station.start(kiosk=False, sync=False)
        down = station.wait_connected(10)
        if down:
            raise click.ClickException(f"simulated devices did not connect: {down}")
        batch = "B-2026-0042"
        unit = SimulatedUnit(station, counter, broker.port, batch)
        _say(f"2. server on {url} (unit {UNIT} enrolled for {SITE}); mosquitto on port "
             f"{broker.port}; station agent {home / 'station.toml'}: simulated scanner "
             f"sim://scanner/{UNIT}, cell counter {counter.port}, camera, bioreactor on "
             "MQTT")  # fmt: skip

        refused = _run_batch(unit)
        label_files = _labels(agent.engine, batch, out_dir / "labels")
        st = agent.engine.state(batch)
        _say(
            f"3. batch {batch} for COI {st.coi}: {len(st.completed_steps)} steps completed, "
            f"{len(st.signatures)} e-signatures, "
            f"{agent.engine.telemetry(batch).readings} instrument readings, "
            f"status {st.status}; devices: "
            + ", ".join(f"{k} {v}" for k, v in unit.devices.items())
        )
        for r in refused:
            _say(f"   refused: {r}")
        for d in st.deviations.values():
            _say(f"   deviation {d.deviation_id} ({d.severity}): {d.reason}")
        _say(f"   labels printed, applied and reconciled: {', '.join(label_files)}")

        server_key = PublicKey.from_bytes((home / "server.pub").read_bytes())
        sync = SyncClient(agent.ledger, url, server_key=server_key)
        report = sync.sync_once()
        _say(f"4. synced {report.pushed} events in {report.segments} signed segments "
             "(verified by the server, receipts verified by the unit)")  # fmt: skip
        _say(_log_check(report))

        dose = st.values["formulation/harvest/dose:dose"]["detail"]["cells_to_infuse"]
        dispositions = _qa_release(url, batch, dose, out_dir)
        chart_limits = _chart_limits(url, batch)
        _say("   telemetry charts draw the limits the record holds: " + "; ".join(
            f"{name}: {note}" for name, note in chart_limits.items()
        ))  # fmt: skip

        travel = _travel(agent.engine, batch)
        again = sync.sync_once()
        info = _ok(httpx.get(f"{url}/admin/units/{UNIT}",
                             headers={"Authorization": f"Bearer {DEMO_ADMIN}"}))  # fmt: skip
        timeline = _ok(_session(url, "qa.rita").get(f"/v1/custody/{COI[2:]}"))
        _say(f"6. custody: {travel['hand_offs']} hand-offs scanned and signed by both parties, "
             f"shipper log with {travel['temperature_excursions']} excursions, received and "
             f"infused at {timeline['holder']} (chain closed: {timeline['closed']}); synced "
             f"{again.pushed} more events, server holds {info['events']}")  # fmt: skip
        _say(_log_check(again))
        after = _ok(_session(url, "qa.rita").get(f"/v1/batches/{batch}"))
        standing = [q for q in after["qa_signatures"] if q["applies"]]
        travel["review_state"] = after["review_state"]
        travel["signatures_applying"] = f"{len(standing)}/{len(after['qa_signatures'])}"
        _say(f"   the release stands: batch {after['review_state']}, "
             f"{travel['signatures_applying']} QA signatures apply to the record they signed "
             f"({max((q['travel_since'] or 0 for q in standing), default=0)} travel events "
             "since, which the record hash binds and the decision does not depend on)")  # fmt: skip

        ledger_path = out_dir / "ledger.jsonl"
        v = export_ledger(agent.ledger, ledger_path, out_dir / "unit.pub")
        edge_events = agent.ledger.head[0]
        st = agent.engine.state(batch)
        readings = agent.engine.telemetry(batch).readings
        audit = subprocess.run(
            [sys.executable, "-m", "ctgtp", "verify", str(ledger_path), "--public-key",
             str(out_dir / "unit.pub")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        verdict = audit.stdout.strip()
        _say(
            f"7. exported {ledger_path} ({v.event_count} events, sealed); auditor: "
            f"{verdict[:60]}… {verdict.rsplit(';', 1)[-1].strip()}"
        )
        if audit.returncode != 0:
            raise click.ClickException(f"offline verification failed: {audit.stderr}")
        log_index = again.log_index if again.log_index is not None else report.log_index
        witnessed = _witness_and_prove(url, work, out_dir, ledger_path, log_index, witness_vkey)
        summary = {
            "coi": st.coi,
            "batch_id": batch,
            "unit_id": UNIT,
            "edge_events": edge_events,
            "server_events": info["events"],
            "dispositions": dispositions,
            "deviations": {d.deviation_id: d.reason for d in st.deviations.values()},
            "rejected_scans": len(st.scans_rejected),
            "signatures": len(st.signatures),
            "readings": readings,
            "labels": label_files,
            "chart_limits": chart_limits,
            "custody": {**travel, "holder": timeline["holder"], "closed": timeline["closed"]},
            "log": {
                "unit_checkpoint_size": again.log_size,
                "unit_alerts": again.alerts,
                **witnessed,
            },
            "seconds": round(time.monotonic() - started, 1),
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if edge_events != info["events"]:
            raise click.ClickException("the server does not hold every edge event")
        alerts = _ok(
            httpx.get(f"{url}/admin/alerts", headers={"Authorization": f"Bearer {DEMO_ADMIN}"})
        )
        clock_alerts = [a for a in alerts if a["kind"].startswith("clock.")]
        if clock_alerts:
            raise click.ClickException(f"the unit's and the server's clocks differ: {clock_alerts}")
        _say(f"demo finished in {time.monotonic() - started:.1f} s: {out_dir / 'summary.json'}")
        kept = "kept running below" if serve else "up while the demo ran; --serve keeps it"
        _say(f"QA console: {url}/ ({kept})")
        if serve:
            unit.hand_back()
            _serve(station, unit, url, urls_file, _witness_args(url, work, out_dir), out_dir)
    finally:
        if unit is not None:
            unit.close()
        if station is not None:
            station.stop()
            station.agent.close()
        counter.close()
        broker.stop()
        srv.should_exit = True
        thread.join(5)


def _serve(
    station: Any,
    unit: SimulatedUnit,
    console: str,
    urls_file: Path | None,
    witness: list[str],
    out_dir: Path,
) -> None:
    """Keep the station (its kiosk, devices and background sync) and the server running until
    Ctrl-C or SIGTERM; the bioreactor reports a temperature and a pH every few seconds, so the
    kiosk's devices and telemetry screens are live."""
    import signal

    station.start_kiosk()
    station.start_sync()
    urls = {"kiosk": station.kiosk_url, "console": console}
    if urls_file is not None:
        urls_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = urls_file.with_name(urls_file.name + ".tmp")
        tmp.write_text(json.dumps(urls) + "\n")
        tmp.replace(urls_file)
    _say(f"\nkiosk:   {station.kiosk_url}")
    _say(f"console: {console} (the QA console; the JSON API under {console}/v1, /docs)")
    _say("operators at the kiosk (DEMO ONLY passwords):")
    for uid, pw in PW.items():
        _say(f"  {uid:<9} {pw}")
    _say("QA on the server:")
    for uid, (name, role, _site) in QA.items():
        _say(f"  {uid:<9} {QA_PW}   ({name}, {role})")
    _say(f"scan into the simulated scanner: ctgtp sim scan --unit {UNIT} ']C0{COI}'")
    # The witness goes on cosigning the log while it is served (its lines in witness.log).
    wlog = (out_dir / "witness.log").open("a")
    wproc = subprocess.Popen(
        [sys.executable, "-m", "ctgtp", *witness, "--interval", str(WITNESS_INTERVAL_S)],
        stdout=wlog, stderr=subprocess.STDOUT,
    )  # fmt: skip
    _say(f"witness: {WITNESS} cosigns the log every {WITNESS_INTERVAL_S:g} s "
         f"({out_dir / 'witness.log'})")  # fmt: skip
    _say("serving until Ctrl-C or SIGTERM")
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    n = 0
    try:
        while not stop.wait(SERVE_READING_S):
            n += 1
            unit.bioreactor.reading("temperature", f"37.{n % 3}", "Cel")
            unit.bioreactor.reading("ph", f"7.{2 + n % 2}", "[pH]")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        wproc.terminate()
        try:
            wproc.wait(10)
        except subprocess.TimeoutExpired:
            wproc.kill()
        wlog.close()
    _say("stopping")
