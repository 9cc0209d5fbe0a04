"""The main job end to end, as `make demo` runs it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from fhir.resources.bundle import Bundle
from PIL import Image
from pypdf import PdfReader

from ebr_core.identifiers import parse_scan
from edge.transports.camera import decode_frame


def test_demo_runs_end_to_end_then_serves_its_station(tmp_path: Path) -> None:
    """One run of ``ctgtp demo --serve``: the scripted batch through the station agent, then the
    station and the server kept running (kiosk URL, a scan from ``ctgtp sim scan``) until
    SIGTERM, which it ends with exit 0."""
    out = tmp_path / "demo-output"
    urls_file = tmp_path / "urls.json"
    log = (tmp_path / "demo.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctgtp", "demo", "--out", str(out), "--serve",
         "--urls-file", str(urls_file)],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + 300
        while not urls_file.exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        assert urls_file.exists(), (tmp_path / "demo.log").read_text()
        served(json.loads(urls_file.read_text()))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "demo.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "demo.log").read_text()
    assert "demo finished in" in output and "op.alice" in output and "stopping" in output
    # The unit checked the server's transparency log at each sync: trusted on first use, then
    # a checkpoint consistent with it; one witness cosigned the log; the auditor proved the
    # unit's last segment is in the witnessed log, offline.
    checks = re.findall(r"unit's log check: checkpoint ctgtp-server\.local/log size (\d+) .*", output)
    assert len(checks) == 2, output
    assert "trusted on first use; 1 receipt inclusion proofs verified" in output
    assert f"consistent with size {checks[0]} trusted before" in output
    assert int(checks[1]) > int(checks[0])
    assert re.search(r"witness witness\.demo/w1: cosigned ctgtp-server\.local/log size \d+ ", output)
    assert re.search(
        r"auditor, log: OK log segment\.tlog-proof: segment \(.*unit_id UNIT-DEMO-01\) is leaf "
        r"\d+ of ctgtp-server\.local/log.*; witnessed: cosigned by witness\.demo/w1",
        output,
    ), output
    assert "SECURITY ALERT" not in output
    # Served, the witness went on looking at the growing log (the station's background sync).
    assert "witness: witness.demo/w1 cosigns the log every 10 s" in output
    assert re.search(r"^cosigned ctgtp-server\.local/log size \d+ ", (out / "witness.log").read_text(), re.M)
    s = json.loads((out / "summary.json").read_text())
    assert s["coi"] == "&/CHA999926ABC123" and s["batch_id"] == "B-2026-0042"
    assert s["edge_events"] == s["server_events"] > 90
    assert {j: d["disposition"] for j, d in s["dispositions"].items()} == {
        "EU": "conditional_release",
        "US": "conditional_release",
        "UK": "conditional_release",
        "SG": "conditional_release",
    }
    assert s["dispositions"]["EU"]["signed_by"] == "Paul Approver"
    assert s["rejected_scans"] == 1 and len(s["deviations"]) == 2
    assert s["readings"] >= 26  # bioreactor over MQTT and the cell counter over its pty
    assert s["custody"]["closed"] and s["custody"]["holder"] == "INFUSION-SITE-1"
    # the hand-offs synced after the release leave it standing
    assert s["custody"]["review_state"] == "decided"
    n, total = s["custody"]["signatures_applying"].split("/")
    assert n == total and int(total) >= 8
    assert s["log"]["witnessed"] and s["log"]["unit_alerts"] == []
    assert s["log"]["unit_checkpoint_size"] == int(checks[1])
    assert (out / "witness" / "checkpoint").read_text().count("\n— ") == 2  # log + witness
    # The auditor's proof file is the server's own: its checkpoint carries the cosignature the
    # witness pushed (ctgtp witness run --push), and the server counts it against its quorum.
    assert "\n— witness.demo/w1 " in (out / "segment.tlog-proof").read_text()
    sw = s["log"]["server_witnessed"]
    assert sw["quorum"] == 1 and sw["cosigned_by"] == ["witness.demo/w1"] and sw["size"] > 0
    v = subprocess.run(
        [sys.executable, "-m", "ctgtp", "verify", str(out / "ledger.jsonl"),
         "--public-key", str(out / "unit.pub")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert v.returncode == 0 and f"{s['edge_events']} events" in v.stdout
    assert "custody: 5 events checked" in v.stdout
    text = " ".join((p.extract_text() or "") for p in PdfReader(out / "batch-report.pdf").pages)
    report = " ".join(text.split())
    assert "Paul Approver" in report and "conditional_release" in report.replace(" ", "")
    bundle = Bundle.model_validate_json((out / "fhir-bundle.json").read_bytes())
    assert bundle.entry[0].resource.batch.lotNumber == "B-2026-0042"
    for png in sorted((out / "labels").glob("*.png")):
        raws = decode_frame(np.asarray(Image.open(png).convert("L")))
        assert any(parse_scan(x).coi == s["coi"] for x in raws), png.name
    assert len(list((out / "labels").glob("*.png"))) == 3


def served(urls: dict[str, str]) -> None:
    """The served station: its health over HTTP, every simulated device connected, a scan sent
    from a shell reaching its scanner; the server answering."""
    assert set(urls) == {"kiosk", "console"}
    assert urls["kiosk"].startswith("http://127.0.0.1:")
    h = httpx.get(urls["kiosk"] + "/health", timeout=10).json()
    assert h["unit_id"] == "UNIT-DEMO-01"
    assert {d["name"]: d["connected"] for d in h["devices"]} == {
        "scanner": True,
        "cell_counter": True,
        "camera": True,
        "bioreactor": True,
    }
    r = subprocess.run(
        [sys.executable, "-m", "ctgtp", "sim", "scan", "--unit", "UNIT-DEMO-01",
         "]C0&/CHA999926ABC123"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    end = time.monotonic() + 10
    scanner: dict[str, object] = {}
    while time.monotonic() < end:
        h = httpx.get(urls["kiosk"] + "/health", timeout=10).json()
        scanner = next(d for d in h["devices"] if d["name"] == "scanner")
        if scanner["last_reading"] == "scan ]C0&/CHA999926ABC123":
            break
        time.sleep(0.1)
    assert scanner["last_reading"] == "scan ]C0&/CHA999926ABC123"
    # The bioreactor goes on reporting while served (the kiosk's telemetry is live).
    first = next(d for d in h["devices"] if d["name"] == "bioreactor")["last_at"]
    end = time.monotonic() + 15
    now = first
    while now == first and time.monotonic() < end:
        time.sleep(0.5)
        h = httpx.get(urls["kiosk"] + "/health", timeout=10).json()
        now = next(d for d in h["devices"] if d["name"] == "bioreactor")["last_at"]
    assert now != first
    # The console is the QA console's page (its sign-in), on the server that holds the API.
    console = httpx.get(urls["console"], timeout=10, follow_redirects=True)
    assert console.status_code == 200 and "text/html" in console.headers["content-type"]
    assert httpx.get(urls["console"] + "/server-key", timeout=10).status_code == 200
