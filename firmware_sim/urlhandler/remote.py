"""A simulated scanner's trigger, reachable from another process.

A ``sim://scanner/NAME?remote=1`` port listens on a Unix socket named for it in this user's
runtime folder (``$XDG_RUNTIME_DIR/ctgtp-sim/``, else a private ``ctgtp-sim-<uid>`` folder in
the temporary directory, mode 0700) while it is open; :func:`send_scan` (``ctgtp sim scan``)
connects to it and the port returns the bytes the scanner would send for that label, exactly as
:func:`firmware_sim.urlhandler.protocol_sim.scan` does in-process.  So a person can "pull the
trigger" of the running demo's scanner from a shell.

One request per connection: a JSON line ``{"data": ..., "symbology": "]d2"}``; the answer is a
JSON line ``{"ok": true}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SYMBOLOGY = re.compile(r"^\][A-Za-z][0-9A-Za-z]$")
MAX_REQUEST = 8192
TIMEOUT_S = 5.0


class RemoteError(Exception):
    """No simulated scanner answers under that name, or it refused the request."""


def runtime_dir() -> Path:
    """This user's private folder for the sockets (created 0700; refused if anyone else may
    write it)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = (
        Path(base) / "ctgtp-sim"
        if base
        else Path(tempfile.gettempdir()) / (f"ctgtp-sim-{os.getuid()}")
    )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RemoteError(f"{folder} is not this user's private folder; refusing to use it")
    return folder


def socket_path(name: str) -> Path:
    if not NAME.fullmatch(name):
        raise RemoteError(
            f"{name!r} is not a simulated scanner name; expected letters, digits, '.', '_' and "
            "'-' (at most 64)"
        )
    return runtime_dir() / f"{name}.scanner.sock"


def check_code(data: str, symbology: str) -> None:
    if not SYMBOLOGY.fullmatch(symbology):
        raise RemoteError(f"symbology {symbology!r} is not an AIM identifier such as ]d2 or ]C0")
    if not data:
        raise RemoteError("the code is empty; expected the label's data")
    bad = next((c for c in data if not (" " <= c <= "~" or c == "\x1d")), None)
    if bad is not None:
        raise RemoteError(
            f"the code holds U+{ord(bad):04X}; expected printable ASCII, with GS (<GS>) between "
            "GS1 fields"
        )


class Listener:
    """Serves one simulated scanner's socket until :meth:`close`."""

    def __init__(self, name: str, feed: Callable[[str, str], None]) -> None:
        self.path = socket_path(name)
        self.feed = feed
        if self.path.exists():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.path))
                raise RemoteError(f"another simulated scanner {name!r} listens at {self.path}")
            self.path.unlink()  # left by a process that ended without closing its port
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"sim-{name}")
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(TIMEOUT_S)
                conn.sendall(json.dumps(self._answer(conn)).encode() + b"\n")

    def _answer(self, conn: socket.socket) -> dict[str, object]:
        buf = b""
        try:
            while b"\n" not in buf and len(buf) <= MAX_REQUEST:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
            if len(buf) > MAX_REQUEST:
                return {"error": f"request longer than {MAX_REQUEST} bytes"}
            req = json.loads(buf.split(b"\n", 1)[0])
            if not isinstance(req, dict):
                return {"error": "expected a JSON object with data and symbology"}
            data, symbology = req.get("data"), req.get("symbology")
            if not isinstance(data, str) or not isinstance(symbology, str):
                return {"error": "expected data and symbology as text"}
            check_code(data, symbology)
            self.feed(data, symbology)
        except (ValueError, OSError, RemoteError) as e:
            return {"error": str(e)}
        return {"ok": True}

    def close(self) -> None:
        self._closed.set()
        self.sock.close()
        self._thread.join(2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def send_scan(name: str, data: str, symbology: str = "]d2") -> None:
    """Pull the trigger of the simulated scanner ``name`` (running in another process)."""
    check_code(data, symbology)
    path = socket_path(name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT_S)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise RemoteError(
                f"no simulated scanner {name!r} is running (no one listens at {path}); start "
                f"'ctgtp demo --serve', or a station whose scanner port is "
                f"sim://scanner/{name}?remote=1"
            ) from None
        s.sendall(json.dumps({"data": data, "symbology": symbology}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    try:
        answer = json.loads(buf or b"null")
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        why = answer.get("error") if isinstance(answer, dict) else "no answer"
        raise RemoteError(f"the simulated scanner {name!r} refused the scan: {why}")
