"""The stored attribution index: blame and attributed diffs on a cold server (a new
process over the same store) read it instead of replaying the log, and answer exactly
what a warm server answers, which the trace's own text confirms."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually, free_port, run_server
from scaleout import fresh_schema
from serverproc import REPO_ROOT
from sqlitehelp import sqlite_conn
from test_snapshot_retention import bench, trace_texts
from yclient import connect

from palimpsest.backend import Backend
from palimpsest.history import HistoryExtension, history_of
from palimpsest.history import attribution_codec as codec
from palimpsest.protocol import Reader, write_var_bytes
from palimpsest.settings import Settings

assert "history_bench" in sys.modules

N = 6_000
EVERY = 500


def _text(runs: list[dict[str, Any]]) -> str:
    return "".join(r["text"] for r in runs)


async def _answers(backend: Backend, seqs: list[int]) -> dict[int, Any]:
    h = history_of(backend)
    info = await h.info("paper")
    out: dict[int, Any] = {}
    for s in seqs:
        blame = await h.blame("paper", s, info, "content")
        diff = await h.diff("paper", s // 2, s, info, "content")
        out[s] = (blame["roots"]["content"]["runs"], diff["roots"]["content"]["ops"])
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}"
        return
    async with fresh_schema() as url:
        yield url


async def test_cold_blame_reads_the_stored_index_and_equals_warm_blame(store_url: str) -> None:
    events, _ = bench.trace_events("automerge-paper", limit=N)
    texts = trace_texts("automerge-paper", N)
    settings = Settings(store=store_url, snapshot_every=EVERY)
    rng = random.Random(5)
    seqs = sorted({N, *rng.sample(range(1, N), 12)})
    async with Backend(settings) as warm:
        await bench.write_log(warm.store, "paper", events[: N - 700], EVERY)
        h = history_of(warm)
        await h.blame("paper", 10, await h.info("paper"), None)  # builds and stores it
        assert len(h.attribution.builds) == 1
        await h.attribution.drain()
        stored = await warm.store.derived("paper", codec.KIND)
        assert stored is not None and stored[0] == N - 700
        # more events after the stored index: a cold server extends it from there
        await warm.store.append([("paper", events[N - 700 :])])
        expected = await _answers(warm, seqs)
    for s, (runs, ops) in expected.items():
        assert _text(runs) == texts[s]
        assert "".join(o["text"] for o in ops if o["op"] != "delete") == texts[s]
        assert "".join(o["text"] for o in ops if o["op"] != "insert") == texts[s // 2]

    async with Backend(settings) as cold:
        h = history_of(cold)
        got = await _answers(cold, seqs)
        assert not h.attribution.builds  # nothing replayed from the start of the log
        [(doc, _seconds, seq)] = h.attribution.restores
        assert (doc, seq) == ("paper", N - 700)
        assert got == expected


async def test_a_stored_index_that_does_not_match_is_rebuilt(tmp_path: Path) -> None:
    """Damaged bytes, or a document deleted and made again under the same name: the
    stored index is not served; the rebuilt one answers from the log."""
    n = 1500
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    path = tmp_path / "m.db"
    settings = Settings(db=str(path), snapshot_every=EVERY)
    async with Backend(settings) as backend:
        await bench.write_log(backend.store, "paper", events, EVERY)
        h = history_of(backend)
        await h.blame("paper", n, await h.info("paper"), None)
        await h.attribution.drain()
    with sqlite_conn(path) as db:
        (data,) = db.execute("SELECT data FROM derived WHERE doc = 'paper'").fetchone()
        bad = bytearray(data)
        bad[len(bad) // 3] ^= 0x10
        db.execute("UPDATE derived SET data = ? WHERE doc = 'paper'", (bytes(bad),))
    async with Backend(settings) as backend:
        h = history_of(backend)
        b = await h.blame("paper", 900, await h.info("paper"), "content")
        assert _text(b["roots"]["content"]["runs"]) == texts[900]
        assert not h.attribution.restores and len(h.attribution.builds) == 1
        await h.attribution.drain()
        # deleted and made again: the new document's first events differ
        await backend.store.delete_doc("paper")
        assert await backend.store.derived("paper", codec.KIND) is None
        other, _ = bench.trace_events("rustcode", limit=300)
        await bench.write_log(backend.store, "paper", other, EVERY)
    async with Backend(settings) as backend:
        h = history_of(backend)
        b = await h.blame("paper", 300, await h.info("paper"), "content")
        assert _text(b["roots"]["content"]["runs"]) == trace_texts("rustcode", 300)[300]


def _without_base(data: bytes) -> bytes:
    """A stored index as written before its header said where it starts."""
    r = Reader(zlib.decompress(data))
    header = json.loads(r.read_var_bytes("header"))
    del header["base"]
    rest = r.data[r.pos :]
    return zlib.compress(write_var_bytes(json.dumps(header).encode()) + rest)


async def test_blame_after_compaction_names_nobody_for_the_text_the_base_holds(
    store_url: str,
) -> None:
    """Finding 3a: alice, bob and carol write a line each, blame is asked (its index is
    built, kept in memory and stored), and `palimpsest compact --before 2` runs in
    another process while the server keeps running. The text the base holds was
    written by nobody known: blame names null for it, and says why (`compacted`), on
    the running server (whose index in memory was built before), after a restart (the
    stored one), and when an index stored before the compaction is found again (as an
    older release left it)."""
    settings = Settings(store=store_url, port=free_port(), unload_after_seconds=0.2)
    lines = [("alice", "alpha beta\n"), ("bob", "bravo\n"), ("carol", "charlie\n")]

    async def blame(http: httpx.AsyncClient) -> list[dict[str, Any]]:
        r = await http.get("/api/docs/memo/blame", params={"user": "x"})
        assert r.status_code == 200, r.text
        return list(r.json()["roots"]["content"]["runs"])

    expected = [
        {"text": "alpha beta\nbravo\n", "actor": None, "seq": 2, "compacted": True},
        {"text": "charlie\n", "actor": "carol", "seq": 3},
    ]
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        text = ""
        for who, line in lines:
            text += line
            r = await http.put("/api/docs/memo/text", json={"text": text}, params={"user": who})
            assert r.status_code == 200, r.text
        assert [(x["actor"], x["seq"]) for x in await blame(http)] == [
            ("alice", 1), ("bob", 2), ("carol", 3)
        ]  # fmt: skip
        h = history_of(srv.backend)
        await h.attribution.drain()
        before = await srv.backend.store.derived("memo", codec.KIND)
        assert before is not None and before[0] == 3
        await eventually(lambda: "memo" not in srv.backend.rooms)

        # the admin command, in a process of its own, as an operator runs it
        ran = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "palimpsest", "compact", "memo", "--before", "2", "--yes",
             "--store", store_url],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0 and "2 events folded" in ran.stdout, ran
        # the index it stored names the folded events' writers: gone with them
        assert await srv.backend.store.derived("memo", codec.KIND) is None

        r = await http.get("/api/docs/memo/versions/1")
        assert r.status_code == 404 and "history starts at 2" in r.text, r.text
        assert await blame(http) == expected  # (the index in memory was built before)
        r = await http.get("/api/docs/memo/diff", params={"from": 2, "to": 3, "user": "x"})
        assert r.status_code == 200, r.text
        ops = [(o["op"], o["text"], o["actor"]) for o in r.json()["roots"]["content"]["ops"]]
        assert ops == [("equal", "alpha beta\nbravo\n", None), ("insert", "charlie\n", "carol")]
        await h.attribution.drain()
        stored = await srv.backend.store.derived("memo", codec.KIND)
        assert stored is not None and codec.header(stored[1])["base"] == 2

    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        assert await blame(http) == expected  # read back
        assert len(history_of(srv.backend).attribution.restores) == 1

    # an index stored before the compaction, left by a release that kept it, with and
    # without the header's "base" (an index stored before it said where it starts)
    for old in (before[1], _without_base(before[1])):
        assert codec.base(old) == 0
        async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            await srv.backend.store.put_derived("memo", codec.KIND, 3, old)
            assert await blame(http) == expected
            h = history_of(srv.backend)
            assert not h.attribution.restores and len(h.attribution.builds) == 1


async def test_a_room_that_unloads_stores_its_index_for_the_next_process(
    tmp_path: Path,
) -> None:
    """Nobody asked for blame: the idle document's index is built in the background
    once its room unloads, and a restarted server reads it."""
    n = 2500
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    settings = Settings(db=str(tmp_path / "u.db"), snapshot_every=EVERY, unload_after_seconds=0.2)
    async with Backend(settings) as backend:
        await bench.write_log(backend.store, "paper", events, EVERY)
    async with run_server(settings) as srv:
        ext = srv.backend.extension(HistoryExtension)
        assert ext is not None and n >= ext.build_from
        async with connect(srv.ws_url, "paper", user="ann") as c:
            assert c.content == texts[n]
        await eventually(lambda: "paper" not in srv.backend.rooms)
        await eventually(lambda: not ext._refresher.tasks, timeout=60)
        stored = await srv.backend.store.derived("paper", codec.KIND)
        assert stored is not None and stored[0] == n
        assert history_of(srv.backend).attribution.peek("paper") is None  # not kept in memory
        async with httpx.AsyncClient(base_url=srv.url) as http:  # what a watcher sees
            metrics = (await http.get("/metrics")).text
        assert "palimpsest_attribution_indexes_stored_total 1.0" in metrics
        # the CPU of that build is counted apart (the storage bench tells it from ingest)
        spent = history_of(srv.backend).attribution.upkeep.seconds
        assert spent > 0
        line = next(x for x in metrics.splitlines() if x.startswith("palimpsest_attribution_up"))
        assert line.startswith("palimpsest_attribution_upkeep_cpu_seconds_total ")
        assert float(line.split()[1]) == spent
    async with run_server(settings) as srv:
        h = history_of(srv.backend)
        b = await h.blame("paper", 1234, await h.info("paper"), "content")
        assert _text(b["roots"]["content"]["runs"]) == texts[1234]
        assert not h.attribution.builds and len(h.attribution.restores) == 1


async def test_documents_that_unload_together_are_refreshed_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each background refresh is paced on its own; several at once would add their
    shares up and take the event loop from the edits. So they queue: all three indexes
    are stored, and never two of them were being worked on at once."""
    n = 2500
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    docs = ["a", "b", "c"]
    settings = Settings(db=str(tmp_path / "q.db"), snapshot_every=EVERY, unload_after_seconds=0.2)
    async with Backend(settings) as backend:
        for doc in docs:
            await bench.write_log(backend.store, doc, events, EVERY)
    async with run_server(settings) as srv:
        ext = srv.backend.extension(HistoryExtension)
        assert ext is not None and n >= ext.build_from
        h = history_of(srv.backend)
        refresh = h.refresh_attribution
        at_work: list[str] = []
        most = 0

        async def counted(doc: str, build_from: int) -> bool:  # the real one, counted
            nonlocal most
            at_work.append(doc)
            most = max(most, len(at_work))
            try:
                return await refresh(doc, build_from)
            finally:
                at_work.remove(doc)

        monkeypatch.setattr(h, "refresh_attribution", counted)
        async with (
            connect(srv.ws_url, "a", user="ann") as a,
            connect(srv.ws_url, "b", user="ann") as b,
            connect(srv.ws_url, "c", user="ann") as c,
        ):
            assert a.content == b.content == c.content == texts[n]
        # the three rooms unload within a moment of each other
        await eventually(lambda: not any(d in srv.backend.rooms for d in docs))
        await eventually(lambda: not ext._refresher.tasks, timeout=60)
        for doc in docs:
            stored = await srv.backend.store.derived(doc, codec.KIND)
            assert stored is not None and stored[0] == n, doc
        assert most == 1


