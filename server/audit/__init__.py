"""The hash-chained audit trail and alerts (append-only; acknowledged by a new row)."""
