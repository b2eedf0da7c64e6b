"""Backbone benchmark: replay a real editing trace through the websocket, one writer and one
observer, against a real `palimpsest serve` process on a loopback port.

Reports patches/s end to end (until the observer holds the final text; the server only
broadcasts what is durable, so that is also "durable"), server CPU per logged event,
bytes in the log, and cold-load time of the final document (server restarted, a fresh
client until synced) with snapshots and from the log alone.

    .venv/bin/python bench/backbone.py [--trace automerge-paper] [--limit N]

Traces: data/traces (josephg/editing-traces, CC BY 4.0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets
from pycrdt import Doc, Text
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from palimpsest import protocol as P  # noqa: E402

TRACES = ROOT / "data" / "traces" / "sequential_traces"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    def __init__(self, db: Path, port: int, *extra: str) -> None:
        self.db, self.port, self.extra = db, port, extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PALIMPSEST_MAX_EVENTS_PER_SECOND": "0"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "palimpsest",
                "serve",
                "--port",
                str(self.port),
                "--db",
                str(self.db),
                *self.extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if b"listening on" in line:
                return
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
            self.proc = None


def load_trace(name: str, limit: int | None) -> tuple[list[list[tuple[int, int, str]]], str]:
    path = TRACES / "ascii_only" / f"{name}.json.gz"
    if not path.exists():
        path = TRACES / f"{name}.json.gz"
    data = json.loads(gzip.open(path).read())
    txns = [[tuple(p) for p in t["patches"]] for t in data["txns"]]
    if limit:
        txns = txns[:limit]
        return txns, ""
    return txns, data["endContent"]


def make_updates(txns: list[list[tuple[int, int, str]]]) -> tuple[list[bytes], str]:
    """One Yjs update per transaction of the trace, as a y-websocket writer would send."""
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    for patches in tqdm(txns, desc="encoding trace", unit="txn", leave=False):
        with doc.transaction():
            for pos, dels, ins in patches:
                if dels:
                    del text[pos : pos + dels]
                if ins:
                    text.insert(pos, ins)
    return updates, str(text)


async def observer_until(url: str, final: str, ready: asyncio.Event, done: asyncio.Event) -> None:
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.send(P.encode_sync_step1(doc.get_state()))
        async for raw in ws:
            msg = P.decode(raw.encode() if isinstance(raw, str) else raw)
            if isinstance(msg, P.SyncStep1):
                await ws.send(P.encode_sync_step2(doc.get_update(msg.state_vector)))
            elif isinstance(msg, P.SyncStep2 | P.SyncUpdate):
                doc.apply_update(msg.update)
                if isinstance(msg, P.SyncStep2):
                    ready.set()
                if len(text) >= len(final.encode()) and str(text) == final:
                    done.set()
                    return


async def _discard(ws: websockets.ClientConnection) -> None:
    async for _ in ws:
        pass


async def ingest(port: int, updates: list[bytes], final: str) -> float:
    base = f"ws://127.0.0.1:{port}/ws/bench"
    ready, done = asyncio.Event(), asyncio.Event()
    obs = asyncio.create_task(observer_until(base + "?user=observer", final, ready, done))
    await asyncio.wait_for(ready.wait(), 30)
    async with websockets.connect(base + "?user=writer", max_size=None, compression=None) as ws:
        # the server echoes each update to its sender too: read them, as an editor would
        # (a socket nobody reads is a slow consumer the server drops)
        drain = asyncio.create_task(_discard(ws))
        t0 = time.perf_counter()
        for u in tqdm(updates, desc="sending", unit="upd", leave=False):
            await ws.send(P.encode_sync_update(u))
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.perf_counter() - t0
        drain.cancel()
    await obs
    return elapsed


async def cold_load(port: int, final: str) -> float:
    doc: Doc[Any] = Doc()
    t0 = time.perf_counter()
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ws/bench", max_size=None, compression=None
    ) as ws:
        await ws.send(P.encode_sync_step1(doc.get_state()))
        async for raw in ws:
            msg = P.decode(raw.encode() if isinstance(raw, str) else raw)
            if isinstance(msg, P.SyncStep2):
                doc.apply_update(msg.update)
                break
    dt = time.perf_counter() - t0
    assert str(doc.get("content", type=Text)) == final, "cold load returned another document"
    return dt


def one_update_load(final_state: bytes) -> float:
    t0 = time.perf_counter()
    d: Doc[Any] = Doc()
    d.apply_update(final_state)
    return time.perf_counter() - t0


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", default="automerge-paper")
    ap.add_argument("--limit", type=int, default=None, help="only the first N transactions")
    ap.add_argument("--loads", type=int, default=5, help="cold loads to time (median)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--keep", type=Path, help="copy the database here at the end")
    args = ap.parse_args()

    txns, _ = load_trace(args.trace, args.limit)
    updates, final = make_updates(txns)
    n = len(updates)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        port = free_port()
        srv = Server(db, port)
        srv.start()
        assert srv.proc is not None
        cpu0 = cpu_seconds(srv.proc.pid)
        elapsed = asyncio.run(ingest(port, updates, final))
        # wait until the server is idle again (snapshot writes etc.), then read CPU
        time.sleep(1.0)
        cpu = cpu_seconds(srv.proc.pid) - cpu0
        rss = rss_mb(srv.proc.pid)
        srv.stop()
        with contextlib.closing(sqlite3.connect(db)) as c, c:
            events, log_bytes = c.execute(
                "SELECT SUM(head - base_seq), SUM(events_bytes) FROM docs"
            ).fetchone()
            snaps = c.execute(
                "SELECT COUNT(*), MAX(seq), SUM(LENGTH(state)), SUM(LENGTH(meta)) FROM snapshots"
            ).fetchone()
        db_bytes = sum(p.stat().st_size for p in Path(tmp).glob("bench.db*"))

        def loads(label: str, drop_snapshots: bool = False) -> float:
            times = []
            for _ in tqdm(range(args.loads), desc=f"cold load ({label})", leave=False):
                if drop_snapshots:  # every stop writes one again: drop it before each start
                    with contextlib.closing(sqlite3.connect(db)) as c, c:
                        c.execute("DELETE FROM snapshots")
                srv.start()
                times.append(asyncio.run(cold_load(port, final)))
                srv.stop()
            return median(times)

        with_snap = loads("snapshots")
        log_only = loads("log alone", drop_snapshots=True)
        if args.keep:
            import shutil

            shutil.copy(db, args.keep)
    d: Doc[Any] = Doc()
    for u in updates:
        d.apply_update(u)
    baseline = median([one_update_load(d.get_update()) for _ in range(5)])

    figures = {
        "trace": args.trace,
        "updates": n,
        "events_logged": events,
        "seconds": round(elapsed, 2),
        "patches_per_s": round(sum(len(t) for t in txns) / elapsed),
        "updates_per_s": round(n / elapsed),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_us_per_event": round(cpu / max(events, 1) * 1e6, 1),
        "server_rss_mb": round(rss, 1),
        "log_bytes": log_bytes,
        "db_bytes": db_bytes,
        "snapshots": snaps[0],
        "snapshot_state_bytes": snaps[2],
        "snapshot_meta_bytes": snaps[3],
        "cold_load_ms_with_snapshots": round(with_snap * 1e3, 1),
        "cold_load_ms_log_only": round(log_only * 1e3, 1),
        "one_update_load_ms": round(baseline * 1e3, 1),
    }
    for k, v in figures.items():
        print(f"{k:32} {v}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
