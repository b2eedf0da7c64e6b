#!/usr/bin/env python3
"""What the same small piece of work costs right after the process has been idle, on
this machine: the cost every edit typed alone pays (the bench's fan-out writer types
50 edits a second, so the server sleeps ~20 ms before each one).

    .venv/bin/python bench/wake_cost.py
    .venv/bin/python bench/wake_cost.py --gaps 0,1,5,20 --n 300

For each gap (ms of sleep before each sample), ``--n`` samples of each of:

    python loop      2,000 additions in a Python loop (no I/O)
    4 KB pwrite      one 4 KB write into the page cache of an existing file (no sync)
    SQLite, no sync  BEGIN IMMEDIATE, one small INSERT, COMMIT in WAL mode with
                     synchronous=OFF: SQLite's own work for a commit, without the disk
    append+sync      100 bytes appended to a plain file, then fdatasync: what a
                     durable-first server's commit can cost at least (the floor's log)
    our append       one event appended by SQLiteStore (durability fsync, the server's
                     store, as its committer calls it from the event loop): a
                     keystroke's commit in Palimpsest

and prints the p50 and p90 in µs, and the p50 as a multiple of the same work with no gap.
Found on 3 Dec 2026 (bench/notes.md): on the AMD EPYC host, after 20 ms of idle the SQLite
commit without a sync cost 9-12x its back-to-back time and a 4 KB pwrite 21-25x, which is
why a lone keystroke's server-side path (about 1 ms) costs several times what the same
code costs under load, and why a commit through SQLite trails a plain appended log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from palimpsest.store.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parent))

from append_latency import UPDATE, measure  # noqa: E402

import bench as B  # noqa: E402  (bench/bench.py)


def _python_loop() -> Callable[[], None]:
    def run() -> None:
        s = 0
        for i in range(2000):
            s += i

    return run


#: what to close before the temporary directory goes
CLOSE: list[Callable[[], None]] = []


def _pwrite(d: Path) -> Callable[[], None]:
    fd = os.open(d / "pwrite.bin", os.O_RDWR | os.O_CREAT, 0o600)
    CLOSE.append(lambda: os.close(fd))
    os.pwrite(fd, b"\0" * (1 << 20), 0)
    block = b"y" * 4096
    at = [0]

    def run() -> None:
        os.pwrite(fd, block, at[0])
        at[0] = (at[0] + 4096) % (1 << 20)

    return run


def _sqlite_nosync(d: Path) -> Callable[[], None]:
    run, close = B.sqlite_commit_nosync(d / "nosync.db", UPDATE)
    CLOSE.append(close)
    return run


def _append_sync(d: Path) -> Callable[[], None]:
    run, close = B.append_fdatasync(d / "log.bin")
    CLOSE.append(close)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gaps", default="0,1,5,20", help="ms of idle before each sample")
    ap.add_argument("--n", type=int, default=300, help="samples per kind and gap")
    args = ap.parse_args()
    gaps = [float(g) for g in args.gaps.split(",")]
    kinds = ["python loop", "4 KB pwrite", "SQLite, no sync", "append+sync", "our append"]
    table: dict[str, dict[float, list[float]]] = {k: {} for k in kinds}
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        d = Path(tmp)
        makers = {
            "python loop": _python_loop(),
            "4 KB pwrite": _pwrite(d),
            "SQLite, no sync": _sqlite_nosync(d),
            "append+sync": _append_sync(d),
        }
        for gap in gaps:
            for kind in kinds:
                print(f"  gap {gap:g} ms: {kind} ...", end="\r", file=sys.stderr, flush=True)
                if kind == "our append":
                    store = SQLiteStore(d / f"store-{gap}.db", durability="fsync")
                    xs, _ = asyncio.run(measure(store, args.n, gap / 1e3, tick=False))
                else:
                    xs = B.timed_after_idle(makers[kind], gap / 1e3, args.n)
                table[kind][gap] = xs
        print(" " * 60, end="\r", file=sys.stderr)
        for close in CLOSE:
            close()
    base = gaps[0]
    print(f"µs per sample, p50 / p90 (× the p50 at {base:g} ms), n={args.n} per cell")
    print(f"{'':18s}" + "".join(f"{f'gap {g:g} ms':>24s}" for g in gaps))
    for kind in kinds:
        cells = []
        for g in gaps:
            xs = table[kind][g]
            p50, p90 = statistics.median(xs), xs[int(len(xs) * 0.9)]
            ratio = p50 / statistics.median(table[kind][base])
            cells.append(f"{p50:7.0f} / {p90:6.0f} ({ratio:4.1f}×)")
        print(f"{kind:18s}" + "".join(f"{c:>24s}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
