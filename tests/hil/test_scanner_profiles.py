"""A scanner that sends no symbology identifier names the one symbology it is set to read."""

from __future__ import annotations

import time

import pytest

from edge.transports.serial import SerialReader
from firmware_sim.urlhandler import protocol_sim, register
from hardware.errors import ProfileError
from hardware.profile import parse_profile

BASE = """
[device]
name = "Plain scanner"
kind = "barcode_scanner"
transport = "serial"
protocol = "line"
[framing]
suffix = "\\r"
symbology_identifiers = false
"""


def test_a_profile_without_identifiers_must_name_its_symbology() -> None:
    with pytest.raises(ProfileError) as e:
        parse_profile(BASE)
    assert str(e.value).startswith(
        "scanner profile 'Plain scanner' sends no symbology identifiers, so it must name the one "
        'symbology it is set to read: [framing] symbology = "]d2"'
    )
    with pytest.raises(ProfileError, match="symbology 'd2' is not an AIM symbology identifier"):
        parse_profile(BASE + 'symbology = "d2"\n')


def test_the_declared_symbology_prefixes_what_the_scanner_sends() -> None:
    register()
    profile = parse_profile(BASE + 'symbology = "]d2"\n')
    got: list[str] = []
    r = SerialReader(
        "sim://scanner/plain?suffix=cr&symbology=0", profile, lambda s: got.append(str(s))
    ).start()
    # a serial with digits that read like further fields: the declared GS1 DataMatrix vouches
    # that separators are sent, so it is taken as one serial, not refused as a guess
    protocol_sim.scan("plain", "0109506000134352\x1d21123410ABC17")
    end = time.monotonic() + 5
    while not got and time.monotonic() < end:
        time.sleep(0.02)
    r.stop()
    assert got == ["]d20109506000134352\x1d21123410ABC17"]
