"""The main job end to end, as `make demo` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    r = subprocess.run([sys.executable, "-m", "ctgtp", "demo", "--out", str(out)],
                       capture_output=True, text=True, check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["coi"] == "&/CHA999926ABC123" and s["batch_id"] == "B-2026-0042"
    assert s["edge_events"] == s["server_events"] > 50
    assert {j: d["disposition"] for j, d in s["dispositions"].items()} == {
        "EU": "conditional", "US": "conditional", "UK": "conditional"}
    assert s["rejected_scans"] == 1 and len(s["deviations"]) == 2
    v = subprocess.run([sys.executable, "-m", "ctgtp", "verify", str(out / "ledger.jsonl"),
                        "--public-key", str(out / "unit.pub")], capture_output=True, text=True,
                       check=False)
    assert v.returncode == 0 and f"{s['edge_events']} events" in v.stdout
