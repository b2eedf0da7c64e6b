"""JSON from clients, read without letting it exhaust the stack or make answers
invalid (extension messages, awareness states, HTTP bodies)."""

from __future__ import annotations

import json
import re
import sys
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


def _finite(text: str) -> float:
    """A JSON number as a float, refused when it overflows (1e400 read as inf, echoed
    back as Infinity, which JSON.parse throws on)."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:24]} is too large a number")
    return value


def _int(text: str) -> int:
    """A JSON integer, refused in our words when it is longer than Python converts (its
    own error told a client to call ``sys.set_int_max_str_digits()``)."""
    digits = len(text) - text.startswith("-")
    limit = sys.get_int_max_str_digits()
    if limit and digits > limit:
        raise ValueError(f"a number of {digits} digits is too long (at most {limit})")
    return int(text)


#: a \\u escape of a UTF-16 surrogate: only such an escape puts one in a JSON string
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: Any) -> bool:
    """Whether a string in `value` (keys too) holds a surrogate on its own."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


def loads_bounded(
    text: str | bytes, max_depth: int = MAX_JSON_DEPTH, *, text_only: bool = False
) -> Any:
    """``json.loads`` that refuses (ValueError) what a stricter peer would choke on:
    nesting deeper than `max_depth`, NaN and Infinity, and numbers too large for a float
    (not JSON, or read as infinity: echoed back they make the answer invalid JSON),
    integers too long to convert (Python's limit).
    `text_only`: strings with a lone surrogate (``"\\ud800"``, which JSON allows but no
    UTF-8 text holds) are refused too: an HTTP body's text goes into a document, a tag
    name into the store, and either failed there with a 500."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"JSON nested {depth} deep, over the limit of {max_depth}")
    value = json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_int)
    if text_only and _SURROGATE_ESCAPE.search(text) and _lone_surrogate(value):
        raise ValueError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), not text")
    return value


__all__ = ["MAX_JSON_DEPTH", "json_depth", "loads_bounded"]
