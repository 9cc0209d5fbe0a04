"""The operator kiosk: the web app at the touchscreen beside the production unit.

Server-rendered HTML (Jinja2, autoescaped), htmx for partial updates and Server-Sent Events for
what arrives on its own (scans from the attached scanner, device states, telemetry).  The kiosk
holds no rule of its own: every action is a call on the station's one
:class:`~edge.engine.Engine` (or :class:`~edge.custody.Custody` over it), the same the CLI makes,
and a refusal shows the engine's message exactly as worded.

Security: the session lives in an HttpOnly, SameSite=Strict cookie (Secure over TLS); every POST
carries the session's CSRF token (a form field, or the ``X-CSRF-Token`` header htmx sends); no
password travels in a URL or reaches a log; pages forbid framing and any script but the kiosk's
own (Content-Security-Policy).  The station agent decides the address (127.0.0.1 by default).

Over 400 lines: the kiosk's routes and the contexts of its screens; templates, strings, sessions
and the station port live apart in edge/kiosk/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import webui
from ebr_core.batch import BatchState, current_values
from ebr_core.custody import LABELS, label_counts
from ebr_core.errors import EbrError
from ebr_core.mbr import Step, ValueSpec
from edge.custody import Custody, CustodyRefused
from edge.engine import Engine, ScanRejected
from edge.errors import EdgeError
from edge.kiosk import charts
from edge.kiosk.live import Hub, Page, panel, sse
from edge.kiosk.port import StationPort
from edge.kiosk.sessions import Session, Sessions
from edge.kiosk.strings import t
from edge.labels import LabelData, pdf, png

HERE = Path(__file__).resolve().parent
COOKIE = "kiosk_session"
CSRF_HEADER = "x-csrf-token"
BATCH_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_PDFS = 16  # label files kept for their sessions to fetch (each once)
MAX_FIELD = 2000  # characters; a longer field is refused before it reaches the engine
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@dataclass(frozen=True)
class KioskSettings:
    host: str = "127.0.0.1"  # the station file may say otherwise
    port: int = 8470
    secure_cookies: bool = False  # Secure cookies; also set when a request arrives over https
    session_idle: timedelta | None = None  # None: the engine's continuous-session idle time
    lang: str = "en"
    live_period_s: float = 2.0  # how often the devices, sync and telemetry screens refresh
    monotonic: Callable[[], float] = time.monotonic  # the sessions' clock


@dataclass(frozen=True)
class Banner:
    kind: str  # ok | notice | refusal
    text: str
    stop: bool = False  # a hard stop (wrong patient, wrong item): the biggest banner


@dataclass
class View:
    """What one screen renders: its template and context, and a banner if something happened."""

    template: str
    screen: str
    batch: str | None = None
    banner: Banner | None = None
    ctx: dict[str, Any] = field(default_factory=dict)
    status: int = 200


class Refused(Exception):
    """An input the kiosk refuses before calling the engine (too long, malformed)."""


class Answered(Exception):
    """A request answered before its handler's work (the sign-in redirect, the unknown batch's
    page): the app's exception handler sends ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def outcome_text(out: object) -> str:
    """An engine outcome as the operator reads it: its ``str()``; a mapping (the dose before
    outcomes were typed) one ``key: value`` a line."""
    if isinstance(out, Mapping):
        return "\n".join(f"{k}: {v}" for k, v in out.items())
    return str(out)


def unless_none(text: str) -> Callable[[object], str]:
    """The outcome's own message; ``text`` for an action that returned nothing (before typed
    outcomes)."""
    return lambda out: text if out is None else outcome_text(out)


def act(fn: Callable[[], object], ok: Callable[[object], str] = outcome_text) -> Banner:
    """Run one engine action: its outcome, or its refusal exactly as the engine words it."""
    try:
        out = fn()
    except (ScanRejected, CustodyRefused) as e:
        return Banner("refusal", str(e), stop=True)
    except (EdgeError, EbrError, Refused) as e:
        return Banner("refusal", str(e))
    return Banner("ok", ok(out))


def outside_limits(spec: ValueSpec, value: str) -> tuple[str, str] | None:
    """(which limit, its description) when ``value`` lies outside the MBR's limits of ``spec``;
    None when within, or when it is not a number (the engine refuses that with its message)."""
    try:
        v = Decimal(value)
    except InvalidOperation:
        return None
    if not v.is_finite():
        return None
    for which, lim in (("hard", spec.hard), ("soft", spec.soft)):
        if lim is not None and not lim.contains(v):
            return which, lim.describe()
    return None


