"""Every refusal leaves the server as an RFC 9457 problem document with a stable ``type``: the
app's own errors, FastAPI's validation errors, Starlette's 404/405 and the refusals at the door
(body size, nesting, NUL), each with the HTTP status it always had, and the list in
``docs/api-problems.md`` names every type the server can give."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from server import errors
from server.errors import MEDIA_TYPE, PROBLEM_BASE, ServerError

from .conftest import Server, server_settings, start_server

ROOT = Path(__file__).resolve().parents[2]
SECRET = "correct-horse-battery-staple-9"


@pytest.fixture(scope="module")
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("problems")
    with start_server(server_settings("sqlite", request, tmp, max_api_body_bytes=4096)) as s:
        yield s


def problem(r: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == MEDIA_TYPE, r.headers
    body = r.json()
    assert isinstance(body, dict)
    assert body["type"] == PROBLEM_BASE + slug and body["status"] == status, body
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_the_app_s_refusals(srv: Server) -> None:
    with httpx.Client(base_url=srv.url) as c:
        problem(c.get("/v1/me"), 401, "unauthenticated")
        problem(c.get("/no/such/route"), 404, "not-found")
        problem(c.delete("/health"), 405, "method-not-allowed")
    with srv.admin() as a:
        problem(a.get("/admin/units/UNIT-NONE"), 404, "not-found")
        r = a.post("/v1/people/nobody/status", json={"status": "active", "reason": "r"})
        problem(r, 404, "not-found")


def test_validation_errors_name_where_and_never_echo(srv: Server) -> None:
    with httpx.Client(base_url=srv.url) as c:
        r = c.post("/v1/auth/token", json={"user_id": ["x"], "password": SECRET})
        body = problem(r, 422, "validation")
        assert SECRET not in r.text
        assert body["errors"] == [
            {"loc": ["body", "user_id"], "msg": "Input should be a valid string",
             "type": "string_type"}
        ]  # fmt: skip
        assert "body.user_id" in str(body["detail"])


def test_refusals_at_the_door(srv: Server) -> None:
    with httpx.Client(base_url=srv.url) as c:
        problem(c.post("/v1/auth/token", content=b"x" * 5000), 413, "too-large")
        deep = b"[" * 70 + b"]" * 70
        h = {"Content-Type": "application/json"}
        problem(c.post("/v1/auth/token", content=deep, headers=h), 422, "nesting-too-deep")
        nul = b'{"user_id": "a\\u0000b", "password": "p"}'
        body = problem(c.post("/v1/auth/token", content=nul, headers=h), 422, "nul-character")
        assert "body.user_id" in str(body["detail"])
    # A Content-Length that is no byte count (httpx would not send one: a raw socket does).
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 19 + b"\r\n"
                     b"Connection: close\r\n\r\n{}")  # fmt: skip
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/problem+json" in head, raw
    assert orjson.loads(payload)["type"] == PROBLEM_BASE + "bad-request"


def _types() -> set[str]:
    out, todo = set(), [ServerError]
    while todo:
        cls = todo.pop()
        out.add(PROBLEM_BASE + cls.slug)
        todo.extend(cls.__subclasses__())
    return out


def test_every_problem_type_is_documented() -> None:
    doc = (ROOT / "docs" / "api-problems.md").read_text()
    listed = set(re.findall(re.escape(PROBLEM_BASE) + r"[a-z-]+", doc))
    assert listed == _types(), listed ^ _types()
    assert errors.Busy.retry_after_s == 1  # documented: 503s carry Retry-After
