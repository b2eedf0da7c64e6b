"""How long an undo of a map key another user set too takes, and holds the room, on a
whiteboard of many shapes (server/undo/mapkeys.py: which value the key holds after it).

A real server (``palimpsest serve``, its own process, a fresh SQLite file) holds a board:
a root Y.Map ``shapes`` of N Y.Maps (x, y, w, h), written by a seeding client. Per run,
alice (Yjs client id 200) and bob (100) drag one shape at once: both set its ``x`` from
the same state, bob's update first, alice's (the winner: the higher id) second, and
each takes in the other's. Then alice's undo over HTTP (``POST /api/docs/board/undo``),
while carol types into a text of the same document every 5 ms and dave, connected too,
notes when each keystroke reaches him: carol's round trip through the room.

Per run: the undo request's wall time, the longest keystroke round trip during it (and
in the 0.3 s before it, for comparison); and the value the key holds after (bob's).

    .venv/bin/python bench/undo_mapkeys_bench.py [--shapes 50000] [--runs 5] [--port N]
        [--profile OUT]   (py-spy's collapsed stacks of the server: pip install py-spy)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pycrdt import Doc, Map, Text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from yclient import YClient, connect  # noqa: E402

from palimpsest import protocol as P  # noqa: E402

DOC = "board"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_state(c: YClient, want: Doc[Any]) -> None:
    target = P.decode_state_vector(want.get_state())
    for _ in range(3000):
        have = P.decode_state_vector(c.doc.get_state())
        if all(have.get(k, 0) >= v for k, v in target.items()):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("state not reached")


async def push(c: YClient, local: Doc[Any]) -> None:
    update = local.get_update(c.doc.get_state())
    await c.send_raw(P.encode_sync_update(update))
    c._applying = True
    try:
        c.doc.apply_update(update)
    finally:
        c._applying = False


def start_server(port: int, db: Path, profile: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PALIMPSEST_UNDO_CAPTURE_MS": "60000"}
    spy = ["py-spy", "record", "--format", "raw", "-r", "200", "-o", profile, "--"]
    serve = ["-m", "palimpsest", "serve", "--port", str(port), "--db", str(db)]
    return subprocess.Popen(
        [*(spy if profile else []), sys.executable, *serve, "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
    )


async def bench(shapes: int, runs: int, port: int, db: Path, profile: str = "") -> dict[str, Any]:
    proc = start_server(port, db, profile)
    base = f"http://127.0.0.1:{port}"
    ws = f"ws://127.0.0.1:{port}/ws"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            for _ in range(300):
                try:
                    if (await http.get("/healthz")).status_code < 500:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            seed: Doc[Any] = Doc(client_id=7)
            async with connect(ws, DOC, "seed", ydoc=seed) as sc:
                board = seed.get("shapes", type=Map)
                t0 = time.perf_counter()
                for lo in range(0, shapes, 5000):
                    with seed.transaction():
                        for i in range(lo, min(shapes, lo + 5000)):
                            board[f"s{i}"] = Map({"x": i, "y": i, "w": 10, "h": 10})
                    await sc._sent()
                await asyncio.sleep(0.5)
                seeded = time.perf_counter() - t0
            ad: Doc[Any] = Doc(client_id=200)
            bd: Doc[Any] = Doc(client_id=100)
            out: list[dict[str, Any]] = []
            async with (
                connect(ws, DOC, "alice", ydoc=Doc(client_id=201)) as aw,
                connect(ws, DOC, "bob", ydoc=Doc(client_id=101)) as bw,
                connect(ws, DOC, "carol", ydoc=Doc(client_id=300)) as carol,
                connect(ws, DOC, "dave", ydoc=Doc(client_id=400)) as dave,
            ):
                for c, local in ((aw, ad), (bw, bd)):
                    await wait_state(c, seed)
                    local.apply_update(c.doc.get_update())
                    c._applying = True
                    c.doc.apply_update(local.get_update())  # (the same state)
                    c._applying = False
                await wait_state(carol, seed)
                await wait_state(dave, seed)
                notes = carol.doc.get("notes", type=Text)
                seen = dave.doc.get("notes", type=Text)
                for run in range(runs):
                    key = f"s{(run * 7919) % shapes}"
                    for who in (ad, bd):
                        who.get("shapes", type=Map)[key]["x"] = -1 - run
                    ad.get("shapes", type=Map)[key]["x"] = 1000 + run
                    bd.get("shapes", type=Map)[key]["x"] = 2000 + run
                    await push(bw, bd)
                    await push(aw, ad)
                    for c, local in ((aw, ad), (bw, bd)):
                        await wait_state(c, ad)
                        await wait_state(c, bd)
                        local.apply_update(c.doc.get_update(local.get_state()))
                    for user in ("alice", "bob"):
                        r = await http.post(f"/api/docs/{DOC}/undo/close", params={"user": user})
                        assert r.status_code == 200, r.text
                    trips: list[tuple[float, float]] = []
                    stop = asyncio.Event()

                    async def typist(
                        trips: list[tuple[float, float]] = trips,
                        stop: asyncio.Event = stop,
                        notes: Text = notes,
                        seen: Text = seen,
                    ) -> None:
                        while not stop.is_set():
                            notes.insert(len(notes), "k")
                            want = len(notes)
                            t = time.perf_counter()
                            while len(seen) < want:  # noqa: ASYNC110 (the measure)
                                await asyncio.sleep(0.0005)
                            trips.append((t, time.perf_counter() - t))
                            await asyncio.sleep(0.005)

                    task = asyncio.create_task(typist())
                    await asyncio.sleep(0.3)
                    t0 = time.perf_counter()
                    r = await http.post(f"/api/docs/{DOC}/undo", params={"user": "alice"})
                    wall = time.perf_counter() - t0
                    await asyncio.sleep(0.05)
                    stop.set()
                    await task
                    answer = r.json()
                    await wait_state(dave, aw.doc)
                    await asyncio.sleep(0.2)
                    got = dave.doc.get("shapes", type=Map)[key]["x"]
                    out.append(
                        {
                            "undo_ms": round(wall * 1e3, 1),
                            "ok": answer.get("ok"),
                            "max_trip_ms": round(max(d for t, d in trips if t >= t0) * 1e3, 1),
                            "idle_max_trip_ms": round(max(d for t, d in trips if t < t0) * 1e3, 1),
                            "x_after": got,
                            "x_want": 2000 + run,
                        }
                    )
                    # (bob's undo too, so the next run starts from a clean stack)
                    await http.post(f"/api/docs/{DOC}/undo", params={"user": "bob"})
                    for c, local in ((aw, ad), (bw, bd)):
                        await asyncio.sleep(0.1)
                        local.apply_update(c.doc.get_update(local.get_state()))
            return {"shapes": shapes, "seed_s": round(seeded, 2), "runs": out}
    finally:
        if profile:
            proc.send_signal(signal.SIGINT)  # py-spy writes its stacks then
        else:
            proc.terminate()
        proc.wait(60)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", type=int, default=50_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--profile", default="", help="py-spy's collapsed stacks of the server")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = asyncio.run(bench(a.shapes, a.runs, a.port or free_port(), Path(d) / "db", a.profile))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
