"""A HIL test written outside this repository (``tests/hil_outside/scan_faults.py``), run from a
temporary folder with only the installed project and the plugin (issue 26)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil
SOURCE = Path(__file__).resolve().parents[1] / "hil_outside" / "scan_faults.py"


def test_an_outside_test_uses_the_plugin_from_a_temporary_folder(tmp_path: Path) -> None:
    shutil.copy(SOURCE, tmp_path / "test_scan_faults.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # its own rootdir: no repository config
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_scan_faults.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "10 passed" in done.stdout, done.stdout[-2000:]


def test_the_example_in_docs_hil_md_passes_as_written(tmp_path: Path) -> None:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "hil.md").read_text()
    code = re.search(r"### A complete example\n\n```python\n(.*?)```", doc, re.S)
    assert code is not None, "docs/hil.md lost its complete example"
    (tmp_path / "test_scanner_bench.py").write_text(code.group(1))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_scanner_bench.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
