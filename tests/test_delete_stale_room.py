"""A room that holds a document whose log was deleted under it (loaded from the log while
the deletion ran, or on a process the deletion's message never reached) must not make
the document again: its next commit is refused in the store's transaction (the append's
floor, the room's seq, is above the head of the emptied log), nothing is written, its
connections are closed with 4404 and the deletion's reason, and an HTTP caller gets 410
`Deleted`. It used to land at seq 1 of the empty log: the document came back with one
event of the deleted one (CI: the page's close_group, an undo_mark).

On SQLite and PostgreSQL; and two processes on one PostgreSQL log, where a room behind
the log's head (the other process wrote since) still commits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually, free_port, run_server
from scaleout import fanout_url, fresh_schema
from yclient import YClient, connect

from palimpsest.backend import Backend
from palimpsest.deletion import tombstone_for
from palimpsest.settings import Settings
from palimpsest.store import open_store
from palimpsest.store.base import Event, EventStore, NewEvent
from palimpsest.store.postgres import PostgresStore
from palimpsest.store.sqlite import SQLiteStore

STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
ROOT = {"user": "root"}


@contextlib.asynccontextmanager
async def store_settings(kind: str, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings of a server on a fresh store of `kind` (undo steps end at once)."""
    base: dict[str, Any] = {"port": free_port(), "unload_after_seconds": 0.3}
    if kind == "sqlite":
        yield Settings(db=str(tmp_path / "db"), undo_capture_ms=0, **base)
        return
    async with fresh_schema() as url:
        yield Settings(store=url, undo_capture_ms=0, **base)


async def closed_deleted(*clients: YClient) -> None:
    await eventually(
        lambda: all(
            c.close_code == 4404 and "was deleted" in (c.close_reason or "") for c in clients
        ),
        what=f"closed with 4404, deleted: {[(c.close_code, c.close_reason) for c in clients]}",
    )


async def typed(srv: RunningServer, c: YClient, doc: str, text: str) -> None:
    room = srv.backend.rooms.get_loaded(doc)
    assert room is not None
    before = room.seq
    c.insert(len(c.content), text)
    await eventually(lambda: room.seq > before, what=f"{text!r} logged")


def deleted_answer(r: httpx.Response) -> None:
    assert r.status_code == 410, r.text
    assert r.json()["error"] == "Deleted" and "was deleted" in r.json()["detail"], r.text


async def the_name_is_deleted(srv: RunningServer, http: httpx.AsyncClient, doc: str) -> None:
    """Nothing of the document in the store, its tombstone kept (410), and the name
    starts a new, empty document."""
    store = srv.backend.store
    assert await store.doc_info(doc) is None, await store.read(doc)
    assert await store.head(doc) == 0
    assert await store.tombstone(doc)
    deleted_answer(await http.get(f"{srv.url}/api/docs/{doc}/events", params=ROOT))
    await eventually(
        lambda: (
            srv.backend.rooms.get_loaded(doc) is None or srv.backend.rooms.get_loaded(doc).seq == 0
        ),  # type: ignore[union-attr]
        what="the stale room is dropped",
    )
    async with connect(srv.ws_url, doc, "bob") as b:
        assert b.content == ""
        await typed(srv, b, doc, "fresh")
    assert [(e.seq, e.actor) for e in await store.read(doc)] == [(1, "bob")]


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("how", ["close_group", "put_text", "edit"])
async def test_a_room_whose_log_was_deleted_under_it_writes_nothing(
    tmp_path: Path, kind: str, how: str
) -> None:
    """The state the race leaves: a room loaded with the old document (seq 3), and the
    store's log of it deleted (the tombstone written). Then the room commits: the
    page's close_group over HTTP, a PUT of the text, or a client's edit."""
    async with (
        store_settings(kind, tmp_path) as settings,
        run_server(settings) as srv,
        httpx.AsyncClient() as http,
    ):
        ann_q = {"user": "ann"}
        async with connect(srv.ws_url, "d", "ann") as a:
            await typed(srv, a, "d", "old ")
            r = await http.post(
                f"{srv.url}/api/docs/d/undo/open", params=ann_q, json={"group": "g"}
            )
            assert r.status_code == 200, r.text
            await typed(srv, a, "d", "text")
            room = srv.backend.rooms.get_loaded("d")
            assert room is not None and room.seq == 3
            store = srv.backend.store
            assert await store.delete_doc("d", await tombstone_for(store, "d", room), by="root")
            assert srv.backend.rooms.get_loaded("d") is room  # nobody told it

            if how == "close_group":
                r = await http.post(
                    f"{srv.url}/api/docs/d/undo/close", params=ann_q, json={"group": "g"}
                )
                deleted_answer(r)
            elif how == "put_text":
                r = await http.put(
                    f"{srv.url}/api/docs/d/text",
                    params=ann_q,
                    json={"text": "overwritten", "root": "content"},
                )
                deleted_answer(r)
            else:
                a.insert(0, "more ")
            await closed_deleted(a)
        await the_name_is_deleted(srv, http, "d")


