"""What history keeps in memory stays within bounds, however many gaps or documents are
asked about: sessions by (document, gap), root types and creation times by document,
the attribution cache's locks and its lists of builds and restores. A reader could grow
the server without end by asking for sessions at each of the 604,800 gaps the API
accepts (+60 kB a request for a log of 200 sessions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import websockets
from conftest import closed_with, eventually, run_server
from pycrdt import Doc, Map, Text
from yclient import connect

from palimpsest.backend import Backend
from palimpsest.history import HistoryExtension, history_of
from palimpsest.history.attribution_cache import RECENT
from palimpsest.history.attribution_nested import KEPT
from palimpsest.history.sessions import Sessions
from palimpsest.settings import Settings
from palimpsest.store.base import EventStore, NewEvent

T0 = 1_700_000_000_000


def written(actors: list[str], n: int) -> str:
    """The text that `writes` writes."""
    return "".join(f"{actors[i % len(actors)]}{i} " for i in range(n))


def writes(actors: list[str], n: int, step_s: list[int]) -> list[NewEvent]:
    """`n` edits of one text, by the actors in turn, the i-th `step_s[i % len]` seconds
    after the one before: pauses of many lengths, so each gap groups them otherwise."""
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    out, ts = [], T0
    for i in range(n):
        before = doc.get_state()
        text.insert(len(text), written(actors, i + 1)[len(str(text)) :])
        ts += step_s[i % len(step_s)] * 1000
        out.append(NewEvent(actors[i % len(actors)], "edit", doc.get_update(before), ts=ts))
    return out


async def uncached(store: EventStore, doc: str, gap_ms: int) -> list[dict[str, Any]]:
    """The sessions of the whole log at `gap_ms`, grouped afresh."""
    sessions = Sessions(gap_ms)
    for ev in await store.read(doc):
        sessions.add(ev)
    return sessions.all()


async def test_sessions_at_many_gaps_are_kept_within_bounds_and_stay_right(
    tmp_path: Path,
) -> None:
    settings = Settings(db=str(tmp_path / "s.db"), unload_after_seconds=0.5)
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        store = srv.backend.store
        await store.append([("s", writes(["ann", "bob", "cy"], 120, [1, 3, 7, 20, 45, 2]))])
        h = history_of(srv.backend)

        async def sessions(gap: int | None) -> list[dict[str, Any]]:
            q: dict[str, Any] = {"limit": 1000} | ({"gap": gap} if gap is not None else {})
            r = await http.get("/api/docs/s/sessions", params=q)
            assert r.status_code == 200, r.text
            return list(r.json()["sessions"])

        default = await sessions(None)
        assert default == await uncached(store, "s", 300_000)
        seen = set()
        for gap in range(1, 61):
            got = await sessions(gap)
            assert got == await uncached(store, "s", gap * 1000), gap
            seen.add(len(got))
        assert len(seen) >= 4  # the gaps did group the events otherwise
        # one cached at the default gap, the latest few of the other gaps beside it
        assert len(h._sessions) == 1, len(h._sessions)
        assert len(h._other_gaps) == h._other_gaps.max_entries < 60
        assert h._other_gaps.evicted == 60 - h._other_gaps.max_entries
        # the default gap's was not pushed out by them, and is still right after them
        assert h._sessions.get("s", 300_000) is not None
        await store.append([("s", writes(["dee"], 3, [400]))])  # (appended at once)
        assert await sessions(None) == await uncached(store, "s", 300_000)
        assert await sessions(7) == await uncached(store, "s", 7000)

        # the estimated memory is a bound too: room for two of these at most
        one = h._other_gaps.get("s", 7000)
        assert one is not None
        h._other_gaps.max_bytes = 2 * one.estimated_bytes() + 1
        for gap in (9, 8, 7, 6, 5):  # (the shorter, the more sessions)
            assert await sessions(gap) == await uncached(store, "s", gap * 1000)
            assert h._other_gaps.kept_bytes <= h._other_gaps.max_bytes
            assert 1 <= len(h._other_gaps) <= 2


async def test_the_documents_known_to_history_are_bounded(tmp_path: Path) -> None:
    """Sessions, root types and creation times were kept for every document ever read,
    until it was deleted: one entry per document browsed, for ever."""
    async with Backend(Settings(db=str(tmp_path / "d.db"))) as backend:
        store = backend.store
        names = [f"d{i}" for i in range(40)]
        await store.append([(n, writes([n, "all"], 4, [1, 600])) for n in names])
        h = history_of(backend)
        h.known_docs = 16

        async def read(doc: str) -> tuple[Any, ...]:
            info = await h.info(doc)
            s = await h.sessions(doc, info, gap_ms=300_000, after=0, limit=100, actor=None)
            version = await h.version(doc, info.head)
            blame = await h.blame(doc, info.head, info, "content")
            return s["sessions"], version["roots"], blame["roots"]

        first = {n: await read(n) for n in names}
        assert len(h._created) == 16, len(h._created)
        assert len(h._types) <= 16 and set(h._types) <= set(h._created)
        assert len(h._sessions) <= 16
        assert {d for d, _ in h._sessions._entries} <= set(h._created)
        for n in names:  # forgotten ones learn again, the same
            assert await read(n) == first[n]
            sessions, roots, _ = first[n]
            assert sessions == await uncached(store, n, 300_000)
            assert roots["content"]["value"] == written([n, "all"], 4)
        assert len(h._created) == 16 and len(h._types) <= 16


async def test_attribution_locks_exist_only_while_in_use(tmp_path: Path) -> None:
    """The attribution cache kept a lock for every document it was ever asked about, and
    a refused connection to a new name was one: its room unloaded, and the refresh of
    the attribution index of a document without events took a lock for it (501 locks
    after 1,000 refused connections to new names)."""
    settings = Settings(db=str(tmp_path / "l.db"), unload_after_seconds=0.3)
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        h = history_of(srv.backend)
        ext = srv.backend.extension(HistoryExtension)
        assert ext is not None
        names = [f"refused{i}" for i in range(20)]
        for name in names:
            async with websockets.connect(f"{srv.ws_url}/{name}?user=x") as ws:
                await ws.send(b"\x00\x02\x05garbage-not-an-update")
                code, _ = await closed_with(ws)
                assert code is not None and 4400 <= code < 4500, code
        await eventually(lambda: not srv.backend.rooms.loaded, what="the rooms unloaded")
        await ext.drain()
        assert len(h.attribution._locks) == 0, len(h.attribution._locks)
        assert ext.refreshes == 0  # nothing to attribute in a document without events

        await srv.backend.store.append(
            [(f"b{i}", writes(["ann", "bob"], 3, [1])) for i in range(20)]
        )
        for i in range(20):
            r = await http.get(f"/api/docs/b{i}/blame", params={"user": "x"})
            assert r.status_code == 200, r.text
            runs = r.json()["roots"]["content"]["runs"]
            assert "".join(run["text"] for run in runs) == written(["ann", "bob"], 3)
        r = await http.put("/api/docs/w/text", params={"user": "x"}, json={"text": "hello"})
        assert r.status_code == 200, r.text
        await eventually(lambda: not srv.backend.rooms.loaded, what="w unloaded")
        await ext.drain()
        assert ext.refreshes == 1
        assert len(h.attribution._locks) == 0, len(h.attribution._locks)


async def test_the_builds_and_restores_remembered_are_the_latest(tmp_path: Path) -> None:
    """The attribution cache listed every index it built or read back, for ever (for
    logs and the bench): the latest RECENT now."""
    settings = Settings(db=str(tmp_path / "r.db"))
    names = [f"r{i}" for i in range(RECENT + 10)]

    async def blames(backend: Backend) -> list[Any]:
        h = history_of(backend)
        out = []
        for n in names:
            info = await h.info(n)
            out.append((await h.blame(n, info.head, info, "content"))["roots"])
        await h.attribution.drain()
        return out

    async with Backend(settings) as warm:
        await warm.store.append([(n, writes([n, "x"], 2, [1])) for n in names])
        built = await blames(warm)
        cache = history_of(warm).attribution
        assert len(cache.builds) == RECENT, len(cache.builds)
        assert [d for d, _, _ in cache.builds] == names[-RECENT:]
        assert cache.stored == len(names)
    async with Backend(settings) as cold:
        assert await blames(cold) == built
        cache = history_of(cold).attribution
        assert not cache.builds and len(cache.restores) == RECENT, len(cache.restores)
        assert [(d, s) for d, _, s in cache.restores] == [(n, 2) for n in names[-RECENT:]]


async def test_nested_blame_keeps_no_lock_or_build_per_document(tmp_path: Path) -> None:
    """The blame of texts nested in a map kept a lock for every document it was ever
    asked about, and listed every nested index it built, for ever: both grew with each
    new name (a form per customer, a notebook per student). Now a lock exists only while
    held, and the builds remembered are the latest RECENT."""
    settings = Settings(db=str(tmp_path / "n.db"), unload_after_seconds=0.2)
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        nested = history_of(srv.backend).nested
        n = RECENT + 5
        for i in range(n):
            name = f"form{i}"
            async with connect(srv.ws_url, name, user="ann") as c:
                c.doc["form"] = Map({"notes": Text(f"note {i}")})
                await eventually(lambda n=name: srv.backend.store.head(n), what="the form logged")
            r = await http.get(f"/api/docs/{name}/blame", params={"user": "x"})
            assert r.status_code == 200, r.text
            texts = r.json()["roots"]["form"]["texts"]
            assert "".join(run["text"] for run in texts[0]["runs"]) == f"note {i}", texts
        await eventually(lambda: not srv.backend.rooms.loaded, what="the rooms unloaded")
        assert len(nested._locks) == 0, len(nested._locks)
        assert len(nested.builds) == RECENT, len(nested.builds)
        assert [d for d, _ in nested.builds][-1] == f"form{n - 1}"
        assert len(nested._indexes) <= KEPT
