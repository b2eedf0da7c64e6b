"""One update carrying many new Yjs client ids: how long it holds the server's event loop.

A server runs in this process (SQLite in a temporary directory, uvicorn, real sockets);
a loop-lag probe, a task on the server's loop that sleeps 10 ms and records how late it
wakes, runs beside it. A client sends ONE update of N new client ids, each a one-character
insert chained after the previous (the shape of the attack), either as an update into a
document that has content, or as a sync step 2 into an empty one (a recovery), and waits
for the echo (or the close). Printed per run: the probe's worst overshoot, the time to the
answer, and how the server answered.

    .venv/bin/python bench/many_clients.py --ids 8000 32000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import free_port, run_server  # noqa: E402

from palimpsest import protocol as P  # noqa: E402
from palimpsest.settings import Settings  # noqa: E402


def _uint(n: int) -> bytes:
    return P.write_var_uint(n)


def _string(s: str) -> bytes:
    b = s.encode()
    return _uint(len(b)) + b


def many_clients_update(n: int, after: tuple[int, int] | None, seed: int = 1) -> bytes:
    """A v1 update of `n` new clients, each inserting "a" into root text "content" right
    after the previous one's (the first after `after`, or at the start when None)."""
    rng = random.Random(seed)
    ids = rng.sample(range(1, 1 << 32), n)
    out = bytearray(_uint(n))
    prev = after
    for client in ids:
        out += _uint(1) + _uint(client) + _uint(0)
        if prev is None:
            out += bytes([0x04]) + _uint(1) + _string("content")  # parent: root "content"
        else:
            out += bytes([0x84]) + _uint(prev[0]) + _uint(prev[1])
        out += _string("a")
        prev = (client, 0)
    out += _uint(0)  # empty delete set
    return bytes(out)


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - t - 0.01)


def _binary(data: str | bytes) -> bytes:
    if isinstance(data, str):
        raise TypeError("the server sent a text frame")
    return data


async def one_run(n: int, mode: str, cap: int | None) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db=str(Path(tmp) / "p.db"), port=free_port())
        if cap is not None:
            settings.max_new_clients_per_update = cap
        async with run_server(settings) as srv:
            url = f"{srv.ws_url}/bench"
            after = None
            if mode == "update":  # a document with content, written by one client
                async with websockets.connect(url, max_size=None) as ws:
                    first = many_clients_update(1, None, seed=99)
                    await ws.send(P.encode_sync_update(first))
                    while True:  # the echo: logged
                        msg = P.decode(_binary(await ws.recv()))
                        if isinstance(msg, P.SyncUpdate):
                            break
                    after = (P.Reader(first[2:]).read_var_uint("client"), 0)
            update = many_clients_update(n, after)
            frame = (P.encode_sync_step2 if mode == "step2" else P.encode_sync_update)(update)
            lags: list[float] = []
            stop = asyncio.Event()
            task = asyncio.create_task(probe(lags, stop))
            await asyncio.sleep(0.05)
            async with websockets.connect(url, max_size=None) as ws:
                t0 = time.perf_counter()
                await ws.send(frame)
                answer = "?"
                try:
                    async with asyncio.timeout(120):
                        while True:
                            msg = P.decode(_binary(await ws.recv()))
                            if isinstance(msg, P.SyncUpdate) and len(msg.update) > n:
                                answer = "accepted (echo)"
                                break
                except websockets.ConnectionClosed as e:
                    rcvd = e.rcvd
                    answer = f"closed {rcvd.code}: {rcvd.reason[:50]}" if rcvd else "closed"
                took = time.perf_counter() - t0
            await asyncio.sleep(0.05)
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return max(lags), took, answer


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", type=int, nargs="+", default=[8000, 32000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mode", choices=["update", "step2"], nargs="+", default=["update", "step2"])
    ap.add_argument("--cap", type=int, default=None, help="max_new_clients_per_update")
    a = ap.parse_args()
    for mode in a.mode:
        for n in a.ids:
            size = len(many_clients_update(n, (1, 0) if mode == "update" else None))
            for i in range(a.runs):
                lag, took, answer = await one_run(n, mode, a.cap)
                print(
                    f"{mode:6} ids={n:6} bytes={size:7} run={i + 1}: "
                    f"loop held {lag * 1000:8.1f} ms, answer after {took * 1000:8.1f} ms: {answer}",
                    flush=True,
                )


if __name__ == "__main__":
    asyncio.run(main())
