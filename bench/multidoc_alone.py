#!/usr/bin/env python3
"""Several documents typed into at once, on one server: what the group commit's sharing
across rooms is worth, and what a change to it costs.

    bench/.peers/venv/bin/python bench/multidoc_alone.py
    bench/.peers/venv/bin/python bench/multidoc_alone.py --docs 6 --rate 200 \
        --binaries today=/tmp/head/palimpsest,new=.venv/bin/palimpsest --rounds 3

Each run starts a fresh Palimpsest server (one per binary, alternated within a round)
and runs the bench's fan-out scenario once per document, all at the same time: one
Node.js driver per document, each with one writer typing `--edits` single characters
at `--rate` edits/s and `--observers` observers. Printed per run: the median over the
documents of their p50, the worst document's p99 (ms, as the observers measured them),
and from the server's /metrics the group commits it made and the events per commit
(several rooms' edits sharing a transaction show as more than one). Then the ranges
per binary. ``--binaries`` names launchers of `palimpsest` (a packaged commit, see
``bench.package_tree``); the default is the working tree's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from concurrent_alone import metrics  # noqa: E402

import bench as B  # noqa: E402  (bench/bench.py)


def one_run(binary: Path, work: Path, docs: int, observers: int, rate: int, edits: int,
            label: str) -> dict[str, Any]:  # fmt: skip
    B.PALIMPSEST_BIN = binary
    spec = B.SERVERS["palimpsest"]
    results: list[dict[str, Any]] = [{} for _ in range(docs)]
    with B.serving(spec, Path(tempfile.mkdtemp(dir=work))) as (srv, prog):
        prog.step(f"{label}: {docs} documents at {rate} edits/s each")

        def drive(i: int) -> None:
            results[i] = B.run_fanout(spec, srv.port, prog, doc=f"doc-{i}",
                                      observers=observers, rate=rate, edits=edits)  # fmt: skip

        threads = [threading.Thread(target=drive, args=(i,)) for i in range(docs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        m = metrics(srv.port)
    failed = [r.get("error") or "no p50" for r in results if r.get("p50") is None]
    if failed:
        return {"error": failed[0]}
    commits = m.get("commit_batch_events_count", 0)
    return {
        "p50": statistics.median(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results),
        "commits": commits,
        "per_commit": m.get("commit_batch_events_sum", 0) / max(1, commits),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=6)
    ap.add_argument("--observers", type=int, default=1, help="per document")
    ap.add_argument("--rate", type=int, default=200, help="edits per second per document")
    ap.add_argument("--edits", type=int, default=600, help="per document")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binaries", default=f"tree={B.PALIMPSEST_BIN}",
                    help="name=path,… of palimpsest launchers")  # fmt: skip
    args = ap.parse_args()
    binaries = [(n, Path(p)) for n, _, p in (b.partition("=") for b in args.binaries.split(","))]
    work = Path(tempfile.mkdtemp(prefix="palimpsest-multidoc-"))
    got: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        order = binaries if r % 2 == 0 else binaries[::-1]
        for name, binary in order:
            label = f"round {r + 1}, {name}"
            res = one_run(binary, work, args.docs, args.observers, args.rate, args.edits, label)
            if "error" in res:
                print(f"{label}: failed: {res['error']}", flush=True)
                continue
            got.setdefault(name, []).append(res)
            print(f"{label:<18} p50 (median of documents) {res['p50']:.2f} ms, worst p99 "
                  f"{res['p99']:.2f} ms; {res['commits']:.0f} commits, "
                  f"{res['per_commit']:.2f} events each", flush=True)  # fmt: skip
    print()
    for name, _ in binaries:
        runs = got.get(name)
        if not runs:
            continue

        def span(key: str, fmt: str, runs: list[dict[str, Any]] = runs) -> str:
            xs = [x[key] for x in runs]
            return f"{min(xs):{fmt}}–{max(xs):{fmt}}"

        print(f"{name:<8} p50 {span('p50', '.2f')} ms, worst p99 {span('p99', '.2f')} ms, "
              f"{span('per_commit', '.2f')} events per commit ({len(runs)} runs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
