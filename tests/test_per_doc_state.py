"""State the server keeps per document or per identity goes with it: many documents
made, unloaded and deleted, many identities creating documents, and what is kept for
them comes back to where it started (a process serving for months sees millions)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import PG_URL, closed_with, eventually, run_server
from pycrdt import Doc, Text
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest.auth.tokens import mint
from palimpsest.limits import CreationQuota, Limits
from palimpsest.settings import Settings
from palimpsest.snapshots import SnapshotPolicy
from palimpsest.store import NewEvent, open_store

SECRET = "per-doc-state-test-secret-of-32-bytes-or-more"


def policy_state(policy: SnapshotPolicy) -> dict[str, int]:
    return {
        "pruning": len(policy._pruning),
        "since_convert": len(policy._since_convert),
        "previous": len(policy._previous),
        "captured": len(policy._captured),
        "timers": len(policy._timers),
    }


# --- the snapshot policy ---------------------------------------------------------------


async def test_the_snapshot_policy_forgets_unloaded_and_deleted_documents(tmp_path: Path) -> None:
    """Every document snapshotted left a pruning lock and a write count behind, never
    removed: one per document the process ever checkpointed."""
    settings = Settings(
        db=str(tmp_path / "s.db"),
        snapshot_every=2,  # snapshots while edited (writes that do not convert) ...
        snapshot_quiet_seconds=0,
        unload_after_seconds=0.2,  # ... and the last one on unload (idle: pruned)
    )
    n = 30
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        policy = srv.backend.snapshots
        assert not any(policy_state(policy).values())

        async def five_edits(c: YClient, doc: str) -> None:
            for k in range(5):
                c.insert(len(c.content), f"{k},")
                await eventually(
                    lambda k=k: srv.backend.rooms.get_loaded(doc).seq > k  # type: ignore[union-attr]
                )

        for i in range(n):
            async with connect(srv.ws_url, f"gone-{i}", user=f"writer-{i}") as c:
                await five_edits(c, f"gone-{i}")
        await eventually(lambda: not srv.backend.rooms.loaded, what="every room unloaded")
        await policy.drain()
        # they were checkpointed, and pruned on unload (so a lock was taken for each)
        assert [s.seq for s in await srv.backend.store.snapshots("gone-0")][-1] == 5
        assert policy_state(policy) == dict.fromkeys(policy_state(policy), 0)

        # deleted while open, after snapshots that counted towards a conversion
        for i in range(n):
            doc = f"deleted-{i}"
            async with connect(srv.ws_url, doc, user="ann") as c:
                await five_edits(c, doc)
                await policy.drain()
                r = await http.delete(f"/api/docs/{doc}", params={"user": "root"})
                assert r.status_code == 200, r.text
                await eventually(lambda c=c: c.close_code == 4404)
        # and the unloaded ones deleted too
        for i in range(n):
            r = await http.delete(f"/api/docs/gone-{i}", params={"user": "root"})
            assert r.status_code == 200, r.text
        await policy.drain()
        assert policy_state(policy) == dict.fromkeys(policy_state(policy), 0)


async def test_prunes_of_one_document_still_take_turns(tmp_path: Path) -> None:
    """The pruning lock, now held only while in use, still lets one prune of a document
    run at a time (a busy document's snapshot writes overlap), and goes with the last."""
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    await store.start()
    try:
        policy = SnapshotPolicy(store)
        order: list[str] = []
        first_in = asyncio.Event()
        let_go = asyncio.Event()

        async def first() -> None:
            async with policy._pruning_turn("d"):
                order.append("first in")
                first_in.set()
                await let_go.wait()
                order.append("first out")

        async def second() -> None:
            await first_in.wait()
            async with policy._pruning_turn("d"):
                order.append("second in")

        async def other() -> None:
            await first_in.wait()
            async with policy._pruning_turn("e"):  # another document: no wait
                order.append("other in")

        tasks = [asyncio.create_task(f()) for f in (first, second, other)]
        await eventually(lambda: "other in" in order)
        await asyncio.sleep(0.05)  # the second had every chance to get in: it must not
        assert order == ["first in", "other in"]
        assert set(policy._pruning) == {"d"}  # held by the first, awaited by the second
        let_go.set()
        await asyncio.gather(*tasks)
        assert order == ["first in", "other in", "first out", "second in"]
        assert policy._pruning == {}
    finally:
        await store.stop()


# --- the rows sealing takes from memory --------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rows.db'}"
        return
    from scaleout import fresh_schema

    async with fresh_schema(PG_URL) as url:
        yield url


async def test_sealed_documents_leave_no_recent_rows_entry(store_url: str) -> None:
    """Once a document's rows are sealed, its entry in the rows kept for sealing stayed,
    an empty list: not counted against their bound, one per document ever sealed."""
    store = open_store(store_url)
    await store.start()
    try:
        recent = store._recent  # type: ignore[attr-defined]
        docs = [f"sealed-{i}" for i in range(200)]
        for _ in range(7):  # appends as group commits come: several documents each
            await store.append(
                [(d, [NewEvent("ann", "edit", b"\x00\x00") for _ in range(10)]) for d in docs]
            )
        for d in docs:
            assert await store.seal(d, rest=64) == 70
        assert len(recent._docs) == 0 and recent._count == 0
        # a document sealed in part keeps the rows after the run, and only those
        await store.append([("partial", [NewEvent("ann", "edit", b"\x00\x00") for _ in range(80)])])
        assert await store.seal("partial", run=64) == 64
        assert len(recent._docs) == 1 and recent._count == 16
    finally:
        await store.stop()


# --- the creation quota -------------------------------------------------------------------


def test_the_quota_forgets_identities_whose_hour_is_over() -> None:
    quota = CreationQuota()
    window = CreationQuota.WINDOW
    for i in range(1000):
        assert quota.allow(f"user-{i}", f"doc-{i}", 3, float(i))
    assert quota.allow("user-0", "doc-0b", 3, 1000.0)  # user-0 again: kept the longest
    assert len(quota._made) == 1000
    # half an hour past the window of the first 500: those (but user-0) are gone with
    # the next call, oldest first; the others are not even looked at
    assert quota.allow("newcomer", "doc-x", 3, window + 499.5)
    assert set(quota._made) == {"user-0", "newcomer", *(f"user-{i}" for i in range(500, 1000))}
    assert quota.allow("user-0", "doc-0c", 2, window + 499.5)  # its first has expired
    assert not quota.allow("user-0", "doc-0d", 2, window + 499.5)  # two in the hour
    # only checking counts nothing, and forgets the identities whose hour is over too
    assert quota.allow("checker", "doc-y", 3, 3 * window, count=False)
    assert len(quota._made) == 0
    assert quota.allow("a", "doc-a", 3, 5 * window)
    assert list(quota._made) == ["a"]


async def test_identities_that_created_documents_are_forgotten_after_the_hour(
    tmp_path: Path,
) -> None:
    """One entry per identity that ever created a document, kept for good: tenants and
    users come and go, the server's memory kept them all."""
    settings = Settings(db=str(tmp_path / "q.db"), jwt_secret=SECRET, max_new_docs_per_hour=2)
    async with run_server(settings) as srv:
        limits = srv.backend.extension(Limits)
        assert limits is not None
        quota = limits.quota
        n = 40
        for i in range(n):
            tok = mint(SECRET, f"tenant{i}-user", "write", [f"t{i}-*"], ttl=600)
            doc = f"t{i}-notes"
            async with connect(srv.ws_url, doc, token=tok) as c:
                c.insert(0, "hello")
                await eventually(
                    lambda doc=doc: (r := srv.backend.rooms.get_loaded(doc)) and r.seq >= 1
                )
        assert len(quota._made) == n
        later = time.monotonic() + CreationQuota.WINDOW + 1
        quota.clock = lambda: later  # an hour on
        tok = mint(SECRET, "late-user", "write", ["late-*"], ttl=600)
        async with connect(srv.ws_url, "late-doc", token=tok) as c:
            c.insert(0, "hello")
            await eventually(lambda: (r := srv.backend.rooms.get_loaded("late-doc")) and r.seq >= 1)
        assert len(quota._made) == 1


async def test_updates_refused_into_new_documents_create_nothing_and_count_nothing(
    tmp_path: Path,
) -> None:
    """An update into an empty document was counted against the quota before the room
    looked at it: one that does not decode created nothing, yet took one of the
    identity's new documents for the hour, and its name stayed in the count."""
    settings = Settings(db=str(tmp_path / "r.db"), jwt_secret=SECRET, max_new_docs_per_hour=3)
    async with run_server(settings) as srv:
        limits = srv.backend.extension(Limits)
        assert limits is not None
        tok = mint(SECRET, "mallory", "write", ["*"], ttl=600)
        frames = [
            P.encode_sync_update(b"garbage-not-an-update"),  # an update that does not decode
            P.encode_sync_step2(b"\x01\x01\xff\xff\xff\xff\x0f"),  # one cut short
            b"\x00\x02\x05garbage-not-an-update",  # a frame that does not parse
        ]
        for i in range(30):
            url = f"{srv.ws_url}/never-{i}?token={tok}"
            async with websockets.connect(url) as ws:
                await ws.send(frames[i % len(frames)])
                code, reason = await closed_with(ws)
            assert code == 4400, (code, reason)
        assert len(limits.quota._made) == 0
        assert await srv.backend.store.list_docs() == []
        for i in range(3):  # the quota is whole
            async with connect(srv.ws_url, f"real-{i}", token=tok) as c:
                c.insert(0, "hello")
                await eventually(
                    lambda i=i: (r := srv.backend.rooms.get_loaded(f"real-{i}")) and r.seq >= 1
                )
        assert [len(made) for made in limits.quota._made.values()] == [3]


# --- documents written, blamed and unloaded, one after another ---------------------------


async def test_documents_unloaded_leave_no_rows_rooms_or_docs_behind(tmp_path: Path) -> None:
    """Each document written (fewer events than a sealed run's rest), blamed and unloaded
    left its tail rows in the store's RecentRows (kept for a sealing that would only come
    once it was written again): a server that saw many short documents held each one's
    updates until 65,536 rows pushed them out. Now nothing of it stays but what the
    bounded caches hold, and its room's Yjs document is freed."""
    import gc
    import weakref

    from palimpsest.history import history_of
    from palimpsest.sealing import Sealing

    settings = Settings(
        db=str(tmp_path / "u.db"), unload_after_seconds=0.05, max_new_docs_per_hour=0
    )
    n = 40
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        backend = srv.backend
        recent = backend.store._recent  # type: ignore[attr-defined]
        history = history_of(backend)
        attribution = history.attribution
        sealing = backend.extension(Sealing)
        assert sealing is not None
        docs: list[weakref.ref[object]] = []
        for i in range(n):
            doc = f"short-{i}"
            async with connect(srv.ws_url, doc, user="ann") as c:
                for k in range(10):
                    c.insert(len(c.content), f"{k} ")
                room = await eventually(lambda doc=doc: backend.rooms.get_loaded(doc))
                await eventually(lambda room=room: room.seq >= 1 and str(room.doc.get(
                    "content", type=Text)) == c.content)  # fmt: skip
                docs.append(weakref.ref(room.doc))
                del room
            r = await http.get(f"/api/docs/{doc}/blame", params={"user": "ann"})
            assert r.status_code == 200, r.text
            await eventually(lambda doc=doc: doc not in backend.rooms, what=f"{doc} unloaded")
        await eventually(lambda: not sealing._idle, what="the idle documents sealed")
        await history_of(backend).attribution.drain()

        # the rows of every short document, once it unloaded (none had 64 events)
        assert (len(recent._docs), recent._count) == (0, 0)
        assert recent.kept_bytes == 0
        assert backend.rooms.loaded == {}
        gc.collect()
        assert sum(ref() is not None for ref in docs) == 0  # every room's Yjs document
        # the bounded ones: at most max_docs indexes (and their stored seqs), no lock
        assert len(attribution._indexes) <= attribution.max_docs
        assert set(attribution._stored) <= set(attribution._indexes)
        assert len(attribution._locks) == 0
        assert policy_state(backend.snapshots) == dict.fromkeys(policy_state(backend.snapshots), 0)


def test_recent_rows_are_bounded_by_their_bytes() -> None:
    """65,536 rows of pasted pages were hundreds of MB: the rows kept for sealing are
    bounded by their bytes too, the documents appended to least recently going first."""
    from palimpsest.store.log_layout import RecentRows

    recent = RecentRows()
    page = b"x" * 100_000
    for doc_id in range(400):  # 40 MB of updates, 400 rows
        recent.note([(doc_id, 1, 1, 0, 1, 1, page, None)])
    assert recent.kept_bytes <= RecentRows.MAX_BYTES
    assert recent.count == len(recent) < 400
    assert recent.run(399, 1, 1) is not None  # the newest kept
    assert recent.run(0, 1, 1) is None  # the oldest gone
    for doc_id in range(400):
        recent.sealed(doc_id, 1)
    assert (len(recent), recent.count, recent.kept_bytes) == (0, 0, 0)


async def test_stored_seqs_of_documents_not_in_memory_are_bounded(tmp_path: Path) -> None:
    """The attribution cache remembered the stored seq of every document refreshed as its
    room unloaded (one with 2,000 events or more), for good: one entry per document."""
    from palimpsest.history.attribution_cache import AttributionCache

    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    await store.start()
    try:
        cache = AttributionCache(store, max_docs=2)
        cache.stored_known = 5
        for i in range(20):
            doc = f"long-{i}"
            ydoc: Doc = Doc()
            text = ydoc.get("content", type=Text)
            updates: list[bytes] = []
            sub = ydoc.observe(lambda e, updates=updates: updates.append(e.update))
            for k in range(3):
                text.insert(len(text), f"{k} ")
            ydoc.unobserve(sub)
            await store.append([(doc, [NewEvent("ann", "edit", u) for u in updates])])

            async def roots() -> dict[str, str]:
                return {"content": "text"}

            assert await cache.refresh(doc, roots, build_from=1)
        await cache.drain()
        assert cache.stored == 20
        assert len(cache._indexes) == 0
        assert len(cache._stored) == 5
        # one forgotten is only read back to learn it is current: nothing stored again
        await cache.refresh("long-0", roots, build_from=1)
        await cache.drain()
        assert cache.stored == 20
    finally:
        await store.stop()
