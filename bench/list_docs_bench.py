#!/usr/bin/env python3
"""`GET /api/docs` at scale, and what it costs everyone else's editing.

    .venv/bin/python bench/list_docs_bench.py --port 22100 --runs 3
    .venv/bin/python bench/list_docs_bench.py --pg postgresql://postgres@127.0.0.1/dev2_bench

A Notion-like app: ``--docs`` documents (10,000) named ``u<user>-p<page>``, ``--users``
users (100) each holding a token that names their own pages one by one (per-page
tokens, 100 exact names). The server runs as ``palimpsest serve`` (a subprocess, SQLite
file or PostgreSQL, a JWT secret). One typist edits one page over a real websocket:
each keystroke is sent as a sync update and timed until the server's echo of it comes
back (the echo is sent after the commit). First the typist alone (``--keys``
keystrokes), then again while ``--listers`` (4) clients loop ``GET /api/docs`` with the
tokens of other users. Prints the list latency and the typist's p50/p95 per run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from pycrdt import Doc, Text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from palimpsest import protocol as P  # noqa: E402
from palimpsest.auth.tokens import mint  # noqa: E402
from palimpsest.store import open_store  # noqa: E402
from palimpsest.store.base import NewEvent  # noqa: E402

SECRET = "bench-secret-bench-secret-bench-secret"


def page(user: int, p: int) -> str:
    return f"u{user:03d}-p{p:03d}"


async def fill(url: str, users: int, per_user: int) -> None:
    store = open_store(url, durability="os")
    async with store:
        src: Doc[Any] = Doc()
        src.get("content", type=Text).insert(0, "hello")
        upd = src.get_update()
        batch = []
        for u in range(users):
            for p in range(per_user):
                batch.append((page(u, p), [NewEvent("bench", "edit", upd)]))
                if len(batch) == 500:
                    await store.append(batch)
                    batch = []
        if batch:
            await store.append(batch)


def _binary(data: str | bytes) -> bytes:
    if isinstance(data, str):
        raise TypeError("the server sent a text frame")
    return data


async def typist(ws_url: str, doc: str, token: str, keys: int, gap: float) -> list[float]:
    ydoc: Doc[Any] = Doc()
    text = ydoc.get("content", type=Text)
    sent: list[bytes] = []
    ydoc.observe(lambda e: sent.append(e.update))
    times: list[float] = []
    async with websockets.connect(f"{ws_url}/{doc}?token={token}", compression=None) as ws:
        # handshake: the server's step 1 -> our step 2, then our step 1
        while True:
            m = P.decode(_binary(await ws.recv()))
            if isinstance(m, P.SyncStep1):
                await ws.send(P.encode_sync_step2(ydoc.get_update(m.state_vector)))
                await ws.send(P.encode_sync_step1(ydoc.get_state()))
            elif isinstance(m, P.SyncStep2):
                ydoc.apply_update(m.update)
                break
        sent.clear()
        for _ in range(keys):
            text.insert(len(text), "x")
            upd = sent.pop()
            t0 = time.perf_counter()
            await ws.send(P.encode_sync_update(upd))
            while True:
                m = P.decode(_binary(await ws.recv()))
                if isinstance(m, P.SyncUpdate) and m.update == upd:
                    break
            times.append(time.perf_counter() - t0)
            await asyncio.sleep(gap)
    return times


async def lister(http: str, token: str, stop: asyncio.Event, lat: list[float]) -> None:
    async with httpx.AsyncClient(base_url=http, timeout=60) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = await c.get("/api/docs", headers={"Authorization": f"Bearer {token}"})
            r.raise_for_status()
            lat.append(time.perf_counter() - t0)
            assert len(r.json()["docs"]) > 0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def run_once(http: str, ws: str, args: argparse.Namespace) -> None:
    tok = {
        u: mint(SECRET, f"user{u}", "write", [page(u, p) for p in range(args.per_user)])
        for u in range(args.listers + 1)
    }
    alone = await typist(ws, page(0, 0), tok[0], args.keys, args.gap)
    stop = asyncio.Event()
    lat: list[float] = []
    tasks = [asyncio.create_task(lister(http, tok[u + 1], stop, lat)) for u in range(args.listers)]
    await asyncio.sleep(1)
    loaded = await typist(ws, page(0, 0), tok[0], args.keys, args.gap)
    stop.set()
    await asyncio.gather(*tasks)
    print(
        f"  typist alone p50/p95 {pct(alone, 0.5):.0f}/{pct(alone, 0.95):.0f} ms; "
        f"with {args.listers} listers p50/p95 {pct(loaded, 0.5):.0f}/{pct(loaded, 0.95):.0f} ms; "
        f"list p50 {pct(lat, 0.5):.0f} ms p95 {pct(lat, 0.95):.0f} ms ({len(lat)} lists)",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=22100)
    ap.add_argument("--pg", help="a PostgreSQL URL (its database is emptied and filled)")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--per-user", type=int, default=100)
    ap.add_argument("--listers", type=int, default=4)
    ap.add_argument("--keys", type=int, default=150)
    ap.add_argument("--gap", type=float, default=0.02)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--durability", default="fsync", choices=("fsync", "os"))
    ap.add_argument("--reuse", help="a SQLite file filled by an earlier run (copied)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="listdocs-"))
    url = args.pg or str(work / "p.db")
    if args.reuse:
        shutil.copy(args.reuse, url)
    if args.pg:
        reset = "DROP SCHEMA public CASCADE; CREATE SCHEMA public"
        subprocess.run(["psql", args.pg, "-qc", reset], check=True)
    if not args.reuse:
        t0 = time.perf_counter()
        asyncio.run(fill(url, args.users, args.per_user))
        took = time.perf_counter() - t0
        print(f"filled {args.users * args.per_user} docs in {took:.1f} s ({url})")
    env = dict(os.environ, PALIMPSEST_JWT_SECRET=SECRET)
    log = open(work / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "palimpsest", "serve", "--host", "127.0.0.1",
         "--port", str(args.port), "--store", url, "--durability", args.durability],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    http, ws = f"http://127.0.0.1:{args.port}", f"ws://127.0.0.1:{args.port}/ws"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{http}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        for i in range(args.runs):
            print(f"run {i + 1}")
            asyncio.run(run_once(http, ws, args))
    finally:
        proc.terminate()
        proc.wait(15)


if __name__ == "__main__":
    main()
