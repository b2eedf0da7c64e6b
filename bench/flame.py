#!/usr/bin/env python3
"""A py-spy flame graph of the Palimpsest server during the fan-out scenario only (or,
with ``--concurrent friendsforever``, during the two-writer replay of that trace).

    bench/.peers/venv/bin/python bench/flame.py -o bench/flame-after.svg
    bench/.peers/venv/bin/python bench/flame.py --observers 50 --edits 1500 -o /tmp/f.svg

Starts the server as `bench/run` does (same command and environment), attaches py-spy to
its pid (``py-spy record --pid``; when ptrace is refused, re-run with ``--launch``, which
starts the server under py-spy instead), drives one fan-out run with the bench's Node.js
driver (one writer at a fixed rate, N observers), and writes py-spy's SVG flame graph, the
collapsed stacks (``.txt``) and their self/inclusive shares (``.json``) beside it, and the
run's latency figures on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as B  # noqa: E402  (bench/bench.py)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-o", "--output", default="/dev/null", help="SVG to write")
    ap.add_argument(
        "--server",
        default="palimpsest",
        help="one of bench.py's SERVERS (profiles only Palimpsest's)",
    )
    ap.add_argument(
        "--concurrent",
        metavar="TRACE",
        help="profile the two-writer replay of this concurrent trace (friendsforever) instead",
    )
    ap.add_argument("--limit", type=int, default=0, help="with --concurrent: the first N txns")
    ap.add_argument("--observers", type=int, default=50)
    ap.add_argument("--edits", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=50, help="edits per second")
    ap.add_argument("--sample-rate", type=int, default=500, help="py-spy samples per second")
    ap.add_argument("--launch", action="store_true", help="start the server under py-spy")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument("--no-profile", action="store_true", help="latency figures only (no py-spy)")
    ap.add_argument(
        "--gil",
        action="store_true",
        help="py-spy --gil: only samples of the thread holding the GIL (Python's CPU, not "
        "its waits: a commit's fdatasync is otherwise half of a replay's samples)",
    )
    args = ap.parse_args()

    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not pyspy and not args.no_profile:
        print("py-spy not found (bench/run installs it in bench/.peers/venv)", file=sys.stderr)
        return 1
    spec = B.SERVERS[args.server]
    out = Path(args.output).resolve()
    raw = out.with_suffix(".txt")
    work = Path(tempfile.mkdtemp(prefix="palimpsest-flame-"))
    datadir = work / "data"
    datadir.mkdir()
    if spec.reset:
        spec.reset(datadir)
    flags = (
        ["--rate", str(args.sample_rate), "--nonblocking"]
        + (["--native"] if args.native else [])
        + (["--gil"] if args.gil else [])
    )
    if args.launch and not args.no_profile:
        assert pyspy is not None  # or it returned above
        inner = spec.command
        spec.command = lambda port, d: [
            pyspy,
            "record",
            *flags,
            "-o",
            str(out),
            "--",
            *inner(port, d),
        ]
    srv = B.Running(spec, datadir)
    spies: list[subprocess.Popen[bytes]] = []
    if not args.launch and not args.no_profile:
        assert pyspy is not None  # or it returned above
        for fmt, dest in (("flamegraph", out), ("raw", raw)):
            spies.append(
                subprocess.Popen(
                    [
                        pyspy,
                        "record",
                        "--pid",
                        str(srv.proc.pid),
                        *flags,
                        "--format",
                        fmt,
                        "-o",
                        str(dest),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=open(work / f"py-spy-{fmt}.log", "w"),
                )
            )
        time.sleep(1.0)
        if any(s.poll() is not None for s in spies):
            srv.stop()
            print((work / "py-spy-raw.log").read_text(), file=sys.stderr)
            print("py-spy could not attach (ptrace refused?): try --launch", file=sys.stderr)
            return 1
    prog = B.Progress(1)
    try:
        if args.concurrent:
            prog.step(f"two-writer replay of {args.concurrent} under py-spy")
            trace = B.TRACES / "concurrent_traces" / f"{args.concurrent}.json.gz"
            res = B.run_trace(
                "concurrent", spec, srv.port, prog, doc="flame", trace=trace, limit=args.limit
            )
        else:
            prog.step(f"fan-out {args.observers} observers, {args.edits} edits under py-spy")
            res = B.run_fanout(
                spec,
                srv.port,
                prog,
                doc="flame",
                observers=args.observers,
                rate=args.rate,
                edits=args.edits,
            )
    finally:
        prog.finish_step()
        prog.close()
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(60)
        srv.stop()  # under --launch, py-spy writes its output when the server exits
        if spec.reset:
            spec.reset(datadir)
    if raw.exists() and not args.no_profile:
        summary = B.summarize_profile(raw, top=30)
        (out.with_suffix(".json")).write_text(json.dumps(summary, indent=1))
    print(
        json.dumps(
            {
                k: res.get(k)
                for k in (
                    "seconds",
                    "txns",
                    "correct",
                    "observers",
                    "edits",
                    "received",
                    "lost",
                    "p50",
                    "p99",
                    "max",
                    "mean",
                    "error",
                )
            }
        )
    )
    if not args.no_profile:
        print(f"wrote {out} and {raw}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
