#!/usr/bin/env python3
"""Palimpsest's benchmarks, side by side with the servers people would pick instead.

Run through `bench/run` (which installs the peers first). Starts each server on a free
loopback port, drives it with `node/driver.mjs` (real Yjs clients), samples the server's
RSS and CPU time with psutil, measures its bytes on disk, and writes `bench/RESULTS.md`
and `bench/*.png`. Raw results go to `bench/out/results.json`.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # bench/storage_bench.py imports this module from the server's venv
    psutil = None

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NODE_DIR = BENCH / "node"
OUT = BENCH / "out"  # raw results, logs, data dirs (--out)
REPORT = BENCH  # RESULTS.md and the PNGs (--report)
TRACES = Path(os.environ.get("PALIMPSEST_TRACES", ROOT / "data" / "traces"))
PALIMPSEST_BIN = Path(os.environ.get("PALIMPSEST_BIN", ROOT / ".venv" / "bin" / "palimpsest"))
HOST = "127.0.0.1"  # loopback only


# --------------------------------------------------------------------------- servers


@dataclass
class ServerSpec:
    name: str
    label: str
    client: str  # "y-websocket" or "hocuspocus": which provider the driver uses
    persistent: bool
    promise: str  # what the server promises when it broadcasts
    storage: str
    command: Callable[[int, Path], list[str]]
    url: Callable[[int], str]
    durable: Callable[[int, Path], dict[str, Any]]
    version: str = ""
    env: dict[str, str] = field(default_factory=dict)
    needs: Callable[[], str | None] = lambda: None  # reason it cannot run, or None
    disk: Callable[[Path], int] | None = None  # bytes stored, when not (only) in the data dir
    reset: Callable[[Path], None] | None = None  # drop what a run stored outside its data dir


def _node() -> str:
    return shutil.which("node") or "node"


def _peers_python() -> str:
    """The peers' venv (bench/run creates it and runs this module with it), where
    pycrdt-websocket is installed; the running interpreter when there is none."""
    venv = BENCH / ".peers" / "venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _palimpsest_missing() -> str | None:
    if not PALIMPSEST_BIN.exists():
        return f"{PALIMPSEST_BIN} not found"
    r = subprocess.run([str(PALIMPSEST_BIN), "serve", "--help"], capture_output=True, text=True)
    return (
        None
        if r.returncode == 0
        else "`palimpsest serve --help` fails: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    )


def _y_websocket(extra: Callable[[Path], list[str]]) -> Callable[[int, Path], list[str]]:
    """The command of bench/node/y-websocket-server.mjs with `extra(data dir)` arguments."""
    return lambda port, d: [
        _node(),
        str(NODE_DIR / "y-websocket-server.mjs"),
        "--port",
        str(port),
        "--host",
        HOST,
        *extra(d),
    ]


def _floor(name: str, *, warm: bool) -> ServerSpec:
    """The floor of a durable-first server: y-websocket that writes and fdatasyncs each
    update to a plain file before handling it; `warm`: the disk kept warm between syncs."""
    promise = (
        "**durable**, nothing more: each update is written to a plain file and fdatasync'd "
        "(the updates read in one turn of its event loop share one sync) before y-websocket "
        "applies and broadcasts it; no index, no history, no snapshots (the least a "
        "durable-first server does, in Node.js)"
    )
    if warm:
        promise += (
            "; and the disk kept warm between syncs as Palimpsest's store does (an fdatasync "
            "of the clean file every 2 ms of a pause, for a second after the last sync)"
        )
    return ServerSpec(
        name=name,
        label="y-websocket + fsync'd log" + (", disk kept warm" if warm else "") + " (floor)",
        client="y-websocket",
        persistent=True,
        promise=promise,
        storage="a plain file of updates (memory for the documents)",
        command=_y_websocket(
            lambda d: ["--fsync-log", str(d / "updates.log"), *(["--warm-ms", "2"] if warm else [])]
        ),
        url=lambda port: f"ws://{HOST}:{port}",
        durable=lambda port, d: {"kind": "http-count", "url": f"http://{HOST}:{port}/durable"},
    )


SERVERS: dict[str, ServerSpec] = {
    "palimpsest": ServerSpec(
        name="palimpsest",
        label="Palimpsest (SQLite)",
        client="y-websocket",
        persistent=True,
        promise="**durable**: each update is committed to the SQLite event log (WAL, synchronous=FULL, group commit) before it is broadcast",
        storage="SQLite event log + snapshots",
        command=lambda port, d: [
            str(PALIMPSEST_BIN),
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--db",
            str(d / "palimpsest.db"),
            "--log-level",
            "warning",
        ],
        url=lambda port: f"ws://{HOST}:{port}/ws",
        durable=lambda port, d: {
            "kind": "broadcast",
            "verify": {"kind": "palimpsest-sqlite", "file": str(d / "palimpsest.db")},
        },
        needs=_palimpsest_missing,
        # The peers have no per-connection rate limit nor per-address connection cap: lift
        # Palimpsest's (1,000 updates/s, 200 connections) so that the same load is measured.
        env={
            "PALIMPSEST_MAX_EVENTS_PER_SECOND": "0",
            "PALIMPSEST_MAX_CONNECTIONS_PER_IP": "1000000",
        },
    ),
    "hocuspocus": ServerSpec(
        name="hocuspocus",
        label="Hocuspocus + SQLite",
        client="hocuspocus",
        persistent=True,
        promise="not durable: broadcasts at once; stores the whole document to SQLite after a 2 s debounce (at most 10 s)",
        storage="SQLite, one row per document (full state)",
        command=lambda port, d: [
            _node(),
            str(NODE_DIR / "hocuspocus-server.mjs"),
            "--port",
            str(port),
            "--host",
            HOST,
            "--db",
            str(d / "hocuspocus.sqlite"),
        ],
        url=lambda port: f"ws://{HOST}:{port}",
        durable=lambda port, d: {"kind": "hocuspocus-sqlite", "file": str(d / "hocuspocus.sqlite")},
    ),
    # Hocuspocus's own provider (@hocuspocus/provider, the driver's hocuspocus client)
    # against Palimpsest's /hocuspocus endpoint: the same server and log as "palimpsest"
    "palimpsest-hocuspocus": ServerSpec(
        name="palimpsest-hocuspocus",
        label="Palimpsest /hocuspocus (SQLite)",
        client="hocuspocus",
        persistent=True,
        promise="**durable**: as Palimpsest; Hocuspocus's protocol, its sync status sent after the commit",
        storage="SQLite event log + snapshots",
        command=lambda port, d: [
            str(PALIMPSEST_BIN),
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--db",
            str(d / "palimpsest.db"),
            "--log-level",
            "warning",
        ],
        url=lambda port: f"ws://{HOST}:{port}/hocuspocus",
        durable=lambda port, d: {
            "kind": "broadcast",
            "verify": {"kind": "palimpsest-sqlite", "file": str(d / "palimpsest.db")},
        },
        needs=_palimpsest_missing,
        env={
            "PALIMPSEST_MAX_EVENTS_PER_SECOND": "0",
            "PALIMPSEST_MAX_CONNECTIONS_PER_IP": "1000000",
        },
    ),
    "y-websocket": ServerSpec(
        name="y-websocket",
        label="y-websocket (memory)",
        client="y-websocket",
        persistent=False,
        promise="nothing: memory only, a restart loses every document",
        storage="none",
        command=_y_websocket(lambda d: []),
        url=lambda port: f"ws://{HOST}:{port}",
        durable=lambda port, d: {"kind": "none"},
    ),
    "y-websocket-leveldb": ServerSpec(
        name="y-websocket-leveldb",
        label="y-websocket + LevelDB",
        client="y-websocket",
        persistent=True,
        promise="not durable: broadcasts first, then appends the update to LevelDB asynchronously, without fsync",
        storage="LevelDB (y-leveldb), one record per update",
        command=_y_websocket(lambda d: ["--persist", str(d / "leveldb")]),
        url=lambda port: f"ws://{HOST}:{port}",
        durable=lambda port, d: {
            "kind": "http-count",
            "url": f"http://{HOST}:{port}/durable",
            "extra": 1,
        },
    ),
    # the floor of a durable-first server, for scale: y-websocket that syncs each update to
    # a plain file before handling it (bench/node/y-websocket-server.mjs --fsync-log) ...
    "y-websocket-fsync": _floor("y-websocket-fsync", warm=False),
    # ... and with the disk kept warm between syncs as Palimpsest's store does (every 2 ms
    # of a pause, for a second after the last sync; server/store/disk_warm.py)
    "y-websocket-fsync-warm": _floor("y-websocket-fsync-warm", warm=True),
    "pycrdt-websocket": ServerSpec(
        name="pycrdt-websocket",
        label="pycrdt-websocket + SQLiteYStore",
        client="y-websocket",
        persistent=True,
        promise="not durable: broadcasts first, then writes each update to SQLite in a background task (one transaction each)",
        storage="SQLite (pycrdt-store), one row per update",
        command=lambda port, d: [
            _peers_python(),
            str(BENCH / "pycrdt_runner.py"),
            "--port",
            str(port),
            "--host",
            HOST,
            "--db",
            str(d / "ystore.db"),
        ],
        url=lambda port: f"ws://{HOST}:{port}",
        durable=lambda port, d: {"kind": "pycrdt-sqlite", "file": str(d / "ystore.db")},
    ),
}
# --- Palimpsest on PostgreSQL + Redis (opt-in: --servers ...,palimpsest-pg); the database and
# Redis are the machine's own (PALIMPSEST_BENCH_PG, PALIMPSEST_BENCH_REDIS); each run uses its
# own schema and channel prefix, dropped afterwards.
PG_URL = os.environ.get("PALIMPSEST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("PALIMPSEST_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def _pg_schema(d: Path) -> str:
    import hashlib

    return "pbench_" + hashlib.sha1(str(d).encode()).hexdigest()[:12]


def _psql(sql: str) -> str:
    r = subprocess.run(["psql", PG_URL, "-XAtqc", sql], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return r.stdout.strip()


def _pg_disk(d: Path) -> int:
    try:
        out = _psql(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n "
            f"ON n.oid = c.relnamespace WHERE n.nspname = '{_pg_schema(d)}' AND c.relkind IN ('r', 'm')"
        )
        return int(out or 0)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired):
        return 0


def _pg_reset(d: Path) -> None:
    try:
        _psql(f'DROP SCHEMA IF EXISTS "{_pg_schema(d)}" CASCADE')
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        note(f"could not drop schema {_pg_schema(d)}: {exc}")


def _pg_missing() -> str | None:
    from urllib.parse import urlsplit

    why = _palimpsest_missing()
    if why:
        return why
    if not shutil.which("psql"):
        return "psql not found"
    for url, default in ((PG_URL, 5432), (REDIS_URL, 6379)):
        u = urlsplit(url)
        host = u.hostname or "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1"):
            return f"{url} is not on loopback"
        try:
            socket.create_connection((host, u.port or default), timeout=2).close()
        except OSError:
            return f"nothing listens at {url} (set PALIMPSEST_BENCH_PG / PALIMPSEST_BENCH_REDIS)"
    return None


def _pg_store_url(d: Path) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}schema={_pg_schema(d)}"


def _redis_url(d: Path) -> str:
    sep = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{sep}prefix={_pg_schema(d)}"


SERVERS["palimpsest-pg"] = ServerSpec(
    name="palimpsest-pg",
    label="Palimpsest (PostgreSQL + Redis)",
    client="y-websocket",
    persistent=True,
    promise="**durable**: each update is committed to the PostgreSQL event log (group commit) before it is broadcast, locally and through Redis",
    storage="PostgreSQL event log + snapshots, Redis fan-out",
    command=lambda port, d: [
        str(PALIMPSEST_BIN),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--store",
        _pg_store_url(d),
        "--fanout",
        _redis_url(d),
        "--log-level",
        "warning",
    ],
    url=lambda port: f"ws://{HOST}:{port}/ws",
    durable=lambda port, d: {"kind": "broadcast"},
    needs=_pg_missing,
    env={"PALIMPSEST_MAX_EVENTS_PER_SECOND": "0", "PALIMPSEST_MAX_CONNECTIONS_PER_IP": "1000000"},
    disk=_pg_disk,
    reset=_pg_reset,
)


def _with_durability_os(spec: ServerSpec, name: str, label: str, promise: str) -> ServerSpec:
    """The same server with ``--durability os``: a commit is handed to the OS, not
    waited for on the disk (survives a killed process, not a power cut)."""
    import dataclasses

    inner = spec.command
    return dataclasses.replace(
        spec,
        name=name,
        label=label,
        promise=promise,
        command=lambda port, d: [*inner(port, d), "--durability", "os"],
    )


SERVERS["palimpsest-os"] = _with_durability_os(
    SERVERS["palimpsest"],
    "palimpsest-os",
    "Palimpsest (SQLite, --durability os)",
    "**durable against a process crash**: each update is committed to the SQLite event log "
    "(WAL, synchronous=NORMAL: in the OS's hands, not yet synced to the disk) before it is broadcast",
)
SERVERS["palimpsest-pg-os"] = _with_durability_os(
    SERVERS["palimpsest-pg"],
    "palimpsest-pg-os",
    "Palimpsest (PostgreSQL + Redis, --durability os)",
    "**durable against a process crash**: each update is committed to PostgreSQL with "
    "synchronous_commit=off (the WAL flush follows within moments) before it is broadcast",
)

ORDER = [
    "palimpsest",
    "palimpsest-os",
    "palimpsest-pg",
    "palimpsest-pg-os",
    "hocuspocus",
    "palimpsest-hocuspocus",
    "y-websocket",
    "y-websocket-leveldb",
    "y-websocket-fsync",
    "pycrdt-websocket",
]
PEER_OF_RECORD = "palimpsest"


def package_tree(rev: str | None, into: Path) -> Path:
    """The package of a commit (or, with None, of the working tree as it is now, so that
    editing it during a run changes nothing), importable with PYTHONPATH=result."""
    raw = into / "raw"
    raw.mkdir(parents=True)
    if rev is None:
        for part in ("server", "client"):
            shutil.copytree(ROOT / part, raw / part, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "server", "client"],
                                 check=True, capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(raw)], input=archive, check=True)
    pkg = into / "pkg"
    pkg.mkdir()
    shutil.move(raw / "server", pkg / "palimpsest")
    shutil.move(raw / "client", pkg / "palimpsest" / "client")
    # compiled ahead, as an installed package is: a module first imported during the
    # ingest (sealing's, the history's) was otherwise compiled from source in the
    # server's measured CPU, which weighed on a short trace (0.3-0.5 s of 1.5 s)
    compileall.compile_dir(str(pkg), quiet=1)
    return pkg


def launcher_tail(name: str, every: float) -> str:
    """The end of a server launcher (a script run in place of `palimpsest`, wrapping some
    of its functions: bench/latency_timeline.py, bench/concurrent_alone.py): a thread that
    writes the launcher's global `name` as JSON to the file OUT every `every` seconds
    (replaced whole each time), then palimpsest's own command line."""
    return f"""
def dump():
    while True:
        time.sleep({every})
        with open(OUT + ".tmp", "w") as fh:
            json.dump({name}, fh)
        os.replace(OUT + ".tmp", OUT)
threading.Thread(target=dump, daemon=True).start()
from palimpsest.cli import main
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Running:
    """One server process that we started; only ever signalled by its own pid."""

    def __init__(self, spec: ServerSpec, datadir: Path, port: int | None = None) -> None:
        self.spec = spec
        self.datadir = datadir
        self.port = port or free_port()
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.peak_rss = 0
        env = dict(os.environ)
        env.update(spec.env)
        self.log = open(datadir.parent / f"{spec.name}.log", "a")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            spec.command(self.port, datadir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=str(NODE_DIR),
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(90) or self.proc.poll() is not None:
            out = "\n".join(self.lines[-20:])
            self.stop()
            raise RuntimeError(f"{spec.name} did not start:\n{out}")
        self.start_seconds = time.monotonic() - t0
        # without psutil (imported by storage_bench.py) no RSS/CPU: main() requires it
        self.ps = psutil.Process(self.proc.pid) if psutil is not None else None
        self._sampling = self.ps is not None
        if self._sampling:
            threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            self.log.write(line)
            self.log.flush()
            if "listening on" in line:
                self.ready.set()

    def _tree(self) -> list[psutil.Process]:
        if self.ps is None:
            return []
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.Error:
            return []

    def rss(self) -> int:
        total = 0
        for p in self._tree():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def cpu(self) -> float:
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while self._sampling and self.proc.poll() is None:
            self.peak_rss = max(self.peak_rss, self.rss())
            time.sleep(0.2)

    def stop(self) -> None:
        self._sampling = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


#: ``--settle``: a server counts as quiet once it has spent at most QUIET_CPU seconds of
#: CPU in every QUIET_WINDOW seconds for this long. Longer than Palimpsest's room unload
#: (5 s after a document's last connection), where its deferred work starts (the
#: attribution index, bench/notes.md, 3 Dec 2026): a single quiet half second, as
#: bench/ingest_alone.py first waited for, ended before it
SETTLE_QUIET_SECONDS = 6.0
#: a window of a second, and at most one clock tick of CPU in it (psutil reads the
#: process's times in 10 ms ticks): an idle Palimpsest spends 2-8 ms a second (uvicorn's
#: tick, /metrics when read), so half a second with under 5 ms, i.e. no tick at all, came
#: rarely enough that six seconds of it never did within a minute
QUIET_WINDOW = 1.0
QUIET_CPU = 0.015
#: ... and waiting stops after this long, quiet or not
SETTLE_LIMIT_SECONDS = 60.0


def wait_quiet(
    srv: Running, quiet_for: float = SETTLE_QUIET_SECONDS, limit: float = SETTLE_LIMIT_SECONDS
) -> tuple[float, float]:
    """Wait until the server has spent at most QUIET_CPU of CPU in every QUIET_WINDOW
    for `quiet_for` seconds (at most `limit` seconds). Returns the seconds waited and
    the server's CPU seconds (Running.cpu) when that quiet began, so that the idle
    stretch's own few milliseconds are not counted as work."""
    t0 = time.monotonic()
    quiet_since, cpu_then = t0, srv.cpu()
    while time.monotonic() - t0 < limit:
        c = srv.cpu()
        time.sleep(QUIET_WINDOW)
        if srv.cpu() - c > QUIET_CPU:
            quiet_since, cpu_then = time.monotonic(), srv.cpu()
        elif time.monotonic() - quiet_since >= quiet_for:
            break
    return time.monotonic() - t0, cpu_then


