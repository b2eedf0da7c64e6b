#!/usr/bin/env python3
"""What an idle websocket connection costs a server in memory.

    .venv/bin/python bench/conn_memory.py                     # 3 runs, both layouts
    .venv/bin/python bench/conn_memory.py --server y-websocket
    .venv/bin/python bench/conn_memory.py --runs 1 --layout one-room --trace 12

Each run starts a fresh server (``palimpsest serve`` on a new SQLite file, or the
reference ``@y/websocket-server`` of bench/node), opens ``--warm`` connections to as many
other documents and keeps them open (the code paths, modules and allocator arenas a
first connection warms), then reads the server's RSS (``VmRSS`` of /proc/PID/status),
opens ``--conns`` idle connections, all to one document (``one-room``) or each to its own
(``rooms``), waits until every one has synced and ``--settle`` seconds more, and reads
the RSS again. Per connection = (after - before) / conns. The clients are y-websocket's
own ``WebsocketProvider`` under Node.js (bench/node/idle_clients.mjs; ``cd bench/node &&
npm ci --ignore-scripts``), in a process of their own, offering permessage-deflate as the
``ws`` package does (the line says whether the server took it). Without ``--awareness``
they have no presence state and re-sync every 10 s instead (else y-websocket's provider,
hearing nothing for 30 s, closes and reconnects).

``PALIMPSEST_BIN`` names another ``palimpsest`` to run (an older commit's, say).

``--trace FRAMES`` (Palimpsest only) runs the server under tracemalloc with that many
frames per allocation (started only at the first reading: under tracemalloc the start
itself takes minutes) and prints what the connections allocated, per connection, by
traceback (innermost frames first), by file and by line: where the memory of a
connection goes, as far as Python allocates it (RSS also holds the allocator's slack and
what C libraries allocate). RSS under tracemalloc is not comparable with the plain runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"

#: runs `palimpsest serve`; the first SIGUSR1 starts tracemalloc (only then: under it, the
#: start takes minutes), each dumps a snapshot to $SNAP.N
TRACED_SERVE = """
import os, signal, sys, tracemalloc
n = [0]
def dump(*_):
    if not tracemalloc.is_tracing():
        tracemalloc.start(int(os.environ["TRACE_FRAMES"]))
    n[0] += 1
    tracemalloc.take_snapshot().dump(f"{os.environ['SNAP']}.{n[0]}")
    open(f"{os.environ['SNAP']}.{n[0]}.done", "w").close()
