"""The station file (``station.toml``): what a station agent opens, and where.

A person writes it by hand at commissioning, so it is read strictly (``ebr_core.strict``): an
unknown key is refused naming the closest allowed one, and every wrong entry is refused with its
key path, the value found and what was expected, before any device is opened::

    unit_id = "UNIT-0001"                 # optional: refused if the home is another unit's

    [devices.scanner]
    profile = "scanner_serial_generic"    # a profile in hardware/profiles/
    port = "/dev/serial/by-id/usb-Scanner_1234-if00"

    [devices.cell_counter]
    profile = "cell_counter_cc1"
    port = "/dev/ttyUSB1"

    [devices.camera]
    profile = "camera_scanner"
    camera = 0                            # a device index, or a video file

    [devices.bioreactor]
    profile = "bioreactor_cartridge"
    broker = "mqtt://127.0.0.1:1883"

    [server]
    url = "https://control.example.org"
    key = "server.pub"                    # the server's receipt key, beside this file
    interval_s = 30

    [kiosk]
    bind = "127.0.0.1:8470"               # another address needs allow_remote = true

    [clock]
    leap_s = 60

This module reads and checks; it opens nothing (``edge.station.agent`` does).

Over 400 lines: the station file's models and their refusals are one file format, read top to
bottom by whoever changes a key.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ebr_core.strict import StrictModel, describe_errors, show
from edge.errors import EdgeError
from hardware.errors import ProfileError
from hardware.profile import Profile, shipped_profile

DEFAULT_KIOSK = "127.0.0.1:8470"
# A camera whose frames the program running the agent feeds (the demo, tests): nothing captured.
SIM_CAMERA = "sim://camera"
# pyserial URL schemes a station may name (sim:// is the simulated scanner of firmware_sim).
SERIAL_SCHEMES = ("sim", "socket", "rfc2217", "loop", "spy", "alt", "hwgrep")
# The transport of a profile -> the device kind the kiosk shows (edge.kiosk.port.DEVICE_KINDS).
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class StationFileError(EdgeError):
    """The station file is missing, unreadable or wrong; the message names what and where."""


def profile_names() -> list[str]:
    """The profiles shipped in ``hardware/profiles/`` (names without ``.toml``)."""
    folder = resources.files("hardware").joinpath("profiles")
    names = (p.name for p in folder.iterdir())
    return sorted(n.removesuffix(".toml") for n in names if n.endswith(".toml"))


def device_kind(profile: Profile, name: str | None = None) -> str:
    """What the kiosk calls a device of this profile: ``serial_scanner``, ``serial_instrument``,
    ``camera`` or ``mqtt``; a profile no station opens (a shipper's CSV logger) is refused."""
    if profile.transport == "serial":
        return "serial_scanner" if profile.kind == "barcode_scanner" else "serial_instrument"
    if profile.transport == "camera":
        return "camera"
    if profile.transport == "mqtt":
        return "mqtt"
    raise ValueError(
        f"profile {name or profile.name!r} is a {profile.transport} device, which a station "
        "does not open; expected a serial, camera or mqtt profile"
    )


def _text(what: str) -> Any:
    def check(v: Any) -> Any:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{show(v)} is not {what}")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise ValueError(f"{show(v)} holds a control character; expected {what}")
        return v

    return BeforeValidator(check)


def _seconds(lo: int, hi: int) -> Any:
    """A duration in seconds from ``lo`` to ``hi``, or a refusal naming the range."""

    def check(v: float) -> float:
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range; expected {lo} to {hi} seconds")
        return v

    return AfterValidator(check)


def check_port(v: str) -> str:
    """An absolute device path (``/dev/ttyUSB0``, ``/dev/serial/by-id/…``) or a pyserial URL."""
    expected = (
        "expected an absolute device path such as /dev/ttyUSB0 or /dev/serial/by-id/…, or a "
        f"pyserial URL ({', '.join(s + '://' for s in SERIAL_SCHEMES)})"
    )
    if "://" in v:
        scheme = v.split("://", 1)[0]
        if scheme not in SERIAL_SCHEMES:
            raise ValueError(f"{show(v)} is a URL of scheme {scheme!r}; {expected}")
        if scheme == "sim":
            parts = urllib.parse.urlsplit(v)
            if parts.netloc != "scanner" or not parts.path.strip("/"):
                raise ValueError(
                    f"{show(v)} is not a simulated scanner; expected sim://scanner/NAME"
                    "[?suffix=crlf&gs=|&symbology=1]"
                )
        return v
    if not v.startswith("/"):
        raise ValueError(f"{show(v)} is a relative path; {expected}")
    return v


def check_broker(v: str) -> str:
    parts = urllib.parse.urlsplit(v)
    expected = "expected mqtt://HOST:PORT or mqtts://HOST:PORT (user:password@ optional)"
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        return _refuse(f"{show(redact(v))} is not a broker URL; {expected}")
    try:
        parts.port  # noqa: B018 - a port out of range raises
    except ValueError:
        return _refuse(f"{show(redact(v))} has no valid port; {expected}")
    if parts.path not in ("", "/") or parts.query:
        return _refuse(f"{show(redact(v))} has a path or query; {expected}")
    return v


def _refuse(msg: str) -> str:
    raise ValueError(msg)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``: for logs, messages and the kiosk."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(an unreadable URL)"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


Port = Annotated[str, _text("a device path or a pyserial URL")]
Name = Annotated[str, _text("a name")]


class DeviceConfig(StrictModel):
    """One device: its profile, and where it is (``port``, ``camera`` or ``broker``, as its
    transport needs)."""

    profile: Name
    port: Port | None = None
    camera: int | str | None = None
    broker: Annotated[str, _text("a broker URL")] | None = None

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str) -> str:
        names = profile_names()
        if v not in names:
            close = difflib.get_close_matches(v, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"no profile {v!r} in hardware/profiles{hint}; expected one of {', '.join(names)}"
            )
        return v

    @field_validator("port")
    @classmethod
    def _port(cls, v: str | None) -> str | None:
        return None if v is None else check_port(v)

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        return None if v is None else check_broker(v)

    @field_validator("camera", mode="before")
    @classmethod
    def _camera(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError(
                f"{show(v)} is not a camera; expected a device index (0, 1, …) or a video file"
            )
        if isinstance(v, int) and v < 0:
            raise ValueError(f"{v} is not a camera index; expected 0 or more")
        if isinstance(v, str) and not v.strip():
            raise ValueError("an empty text is not a camera; expected a device index or a file")
        if isinstance(v, str) and "://" in v and v != SIM_CAMERA:
            raise ValueError(
                f"{show(v)} is not a camera; expected a device index (0, 1, …), a video file, "
                f"or {SIM_CAMERA} (frames fed by the program running the agent)"
            )
        return v

    @model_validator(mode="after")
    def _fits_transport(self) -> DeviceConfig:
        profile = shipped_profile(self.profile)
        kind = device_kind(profile, self.profile)
        need = {"serial_scanner": "port", "serial_instrument": "port", "camera": "camera"}.get(
            kind, "broker"
        )
        what = {
            "port": "port = a device path or a pyserial URL",
            "camera": "camera = a device index or a video file",
            "broker": 'broker = "mqtt://HOST:PORT"',
        }
        for key in ("port", "camera", "broker"):
            given = getattr(self, key)
            if key == need and given is None:
                raise ValueError(
                    f"missing key {key!r}: a {profile.transport} device (profile "
                    f"{self.profile!r}) needs {what[key]}"
                )
            if key != need and given is not None:
                raise ValueError(
                    f"key {key!r} does not belong to a {profile.transport} device (profile "
                    f"{self.profile!r}); expected {what[need]}"
                )
        if kind == "serial_instrument" and self.port is not None and self.port.startswith("sim:"):
            raise ValueError(
                f"port {self.port!r} is a simulated scanner, which sends scans, not "
                f"{profile.protocol} results; expected the instrument's device path"
            )
        if kind == "serial_instrument" and profile.protocol != "cc1":
            raise ValueError(
                f"profile {self.profile!r} speaks {profile.protocol!r}; the station reads "
                "serial instruments that speak cc1"
            )
        return self

    @property
    def kind(self) -> str:
        return device_kind(shipped_profile(self.profile))


class ServerConfig(StrictModel):
    """The control server this unit syncs to (``ctgtp edge sync``'s settings)."""

    url: Annotated[str, _text("a server URL")]
    key: Annotated[str, _text("the path of the server's receipt key (server.pub)")]
    interval_s: Annotated[float, _seconds(1, 3600)] = Field(default=30.0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{show(v)} is not a server URL; expected https://HOST[:PORT]")
        if parts.password is not None or parts.username is not None:
            raise ValueError(
                "a server URL with a user name or password; expected https://HOST[:PORT] (the "
                "unit signs its requests with its key)"
            )
        return v.rstrip("/")


class KioskConfig(StrictModel):
    """Where the kiosk listens: loopback unless ``allow_remote`` says otherwise."""

    bind: Annotated[str, _text("HOST:PORT")] = DEFAULT_KIOSK
    allow_remote: bool = False

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            raise ValueError(
                f"{show(v)} is not an address; expected HOST:PORT such as {DEFAULT_KIOSK} "
                "(port 0: any free port)"
            )
        if host != "localhost":
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(
                    f"{show(v)}: {host!r} is not an IP address; expected an address such as "
                    f"{DEFAULT_KIOSK}"
                ) from None
        return v

    @model_validator(mode="after")
    def _loopback(self) -> KioskConfig:
        if not self.loopback and not self.allow_remote:
            raise ValueError(
                f"bind {self.bind!r} is reachable from other machines; the kiosk binds to "
                "127.0.0.1 unless the station file also says allow_remote = true"
            )
        return self

    @property
    def host(self) -> str:
        return self.bind.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.bind.rpartition(":")[2])

    @property
    def loopback(self) -> bool:
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback


class ClockConfig(StrictModel):
    """``leap_s``: a forward jump of the clock beyond the time since boot, in seconds, recorded
    as ``clock.jumped`` with a deviation on the running batch (see ``edge.ledger``)."""

    leap_s: Annotated[float, _seconds(1, 86_400)] = 60.0


class StationConfig(StrictModel):
    unit_id: Name | None = None
    devices: dict[str, DeviceConfig] = Field(default_factory=dict)
    server: ServerConfig | None = None
    kiosk: KioskConfig = Field(default_factory=KioskConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)

    @field_validator("devices", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name in v:
                if not _NAME.fullmatch(str(name)):
                    raise ValueError(
                        f"device name {show(name)} is not a name; expected lower-case letters, "
                        "digits, '_' and '-', starting with a letter (at most 40)"
                    )
        return v

    @model_validator(mode="after")
    def _one_port_each(self) -> StationConfig:
        # Two readers on one port would each take half of its bytes.
        seen: dict[str, str] = {}
        for name, d in self.devices.items():
            where = d.port if d.port is not None else None
            if where is None and d.camera is not None:
                where = f"camera {d.camera}"
            if where is None:
                continue
            if where in seen:
                raise ValueError(
                    f"devices.{seen[where]} and devices.{name} both name {where!r}; expected "
                    "one device per port"
                )
            seen[where] = name
        return self


@dataclass(frozen=True)
class Station:
    """A checked station file: the model, and where relative paths are resolved from."""

    config: StationConfig
    path: Path

    @property
    def folder(self) -> Path:
        return self.path.parent

    def resolve(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else self.folder / path

    def server_key(self) -> Path | None:
        return None if self.config.server is None else self.resolve(self.config.server.key)

    def camera_source(self, name: str) -> int | str:
        cam = self.config.devices[name].camera
        assert cam is not None
        if isinstance(cam, int) or cam == SIM_CAMERA:
            return cam
        return str(self.resolve(cam))


def parse_station(text: str, source: str = "station.toml") -> StationConfig:
    """The checked model of a station file's text; :class:`StationFileError` names every
    problem (at most ten) by its key path, the value and what was expected."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StationFileError(f"{source} is not valid TOML: {e}") from None
    try:
        return StationConfig.model_validate(doc)
    except ValidationError as e:
        raise StationFileError(describe(e, source)) from None


def load_station(path: Path) -> Station:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StationFileError(f"there is no station file {path}") from None
    except UnicodeDecodeError as e:
        raise StationFileError(f"{path} is not UTF-8 text: {e}") from None
    except OSError as e:
        raise StationFileError(f"cannot read {path}: {e.strerror or e}") from None
    station = Station(parse_station(text, str(path)), path)
    key = station.server_key()
    if key is not None and not key.is_file():
        raise StationFileError(
            f"{path} is not a valid station file: server.key: {str(key)!r} is not a file; "
            "expected the server's receipt key (server.pub, from GET /server-key)"
        )
    return station


def describe(e: ValidationError, source: str) -> str:
    return describe_errors(e, f"{source} is not a valid station file")


__all__ = [
    "ClockConfig",
    "DeviceConfig",
    "KioskConfig",
    "ProfileError",
    "ServerConfig",
    "Station",
    "StationConfig",
    "StationFileError",
    "load_station",
    "parse_station",
    "redact",
]
