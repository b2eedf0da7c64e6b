"""A long text's blame and diff, and the JSON of the answer, are made in slices: the
event loop turns while they are walked, so every other room keeps being served.

A book's blame (1.26 MB, a million runs) was walked in one piece on the loop, and its
5 MB of JSON encoded in one piece: two readers looping blame and diff put a typist in
another document at a p99 of 0.35-0.55 s (docs/history.md). The checks count the
loop's turns with a slice of no time (every pause a turn), never time."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from conftest import RunningServer
from pycrdt import Doc, Text

from palimpsest.backend import Backend
from palimpsest.history import attribution, history_of
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent

WORDS = 12_000
WRITERS = ("ann", "bob", "cy")


def typed_words(words: int, writers: tuple[str, ...] = WRITERS) -> tuple[list[NewEvent], str]:
    """A word per event, `writers` taking turns: a run per word (with three)."""
    d: Doc[Any] = Doc(client_id=7)
    t = d.get("content", type=Text)
    updates: list[bytes] = []
    sub = d.observe(lambda e: updates.append(e.update))
    for i in range(words):
        t += f"w{i} "
    d.unobserve(sub)
    events = [NewEvent(writers[i % len(writers)], "edit", u, {}, 1_700_000_000_000 + i)
              for i, u in enumerate(updates)]  # fmt: skip
    return events, str(t)


async def _turns_while(coro: Any) -> tuple[int, Any]:
    """The loop's turns while `coro` runs (as a task of its own), and what it answers."""
    task = asyncio.ensure_future(coro)
    turns = 0
    while not task.done():
        turns += 1
        await asyncio.sleep(0)
    return turns, task.result()


async def test_a_long_blame_and_diff_give_the_loop_its_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In memory (no store read waits on a thread), a blame of 12,000 runs was one step
    of its task: no turn of the loop. Now the loop turns at least once every 256 runs,
    and the answers are the index's own (walked in one piece)."""
    monkeypatch.setattr(attribution, "SLICE_SECONDS", 0.0)
    events, text = typed_words(WORDS)
    async with Backend(Settings(store="memory://")) as backend:
        await backend.store.append([("long", events)])
        h = history_of(backend)
        info = await h.info("long")
        first = await h.blame("long", info.head, info, None)  # builds the index
        index = h.attribution.peek("long")
        assert index is not None
        assert first["roots"]["content"]["runs"] == index.blame("content", info.head)

        turns, blamed = await _turns_while(h.blame("long", info.head, info, None))
        runs = blamed["roots"]["content"]["runs"]
        assert "".join(r["text"] for r in runs) == text
        assert [r["actor"] for r in runs] == [WRITERS[i % 3] for i in range(WORDS)]
        assert turns >= WORDS // 256, turns

        a = info.head // 2
        turns, diffed = await _turns_while(h.diff("long", a, info.head, info, None))
        ops = diffed["roots"]["content"]["ops"]
        assert ops == index.diff("content", a, info.head)
        assert ops[0]["op"] == "equal" and len(ops) == 1 + WORDS - a
        assert turns >= (WORDS - a) // 256, turns


async def test_the_json_of_a_long_answer_is_what_json_dumps_makes(
    server: RunningServer,
) -> None:
    """Blame and diff over HTTP: the body, encoded in slices, is byte for byte the one
    Starlette's JSONResponse made in one piece (compact, UTF-8), with its type."""
    events, text = typed_words(3000)
    events[5] = NewEvent("ünï", "edit", events[5].update, {}, events[5].ts)  # (not ASCII)
    await server.backend.store.append([("long", events)])
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for path, params in (("blame", {}), ("diff", {"from": "100"}), ("blame", {"seq": "7"})):
            r = await http.get(f"/api/docs/long/{path}", params=params)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/json"
            answer = r.json()
            assert r.content == json.dumps(answer, ensure_ascii=False, allow_nan=False,
                                           separators=(",", ":")).encode()  # fmt: skip
        runs = answer["roots"]["content"]["runs"]
        assert "".join(x["text"] for x in runs) == "w0 w1 w2 w3 w4 w5 w6 "
        assert runs[5]["actor"] == "ünï"
        r = await http.get("/api/docs/long/blame")
        assert "".join(x["text"] for x in r.json()["roots"]["content"]["runs"]) == text
