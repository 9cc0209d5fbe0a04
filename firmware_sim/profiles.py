"""Process profiles for the simulated production unit: what a run publishes, and when.

``car_t_10d`` is a CAR-T expansion run as a stream of messages stamped in simulated seconds since
the start: viable cell density growing about 50-fold, pH drifting down, dissolved oxygen held at
its setpoint by a controller that oscillates and loses ground as the cells' demand rises, glucose
consumed and lactate produced in step with the integral of viable cells, one temperature excursion,
phase changes and a few alarms.  The curves are a plausible shape for a plot and for load, not a
bioprocess model.

This module owns the shape and the pacing rule.  It publishes nothing and reads no clock:
``BioreactorSim.play`` sends the messages, and ``paced`` is given the clock and sleep it uses.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from typing import Final, NamedTuple


class Kind(StrEnum):
    READING = "reading"
    STATE = "state"
    ALARM = "alarm"


class Phase(StrEnum):
    PRIMING = "priming"
    ACTIVATION = "activation"
    TRANSDUCTION = "transduction"
    EXPANSION = "expansion"
    HARVEST = "harvest"


class Message(NamedTuple):
    """One thing the unit publishes, ``at_s`` simulated seconds after the start of the run.

    A reading fills channel, value (a decimal string) and unit (UCUM); a state change fills
    state; an alarm fills code and message.  A NamedTuple rather than a frozen dataclass: as
    immutable, and built in a quarter of the time (0.55 against 2.3 us here), which is most of
    the difference at a million messages per run.
    """

    at_s: float
    kind: Kind
    channel: str = ""
    value: str = ""
    unit: str = ""
    state: str = ""
    code: str = ""
    message: str = ""


# The cartridge profile's channels, plus the two metabolites a CAR-T run is steered by.
CHANNELS: Final[dict[str, str]] = {
    "temperature": "Cel",
    "ph": "[pH]",
    "dissolved_oxygen": "%",
    "co2": "%",
    "agitation": "/min",
    "viable_cell_density": "10*6/mL",
    "glucose": "mmol/L",
    "lactate": "mmol/L",
    "volume": "mL",
}

TEN_DAYS_S: Final = 10 * 86_400.0
# Phases as fractions of the run: a shorter run is the same process compressed.
PHASES: Final = (
    (0.00, Phase.PRIMING),
    (0.02, Phase.ACTIVATION),
    (0.12, Phase.TRANSDUCTION),
    (0.25, Phase.EXPANSION),
    (0.95, Phase.HARVEST),
)
MIN_TICKS: Final = 100  # fewer and the phases, the excursion and the dip overlap
VOLUME_EVERY: Final = 80  # the level sensor reports every 80 ticks (10 min at 7.5 s)
TEMP_ALERT_C: Final = 38.0
DO_ALERT_PCT: Final = 20.0
PH_ALERT: Final = 7.0

# Logistic growth after the activation lag: N(x) = K N0 e^(ax) / (K + N0 (e^(ax) - 1)) for x in
# [0, 1]; a is chosen so that N(1) = 15 (50-fold from 0.3).
_N0, _K, _N1 = 0.3, 18.0, 15.0
_LAG = 0.10
_A = math.log(_N1 * (_K - _N0) / (_N0 * (_K - _N1)))
# The integral of viable cells has a closed form; normalised to 1 at the end of the run it drives
# what the cells consume (glucose) and produce (lactate, hence the pH drop).
_IVC_END = math.log((_K + _N0 * (math.exp(_A) - 1)) / _K)


def car_t_10d(seed: int = 7, days: float = 10.0, interval_s: float = 7.5) -> Iterator[Message]:
    """The run as messages in time order: one reading per channel every ``interval_s`` (volume
    every ``VOLUME_EVERY`` ticks), a state at each phase, four alarms.

    Deterministic for a seed.  ``days`` compresses or stretches the whole process (phases,
    excursion and feeds keep their place in the run); control loops keep their real periods.
    """
    if not (days > 0 and interval_s > 0):
        raise ValueError(f"days and interval_s must be positive, got {days} and {interval_s}")
    total_s = days * 86_400.0
    ticks = math.ceil(total_s / interval_s)
    if ticks < MIN_TICKS:
        raise ValueError(
            f"a run of {days} days at {interval_s} s holds {ticks} ticks, expected at least "
            f"{MIN_TICKS}"
        )
    return _run(random.Random(seed), ticks, total_s, interval_s)


def car_t_short(seed: int = 7) -> Iterator[Message]:
    """The same run compressed into 72 simulated minutes (576 ticks): for demos and tests."""
    return car_t_10d(seed, days=0.05)


def count_readings(days: float = 10.0, interval_s: float = 7.5) -> int:
    """How many readings ``car_t_10d`` yields for this length, without generating them."""
    ticks = math.ceil(days * 86_400.0 / interval_s)
    return 8 * ticks + math.ceil(ticks / VOLUME_EVERY)


def _run(rng: random.Random, ticks: int, total_s: float, dt: float) -> Iterator[Message]:
    # Hot loop: ~1 M messages per run, so locals instead of globals and attribute look-ups, simple
    # arithmetic, and f-strings with a fixed number of decimals (no float repr, no exponent).
    rnd, exp, log, sin, pi = rng.random, math.exp, math.log, math.sin, math.pi
    M, R = Message, Kind.READING
    scale = total_s / TEN_DAYS_S

    def tick_at(fraction: float) -> int:  # the first tick at or after this point of the run
        return math.ceil(fraction * total_s / dt - 1e-9)

    def span(seconds: float) -> int:  # a duration in ten-day seconds, at least three ticks
        return max(3, math.ceil(seconds * scale / dt))

    states = {tick_at(u): phase for u, phase in PHASES}
    # Temperature excursion on day 4: 40 min above the 38.0 alert limit, with 20 min ramps either
    # side that stay below it, so the excursion is one contiguous run of readings.
    hot0 = tick_at(0.40)
    hot1 = hot0 + span(2400)
    ramp = int(1200 * scale / dt)
    # A sparger blockage late in expansion: 20 min below the 20 % alert limit.
    do0 = tick_at(0.85)
    do1 = do0 + span(1200)
    feeds = {tick_at(0.80), tick_at(0.90)}  # bolus feeds: +5 mmol/L glucose, +25 mL
    feed_low = tick_at(0.87)  # the reservoir runs low before the second feed
    agitation_steps = {
        tick_at(0.25): 80,
        tick_at(0.50): 110,
        tick_at(0.70): 140,
        tick_at(0.80): 160,
        tick_at(0.95): 60,
    }
    # Controller limit cycles have a real period, whatever the run's length.
    do_w = 2 * pi * dt / 900.0
    temp_w = 2 * pi * dt / 1800.0

    volume = 50.0
    glucose_fed = 0.0
    agitation = 50
    ph_alarmed = False
    for i in range(ticks):
        at = i * dt
        if i in states:
            phase = states[i]
            yield M(at, Kind.STATE, state=phase)
            if phase is Phase.TRANSDUCTION:
                volume += 10.0  # vector added
            elif phase is Phase.EXPANSION:
                volume += 140.0  # expansion medium
        if i in agitation_steps:
            agitation = agitation_steps[i]
        if i in feeds:
            glucose_fed += 5.0
            volume += 25.0

        x = (i / ticks - _LAG) / (1 - _LAG)
        e = exp(_A * x) if x > 0 else 1.0
        den = _K + _N0 * (e - 1)
        vcd = _K * _N0 * e / den
        h = log(den / _K) / _IVC_END  # 0 → 1 over the run
        load = vcd / _N1  # the cells' oxygen demand, 0.02 → 1

        if hot0 - ramp <= i < hot0:
            temp = 37.0 + 0.9 * (i - hot0 + ramp + 1) / (ramp + 1)
        elif hot0 <= i < hot1:
            temp = 38.1 + 0.5 * sin(pi * (i - hot0 + 0.5) / (hot1 - hot0))
        elif hot1 <= i < hot1 + ramp:
            temp = 37.9 - 0.9 * (i - hot1 + 1) / (ramp + 1)
        else:
            temp = 37.0 + 0.02 * sin(temp_w * i)
        temp += 0.04 * (rnd() - rnd())
        if do0 <= i < do1:
            do = 18.5 - 3.0 * sin(pi * (i - do0 + 0.5) / (do1 - do0))
        else:
            do = 40.0 - 8.0 * load * load + (1.5 + 1.5 * load) * sin(do_w * i)
        do += 0.3 * (rnd() - rnd())
        ph = 7.40 - 0.05 * i / ticks - 0.45 * h + 0.01 * (rnd() - rnd())

        t = f"{temp:.2f}"
        p = f"{ph:.2f}"
        yield M(at, R, "temperature", t, "Cel")
        yield M(at, R, "ph", p, "[pH]")
        yield M(at, R, "dissolved_oxygen", f"{do:.1f}", "%")
        yield M(at, R, "co2", f"{5.0 + 0.05 * (rnd() - rnd()):.2f}", "%")
        yield M(at, R, "agitation", f"{agitation + round(rnd() - rnd())}", "/min")
        yield M(
            at,
            R,
            "viable_cell_density",
            f"{vcd * (1 + 0.01 * (rnd() - rnd())):.3f}",
            "10*6/mL",
        )
        yield M(
            at,
            R,
            "glucose",
            f"{25.0 - 30.0 * h + glucose_fed + 0.05 * (rnd() - rnd()):.2f}",
            "mmol/L",
        )
        yield M(at, R, "lactate", f"{1.5 + 18.5 * h + 0.05 * (rnd() - rnd()):.2f}", "mmol/L")
        if i % VOLUME_EVERY == 0:
            yield M(at, R, "volume", f"{volume + 0.2 * (rnd() - rnd()):.1f}", "mL")

        if i == hot0:
            yield M(at, Kind.ALARM, code="TEMP_HIGH", message=f"temperature {t} Cel above 38.0 Cel")
        elif i == do0:
            yield M(at, Kind.ALARM, code="DO_LOW", message="dissolved oxygen below 20 %")
        elif i == feed_low:
            yield M(at, Kind.ALARM, code="FEED_LOW", message="feed reservoir below 10 %")
        if not ph_alarmed and float(p) < PH_ALERT:
            ph_alarmed = True
            yield M(at, Kind.ALARM, code="PH_LOW", message=f"pH {p} below 7.00")


def paced(
    messages: Iterable[Message],
    speed: float,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    batch_s: float = 0.01,
) -> Iterator[Message]:
    """Yield each message once ``at_s / speed`` seconds have passed on ``clock``: never early,
    never skipped.

    Ahead of time it sleeps at least ``batch_s``, so a fast run wakes up to a batch rather than
    sleeping per message; behind time it yields as fast as the consumer takes them.
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    start = clock()
    elapsed = 0.0
    for m in messages:
        due = m.at_s / speed
        if due > elapsed:  # read the clock only when this message may not be due yet
            elapsed = clock() - start
            while due > elapsed:  # a loop: a sleep may end early
                sleep(max(due - elapsed, batch_s))
                elapsed = clock() - start
        yield m
