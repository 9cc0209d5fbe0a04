"""The console's plumbing: templates, static files, the session cookie, CSRF tokens and the
security headers.  No rule of the record lives here.

**Session.**  Signing in issues the server's own bearer token (:func:`server.people.service.
issue_token`, after :meth:`server.people.auth.Access.check_password`: its lockout, its attempt
slots, its audit) and keeps it in the cookie ``console_session`` (HttpOnly, SameSite=Strict,
Path=/, Secure when the request came over https).  Each request resolves it with
:func:`server.people.service.principal_for_token`, so expiry, revocation, an inactive account and
a password set by an administrator are decided where the API decides them.

**CSRF.**  Every form carries a per-session token, an HMAC of the session's secret (the bearer
token, or before sign-in the random ``console_pre`` cookie); htmx sends it as ``X-CSRF-Token``.
A POST without the right one is refused (403) before anything is read or done.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import FileResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

import webui
from server.errors import Forbidden, NotFound, Unprocessable

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
SESSION_COOKIE = "console_session"
PRE_COOKIE = "console_pre"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
MAX_FIELD = 2000  # characters of one form field (a reason, a comment)
WEBUI_STATIC = "/console/static/webui"
CONSOLE_STATIC = "/console/static/console"

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_env = Environment(
    loader=ChoiceLoader([FileSystemLoader(HERE / "templates"), FileSystemLoader(webui.TEMPLATES)]),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
templates = Jinja2Templates(env=_env)


def csrf_for(secret: str) -> str:
    return hmac.new(secret.encode(), b"ctgtp/console/csrf", hashlib.sha256).hexdigest()


def secret_of(request: Request) -> str:
    """The session's secret: the bearer token once signed in, else the pre-session cookie."""
    return request.cookies.get(SESSION_COOKIE) or request.cookies.get(PRE_COOKIE) or ""


def check_csrf(request: Request, form: Any) -> None:
    secret = secret_of(request)
    given = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or "")
    if not secret or not hmac.compare_digest(given.encode(), csrf_for(secret).encode()):
        raise Forbidden(
            "the form's CSRF token is missing or not this session's: reload the page and "
            "submit the form again"
        )


def field(form: Any, name: str, *, required: bool = True, label: str | None = None) -> str:
    """One text field of a form, checked: present (if required) and not over-long."""
    v = form.get(name)
    text = v if isinstance(v, str) else ""
    what = label or name.replace("_", " ")
    if len(text) > MAX_FIELD:
        raise Unprocessable(f"{what}: at most {MAX_FIELD} characters")
    if required and not text.strip():
        raise Unprocessable(f"{what} is required")
    return text


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page with the security headers; a pre-session cookie is set when there is no secret
    yet, so that the sign-in form has a CSRF token too."""
    secret = secret_of(request)
    fresh = ""
    if not secret:
        fresh = secret = secrets.token_urlsafe(32)
    ctx = {
        "webui_static": WEBUI_STATIC,
        "console_static": CONSOLE_STATIC,
        "csrf": csrf_for(secret),
        "who": None,
        # the page clears itself when the session ends idle (static/console.js)
        "idle_s": _idle_s(request),
    } | context
    resp = templates.TemplateResponse(request, name, ctx, status_code=status, headers=HEADERS)
    if fresh:
        set_cookie(request, resp, PRE_COOKIE, fresh, max_age=None)
    return resp


def _idle_s(request: Request) -> int:
    access = getattr(request.app.state, "access", None)
    settings = getattr(access, "settings", None)
    return int(getattr(settings, "token_ttl_s", 0) or 0)


def set_cookie(
    request: Request, resp: Response, name: str, value: str, *, max_age: int | None
) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def static_file(root: Path, path: str) -> FileResponse:
    """A file under ``root``, never outside it."""
    base = root.resolve()
    target = (base / path).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        raise NotFound(f"no static file {path[:120]!r}")
    return FileResponse(target, headers={"X-Content-Type-Options": "nosniff"})
