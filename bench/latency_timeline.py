#!/usr/bin/env python3
"""Where one edit's time goes inside the server, stage by stage, during the bench's
fan-out scenario (one writer at a fixed rate, N observers).

    bench/.peers/venv/bin/python bench/latency_timeline.py
    bench/.peers/venv/bin/python bench/latency_timeline.py --edits 1000 --observers 10

Starts the Palimpsest server as `bench/run` does, but through a launcher that wraps a
few functions on the edit's path with a timestamp (``time.perf_counter``, ~1 µs each):

    recv      uvicorn's data_received: the frame's bytes came off the socket
    handle    Connection.handle is called: the message is parsed, about to be decoded
    room      Room.receive_update: decoded and admitted (limits), about to be checked
              against the document
    queued    Room._push: checked, queued for the room's task
    commit<   Room._commit_and_apply starts (the room's task runs)
    store<    the store's append starts        store>  committed (fsync'd by default)
    write     the first socket write of the broadcast
    commit>   Room._commit_and_apply returns (the document applied, undo, ...)

and prints, for the edits after the first 20, the p50 and p90 of each step in µs, and of
recv → write (the server's share of what the observers measure). The fan-out figures of
the driver itself are printed too. The stamps stay in memory and are written to a file
by a thread every second, so they cost the edit nothing but the stamps themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as B  # noqa: E402  (bench/bench.py)

LAUNCHER = r"""
import json, os, sys, threading, time
pc = time.perf_counter
STAMPS = []
OUT = os.environ["TIMELINE_OUT"]

def wrap(owner, name, label, is_async=False):
    f = getattr(owner, name)
    if is_async:
        async def g(*a, **k):
            STAMPS.append((pc(), label + "<"))
            try:
                return await f(*a, **k)
            finally:
                STAMPS.append((pc(), label + ">"))
    else:
        def g(*a, **k):
            STAMPS.append((pc(), label))
            return f(*a, **k)
    setattr(owner, name, g)

def span(owner, name, label):
    # a synchronous function's start and end (label< and label>), on any thread
    f = getattr(owner, name)
    def g(*a, **k):
        STAMPS.append((pc(), label + "<"))
        try:
            return f(*a, **k)
        finally:
            STAMPS.append((pc(), label + ">"))
    setattr(owner, name, g)

from uvicorn.protocols.websockets import websockets_sansio_impl as W
import palimpsest.room as R
import palimpsest.routes.ws as WS
import palimpsest.routes.wire_write as WW
import palimpsest.store.sqlite as S
wrap(W.WebSocketsSansIOProtocol, "data_received", "recv")
# the direct reader's own frame parser replaces data_received on the protocol object
# (absent before 2 Dec: PYTHONPATH may point at an older tree's package)
parse_frames = getattr(WW, "_parse_binary_frames", None)
def _parse_binary_frames(proto, *args):
    parse_frames(proto, *args)  # (proto, on_message) since 2 Dec, (proto) before
    received = proto.data_received
    def data_received(data):
        STAMPS.append((pc(), "recv"))
        return received(data)
    proto.data_received = data_received
    if proto.transport is not None:
        proto.transport.set_protocol(proto)  # uvloop keeps the bound method it was given
if parse_frames is not None:
    WW._parse_binary_frames = _parse_binary_frames
wrap(WS.Connection, "handle", "handle")
wrap(R.Room, "receive_update", "room")
wrap(R.Room, "_push", "queued")
wrap(R.Room, "_commit_and_apply", "commit", True)
wrap(S.SQLiteStore, "append", "store", True)
# the store's own work beside the edits (--slowest names what overlapped a slow commit)
span(S._Writer, "_checkpoint", "checkpoint")
wrap(S.SQLiteStore, "put_snapshot", "snapshot", True)
wrap(S.SQLiteStore, "seal", "seal", True)
import palimpsest.store.disk_warm as DW
span(DW, "_sync", "warm-sync")  # the disk warmer's fdatasync (docs/durability.md)
writer = WW.direct_writer
def direct_writer(ws):
    w = writer(ws)
    if w is None:
        return None
    def write(frame):
        STAMPS.append((pc(), "write"))
        return w(frame)
    return write
