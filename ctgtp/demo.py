"""``ctgtp demo``: the main job end to end on embedded defaults, printing what happened.

1. A QA approver's key publishes (signs) the CAR-T master batch record and the specification.
2. A production unit's edge agent is set up; a server starts on 127.0.0.1 and enrols the unit.
3. Operators run the whole autologous CAR-T batch from the signed MBR, with e-signatures and a
   second-person verification on critical steps; a wrong-patient scan is refused (hard stop,
   recorded with a deviation) and an operator raises a deviation.
4. The unit syncs its signed ledger to the server over HTTP (verified, stored once, receipted).
5. The batch is evaluated against the harmonised specification for EU, US and UK.
6. The ledger is exported and verified offline as an auditor would.

Everything is written to ``demo-output/``; everything started is stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx

from ebr_core.document import load_yaml, sign_document
from ebr_core.keys import UnitSigner
from ebr_core.spec import evaluate, parse_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "edge" / "examples"
SPECS = Path(__file__).resolve().parents[1] / "ebr_core" / "spec" / "examples"
COI = "&/CHA999926ABC123"
WRONG_COI = "&/CHA999926XYZ789"
GS = "\x1d"
DEMO_ADMIN = "demo-admin"
PW = {"op.alice": "alice-demo-pass", "op.bob": "bob-demo-pass", "op.chen": "chen-demo-pass"}


def _say(msg: str) -> None:
    click.echo(msg)


class DemoClock:
    """Operator actions a minute apart, starting now (the demo compresses a two-week batch)."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=60)
        return self.t


