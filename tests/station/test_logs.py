"""The station's log: one JSON object per line, whatever an event's text holds."""

from __future__ import annotations

import io
import json
import logging

from hypothesis import given
from hypothesis import strategies as st

from edge.station import logs

_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)


@given(msg=_TEXT, device=_TEXT, n=st.integers())
def test_every_event_is_one_json_line(msg: str, device: str, n: int) -> None:
    """Law: a message with newlines, quotes or any character is still one line, and reads back
    as it was logged."""
    out = io.StringIO()
    handler = logs.configure(out)
    try:
        logs.event("scan.received", msg, device=device, length=n)
    finally:
        logs.unconfigure(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert (doc["event"], doc["msg"], doc["device"], doc["length"]) == (
        "scan.received",
        msg,
        device,
        n,
    )
    assert lines[0].isascii()
    assert doc["level"] == "info" and doc["logger"] == "ctgtp.edge.station"


def test_a_library_message_and_an_exception_are_json_too() -> None:
    out = io.StringIO()
    handler = logs.configure(out)
    try:
        logging.getLogger("ctgtp.edge.serial").warning("dropped %r", b"\x00\xff\n")
        try:
            raise ValueError("line one\nline two")
        except ValueError:
            logging.getLogger("uvicorn.error").exception("boom")
    finally:
        logs.unconfigure(handler)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["event"], x["logger"], x["msg"]) for x in lines] == [
        ("log", "ctgtp.edge.serial", "dropped b'\\x00\\xff\\n'"),
        ("log", "uvicorn.error", "boom"),
    ]
    assert "ValueError: line one\nline two" in lines[1]["error"]
