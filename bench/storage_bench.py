"""Storage benchmark: what the store keeps of a real editing trace, before and after the
compact event log (issue #13), in the same run.

For each trace and store (SQLite, PostgreSQL), and each layout -- "rows" (the code of
commit BASELINE: one row per event) and "compact" (this tree: tail rows sealed into
compressed segments) -- a real `palimpsest serve` process on a loopback port takes the
trace through its websocket (one writer sending one Yjs update per transaction of the
trace, one observer; bench/backbone.py's clients), is stopped cleanly (SIGTERM), and we
measure:

- the whole store's bytes: the SQLite file + WAL after the stop, or the
  pg_total_relation_size of every table of its PostgreSQL schema; by table too;
- the raw bytes of the Yjs updates the trace sent (what any store must keep at least);
- server CPU per logged event during the ingest (sealing included: it runs in the server);
- cold load: the server restarted, a fresh client until it holds the final text (median).

With --peers, the same updates go to the servers people would pick instead (bench/bench.py's
peers: Hocuspocus + SQLite, y-websocket + LevelDB, pycrdt-websocket + SQLiteYStore), each
started fresh on an empty data dir and driven by bench/node/driver.mjs's ingest (a real Yjs
client applies each of our updates and its provider sends it, in the peer's own protocol);
once the peer's storage holds the whole trace (or --peer-cap seconds passed: recorded), it
is stopped with SIGTERM and every file of its data dir is measured.

    .venv/bin/python bench/storage_bench.py                      # every trace, SQLite + PG
    .venv/bin/python bench/storage_bench.py --traces automerge-paper --stores sqlite --repeats 3
    .venv/bin/python bench/storage_bench.py --quick              # sveltecomponent, SQLite
    .venv/bin/python bench/storage_bench.py --peers-only \
        --peers hocuspocus,y-websocket-leveldb,pycrdt-websocket  # merged into storage.json

Writes bench/results/storage.json, a section of bench/RESULTS.md, bench/storage.png and,
with peers, bench/storage_peers.png.
Traces: data/traces (josephg/editing-traces, CC BY 4.0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import backbone  # noqa: E402
import websockets  # noqa: E402

import bench as peers  # noqa: E402  (bench/bench.py: the peers' servers and the driver)

# no keepalive pings from the bench's clients: on a loaded 2-core machine a late pong
# closed a run's socket with 1011 (what is measured here is the store, not liveness)
websockets.connect = functools.partial(websockets.connect, ping_interval=None)  # type: ignore[misc,assignment]

#: the last commit of the row-per-event layout (main, with global positions)
BASELINE = "2b7d0eb"
PG_URL = os.environ.get("PALIMPSEST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
TRACES = ["automerge-paper", "sveltecomponent", "seph-blog1"]
RESULTS = ROOT / "bench" / "RESULTS.md"
STORAGE_JSON = ROOT / "bench" / "results" / "storage.json"
BEGIN, END = "<!-- storage-bench -->", "<!-- /storage-bench -->"
#: the peers' part of that section (what --peers-only rewrites, leaving the rest as it is)
PBEGIN, PEND = "<!-- storage-peers -->", "<!-- /storage-peers -->"
#: the peers that keep something on disk, in the report's order
PEERS = ["hocuspocus", "y-websocket-leveldb", "pycrdt-websocket"]
#: what each keeps, so that its column is read right
KEEPS = {
    "hocuspocus": "one SQLite row per document: its whole merged state "
    "(`Y.encodeStateAsUpdate`), rewritten at each store (2 s debounce, at most 10 s); "
    "no history",
    "y-websocket-leveldb": "every update, one LevelDB record each, keyed by document name "
    "and clock (in LevelDB's write-ahead log, and past its 4 MB write buffer in "
    "snappy-compressed tables); y-leveldb merges a document's records into one only when "
    "it loads one that holds more than 500, which a run never does (the document is "
    "loaded once, empty)",
    "pycrdt-websocket": "every update, one SQLite row each (with the document's path, "
    "its metadata and a timestamp, and an index on path and timestamp; never squashed: "
    "no TTL set), plus a checkpoint of the whole state every 100 updates (one row per "
    "document, replaced)",
}


#: the package of a commit, or of the working tree (bench/bench.py)
package_tree = peers.package_tree


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


class Server:
    """`palimpsest serve` on a store URL, with the code of this tree or of `pythonpath`."""

    def __init__(self, store: str, port: int, pythonpath: Path) -> None:
        self.store, self.port, self.pythonpath = store, port, pythonpath
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # both layouts on asyncio's event loop (the baseline's only one): what differs
        # between them is the store, not the loop
        env = {**os.environ, "PALIMPSEST_MAX_EVENTS_PER_SECOND": "0",
               "PALIMPSEST_EVENT_LOOP": "asyncio", "PYTHONPATH": str(self.pythonpath)}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "palimpsest", "serve", "--port", str(self.port),
             "--store", self.store, "--log-level", os.environ.get("SIZE_LOG", "warning")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        lines = []
        for line in self.proc.stdout:
            lines.append(line.decode(errors="replace"))
            if b"listening on" in line:
                # keep draining its output so that it never blocks on a full pipe
                threading.Thread(target=_drain, args=(self.proc.stdout,), daemon=True).start()
                return
        raise RuntimeError("server did not start:\n" + "".join(lines[-20:]))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)
            self.proc = None


def psql(sql: str) -> str:
    r = subprocess.run(["psql", PG_URL, "-XAtqc", sql], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return r.stdout.strip()


def sizes(store: str, path: Path | None, schema: str | None) -> dict[str, int]:
    """Bytes by table (indexes counted with their table), and 'total'."""
    out: dict[str, int] = {}
    if path is not None:
        with contextlib.closing(sqlite3.connect(path)) as c, c:
            rows = c.execute(
                "SELECT COALESCE(m.tbl_name, s.name), SUM(s.pgsize) FROM dbstat s "
                "LEFT JOIN sqlite_master m ON m.name = s.name GROUP BY 1"
            ).fetchall()
        out = {name: int(n) for name, n in rows}
        files = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        out["total"] = files
        out["wal"] = sum(p.stat().st_size for p in path.parent.glob(path.name + "-wal"))
        return out
    text = psql(
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
        f"ON n.oid = c.relnamespace WHERE n.nspname = '{schema}' AND c.relkind = 'r'"
    )
    for line in text.splitlines():
        name, n = line.split("|")
        out[name] = int(n)
    out["total"] = sum(out.values())
    return out


#: events a document may keep as tail rows once sealing caught up (a run not yet whole)
SEGMENT_EVENTS = 1024


def metric(port: int, name: str) -> float | None:
    """A counter or gauge of the server's /metrics, None when it has none of that name
    (the rows layout: no sealing, no stored attribution)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def counter(port: int, name: str) -> int | None:
    value = metric(port, name)
    return None if value is None else int(value)


