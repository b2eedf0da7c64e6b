#!/usr/bin/env python3
"""Server CPU per event during ingest on its own: servers alternated, rounds repeated.

    bench/.peers/venv/bin/python bench/ingest_alone.py
    bench/.peers/venv/bin/python bench/ingest_alone.py --servers palimpsest,y-websocket \
        --trace automerge-paper --limit 20000 --rounds 5 --warm --settle

`bench/run` measures ingest CPU once per repeat among everything else it does; this runs
only that scenario (one writer sends every patch of a trace, one observer, the bench's
Node.js driver with the real Yjs clients), each run on a new server and a new database,
the servers in turn within each round, and prints for every run the server's CPU per
event (its process tree, from before the first patch until the observer holds the whole
text) and how that CPU splits over the threads of the server's own process (user and
system time of the busiest four, from /proc, busiest first; threads are not named, but
the busiest is the event loop's for every server measured so far).

``--warm`` first ingests the same trace into another document of the same server and
waits until the server is quiet before the measured run: Node.js servers compile their
hot paths as they run (a fresh y-websocket server spent 29-32 µs per event on
automerge-paper[:20000] where a warm one spent 22-27 on the same machine), and in
`bench/run` every server has served the fan-out and connection scenarios before it
ingests.

``--settle`` keeps counting the server's CPU after the observer has everything, until
the server is quiet (at most 10 ms of CPU in any second for 6 s, ``bench.wait_quiet``;
``--warm`` waits as long after the warm-up): what a server defers (Palimpsest's
sealing of the log into segments, a last snapshot, the attribution index once the room
unloads) is work done for those events too.
Without it the figure is measured as `bench/run` measures it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as B  # noqa: E402  (bench/bench.py)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[str, tuple[int, int]]:
    """Clock ticks of user and system time per thread of `pid` (from /proc)."""
    out: dict[str, tuple[int, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[tid] = (int(fields[11]), int(fields[12]))
    return out


def one_run(spec: B.ServerSpec, trace: Path, limit: int, work: Path, label: str, warm: bool,
            settle: bool) -> dict[str, Any]:  # fmt: skip
    with B.serving(spec, Path(tempfile.mkdtemp(dir=work)), 2 if warm else 1) as (srv, prog):
        if warm:
            prog.step(f"{label}: warm-up")
            B.run_trace("ingest", spec, srv.port, prog, doc="warm-up", trace=trace, limit=limit)
            prog.finish_step()
            B.wait_quiet(srv)  # the warm-up's deferred work too, not in the measured run
        prog.step(f"{label}: ingest")
        t0, cpu0 = thread_times(srv.proc.pid), srv.cpu()
        res = B.run_trace("ingest", spec, srv.port, prog, doc="ingest", trace=trace, limit=limit)
        res["cpu_seconds"] = srv.cpu() - cpu0
        if settle:
            _, cpu_quiet = B.wait_quiet(srv)
            res["cpu_until_quiet_seconds"] = cpu_quiet - cpu0
        t1 = thread_times(srv.proc.pid)
        res["threads"] = sorted(
            (
                ((u - t0.get(tid, (0, 0))[0]) / CLK_TCK, (s - t0.get(tid, (0, 0))[1]) / CLK_TCK)
                for tid, (u, s) in t1.items()
            ),
            key=sum,
            reverse=True,
        )[:4]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--servers", default="palimpsest,y-websocket")
    ap.add_argument("--trace", default="automerge-paper", help="a sequential trace")
    ap.add_argument("--limit", type=int, default=20000, help="the first N patches (0: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warm", action="store_true", help="ingest once before measuring")
    ap.add_argument("--settle", action="store_true", help="count deferred CPU too")
    args = ap.parse_args()
    names = args.servers.split(",")
    unknown = [n for n in names if n not in B.SERVERS]
    if unknown:
        ap.error(f"unknown servers {unknown}; known: {', '.join(sorted(B.SERVERS))}")
    trace = B.trace_path(args.trace)
    work = Path(tempfile.mkdtemp(prefix="palimpsest-ingest-"))
    key = "cpu_until_quiet_seconds" if args.settle else "cpu_seconds"
    got: dict[str, dict[int, float]] = {}
    for r in range(args.rounds):
        for name in names:
            spec = B.SERVERS[name]
            res = one_run(spec, trace, args.limit, work, f"round {r + 1}, {spec.label}",
                          args.warm, args.settle)  # fmt: skip
            if res.get("error") or not res.get("correct"):
                print(f"round {r + 1}  {spec.label}: failed: {res.get('error') or 'wrong text'}",
                      flush=True)  # fmt: skip
                continue
            n = res["patches"]
            us = 1e6 * res[key] / n
            got.setdefault(name, {})[r] = us
            threads = ", ".join(f"{1e6 * u / n:.1f}+{1e6 * s / n:.1f}" for u, s in res["threads"])
            extra = ""
            if args.settle:
                extra = f" ({1e6 * res['cpu_seconds'] / n:.1f} until the observer had it all)"
            print(f"round {r + 1}  {spec.label:<40} {us:5.1f} µs of CPU per event{extra}; "
                  f"threads, user+system µs per event: {threads}", flush=True)  # fmt: skip
    print()
    base = got.get(names[0], {})
    for name in names:
        by_round = got.get(name)
        if not by_round:
            continue
        runs = list(by_round.values())
        ratio = ""
        pairs = sorted(base[r] / us for r, us in by_round.items() if r in base)
        if name != names[0] and pairs:
            ratio = f"; {names[0]} ÷ this, per round: {pairs[0]:.2f}–{pairs[-1]:.2f}×"
        print(f"{B.SERVERS[name].label:<40} {min(runs):.1f}–{max(runs):.1f} µs per event, "
              f"median {statistics.median(runs):.1f} ({len(runs)} runs){ratio}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
