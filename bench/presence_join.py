#!/usr/bin/env python3
"""N y-websocket providers joining ONE document at once: how many sync, how long until
the last one has, and the server CPU it took (Palimpsest vs @y/websocket-server).

    .venv/bin/python bench/presence_join.py                   # N=100,300,500, 3 runs
    .venv/bin/python bench/presence_join.py --n 500 --runs 2 --port 21100
    PALIMPSEST_BIN=/path/to/old/.venv/bin/palimpsest ... --servers old,palimpsest,y-websocket

Each run starts a fresh server (``palimpsest serve`` on a new SQLite file, or
bench/node/y-websocket-server.mjs) and one Node.js process of N providers
(bench/node/join_one_room.mjs: y-websocket's own WebsocketProvider, each with a presence
state, set once it has synced unless ``--presence at-open``) that all open at once. The
server's CPU (user + system, psutil) is read before the providers open and after the
last has synced and every provider sees every other's presence (or ``--timeout``
passed); the providers' (resource.getrusage of the finished Node.js process). Each line
also gives the presence frames the providers received (with the entries in them) and
sent: every provider sends back each change it applies, so frames out follow frames in.
Runs of the servers are interleaved. Server and providers are pinned to one
CPU (``--cpu``), so the whole load is one core's worth. ``old`` is the server named by
``PALIMPSEST_BIN`` (another checkout's ``palimpsest``), to compare commits side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from conn_memory import wait_port  # (bench/: scripts import each other)

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"


def start_server(
    kind: str, port: int, d: Path, pin: list[str]
) -> tuple[subprocess.Popen[bytes], str]:
    if kind == "y-websocket":
        cmd = ["node", str(NODE_DIR / "y-websocket-server.mjs"), "--port", str(port)]
        log = (d / "server.log").open("wb")
        proc = subprocess.Popen([*pin, *cmd], stdout=log, stderr=subprocess.STDOUT)
        return proc, f"ws://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        PALIMPSEST_MAX_CONNECTIONS_PER_IP="100000",
        PALIMPSEST_MAX_NEW_DOCS_PER_HOUR="0",
        PALIMPSEST_LOG_LEVEL="warning",
    )
    exe = shutil.which("palimpsest", path=str(Path(sys.executable).parent)) or "palimpsest"
    if kind == "old":
        exe = os.environ["PALIMPSEST_BIN"]
    cmd = [exe, "serve", "--db", str(d / "bench.db"), "--port", str(port)]
    log = (d / "server.log").open("wb")
    proc = subprocess.Popen([*pin, *cmd], env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"ws://127.0.0.1:{port}/ws"


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def run_once(
    kind: str, n: int, port: int, timeout: float, pin: list[str], presence: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="presence-join-") as tmp:
        proc, url = start_server(kind, port, Path(tmp), pin)
        try:
            wait_port(port, proc)
            time.sleep(0.5)
            before = cpu_s(proc.pid)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            cmd = ["node", str(NODE_DIR / "join_one_room.mjs"), "--url", url, "--doc", "room"]
            out = subprocess.run(
                [*pin, *cmd, "--n", str(n), "--timeout", str(timeout), "--presence", presence],
                capture_output=True, text=True, timeout=timeout + 60, check=True,
            )  # fmt: skip
            got: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
            done = resource.getrusage(resource.RUSAGE_CHILDREN)
            got["client_cpu_s"] = round(
                done.ru_utime + done.ru_stime - kids.ru_utime - kids.ru_stime, 2
            )
            try:
                got["cpu_s"] = round(cpu_s(proc.pid) - before, 2)
            except psutil.Error:
                got["cpu_s"] = float("nan")
            if proc.poll() is not None:
                tail = (Path(tmp) / "server.log").read_text(errors="replace")[-2000:]
                print(f"{kind}: the server exited ({proc.returncode}):\n{tail}", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return got


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", default="100,300,500", help="providers, comma-separated")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--servers", default="palimpsest,y-websocket")
    p.add_argument("--port", type=int, default=21100)
    p.add_argument("--timeout", type=float, default=90.0)
    p.add_argument("--presence", choices=("after-sync", "at-open"), default="after-sync")
    p.add_argument("--cpu", default="1", help="CPU to pin to (taskset -c); '' for none")
    args = p.parse_args()
    pin = ["taskset", "-c", args.cpu] if args.cpu else []
    for n in (int(x) for x in args.n.split(",")):
        for run in range(args.runs):
            for kind in args.servers.split(","):
                got = run_once(kind, n, args.port, args.timeout, pin, args.presence)
                ms, see_ms = got["ms"], got["see_all_ms"]
                print(
                    f"N={n:4d} run {run + 1} {kind:11s} synced {got['synced']:4}/{n} "
                    f"all in {'-' if ms is None else f'{ms / 1000:.1f} s':>7s}  "
                    f"see all {got['see_all']:4}/{n} "
                    f"in {'-' if see_ms is None else f'{see_ms / 1000:.1f} s':>7s}  "
                    f"server CPU {got['cpu_s']:6.2f} s  clients {got['client_cpu_s']:6.2f} s  "
                    f"closes {got['closes']}  awareness updates {got['awareness_updates']}  "
                    f"frames in {got['awareness_frames_in']} "
                    f"({got['awareness_entries_in']} entries) out {got['awareness_frames_out']}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
