"""History on a real editing trace: every version, blame and diff equals the fold of the
log, and no reconstruction replays more than the events after the nearest snapshot."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import run_server
from pycrdt import Doc, Text

from palimpsest.backend import Backend
from palimpsest.errors import NotFound
from palimpsest.history import history_of
from palimpsest.settings import Settings
from palimpsest.snapshots import load

_BENCH = Path(__file__).resolve().parent.parent / "bench" / "history_bench.py"
_spec = importlib.util.spec_from_file_location("history_bench", _BENCH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["history_bench"] = bench
_spec.loader.exec_module(bench)

EVERY = 500


async def test_history_is_the_fold_of_the_log_on_a_real_trace(tmp_path: Path) -> None:
    # rustcode has non-ASCII text: positions are converted to pycrdt's UTF-8 offsets
    events, final = bench.trace_events("rustcode", limit=4000)
    settings = Settings(db=str(tmp_path / "trace.db"), snapshot_every=EVERY)
    async with Backend(settings) as backend:
        store = backend.store
        await bench.write_log(store, "trace", events, EVERY)
        h = history_of(backend)
        info = await h.info("trace")
        assert info.head == len(events)
        logged = await store.read("trace")
        rng = random.Random(20261127)
        ns = sorted({*rng.sample(range(1, info.head + 1), 10), 0, EVERY, info.head})

        # before any blame: the diff folds just its range (no index yet)
        ranged = await h.diff("trace", ns[2], ns[5], info, "content")
        assert h.attribution.peek("trace") is None

        ref: Doc[Any] = Doc()
        folded = 0
        blames: dict[int, list[dict[str, Any]]] = {}
        for n in ns:
            for ev in logged[folded:n]:  # the fold of events 1..n, independently
                ref.apply_update(ev.update)
            folded = n
            expected = str(ref.get("content", type=Text))

            loaded = await load(store, "trace", upto=n)
            assert loaded.seq == n
            assert loaded.replayed < EVERY, f"seq {n} replayed {loaded.replayed} events"

            v = await h.version("trace", n)
            assert v["seq"] == n
            got = v["roots"].get("content", {"value": ""})["value"]
            assert got == expected, f"version {n} differs from the fold"

            scratch: Doc[Any] = Doc()
            scratch.apply_update(await h.version_update("trace", n))
            assert str(scratch.get("content", type=Text)) == expected

            if n == 0:  # the empty document has no roots: naming one is a 404
                with pytest.raises(NotFound):
                    await h.blame("trace", n, info, "content")
                assert (await h.blame("trace", n, info, None))["roots"] == {}
                blames[n] = []
                continue
            b = await h.blame("trace", n, info, "content")
            runs = b["roots"]["content"]["runs"]
            blames[n] = runs
            assert "".join(r["text"] for r in runs) == expected, f"blame at {n}"
            for r in runs:
                assert 0 < r["seq"] <= n and r["actor"] == logged[r["seq"] - 1].actor

            a = rng.randint(0, n)
            d = await h.diff("trace", a, n, info, "content")
            ops = d["roots"]["content"]["ops"]
            before = (await h.version("trace", a))["roots"].get("content", {"value": ""})["value"]
            assert "".join(o["text"] for o in ops if o["op"] != "delete") == expected
            assert "".join(o["text"] for o in ops if o["op"] != "insert") == before
            for o in ops:
                if o["op"] != "equal":
                    assert a < o["seq"] <= n and o["actor"] == logged[o["seq"] - 1].actor
        assert expected == final
        # the same diff from the full index
        assert await h.diff("trace", ns[2], ns[5], info, "content") == ranged

    # the same over HTTP, from a fresh process-like start (the stored index is read back)
    async with run_server(Settings(db=str(tmp_path / "trace.db"))) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as c:
            r = await c.get(f"/api/docs/trace/versions/{info.head}")
            assert r.json()["roots"]["content"]["value"] == final
            r = await c.get("/api/docs/trace/blame", params={"seq": ns[3]})
            runs = r.json()["roots"]["content"]["runs"]
            # what was checked against the log above, now from the index read back
            assert runs == blames[ns[3]]
            assert {x["actor"] for x in runs} <= {"alice", "bob", "carol"}
