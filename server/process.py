"""Start ``ctgtp server run`` in its own process on a free 127.0.0.1 port (benchmarks, the fleet
soak): the server never shares a GIL with the units that load it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.db import make_engine, migrate
from server.pgcluster import free_port


def serve_subprocess(
    database_url: str,
    data_dir: Path,
    admin_token: str,
    workers: int | None = None,
    **settings: str,
) -> tuple[str, subprocess.Popen[bytes]]:
    """(base URL, process) once ``/health`` answers; ``settings`` become CTGTP_SERVER_* vars.
    The database is migrated first, as a deploy would (``ctgtp server migrate``).  ``workers``:
    served by :func:`server.workers.serve` with that many uvicorn workers and pools sized per
    worker (``terminate()`` stops them all); None: ``ctgtp server run``, one process."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers: {workers} given, at least 1 expected")
    engine = make_engine(database_url)
    migrate(engine)
    engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "CTGTP_SERVER_DATABASE_URL": database_url,
        "CTGTP_SERVER_DATA_DIR": str(data_dir),
        "CTGTP_SERVER_ADMIN_TOKEN": admin_token,
        **{f"CTGTP_SERVER_{k.upper()}": v for k, v in settings.items()},
    }
    if workers is None:
        cmd = [sys.executable, "-m", "ctgtp", "server", "run", "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "server.workers", "--port", str(port)]
        cmd += ["--workers", str(workers)]
    # its own session: stop() ends the workers with it, even if the supervisor is stuck
    proc = subprocess.Popen(cmd, env=env, start_new_session=workers is not None)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600 * (workers or 1)):
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} on start")
        try:
            if httpx.get(base + "/health").status_code == 200:
                return base, proc
        except httpx.HTTPError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"the server did not start on {base}")


def stop(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """Stop a server from :func:`serve_subprocess`: SIGTERM, then, after ``grace_s``, SIGKILL to
    it and (with workers) every process of its session."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        proc.wait(10)