def disk_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


# --------------------------------------------------------------------------- progress


class Progress:
    """One line on stderr: overall bar over steps, plus the current step's own progress."""

    def __init__(self, total_steps: int) -> None:
        self.total = max(1, total_steps)
        self.done = 0
        self.label = ""
        self.sub = ""
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last = 0.0
        self.loads: list[float] = []
        self.times: list[list[Any]] = []

    def step(self, label: str) -> None:
        self.loads.append(os.getloadavg()[0])
        self.times.append([label, time.monotonic()])
        self.label = label
        self.sub = ""
        self.render(force=True)

    def finish_step(self) -> None:
        self.done += 1
        self.render(force=True)

    def update(self, a: int, b: int) -> None:
        self.sub = f"{a:,}/{b:,}"
        self.render()

    def render(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else 15):
            return
        self._last = now
        width = 28
        frac = self.done / self.total
        filled = int(width * frac)
        el = int(now - self.t0)
        bar = "█" * filled + "░" * (width - filled)
        line = f"[{bar}] {self.done}/{self.total} {el // 60:02d}:{el % 60:02d}  {self.label} {self.sub}"
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line[: shutil.get_terminal_size((120, 20)).columns - 1])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def note(msg: str) -> None:
    sys.stderr.write(("\r\x1b[2K" if sys.stderr.isatty() else "") + msg + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- driver


def run_fanout(
    spec: ServerSpec,
    port: int,
    progress: Progress,
    *,
    doc: str,
    observers: int,
    rate: int,
    edits: int,
) -> dict[str, Any]:
    """One fan-out run on a server already started (bench/flame.py, latency_timeline.py):
    one writer at `rate` edits/s, `observers` observers; the driver's result."""
    return run_driver(
        {
            "scenario": "fanout",
            "doc": doc,
            "observers": observers,
            "rate": rate,
            "edits": edits,
            "server": {"kind": spec.client, "url": spec.url(port), "durable": {"kind": "none"}},
        },
        progress,
        timeout=edits / rate + 120,
    )


@contextlib.contextmanager
def serving(spec: ServerSpec, datadir: Path, steps: int = 1) -> Iterator[tuple[Running, Progress]]:
    """A server started for one measuring run, with its progress line; the step under
    way is finished and both are closed after (bench/concurrent_alone.py,
    ingest_alone.py)."""
    srv = Running(spec, datadir)
    prog = Progress(steps)
    try:
        yield srv, prog
    finally:
        prog.finish_step()
        prog.close()
        srv.stop()


def run_trace(
    scenario: str,
    spec: ServerSpec,
    port: int,
    progress: Progress,
    *,
    doc: str,
    trace: Path,
    limit: int,
) -> dict[str, Any]:
    """One run of a scenario that plays a trace ("concurrent": the two-writer replay;
    "ingest": one writer, one observer) on a server already started
    (bench/concurrent_alone.py, ingest_alone.py, flame.py --concurrent); the driver's
    result."""
    return run_driver(
        {
            "scenario": scenario,
            "doc": doc,
            "server": {"kind": spec.client, "url": spec.url(port), "durable": {"kind": "none"}},
            "trace": str(trace),
            "limit": limit,
            "timeoutSec": 600,
        },
        progress,
        timeout=700,
    )


def run_driver(
    spec: dict[str, Any],
    progress: Progress,
    timeout: float,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    p = subprocess.Popen(
        [_node(), str(NODE_DIR / "driver.mjs"), json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
        cwd=str(NODE_DIR),
    )
    logs: list[str] = []

    def read_err() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            if line.startswith("progress "):
                try:
                    _, a, b = line.split()
                    progress.update(int(a), int(b))
                except ValueError:
                    pass
            else:
                logs.append(line.rstrip())

    t = threading.Thread(target=read_err, daemon=True)
    t.start()
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    result: dict[str, Any] | None = None
    try:
        assert p.stdout is not None
        for line in p.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            obj = json.loads(line)
            if obj.get("ready") and on_ready is not None:
                on_ready(obj)
                assert p.stdin is not None
                p.stdin.write("close\n")
                p.stdin.flush()
                continue
            result = obj
        p.wait()
    finally:
        timer.cancel()
    t.join(2)
    if result is None:
        result = {
            "error": f"driver gave no result (rc={p.returncode}, timeout={timeout}s)",
            "log": logs[-10:],
        }
    if logs and "error" in result:
        result["log"] = logs[-10:]
    return result


# --------------------------------------------------------------------------- the run


@dataclass
class Config:
    traces: list[tuple[str, int]]  # (name, prefix length or 0 for all)
    ctraces: list[str]
    ctrace_limit: int  # txns of each concurrent trace (0 = all)
    fanout: list[int]
    fan_edits: int
    fan_rate: int
    conns: list[int]
    repeats: int
    ingest_timeout: int
    durable_cap: int
    hold: float


QUICK = Config(
    traces=[("sveltecomponent", 0), ("automerge-paper", 20000)],
    ctraces=["friendsforever"],
    ctrace_limit=10000,
    fanout=[1, 10, 50],
    # 500 edits: at 1 observer, p99 is the 5th-largest of 500 latencies, not the maximum
    fan_edits=500,
    fan_rate=50,
    conns=[100],
    repeats=1,
    ingest_timeout=120,
    durable_cap=10,
    hold=1.5,
)
FULL = Config(
    traces=[("sveltecomponent", 0), ("seph-blog1", 0), ("automerge-paper", 0)],
    ctraces=["friendsforever", "clownschool"],
    ctrace_limit=0,
    fanout=[1, 10, 50],
    fan_edits=600,
    fan_rate=50,
    conns=[100, 500, 2000],
    repeats=3,
    ingest_timeout=900,
    durable_cap=900,
    hold=5,
)


def trace_key(name: str, limit: int) -> str:
    return f"{name}[:{limit}]" if limit else name


def trace_path(name: str) -> Path:
    return TRACES / "sequential_traces" / f"{name}.json.gz"


class Bench:
    def __init__(self, cfg: Config, servers: list[str], mode: str) -> None:
        self.cfg = cfg
        self.servers = servers
        self.mode = mode
        self.raw: dict[str, Any] = {"mode": mode, "runs": []}
        self.samples_dir = OUT / "samples"
        self.profile = False
        #: wait for each server to be quiet after each ingest (--settle)
        self.settle = False

    def start_profilers(self, srv: Running) -> list[subprocess.Popen[bytes]]:
        """py-spy on the server for its whole main phase: a flame graph and collapsed stacks."""
        pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if not pyspy:
            note("py-spy not found: no profile")
            return []
        out = []
        for fmt, dest in (("flamegraph", REPORT / "profile.svg"), ("raw", OUT / "profile.txt")):
            out.append(
                subprocess.Popen(
                    [
                        pyspy,
                        "record",
                        "--pid",
                        str(srv.proc.pid),
                        "--rate",
                        "200",
                        "--nonblocking",
                        "--format",
                        fmt,
                        "-o",
                        str(dest),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=open(OUT / f"py-spy-{fmt}.log", "w"),
                )
            )
        time.sleep(1.0)
        return out

    def stop_profilers(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if procs:
            self.raw["profile"] = summarize_profile(OUT / "profile.txt")

    def steps_per_server(self, spec: ServerSpec) -> int:
        c = self.cfg
        n = len(c.traces) + len(c.fanout) + len(c.ctraces) + len(c.conns)
        if spec.persistent:
            n += len(c.traces)
        return n

    def run(self) -> dict[str, Any]:
        c = self.cfg
        total = sum(self.steps_per_server(SERVERS[s]) for s in self.servers) * c.repeats
        prog = Progress(total)
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        try:
            for rep in range(c.repeats):
                # alternate the order between repeats so no server always runs first/last
                order = (
                    self.servers[rep % len(self.servers) :]
                    + self.servers[: rep % len(self.servers)]
                )
                if rep % 2 == 1:
                    order = list(reversed(order))
                for name in order:
                    spec = SERVERS[name]
                    try:
                        run = self.run_server(spec, rep, prog)
                    except Exception as exc:  # keep going: report it
                        note(f"!! {name} (repeat {rep + 1}): {exc}")
                        run = {"server": name, "rep": rep, "error": str(exc)}
                    self.raw["runs"].append(run)
                    (OUT / "results.json").write_text(json.dumps(self.raw, indent=1))
            if self.profile and PEER_OF_RECORD in self.servers:
                # a separate pass, so that the sampler's own CPU use never shows in the figures
                prog.total += self.steps_per_server(SERVERS[PEER_OF_RECORD])
                try:
                    self.raw["profile_run"] = self.run_server(SERVERS[PEER_OF_RECORD], -1, prog)
                except Exception as exc:
                    note(f"!! profiling pass: {exc}")
        finally:
            prog.close()
            marks = prog.times + [["end", time.monotonic()]]
            self.raw["step_seconds"] = [
                [a[0], round(b[1] - a[1], 2)] for a, b in zip(marks, marks[1:], strict=False)
            ]
            self.raw["loadavg_1min"] = {
                "min": min(prog.loads, default=0),
                "max": max(prog.loads, default=0),
                "median": statistics.median(prog.loads) if prog.loads else 0,
            }
        return self.raw

    def run_server(self, spec: ServerSpec, rep: int, prog: Progress) -> dict[str, Any]:
        c = self.cfg
        base = OUT / "runs" / (f"{spec.name}-r{rep}" if rep >= 0 else f"{spec.name}-profile")
        shutil.rmtree(base, ignore_errors=True)
        datadir = base / "data"
        datadir.mkdir(parents=True)
        if spec.reset:
            spec.reset(datadir)
        spec_disk = spec.disk
        disk: Callable[[], int] = (
            (lambda: disk_bytes(datadir) + spec_disk(datadir))
            if spec_disk
            else (lambda: disk_bytes(datadir))
        )
        run: dict[str, Any] = {
            "server": spec.name,
            "rep": rep,
            "ingest": {},
            "fanout": {},
            "concurrent": {},
            "connections": {},
            "load": {},
        }
        srv = Running(spec, datadir)
        profilers = self.start_profilers(srv) if rep < 0 else []  # the profiling pass only
        run["rss_start"] = srv.rss()
        run["start_seconds"] = srv.start_seconds
        server = {
            "kind": spec.client,
            "url": spec.url(srv.port),
            "durable": spec.durable(srv.port, datadir),
        }
        tag = f"r{rep + 1} {spec.name}" if rep >= 0 else f"profiling {spec.name}"
        try:
            # ---- idle connections, first, on a fresh process: memory per connection
            for n in c.conns:
                prog.step(f"{tag} · {n} idle connections")
                time.sleep(1.0)
                rss0 = srv.rss()
                box: dict[str, Any] = {}

                def ready(
                    obj: dict[str, Any], box: dict[str, Any] = box, srv: Running = srv
                ) -> None:
                    time.sleep(c.hold)
                    box["rss"] = srv.rss()
                    box["ready"] = obj

                res = run_driver(
                    {
                        "scenario": "connections",
                        "doc": f"idle{n}",
                        "clients": n,
                        "perDoc": 10,
                        "server": server,
                        "holdSec": 120,
                    },
                    prog,
                    timeout=300,
                    on_ready=ready,
                )
                res["rss_before"] = rss0
                res["rss_connected"] = box.get("rss")
                if box.get("rss") is not None:
                    res["bytes_per_connection"] = (box["rss"] - rss0) / n
                run["connections"][str(n)] = res
                if res.get("error") or res.get("connected") != n:
                    note(
                        f"!! {tag} {n} connections: {res.get('error') or str(res.get('connected')) + ' connected'}"
                    )
                prog.finish_step()
            # ---- ingest: one writer, one observer, every patch of the trace
            for name, limit in c.traces:
                key = trace_key(name, limit)
                prog.step(f"{tag} · ingest {key}")
                cpu0 = srv.cpu()
                res = run_driver(
                    {
                        "scenario": "ingest",
                        "trace": str(trace_path(name)),
                        "limit": limit,
                        "doc": f"ingest-{name}",
                        "server": server,
                        "timeoutSec": c.ingest_timeout,
                        "durableTimeoutSec": c.durable_cap,
                    },
                    prog,
                    timeout=c.ingest_timeout + c.durable_cap + 120,
                )
                res["cpu_seconds"] = srv.cpu() - cpu0
                if self.settle:
                    # what the server does for these patches after the observer has
                    # them all, until it is quiet: counted here, not in the next step
                    prog.step(f"{tag} · ingest {key}, settling")
                    waited, cpu_quiet = wait_quiet(srv)
                    res["settle_seconds"] = waited
                    res["settled_cpu_seconds"] = cpu_quiet - cpu0
                res["rss_after"] = srv.rss()
                res["disk_after"] = disk()
                run["ingest"][key] = res
                if res.get("error") or not res.get("correct"):
                    note(
                        f"!! {tag} ingest {key}: {res.get('error') or 'content differs / timed out'}"
                    )
                prog.finish_step()
            # ---- fan-out latency at a fixed edit rate
            for n in c.fanout:
                prog.step(f"{tag} · fan-out {n} observers")
                samples = self.samples_dir / (
                    f"fanout-{spec.name}-{n}-r{rep}.json"
                    if rep >= 0
                    else f"profile-fanout-{n}.json"
                )
                res = run_driver(
                    {
                        "scenario": "fanout",
                        "doc": f"fanout-{n}",
                        "observers": n,
                        "rate": c.fan_rate,
                        "edits": c.fan_edits,
                        "server": server,
                        "samplesFile": str(samples),
                    },
                    prog,
                    timeout=c.fan_edits / c.fan_rate + 120,
                )
                run["fanout"][str(n)] = res
                if res.get("error") or res.get("lost"):
                    note(
                        f"!! {tag} fan-out {n}: {res.get('error') or str(res.get('lost')) + ' lost'}"
                    )
                prog.finish_step()
            # ---- two writers replaying a concurrent trace
            for name in c.ctraces:
                prog.step(f"{tag} · concurrent {name}")
                res = run_driver(
                    {
                        "scenario": "concurrent",
                        "doc": f"concurrent-{name}",
                        "server": server,
                        "trace": str(TRACES / "concurrent_traces" / f"{name}.json.gz"),
                        "limit": c.ctrace_limit,
                        "timeoutSec": c.ingest_timeout,
                    },
                    prog,
                    timeout=c.ingest_timeout + 60,
                )
                run["concurrent"][name] = res
                if res.get("error") or not res.get("correct"):
                    note(
                        f"!! {tag} concurrent {name}: {res.get('error') or 'did not converge correctly'}"
                    )
                prog.finish_step()
            run["rss_end"] = srv.rss()
            run["rss_peak"] = srv.peak_rss
            run["cpu_seconds"] = srv.cpu()
            run["disk_end"] = disk()
        finally:
            self.stop_profilers(profilers)
            srv.stop()
        # ---- cold load: restart, then a fresh client until it holds the whole document
        if spec.persistent:
            for name, limit in c.traces:
                key = trace_key(name, limit)
                prog.step(f"{tag} · cold load {key}")
                ing = run["ingest"].get(key, {})
                if ing.get("durableSeconds") is None:
                    run["load"][key] = {
                        "skipped": "the server had not stored the whole trace when it was stopped",
                        "history": ing.get("patches"),
                    }
                    prog.finish_step()
                    continue
                srv = Running(spec, datadir)
                try:
                    server = {
                        "kind": spec.client,
                        "url": spec.url(srv.port),
                        "durable": {"kind": "none"},
                    }
                    res = run_driver(
                        {
                            "scenario": "load",
                            "doc": f"ingest-{name}",
                            "server": server,
                            "trace": str(trace_path(name)),
                            "limit": limit,
                            "writerId": ing.get("writerId"),
                            "finalClock": ing.get("finalClock"),
                            "timeoutSec": 60,
                        },
                        prog,
                        timeout=120,
                    )
                    res["restart_seconds"] = srv.start_seconds
                    res["rss_after"] = srv.rss()
                    res["history"] = ing.get("patches")
                    run["load"][key] = res
                    if res.get("error") or not res.get("correct"):
                        note(
                            f"!! {tag} cold load {key}: {res.get('error') or 'incomplete document'}"
                        )
                finally:
                    srv.stop()
                prog.finish_step()
        if spec.reset:
            spec.reset(datadir)
        return run


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function, from py-spy's collapsed stacks."""
    selfc: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        total += k
        frames = stack.split(";")[1:]  # drop the thread name
        names = []
        for fr in frames:
            # "function (path/file.py:line)" -> "function (file.py)"
            name = fr.split(" (")[0]
            loc = fr.split(" (")[1].rstrip(")") if " (" in fr else ""
            file = loc.rsplit(":", 1)[0]
            parts = file.split("/")
            short = "/".join(parts[-2:]) if len(parts) > 1 else file
            names.append(f"{name} ({short})")
        if names:
            selfc[names[-1]] = selfc.get(names[-1], 0) + k
        for nm in set(names):
            incl[nm] = incl.get(nm, 0) + k
    if not total:
        return {}
    return {
        "samples": total,
        "self": [[k, v / total] for k, v in sorted(selfc.items(), key=lambda x: -x[1])[:top]],
        "inclusive": [[k, v / total] for k, v in sorted(incl.items(), key=lambda x: -x[1])[:top]],
    }


# --------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    v: dict[str, str] = {}
    for pkg in [
        "yjs",
        "y-websocket",
        "ws",
        "@hocuspocus/server",
        "@hocuspocus/extension-sqlite",
        "@hocuspocus/provider",
        "@y/websocket-server",
        "y-leveldb",
        "better-sqlite3",
        "leveldown",
    ]:
        try:
            v[pkg] = json.loads((NODE_DIR / "node_modules" / pkg / "package.json").read_text())[
                "version"
            ]
        except OSError:
            v[pkg] = "?"
    for pkg in ["pycrdt", "pycrdt-websocket", "pycrdt-store", "uvicorn", "websockets"]:
        try:
            v[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            v[pkg] = "?"
    v["node"] = subprocess.run(
        [_node(), "--version"], capture_output=True, text=True
    ).stdout.strip()
    v["python (peers)"] = platform.python_version()
    try:
        py = PALIMPSEST_BIN.parent / "python"
        if not py.exists():  # PALIMPSEST_BIN is a launcher (a packaged tree): the venv's
            py = ROOT / ".venv" / "bin" / "python"
        v["palimpsest"] = (
            subprocess.run(
                [str(py), "-c", "import importlib.metadata as m; print(m.version('palimpsest'))"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            or "?"
        )
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "server", "client"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if "PALIMPSEST_BIN" in os.environ:  # not necessarily this checkout's code
            v["palimpsest"] += f" (run as {PALIMPSEST_BIN}; the checkout is at git {rev})"
        else:
            v["palimpsest"] += f" (git {rev}{', with uncommitted changes' if dirty else ''})"
        for pkg in ["pycrdt", "uvicorn", "websockets", "aiosqlite"]:
            out = subprocess.run(
                [str(py), "-c", f"import importlib.metadata as m; print(m.version('{pkg}'))"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            v[f"{pkg} (palimpsest)"] = out or "?"
    except OSError:
        pass
    return v


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    osname = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cpu": f"{cpu}, {psutil.cpu_count(logical=True)} logical cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{osname}, Linux {platform.release()}",
        "disk": _disk_of(OUT),
    }


def fsync_probe(where: Path, n: int = 200) -> dict[str, float]:
    """What one fsync costs on the data disk right now: n appends of 100 bytes to a file
    in `where`, each followed by fdatasync (what a WAL commit with synchronous=FULL
    waits for). Shared disks vary by 10x within minutes, so the report shows it."""
    path = where / "fsync-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 100)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    times.sort()
    return {"p50_us": times[n // 2], "p90_us": times[n * 9 // 10], "n": n}


def timed_after_idle(fn: Callable[[], Any], gap: float, n: int, warm: int = 20) -> list[float]:
    """µs of each of `n` calls of `fn`, each after `gap` seconds of sleep (0: back to
    back), sorted; `warm` calls first, untimed (wake_probe, bench/wake_cost.py)."""
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return sorted(out)


def wake_probe(where: Path, n: int = 100, gap: float = 0.02) -> dict[str, Any]:
    """What a keystroke's commit costs right after the process was idle, against back to
    back (bench/wake_cost.py has the full table): a SQLite commit without a sync (WAL,
    synchronous=OFF: SQLite's own work) and a 100-byte append with fdatasync (the
    floor's commit), p50 in µs with no gap and after `gap` seconds of sleep. Hosts
    differ here by several times (3 Dec 2026, AMD EPYC: the SQLite commit 13-20 µs back
    to back, 168-173 after 20 ms), and every server's latency at the fan-out's 50 edits/s pays
    it, so the report shows it beside the fsync probe."""
    db = where / "wake-probe.db"
    log_path = where / "wake-probe.bin"
    commit, close_db = sqlite_commit_nosync(db)
    append, close_log = append_fdatasync(log_path)
    try:
        out: dict[str, Any] = {"gap_ms": gap * 1e3}
        for name, fn in (("sqlite_commit_nosync", commit), ("append_fdatasync", append)):
            row = {}
            for label, pause in (("hot_p50_us", 0.0), ("idle_p50_us", gap)):
                row[label] = statistics.median(timed_after_idle(fn, pause, n))
            out[name] = row
        return out
    finally:
        close_db()
        close_log()
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), log_path):
            p.unlink(missing_ok=True)


def sqlite_commit_nosync(
    path: Path, row: bytes = b"x" * 24
) -> tuple[Callable[[], None], Callable[[], None]]:
    """A one-row SQLite commit with no sync (WAL, synchronous=OFF: SQLite's own work),
    and what closes its connection (wake_probe, bench/wake_cost.py)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE IF NOT EXISTS t (a INTEGER PRIMARY KEY, b BLOB)")

    def commit() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (b) VALUES (?)", (row,))
        conn.execute("COMMIT")

    return commit, conn.close


def append_fdatasync(path: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    """A 100-byte append with fdatasync (the floor's commit), and what closes its file
    (wake_probe, bench/wake_cost.py)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    record = b"x" * 100

    def append() -> None:
        os.write(fd, record)
        os.fdatasync(fd)

    return append, lambda: os.close(fd)


def _disk_of(path: Path) -> str:
    try:
        r = (
            subprocess.run(["df", "-T", str(path)], capture_output=True, text=True)
            .stdout.splitlines()[-1]
            .split()
        )
        return f"{r[1]} filesystem ({r[0]})"
    except (OSError, IndexError):
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a run under 5 minutes: 2 short traces, 1 repeat, 100 idle clients",
    )
    ap.add_argument(
        "--servers",
        default=",".join(ORDER),
        help="comma-separated, from: "
        + ", ".join(SERVERS)
        + " (default: all; palimpsest-pg is skipped when no PostgreSQL/Redis listens)",
    )
    ap.add_argument("--repeats", type=int, help="override the number of repeats")
    ap.add_argument(
        "--durable-cap", type=int, help="seconds to wait for a peer's storage to catch up"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="after the measured runs, a separate pass of Palimpsest under py-spy: bench/profile.svg + a summary in RESULTS.md",
    )
    ap.add_argument(
        "--settle",
        action="store_true",
        help="after each ingest, wait until the server is quiet (at most 10 ms of CPU in any "
        "second for 6 s) and report its CPU until then too: the work it deferred (a "
        "store's debounced write, Palimpsest's attribution index), which otherwise lands "
        "in the next step",
    )
    ap.add_argument("--out", help="directory for raw results, logs and data (default bench/out)")
    ap.add_argument("--report", help="directory for RESULTS.md and the plots (default bench/)")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="re-write RESULTS.md and plots from bench/out/results.json",
    )
    args = ap.parse_args()
    if psutil is None:
        ap.error("psutil is not installed: run this through bench/run, which installs it")

    global OUT, REPORT
    if args.out:
        OUT = Path(args.out).resolve()
    if args.report:
        REPORT = Path(args.report).resolve()
        REPORT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(BENCH))
    from report import write_report  # local module

    if args.report_only:
        raw = json.loads((OUT / "results.json").read_text())
        write_report(raw, REPORT, OUT / "samples")
        print(f"wrote {REPORT / 'RESULTS.md'}")
        return 0

    cfg = QUICK if args.quick else FULL
    if args.repeats:
        cfg.repeats = args.repeats
    if args.durable_cap:
        cfg.durable_cap = args.durable_cap
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    servers = []
    skipped: dict[str, str] = {}
    for s in wanted:
        if s not in SERVERS:
            ap.error(f"unknown server {s}")
        why = SERVERS[s].needs()
        if why:
            skipped[s] = why
            note(f"skipping {s}: {why}")
        else:
            servers.append(s)
    if not servers:
        note("no server to run")
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    bench = Bench(cfg, servers, "quick" if args.quick else "full")
    bench.profile = args.profile
    bench.settle = args.settle
    bench.raw.update(
        {
            "started": started.isoformat(timespec="seconds"),
            "config": cfg.__dict__,
            "settle": args.settle,
            "servers": servers,
            "skipped": skipped,
            "specs": {
                s: {
                    "label": SERVERS[s].label,
                    "promise": SERVERS[s].promise,
                    "storage": SERVERS[s].storage,
                    "persistent": SERVERS[s].persistent,
                }
                for s in SERVERS
            },
            "machine": machine(),
            "versions": versions(),
            "traces": str(TRACES),
        }
    )
    t0 = time.monotonic()
    bench.raw["fsync_probe"] = {"start": fsync_probe(OUT)}
    bench.raw["wake_probe"] = wake_probe(OUT)
    raw = bench.run()
    raw["fsync_probe"]["end"] = fsync_probe(OUT)
    raw["seconds"] = time.monotonic() - t0
    (OUT / "results.json").write_text(json.dumps(raw, indent=1))
    write_report(raw, REPORT, OUT / "samples")
    note(f"done in {raw['seconds'] / 60:.1f} min: {REPORT / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
