"""Write-ahead on SQLite, deterministically: another connection holds the database's write
lock, so the server's commit of an edit waits on the real file; while it waits nobody may
see the edit (a connected observer, a newcomer's sync step 2, another process's /events,
a plain reader of the file); once the lock is released, everybody does. Plus the
durability pragmas of the store's writer connection."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually, free_port, run_server
from scaleout import fanout_url
from serverproc import ServerProcess
from yclient import connect

from palimpsest import protocol as P
from palimpsest.settings import Settings
from palimpsest.store.base import Event, NewEvent
from palimpsest.store.sqlite import SQLiteStore
from palimpsest.store.sqlite import events_in_file as read_file_events

SECRET = "not-durable-yet"


def events_in_file(db: Path, doc: str) -> int:
    return len(read_file_events(db, doc))


def awareness_marker(client_id: int, clock: int) -> bytes:
    state = json.dumps({"marker": clock})
    return P.encode_awareness(P.encode_awareness_entries([(client_id, clock, state)]))


def saw_marker(client: Any, clock: int) -> bool:
    for f in client.frames:
        if isinstance(f, P.AwarenessUpdate) and f'"marker": {clock}' in f.payload.decode(
            "utf-8", "replace"
        ):
            return True
    return False


@pytest.mark.redis
async def test_nobody_sees_an_edit_before_its_commit_returns(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    # another OS process serving the same file, with its own SQLite connection; several
    # servers on one SQLite file share a fan-out bus (server/serving_lock.py), so the
    # edit could also reach it that way, and must not before its commit returns either
    bus = fanout_url()
    settings = Settings(db=str(db), port=free_port(), unload_after_seconds=60, fanout=bus)
    elsewhere_server = ServerProcess(
        tmp_path / "elsewhere", db_path=db, extra_args=["--fanout", bus]
    )
    async with elsewhere_server as elsewhere, \
            run_server(settings) as server, \
            connect(server.ws_url, "wal", "ann") as ann, \
            connect(server.ws_url, "wal", "obs") as obs:  # fmt: skip
        store = server.backend.store
        assert isinstance(store, SQLiteStore)
        # a spy on the real append (it calls through): says when the commit is under way
        # and when it returned, so that "while it waits" is a fact, not a guess
        entered, returned = asyncio.Event(), asyncio.Event()
        real_append: Callable[..., Awaitable[list[list[Event]]]] = store.append

        async def append(batches: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[Event]]:
            mine = any(doc == "wal" and evs for doc, evs in batches)
            if mine:
                entered.set()
            out = await real_append(batches)
            if mine:
                returned.set()
            return out

        store.append = append  # type: ignore[method-assign]

        ann.insert(0, "before|")
        await eventually(lambda: obs.content == "before|", what="the first edit arrives")
        assert events_in_file(db, "wal") == 1
        assert entered.is_set() and returned.is_set()  # the spy sees the server's commits
        entered.clear()
        returned.clear()

        lock = sqlite3.connect(db, isolation_level=None, timeout=0)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the write lock: the server's BEGIN waits
            ann.insert(len(ann.content), SECRET)
            await asyncio.wait_for(entered.wait(), 10)
            assert not returned.is_set()

            # an observer: a marker sent after the commit began reaches it through the
            # same ordered queue an early broadcast of the edit would have used
            await ann.send_raw(awareness_marker(ann.doc.client_id, 1))
            await eventually(lambda: saw_marker(obs, 1), what="the observer gets the marker")
            assert obs.content == "before|"
            # a newcomer: its sync step 2 is the room's document, without the edit
            async with connect(server.ws_url, "wal", "newcomer") as newcomer:
                assert newcomer.content == "before|"
            # another process on the same file: its /events and a newcomer there
            async with httpx.AsyncClient(base_url=elsewhere.http_url) as http:
                r = await http.get("/api/docs/wal/events", params={"user": "x"})
                assert r.status_code == 200, r.text
                assert [e["seq"] for e in r.json()["events"]] == [1]
            async with connect(elsewhere.ws_url, "wal", "far") as far:
                assert far.content == "before|"
            # a plain reader of the file
            assert events_in_file(db, "wal") == 1
            assert not returned.is_set(), "the commit returned while the lock was held"
            assert obs.content == "before|"
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        await asyncio.wait_for(returned.wait(), 20)
        want = "before|" + SECRET
        await eventually(lambda: obs.content == want, what="the observer gets the edit")
        assert events_in_file(db, "wal") == 2
        async with connect(server.ws_url, "wal", "late") as late:
            assert late.content == want
        async with httpx.AsyncClient(base_url=elsewhere.http_url) as http:
            r = await http.get("/api/docs/wal/events", params={"user": "x"})
            assert [e["seq"] for e in r.json()["events"]] == [1, 2]
            assert r.json()["events"][1]["actor"] == "ann"


async def test_the_writer_connection_is_durable(settings: Settings) -> None:
    """synchronous=FULL in WAL mode: a commit is on disk (fsynced) when append returns.
    NORMAL would lose the last commits on power loss, OFF even on an OS crash."""
    async with run_server(settings) as server:
        store = server.backend.store
        assert isinstance(store, SQLiteStore)
        pragmas = await store.pragmas()
        assert pragmas["journal_mode"] == "wal", pragmas
        assert pragmas["synchronous"] == 2, pragmas  # FULL
