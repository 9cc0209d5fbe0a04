"""A warning raised by another thread of the server does not fail a good report's PDF/A check.

pikepdf's validator records warnings process-wide while it parses content streams; before the
fix, any warning another request raised meanwhile failed the file as ``pikepdf:content-parse``
(the intermittent problem answer instead of ``report.pdf`` under load).
"""

from __future__ import annotations

import threading
import warnings
from datetime import UTC, datetime

import pikepdf
import pytest
from reportlab.lib.styles import ParagraphStyle
from reportlab.platypus import Paragraph

from server import reports


def _story() -> list[Paragraph]:
    reports._fonts()
    style = ParagraphStyle("body", fontName=reports.FONT, fontSize=9)
    return [Paragraph(f"line {i} " * 40, style) for i in range(30)]


def test_a_warning_in_another_thread_does_not_fail_the_pdfa_check() -> None:
    stop = threading.Event()

    def noisy() -> None:
        while not stop.is_set():
            warnings.warn("raised by another request", DeprecationWarning, stacklevel=1)

    t = threading.Thread(target=noisy, daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this test's own noise stays out of its report
        t.start()
        try:
            made = [
                reports._doc("Threads", _story(), datetime(2026, 11, 30, tzinfo=UTC), "footer")
                for _ in range(5)
            ]
        finally:
            stop.set()
            t.join()
    for raw in made:
        with pikepdf.open(__import__("io").BytesIO(raw)) as pdf:
            assert pdf.open_metadata().get("pdfaid:part") == "2"


def test_the_clean_process_save_gives_its_own_verdict() -> None:
    import io

    with pikepdf.open(io.BytesIO(reports._doc("Clean", _story(), None, "f"))) as pdf:
        raw = reports._save_pdfa_alone(pdf, "Clean")
    with pikepdf.open(io.BytesIO(raw)) as again:
        assert again.open_metadata().get("pdfaid:conformance") == "B"
    broken = pikepdf.new()
    broken.add_blank_page()
    broken.pages[0].obj["/Contents"] = broken.make_stream(b"BT /F1 12 Tf (x) Tj ET")
    with pytest.raises(reports.ReportError, match="not a conforming PDF/A-2b"):
        reports._save_pdfa_alone(broken, "Broken")
