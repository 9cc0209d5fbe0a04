"""The console's screens: sign-in and password change, the review queue, the batch view
(exceptions first, label reconciliation, deviation links, telemetry charts with their zoom),
deviation closure with an e-signature, and the release ceremony.

Each action calls the service the JSON API calls, one call per recorded act:
:meth:`Access.check_password` (lockout, attempt slots), :func:`people.issue_token`,
:func:`views.queue` (access-scoped), :func:`views.batch_view`, :func:`views.telemetry_window`,
:func:`service.deviation_action` (comments), :func:`links.link_deviations`,
:func:`quality_api.close_signed` (the API's closure: password, duties, the minor-only rule),
:func:`service.sign` (the pure release rules of :mod:`server.quality.release` decide).  A refusal
is shown in the service's own words, with its HTTP status.  Each request by a session slides its
idle timeout (:meth:`Access.renew`).

Over 400 lines: one short handler per screen and form, each the same few steps (session, CSRF,
the service, the page again with its notice or refusal), read best side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import UploadFile as StarletteUpload

import webui
from ebr_core.canonical import canonical
from ebr_core.document import load_yaml
from ebr_core.errors import EbrError
from ebr_core.limits import describe_judged
from ebr_core.spec import parse_spec
from ebr_core.units_display import display_unit
from ebr_core.vocab import Meaning
from server import projections
from server.audit import alerts, trail
from server.batches import at_sites, summary
from server.console import web
from server.console.charts import Limits, chart_svg
from server.custody.service import timeline as custody_timeline
from server.db import Alert, AuditEntry, BatchSummary, OosCase, Person, SpecRow
from server.errors import Forbidden, NotFound, ServerError, Unauthorized, Unprocessable
from server.people import duties, passwords
from server.people import service as people
from server.people.auth import Access
from server.people.ids import new_user_id
from server.people.service import Principal
from server.quality import api as quality_api
from server.quality import documents, links, oos, release, views
from server.quality import review as service
from server.quality.documents import batch_start
from server.quality.record import load_review, load_spec
from server.schemas import ID
from server.text import iso

# HTML pages, not API operations: plain Starlette routes (no OpenAPI entry, no permission
# dependency for the API's authorization matrix to enumerate); each handler checks the person's
# permission with the same Principal.require the API's dependencies use.
router = APIRouter()
Handler = Callable[[Request], Response]
SignedHandler = Callable[[Request, Principal], Response]

QUEUE_STATES = [s.value for s in views.QUEUED]
AGES = {"": None, "1": 1, "3": 3, "7": 7, "30": 30}  # "completed more than n days ago"
QUEUE_PAGE = 100  # batches listed a page
DECIDING = (Meaning.RELEASED.value, Meaning.REJECTED.value)


# -- plumbing ---------------------------------------------------------------------------------


def _access(request: Request) -> Access:
    a = request.app.state.access
    assert isinstance(a, Access)
    return a


def _sessions(request: Request) -> sessionmaker[Session]:
    s: sessionmaker[Session] = request.app.state.sessions
    return s


def _now(request: Request) -> datetime:
    t: datetime = request.app.state.clock()
    return t


def _who(request: Request) -> Principal | None:
    """The signed-in person, or None (no cookie, or a token expired, revoked or of an inactive
    account: decided by :func:`people.principal_for_token`)."""
    token = request.cookies.get(web.SESSION_COOKIE, "")
    if not token:
        return None
    with _sessions(request)() as s:
        try:
            who = people.principal_for_token(s, token, at=_now(request))
        except Unauthorized:
            return None
        _access(request).renew(s, token)  # the idle timeout slides with use
    request.state.principal = who  # names the person in an audited refusal
    return who


def _signin(reason: str = "") -> RedirectResponse:
    return RedirectResponse("/console/signin" + ("?expired=1" if reason else ""), status_code=303)


def _audit_forbidden(request: Request, e: Forbidden) -> None:
    """Audit a refused authorization as the API's error handler does (rate-limited)."""
    who = getattr(request.state, "principal", None)
    name = who.user_id if isinstance(who, Principal) else _address(request)
    route = f"{request.method} {request.url.path}"[:128]
    _access(request).audit_refusal("authz.refused", name, e.message, route)


def _address(request: Request) -> str:
    return request.client.host if request.client else "(unknown)"


def _refused(
    request: Request,
    e: ServerError,
    who: Principal | None,
    name: str = "console/error.html",
    context: dict[str, Any] | None = None,
) -> Response:
    """A refusal as a page, with the service's message and HTTP status; a 403 is audited as the
    API audits it."""
    if isinstance(e, Forbidden):
        _audit_forbidden(request, e)
    ctx = {"who": who, "error": e.message, "error_title": e.title} | (context or {})
    return web.render(request, name, ctx, e.status)


def _ready(request: Request) -> Principal | Response:
    """The person, or where they must go first (sign-in; their password change)."""
    who = _who(request)
    if who is None:  # a cookie whose session ended (idle, its end, signed out elsewhere)
        return _signin("expired" if request.cookies.get(web.SESSION_COOKIE) else "")
    if who.password_change_required:
        return RedirectResponse("/console/password", status_code=303)
    return who


