"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb as the ``postgres`` user in a
temporary directory, listening on 127.0.0.1 on a free port, stopped and removed afterwards.
(PostgreSQL refuses to run as root.)"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)),
        None,
    )
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (run make setup)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, base: Path | None = None) -> None:
        """``base``: the folder to make the cluster's temporary folder in (default: the
        system's temporary folder, on disk: what the benchmarks measure)."""
        self.dir = Path(tempfile.mkdtemp(prefix="ctgtp-pg-", dir=base))
        self.port = free_port()
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *cmd: str) -> None:
        full = ["runuser", "-u", "postgres", "--", *cmd] if self._as_postgres else list(cmd)
        subprocess.run(full, check=True, capture_output=True)

    def start(self) -> PgCluster:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            _bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.dir} -h 127.0.0.1 -c fsync=on",
            "start",
        )
        return self

    def create_db(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (a copy of database ``template``, which nothing may be
        connected to, if given) and return its SQLAlchemy URL."""
        copy = ("-T", template) if template else ()
        self._run(
            _bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", *copy, name
        )
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
