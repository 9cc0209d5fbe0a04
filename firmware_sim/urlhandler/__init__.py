"""pyserial URL handlers: ``serial_for_url("sim://scanner/NAME?...")`` opens a simulated device.

Registered when :mod:`firmware_sim` is imported (``import firmware_sim``); :func:`register` is
kept for callers that name it.
"""

from __future__ import annotations

from firmware_sim import register_url_handlers


def register() -> None:
    register_url_handlers()
