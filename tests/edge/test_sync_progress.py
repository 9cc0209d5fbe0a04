"""One sync run drains a large backlog, reporting its progress, in bounded memory.

Against a real server in its own process on 127.0.0.1 (as in production: edge and server never
share a GIL), with backlogs of many segments filled in big commit groups.  The 1,000,000-event run
of ``ctgtp edge sync`` is ``slow`` (``make soak``).
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from ebr_core.keys import UnitSigner
from edge.keys import load_or_create_unit_key
from edge.ledger import Append, Ledger
from edge.sync import (
    PROGRESS_INTERVAL_S,
    ProgressPrinter,
    SyncClient,
    SyncProgress,
    format_progress,
)

from .conftest import EXAMPLES, Srv
from .test_cli import at, ctgtp, ok, published

__all__ = ["published"]

SEGMENT = 5_000  # the sync client's default max_events
PROGRESS = re.compile(
    r"sync: (?P<sent>[\d,]+) / (?P<backlog>[\d,]+) events sent \((?P<pct>\d+) %\), "
    r"(?P<rate>[\d,]+) events/s, (about (\d+ (s|min \d\d s|h \d\d min)) left|done in [\d.]+ s)"
)


def clock() -> Callable[[], datetime]:
    t = [datetime(2026, 11, 24, 8, tzinfo=UTC)]

    def now() -> datetime:
        t[0] += timedelta(milliseconds=1)
        return t[0]

    return now


def fill(led: Ledger, n: int, group: int = 2_500) -> None:
    """Append ``n`` telemetry readings in commit groups of ``group`` (as an instrument ingest)."""
    start = led.head[0]
    for g in range(0, n, group):
        led.append_many(
            [
                Append(
                    "reading.recorded",
                    {"channel": "DO", "i": start + g + i, "value": {"value": "41.5", "unit": "%"}},
                    None,  # no batch: the server takes a batch's events only after its start
                )
                for i in range(min(group, n - g))
            ]
        )


def new_unit(srv: Srv, tmp_path: Path, unit_id: str) -> Ledger:
    unit = UnitSigner.generate(unit_id)
    srv.enrol(unit)
    return Ledger.open(tmp_path / "edge.db", unit, clock())


# -- the client -----------------------------------------------------------------------------


def test_one_run_drains_a_large_backlog_with_progress(srv: Srv, tmp_path: Path) -> None:
    led = new_unit(srv, tmp_path, "UNIT-P1")
    client = SyncClient(led, srv.url, server_key=srv.key)
    fill(led, 5_000)
    assert client.sync_once().server_head == 5_000  # the server already holds these
    # Twelve segments show all this test checks, at half the time of the 24 it used to take: one
    # run sends them all (no cap on segments per run; a million in one run: the slow test
    # below), and a segment takes a fraction of PROGRESS_INTERVAL_S on the 2 test cores (60,000
    # events in 3 to 4 s), so the run reports several times before its end, throttled to fewer
    # reports than segments.
    backlog = 60_000
    fill(led, backlog)
    seen: list[SyncProgress] = []
    t0 = time.perf_counter()
    r = client.sync_once(progress=seen.append)
    dt = time.perf_counter() - t0
    print(f"\n{backlog:,} events in {r.segments} segments: {dt:.2f} s, {backlog / dt:,.0f}/s")

    # One run, everything, exactly once.
    assert r.local_head == r.server_head == led.head[0] == 65_000
    assert (r.pushed, r.duplicates, r.segments) == (backlog, 0, backlog // SEGMENT)
    assert srv.unit("UNIT-P1") == {"head_seq": 65_000, "events": 65_000}
    assert led.get_meta("sync.acked_seq") == "65000"

    # The progress: of this run's backlog (local head - server head at its start), monotonic,
    # throttled, ending at the backlog with nothing left.
    assert seen and all(p.backlog == backlog for p in seen)
    sent = [p.sent for p in seen]
    assert sent == sorted(set(sent)) and sent[0] >= SEGMENT and all(s % SEGMENT == 0 for s in sent)
    elapsed = [p.elapsed_s for p in seen]
    assert elapsed == sorted(elapsed)
    assert all(p.rate > 0 and p.eta_s >= 0 for p in seen)
    assert [p.done for p in seen] == [False] * (len(seen) - 1) + [True]
    last = seen[-1]
    assert (last.sent, last.eta_s, last.fraction) == (backlog, 0.0, 1.0)
    assert last.rate == pytest.approx(backlog / last.elapsed_s)
    assert last.elapsed_s <= dt
    running = seen[:-1]
    assert running, "a run of many segments reports before its end"
    # At most one report per PROGRESS_INTERVAL_S, the first right after the first segment.
    gaps = [b.elapsed_s - a.elapsed_s for a, b in pairwise(running)]
    assert all(g >= PROGRESS_INTERVAL_S - 1e-6 for g in gaps)
    assert len(running) <= last.elapsed_s / PROGRESS_INTERVAL_S + 1.01
    assert seen[0].sent == SEGMENT
    for p in running:  # time left is what remains at the rate so far
        assert p.eta_s == pytest.approx((backlog - p.sent) / p.rate)

    # Nothing left: no segment, one final report of an empty backlog.
    seen.clear()
    again = client.sync_once(progress=seen.append)
    assert (again.pushed, again.segments, again.server_head) == (0, 0, 65_000)
    assert [(p.sent, p.backlog, p.eta_s, p.done) for p in seen] == [(0, 0, 0.0, True)]
    led.close()


def test_memory_stays_a_few_segments_whatever_the_backlog(srv: Srv, tmp_path: Path) -> None:
    """The client reads, compresses and sends a segment at a time: its peak Python allocations
    are a few segments' worth, the same for a backlog of 10,000 events as for 150,000."""
    led = new_unit(srv, tmp_path, "UNIT-P2")
    client = SyncClient(led, srv.url, server_key=srv.key)

    def peak_of_sync(n: int) -> tuple[int, int]:
        after = led.head[0]
        fill(led, n, group=5_000)
        size = sum(len(line) + 1 for line in led.lines(after + 1))
        tracemalloc.start()
        try:
            r = client.sync_once(progress=lambda p: None)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert r.server_head == led.head[0] and r.pushed == n
        return peak, size

    # Two segments already reach the steady peak (the one on the wire and the next one being
    # prepared: 4.6 MB measured, as for four).  The large backlog stays at 150,000 events (56 MB):
    # peak < size / 8 needs one over 40 MB to pass, and its 30 segments are what makes a leak of
    # each segment's compressed body (0.2 MB) break all three bounds.
    small_peak, _ = peak_of_sync(10_000)
    peak, size = peak_of_sync(150_000)
    segment = size // (150_000 // SEGMENT)
    print(
        f"\npeak {peak / 1e6:.1f} MB for a backlog of {size / 1e6:.1f} MB "
        f"({small_peak / 1e6:.1f} MB for one of 10,000 events; a segment is "
        f"{segment / 1e6:.1f} MB)"
    )
    assert peak < size / 8
    assert peak < 4 * segment
    assert peak < small_peak * 1.5  # does not grow with the backlog
    led.close()