def wait_unloaded(port: int, within: float = 300) -> None:
    """Until the server has no document loaded: the ingest's room unloaded (its clients
    gone, then the server's unload delay), which writes its last snapshot and stores
    the older ones of the ladder as differences before it counts as unloaded."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if metric(port, "palimpsest_rooms_open") == 0:
            return
        time.sleep(0.2)
    print(f"    a room still loaded after {within:.0f} s", file=sys.stderr)


def wait_idle(port: int, events: int, within: float = 300, attribution: bool = True) -> None:
    """Until the server has done what it does after an ingest, off the editing path:
    sealing caught up (on a loaded machine it may lag behind for a while; what a clean
    stop leaves unsealed is sealed at the next start) and, once the document unloaded,
    its attribution index stored for cold servers (paced to half a core). The store is
    measured as an idle server keeps it."""
    whole = events // SEGMENT_EVENTS * SEGMENT_EVENTS
    deadline = time.monotonic() + within
    sealed = stored = None
    while time.monotonic() < deadline:
        sealed = counter(port, "palimpsest_sealed_events_total")
        stored = None
        if attribution:
            stored = counter(port, "palimpsest_attribution_indexes_stored_total")
        if (sealed is None or sealed >= whole) and (stored is None or stored >= 1):
            return
        time.sleep(0.5)
    print(f"    not idle after {within:.0f} s: {sealed} of {whole} events sealed, "
          f"{stored} attribution indexes stored", file=sys.stderr)  # fmt: skip


async def timed_get(port: int, path: str) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
        t = time.perf_counter()
        r = await http.get(path)
        dt = time.perf_counter() - t
        r.raise_for_status()
    return dt


async def versions_times(port: int, seqs: list[int]) -> list[float]:
    """The version at each seq (the JSON any client reads), wall-clock seconds each."""
    import httpx

    times = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
        for seq in seqs:
            t = time.perf_counter()
            r = await http.get(f"/api/docs/bench/versions/{seq}")
            times.append(time.perf_counter() - t)
            r.raise_for_status()
    return times


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def one_run(trace: str, kind: str, layout: str, pythonpath: Path, updates: list[bytes],
            final: str, loads: int, versions: int = 0) -> dict[str, Any]:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path: Path | None = None
        schema: str | None = None
        if kind == "sqlite":
            path = Path(tmp) / "bench.db"
            url = f"sqlite:///{path}"
        else:
            schema = f"sbench_{uuid.uuid4().hex[:12]}"
            url = f"{PG_URL}?schema={schema}"
        port = backbone.free_port()
        srv = Server(url, port, pythonpath)
        try:
            srv.start()
            assert srv.proc is not None
            cpu0 = backbone.cpu_seconds(srv.proc.pid)
            elapsed = asyncio.run(backbone.ingest(port, updates, final))
            # the ingest's work: every event logged and sealed, the room unloaded (its
            # last snapshot written, the ladder's older rungs stored as differences)
            wait_idle(port, len(updates), attribution=False)
            wait_unloaded(port)
            time.sleep(1.0)  # what the unload set going (a seal, a VACUUM) finishes
            # the unload also starts building the document's attribution index (idle
            # upkeep, paced): the server counts that CPU apart, and it is not the ingest's
            building = metric(port, "palimpsest_attribution_upkeep_cpu_seconds_total") or 0.0
            cpu = backbone.cpu_seconds(srv.proc.pid) - cpu0 - building
            # then the upkeep of an idle document: its attribution index built and stored,
            # and (no counter for it) the last VACUUM of PostgreSQL's tail, which may be
            # tried again for up to 2.5 s after the document went idle
            wait_idle(port, len(updates))
            time.sleep(4.0)
            upkeep = backbone.cpu_seconds(srv.proc.pid) - cpu0 - cpu
            srv.stop()
            by_table = sizes(kind, path, schema)
            times = []
            for _ in range(loads):
                srv.start()
                times.append(asyncio.run(backbone.cold_load(port, final)))
                srv.stop()
            hist: dict[str, Any] = {}
            if versions:
                # cold: the first request of a server just started, the version at the
                # head, then (another start) blame at the head; then the versions at
                # random seqs (the same for every layout and run: seeded by the trace)
                for what, route in (("cold_version_s", "/api/docs/bench/versions/head"),
                                    ("cold_blame_s", "/api/docs/bench/blame")):  # fmt: skip
                    srv.start()
                    hist[what] = asyncio.run(timed_get(port, route))
                    if what == "cold_blame_s":
                        seqs = random.Random(trace).sample(range(1, len(updates) + 1), versions)
                        hist["version_s"] = asyncio.run(versions_times(port, seqs))
                    srv.stop()
        finally:
            srv.stop()
            if schema:
                psql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    raw = sum(len(u) for u in updates)
    return {
        "trace": trace, "store": kind, "layout": layout, "events": len(updates),
        "raw_bytes": raw, "bytes": by_table, "ratio": by_table["total"] / raw,
        "ingest_s": elapsed, "cpu_us_per_event": cpu / len(updates) * 1e6,
        "upkeep_cpu_us_per_event": upkeep / len(updates) * 1e6,
        "cold_load_ms": statistics.median(times) * 1e3 if times else None,
        **({"version_ms": [t * 1e3 for t in hist["version_s"]],
            "cold_version_ms": hist["cold_version_s"] * 1e3,
            "cold_blame_ms": hist["cold_blame_s"] * 1e3} if hist else {}),
    }  # fmt: skip


def peer_run(trace: str, name: str, updates: list[bytes], final: str, cap: int,
             timeout: int, prog: peers.Progress) -> dict[str, Any]:  # fmt: skip
    """One peer, fresh on an empty data dir: the updates sent by the driver's ingest
    (one writer, one observer), its storage waited for (at most `cap` s), SIGTERM, and
    every file of its data dir measured."""
    spec = peers.SERVERS[name]
    with tempfile.TemporaryDirectory(prefix=f"storage-{name}-") as tmp:
        base = Path(tmp)
        datadir = base / "data"  # the peer's log goes to base/<name>.log, not counted
        datadir.mkdir()
        with open(base / "updates.bin", "wb") as f:
            for u in updates:
                f.write(len(u).to_bytes(4, "little"))
                f.write(u)
        (base / "expected.txt").write_text(final, encoding="utf-8")
        if spec.reset:
            spec.reset(datadir)
        srv = peers.Running(spec, datadir)
        try:
            res = peers.run_driver(
                # the document's name is ours (backbone.ingest's): the peers' records repeat it
                {"scenario": "ingest", "doc": "bench",
                 "updatesFile": str(base / "updates.bin"),
                 "expectedFile": str(base / "expected.txt"),
                 "server": {"kind": spec.client, "url": spec.url(srv.port),
                            "durable": spec.durable(srv.port, datadir)},
                 "timeoutSec": timeout, "durableTimeoutSec": cap},
                prog, timeout=timeout + cap + 120,
            )  # fmt: skip
            time.sleep(2.0)  # idle again, as our stores get before their stop
        finally:
            srv.stop()
        if "error" in res:
            log = "\n".join(res.get("log", []) + srv.lines[-10:])
            raise RuntimeError(f"{res['error']}\n{log}")
        rc = srv.proc.returncode
        parts = {str(p.relative_to(datadir)): p.stat().st_size
                 for p in sorted(datadir.rglob("*")) if p.is_file()}  # fmt: skip
        total = peers.disk_bytes(datadir) + (spec.disk(datadir) if spec.disk else 0)
        if spec.reset:
            spec.reset(datadir)
    raw = sum(len(u) for u in updates)
    capped = bool(res.get("durableCapped")) or res.get("durableSeconds") is None
    return {
        "trace": trace, "store": name, "layout": "peer", "label": spec.label,
        "events": len(updates), "raw_bytes": raw,
        # what the driver's Yjs writer sent: it re-encodes each update it applies
        "sent_updates": res.get("updates"), "sent_bytes": res.get("updateBytes"),
        "bytes": {"total": total, **parts}, "ratio": total / raw,
        "complete": bool(res.get("correct")) and not capped and rc == 0,
        "correct": res.get("correct"), "capped": capped, "cap_s": cap,
        "stored_at_cap": res.get("storedAtCap"), "stop_returncode": rc,
        "observer_s": res.get("observerSeconds"), "durable_s": res.get("durableSeconds"),
    }  # fmt: skip


def run_peers(names: list[str], traces: list[str], cap: int, timeout: int,
              command: str) -> list[dict[str, Any]]:  # fmt: skip
    out: list[dict[str, Any]] = []
    prog = peers.Progress(len(traces) * len(names))
    try:
        for trace in traces:
            txns, _ = backbone.load_trace(trace, None)
            updates, final = backbone.make_updates(txns)
            for name in names:
                prog.step(f"{trace} · {name}")
                try:
                    r = peer_run(trace, name, updates, final, cap, timeout, prog)
                except Exception as e:  # noqa: BLE001 - reported, the others still run
                    peers.note(f"    {trace} · {name} failed: {e}")
                    prog.finish_step()
                    continue
                r["command"] = command
                out.append(r)
                sent = r["sent_bytes"]
                peers.note(
                    f"    {trace} · {name}: {r['bytes']['total']:,} bytes = "
                    f"{r['ratio']:.3f}× raw ({r['raw_bytes']:,} bytes; the driver sent "
                    f"{sent if sent is None else format(sent, ',')}); "
                    + ("complete" if r["complete"] else
                       f"INCOMPLETE (correct={r['correct']}, cap reached={r['capped']}, "
                       f"stored at cap={r['stored_at_cap']}, exit={r['stop_returncode']})")
                )  # fmt: skip
                prog.finish_step()
    finally:
        prog.close()
    return out


def log_part(run: dict[str, Any]) -> int:
    """Bytes of the event log alone (every table but snapshots; indexes included)."""
    b = run["bytes"]
    if run["store"] == "sqlite":
        return int(sum(v for k, v in b.items() if k not in ("total", "wal", "snapshots")))
    return int(sum(v for k, v in b.items() if k not in ("total", "snapshots")))


def fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def rng(xs: list[float], f: str = "{:.2f}") -> str:
    lo, hi = min(xs), max(xs)
    return f.format(lo) if f.format(lo) == f.format(hi) else f"{f.format(lo)}–{f.format(hi)}"


def history_cells(rs: list[dict[str, Any]]) -> str:
    """any version p50 / p99; on a server just started, the version at the head and blame
    at the head, and their ratio (ranges over runs)."""
    rs = [r for r in rs if r.get("cold_version_ms")]
    if not rs:
        return "– | – | – | –"
    p50 = [pct(r["version_ms"], 0.5) for r in rs]
    p99 = [pct(r["version_ms"], 0.99) for r in rs]
    cold = [r["cold_version_ms"] for r in rs]
    blame = [r["cold_blame_ms"] for r in rs]
    ratio = [b / v for b, v in zip(blame, cold, strict=True)]
    n = len(rs[0]["version_ms"])
    return (f"{rng(p50, '{:.1f}')} / {rng(p99, '{:.0f}')} ms ({n} seqs) | "
            f"{rng(cold, '{:.0f}')} ms | {rng(blame, '{:.0f}')} ms | "
            f"{rng(ratio, '{:.1f}')}×")  # fmt: skip


def ours(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("layout") != "peer"]


def theirs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("layout") == "peer"]


def commands(runs: list[dict[str, Any]], default: str) -> str:
    """The command(s) that measured these runs (entries older than the field: `default`)."""
    seen = list(dict.fromkeys(r.get("command") or default for r in runs))
    return "`; `".join(seen) if seen else default


def peers_report(runs: list[dict[str, Any]], command: str) -> list[str]:
    """Beside the peers: per trace, each peer's bytes on disk next to our whole store."""
    them = theirs(runs)
    if not them:
        return []
    names = [n for n in PEERS if any(r["store"] == n for r in them)]
    names += sorted({r["store"] for r in them} - set(names))
    labels = {r["store"]: r.get("label", r["store"]) for r in them}
    compact = {r["store"] for r in ours(runs) if r["layout"] == "compact"}
    ourstores = [s for s in ("sqlite", "postgresql") if s in compact]
    ourlabel = {"sqlite": "Palimpsest SQLite", "postgresql": "Palimpsest PostgreSQL"}
    cap = max(r.get("cap_s", 0) for r in them)
    lines = [
        "",
        PBEGIN,
        "### Beside the peers: their bytes on disk",
        "",
        f"`{commands(them, command)}` — each peer (bench/bench.py's servers) started fresh on "
        "an empty data dir and sent the same updates as above, one per transaction of the "
        "trace, by bench/node/driver.mjs's ingest (one writer, one observer, the peer's own "
        "protocol: a real Yjs client applies each update and its provider sends it; "
        "Hocuspocus's provider for Hocuspocus); then, once its storage held the whole "
        f"trace (waited for at most {cap} s), stopped with SIGTERM, and every file of its "
        "data dir measured. The document is named `bench`, as in our runs (the peers repeat "
        "the name in every record). **×** is over the raw update bytes: the bytes of the "
        "updates our bench sends, as in the table above; ours is the **compact** layout's "
        "whole store (snapshots included).",
        "",
        "| trace | raw update bytes | "
        + " | ".join([ourlabel[s] for s in ourstores] + [labels[n] for n in names])
        + " |",
        "|---|---|" + "---|" * (len(ourstores) + len(names)),
    ]
    notes: list[str] = []
    missing: list[str] = []
    for trace in sorted({r["trace"] for r in them}):
        rs = [r for r in runs if r["trace"] == trace]
        raw = rs[0]["raw_bytes"]
        cells = [f"{trace} ({rs[0]['events']:,} updates)", fmt_bytes(raw)]
        for s in ourstores:
            mine = [r for r in rs if r["store"] == s and r["layout"] == "compact"]
            cells.append(f"{rng([r['bytes']['total'] / 1e6 for r in mine])} MB · "
                         f"{rng([r['ratio'] for r in mine])}×" if mine else "—")  # fmt: skip
            if not mine:
                missing.append(f"{ourlabel[s]}, {trace}")
        for n in names:
            got = [r for r in rs if r["store"] == n and r["layout"] == "peer"]
            if not got:
                cells.append("—")
                continue
            mark = "" if all(r.get("complete", True) for r in got) else " †"
            cells.append(f"{rng([r['bytes']['total'] / 1e6 for r in got])} MB · "
                         f"{rng([r['ratio'] for r in got])}×{mark}")  # fmt: skip
            for r in got:
                if r.get("complete", True):
                    continue
                why = []
                if r.get("capped"):
                    why.append(f"its storage had not caught up after {r.get('cap_s')} s "
                               f"({r.get('stored_at_cap')} of {r.get('sent_updates')} "
                               "updates stored): the bytes are of that part")  # fmt: skip
                if not r.get("correct"):
                    why.append("the observer did not end with the trace's text")
                if r.get("stop_returncode") not in (0, None):
                    why.append(f"it did not exit cleanly (exit {r.get('stop_returncode')})")
                notes.append(f"† {labels[n]}, {trace}: " + "; ".join(why) + ".")
            sent = cast(set[int], {r.get("sent_bytes") for r in got} - {None, raw})
            if sent:
                notes.append(
                    f"{labels[n]}, {trace}: the driver's Yjs writer re-encodes each update "
                    f"it applies, so the peer received {fmt_bytes(min(sent))} of updates "
                    f"({min(sent) / raw:.3f}× raw), not {fmt_bytes(raw)}; × is over the latter."
                )  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "What each keeps:", ""]
    lines.append("- **Palimpsest**: every update in its event log (compact: tail rows sealed "
                 "into compressed column segments) plus the snapshot cache: the whole "
                 "history, with who wrote what and when;")  # fmt: skip
    for n in names:
        lines.append(f"- **{labels[n]}**: {KEEPS.get(n, 'see bench/bench.py')};")
    lines[-1] = lines[-1][:-1] + "."
    if missing:
        notes.append("— no compact run of ours in bench/results/storage.json: "
                     + "; ".join(missing) + ".")  # fmt: skip
    if notes:
        lines += [""] + notes
    lines += ["", "![store bytes ÷ raw update bytes, beside the peers](storage_peers.png)", PEND]
    return lines


