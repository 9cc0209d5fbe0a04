"""Canonical bytes: the one byte form every party hashes and signs.

JSON with keys sorted, no insignificant whitespace, UTF-8, and **no floats**: measured values are
decimal strings with a UCUM unit (see :mod:`ebr_core.quantity`), so no party ever rounds.  Integers
are limited to the signed 64-bit range so every JSON implementation reads them exactly.

orjson produces these bytes about six times faster than the standard library; the test suite
checks byte equality against :func:`reference_canonical`, the plain-stdlib definition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

from ebr_core.errors import CanonicalError

_OPTS = orjson.OPT_SORT_KEYS
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
# Containers nested in one value (the value itself is level 1).  Real records nest three or four
# levels (event, payload, quantity); 64 leaves room for any document and stays far below both
# Python's recursion limit and orjson's encoder limit (255).
MAX_DEPTH = 64

JSONValue = None | bool | int | str | list["JSONValue"] | dict[str, "JSONValue"]


def _ok(value: Any, depth: int = 2) -> bool:
    """Fast check, no messages (the hot path of building and verifying events).  ``depth`` is the
    nesting level of ``value`` (the default: a value inside a payload); a container deeper than
    :data:`MAX_DEPTH` fails."""
    t = type(value)
    if t is str or value is None or t is bool:
        return True
    if t is dict:
        if depth >= MAX_DEPTH:  # rare: no inlined level below, every child checked by a call
            return depth == MAX_DEPTH and all(
                type(k) is str and _ok(v, depth + 1) for k, v in value.items()
            )
        for k, v in value.items():
            if type(k) is not str:
                return False
            tv = type(v)
            if tv is str:
                continue
            if tv is dict:  # one level of nesting (quantities) without a call
                for k2, v2 in v.items():
                    if type(k2) is not str or (type(v2) is not str and not _ok(v2, depth + 2)):
                        return False
            elif not _ok(v, depth + 1):
                return False
        return True
    if t is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if t is list:
        return depth <= MAX_DEPTH and all(type(v) is str or _ok(v, depth + 1) for v in value)
    return False


_CONTAINERS = (dict, list)


def check_value(value: Any, path: str = "$") -> None:
    """Raise :class:`CanonicalError` if ``value`` holds anything but canonical JSON types."""
    if _ok(value, 1):
        return
    _explain(value, path, 1)


def _explain(value: Any, path: str, depth: int) -> None:
    t = type(value)
    if t is str or value is None or t is bool:
        return
    if (t is dict or t is list) and depth > MAX_DEPTH:
        raise CanonicalError(
            f"{path}: nested deeper than {MAX_DEPTH} levels (objects and arrays within one "
            "another); expected a flatter value"
        )
    if t is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise CanonicalError(f"{path}: integer {value} is outside the signed 64-bit range")
        return
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise CanonicalError(f"{path}: key {k!r} is not a string")
            _explain(v, f"{path}.{k}", depth + 1)
        return
    if t is list:
        for i, v in enumerate(value):
            _explain(v, f"{path}[{i}]", depth + 1)
        return
    if t is float:
        raise CanonicalError(
            f"{path}: float {value!r} is not allowed; expected a decimal string "
            '(e.g. {"value": "87.5", "unit": "%"})'
        )
    raise CanonicalError(f"{path}: {t.__name__} is not a JSON value")


def canonical(obj: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a JSON object that has already been checked with :func:`check_value`."""
    try:
        return orjson.dumps(obj, option=_OPTS)
    except TypeError as e:  # orjson raises its JSONEncodeError (a TypeError)
        raise CanonicalError(f"cannot encode canonically: {e}") from e


def canonical_checked(obj: Mapping[str, Any]) -> bytes:
    """Check the value, then return its canonical bytes."""
    check_value(obj)
    return canonical(obj)


def reference_canonical(obj: Mapping[str, Any]) -> bytes:
    """The same bytes, defined with the standard library only (used to test the fast path)."""
    check_value(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def depth(value: Any) -> int:
    """How deeply ``value`` nests objects and arrays (a scalar is 0, ``[]`` is 1), without
    recursion, so any parsed value can be measured."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        t = type(v)
        if t is dict:
            items = v.values()
        elif t is list:
            items = v
        else:
            continue
        deepest = max(deepest, d)
        stack.extend((x, d + 1) for x in items if type(x) in _CONTAINERS)
    return deepest
