"""A live compaction (``POST /api/docs/{doc}/compact``) folds the document's events in a
worker thread: every other document's edits and requests go on meanwhile.

A field tester's 1 MB book of 260,000 events on SQLite: compacting 200,000 of them held
the whole server 24 s (the events were replayed, with the undo stacks and the owners
recorded, on the event loop), a listing of the documents waiting 4.6-17 s behind it.
The check holds the fold at its first event (in whichever thread it runs) until another
document's edit has come back and a request has been answered: order, never time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PG_URL, RunningServer, eventually, run_server
from test_history_sliced import typed_words
from yclient import connect

from palimpsest.settings import Settings
from palimpsest.store.base import Event
from palimpsest.undo.recorder import RoomUndo

EVENTS = 3000


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningServer]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'compact.db'}"
        async with run_server(Settings(store=url)) as srv:
            yield srv
        return
    from scaleout import fresh_schema

    async with fresh_schema(PG_URL) as url, run_server(Settings(store=url)) as srv:
        yield srv


async def test_other_documents_are_served_while_a_compaction_folds(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, text = typed_words(EVENTS, ("ann", "bob"))
    await server.backend.store.append([("big", events)])
    loop_thread = threading.get_ident()
    started, release = threading.Event(), threading.Event()
    seen: dict[str, Any] = {"folded": 0, "threads": set()}
    record = RoomUndo.record

    def spy(self: RoomUndo, ev: Event, ins: Any, dels: Any) -> None:
        if self.room.name == "big":  # the fold's own room (the other document's is live)
            seen["threads"].add(threading.get_ident())
            if not started.is_set():
                started.set()
                # held here until the other document was served; on the loop's thread
                # nothing could be served while it waits, so it does not wait there
                if threading.get_ident() != loop_thread:
                    release.wait(60)
            seen["folded"] += 1
        record(self, ev, ins, dels)

    monkeypatch.setattr(RoomUndo, "record", spy)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
        connect(server.ws_url, "other", "cy") as cy,
        connect(server.ws_url, "other", "dee") as dee,
    ):
        try:
            compaction = asyncio.ensure_future(
                http.post("/api/docs/big/compact", json={"before": EVENTS - 10})
            )
            await eventually(started.is_set, what="the fold began")
            # another document's edit makes its round trip, and a request is answered
            cy.insert(0, "meanwhile")
            await eventually(lambda: dee.content == "meanwhile", what="dee has cy's edit")
            listed = await http.get("/api/docs")
            assert listed.status_code == 200
            assert not compaction.done()
            folded_meanwhile = seen["folded"]
        finally:
            release.set()
        r = await compaction
    assert r.status_code == 200, r.text
    assert r.json()["removed"] == EVENTS - 10
    assert loop_thread not in seen["threads"], "the events were folded on the event loop"
    assert folded_meanwhile == 0, f"{folded_meanwhile} events folded before the edit came back"
    assert seen["folded"] == EVENTS - 10
    assert {d["doc"] for d in listed.json()["docs"]} >= {"big", "other"}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        got = (await http.get("/api/docs/big/versions/head")).json()
    assert got["roots"]["content"]["value"] == text