@pytest.mark.parametrize("editing", [False, True])
async def test_a_background_refresh_gives_way_to_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, editing: bool
) -> None:
    """While edits are being committed, a background refresh waits for a pause (at most
    MAX_DEFER_SECONDS) before each page it reads; on an idle server it never waits. The
    index it stores is the same either way."""
    from palimpsest.history import attribution_cache

    monkeypatch.setattr(attribution_cache, "MAX_DEFER_SECONDS", 0.05)
    n = 2500
    events, _ = bench.trace_events("automerge-paper", limit=n)
    settings = Settings(db=str(tmp_path / "g.db"), snapshot_every=EVERY)
    async with Backend(settings) as backend:
        await bench.write_log(backend.store, "paper", events, EVERY)
        h = history_of(backend)
        clock = attribution_cache.time.monotonic
        h.attribution.last_edit = clock if editing else (lambda: 0.0)  # an edit "just now"
        assert await h.refresh_attribution("paper", build_from=1000)
        pages = -(-n // attribution_cache.READ_PAGE)
        if editing:  # each page, and the read that finds the end
            assert h.attribution.deferred >= pages
        else:
            assert h.attribution.deferred == 0
        stored = await backend.store.derived("paper", codec.KIND)
        assert stored is not None and stored[0] == n
    async with Backend(settings) as backend:  # a cold process reads it and blames right
        h = history_of(backend)
        b = await h.blame("paper", 1234, await h.info("paper"), "content")
        assert _text(b["roots"]["content"]["runs"]) == trace_texts("automerge-paper", n)[1234]


async def test_an_index_after_compaction_folds_from_the_base_by_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `palimpsest compact`, the first index starts from the base snapshot and
    folds it, and the events after it, by Yjs ids, reading no event at or below the
    base: by text deltas (as it did), each event walked the text from its start, and a
    1.3 MB manuscript's first blame after a compaction took 147 s instead of 16. Four
    writers take turns, so the base's structs name other clients' listed after them
    (a whole state is encoded client by client): they are put in order first. Its
    answers are those of an index folded by deltas from the same base."""
    from palimpsest.maintenance import compact_doc, plan_compact

    n, base = 3000, 1700
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    settings = Settings(db=str(tmp_path / "c.db"), snapshot_every=EVERY)
    async with Backend(settings) as backend:
        await bench.write_log(backend.store, "paper", events, EVERY)
        store = backend.store
        assert await compact_doc(store, await plan_compact(store, "paper", base), settings) == base
        read_after: list[int] = []
        real_read = store.read

        async def read(doc: str, *args: Any, **kw: Any) -> Any:
            read_after.append(kw.get("after", args[0] if args else 0))
            return await real_read(doc, *args, **kw)

        monkeypatch.setattr(store, "read", read)
        h = history_of(backend)
        info = await h.info("paper")
        answers = {}
        for s in (base, 2000, 2600, n):
            blame = await h.blame("paper", s, info, "content")
            answers[s] = blame["roots"]["content"]["runs"]
            assert _text(answers[s]) == texts[s]
        index = h.attribution.peek("paper")
        assert index is not None and index.base == base
        assert len(h.attribution.builds) == 1 and h.attribution.rebuilt_by_deltas == 0
        assert index.by_ids == n - base + 1  # the base and every event after it
        assert read_after and min(read_after) >= base
        assert {(r["actor"], r["seq"]) for r in answers[base]} == {(None, base)}
        monkeypatch.undo()
        deltas = await h.attribution._build("paper", {"content": "text"}, by_ids=False)
        assert deltas.by_ids == 0 and deltas.base == base
        for s in answers:
            assert index.blame("content", s) == deltas.blame("content", s)
            assert index.diff("content", base, s) == deltas.diff("content", base, s)


async def test_a_refresh_that_waits_for_a_pause_gives_way_to_a_caller_who_needs_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background refresh holds the document's lock while it waits for a pause in the
    editing (anywhere in the process) before each page. A restore right after the
    room unloaded, while someone typed in another document, waited 20-27 s for it. Now
    a caller waiting for the index makes the refresh go on at once, unpaced: here the
    editing never pauses and a refresh would defer for an hour a page, and the caller
    gets the index to the head all the same, and the refresh stores it."""
    from palimpsest.history import attribution_cache
    from palimpsest.history.attribution_cache import AttributionCache

    n = 2500
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    monkeypatch.setattr(attribution_cache, "MAX_DEFER_SECONDS", 3600.0)
    async with Backend(Settings(db=str(tmp_path / "r.db"), snapshot_every=EVERY)) as backend:
        await bench.write_log(backend.store, "paper", events, EVERY)
        cache = AttributionCache(backend.store, last_edit=time.monotonic)  # always typing

        async def roots() -> list[str]:
            return ["content"]

        refresh = asyncio.create_task(cache.refresh("paper", roots, build_from=1))
        await eventually(lambda: "paper" in cache._locks)  # the refresh holds it
        await asyncio.sleep(0.3)
        assert not refresh.done() and cache.hurried == 0
        index = await asyncio.wait_for(cache.get("paper", n, ["content"]), 120)
        assert index.seq == n and index.text_at("content", n) == texts[n]
        assert cache.hurried > 0
        assert await asyncio.wait_for(refresh, 120) is True
        stored = await backend.store.derived("paper", codec.KIND)
        assert stored is not None and stored[0] == n


async def test_a_stored_index_is_read_back_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decompressing and reading a stored index grows with it (3.5-7 s on the loop for a
    long manuscript after ten restores and undos, while its authors' edits waited): it
    is parsed once, in a worker thread; only attaching it to its document is on the
    loop. The index read back answers as the one stored."""
    import threading

    from palimpsest.history.attribution_cache import AttributionCache

    n = 2500
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    async with Backend(Settings(db=str(tmp_path / "p.db"), snapshot_every=EVERY)) as backend:
        await bench.write_log(backend.store, "paper", events, EVERY)
        first = AttributionCache(backend.store)
        await first.get("paper", n, ["content"])
        await first.drain()
        parsed_in: list[int] = []
        real_parse = codec.parse

        def parse(data: bytes) -> codec.Parsed:
            parsed_in.append(threading.get_ident())
            return real_parse(data)

        monkeypatch.setattr(codec, "parse", parse)
        cold = AttributionCache(backend.store)
        index = await cold.get("paper", n, ["content"])
        assert len(cold.restores) == 1 and not cold.builds
        assert parsed_in and threading.get_ident() not in parsed_in and len(parsed_in) == 1
        assert index.text_at("content", 1234) == texts[1234]
