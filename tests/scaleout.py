"""Helpers for the scale-out tests: a fresh PostgreSQL schema, private Redis and PostgreSQL
servers (so that restarting them never disturbs anyone else's tests), and a cluster of
`palimpsest serve` processes sharing one log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from conftest import PG_URL, REDIS_URL
from serverproc import ServerProcess, free_port

from palimpsest.store.postgres import PostgresStore


@contextlib.asynccontextmanager
async def fresh_schema(base_url: str = PG_URL) -> AsyncIterator[str]:
    """A store URL on a schema of its own, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield f"{base_url}?schema={name}"
    finally:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(base_url, timeout=5)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            finally:
                await conn.close()


def fanout_url(redis_url: str = REDIS_URL, check: float = 0.5) -> str:
    """A fan-out URL with a channel prefix of its own (pub/sub ignores the db number)."""
    return f"{redis_url}?prefix=t{uuid.uuid4().hex[:12]}&check={check}"


class PrivateRedis:
    """A redis-server of our own on a free port, to restart or starve at will."""

    def __init__(self, *extra: str, password: str | None = None) -> None:
        self.port = free_port()
        self.extra = list(extra)
        #: the default user's password (``--requirepass``), which cli() gives
        self.password = password
        if password is not None:
            self.extra += ["--requirepass", password]
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        # (its own directory: a replica's full sync writes dump.rdb there, even with
        # --save "", and did into the working directory, the repository's)
        self.dir = tempfile.mkdtemp(prefix="palimpsest-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self.dir, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        try:
            while True:
                if self.cli("PING") == "PONG":
                    return self
                if time.monotonic() > deadline:
                    raise TimeoutError("private redis-server did not start")
                time.sleep(0.05)
        except BaseException:
            self.kill()  # __exit__ never runs when __enter__ fails
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pause(self) -> None:
        """Hang it (SIGSTOP): its connections stay open and nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cli(self, *args: str) -> str:
        auth = ["--no-auth-warning", "-a", self.password] if self.password is not None else []
        r = subprocess.run(
            ["redis-cli", "-p", str(self.port), *auth, *args],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        return r.stdout.strip()

    def subscribers(self) -> int:
        """How many pub/sub connections the server has."""
        out = self.cli("CLIENT", "LIST", "TYPE", "pubsub")
        return len([line for line in out.splitlines() if line.strip()])

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not versions:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
    return versions[-1].parent


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb, trust auth, fsync off) on a free port, run
    as the `postgres` user, so a test can stop and start it without touching the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="palimpsest-pg-"))
        self.data = self.dir / "data"
        self.bin = _pg_bin()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str) -> None:
        runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*runner, *cmd], check=True, capture_output=True, timeout=60)

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync", "-E", "UTF8")  # fmt: skip
        return self

    def start(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Cluster:
    """`palimpsest serve` processes on one store and one fan-out bus."""

    store_url: str
    fanout_url: str
    workdir: Path
    procs: list[ServerProcess] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def add(self) -> ServerProcess:
        i = len(self.procs)
        p = ServerProcess(
            self.workdir / f"p{i}",
            extra_args=["--store", self.store_url, "--fanout", self.fanout_url, *self.extra],
            env={"PALIMPSEST_UNLOAD_AFTER_SECONDS": "2", **self.env},
        )
        self.procs.append(p)
        return p

    async def start(self, n: int) -> list[ServerProcess]:
        new = [self.add() for _ in range(n)]
        await asyncio.gather(*(p.astart() for p in new))
        return new

    def ws(self, i: int) -> str:
        return self.procs[i].ws_url

    def stop_all(self) -> None:
        for p in self.procs:
            try:
                p.stop()
            except Exception:
                p.kill9()

    def pause(self, i: int) -> None:
        pid = self.procs[i].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)

    def resume(self, i: int) -> None:
        pid = self.procs[i].pid
        assert pid is not None
        os.kill(pid, signal.SIGCONT)

    def logs(self) -> str:
        return "\n".join(f"--- p{i}\n{p.log_tail(30)}" for i, p in enumerate(self.procs))


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path,
    n: int,
    *,
    store_url: str,
    fanout: str,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    c = Cluster(store_url, fanout, tmp_path, extra=list(extra or []), env=dict(env or {}))
    try:
        await c.start(n)
        yield c
    finally:
        await asyncio.to_thread(c.stop_all)


@contextlib.asynccontextmanager
async def open_store(url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(url)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres().init()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()
