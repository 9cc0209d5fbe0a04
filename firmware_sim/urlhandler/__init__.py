"""pyserial URL handlers: ``serial_for_url("sim://scanner/NAME?...")`` opens a simulated device.

Register with ``firmware_sim.urlhandler.register()`` (adds this package to
``serial.protocol_handler_packages``).
"""

from __future__ import annotations

import serial


def register() -> None:
    if "firmware_sim.urlhandler" not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append("firmware_sim.urlhandler")
