"""What an attribution index costs in memory (finding 3c): an index dropped from the
cache is freed, with its Yjs document; the stored index of text that an event inserted
and deleted again (a client's merged frame) is read back instead of rebuilt, with its
runs joined; and the cache keeps within a budget of estimated bytes, not only a count."""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text, merge_updates
from test_snapshot_retention import bench, trace_texts

from palimpsest.backend import Backend
from palimpsest.history import attribution_codec as codec
from palimpsest.history import history_of
from palimpsest.history.attribution import AttributionIndex
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent

assert "history_bench" in sys.modules

N = 3000
FRAME = 40  # trace transactions per event, as a client's merged frame carries them


def merged_trace(n: int = N, frame: int = FRAME) -> list[NewEvent]:
    """automerge-paper's first `n` transactions, `frame` to an event: each event types
    and deletes many keystrokes, each keystroke a Yjs item of its own."""
    events, _ = bench.trace_events("automerge-paper", limit=n)
    return [
        NewEvent(f"user{i % 3}", "edit", merge_updates(*[e.update for e in events[i : i + frame]]))
        for i in range(0, len(events), frame)
    ]


def typed_and_deleted() -> list[NewEvent]:
    """Events whose text is partly deleted by the very event that inserted it."""
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    out = []
    words = (("ann", "hello brave world ", (6, 12)), ("bob", "again and again ", (0, 6)))
    for who, word, cut in words:
        before = doc.get_state()
        with doc.transaction():
            at = len(text)
            text.insert(at, word)
            del text[at + cut[0] : at + cut[1]]
        out.append(NewEvent(who, "edit", doc.get_update(before)))
    return out


async def _answers(backend: Backend, doc: str, seqs: list[int]) -> list[Any]:
    h = history_of(backend)
    info = await h.info(doc)
    out = []
    for s in seqs:
        blame = await h.blame(doc, s, info, "content")
        diff = await h.diff(doc, s // 2, s, info, "content")
        out.append((blame["roots"]["content"]["runs"], diff["roots"]["content"]["ops"]))
    return out


def _runs(index: AttributionIndex) -> int:
    return sum(len(b) for b in index.tracks["content"].blocks)


@pytest.mark.parametrize("events", ["typed_and_deleted", "merged_trace"])
async def test_an_index_of_text_deleted_by_its_own_event_is_read_back(
    tmp_path: Path, events: str
) -> None:
    """Text inserted and deleted by one event was stored as alive (deleted-by minus
    inserted-by is 0): the index read back disagreed with its version and was built
    again on every cold blame. Read back now, its runs joined, it answers the same."""
    evs = typed_and_deleted() if events == "typed_and_deleted" else merged_trace()
    settings = Settings(db=str(tmp_path / "m.db"))
    async with Backend(settings) as warm:
        await bench.write_log(warm.store, "doc", evs, 1000)
        seqs = sorted({1, max(1, len(evs) // 3), len(evs)})
        expected = await _answers(warm, "doc", seqs)
        h = history_of(warm)
        built = h.attribution.peek("doc")
        assert built is not None and len(h.attribution.builds) == 1
        await h.attribution.drain()
        assert codec.header((await warm.store.derived("doc", codec.KIND))[1])["v"] == 9  # type: ignore[index]
        built_runs = _runs(built)
    async with Backend(settings) as cold:
        h = history_of(cold)
        assert await _answers(cold, "doc", seqs) == expected
        assert not h.attribution.builds and len(h.attribution.restores) == 1
        read = h.attribution.peek("doc")
        assert read is not None
        if events == "merged_trace":
            # a run per Yjs item built by ids; joined where they continue one another
            assert _runs(read) < built_runs * 0.7, (_runs(read), built_runs)
            texts = trace_texts("automerge-paper", N)
            assert "".join(r["text"] for r in expected[-1][0]) == texts[N]


async def test_an_index_dropped_from_the_cache_is_freed(tmp_path: Path) -> None:
    """The index's observers on its Yjs document held it: index -> document -> observer
    -> index, a cycle through yrs that the garbage collector cannot see, so no index was
    ever freed (evicted, refused, built again, a range diff's): ~120 MB each for
    automerge-paper's, and the cache's bound bounded nothing."""
    gc.collect()  # (an earlier test's server may still hold its indexes: not ours)
    before = {id(o) for o in gc.get_objects() if isinstance(o, AttributionIndex)}
    settings = Settings(db=str(tmp_path / "f.db"))
    async with Backend(settings) as backend:
        await bench.write_log(backend.store, "doc", merged_trace(1200), 1000)
        h = history_of(backend)
        info = await h.info("doc")
        await h.blame("doc", info.head, info, None)  # built
        await h.attribution.drain()
        built = weakref.ref(h.attribution.peek("doc"))  # type: ignore[arg-type]
        h.attribution.drop("doc")
        await h.blame("doc", info.head, info, None)  # read back from the store
        read = weakref.ref(h.attribution.peek("doc"))  # type: ignore[arg-type]
        assert len(h.attribution.restores) == 1
        h.attribution.drop("doc")
        # a range diff folds an index of its own (no index cached)
        await h.diff("doc", 2, info.head, info, None)
        gc.collect()
        assert built() is None and read() is None
        left = [o for o in gc.get_objects() if isinstance(o, AttributionIndex)]
        assert not [o for o in left if id(o) not in before], left


async def test_the_cache_keeps_within_its_byte_budget(tmp_path: Path) -> None:
    """Bounded by count (8) only, 8 large documents' indexes stayed; the budget of
    estimated bytes (ATTRIBUTION_CACHE_MB) drops the least recently used first, and
    keeps the one in use however large."""
    settings = Settings(db=str(tmp_path / "b.db"))
    async with Backend(settings) as backend:
        for doc in ("a", "b", "c"):
            await bench.write_log(backend.store, doc, merged_trace(1200), 1000)
        h = history_of(backend)
        cache = h.attribution
        assert cache.max_bytes == 64 * 1024 * 1024  # the default
        info = await h.info("a")
        await h.blame("a", info.head, info, None)
        one = cache.peek("a").estimated_bytes()  # type: ignore[union-attr]
        assert one > 10_000 and cache.kept_bytes == one
        cache.max_bytes = int(one * 2.5)  # room for two of them
        for doc in ("b", "c"):
            await h.blame(doc, info.head, await h.info(doc), None)
        assert list(cache._indexes) == ["b", "c"] and cache.evicted == 1
        assert cache.kept_bytes <= cache.max_bytes
        await h.blame("b", info.head, await h.info("b"), None)  # b used again: c goes next
        cache.max_bytes = one // 2  # smaller than any: the one in use stays
        await h.blame("a", info.head, await h.info("a"), None)
        assert list(cache._indexes) == ["a"] and cache.evicted == 3
        cache.max_bytes = 0  # the count only
        for doc in ("b", "c"):
            await h.blame(doc, info.head, await h.info(doc), None)
        assert list(cache._indexes) == ["a", "b", "c"]
        got = await _answers(backend, "c", [info.head])
        assert "".join(r["text"] for r in got[0][0]) == trace_texts("automerge-paper", 1200)[1200]