class Gated:
    """Fault injection around a real store, to run the race's interleaving for real: the
    deletion's write waits while `deleting` is closed (after the deletion dropped the
    room, before the log is deleted: where a connection loads the old document again),
    and appends of the document wait while `appending` is closed."""

    doc = "race"

    def gates(self) -> None:
        self.deleting = asyncio.Event()
        self.appending = asyncio.Event()
        self.deleting.set()
        self.appending.set()
        self.held = 0

    async def delete_doc(self, doc: str, tombstone: bytes = b"", *, by: str = "") -> bool:
        await self.deleting.wait()
        return await super().delete_doc(doc, tombstone, by=by)  # type: ignore[misc,no-any-return]

    async def append(
        self, batches: Sequence[tuple[str, Sequence[NewEvent]]], **floors: Any
    ) -> list[list[Event]]:
        if any(doc == self.doc and evs for doc, evs in batches):
            self.held += 1
            await self.appending.wait()
        return await super().append(batches, **floors)  # type: ignore[misc,no-any-return]


class GatedSQLite(Gated, SQLiteStore):
    pass


class GatedPostgres(Gated, PostgresStore):
    pass


def gated_store(settings: Settings) -> Gated:
    url = settings.store_url
    store: Gated
    if url.startswith("postgresql://"):
        store = GatedPostgres(url)
    else:
        store = GatedSQLite(Path(settings.db))
    store.gates()
    return store


@pytest.mark.parametrize("kind", STORES)
async def test_a_close_group_that_raced_the_deletion_does_not_bring_the_document_back(
    tmp_path: Path, kind: str
) -> None:
    """The interleaving CI met, driven step by step on the real server: DELETE drops the
    room; before it deletes the log a connection loads the old document again; the
    page's close_group queues its undo_mark there; the log is deleted; the deletion
    drops that room too, which commits what it had queued: refused, not logged at seq
    1. The DELETE answers 200, the close_group 410, the second connection 4404."""
    async with store_settings(kind, tmp_path) as settings:
        store = gated_store(settings)
        backend = Backend(settings, store=store)  # type: ignore[arg-type]
        async with run_server(settings, backend) as srv, httpx.AsyncClient() as http:
            ann_q = {"user": "ann"}
            async with connect(srv.ws_url, "race", "ann") as a:
                await typed(srv, a, "race", "old ")
                r = await http.post(
                    f"{srv.url}/api/docs/race/undo/open", params=ann_q, json={"group": "g"}
                )
                assert r.status_code == 200, r.text
                await typed(srv, a, "race", "text")
                store.deleting.clear()
                deleting = asyncio.create_task(http.delete(f"{srv.url}/api/docs/race", params=ROOT))
                await closed_deleted(a)  # the room is dropped first
            await eventually(lambda: srv.backend.rooms.get_loaded("race") is None)
            assert await srv.backend.store.head("race") == 3  # not deleted yet
            try:
                async with connect(srv.ws_url, "race", "carl") as c:  # loads the old one
                    assert c.content == "old text"
                    store.appending.clear()
                    store.held = 0
                    closing = asyncio.create_task(
                        http.post(
                            f"{srv.url}/api/docs/race/undo/close", params=ann_q,
                            json={"group": "g"},
                        )
                    )  # fmt: skip
                    await eventually(lambda: store.held == 1, what="the mark's append waits")
                    store.deleting.set()
                    await eventually(
                        _head_is(srv.backend.store, "race", 0), what="the log is deleted"
                    )
                    store.appending.set()
                    r = await deleting
                    assert r.status_code == 200, r.text
                    deleted_answer(await closing)
                    await closed_deleted(c)
            finally:
                store.deleting.set()
                store.appending.set()
            await the_name_is_deleted(srv, http, "race")


