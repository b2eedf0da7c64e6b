"""Ingest CPU in process: the event loop's CPU per event for a real trace fed to a room.

A `Backend` with its built-in extensions (undo, snapshots, sealing, metrics, the
changefeed…) over a real SQLite file; one writer's keystroke updates (the first N
transactions of a trace, as `bench/backbone.py` encodes them) handed to the room in
bursts, as a pipelined client's frames arrive, each burst flushed (logged, applied). No
sockets: what this measures is the room, ownership, undo, the no-op rule and the store's
calls on the event loop's thread (`time.thread_time`), which is less noisy on a shared
machine than the whole process's CPU through real sockets (`bench/backbone.py`).

    .venv/bin/python bench/ingest_cpu.py [--trace automerge-paper] [--limit 20000] [--runs 3]

Prints main-thread µs per event per run and their range.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backbone as B  # noqa: E402  (bench/backbone.py: the trace encoding)

from palimpsest.backend import Backend  # noqa: E402
from palimpsest.settings import Settings  # noqa: E402
from palimpsest.store.sqlite import SQLiteStore  # noqa: E402


class Peer:
    """The room's side of a connection: a name, nothing sent (no observer)."""

    def __init__(self, pid: str, actor: str) -> None:
        self.id, self.actor = pid, actor

    def send(self, frame: bytes) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        raise RuntimeError(f"the room closed the writer: {code} {reason}")


async def one_run(updates: list[bytes], burst: int, label: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        backend = Backend(Settings(), SQLiteStore(str(Path(tmp) / "ingest.db")), None)
        async with backend:
            room = await backend.rooms.get("doc")
            peer = Peer("writer-1", "writer")
            c0 = time.thread_time()
            for i in tqdm(range(0, len(updates), burst), desc=label, unit="burst", leave=False):
                for u in updates[i : i + burst]:
                    if not room.receive_update(peer, u):
                        raise RuntimeError(f"update {i} was judged a no-op")
                await room.flush()
            cpu = time.thread_time() - c0
            if room.seq != len(updates):
                raise RuntimeError(f"{room.seq} events logged, {len(updates)} sent")
    return cpu / len(updates) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default="automerge-paper")
    ap.add_argument("--limit", type=int, default=20000, help="the first N transactions")
    ap.add_argument("--burst", type=int, default=512, help="updates per flush")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    txns, _ = B.load_trace(args.trace, args.limit)
    updates, _ = B.make_updates(txns)
    got = []
    for r in range(args.runs):
        us = asyncio.run(one_run(updates, args.burst, f"run {r + 1}/{args.runs}"))
        print(f"run {r + 1}: {us:.1f} µs of event-loop CPU per event ({len(updates)} events)")
        got.append(us)
    print(f"range: {min(got):.1f}–{max(got):.1f} µs per event")


if __name__ == "__main__":
    main()
