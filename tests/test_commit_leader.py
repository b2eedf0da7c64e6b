"""Group commit with a leading caller (server/commit.py): a lone append is committed on its
caller's own task at once (after one turn of the loop, in which appends of other tasks
join it); appends made while a transaction is in flight share the next one; stopping
waits for a transaction a caller is running. Real SQLite files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from palimpsest.commit import Committer
from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore


def ev(i: int) -> NewEvent:
    return NewEvent("ann", "edit", f"u{i}".encode(), {}, i)


async def test_a_lone_append_commits_alone_and_a_burst_shares_commits(tmp_path: Path) -> None:
    batches: list[int] = []
    store = SQLiteStore(tmp_path / "p.db")
    async with store, Committer(store, on_batch=lambda n, _s: batches.append(n)) as committer:
        for i in range(3):  # one at a time: each is its own transaction, at once
            [stored] = await committer.append("solo", [ev(i)])
            assert stored.seq == i + 1
        assert batches == [1, 1, 1]
        batches.clear()
        # 40 documents at once: the first caller leads, after one turn of the loop in
        # which the others queue; they share its transaction (or the following ones)
        results = await asyncio.gather(*(committer.append(f"d{i}", [ev(i)]) for i in range(40)))
        assert [[(e.doc, e.seq) for e in r] for r in results] == [[(f"d{i}", 1)] for i in range(40)]
        assert sum(batches) == 40
        assert len(batches) < 40 and max(batches) > 1, batches
        positions = [r[0].pos for r in results]
        assert positions == sorted(positions) and len(set(positions)) == 40


async def test_stop_waits_for_a_transaction_a_caller_leads(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    async with store:
        committer = Committer(store)
        await committer.start()
        lead = asyncio.create_task(committer.append("d", [ev(1)]))
        await asyncio.sleep(0)  # the caller leads: its transaction is on the writer thread
        assert committer._busy
        await asyncio.wait_for(committer.stop(), 10)  # does not hang on the leader
        [stored] = await lead
        assert stored.seq == 1
        assert [e.update for e in await store.read("d")] == [b"u1"]