def cpu_sentence(runs: list[dict[str, Any]]) -> str:
    """Per store, per trace: the compact layout's ingest CPU per event against the rows
    layout's (ranges over the runs)."""
    parts = []
    for store in ("sqlite", "postgresql"):
        per = []
        for trace in dict.fromkeys(r["trace"] for r in runs):
            got = {lay: [r["cpu_us_per_event"] for r in runs
                         if (r["trace"], r["store"], r["layout"]) == (trace, store, lay)]
                   for lay in ("compact", "rows")}  # fmt: skip
            if got["compact"] and got["rows"]:
                per.append(f"{trace} {rng(got['compact'], '{:.0f}')} against "
                           f"{rng(got['rows'], '{:.0f}')} µs")  # fmt: skip
        if per:
            parts.append(("SQLite: " if store == "sqlite" else "PostgreSQL: ") + ", ".join(per))
    return "; ".join(parts)


def version_sentence(runs: list[dict[str, Any]]) -> str:
    """Per store, per trace: any version's p50 and p99, compact against rows (ranges over
    the runs that read versions)."""
    parts = []
    for store in ("sqlite", "postgresql"):
        per = []
        for trace in dict.fromkeys(r["trace"] for r in runs):
            got = {lay: [r["version_ms"] for r in runs if r.get("version_ms")
                         and (r["trace"], r["store"], r["layout"]) == (trace, store, lay)]
                   for lay in ("compact", "rows")}  # fmt: skip
            if got["compact"] and got["rows"]:
                cells = [
                    f"{rng([pct(v, q) for v in got['compact']], '{:.1f}')} against "
                    f"{rng([pct(v, q) for v in got['rows']], '{:.1f}')} ms"
                    for q in (0.5, 0.99)
                ]
                per.append(f"{trace} p50 {cells[0]}, p99 {cells[1]}")
        if per:
            parts.append(("SQLite: " if store == "sqlite" else "PostgreSQL: ") + "; ".join(per))
    return ". ".join(parts)


