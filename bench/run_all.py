"""Run every benchmark in bench/, print one table, write bench-results.json.

Each bench script prints one JSON object per measurement per line
(name, rate, unit, ceiling, ratio); anything else it prints is passed through to stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Scripts of bench/ run by hand, not by `make bench`: they print no figure with a ceiling.
BY_HAND = {"ingest_profile.py"}  # a profiler: server CPU per ingested event, py-spy, cProfile


def run(script: Path) -> tuple[list[dict[str, object]], str | None]:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    # A long bench (batch_scale.py) reports its progress on stderr: passed through as it comes.
    err: list[str] = []
    pump = threading.Thread(target=_pass_through, args=(proc.stderr, script.name, err))
    pump.start()
    stdout = proc.stdout.read()
    proc.wait()
    pump.join()
    rows: list[dict[str, object]] = []
    for line in stdout.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            print(f"  [{script.name}] {line}", file=sys.stderr)
            continue
        if isinstance(row, dict) and "name" in row:
            row["script"] = script.name
            rows.append(row)
    error = None
    if proc.returncode != 0:
        error = f"{script.name} exited {proc.returncode}: {''.join(err).strip()[-400:]}"
    print(f"  {script.name}: {len(rows)} figures in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return rows, error


def _pass_through(stream: IO[str], name: str, keep: list[str]) -> None:
    for line in stream:
        keep.append(line)
        print(f"  [{name}] {line.rstrip()}", file=sys.stderr, flush=True)


def fmt(x: object) -> str:
    if isinstance(x, float | int):
        return f"{x:,.1f}" if isinstance(x, float) and x < 100 else f"{x:,.0f}"
    return "-" if x is None else str(x)


def ratio(x: object) -> str:
    return f"{x:.2f}" if isinstance(x, float | int) else "-"


def main() -> int:
    scripts = sorted(
        p
        for p in HERE.glob("*.py")
        if not p.name.startswith("_") and p.name not in {"run_all.py", *BY_HAND}
    )
    if len(sys.argv) > 1:
        scripts = [s for s in scripts if s.stem in sys.argv[1:]]
    rows: list[dict[str, object]] = []
    errors: list[str] = []
    print(f"running {len(scripts)} benchmark scripts …", file=sys.stderr)
    for script in scripts:
        got, err = run(script)
        rows.extend(got)
        if err:
            errors.append(err)
    w = max([len(str(r["name"])) for r in rows] + [6])
    print(f"{'figure':<{w}}  {'rate':>14}  {'unit':<12}  {'ceiling':>14}  {'ratio':>6}")
    print("-" * (w + 54))
    for r in rows:
        print(
            f"{r['name']!s:<{w}}  {fmt(r.get('rate')):>14}  {r.get('unit')!s:<12}  "
            f"{fmt(r.get('ceiling')):>14}  {ratio(r.get('ratio')):>6}"
        )
    (ROOT / "bench-results.json").write_text(
        json.dumps({"results": rows, "errors": errors}, indent=2)
    )
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    print(f"wrote bench-results.json ({len(rows)} figures)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
