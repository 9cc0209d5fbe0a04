"""The options the edge commands share, the password prompt, and the one command class that lets
an argument be a negative number."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

HOME = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CTGTP_EDGE_HOME",
    default=Path("edge-home"),
    show_default=True,
    help="The unit's state directory (env CTGTP_EDGE_HOME).",
)
BATCH = click.option("--batch", "batch_id", required=True, help="Batch id.")
USER = click.option("--user", "user_id", required=True, help="Your user id.")
PW_STDIN = click.option(
    "--password-stdin", is_flag=True, help="Read the password from one line of standard input."
)
JSON_META = "edge.json"  # ctx.meta key: the command was asked for --json


def _json_flag(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta[JSON_META] = value  # meta is shared by the whole context chain (errors read it)
    return value


JSON = click.option(
    "--json",
    "as_json",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_json_flag,
    help="Print the outcome as one JSON object (a refusal: a JSON object on stderr).",
)


def on_batch(command: F) -> F:
    """``--home``, ``--batch``, ``--user`` and ``--json``: the options of an action on a batch."""
    for option in (JSON, USER, BATCH, HOME):  # the innermost first, so --help lists HOME first
        command = option(command)
    return command


def password(from_stdin: bool) -> str:
    """One password: a line of standard input with ``--password-stdin``, else a hidden prompt
    (never the command line, where it would stay in the shell's history)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True))


_NEGATIVE_NUMBER = re.compile(r"-(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class NumberArguments(click.Command):
    """A command whose arguments may be negative numbers: ``value ... end_temperature -90 Cel``.

    Click takes any word starting with ``-`` for an option, so ``-90`` was refused as an unknown
    option.  Here the words are sorted before Click parses them: options (with the value each
    takes) first, then ``--``, then the arguments in their order, so a negative number is an
    argument and a misspelt option is still refused as one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {
            opt
            for p in self.get_params(ctx)
            if isinstance(p, click.Option) and not p.is_flag and not p.count
            for opt in (*p.opts, *p.secondary_opts)
        }
        options: list[str] = []
        arguments: list[str] = []
        words = iter(args)
        for word in words:
            if word == "--":
                arguments.extend(words)
                break
            if word.startswith("-") and not _NEGATIVE_NUMBER.fullmatch(word):
                options.append(word)
                value = next(words, None) if word in takes_value else None
                if value is not None:  # the option's value, whatever it looks like
                    options.append(value)
                continue
            arguments.append(word)
        return super().parse_args(ctx, [*options, "--", *arguments])