signal.signal(signal.SIGUSR1, dump)
from palimpsest.cli import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def start_server(kind: str, port: int, d: Path, trace: int) -> tuple[subprocess.Popen[bytes], str]:
    """The server process and its websocket URL prefix."""
    if kind == "y-websocket":
        cmd = ["node", str(NODE_DIR / "y-websocket-server.mjs"), "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, f"ws://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        PALIMPSEST_MAX_CONNECTIONS_PER_IP="100000",
        PALIMPSEST_MAX_NEW_DOCS_PER_HOUR="0",
        PALIMPSEST_LOG_LEVEL="warning",
    )
    args = ["serve", "--db", str(d / "bench.db"), "--port", str(port)]
    if trace:
        env.update(TRACE_FRAMES=str(trace), SNAP=str(d / "snap"))
        cmd = [sys.executable, "-c", TRACED_SERVE, *args]
    else:
        exe = shutil.which("palimpsest", path=str(Path(sys.executable).parent)) or "palimpsest"
        cmd = [os.environ.get("PALIMPSEST_BIN", exe), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"ws://127.0.0.1:{port}/ws"


class Clients:
    """One Node.js process of idle providers (bench/node/idle_clients.mjs)."""

    def __init__(self, url: str, docs: list[str], awareness: bool = True) -> None:
        cmd = ["node", str(NODE_DIR / "idle_clients.mjs"), "--url", url, "--docs", ",".join(docs)]
        self.proc = subprocess.Popen(
            [*cmd, "--awareness", "on" if awareness else "off"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("synced"):
            raise RuntimeError(f"the clients did not sync: {line!r} (exit {self.proc.poll()})")
        self.extensions = self.proc.stdout.readline().strip().removeprefix("extensions ")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("close\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def snapshot(proc: subprocess.Popen[bytes], d: Path, n: int) -> tracemalloc.Snapshot:
    proc.send_signal(signal.SIGUSR1)
    done = d / f"snap.{n}.done"
    deadline = time.monotonic() + 120
    while not done.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no tracemalloc snapshot from the server")
        time.sleep(0.1)
    return tracemalloc.Snapshot.load(str(d / f"snap.{n}"))


def _where(tb: tracemalloc.Traceback, depth: int) -> str:
    """The innermost `depth` frames of `tb` worth naming (site-packages shortened)."""
    out = []
    for frame in reversed(tb):  # innermost first
        name = frame.filename
        for cut in ("site-packages/", "lib/python3"):
            if cut in name:
                name = name.split(cut, 1)[1]
        out.append(f"{name}:{frame.lineno}")
        if len(out) >= depth:
            break
    return " < ".join(out)


def report_trace(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, conns: int) -> None:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    stats = after.compare_to(before, "traceback")
    total = sum(s.size_diff for s in stats)
    print(f"  tracemalloc: {total / conns / 1000:.1f} kB per connection in all")
    for s in stats[:40]:
        if s.size_diff <= 0:
            break
        print(
            f"  {s.size_diff / conns:8.0f} B  {s.count_diff / conns:5.1f} blocks  "
            f"{_where(s.traceback, 5)}"
        )
    for key in ("filename", "lineno"):
        print(f"  by {'file' if key == 'filename' else 'line'} (innermost frame):")
        for s in after.compare_to(before, key)[:15]:
            where = s.traceback[0]
            print(f"  {s.size_diff / conns:8.0f} B  {s.count_diff / conns:5.1f} blocks  {where}")


def run_once(
    kind: str, layout: str, conns: int, warm: int, settle: float, trace: int, awareness: bool
) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="conn-memory-") as tmp:
        d = Path(tmp)
        proc, url = start_server(kind, port, d, trace)
        warmers: Clients | None = None
        clients: Clients | None = None
        try:
            wait_port(port, proc)
            warmers = Clients(url, [f"warm-{i}" for i in range(warm)], awareness)
            time.sleep(settle)
            before = rss_kb(proc.pid)
            snap0 = snapshot(proc, d, 1) if trace else None
            docs = ["one"] * conns if layout == "one-room" else [f"room-{i}" for i in range(conns)]
            clients = Clients(url, docs, awareness)
            time.sleep(settle)
            after = rss_kb(proc.pid)
            per = (after - before) * 1.024 / conns  # kB (1000 bytes) per connection
            print(
                f"  {kind} {layout}: RSS {before} -> {after} KiB, {per:.1f} kB per connection"
                f" (permessage-deflate: {clients.extensions or '-'})",
                flush=True,
            )
            if trace and snap0 is not None:
                report_trace(snap0, snapshot(proc, d, 2), conns)
            return per
        finally:
            for c in (clients, warmers):
                if c is not None:
                    c.close()
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.returncode not in (0, -signal.SIGTERM) and proc.stderr is not None:
                sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--server", choices=("palimpsest", "y-websocket"), default="palimpsest")
    p.add_argument(
        "--layout",
        choices=("one-room", "rooms", "both"),
        default="both",
        help="all connections to one document, or each to its own (default both)",
    )
    p.add_argument("--conns", type=int, default=300, help="idle connections (default 300)")
    p.add_argument(
        "--warm",
        type=int,
        default=20,
        help="connections opened and kept before the first reading (default 20)",
    )
    p.add_argument("--runs", type=int, default=3, help="fresh servers per layout (default 3)")
    p.add_argument(
        "--settle", type=float, default=3.0, help="seconds to wait before each reading (default 3)"
    )
    p.add_argument(
        "--awareness",
        action="store_true",
        help="give each client a presence state (off by default: in one room, every "
        "provider echoes every change of presence, so N clients in one Node.js "
        "process make O(N^2) messages and take minutes on a loaded machine)",
    )
    p.add_argument("--trace", type=int, default=0, metavar="FRAMES",
                   help="run the server under tracemalloc with FRAMES frames; print where the "
                   "connections' memory went")  # fmt: skip
    args = p.parse_args()
    if not (NODE_DIR / "node_modules").exists():
        print("bench/node/node_modules is missing: cd bench/node && npm ci --ignore-scripts")
        return 2
    if args.trace and args.server != "palimpsest":
        p.error("--trace is for --server palimpsest")
    layouts = ["one-room", "rooms"] if args.layout == "both" else [args.layout]
    results: dict[str, list[float]] = {}
    for layout in layouts:
        for _ in range(args.runs):
            results.setdefault(layout, []).append(
                run_once(
                    args.server,
                    layout,
                    args.conns,
                    args.warm,
                    args.settle,
                    args.trace,
                    args.awareness,
                )
            )
    for layout, per in results.items():
        print(f"{args.server} {layout}, {args.conns} connections, {len(per)} runs: "
              f"{min(per):.1f}-{max(per):.1f} kB per connection "
              f"(median {statistics.median(per):.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
