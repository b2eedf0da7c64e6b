#!/usr/bin/env python3
"""What committing to a journal of our own first would gain: an emulation, measured.

    bench/.peers/venv/bin/python bench/journal_first.py
    bench/.peers/venv/bin/python bench/journal_first.py --rounds 3 --variants loop

The fifteenth session (bench/notes.md, 3 Dec 2026) named a journal-first commit as what
would close most of the gap to the floor: append the group's events to a plain file and
`fdatasync` it, answer (so the room broadcasts), and commit SQLite (still
synchronous=FULL) after. Before building its recovery, its readers that trail the
journal and its rule for other processes, this measures the most it could gain. The
server runs through a launcher that replaces ``SQLiteStore.append`` for the appends
that commit on the event loop's thread (up to INLINE_EVENTS events, nothing queued for
the writer): BEGIN IMMEDIATE and the statements as today, then the rows' bytes written to
a preallocated slot file and `fdatasync`'d, then the events returned while the COMMIT
is still to come. The next append waits for that COMMIT first (one transaction at a
time). Variants:

    thread   the COMMIT runs on a worker thread while the loop broadcasts
    loop     the COMMIT runs on the loop's thread right after the broadcast (call_soon)
    deferred one sync per group, the slot's: the transaction stays open and takes the
             next groups' rows too (each under a SAVEPOINT), each group's record is
             appended to the slot and `fdatasync`'d before the answer, and SQLite's
             COMMIT comes JOURNAL_DEFER_MS (50) after the transaction began, on the
             loop's thread, or before any append that takes today's path. This is the
             journal as the durable log and SQLite trailing it, the design that would
             take SQLite's commit off every edit instead of adding a sync to it.

There is no recovery and nothing reads the slot: **an emulation for measuring, never a
way to run** (a crash between the slot's sync and the COMMIT would lose edits that were
broadcast). Each round runs, on fresh servers, today's commit and each variant: the
two-writer replay of friendsforever[:--limit] (seconds, server CPU per transaction,
group commits and their mean time from /metrics) and the fan-out at 1 and 10 observers
(500 edits at 50/s, p50 / p99 as the observers measured them). Then the ranges.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from concurrent_alone import one_run  # noqa: E402

import bench as B  # noqa: E402  (bench/bench.py)

#: the launcher's head; JOURNAL_VARIANT (thread, loop or deferred) is set in its environment
LAUNCHER = r"""
import asyncio, json, os, struct, sys, threading, time, zlib
import palimpsest.store.sqlite as S
VARIANT = os.environ["JOURNAL_VARIANT"]
SLOT = 1 << 20
COUNTS = {"journal": 0, "today": 0}
_today = S.SQLiteStore.append
_pending = {}  # store id -> the future of its COMMIT still to come
_slot = {}  # store id -> the slot's fd