def _head_is(store: EventStore, doc: str, head: int) -> Any:
    async def check() -> bool:
        return await store.head(doc) == head

    return check


@pytest.mark.postgres
async def test_a_room_behind_the_head_another_process_wrote_still_commits(
    tmp_path: Path,
) -> None:
    """Two servers on one PostgreSQL log whose fan-out messages never reach each other
    (two buses; their gap checks an hour away): one's room lags the head the other
    advanced. Its append's floor (its seq) is below that head, which is no deletion: it
    commits after the other's events, and nobody is closed."""
    async with fresh_schema() as url:
        one, two = (
            Settings(store=url, fanout=fanout_url(check=3600), port=free_port(),
                     instance=f"lag-{i}", undo_capture_ms=0)
            for i in (1, 2)
        )  # fmt: skip
        async with (
            run_server(one) as s1,
            run_server(two) as s2,
            httpx.AsyncClient() as http,
            open_store(url) as store,
        ):
            async with connect(s1.ws_url, "lag", "ann") as a:
                await typed(s1, a, "lag", "ann ")
                async with connect(s2.ws_url, "lag", "bob") as b:
                    for word in ("bob ", "was ", "here "):
                        await typed(s2, b, "lag", word)
                room = s1.backend.rooms.get_loaded("lag")
                assert room is not None and room.seq == 1  # behind: nobody told it
                assert await store.head("lag") == 4
                # a server change and a client edit from the lagging room
                r = await http.post(
                    f"{s1.url}/api/docs/lag/undo/open", params={"user": "ann"},
                    json={"group": "g"},
                )  # fmt: skip
                assert r.status_code == 200 and r.json()["seq"] == 5, r.text
                await eventually(lambda: a.content == "ann bob was here ", what="caught up")
                await typed(s1, a, "lag", "again")
                assert a.close_code is None
                assert room.seq == 6 and s1.backend.rooms.get_loaded("lag") is room
                assert a.content == "ann bob was here again"
            events = await store.read("lag")
            assert [(e.seq, e.actor) for e in events] == [
                (1, "ann"), (2, "bob"), (3, "bob"), (4, "bob"), (5, "ann"), (6, "ann")]  # fmt: skip


@pytest.mark.postgres
async def test_a_process_that_never_heard_of_the_deletion_writes_nothing(
    tmp_path: Path,
) -> None:
    """Two servers on one PostgreSQL log whose fan-out messages never reach each other:
    DELETE on one, then an edit and a close_group on the other's stale room. The store
    refuses both; the document stays deleted on both."""
    async with fresh_schema() as url:
        one, two = (
            Settings(store=url, fanout=fanout_url(check=3600), port=free_port(),
                     instance=f"gone-{i}", undo_capture_ms=0)
            for i in (1, 2)
        )  # fmt: skip
        async with (
            run_server(one) as s1,
            run_server(two) as s2,
            httpx.AsyncClient() as http,
            connect(s1.ws_url, "gone", "ann") as a,
        ):
            await typed(s1, a, "gone", "old ")
            r = await http.post(
                f"{s1.url}/api/docs/gone/undo/open", params={"user": "ann"},
                json={"group": "g"},
            )  # fmt: skip
            assert r.status_code == 200, r.text
            await typed(s1, a, "gone", "text")
            r = await http.delete(f"{s2.url}/api/docs/gone", params=ROOT)
            assert r.json() == {"doc": "gone", "deleted": True, "closed": 0}, r.text
            assert s1.backend.rooms.get_loaded("gone") is not None  # never told
            r = await http.post(
                f"{s1.url}/api/docs/gone/undo/close", params={"user": "ann"},
                json={"group": "g"},
            )  # fmt: skip
            deleted_answer(r)
            await closed_deleted(a)
            deleted_answer(await http.get(f"{s2.url}/api/docs/gone/events", params=ROOT))
            await the_name_is_deleted(s1, http, "gone")


