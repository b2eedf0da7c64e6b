#!/usr/bin/env python3
"""What SQLite's ``PRAGMA secure_delete`` costs the write path (appends and sealing).

    .venv/bin/python bench/secure_delete_cost.py [--n 3000] [--docs 20] [--rounds 3]

For secure_delete OFF and ON, alternately, ``--rounds`` times, on a fresh file each time
(durability os and fsync): ``--n`` appends of one typed character's update spread over
``--docs`` documents, one at a time, each awaited (µs per append: p50 / p99 / mean);
then every document sealed (``seal_due``: the tail rows deleted, segments written; ms in
all), then one document deleted (ms). The store is the
server's (``SQLiteStore``); only the pragma differs (set on the write connection after
start, which is where it acts). With ON, SQLite zeroes each deleted cell in its page and
each page it frees, so a seal writes its freed pages too.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore

UPDATE = b"\x01\x01\xb9\xe3\xa4\x8a\x0c\x00\x04\x01\x07content\x01a\x00"


async def once(path: Path, durability: str, on: bool, n: int, docs: int) -> dict[str, float]:
    store = SQLiteStore(path, durability=durability)
    batch = [NewEvent("bench", "edit", UPDATE, {"conn": "bench/1"})]
    async with store:
        await store.on_writer(lambda c: c.execute(f"PRAGMA secure_delete={int(on)}"))
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await store.append([(f"doc{i % docs}", batch)])
            times.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        await store.seal_due(run=64)
        seal_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        await store.delete_doc("doc0")
        delete_ms = (time.perf_counter() - t0) * 1e3
    times.sort()
    return {
        "p50": times[len(times) // 2],
        "p99": times[int(len(times) * 0.99)],
        "mean": statistics.fmean(times),
        "seal_ms": seal_ms,
        "delete_ms": delete_ms,
    }


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for durability in ("os", "fsync"):
        results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for on in (False, True):
                    path = Path(tmp) / f"{durability}-{on}-{r}.db"
                    results[on].append(await once(path, durability, on, args.n, args.docs))
        for on, runs in results.items():
            med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
            print(f"{durability:5} secure_delete={'ON ' if on else 'OFF'} append µs p50 "
                  f"{med['p50']:7.0f} p99 {med['p99']:7.0f} mean {med['mean']:7.0f} | "
                  f"seal_due {med['seal_ms']:6.1f} ms | "
                  f"delete {med['delete_ms']:5.1f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
