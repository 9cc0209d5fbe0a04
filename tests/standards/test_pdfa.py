"""PDF/A-2b records: the batch report and the certificate of analysis, checked for what an
archive checks (XMP pdfaid, an output intent, every font embedded, real dates), validated by
pikepdf's PDF/A-2b validator (built from veraPDF's rules; veraPDF itself is not run here), and
read back as text (pypdf, and poppler's pdftotext where it is installed)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from ebr_core.document import load_yaml
from ebr_core.mbr import Mbr, parse_mbr
from ebr_core.spec import Spec, parse_spec
from server.reports import batch_report_pdf, coa_pdf

pikepdf = pytest.importorskip("pikepdf")
pdfa = pytest.importorskip("pikepdf.pdfa")

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "fhir"
NOW = datetime(2026, 11, 30, 12, 34, 56, tzinfo=UTC)


def view() -> dict[str, Any]:
    return json.loads((FIX / "batch_view.json").read_text())


def telemetry() -> dict[str, Any]:
    return json.loads((FIX / "telemetry.json").read_text())


def spec() -> Spec:
    return parse_spec(load_yaml((ROOT / "ebr_core/spec/examples/cd19_commercial.yaml").read_text()))


def mbr() -> Mbr:
    return parse_mbr(load_yaml((ROOT / "edge/examples/car_t_mbr.yaml").read_text()))


def report() -> bytes:
    return batch_report_pdf(view(), now=NOW, mbr=mbr(), telemetry=telemetry())


def coa(j: str = "EU") -> bytes:
    return coa_pdf(view(), j, now=NOW, spec=spec())


DOCS = {"batch report": report, "CoA EU": coa, "CoA SG": lambda: coa("SG")}


def fonts_of(pdf: Any) -> list[tuple[str, Any]]:
    """Every font used on every page, in forms (XObjects) too, with its descendants."""
    out: list[tuple[str, Any]] = []
    seen: set[tuple[int, int]] = set()

    def resources(res: Any) -> None:
        if res is None:
            return
        for _, f in (res.get("/Font") or {}).items():
            if f.objgen in seen:
                continue
            seen.add(f.objgen)
            out.append((str(f.get("/BaseFont")), f))
            for d in f.get("/DescendantFonts") or []:
                out.append((str(d.get("/BaseFont")), d))
        for _, x in (res.get("/XObject") or {}).items():
            if x.get("/Subtype") == "/Form":
                resources(x.get("/Resources"))

    for page in pdf.pages:
        resources(page.obj.get("/Resources"))
    return out


def structural_problems(data: bytes) -> list[str]:
    pdf = pikepdf.open(io.BytesIO(data))
    out = []
    meta = pdf.open_metadata()
    if meta.get("pdfaid:part") != "2" or meta.get("pdfaid:conformance") != "B":
        out.append(f"XMP pdfaid {meta.get('pdfaid:part')}/{meta.get('pdfaid:conformance')}")
    intents = pdf.Root.get("/OutputIntents") or []
    if not any(i.get("/S") == "/GTS_PDFA1" and "/DestOutputProfile" in i for i in intents):
        out.append("no PDF/A output intent with an ICC profile")
    for i in intents:
        icc = i.get("/DestOutputProfile")
        if icc is not None and icc.read_bytes()[16:20] != b"RGB ":
            out.append("output intent's profile is not RGB")
    fonts = fonts_of(pdf)
    if not fonts:
        out.append("no font found")
    for name, f in fonts:
        if f.get("/Subtype") == "/Type0":
            continue  # its descendant carries the descriptor
        d = f.get("/FontDescriptor")
        if d is None or not any(k in d for k in ("/FontFile", "/FontFile2", "/FontFile3")):
            out.append(f"font {name} is not embedded")
    return out


@pytest.mark.parametrize("name", DOCS)
def test_structure_is_pdfa_2b(name: str) -> None:
    assert structural_problems(DOCS[name]()) == []


@pytest.mark.parametrize("name", DOCS)
def test_pikepdfs_pdfa_2b_validator_passes(name: str) -> None:
    pdf = pikepdf.open(io.BytesIO(DOCS[name]()))
    report = pdfa.check(pdf, "2b")
    assert report.verdict == "pass", report


def test_the_structural_check_bites() -> None:
    """A plain reportlab PDF (the reports before PDF/A) fails every structural check."""
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    buf = io.BytesIO()
    SimpleDocTemplate(buf).build([Paragraph("plain", getSampleStyleSheet()["BodyText"])])
    problems = " ".join(structural_problems(buf.getvalue()))
    assert "pdfaid" in problems and "output intent" in problems
    assert "font Helvetica is not embedded" in problems.replace("/Helvetica", "Helvetica")
    assert pdfa.check(pikepdf.open(io.BytesIO(buf.getvalue())), "2b").verdict != "pass"


@pytest.mark.parametrize("name", DOCS)
def test_dates_are_the_clocks_not_2000(name: str) -> None:
    data = DOCS[name]()
    pdf = pikepdf.open(io.BytesIO(data))
    meta = pdf.open_metadata()
    assert meta.get("xmp:CreateDate", "").startswith("2026-11-30T12:34:56")
    assert str(pdf.docinfo.get("/CreationDate")).startswith("D:20261130123456")
    assert b"D:2000" not in data


def text(data: bytes) -> str:
    raw = " ".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)
    return " ".join(raw.split())


def test_the_batch_report_says_what_the_batch_was() -> None:
    t = text(report())
    # limits as the MBR states them, not "ok"
    assert "ok (hard 10–200 mL; from CAR-T-CARTRIDGE v3 as supplied" in t
    assert "36.0 °C to 38.0 °C" in t and "pH 6.8 to pH 7.6" in t
    # materials, lots and equipment; steps; corrections; labels; charts
    assert "LOT-ACT-7" in t and "LV-2231" in t and "equipment" in t
    assert "Steps (first and last event, UTC)" in t and "completed" in t
    assert "transcription error" in t
    assert "product_bag 2 1 1 balanced" in t
    assert "temperature (°C)" in t and "2 reading(s) outside the limits" in t
    assert "page 1 of 3" in t and "page 3 of 3" in t
    assert "{" not in t and "[EU]" not in t and " Cel" not in t


def test_the_coa_says_what_a_certificate_says() -> None:
    t = text(coa("EU"))
    assert "Autologous anti-CD19 CAR-T cell suspension for infusion" in t
    assert "0.2–5.0 × 10⁶ cells/kg" in t
    assert "Date of manufacture 2026-11-30" in t and "Expiry date 2027-08-27" in t
    assert "Manufacturer Manufacturing site SITE-A" in t
    assert "ph-eur-2.6.14 < 5 EU/mL 0.25 EU/mL" in t and "flow-7aad >= 80 % 91.5 %" in t
    assert "Qualified Person certification" in t and "Directive 2001/83/EC" in t
    assert "Certified by: Paul Approver" in t
    assert "page 1 of 2" in t and "page 2 of 2" in t
    sg = text(coa("SG"))
    assert "Cell, Tissue and Gene Therapy Products" in sg and "Qualified Person" not in sg


def test_markup_in_recorded_text_prints_as_text() -> None:
    v = view()
    v["deviations"][0]["reason"] = "<b>bold</b> & <font size=40>big</font>"
    t = text(batch_report_pdf(v, now=NOW))
    assert "<b>bold</b> & <font size=40>big</font>" in t


def test_limits_written_into_the_record_are_shown_without_the_mbr() -> None:
    v = view()
    v["values"]["harvest:harvest_volume"]["limits"] = {
        "unit": "mL", "hard": {"min": "10", "max": "200"}, "soft": {"min": "20"}
    }  # fmt: skip
    t = text(batch_report_pdf(v, now=NOW))
    assert "ok (soft ≥ 20 mL, hard 10–200 mL)" in t


def test_without_the_mbr_the_report_says_the_limit_is_not_known() -> None:
    t = text(batch_report_pdf(view(), now=NOW))
    assert "ok (limit in the MBR; MBR not supplied)" in t


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_poppler_reads_the_same_text(tmp_path: Path) -> None:
    f = tmp_path / "coa.pdf"
    f.write_bytes(coa("EU"))
    out = subprocess.run(["pdftotext", "-layout", str(f), "-"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert "Certificate of analysis (EU)" in out and "0.25 EU/mL" in out and "page 2 of 2" in out
