"""Sync is one writer per unit and recovers from everything that is not a real fork: a second
sync process waits or says who holds the lock; two runs that meet anyway converge; clock skew
backs off with an alarm and resumes by itself.  Against the real server over HTTP."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ebr_core.keys import UnitSigner
from edge.ledger import Append, Ledger
from edge.sync import (
    BackgroundSync,
    SyncBusy,
    SyncClient,
    SyncRefused,
    sync_alarm,
    sync_lock,
)
from tests.server.conftest import Server, clock, make_ledger, server_settings, start_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with start_server(server_settings("sqlite", request, tmp_path)) as srv:
        yield srv


class Delays(httpx.HTTPTransport):
    """A real transport that waits a random while before each request and after its answer:
    two syncs' requests interleave at the server in every order."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = random.Random(seed)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self.rng.uniform(0, 0.03))
        r = super().handle_request(request)
        time.sleep(self.rng.uniform(0, 0.03))
        return r


def client(led: Ledger, srv: Server, seed: int, **kw: object) -> SyncClient:
    http = httpx.Client(base_url=srv.url, transport=Delays(seed), timeout=30)
    return SyncClient(led, srv.url, server_key=srv.key, client=http, max_events=7, **kw)  # type: ignore[arg-type]


def write(led: Ledger, groups: int, stop: threading.Event | None = None) -> None:
    for g in range(groups):
        if stop is not None and stop.is_set():
            return
        led.append_many(
            [Append("reading.recorded", {"g": g, "i": i}, "B-1") for i in range(1 + g % 5)]
        )
        time.sleep(0.005)


