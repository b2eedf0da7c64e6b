#!/usr/bin/env python3
"""The two-writer replay on a fresh server, then on the same server after `bench/run`'s
earlier steps: what those steps leave behind that slows the replay.

    bench/.peers/venv/bin/python bench/replay_after_steps.py
    bench/.peers/venv/bin/python bench/replay_after_steps.py --server palimpsest-os --rounds 2

One server per round. It replays friendsforever[:10000] fresh, then ingests the quick
mode's traces, replays again, runs the fan-out at 1, 10 and 50 observers (500 edits at
50/s each), then replays twice more. Printed per replay: its seconds, the server's CPU
meanwhile (the process tree), the part of it that the server charged to attribution
upkeep (``palimpsest_attribution_upkeep_cpu_seconds_total``: the background refreshes of
idle documents' attribution indexes), and its group commits with their mean time. This
found the idle documents' refreshes running all at once in the replay after the
fan-out, 0.5-0.8 s of the event loop's CPU in a replay of about a second
(bench/notes.md, 3 Dec 2026); each replay uses a document of its own.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from concurrent_alone import metrics  # noqa: E402

import bench as B  # noqa: E402  (bench/bench.py)

UPKEEP = "attribution_upkeep_cpu_seconds_total"


def one_round(spec: B.ServerSpec, r: int, work: Path) -> list[str]:
    """One server through the steps; a line per replay."""
    c = B.QUICK
    trace = B.TRACES / "concurrent_traces" / f"{c.ctraces[0]}.json.gz"
    lines: list[str] = []
    # the last step is finished by serving()
    steps = 4 + len(c.traces) + len(c.fanout) + 1
    with B.serving(spec, Path(tempfile.mkdtemp(dir=work)), steps) as (srv, prog):

        def replay(tag: str) -> None:
            prog.step(f"round {r + 1}: replay, {tag}")
            m0, cpu0 = metrics(srv.port), srv.cpu()
            res: dict[str, Any] = B.run_trace(
                "concurrent", spec, srv.port, prog, doc=f"replay-{len(lines)}",
                trace=trace, limit=c.ctrace_limit,
            )  # fmt: skip
            m1, cpu = metrics(srv.port), srv.cpu() - cpu0
            n = m1.get("commit_batch_events_count", 0) - m0.get("commit_batch_events_count", 0)
            s = m1.get("commit_batch_seconds_sum", 0) - m0.get("commit_batch_seconds_sum", 0)
            upkeep = m1.get(UPKEEP, 0.0) - m0.get(UPKEEP, 0.0)
            seconds = f"{res['seconds']:.2f} s" if res.get("correct") else "failed"
            lines.append(
                f"round {r + 1}  {tag:<14} {seconds}, CPU {cpu:.2f} s, of which attribution "
                f"upkeep {upkeep:.2f} s; {n:.0f} commits, {1e6 * s / max(n, 1):.0f} µs each"
            )
            prog.finish_step()

        replay("fresh")
        for name, limit in c.traces:
            prog.step(f"round {r + 1}: ingest {name}")
            B.run_trace("ingest", spec, srv.port, prog, doc=f"ingest-{name}",
                        trace=B.trace_path(name), limit=limit)  # fmt: skip
            prog.finish_step()
        replay("after ingest")
        for n in c.fanout:
            prog.step(f"round {r + 1}: fan-out, {n} observers")
            B.run_fanout(spec, srv.port, prog, doc=f"fanout-{n}", observers=n,
                         rate=c.fan_rate, edits=c.fan_edits)  # fmt: skip
            prog.finish_step()
        replay("after fan-out")
        replay("again")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--server", default="palimpsest", choices=["palimpsest", "palimpsest-os"])
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="palimpsest-replay-after-"))
    for r in range(args.rounds):
        print("\n".join(one_round(B.SERVERS[args.server], r, work)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
