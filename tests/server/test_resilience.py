"""Offline for days, flaky networks, and a server killed mid-ingest: nothing lost, nothing twice."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ebr_core.keys import UnitSigner
from edge.ledger import Append, Ledger
from edge.sync import SyncClient, SyncError, SyncRefused
from server.db import make_engine, migrate
from server.pgcluster import free_port

from .conftest import ADMIN, Server
from .flaky_proxy import FlakyProxy


def offline_ledger(path: Path, unit: UnitSigner, n: int) -> Ledger:
    """n events recorded over 72 hours of an injected clock, in commit groups of 500."""
    start = datetime(2026, 11, 20, 8, tzinfo=UTC)
    step = timedelta(hours=72) / n
    i = [0]

    def clock() -> datetime:
        i[0] += 1
        return start + step * i[0]

    led = Ledger.open(path, unit, clock)
    for g in range(0, n, 500):
        led.append_many(
            [
                Append(
                    "reading.recorded",
                    {"channel": "pH", "i": g + j, "value": {"value": "7.20", "unit": "1"}},
                    None,  # no batch: a batch's events need its batch.started first
                )
                for j in range(min(500, n - g))
            ]
        )
    return led


@pytest.mark.slow  # a soak: 50,000 events through a faulty proxy (about 2 minutes on both databases)
def test_72h_offline_50k_events_through_a_flaky_proxy(server: Server, tmp_path: Path) -> None:
    unit = UnitSigner.generate("UNIT-OFF")
    server.enrol(unit)
    led = offline_ledger(tmp_path / "e.db", unit, 50_000)
    assert (
        led.events(1, 1).__next__().recorded_at < led.events(50_000, 50_000).__next__().recorded_at
    )
    with FlakyProxy(server.url) as proxy:
        client = SyncClient(
            led,
            proxy.url,
            server_key=server.key,
            max_events=2_500,
            sleep=lambda s: None,
            rng=random.Random(3),
            base_delay=0.001,
        )
        done = None
        for _ in range(10):  # a run that exhausts its attempts resumes in the next one
            try:
                done = client.sync_once(attempts=12)
                break
            except SyncRefused:
                raise
            except SyncError:
                continue
        assert done is not None
    assert all(proxy.stats[k] > 0 for k in ("drop", "lose_response", "duplicate", "delay"))
    with server.admin() as c:
        info = c.get("/admin/units/UNIT-OFF").json()
    assert info["events"] == 50_000 == info["head_seq"]  # same count, and (PK) no duplicates
    assert int(led.get_meta("sync.acked_seq") or 0) == 50_000


@pytest.mark.parametrize("kills", [3])
def test_server_killed_mid_ingest_keeps_every_acknowledged_segment(
    tmp_path: Path, kills: int
) -> None:
    port = free_port()
    data = tmp_path / "srv"
    env = {
        **os.environ,
        "CTGTP_SERVER_DATA_DIR": str(data),
        "CTGTP_SERVER_DATABASE_URL": f"sqlite:///{data / 'server.db'}",
        "CTGTP_SERVER_ADMIN_TOKEN": ADMIN,
    }
    url = f"http://127.0.0.1:{port}"
    data.mkdir()
    migrate(make_engine(f"sqlite:///{data / 'server.db'}"))  # the deploy step before `run`

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", "ctgtp", "server", "run", "--port", str(port)], env=env
        )
        for _ in range(300):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    return p
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("server did not start")

    unit = UnitSigner.generate("UNIT-K")
    led = offline_ledger(tmp_path / "e.db", unit, 30_000)
    proc = start()
    r = httpx.post(
        url + "/admin/units",
        headers={"Authorization": f"Bearer {ADMIN}"},
        json={"site_id": "S", "unit_id": "UNIT-K", "public_key": unit.public.to_json().decode()},
    )
    assert r.status_code == 201
    acked: list[int] = []
    for _ in range(kills):
        stop = threading.Event()

        def push() -> None:
            c = SyncClient(led, url, max_events=1_000, sleep=lambda s: None)
            with contextlib.suppress(SyncError):
                c.sync_once(attempts=1)
            acked.append(int(c.ledger.get_meta("sync.acked_seq") or 0))
            stop.set()

        t = threading.Thread(target=push)
        t.start()
        time.sleep(random.uniform(0.3, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t.join(30)
        proc = start()
        head = httpx.get(
            url + "/admin/units/UNIT-K", headers={"Authorization": f"Bearer {ADMIN}"}
        ).json()
        assert head["head_seq"] >= max(acked), "an acknowledged segment was lost"
        assert head["events"] == head["head_seq"]
    final = SyncClient(led, url).sync_once()
    assert final.server_head == 30_000
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
