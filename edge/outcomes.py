"""What an operator action recorded, as data.

Actions of :class:`edge.engine.Engine` return these; the CLI renders them as text or JSON
(:mod:`edge.cli.render`), the kiosk as a screen: one rule, one message, many screens.  ``str()``
of an outcome is the message the action returned before outcomes existed, so a caller that
showed that text shows the same.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, asdict, dataclass
from typing import Any, ClassVar


def _breach(limit: str) -> str:
    return "" if limit == "ok" else f" ({limit} limit breached: deviation raised)"


@dataclass(frozen=True)
class Outcome:
    """What an action recorded in ``batch_id``; ``seq`` is the ledger seq of its main event."""

    kind: ClassVar[str]  # the ``outcome`` field of the JSON form
    template: ClassVar[str] = ""  # the message, formatted with the outcome's fields
    batch_id: str
    seq: int

    def __init_subclass__(
        cls, *, kind: str | None = None, template: str | None = None, **kwargs: Any
    ) -> None:
        """A subclass names its ``kind`` and ``template`` in its header (what it does not name
        it inherits): ``class Signed(Outcome, kind="signed", template="signed {meaning!r}")``."""
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = kind
        if template is not None:
            cls.template = template

    @property
    def message(self) -> str:
        """The line an operator reads."""
        return self.template.format(**vars(self))

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.kind, **asdict(self), "message": self.message}


@dataclass(frozen=True)
class BatchStarted(
    Outcome,
    kind="batch_started",
    template="batch {batch_id} started for COI {coi} on MBR {mbr_id} v{mbr_version}",
):
    """A batch started for a patient's COI on a master batch record."""

    coi: str
    mbr_id: str
    mbr_version: str


@dataclass(frozen=True)
class ScanAccepted(Outcome, kind="scan_accepted"):
    """A scan accepted at a step, with the identifiers it carried."""

    step_id: str
    role: str
    identifiers: dict[str, Any]

    @property
    def message(self) -> str:
        return f"{self.role.replace('_', ' ')} accepted"


@dataclass(frozen=True)
class Judged(Outcome):
    """A value judged against its step's limits: a breach raised ``deviation_id``."""

    step_id: str
    name: str
    _: KW_ONLY
    limit: str  # ok | soft | hard
    deviation_id: str | None

    @property
    def message(self) -> str:
        return super().message + _breach(self.limit)


@dataclass(frozen=True)
class ValueRecorded(Judged, kind="value_recorded", template="{name} = {value} {unit} recorded"):
    """A value entered at a step and judged against its limits."""

    value: str  # as entered
    unit: str


@dataclass(frozen=True)
class ValueCorrected(Judged, kind="value_corrected"):
    template = (
        "{name} corrected from {old_value} to {value} {unit} by {printed_name} ({user_id}) "
        "(correcting seq {corrects}): {reason}"
    )
    old_value: str
    value: str
    unit: str
    reason: str
    user_id: str
    printed_name: str
    corrects: int  # the seq of the value.recorded event corrected


@dataclass(frozen=True)
class DoseCalculated(Outcome, kind="dose_calculated"):
    step_id: str
    cells_to_infuse: str
    per_kg: str
    volume_to_infuse_ml: str
    total_viable_car_cells: str
    within_range: bool
    deviation_id: str | None  # raised when the dose is outside the MBR's range

    def detail(self) -> dict[str, str]:
        """The four figures, as recorded in the event (and returned before outcomes)."""
        return {
            "cells_to_infuse": self.cells_to_infuse,
            "per_kg": self.per_kg,
            "volume_to_infuse_ml": self.volume_to_infuse_ml,
            "total_viable_car_cells": self.total_viable_car_cells,
        }

    @property
    def message(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.detail().items())


@dataclass(frozen=True)
class Signed(
    Outcome,
    kind="signed",
    template="signed {meaning!r} by {printed_name} ({user_id}) at {signed_at}",
):
    """A step signed with a meaning, by whom and when."""

    step_id: str
    meaning: str
    user_id: str
    printed_name: str
    signed_at: str
    signed_hash: str
    step_completed: bool
    batch_completed: bool

    @property
    def message(self) -> str:
        done = f"; step {self.step_id} completed" if self.step_completed else ""
        return super().message + done


@dataclass(frozen=True)
class DeviationRecorded(Outcome):
    deviation_id: str


@dataclass(frozen=True)
class DeviationRaised(
    DeviationRecorded, kind="deviation_raised", template="deviation {deviation_id} raised"
):
    """``str()`` is the deviation id (what :meth:`Engine.raise_deviation` returned before)."""

    step_id: str | None
    reason: str

    def __str__(self) -> str:
        return self.deviation_id


@dataclass(frozen=True)
class DeviationCommented(
    DeviationRecorded, kind="deviation_commented", template="comment added to {deviation_id}"
):
    """A comment added to an open deviation."""

    comment: str


@dataclass(frozen=True)
class DeviationLinked(
    DeviationRecorded, kind="deviation_linked", template="{deviation_id} linked to {linked_to}"
):
    """A deviation linked to another record (a CAPA, a change control...)."""

    linked_to: str
