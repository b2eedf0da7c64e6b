"""Long history answers made on the event loop in slices, so that every room keeps being
served meanwhile: a walk of the attribution index (blame, a text diff) and the JSON
encoding of what it answers.

Why slices and not a worker thread: the work is Python bytecode (the walk) or one long C
call that never lets go of the interpreter (``json.dumps``), and so are pycrdt's native
calls (measured: a 18 ms ``apply_update`` in a worker thread held the loop's thread for
all of its 18 ms). A worker thread would still hold the loop: for a whole
``json.dumps``, or up to the interpreter's switch interval (5 ms) at every one of the
loop's wake-ups. Walked in steps on the loop, a slice ends after about SLICE_SECONDS
and whatever else is ready (an edit's frame, a commit that finished) runs before the
next one. A book's blame (1.26 MB, a million runs) or diff answered 0.5-2 s in one
piece, the same time in slices of 1 ms (docs/history.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

from .. import cpu_account
from . import attribution
from .attribution import gc_paused

_R = TypeVar("_R")

#: list items encoded by one ``json.dumps`` call (~0.2-0.5 ms for a blame's runs)
JSON_STEP = 512
#: an answer smaller than this (items of its lists, added up) is encoded in one piece
JSON_WHOLE = 2048


async def walk(steps: Generator[None, None, _R]) -> _R:
    """What `steps` answers, walked in slices of about attribution.SLICE_SECONDS (the
    folds' slice, read at each call) with a turn of the
    event loop after each (the garbage collector paused within a slice, see gc_paused;
    the slices' CPU time charged to the task's account, if any)."""
    slice_seconds = attribution.SLICE_SECONDS
    try:
        while True:
            t0 = time.perf_counter()
            with cpu_account.on_loop(), gc_paused():
                try:
                    while True:
                        next(steps)
                        if time.perf_counter() - t0 >= slice_seconds:
                            break
                except StopIteration as e:
                    return e.value  # type: ignore[no-any-return]
            await asyncio.sleep(0)
    finally:
        steps.close()  # (cancelled: the request went away)


def _dumps(value: Any) -> str:
    """As Starlette's JSONResponse renders (compact, UTF-8, no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":"))  # fmt: skip


def _items(value: Any, limit: int) -> int:
    """Items of the lists in `value` (dicts' values looked into), counted up to `limit`."""
    n = 0
    stack = [value]
    while stack and n < limit:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            n += len(v)
            stack.extend(x for x in v[:limit] if isinstance(x, dict | list))
    return n


def _pieces(value: Any, parts: list[bytes]) -> Iterator[None]:
    """`value` as JSON into `parts` (UTF-8), a pause (a yield) after every JSON_STEP
    list items: the same bytes as one ``_dumps(value).encode()``."""
    if isinstance(value, dict) and all(type(k) is str for k in value):
        if _items(value, JSON_WHOLE) < JSON_WHOLE:
            parts.append(_dumps(value).encode())
            return
        parts.append(b"{")
        for i, (k, v) in enumerate(value.items()):
            parts.append((("," if i else "") + _dumps(k) + ":").encode())
            yield from _pieces(v, parts)
        parts.append(b"}")
    elif isinstance(value, list) and len(value) > JSON_STEP:
        parts.append(b"[")
        for i in range(0, len(value), JSON_STEP):
            chunk = _dumps(value[i : i + JSON_STEP])
            parts.append((("," if i else "") + chunk[1:-1]).encode())
            yield
        parts.append(b"]")
    else:
        parts.append(_dumps(value).encode())


def _encode_steps(value: Any) -> Generator[None, None, bytes]:
    parts: list[bytes] = []
    yield from _pieces(value, parts)
    return b"".join(parts)


async def json_bytes(value: Any) -> bytes:
    """`value` as Starlette's JSONResponse would send it, encoded in slices (a book's
    blame is 5 MB of JSON: ~0.15 s of one ``json.dumps`` call)."""
    return await walk(_encode_steps(value))


__all__ = ["JSON_STEP", "json_bytes", "walk"]
