"""Quality: specifications, results, review, release and out-of-specification cases.

:mod:`server.quality.release` holds the release rules, pure (no I/O)."""
