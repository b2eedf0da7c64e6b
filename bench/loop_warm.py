#!/usr/bin/env python3
"""Would touching a commit's code paths on the event loop's thread, while it waits for
the next keystroke, make that keystroke's commit cheaper? (Issue 14: a lone edit's
commit after 20 ms of idle costs several times its back-to-back cost, bench/wake_cost.py.)

    .venv/bin/python bench/loop_warm.py              # 200 appends per run, 3 rounds
    .venv/bin/python bench/loop_warm.py --n 300 --rounds 4

Each run is a new SQLiteStore as the server opens it (durability fsync, the disk warmer
at 2 ms), 50 appends to start, then ``--n`` appends of one keystroke's event, each after
20 ms of idle spent in ten 2 ms sleeps. Between the sleeps, on the same thread:

    plain           nothing (the server today)
    select          a read on the writer's connection (SQLite's code, the WAL index's
                    read lock)
    select+pwrite   that, and a 4 KB write into a scratch file's page cache (the file
                    write path, without a sync)
    begin-rollback  BEGIN IMMEDIATE and ROLLBACK on the writer's connection (the write
                    lock's system calls) and the 4 KB write

The variants alternate within each round; it prints each run's p50 and p90 (µs).
Found on 4 Dec 2026 (bench/notes.md): no variant moved the p50 beyond the run-to-run
spread, so the server does not do this.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parent))

from append_latency import UPDATE  # noqa: E402

VARIANTS = ("plain", "select", "select+pwrite", "begin-rollback")


def _touch(variant: str, conn: Any, scratch: int, i: int) -> None:
    if variant == "plain":
        return
    if variant == "begin-rollback":
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    else:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    if variant != "select":
        os.pwrite(scratch, b"y" * 4096, 4096 * (i % 8))


async def run(variant: str, d: Path, n: int) -> list[float]:
    store = SQLiteStore(str(d / f"{variant}-{time.time_ns()}.db"), warm_disk_ms=2)
    batch = [NewEvent("bench", "edit", UPDATE, {"conn": "bench/1"}, 1)]
    scratch = os.open(d / "scratch.bin", os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(scratch, b"\0" * 65536, 0)
    out: list[float] = []
    try:
        async with store:
            writer: Any = store._writer
            conn = writer._conn  # the connection the inline commit runs on
            for _ in range(50):
                await store.append([("doc", batch)])
            for i in range(n):
                for _ in range(10):  # 20 ms of idle, as the fan-out's writer leaves
                    await asyncio.sleep(0.002)
                    _touch(variant, conn, scratch, i)
                t0 = time.perf_counter()
                await store.append([("doc", batch)])
                out.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(scratch)
    return sorted(out)


HERE = Path(__file__).resolve().parent


async def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=200, help="appends per run (default 200)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every variant")
    args = ap.parse_args()
    res: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        for r in range(args.rounds):
            for v in VARIANTS:
                print(f"  round {r + 1}/{args.rounds}: {v} ...", end="\r", file=sys.stderr)
                xs = await run(v, Path(tmp), args.n)
                res[v].append((statistics.median(xs), xs[int(0.9 * len(xs))]))
    print(" " * 50, end="\r", file=sys.stderr)
    print(f"µs per append after 20 ms of idle, n={args.n} per run, one column per round")
    for v in VARIANTS:
        p50 = " ".join(f"{a:5.0f}" for a, _ in res[v])
        p90 = " ".join(f"{b:5.0f}" for _, b in res[v])
        print(f"{v:15s} p50 {p50}   p90 {p90}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
