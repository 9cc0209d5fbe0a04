"""A simulated production unit's parts, and the fault injector that acts on them.

:class:`Injector` applies one :class:`firmware_sim.faults.Injection` to real parts: the scanner's
and the cell counter's pseudo-terminals, the bioreactor's MQTT client, the mosquitto broker, and
a folder of camera frames (PNG files, ``frame-00001.png`` ..., which OpenCV reads as a video with
``cv2.VideoCapture("frame-%05d.png")``).  ``ctgtp sim unit`` and the tests use the same injector,
so a fault in a schedule file does in a test what it does on a bench.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker
from firmware_sim.devices import CellCounterSim, ScannerSim
from firmware_sim.faults import Device, Fault, Injection, serial_wire
from firmware_sim.pty import PtyDevice

COI = "&/CHA999926ABC123"


@dataclass
class Parts:
    """Whatever of a unit is running; a fault on a part that is not there is refused."""

    scanner: PtyDevice | None = None
    counter: PtyDevice | None = None
    bioreactor: BioreactorSim | None = None
    broker: Broker | None = None
    camera_dir: Path | None = None


@dataclass
class Injector:
    parts: Parts
    rng: random.Random = field(default_factory=lambda: random.Random(26))
    log: Callable[[str], None] = lambda _s: None
    scan_data: str = COI
    frames: int = 0  # camera frames written
    counted: int = 0  # cell-counter samples sent
    _threads: list[threading.Thread] = field(default_factory=list)

    # -- the frames a fault is applied to ------------------------------------------------------

    def scan_frame(self, data: str | None = None) -> bytes:
        return ScannerSim().frame(data or self.scan_data, "]C0")

    def count_frame(self) -> bytes:
        self.counted += 1
        return CellCounterSim().frame(f"S-{self.counted}", 2_000_000 + self.counted, 1_840_000)

    def _serial(self, device: Device) -> tuple[PtyDevice, Callable[[], bytes]]:
        pty = self.parts.scanner if device is Device.SCANNER else self.parts.counter
        if pty is None:
            raise ValueError(f"this unit has no {device}")
        return pty, (self.scan_frame if device is Device.SCANNER else self.count_frame)

    # -- injection ------------------------------------------------------------------------------

    def inject(self, j: Injection) -> None:
        """Apply ``j`` now.  An unplug or a broker's down time runs in the background."""
        self.log(f"fault    {j.fault} on {j.device} {dict(j.params) or ''}".rstrip())
        if j.device in (Device.SCANNER, Device.COUNTER):
            self._inject_serial(j)
        elif j.device is Device.BIOREACTOR:
            self._inject_mqtt(j)
        elif j.device is Device.BROKER:
            self._inject_broker(j)
        else:
            self._inject_camera(j)

    def _inject_serial(self, j: Injection) -> None:
        pty, make = self._serial(j.device)
        if j.fault is Fault.UNPLUG:
            pty.unplug()
            self._later(float(j.params["for_s"]), pty.replug)
            return
        n = int(j.params["count"]) if j.fault is Fault.CONCAT else 1
        for chunk, pause in serial_wire(
            j.fault, j.params, [make() for _ in range(n)], b"\r\n", self.rng
        ):
            pty.write(chunk)
            if pause:
                time.sleep(pause)

    def _inject_mqtt(self, j: Injection) -> None:
        bio = self.parts.bioreactor
        if bio is None:
            raise ValueError("this unit has no bioreactor")
        if j.fault is Fault.DUPLICATE:
            bio.duplicate_next(int(j.params["copies"]))
        elif j.fault is Fault.CLOCK_DRIFT:
            bio.drift(float(j.params["rate"]))
        elif j.fault is Fault.CLOCK_JUMP:
            bio.jump(float(j.params["seconds"]))
        elif j.fault is Fault.POISON:
            bio.poison(str(j.params["kind"]))

    def _inject_broker(self, j: Injection) -> None:
        broker = self.parts.broker
        if broker is None:
            raise ValueError("this unit has no broker")
        if broker.proc is None:  # still down from an earlier fault: it comes back by itself
            self.log(f"fault    {j.fault} skipped: the broker is down already")
            return
        if j.fault is Fault.BROKER_KILL:
            broker.kill()
        else:
            broker.stop()
        down = float(j.params["down_s"])
        if down:
            self._later(down, broker.start)
        else:
            broker.start()

    def _inject_camera(self, j: Injection) -> None:
        from firmware_sim.camera import FrameStyle, code128, frame

        if self.parts.camera_dir is None:
            raise ValueError("this unit has no camera folder")
        style = FrameStyle(
            glare=float(j.params.get("strength", 0.0)) if j.fault is Fault.GLARE else 0.0,
            blur=int(j.params.get("kernel", 0)) if j.fault is Fault.BLUR else 0,
            angle=float(j.params.get("degrees", 0.0)) if j.fault is Fault.ROTATE else 0.0,
        )
        self.camera_frame(frame(code128(self.scan_data), style))

    def camera_frame(self, image: object) -> Path:
        import cv2
        import numpy as np

        assert self.parts.camera_dir is not None
        self.frames += 1
        path = self.parts.camera_dir / f"frame-{self.frames:05d}.png"
        cv2.imwrite(str(path), np.asarray(image))
        return path

    def _later(self, delay: float, action: Callable[[], object]) -> None:
        def run() -> None:
            time.sleep(delay)
            action()

        t = threading.Thread(target=run, daemon=True, name="sim-fault-later")
        t.start()
        self._threads.append(t)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every delayed action (a replug, a broker start) has run."""
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
