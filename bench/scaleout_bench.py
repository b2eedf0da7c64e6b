"""Scale-out benchmark: 1, 2 and 3 `palimpsest serve` processes sharing PostgreSQL (the log)
and Redis (the fan-out bus), on one document and on many documents.

Throughput: W writer connections, spread round-robin over the processes, each send E small
edits (one character each, from their own pycrdt doc) as fast as the socket takes them;
the figure is events made durable per second, from the first send until PostgreSQL holds
every event (head of each document); the median of --repeat runs.

Fan-out latency: one sender on process 0 sends an edit every 20 ms; one observer on each
process records when each edit arrives. "local" = an observer on the sender's process,
"remote" = on another process (write-ahead to PostgreSQL, publish on Redis, apply, send).
Measured with the processes idle otherwise, and again under a steady background load (each
writer on a document of its own, --load-rate edits per second).

    .venv/bin/python bench/scaleout_bench.py [--writers 12] [--events 200] [--out FILE]

Needs PostgreSQL (PALIMPSEST_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/test;
each run uses a fresh schema, dropped afterwards) and Redis (PALIMPSEST_BENCH_REDIS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import websockets
from pycrdt import Doc, Text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from serverproc import ServerProcess  # noqa: E402

from palimpsest import protocol as P  # noqa: E402

PG = os.environ.get("PALIMPSEST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("PALIMPSEST_BENCH_REDIS", "redis://127.0.0.1:6379/0")


class Client:
    """A bare y-websocket connection: syncs, then sends/receives updates."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)
        self.updates: list[float] = []  # arrival time of each broadcast update
        self.synced = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, base: str, doc: str, user: str) -> Client:
        ws = await websockets.connect(f"{base}/{doc}?user={user}", max_size=None,
                                      compression=None)  # fmt: skip
        c = cls(ws)
        await ws.send(P.encode_sync_step1(c.doc.get_state()))
        c.task = asyncio.create_task(c._read())
        await asyncio.wait_for(c.synced.wait(), 20)
        return c

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = P.decode(raw)
                if isinstance(msg, P.SyncStep1):
                    await self.ws.send(P.encode_sync_step2(self.doc.get_update(msg.state_vector)))
                elif isinstance(msg, P.SyncStep2):
                    self.doc.apply_update(msg.update)
                    self.synced.set()
                elif isinstance(msg, P.SyncUpdate):
                    self.updates.append(time.perf_counter())
        except websockets.ConnectionClosed:
            pass

    def edit(self, ch: str) -> bytes:
        before = self.doc.get_state()
        self.text.insert(len(self.text), ch)
        return P.encode_sync_update(self.doc.get_update(before))

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            self.task.cancel()


async def heads(pg: asyncpg.Connection, schema: str) -> int:
    return int(await pg.fetchval(f'SELECT COALESCE(SUM(head), 0) FROM "{schema}".docs') or 0)


async def throughput(
    procs: list[ServerProcess], pg: asyncpg.Connection, schema: str, *, docs: int,
    writers: int, events: int, tag: str,
) -> dict[str, Any]:  # fmt: skip
    clients = [
        await Client.open(procs[i % len(procs)].ws_url, f"{tag}-{i % docs}", f"w{i}")
        for i in range(writers)
    ]
    base = await heads(pg, schema)
    total = writers * events
    frames = [[c.edit("x") for _ in range(events)] for c in clients]

    async def send(c: Client, fs: list[bytes]) -> None:
        for f in fs:
            await c.ws.send(f)

    t0 = time.perf_counter()
    await asyncio.gather(*(send(c, fs) for c, fs in zip(clients, frames, strict=True)))
    while await heads(pg, schema) - base < total:  # noqa: ASYNC110 - polling PostgreSQL
        await asyncio.sleep(0.01)
    dt = time.perf_counter() - t0
    for c in clients:
        await c.close()
    return {"events": total, "seconds": round(dt, 3), "events_per_s": round(total / dt)}


async def paced(procs: list[ServerProcess], *, writers: int, rate: float, seconds: float) -> None:
    """Background load: `writers` connections on their own documents, `rate` edits/s each."""
    clients = [
        await Client.open(procs[i % len(procs)].ws_url, f"bg-{i}", f"bg{i}") for i in range(writers)
    ]

    async def write(c: Client) -> None:
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            await c.ws.send(c.edit("y"))
            await asyncio.sleep(1 / rate)

    await asyncio.gather(*(write(c) for c in clients))
    for c in clients:
        await c.close()


