"""JSON from clients, read without letting it exhaust the stack or make answers
invalid (extension messages, awareness states, HTTP bodies)."""

from __future__ import annotations

import json
import re
from typing import Any

#: nesting depth of a JSON value from a client (extension messages, HTTP bodies)
MAX_JSON_DEPTH = 32
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays/objects in `text`, counted without parsing it (so
    without recursion: ``json.loads`` of 100,000 ``[`` raises RecursionError)."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRINGS.sub("", text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_bounded(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses (ValueError) what a stricter peer would choke on:
    nesting deeper than `max_depth`, NaN and Infinity (not JSON: echoed back they make
    the answer invalid JSON), integers too long to convert (Python's limit)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"JSON nested {depth} deep, over the limit of {max_depth}")
    return json.loads(text, parse_constant=_no_constant)


__all__ = ["MAX_JSON_DEPTH", "json_depth", "loads_bounded"]
