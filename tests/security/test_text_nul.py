"""A NUL character in any text of any JSON route is refused at the door with 422 naming where it
is: PostgreSQL text cannot hold one (a comment with one reset the connection, a 500), and SQLite
would store it.  Nothing is created."""

from __future__ import annotations

from tests.server.conftest import Server
from tests.server.qa import TEMPORARY


def test_a_nul_anywhere_in_a_json_body_is_refused_by_name(server: Server) -> None:
    with server.admin() as c:
        r = c.post(
            "/v1/people",
            json={
                "user_id": "op.nul",
                "printed_name": "Nul\x00Name",
                "password": TEMPORARY,
                "roles": [{"role": "operator", "site_id": "SITE-A"}],
                "reason": "test set-up",
            },
        )
        assert r.status_code == 422, r.text
        assert "body.printed_name contains a NUL character" in r.text
        r = c.post(
            "/v1/people",
            json={
                "user_id": "op.nul",
                "printed_name": "Nul Name",
                "password": TEMPORARY,
                "roles": [{"role": "operator", "site_id": "SITE-A\x00"}],
                "reason": "test set-up",
            },
        )
        assert r.status_code == 422 and "body.roles[0].site_id" in r.text, r.text
        people = c.get("/v1/people").json()
        assert "op.nul" not in str(people)  # nothing was created
