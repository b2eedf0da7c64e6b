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

from palimpsest import client

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


async def test_an_undo_group_opened_on_one_process_goes_on_on_another(tmp_path: Path) -> None:
    """A bot streams inside an explicit undo group, with pauses past UNDO_CAPTURE_MS, on
    one process, reconnects to another and opens the group again by its id there: every
    process reads the group from the log (its marks), so the answer is one step, undone
    at once on the first process; alice's word typed inside it stays."""
    async with (
        fresh_schema() as store_url,
        cluster(
            tmp_path, 2, store_url=store_url, fanout=fanout_url(),
            env={"PALIMPSEST_UNDO_CAPTURE_MS": "50"},
        ) as c,
        httpx.AsyncClient(timeout=30) as http,
    ):  # fmt: skip
        a, b = (p.http_url for p in c.procs)
        async with client.connect(c.ws(1), "grp", user="alice") as alice:
            alice.text().insert(0, "[AI]")
            await alice.flush()
            async with client.connect(c.ws(0), "grp", user="bot") as bot:
                await bot.wait_for(lambda: "[AI]" in str(bot.text()))
                opened = await bot.open_group("answer-1")
                for i in range(5):
                    bot.text().insert(len(bot.text()), f"one{i} ")
                    await bot.flush()
                    await asyncio.sleep(0.1)  # twice UNDO_CAPTURE_MS
            await alice.wait_for(lambda: "one4 " in str(alice.text()))
            alice.text().insert(len(alice.text()), "ALICE ")
            await alice.flush()
            async with client.connect(c.ws(1), "grp", user="bot") as bot:
                await bot.wait_for(lambda: "ALICE" in str(bot.text()))
                assert (await bot.open_group(opened.group)).ok  # its step goes on
                for i in range(5):
                    bot.text().insert(len(bot.text()), f"two{i} ")
                    await bot.flush()
                    await asyncio.sleep(0.1)
                closed = await bot.close_group(group=opened.group)
                assert closed.ok and closed.steps == 1, closed
            r = await http.post(f"{a}/api/docs/grp/undo", params={"user": "bot"})
            assert r.status_code == 200, r.text
            await alice.wait_for(lambda: str(alice.text()) == "[AI]ALICE ")
            r = await http.post(f"{b}/api/docs/grp/undo", params={"user": "bot"})
            assert r.status_code == 409, r.text  # nothing left: it was one step


async def test_writes_to_user_data_alone_are_no_step_on_any_process(tmp_path: Path) -> None:
    """A Y.PermanentUserData-like ``users`` map written on one process: a write there
    alone (a reloaded tab's new client id) between an undo and a redo made on the other
    process keeps the redo, and the undo that follows it on the first process passes it
    over: every process tells bookkeeping from the log alike."""
    from pycrdt import Array, Map

    async with (
        fresh_schema() as store_url,
        cluster(
            tmp_path, 2, store_url=store_url, fanout=fanout_url(),
            env={"PALIMPSEST_UNDO_CAPTURE_MS": "0"},
        ) as c,
        httpx.AsyncClient(timeout=30) as http,
    ):  # fmt: skip
        a, b = (p.http_url for p in c.procs)
        async with client.connect(c.ws(0), "pudscale", user="alice") as alice:
            users = alice.doc.get("users", type=Map)
            with alice.doc.transaction():
                users["alice"] = Map({"ids": Array([alice.doc.client_id]), "ds": Array()})
            await alice.flush()
            alice.text().insert(0, "hello")
            await alice.flush()
            r = await http.post(f"{b}/api/docs/pudscale/undo", params={"user": "alice"})
            assert r.status_code == 200, r.text
            await alice.wait_for(lambda: str(alice.text()) == "")
            users["alice"]["ids"].append(12345)  # the reloaded tab's client id, alone
            await alice.flush()
            r = await http.post(f"{b}/api/docs/pudscale/redo", params={"user": "alice"})
            assert r.status_code == 200, r.text
            await alice.wait_for(lambda: str(alice.text()) == "hello")
            r = await http.post(f"{a}/api/docs/pudscale/undo", params={"user": "alice"})
            assert r.status_code == 200, r.text
            await alice.wait_for(lambda: str(alice.text()) == "")
            r = await http.post(f"{a}/api/docs/pudscale/undo", params={"user": "alice"})
            assert (r.status_code, r.json()) == (409, {"ok": False, "reason": "nothing to undo"})