def _fd(store):
    fd = _slot.get(id(store))
    if fd is None:
        fd = os.open(store.path + "-journal-emulated", os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(fd, b"\0" * SLOT, 0)  # written and synced once: later syncs carry data only
        os.fsync(fd)
        _slot[id(store)] = fd
    return fd

def _group(store, conn, batches):
    # the group's statements as today's append runs them, its record for the slot
    # (length, CRC and first position, then the updates' bytes), and the rows written
    written = []
    out = S._append(conn, batches, store._wsym, written)
    body = b"".join(row[6] for row in written)
    record = struct.pack("<IIq", len(body), zlib.crc32(body), written[0][2]) + body
    if len(record) > SLOT:
        raise ValueError("a group too big for the emulated slot")
    return out, record, written

async def append(self, batches):
    batches = [(doc, evs) for doc, evs in batches]
    if not any(evs for _, evs in batches):
        return [[] for _ in batches]
    before = _pending.get(id(self))
    if before is not None and not before.done():
        await before
    w = self.writer
    count = sum(len(evs) for _, evs in batches)
    if (self.durability != "fsync" or count > S.INLINE_EVENTS or w._queued != w._finished
            or not w._lock.acquire(blocking=False)):
        COUNTS["today"] += 1
        return await _today(self, batches)
    conn, handed = w._conn, False
    try:
        names = {n for _, evs in batches for e in evs for n in (e.actor, e.kind)}
        S._intern(conn, self._wsym, names)
        conn.execute("BEGIN IMMEDIATE")
        try:
            out, record, written = _group(self, conn, batches)
            fd = _fd(self)
            os.pwrite(fd, record, 0)
            os.fdatasync(fd)
        except BaseException:
            conn.execute("ROLLBACK")
            raise

        def commit():
            try:
                conn.execute("COMMIT")
            finally:
                w._lock.release()
                if w.warmer is not None:
                    w.warmer.touch()

        loop = asyncio.get_running_loop()
        if VARIANT == "thread":
            done = loop.run_in_executor(None, commit)
        else:
            done = loop.create_future()

            def later():
                try:
                    commit()
                    done.set_result(None)
                except BaseException as e:
                    done.set_exception(e)

            loop.call_soon(later)
        handed = True
        _pending[id(self)] = done
    finally:
        if not handed:
            w._lock.release()
    COUNTS["journal"] += 1
    self._recent.note(written)
    return out

DEFER = float(os.environ.get("JOURNAL_DEFER_MS", "50")) / 1000
_open = {}  # store id -> the timer of the open transaction's COMMIT (the lock is held)
_off = {}  # store id -> where the next record goes in the slot
SYNCING = [False]  # the slot's sync is under way (for the disk warmer)


def _close(store):
    # COMMIT the open transaction (deferred variant), if there is one
    timer = _open.pop(id(store), None)
    if timer is None:
        return
    timer.cancel()
    w = store.writer
    try:
        w._conn.execute("COMMIT")
    finally:
        w._lock.release()
        if w.warmer is not None:
            w.warmer.touch()


async def deferred(self, batches):
    # the group's rows go into a transaction left open for DEFER seconds; the group is
    # durable by its record in the slot (appended, fdatasync'd); the COMMIT comes later
    batches = [(doc, evs) for doc, evs in batches]
    if not any(evs for _, evs in batches):
        return [[] for _ in batches]
    w = self.writer
    count = sum(len(evs) for _, evs in batches)
    names = {n for _, evs in batches for e in evs for n in (e.actor, e.kind)}
    if self.durability != "fsync" or count > S.INLINE_EVENTS or w._queued != w._finished:
        _close(self)
        COUNTS["today"] += 1
        return await _today(self, batches)
    if self._wsym.missing_names(names):
        _close(self)  # a name's id is committed in its own transaction
    conn = w._conn
    if id(self) not in _open:
        if not w._lock.acquire(blocking=False):
            COUNTS["today"] += 1
            return await _today(self, batches)
        try:
            S._intern(conn, self._wsym, names)
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            w._lock.release()
            raise
        _open[id(self)] = asyncio.get_running_loop().call_later(DEFER, _close, self)
        if w.warmer is not None and not hasattr(w.warmer, "emulated"):
            # the open transaction holds the writer's lock, which the warmer reads as a
            # write in flight: it asks about the slot's sync instead
            w.warmer.emulated = True
            w.warmer.busy = lambda: SYNCING[0] or (id(self) not in _open and w.in_call())
    conn.execute("SAVEPOINT g")
    try:
        out, record, written = _group(self, conn, batches)
        fd = _fd(self)
        at = _off.get(id(self), 0)
        if at + len(record) > SLOT:
            at = 0
        SYNCING[0] = True
        try:
            os.pwrite(fd, record, at)
            os.fdatasync(fd)
        finally:
            SYNCING[0] = False
        if w.warmer is not None:
            w.warmer.touch()
        _off[id(self)] = at + len(record)
        conn.execute("RELEASE g")
    except BaseException:
        conn.execute("ROLLBACK TO g")
        conn.execute("RELEASE g")
        raise
    COUNTS["journal"] += 1
    self._recent.note(written)
    return out


S.SQLiteStore.append = deferred if VARIANT == "deferred" else append
OUT = os.environ["JOURNAL_COUNTS_OUT"]
"""


def launcher(work: Path, variant: str) -> Path:
    """An executable that runs `palimpsest` with the emulated commit of `variant`."""
    head = work / f"journal-{variant}.py"
    head.write_text(LAUNCHER + B.launcher_tail("COUNTS", 0.2))
    py = B.PALIMPSEST_BIN.parent / "python"
    if not py.exists():
        py = B.ROOT / ".venv" / "bin" / "python"
    path = work / f"journal-{variant}"
    path.write_text(
        "#!/bin/sh\n"
        f"JOURNAL_VARIANT={variant} JOURNAL_COUNTS_OUT={work / (variant + '.json')} "
        f'exec {py} {head} "$@"\n'
    )
    path.chmod(0o755)
    return path


def fanout(spec: B.ServerSpec, binary: Path, work: Path, observers: int,
           label: str) -> dict[str, Any]:  # fmt: skip
    B.PALIMPSEST_BIN = binary
    with B.serving(spec, Path(tempfile.mkdtemp(dir=work))) as (srv, prog):
        prog.step(f"{label}: fan-out, {observers} observers")
        return B.run_fanout(spec, srv.port, prog, doc="fan", observers=observers, rate=50,
                            edits=500)  # fmt: skip


def isolated(n: int) -> None:
    """``--isolated``: the two commits alone, in this process, interleaved: a SQLite
    append's own transaction (WAL, synchronous=FULL: BEGIN IMMEDIATE, INSERT, UPDATE,
    COMMIT) against the deferred variant's (the same statements under a SAVEPOINT of a
    transaction left open, committed every 50 ms, and a record appended to a
    preallocated slot and `fdatasync`'d), with the gaps of the replay (0.5 ms) and of
    the fan-out (20 ms) before each. p50 / p90 µs."""
    work = Path(tempfile.mkdtemp(prefix="palimpsest-journal-isolated-"))

    def database(name: str) -> sqlite3.Connection:
        c = sqlite3.connect(work / name, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("CREATE TABLE log (doc INT, seq INT, data BLOB, PRIMARY KEY (doc, seq))")
        c.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, head INT)")
        c.execute("INSERT INTO docs VALUES (1, 0)")
        for i in range(200):  # a WAL laid down, as the store's is
            c.execute("INSERT INTO log VALUES (2, ?, ?)", (i, b"x" * 100))
        c.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return c

    full, deferred = database("full.db"), database("deferred.db")
    size = 1 << 22
    slot = os.open(work / "slot", os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(slot, b"\0" * size, 0)
    os.fsync(slot)
    state = {"full": 0, "deferred": 0, "at": 0}
    opened = time.perf_counter()
    deferred.execute("BEGIN IMMEDIATE")

    def commit_full() -> None:
        state["full"] += 1
        full.execute("BEGIN IMMEDIATE")
        full.execute("INSERT INTO log VALUES (1, ?, ?)", (state["full"], b"y" * 60))
        full.execute("UPDATE docs SET head = ? WHERE id = 1", (state["full"],))
        full.execute("COMMIT")

    def commit_deferred() -> None:
        state["deferred"] += 1
        seq = state["deferred"]
        deferred.execute("SAVEPOINT g")
        deferred.execute("INSERT INTO log VALUES (1, ?, ?)", (seq, b"y" * 60))
        deferred.execute("UPDATE docs SET head = ? WHERE id = 1", (seq,))
        deferred.execute("RELEASE g")
        body = b"y" * 60
        record = struct.pack("<IIq", len(body), zlib.crc32(body), seq) + body
        if state["at"] + len(record) > size:
            state["at"] = 0
        os.pwrite(slot, record, state["at"])
        state["at"] += len(record)
        os.fdatasync(slot)

    for gap in (0.0005, 0.02):
        took: dict[str, list[float]] = {"full": [], "deferred": []}
        count = n if gap < 0.01 else max(1, n // 5)
        for i in range(count):
            pair = [("full", commit_full), ("deferred", commit_deferred)]
            for name, fn in pair if i % 2 else pair[::-1]:
                time.sleep(gap)
                t0 = time.perf_counter()
                fn()
                took[name].append(1e6 * (time.perf_counter() - t0))
                if name == "deferred" and time.perf_counter() - opened > 0.05:
                    deferred.execute("COMMIT")  # off the measured call, as the COMMIT
                    deferred.execute("BEGIN IMMEDIATE")  # after the answer would be
                    opened = time.perf_counter()

        def q(xs: list[float]) -> str:
            xs = sorted(xs)
            return f"p50 {xs[len(xs) // 2]:.0f} p90 {xs[int(len(xs) * 0.9)]:.0f}"

        print(f"{gap * 1000:4.1f} ms before each, {count} each: SQLite's commit "
              f"{q(took['full'])} µs; statements in an open transaction and the slot's "
              f"sync {q(took['deferred'])} µs", flush=True)  # fmt: skip
    deferred.execute("COMMIT")
    for c in (full, deferred):
        c.close()
    os.close(slot)
    shutil.rmtree(work)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="thread,loop")
    ap.add_argument("--limit", type=int, default=10000, help="the replay's first N txns")
    ap.add_argument("--isolated", type=int, metavar="N", default=0,
                    help="only the two commits alone, N of each (see isolated())")  # fmt: skip
    args = ap.parse_args()
    if args.isolated:
        isolated(args.isolated)
        return 0
    work = Path(tempfile.mkdtemp(prefix="palimpsest-journal-"))
    spec = B.SERVERS["palimpsest"]
    today = B.PALIMPSEST_BIN
    variants = [("today", today)] + [(v, launcher(work, v)) for v in args.variants.split(",") if v]
    trace = B.TRACES / "concurrent_traces" / "friendsforever.json.gz"
    got: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for r in range(args.rounds):
        for name, binary in variants:
            label = f"round {r + 1}, {name}"
            counts = work / f"{name}.json"  # the launcher's COUNTS, written every 0.2 s
            counts.unlink(missing_ok=True)
            res = one_run(spec, binary, trace, args.limit, work, label)
            if res.get("seconds") is None or not res.get("correct"):
                print(f"{label}: replay failed: {res.get('error') or 'wrong text'}", flush=True)
            else:
                m = res.get("metrics", {})
                commits = m.get("commit_batch_events_count", 0)
                mean = 1e6 * m.get("commit_batch_seconds_sum", 0) / max(1, commits)
                cpu = 1e6 * res["cpu_seconds"] / res["txns"]
                got.setdefault((name, "replay"), []).append((res["seconds"], cpu, mean))
                print(f"{label:<20} replay {res['seconds']:.2f} s, {cpu:.0f} µs CPU/txn, "
                      f"{commits:.0f} commits, {mean:.0f} µs each", flush=True)  # fmt: skip
                if counts.exists():  # that the emulation did commit (most of) the replay
                    c = json.loads(counts.read_text())
                    print(f"{'':<20} appends through the slot {c['journal']}, by today's "
                          f"commit {c['today']} (as of the launcher's last write)")  # fmt: skip
            for n in (1, 10):
                fan = fanout(spec, binary, work, n, label)
                if fan.get("p50") is None:
                    print(f"{label}: fan-out failed: {fan.get('error')}", flush=True)
                    continue
                got.setdefault((name, f"fan-out {n}"), []).append((fan["p50"], fan["p99"]))
                print(f"{label:<20} fan-out {n:>2} observers p50 {fan['p50']:.2f} "
                      f"p99 {fan['p99']:.2f} ms", flush=True)  # fmt: skip
    B.PALIMPSEST_BIN = today
    print()
    for scenario in ("replay", "fan-out 1", "fan-out 10"):
        base = got.get(("today", scenario))
        for name, _ in variants:
            runs = got.get((name, scenario))
            if not runs:
                continue
            first = [x[0] for x in runs]
            ratio = ""
            if base and name != "today":
                ratio = f"; ÷ today's median: {statistics.median(first) / statistics.median(x[0] for x in base):.2f}×"  # noqa: E501
            if scenario == "replay":
                what = f"{min(first):.2f}–{max(first):.2f} s"
            else:
                p99 = [x[1] for x in runs]
                what = (f"p50 {min(first):.2f}–{max(first):.2f}, "
                        f"p99 {min(p99):.2f}–{max(p99):.2f} ms")  # fmt: skip
            print(f"{scenario:<11} {name:<7} {what} ({len(runs)} runs){ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
