#!/usr/bin/env python3
"""The fan-out on a fresh server against the same server kind after `bench/run`'s quick
ingest: whether what the ingest leaves behind (a bigger database, the ingested
documents' unloads, their attribution refreshes waiting) slows the edits that follow,
or (a Node.js peer, whose JIT has compiled its hot paths by then) speeds them up.

    bench/.peers/venv/bin/python bench/fanout_after_steps.py
    bench/.peers/venv/bin/python bench/fanout_after_steps.py --rounds 4 --observers 10
    bench/.peers/venv/bin/python bench/fanout_after_steps.py --server hocuspocus

Each run is a new server with a new database: "fresh" runs the fan-out (one writer at 50
edits/s, 500 edits) at once; "after steps" first ingests the quick mode's traces, each
followed by `bench.wait_quiet` as `bench/run --settle` does, then runs the same fan-out.
The two alternate within a round, their order swapped every round. Printed: each run's
p50 / p99 in ms and the server's CPU during the fan-out, then each kind's p50s with
their median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as B  # noqa: E402  (bench/bench.py)

KINDS = ("fresh", "after steps")


def one_run(
    spec: B.ServerSpec, after_steps: bool, observers: int, work: Path, prog: B.Progress
) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, server CPU seconds during the fan-out) of one new server."""
    c = B.QUICK
    srv = B.Running(spec, Path(tempfile.mkdtemp(dir=work)))
    try:
        if after_steps:
            for name, limit in c.traces:
                B.run_trace("ingest", spec, srv.port, prog, doc=f"ingest-{name}",
                            trace=B.trace_path(name), limit=limit)  # fmt: skip
                B.wait_quiet(srv)
        cpu0 = srv.cpu()
        res: dict[str, Any] = B.run_fanout(spec, srv.port, prog, doc="fan", observers=observers,
                                           rate=c.fan_rate, edits=c.fan_edits)  # fmt: skip
        return float(res["p50"]), float(res["p99"]), srv.cpu() - cpu0
    finally:
        srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--server", default="palimpsest", choices=sorted(B.SERVERS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--observers", type=int, default=1)
    args = ap.parse_args()
    spec = B.SERVERS[args.server]
    work = Path(tempfile.mkdtemp(prefix="palimpsest-fanout-after-"))
    got: dict[str, list[float]] = {k: [] for k in KINDS}
    prog = B.Progress(2 * args.rounds)
    lines = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for after in order:
            kind = KINDS[after]
            prog.step(f"round {r + 1}, {kind}")
            p50, p99, cpu = one_run(spec, after, args.observers, work, prog)
            prog.finish_step()
            got[kind].append(p50)
            lines.append(
                f"round {r + 1}  {kind:<11}  p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
                f"server CPU {cpu:.2f} s"
            )
    prog.close()
    print("\n".join(lines))
    for kind in KINDS:
        p50s = ", ".join(f"{x:.2f}" for x in got[kind])
        print(f"{kind:<11}  p50 {p50s} ms (median {statistics.median(got[kind]):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
