#!/usr/bin/env python3
"""Serial appends/s on PostgreSQL with and without the docs_name_c index (the document
list's name ranges), and whether the docs row's updates stay HOT.

    .venv/bin/python bench/pg_docs_index.py postgresql://postgres@127.0.0.1/dev2_bench

Each run: a fresh schema, 10,000 documents, then ``--n`` appends of one small event to
one document, each awaited before the next (a lone typist's commits), with the index
(as the server creates it) and with it dropped. Prints appends/s and the share of the
docs table's updates that were HOT.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg

from palimpsest.store.base import NewEvent
from palimpsest.store.postgres import PostgresStore

UPDATE = b"\x01\x01\xb9\xe3\xa4\x8a\x0c\x00\x04\x01\x07content\x01a\x00"


async def run(url: str, n: int, index: bool) -> tuple[float, float]:
    schema = f"dev2_b_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(f"{url}?schema={schema}")
    conn = await asyncpg.connect(url)
    try:
        async with store:
            for i in range(0, 10_000, 1000):
                await store.append([(f"d{j:05d}", [NewEvent("a", "edit", UPDATE)])
                                    for j in range(i, i + 1000)])  # fmt: skip
            if not index:
                await conn.execute(f'DROP INDEX "{schema}".docs_name_c')
            await conn.execute(f'VACUUM ANALYZE "{schema}".docs')
            before = await conn.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE schemaname = $1 AND relname = 'docs'", schema)  # fmt: skip
            t0 = time.perf_counter()
            for _ in range(n):
                await store.append([("d04242", [NewEvent("a", "edit", UPDATE)])])
            rate = n / (time.perf_counter() - t0)
        await asyncio.sleep(1)  # the statistics collector
        after = await conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE schemaname = $1 AND relname = 'docs'", schema)  # fmt: skip
        upd = after[0] - before[0]
        return rate, (after[1] - before[1]) / upd if upd else 0.0
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for i in range(args.runs):
        for index in (False, True):
            rate, hot = asyncio.run(run(args.url, args.n, index))
            label = "with docs_name_c" if index else "without index  "
            print(f"run {i + 1} {label}: {rate:.0f} appends/s, HOT {hot:.0%}", flush=True)


if __name__ == "__main__":
    main()