# -- the printer ----------------------------------------------------------------------------


def p(sent: int, backlog: int = 1_000_000, *, done: bool = False) -> SyncProgress:
    rate = 98_000.0
    eta = 0.0 if done else (backlog - sent) / rate
    return SyncProgress(sent, backlog, sent / rate, rate, eta, done)


def test_progress_line() -> None:
    assert format_progress(p(412_000)) == (
        "sync: 412,000 / 1,000,000 events sent (41 %), 98,000 events/s, about 6 s left"
    )
    assert format_progress(p(1_000_000, done=True)) == (
        "sync: 1,000,000 / 1,000,000 events sent (100 %), 98,000 events/s, done in 10.2 s"
    )
    assert format_progress(p(5_000, 20_000_000)).endswith("about 3 min 24 s left")
    assert format_progress(p(5_000, 1_000_000_000)).endswith("about 2 h 50 min left")
    assert format_progress(p(999_999)).endswith("(99 %), 98,000 events/s, about 0 s left")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_printer_rewrites_one_line_on_a_terminal() -> None:
    out = Tty()
    pr = ProgressPrinter(out)
    assert pr.tty
    for sent in (5_000, 412_000, 1_000_000):
        pr(p(sent, done=sent == 1_000_000))
    pr.close()  # the last report ended the line already
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("done in 10.2 s\n")
    frames = text.rstrip("\n").split("\r")[1:]
    assert len(frames) == 3 and all(PROGRESS.fullmatch(f.rstrip()) for f in frames)
    # Each frame covers the one before it (a shorter line is padded over a longer one).
    assert all(len(b) >= len(a.rstrip()) for a, b in pairwise(frames))

    stopped = Tty()
    pr = ProgressPrinter(stopped)
    pr(p(5_000))
    pr.close()  # the run stopped on an error: its message starts on a line of its own
    assert stopped.getvalue().startswith("\rsync: 5,000 / ") and stopped.getvalue().endswith("\n")


