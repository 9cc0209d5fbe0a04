"""The faults a simulated unit can inject, and the fault schedule that says when.

A schedule is YAML (``ctgtp sim unit --faults FILE``)::

    faults:
      - at: 2.0              # seconds after the unit starts
        device: scanner      # scanner, counter, bioreactor, broker or camera
        fault: split         # one of FAULTS below
        params: {sizes: [3, 4], pause_s: 0.05}
      - at: 5
        every: 10            # optional: again every 10 s
        device: broker
        fault: broker_kill
        params: {down_s: 1}

It is validated strictly before anything runs: every wrong entry is named (``entry 2``) with what
was wrong and what was expected, all of them at once.  The ``--noise`` style options of
``ctgtp sim unit`` become entries of the same schedule, so there is one way a fault is injected.

This module owns the vocabulary, the validation and the pure byte transforms of serial frames
(:func:`serial_wire`); :mod:`firmware_sim.unit` applies them to real ptys, a real broker and
files of camera frames.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import yaml


class Device(StrEnum):
    SCANNER = "scanner"
    COUNTER = "counter"
    BIOREACTOR = "bioreactor"
    BROKER = "broker"
    CAMERA = "camera"


class Fault(StrEnum):
    NOISE = "noise"  # line-noise bytes inside a frame
    SPLIT = "split"  # a frame in several chunks, with pauses (slow UART, USB bridge)
    TRUNCATE = "truncate"  # a frame whose terminator never arrives
    CONCAT = "concat"  # several frames in one write
    BAD_CHECKSUM = "bad_checksum"  # a CC1 line whose checksum does not match
    DUPLICATE = "duplicate"  # the same frame or MQTT message again
    CLOCK_DRIFT = "clock_drift"  # the device clock runs fast or slow from now on
    CLOCK_JUMP = "clock_jump"  # the device clock steps
    BROKER_RESTART = "broker_restart"  # mosquitto stopped (SIGTERM) and started again
    BROKER_KILL = "broker_kill"  # mosquitto SIGKILLed and started again
    UNPLUG = "unplug"  # the serial device disappears, and comes back after for_s
    GLARE = "glare"  # a camera frame with a saturated patch over the label
    BLUR = "blur"  # a camera frame out of focus
    ROTATE = "rotate"  # a camera frame with the label rotated
    POISON = "poison"  # an MQTT message that cannot become a reading


POISON_KINDS = ("garbage", "deep_json", "surrogate", "object_channel", "nul", "not_json")
SERIAL = (Device.SCANNER, Device.COUNTER)


@dataclass(frozen=True)
class Param:
    kind: type
    default: Any
    check: Callable[[Any], bool] = lambda _v: True
    expected: str = ""


def _pos(v: Any) -> bool:
    return bool(v > 0)


def _nonneg(v: Any) -> bool:
    return bool(v >= 0)


# Which devices each fault applies to, and its parameters (type, default, bound).
FAULTS: dict[Fault, tuple[tuple[Device, ...], dict[str, Param]]] = {
    Fault.NOISE: (SERIAL, {"bytes": Param(int, 1, _pos, "a whole number of bytes, at least 1")}),
    Fault.SPLIT: (
        SERIAL,
        {
            "sizes": Param(
                list,
                [3],
                lambda v: (
                    bool(v)
                    and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in v)
                ),
                "a non-empty list of chunk sizes, each at least 1",
            ),
            "pause_s": Param(float, 0.05, _nonneg, "seconds, 0 or more"),
        },
    ),
    Fault.TRUNCATE: (
        SERIAL,
        {"keep": Param(float, 0.5, lambda v: 0 < v <= 1, "a fraction of the frame in (0, 1]")},
    ),
    Fault.CONCAT: (SERIAL, {"count": Param(int, 2, lambda v: v >= 2, "2 frames or more")}),
    Fault.BAD_CHECKSUM: ((Device.COUNTER,), {}),
    Fault.DUPLICATE: (
        (*SERIAL, Device.BIOREACTOR),
        {"copies": Param(int, 1, _pos, "extra copies, at least 1")},
    ),
    Fault.CLOCK_DRIFT: (
        (Device.BIOREACTOR,),
        {"rate": Param(float, 0.01, lambda v: -1 < v < 1, "seconds per second in (-1, 1)")},
    ),
    Fault.CLOCK_JUMP: (
        (Device.BIOREACTOR,),
        {"seconds": Param(float, 3600.0, lambda v: v != 0, "a step in seconds, not 0")},
    ),
    Fault.BROKER_RESTART: (
        (Device.BROKER,),
        {"down_s": Param(float, 0.0, _nonneg, "seconds down, 0 or more")},
    ),
    Fault.BROKER_KILL: (
        (Device.BROKER,),
        {"down_s": Param(float, 0.0, _nonneg, "seconds down, 0 or more")},
    ),
    Fault.UNPLUG: (SERIAL, {"for_s": Param(float, 1.0, _pos, "seconds unplugged, more than 0")}),
    Fault.GLARE: (
        (Device.CAMERA,),
        {"strength": Param(float, 0.8, lambda v: 0 < v <= 1, "a fraction in (0, 1]")},
    ),
    Fault.BLUR: (
        (Device.CAMERA,),
        {"kernel": Param(int, 9, lambda v: v >= 3 and v % 2 == 1, "an odd kernel size, 3+")},
    ),
    Fault.ROTATE: ((Device.CAMERA,), {"degrees": Param(float, 15.0, expected="degrees")}),
    Fault.POISON: (
        (Device.BIOREACTOR,),
        {
            "kind": Param(
                str, "garbage", lambda v: v in POISON_KINDS, "one of " + ", ".join(POISON_KINDS)
            )
        },
    ),
}
KEYS = ("at", "every", "device", "fault", "params")


class ScheduleError(ValueError):
    """A fault schedule (or a fault option) that cannot run: each problem named."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(
            f"fault schedule: {n} problem{'s' if n != 1 else ''}:\n  " + "\n  ".join(problems)
        )


