"""Production volume (issue 16): a 10-day CAR-T batch holds 0.5-1 M instrument readings.

At each fill level (default 0, 100,000 and 1,000,000 readings already in the running batch):

1. Operator actions on the edge: the real ``edge.engine.Engine`` over the example CAR-T master
   batch record.  ``expectation`` (what ``edge show`` does), a scan of a wrong COI (refused and
   recorded: scan.rejected plus a deviation), ``raise_deviation``, and the scans, values,
   calculation and signatures that take the batch on through its steps.  "warm": the engine that
   has run the batch all along (its fold is cached); "cold": a new Engine over the same open
   ledger for each action, as each ``ctgtp edge`` command makes one.  Ceiling: a single-row
   durable SQLite commit (WAL, synchronous=FULL) in the same run.  Goal: p99 <= 50 ms.
   An e-signature re-enters the password.  The first check of a person's continuous session
   (their sign-in at the kiosk, timed here at each level for each operator as "sign-in") is the
   full argon2id check, about 0.15 s by design; a re-entry within the session is checked against
   an in-memory verifier (``ebr_core.reentry``).  Signatures are their own figure,
   goal p99 <= 50 ms, with one durable commit as the ceiling; sign-ins are reported, not held
   to the goal.  One more
   figure per level: a command's start (open and verify the ledger read-only, a new engine,
   ``show``), against SQLite's own ``PRAGMA integrity_check`` of the same file (which the open
   runs).
2. MQTT ingest rate through a real mosquitto into ``MqttIngest`` bound to the running batch
   (context = ``engine.running``, the MBR's telemetry limits), best of two rounds of 20,000
   readings.  Ceiling: raw paho QoS 1 through the same broker in the same rounds (bench/mqtt.py's
   ``raw_rate``).  Goal: rate at the last level / rate at 0 >= 0.9 (its own row, with the rate at
   0 in the ceiling column).
3. The server, in its own process, with that batch among 10,000 batches (the others synced from
   four units' ledgers, a handful of events each), on SQLite and on PostgreSQL: the QA batch view
   (``GET /v1/batches/{id}``) and a review e-signature p99 (goal <= 300 ms), and ``report.pdf``
   (goal <= 5 s).  Ceiling: ``GET /health`` on the same server and connection (plus one password
   check for the signature).
4. Edge peak RSS (VmHWM) of this process, which does the edge work (ledger, engine, MQTT ingest;
   the fill and the raw ceilings run in it too), read when the edge part is done.  The server
   part's modules are imported after that.  Goal < 300 MB.  Ceiling column: this process's RSS
   after its imports, before any work.

The ledger is filled the way the ingest writes: ``Ledger.append_many`` groups of 5,000 readings of
8 channels, bound to the running step.  Progress and timings go to stderr as it runs.
``--quick``: levels 0 and 100,000 and 1,000 batches on the server.  Every sample count is capped
by a time budget (at least a few samples each), so a slow build still finishes.
"""

from __future__ import annotations

import argparse
import math
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the tests' set-up helpers (tests/edge, tests/server)
from _common import emit
from argon2 import PasswordHasher
from mqtt import N as MQTT_N
from mqtt import raw_rate

from ebr_core.document import content_hash, load_yaml
from ebr_core.keys import UnitSigner
from ebr_core.mbr import Mbr, parse_mbr
from ebr_core.quantity import quantity
from edge.engine import Engine, ScanRejected
from edge.ledger import Append, Ledger
from edge.materials import load_materials
from edge.transports.mqtt import MqttIngest, identity
from edge.users import User, load_users
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker
from tests.edge.conftest import COI, EXAMPLES, GS, PW

if TYPE_CHECKING:
    import httpx

# The server part imports its modules (the server, its HTTP client, the QA test helpers) when it
# starts, so the edge part's peak RSS holds only what the edge needs (see rss_mb).

FULL_LEVELS = (0, 100_000, 1_000_000)
QUICK_LEVELS = (0, 100_000)
FULL_BATCHES = 10_000
QUICK_BATCHES = 1_000
FILL_GROUP = 5_000
MQTT_ROUNDS = 2  # of MQTT_N readings each, per level
RUN_READINGS = 1_000_000  # a 10-day run: the curves below span this many readings
UNIT = "UNIT-SCALE"
TOPIC = f"ctgtp/{UNIT}/bioreactor/telemetry"  # the dedupe key of a reading names its device
BOOT = "boot-1"
BATCH = "B-SCALE-1"
WRONG_COI = "&/CHA999926ZZZ999"
BAG = "01095060001343451727123121BAG1" + GS + "251"
T0 = datetime(2026, 11, 24, 8, tzinfo=UTC)  # the example materials hold at this date
GOAL_ACTION_P99_MS = 50
GOAL_SERVER_P99_MS = 300
GOAL_REPORT_S = 5
GOAL_RSS_MB = 300
GOAL_INGEST_RATIO = 0.9

