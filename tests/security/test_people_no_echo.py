"""Issue 18, item 11 (echoes): a 422 validation error echoed the submitted password.  No
password or password hash is ever echoed: not in responses (errors included), not in the audit
trail, not in the server's logs."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import Server
from tests.server.qa import add_people, login

SECRET = "Zebra-Secret-4711!"


def test_no_password_or_hash_is_echoed(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_people(server, {"admin.x": ("Xena Admin", [("admin", "*")])})
    admin = login(server, "admin.x")
    answers: list[httpx.Response] = []
    post = httpx.post
    url = server.url
    answers += [
        post(url + "/v1/auth/token", json={"user_id": "admin.x", "password": SECRET}),
        post(url + "/v1/auth/token", json={"user_id": "nobody", "password": SECRET}),
        post(url + "/v1/auth/token", json={"user_id": "admin.x", "password": SECRET * 100}),
        post(url + "/v1/auth/token", json={"password": SECRET}),  # user id missing
        post(url + "/v1/auth/token", json={"user_id": ["admin.x"], "password": SECRET}),
        post(url + "/v1/auth/token", json={"user_id": "admin.x", "password": {"p": SECRET}}),
        post(
            url + "/v1/auth/password",
            json={"user_id": "admin.x", "current_password": SECRET, "new_password": SECRET},
        ),
        admin.post(
            "/v1/people",
            json={
                "user_id": "zebra.x",
                "printed_name": "Z",
                "password": "zebra.x-" + SECRET,
                "reason": "r",
            },
        ),
        admin.post(
            "/v1/people",
            json={"user_id": "new.x", "printed_name": "N" * 300, "password": SECRET, "reason": "r"},
        ),
        admin.post("/v1/people/admin.x/password", json={"password": SECRET, "reason": "r"}),
        admin.post("/v1/me/password", json={"current_password": SECRET, "new_password": SECRET}),
        admin.post("/v1/me/password", json={"current_password": SECRET}),
    ]
    leaked = [r.text for r in answers if SECRET in r.text or "argon2" in r.text]
    assert not leaked, leaked
    assert all(r.status_code in (401, 403, 409, 422) for r in answers), [
        (r.status_code, r.request.url) for r in answers
    ]
    people = admin.get("/v1/people").text
    assert "argon2" not in people and SECRET not in people
    with server.admin() as c:
        trail = c.get("/v1/audit", params={"limit": 1000}).text
    assert SECRET not in trail and "argon2" not in trail
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in logged and "$argon2" not in logged