@pytest.mark.parametrize("kind", STORES)
async def test_a_room_whose_log_was_deleted_under_it_writes_no_snapshot(
    tmp_path: Path, kind: str
) -> None:
    """The room of the race (seq 3, its log deleted under it) writes its periodic
    snapshot, then its unload's, before any commit of it is refused: the store wrote
    them under the deleted name (put_snapshot checked the compaction base only, and a
    document with no row has none to differ), and the next load of the name started
    from the deleted text. The store refuses them in the write's transaction: the
    document's head (0: no row) is below the snapshot's seq."""
    async with (
        store_settings(kind, tmp_path) as settings,
        run_server(settings) as srv,
        httpx.AsyncClient() as http,
    ):
        store = srv.backend.store
        async with connect(srv.ws_url, "d", "ann") as a:
            await typed(srv, a, "d", "old ")
            await typed(srv, a, "d", "text")
            room = srv.backend.rooms.get_loaded("d")
            assert room is not None and room.seq == 2
            assert await store.delete_doc("d", await tombstone_for(store, "d", room), by="root")
            assert srv.backend.rooms.get_loaded("d") is room  # nobody told it
            task = srv.backend.snapshots.take(room)
            assert task is not None
            await task
            assert await store.snapshots("d") == []
        # the last connection gone, the room unloads (and writes its snapshot)
        await eventually(lambda: srv.backend.rooms.get_loaded("d") is None, what="unloaded")
        assert await store.snapshots("d") == []
        assert await store.latest_snapshot("d") is None
        await the_name_is_deleted(srv, http, "d")


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("how", ["close_group", "edit"])
@pytest.mark.parametrize("made_by", ["room", "store"])
async def test_a_stale_room_is_refused_by_a_new_document_already_past_its_seq(
    tmp_path: Path, kind: str, how: str, made_by: str
) -> None:
    """The case floors cannot tell: the room's document (at seq N) deleted under it, and
    a new document of the name (another process's, or the store's own writer) already
    at N + 1. The room's commit passed the floor and landed in the new document.
    The room remembers the generation it loaded (read with the head before its load;
    or, when its first append made the document, learnt after it) and the store
    refuses a batch whose document is another generation: 410 / 4404, and the new
    document holds only its own events."""
    async with (
        store_settings(kind, tmp_path) as settings,
        run_server(settings) as srv,
        httpx.AsyncClient() as http,
    ):
        ann_q = {"user": "ann"}
        store = srv.backend.store
        blank = NewEvent("zed", "edit", b"\x00\x00", {}, 1)
        if made_by == "store":
            await store.append([("d", [blank])])
        async with connect(srv.ws_url, "d", "ann") as a:
            await typed(srv, a, "d", "old ")
            r = await http.post(
                f"{srv.url}/api/docs/d/undo/open", params=ann_q, json={"group": "g"}
            )
            assert r.status_code == 200, r.text
            room = srv.backend.rooms.get_loaded("d")
            assert room is not None and room.seq == (2 if made_by == "room" else 3)
            old = await store.doc_info("d")
            assert old is not None and old.generation is not None
            # (read before the load, or learnt in a task of the room's after its first
            # append)
            await eventually(lambda: room.generation == old.generation, what="learnt")
            assert await store.delete_doc("d", await tombstone_for(store, "d", room), by="root")
            past = room.seq + 1
            await store.append([("d", [blank] * past)])
            new = await store.doc_info("d")
            assert new is not None and new.head == past and new.generation != old.generation
            assert srv.backend.rooms.get_loaded("d") is room  # nobody told it
            if how == "close_group":
                r = await http.post(
                    f"{srv.url}/api/docs/d/undo/close", params=ann_q, json={"group": "g"}
                )
                deleted_answer(r)
            else:
                a.insert(0, "more ")
            await closed_deleted(a)
        assert [(e.seq, e.actor) for e in await store.read("d")] == [
            (i, "zed") for i in range(1, past + 1)
        ]
        info = await store.doc_info("d")
        assert info is not None and info.generation == new.generation