class _Headers:
    """Security headers on every response (a plain ASGI middleware: streams pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


class Kiosk:
    def __init__(self, station: StationPort, settings: KioskSettings) -> None:
        self.station = station
        self.settings = settings
        self.engine: Engine = station.engine
        idle = settings.session_idle or self.engine.session_idle
        self.sessions = Sessions(idle.total_seconds(), settings.monotonic)
        self.hub = Hub()
        self._charts: dict[str, tuple[tuple[int, str], dict[str, Any]]] = {}
        self._charts_lock = threading.Lock()
        # The last scan taken at a step: its session, batch, the ledger head after it and the
        # panel pushed, for a page drawn before it whose stream was not open (see events).
        self._scanned: tuple[str, str, int, str] | None = None
        self._pdfs: dict[str, tuple[str, str, str, bytes]] = {}
        self._pdfs_lock = threading.Lock()
        self.env = Environment(
            loader=FileSystemLoader([str(HERE / "templates"), str(webui.TEMPLATES)]),
            autoescape=True,
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        lang = settings.lang
        self.env.globals["t"] = lambda key, **kw: t(key, lang, **kw)
        self.env.globals["lang"] = lang
        self.env.globals["webui_static"] = "/static/webui"
        self.env.globals["kiosk_static"] = "/static/kiosk"
        self.env.globals["unit_id"] = station.unit_id
        self.env.globals["labels"] = LABELS
        self.env.globals["idle_s"] = self.sessions.idle_s
        self.env.globals["station_devices"] = station.devices  # the header's device strip

    def close(self) -> None:
        """End every open event stream (and detach the scanner): call it before stopping the
        server, whose graceful shutdown otherwise waits for the browsers' streams to close."""
        self.station.set_scan_sink(None)
        self.hub.close()

    # -- plumbing -------------------------------------------------------------------------

    def tr(self, key: str, **kw: object) -> str:
        return t(key, self.settings.lang, **kw)

    def session(self, request: Request) -> Session:
        s = self.sessions.get(request.cookies.get(COOKIE))
        return s if s is not None else self.sessions.new()

    def _cookie(self, request: Request, resp: Response, s: Session) -> Response:
        resp.set_cookie(
            COOKIE,
            s.sid,
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies or request.url.scheme == "https",
            path="/",
        )
        return resp

    def render_html(self, s: Session, view: View) -> str:
        tpl = self.env.get_template(view.template)
        return tpl.render(
            s=s,
            csrf=s.csrf,
            screen=view.screen,
            batch=view.batch,
            banner=view.banner,
            **view.ctx,
        )

    def respond(self, request: Request, s: Session, view: View) -> Response:
        resp = HTMLResponse(self.render_html(s, view), status_code=view.status)
        return self._cookie(request, resp, s)

    def redirect(self, request: Request, s: Session, url: str) -> Response:
        if request.headers.get("hx-request"):
            resp: Response = Response(status_code=200, headers={"HX-Redirect": url})
        else:
            resp = RedirectResponse(url, status_code=303)
        return self._cookie(request, resp, s)

    async def form(self, request: Request, s: Session) -> FormData | None:
        """The POST's form when its CSRF token is the session's; None otherwise."""
        form = await request.form()
        given = request.headers.get(CSRF_HEADER) or str(form.get("csrf") or "")
        if not secrets.compare_digest(given.encode(), s.csrf.encode()):
            return None
        return form

    async def posted(self, request: Request, s: Session) -> tuple[FormData, str] | Response:
        """A signed-in session's POST: its form (CSRF checked) and its user, or the 403 page."""
        form = await self.form(request, s)
        if form is None:
            return self.forbidden(request, s)
        assert s.user_id is not None
        return form, s.user_id

    def forbidden(self, request: Request, s: Session) -> Response:
        view = View("kiosk/error.html", "error", banner=Banner("refusal", self.tr("err.csrf")))
        view.status = 403
        return self.respond(request, s, view)

    def signed_in(self, request: Request) -> tuple[Session, Response | None]:
        s = self.session(request)
        if s.user_id is None:
            return s, self.redirect(request, s, "/signin")
        return s, None

    async def batch_request(self, request: Request, *, screen: bool = False) -> tuple[Session, str]:
        """The signed-in session and the path's known ``batch`` (and, with ``screen``, a known
        batch screen); else :class:`Answered` with the sign-in redirect or the 404 page."""
        s, out = self.signed_in(request)
        if out is not None:
            raise Answered(out)
        batch = request.path_params["batch"]
        if screen and request.path_params["screen"] not in BATCH_SCREENS:
            raise Answered(self.no_batch(request, s, batch))
        if not await run_in_threadpool(self.known_batch, batch):
            raise Answered(self.no_batch(request, s, batch))
        return s, batch

    def known_batch(self, batch: str) -> bool:
        return bool(BATCH_ID.fullmatch(batch)) and self.engine.ledger.has_batch(batch)

    def no_batch(self, request: Request, s: Session, batch: str) -> Response:
        text = self.tr("err.no_batch", batch=batch[:80])
        view = View("kiosk/error.html", "error", banner=Banner("refusal", text), status=404)
        return self.respond(request, s, view)

    @staticmethod
    def field(form: FormData, name: str) -> str:
        v = form.get(name)
        if not isinstance(v, str):
            return ""
        if len(v) > MAX_FIELD:
            raise Refused(f"{name} is longer than {MAX_FIELD} characters")
        return v.strip() if name not in ("password",) else v

    # -- screens --------------------------------------------------------------------------

    def batches_view(self, s: Session, banner: Banner | None = None, **ctx: Any) -> View:
        rows = []
        total = len(self.engine.mbr.steps)
        for ev in self.engine.ledger.events_of_kind("batch.started"):
            if ev.batch_id is None:
                continue
            st = self.engine.state(ev.batch_id)
            done = len(st.completed_steps)
            progress = (
                self.tr("batches.completed")
                if st.status == "completed"
                else self.tr("batches.step_of", n=min(done + 1, total), total=total)
            )
            rows.append({"batch": ev.batch_id, "coi": st.coi, "progress": progress})
        return View("kiosk/batches.html", "batches", s.batch, banner, {"rows": rows, **ctx})

    def step_context(self, s: Session, batch: str, **extra: Any) -> dict[str, Any]:
        eng = self.engine
        head = eng.ledger.head[0]  # read first: what is drawn below is at least this recent
        st = eng.state(batch)
        exp = eng.expectation(batch)
        step = exp.step
        steps = eng.mbr.steps
        n = steps.index(step) + 1 if step is not None else len(steps)
        parts = [*step.id.split("/"), "", "", ""][:3] if step else ["", "", ""]
        scans = [
            {
                "role": sp.role,
                "what": self.tr(f"role.{sp.role}", material=sp.material or ""),
                "fmt": self.tr(f"fmt.{sp.role}"),
                "example": self.tr(f"ex.{sp.role}"),
            }
            for sp in exp.scans
        ]
        values = []
        for name in exp.values:
            spec = step.value(name) if step else None
            if spec is None:
                continue
            values.append(
                {
                    "name": name,
                    "unit": spec.unit,
                    "hard": spec.hard.describe() if spec.hard else self.tr("step.no_limit"),
                    "soft": spec.soft.describe() if spec.soft else self.tr("step.no_limit"),
                    "first": s.reentry.get(f"{step.id}:{name}") if step else None,
                }
            )
        performers = (
            [sg.printed_name for sg in st.step_signatures(step.id) if sg.meaning == step.signature]
            if step
            else []
        )
        return {
            "head": head,
            "st": st,
            "step": step,
            "n": n,
            "total": len(steps),
            "up": parts[0],
            "op": parts[1],
            "phase": parts[2],
            "scans": scans,
            "values": values,
            "calculation": exp.calculation,
            "signatures": exp.signatures,
            "performers": performers,
            "recorded": self.recorded(st, step),
            **extra,
        }

    def recorded(self, st: BatchState, step: Step | None) -> list[dict[str, Any]]:
        """Values recorded in ``step`` (all steps when None), as they stand after corrections."""
        values, _ = current_values(st.values, st.corrections)
        out = []
        for key, p in values.items():
            step_id, _, name = key.rpartition(":")
            if step is not None and step_id != step.id:
                continue
            v = p.get("value") or {}
            first = p.get("recorded_value")
            out.append(
                {
                    "key": key,
                    "step": step_id,
                    "name": name,
                    "value": v.get("value"),
                    "unit": v.get("unit"),
                    "limit": p.get("limit"),
                    "calculated": bool(p.get("calculated")),
                    "first": first,
                }
            )
        return out

    def step_view(self, s: Session, batch: str, banner: Banner | None = None, **extra: Any) -> View:
        s.batch = batch
        ctx = self.step_context(s, batch, **extra)
        return View("kiosk/step.html", "step", batch, banner, ctx)

    def step_panel(self, s: Session, batch: str, banner: Banner | None) -> str:
        ctx = self.step_context(s, batch)
        tpl = self.env.get_template("kiosk/_step_panel.html")
        return tpl.render(s=s, csrf=s.csrf, batch=batch, banner=banner, screen="step", **ctx)

    # -- the scanner ----------------------------------------------------------------------

    def on_scan(self, raw: str) -> None:
        """A code read by the attached scanner (called on the agent's reader thread): to the
        current step of the operator at the screen, else into the screen's scan field."""
        page = self.hub.latest()
        if page is None:
            return
        s = self.sessions.live(page.sid, touch=page.screen == "step")
        if page.screen == "step" and page.batch and s is not None and s.user_id is not None:
            batch, user = page.batch, s.user_id
            banner = act(lambda: self.engine.scan(batch, raw, user))
            head = self.engine.ledger.head[0]
            html = panel("step-panel", self.step_panel(s, batch, banner))
            self._scanned = (s.sid, batch, head, html)
            for p in self.hub.pages_of(page.sid):
                if p.screen == "step" and p.batch == batch:
                    p.push("step", html)
            return
        page.push("scan", json.dumps(raw))

    def periodic(self, page: Page) -> tuple[str, str] | None:
        s = self.sessions.live(page.sid)
        if s is None:
            return None
        if page.screen == "devices":
            html = self.fragment("kiosk/_devices.html", s, self.devices_ctx())
            return "devices", panel("devices", html)
        if page.screen == "sync":
            return "sync", panel("sync", self.fragment("kiosk/_sync.html", s, self.sync_ctx()))
        if page.screen == "telemetry" and page.batch:
            ctx = self.telemetry_ctx(page.batch)
            html = self.fragment("kiosk/_telemetry.html", s, ctx)
            return "telemetry", panel("telemetry", html)
        return None

    def fragment(self, template: str, s: Session, ctx: dict[str, Any]) -> str:
        return self.env.get_template(template).render(s=s, csrf=s.csrf, **ctx)

    def devices_ctx(self) -> dict[str, Any]:
        return {"devices": self.station.devices()}

    def sync_ctx(self) -> dict[str, Any]:
        return {"sync": self.station.sync_state()}

    def telemetry_ctx(self, batch: str) -> dict[str, Any]:
        """The charts of ``batch``, drawn again only when the ledger has moved on."""
        head = self.engine.ledger.head
        with self._charts_lock:
            cached = self._charts.get(batch)
        if cached is not None and cached[0] == head:
            return cached[1]
        ctx = self._telemetry_ctx(batch)
        with self._charts_lock:
            self._charts[batch] = (head, ctx)
        return ctx

    def _telemetry_ctx(self, batch: str) -> dict[str, Any]:
        tel = self.engine.telemetry(batch)
        limits = self.engine.mbr.telemetry
        out = []
        for name, ch in sorted(tel.channels.items()):
            tl = limits.get(name)
            lim = tl.limit if tl is not None else None
            title = self.tr("tele.chart", channel=name, unit=ch.unit)
            out.append(
                {
                    "ch": ch,
                    "svg": charts.chart(ch, lim, title),
                    "limits": lim.describe() if lim is not None else None,
                }
            )
        return {"channels": out, "readings": tel.readings}

    # -- routes ---------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.station.health))

    async def home(self, request: Request) -> Response:
        s = self.session(request)
        return self.redirect(request, s, "/batches" if s.user_id else "/signin")

    async def signin_page(self, request: Request) -> Response:
        s = self.session(request)
        banner: Banner | None = None
        if s.expired:
            minutes = max(1, round(self.sessions.idle_s / 60))
            banner = Banner("notice", self.tr("signin.expired", minutes=minutes))
            s.expired = False
        return self.respond(request, s, self.signin_view(s, banner))

    def signin_view(self, s: Session, banner: Banner | None) -> View:
        pending = s.pending_user
        name = self.engine.users[pending].printed_name if pending in self.engine.users else ""
        return View("kiosk/signin.html", "signin", None, banner, {"pending_name": name})

    async def signin(self, request: Request) -> Response:
        s = self.session(request)
        form = await self.form(request, s)
        if form is None:
            return self.forbidden(request, s)
        if form.get("restart"):
            s.pending_user = None
            return self.respond(request, s, self.signin_view(s, None))
        try:
            uid = self.field(form, "user_id")
        except Refused as e:
            return self.respond(request, s, self.signin_view(s, Banner("refusal", str(e))))
        if not uid:
            banner = Banner("refusal", self.tr("err.missing", field=self.tr("signin.user_id")))
            return self.respond(request, s, self.signin_view(s, banner))
        known = await run_in_threadpool(act, lambda: self.engine.actor(uid))
        s.pending_user = uid if known.kind == "ok" else None
        shown = None if known.kind == "ok" else known
        return self.respond(request, s, self.signin_view(s, shown))

    async def signin_password(self, request: Request) -> Response:
        s = self.session(request)
        form = await self.form(request, s)
        if form is None:
            return self.forbidden(request, s)
        uid = s.pending_user
        if uid is None:
            return self.redirect(request, s, "/signin")
        password = form.get("password")
        pw = password if isinstance(password, str) else ""

        def authenticate() -> object:
            return self.engine.authenticate(uid, pw, batch_id=None, step=None)

        banner = await run_in_threadpool(act, authenticate)
        if banner.kind != "ok":
            return self.respond(request, s, self.signin_view(s, banner))
        user = self.engine.users[uid]
        s = self.sessions.sign_in(s, uid, user.printed_name)
        return self.redirect(request, s, "/batches")

    async def signout(self, request: Request) -> Response:
        s = self.session(request)
        form = await self.form(request, s)
        if form is None:
            return self.forbidden(request, s)
        if s.user_id is not None:  # a sign-out ends the continuous session's fast re-entry
            self.engine.verifiers.forget(s.user_id)
        self.sessions.sign_out(s)
        banner = Banner("notice", self.tr("signin.signed_out"))
        return self.respond(request, s, self.signin_view(s, banner))

    async def batches(self, request: Request) -> Response:
        s, out = self.signed_in(request)
        if out is not None:
            return out
        view = await run_in_threadpool(self.batches_view, s)
        return self.respond(request, s, view)

    async def start_batch(self, request: Request) -> Response:
        s, out = self.signed_in(request)
        if out is not None:
            return out
        posted = await self.posted(request, s)
        if isinstance(posted, Response):
            return posted
        form, user = posted

        def start() -> object:
            batch = self.field(form, "batch_id")
            if not BATCH_ID.fullmatch(batch):
                raise Refused(self.tr("batches.bad_id", given=batch[:80]))
            coi = self.field(form, "coi")
            return self.engine.start_batch(batch, coi, user, self.field(form, "password"))

        banner = await run_in_threadpool(act, start)
        batch = str(form.get("batch_id") or "").strip()
        if banner.kind == "ok":
            s.batch = batch
            return self.redirect(request, s, f"/b/{batch}/step")
        keep = {"batch_id": batch[:80], "coi": str(form.get("coi") or "")[:200]}
        view = await run_in_threadpool(self.batches_view, s, banner, keep=keep)
        return self.respond(request, s, view)

    async def step(self, request: Request) -> Response:
        s, batch = await self.batch_request(request)
        q = request.query_params
        extra: dict[str, Any] = {"dialog": q.get("dialog"), "correct": None}
        key = q.get("correct")
        if key:
            step_id, _, name = key.rpartition(":")
            try:
                spec = self.engine.mbr.step(step_id).value(name)
            except EbrError:
                spec = None
            if spec is not None:
                extra["correct"] = {"key": key, "step": step_id, "name": name, "unit": spec.unit}
        view = await run_in_threadpool(self.step_view, s, batch, None, **extra)
        return self.respond(request, s, view)

    async def step_action(self, request: Request) -> Response:
        s, batch = await self.batch_request(request)
        action = request.path_params["action"]
        posted = await self.posted(request, s)
        if isinstance(posted, Response):
            return posted
        form, user = posted
        eng = self.engine

        def run() -> View:
            extra: dict[str, Any] = {}
            if action == "scan":
                code = self.field(form, "code")
                banner = act(lambda: eng.scan(batch, code, user))
            elif action == "value":
                banner = self.value(s, batch, form, user)
            elif action == "calculate":
                banner = act(lambda: eng.calculate(batch, user))
            elif action == "sign":
                pw = self.field(form, "password")
                banner = act(lambda: eng.sign(batch, pw, "performed", user))
            elif action == "verify":
                verifier = self.field(form, "user_id")
                pw = self.field(form, "password")
                banner = act(lambda: eng.sign(batch, pw, "verified", verifier))
                if banner.kind != "ok":
                    extra["dialog"] = "verify"
            elif action == "correct":
                banner = self.correct(batch, form, user)
            else:
                raise Refused(self.tr("err.not_found", path=action))
            return self.step_view(s, batch, banner, **extra)

        try:
            view = await run_in_threadpool(run)
        except Refused as e:
            msg = str(e)
            view = await run_in_threadpool(lambda: self.step_view(s, batch, Banner("refusal", msg)))
        return self.respond(request, s, view)

    def value(self, s: Session, batch: str, form: FormData, user: str) -> Banner:
        """Record a value; one outside the MBR's limits is asked for again first, and recorded
        only when both entries agree (a different second entry is judged afresh)."""
        name = self.field(form, "name")
        again = form.get("again")
        entered = self.field(form, "again" if again is not None else "value")
        step = self.engine.expectation(batch).step
        spec = step.value(name) if step is not None else None
        if step is None or spec is None:  # the engine refuses it, in its words
            return act(lambda: self.engine.record_value(batch, name, entered, "", user))
        key = f"{step.id}:{name}"
        first = s.reentry.pop(key, None)
        if first is None or entered != first:
            breach = outside_limits(spec, entered)
            if breach is not None:
                s.reentry[key] = entered
                which, lim = breach
                text = self.tr(
                    "step.outside_limits",
                    name=name,
                    value=entered,
                    unit=spec.unit,
                    which=which,
                    limit=lim,
                )
                return Banner("notice", text)
        return act(lambda: self.engine.record_value(batch, name, entered, spec.unit, user))

    def correct(self, batch: str, form: FormData, user: str) -> Banner:
        key = self.field(form, "key")
        step_id, _, name = key.rpartition(":")
        try:
            spec = self.engine.mbr.step(step_id).value(name)
        except EbrError:
            spec = None
        unit = spec.unit if spec is not None else ""
        value, reason = self.field(form, "value"), self.field(form, "reason")
        pw = self.field(form, "password")
        return act(
            lambda: self.engine.correct_value(batch, step_id, name, value, unit, reason, user, pw)
        )

    async def screen(self, request: Request) -> Response:
        """The batch screens that only show (deviations, labels, hand-offs, telemetry,
        history)."""
        s, batch = await self.batch_request(request, screen=True)
        name = request.path_params["screen"]
        s.batch = batch
        view = await run_in_threadpool(self.batch_screen, name, batch, None, {})
        return self.respond(request, s, view)

    def batch_screen(
        self, name: str, batch: str, banner: Banner | None, extra: dict[str, Any]
    ) -> View:
        st = self.engine.state(batch)
        ctx: dict[str, Any] = {"st": st, **extra}
        if name == "deviations":
            ctx["deviations"] = sorted(st.deviations.values(), key=lambda d: d.raised_seq)
        elif name == "labels":
            counts = label_counts(self.engine.ledger.batch_events(batch, telemetry=False))
            ctx["counts"] = counts
        elif name == "handoff":
            ctx["chain"] = [c for c in st.custody if c.get("kind") == "custody.handoff"]
        elif name == "telemetry":
            ctx.update(self.telemetry_ctx(batch))
        elif name == "history":
            ctx["rows"] = self.history(batch, st)
            ctx["recorded"] = self.recorded(st, None)
        return View(f"kiosk/{name}.html", name, batch, banner, ctx)

    def history(self, batch: str, st: BatchState) -> list[dict[str, Any]]:
        _, applied = current_values(st.values, st.corrections)
        corrections = {c.get("seq"): c for c in applied}
        corrected_by: dict[int, list[int]] = {}
        for c in applied:
            if isinstance(c.get("corrects"), int):
                corrected_by.setdefault(c["corrects"], []).append(int(c["seq"]))
        rows = []
        for ev in self.engine.ledger.batch_events(batch, telemetry=False):
            row: dict[str, Any] = {
                "seq": ev.seq,
                "at": ev.recorded_at,
                "actor": ev.actor or "",
                "kind": ev.kind,
                "text": describe(ev.kind, ev.payload),
                "correction": None,
                "corrected_by": corrected_by.get(ev.seq, []),
            }
            cor = corrections.get(ev.seq)
            if cor is not None:
                old: dict[str, Any] = cor.get("old_value") or {}
                new: dict[str, Any] = cor.get("value") or {}
                row["correction"] = self.tr(
                    "hist.correction",
                    corrects=cor.get("corrects"),
                    name=cor.get("name"),
                    step=cor.get("step"),
                    old=f"{old.get('value')} {old.get('unit')}",
                    new=f"{new.get('value')} {new.get('unit')}",
                    by=f"{cor.get('printed_name')} ({cor.get('user_id')})",
                    reason=cor.get("reason"),
                )
            rows.append(row)
        return rows

    async def batch_action(self, request: Request) -> Response:
        """POSTs of the deviations, labels and hand-off screens."""
        s, batch = await self.batch_request(request, screen=True)
        name, action = request.path_params["screen"], request.path_params["action"]
        posted = await self.posted(request, s)
        if isinstance(posted, Response):
            return posted
        form, user = posted

        def run() -> View:
            extra: dict[str, Any] = {}
            try:
                banner = self.batch_act(name, action, batch, form, user, extra, s.sid)
            except Refused as e:
                banner = Banner("refusal", str(e))
            return self.batch_screen(name, batch, banner, extra)

        view = await run_in_threadpool(run)
        return self.respond(request, s, view)

    def batch_act(
        self,
        name: str,
        action: str,
        batch: str,
        form: FormData,
        user: str,
        extra: dict[str, Any],
        sid: str,
    ) -> Banner:
        eng = self.engine

        def f(k: str) -> str:
            return self.field(form, k)

        custody = Custody(eng)
        if (name, action) == ("deviations", "raise"):
            reason = f("reason")
            return act(lambda: eng.raise_deviation(batch, reason, user))
        if (name, action) == ("deviations", "comment"):
            did, text = f("deviation_id"), f("comment")
            return act(
                lambda: eng.comment_deviation(batch, did, text, user),
                unless_none(self.tr("dev.commented", id=did)),
            )
        if (name, action) == ("deviations", "link"):
            did, other = f("deviation_id"), f("other")
            return act(
                lambda: eng.link_deviation(batch, did, other, user),
                unless_none(self.tr("dev.linked", id=did, other=other)),
            )
        if name == "labels":
            return self.labels_act(action, batch, form, user, custody, extra, sid)
        if (name, action) == ("handoff", "record"):
            return act(
                lambda: custody.handoff(
                    batch,
                    from_party=f("from_party"),
                    to_party=f("to_party"),
                    place=f("place"),
                    bag_scan=f("bag"),
                    shipper_scan=f("shipper") or None,
                    giver=(user, self.field(form, "password")),
                    receiver=(f("receiver"), self.field(form, "receiver_password")),
                ),
                unless_none(self.tr("handoff.done", src=f("from_party"), dst=f("to_party"))),
            )
        raise Refused(self.tr("err.not_found", path=f"{name}/{action}"))

    def label_data(self, batch: str, form: FormData) -> tuple[LabelData, int]:

        def f(k: str) -> str:
            return self.field(form, k)

        st = self.engine.state(batch)
        kind, count_s = f("kind"), f("count") or "1"
        if not count_s.isdigit() or not 1 <= int(count_s) <= 1000:
            raise Refused(self.tr("err.count", given=count_s[:20]))
        expiry = None
        if f("expiry"):
            try:
                expiry = date.fromisoformat(f("expiry"))
            except ValueError as e:
                raise Refused(self.tr("err.expiry", given=f("expiry")[:20])) from e
        d = LabelData(
            kind,
            st.coi or "",
            din=f("din") or None,
            gtin=f("gtin") or None,
            batch=f("lot") or None,
            expiry=expiry,
            serial=f("serial") or None,
            product=f("product"),
            sscc=f("sscc") or None,
        )
        d.validate(trade_items=self.engine.materials.trade_items())
        return d, int(count_s)

    def labels_act(
        self,
        action: str,
        batch: str,
        form: FormData,
        user: str,
        custody: Custody,
        extra: dict[str, Any],
        sid: str,
    ) -> Banner:

        def f(k: str) -> str:
            return self.field(form, k)

        if action in ("preview", "print"):
            try:
                d, count = self.label_data(batch, form)
                image = png(d)
            except EdgeError as e:
                return Banner("refusal", str(e))
            if action == "preview":
                uri = "data:image/png;base64," + base64.b64encode(image).decode()
                extra["preview"] = {"uri": uri, "d": d, "count": count, "form": dict(form)}
                return Banner("notice", self.tr("labels.preview", kind=d.kind, count=count))
            content = {"coi": d.coi, "serial": d.serial, "gtin": d.gtin, "sscc": d.sscc}
            banner = act(
                lambda: custody.labels_printed(batch, d.kind, count, user, content),
                unless_none(self.tr("labels.printed_ok", count=count, kind=d.kind)),
            )
            if banner.kind == "ok":  # the printer's file, for exactly the labels recorded
                extra["pdf"] = self.keep_pdf(sid, batch, d, count)
            return banner
        if action == "apply":
            kind, raw = f("kind"), f("code")
            return act(  # the COI check is the custody rule's (Custody.labels_applied)
                lambda: custody.labels_applied(batch, kind, 1, user, scanned=raw),
                unless_none(self.tr("labels.applied_ok", kind=kind)),
            )
        if action == "destroy":
            kind, count_s, reason = f("kind"), f("count") or "1", f("reason")
            if not count_s.isdigit():
                raise Refused(self.tr("err.count", given=count_s[:20]))
            return act(
                lambda: custody.labels_destroyed(batch, kind, int(count_s), reason, user),
                unless_none(self.tr("labels.destroyed_ok", count=count_s, kind=kind)),
            )
        if action == "dry-run":
            counts = label_counts(self.engine.ledger.batch_events(batch, telemetry=False))
            extra["dry_run"] = {
                "counts": counts,
                "balanced": all(c.balanced for c in counts.values()),
            }
            return Banner("notice", self.tr("labels.dry_run"))
        if action == "reconcile":

            def done(o: object) -> str:
                ok = o.get("balanced") if isinstance(o, Mapping) else getattr(o, "balanced", None)
                state = self.tr("labels.state_balanced" if ok else "labels.state_unbalanced")
                detail = "" if isinstance(o, Mapping) else "\n" + outcome_text(o)
                return self.tr("labels.reconciled", state=state) + detail

            return act(lambda: custody.reconcile_labels(batch, user), done)
        raise Refused(self.tr("err.not_found", path=f"labels/{action}"))

    def keep_pdf(self, sid: str, batch: str, d: LabelData, count: int) -> str:
        """Keep the PDF of labels just recorded as printed, for this session to fetch once;
        no other way makes a label file, so every label printed is in the record."""
        token = secrets.token_urlsafe(16)
        with self._pdfs_lock:
            self._pdfs[token] = (sid, batch, f"{d.kind}-{count}", pdf([d] * count))
            while len(self._pdfs) > MAX_PDFS:
                del self._pdfs[next(iter(self._pdfs))]
        return token

    async def label_pdf(self, request: Request) -> Response:
        s, out = self.signed_in(request)
        if out is not None:
            return out
        with self._pdfs_lock:
            kept = self._pdfs.get(request.path_params["token"])
            if kept is not None and kept[0] == s.sid:
                del self._pdfs[request.path_params["token"]]
        if kept is None or kept[0] != s.sid or kept[1] != request.path_params["batch"]:
            text = self.tr("labels.pdf_gone")
            view = View("kiosk/error.html", "error", banner=Banner("refusal", text), status=404)
            return self.respond(request, s, view)
        _, batch, name, body = kept
        return Response(
            body,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="labels-{batch}-{name}.pdf"'},
        )

    async def devices(self, request: Request) -> Response:
        return await self.status_screen(request, "devices", self.devices_ctx)

    async def sync(self, request: Request) -> Response:
        return await self.status_screen(request, "sync", self.sync_ctx)

    async def status_screen(
        self, request: Request, screen: str, ctx: Callable[[], dict[str, Any]]
    ) -> Response:
        """A station status screen (devices, sync) for the signed-in operator."""
        s, out = self.signed_in(request)
        if out is not None:
            return out
        got = await run_in_threadpool(ctx)
        return self.respond(request, s, View(f"kiosk/{screen}.html", screen, s.batch, None, got))

    async def events(self, request: Request) -> Response:
        s = self.sessions.get(request.cookies.get(COOKIE), touch=False)
        if s is None:
            return Response(status_code=204)  # no session: the page reloads into sign-in
        screen = request.query_params.get("screen", "")[:20]
        batch = request.query_params.get("batch") or None
        page = self.hub.open(s.sid, screen, batch)
        drawn = request.query_params.get("head", "")
        scanned = self._scanned
        if (  # a scan taken after this page was drawn, pushed while its stream was not open
            screen == "step"
            and scanned is not None
            and scanned[:2] == (s.sid, batch)
            and drawn.isdigit()
            and scanned[2] > int(drawn)
        ):
            page.push("step", scanned[3])
        ticks_per_push = max(1, round(self.settings.live_period_s / 0.5))

        async def stream() -> AsyncIterator[str]:
            try:
                yield ": open\n\n"
                ticks = 0
                while not self.hub.closed:
                    try:
                        event, data = await asyncio.wait_for(page.queue.get(), timeout=0.5)
                    except TimeoutError:
                        ticks += 1
                        if ticks % ticks_per_push == 0:
                            msg = await run_in_threadpool(self.periodic, page)
                            yield sse(*msg) if msg else ": alive\n\n"
                        continue
                    if event == "close":
                        return
                    yield sse(event, data)
            finally:
                self.hub.close_page(page)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    async def not_found(self, request: Request, exc: Exception) -> Response:
        s = self.session(request)
        text = self.tr("err.not_found", path=request.url.path[:200])
        view = View("kiosk/error.html", "error", banner=Banner("refusal", text), status=404)
        return self.respond(request, s, view)


