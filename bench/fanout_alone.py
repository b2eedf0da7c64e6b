#!/usr/bin/env python3
"""The fan-out scenario on its own: servers alternated, rounds repeated, p50/p99 per run.

    bench/.peers/venv/bin/python bench/fanout_alone.py
    bench/.peers/venv/bin/python bench/fanout_alone.py --observers 1,10 --rounds 4 \
        --servers palimpsest,palimpsest-os,hocuspocus,y-websocket-fsync-warm

`bench/run` measures fan-out among everything else it does; this runs only that scenario
(one writer typing 500 single characters at 50 edits/s, N observers, latency from the
writer's edit to each observer's copy), each run on a new server and a new database, the
servers in turn within each round so that a noisy minute hurts all of them alike.
Printed: every run's p50 / p99 in ms, then per server and observer count the range of
the p50s and p99s over the rounds and the median p50's ratio to the first server's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as B  # noqa: E402  (bench/bench.py)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--servers", default="palimpsest,hocuspocus,y-websocket-fsync")
    ap.add_argument("--observers", default="1,10")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--edits", type=int, default=500)
    ap.add_argument("--rate", type=int, default=50, help="edits per second")
    args = ap.parse_args()
    names = args.servers.split(",")
    unknown = [n for n in names if n not in B.SERVERS]
    if unknown:
        ap.error(f"unknown servers {unknown}; known: {', '.join(sorted(B.SERVERS))}")
    counts = [int(n) for n in args.observers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="palimpsest-fanout-"))
    got: dict[tuple[str, int], list[tuple[float, float]]] = {}
    prog = B.Progress(args.rounds * len(names) * len(counts))
    try:
        for r in range(args.rounds):
            for name in names:
                spec = B.SERVERS[name]
                for n in counts:
                    datadir = Path(tempfile.mkdtemp(dir=work))
                    prog.step(f"round {r + 1}, {spec.label}, {n} observers")
                    srv = B.Running(spec, datadir)
                    try:
                        res = B.run_fanout(spec, srv.port, prog, doc="fan", observers=n,
                                           rate=args.rate, edits=args.edits)  # fmt: skip
                    finally:
                        srv.stop()
                        prog.finish_step()
                    if res.get("p50") is None:
                        print(f"round {r + 1} {name} {n}: failed: {res.get('error')}", flush=True)
                        continue
                    got.setdefault((name, n), []).append((res["p50"], res["p99"]))
                    print(f"round {r + 1}  {spec.label:<52} {n:>3} observers  "
                          f"p50 {res['p50']:.2f}  p99 {res['p99']:.2f} ms", flush=True)  # fmt: skip
    finally:
        prog.close()
    print()
    for n in counts:
        base = got.get((names[0], n))
        for name in names:
            runs = got.get((name, n))
            if not runs:
                continue
            p50s, p99s = [a for a, _ in runs], [b for _, b in runs]
            ratio = ""
            if base and name != names[0]:
                r50 = statistics.median(a for a, _ in base) / statistics.median(p50s)
                ratio = f"  {names[0]} ÷ this, median p50: {r50:.2f}×"
            label = B.SERVERS[name].label
            print(f"{label:<52} {n:>3} observers  p50 {min(p50s):.2f}–{max(p50s):.2f}  "
                  f"p99 {min(p99s):.2f}–{max(p99s):.2f} ms ({len(runs)} runs){ratio}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
