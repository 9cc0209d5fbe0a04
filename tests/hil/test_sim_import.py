"""``sim://`` opens as soon as ``firmware_sim`` is imported, in a fresh process (issue 26)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.hil


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_one_import_opens_sim_urls_in_a_fresh_process() -> None:
    done = _run(
        "import firmware_sim, serial\n"
        "from firmware_sim.urlhandler import protocol_sim\n"
        "s = serial.serial_for_url('sim://scanner/imp?suffix=cr&gs=|', timeout=1)\n"
        "protocol_sim.scan('imp', '010950600013435210TM2611\\x1d17270331')\n"
        "print(s.read(100))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b']d2010950600013435210TM2611|17270331\\r'"


def test_without_the_import_pyserial_names_the_scheme_it_does_not_know() -> None:
    done = _run("import serial\nserial.serial_for_url('sim://scanner/x')\n")
    assert done.returncode != 0
    assert "protocol 'sim' not known" in done.stderr


def test_the_edge_naming_the_package_still_works_and_is_not_added_twice() -> None:
    # edge/station/devices.py appends the package by name without importing it.
    done = _run(
        "import serial\n"
        "serial.protocol_handler_packages.append('firmware_sim.urlhandler')\n"
        "s = serial.serial_for_url('sim://scanner/byname', timeout=0.1)\n"
        "print(serial.protocol_handler_packages.count('firmware_sim.urlhandler'))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