def test_printer_writes_a_line_every_few_seconds_to_a_log() -> None:
    out = io.StringIO()
    now = [100.0]
    pr = ProgressPrinter(out, clock=lambda: now[0])
    assert not pr.tty
    for sent in range(5_000, 1_000_000, 5_000):  # a report every half second for 102 s
        pr(p(sent))
        now[0] += 0.5
    pr(p(1_000_000, done=True))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert all(PROGRESS.fullmatch(line) for line in lines)
    assert len(lines) == 51  # one every 2 s of the 100 s, and the last
    assert lines[0].startswith("sync: 5,000 / ") and lines[-1].endswith("done in 10.2 s")

    empty = io.StringIO()
    ProgressPrinter(empty)(SyncProgress(0, 0, 0.01, 0.0, 0.0, done=True))
    assert empty.getvalue() == ""  # nothing to send: only the summary


# -- ctgtp edge sync ------------------------------------------------------------------------


def home_ledger(home: Path) -> Ledger:
    """The home's ledger, opened as its agent's writer would."""
    unit_id = json.loads((home / "config.json").read_text())["unit_id"]
    signer = load_or_create_unit_key(home, unit_id)
    return Ledger.open(home / "edge.db", signer, clock())


def unit_home(
    srv: Srv, tmp_path: Path, published: tuple[Path, Path], unit_id: str, backlog: int
) -> Path:
    """An initialised home (its unit enrolled) whose ledger holds ``backlog`` events."""
    home = tmp_path / "home"
    mbr, pub = published
    ok(at(home, "init", "--unit", unit_id, "--mbr", str(mbr), "--publisher-key", str(pub),
          "--users", str(EXAMPLES / "users.yaml"),
          "--materials", str(EXAMPLES / "materials.yaml")))  # fmt: skip
    led = home_ledger(home)
    srv.enrol(led.signer)
    fill(led, backlog, group=5_000)
    led.close()
    return home


def sync_args(srv: Srv, home: Path, tmp_path: Path) -> list[str]:
    key = tmp_path / "server.pub"
    key.write_bytes(srv.key.to_json())
    return ["edge", "sync", "--home", str(home), "--server", srv.url, "--server-key", str(key)]


def test_cli_prints_progress_to_stderr(
    srv: Srv, tmp_path: Path, published: tuple[Path, Path]
) -> None:
    # 12 segments: the run takes seconds (2.5 to 4 s on the 2 test cores), long enough that the
    # client's reports (one per PROGRESS_INTERVAL_S) outnumber what the log printer may write in
    # that time (one per 2 s, and the last); 100,000 events showed nothing more, at twice the time.
    home = unit_home(srv, tmp_path, published, "UNIT-C1", 60_000)
    args = sync_args(srv, home, tmp_path)
    r = ctgtp(*args)
    assert r.returncode == 0, r.stderr
    # The summary alone on stdout, as before.
    assert r.stdout == (
        "synced: 60000 events pushed in 12 segments (0 already there, 0 retries); "
        "server head 60000, local head 60000\n"
    )
    # Not a terminal: one line per report, at most one per 2 s, and the last.
    lines = r.stderr.splitlines()
    assert lines and "\r" not in r.stderr
    found = [PROGRESS.fullmatch(line) for line in lines]
    assert all(found), r.stderr
    sent = [int(m["sent"].replace(",", "")) for m in found if m]
    assert sent == sorted(set(sent)) and sent[-1] == 60_000
    assert {m["backlog"] for m in found if m} == {"60,000"}
    assert lines[-1].startswith("sync: 60,000 / 60,000 events sent (100 %), ")
    took = float(lines[-1].rsplit("done in ", 1)[1].removesuffix(" s"))
    assert len(lines) <= took / 2 + 2
    assert srv.unit("UNIT-C1") == {"head_seq": 60_000, "events": 60_000}

    # --quiet: the summary only.
    led = home_ledger(home)
    fill(led, 10_000)
    led.close()
    q = ctgtp(*args, "--quiet")
    assert q.returncode == 0, q.stderr
    assert q.stderr == "" and q.stdout.startswith("synced: 10000 events pushed in 2 segments")
    # Nothing left to send: no progress, the summary.
    again = ctgtp(*args)
    assert again.stderr == "" and again.stdout.startswith("synced: 0 events pushed in 0 segments")


