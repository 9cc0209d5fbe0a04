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
    def frame_start(self) -> bytes:
        """The bytes every frame starts with, when the protocol has such a marker (resync)."""
        return _unescape(self.framing.get("frame_start", ""))

    @property
    def gs_substitute(self) -> str:
        return str(self.framing.get("gs_substitute", ""))

    @property
    def symbology(self) -> str | None:
        """The one symbology identifier (``]d2``) a scanner that sends none is set to read."""
        v = self.framing.get("symbology")
        return None if v is None else str(v)


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
    framing = doc.get("framing", {})
    if dev["kind"] == "barcode_scanner" and dev["transport"] == "serial":
        # The symbology identifier must come from the decoder, never from the content: a scanner
        # that does not prefix it must be set to read one symbology, named here.
        sym = framing.get("symbology")
        if not framing.get("symbology_identifiers", False) and sym is None:
            raise ProfileError(
                f"scanner profile {dev['name']!r} sends no symbology identifiers, so it must name "
                'the one symbology it is set to read: [framing] symbology = "]d2" (GS1 '
                'DataMatrix), "]C1" (GS1-128), "]C0" (Code 128) or "]Q3" (GS1 QR)'
            )
        if sym is not None and not (
            isinstance(sym, str) and len(sym) == 3 and sym[0] == "]" and sym[1].isalpha()
        ):
            raise ProfileError(
                f"scanner profile {dev['name']!r}: symbology {sym!r} is not an AIM symbology "
                "identifier such as ]d2"
            )
    return Profile(
        name=str(dev["name"]),
        kind=str(dev["kind"]),
        transport=str(dev["transport"]),
        protocol=str(dev["protocol"]),
        serial=dict(doc.get("serial", {})),
        framing=dict(framing),
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