BATCH_SCREENS = ("deviations", "labels", "handoff", "telemetry", "history")

_DESCRIBE: dict[str, Callable[[dict[str, Any]], str]] = {
    "batch.started": lambda p: f"started for COI {p.get('coi')} on MBR {p.get('mbr_id')}",
    "scan.accepted": lambda p: f"{p.get('role')} scanned: {p.get('raw')}",
    "scan.rejected": lambda p: f"scan REFUSED ({p.get('role')}): {p.get('reason')}",
    "value.recorded": lambda p: (
        f"{p.get('name')} = {(p.get('value') or {}).get('value')} "
        f"{(p.get('value') or {}).get('unit')} (limit {p.get('limit')})"
    ),
    "signature.applied": lambda p: f"signed {p.get('meaning')} by {p.get('printed_name')}",
    "signature.failed": lambda p: f"failed signature: {p.get('reason')}",
    "step.completed": lambda p: f"step {p.get('step')} completed",
    "deviation.raised": lambda p: (
        f"deviation {p.get('deviation_id')} ({p.get('severity')}): {p.get('reason')}"
    ),
    "deviation.commented": lambda p: f"{p.get('deviation_id')} comment: {p.get('comment')}",
    "deviation.linked": lambda p: f"{p.get('deviation_id')} linked to {p.get('linked_to')}",
    "custody.handoff": lambda p: f"hand-off {p.get('from')} → {p.get('to')} at {p.get('place')}",
    "custody.refused": lambda p: f"hand-off REFUSED: {p.get('reason')}",
    "label.printed": lambda p: f"{p.get('count')} {p.get('label')} label(s) printed",
    "label.applied": lambda p: f"{p.get('count')} {p.get('label')} label(s) applied",
    "label.destroyed": lambda p: f"{p.get('count')} {p.get('label')} destroyed: {p.get('reason')}",
    "label.reconciled": lambda p: f"labels reconciled (balanced: {p.get('balanced')})",
    "batch.completed": lambda p: "batch completed",
}


