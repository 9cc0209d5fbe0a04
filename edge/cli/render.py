"""How a command shows what it did: the text an operator reads, or one JSON object with
``--json`` (an engine outcome's :meth:`~edge.engine.Outcome.to_json`, plus what the command
adds), and the agent the command works on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from edge.agent import EdgeAgent, open_agent
from edge.engine import Expectation
from edge.outcomes import Outcome

from .options import JSON_META


def system_clock() -> datetime:
    return datetime.now(UTC)


@contextmanager
def opened(home: Path, *, writer: bool = True, readonly: bool = False) -> Iterator[EdgeAgent]:
    """The unit's agent for one command, closed however the command ends.  ``writer=False``
    for a command that records nothing; ``readonly`` for one that writes nothing at all, not
    even a lock file (status, export: they work on a read-only file system)."""
    agent = open_agent(home, system_clock, writer=writer, readonly=readonly)
    try:
        yield agent
    finally:
        agent.close()


def json_wanted() -> bool:
    return bool(click.get_current_context().meta.get(JSON_META))


def emit(text: str, data: dict[str, Any]) -> None:
    """``text`` for a person, or ``data`` as JSON with ``--json``."""
    if json_wanted():
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(text)


def emit_outcome(
    outcome: Outcome,
    expects: Expectation | None = None,
    *,
    text: str | None = None,
    **extra: Any,
) -> None:
    """An outcome (then, given ``expects``, what the current step expects next)."""
    lines = [outcome.message if text is None else text]
    data = outcome.to_json() | extra
    if expects is not None:
        lines += expectation_lines(expects)
        data["expects"] = expects.to_json()
    emit("\n".join(lines), data)


def expectation_lines(exp: Expectation) -> list[str]:
    if exp.step is None:
        return ["all steps completed"]
    lines = [f"current step: {exp.step.id}: {exp.step.name}"]
    lines += [f"  expects scan: {s.material or s.role.replace('_', ' ')}" for s in exp.scans]
    for v in exp.values:
        spec = exp.step.value(v)
        lines.append(f"  expects value: {v} [{spec.unit if spec else ''}]")
    if exp.calculation:
        lines.append(f"  expects calculation: {exp.calculation}")
    lines += [f"  expects signature: {m}" for m in exp.signatures]
    return lines
