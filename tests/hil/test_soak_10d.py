"""The `make soak` run (issue 16): a compressed 10-day CAR-T batch end to end.

The demo's simulated unit (``ctgtp.demo.SimulatedUnit``) around a station agent (the code
``ctgtp edge run`` runs: scanner and cell counter on their ports, the camera, MQTT ingest bound
to the running batch with the master batch record's telemetry limits) takes the CAR-T batch through every step with ``ctgtp.demo._run_batch``.  At the expansion step
the whole ten-day bioreactor profile (``car_t_10d``: 923,040 readings, state changes, four
alarms, one temperature excursion on day 4) goes through a real mosquitto as fast as it goes,
while the cell counter reports every six simulated hours over its pty and the operator keeps
working (what is expected next, deviations raised), each action timed.  The batch is completed,
checked on the edge (cached state against a full fold, telemetry against what was published,
memory), synced to a server in one run and reviewed there through the web API: the batch view,
its telemetry, the report, results, deviations closed, reviewed and released with e-signatures.

Figures are printed as it goes (``pytest -s`` shows them).  ``CTGTP_SOAK_DAYS`` shortens the run
while developing (e.g. 1); `make soak` runs the full ten days.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ctgtp.demo import EXAMPLES, MBR_FILE, UNIT, SimulatedUnit, _run_batch, _station_toml
from ebr_core.document import load_yaml, sign_document
from ebr_core.keys import UnitSigner
from ebr_core.telemetry import Telemetry
from edge.agent import init_home, open_agent
from edge.station.agent import StationAgent
from edge.station.config import load_station
from edge.sync import SyncClient, SyncProgress
from firmware_sim.broker import Broker
from firmware_sim.profiles import Kind, Message, Phase, car_t_10d, count_readings
from firmware_sim.pty import PtyDevice
from tests.server.conftest import server_settings, start_server
from tests.server.qa import (
    PASSWORD,
    add_people,
    enter_results,
    example_results,
    login,
    publish_spec,
    sign,
)

pytestmark = [pytest.mark.hil, pytest.mark.slow]

DAYS = float(os.environ.get("CTGTP_SOAK_DAYS", "10"))
BATCH = "B-SOAK-10D"
EXPAND = "manufacture/expansion/expand"  # the step the bioreactor run is bound to
SITE = "SITE-A"  # where tests/server/qa.py's reviewer and approver work
T0 = datetime(2026, 11, 24, 8, tzinfo=UTC)  # the example lots and calibrations hold then
COUNT_EVERY_S = 6 * 3600  # an in-process cell count every six simulated hours
ALARMS = ["TEMP_HIGH", "DO_LOW", "FEED_LOW", "PH_LOW"]
# The master batch record's in-process limits (edge/examples/car_t_mbr_v4.yaml), restated here so
# the expected excursions are counted independently of the code that judges them.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "temperature": (36.0, 38.0),
    "ph": (6.8, 7.6),
    "dissolved_oxygen": (15.0, None),
}
ACTION_EVERY_S = 5.0  # the operator's pace while the run streams in
DEVIATIONS_DURING_RUN = 3
INGEST_WAIT_S = 2400.0  # generous: ten days take about 7 minutes here (~2,150 readings/s)
ACTION_BOUND_S = 1.0  # loose: bench/batch_scale.py measures the real figures
RSS_BOUND_MB = 300.0


class WallClock:
    """Real seconds from a fixed date (``T0`` by default): operator actions and commits get their
    real spacing, while the devices stamp the profile's simulated time."""

    def __init__(self, start: datetime = T0) -> None:
        self.start = start
        self.began = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.began)


