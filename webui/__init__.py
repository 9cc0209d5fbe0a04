"""Shared look for the station kiosk and the QA console: base templates, CSS and the vendored
JavaScript (htmx, axe-core for the accessibility checks), served by each app from its own
process.  It imports neither app."""