def describe(kind: str, payload: dict[str, Any]) -> str:
    fn = _DESCRIBE.get(kind)
    if fn is not None:
        return fn(payload)
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)[:300]


def create_app(station: StationPort, settings: KioskSettings) -> Starlette:
    """The kiosk as an ASGI app, serving ``station``; the agent runs it with uvicorn and, to
    stop, calls ``app.state.kiosk.close()`` before the server's exit (open event streams would
    otherwise hold uvicorn's graceful shutdown)."""
    k = Kiosk(station, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        station.set_scan_sink(k.on_scan)
        try:
            yield
        finally:
            k.close()

    routes = [
        Route("/health", k.health),
        Route("/", k.home),
        Route("/signin", k.signin_page, methods=["GET"]),
        Route("/signin", k.signin, methods=["POST"]),
        Route("/signin/password", k.signin_password, methods=["POST"]),
        Route("/signout", k.signout, methods=["POST"]),
        Route("/batches", k.batches, methods=["GET"]),
        Route("/batches", k.start_batch, methods=["POST"]),
        Route("/b/{batch}/step", k.step, methods=["GET"]),
        Route("/b/{batch}/step/{action}", k.step_action, methods=["POST"]),
        Route("/b/{batch}/labels/pdf/{token}", k.label_pdf, methods=["GET"]),
        Route("/b/{batch}/{screen}", k.screen, methods=["GET"]),
        Route("/b/{batch}/{screen}/{action}", k.batch_action, methods=["POST"]),
        Route("/devices", k.devices),
        Route("/sync", k.sync),
        Route("/events", k.events),
        Mount("/static/webui", StaticFiles(directory=webui.STATIC), name="webui"),
        Mount("/static/kiosk", StaticFiles(directory=HERE / "static"), name="kiosk"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: k.not_found, Answered: _answered},
    )
    app.state.kiosk = k
    app.add_middleware(_Headers)
    return app


async def _answered(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Answered)
    return exc.response
