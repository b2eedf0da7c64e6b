#!/usr/bin/env python3
"""Latency of one lone append (a keystroke's group commit) per store and durability.

    .venv/bin/python bench/append_latency.py                  # SQLite, fsync and os
    .venv/bin/python bench/append_latency.py --pg postgresql://postgres@127.0.0.1/test
    .venv/bin/python bench/append_latency.py --gap 20   # one append every 20 ms, as typed

Each store gets a fresh database (PostgreSQL: a fresh schema, dropped after), 50 appends
to warm up, then ``--n`` appends of one small event, one at a time, each awaited before
the next, from the event loop as the server's committer makes them. Prints p50 / p90 /
p99 in µs: what one edit typed alone waits for before anyone sees it, then the p99.9 and
the maximum (the tail: SQLite's WAL checkpoints), then how often and how long the event
loop was held: a ticker task wakes every 0.5 ms, and its lateness is the time the loop
could not run it (an append that commits on the loop's own thread holds every other
connection of the process for as long; so did a WAL checkpoint inside such a commit).
``--events N`` makes each append N events (a burst, as a typist's pipelined frames).
With ``--gap``, the event loop sleeps that long before each append, as between
keystrokes: the disk and the threads are then woken from idle, which costs more than
back to back. SQLite with fsync runs twice: as ``SQLiteStore`` defaults (the disk left
alone) and with the disk kept warm as ``palimpsest serve`` does (``--warm-disk-ms``,
server/store/disk_warm.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from palimpsest.store.base import EventStore, NewEvent  # noqa: E402
from palimpsest.store.sqlite import SQLiteStore  # noqa: E402

#: one typed character's update, as a Yjs client sends it
UPDATE = b"\x01\x01\xb9\xe3\xa4\x8a\x0c\x00\x04\x01\x07content\x01a\x00"


#: the ticker's period (s): its lateness beyond this is how long the loop was held
TICK = 0.0005


#: a lateness of the ticker over this (µs) counts as a stall of the loop
STALL_US = 2000


async def _ticker(lates: list[float]) -> None:
    """Wake every TICK; note each lateness (µs)."""
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(TICK)
        lates.append((time.perf_counter() - t0 - TICK) * 1e6)


async def measure(
    store: EventStore, n: int, gap: float = 0.0, events: int = 1, *, tick: bool = True
) -> tuple[list[float], list[float]]:
    """Sorted µs per append, and the ticker's latenesses (µs). ``tick=False``: no ticker
    (the process is idle for the whole gap, bench/wake_cost.py)."""
    batch = [NewEvent("bench", "edit", UPDATE, {"conn": "bench/1"}, 1)] * events
    lates: list[float] = []
    async with store:
        for _ in range(50):
            await store.append([("doc", batch)])
        out = []
        ticker = asyncio.create_task(_ticker(lates)) if tick else None
        await asyncio.sleep(0)
        try:
            for i in range(n):
                if gap:
                    await asyncio.sleep(gap)
                t0 = time.perf_counter()
                await store.append([("doc", batch)])
                out.append((time.perf_counter() - t0) * 1e6)
                await asyncio.sleep(0)  # the ticker's turn (an inline append never yields)
                if i % 500 == 0:
                    print(f"  {i}/{n}", end="\r", file=sys.stderr, flush=True)
        finally:
            if ticker is not None:
                ticker.cancel()
    return sorted(out), lates


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, max(0, int(-(-p * len(xs) // 100)) - 1))]


async def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=2000, help="appends per store (default 2000)")
    ap.add_argument("--gap", type=float, default=0.0, help="ms of idle before each append")
    ap.add_argument("--events", type=int, default=1, help="events per append (default 1)")
    ap.add_argument(
        "--warm-disk-ms",
        type=float,
        default=2.0,
        help="also SQLite fsync with the disk kept warm every so many ms (the server's "
        "default, 2; 0 = leave that row out)",
    )
    ap.add_argument("--pg", help="also PostgreSQL at this URL (a schema is created and dropped)")
    args = ap.parse_args()
    rows: list[tuple[str, tuple[list[float], list[float]]]] = []
    with tempfile.TemporaryDirectory() as d:
        warm_row = [("fsync", args.warm_disk_ms)] if args.warm_disk_ms else []
        for durability, warm in [("fsync", 0.0), *warm_row, ("os", 0.0)]:
            store = SQLiteStore(
                Path(d) / f"{durability}-{warm}.db", durability=durability, warm_disk_ms=warm
            )
            name = f"SQLite, durability {durability}" + (f", warm {warm:g} ms" if warm else "")
            rows.append((name, await measure(store, args.n, args.gap / 1e3, args.events)))
    if args.pg:
        import asyncpg

        from palimpsest.store.postgres import PostgresStore

        for durability in ("fsync", "os"):
            schema = f"append_bench_{uuid.uuid4().hex[:10]}"
            sep = "&" if "?" in args.pg else "?"
            pg = PostgresStore(f"{args.pg}{sep}schema={schema}", durability=durability)
            try:
                rows.append(
                    (
                        f"PostgreSQL, durability {durability}",
                        await measure(pg, args.n, args.gap / 1e3, args.events),
                    )
                )
            finally:
                conn = await asyncpg.connect(args.pg)
                try:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                finally:
                    await conn.close()
    cols = ("p50", "p90", "p99", "p99.9", "max", "stalls", "held max")
    head = f"{'store':32s} " + " ".join(f"{c:>9s}" for c in cols)
    print(f"{head}  (µs per append of {args.events}, n={args.n}, gap {args.gap:g} ms;")
    print(f"{'':32s} stalls: times the loop was held over {STALL_US / 1000:g} ms)")
    for name, (xs, lates) in rows:
        stalls = sum(1 for x in lates if x > STALL_US)
        figures = (pct(xs, 50), pct(xs, 90), pct(xs, 99), pct(xs, 99.9), xs[-1])
        print(
            f"{name:32s} " + " ".join(f"{x:9.0f}" for x in figures)
            + f" {stalls:9d} {max(lates, default=0.0):9.0f}"
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
