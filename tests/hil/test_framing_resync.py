"""Serial framing resynchronises on the next frame start or terminator (issue 17, item 8):
one bad frame never costs the next good one, however the bytes are split."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.transports.serial import SerialReader
from firmware_sim.devices import ScannerSim
from firmware_sim.pty import PtyDevice
from hardware.framing import LineFramer
from hardware.profile import shipped_profile

COI = "&/CHA999926ABC123"
GOOD = f"]C0{COI}".encode()
CUT = GOOD[:16]  # b"]C0&/CHA999926AB": the scan cut short in the issue

# What a scanner can put after its identifier: printable ASCII except ']' (an identifier start
# inside the data is not what a configured scanner sends), and GS for FNC1.
DATA = st.lists(
    st.sampled_from([c for c in range(0x20, 0x7F) if c != ord("]")] + [0x1D]),
    min_size=1,
    max_size=40,
).map(bytes)
AIM = st.tuples(st.sampled_from(b"CdQEIe"), st.sampled_from(b"0123456789")).map(
    lambda t: bytes([ord("]"), t[0], t[1]])
)
GOOD_FRAMES = st.builds(lambda a, d: a + d, AIM, DATA)


@st.composite
def garbage(draw: st.DrawFn, terminator: bytes) -> bytes:
    """Line noise, a frame cut short (no terminator), or a cut frame's tail after a terminator."""
    kind = draw(st.sampled_from(["noise", "cut", "cut_tail", "none"]))
    if kind == "none":
        return b""
    if kind == "noise":
        return draw(st.binary(max_size=30))
    frame = draw(GOOD_FRAMES)
    cut = frame[: draw(st.integers(0, len(frame) - 1))]
    return cut if kind == "cut" else cut + terminator + draw(st.binary(max_size=10))


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    out, pos = [], 0
    for n in cuts:
        out.append(stream[pos : pos + n])
        pos += n
    return [*out, stream[pos:]]


def is_subsequence(want: list[bytes], got: list[bytes]) -> bool:
    it = iter(got)
    return all(any(g == w for g in it) for w in want)


@settings(max_examples=300)
@given(st.data(), st.sampled_from([b"\r\n", b"\r"]))
def test_garbage_and_cut_frames_between_good_frames_lose_no_good_frame(
    data: st.DataObject, terminator: bytes
) -> None:
    good = data.draw(st.lists(GOOD_FRAMES, min_size=1, max_size=6), label="good")
    junk = [data.draw(garbage(terminator), label="garbage") for _ in range(len(good) + 1)]
    stream = b"".join(j + g + terminator for j, g in zip(junk, good, strict=False)) + junk[-1]
    cuts = data.draw(st.lists(st.integers(1, 13), max_size=60), label="cuts")

    whole = LineFramer(terminator, symbology_identifiers=True)
    at_once = whole.feed(stream)
    framer, got = LineFramer(terminator, symbology_identifiers=True), []
    for chunk in split(stream, cuts):
        got += framer.feed(chunk)
    assert got == at_once  # however the stream is split
    assert is_subsequence(good, got), (good, got)  # every good frame, intact, in order
    assert framer.close() == whole.close()


def test_a_scan_cut_short_does_not_swallow_the_next_good_scan() -> None:
    f = LineFramer(symbology_identifiers=True)
    assert f.feed(CUT + GOOD + b"\r\n") == [GOOD]
    assert f.take_fragments() == [CUT]
    assert f.dropped == 1
    # byte by byte, the same
    f = LineFramer(symbology_identifiers=True)
    got = [line for b in CUT + GOOD + b"\r\n" for line in f.feed(bytes([b]))]
    assert got == [GOOD]
    assert f.take_fragments() == [CUT]


def test_garbage_before_a_frame_start_is_dropped_after_a_terminator() -> None:
    f = LineFramer(symbology_identifiers=True)
    assert f.feed(b"\x00\xff~" + GOOD + b"\r\n" + GOOD + b"\r\n") == [GOOD, GOOD]
    assert f.take_fragments() == [b"\x00\xff~"]


def test_without_identifiers_the_terminator_is_the_only_resync_point() -> None:
    # the profile sends no symbology identifier: nothing marks a frame start
    assert LineFramer().feed(CUT + GOOD + b"\r\n") == [CUT + GOOD]


def test_the_shipped_scanner_profiles_resynchronise_on_identifiers() -> None:
    for name in ("scanner_serial_generic", "scanner_serial_pipe_gs"):
        p = shipped_profile(name)
        assert p.framing["symbology_identifiers"] is True


@pytest.mark.hil
def test_serial_reader_on_a_pty_keeps_the_good_scan_after_a_cut_one() -> None:
    dev = PtyDevice()
    scans: list[str] = []
    reader = SerialReader(
        dev.port, shipped_profile("scanner_serial_generic"), lambda s: scans.append(str(s))
    ).start()
    try:
        dev.write(CUT)  # the scan cut short: no terminator
        time.sleep(0.1)
        dev.write(ScannerSim().frame(COI, "]C0"))
        end = time.monotonic() + 3
        while time.monotonic() < end and not scans:
            time.sleep(0.02)
        time.sleep(0.1)
    finally:
        reader.stop()
        dev.close()
    assert scans == [GOOD.decode()]
    assert reader.stats.faults == [
        "line without terminator dropped (resynchronised on the next frame): b']C0&/CHA999926AB'"
    ]


def test_a_frame_marker_resynchronises_a_line_cut_short() -> None:
    """A CC1 line cut short (no terminator) is dropped at the next ``$CC1,``, and the good count
    after it is delivered whole; without the marker the two would be glued into one bad line."""
    cut = b"$CC1,S-1,1.20E6,1.1"
    good = b"$CC1,S-2,1.25E6,1.19E6,95.2*3A"
    f = LineFramer(frame_start=b"$CC1,")
    assert f.feed(cut + good + b"\r\n") == [good]
    assert f.take_fragments() == [cut]
    assert LineFramer().feed(cut + good + b"\r\n") == [cut + good]
    # Chunked anywhere, the same lines come out.
    stream = cut + good + b"\r\n" + good + b"\r\n"
    for size in range(1, len(stream)):
        g = LineFramer(frame_start=b"$CC1,")
        got = []
        for i in range(0, len(stream), size):
            got += g.feed(stream[i : i + size])
        assert got == [good, good], size
