"""Shared look for the station kiosk and the QA console: base templates, CSS and the vendored
JavaScript (htmx and its SSE extension; axe-core for the accessibility checks), served by each
app from its own process, never from a CDN.  It imports neither app.

An app puts :data:`TEMPLATES` on its Jinja2 loader path (after its own templates) and serves
:data:`STATIC` under a path of its choice; the base template ``webui/base.html`` takes that
path as ``webui_static``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


@dataclass(frozen=True)
class Vendored:
    """A JavaScript package copied from the npm registry, with its licence file beside it."""

    package: str
    version: str
    licence: str
    directory: str  # under STATIC
    files: tuple[str, ...]

    def path(self, name: str) -> Path:
        return STATIC / self.directory / name


HTMX = Vendored("htmx.org", "2.0.11", "0BSD", "vendor/htmx-2.0.11", ("htmx.min.js", "LICENSE"))
HTMX_SSE = Vendored(
    "htmx-ext-sse", "2.2.4", "0BSD", "vendor/htmx-ext-sse-2.2.4", ("sse.js", "LICENSE")
)
AXE = Vendored(
    "axe-core",
    "4.14.1",
    "MPL-2.0",
    "vendor/axe-core-4.14.1",
    ("axe.min.js", "LICENSE", "LICENSE-3RD-PARTY.txt"),
)
VENDORED = (HTMX, HTMX_SSE, AXE)
