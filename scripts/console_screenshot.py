"""The README's screenshot of the console's batch view (docs/img/console-batch.png): runs
``ctgtp demo --serve``, signs in as the demo's reviewer in headless Chromium and photographs the
batch view's exceptions and its telemetry charts.  ``python scripts/console_screenshot.py``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ctgtp.demo import QA_PW  # noqa: E402

OUT = ROOT / "docs" / "img" / "console-batch.png"


def _stack(shots: list[bytes], out: Path) -> None:
    """The shots one above the other, in one PNG (the page's head, then its charts)."""
    import io

    from PIL import Image

    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in shots]
    width = max(i.width for i in images)
    sheet = Image.new("RGB", (width, sum(i.height for i in images) + 8), "white")
    y = 0
    for i in images:
        sheet.paste(i, (0, y))
        y += i.height + 8
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="shot-") as d:
        urls = Path(d) / "urls.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctgtp", "demo", "--out", str(Path(d) / "out"), "--serve",
             "--urls-file", str(urls)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            while not urls.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the demo did not start")
                time.sleep(1)
            base = json.loads(urls.read_text())["console"]
            summary = json.loads((Path(d) / "out" / "summary.json").read_text())
            batch = summary["batch_id"]
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"))
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{base}/console/signin")
                page.fill("#f-user_id", "qa.rita")
                page.fill("#f-password", QA_PW)
                page.click("#signin button[type=submit]")
                page.wait_for_url(f"{base}/console/queue")
                page.goto(f"{base}/console/batches/{batch}")
                page.wait_for_selector("svg")
                top = page.screenshot(clip={"x": 0, "y": 0, "width": 1280, "height": 700})
                figures = page.locator("#telemetry figure")
                charts = (
                    figures.filter(has=page.get_by_text("temperature", exact=True)).first
                ).screenshot()  # the channel with the demo's excursion and its limits
                browser.close()
            _stack([top, charts], OUT)
        finally:
            proc.terminate()
            proc.wait(60)
    sys.stdout.write(f"{OUT.relative_to(ROOT)}\n")


if __name__ == "__main__":
    main()
