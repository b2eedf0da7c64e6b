"""A server that cannot start exits, promptly, and says why.

A fan-out URL that cannot work (a scheme Redis does not speak, a gap-check period of 0 or
of no number, an option Redis does not know) is refused before anything is opened: one
line naming the setting, exit 2. A start that fails after the store has opened (an
extension's service that raises) stops what had started (the extensions' services that
did start, in reverse; the committer; the store, whose SQLite threads would otherwise
keep the process alive for ever) and the process exits with its error status.

Real processes, a real Redis, real SQLite files; every run is bounded by a timeout, so a
process that hangs fails the test instead of the test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import REDIS_URL
from scaleout import PrivateRedis
from serverproc import REPO_ROOT, ServerProcess, free_port

#: a process that cannot start exits within this (a hang is what is being tested)
PROMPTLY = 30.0


def serve(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`palimpsest serve` in `cwd` on a free port; it must exit within PROMPTLY."""
    cmd = [sys.executable, "-m", "palimpsest", "serve", "--host", "127.0.0.1",
           "--port", str(free_port()), "--db", str(cwd / "p.db"), *args]  # fmt: skip
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=PROMPTLY,
            env={k: v for k, v in os.environ.items() if not k.startswith("PALIMPSEST_")},
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:  # run() killed it
        pytest.fail(f"`palimpsest serve {' '.join(args)}` did not exit within {PROMPTLY:g} s:"
                    f"\n{e.stdout!r}\n{e.stderr!r}")  # fmt: skip


def _one_line_refusal(r: subprocess.CompletedProcess[str], tmp_path: Path, says: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("palimpsest serve: error: fanout (PALIMPSEST_FANOUT)"), r.stderr
    assert says in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be created: no database, no directory"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:6379/11", "redis://, rediss:// or unix://"),
        ("127.0.0.1:6379", "redis://, rediss:// or unix://"),
        ("redis:127.0.0.1", "redis://, rediss:// or unix://"),
    ],
)
def test_a_fanout_url_of_another_scheme_exits_2_at_once(
    tmp_path: Path, url: str, says: str
) -> None:
    r = serve(tmp_path, "--fanout", url)
    _one_line_refusal(r, tmp_path, says)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("check=0", "option check=0 is not"),  # was: asyncio.sleep(0) in a loop, a core at 100 %
        ("check=-1", "option check=-1 is not"),
        ("check=0.001", "option check=0.001 is not"),
        ("check=abc", "option check=abc is not"),  # was: "could not convert string to float: 'abc'"
        ("check=nan", "option check=nan is not"),
        ("check=inf", "option check=inf is not"),
        ("check=3601", "option check=3601 is not"),
        ("check=", "option check= is not"),
    ],
)
def test_a_gap_check_period_that_cannot_work_exits_2_naming_it(
    tmp_path: Path, query: str, says: str
) -> None:
    r = serve(tmp_path, "--fanout", f"{REDIS_URL}?prefix=t{uuid.uuid4().hex[:8]}&{query}")
    _one_line_refusal(r, tmp_path, says)
    assert "seconds" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("prefix=a*", "prefix='a*'"),
        ("prefix=", "prefix=''"),
        # options Redis does not take: they used to fail only when connecting, in the
        # subscriber's task, which ended (the fan-out silently off)
        ("no_such_option=1", "no_such_option"),
        ("db=x", "'db'"),
    ],
)
def test_other_fanout_options_that_cannot_work_exit_2_naming_them(
    tmp_path: Path, query: str, says: str
) -> None:
    r = serve(tmp_path, "--fanout", f"{REDIS_URL}?{query}")
    _one_line_refusal(r, tmp_path, says)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        # redis-py refuses it with a RedisError of its own, not a ValueError: it was a
        # traceback ("Invalid SSL Certificate Requirements Flag") and exit 1
        ("ssl_cert_reqs=bogus", "Invalid SSL Certificate Requirements Flag: bogus"),
        ("ssl_min_version=bogus", "ssl_min_version"),
    ],
)
def test_a_tls_option_redis_py_refuses_exits_2_naming_it(
    tmp_path: Path, query: str, says: str
) -> None:
    url = f"rediss://:s3cret@127.0.0.1:{free_port()}/0?prefix=t{uuid.uuid4().hex[:8]}&{query}"
    r = serve(tmp_path, "--fanout", url)
    _one_line_refusal(r, tmp_path, says)
    assert "s3cret" not in r.stderr, r.stderr


def test_a_fanout_bus_on_a_unix_socket_is_served(tmp_path: Path) -> None:
    """unix:// is a scheme redis-py speaks: the fan-out subscribes there (TCP keepalive,
    asked for on redis:// connections, is no option of a unix socket's)."""
    sock = tmp_path / "redis.sock"
    with PrivateRedis("--unixsocket", str(sock), "--unixsocketperm", "700") as redis:
        url = f"unix://{sock}?db=0&prefix=t{uuid.uuid4().hex[:8]}&check=0.5"
        with ServerProcess(tmp_path / "srv", extra_args=["--fanout", url]) as srv:
            deadline = time.monotonic() + 10
            while True:
                ready = httpx.get(f"{srv.http_url}/readyz", timeout=5).json()
                if ready["fanout"] == "ok":
                    break
                assert time.monotonic() < deadline, (ready, srv.log_tail())
                time.sleep(0.1)
            assert redis.subscribers() == 1
            assert "Traceback" not in srv.log_text(), srv.log_tail()


