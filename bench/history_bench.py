"""History benchmark: any version, blame and diffs of a real editing trace's document.

Writes a trace (default: automerge-paper, 259,778 keystroke events) into a fresh SQLite
log as three authors taking turns (each with its own Yjs client, as separate browsers
would be), with a snapshot every 1,000 events as the server's default policy takes
them; then times, in process (store reads included, no HTTP):

- ``version``: the document at a random seq (nearest snapshot + tail, rendered to JSON),
- ``update``: the same as a binary Yjs update (``?format=update``),
- the first build of the attribution index, then blame and diffs at random seqs,

and, over HTTP against a real server on a loopback port, GET /versions/{seq}.

    .venv/bin/python bench/history_bench.py [--trace automerge-paper] [--limit N] [--samples 200]

Traces: data/traces (josephg/editing-traces, CC BY 4.0).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text, TransactionEvent

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from palimpsest.snapshots import new_doc  # noqa: E402
from palimpsest.store.base import EventStore, NewEvent  # noqa: E402

TRACES = ROOT / "data" / "traces" / "sequential_traces"
ACTORS = ("alice", "bob", "carol")


def load_trace(name: str) -> dict[str, Any]:
    path = TRACES / f"{name}.json.gz"
    with gzip.open(path) as f:
        trace: dict[str, Any] = json.load(f)
    return trace


def trace_events(
    name: str = "automerge-paper",
    limit: int | None = None,
    actors: tuple[str, ...] = ACTORS,
    seed: int = 7,
    t0_ms: int = 1_700_000_000_000,
) -> tuple[list[NewEvent], str]:
    """The trace's transactions as events of authors taking turns (a turn is 20-400
    transactions; each turn starts a new editing session, 10 minutes after the last).

    Positions in the trace count code points; pycrdt's count UTF-8 bytes: converted.
    Returns the events and the expected final text."""
    trace = load_trace(name)
    txns = trace["txns"][:limit] if limit else trace["txns"]
    rng = random.Random(seed)
    docs: dict[str, Doc[Any]] = {a: Doc(client_id=1000 + i) for i, a in enumerate(actors)}
    texts = {a: docs[a].get("content", type=Text) for a in actors}
    captured: list[bytes] = []
    local = {"on": False}

    def capture(e: TransactionEvent) -> None:
        if local["on"]:
            captured.append(e.update)

    for d in docs.values():
        d.observe(capture)
    content = ""
    author, left, turns = actors[0], rng.randint(20, 400), 0
    events: list[NewEvent] = []
    for i, txn in enumerate(txns):
        if left == 0:
            prev, author = author, rng.choice([a for a in actors if a != author])
            docs[author].apply_update(docs[prev].get_update(docs[author].get_state()))
            left, turns = rng.randint(20, 400), turns + 1
        left -= 1
        text = texts[author]
        local["on"] = True
        with docs[author].transaction():
            for pos, ndel, ins in txn["patches"]:
                b = len(content[:pos].encode())
                if ndel:
                    e = b + len(content[pos : pos + ndel].encode())
                    del text[b:e]
                if ins:
                    text.insert(b, ins)
                content = content[:pos] + ins + content[pos + ndel :]
        local["on"] = False
        if captured:
            update = captured[0]
            captured.clear()
            ts = t0_ms + i * 100 + turns * 600_000
            events.append(
                NewEvent(author, "edit", update, {"clients": [1000 + actors.index(author)]}, ts)
            )
    return events, content


async def write_log(
    store: EventStore, doc: str, events: list[NewEvent], snapshot_every: int = 1000
) -> None:
    """Append the events (in batches, as group commit would) with a snapshot every
    `snapshot_every` events, each the fold of the log up to it (as SnapshotPolicy)."""
    fold = new_doc(doc)
    seq = 0
    for i in range(0, len(events), snapshot_every):
        batch = events[i : i + snapshot_every]
        await store.append([(doc, batch)])
        for ev in batch:
            fold.apply_update(ev.update)
        seq += len(batch)
        if len(batch) == snapshot_every:
            await store.put_snapshot(doc, seq, fold.get_update(), {})


def _ms(xs: list[float]) -> str:
    xs = sorted(x * 1e3 for x in xs)
    p95 = xs[min(len(xs) - 1, int(len(xs) * 0.95))]
    return (
        f"p50 {statistics.median(xs):.1f} ms, p95 {p95:.1f} ms, max {xs[-1]:.1f} ms (n={len(xs)})"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default="automerge-paper")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--snapshot-every", type=int, default=1000)
    ap.add_argument("--db", help="keep the log in this SQLite file (reused if it exists)")
    ap.add_argument("--versions-only", action="store_true", help="skip blame and diffs")
    args = ap.parse_args()

    import httpx

    from palimpsest.app import create_app  # noqa: F401
    from palimpsest.backend import Backend
    from palimpsest.history import history_of
    from palimpsest.settings import Settings

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import run_server

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or f"{tmp}/bench.db"
        fresh = not os.path.exists(db)  # noqa: ASYNC240 (once, before the loop is busy)
        settings = Settings(db=db, snapshot_every=args.snapshot_every)
        backend = Backend(settings)
        async with backend:
            final: str | None
            if fresh:
                t = time.perf_counter()
                events, final = trace_events(args.trace, args.limit)
                dt = time.perf_counter() - t
                print(f"{args.trace}: {len(events)} events generated in {dt:.1f} s")
                t = time.perf_counter()
                await write_log(backend.store, "paper", events, args.snapshot_every)
                print(f"written to SQLite in {time.perf_counter() - t:.1f} s")
            else:
                final = str(load_trace(args.trace)["endContent"]) if not args.limit else None
            h = history_of(backend)
            info = await h.info("paper")
            rng = random.Random(1)
            seqs = [rng.randint(0, info.head) for _ in range(args.samples)] + [info.head]
            version, update, cpu = [], [], []
            for s in seqs:
                t, c = time.perf_counter(), time.process_time()
                v = await h.version("paper", s)
                version.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)  # all threads: the sqlite one too
                t = time.perf_counter()
                await h.version_update("paper", s)
                update.append(time.perf_counter() - t)
            assert final is None or v["roots"]["content"]["value"] == final
            print(f"version (JSON, in process): {_ms(version)}")
            print(f"version (JSON, in process), CPU time: {_ms(cpu)}")
            print(
                f"load average while measuring: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)"
            )
            print(f"version (?format=update, in process): {_ms(update)}")

            t = time.perf_counter()
            ss = await h.sessions("paper", info, gap_ms=300_000, after=0, limit=1000, actor=None)
            dt = time.perf_counter() - t
            t = time.perf_counter()
            await h.sessions("paper", info, gap_ms=300_000, after=0, limit=1000, actor=None)
            print(
                f"sessions: {len(ss['sessions'])} found in {dt:.2f} s (first call, whole log), "
                f"then {(time.perf_counter() - t) * 1e3:.1f} ms"
            )
            if not args.versions_only:
                t, c = time.perf_counter(), time.process_time()
                await h.blame("paper", info.head, info, None)
                print(
                    f"first blame (builds the attribution index): {time.perf_counter() - t:.1f} s"
                    f" ({time.process_time() - c:.1f} s CPU, load {os.getloadavg()[0]:.1f})"
                )
                blame, diff = [], []
                for s in seqs[: max(10, args.samples // 10)]:
                    t = time.perf_counter()
                    await h.blame("paper", s, info, None)
                    blame.append(time.perf_counter() - t)
                    a = rng.randint(0, s)
                    t = time.perf_counter()
                    await h.diff("paper", a, s, info, None)
                    diff.append(time.perf_counter() - t)
                print(f"blame (index built, whole document): {_ms(blame)}")
                print(f"diff (index built): {_ms(diff)}")

        async with run_server(Settings(db=db)) as srv:
            http = []
            async with httpx.AsyncClient(base_url=srv.url) as client:
                for s in seqs:
                    t = time.perf_counter()
                    r = await client.get(f"/api/docs/paper/versions/{s}")
                    http.append(time.perf_counter() - t)
                    assert r.status_code == 200
            print(f"GET /versions/{{seq}} over HTTP: {_ms(http)}")


if __name__ == "__main__":
    asyncio.run(main())
