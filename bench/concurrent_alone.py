#!/usr/bin/env python3
"""The two-writer concurrent replay on its own, the whole trace, servers alternated.

    bench/.peers/venv/bin/python bench/concurrent_alone.py
    bench/.peers/venv/bin/python bench/concurrent_alone.py --rev 8cd274a --os --hocuspocus
    bench/.peers/venv/bin/python bench/concurrent_alone.py --split

`bench/run` replays the first 10,000 transactions of friendsforever among everything
else it measures; this replays the whole trace (26,078 transactions by two agents, each
waiting for the other's edits where the trace says it saw them) against one server at a
time, in rounds: this tree's Palimpsest, then each ``--rev``'s (its package built from
git: bench.package_tree), then with ``--os`` this tree with
``--durability os``, then with ``--hocuspocus`` Hocuspocus + SQLite, then each
``--peer``'s server of ``bench/run`` (``y-websocket-fsync``: the floor of a durable-first
server). Each run gets a new
server and a new database. Printed per run: the seconds until both writers hold the
whole document, the server's CPU per transaction (the process tree, psutil), and for
Palimpsest the group commits it made and their mean duration (its /metrics).

``--split`` runs this tree's server through a launcher that times the parts of every
store transaction on the writer's side (BEGIN, the statements and rows, COMMIT with its
fdatasync) and prints their means: where a commit's time goes while the other writer
waits for it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as B  # noqa: E402  (bench/bench.py)

ROOT = Path(__file__).resolve().parent.parent

#: the launcher of --split: palimpsest serve, with timers around the parts of each store
#: transaction, their sums written to SPLIT_OUT every half second
SPLIT_LAUNCHER = r"""
import json, os, sys, threading, time
pc = time.perf_counter
tt = time.thread_time
SUMS = {"transactions": 0, "begin": 0.0, "body": 0.0, "commit": 0.0, "cpu": 0.0, "body_cpu": 0.0}
OUT = os.environ["SPLIT_OUT"]
import palimpsest.store.sqlite as S
inner = S._in_transaction
def _in_transaction(conn, what, fn):
    if what != "append":
        return inner(conn, what, fn)
    t = [0.0, 0.0, 0.0, 0.0]
    def timed(c):
        t[0], t[2] = pc(), tt()
        try:
            return fn(c)
        finally:
            t[1], t[3] = pc(), tt()
    t0, c0 = pc(), tt()
    result = inner(conn, what, timed)
    t3, c3 = pc(), tt()
    SUMS["cpu"] += c3 - c0
    SUMS["body_cpu"] += t[3] - t[2]
    SUMS["transactions"] += 1
    SUMS["begin"] += t[0] - t0
    SUMS["body"] += t[1] - t[0]
    SUMS["commit"] += t3 - t[1]
    return result
