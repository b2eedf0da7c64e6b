"""Limits against hostile clients that are not about tokens: rates, send-queue budgets and
JSON that cannot exhaust the stack. docs/security.md lists each with its threat.

Pure bookkeeping, no I/O: ``server.routes.ws`` and the HTTP guard call these."""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from collections.abc import Iterable
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


class Bucket:
    """A token bucket: `rate` per second, bursts of twice that. A cost may take it into
    debt (one large frame, or an undo that appended a lot); while in debt everything is
    refused, so the average stays at `rate`."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = 2 * rate
        self._last = now

    def _refill(self, now: float) -> None:
        self.tokens = min(2 * self.rate, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, cost: float, now: float) -> bool:
        """Spend `cost` unless the bucket is empty or in debt; False = over the rate."""
        if self.rate <= 0:
            return True
        self._refill(now)
        if self.tokens <= 0:
            return False
        self.tokens -= cost
        return True

    def charge(self, cost: float, now: float) -> None:
        """Spend `cost` after the fact (work done on the client's behalf)."""
        if self.rate > 0:
            self._refill(now)
            self.tokens -= cost


class Budget:
    """Bytes held per key (a client address, a document), each key bounded by its own
    limit. A connection reserves before queueing and releases when the bytes are sent."""

    def __init__(self) -> None:
        self.held: Counter[str] = Counter()

    def reserve(self, keys: Iterable[tuple[str, int]], n: int) -> str | None:
        """Reserve `n` bytes under every (key, limit); None when done, else the key that
        is over its limit (nothing reserved)."""
        pairs = list(keys)
        for key, limit in pairs:
            if self.held[key] + n > limit:
                return key
        for key, _ in pairs:
            self.held[key] += n
        return None

    def release(self, keys: Iterable[str], n: int) -> None:
        for key in keys:
            left = self.held[key] - n
            if left > 0:
                self.held[key] = left
            else:
                self.held.pop(key, None)


class CreationQuota:
    """New documents per identity in a sliding hour: a token granting ``*`` would
    otherwise let its holder create documents without end (each one a log, rows,
    snapshots). Counted in memory by this process."""

    WINDOW = 3600.0

    def __init__(self) -> None:
        self._made: dict[str, deque[tuple[float, str]]] = {}

    def allow(self, user: str, doc: str, limit: int, now: float) -> bool:
        """Count `doc` as created by `user`; False when that is over `limit` an hour."""
        if limit <= 0:
            return True
        made = self._made.setdefault(user, deque())
        while made and made[0][0] < now - self.WINDOW:
            made.popleft()
        if any(d == doc for _, d in made):
            return True
        if len(made) >= limit:
            return False
        made.append((now, doc))
        return True


__all__ = [
    "MAX_JSON_DEPTH",
    "Bucket",
    "Budget",
    "CreationQuota",
    "json_depth",
    "loads_bounded",
]
