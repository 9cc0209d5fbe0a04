"""Device profiles: TOML documents describing a device's transport, framing and capabilities."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from hardware.errors import ProfileError

KINDS = ("barcode_scanner", "camera_scanner", "cell_counter", "bioreactor", "shipper_logger")


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    transport: str  # serial | camera | mqtt | file
    protocol: str
    serial: dict[str, Any] = field(default_factory=dict)
    framing: dict[str, Any] = field(default_factory=dict)
    mqtt: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)

    @property
    def terminator(self) -> bytes:
        return _unescape(self.framing.get("suffix", "\\r\\n"))

    @property
    def prefix(self) -> bytes:
        return _unescape(self.framing.get("prefix", ""))

    @property
    def gs_substitute(self) -> str:
        return str(self.framing.get("gs_substitute", ""))


def _unescape(s: str) -> bytes:
    return s.encode("ascii").decode("unicode_escape").encode("latin-1")


def parse_profile(text: str) -> Profile:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"profile is not valid TOML: {e}") from e
    dev = doc.get("device", {})
    for key in ("name", "kind", "transport", "protocol"):
        if key not in dev:
            raise ProfileError(f"profile [device] is missing {key!r}")
    if dev["kind"] not in KINDS:
        raise ProfileError(f"device kind {dev['kind']!r} is not one of {', '.join(KINDS)}")
    return Profile(
        name=str(dev["name"]),
        kind=str(dev["kind"]),
        transport=str(dev["transport"]),
        protocol=str(dev["protocol"]),
        serial=dict(doc.get("serial", {})),
        framing=dict(doc.get("framing", {})),
        mqtt=dict(doc.get("mqtt", {})),
        capabilities=dict(doc.get("capabilities", {})),
    )


def shipped_profile(name: str) -> Profile:
    """A profile shipped in hardware/profiles (name without .toml)."""
    try:
        text = resources.files("hardware").joinpath("profiles", f"{name}.toml").read_text()
    except FileNotFoundError as e:
        raise ProfileError(f"no shipped profile {name!r}") from e
    return parse_profile(text)