def report(runs: list[dict[str, Any]], command: str, peers_command: str | None = None) -> str:
    """The section: our stores' table (`command` for entries without their own), then the
    peers' (`peers_command` likewise, default `command`)."""
    peer_lines = peers_report(runs, peers_command or command)
    runs = ours(runs)
    command = commands(runs, command)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["trace"], r["store"], r["layout"]), []).append(r)
    lines = [
        BEGIN,
        "## Storage: the compact event log (issue #13)",
        "",
        f"`{command}` — each trace sent through a real `palimpsest serve` by one writer (one Yjs "
        "update per transaction of the trace) and one observer; the server stopped cleanly; "
        "then the whole store measured: SQLite file + WAL, or `pg_total_relation_size` of "
        "every table of the schema. **rows** = the code of commit "
        f"`{BASELINE}` (one row per event), **compact** = this tree (tail rows sealed into "
        "column segments of 1,024 events, compressed with LZMA2). Both on asyncio's event "
        "loop. Before the store is measured, the server is left to do what it does when "
        "the document goes idle (sealing caught up, its attribution index stored: "
        "`/metrics`); **ingest CPU** is the server's CPU from the first update until sealing "
        "caught up and the room unloaded (its last snapshot and ladder written), less the "
        "CPU the server counts to the attribution index that the unload starts building "
        "(`palimpsest_attribution_upkeep_cpu_seconds`); **idle upkeep** is what it spent "
        "after that (the attribution index, built paced). **any version**: "
        "the version JSON at 200 seeded random seqs over HTTP on a restarted server; "
        "**cold**: the first request of a server just started, the version at the head "
        "or blame at the head. Ranges are over repeated runs.",
        "",
        "| trace | store | layout | runs | raw update bytes | whole store | × raw "
        "| event log only | × raw | snapshots | ingest CPU / event | idle upkeep CPU / event "
        "| cold load "
        "| any version p50 / p99 | cold: version at head | cold: blame | ÷ version |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (trace, store, layout), rs in sorted(groups.items()):
        raw = rs[0]["raw_bytes"]
        lines.append(
            f"| {trace} ({rs[0]['events']:,} events) | {store} | {layout} | {len(rs)} | "
            f"{fmt_bytes(raw)} | {rng([r['bytes']['total'] / 1e6 for r in rs])} MB | "
            f"{rng([r['ratio'] for r in rs])}× | {rng([log_part(r) / 1e6 for r in rs])} MB | "
            f"{rng([log_part(r) / raw for r in rs])}× | "
            f"{rng([r['bytes'].get('snapshots', 0) / 1e6 for r in rs])} MB | "
            f"{rng([r['cpu_us_per_event'] for r in rs], '{:.0f}')} µs | "
            f"{rng([r.get('upkeep_cpu_us_per_event', 0) for r in rs], '{:.0f}')} µs | "
            f"{rng([r['cold_load_ms'] for r in rs], '{:.0f}')} ms | {history_cells(rs)} |"
        )
    lines += [
        "",
        "Read it so: **event log only** is the log's layout (tail rows, segments, ids, their "
        "indexes); **snapshots** are the checkpoint cache: the newest three whole, with the "
        "undo stacks and owners a loading room needs, and a ladder of older rungs, mostly "
        "differences, bare of that meta (docs/history.md). On PostgreSQL the server "
        "vacuums the snapshots' table after every prune that changed it, and when a "
        "document goes idle it vacuums the tail's table and rebuilds its indexes if they "
        "outgrew its rows (docs/storage.md, PostgreSQL upkeep); what a VACUUM cannot "
        "remove yet (rows another transaction of the same database may still see) stays "
        "in the tail's table until a later one. The event log includes the stored "
        "attribution index (table `derived`, 0.2-0.3 MB for automerge-paper).",
        "",
        "Ingest CPU per event, compact against rows, in the same run: "
        + cpu_sentence(runs)
        + ". The bench's ingest window ends when the room has unloaded (its last snapshot "
        "and ladder written) and leaves out the CPU the server counts to the attribution "
        "index build that the unload starts "
        "(`palimpsest_attribution_upkeep_cpu_seconds_total`; until 1 Dec it was counted in, "
        "1-2 s on automerge-paper). "
        "The compact layout does work the rows layout never does (sealing every event "
        "into segments, ladder rungs stored as differences, compressed snapshots); since 1 "
        "Dec rungs take the differences noted at capture instead of loading two states, "
        "SQLite seals from the rows it appended instead of reading them back, and a typed "
        "character's update is read by one regex (docs/storage.md). "
        "Any version, compact against rows, in the same run: "
        + version_sentence(runs)
        + ". Beyond the newest three snapshots the compact layout's ladder keeps one every "
        "3,000 events at most (the rows layout kept one every ~1,000), and a rung is a "
        "difference applied on the whole one below it, so a version replays more events; "
        "since 1 Dec a segment read parses each distinct meta text once and builds only "
        "the events of the range it reads (docs/storage.md). "
        "The PostgreSQL tail of sveltecomponent kept 1.1-1.8 MB in some "
        "runs: the idle upkeep vacuums again only above 1 MB of heap for an empty tail, "
        "which on a log of 785 kB is most of the whole store.",
        "",
        "![store bytes ÷ raw update bytes](storage.png)",
        *peer_lines,
        "",
        END,
    ]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    runs = ours(runs)
    keys = sorted({(r["trace"], r["store"]) for r in runs})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 4))
    width = 0.38
    for i, layout in enumerate(["rows", "compact"]):
        logs, snaps = [], []
        for trace, store in keys:
            rs = [r for r in runs
                  if (r["trace"], r["store"], r["layout"]) == (trace, store, layout)]  # fmt: skip
            logs.append(statistics.median([log_part(r) / r["raw_bytes"] for r in rs]) if rs else 0)
            snaps.append(statistics.median([(r["bytes"]["total"] - log_part(r)) / r["raw_bytes"]
                                            for r in rs]) if rs else 0)  # fmt: skip
        xs = [k + (i - 0.5) * width for k in range(len(keys))]
        ax.bar(xs, logs, width, label=f"{layout}: event log", color=["#d62728", "#2ca02c"][i])
        ax.bar(xs, snaps, width, bottom=logs, label=f"{layout}: snapshots, WAL",
               color=["#ff9896", "#98df8a"][i])  # fmt: skip
    ax.axhline(0.5, color="k", ls="--", lw=1, label="target 0.5×")
    ax.set_xticks(range(len(keys)), [f"{t}\n{s}" for t, s in keys], fontsize=8)
    ax.set_ylabel("store bytes ÷ raw update bytes")
    ax.set_title("What the store keeps of a trace (lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_peers(runs: list[dict[str, Any]], out: Path) -> None:
    """Per trace: whole store ÷ raw update bytes, ours (compact) beside each peer's."""
    them = theirs(runs)
    if not them:
        return
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    traces = sorted({r["trace"] for r in them})
    series = [("sqlite", "compact", "Palimpsest SQLite"),
              ("postgresql", "compact", "Palimpsest PostgreSQL")]  # fmt: skip
    names = [n for n in PEERS if any(r["store"] == n for r in them)]
    names += sorted({r["store"] for r in them} - set(names))
    labels = {r["store"]: r.get("label", r["store"]) for r in them}
    series += [(n, "peer", labels[n]) for n in names]
    series = [x for x in series if any((r["store"], r["layout"]) == x[:2] for r in runs)]
    colors = ["#2ca02c", "#98df8a", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
    fig, ax = plt.subplots(figsize=(max(7, 2.6 * len(traces)), 4.5))
    width = 0.8 / len(series)
    lowest = 1.0
    for i, (store, layout, label) in enumerate(series):
        xs, ys = [], []
        for k, trace in enumerate(traces):
            rs = [r for r in runs
                  if (r["trace"], r["store"], r["layout"]) == (trace, store, layout)]  # fmt: skip
            if not rs:
                continue
            xs.append(k + (i - (len(series) - 1) / 2) * width)
            ys.append(statistics.median([r["ratio"] for r in rs]))
            mark = "" if all(r.get("complete", True) for r in rs) else "†"
            ax.annotate(f"{ys[-1]:.2f}×{mark}", (xs[-1], ys[-1]), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7,
                        rotation=90)  # fmt: skip
        lowest = min([lowest, *ys])
        ax.bar(xs, ys, width, label=label, color=colors[i % len(colors)])
    ax.axhline(1.0, color="k", ls="--", lw=1, label="raw update bytes")
    ax.set_yscale("log")
    ax.set_ylim(lowest / 2, ax.get_ylim()[1] * 2)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g×"))
    ax.set_xticks(range(len(traces)), traces, fontsize=8)
    ax.set_ylabel("bytes on disk ÷ raw update bytes (log scale)")
    ax.set_title("What each server keeps of a trace († its storage had not caught up)",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def section_command() -> str | None:
    """The command the RESULTS.md section names for our stores' table, if there is one."""
    try:
        old = RESULTS.read_text()
    except OSError:
        return None
    m = re.search(re.escape(BEGIN) + r".*?`(bench/storage_bench\.py[^`]*)`", old, flags=re.S)
    return m.group(1) if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument("--layouts", default="rows,compact")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--loads", type=int, default=3, help="cold loads per run (median)")
    ap.add_argument("--versions", type=int, default=200,
                    help="versions read at random seqs on a cold server, after its blame "
                    "(0: none)")  # fmt: skip
    ap.add_argument("--baseline", default=BASELINE, help="the commit of the rows layout")
    ap.add_argument("--quick", action="store_true", help="sveltecomponent on SQLite, once")
    ap.add_argument("--no-write", action="store_true",
                    help="print the report, do not write RESULTS.md nor the plots "
                    "(bench/results/storage.json is written all the same)")  # fmt: skip
    ap.add_argument("--report", metavar="COMMAND",
                    help="only write the report of bench/results/storage.json (the command "
                    "that measured it)")  # fmt: skip
    ap.add_argument("--peers", default="",
                    help="also measure these peers' bytes on disk, once per trace, comma-"
                    f"separated, from: {', '.join(PEERS)} (default: none)")  # fmt: skip
    ap.add_argument("--peers-only", action="store_true",
                    help="measure only the peers and merge them into the existing "
                    "bench/results/storage.json (replacing their earlier entries of the "
                    "same traces) instead of measuring our stores again; of RESULTS.md's "
                    "section it rewrites only the peers' part")  # fmt: skip
    ap.add_argument("--peer-cap", type=int, default=300, metavar="SECONDS",
                    help="how long to wait for a peer's storage to catch up after the "
                    "observer has the whole trace (whether it ran out is recorded; "
                    "default 300)")  # fmt: skip
    ap.add_argument("--peer-timeout", type=int, default=900, metavar="SECONDS",
                    help="how long a peer may take until the observer has the whole trace "
                    "(default 900)")  # fmt: skip
    args = ap.parse_args()
    if args.report:
        runs: list[dict[str, Any]] = json.loads(STORAGE_JSON.read_text())
        # the peers' part names the command that measured them, recorded with their runs
        peers_cmd = next((r["command"] for r in runs
                          if r.get("layout") == "peer" and r.get("command")), None)  # fmt: skip
        write_report(runs, args.report, peers_cmd)
        return
    if args.quick:
        args.traces, args.stores = "sveltecomponent", "sqlite"
    traces = args.traces.split(",")
    stores = args.stores.split(",")
    layouts = args.layouts.split(",")
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    for n in names:
        if n not in PEERS:
            ap.error(f"--peers: unknown peer {n!r}; the peers that store something: "
                     + ", ".join(PEERS))  # fmt: skip
        why = peers.SERVERS[n].needs()
        if why:
            ap.error(f"--peers: {n} cannot run: {why}")
    if names and not shutil.which("node"):
        ap.error("--peers: Node.js is needed (node >= 20)")
    if names and not (peers.NODE_DIR / "node_modules").is_dir():
        ap.error("--peers: bench/node/node_modules is missing: run `npm ci` in bench/node "
                 "(bench/run does it)")  # fmt: skip
    if args.peers_only and not names:
        ap.error("--peers-only needs --peers")
    out_dir = STORAGE_JSON.parent
    out_dir.mkdir(exist_ok=True)
    command = ("bench/storage_bench.py " + " ".join(sys.argv[1:])).strip()
    runs = []
    if args.peers_only:
        if STORAGE_JSON.exists():
            runs = json.loads(STORAGE_JSON.read_text())
        n_before = len(runs)
        runs = [r for r in runs
                if not (r.get("layout") == "peer" and r["store"] in names
                        and r["trace"] in traces)]  # fmt: skip
        print(f"{STORAGE_JSON}: {n_before} entries kept but {n_before - len(runs)} earlier "
              "ones of these peers and traces", file=sys.stderr)  # fmt: skip
    else:
        runs = measure_ours(
            traces, stores, layouts, args.repeats, args.loads, args.baseline, args.versions
        )
        for r in runs:
            r["command"] = command
    if names:
        runs += run_peers(names, traces, args.peer_cap, args.peer_timeout, command)
    STORAGE_JSON.write_text(json.dumps(runs, indent=1) + "\n")
    # our stores' table names the command that measured it: with --peers-only, an earlier one
    ours_command = (section_command() or "bench/storage_bench.py") if args.peers_only else command
    if args.no_write:
        print(report(runs, ours_command, command))
    else:
        write_report(runs, ours_command, command, peers_only=args.peers_only)


def measure_ours(traces: list[str], stores: list[str], layouts: list[str], repeats: int,
                 loads: int, baseline: str, versions: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    runs: list[dict[str, Any]] = []
    total = len(traces) * len(stores) * len(layouts) * repeats
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"rows": package_tree(baseline, Path(tmp) / "rows"),
                 "compact": package_tree(None, Path(tmp) / "compact")}  # fmt: skip
        done = 0
        for trace in traces:
            txns, _ = backbone.load_trace(trace, None)
            updates, final = backbone.make_updates(txns)
            for rep in range(repeats):
                for store in stores:
                    for layout in layouts:
                        done += 1
                        print(f"[{done}/{total}] {trace} · {store} · {layout} · run {rep + 1}",
                              file=sys.stderr, flush=True)  # fmt: skip
                        try:
                            r = one_run(trace, store, layout, trees[layout], updates, final,
                                        loads, versions)  # fmt: skip
                        except Exception as e:  # noqa: BLE001 - reported, the others still run
                            print(f"    failed: {e!r}", file=sys.stderr)
                            continue
                        print(f"    {r['bytes']['total']:,} bytes = {r['ratio']:.3f}× raw; "
                              f"log {log_part(r) / r['raw_bytes']:.3f}×; "
                              f"{r['cpu_us_per_event']:.0f} µs CPU/event; "
                              f"cold load {r['cold_load_ms']:.0f} ms", file=sys.stderr)  # fmt: skip
                        if r.get("version_ms"):
                            v = r["version_ms"]
                            print(f"    any version p50 {pct(v, 0.5):.1f} ms, p99 "
                                  f"{pct(v, 0.99):.1f} ms; cold: version "
                                  f"{r['cold_version_ms']:.0f} ms, blame {r['cold_blame_ms']:.0f} "
                                  f"ms = {r['cold_blame_ms'] / r['cold_version_ms']:.1f}×",
                                  file=sys.stderr)  # fmt: skip
                        runs.append(r)
    return runs


def write_report(runs: list[dict[str, Any]], command: str,
                 peers_command: str | None = None, peers_only: bool = False) -> None:  # fmt: skip
    """The section of bench/RESULTS.md (replaced in place), bench/storage.png and
    bench/storage_peers.png. With `peers_only`, only the peers' part of the section (and
    their plot): the rest, our stores' table and its notes, stays as it is."""
    old = RESULTS.read_text()
    plot_peers(runs, ROOT / "bench" / "storage_peers.png")
    if peers_only and BEGIN in old:
        lines = peers_report(runs, peers_command or command)
        if not lines:
            print("no peer was measured: RESULTS.md left as it is", file=sys.stderr)
            return
        text = "\n".join(lines[1:])
        print(text)
        section = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), old, flags=re.S)
        assert section is not None
        part = section.group(0)
        if PBEGIN in part:
            part = re.sub(re.escape(PBEGIN) + ".*?" + re.escape(PEND), lambda _: text, part,
                          flags=re.S)  # fmt: skip
        else:
            part = part[: -len(END)].rstrip("\n") + "\n\n" + text + "\n\n" + END
        RESULTS.write_text(old[: section.start()] + part + old[section.end() :])
        return
    text = report(runs, command, peers_command)
    print(text)
    plot(runs, ROOT / "bench" / "storage.png")
    if BEGIN in old:
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: text, old,
                     flags=re.S)  # fmt: skip
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(new)


if __name__ == "__main__":
    main()