@dataclass(frozen=True)
class Injection:
    at: float
    device: Device
    fault: Fault
    params: Mapping[str, Any] = field(default_factory=dict)
    every: float | None = None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _one_of(values: Sequence[str]) -> str:
    return ", ".join(sorted(values))


def check_params(
    device: Device, fault: Fault, given: Any, where: str
) -> tuple[dict[str, Any], list[str]]:
    """The parameters with their defaults filled in, and the problems found (named by ``where``)."""
    allowed, spec = FAULTS[fault]
    problems: list[str] = []
    if device not in allowed:
        problems.append(
            f"{where}: fault {fault} does not apply to {device}; expected device "
            + " or ".join(allowed)
        )
    if given is None:
        given = {}
    if not isinstance(given, dict):
        problems.append(f"{where}: params is {type(given).__name__}; expected a mapping")
        return {}, problems
    out: dict[str, Any] = {k: p.default for k, p in spec.items()}
    for k, v in given.items():
        p = spec.get(k)
        if p is None:
            want = _one_of(list(spec)) if spec else "none"
            problems.append(f"{where}: {fault} has no parameter {k!r}; expected {want}")
            continue
        ok_type = (
            _number(v)
            if p.kind is float
            else (isinstance(v, int) and not isinstance(v, bool))
            if p.kind is int
            else isinstance(v, p.kind)
        )
        if not ok_type or not p.check(v):
            problems.append(
                f"{where}: {fault} {k} is {v!r}; expected {p.expected or p.kind.__name__}"
            )
            continue
        out[k] = float(v) if p.kind is float else v
    return out, problems


