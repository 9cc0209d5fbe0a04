"""Harmonised CQA specifications: a global baseline with jurisdiction overlays, and the pure
evaluation used by the edge (in-process limits, offline) and the server (release decisions)."""

from ebr_core.spec.calculators import dose_range, endotoxin_limit, total_viable_car_cells
from ebr_core.spec.evaluate import (
    Alert,
    DeviationDraft,
    Evaluation,
    Verdict,
    deviations_for,
    evaluate,
    late_result_alerts,
)
from ebr_core.spec.inprocess import LimitCheck, inprocess_check
from ebr_core.spec.model import Attribute, LooseningOverlayError, Spec, parse_spec

__all__ = [
    "Alert",
    "Attribute",
    "DeviationDraft",
    "Evaluation",
    "LimitCheck",
    "LooseningOverlayError",
    "Spec",
    "Verdict",
    "deviations_for",
    "dose_range",
    "endotoxin_limit",
    "evaluate",
    "inprocess_check",
    "late_result_alerts",
    "parse_spec",
    "total_viable_car_cells",
]