WS.direct_writer = direct_writer
""" + B.launcher_tail("STAMPS", 1.0)

STEPS = [
    ("recv", "handle"),
    ("handle", "room"),
    ("room", "queued"),
    ("queued", "commit<"),
    ("commit<", "store<"),
    ("store<", "store>"),
    ("store>", "write"),
    ("write", "commit>"),
    ("recv", "write"),
]
#: the store's upkeep, stamped at its start and end (label< and label>), for --slowest
UPKEEP = ("checkpoint", "snapshot", "seal", "warm-sync")
#: --concurrent: the room's pause from the end of one commit to the start of the next
GAP = ("commit>", "next commit<")


def edits(stamps: list[tuple[float, str]]) -> list[dict[str, float]]:
    """One dict of label -> time per committed edit (each commit< with the stamps of the
    frame before it and of its own commit after it)."""
    out = []
    for i, (t, label) in enumerate(stamps):
        if label != "commit<":
            continue
        d: dict[str, float] = {"commit<": t}
        for j in range(i - 1, max(0, i - 40), -1):
            lj = stamps[j][1]
            if lj in ("recv", "handle", "room", "queued") and lj not in d:
                d[lj] = stamps[j][0]
            if lj == "recv" and "room" in d:
                break
        for j in range(i + 1, min(len(stamps), i + 40)):
            lj = stamps[j][1]
            if lj not in d:
                d[lj] = stamps[j][0]
            if lj == "commit>":
                break
        out.append(d)
    for d, e in zip(out, out[1:], strict=False):
        d["next commit<"] = e["commit<"]
    return out


def upkeep_spans(stamps: list[tuple[float, str]]) -> list[tuple[str, float, float]]:
    """(label, start, end) of each piece of the store's upkeep in the stamps (UPKEEP)."""
    out, open_ = [], {}
    for t, label in stamps:
        name, mark = label[:-1], label[-1:]
        if name not in UPKEEP:
            continue
        if mark == "<":
            open_[name] = t
        elif name in open_:
            out.append((name, open_.pop(name), t))
    return out


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--observers", type=int, default=1)
    ap.add_argument("--edits", type=int, default=500)
    ap.add_argument("--rate", type=int, default=50, help="edits per second")
    ap.add_argument("--json", help="also write the per-step figures here")
    ap.add_argument("--slowest", type=int, default=0,
                    help="also list the N slowest edits (recv -> write) step by step")  # fmt: skip
    ap.add_argument(
        "--concurrent",
        metavar="TRACE",
        help="time the two-writer replay of this concurrent trace instead (friendsforever): "
        "each commit's steps, with commit> -> commit< the room's pause between commits",
    )
    ap.add_argument("--limit", type=int, default=10000, help="--concurrent: the first N txns")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="palimpsest-timeline-"))
    launcher = work / "palimpsest"
    launcher.write_text(f"#!{B.PALIMPSEST_BIN.parent / 'python'}\n{LAUNCHER}")
    launcher.chmod(0o755)
    stamps_file = work / "stamps.json"
    os.environ["TIMELINE_OUT"] = str(stamps_file)
    B.PALIMPSEST_BIN = launcher
    spec = B.SERVERS["palimpsest"]
    datadir = work / "data"
    datadir.mkdir()
    srv = B.Running(spec, datadir)
    prog = B.Progress(1)
    what = (
        f"concurrent {args.concurrent}[:{args.limit}]"
        if args.concurrent
        else f"fan-out {args.observers} observers, {args.edits} edits"
    )
    prog.step(f"{what}, timestamped")
    try:
        if args.concurrent:
            res = B.run_driver(
                {
                    "scenario": "concurrent",
                    "doc": "timeline",
                    "server": {
                        "kind": spec.client,
                        "url": spec.url(srv.port),
                        "durable": {"kind": "none"},
                    },
                    "trace": str(B.TRACES / "concurrent_traces" / f"{args.concurrent}.json.gz"),
                    "limit": args.limit,
                    "timeoutSec": 600,
                },
                prog,
                timeout=700,
            )
        else:
            res = B.run_fanout(
                spec,
                srv.port,
                prog,
                doc="timeline",
                observers=args.observers,
                rate=args.rate,
                edits=args.edits,
            )
        time.sleep(1.5)  # the launcher's last dump
    finally:
        prog.finish_step()
        prog.close()
        srv.stop()
    stamps = json.loads(stamps_file.read_text()) if stamps_file.exists() else []
    found = edits([tuple(x) for x in stamps])[20:]
    if not found:  # the launcher's wrappers no longer fit the server's code, say
        print(f"no edit was timed ({len(stamps)} stamps; the driver got {res.get('received')} "
              f"of {args.edits}): see the server's log, {work / (spec.name + '.log')}",
              file=sys.stderr)  # fmt: skip
        return 1
    rows = {}
    print(f"{'step':<22}{'edits':>7}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}{'max µs':>9}")
    for a, b in [*STEPS, GAP] if args.concurrent else STEPS:
        xs = [(d[b] - d[a]) * 1e6 for d in found if a in d and b in d]
        if not xs:
            continue
        rows[f"{a} -> {b}"] = {"n": len(xs), "p50": pct(xs, 0.5), "p90": pct(xs, 0.9),
                               "p99": pct(xs, 0.99), "max": max(xs)}  # fmt: skip
        print(f"{a + ' -> ' + b:<22}{len(xs):>7}{pct(xs, 0.5):>9.0f}{pct(xs, 0.9):>9.0f}"
              f"{pct(xs, 0.99):>9.0f}{max(xs):>9.0f}")  # fmt: skip
    if args.slowest:
        # the edits that took longest from their bytes to the first write, step by step:
        # which step makes the server's part of the tail
        whole = [d for d in found if "recv" in d and "write" in d]
        whole.sort(key=lambda d: d["write"] - d["recv"], reverse=True)
        print(f"\nthe {min(args.slowest, len(whole))} slowest edits, recv -> write and its "
              f"steps in µs ({', '.join(a + '->' + b for a, b in STEPS[:-1])}):")  # fmt: skip
        spans = upkeep_spans([tuple(x) for x in stamps])
        for d in whole[: args.slowest]:
            parts = " ".join(
                f"{(d[b] - d[a]) * 1e6:6.0f}" if a in d and b in d else "     -"
                for a, b in STEPS[:-1]
            )
            t0, t1 = d.get("store<", d["recv"]), d.get("store>", d["write"])
            beside = [
                f"{label} {(e - b) * 1e3:.1f} ms" for label, b, e in spans if b < t1 and e > t0
            ]
            print(f"{(d['write'] - d['recv']) * 1e6:7.0f}  {parts}  {', '.join(beside)}")
        counts = {label: sum(1 for x in spans if x[0] == label) for label in UPKEEP}
        print("the store's upkeep during the run:", json.dumps(counts))
    if args.concurrent:
        fan = {k: res.get(k) for k in ("txns", "seconds", "correct")}
        fan["commits"] = len(found) + 20
        print("the replay, as the driver measured it:", json.dumps(fan))
    else:
        fan = {k: res.get(k) for k in ("observers", "edits", "received", "p50", "p99", "max")}
        print("fan-out, as the observers measured it (ms):", json.dumps(fan))
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": rows, "fanout": fan}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