def _run_batch(engine: Any, batch: str) -> list[str]:
    """Scripted operator input for the whole MBR; returns what was refused."""
    from edge.engine import EngineRefusal

    refused: list[str] = []

    def sign(user: str, meaning: str = "performed") -> None:
        engine.sign(batch, PW[user], meaning, user)

    engine.start_batch(batch, COI, "op.alice", PW["op.alice"])
    try:
        engine.scan(batch, WRONG_COI, "op.alice")
    except EngineRefusal as e:
        refused.append(str(e))
    engine.scan(batch, COI, "op.alice")
    sign("op.alice")
    sign("op.bob", "verified")
    engine.record_value(batch, "apheresis_volume", "220", "mL", "op.alice")
    sign("op.alice")
    engine.scan(batch, "010950600013437617271231" + "21CART-0001", "op.alice")
    engine.scan(batch, "8004UNIT-0001", "op.alice")
    sign("op.alice")
    engine.scan(batch, "010950600013435210TM2611", "op.alice")
    engine.scan(batch, "010950600013436910IL2-0042", "op.alice")
    sign("op.alice")
    engine.scan(batch, "010950600013438310ACT-7731", "op.alice")
    engine.scan(batch, COI, "op.alice")
    sign("op.alice")
    sign("op.chen", "verified")
    engine.scan(batch, "010950600013439010LV-19-0007", "op.alice")
    engine.record_value(batch, "moi", "3", "1", "op.alice")
    sign("op.alice")
    sign("op.chen", "verified")
    engine.record_value(batch, "expansion_days", "9", "d", "op.alice")
    sign("op.alice")
    engine.record_value(batch, "viable_cell_density", "2.1", "10*6/mL", "op.alice")
    engine.record_value(batch, "viability", "91.5", "%", "op.alice")
    sign("op.alice")
    for name, value, unit in (
        ("viable_per_ml", "25000000", "/mL"),
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
    engine.scan(batch, "01095060001343451725123121BAG1" + GS + "251" + COI, "op.alice")
    sign("op.alice")
    sign("op.chen", "verified")
    engine.record_value(batch, "end_temperature", "-90", "Cel", "op.alice")
    sign("op.alice")
    engine.record_value(batch, "qc_samples_taken", "5", "1", "op.alice")
    sign("op.alice")
    return refused


def _start_server(data: Path) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    from server.app import create_app
    from server.pgcluster import free_port
    from server.settings import Settings

    settings = Settings(
        database_url=f"sqlite:///{data / 'server.db'}",
        data_dir=data,
        admin_token=DEMO_ADMIN,
    )
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    )
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    while not srv.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", srv, t


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
)
def demo(out_dir: Path) -> None:
    """Run the end-to-end demonstration."""
    from ebr_core.keys import PublicKey
    from edge.agent import init_home, open_agent
    from edge.export import export_ledger
    from edge.sync import SyncClient

    started = time.monotonic()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work = out_dir / "work"
    work.mkdir(parents=True)
    clock = DemoClock()

    qa = UnitSigner.generate("qa.approver")
    (work / "qa.approver.pub").write_bytes(qa.public.to_json())
    mbr_content = load_yaml((EXAMPLES / "car_t_mbr.yaml").read_text())
    mbr_doc = sign_document(
        mbr_content,
        doc_type="mbr",
        doc_id=mbr_content["mbr_id"],
        version=str(mbr_content["version"]),
        signer=qa,
        signed_at=clock(),
    )
    (work / "mbr.signed.json").write_bytes(mbr_doc.to_bytes())
    spec_content = load_yaml((SPECS / "cd19_commercial.yaml").read_text())
    spec_doc = sign_document(
        spec_content,
        doc_type="spec",
        doc_id=spec_content["spec_id"],
        version=str(spec_content["version"]),
        signer=qa,
        signed_at=clock(),
    )
    (work / "spec.signed.json").write_bytes(spec_doc.to_bytes())
    _say(
        f"1. QA approver published MBR {mbr_doc.doc_id} v{mbr_doc.version} and specification "
        f"{spec_doc.doc_id} v{spec_doc.version} (Ed25519 key {qa.key_id})"
    )

    home = work / "edge-home"
    init_home(
        home,
        unit_id="UNIT-DEMO-01",
        mbr=work / "mbr.signed.json",
        publisher_key=work / "qa.approver.pub",
        users=EXAMPLES / "users.yaml",
        materials=EXAMPLES / "materials.yaml",
    )
    url, srv, thread = _start_server(work / "server")
    try:
        httpx.post(
            url + "/admin/units",
            headers={"Authorization": f"Bearer {DEMO_ADMIN}"},
            json={
                "site_id": "HOSPITAL-A",
                "unit_id": "UNIT-DEMO-01",
                "public_key": (home / "unit.pub").read_text(),
            },
        ).raise_for_status()
        _say(f"2. edge agent for unit UNIT-DEMO-01 ready; server on {url}; unit enrolled")

        agent = open_agent(home, clock)
        batch = "B-2026-0042"
        refused = _run_batch(agent.engine, batch)
        st = agent.engine.state(batch)
        _say(
            f"3. batch {batch} for COI {st.coi}: {len(st.completed_steps)} steps completed, "
            f"{len(st.signatures)} e-signatures, status {st.status}"
        )
        for r in refused:
            _say(f"   refused: {r}")
        for d in st.deviations.values():
            _say(f"   deviation {d.deviation_id} ({d.severity}): {d.reason}")

        server_key = PublicKey.from_bytes(httpx.get(url + "/server-key").content)
        report = SyncClient(agent.ledger, url, server_key=server_key).sync_once()
        info = httpx.get(
            url + "/admin/units/UNIT-DEMO-01", headers={"Authorization": f"Bearer {DEMO_ADMIN}"}
        ).json()
        _say(
            f"4. synced {report.pushed} events in {report.segments} signed segments; server "
            f"holds {info['events']} events, head {info['head_hash'][:16]}… (receipts verified)"
        )

        results = load_yaml((SPECS / "results_example.yaml").read_text())
        results["dose"] = {
            "value": agent.engine.state(batch).values["formulation/harvest/dose:dose"]["detail"][
                "cells_to_infuse"
            ],
            "unit": "1",
        }
        spec = parse_spec(spec_content)
        dispositions: dict[str, Any] = {}
        for j in ("EU", "US", "UK"):
            ev = evaluate(spec, results, j)
            pending = [v.attribute for v in ev.verdicts if v.status == "pending"]
            dispositions[j] = {
                "disposition": ev.disposition,
                "pending": pending,
                "failed": [v.attribute for v in ev.failed()],
                "evaluation_hash": ev.hash(),
            }
            _say(
                f"5. {j}: {ev.disposition}"
                + (f" (pending after release: {', '.join(pending)})" if pending else "")
            )

        ledger_path = out_dir / "ledger.jsonl"
        v = export_ledger(agent.ledger, ledger_path, out_dir / "unit.pub")
        edge_events = agent.ledger.head[0]
        agent.close()
        audit = subprocess.run(
            [
                sys.executable,
                "-m",
                "ctgtp",
                "verify",
                str(ledger_path),
                "--public-key",
                str(out_dir / "unit.pub"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        _say(
            f"6. exported {ledger_path} ({v.event_count} events, sealed); auditor: "
            f"{audit.stdout.strip()[:90]}…"
        )
        if audit.returncode != 0:
            raise click.ClickException(f"offline verification failed: {audit.stderr}")
        summary = {
            "coi": st.coi,
            "batch_id": batch,
            "unit_id": "UNIT-DEMO-01",
            "edge_events": edge_events,
            "server_events": info["events"],
            "dispositions": dispositions,
            "deviations": {d.deviation_id: d.reason for d in st.deviations.values()},
            "rejected_scans": len(st.scans_rejected),
            "signatures": len(st.signatures),
            "seconds": round(time.monotonic() - started, 1),
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if edge_events != info["events"]:
            raise click.ClickException("the server does not hold every edge event")
    finally:
        srv.should_exit = True
        thread.join(5)
    _say(f"demo finished in {time.monotonic() - started:.1f} s: {out_dir / 'summary.json'}")