def test_two_syncs_that_meet_converge_with_nothing_stuck(server: Server, tmp_path: Path) -> None:
    # No lock (as on a file system without one): two runs interleave at the server, each sees
    # heads and receipts ahead of what it knew, and neither takes that for a foreign ledger.
    unit = UnitSigner.generate("UNIT-2W")
    server.enrol(unit)
    writer = make_ledger(tmp_path / "e.db", unit, groups=2, per_group=5)
    readers = [Ledger.open(tmp_path / "e.db", unit, clock(), writer=False) for _ in range(2)]  # type: ignore[arg-type]
    clients = [client(r, server, seed, exclusive=False) for seed, r in enumerate(readers)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop(c: SyncClient) -> None:
        while not stop.is_set():
            try:
                c.sync_once(attempts=5)
            except SyncRefused as e:  # would stop the unit's sync for good
                errors.append(e)
                return

    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    try:
        write(writer, 60)
    finally:
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    clients[0].sync_once()
    assert server.events("UNIT-2W") == writer.head[0]
    for r in readers:
        assert int(r.get_meta("sync.acked_seq") or 0) == writer.head[0]


def test_two_background_syncs_take_turns_and_converge(server: Server, tmp_path: Path) -> None:
    # sync --watch twice for one unit: the lock makes them take turns; neither stops.
    unit = UnitSigner.generate("UNIT-2B")
    server.enrol(unit)
    writer = make_ledger(tmp_path / "e.db", unit, groups=2, per_group=5)
    readers = [Ledger.open(tmp_path / "e.db", unit, clock(), writer=False) for _ in range(2)]  # type: ignore[arg-type]
    bgs = [BackgroundSync(client(r, server, 10 + i), 0.01).start() for i, r in enumerate(readers)]
    try:
        write(writer, 60)
        deadline = time.monotonic() + 20
        while server.events("UNIT-2B") < writer.head[0] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for bg in bgs:
            bg.stop()
    assert server.events("UNIT-2B") == writer.head[0]
    assert [bg.error for bg in bgs] == [None, None]
    assert sum(bg.busy for bg in bgs) > 0  # they did meet, and took turns


SYNC_SCRIPT = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.sync import SyncBusy, SyncClient
signer = UnitSigner.from_pem(Path(sys.argv[2]).read_bytes(), sys.argv[3])
led = Ledger.open(Path(sys.argv[1]), signer, lambda: datetime.now(UTC), writer=False)
try:
    r = SyncClient(led, sys.argv[4], lock_wait=float(sys.argv[5])).sync_once()
except SyncBusy as e:
    print(e)
    sys.exit(3)
print("pushed", r.pushed)
"""


def test_a_second_sync_process_waits_or_names_the_one_running(
    server: Server, tmp_path: Path
) -> None:
    unit = UnitSigner.generate("UNIT-2P")
    server.enrol(unit)
    led = make_ledger(tmp_path / "e.db", unit, groups=2, per_group=5)
    key = tmp_path / "unit.key"
    key.write_bytes(unit.to_pem())
    argv = [sys.executable, "-c", SYNC_SCRIPT, str(tmp_path / "e.db"), str(key), "UNIT-2P"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with sync_lock(tmp_path / "e.db", 0):  # a sync run of this process holds the unit
        r = subprocess.run(
            [*argv, server.url, "0.3"], check=False, capture_output=True, text=True, env=env
        )
        assert r.returncode == 3, r.stderr
        assert f"another sync is running (pid {os.getpid()})" in r.stdout
        with pytest.raises(SyncBusy, match="another sync is running"):
            SyncClient(led, server.url, lock_wait=0.1).sync_once()
        waiting = subprocess.Popen([*argv, server.url, "30"], stdout=subprocess.PIPE, env=env)
        time.sleep(1.0)
        assert waiting.poll() is None  # it waits for the run holding the lock
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out.decode().strip() == f"pushed {led.head[0]}"


LOOP_SCRIPT = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.sync import SyncClient
signer = UnitSigner.from_pem(Path(sys.argv[2]).read_bytes(), sys.argv[3])
led = Ledger.open(Path(sys.argv[1]), signer, lambda: datetime.now(UTC), writer=False)
c = SyncClient(led, sys.argv[4], lock_wait=30, max_events=7)
end = time.monotonic() + float(sys.argv[5])
rounds = 0
while time.monotonic() < end:
    c.sync_once(attempts=5)  # a refusal ends the process with a traceback: the test fails
    rounds += 1
print(rounds)
"""


def test_two_sync_processes_converge_with_nothing_stuck(server: Server, tmp_path: Path) -> None:
    unit = UnitSigner.generate("UNIT-PP")
    server.enrol(unit)
    writer = make_ledger(tmp_path / "e.db", unit, groups=2, per_group=5)
    key = tmp_path / "unit.key"
    key.write_bytes(unit.to_pem())
    argv = [sys.executable, "-c", LOOP_SCRIPT, str(tmp_path / "e.db"), str(key), "UNIT-PP"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([*argv, server.url, "4"], stdout=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    write(writer, 150)
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and int(out) > 0
    SyncClient(writer, server.url).sync_once()
    assert server.events("UNIT-PP") == writer.head[0]


def test_clock_skew_backs_off_with_an_alarm_and_resumes(server: Server, tmp_path: Path) -> None:
    unit = UnitSigner.generate("UNIT-SK")
    server.enrol(unit)
    led = make_ledger(tmp_path / "e.db", unit, groups=2, per_group=5)
    offset = [400.0]  # this host's clock runs 400 s ahead (the server allows 300)
    c = SyncClient(led, server.url, server_key=server.key, wall=lambda: time.time() + offset[0])
    bg = BackgroundSync(c, 0.02, max_backoff=0.2).start()
    try:
        deadline = time.monotonic() + 10
        while bg.skewed < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert bg.skewed >= 3 and bg.error is None and bg.wait(0)
        alarm = sync_alarm(led)
        assert alarm is not None and alarm["kind"] == "clock_skew"
        assert "clock skew" in alarm["message"] and "s ahead of the server's" in alarm["message"]
        assert server.events("UNIT-SK") == 0
        offset[0] = 0.0  # the clock is set right (NTP)
        deadline = time.monotonic() + 10
        while server.events("UNIT-SK") < led.head[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.events("UNIT-SK") == led.head[0]
        deadline = time.monotonic() + 5
        while sync_alarm(led) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sync_alarm(led) is None and bg.alarm is None
    finally:
        bg.stop()
    assert bg.error is None
