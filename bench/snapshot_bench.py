"""Snapshot storage, any version, and blame on a cold server: before and after, one run.

Writes a trace (default automerge-paper, 259,778 keystroke events by three authors
taking turns, see history_bench.trace_events) into two SQLite files, with snapshots
where the server's policy takes them (every ``--every`` events once the edits amount
to a quarter of the last snapshot), each carrying the undo stacks and the owner map a
live room would write (folded with the real recorder, one pass):

- ``before``: every snapshot kept, rows as schema 1-3 wrote them (raw state, JSON meta);
- ``after``: rows packed (zlib of state + meta, see store/snapshot_codec.py), then the
  retention ladder (server/retention.py) applied for each ``--gaps`` value in turn.

Then, in process (store reads included): any version at ``--samples`` random seqs
(p50/p99; before: one-by-one replay, as the code before; after: merged replay), the
first blame (builds the attribution index from the whole log), and blame and a diff on
a cold backend (a new one over the same file) that reads the stored index.

    .venv/bin/python bench/snapshot_bench.py [--trace automerge-paper] [--limit N]
        [--samples 200] [--gaps 4000,8000,16000] [--plot bench/snapshots.png]

Traces: data/traces (josephg/editing-traces, CC BY 4.0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import os
import random
import sqlite3
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("history_bench", ROOT / "bench" / "history_bench.py")
assert _spec is not None and _spec.loader is not None
hb = importlib.util.module_from_spec(_spec)
sys.modules["history_bench"] = hb
_spec.loader.exec_module(hb)

from palimpsest.backend import Backend  # noqa: E402
from palimpsest.commit import Committer  # noqa: E402
from palimpsest.history import attribution_codec as codec  # noqa: E402
from palimpsest.history import history_of  # noqa: E402
from palimpsest.ownership import Owners  # noqa: E402
from palimpsest.retention import Retention, prune  # noqa: E402
from palimpsest.room import Room, replay  # noqa: E402
from palimpsest.settings import Settings  # noqa: E402
from palimpsest.snapshots import load, new_doc, server_client_id  # noqa: E402
from palimpsest.store.base import NewEvent, checksum, dump_meta  # noqa: E402
from palimpsest.store.sqlite import SQLiteStore  # noqa: E402
from palimpsest.undo.recorder import RoomUndo  # noqa: E402

DOC = "paper"
#: the meta JSON of the `before` snapshots, each compressed alone (zlib 6)
META_PACKED = 0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(xs: list[float]) -> str:
    p50, p99, top = pct(xs, 50) * 1e3, pct(xs, 99) * 1e3, max(xs) * 1e3
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.1f} ms"


_shown: dict[str, int] = {}


def progress(what: str, i: int, n: int) -> None:
    """One line per task, redrawn at each 5 % (stderr)."""
    step = i * 20 // max(n, 1)
    if _shown.get(what) == step and i < n:
        return
    _shown[what] = step if i < n else -1
    print(f"\r  {what}: {i}/{n}", end="" if i < n else "\n", file=sys.stderr, flush=True)


async def write_both(
    events: list[NewEvent], before: SQLiteStore, after: SQLiteStore, every: int, cap: int
) -> tuple[int, int, int]:
    """Append the log to both stores and take the policy's snapshots, with undo stacks
    and owners folded by the real recorder: `before` where the policy took them before
    (every `every` events once the edits amount to a quarter of the last snapshot),
    `after` where it takes them now (also whenever `cap` events passed: the ladder's
    gap). Returns (snapshots, meta JSON bytes, state bytes) written to `before`."""
    settings = Settings()
    doc = new_doc(DOC)
    room = Room(DOC, doc, 0, committer=Committer(after), reader=after)
    undo = RoomUndo(
        room, settings.undo_capture_ms, settings.undo_max_depth, settings.undo_max_group
    )
    owners = Owners(server_client_id(DOC))
    since = since_bytes = last_bytes = 0
    a_since = a_bytes = a_last = 0
    n = meta_bytes = state_bytes = 0
    global META_PACKED
    for i in range(0, len(events), 1000):
        chunk = events[i : i + 1000]
        [stored] = await before.append([(DOC, chunk)])
        await after.append([(DOC, chunk)])

        def on_event(ev: Any) -> None:
            room.seq = ev.seq
            room.current_ts = ev.ts
            undo.record(ev, *undo.take())

        for ev in stored:
            replay(doc, [ev], on_event)
            owners.record(ev.actor, ev.update)
            since += 1
            since_bytes += len(ev.update)
            a_since += 1
            a_bytes += len(ev.update)
            # SnapshotPolicy now: the same, or at the latest after `cap` events
            if a_since >= every and (a_bytes >= 0.25 * a_last or a_since >= cap):
                state = doc.get_update()
                meta = {"undo": undo.to_meta(), "owners": owners.to_meta()}
                await after.put_snapshot(DOC, ev.seq, state, meta)
                a_since = a_bytes = 0
                a_last = len(state)
            # SnapshotPolicy before: every `every` events, once the edits are worth a quarter
            if since >= every and since_bytes >= 0.25 * last_bytes:
                state = doc.get_update()
                meta = {"undo": undo.to_meta(), "owners": owners.to_meta()}
                text = dump_meta(meta)
                row = (DOC, ev.seq, 0, state, f"{checksum(state)}:{checksum(text.encode())}", text)

                def insert(c: sqlite3.Connection, row: tuple[Any, ...] = row) -> sqlite3.Cursor:
                    return c.execute(
                        "INSERT INTO snapshots (doc, seq, ts, state, checksum, meta) "
                        "VALUES (?,?,?,?,?,?)",
                        row,
                    )

                await before.on_writer(insert)
                n += 1
                meta_bytes += len(text)
                META_PACKED += len(zlib.compress(text.encode(), 6))
                state_bytes += len(state)
                since = since_bytes = 0
                last_bytes = len(state)
        progress("log and snapshots", min(i + 1000, len(events)), len(events))
    return n, meta_bytes, state_bytes


def snapshot_bytes(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        n, size = db.execute(
            "SELECT COUNT(*), SUM(LENGTH(state) + LENGTH(meta) + LENGTH(checksum)) FROM snapshots"
        ).fetchone()
    return int(n), int(size or 0)


#: CPU time of the last versions() run (all threads: SQLite's reader too), per seq
CPU: list[float] = []


async def versions(store: SQLiteStore, seqs: list[int], one_by_one: bool) -> list[float]:
    out = []
    CPU.clear()
    for i, s in enumerate(seqs):
        c = time.process_time()
        t = time.perf_counter()
        if one_by_one:  # a per-event hook: the replay the code did before (one by one)
            loaded = await load(store, DOC, upto=s, on_event=lambda e: None)
        else:
            loaded = await load(store, DOC, upto=s)
        loaded.doc.get_update()
        out.append(time.perf_counter() - t)
        CPU.append(time.process_time() - c)
        progress("versions", i + 1, len(seqs))
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default="automerge-paper")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--gaps", default="4000,8000,16000")
    ap.add_argument("--keep-recent", type=int, default=3)
    ap.add_argument("--key-every", type=int, default=Retention().key_every)
    ap.add_argument("--plot", default=None, help="write a PNG of bytes vs any-version p99")
    ap.add_argument("--dir", default=None, help="keep the databases here")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    gaps = [int(g) for g in args.gaps.split(",") if g]

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.dir or tmp)
        d.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before anything runs)
        for f in d.glob("*.db*"):  # noqa: ASYNC240
            f.unlink()
        t = time.perf_counter()
        events, _final = hb.trace_events(args.trace, args.limit)
        raw = sum(len(e.update) for e in events)
        print(f"{args.trace}: {len(events)} events, {raw} raw update bytes "
              f"({time.perf_counter() - t:.1f} s to generate)")  # fmt: skip
        before_path, after_path = d / "before.db", d / "after.db"
        async with SQLiteStore(before_path) as before, SQLiteStore(after_path) as after:
            n, meta_bytes, state_bytes = await write_both(
                events, before, after, args.every, min(gaps)
            )
        print(f"{n} snapshots as the policy takes them: states {state_bytes} bytes, "
              f"meta JSON (undo stacks + owners) {meta_bytes} bytes, "
              f"{META_PACKED} compressed alone")  # fmt: skip
        b_count, b_bytes = snapshot_bytes(before_path)
        a_count, a_bytes = snapshot_bytes(after_path)
        print(f"before (raw rows, all kept): {b_count} snapshots, {b_bytes} bytes "
              f"({b_bytes / raw:.2f}x the raw updates)")  # fmt: skip
        print(f"after, policy capped at {min(gaps)} events, packed (zlib), all kept: "
              f"{a_count} snapshots, {a_bytes} bytes "
              f"({a_bytes / raw:.2f}x; {a_bytes / b_bytes:.2f} of before)")  # fmt: skip

        head = len(events)
        del events  # the bench's own 260k objects would make the GC's passes ours
        gc.collect()
        rng = random.Random(1)
        seqs = [rng.randint(0, head) for _ in range(args.samples)]
        rows: list[tuple[str, int, int, float, float, float]] = []
        async with SQLiteStore(before_path) as store:
            v = await versions(store, seqs, one_by_one=True)
        print(f"any version, before (all snapshots, one-by-one replay): {ms(v)}; CPU {ms(CPU)}")
        rows.append(("before", b_count, b_bytes, pct(v, 50), pct(v, 99), pct(CPU, 99)))
        async with SQLiteStore(after_path) as store:
            v = await versions(store, seqs, one_by_one=False)
            print(f"any version, after, all kept (merged replay): {ms(v)}; CPU {ms(CPU)}")
            rows.append(("after, all kept", a_count, a_bytes, pct(v, 50), pct(v, 99), pct(CPU, 99)))
        default_gap = Retention().max_gap
        ladder_path = after_path
        for gap in gaps:
            path = d / f"ladder-{gap}.db"
            with (
                contextlib.closing(sqlite3.connect(after_path)) as src,
                contextlib.closing(sqlite3.connect(path)) as dst,
            ):
                src.backup(dst)
            async with SQLiteStore(path) as store:
                t = time.perf_counter()
                await prune(store, DOC, Retention(args.keep_recent, gap, key_every=args.key_every))
                dt = time.perf_counter() - t
                c, size = snapshot_bytes(path)
                deltas = sum(1 for i in await store.snapshots(DOC) if i.delta_of)
                v = await versions(store, seqs, one_by_one=False)
            print(f"ladder max_gap {gap} (key every {args.key_every}): {c} snapshots ({deltas} "
                  f"differences), {size} bytes ({size / raw:.2f}x the raw updates; pruned in "
                  f"{dt:.1f} s), any version {ms(v)}; CPU {ms(CPU)}")  # fmt: skip
            rows.append((f"ladder {gap}", c, size, pct(v, 50), pct(v, 99), pct(CPU, 99)))
            if gap == default_gap:
                ladder_path = path

        # blame: the first build (what every cold server paid before), then cold ones,
        # on the default ladder
        settings = Settings(db=str(ladder_path))
        print(f"blame on {ladder_path.name}")
        async with Backend(settings) as backend:
            h = history_of(backend)
            info = await h.info(DOC)
            t = time.perf_counter()
            await h.blame(DOC, head, info, None)
            build = time.perf_counter() - t
            await h.attribution.drain()
            stored = await backend.store.derived(DOC, codec.KIND)
            assert stored is not None
            print(f"first blame (builds the index from the whole log): {build:.1f} s; "
                  f"stored index {len(stored[1])} bytes")  # fmt: skip
        cold_blame, cold_diff, one_version = [], [], []
        for i in range(5):
            async with Backend(settings) as backend:
                h = history_of(backend)
                info = await h.info(DOC)
                t = time.perf_counter()
                await h.version(DOC, seqs[i] or head)
                one_version.append(time.perf_counter() - t)
                t = time.perf_counter()
                await h.blame(DOC, seqs[i] or head, info, None)
                cold_blame.append(time.perf_counter() - t)
                t = time.perf_counter()
                await h.diff(DOC, seqs[i + 5] // 2, seqs[i + 5], info, None)
                cold_diff.append(time.perf_counter() - t)
                assert not h.attribution.builds, "the cold server rebuilt the index"
            progress("cold servers", i + 1, 5)
        ratio = pct(cold_blame, 50) / pct(one_version, 50)
        print(f"cold blame (reads the stored index): {ms(cold_blame)}")
        print(f"diff right after, same cold server: {ms(cold_diff)}")
        print(f"one version (the same seq, same cold servers, just before): {ms(one_version)}; "
              f"cold blame / version "
              f"= {ratio:.1f}x (p50s); first build / cold blame = "
              f"{build / pct(cold_blame, 50):.0f}x")  # fmt: skip

        if args.plot:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(7, 4))
            for i, (name, _c, size, p50, p99, cpu99) in enumerate(rows):
                color = f"C{i}"
                ax.scatter(size / 1e6, p99 * 1e3, s=30, color=color)
                ax.scatter(size / 1e6, cpu99 * 1e3, s=30, facecolors="none", edgecolors=color)
                ax.plot([size / 1e6] * 2, [cpu99 * 1e3, p99 * 1e3], color=color, lw=0.6)
                ax.annotate(f"{name} (p50 {p50 * 1e3:.0f})", (size / 1e6, p99 * 1e3),
                            fontsize=8, xytext=(4, 4), textcoords="offset points")  # fmt: skip
            ax.axhline(50, color="grey", lw=0.8, ls="--")
            ax.set_xscale("log")
            ax.set_xlabel("snapshot bytes stored (MB, log scale)")
            ax.set_ylabel("any version, p99 (ms): wall (filled), CPU (hollow)")
            ax.set_title(f"{args.trace}: snapshots kept vs any-version latency ({len(seqs)} seqs)")
            fig.tight_layout()
            fig.savefig(args.plot, dpi=110)
            print(f"plot: {args.plot}")


if __name__ == "__main__":
    asyncio.run(main())
