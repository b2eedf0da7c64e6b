#!/usr/bin/env python3
"""Appends while the store's upkeep writes: what sealing and snapshots cost live edits.

    .venv/bin/python bench/upkeep_contention.py [--appends 800] [--runs 2]
    PYTHONPATH=/tmp/old/pkg .venv/bin/python bench/upkeep_contention.py   # another tree

One `SQLiteStore` (durability fsync, a fresh file per run). First 30,000 events are
appended to a document "big", then a writer appends batches of 12 events to another
document, one at a time, 0.3 ms apart (as the two-writer replay's commits come), while
an upkeep task seals "big" (1,024-event segments) and writes 300 kB snapshots, as a
server does after an ingest. Printed per run: the appends' p50 / p90 / p99 / max in ms,
their total, and how many upkeep writes ran meanwhile; each run with upkeep follows
one without it. The server's writer lets appends go ahead of upkeep
(server/store/sqlite.py, BACKGROUND_GRACE); a tree from before that runs them in the
order they came.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore

#: one typed character's update, as a Yjs client sends it
UPDATE = b"\x01\x01\xb9\xe3\xa4\x8a\x0c\x00\x04\x01\x07content\x01a\x00"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


async def one_run(appends: int, upkeep: bool) -> tuple[list[float], int]:
    """ms per append, and the upkeep writes that ran while they did."""
    with tempfile.TemporaryDirectory() as d:
        async with SQLiteStore(str(Path(d) / "upkeep.db"), durability="fsync") as store:
            big = [NewEvent("bench", "edit", UPDATE * 3, {"conn": "b/1"}, 1)] * 500
            for _ in range(60):
                await store.append([("big", big)])
            batch = [NewEvent("bench", "edit", UPDATE, {"conn": "b/1"}, 1)] * 12
            stop = False

            async def keep_up() -> None:
                i = 0
                while not stop:
                    if i % 2 == 0:
                        if not await store.seal("big", run=1024):
                            await asyncio.sleep(0.005)
                    else:
                        await store.put_snapshot("big", 1000 + i, os.urandom(300_000))
                    i += 1

            task = asyncio.create_task(keep_up()) if upkeep else None
            out = []
            try:
                for _ in range(appends):
                    t0 = time.perf_counter()
                    await store.append([("doc", batch)])
                    out.append((time.perf_counter() - t0) * 1e3)
                    await asyncio.sleep(0.0003)
                # what upkeep wrote meanwhile: sealed segments and snapshots
                ((segs, snaps),) = await store._fetchall(
                    "SELECT (SELECT COUNT(*) FROM segments), (SELECT COUNT(*) FROM snapshots)"
                )
                during = int(segs) + int(snaps)
            finally:
                stop = True
                if task is not None:
                    await task
            return out, during


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--appends", type=int, default=800)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    for r in range(args.runs):
        for upkeep in (False, True):
            xs, writes = await one_run(args.appends, upkeep)
            label = "with upkeep" if upkeep else "alone      "
            print(
                f"run {r + 1} {label} p50 {pct(xs, 50):.2f} p90 {pct(xs, 90):.2f} "
                f"p99 {pct(xs, 99):.2f} max {max(xs):.1f} ms, total {sum(xs) / 1e3:.2f} s, "
                f"upkeep writes meanwhile {writes}",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
