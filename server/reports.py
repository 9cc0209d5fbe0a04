"""PDF/A-2b reports from the batch view: the batch record report and the certificate of analysis,
each with the signature manifestations of 21 CFR 11.50 (printed name, date and time, meaning)
and the record hash the signatures are bound to.

Archival form (ISO 19005-2, level B): every font embedded (DejaVu Sans, :data:`FONT_DIRS`), an
sRGB output intent, XMP metadata declaring ``pdfaid:part 2``, ``conformance B``, and the real
creation date (``now``, the caller's clock).  reportlab lays the pages out; ``pikepdf.pdfa``
adds the output intent and the XMP, writes the file and validates the bytes it wrote against
its PDF/A-2b rules (drawn from veraPDF's profiles): a report that does not pass is an error,
never a file.  Every page says "page x of y".

Units are shown by their display names (:mod:`ebr_core.units_display`), never as raw UCUM codes.
What this module does not do: read the database, a clock or the MBR store; the caller passes
the view, the time, and (when it has them) the specification, the MBR and the telemetry series.

Over 400 lines: the two PDF/A documents (batch report and CoA) share their page furniture, fonts,
tables and charts.
"""

from __future__ import annotations

import html
import io
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from reportlab.graphics.shapes import Drawing, Line, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.lib.fonts import addMapping
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import StyleSheet1, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from ebr_core.limits import ChannelLimits, ValueLimits, describe_judged
from ebr_core.mbr import Limit, Mbr, MbrError
from ebr_core.spec.model import Spec
from ebr_core.spec.units import LEGACY
from ebr_core.units_display import display_quantity, display_unit
from server.errors import ServerError
from server.fhir import Manufacturer
from server.quality.views import cqa_panel

# Where DejaVu Sans is looked for: beside this module (a vendored copy), then Debian's
# fonts-dejavu-core.  Licence: Bitstream Vera / DejaVu (free), see the package's copyright file.
FONT_DIRS = (Path(__file__).resolve().parent / "fonts", Path("/usr/share/fonts/truetype/dejavu"))
FONT = "DejaVuSans"
BOLD = "DejaVuSans-Bold"
PRODUCER = "CTGTP batch record server"


class ReportError(ServerError):
    """A report could not be made as an archival (PDF/A-2b) file."""

    status = 500
    slug: ClassVar[str] = "report-failed"
    title: ClassVar[str] = "Report could not be made"


@cache
def _fonts() -> None:
    for name, file in ((FONT, "DejaVuSans.ttf"), (BOLD, "DejaVuSans-Bold.ttf")):
        path = next((d / file for d in FONT_DIRS if (d / file).is_file()), None)
        if path is None:
            raise ReportError(
                f"font {file} not found in {', '.join(str(d) for d in FONT_DIRS)}: install "
                "Debian's fonts-dejavu-core (PDF/A embeds every font it draws with)"
            )
        pdfmetrics.registerFont(TTFont(name, str(path)))
    for bold in (0, 1):
        for italic in (0, 1):
            addMapping(FONT, bold, italic, BOLD if bold else FONT)


@cache
def _styles() -> StyleSheet1:
    _fonts()
    ss = getSampleStyleSheet()
    for s in ss.byName.values():
        bold = s.name.startswith(("Title", "Heading"))
        s.fontName = BOLD if bold else FONT
        s.bulletFontName = FONT
    ss["Heading3"].keepWithNext = 1  # a heading never ends a page alone
    ss["BodyText"].fontSize = 8
    ss["BodyText"].leading = 10
    return ss


_GRID = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef4")),
        ("FONTNAME", (0, 0), (-1, -1), FONT),
        ("FONTSIZE", (0, 0), (-1, -1), 7.5),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)
WIDTH = 180 * mm  # A4 less the margins


def _p(text: Any, style: str = "BodyText") -> Paragraph:
    s = html.escape(str(text if text is not None else ""), quote=False)
    return Paragraph(s, _styles()[style])


def _table(header: list[str], rows: list[list[Any]], widths: list[float] | None = None) -> Table:
    """A table whose cells wrap: fixed column widths (equal unless given), so a long text widens
    no column; words longer than a column are split; and a row taller than a page continues on
    the next one (``splitInRow``).  Free text of any length prints in full."""
    data = [[_p(h) for h in header]] + [[_p(c) for c in r] for r in rows]
    cols = widths if widths is not None else [WIDTH / len(header)] * len(header)
    t = Table(data, colWidths=cols, repeatRows=1, splitInRow=1)
    t.setStyle(_GRID)
    return t


