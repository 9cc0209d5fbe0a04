"""PDF reports from the batch view: the batch record report and the certificate of analysis, each
with the signature manifestations of 21 CFR 11.50 (printed name, date and time, meaning) and the
record hash the signatures are bound to."""

from __future__ import annotations

import io
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from server.fhir import cqa_panel

_STYLES = getSampleStyleSheet()
_GRID = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef4")),
        ("FONTSIZE", (0, 0), (-1, -1), 7.5),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)


def _p(text: Any, style: str = "BodyText") -> Paragraph:
    s = str(text if text is not None else "")
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return Paragraph(s, _STYLES[style])


WIDTH = 180 * mm  # A4 less the margins


def _table(header: list[str], rows: list[list[Any]], widths: list[float] | None = None) -> Table:
    """A table whose cells wrap: fixed column widths (equal unless given), so a long text widens
    no column; words longer than a column are split (the style's ``splitLongWords``); and a row
    taller than a page continues on the next one (``splitInRow``).  Free text of any length
    (reasons, comments, names) therefore prints in full and never breaks the report."""
    data = [[_p(h, "BodyText") for h in header]] + [[_p(c) for c in r] for r in rows]
    cols = widths if widths is not None else [WIDTH / len(header)] * len(header)
    t = Table(data, colWidths=cols, repeatRows=1, splitInRow=1)
    t.setStyle(_GRID)
    return t


def _q(v: Any) -> str:
    """A recorded quantity ``{"value", "unit"}`` as text."""
    if isinstance(v, dict):
        return f"{v.get('value', '')} {v.get('unit', '')}".strip()
    return "" if v is None else str(v)


def _value(v: dict[str, Any]) -> str:
    shown = _q(v.get("value"))
    if "recorded_value" in v:
        return f"{shown} (corrected; recorded {_q(v['recorded_value'])})"
    return shown


def _deviation_notes(d: dict[str, Any]) -> str:
    notes = [
        f"{c['text']} ({c['by']}, {c.get('at') or 'time not recorded'})" for c in d["comments"]
    ]
    return "; ".join(notes) or "-"


def _doc(title: str, story: list[Any]) -> bytes:
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        title=title,
        author="CTGTP batch record server",
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        invariant=1,
    )
    doc.build(story)
    return buf.getvalue()


def _identity(view: dict[str, Any]) -> Table:
    rows = [
        ["Batch", view["batch_id"]],
        ["Chain of identity (COI)", view["coi"]],
        ["Site / unit", f"{view['site_id']} / {view['unit_id']}"],
        ["Master batch record", view["mbr"]],
        ["Status", view["status"]],
        ["Events", view["events"]],
        ["Record hash (SHA-256)", view["record_hash"]],
    ]
    t = Table([[_p(a), _p(b)] for a, b in rows], colWidths=[45 * mm, 135 * mm], splitInRow=1)
    t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey)]))
    return t


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
            "applies" if s["applies"] else "NO LONGER APPLIES (record changed)",
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
    """The batch's clock alerts (a unit clock ahead, before enrolment, or going backwards)."""
    alerts = view.get("clock_alerts", [])
    if not alerts:
        return [_p("Clock alerts", "Heading3"), _p("No clock alert was raised for this batch.")]
    rows = [[a["kind"], a["unit_id"], a["created_at"], a["message"], _ack(a)] for a in alerts]
    header = ["Kind", "Unit", "Raised (server time)", "Message", "Acknowledged"]
    widths = [28 * mm, 22 * mm, 30 * mm, 60 * mm, 40 * mm]
    return [_p("Clock alerts", "Heading3"), _table(header, rows, widths)]


def batch_report_pdf(view: dict[str, Any]) -> bytes:
    story: list[Any] = [
        _p(f"Batch record report: {view['batch_id']}", "Title"),
        _identity(view),
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
            [
                [
                    view["exceptions"].get(k, 0)
                    for k in (
                        "rejected_scans",
                        "open_deviations",
                        "alarms",
                        "failed_signatures",
                        "limit_excursions",
                        "corrections",
                        "clock_alerts",
                    )
                ]
            ],
        ),
        _p(
            "Recorded values (current; a corrected value names the value first recorded)",
            "Heading3",
        ),
        _table(
            ["Step:name", "Value", "Limit (as recorded)"],
            [[k, _value(v), v.get("limit", "")] for k, v in sorted(view["values"].items())],
            [60 * mm, 90 * mm, 30 * mm],
        ),
        *_corrections(view),
        _p(f"Instrument telemetry ({view.get('readings', 0)} readings)", "Heading3"),
        _table(
            ["Channel", "Readings", "Min", "Max", "Last", "Last at", "Excursions"],
            [
                [
                    name,
                    c["count"],
                    f"{c['min']} {c['unit']}",
                    f"{c['max']} {c['unit']}",
                    f"{c['last']} {c['unit']}",
                    c["last_at"],
                    c["excursions"],
                ]
                for name, c in view.get("telemetry", {}).items()
            ],
        ),
        _p("Rejected scans", "Heading3"),
        _table(
            ["Seq", "Step", "Scanned", "Reason"],
            [
                [s.get("seq"), s.get("step"), s.get("raw") or s.get("scanned"), s.get("reason")]
                for s in view["rejected_scans"]
            ],
            [12 * mm, 30 * mm, 60 * mm, 78 * mm],
        ),
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
                    _deviation_notes(d),
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
    return _doc(f"Batch record {view['batch_id']}", story)


def coa_pdf(view: dict[str, Any], jurisdiction: str) -> bytes:
    cqa = cqa_panel(view, jurisdiction)
    disp = [d for d in view["dispositions"] if d["jurisdiction"] == jurisdiction]
    story: list[Any] = [
        _p(f"Certificate of analysis ({jurisdiction})", "Title"),
        _identity(view),
        Spacer(1, 4 * mm),
        _p(
            f"Specification {cqa['spec_id']} v{cqa['spec_version']}; evaluation hash "
            f"{cqa['evaluation_hash']}"
        ),
        _table(
            ["Attribute", "Limit", "Result", "Conclusion", "Clause"],
            [
                [
                    v["name"],
                    v["limit"],
                    v["result"] or "-",
                    {"pass": "conforms", "fail": "DOES NOT CONFORM"}.get(v["status"], v["status"]),
                    v["clause"],
                ]
                for v in cqa["verdicts"]
            ],
            [45 * mm, 45 * mm, 35 * mm, 25 * mm, 30 * mm],
        ),
        Spacer(1, 3 * mm),
        _p(
            "Disposition: "
            + (
                f"{disp[-1]['disposition']} ({disp[-1]['decided_at']})"
                if disp
                else f"not yet decided (candidate: {cqa['disposition']})"
            )
        ),
        *_manifestations(view, jurisdiction),
    ]
    return _doc(f"Certificate of analysis {view['batch_id']} {jurisdiction}", story)