async def latency(
    procs: list[ServerProcess], *, doc: str, samples: int, load: Any = None
) -> dict[str, Any]:
    sender = await Client.open(procs[0].ws_url, doc, "sender")
    observers = [await Client.open(p.ws_url, doc, f"obs{i}") for i, p in enumerate(procs)]
    await asyncio.sleep(0.3)
    for o in observers:
        o.updates.clear()
    sent: list[float] = []
    background = asyncio.create_task(load()) if load is not None else None
    for i in range(samples):
        frame = sender.edit(chr(97 + i % 26))
        sent.append(time.perf_counter())
        await sender.ws.send(frame)
        await asyncio.sleep(0.02)
    deadline = time.perf_counter() + 30
    while any(len(o.updates) < samples for o in observers):  # noqa: ASYNC110
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.01)
    if background is not None:
        await background
    out: dict[str, Any] = {}
    for i, o in enumerate(observers):
        lat = sorted((r - s) * 1000 for s, r in zip(sent, o.updates, strict=False))
        key = "local" if i == 0 else f"remote_p{i}"
        out[key] = {
            "n": len(lat),
            "p50_ms": round(statistics.median(lat), 2) if lat else None,
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2) if lat else None,
        }
    for c in [sender, *observers]:
        await c.close()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": os.uname().nodename, "cpus": os.cpu_count(),
                               "writers": args.writers, "events_per_writer": args.events,
                               "runs": {}}  # fmt: skip
    for n in args.processes:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        store = f"{PG}?schema={schema}"
        fanout = f"{REDIS}?prefix=bench{uuid.uuid4().hex[:8]}&check=2"
        workdir = Path(args.workdir) / f"n{n}"
        procs = [
            ServerProcess(
                workdir / f"p{i}",
                extra_args=["--store", store, "--fanout", fanout, "--log-level", "warning"],
                env={"PALIMPSEST_MAX_EVENTS_PER_SECOND": "100000"},
            )
            for i in range(n)
        ]
        await asyncio.gather(*(p.astart() for p in procs))
        pg = await asyncpg.connect(PG)
        try:
            r: dict[str, Any] = {}
            for key, docs in (("same_doc", 1), ("many_docs", args.writers)):
                runs = [
                    await throughput(
                        procs,
                        pg,
                        schema,
                        docs=docs,
                        writers=args.writers,
                        events=args.events,
                        tag=f"{key}{k}",
                    )  # fmt: skip
                    for k in range(args.repeat)
                ]
                rates = sorted(x["events_per_s"] for x in runs)
                r[key] = {"events_per_s": rates[len(rates) // 2], "all": rates}
            r["latency_idle"] = await latency(procs, doc="lat", samples=args.samples)

            async def load(procs: list[ServerProcess] = procs) -> None:
                await paced(procs, writers=args.writers, rate=args.load_rate,
                            seconds=args.samples * 0.02)  # fmt: skip

            r["latency_loaded"] = await latency(procs, doc="lat2", samples=args.samples,
                                                load=load)  # fmt: skip
            r["load_events_per_s"] = args.writers * args.load_rate
            results["runs"][str(n)] = r
            print(f"{n} process(es): {json.dumps(r)}", flush=True)
        finally:
            await asyncio.gather(*(p.astop() for p in procs), return_exceptions=True)
            await pg.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await pg.close()
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        "| processes | same doc ev/s | many docs ev/s | latency local p50/p99 ms "
        "| latency remote p50/p99 ms | remote under load p50/p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in results["runs"].items():
        idle, loaded = r["latency_idle"], r["latency_loaded"]
        remote = [v for k, v in idle.items() if k.startswith("remote")]
        remote_l = [v for k, v in loaded.items() if k.startswith("remote")]

        def fmt(vs: list[dict[str, Any]]) -> str:
            if not vs:
                return "–"
            return f"{max(v['p50_ms'] for v in vs)} / {max(v['p99_ms'] for v in vs)}"

        lines.append(
            f"| {n} | {r['same_doc']['events_per_s']} | {r['many_docs']['events_per_s']} "
            f"| {idle['local']['p50_ms']} / {idle['local']['p99_ms']} | {fmt(remote)} "
            f"| {fmt(remote_l)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--writers", type=int, default=12)
    ap.add_argument("--events", type=int, default=200, help="edits per writer")
    ap.add_argument("--samples", type=int, default=200, help="latency samples")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs (median kept)")
    ap.add_argument("--load-rate", type=float, default=50, help="edits/s per writer under load")
    ap.add_argument("--workdir", default="/tmp/palimpsest-scaleout-bench")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "scaleout.json"))
    args = ap.parse_args()
    results = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
