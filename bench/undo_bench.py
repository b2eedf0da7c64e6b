"""Undo benchmark: per-user undo/redo on a long document.

Writes a trace (default: automerge-paper, 259,778 keystroke events) into a fresh SQLite
log as three authors taking turns (bench/history_bench.py's layout: keystrokes 100 ms
apart, a turn of 20-400 keystrokes per session, sessions 10 minutes apart), then, in
process through the real Backend (rooms, pipeline, group committer, SQLite):

- loads the document from the log alone, with and without the undo feature: the
  difference is the time to rebuild every user's undo stacks from the log;
- undoes alice's last 100 steps one by one, then redoes them: server time per undo and
  per redo (compute the inverse + durable append + apply), and checks that the text
  after the redos is the text before the undos;
- unloads (a final snapshot carries the stacks in its meta) and loads again from it.

    .venv/bin/python bench/undo_bench.py [--trace automerge-paper] [--limit N] [--n 100]

Traces: data/traces (josephg/editing-traces, CC BY 4.0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from history_bench import trace_events  # noqa: E402

from palimpsest import undo  # noqa: E402
from palimpsest.backend import Backend  # noqa: E402
from palimpsest.settings import Settings  # noqa: E402
from palimpsest.snapshots import load  # noqa: E402

DOC = "paper"


def _ms(xs: list[float]) -> dict[str, float]:
    ys = sorted(x * 1e3 for x in xs)
    return {
        "p50_ms": round(statistics.median(ys), 2),
        "p95_ms": round(ys[min(len(ys) - 1, int(len(ys) * 0.95))], 2),
        "max_ms": round(ys[-1], 2),
        "mean_ms": round(statistics.fmean(ys), 2),
        "n": len(ys),
    }


async def run(trace: str, limit: int | None, n: int, db: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    events, final = trace_events(trace, limit)
    print(f"trace {trace}: {len(events)} events built in {time.perf_counter() - t0:.1f}s")
    settings = Settings(db=str(db), snapshot_every=10**9, snapshot_quiet_seconds=0)
    out: dict[str, Any] = {"trace": trace, "events": len(events), "chars": len(final)}
    async with Backend(settings) as backend:
        for i in range(0, len(events), 5000):
            await backend.store.append([(DOC, events[i : i + 5000])])
        # baseline: the same load without any hook
        t = time.perf_counter()
        plain = await load(backend.store, DOC)
        out["load_without_undo_s"] = round(time.perf_counter() - t, 2)
        assert str(plain.doc.get("content", type=Text)) == final
        t = time.perf_counter()
        room = await backend.rooms.get(DOC)
        out["load_with_undo_s"] = round(time.perf_counter() - t, 2)
        out["rebuild_overhead_s"] = round(out["load_with_undo_s"] - out["load_without_undo_s"], 2)
        state = undo.state_of(room)
        out["steps"] = {a: len(st.undo) for a, st in state.actors.items()}
        text = room.doc.get("content", type=Text)
        before = str(text)
        assert before == final
        undos, redos = [], []
        for _ in range(n):
            t = time.perf_counter()
            ev = await undo.perform(room, "alice", "undo", backend)
            undos.append(time.perf_counter() - t)
            assert ev is not None, "alice has fewer undo steps than asked"
        after_undo = str(text)
        for _ in range(n):
            t = time.perf_counter()
            ev = await undo.perform(room, "alice", "redo", backend)
            redos.append(time.perf_counter() - t)
            assert ev is not None
        assert str(text) == before, "n undos then n redos changed the text"
        out["undo"] = _ms(undos)
        out["redo"] = _ms(redos)
        out["chars_removed_by_undos"] = len(before) - len(after_undo)
        t = time.perf_counter()
        meta = json.dumps(state.to_meta())
        out["stacks_meta_bytes"] = len(meta)
        out["stacks_meta_serialize_ms"] = round((time.perf_counter() - t) * 1e3, 2)
        await backend.rooms.unload(room)
        t = time.perf_counter()
        room = await backend.rooms.get(DOC)
        out["load_from_snapshot_with_stacks_s"] = round(time.perf_counter() - t, 3)
        assert undo.state_of(room).to_meta()["actors"] == json.loads(meta)["actors"]
        t = time.perf_counter()
        ev = await undo.perform(room, "alice", "undo", backend)
        out["first_undo_after_reload_ms"] = round((time.perf_counter() - t) * 1e3, 2)
        assert ev is not None
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default="automerge-paper")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = asyncio.run(run(args.trace, args.limit, args.n, Path(d) / "undo.db"))
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
