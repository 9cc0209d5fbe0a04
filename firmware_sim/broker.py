"""A private mosquitto broker on 127.0.0.1 (free port, own config and persistence directory),
restartable on the same port for the broker-restart fault, killable for the broker-crash fault.

It keeps QoS 1 messages queued for an offline persistent session across a restart and a crash,
as a production broker must (``hardware/README.md``):

* the persistence directory is writable by the user mosquitto runs as: started as root, mosquitto
  drops to ``mosquitto``, so the directory (a private temporary one, mode 0700) is handed to that
  user; otherwise nothing is saved and nothing says so;
* ``autosave_interval 1``: the store is written every second, so a SIGKILL loses what was
  acknowledged since the last save: about a second, measured up to 1.9 s on a loaded machine,
  because the save is timed by mosquitto's main loop (mosquitto otherwise saves only when it
  shuts down cleanly). Saving on every change (``autosave_on_changes``) closes that window but
  rewrites the whole store per message, which a 72-hour offline queue cannot afford;
* its log and its standard error go to ``mosquitto.log`` in that directory (:attr:`Broker.log`),
  so a broker that cannot write its store says so somewhere.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

AUTOSAVE_S = 1  # seconds between saves of the store: about what a broker crash can lose


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed (run make setup)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _broker_user() -> tuple[int, int] | None:
    """The (uid, gid) mosquitto drops to when started as root, or None when it keeps ours."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return None  # no such user: mosquitto stays root (and says so in its log)
    return pw.pw_uid, pw.pw_gid


class Broker:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ctgtp-mqtt-"))
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            f"autosave_interval {AUTOSAVE_S}\n"
            "autosave_on_changes false\n"
            "max_queued_messages 0\n"  # 0: no limit while a persistent client is away
            "max_inflight_messages 0\n"
            f"log_dest file {self.log}\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
        )
        self.log.touch()
        owner = _broker_user()
        if owner is not None:
            for p in (self.dir, self.log):
                os.chown(p, *owner)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [_mosquitto(), "-c", str(self.conf)], stdout=err, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode} on port {self.port}: "
                    f"{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the broker's log (what it said about its store, and why it quit)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        """The broker crashes (SIGKILL): only what its last autosave wrote survives."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