def test_cli_rewrites_one_line_on_a_terminal(
    srv: Srv, tmp_path: Path, published: tuple[Path, Path]
) -> None:
    # 4 segments: a report after the first, rewritten by the last (what this test shows does not
    # grow with the backlog; it took 60,000 events).
    home = unit_home(srv, tmp_path, published, "UNIT-C2", 20_000)
    # stderr on a pseudo-terminal, as an operator at the station sees it.
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ctgtp", *sync_args(srv, home, tmp_path)],
            stdout=subprocess.PIPE, stderr=slave, text=True, check=False,
        )  # fmt: skip
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    shown = b"".join(chunks).decode()
    assert proc.returncode == 0, shown
    assert proc.stdout.startswith("synced: 20000 events pushed in 4 segments")
    # One line, rewritten: every report starts with \r, and only the last ends the line.
    assert shown.startswith("\rsync: ") and shown.endswith("\r\n")  # the terminal adds \r to \n
    assert shown.count("\n") == 1
    frames = [f.rstrip() for f in shown.removesuffix("\r\n").split("\r")[1:]]
    assert len(frames) >= 2 and all(PROGRESS.fullmatch(f) for f in frames), shown
    assert frames[0].startswith("sync: 5,000 / 20,000 events sent (25 %)")
    assert frames[-1].startswith("sync: 20,000 / 20,000 events sent (100 %)")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # filling a million events takes a while on a 2-core machine
def test_a_million_event_backlog_syncs_in_one_run_of_the_cli(
    srv: Srv, tmp_path: Path, published: tuple[Path, Path]
) -> None:
    n = 1_000_000
    home = unit_home(srv, tmp_path, published, "UNIT-M1", n)
    with sqlite3.connect(home / "edge.db") as con:
        size = int(con.execute("SELECT sum(length(line) + 1) FROM events").fetchone()[0])
    # The command as the operator runs it, reporting its own peak resident memory on exit
    # (VmHWM: ru_maxrss would count this test process's, inherited across the fork).
    report_rss = (
        "import atexit, sys; atexit.register(lambda: print(next(line for line in "
        "open('/proc/self/status') if line.startswith('VmHWM')), end='', file=sys.stderr)); "
        "from ctgtp.cli import main; sys.argv[0] = 'ctgtp'; main()"
    )
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", report_rss, *sync_args(srv, home, tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    dt = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == (
        "synced: 1000000 events pushed in 200 segments (0 already there, 0 retries); "
        "server head 1000000, local head 1000000\n"
    )
    assert srv.unit("UNIT-M1") == {"head_seq": n, "events": n}
    *progress, rss_line = r.stderr.splitlines()
    assert len(progress) >= 2 and all(PROGRESS.fullmatch(line) for line in progress)
    assert progress[-1].startswith("sync: 1,000,000 / 1,000,000 events sent (100 %)")
    assert rss_line.startswith("VmHWM:") and rss_line.endswith(" kB")
    maxrss = int(rss_line.split()[1]) * 1024
    print(
        f"\n{n:,} events ({size / 1e6:.0f} MB) in one run: {dt:.1f} s with the command's start, "
        f"{progress[-1]}; peak RSS {maxrss / 1e6:.0f} MB"
    )
    assert maxrss < size / 3  # the backlog is never held in memory