# an embedding app whose own extension's service cannot start, after Palimpsest's store
# and committer have (and a service before it has): under uvicorn, as docs/extending.md
# runs one
EMBEDDING_APP = """
import sys

import uvicorn

from palimpsest import Extension, Palimpsest
from palimpsest.lifecycle import Service


class Recorder(Extension, Service):
    def __init__(self, name):
        self.name = name

    def services(self):
        return [self]

    async def start(self):
        print("started", self.name, flush=True)

    async def stop(self):
        print("stopped", self.name, flush=True)


class Broken(Extension, Service):
    def services(self):
        return [self]

    async def start(self):
        raise RuntimeError("the broken service cannot start")

    async def stop(self):
        pass


collab = Palimpsest(store=f"sqlite:///{sys.argv[1]}",
                    extensions=[Recorder("first"), Recorder("second"), Broken()])
uvicorn.run(collab, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def _embedding_app_fails(app: Path, db: Path) -> subprocess.CompletedProcess[str]:
    began = time.monotonic()
    try:
        r = subprocess.run(
            [sys.executable, str(app), str(db), str(free_port())],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=PROMPTLY,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the app did not exit within {PROMPTLY:g} s:\n{e.stdout!r}\n{e.stderr!r}")
    assert time.monotonic() - began < PROMPTLY
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "the broken service cannot start" in r.stderr, r.stderr
    # the services that had started were stopped, in reverse
    assert r.stdout.split("\n") == [
        "started first", "started second", "stopped second", "stopped first", "",
    ], r.stdout  # fmt: skip
    return r


def test_a_service_that_cannot_start_stops_what_started_and_the_process_exits(
    tmp_path: Path,
) -> None:
    """... and leaves no file it made: the new database it had opened (and made the
    schema in), its -wal and -shm, and the serving lock's file were all left behind, so
    the next start took the empty database for an existing one. A database that was
    there is left byte for byte as it was (the start wrote its header again before)."""
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(EMBEDDING_APP))
    data = tmp_path / "data"
    data.mkdir()
    db = data / "app.db"
    _embedding_app_fails(app, db)
    assert sorted(p.name for p in data.iterdir()) == []

    # an existing database: served once, so that it has documents, snapshots and a lock file
    with ServerProcess(tmp_path / "srv", db_path=db) as srv:
        httpx.put(f"{srv.http_url}/api/docs/notes/text", json={"text": "kept as it was"},
                  params={"user": "ada"}, timeout=10).raise_for_status()  # fmt: skip
    files = {p.name: p.read_bytes() for p in data.iterdir()}
    assert "app.db" in files and "app.db-serving" in files, sorted(files)
    _embedding_app_fails(app, db)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == files
    # an existing database without its lock file (copied from elsewhere): the lock file
    # this start made goes, the database stays as it was
    (data / "app.db-serving").unlink()
    _embedding_app_fails(app, db)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == {
        k: v for k, v in files.items() if k != "app.db-serving"
    }
    v = subprocess.run(
        [sys.executable, "-m", "palimpsest", "verify", "--db", str(db)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert v.returncode == 0, (v.stdout, v.stderr)


# the same, but the broken service has another process open the new database first
HOLDER_APP = """
import subprocess
import sys

import uvicorn

from palimpsest import Extension, Palimpsest
from palimpsest.lifecycle import Service

HOLD = '''
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1])
c.execute("SELECT count(*) FROM docs").fetchall()
print("open", flush=True)
sys.stdin.read()  # until the app's process ends
'''


class OpensThenBreaks(Extension, Service):
    def services(self):
        return [self]

    async def start(self):
        holder = subprocess.Popen([sys.executable, "-c", HOLD, sys.argv[1]],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline() == "open\\n"
        raise RuntimeError("the broken service cannot start")

    async def stop(self):
        pass


collab = Palimpsest(store=f"sqlite:///{sys.argv[1]}", extensions=[OpensThenBreaks()])
uvicorn.run(collab, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def test_a_new_database_another_process_has_open_is_left(tmp_path: Path) -> None:
    """Nothing was at the path when the start began, but another process opened the new
    database before the start failed: the database is left (only the lock file, which no
    other process holds, goes)."""
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(HOLDER_APP))
    data = tmp_path / "data"
    data.mkdir()
    db = data / "app.db"
    r = subprocess.run(
        [sys.executable, str(app), str(db), str(free_port())],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=PROMPTLY,
    )  # fmt: skip
    assert r.returncode != 0 and "the broken service cannot start" in r.stderr, r.stderr
    assert f"the new database {db} is left: {db}-wal, {db}-shm (another connection" in r.stderr
    # the other process ends with the app (its stdin closes), and its -wal and -shm go
    deadline = time.monotonic() + PROMPTLY
    while sorted(p.name for p in data.iterdir()) != ["app.db"]:
        assert time.monotonic() < deadline, sorted(p.name for p in data.iterdir())
        time.sleep(0.05)
    v = subprocess.run(  # (a sound database, with no document yet)
        [sys.executable, "-m", "palimpsest", "verify", "--allow-empty", "--db", str(db)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert v.returncode == 0, (v.stdout, v.stderr)
