"""The main job end to end, as `make demo` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from fhir.resources.bundle import Bundle
from PIL import Image
from pypdf import PdfReader

from ebr_core.identifiers import parse_scan
from edge.transports.camera import decode_frame


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    r = subprocess.run(
        [sys.executable, "-m", "ctgtp", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["coi"] == "&/CHA999926ABC123" and s["batch_id"] == "B-2026-0042"
    assert s["edge_events"] == s["server_events"] > 90
    assert {j: d["disposition"] for j, d in s["dispositions"].items()} == {
        "EU": "conditional_release",
        "US": "conditional_release",
        "UK": "conditional_release",
    }
    assert s["dispositions"]["EU"]["signed_by"] == "Paul Approver"
    assert s["rejected_scans"] == 1 and len(s["deviations"]) == 2
    assert s["readings"] >= 26  # bioreactor over MQTT and the cell counter over its pty
    assert s["custody"]["closed"] and s["custody"]["holder"] == "INFUSION-SITE-1"
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
