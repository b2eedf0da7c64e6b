"""Undo on one process while its user types on another (PostgreSQL + Redis): server
changes take the document's turn, edits do not, so the user's keystrokes logged by the
other process between the undo's read of the log and its append join the step it
reverts. The undo still reverts the whole step, and every process keeps the user's
other steps (an undo reverting part of a step emptied the user's stacks everywhere)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually
from scaleout import cluster, fanout_url, fresh_schema, open_store
from yclient import YClient, connect

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def keep_typing(ann: YClient, stop: asyncio.Event) -> None:
    while not stop.is_set():
        ann.insert(len(ann.content), "x")
        await asyncio.sleep(0.01)


def the_step(events: list[Any], before: int) -> list[int]:
    """ann's edits since her last closed step, logged before seq `before`."""
    step: list[int] = []
    for e in events:
        if e.seq >= before:
            break
        if e.kind == "undo_mark":
            step = []
        elif e.actor == "ann" and e.kind == "edit":
            step.append(e.seq)
    return step


async def test_an_undo_made_while_its_user_types_on_another_process_reverts_the_whole_step(
    tmp_path: Path,
) -> None:
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
        httpx.AsyncClient(timeout=30) as http,
        open_store(store_url) as store,
    ):
        a, b = (p.http_url for p in c.procs)
        raced = False
        for attempt in range(20):
            doc = f"typing{attempt}"
            async with connect(c.ws(0), doc, user="ann") as ann:
                for word in ("one ", "two "):
                    ann.insert(len(ann.content), word)
                    assert (await ann.request({"type": "close_group"}))["ok"]
                stop = asyncio.Event()
                typing = asyncio.create_task(keep_typing(ann, stop))
                try:
                    await eventually(lambda: ann.content.count("x") >= 10)
                    r = await http.post(f"{b}/api/docs/{doc}/undo?user=ann")
                    assert r.status_code == 200, r.text
                finally:
                    stop.set()
                    with contextlib.suppress(asyncio.CancelledError):
                        await typing
                events = await store.read(doc)
                first = next(e for e in events if e.kind == "undo")
                reverted = set(first.meta["reverts"])
                for e in events:
                    if e.kind == "undo" and e.meta.get("completes") == first.seq:
                        reverted |= set(e.meta["reverts"])
                step = the_step(events, first.seq)
                raced = raced or max(step) > max(first.meta["reverts"])
                assert set(step) <= reverted, (step, first.meta, c.logs())
                # every step of ann's is still on her stacks, on both processes
                for i in range(6):
                    r = await http.post(f"{(a, b)[i % 2]}/api/docs/{doc}/undo?user=ann")
                    if r.status_code == 409:
                        break
                    assert r.status_code == 200, r.text
                await eventually(lambda: ann.content == "", what=f"all undone: {ann.content!r}")
            if raced:
                break
        assert raced, "ann's edits never came between an undo's read of the log and its append"
        assert "not on ann's stack" not in c.logs()
