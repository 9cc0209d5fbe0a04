"""Every form the console takes (every POST route under ``/console``, read from the app's routes,
not from a list) refuses a post without the session's CSRF token, or with another session's:
403, and nothing done.  A signed-in person's forms are checked before their handler runs
(``server.console.pages.signed_in``), so a new form cannot forget it."""

from __future__ import annotations

from fastapi.routing import iter_route_contexts
from starlette.routing import Route

from tests.server.qa import PEOPLE

from .conftest import Served
from .test_queue_and_security import signed_in


def _console_posts(served: Served) -> list[str]:
    routes = [c.original_route for c in iter_route_contexts(served.server.app.routes)]
    paths = {
        r.path.replace("{batch_id}", "B-NONE")
        for r in routes
        if isinstance(r, Route) and r.path.startswith("/console/") and "POST" in (r.methods or ())
    }
    return sorted(paths)


def test_every_console_form_refuses_a_post_without_this_sessions_csrf_token(
    served: Served,
) -> None:
    posts = _console_posts(served)
    assert len(posts) >= 14 and "/console/people" in posts and "/console/signin" in posts
    admin = next(u for u, (_, grants) in PEOPLE.items() if ("admin", "*") in grants)
    c, token = signed_in(served, admin)
    other, other_token = signed_in(served, "rev.a")
    assert token != other_token
    try:
        for path in posts:
            for data in ({}, {"csrf": other_token}, {"csrf": "0" * 64}):
                r = c.post(path, data=data | {"user_id": "x", "reason": "r"})
                assert r.status_code == 403, (path, data, r.status_code, r.text[:300])
                assert "CSRF" in r.text, (path, r.text[:300])
        # the session was not ended by any of them: a page still opens, the token still works
        assert c.get("/console/people").status_code == 200
        assert c.post("/console/signout", data={"csrf": token}).status_code == 303
    finally:
        c.close()
        other.close()
