"""Custody: the chain of identity (hand-off, receipt, infusion) and transfer licences."""