STARTED = time.monotonic()


def note(msg: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f} s] {msg}", file=sys.stderr, flush=True)


def clock() -> datetime:
    """Wall time since the bench began, from a fixed date (the example lots and calibrations
    are valid then, whatever today is)."""
    return T0 + timedelta(seconds=time.monotonic() - STARTED)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (with fewer than 100 samples, p99 is the largest)."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out["VmRSS"], out["VmHWM"]


# -- readings --------------------------------------------------------------------------------

CHANNELS: tuple[tuple[str, str], ...] = (
    ("temperature", "Cel"),
    ("ph", "[pH]"),
    ("dissolved_oxygen", "%"),
    ("co2", "%"),
    ("agitation", "/min"),
    ("viable_cell_density", "10*6/mL"),
    ("glucose", "mmol/L"),
    ("lactate", "mmol/L"),
)


class Readings:
    """Realistic values of the 8 channels of a 10-day run (reading ``n`` of ``RUN_READINGS``):
    temperature and CO2 held, pH drifting down, dissolved oxygen oscillating around its setpoint
    and losing ground, cells growing 50-fold, glucose consumed and lactate produced."""

    def __init__(self, mbr: Mbr) -> None:
        self.rng = random.Random(16)
        self.limits = mbr.telemetry
        self._cache: dict[tuple[str, str], tuple[dict[str, str], str | None]] = {}

    def value(self, n: int) -> tuple[str, str, str]:
        ch, unit = CHANNELS[n % len(CHANNELS)]
        f, g = min(n / RUN_READINGS, 1.0), self.rng.gauss
        match ch:
            case "temperature":
                v = f"{37.0 + g(0, 0.08):.2f}"
            case "ph":
                v = f"{7.35 - 0.25 * f + g(0, 0.02):.2f}"
            case "dissolved_oxygen":
                v = f"{40 + 8 * math.sin(n / 4000) - 12 * f + g(0, 1):.1f}"
            case "co2":
                v = f"{5.0 + g(0, 0.05):.2f}"
            case "agitation":
                v = f"{120 + g(0, 1):.0f}"
            case "viable_cell_density":
                v = f"{0.5 * 50**f * (1 + g(0, 0.02)):.3f}"
            case "glucose":
                v = f"{25 - 17 * f + g(0, 0.2):.2f}"
            case _:
                v = f"{2 + 18 * f + g(0, 0.2):.2f}"
        return ch, v, unit

    def append(self, n: int, batch_id: str | None, step: str | None) -> Append:
        """Reading ``n`` as MqttIngest records it (quantity, device time, message id, step, and
        the limit status of a channel the MBR sets limits for)."""
        ch, v, unit = self.value(n)
        cached = self._cache.get((ch, v))
        if cached is None:
            lim = self.limits.get(ch)
            judged = lim.judge(Decimal(v)) if lim is not None and lim.unit == unit else None
            cached = self._cache[(ch, v)] = (quantity(v, unit), judged)
        q, judged = cached
        msg_id = f"{UNIT}-fill-{n}"
        payload: dict[str, Any] = {
            "channel": ch,
            "value": q,
            "device_time": (T0 + timedelta(seconds=0.864 * n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "msg_id": msg_id,
            "step": step,
        }
        if judged is not None:
            payload["limit"] = judged
        key = identity(TOPIC, {"msg_id": msg_id, "boot": BOOT})  # as the ingest keys a message
        return Append("reading.recorded", payload, batch_id, None, f"mqtt:{key}:r")


# -- the edge ---------------------------------------------------------------------------------

Action = tuple[str, Callable[[Engine], object]]


def _sign(user: str, meaning: str = "performed") -> Action:
    return ("sign", lambda e: e.sign(BATCH, PW[user], meaning, user))


def _sign_in(user: str) -> Action:
    return ("sign-in", lambda e: e.authenticate(user, PW[user], batch_id=None, step=None))


def _scan(raw: str) -> Action:
    return ("scan (accepted)", lambda e: e.scan(BATCH, raw, "op.alice"))


def _value(name: str, v: str, unit: str) -> Action:
    return ("record_value", lambda e: e.record_value(BATCH, name, v, unit, "op.alice"))


# The batch goes on through its steps in three parts, each ending where the next scan expected is
# a patient's (the COI at receipt, the COI at activation, the final product bag), so a wrong-COI
# scan is a legal action at the start of every level.
SEGMENTS: tuple[tuple[Action, ...], ...] = (
    (
        _scan(COI),
        _sign("op.alice"),
        _sign("op.bob", "verified"),
        _value("apheresis_volume", "200", "mL"),
        _sign("op.alice"),
        _scan("010950600013437617271231" + "21CART-0001"),
        _scan("8004UNIT-0001"),
        _sign("op.alice"),
        _scan("010950600013435210TM2611"),
        _scan("010950600013436910IL2-0042"),
        _sign("op.alice"),
        _scan("010950600013438310ACT-7731"),
    ),
    (
        _scan(COI),
        _sign("op.alice"),
        _sign("op.chen", "verified"),
        _scan("010950600013439010LV-19-0007"),
        _value("moi", "3", "1"),
        _sign("op.alice"),
        _sign("op.chen", "verified"),
        _value("expansion_days", "9", "d"),
        _sign("op.alice"),
        _value("viable_cell_density", "2.1", "10*6/mL"),
        _value("viability", "91.5", "%"),
        _sign("op.alice"),
        _value("viable_per_ml", "25000000", "/mL"),
        _value("harvest_volume", "60", "mL"),
        _value("car_percent", "40", "%"),
        _value("patient_weight", "72.5", "kg"),
        _sign("op.alice"),
        ("calculate", lambda e: e.calculate(BATCH, "op.alice")),
        _sign("op.alice"),
        _sign("op.chen", "verified"),
    ),
    (
        _scan(BAG + COI),
        _sign("op.alice"),
        _sign("op.chen", "verified"),
        _value("end_temperature", "-90", "Cel"),
        _sign("op.alice"),
        _value("qc_samples_taken", "5", "1"),
        _sign("op.alice"),  # completes the batch
    ),
)


def _wrong_scan(raw: str) -> Callable[[Engine], object]:
    def go(e: Engine) -> None:
        try:
            e.scan(BATCH, raw, "op.alice")
        except ScanRejected:
            return
        raise RuntimeError(f"the wrong COI scan {raw!r} was accepted")

    return go


@dataclass
class Edge:
    path: Path
    signer: UnitSigner
    ledger: Ledger
    mbr: Mbr
    new_engine: Callable[[], Engine]
    warm: Engine
    readings: int = 0  # in the batch
    # (level index, mode, action) -> milliseconds
    samples: dict[tuple[int, str, str], list[float]] = field(default_factory=dict)

    def time(self, level: int, mode: str, action: Action) -> float:
        label, fn = action
        t = time.perf_counter()
        fn(self.warm if mode == "warm" else self.new_engine())
        ms = ms_since(t)
        self.samples.setdefault((level, mode, label), []).append(ms)
        return ms


def open_edge(tmp: Path) -> Edge:
    content = load_yaml((EXAMPLES / "car_t_mbr.yaml").read_text())
    mbr, mbr_hash = parse_mbr(content), content_hash(content)
    users = load_users((EXAMPLES / "users.yaml").read_text())
    materials = load_materials((EXAMPLES / "materials.yaml").read_text())
    signer = UnitSigner.generate(UNIT)
    path = tmp / "edge.db"
    ledger = Ledger.open(path, signer, clock)

    def new_engine() -> Engine:
        return Engine(ledger, mbr, mbr_hash, users, materials, clock)

    warm = new_engine()
    warm.start_batch(BATCH, COI, "op.alice", PW["op.alice"])
    return Edge(path, signer, ledger, mbr, new_engine, warm)


def fill(edge: Edge, gen: Readings, upto: int) -> None:
    """Readings into the running batch until it holds ``upto``, in commit groups of
    ``FILL_GROUP`` (the running step read once, as the ingest reads it once per group)."""
    need = upto - edge.readings
    if need <= 0:
        return
    batch_id, step = edge.warm.running(BATCH)
    t0, last_note = time.perf_counter(), time.perf_counter()
    start = edge.readings
    for g in range(start, upto, FILL_GROUP):
        n = min(FILL_GROUP, upto - g)
        edge.ledger.append_many([gen.append(i, batch_id, step) for i in range(g, g + n)])
        edge.readings += n
        if time.perf_counter() - last_note > 10:
            last_note = time.perf_counter()
            rate = (edge.readings - start) / (last_note - t0)
            note(f"  filled {edge.readings:,} readings ({rate:,.0f}/s)")
    dt = time.perf_counter() - t0
    note(f"filled the batch to {edge.readings:,}: {need:,} in {dt:.1f} s ({need / dt:,.0f}/s)")


class RawCommit:
    """The ceiling of an operator action: one row, one durable commit (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.execute("CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY, line BLOB)")
        self.n = 0

    def sample(self, count: int) -> list[float]:
        out = []
        for _ in range(count):
            self.n += 1
            t = time.perf_counter()
            self.con.execute("BEGIN IMMEDIATE")
            self.con.execute("INSERT INTO t VALUES (?, ?)", (self.n, b"x" * 400))
            self.con.execute("COMMIT")
            out.append(ms_since(t))
        return out


def password_checks(count: int, user: User | None = None, password: str = "") -> list[float]:
    """Ceiling part of an e-signature: one argon2id verification, of ``user``'s hash from the
    edge's users file, or else of a hash with the library's parameters (as the server makes)."""
    if user is None:
        h = PasswordHasher()
        password = "Bench-Password-2026!"
        hashed = h.hash(password)

        def check() -> bool:
            return h.verify(hashed, password)
    else:

        def check() -> bool:
            return user.check_password(password)

    out = []
    for _ in range(count):
        t = time.perf_counter()
        if not check():
            raise RuntimeError("the password check failed")
        out.append(ms_since(t))
    return out


def command_start(edge: Edge) -> tuple[float, float]:
    """(ms to open the ledger read-only, verified, with a new engine and its ``show``; ms of
    SQLite's own integrity check of the same file)."""
    t = time.perf_counter()
    led = Ledger.open(edge.path, edge.signer, clock, writer=False)
    try:
        e = Engine(led, edge.mbr, edge.warm.mbr_hash, edge.warm.users, edge.warm.materials, clock)
        e.expectation(BATCH)
        opened = ms_since(t)
    finally:
        led.close()
    con = sqlite3.connect(f"file:{edge.path}?mode=ro", uri=True)
    t = time.perf_counter()
    ok = con.execute("PRAGMA integrity_check").fetchone()[0]
    raw = ms_since(t)
    con.close()
    assert ok == "ok", ok
    return opened, raw


@dataclass
class Budget:
    expectation_per_mode: int = 60
    writes_per_mode: int = 10  # wrong scans and deviations (each a deviation in the record)
    edge_seconds: float = 90.0
    view_samples: int = 200
    sign_samples: int = 100
    report_samples: int = 3
    server_seconds: float = 60.0


def level_actions(edge: Edge, level: int, segment: tuple[Action, ...], budget: Budget) -> None:
    """The operator's actions at this level: the repeatable ones, warm and cold interleaved (as
    many as the budget allows), then the segment that takes the batch on (modes alternating)."""
    exp = edge.warm.expectation(BATCH)
    assert exp.scans and exp.scans[0].role in ("patient_material", "final_product"), exp
    wrong = WRONG_COI if exp.scans[0].role == "patient_material" else BAG + WRONG_COI
    show: Action = ("expectation (show)", lambda e: e.expectation(BATCH))
    refused: Action = ("scan (wrong COI, refused)", _wrong_scan(wrong))
    deviation: Action = (
        "raise_deviation",
        lambda e: e.raise_deviation(BATCH, "bench: bag label smudged, re-printed", "op.alice"),
    )
    every = max(1, budget.expectation_per_mode // budget.writes_per_mode)
    for user in ("op.alice", "op.bob", "op.chen"):  # as each signs in at the kiosk
        edge.time(level, "warm", _sign_in(user))
    t0 = time.perf_counter()
    for r in range(budget.expectation_per_mode):
        for mode in ("warm", "cold"):
            edge.time(level, mode, show)
            if r % every == 0 and r // every < budget.writes_per_mode:
                edge.time(level, mode, refused)
                edge.time(level, mode, deviation)
        if r >= 2 and time.perf_counter() - t0 > budget.edge_seconds:
            note(f"  edge budget spent after {r + 1} rounds")
            break
    for i, action in enumerate(segment):
        edge.time(level, "warm" if i % 2 == 0 else "cold", action)


def edge_figures(
    edge: Edge,
    level: int,
    readings: int,
    commit: list[float],
    passwords: list[float],
    start: tuple[float, float],
) -> None:
    by_action: dict[str, dict[str, dict[str, float]]] = {}
    for mode in ("warm", "cold"):
        ms: list[float] = []
        detail: dict[str, dict[str, float]] = {}
        for (lv, md, label), values in edge.samples.items():
            if lv != level or md != mode or label in ("sign", "sign-in"):
                continue
            ms += values
            detail[label] = {
                "n": len(values),
                "p50_ms": round(pct(values, 50), 2),
                "max_ms": round(max(values), 2),
            }
        by_action[mode] = detail
        for label, d in sorted(detail.items()):
            note(
                f"  {mode:<4} {label:<28} n={d['n']:<3} p50 {d['p50_ms']:8.2f} ms  "
                f"max {d['max_ms']:8.2f} ms"
            )
        for p in (50, 99):
            emit(
                f"edge operator action at {readings:,} readings, {mode} engine (p{p} ms)",
                pct(ms, p),
                "ms",
                pct(commit, p),
                samples=len(ms),
                readings=readings,
                goal_p99_ms=GOAL_ACTION_P99_MS,
                actions=detail,
                ceiling_is="one-row durable SQLite commit (WAL, synchronous=FULL)",
            )
    signs = [
        v
        for (lv, _md, label), values in edge.samples.items()
        if lv == level and label == "sign"
        for v in values
    ]
    sign_ins = edge.samples.get((level, "warm", "sign-in"), [])
    if sign_ins:
        note(f"  sign-ins (full argon2id check) n={len(sign_ins)} max {max(sign_ins):.1f} ms "
             f"(password check alone: p50 {pct(passwords, 50):.1f} ms)")  # fmt: skip
    if signs:
        note(f"  e-signatures n={len(signs)} p50 {pct(signs, 50):.1f} ms max {max(signs):.1f} ms")
        emit(
            f"edge e-signature at {readings:,} readings, warm and cold (p99 ms)",
            pct(signs, 99),
            "ms",
            pct(commit, 99),
            samples=len(signs),
            p50_ms=round(pct(signs, 50), 2),
            readings=readings,
            goal_p99_ms=GOAL_ACTION_P99_MS,
            ceiling_is="one-row durable SQLite commit (the signature is one commit group)",
        )
    emit(
        f"edge command start at {readings:,} readings (open+verify ledger, new engine, show) (ms)",
        start[0],
        "ms",
        start[1],
        readings=readings,
        ceiling_is="SQLite PRAGMA integrity_check of the same file (the open runs it)",
    )


def ingest_rate(edge: Edge, ingest: MqttIngest, sim: BioreactorSim, gen: Readings) -> float:
    """Readings/s from the simulated bioreactor through the broker into the ledger (acked after
    the group commit), as bench/mqtt.py measures it."""
    before = ingest.stats.recorded
    t0 = time.perf_counter()
    for i in range(MQTT_N):
        ch, v, unit = gen.value(edge.readings + i)
        sim.reading(ch, v, unit)
    while ingest.stats.recorded < before + MQTT_N and time.perf_counter() - t0 < 300:
        if ingest.error:
            raise RuntimeError(ingest.error)
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    got = ingest.stats.recorded - before
    if got < MQTT_N:
        raise RuntimeError(f"the ingest recorded {got} of {MQTT_N} readings in {dt:.0f} s")
    edge.readings += got
    return got / dt


def run_edge(tmp: Path, levels: list[int], budget: Budget) -> Edge:
    edge = open_edge(tmp)
    gen = Readings(edge.mbr)
    raw = RawCommit(tmp / "raw.db")
    rates: list[tuple[int, float]] = []
    with Broker() as broker:
        ingest = MqttIngest(
            edge.ledger,
            "127.0.0.1",
            broker.port,
            UNIT,
            context=lambda: edge.warm.running(BATCH),
            limits=edge.mbr.telemetry,
        ).start()
        assert ingest.subscribed.wait(10), "the broker granted no subscription"
        sim = BioreactorSim("127.0.0.1", broker.port, UNIT)
        try:
            for i, level in enumerate(levels):
                fill(edge, gen, level)
                readings = edge.readings
                note(f"level {i}: {readings:,} readings in batch {BATCH}")
                # The last level takes the batch to its end, but its completing signature waits
                # until the ingest ran (a completed batch binds no more readings).
                if i == len(levels) - 1:
                    rest = [a for s in SEGMENTS[i:] for a in s]
                    segment, last = tuple(rest[:-1]), rest[-1:]
                else:
                    segment, last = (SEGMENTS[i] if i < len(SEGMENTS) else ()), []
                t = time.perf_counter()
                level_actions(edge, i, segment, budget)
                note(f"  operator actions done in {time.perf_counter() - t:.1f} s")
                commit = raw.sample(200)
                passwords = password_checks(10, edge.warm.users["op.alice"], PW["op.alice"])
                start = command_start(edge)
                note(f"  command start {start[0]:,.0f} ms (integrity check {start[1]:,.0f} ms)")
                # Best of MQTT_ROUNDS rounds, each the raw ceiling then the ingest (the
                # machine's speed drifts; both are taken in the same rounds).
                ceiling, rate = 0.0, 0.0
                for _ in range(MQTT_ROUNDS):
                    ceiling = max(ceiling, raw_rate(broker.port))
                    rate = max(rate, ingest_rate(edge, ingest, sim, gen))
                rates.append((readings, rate))
                note(f"  mqtt ingest {rate:,.0f} readings/s (raw broker QoS 1: {ceiling:,.0f}/s)")
                for action in last:
                    edge.time(i, "warm", action)
                edge_figures(edge, i, readings, commit, passwords, start)
                emit(
                    f"mqtt ingest into the running batch at {readings:,} readings",
                    rate,
                    "readings/s",
                    ceiling,
                    readings=readings,
                    ceiling_is="raw paho QoS 1 publish -> subscribe through the same broker",
                )
        finally:
            sim.close()
            ingest.stop()
    if ingest.error:
        raise RuntimeError(ingest.error)
    if len(rates) > 1 and rates[0][0] == 0:
        (_, r0), (n1, r1) = rates[0], rates[-1]
        emit(
            f"mqtt ingest rate at {n1:,} readings vs at 0 (ceiling column: the rate at 0)",
            r1,
            "readings/s",
            r0,
            goal_ratio=GOAL_INGEST_RATIO,
        )
    st = edge.warm.state(BATCH)
    note(
        f"batch {BATCH}: {st.status}, {edge.readings:,} readings, {len(st.deviations)} "
        f"deviations, ledger head {edge.ledger.head[0]:,}"
    )
    return edge


# -- the server -------------------------------------------------------------------------------


def filler_batch(b: int) -> list[Append]:
    """A small completed batch: a start, two readings, a value, a signature, for one batch in
    seven a refused scan with its deviation, the end."""
    bid, coi, op = f"B-F{b:05d}", f"&/CHA999926{b:06d}", "op.alice"
    step = "receipt/apheresis/inspect"
    started = {
        "coi": coi,
        "mbr_id": "CAR-T-CARTRIDGE",
        "mbr_version": "3",
        "mbr_hash": "0" * 64,
        "product": "p",
    }
    items = [Append("batch.started", started, bid, op)]
    for k in range(2):
        reading = {
            "channel": "temperature",
            "value": {"value": "37.0", "unit": "Cel"},
            "device_time": "2026-11-24T08:00:00.000000Z",
            "msg_id": f"F{b}-{k}",
            "step": None,
            "limit": "ok",
        }
        key = identity(TOPIC, {"msg_id": f"F{b}-{k}", "boot": BOOT})
        items.append(Append("reading.recorded", reading, bid, None, f"mqtt:{key}:r"))
    value = {
        "step": step,
        "name": "apheresis_volume",
        "value": {"value": "200", "unit": "mL"},
        "limit": "ok",
    }
    signature = {
        "step": step,
        "user_id": op,
        "printed_name": "Alice Martin",
        "meaning": "performed",
        "signed_hash": "1" * 64,
    }
    items += [
        Append("value.recorded", value, bid, op),
        Append("signature.applied", signature, bid, op),
    ]
    if b % 7 == 0:
        scan = "receipt/apheresis/coi-scan"
        rejected = {
            "step": scan,
            "role": "patient_material",
            "raw": WRONG_COI,
            "expected": coi,
            "reason": "wrong patient",
        }
        deviation = {
            "deviation_id": f"DEV-{bid}-001",
            "step": scan,
            "category": "scan_mismatch",
            "reason": "wrong patient",
            "severity": "major",
        }
        items += [
            Append("scan.rejected", rejected, bid, op),
            Append("deviation.raised", deviation, bid, op),
        ]
    items.append(Append("batch.completed", {}, bid, op))
    return items


def filler_ledgers(tmp: Path, batches: int, units: int = 4) -> list[tuple[Ledger, str]]:
    """``batches`` small completed batches (:func:`filler_batch`) from ``units`` units at two
    sites, in commit groups of about 2,000 events."""
    out = []
    t0 = time.perf_counter()
    for u in range(units):
        led = Ledger.open(tmp / f"fill-{u}.db", UnitSigner.generate(f"UNIT-F{u}"), clock)
        items: list[Append] = []
        for b in range(u, batches, units):
            items += filler_batch(b)
            if len(items) >= 2_000:
                led.append_many(items)
                items = []
        if items:
            led.append_many(items)
        out.append((led, "SITE-A" if u < units // 2 else "SITE-B"))
    events = sum(led.head[0] for led, _ in out)
    took = time.perf_counter() - t0
    note(f"{batches:,} other batches: {events:,} events in {units} unit ledgers in {took:.1f} s")
    return out


def timed(fn: Callable[[], object], count: int, seconds: float, least: int) -> list[float]:
    out: list[float] = []
    t0 = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        fn()
        out.append(ms_since(t))
        if len(out) >= least and time.perf_counter() - t0 > seconds:
            break
    return out


def ok(r: httpx.Response, status: int = 200) -> httpx.Response:
    if r.status_code != status:
        raise RuntimeError(
            f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}"
        )
    return r


def login(base: str, user_id: str) -> httpx.Client:
    import httpx

    from tests.server.qa import PASSWORD

    r = ok(httpx.post(base + "/v1/auth/token", json={"user_id": user_id, "password": PASSWORD}))
    return httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {r.json()['token']}"}, timeout=600
    )


def run_server(
    label: str, db_url: str, tmp: Path, edge: Edge, fillers: list[tuple[Ledger, str]], b: Budget
) -> None:
    import httpx
    from sync import ADMIN, serve

    from edge.sync import SyncClient
    from tests.server.qa import (
        PASSWORD,
        PEOPLE,
        TEMPORARY,
        enter_results,
        example_results,
        spec_content,
    )
    from tests.server.qa import sign as qa_sign

    base, proc = serve(db_url, tmp / f"srv-{label}")
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=600
        ) as admin:
            for led, site in [*fillers, (edge.ledger, "SITE-A")]:
                ok(admin.post("/admin/units", json={
                    "site_id": site, "unit_id": led.unit_id,
                    "public_key": led.signer.public.to_json().decode(),
                }), 201)  # fmt: skip
            t = time.perf_counter()
            for led, _ in fillers:
                SyncClient(led, base).sync_once()
            dt = time.perf_counter() - t
            n = sum(led.head[0] for led, _ in fillers)
            note(f"{label}: synced {n:,} events of {len(fillers)} units in {dt:.1f} s")
            t = time.perf_counter()
            rep = SyncClient(edge.ledger, base).sync_once()
            dt = time.perf_counter() - t
            note(f"{label}: synced the big batch's unit, {rep.pushed:,} events in {dt:.1f} s "
                 f"({rep.pushed / dt:,.0f}/s)")  # fmt: skip
            for uid in ("rev.a", "qa.global"):
                name, grants = PEOPLE[uid]
                ok(admin.post("/v1/people", json={
                    "user_id": uid, "printed_name": name, "password": TEMPORARY,
                    "roles": [{"role": r, "site_id": s} for r, s in grants], "reason": "bench",
                }), 201)  # fmt: skip
                ok(admin.post("/v1/auth/password", json={  # its owner makes it their own
                    "user_id": uid, "current_password": TEMPORARY, "new_password": PASSWORD,
                }))  # fmt: skip
        with login(base, "qa.global") as qa:
            ok(qa.post("/v1/specs", json={"content": spec_content(), "reason": "bench"}), 201)
        with login(base, "rev.a") as rev:
            ok(enter_results(rev, BATCH, example_results()), 201)
            for _ in range(30):
                ok(rev.get("/health"))
            health = timed(lambda: ok(rev.get("/health")), 300, 30, 50)
            t = time.perf_counter()
            view = ok(rev.get(f"/v1/batches/{BATCH}")).json()
            note(f"{label}: first batch view {ms_since(t):,.0f} ms "
                 f"({view['events']:,} events)")  # fmt: skip
            views = timed(
                lambda: ok(rev.get(f"/v1/batches/{BATCH}")), b.view_samples, b.server_seconds, 3
            )
            jurisdictions = iter(["EU", "UK", "US"] * b.sign_samples)
            signs = timed(
                lambda: ok(qa_sign(rev, BATCH, "rev.a", "reviewed", next(jurisdictions),
                                   view=view), 201),
                b.sign_samples, b.server_seconds, 3,
            )  # fmt: skip

            def report() -> None:
                r = ok(rev.get(f"/v1/batches/{BATCH}/report.pdf"))
                assert r.headers["content-type"] == "application/pdf", r.headers

            reports = timed(report, b.report_samples, b.server_seconds, 1)
        passwords = password_checks(10)
        common = {"backend": label, "readings": edge.readings}
        note(f"{label}: view p50 {pct(views, 50):,.0f} ms p99 {pct(views, 99):,.0f} ms "
             f"(n={len(views)}); signature p50 {pct(signs, 50):,.0f} ms p99 "
             f"{pct(signs, 99):,.0f} ms (n={len(signs)}); report.pdf max "
             f"{max(reports) / 1000:.2f} s (n={len(reports)}); /health p99 "
             f"{pct(health, 99):.2f} ms")  # fmt: skip
        emit(
            f"server batch view, {edge.readings:,}-reading batch, {label} (p99 ms)",
            pct(views, 99),
            "ms",
            pct(health, 99),
            samples=len(views),
            p50_ms=round(pct(views, 50), 2),
            goal_p99_ms=GOAL_SERVER_P99_MS,
            ceiling_is="GET /health round trip, same server and connection",
            **common,
        )
        emit(
            f"server review e-signature, {edge.readings:,}-reading batch, {label} (p99 ms)",
            pct(signs, 99),
            "ms",
            pct(health, 99) + pct(passwords, 99),
            samples=len(signs),
            p50_ms=round(pct(signs, 50), 2),
            goal_p99_ms=GOAL_SERVER_P99_MS,
            ceiling_is="GET /health round trip + one argon2id password check",
            **common,
        )
        emit(
            f"server report.pdf, {edge.readings:,}-reading batch, {label} (max s)",
            max(reports) / 1000,
            "s",
            pct(health, 99) / 1000,
            samples=len(reports),
            goal_s=GOAL_REPORT_S,
            ceiling_is="GET /health round trip",
            **common,
        )
    finally:
        proc.terminate()
        proc.wait(30)


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="levels 0 and 100,000; 1,000 batches")
    ap.add_argument(
        "--levels", help="readings in the batch at each level, comma-separated (e.g. 0,50000)"
    )
    ap.add_argument("--batches", type=int, help="batches on the server, the big one included")
    ap.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="server databases, comma-separated (sqlite, postgresql; empty: no server part)",
    )
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    levels = (
        [int(x.replace("_", "")) for x in args.levels.split(",")]
        if args.levels
        else list(QUICK_LEVELS if args.quick else FULL_LEVELS)
    )
    if levels != sorted(levels):
        raise SystemExit("--levels must be increasing")
    batches = args.batches or (QUICK_BATCHES if args.quick else FULL_BATCHES)
    backends = [b for b in args.backends.split(",") if b]
    budget = Budget()
    if args.quick:
        budget = Budget(view_samples=100, sign_samples=50, report_samples=2, server_seconds=30)
    _, baseline = rss_mb()
    note(f"levels {levels}, {batches:,} batches on {', '.join(backends) or 'no server'}")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
        tmp = Path(d)
        edge = run_edge(tmp, levels, budget)
        rss, peak = rss_mb()
        note(f"edge done: RSS {rss:.0f} MB, peak {peak:.0f} MB (after imports: {baseline:.0f} MB)")
        peak_edge = peak
        if backends:
            fillers = filler_ledgers(tmp, batches - 1)
            for label in backends:
                if label == "sqlite":
                    run_server(label, f"sqlite:///{tmp / 'server.db'}", tmp, edge, fillers, budget)
                elif label == "postgresql":
                    from server.pgcluster import PgCluster

                    with PgCluster() as pg:
                        run_server(label, pg.create_db("scale"), tmp, edge, fillers, budget)
                else:
                    raise SystemExit(f"unknown backend {label!r}")
            for led, _ in fillers:
                led.close()
        emit(
            "edge peak RSS (this process: ledger, engine, MQTT ingest, fill)",
            peak_edge,
            "MB",
            baseline,
            goal_mb=GOAL_RSS_MB,
            peak_after_sync_mb=round(rss_mb()[1], 1),
            ceiling_is="this process's RSS after its imports, before any work",
        )
        edge.ledger.close()
    note("done")


if __name__ == "__main__":
    main()