S._in_transaction = _in_transaction
""" + B.launcher_tail("SUMS", 0.5)


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{B.HOST}:{port}/metrics", timeout=10).read().decode()
    out = {}
    for name in (
        "commit_batch_events_count",
        "commit_batch_events_sum",
        "commit_batch_seconds_sum",
        "attribution_upkeep_cpu_seconds_total",  # bench/replay_after_steps.py
    ):
        m = re.search(rf"^palimpsest_{name} ([0-9.e+-]+)$", text, re.M)
        if m:
            out[name] = float(m.group(1))
    return out


def wrapper(work: Path, name: str, body: str) -> Path:
    path = work / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def one_run(
    spec: B.ServerSpec, binary: Path | None, trace: Path, limit: int, work: Path, label: str
) -> dict[str, Any]:
    if binary is not None:
        B.PALIMPSEST_BIN = binary
    with B.serving(spec, Path(tempfile.mkdtemp(dir=work))) as (srv, prog):
        prog.step(f"{label}: concurrent {trace.name}")
        cpu0 = srv.cpu()
        res = B.run_trace(
            "concurrent", spec, srv.port, prog, doc="concurrent", trace=trace, limit=limit
        )
        res["cpu_seconds"] = srv.cpu() - cpu0
        if spec.name.startswith("palimpsest"):
            res["metrics"] = metrics(srv.port)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default="friendsforever")
    ap.add_argument("--limit", type=int, default=0, help="the first N transactions (0: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--rev", action="append", default=[], help="also a commit's server (repeatable)"
    )
    ap.add_argument("--os", action="store_true", help="also this tree with --durability os")
    ap.add_argument("--hocuspocus", action="store_true", help="also Hocuspocus + SQLite")
    ap.add_argument(
        "--peer",
        action="append",
        default=[],
        choices=sorted(B.SERVERS),
        help="also this server of bench/run (repeatable), e.g. y-websocket-fsync",
    )
    ap.add_argument("--split", action="store_true",
                    help="time the parts of each store transaction (this tree only)")  # fmt: skip
    args = ap.parse_args()

    trace = B.TRACES / "concurrent_traces" / f"{args.trace}.json.gz"
    work = Path(tempfile.mkdtemp(prefix="palimpsest-concurrent-"))
    python = ROOT / ".venv" / "bin" / "python"
    here = B.PALIMPSEST_BIN
    variants: list[tuple[str, B.ServerSpec, Path | None]] = []
    if args.split:
        launcher = work / "split_launcher.py"
        launcher.write_text(SPLIT_LAUNCHER)
        here = wrapper(work, "split.sh", f'exec "{python}" "{launcher}" "$@"\n')
    variants.append(("this tree", B.SERVERS["palimpsest"], here))
    for rev in args.rev:
        pkg = B.package_tree(rev, work / f"tree-{rev}")
        rev_binary = wrapper(
            work, f"{rev}.sh", f'PYTHONPATH="{pkg}" exec "{python}" -m palimpsest "$@"\n'
        )
        variants.append((rev, B.SERVERS["palimpsest"], rev_binary))
    if args.os:
        variants.append(("this tree, --durability os", B.SERVERS["palimpsest-os"], here))
    if args.hocuspocus:
        variants.append(("Hocuspocus + SQLite", B.SERVERS["hocuspocus"], None))
    for name in args.peer:
        variants.append((B.SERVERS[name].label, B.SERVERS[name], None))

    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in variants}
    for r in range(args.rounds):
        for label, spec, binary in variants:
            split_out = work / f"split-{r}.json"
            os.environ["SPLIT_OUT"] = str(split_out)
            res = one_run(spec, binary, trace, args.limit, work, f"round {r + 1}, {label}")
            if args.split and binary == here and split_out.exists():
                res["split"] = json.loads(split_out.read_text())
            results[label].append(res)
            txns = res.get("txns") or 0
            line = f"round {r + 1}  {label:<30}"
            if res.get("error") or not res.get("correct"):
                line += f" failed: {res.get('error') or 'did not converge correctly'}"
            else:
                line += f" {res['seconds']:.2f} s, {1e6 * res['cpu_seconds'] / txns:.0f} µs CPU/txn"
                m = res.get("metrics") or {}
                if m.get("commit_batch_events_count"):
                    n = m["commit_batch_events_count"]
                    line += (f", {n:.0f} commits of {m['commit_batch_events_sum'] / n:.1f} events, "
                             f"{1e6 * m['commit_batch_seconds_sum'] / n:.0f} µs each")  # fmt: skip
                s = res.get("split") or {}
                if s.get("transactions"):
                    k = s["transactions"]
                    us = {part: 1e6 * s.get(part, 0.0) / k
                          for part in ("begin", "body", "commit", "cpu", "body_cpu")}  # fmt: skip
                    line += (f" (BEGIN {us['begin']:.0f}, statements and rows {us['body']:.0f}, "
                             f"COMMIT {us['commit']:.0f} µs; CPU of the thread that ran it "
                             f"{us['cpu']:.0f}, of which statements and rows "
                             f"{us['body_cpu']:.0f} µs)")  # fmt: skip
            print(line, flush=True)
    print()
    for label, runs in results.items():
        ok = [x for x in runs if x.get("correct")]
        if ok:
            secs = [x["seconds"] for x in ok]
            cpu = [1e6 * x["cpu_seconds"] / x["txns"] for x in ok]
            print(f"{label:<32} {min(secs):.2f}–{max(secs):.2f} s, "
                  f"{min(cpu):.0f}–{max(cpu):.0f} µs CPU/txn ({len(ok)} runs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