def parse_schedule(doc: Any) -> list[Injection]:
    """Validate a loaded schedule document; raise :class:`ScheduleError` naming every problem."""
    if not isinstance(doc, dict) or set(doc) != {"faults"} or not isinstance(doc["faults"], list):
        raise ScheduleError(["the file must be a mapping with one key, faults: a list of entries"])
    problems: list[str] = []
    out: list[Injection] = []
    for i, e in enumerate(doc["faults"], 1):
        where = f"entry {i}"
        if not isinstance(e, dict):
            problems.append(
                f"{where}: is {type(e).__name__}; expected a mapping with " + ", ".join(KEYS)
            )
            continue
        bad = [k for k in e if k not in KEYS]
        problems += [f"{where}: unknown key {k!r}; expected {', '.join(KEYS)}" for k in bad]
        missing = [k for k in ("at", "device", "fault") if k not in e]
        problems += [f"{where}: {k} is missing" for k in missing]
        at, every = e.get("at", 0), e.get("every")
        if not _number(at) or at < 0:
            problems.append(f"{where}: at is {at!r}; expected seconds after the start, 0 or more")
        if every is not None and (not _number(every) or every <= 0):
            problems.append(f"{where}: every is {every!r}; expected seconds, more than 0")
        device, fault = e.get("device"), e.get("fault")
        if "device" in e and device not in list(Device):
            problems.append(f"{where}: unknown device {device!r}; expected {_one_of(list(Device))}")
            device = None
        if "fault" in e and fault not in list(Fault):
            problems.append(f"{where}: unknown fault {fault!r}; expected {_one_of(list(Fault))}")
            fault = None
        if device is None or fault is None:
            continue
        params, found = check_params(Device(device), Fault(fault), e.get("params"), where)
        problems += found
        if not found and not bad and not missing and _number(at):
            out.append(
                Injection(
                    float(at),
                    Device(device),
                    Fault(fault),
                    params,
                    float(every) if every is not None else None,
                )
            )
    if problems:
        raise ScheduleError(problems)
    return sorted(out, key=lambda j: j.at)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``0.5`` as a number whatever another module did to the shared
    resolvers (a loader that keeps floats as text can strip them from SafeLoader's own table)."""


# YAML 1.1's float (PyYAML's resolver), without .inf and .nan: a fault's parameter is finite.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?$"),
    list("-+0123456789"),
)


def load_schedule(text: str) -> list[Injection]:
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ScheduleError([f"not YAML: {e}"]) from e
    return parse_schedule(doc)


def due(schedule: Sequence[Injection], since: float, until: float) -> list[Injection]:
    """The injections whose time falls in ``(since, until]`` (each repeat once), in time order.

    A runner starts with ``since`` below 0, so an entry at 0 fires at once."""
    out: list[tuple[float, int, Injection]] = []
    for n, j in enumerate(schedule):
        if j.every is None:
            out += [(j.at, n, j)] if since < j.at <= until else []
            continue
        # one repeat early: the division may round up past a repeat the test below keeps
        k = max(0, math.floor((since - j.at) / j.every))
        while (t := j.at + k * j.every) <= until:
            if t > since:
                out.append((t, n, j))
            k += 1
    return [j for _, _, j in sorted(out, key=lambda x: (x[0], x[1]))]


# -- pure byte transforms of serial frames ----------------------------------------------------


def serial_wire(
    fault: Fault,
    params: Mapping[str, Any],
    frames: Sequence[bytes],
    terminator: bytes,
    rng: random.Random,
) -> list[tuple[bytes, float]]:
    """What goes on the wire for ``frames`` under ``fault``: chunks, each with the pause after it.

    ``concat`` joins all the frames; every other fault takes the first frame only."""
    frame = frames[0]
    if fault is Fault.NOISE:
        body, tail = _split_terminator(frame, terminator)
        b = bytearray(body)
        for _ in range(int(params["bytes"])):
            b.insert(rng.randrange(1, len(b) + 1), 0x80 | rng.randrange(0x80))  # never ASCII
        return [(bytes(b) + tail, 0.0)]
    if fault is Fault.SPLIT:
        sizes, pause = list(params["sizes"]), float(params["pause_s"])
        out, pos, i = [], 0, 0
        while pos < len(frame):
            n = sizes[i % len(sizes)]
            out.append((frame[pos : pos + n], pause))
            pos, i = pos + n, i + 1
        return out
    if fault is Fault.TRUNCATE:
        body, _ = _split_terminator(frame, terminator)
        return [(body[: max(1, round(len(body) * float(params["keep"])))], 0.0)]
    if fault is Fault.CONCAT:
        return [(b"".join(frames), 0.0)]
    if fault is Fault.DUPLICATE:
        return [(frame * (1 + int(params["copies"])), 0.0)]
    if fault is Fault.BAD_CHECKSUM:
        body, tail = _split_terminator(frame, terminator)
        star = body.rfind(b"*")
        if star < 0 or len(body) - star != 3:
            raise ValueError(f"bad_checksum needs a CC1 line ending *XX, got {frame[:40]!r}")
        xx = int(body[star + 1 :], 16) ^ 0x01
        return [(body[: star + 1] + f"{xx:02X}".encode() + tail, 0.0)]
    raise ValueError(f"{fault} is not a fault of a serial frame")


def _split_terminator(frame: bytes, terminator: bytes) -> tuple[bytes, bytes]:
    if terminator and frame.endswith(terminator):
        return frame[: -len(terminator)], terminator
    return frame, b""
