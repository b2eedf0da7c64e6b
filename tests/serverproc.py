"""The real server as a subprocess, for tests that need a separate process
(Node.js clients, crash/restart tests, CLI tests).

    with ServerProcess(tmp_path) as srv:          # sync
        ... srv.ws_url, srv.http_url, srv.db_path ...
        srv.restart()                             # SIGTERM, then start again: same port, same db
        srv.kill9(); srv.start()                  # crash, then start again

    async with ServerProcess(tmp_path) as srv:    # async: start/stop run in a thread
        await srv.arestart()

The server runs as `sys.executable -m palimpsest serve --host 127.0.0.1 --port P --db PATH`
(after `prefix`, a command it runs under such as `prlimit --nofile=128:128`) with cwd
at the repository root (or `cwd`); its stdout+stderr go to `srv.log_path` (appended
across restarts, one header line per start). Failures quote the tail of that log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        db_path: str | os.PathLike[str] | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 15.0,
        prefix: list[str] | tuple[str, ...] = (),
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.db_path = Path(db_path) if db_path is not None else self.workdir / "palimpsest.db"
        self.log_path = self.workdir / "server.log"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        #: a command the server runs under, e.g. ("prlimit", "--nofile=128:128")
        self.prefix = list(prefix)
        #: the server's working directory (default: the repository's root)
        self.cwd = Path(cwd) if cwd is not None else REPO_ROOT
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    # ------------------------------------------------------------ addresses
    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The base URL a WebsocketProvider wants: ws://HOST:PORT/ws (the doc is appended)."""
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        # the SQLite file unless the extra arguments name a store (both are a usage error)
        db = [] if "--store" in self.extra_args else ["--db", str(self.db_path)]
        return [
            *self.prefix, sys.executable, "-m", "palimpsest", "serve",
            "--host", self.host, "--port", str(self.port), *db,
            *self.extra_args,
        ]  # fmt: skip

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ------------------------------------------------------------ lifecycle
    def start(self) -> ServerProcess:
        if self.running:
            raise RuntimeError(f"server already running (pid {self.pid})")
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill9()
        self.starts += 1
        self._log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        self._log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C on pytest does not hit the server first
        )
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self._close_log()
                raise RuntimeError(
                    f"server exited with code {code} before listening on {self.host}:{self.port}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._kill()
                raise TimeoutError(
                    f"server not listening on {self.host}:{self.port} after {self.start_timeout}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM and wait. A server that does not exit in time is killed and
        TimeoutError raised (a shutdown hang is a bug worth seeing)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout if timeout is not None else self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise TimeoutError(
                    f"server pid {self.proc.pid} ignored SIGTERM for "
                    f"{timeout if timeout is not None else self.stop_timeout}s (killed); "
                    f"log:\n{self.log_tail()}"
                ) from None
        self._close_log()
        return self.proc.returncode

    def kill9(self) -> int | None:
        """SIGKILL: a crash, no shutdown code runs."""
        if self.proc is None:
            return None
        self._kill()
        self._close_log()
        return self.proc.returncode

    def restart(self, *, crash: bool = False) -> ServerProcess:
        """Stop (SIGTERM, or SIGKILL with crash=True) and start again on the same port and db."""
        if crash:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def _kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # ------------------------------------------------------------ async wrappers
    async def astart(self) -> ServerProcess:
        return await asyncio.to_thread(self.start)

    async def astop(self, wait_s: float | None = None) -> int | None:
        return await asyncio.to_thread(self.stop, wait_s)

    async def akill9(self) -> int | None:
        return await asyncio.to_thread(self.kill9)

    async def arestart(self, *, crash: bool = False) -> ServerProcess:
        return await asyncio.to_thread(self.restart, crash=crash)

    # ------------------------------------------------------------ context managers
    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self._kill()
            self._close_log()

    async def __aenter__(self) -> ServerProcess:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<ServerProcess {self.host}:{self.port} db={self.db_path} {state}>"
