"""The server's transparency log (issue 24): tables, appends, proofs, checkpoints, the listener
that logs the server's own records, the public read API and ``server log verify``.

* :mod:`server.log.tables`: the tables (migration 0009);
* :mod:`server.log.store`: :func:`~server.log.store.append` in the caller's transaction, a
  ``HashStore`` over the tables, checkpoint signing;
* :mod:`server.log.records`: what is logged of each record (leaf fields, ``content_hash``) and
  the ``after_flush`` listener that appends it;
* :mod:`server.log.api`: ``/v1/log`` (checkpoint, tiles, proofs, ``.tlog-proof`` files);
* :mod:`server.log.verify`: recompute the tree and every leaf's record from the database.

The design and who catches what: docs/transparency.md.
"""
