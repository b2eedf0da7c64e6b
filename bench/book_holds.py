"""The longest single hold of the event loop, per case, on a book-length manuscript.

The book: automerge-paper (data/traces) typed twelve times as twelve chapters, each in
front of the ones before, by three authors taking turns (each its own Yjs client), 30 of the trace's
transactions to an event: 103,920 events, 1,258,224 characters, a snapshot every 3,000
events written as a fold of the log with no meta (as a log written before the marks and
the surrogate split points were kept in snapshot meta). Built once and kept (``--cache``);
each run works on a copy.

A server runs in this process, on this loop; a probe sleeps 10 ms at a time and notes how
late it wakes (a hold). Then, over HTTP, as a user would:

- ``restore``: POST restore of the book to the middle of its history (loads the room: the
  undo recorder's scan for formatting marks, ``_only_marks``, is in it);
- ``undo``: POST undo of that restore (counting what it put back, ``removed.change_of``);
- ``snapshot``: the snapshot written after it as the room goes quiet (its meta's
  split points, ``surrogates.known``) and the room's unload (1 s idle);
- ``refresh``: the attribution index's background refresh after the unload, folding the
  restore and its undo (``attribution._matched``).

Each case's longest hold is printed, and where the stall watch (40 ms) saw the loop for
the longest ones.

    .venv/bin/python bench/book_holds.py [--runs 3] [--cache /tmp/book.db] [--port 22400]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text, TransactionEvent

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import loop_probe  # noqa: E402  (bench/loop_probe.py)

from palimpsest.snapshots import new_doc  # noqa: E402
from palimpsest.store.base import EventStore, NewEvent  # noqa: E402

TRACE = ROOT / "data" / "traces" / "sequential_traces" / "automerge-paper.json.gz"
ACTORS = ("alice", "bob", "carol")
DOC = "book"
CHAPTERS = 12
PER_EVENT = 30
SNAPSHOT_EVERY = 3000
PROBE_S = 0.010


def book_events(chapters: int = CHAPTERS, seed: int = 7) -> tuple[list[NewEvent], int]:
    """The book's events and its final length (the trace is ASCII: bytes are characters)."""
    with gzip.open(TRACE) as f:
        txns = json.load(f)["txns"]
    rng = random.Random(seed)
    docs: dict[str, Doc[Any]] = {a: Doc(client_id=1000 + i) for i, a in enumerate(ACTORS)}
    texts = {a: docs[a].get("content", type=Text) for a in ACTORS}
    captured: list[bytes] = []

    def capture(e: TransactionEvent) -> None:
        captured.append(e.update)

    for d in docs.values():
        d.observe(capture)
    events: list[NewEvent] = []
    author, left, turns, length, i = ACTORS[0], rng.randint(1, 14), 0, 0, 0
    t0 = time.perf_counter()
    for chapter in range(chapters):
        print(f"  chapter {chapter + 1}: {time.perf_counter() - t0:.0f} s", flush=True)
        # each chapter typed before the ones typed already (the last first): an insert at
        # an index walks yrs's items from the document's start, only the chapter's then
        base = 0
        for k in range(0, len(txns), PER_EVENT):
            if left == 0:
                prev, author = author, rng.choice([a for a in ACTORS if a != author])
                docs[author].apply_update(docs[prev].get_update(docs[author].get_state()))
                captured.clear()
                left, turns = rng.randint(1, 14), turns + 1
            left -= 1
            text = texts[author]
            with docs[author].transaction():
                for txn in txns[k : k + PER_EVENT]:
                    for pos, ndel, ins in txn["patches"]:
                        if ndel:  # (ASCII: the trace's positions are pycrdt's bytes)
                            del text[base + pos : base + pos + ndel]
                            length -= ndel
                        if ins:
                            text.insert(base + pos, ins)
                            length += len(ins)
            ts = 1_700_000_000_000 + i * 3_000 + turns * 600_000
            meta = {"clients": [1000 + ACTORS.index(author)]}
            events.append(NewEvent(author, "edit", captured.pop(), meta, ts))
            i += 1
    return events, length


async def write_log(store: EventStore, events: list[NewEvent]) -> None:
    fold = new_doc(DOC)
    seq = 0
    for i in range(0, len(events), SNAPSHOT_EVERY):
        batch = events[i : i + SNAPSHOT_EVERY]
        await store.append([(DOC, batch)])
        for ev in batch:
            fold.apply_update(ev.update)
        seq += len(batch)
        if len(batch) == SNAPSHOT_EVERY:
            await store.put_snapshot(DOC, seq, fold.get_update(), {})


