#!/usr/bin/env python3
"""What a durable 4 kB write costs after the disk has been idle, and with the disk kept
warm (server/store/disk_warm.py), on this machine's disk.

    .venv/bin/python bench/disk_warm.py                 # in a temporary directory
    .venv/bin/python bench/disk_warm.py --dir /data --rounds 400

1. Four 4,120-byte frames written (as SQLite writes a lone edit's WAL frames) and
   fdatasync'd, after a gap of 0, 1, 5 and 20 ms without I/O: the gaps take turns, so a
   drift of the machine spreads over all of them.
2. The same write every 20 ms (a fast typist), alone and with a DiskWarmer of 1, 2 and
   3 ms syncing the file beside it, again in turns.

Prints p50 and p90 in µs for each, and the warm-keeping syncs issued per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from palimpsest.store.disk_warm import DiskWarmer

FRAME = 4120
FRAMES = 4


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", help="a directory on the disk to measure (default: a temp dir)")
    ap.add_argument("--rounds", type=int, default=250)
    args = ap.parse_args()
    where = Path(args.dir or tempfile.mkdtemp(prefix="palimpsest-disk-warm-"))
    path = where / "disk_warm.bin"
    size = 8 << 20
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"\0" * size, 0)  # written blocks: commits overwrite (as the WAL)
        os.fsync(fd)
        buf = os.urandom(FRAME * FRAMES)
        off = 0

        def write() -> float:
            nonlocal off
            t = time.perf_counter()
            os.pwrite(fd, buf, off)
            os.fdatasync(fd)
            off = (off + len(buf)) % (size - len(buf))
            return (time.perf_counter() - t) * 1e6

        gaps = [0.0, 0.001, 0.005, 0.020]
        by_gap: dict[float, list[float]] = {g: [] for g in gaps}
        for _ in tqdm(range(args.rounds), desc="after a gap", unit="round"):
            for g in gaps:
                time.sleep(g)
                by_gap[g].append(write())
        print(f"\n{FRAMES} x {FRAME} B written + fdatasync, {path.parent} ({args.rounds} each)")
        print("gap without I/O    p50 µs   p90 µs")
        for g in gaps:
            p50, p90 = pct(by_gap[g], 0.5), pct(by_gap[g], 0.9)
            print(f"{g * 1000:>6.0f} ms        {p50:7.0f}  {p90:7.0f}")

        periods = [0.0, 0.001, 0.002, 0.003]
        by_period: dict[float, list[float]] = {p: [] for p in periods}
        syncs: dict[float, float] = {p: 0.0 for p in periods}
        for _ in tqdm(range(args.rounds), desc="every 20 ms, warm or not", unit="round"):
            for p in periods:
                w = DiskWarmer(str(path), p) if p else None
                if w is not None:
                    w.start()
                    w.touch()  # as the commit before this one did
                time.sleep(0.020)
                by_period[p].append(write())
                if w is not None:
                    w.stop()
                    syncs[p] += w.syncs
        print(f"\nthe same write every 20 ms ({args.rounds} each)")
        print("kept warm          p50 µs   p90 µs   warm syncs/s")
        for p in periods:
            label = "no" if not p else f"every {p * 1000:.0f} ms"
            rate = syncs[p] / (args.rounds * 0.020)
            p50, p90 = pct(by_period[p], 0.5), pct(by_period[p], 0.9)
            print(f"{label:<16} {p50:7.0f}  {p90:7.0f}   {rate:8.0f}")
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
        if not args.dir:
            where.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
