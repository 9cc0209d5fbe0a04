"""Errors of the device library."""

from __future__ import annotations


class HardwareError(Exception):
    """Root of every error raised by hardware/."""


class ProfileError(HardwareError):
    """A device profile is malformed."""


class FrameError(HardwareError):
    """A frame from a device is malformed (bad checksum, bad field, not text)."""
