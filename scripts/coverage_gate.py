"""Per-package coverage floors for ``make coverage`` (issue 20): reads the ``.coverage`` data the
test run wrote, prints each package's line coverage, and fails when one is below its floor.

pytest-cov's own ``--cov-fail-under`` has one floor for everything; the project keeps the pure
record library higher than the apps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import coverage

FLOORS = {"ebr_core": 90.0, "server": 85.0, "edge": 85.0}


def main() -> int:
    data_file = Path(".coverage")
    if not data_file.exists():
        sys.stderr.write("coverage: no .coverage data: run the tests with --cov first\n")
        return 1
    cov = coverage.Coverage(data_file=str(data_file))
    cov.load()
    data = cov.get_data()
    root = Path.cwd().resolve()
    totals: dict[str, list[int]] = {p: [0, 0] for p in FLOORS}
    for name in data.measured_files():
        path = Path(name).resolve()
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        package = rel.parts[0]
        if package not in totals or path.suffix != ".py":  # templates are not measured code
            continue
        _, statements, _, missing, _ = cov.analysis2(name)
        totals[package][0] += len(statements)
        totals[package][1] += len(statements) - len(missing)
    failed = False
    for package, floor in FLOORS.items():
        statements, covered = totals[package]
        pct = 100.0 * covered / statements if statements else 0.0
        ok = pct >= floor
        failed |= not ok
        verdict = "" if ok else "  BELOW THE FLOOR"
        sys.stdout.write(
            f"coverage {package:9s} {pct:5.1f}%  ({covered}/{statements} lines;"
            f" floor {floor:.0f}%){verdict}\n"
        )
    if failed:
        sys.stderr.write(
            "coverage: a package is below its floor (a run of part of the suite measures part of"
            " the code: `make pytest PYTEST_ARGS=...` runs it without coverage)\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