@pytest.fixture
def clock() -> WallClock:
    """Overrides tests/edge/conftest.py's ``clock`` (20 s a call), which the ``engine`` fixture
    takes: at a clock reading per commit group, thousands of groups would push the batch months
    past the example materials' expiry."""
    return WallClock()


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process, MB."""
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out["VmRSS"], out["VmHWM"]


class Tap:
    """What the play thread publishes, tallied as it goes (the profile is never held whole)."""

    def __init__(self, days: float) -> None:
        self.messages = 0
        self.readings: Counter[str] = Counter()
        self.excursions: Counter[str] = Counter()
        self.states: list[str] = []
        self.alarms: list[str] = []
        self.marks = [k * COUNT_EVERY_S for k in range(1, 1 + int(days * 86_400 // COUNT_EVERY_S))]
        if self.marks and self.marks[-1] >= days * 86_400:
            self.marks.pop()
        self.vcd_at_mark: dict[int, str] = {}  # mark index -> the first VCD reading at/after it
        self.finished_at: float | None = None

    def wrap(self, messages: Iterable[Message]) -> Iterator[Message]:
        mark = 0
        for m in messages:
            self.messages += 1
            if m.kind is Kind.READING:
                self.readings[m.channel] += 1
                lim = LIMITS.get(m.channel)
                if lim is not None:
                    v, (lo, hi) = float(m.value), lim
                    if (lo is not None and v < lo) or (hi is not None and v > hi):
                        self.excursions[m.channel] += 1
                if (
                    m.channel == "viable_cell_density"
                    and mark < len(self.marks)
                    and m.at_s >= self.marks[mark]
                ):
                    self.vcd_at_mark[mark] = m.value
                    mark += 1
            elif m.kind is Kind.STATE:
                self.states.append(m.state)
            else:
                self.alarms.append(m.code)
            yield m
        self.finished_at = time.perf_counter()


def make_home(home: Path) -> None:
    """The unit's state directory, as ``ctgtp edge init`` makes it, the example MBR signed by a
    publisher key made here a day before the run's clock starts."""
    work = home.parent / "publish"
    work.mkdir(parents=True)
    qa = UnitSigner.generate("qa.approver")
    (work / "qa.pub").write_bytes(qa.public.to_json())
    content = load_yaml((EXAMPLES / MBR_FILE).read_text())
    doc = sign_document(
        content,
        doc_type="mbr",
        doc_id=content["mbr_id"],
        version=str(content["version"]),
        signer=qa,
        signed_at=T0 - timedelta(days=1),
    )
    (work / "mbr.signed.json").write_bytes(doc.to_bytes())
    init_home(
        home,
        unit_id=UNIT,
        mbr=work / "mbr.signed.json",
        publisher_key=work / "qa.pub",
        users=EXAMPLES / "users.yaml",
        materials=EXAMPLES / "materials.yaml",
    )


class SoakStation(SimulatedUnit):
    """The demo's simulated unit, with the expansion step's few readings replaced by the whole
    ten-day profile, cell counts and operator actions while it streams in."""

    def __init__(
        self, station: StationAgent, counter: PtyDevice, broker_port: int, batch: str, days: float
    ) -> None:
        super().__init__(station, counter, broker_port, batch)
        self.ingest = station.device("bioreactor").ingest  # type: ignore[attr-defined]
        self.counter_dev = counter
        self.days = days
        self.tap = Tap(days)
        self.timings: dict[str, list[float]] = {}
        self.counts_sent = 0
        self.raised = 0  # deviations the operator raised during the run
        self.queue_max = 0  # the most messages seen waiting in the ingest's queue
        self.rss_samples: list[float] = []
        self.figures: dict[str, float] = {}

    def _readings(self, channel: str | None) -> int:
        # The demo counts by reading every event of the batch: minutes at a million readings.
        # The engine's incremental telemetry summary gives the same counts.
        t: Telemetry = self.engine.telemetry(self.batch)
        if channel is None:
            return t.readings
        c = t.channels.get(f"{channel}.viability")
        return 0 if c is None else c.count

    def timed(self, label: str, fn: Any) -> Any:
        t = time.perf_counter()
        out = fn()
        self.timings.setdefault(label, []).append(time.perf_counter() - t)
        return out

    def bioreactor_run(self, n: int) -> None:  # called by _run_batch at the expansion step
        e, b, tap = self.engine, self.batch, self.tap
        assert e.running(b)[1] == EXPAND, e.running(b)
        published = count_readings(self.days) + len(Phase) + len(ALARMS)
        self.figures["hwm_before_run_mb"] = rss_mb()[1]  # the steps so far (the camera) included
        start = e.clock()  # device time of the run's first message
        sent: list[int] = []
        t0 = time.perf_counter()
        player = threading.Thread(
            target=lambda: sent.append(
                self.bioreactor.play(tap.wrap(car_t_10d(days=self.days)), start)
            ),
            daemon=True,
        )
        player.start()
        next_action, next_note, rounds = t0, t0 + 30, 0
        all_in: float | None = None
        while True:
            now = time.perf_counter()
            if self.ingest.error:
                raise AssertionError(f"MQTT ingest stopped: {self.ingest.error}")
            received = self.ingest.stats.received
            # Messages the broker has delivered that wait for their commit group (diagnostic).
            self.queue_max = max(self.queue_max, self.ingest._q.qsize())
            # A count once the ingest has taken the run past its mark (the run's messages are
            # spread evenly over its time), with the cell density the bioreactor reported then.
            while (
                self.counts_sent < len(tap.marks)
                and received >= published * tap.marks[self.counts_sent] / (self.days * 86_400)
                and self.counts_sent in tap.vcd_at_mark
            ):
                k = self.counts_sent
                viable = int(float(tap.vcd_at_mark[k]) * 1e6)
                total = viable * 100 // (92 + k % 5)
                self.counter_dev.write(
                    self.counter_sim.frame(f"IPC-H{tap.marks[k] // 3600:03d}", total, viable)
                )
                self.counts_sent += 1
            if now >= next_action:
                next_action = now + ACTION_EVERY_S
                rounds += 1
                exp = self.timed("expectation", lambda: e.expectation(b))
                assert exp.step is not None and exp.step.id == EXPAND, exp
                self.timed("running (the ingest's context)", lambda: e.running(b))
                if rounds % 4 == 1 and self.raised < DEVIATIONS_DURING_RUN:
                    self.raised += 1
                    reason = f"soak: culture bag port {self.raised} checked, clamp re-seated"
                    self.timed("raise_deviation", lambda: e.raise_deviation(b, reason, "op.bob"))
                self.rss_samples.append(rss_mb()[0])
            if now >= next_note:
                next_note = now + 30
                print(
                    f"  [{now - t0:6.0f} s] published {tap.messages:,}, ingested {received:,} "
                    f"of {published:,} ({received / (now - t0):,.0f}/s), waiting in the "
                    f"ingest {self.ingest._q.qsize():,}, counts {self.counts_sent}, "
                    f"RSS {rss_mb()[0]:.0f} MB",
                    flush=True,
                )
            if received >= published and not player.is_alive():
                all_in = now
                break
            assert now - t0 < INGEST_WAIT_S, (
                f"after {now - t0:.0f} s the ingest has {received:,} of {published:,} messages"
            )
            time.sleep(0.05)
        player.join()
        assert sent == [published] == [tap.messages]
        self._wait(lambda: self._readings("cell_count") >= self.counts_sent, timeout=60)
        self.rss_samples.append(rss_mb()[0])
        st = self.ingest.stats
        readings = count_readings(self.days)
        assert (st.received, st.recorded, st.duplicates, st.malformed) == (
            published,
            readings,
            0,
            0,
        ), st
        took = all_in - t0
        pub_took = (tap.finished_at or all_in) - t0
        self.figures.update(
            ingest_s=took,
            ingest_rate=readings / took,
            publish_s=pub_took,
            publish_rate=published / pub_took,
        )
        self.devices["bioreactor"] += readings
        self.devices["cell_counter"] += self.counts_sent


