"""The station file: every kind of mistake is refused, naming the key path, the value and what
was expected; a password in a URL never shows in a message."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from edge.station.config import StationFileError, load_station, parse_station, redact

SCANNER = '[devices.scanner]\nprofile = "scanner_serial_generic"\n'
GOOD = """
unit_id = "UNIT-0001"

[devices.scanner]
profile = "scanner_serial_generic"
port = "/dev/serial/by-id/usb-Scanner_1234-if00"

[devices.cell_counter]
profile = "cell_counter_cc1"
port = "rfc2217://10.0.0.7:4001"

[devices.camera]
profile = "camera_scanner"
camera = 0

[devices.bioreactor]
profile = "bioreactor_cartridge"
broker = "mqtt://edge:s3cret@127.0.0.1:1883"

[server]
url = "https://control.example.org/"
key = "server.pub"
interval_s = 30

[kiosk]
bind = "127.0.0.1:8470"

[clock]
leap_s = 60
"""

# (station file, what the message must hold: the key path, the value, what was expected)
MISTAKES = [
    (
        "[devics.scanner]\n",
        ["(top level)", "unknown key 'devics'", "did you mean 'devices'?"],
    ),
    (
        SCANNER + 'prot = "/dev/ttyUSB0"\n',
        ["devices.scanner", "unknown key 'prot'", "did you mean 'port'?"],
    ),
    (
        '[devices.scanner]\nprofile = "scaner_serial_generic"\nport = "/dev/x"\n',
        ["devices.scanner.profile", "'scaner_serial_generic'", "scanner_serial_generic"],
    ),
    (
        SCANNER + 'port = "ttyUSB0"\n',
        ["devices.scanner.port", "'ttyUSB0' is a relative path", "expected an absolute"],
    ),
    (
        SCANNER + "port = 5\n",
        ["devices.scanner.port", "5 is not a device path or a pyserial URL"],
    ),
    (
        SCANNER + 'port = "http://scanner"\n',
        ["devices.scanner.port", "scheme 'http'", "sim://"],
    ),
    (
        SCANNER + 'port = "sim://camera/x"\n',
        ["devices.scanner.port", "'sim://camera/x'", "expected sim://scanner/NAME"],
    ),
    (
        SCANNER,
        ["devices.scanner", "missing key 'port'", "needs port ="],
    ),
    (
        SCANNER + 'port = "/dev/x"\nbroker = "mqtt://h:1883"\n',
        ["devices.scanner", "key 'broker' does not belong to a serial device", "expected port"],
    ),
    (
        '[devices.bio]\nprofile = "bioreactor_cartridge"\nbroker = "http://h:1883"\n',
        ["devices.bio.broker", "'http://h:1883' is not a broker URL", "expected mqtt://"],
    ),
    (
        '[devices.bio]\nprofile = "bioreactor_cartridge"\nbroker = "mqtt://h:99999"\n',
        ["devices.bio.broker", "no valid port", "expected mqtt://HOST:PORT"],
    ),
    (
        '[devices.cam]\nprofile = "camera_scanner"\ncamera = -1\n',
        ["devices.cam.camera", "-1 is not a camera index", "expected 0 or more"],
    ),
    (
        '[devices.cam]\nprofile = "camera_scanner"\ncamera = true\n',
        ["devices.cam.camera", "True is not a camera", "expected a device index"],
    ),
    (
        '[devices.log]\nprofile = "cryoshipper_logger"\nport = "/dev/x"\n',
        ["devices.log", "'cryoshipper_logger' is a file device", "expected a serial, camera"],
    ),
    (
        '[devices.Scanner]\nprofile = "scanner_serial_generic"\nport = "/dev/x"\n',
        ["devices", "device name 'Scanner'", "expected lower-case letters"],
    ),
    (
        SCANNER + 'port = "/dev/x"\n[devices.counter]\nprofile = "cell_counter_cc1"\n'
        'port = "/dev/x"\n',
        ["devices.scanner and devices.counter both name '/dev/x'", "expected one device per port"],
    ),
    (
        '[devices.cc]\nprofile = "cell_counter_cc1"\nport = "sim://scanner/cc"\n',
        ["devices.cc", "'sim://scanner/cc' is a simulated scanner", "expected the instrument's"],
    ),
    (
        "devices = 3\n",
        ["devices", "valid dictionary", "got 3"],
    ),
    (
        '[kiosk]\nbind = "0.0.0.0:8470"\n',
        ["kiosk", "'0.0.0.0:8470' is reachable from other machines", "allow_remote = true"],
    ),
    (
        '[kiosk]\nbind = "8470"\n',
        ["kiosk.bind", "'8470' is not an address", "expected HOST:PORT"],
    ),
    (
        '[kiosk]\nbind = "kiosk.local:8470"\nallow_remote = true\n',
        ["kiosk.bind", "'kiosk.local' is not an IP address"],
    ),
    (
        '[kiosk]\nbind = "127.0.0.1:8470"\nallow_remote = "yes"\n',
        ["kiosk.allow_remote", "valid boolean", "got 'yes'"],
    ),
    (
        '[server]\nurl = "ftp://control"\nkey = "server.pub"\n',
        ["server.url", "'ftp://control' is not a server URL", "expected https://"],
    ),
    (
        '[server]\nurl = "https://control"\n',
        ["server", "missing key 'key'"],
    ),
    (
        '[server]\nurl = "https://control"\nkey = "server.pub"\ninterval_s = 0\n',
        ["server.interval_s", "0.0 is out of range", "expected 1 to 3600 seconds"],
    ),
    (
        "[clock]\nleap_s = -1\n",
        ["clock.leap_s", "-1.0 is out of range", "expected 1 to 86400 seconds"],
    ),
    (
        '[clock]\nleap_s = "60"\n',
        ["clock.leap_s", "valid number", "got '60'"],
    ),
    (
        "[clock]\nleap = 60\n",
        ["clock", "unknown key 'leap'", "did you mean 'leap_s'?"],
    ),
    (
        "[devices\n",
        ["is not valid TOML", "line 1"],
    ),
]


@pytest.mark.parametrize(("text", "says"), MISTAKES)
def test_each_mistake_is_refused_naming_it(text: str, says: list[str]) -> None:
    with pytest.raises(StationFileError) as e:
        parse_station(text, "station.toml")
    msg = str(e.value)
    assert msg.startswith("station.toml is not")
    for part in says:
        assert part in msg, msg


def test_a_good_file_reads_as_written() -> None:
    c = parse_station(GOOD)
    assert c.unit_id == "UNIT-0001"
    assert [(n, d.kind) for n, d in c.devices.items()] == [
        ("scanner", "serial_scanner"),
        ("cell_counter", "serial_instrument"),
        ("camera", "camera"),
        ("bioreactor", "mqtt"),
    ]
    assert c.server is not None and c.server.url == "https://control.example.org"
    assert (c.kiosk.host, c.kiosk.port, c.kiosk.loopback) == ("127.0.0.1", 8470, True)
    assert c.clock.leap_s == 60


def test_defaults_bind_the_kiosk_to_loopback() -> None:
    c = parse_station("")
    assert c.devices == {} and c.server is None
    assert c.kiosk.bind == "127.0.0.1:8470" and c.kiosk.loopback


def test_a_remote_kiosk_needs_to_be_said() -> None:
    c = parse_station('[kiosk]\nbind = "0.0.0.0:8470"\nallow_remote = true\n')
    assert not c.kiosk.loopback


def test_the_broker_password_never_shows_in_a_refusal() -> None:
    with pytest.raises(StationFileError) as e:
        parse_station('[devices.b]\nprofile = "bioreactor_cartridge"\nbroker = "http://u:pw9@h"\n')
    assert "pw9" not in str(e.value) and "u:***@h" in str(e.value)


def test_the_server_key_must_exist_beside_the_file(tmp_path: Path) -> None:
    f = tmp_path / "station.toml"
    f.write_text('[server]\nurl = "https://control"\nkey = "server.pub"\n')
    with pytest.raises(StationFileError, match=r"server.key: '.*server.pub' is not a file"):
        load_station(f)
    (tmp_path / "server.pub").write_text("{}")
    assert load_station(f).server_key() == tmp_path / "server.pub"


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(StationFileError, match="there is no station file"):
        load_station(tmp_path / "station.toml")
    (tmp_path / "station.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(StationFileError, match="is not UTF-8 text"):
        load_station(tmp_path / "station.toml")


_URL_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30
)


@given(user=_URL_TEXT, password=_URL_TEXT)
def test_redact_keeps_all_but_the_password(user: str, password: str) -> None:
    u, p = urllib.parse.quote(user, safe=""), urllib.parse.quote(password, safe="")
    assert redact(f"mqtt://{u}:{p}@broker.local:1883") == f"mqtt://{u}:***@broker.local:1883"


_TABLES = {
    "": ("unit_id", "devices", "server", "kiosk", "clock"),
    '[devices.scanner]\nprofile = "scanner_serial_generic"\nport = "/dev/x"\n': (
        "profile",
        "port",
        "camera",
        "broker",
    ),
    '[server]\nurl = "https://control"\nkey = "server.pub"\n': ("url", "key", "interval_s"),
    '[kiosk]\nbind = "127.0.0.1:8470"\n': ("bind", "allow_remote"),
    "[clock]\nleap_s = 60\n": ("leap_s",),
}


@given(
    table=st.sampled_from(sorted(_TABLES)),
    key=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
)
def test_any_unknown_key_in_any_table_is_refused_by_name(table: str, key: str) -> None:
    """Law: a key a table does not have is never silently dropped: refused, named, wherever."""
    allowed = _TABLES[table]
    assume(key not in allowed)
    with pytest.raises(StationFileError) as e:
        parse_station(f"{table}{key} = 1\n")
    assert f"unknown key {key!r}" in str(e.value)
    assert f"the allowed keys are {', '.join(allowed)}" in str(e.value)