async def build(cache: str) -> None:
    from palimpsest.backend import Backend
    from palimpsest.settings import Settings

    t = time.perf_counter()
    events, length = book_events()
    print(
        f"book: {len(events)} events, {length} characters ({time.perf_counter() - t:.0f} s)",
        flush=True,
    )
    tmp = cache + ".part"
    Path(tmp).unlink(missing_ok=True)  # noqa: ASYNC240 (before the loop is busy)
    async with Backend(Settings(db=tmp)) as backend:
        await write_log(backend.store, events)
    os.replace(tmp, cache)


class Probe(loop_probe.Probe):
    """The shared probe (bench/loop_probe.py), whose case is ``refresh`` once the
    attribution index's refresh has started (whatever the run waits for then)."""

    def __init__(self) -> None:
        super().__init__(PROBE_S, "idle")
        #: the refreshes started
        self.refreshes: Callable[[], int] = lambda: 0

    def current(self) -> str | None:
        return "refresh" if self.refreshes() and self.case != "idle" else self.case


class Stalls(logging.Handler):
    """The stall watch's reports, by case: the innermost palimpsest frame of each."""

    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self.probe = probe
        self.seen: dict[str, list[str]] = {}
        self.full: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        first = text.splitlines()[0] if text else ""
        loop = text.split("--- another thread")[0].split("--- ")[1:2]  # the loop's commonest
        where = [ln.strip() for ln in "".join(loop).splitlines() if ln.strip().startswith("File")]
        where = [w.split("/palimpsest/")[-1] for w in where if "/palimpsest/" in w][-2:]
        case = self.probe.case or "idle"
        self.seen.setdefault(case, []).append(first + " | " + " < ".join(where[::-1]))
        self.full.append(f"[{case}] {text}")


async def one_run(cache: str, port: int, stalls_to: str | None) -> dict[str, float]:
    import httpx
    from conftest import run_server

    from palimpsest.history.extension import HistoryExtension, history_of
    from palimpsest.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        db = f"{tmp}/book.db"
        shutil.copy(cache, db)
        settings = Settings(
            db=db,
            port=port,
            snapshot_every=SNAPSHOT_EVERY,
            snapshot_quiet_seconds=1.0,
            unload_after_seconds=1.0,
            stall_report_ms=40.0,
        )
        probe = Probe()
        stalls = Stalls(probe)
        logging.getLogger("palimpsest.stalls").addHandler(stalls)
        logging.getLogger("palimpsest.stalls").setLevel(logging.WARNING)
        try:
            async with run_server(settings) as srv:
                with probe:
                    hist = srv.backend.extension(HistoryExtension)
                    assert hist is not None
                    probe.refreshes = lambda: hist.refreshes
                    async with httpx.AsyncClient(base_url=srv.url, timeout=600) as http:
                        last = (await history_of(srv.backend).info(DOC)).head
                        probe.case = "restore"
                        r = await http.post(
                            f"/api/docs/{DOC}/restore?user=alice", json={"seq": last // 2}
                        )
                        assert r.status_code == 200, r.text
                        probe.case = "undo"
                        r = await http.post(f"/api/docs/{DOC}/undo?user=alice")
                        assert r.status_code == 200, r.text
                        undone = r.json()
                    probe.case = "snapshot"
                    while DOC in srv.backend.rooms:  # noqa: ASYNC110 (no event to wait on)
                        await asyncio.sleep(0.05)
                    probe.case = "refresh"
                    while hist.refreshes == 0:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    await hist.drain()
                    probe.case = "idle"
        finally:
            logging.getLogger("palimpsest.stalls").removeHandler(stalls)
        print(
            f"  undo answered: removed {undone.get('removed')}, added {undone.get('added')}",
            flush=True,
        )
        for case, lines in stalls.seen.items():
            for ln in sorted(lines, key=lambda x: -float(x.split()[4]))[:3]:
                print(f"  stall [{case}] {ln}", flush=True)
        if stalls_to:
            with open(stalls_to, "a") as f:  # noqa: ASYNC230 (after the run)
                f.write("\n\n".join(stalls.full) + "\n")
        return probe.longest


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "palimpsest-book.db"))
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--stalls", help="append the stall watch's reports to this file")
    args = ap.parse_args()
    if not os.path.exists(args.cache):  # noqa: ASYNC240 (before the loop is busy)
        await build(args.cache)
    runs: list[dict[str, float]] = []
    for n in range(args.runs):
        print(f"run {n + 1} (load average {os.getloadavg()[0]:.1f})", flush=True)
        got = await one_run(args.cache, args.port or 8000, args.stalls)
        print("  " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in got.items()), flush=True)
        runs.append(got)
    print("longest single hold per case, over the runs:", flush=True)
    for case in ("restore", "undo", "snapshot", "refresh"):
        xs = [r.get(case, 0.0) * 1e3 for r in runs]
        print(f"  {case:16} {min(xs):7.0f} - {max(xs):7.0f} ms", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
