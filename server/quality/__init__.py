"""Quality: specifications, results, review, release and out-of-specification cases.

- :mod:`~server.quality.api` — the routes; :mod:`~server.quality.schemas` — their bodies;
- :mod:`~server.quality.record` — a batch as a reviewer judges it, and its record hash;
- :mod:`~server.quality.views` — the read model (batch view, queue, cases);
- :mod:`~server.quality.review` — the writes (specifications, results, deviations, signatures);
- :mod:`~server.quality.release` — the release rules, pure (no I/O);
- :mod:`~server.quality.oos` — the out-of-specification exceptional release.
"""
