"""An attribution index stored a moment ago is the one read back.

A background refresh (a room unloading) extended the stored index to the head and
handed its write to a task, then let go of the document's lock; a blame waiting for
that lock read the store before the write committed (SQLite queues such upkeep writes
behind the appends of people typing) and got the index stored before, tens of
thousands of events behind. It extended that one to the head again and stored it
again (field test, 7 Dec 2026: ``stored at seq 105047``, then ``read back at seq
36870``, then ``stored at seq 105047`` five minutes later). Now a read back takes the
index whose write is still under way."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually, run_server
from scaleout import fresh_schema
from test_snapshot_retention import bench, trace_texts

from palimpsest.backend import Backend
from palimpsest.history import attribution_codec as codec
from palimpsest.history import history_of
from palimpsest.history.attribution_cache import AttributionCache
from palimpsest.settings import Settings
from palimpsest.store.base import EventStore

assert "history_bench" in sys.modules

N = 3_000
FIRST = 1_500  # the index stored before (36,870 in the field)
EVERY = 500


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}"
        return
    async with fresh_schema() as url:
        yield url


class Gate:
    """The store's put_derived, held until opened: the write of the stored index still
    under way (the real write runs once the gate opens)."""

    def __init__(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = asyncio.Event()
        self.seqs: list[int] = []
        real = store.put_derived

        async def put_derived(doc: str, kind: str, seq: int, data: bytes) -> None:
            self.seqs.append(seq)
            await self.opened.wait()
            await real(doc, kind, seq, data)

        monkeypatch.setattr(store, "put_derived", put_derived)


async def _seed(settings: Settings) -> None:
    """A log of N events whose stored index is at FIRST."""
    events, _ = bench.trace_events("automerge-paper", limit=N)
    async with Backend(settings) as backend:
        await bench.write_log(backend.store, "paper", events[:FIRST], EVERY)
        h = history_of(backend)
        await h.blame("paper", 10, await h.info("paper"), None)  # builds and stores it
        await h.attribution.drain()
        await backend.store.append([("paper", events[FIRST:])])
        stored = await backend.store.derived("paper", codec.KIND)
        assert stored is not None and stored[0] == FIRST


async def test_an_index_whose_write_is_under_way_is_the_one_read_back(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(store=store_url, snapshot_every=EVERY)
    await _seed(settings)
    texts = trace_texts("automerge-paper", N)
    async with Backend(settings) as backend:
        gate = Gate(backend.store, monkeypatch)
        cache = AttributionCache(backend.store)

        async def roots() -> list[str]:
            return ["content"]

        refresh = asyncio.create_task(cache.refresh("paper", roots, build_from=1))
        await eventually(lambda: gate.seqs == [N])  # extended to N, its write under way
        got = asyncio.create_task(cache.get("paper", N, ["content"]))
        await asyncio.sleep(0.3)
        gate.opened.set()
        index = await asyncio.wait_for(got, 120)
        assert await asyncio.wait_for(refresh, 120) is True
        await cache.drain()
        assert index.text_at("content", N) == texts[N]
        # the refresh read back FIRST; the get reads back what it stored (not FIRST again)
        assert [seq for _, _, seq in cache.restores] == [FIRST, N]
        assert not cache.builds
        assert gate.seqs == [N]  # stored once, not extended and stored again
        stored = await backend.store.derived("paper", codec.KIND)
        assert stored is not None and stored[0] == N


async def test_blame_right_after_a_refresh_reads_the_index_it_stored(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through the HTTP route, on a cold server: the refresh a room's unload
    starts, then GET /api/docs/{doc}/blame while the refresh's write is under way."""
    settings = Settings(store=store_url, snapshot_every=EVERY)
    await _seed(settings)
    texts = trace_texts("automerge-paper", N)
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        gate = Gate(srv.backend.store, monkeypatch)
        h = history_of(srv.backend)
        refresh = asyncio.create_task(h.refresh_attribution("paper", 1))
        await eventually(lambda: gate.seqs == [N])
        asked = asyncio.create_task(
            http.get("/api/docs/paper/blame", params={"user": "x"}, timeout=120)
        )
        await asyncio.sleep(0.3)
        gate.opened.set()
        r = await asked
        assert r.status_code == 200, r.text
        runs: list[dict[str, Any]] = r.json()["roots"]["content"]["runs"]
        assert "".join(x["text"] for x in runs) == texts[N]
        assert await refresh is True
        await h.attribution.drain()
        assert [seq for _, _, seq in h.attribution.restores] == [FIRST, N]
        assert not h.attribution.builds
        assert gate.seqs == [N]
