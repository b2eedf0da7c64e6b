"""Changefeed benchmark: how fast a backlog streams out, and how late live events arrive.

Writes a real editing trace (default: automerge-paper, first --events transactions) into
a fresh SQLite log, with a webhook registered at position 0, then starts a real
``palimpsest serve`` on a loopback port and measures:

- ``webhook backlog``: the deliverer catching up on the whole log (batches of 100, one
  POST at a time) into a loopback HTTP receiver: events per second from the first batch;
- ``sse backlog``: one client reading ``GET /api/events/stream`` from 0 (with updates):
  events per second;
- ``live lag``: a client types --live edits at about 100 per second while a follower
  reads the document's stream: the time from each event's commit timestamp to its
  arrival on the stream (ms; same machine, same clock).

    .venv/bin/python bench/changefeed_bench.py [--events 50000] [--live 500] [--runs 3] [--quick]

Traces: data/traces (josephg/editing-traces, CC BY 4.0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from history_bench import trace_events  # noqa: E402

from palimpsest import client  # noqa: E402
from palimpsest.changefeed import Webhook  # noqa: E402
from palimpsest.store.sqlite import SQLiteStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Counter:
    def __init__(self) -> None:
        self.events = 0
        self.done = threading.Event()
        self.want = 0
        #: when the first batch arrived (the server's start-up is not the deliverer's)
        self.first: float | None = None


def receiver(counter: Counter) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            counter.first = counter.first or time.perf_counter()
            counter.events += len(json.loads(body)["events"])
            if counter.events >= counter.want:
                counter.done.set()
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{port}/hook"


async def prepare(db: Path, n: int, hook_url: str) -> int:
    events, _text = trace_events(limit=n)
    store = SQLiteStore(db)
    async with store:
        await store.webhook_cursors().register(Webhook(hook_url).id, hook_url, 0)
        for i in range(0, len(events), 2000):
            await store.append([("paper", events[i : i + 2000])])
        return await store.last_position()


def start_server(db: Path, port: int, hook: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "palimpsest", "serve", "--port", str(port), "--db", str(db),
             "--webhook", hook],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not start; see {log}")


async def sse_backlog(base: str, n: int) -> float:
    t0 = time.perf_counter()
    got = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as http:
        async with http.stream("GET", f"{base}/api/events/stream") as r:
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    got += 1
                    if got >= n:
                        break
    return n / (time.perf_counter() - t0)


async def live_lag(base: str, edits: int) -> list[float]:
    async with client.History(base, user="bench") as h:
        head = next((d.head for d in await h.docs() if d.doc == "live"), 0)
        lags: list[float] = []

        async def follow() -> None:
            async for ev in h.stream("live", after=head, updates=False):
                arrived = time.time() * 1000
                committed = datetime.fromisoformat(ev.ts.replace("Z", "+00:00")).timestamp()
                lags.append(arrived - committed * 1000)
                if len(lags) >= edits:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.3)
        ws = base.replace("http", "ws") + "/ws"
        async with client.connect(ws, "live", user="typist") as s:
            for i in range(edits):
                t = s.text()
                t.insert(len(t), "abcdefghij"[i % 10])
                await asyncio.sleep(0.01)
            await s.flush()
        await asyncio.wait_for(task, 60)
    return lags


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def one_run(n: int, live: int, work: Path) -> dict[str, float]:
    counter = Counter()
    rx, hook = receiver(counter)
    db = work / "bench.db"
    total = await prepare(db, n, hook)
    counter.want = total
    port = free_port()
    t0 = time.perf_counter()
    proc = start_server(db, port, hook, work / "server.log")
    try:
        if not await asyncio.to_thread(counter.done.wait, 600):
            raise RuntimeError(f"webhook delivered {counter.events}/{total} in 600 s")
        hook_rate = total / (time.perf_counter() - (counter.first or t0))
        base = f"http://127.0.0.1:{port}"
        sse_rate = await sse_backlog(base, total)
        lags = await live_lag(base, live)
    finally:
        proc.terminate()
        proc.wait(20)
        rx.shutdown()
        rx.server_close()
    return {
        "events": total, "webhook_backlog_eps": hook_rate, "sse_backlog_eps": sse_rate,
        "lag_p50_ms": pct(lags, 50), "lag_p99_ms": pct(lags, 99), "lag_max_ms": max(lags),
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--live", type=int, default=500)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="10,000 events, 200 live edits")
    args = p.parse_args()
    if args.quick:
        args.events, args.live = 10_000, 200
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}: {args.events} events ...", file=sys.stderr, flush=True)
            work = Path(tmp) / f"run{i}"
            work.mkdir()
            r = asyncio.run(one_run(args.events, args.live, work))
            print("  " + json.dumps({k: round(v, 1) for k, v in r.items()}), file=sys.stderr)
            results.append(r)
    print(f"\nchangefeed, {results[0]['events']:.0f} events of automerge-paper, {args.runs} runs"
          f" ({os.cpu_count()} cores)")  # fmt: skip
    for key, label in (
        ("webhook_backlog_eps", "webhook backlog, events/s"),
        ("sse_backlog_eps", "SSE backlog (global, with updates), events/s"),
        ("lag_p50_ms", "live lag p50, ms"),
        ("lag_p99_ms", "live lag p99, ms"),
        ("lag_max_ms", "live lag max, ms"),
    ):
        vals = [r[key] for r in results]
        print(f"  {label:<46} {min(vals):>10,.1f} – {max(vals):,.1f}"
              f"  (median {statistics.median(vals):,.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