def _pairs(rows: list[tuple[str, Any]]) -> Table:
    t = Table([[_p(a), _p(b)] for a, b in rows], colWidths=[45 * mm, 135 * mm], splitInRow=1)
    t.setStyle(
        TableStyle(
            [("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("FONTNAME", (0, 0), (-1, -1), FONT)]
        )
    )
    return t


def _q(v: Any) -> str:
    """A recorded quantity ``{"value", "unit"}`` as a person reads it (``36.9 °C``)."""
    if isinstance(v, dict):
        return display_quantity(v.get("value", ""), str(v.get("unit", "1")))
    return "" if v is None else str(v)


def _value(v: dict[str, Any]) -> str:
    shown = _q(v.get("value"))
    if "recorded_value" in v:
        return f"{shown} (corrected; recorded {_q(v['recorded_value'])})"
    return shown


class _NumberedCanvas(Canvas):  # type: ignore[misc]  # reportlab is untyped
    """Defers each page until the count is known, then stamps "page x of y" and the footer."""

    footer = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for n, state in enumerate(self._pages, start=1):
            self.__dict__.update(state)
            self.setFont(FONT, 7)
            self.setFillColor(colors.HexColor("#444444"))
            self.drawString(15 * mm, 8 * mm, self.footer)
            self.drawRightString(195 * mm, 8 * mm, f"page {n} of {total}")
            super().showPage()
        super().save()


def _doc(title: str, story: list[Any], now: datetime | None, footer: str) -> bytes:
    """Lay out ``story``, then make it PDF/A-2b and validate the bytes written."""
    import pikepdf
    import pikepdf.pdfa

    _fonts()
    made = (now or datetime.now(UTC)).astimezone(UTC)
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        title=title,
        author=PRODUCER,
        creator=PRODUCER,
        producer=PRODUCER,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        initialFontName=FONT,  # no unembedded standard font, even for the empty first state
        lang="en",
    )

    class Numbered(_NumberedCanvas):
        pass

    Numbered.footer = footer
    doc.build(story, canvasmaker=Numbered)
    pdf = pikepdf.open(io.BytesIO(buf.getvalue()))
    for page in pdf.pages:
        if "/Trans" in page.obj:  # reportlab's empty page transition: not a PDF/A key
            del page.obj["/Trans"]
    stamp = made.strftime("D:%Y%m%d%H%M%S+00'00'")
    pdf.docinfo["/CreationDate"] = stamp
    pdf.docinfo["/ModDate"] = stamp
    with pdf.open_metadata(set_pikepdf_as_editor=False) as xmp:
        xmp["dc:title"] = title
        xmp["dc:creator"] = [PRODUCER]
        xmp["xmp:CreateDate"] = made.isoformat()
        xmp["xmp:ModifyDate"] = made.isoformat()
        xmp["xmp:CreatorTool"] = PRODUCER
        xmp["pdf:Producer"] = PRODUCER
    out = io.BytesIO()
    try:
        with _PDFA_LOCK:
            pikepdf.pdfa.save(pdf, out, "2b")
    except pikepdf.pdfa.PdfaError as e:
        if not _only_content_warnings(e.report.findings):
            raise ReportError(f"{title}: not a conforming PDF/A-2b file: {e}") from e
        return _save_pdfa_alone(pdf, title)
    return out.getvalue()


# pikepdf's validator records the warnings raised while it parses each content stream
# (``warnings.catch_warnings(record=True)`` with the ``always`` filter), and Python's warning
# machinery is process-wide: a warning raised meanwhile by another thread (another request of
# the server) lands in its list and fails a good file as ``pikepdf:content-parse``.  Saves are
# serialised (two interleaved ``catch_warnings`` would also leave the filters of the other in
# place), and a file failed only by content-stream warnings is saved again in a process of its
# own, where no other thread runs: its verdict stands, whichever it is.
_PDFA_LOCK = threading.Lock()
_CONTENT_WARNING = "pikepdf:content-parse"


def _only_content_warnings(findings: Sequence[Any]) -> bool:
    violations = [f for f in findings if f.kind == "violation"]
    return bool(violations) and all(
        f.rule == _CONTENT_WARNING and str(f.message).startswith("content stream:")
        for f in violations
    )


_ALONE = """
import io, sys
import pikepdf, pikepdf.pdfa
pdf = pikepdf.open(io.BytesIO(sys.stdin.buffer.read()))
out = io.BytesIO()
try:
    pikepdf.pdfa.save(pdf, out, "2b")
except pikepdf.pdfa.PdfaError as e:
    sys.stderr.write(str(e))
    sys.exit(3)
sys.stdout.buffer.write(out.getvalue())
"""


def _save_pdfa_alone(pdf: Any, title: str) -> bytes:
    """Make and validate the PDF/A file in a child process (see :data:`_PDFA_LOCK`)."""
    raw = io.BytesIO()
    pdf.save(raw)
    done = subprocess.run(
        [sys.executable, "-c", _ALONE],
        input=raw.getvalue(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise ReportError(f"{title}: not a conforming PDF/A-2b file: {why}")
    return done.stdout


# -- the batch record report ------------------------------------------------------------------


def _identity(view: dict[str, Any], extra: tuple[tuple[str, Any], ...] = ()) -> Table:
    return _pairs(
        [
            ("Batch", view["batch_id"]),
            ("Chain of identity (COI)", view["coi"]),
            ("Site / unit", f"{view['site_id']} / {view['unit_id']}"),
            ("Master batch record", view["mbr"]),
            *extra,
            ("Status", view["status"]),
            ("Events", view["events"]),
            ("Record hash (SHA-256)", view["record_hash"]),
        ]
    )


def _binding(s: dict[str, Any]) -> str:
    """Whether a QA signature applies to the record as it is (signatures.signature_json)."""
    if not s["applies"]:
        return "NO LONGER APPLIES (record changed)"
    n = s.get("travel_since") or 0
    if n:
        return f"applies to the record it signed; {n} travel event(s) since"
    return "applies"


def _manifestations(view: dict[str, Any], jurisdiction: str | None) -> list[Any]:
    sigs = [
        s
        for s in view["qa_signatures"]
        if jurisdiction is None or s["jurisdiction"] == jurisdiction
    ]
    rows = [
        [
            s["printed_name"],
            s["user_id"],
            s["signed_at"],
            s["meaning"],
            s["jurisdiction"],
            s["reason"],
            _binding(s),
        ]
        for s in sigs
    ]
    return [
        _p("QA electronic signatures", "Heading3"),
        _table(
            ["Printed name", "User", "Date/time (UTC)", "Meaning", "Jur.", "Reason", "Binding"],
            rows,
            [28 * mm, 20 * mm, 34 * mm, 20 * mm, 11 * mm, 42 * mm, 25 * mm],
        )
        if rows
        else _p("No QA signature has been applied."),
    ]


def _corrections(view: dict[str, Any]) -> list[Any]:
    """Each correction: the old value, the new value, who, when and why (and, for one that was
    not applied, the problem)."""
    fixes = view.get("corrections", [])
    if not fixes:
        return [_p("Corrections", "Heading3"), _p("No value was corrected.")]
    rows = [
        [
            c["seq"],
            c["corrects"],
            f"{c['step']}:{c['name']}",
            _q(c["old_value"]),
            _q(c["new_value"]),
            c["by"],
            c["at"],
            c["reason"] if c["applied"] else f"{c['reason']} [{c['problem']}]",
        ]
        for c in fixes
    ]
    header = ["Seq", "Corrects", "Step:name", "Old value", "New value", "By", "Date/time"]
    widths = [10 * mm, 16 * mm, 30 * mm, 18 * mm, 18 * mm, 22 * mm, 30 * mm, 36 * mm]
    return [_p("Corrections", "Heading3"), _table([*header, "Reason"], rows, widths)]


def _alarms(view: dict[str, Any]) -> list[Any]:
    rows = [
        [a.get("seq"), a.get("source"), a.get("code"), a.get("message")] for a in view["alarms"]
    ]
    return [
        _p("Alarms", "Heading3"),
        _table(["Seq", "Source", "Code", "Message"], rows, [12 * mm, 30 * mm, 25 * mm, 113 * mm]),
    ]


def _ack(a: dict[str, Any]) -> str:
    k = a.get("acknowledged")
    return "-" if not k else f"{k['by']} ({k['at']}): {k['note']}"


def _clock_alerts(view: dict[str, Any]) -> list[Any]:
    alerts = view.get("clock_alerts", [])
    if not alerts:
        return [_p("Clock alerts", "Heading3"), _p("No clock alert was raised for this batch.")]
    rows = [[a["kind"], a["unit_id"], a["created_at"], a["message"], _ack(a)] for a in alerts]
    header = ["Kind", "Unit", "Raised (server time)", "Message", "Acknowledged"]
    widths = [28 * mm, 22 * mm, 30 * mm, 60 * mm, 40 * mm]
    return [_p("Clock alerts", "Heading3"), _table(header, rows, widths)]


def _describe(lim: Limit, unit: str) -> str:
    def q(x: Decimal) -> str:
        return display_quantity(x, unit)

    if lim.min is not None and lim.max is not None:
        return f"{q(lim.min)} to {q(lim.max)}"
    return f">= {q(lim.min)}" if lim.min is not None else f"<= {q(lim.max)}"  # type: ignore[arg-type]


def _limit_of(key: str, v: dict[str, Any], mbr: Mbr | None) -> str:
    """The judgement at the station and the limits it was judged against: from the record
    itself when the station wrote them into the event (``limits``: ``ok (soft 6.8–7.6 pH, hard
    6.5–7.8 pH)``, :func:`ebr_core.limits.describe_judged`), else from the MBR if supplied."""
    recorded = describe_judged(v)
    if recorded is not None:
        return recorded
    judged = str(v.get("limit", "not judged"))
    if mbr is None:
        return f"{judged} (limit in {v.get('mbr', 'the MBR')}; MBR not supplied)"
    step, _, name = key.partition(":")
    spec = None
    try:
        spec = mbr.step(step).value(name)
    except MbrError:  # a step the MBR does not have: look the value up by name below
        spec = None
    if spec is None:
        found = [s.value(name) for s in mbr.steps if s.value(name) is not None]
        spec = found[0] if len(found) == 1 else None
    if spec is None or (spec.hard is None and spec.soft is None):
        return f"{judged} (no limit for {name} in {mbr.mbr_id} v{mbr.version})"
    shown = ValueLimits(spec.unit, spec.hard, spec.soft).describe()
    return f"{judged} ({shown}; from {mbr.mbr_id} v{mbr.version} as supplied, not recorded)"


def _materials(view: dict[str, Any]) -> list[Any]:
    scans = view.get("accepted_scans")
    head = _p("Materials, lots and equipment (accepted scans)", "Heading3")
    if scans is None:
        return [head, _p("The batch view carries no accepted scans.")]
    rows = [
        [
            s.get("seq"),
            s.get("step"),
            s.get("role"),
            _readable(s.get("raw")),
            ", ".join(f"{k} {v}" for k, v in sorted((s.get("identifiers") or {}).items())) or "-",
        ]
        for s in scans
    ]
    widths = [12 * mm, 28 * mm, 25 * mm, 60 * mm, 55 * mm]
    return [head, _table(["Seq", "Step", "Role", "Scanned", "Identifiers"], rows, widths)]


def _readable(raw: Any) -> str:
    """A scan as printed text: the GS1 group separator shown as <GS>."""
    return "" if raw is None else str(raw).replace("\x1d", "<GS>")


def _steps(view: dict[str, Any]) -> list[Any]:
    """Each step's first and last recorded event (start and end as the record shows them)."""
    spans: dict[str, list[str]] = {}
    done: dict[str, str] = {}
    for t in view.get("timeline", []):
        if t.get("step"):
            spans.setdefault(t["step"], []).append(t["recorded_at"])
            if t["kind"] == "step.completed":
                done[t["step"]] = t["recorded_at"]
    rows = [[s, min(ts), done.get(s, max(ts)), "completed" if s in done else "open"]
            for s, ts in spans.items()]  # fmt: skip
    return [
        _p("Steps (first and last event, UTC)", "Heading3"),
        _table(["Step", "Started", "Ended", "State"], rows, [50 * mm, 50 * mm, 50 * mm, 30 * mm]),
    ]


def _labels(view: dict[str, Any]) -> list[Any]:
    head = _p("Label reconciliation", "Heading3")
    labels = view.get("labels")
    if labels is None:
        return [head, _p("The batch view carries no label counts.")]
    if not labels:
        return [head, _p("No label was printed for this batch.")]
    rows = [[k, c["printed"], c["applied"], c["destroyed"],
             "balanced" if c["balanced"] else "DOES NOT BALANCE"]
            for k, c in sorted(labels.items())]  # fmt: skip
    return [head, _table(["Label", "Printed", "Applied", "Destroyed", "Reconciliation"], rows)]


def _to_float(x: Any) -> float | None:
    try:
        return float(Decimal(str(x)))
    except (InvalidOperation, ValueError):
        return None


def _chart(name: str, c: Mapping[str, Any], limit: Limit | None) -> Drawing:
    """Min/max of each bucket as a vertical bar (no excursion is hidden by averaging), the
    limits as dashed lines, buckets outside them in red."""
    w, h, left, bottom = WIDTH, 42 * mm, 16 * mm, 8 * mm
    d = Drawing(w, h, initialFontName=FONT)  # no standard (unembedded) font as the state
    pts = [p for p in c.get("series", []) if p.get("n")]
    lo_lim = _to_float(limit.min) if limit and limit.min is not None else None
    hi_lim = _to_float(limit.max) if limit and limit.max is not None else None
    ys = [p["min"] for p in pts] + [p["max"] for p in pts]
    ys += [y for y in (lo_lim, hi_lim) if y is not None]
    unit = display_unit(str(c.get("unit", "")))
    d.add(String(0, h - 8, f"{name} ({unit or 'no unit'})", fontName=FONT, fontSize=8))
    if not pts:
        d.add(String(left, h / 2, "no plotted readings", fontName=FONT, fontSize=7))
        return d
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    t0, t1 = pts[0]["t"], pts[-1]["t"] + int(c.get("bucket_s", 60))
    pw, ph = w - left - 4, h - bottom - 12

    def x(t: float) -> float:
        return float(left + (t - t0) / max(t1 - t0, 1) * pw)

    def y(v: float) -> float:
        return float(bottom + (v - y0) / (y1 - y0) * ph)

    d.add(Rect(left, bottom, pw, ph, strokeColor=colors.grey, fillColor=None, strokeWidth=0.4))
    for v in (y0 + pad, y1 - pad):
        d.add(String(2, y(v) - 2, f"{v:g}", fontName=FONT, fontSize=6))
    for lim in (lo_lim, hi_lim):
        if lim is not None:
            d.add(
                Line(
                    left,
                    y(lim),
                    left + pw,
                    y(lim),
                    strokeColor=colors.HexColor("#b00020"),
                    strokeWidth=0.6,
                    strokeDashArray=[3, 2],
                )
            )
    for p in pts:
        out = (lo_lim is not None and p["min"] < lo_lim) or (
            hi_lim is not None and p["max"] > hi_lim
        )
        colour = colors.HexColor("#b00020") if out else colors.HexColor("#1f4e79")
        xi = x(p["t"])
        d.add(
            Line(
                xi,
                y(p["min"]),
                xi,
                y(p["max"]) + 0.3,
                strokeColor=colour,
                strokeWidth=1.4 if out else 0.6,
            )
        )
    d.add(
        PolyLine(
            [(x(p["t"]), y((p["min"] + p["max"]) / 2)) for p in pts],
            strokeColor=colors.HexColor("#1f4e79"),
            strokeWidth=0.3,
        )
    )
    first = datetime.fromtimestamp(t0, UTC).strftime("%Y-%m-%d %H:%M")
    last = datetime.fromtimestamp(t1, UTC).strftime("%Y-%m-%d %H:%M")
    d.add(String(left, 1, f"{first} UTC", fontName=FONT, fontSize=6))
    d.add(String(left + pw - 60, 1, f"{last} UTC", fontName=FONT, fontSize=6))
    return d


Recorded = Mapping[str, tuple[ChannelLimits | None, str]]


def _channel_limit(name: str, unit: str, mbr: Mbr | None, recorded: Recorded | None) -> str:
    """A channel's limits for the table: as the record holds them (with their source), else
    from the MBR supplied, else why there are none."""
    lim, note = (recorded or {}).get(name, (None, ""))
    if lim is not None:
        return lim.describe()
    if mbr is not None and name in mbr.telemetry:
        return f"{_describe(mbr.telemetry[name].limit, unit)} (MBR supplied)"
    return note or ("not in the MBR supplied" if mbr else "none recorded; MBR not supplied")


def _chart_limit(name: str, mbr: Mbr | None, recorded: Recorded | None) -> Limit | None:
    lim = (recorded or {}).get(name, (None, ""))[0]
    if lim is not None:
        return lim.limit
    return mbr.telemetry[name].limit if mbr and name in mbr.telemetry else None


def _telemetry(
    view: dict[str, Any],
    series: Mapping[str, Any] | None,
    mbr: Mbr | None,
    recorded: Recorded | None = None,
) -> list[Any]:
    channels = view.get("telemetry", {})
    out: list[Any] = [
        _p(f"Instrument telemetry ({view.get('readings', 0)} readings)", "Heading3"),
        _table(
            ["Channel", "Count", "Min", "Max", "Last", "Last at", "Limits", "Excursions"],
            [
                [
                    name,
                    c["count"],
                    _q({"value": c["min"], "unit": c["unit"]}),
                    _q({"value": c["max"], "unit": c["unit"]}),
                    _q({"value": c["last"], "unit": c["unit"]}),
                    c["last_at"],
                    _channel_limit(name, c["unit"], mbr, recorded),
                    c["excursions"],
                ]
                for name, c in channels.items()
            ],
            [24 * mm, 14 * mm, 17 * mm, 17 * mm, 17 * mm, 36 * mm, 34 * mm, 21 * mm],
        ),
    ]
    by_channel = (series or {}).get("channels", series or {})
    for name, c in channels.items():
        s = by_channel.get(name) if isinstance(by_channel, Mapping) else None
        if s is None or "series" not in s:
            continue
        lim = _chart_limit(name, mbr, recorded)
        out.append(
            KeepTogether(
                [
                    Spacer(1, 2 * mm),
                    _chart(name, s, lim),
                    _p(
                        f"{name}: {c['excursions']} reading(s) outside the limits; "
                        "each bar spans a bucket's minimum to maximum; red: outside "
                        f"the limits (dashed), {_channel_limit(name, c['unit'], mbr, recorded)}"
                        if lim is not None
                        else f"{name}: {c['excursions']} reading(s) the unit marked outside "
                        "limits; each bar spans a bucket's minimum to maximum; "
                        + _channel_limit(name, c["unit"], mbr, recorded)
                    ),
                ]
            )
        )
    return out


def batch_report_pdf(
    view: dict[str, Any],
    *,
    now: datetime | None = None,
    mbr: Mbr | None = None,
    telemetry: Mapping[str, Any] | None = None,
    limits: Recorded | None = None,
) -> bytes:
    """The batch record as PDF/A-2b.  ``telemetry`` is ``GET /v1/batches/{id}/telemetry``'s
    body (the charts need its series); ``limits``: each channel's limits as the record holds
    them, with the sentence saying where from or why none
    (:func:`server.projections.channel_limits`).  A value's limits come from its own event;
    ``mbr``, when given, supplies those an older record does not hold."""
    exceptions = view["exceptions"]
    keys = (
        "rejected_scans",
        "open_deviations",
        "alarms",
        "failed_signatures",
        "limit_excursions",
        "corrections",
        "clock_alerts",
    )
    story: list[Any] = [
        _p(f"Batch record report: {view['batch_id']}", "Title"),
        _identity(view, (("Started", view.get("started_at")),)),
        Spacer(1, 4 * mm),
        _p("Exceptions", "Heading3"),
        _table(
            [
                "Rejected scans",
                "Open deviations",
                "Alarms",
                "Failed signatures",
                "Limit excursions",
                "Corrections",
                "Clock alerts",
            ],
            [[exceptions.get(k, 0) for k in keys]],
        ),
        *_steps(view),
        *_materials(view),
        _p(
            "Recorded values (current; a corrected value names the value first recorded)",
            "Heading3",
        ),
        _table(
            ["Step:name", "Value", "Judgement at the station (limits)"],
            [[k, _value(v), _limit_of(k, v, mbr)] for k, v in sorted(view["values"].items())],
            [55 * mm, 55 * mm, 70 * mm],
        ),
        *_corrections(view),
        *_telemetry(view, telemetry, mbr, limits),
        _p("Rejected scans", "Heading3"),
        _table(
            ["Seq", "Step", "Scanned", "Reason"],
            [
                [
                    s.get("seq"),
                    s.get("step"),
                    _readable(s.get("raw") or s.get("scanned")),
                    s.get("reason"),
                ]
                for s in view["rejected_scans"]
            ],
            [12 * mm, 30 * mm, 60 * mm, 78 * mm],
        ),
        *_labels(view),
        *_alarms(view),
        *_clock_alerts(view),
        _p("Deviations", "Heading3"),
        _table(
            ["Id", "Severity", "Reason", "Comments (by, date/time)", "Status"],
            [
                [
                    d["deviation_id"],
                    d["severity"],
                    d["reason"],
                    "; ".join(
                        f"{c['text']} ({c['by']}, {c.get('at') or 'time not recorded'})"
                        for c in d["comments"]
                    )
                    or "-",
                    "open"
                    if d["open"]
                    else f"closed by {d['closed']['by']}: {d['closed']['reason']}",
                ]
                for d in view["deviations"]
            ],
            [16 * mm, 16 * mm, 50 * mm, 54 * mm, 44 * mm],
        ),
        _p("Operator signatures (edge)", "Heading3"),
        _table(
            ["Step", "Printed name", "User", "Date/time", "Meaning"],
            [
                [g["step"], g["printed_name"], g["user_id"], g["recorded_at"], g["meaning"]]
                for g in view["edge_signatures"]
            ],
            [35 * mm, 50 * mm, 25 * mm, 40 * mm, 30 * mm],
        ),
        _p("Quality evaluation", "Heading3"),
        _table(
            ["Jurisdiction", "Specification", "Candidate disposition", "Failing attributes"],
            [
                [
                    j,
                    f"{c['spec_id']} v{c['spec_version']}",
                    c["disposition"],
                    ", ".join(v["attribute"] for v in c["verdicts"] if v["status"] == "fail")
                    or "-",
                ]
                for j, c in sorted(view["cqa"].items())
            ],
        ),
        _p("Dispositions", "Heading3"),
        _table(
            ["Jurisdiction", "Disposition", "Pending", "Signed by", "Date/time"],
            [
                [
                    d["jurisdiction"],
                    d["disposition"],
                    ", ".join(d["pending"]) or "-",
                    d["signature"]["printed_name"],
                    d["decided_at"],
                ]
                for d in view["dispositions"]
            ],
        ),
        *_manifestations(view, None),
    ]
    footer = f"Batch record {view['batch_id']} · record {view['record_hash'][:16]}"
    return _doc(f"Batch record {view['batch_id']}", story, now, footer)


# -- the certificate of analysis --------------------------------------------------------------

# What the person who releases the batch certifies, per jurisdiction.  The wording is this
# project's; the clauses are the law it follows.
CERTIFICATION: dict[str, str] = {
    "EU": (
        "Qualified Person certification. I certify that this batch has been manufactured and "
        "checked in compliance with the laws in force in the Member State where certification "
        "takes place, with the requirements of the marketing authorisation and with EU Good "
        "Manufacturing Practice for Advanced Therapy Medicinal Products (Directive 2001/83/EC, "
        "Article 51; Regulation (EC) No 1394/2007; EudraLex Volume 4, Part IV, section 11, and "
        "Annex 16)."
    ),
    "UK": (
        "Qualified Person certification. I certify that this batch has been manufactured and "
        "checked in accordance with the Human Medicines Regulations 2012 (as amended), the "
        "marketing authorisation and the UK GMP guide for advanced therapy medicinal products."
    ),
    "US": (
        "Release by the quality control unit. This lot has been tested and meets the "
        "specifications of the approved biologics licence application (21 CFR 211.22, "
        "21 CFR 211.165 and 21 CFR 610.1)."
    ),
    "SG": (
        "Batch release. I certify that this batch has been manufactured and checked in "
        "accordance with the Health Products (Cell, Tissue and Gene Therapy Products) "
        "Regulations 2021, the product's registration with the Health Sciences Authority and "
        "the PIC/S Guide to Good Manufacturing Practice (Annex 2A)."
    ),
}


def _when(made: str | None, days: int | None) -> tuple[str, str]:
    if not made:
        return "not recorded", "not stated"
    t = datetime.fromisoformat(made.replace("Z", "+00:00"))
    expiry = (t + timedelta(days=days)).date().isoformat() if days else "not stated"
    return t.date().isoformat(), expiry


def coa_pdf(
    view: dict[str, Any],
    jurisdiction: str,
    *,
    now: datetime | None = None,
    spec: Spec | None = None,
    manufacturer: Manufacturer | None = None,
) -> bytes:
    """The certificate of analysis in ``jurisdiction`` as PDF/A-2b."""
    cqa = cqa_panel(view, jurisdiction)
    disp = [d for d in view["dispositions"] if d["jurisdiction"] == jurisdiction]
    stored = view.get("results") or {}
    results: dict[str, Any] = stored.get("results", {})
    m = manufacturer or Manufacturer(view["site_id"], f"Manufacturing site {view['site_id']}")
    done = [t["recorded_at"] for t in view.get("timeline", []) if t["kind"] == "batch.completed"]
    made, expiry = _when(
        done[-1] if done else view.get("started_at"), spec.shelf_life_days if spec else None
    )
    attrs = spec.for_jurisdiction(jurisdiction) if spec else {}
    rows = []
    for v in cqa["verdicts"]:
        r = results.get(v["attribute"]) if isinstance(results.get(v["attribute"]), dict) else None
        a = attrs.get(v["attribute"])
        if r and "value" in r and v["status"] != "missing":
            unit = str(r.get("unit", a.unit if a else "1"))
            shown = display_quantity(r["value"], LEGACY.get(unit, unit))
            shown += " (to date)" if r.get("status") == "negative-to-date" else ""
        else:
            shown = "pending" if v["status"] == "pending" else "no result"
        limit = v["limit"]
        if a is not None and a.kind == "numeric":
            limit = " and ".join(
                f"{op} {display_quantity(b.value, LEGACY.get(a.unit, a.unit))}"
                for op, b in (
                    (">=" if a.lower and a.lower.inclusive else ">", a.lower),
                    ("<=" if a.upper and a.upper.inclusive else "<", a.upper),
                )
                if b is not None
            )
        rows.append(
            [
                v["name"],
                (r or {}).get("method") or (", ".join(a.methods) if a and a.methods else "-"),
                limit,
                shown,
                str((r or {}).get("tested_at") or stored.get("entered_at") or "-")[:10]
                if shown not in ("pending", "no result")
                else "-",
                (r or {}).get("laboratory") or m.name,
                {"pass": "conforms", "fail": "DOES NOT CONFORM"}.get(v["status"], v["status"]),
            ]
        )
    product = (spec.product if spec else "") or view["mbr"]
    certification = CERTIFICATION.get(
        jurisdiction, f"Released for {jurisdiction} under its applicable regulations."
    )
    signer = (
        f"{disp[-1]['signature']['printed_name']} ({disp[-1]['signature']['user_id']}), "
        f"{disp[-1]['decided_at']}: {disp[-1]['disposition']}"
        if disp
        else f"not yet certified (candidate disposition: {cqa['disposition']})"
    )
    story: list[Any] = [
        _p(f"Certificate of analysis ({jurisdiction})", "Title"),
        _pairs(
            [
                ("Product", product),
                ("Strength", (spec.strength if spec else "") or "as labelled"),
                ("Batch / lot", view["batch_id"]),
                ("Chain of identity (COI)", view["coi"]),
                ("Manufacturer", f"{m.name} (site {m.site_id})"),
                ("Date of manufacture", made),
                ("Expiry date", expiry),
                ("Specification", f"{cqa['spec_id']} v{cqa['spec_version']}"),
                ("Evaluation hash", cqa.get("evaluation_hash", "")),
                ("Record hash (SHA-256)", view["record_hash"]),
            ]
        ),
        Spacer(1, 4 * mm),
        _p("Results", "Heading3"),
        _table(
            [
                "Test",
                "Method",
                "Acceptance criterion",
                "Result",
                "Tested",
                "Laboratory",
                "Conclusion",
            ],
            rows,
            [32 * mm, 24 * mm, 30 * mm, 26 * mm, 18 * mm, 28 * mm, 22 * mm],
        ),
        Spacer(1, 3 * mm),
        _p("Certification", "Heading3"),
        _p(certification),
        _p(f"Certified by: {signer}"),
        _p(
            "Pending after release: " + (", ".join(disp[-1]["pending"]) or "none")
            if disp
            else "Disposition not yet decided."
        ),
        *_manifestations(view, jurisdiction),
    ]
    footer = f"Certificate of analysis {view['batch_id']} ({jurisdiction})"
    return _doc(f"Certificate of analysis {view['batch_id']} {jurisdiction}", story, now, footer)