@pytest.mark.timeout(3600)  # ~7 minutes of ingest, a sync of ~1M events and a review: ~9 here
def test_a_ten_day_batch_through_the_devices_syncs_and_is_reviewed(
    clock: WallClock, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    began = time.perf_counter()
    readings = count_readings(DAYS)
    rss0, hwm0 = rss_mb()
    print(
        f"\nsoak: {DAYS:g} simulated days, {readings:,} readings to publish; this process's RSS "
        f"{rss0:.0f} MB before any work (peak so far {hwm0:.0f} MB)"
    )

    # -- 1-3. the station, the batch through every step, the profile at the expansion step ----
    home = tmp_path / "edge-home"
    make_home(home)
    with Broker() as broker:
        counter = PtyDevice()
        (home / "station.toml").write_text(_station_toml(counter.port, broker.port, None))
        agent = open_agent(home, clock, clock_leap_s=60)
        agent_station = StationAgent(agent, load_station(home / "station.toml"), clock=clock)
        agent_station.start(kiosk=False, sync=False)
        try:
            down = agent_station.wait_connected(10)
            assert not down, down
            station = SoakStation(agent_station, counter, broker.port, BATCH, DAYS)
            try:
                refused = _run_batch(station)
            finally:
                station.close()
        finally:
            agent_station.stop()
            counter.close()
    engine = agent.engine
    led = engine.ledger
    tap, fig = station.tap, station.figures
    rss, hwm = rss_mb()
    print(
        f"ingest: {readings:,} readings in {fig['ingest_s']:.1f} s = "
        f"{fig['ingest_rate']:,.0f} readings/s (the player published all in "
        f"{fig['publish_s']:.1f} s, {fig['publish_rate']:,.0f} msg/s); "
        f"{station.counts_sent} cell counts over the pty during the run"
    )
    for label, ts in station.timings.items():
        print(
            f"operator during the run: {label:<32} n={len(ts):<3} "
            f"median {sorted(ts)[len(ts) // 2] * 1000:7.1f} ms  max {max(ts) * 1000:7.1f} ms"
        )
    print(
        f"edge process RSS: {rss:.0f} MB now, {max(station.rss_samples):.0f} MB at most when "
        f"sampled during the run, peak (VmHWM) {hwm:.0f} MB ({fig['hwm_before_run_mb']:.0f} MB "
        "before the run); this process also holds pytest, "
        "the server's modules, the simulated bioreactor's MQTT client and the profile generator; "
        f"at most {station.queue_max:,} delivered messages waited in the ingest's queue"
    )
    for label, ts in station.timings.items():
        assert max(ts) < ACTION_BOUND_S, (label, ts)
    assert len(refused) == 1 and "wrong patient" in refused[0].lower(), refused
    assert max(station.rss_samples) < RSS_BOUND_MB, station.rss_samples
    assert len(tap.marks) == station.counts_sent > 0

    # -- 4. the edge ----------------------------------------------------------------------------
    st = engine.state(BATCH)
    assert st.status == "completed", (st.status, engine.expectation(BATCH))
    t = time.perf_counter()
    full = engine.full_state(BATCH)
    full_s = time.perf_counter() - t
    assert st == full
    tel = engine.telemetry(BATCH)
    counts = station.counts_sent + 2  # and the demo's in-process and harvest counts
    assert tel.readings == readings + counts
    for ch, n in tap.readings.items():
        assert tel.channels[ch].count == n, ch
        assert tel.channels[ch].excursions == tap.excursions[ch], ch
    assert sum(tap.readings.values()) == readings
    assert tel.channels["cell_count.viability"].count == counts
    temp = tel.channels["temperature"]
    assert temp.excursions == tap.excursions["temperature"] > 0
    assert temp.max is not None and float(temp.max) > 38.0
    vcd = tel.channels["viable_cell_density"]
    assert vcd.min is not None and vcd.max is not None
    growth = float(vcd.max) / float(vcd.min)
    assert 40 <= growth <= 60, growth
    for ch in tap.readings:
        c = tel.channels[ch]
        points = c.series.points()
        assert 0 < len(points) <= 512, (ch, len(points))
        assert sum(p["n"] for p in points) == c.count, ch
        assert max(p["max"] for p in points) == float(c.max or "nan"), ch
        assert min(p["min"] for p in points) == float(c.min or "nan"), ch
    assert tap.states == list(Phase) and tap.alarms == ALARMS
    assert [a["code"] for a in st.alarms] == ALARMS
    alarm_devs = [d for d in st.deviations.values() if d.category == "instrument_alarm"]
    assert len(alarm_devs) == len(ALARMS) and all(d.severity == "major" for d in alarm_devs)
    assert sorted(a["code"] for a in st.alarms) == sorted(
        next(c for c in ALARMS if f"instrument alarm {c}:" in d.reason) for d in alarm_devs
    )
    operator_devs = [d for d in st.deviations.values() if d.reason.startswith("soak: ")]
    assert len(operator_devs) == station.raised > 0
    kinds = Counter(ev.kind for ev in led.batch_events(BATCH))
    batch_events = sum(kinds.values())
    assert kinds["reading.recorded"] == readings + counts
    assert kinds["alarm.raised"] == len(ALARMS) and kinds["process.state"] == len(Phase)
    assert kinds["batch.completed"] == 1
    print(
        f"edge: batch {st.status}, {batch_events:,} events ({st.events} step events), "
        f"{len(st.deviations)} deviations, {len(st.signatures)} e-signatures; temperature "
        f"excursions {temp.excursions} (max {temp.max} Cel), VCD {vcd.min} -> {vcd.max} "
        f"({growth:.1f}x); full fold {full_s:.1f} s equals the cached state"
    )

    # -- 5. sync and review on the server -------------------------------------------------------
    # The server's clock: the review is the day after the run's simulated days end (a signature
    # is never earlier than the events it signs, whatever day the test runs on).
    review_clock = WallClock(T0 + timedelta(days=DAYS + 1))
    with start_server(server_settings("sqlite", request, tmp_path), review_clock) as srv:
        srv.enrol(led.signer, site=SITE)
        add_people(srv)
        publish_spec(srv)
        last_note = [0.0]

        def progress(p: SyncProgress) -> None:
            if p.done or time.perf_counter() - last_note[0] > 15:
                last_note[0] = time.perf_counter()
                print(f"  sync: {p.sent:,} / {p.backlog:,} events, {p.rate:,.0f}/s", flush=True)

        t = time.perf_counter()
        report = SyncClient(led, srv.url, server_key=srv.key).sync_once(progress=progress)
        sync_s = time.perf_counter() - t
        head = led.head[0]
        assert report.server_head == report.local_head == head == report.pushed, report
        assert srv.events(led.unit_id) == head
        print(
            f"sync: {report.pushed:,} events in {report.segments} segments in one run, "
            f"{sync_s:.1f} s ({report.pushed / sync_s:,.0f} events/s, {report.retries} retries)"
        )

        with login(srv, "rev.a") as rev, login(srv, "appr.a") as appr:
            t = time.perf_counter()
            r = rev.get(f"/v1/batches/{BATCH}")
            view_s = time.perf_counter() - t
            assert r.status_code == 200, r.text[:500]
            view = r.json()
            t = time.perf_counter()
            assert rev.get(f"/v1/batches/{BATCH}").status_code == 200
            view2_s = time.perf_counter() - t
            assert view["status"] == "completed" and view["coi"] == st.coi
            assert view["readings"] == tel.readings
            assert view["events"] == batch_events
            edge_summary = {}
            for name, c in tel.channels.items():
                d = c.to_json()
                del d["series"]
                edge_summary[name] = d
            assert view["telemetry"] == edge_summary
            assert view["exceptions"]["alarms"] == len(ALARMS)
            assert view["exceptions"]["rejected_scans"] == 1

            t = time.perf_counter()
            r = rev.get(f"/v1/batches/{BATCH}/telemetry")
            tel_s = time.perf_counter() - t
            assert r.status_code == 200, r.text[:500]
            served = r.json()
            assert served["readings"] == tel.readings
            for name, c in served["channels"].items():
                assert 0 < len(c["series"]) <= 512, (name, len(c["series"]))
                assert max(p["max"] for p in c["series"]) == float(c["max"]), name
                assert c["series"] == tel.channels[name].series.points(), name
            hot = [p for p in served["channels"]["temperature"]["series"] if p["max"] > 38.0]
            assert hot and served["channels"]["temperature"]["excursions"] == temp.excursions

            t = time.perf_counter()
            r = rev.get(f"/v1/batches/{BATCH}/report.pdf")
            report_s = time.perf_counter() - t
            assert r.status_code == 200, r.text[:500]
            assert r.content.startswith(b"%PDF")
            pdf_kb = len(r.content) / 1024

            results = example_results()
            dose = st.values["formulation/harvest/dose:dose"]["detail"]["cells_to_infuse"]
            results["dose"] = {"value": dose, "unit": "1"}
            r = enter_results(rev, BATCH, results)
            assert r.status_code == 201, r.text[:500]
            closed = 0
            for d in rev.get(f"/v1/batches/{BATCH}").json()["deviations"]:
                if d["open"]:
                    r = rev.post(
                        f"/v1/batches/{BATCH}/deviations/{d['deviation_id']}/close",
                        json={"reason": "assessed in the soak review: no impact on the product",
                              "user_id": "rev.a", "password": PASSWORD, "meaning": "closed"},
                    )
                    assert r.status_code < 300, r.text[:500]
                    closed += 1
            assert closed == len(st.deviations)
            view = rev.get(f"/v1/batches/{BATCH}").json()
            assert view["exceptions"]["open_deviations"] == 0
            sign_s: dict[str, float] = {}
            for who, uid, meaning in ((rev, "rev.a", "reviewed"), (appr, "appr.a", "released")):
                t = time.perf_counter()
                r = sign(who, BATCH, uid, meaning, "EU", view=view)
                sign_s[meaning] = time.perf_counter() - t
                assert r.status_code == 201, r.text[:500]
            final = appr.get(f"/v1/batches/{BATCH}").json()
            eu = [d for d in final["dispositions"] if d["jurisdiction"] == "EU"]
            assert eu and eu[-1]["signature"]["printed_name"] == "Paul Approver", final[
                "dispositions"
            ]
    print(
        f"review on the server: batch view {view_s:.2f} s (again {view2_s:.2f} s), telemetry "
        f"{tel_s:.2f} s, report.pdf {report_s:.2f} s ({pdf_kb:.0f} kB), "
        f"{closed} deviations closed, e-signatures reviewed {sign_s['reviewed']:.2f} s and "
        f"released {sign_s['released']:.2f} s: EU {eu[-1]['disposition']}"
    )
    print(f"soak done in {time.perf_counter() - began:.0f} s")
    assert view_s < 5 and view2_s < 5 and tel_s < 5
    assert report_s < 5
