"""The QA console: server-rendered HTML pages (Jinja2, htmx) at ``/`` and ``/console/...`` for
QA reviewers and approvers: sign-in, the review queue, the batch view (exceptions first), results,
deviations, the release ceremony, out-of-specification cases, alerts, specifications, people and
the audit trail (``docs/console.md``).  Screens are thin: every action calls the same service the
JSON API calls (:mod:`server.quality`, :mod:`server.people`, :mod:`server.audit`); this package
owns no rule.

The composition root includes :data:`router` (``app.include_router(console.router)``).
"""

from server.console.pages import router

__all__ = ["router"]