def page(path: str, method: str = "GET") -> Callable[[Handler], Handler]:
    """Register a page.  The handler runs in a worker thread (it reads the database and may
    check a password), with a POST's form already read into ``request.state.form``; a refusal
    raised in it is shown as a page with its status."""

    def register(fn: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            if method == "POST":
                request.state.form = await request.form()
            return await run_in_threadpool(_guarded, fn, request)

        router.add_route(path, endpoint, methods=[method], name=fn.__name__,
                         include_in_schema=False)  # fmt: skip
        return fn

    return register


def signed_in(path: str, method: str = "GET") -> Callable[[SignedHandler], SignedHandler]:
    """Register a page for a signed-in person (:func:`page`): the handler gets the person, or
    the visitor goes where they must go first (sign-in, their password change).  A POST's CSRF
    token is checked here, so no form handler can forget it (a refusal: 403, audited)."""

    def register(fn: SignedHandler) -> SignedHandler:
        def handler(request: Request) -> Response:
            who = _ready(request)
            if isinstance(who, Response):
                return who
            if method == "POST":  # every signed-in form, before its handler reads a field
                web.check_csrf(request, request.state.form)
            return fn(request, who)

        handler.__name__ = fn.__name__
        page(path, method)(handler)
        return fn

    return register


def _guarded(fn: Handler, request: Request) -> Response:
    try:
        return fn(request)
    except ServerError as e:
        return _refused(request, e, getattr(request.state, "principal", None))


def _batch_id(request: Request) -> str:
    b = str(request.path_params["batch_id"])
    if not 1 <= len(b) <= ID:
        raise Unprocessable(f"batch id: 1 to {ID} characters")
    return b


# -- static files -----------------------------------------------------------------------------


@page("/console/static/webui/{path:path}")
def webui_static(request: Request) -> Response:
    return web.static_file(webui.STATIC, str(request.path_params["path"]))


@page("/console/static/console/{path:path}")
def console_static(request: Request) -> Response:
    return web.static_file(web.STATIC, str(request.path_params["path"]))


# -- sign-in ----------------------------------------------------------------------------------


@page("/")
def home(request: Request) -> Response:
    return RedirectResponse("/console/queue", status_code=303)


@page("/console/signin")
def signin_page(request: Request) -> Response:
    note = (
        f"Your session ended (signed out after {_access(request).settings.token_ttl_s // 60} "
        "minutes idle, or at its end): sign in again."
        if request.query_params.get("expired")
        else ""
    )
    return web.render(request, "console/signin.html", {"note": note})


@page("/console/signin", "POST")
def signin(request: Request) -> Response:
    form = request.state.form
    a = _access(request)
    user_id = ""
    try:
        web.check_csrf(request, form)
        user_id = web.field(form, "user_id", label="user id")[:64]
        password = web.field(form, "password")

        def go() -> tuple[str, bool]:
            p = a.check_password(user_id, password, purpose="login")
            with a.sessions() as s:
                token, _ = people.issue_token(s, p, at=a.clock(), ttl_s=a.settings.token_ttl_s)
                s.commit()
            return token, bool(p.must_change_password)

        token, must_change = go()
    except ServerError as e:
        return _refused(request, e, None, "console/signin.html", {"user_id": user_id})
    resp = RedirectResponse(
        "/console/password" if must_change else "/console/queue", status_code=303
    )
    # the cookie lives as long as the session may (its absolute end); the server decides
    # every request whether it is still valid (idle timeout, revocation)
    web.set_cookie(request, resp, web.SESSION_COOKIE, token, max_age=a.session_max_s)
    resp.delete_cookie(web.PRE_COOKIE, path="/")
    return resp


@page("/console/signout", "POST")
def signout(request: Request) -> Response:
    form = request.state.form
    who = _who(request)
    try:
        web.check_csrf(request, form)
    except ServerError as e:
        return _refused(request, e, who)
    token = request.cookies.get(web.SESSION_COOKIE, "")
    if token:
        with _sessions(request)() as s:
            people.end_session(s, token, at=_now(request))
            s.commit()
    resp = RedirectResponse("/console/signin", status_code=303)
    resp.delete_cookie(web.SESSION_COOKIE, path="/")
    return resp


@page("/console/password")
def password_page(request: Request) -> Response:
    who = _who(request)
    if who is None:
        return _signin()
    return web.render(request, "console/password.html", {"who": who})


@page("/console/password", "POST")
def change_password(request: Request) -> Response:
    """The owner changes their password with the current one (the step after an administrator
    set it); their other sessions end, this one goes on."""
    form = request.state.form
    who = _who(request)
    if who is None:
        return _signin()
    a = _access(request)
    token = request.cookies.get(web.SESSION_COOKIE, "")
    try:
        web.check_csrf(request, form)
        if who is people.SYSTEM:
            raise Forbidden("the bootstrap token has no password to change")
        current = web.field(form, "current_password", label="current password")
        new = passwords.password_argument(
            "new_password", web.field(form, "new_password", label="new password")
        )
        if new != web.field(form, "new_again", label="new password again"):
            raise Unprocessable("the new password and its repetition differ: type it twice")
        if new == current:
            raise Unprocessable(
                "password policy: the new password must differ from the current one"
            )

        def go() -> None:
            a.check_password(who.user_id, current, purpose="password_change")
            h = a.new_hash(who.user_id, new)
            with a.sessions() as s:
                people.change_own_password(s, who, at=a.clock(), password_hash=h,
                                           keep_token=token)  # fmt: skip
                s.commit()

        go()
    except ServerError as e:
        return _refused(request, e, who, "console/password.html")
    return RedirectResponse("/console/queue", status_code=303)


# -- review queue -----------------------------------------------------------------------------


@signed_in("/console/queue")
def queue_page(request: Request, who: Principal) -> Response:
    q = request.query_params
    site, state, age = q.get("site", "")[:64], q.get("state", ""), q.get("age", "")
    try:
        sites = who.sites("queue.read")
        if sites == set():
            who.require("queue.read", None)  # raises: no site where the queue may be read
        if state and state not in QUEUE_STATES:
            raise Unprocessable(f"state {state[:40]!r} is not one of {', '.join(QUEUE_STATES)}")
        if age not in AGES:
            raise Unprocessable(
                f"age {age[:8]!r}: expected one of {', '.join(a for a in AGES if a)} (days)"
            )
        try:
            page_no = int(q.get("page", "0") or 0)
        except ValueError:
            page_no = -1
        if not 0 <= page_no <= 100_000:
            raise Unprocessable("page: a whole number from 0")
        scope = sites
        if site:
            who.require("queue.read", site)
            scope = {site}
        days = AGES[age]
        cut = None if days is None else iso(_now(request) - timedelta(days=days))
        with _sessions(request)() as s:
            found = views.queue(s, scope, limit=QUEUE_PAGE, offset=page_no * QUEUE_PAGE,
                                state=state or None, completed_before=cut)  # fmt: skip
            counts = views.queue_counts(s, scope)
            known = sorted(
                sites if sites is not None else s.scalars(select(BatchSummary.site_id).distinct())
            )
    except ServerError as e:
        return _refused(request, e, who)
    rows = found["batches"]
    more = (page_no + 1) * QUEUE_PAGE < found["total"]
    here = {"site": site, "state": state, "age": age}
    return web.render(
        request,
        "console/queue.html",
        {
            "who": who,
            "rows": rows,
            "total": sum(counts.values()),
            "matching": found["total"],
            "counts": counts,
            "first": page_no * QUEUE_PAGE + 1,
            "prev_url": "/console/queue?" + urlencode(here | {"page": page_no - 1})
            if page_no
            else None,
            "next_url": "/console/queue?" + urlencode(here | {"page": page_no + 1})
            if more
            else None,
            "sites": known,
            "states": QUEUE_STATES,
            "ages": [a for a in AGES if a],
            "site": site,
            "state": state,
            "age": age,
        },
    )


# -- batch view -------------------------------------------------------------------------------


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _chart_box(
    batch_id: str,
    i: int,
    name: str,
    unit: str,
    series: list[dict[str, Any]],
    alarms: list[str],
    span: tuple[float, float],
    note: str,
    excursions: list[dict[str, Any]] | None = None,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """One chart with its zoom controls: the window shown, and the links that zoom in (the
    middle quarter), out (four times as wide) and back to the whole batch, each fetched from
    the server (htmx) at the resolution that window allows."""
    t0, t1 = span
    mid, half = (t0 + t1) / 2, (t1 - t0) / 2
    base = f"/console/batches/{quote(batch_id, safe='')}/chart"

    def url(**q: Any) -> str:
        return base + "?" + urlencode({"channel": name, "i": i} | q)

    return {
        "i": i,
        "name": name,
        "anchor": f"chart-{i + 1}",
        "svg": chart_svg(
            name,
            unit,
            series,
            alarms,
            f"chart-{i}-title",
            limits=limits,
            excursions=excursions or [],
            span=span,
        ),
        "from": _utc(t0),
        "to": _utc(t1),
        "note": note,
        "form_url": base,
        "zoom_in": url(**{"from": _utc(mid - half / 4), "to": _utc(mid + half / 4)}),
        "zoom_out": url(**{"from": _utc(mid - half * 4), "to": _utc(mid + half * 4)}),
        "reset": url(),
    }


def _limits(proj: projections.Projection, name: str, unit: str) -> tuple[Limits | None, str]:
    """The chart's limits as the record holds them (:func:`projections.channel_limits`), and
    the sentence that says so (or why there are none)."""
    lim, note = projections.channel_limits(proj, name, unit)
    note = note[0].upper() + note[1:] + "."
    if lim is None:
        return None, note
    lo, hi = lim.limit.min, lim.limit.max
    shown = Limits(
        None if lo is None else float(lo),
        None if hi is None else float(hi),
        f"{lim.source}, recorded in the batch's record",
    )
    return shown, note


def _overview(
    batch_id: str,
    i: int,
    name: str,
    ch: dict[str, Any],
    alarms: list[str],
    proj: projections.Projection,
) -> Any:
    pts = ch["series"]
    width = int(ch["bucket_s"])
    span = (float(pts[0]["t"]), float(pts[-1]["t"]) + width) if pts else (0.0, 1.0)
    limits, said = _limits(proj, name, ch["unit"])
    marked = " Buckets reaching beyond them are marked in red." if limits else ""
    note = (
        f"Whole batch: the stored series, {len(pts)} bucket{'' if len(pts) == 1 else 's'} of "
        f"{width} s (each its minimum "
        f"to maximum). {said}{marked}"
    )
    return _chart_box(batch_id, i, name, ch["unit"], pts, alarms, span, note, limits=limits)


def _alarm_times(alarms: list[dict[str, Any]]) -> list[str]:
    return [str(a.get("recorded_at") or a.get("at") or "") for a in alarms]


def _charts(
    batch_id: str,
    tele: dict[str, Any],
    alarms: list[dict[str, Any]],
    proj: projections.Projection,
) -> list[Any]:
    times = _alarm_times(alarms)
    return [
        {"name": name, "anchor": f"chart-{i + 1}", "ch": ch, "unit": display_unit(ch["unit"]),
         "box": _overview(batch_id, i, name, ch, times, proj)}
        for i, (name, ch) in enumerate(tele.items())
    ]  # fmt: skip


@signed_in("/console/batches/{batch_id}/chart")
def chart_window(request: Request, who: Principal) -> Response:
    """One channel's chart for a window (the zoom, fetched by htmx): from the readings when the
    window is narrow enough (:func:`views.telemetry_window`), else the stored series."""
    batch_id = _batch_id(request)
    q = request.query_params
    name = q.get("channel", "")[:128]
    try:
        i = int(q.get("i", "0"))
    except ValueError:
        i = -1
    try:
        if not 0 <= i < 1000:
            raise Unprocessable("i: the chart's number, a whole number from 0")
        with _sessions(request)() as s:
            summ = summary(s, batch_id)
            who.require("batch.read", summ.site_id)
            proj = projections.load(s, summ)
            alarms = _alarm_times([dict(x) for x in proj.state.alarms] if proj.state else [])
            if not q.get("from") and not q.get("to"):
                tele = views.telemetry_json(proj.telemetry, series=True)
                if name not in tele:
                    raise NotFound(f"batch {batch_id} has no telemetry channel {name!r}")
                box = _overview(batch_id, i, name, tele[name], alarms, proj)
            else:
                t0 = views.window_time(q.get("from", ""), "from")
                t1 = views.window_time(q.get("to", ""), "to")
                w = views.telemetry_window(s, summ, name, t0, t1, proj)
                if w["resolution"] == "readings":
                    note = (
                        f"{w['readings']} readings read; buckets of {w['bucket_s']} s; "
                        f"{w['excursions_total']} excursion(s) marked in this window."
                    )
                else:
                    note = (f"More than {projections.WINDOW_READINGS} readings in this window: "
                            f"the stored series ({w['bucket_s']} s buckets); narrow the window "
                            "to read the readings themselves.")  # fmt: skip
                limits, said = _limits(proj, name, w["unit"])
                box = _chart_box(batch_id, i, name, w["unit"], w["series"], alarms, (t0, t1),
                                 note + " " + said, w["excursions"], limits)  # fmt: skip
    except ServerError as e:
        if isinstance(e, Forbidden):
            _audit_forbidden(request, e)
        # htmx swaps only a successful answer: the refusal is shown in place of the chart
        # (with the way back); a request without htmx gets the refusal's own status
        status = 200 if request.headers.get("HX-Request") else e.status
        reset = f"/console/batches/{quote(batch_id, safe='')}/chart?" + urlencode(
            {"channel": name, "i": max(i, 0)}
        )
        ctx = {"who": who, "c": None, "error": e.message, "i": max(i, 0), "reset": reset}
        return web.render(request, "console/chart.html", ctx, status)
    return web.render(request, "console/chart.html", {"who": who, "c": box})


def _load_batch(request: Request, who: Principal, batch_id: str) -> dict[str, Any]:
    with _sessions(request)() as s:
        summ = summary(s, batch_id)
        who.require("batch.read", summ.site_id)
        r = load_review(s, batch_id)
        view = views.batch_view(s, r, _now(request))
        tele = views.telemetry_json(r.projection.telemetry, series=True)
        used = [  # materials, lots and equipment: the scans the unit accepted, as recorded
            {"seq": x.get("seq"), "step": x.get("step"), "role": x.get("role"),
             "identifiers": x.get("identifiers"), "raw": x.get("raw")}
            for x in r.state.scans_accepted
        ]  # fmt: skip
        custody: dict[str, Any] | None = None
        if summ.coi:
            try:
                custody = custody_timeline(s, summ.coi)
            except ServerError:
                custody = None
        seq = s.scalar(select(func.max(AuditEntry.seq))) or 0
        specs = [
            f"{r.spec_id}@{r.version}"
            for r in s.scalars(select(SpecRow).order_by(SpecRow.spec_id, SpecRow.version.desc()))
        ]
    return {
        "view": view,
        "charts": _charts(batch_id, tele, view["alarms"], r.projection),
        # each value's judgement with the limits its event records (none: said so)
        "value_limits": {
            k: describe_judged(v) or f"{v.get('limit', 'not judged')} (no limits recorded)"
            for k, v in view["values"].items()
        },
        "used": used,
        "custody": custody,
        "audit_seq": seq,
        "can_review": who.can("sign.review", view["site_id"]),
        "can_release": who.can("release", view["site_id"]),
        "can_close": who.can("deviation.review", view["site_id"]),
        "can_report": who.can("report.read", view["site_id"]),
        "can_enter": who.can("results.write", view["site_id"]),
        "specs": specs,
        "oos_next": OOS_NEXT,
    }


def _batch_page(
    request: Request,
    who: Principal,
    batch_id: str,
    *,
    notices: list[str] | None = None,
    refusals: list[str] | None = None,
    status: int = 200,
) -> Response:
    try:
        ctx = _load_batch(request, who, batch_id)
    except ServerError as e:
        return _refused(request, e, who)
    ctx |= {"who": who, "notices": notices or [], "refusals": refusals or []}
    return web.render(request, "console/batch.html", ctx, status)


@signed_in("/console/batches/{batch_id}")
def batch_page(request: Request, who: Principal) -> Response:
    batch_id = _batch_id(request)
    return _batch_page(request, who, batch_id)


# -- deviations -------------------------------------------------------------------------------


def _ids(form: Any, name: str, what: str) -> list[str]:
    ids = [str(x) for x in form.getlist(name)]
    if not ids:
        raise Unprocessable(f"choose at least one {what}")
    for i in ids:
        if not i or len(i) > 64:
            raise Unprocessable(f"{what} {i[:64]!r}: expected an id of 1 to 64 characters")
    return list(dict.fromkeys(ids))


@signed_in("/console/batches/{batch_id}/deviations/close", "POST")
def close_deviations(request: Request, who: Principal) -> Response:
    """Close one deviation, or several minor ones, with one e-signature (meaning ``closed``, a
    reason, the password again): the API's :func:`quality_api.close_signed`, which checks the
    password, the duties and the rule on minor deviations, and records each closure on its
    own, all or none."""
    batch_id = _batch_id(request)
    form = request.state.form
    try:
        ids = _ids(form, "deviation", "deviation")
        closures = quality_api.close_signed(
            _access(request), who, batch_id=batch_id, deviation_ids=ids, user_id=who.user_id,
            password=web.field(form, "password"), meaning=release.CLOSED,
            reason=web.field(form, "reason"),
        )  # fmt: skip
    except ServerError as e:
        if isinstance(e, Forbidden):
            _audit_forbidden(request, e)
        return _batch_page(request, who, batch_id, refusals=[e.message], status=e.status)
    notices = [
        f"deviation {c['deviation_id']} closed by {c['printed_name']} ({who.user_id}), "
        f"signature #{c['signature']}, meaning {c['meaning']}"
        for c in closures
    ]
    return _batch_page(request, who, batch_id, notices=notices)


@signed_in("/console/batches/{batch_id}/deviations/link", "POST")
def link_deviation(request: Request, who: Principal) -> Response:
    """Link a deviation to a related one (:func:`links.link_deviations`, the API's service)."""
    batch_id = _batch_id(request)
    form = request.state.form
    try:
        (dev,) = _ids(form, "deviation", "deviation")[:1]
        (other,) = _ids(form, "linked_to", "related deviation")[:1]
        reason = web.field(form, "reason")
        with _sessions(request)() as s:
            links.link_deviations(s, who, at=_now(request), batch_id=batch_id,
                                  deviation_id=dev, linked_to=other, reason=reason)  # fmt: skip
            s.commit()
    except ServerError as e:
        if isinstance(e, Forbidden):
            _audit_forbidden(request, e)
        return _batch_page(request, who, batch_id, refusals=[e.message], status=e.status)
    return _batch_page(request, who, batch_id, notices=[f"deviation {dev} linked to {other}"])


# -- the release ceremony ---------------------------------------------------------------------


def _dialog(request: Request, who: Principal, batch_id: str, kind: str) -> dict[str, Any]:
    ctx = _load_batch(request, who, batch_id)
    view = ctx["view"]
    who.require("release" if kind == "release" else "sign.review", view["site_id"])
    final = {
        d["jurisdiction"]
        for d in view["dispositions"]
        if d["disposition"] in ("released", "exceptional_release", "rejected")
    }
    return ctx | {
        "who": who,
        "kind": kind,
        "opened_at": iso(_now(request)),
        "jurisdictions": [
            {"code": j, "cqa": c, "final": j in final} for j, c in sorted(view["cqa"].items())
        ],
    }


@signed_in("/console/batches/{batch_id}/sign")
def sign_dialog(request: Request, who: Principal) -> Response:
    batch_id = _batch_id(request)
    """The signing dialog: its hidden fields hold the record and evaluation hashes as they are
    now, so the signature is bound to what was shown (21 CFR 11.70)."""
    kind = request.query_params.get("kind", "review")
    try:
        if kind not in ("review", "release"):
            raise Unprocessable(f"kind {kind[:16]!r}: expected review or release")
        ctx = _dialog(request, who, batch_id, kind)
    except ServerError as e:
        return _refused(request, e, who)
    return web.render(request, "console/sign.html", ctx)


def _changes(request: Request, batch_id: str, since_seq: int) -> list[dict[str, Any]]:
    """What was recorded on the batch (and its deviations) after the dialog opened."""
    with _sessions(request)() as s:
        about = or_(AuditEntry.object_id == batch_id,
                    AuditEntry.object_id.startswith(batch_id + "/", autoescape=True))  # fmt: skip
        rows = trail.page(s, after=since_seq, limit=50, where=[about])  # in visibility order
        return [
            {"at": e.at, "actor": e.actor, "action": e.action, "object": e.object_id,
             "reason": e.reason or ""}
            for e in rows
        ]  # fmt: skip


@signed_in("/console/batches/{batch_id}/sign", "POST")
def sign(request: Request, who: Principal) -> Response:
    batch_id = _batch_id(request)
    """One password, one signature per jurisdiction: the reviewer's "reviewed" for every
    jurisdiction evaluated, or the approver's disposition for each jurisdiction chosen, each
    recorded separately by :func:`service.sign` with its own evaluation hash."""
    form = request.state.form
    a = _access(request)
    kind = ""
    try:
        kind = web.field(form, "kind")
        if kind not in ("review", "release"):
            raise Unprocessable(f"kind {kind[:16]!r}: expected review or release")
        with _sessions(request)() as s:
            site = summary(s, batch_id).site_id
        # A reviewer's forged release post ends here, before any password is read.
        who.require("release" if kind == "release" else "sign.review", site)
        if kind == "release":
            meaning = web.field(form, "meaning")
            if meaning not in DECIDING:
                raise Unprocessable(f"meaning {meaning[:20]!r}: expected one of {DECIDING}")
            chosen = _ids(form, "jurisdiction", "jurisdiction")
        else:
            meaning = Meaning.REVIEWED.value
            chosen = _ids(form, "reviewed", "jurisdiction")
        record_hash = web.field(form, "record_hash", label="record hash")
        hashes = {j: web.field(form, f"evaluation_hash_{j}", label=f"evaluation hash {j}")
                  for j in chosen}  # fmt: skip
        reason = web.field(form, "reason")
        password = web.field(form, "password")
        since_seq = int(web.field(form, "audit_seq", label="audit position") or 0)
        a.check_password(who.user_id, password, purpose="signature")
    except (ServerError, ValueError) as e:
        err = e if isinstance(e, ServerError) else Unprocessable("audit position: not a number")
        if isinstance(err, Forbidden) or kind not in ("review", "release"):
            return _refused(request, err, who)
        # A wrong password or a missing field: the dialog again, on the current record.
        ctx = _dialog(request, who, batch_id, kind) | {"refusals": [err.message]}
        return web.render(request, "console/sign.html", ctx, err.status)
    notices: list[str] = []
    refusals: list[str] = []
    status = 200
    for j in chosen:
        try:
            with _sessions(request)() as s:
                since = batch_start(s, batch_id)
                if since is not None and (why := duties.signing_barred(s, who.user_id, since)):
                    raise Forbidden(why)
                req = release.Signing(meaning, reason, j, record_hash, hashes[j],
                                      at=_now(request))  # fmt: skip
                sig, disp = service.sign(s, who, batch_id=batch_id, req=req)
                s.commit()
            what = f"disposition {disp.disposition}" if disp is not None else "no disposition"
            notices.append(
                f"{j}: signed {meaning} by {sig.printed_name} ({what}; evaluation "
                f"{sig.evaluation_hash})"
            )
        except ServerError as e:
            if isinstance(e, Forbidden):
                _audit_forbidden(request, e)
            refusals.append(f"{j}: {e.message}")
            status = e.status
    if refusals and not notices:
        # Nothing recorded: the dialog again, on the current record, saying what changed.
        try:
            ctx = _dialog(request, who, batch_id, kind)
        except ServerError as e:
            return _refused(request, e, who)
        view = ctx["view"]
        stale = (
            [f"record hash was {record_hash}, now {view['record_hash']}"]
            if record_hash != view["record_hash"]
            else []
        )
        stale += [
            f"evaluation {j} was {h}, now {view['cqa'][j]['evaluation_hash']}"
            for j, h in hashes.items()
            if j in view["cqa"] and view["cqa"][j]["evaluation_hash"] != h
        ]
        ctx |= {"refusals": refusals, "stale": stale,
                "changes": _changes(request, batch_id, since_seq) if stale else []}  # fmt: skip
        return web.render(request, "console/sign.html", ctx, status)
    return _batch_page(request, who, batch_id, notices=notices, refusals=refusals, status=status)


# -- deviation comments -----------------------------------------------------------------------


@signed_in("/console/batches/{batch_id}/deviations/comment", "POST")
def comment_deviation(request: Request, who: Principal) -> Response:
    """A comment on a deviation: :func:`service.deviation_action` (``action="comment"``)."""
    batch_id = _batch_id(request)
    form = request.state.form
    try:
        (dev,) = _ids(form, "deviation", "deviation")[:1]
        text = web.field(form, "comment")
        with _sessions(request)() as s:
            service.deviation_action(
                s, who, at=_now(request), batch_id=batch_id, deviation_id=dev,
                action="comment", text_=text,
            )  # fmt: skip
            s.commit()
    except ServerError as e:
        if isinstance(e, Forbidden):
            _audit_forbidden(request, e)
        return _batch_page(request, who, batch_id, refusals=[e.message], status=e.status)
    return _batch_page(request, who, batch_id, notices=[f"comment added to deviation {dev}"])


# -- out-of-specification cases ---------------------------------------------------------------

OOS_NEXT = {  # the case's state -> the step that follows it here (release: the release dialog)
    "requested": ("risk-evaluation", "Risk evaluation"),
    "evaluated": ("physician-acceptance", "Physician's acceptance"),
    "released": ("notification", "Authority notification reference"),
}


@signed_in("/console/batches/{batch_id}/oos", "POST")
def open_case(request: Request, who: Principal) -> Response:
    """Open an exceptional-release case (:func:`oos.open_oos`)."""
    batch_id = _batch_id(request)
    form = request.state.form
    try:
        jurisdiction = web.field(form, "jurisdiction")[:16]
        physician = web.field(form, "physician")
        text = web.field(form, "request")
        with _sessions(request)() as s:
            c = oos.open_oos(
                s, who, at=_now(request), batch_id=batch_id, jurisdiction=jurisdiction,
                physician=physician, request_text=text,
            )  # fmt: skip
            s.commit()
            case_id = c.id
    except ServerError as e:
        if isinstance(e, Forbidden):
            _audit_forbidden(request, e)
        return _batch_page(request, who, batch_id, refusals=[e.message], status=e.status)
    return _batch_page(
        request, who, batch_id, notices=[f"exceptional-release case {case_id} opened"]
    )


@signed_in("/console/batches/{batch_id}/oos/step", "POST")
def case_step(request: Request, who: Principal) -> Response:
    """The next step of a case (:func:`oos.oos_step`)."""
    batch_id = _batch_id(request)
    form = request.state.form
    try:
        try:
            case_id = int(web.field(form, "case", label="case number"))
        except ValueError:
            raise Unprocessable("case number: expected a whole number") from None
        step = web.field(form, "step")[:32]
        text = web.field(form, "text")
        with _sessions(request)() as s:
            c = s.get(OosCase, case_id)
            if c is None or c.batch_id != batch_id:
                raise NotFound(f"batch {batch_id} has no exceptional-release case {case_id}")
            c = oos.oos_step(s, who, at=_now(request), case_id=case_id, step=step, text_=text)
            s.commit()
            state = c.state
    except ServerError as e:
        if isinstance(e, Forbidden):
            _audit_forbidden(request, e)
        return _batch_page(request, who, batch_id, refusals=[e.message], status=e.status)
    return _batch_page(
        request, who, batch_id, notices=[f"case {case_id}: {step} recorded ({state})"]
    )


# -- reports ----------------------------------------------------------------------------------


def _document(
    request: Request,
    build: Callable[[Session, str, str, datetime], bytes],
    media_type: str,
    filename: str | None = None,
) -> Response:
    """One of the batch's documents (:mod:`server.quality.documents`, as the API builds them)
    for the cookie session: ``build(session, batch_id, jurisdiction, now)``."""
    batch_id = _batch_id(request)
    who = _ready(request)
    if isinstance(who, Response):
        return who
    j = request.query_params.get("jurisdiction", "")[:16]
    with _sessions(request)() as s:
        who.require("report.read", summary(s, batch_id).site_id)
        body = build(s, batch_id, j, _now(request))
    headers = {"Cache-Control": "no-store"}
    if filename is not None:
        headers["Content-Disposition"] = f'attachment; filename="{filename.format(batch_id, j)}"'
    return Response(body, media_type=media_type, headers=headers)


@page("/console/batches/{batch_id}/report.pdf")
def report_pdf(request: Request) -> Response:
    """The batch report, for the cookie session."""

    def build(s: Session, batch_id: str, _jurisdiction: str, at: datetime) -> bytes:
        return documents.report_pdf(s, batch_id, at)

    return _document(request, build, "application/pdf")


@page("/console/batches/{batch_id}/coa.pdf")
def coa_pdf(request: Request) -> Response:
    """The certificate of analysis of one jurisdiction."""
    return _document(request, documents.coa_pdf, "application/pdf")


@page("/console/batches/{batch_id}/fhir.json")
def fhir_bundle(request: Request) -> Response:
    """The batch as a FHIR R5 Bundle for one jurisdiction (the API's export)."""
    return _document(request, documents.fhir_json, "application/fhir+json", "{}-{}.fhir.json")


# -- alerts -----------------------------------------------------------------------------------

ALERTS_SHOWN = 200


def _alerts_page(
    request: Request, who: Principal, *, notices: list[str] | None = None,
    refusals: list[str] | None = None, status: int = 200,
) -> Response:  # fmt: skip
    sites = who.sites("alerts.read")
    if sites == set():
        who.require("alerts.read", None)  # raises: no site where alerts may be read
    with _sessions(request)() as s:
        q = at_sites(select(Alert), Alert.site_id, sites)  # the API's scope
        rows = [
            alerts.alert_json(a) for a in s.scalars(q.order_by(Alert.id.desc()).limit(ALERTS_SHOWN))
        ]
    ctx = {
        "who": who,
        "alerts": rows,
        "open": sum(1 for a in rows if a["acknowledged"] is None),
        "can_ack": who.sites("deviation.review") != set(),
        "notices": notices or [],
        "refusals": refusals or [],
    }
    return web.render(request, "console/alerts.html", ctx, status)


@signed_in("/console/alerts")
def alerts_page(request: Request, who: Principal) -> Response:
    return _alerts_page(request, who)


@signed_in("/console/alerts/ack", "POST")
def acknowledge(request: Request, who: Principal) -> Response:
    """Acknowledge an alert (:func:`alerts.acknowledge`: a new row; the alert never changes)."""
    form = request.state.form
    if who.sites("deviation.review") == set():
        who.require("deviation.review", None)  # the API's Acknowledge permission
    try:
        try:
            alert_id = int(web.field(form, "alert", label="alert number"))
        except ValueError:
            raise Unprocessable("alert number: expected a whole number") from None
        note = web.field(form, "note")
        with _sessions(request)() as s:
            alerts.acknowledge(s, who, at=_now(request), alert_id=alert_id, note=note)
            s.commit()
    except ServerError as e:
        if isinstance(e, Forbidden):
            _audit_forbidden(request, e)
        return _alerts_page(request, who, refusals=[e.message], status=e.status)
    return _alerts_page(request, who, notices=[f"alert {alert_id} acknowledged"])


# -- results ----------------------------------------------------------------------------------

MAX_RESULTS_FILE = 256 * 1024  # bytes: a results file is a page of attributes


def _results_document(form: Any) -> dict[str, Any]:
    """The results from the uploaded file, else from the text field: YAML or JSON (JSON is
    YAML), exact decimals kept (``ebr_core.document.load_yaml``)."""
    upload = form.get("results_file")
    raw: str | bytes = ""
    if isinstance(upload, StarletteUpload) and upload.filename:
        raw = upload.file.read(MAX_RESULTS_FILE + 1)
        if len(raw) > MAX_RESULTS_FILE:
            raise Unprocessable(f"results file: at most {MAX_RESULTS_FILE // 1024} KiB")
    else:
        raw = web.field(form, "results_text", required=False, label="results")
    if not raw or not raw.strip():
        raise Unprocessable("results are required: upload a results file or type them")
    try:
        data: dict[str, Any] = orjson.loads(canonical(load_yaml(raw)))
    except EbrError as e:
        raise Unprocessable(f"results file: {e}") from e
    return data


@signed_in("/console/batches/{batch_id}/results", "POST")
def enter_results(request: Request, who: Principal) -> Response:
    """Enter QC results (:func:`service.enter_results`, the API's service)."""
    batch_id = _batch_id(request)
    form = request.state.form
    try:
        spec = web.field(form, "spec", label="specification")
        spec_id, _, version = spec.rpartition("@")
        if not spec_id or not version:
            raise Unprocessable(f"specification {spec[:80]!r}: expected id@version")
        results = _results_document(form)
        reason = web.field(form, "reason")
        with _sessions(request)() as s:
            rs = service.enter_results(
                s, who, at=_now(request), batch_id=batch_id, spec_id=spec_id,
                spec_version=version, results=results, reason=reason,
            )  # fmt: skip
            s.commit()
            rid = rs.id
    except ServerError as e:
        if isinstance(e, Forbidden):
            _audit_forbidden(request, e)
        return _batch_page(request, who, batch_id, refusals=[e.message], status=e.status)
    return _batch_page(request, who, batch_id, notices=[f"results #{rid} entered against {spec}"])


# -- audit trail ------------------------------------------------------------------------------

AUDIT_PAGE = 100
AUDIT_EXPORT_MAX = 100_000
AUDIT_FILTERS = {"object_type": 32, "object_id": 128, "actor": 64}  # field -> its max length


def _audit_query(request: Request) -> tuple[list[Any], dict[str, str], int]:
    """The page's filters as conditions for :func:`trail.page` (the API's filters: object type,
    object id, actor), and the position to continue after (the last ``seq`` read: paging is in
    the order entries became visible, so none committed late is skipped)."""
    q = request.query_params
    filters = {k: q.get(k, "").strip() for k in AUDIT_FILTERS}
    for k, n in AUDIT_FILTERS.items():
        if len(filters[k]) > n:
            raise Unprocessable(f"{k.replace('_', ' ')}: at most {n} characters")
    try:
        after = int(q.get("after", "0") or 0)
    except ValueError:
        raise Unprocessable("after: expected a whole number (an audit position)") from None
    where = [getattr(AuditEntry, k) == v for k, v in filters.items() if v]
    return where, filters, after


@signed_in("/console/audit")
def audit_page(request: Request, who: Principal) -> Response:
    who.require("audit.read", None)
    where, filters, after = _audit_query(request)
    with _sessions(request)() as s:
        rows = [trail.to_json(e) for e in trail.page(s, after=after, limit=AUDIT_PAGE, where=where)]
    export = urlencode({k: v for k, v in filters.items() if v})
    return web.render(
        request,
        "console/audit.html",
        {"who": who, "rows": rows, "filters": filters, "after": after,
         "next_after": rows[-1]["seq"] if len(rows) == AUDIT_PAGE else None,
         "export_query": export},
    )  # fmt: skip


@signed_in("/console/audit/export.jsonl")
def audit_export(request: Request, who: Principal) -> Response:
    """The filtered trail as JSON Lines, each entry with its hash (verifiable offline)."""
    who.require("audit.read", None)
    where, _, after = _audit_query(request)
    with _sessions(request)() as s:
        entries = trail.page(s, after=after, limit=AUDIT_EXPORT_MAX, where=where)
        body = b"".join(orjson.dumps(trail.to_json(e)) + b"\n" for e in entries)
    return Response(
        body,
        media_type="application/jsonl",
        headers={"Cache-Control": "no-store",
                 "Content-Disposition": 'attachment; filename="audit-trail.jsonl"'},
    )  # fmt: skip


# -- people (administrators) ------------------------------------------------------------------

STATUSES = ("active", "disabled")


def _people_page(
    request: Request, who: Principal, *, notices: list[str] | None = None,
    refusals: list[str] | None = None, status: int = 200,
) -> Response:  # fmt: skip
    who.require("people.manage", None)
    with _sessions(request)() as s:
        rows = [
            {"user_id": p.user_id, "printed_name": p.printed_name, "status": p.status,
             "must_change": bool(p.must_change_password),
             "roles": sorted(people.grants_of(s, p.user_id))}
            for p in s.scalars(select(Person).order_by(Person.user_id))
        ]  # fmt: skip
    ctx = {"who": who, "people": rows, "roles": people.ROLES, "statuses": STATUSES,
           "notices": notices or [], "refusals": refusals or []}  # fmt: skip
    return web.render(request, "console/people.html", ctx, status)


@signed_in("/console/people")
def people_page(request: Request, who: Principal) -> Response:
    return _people_page(request, who)


@signed_in("/console/people", "POST")
def people_action(request: Request, who: Principal) -> Response:
    """One administration act, through the service the API calls: create a person (with a
    temporary password they must change), grant or revoke a role, set the status, reset the
    password."""
    form = request.state.form
    who.require("people.manage", None)
    a = _access(request)
    try:
        action = web.field(form, "action")
        uid = web.field(form, "user_id", label="user id")[:64]
        reason = web.field(form, "reason")
        if action == "create":
            new = new_user_id(uid)
            pw = passwords.password_argument("password", web.field(form, "password"))
            grant = web.field(form, "role"), web.field(form, "site", label="site")
            h = a.new_hash(new, pw)
            with a.sessions() as s:
                people.create_person(
                    s, who, at=a.clock(), user_id=new,
                    printed_name=web.field(form, "printed_name", label="printed name"),
                    password=pw, password_hash=h, grants=[grant], reason=reason,
                )  # fmt: skip
                s.commit()
            done = f"{new} created with {grant[0]} at {grant[1]}; they must change the password"
        elif action in ("grant", "revoke"):
            role, site = web.field(form, "role"), web.field(form, "site", label="site")
            with a.sessions() as s:
                act = people.grant if action == "grant" else people.revoke_grant
                act(s, who, at=a.clock(), user_id=uid, role=role, site_id=site, reason=reason)
                s.commit()
            done = f"{uid}: {role} at {site} {'granted' if action == 'grant' else 'revoked'}"
        elif action == "status":
            st = web.field(form, "status")
            if st not in STATUSES:
                raise Unprocessable(f"status {st[:20]!r}: expected one of {', '.join(STATUSES)}")
            with a.sessions() as s:
                people.set_status(s, who, at=a.clock(), user_id=uid, status=st, reason=reason)
                s.commit()
            done = f"{uid} is now {st}"
        elif action == "reset":
            with a.sessions() as s:
                target, current = people.current_hash(s, uid)
            if target == who.user_id:
                raise Forbidden(
                    f"{who.user_id} may not reset their own password here: change it with the "
                    "current one (separation of duties)"
                )
            pw = passwords.password_argument("password", web.field(form, "password"))
            h = a.new_hash(target, pw, other_than=current)
            with a.sessions() as s:
                people.reset_password(
                    s, who, at=a.clock(), user_id=target, password_hash=h, reason=reason
                )
                s.commit()
            done = f"{target}: password reset; their sessions ended; they must change it"
        else:
            raise Unprocessable(f"action {action[:20]!r}: expected create, grant, revoke, "
                                "status or reset")  # fmt: skip
    except ServerError as e:
        if isinstance(e, Forbidden):
            _audit_forbidden(request, e)
        return _people_page(request, who, refusals=[e.message], status=e.status)
    return _people_page(request, who, notices=[done])


# -- specifications ---------------------------------------------------------------------------

MAX_SPEC = 512 * 1024  # bytes of a specification document


def _specs_page(
    request: Request, who: Principal, extra: dict[str, Any] | None = None, status: int = 200
) -> Response:
    with _sessions(request)() as s:
        rows = [
            {"spec_id": r.spec_id, "version": r.version, "sha256": r.content_hash,
             "by": r.published_by, "at": iso(r.published_at)}
            for r in s.scalars(select(SpecRow).order_by(SpecRow.spec_id, SpecRow.version))
        ]  # fmt: skip
    ctx = {"who": who, "specs": rows, "can_publish": who.can("spec.publish", None),
           "notices": [], "refusals": []} | (extra or {})  # fmt: skip
    return web.render(request, "console/specs.html", ctx, status)


@signed_in("/console/specs")
def specs_page(request: Request, who: Principal) -> Response:
    return _specs_page(request, who)


def _spec_content(raw: str | bytes) -> tuple[dict[str, Any], Any]:
    """The document as canonical JSON values and the parsed specification: every check the
    server's publish runs (:func:`ebr_core.spec.parse_spec`, loosening overlays refused)."""
    try:
        content: dict[str, Any] = orjson.loads(canonical(load_yaml(raw)))
        return content, parse_spec(content)
    except EbrError as e:
        raise Unprocessable(f"specification refused: {e}") from e


@signed_in("/console/specs/check", "POST")
def spec_check(request: Request, who: Principal) -> Response:
    """Check an uploaded specification before publishing: its overlays per jurisdiction, or
    the refusal (a loosening overlay named), and nothing recorded."""
    form = request.state.form
    who.require("spec.publish", None)
    try:
        upload = form.get("spec_file")
        if not isinstance(upload, StarletteUpload) or not upload.filename:
            raise Unprocessable("specification file is required (YAML or JSON)")
        raw = upload.file.read(MAX_SPEC + 1)
        if len(raw) > MAX_SPEC:
            raise Unprocessable(f"specification file: at most {MAX_SPEC // 1024} KiB")
        content, spec = _spec_content(raw)
    except ServerError as e:
        return _specs_page(request, who, {"refusals": [e.message]}, e.status)
    checked = {
        "spec_id": spec.spec_id,
        "version": spec.version,
        "jurisdictions": {j: sorted(spec.for_jurisdiction(j)) for j in sorted(spec.overlays)},
        "content": orjson.dumps(content).decode(),
    }
    return _specs_page(request, who, {"checked": checked})


@signed_in("/console/specs/publish", "POST")
def spec_publish(request: Request, who: Principal) -> Response:
    """Publish the checked specification (:func:`service.publish_spec`, the API's service)."""
    form = request.state.form
    who.require("spec.publish", None)
    try:
        raw = form.get("content")
        if not isinstance(raw, str) or not raw or len(raw) > MAX_SPEC:
            raise Unprocessable("content: the checked specification is required; check it first")
        reason = web.field(form, "reason")
        content, _ = _spec_content(raw)
        with _sessions(request)() as s:
            row, new = service.publish_spec(s, who, at=_now(request), content=content,
                                            reason=reason)  # fmt: skip
            s.commit()
            what = "published" if new else "was already published with this content"
            done = f"{row.spec_id} v{row.version} {what}"
    except ServerError as e:
        return _specs_page(request, who, {"refusals": [e.message]}, e.status)
    return _specs_page(request, who, {"notices": [done]})


def _terms(a: Any) -> str:
    """One attribute's terms as a reviewer compares them: limit, timing, methods, clause."""
    methods = "any method" if a.methods is None else ", ".join(a.methods)
    return f"{a.describe_limit()}; {a.timing.replace('_', ' ')}; {methods}; {a.clause}"


def _spec_ref(text: str, what: str) -> tuple[str, str]:
    spec_id, _, version = text[:200].rpartition("@")
    if not spec_id or not version:
        raise Unprocessable(f"{what} {text[:80]!r}: expected id@version")
    return spec_id, version


@signed_in("/console/specs/compare")
def spec_compare(request: Request, who: Principal) -> Response:
    """Two published specifications side by side, per jurisdiction and attribute: what differs
    (limit, timing, methods, clause), added or dropped."""
    a_ref = _spec_ref(request.query_params.get("a", ""), "first specification")
    b_ref = _spec_ref(request.query_params.get("b", ""), "second specification")
    with _sessions(request)() as s:
        _, a = load_spec(s, *a_ref)
        _, b = load_spec(s, *b_ref)
    rows = []
    for j in sorted(set(a.overlays) | set(b.overlays)):
        fa = a.for_jurisdiction(j) if j in a.overlays else {}
        fb = b.for_jurisdiction(j) if j in b.overlays else {}
        for attr in sorted(set(fa) | set(fb)):
            ta = _terms(fa[attr]) if attr in fa else "(not in this version)"
            tb = _terms(fb[attr]) if attr in fb else "(not in this version)"
            if ta != tb:
                rows.append({"jurisdiction": j, "attribute": attr, "a": ta, "b": tb})
    return _specs_page(
        request, who, {"compare": {"a": "@".join(a_ref), "b": "@".join(b_ref), "rows": rows}}
    )
