"""`palimpsest serve` that cannot work says why in one line, and starts nothing.

A configuration that cannot work (a short JWT secret, a store URL of no store, a zero
frame limit, an environment variable that is not a number) exits with 2 before anything
is opened. A server that cannot start (its database cannot be opened, PostgreSQL does not
answer, the port is taken) exits with 3. Neither prints a traceback: both print the
cause, in words a user can act on. Real subprocesses, real files and sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from conftest import PG_URL, eventually
from scaleout import fanout_url, fresh_schema
from serverproc import ServerProcess, free_port

from palimpsest import Palimpsest, client
from palimpsest.errors import StoreUnavailable
from palimpsest.settings import Settings
from palimpsest.store import open_store
from palimpsest.store.postgres import SERVING_LOCK

SECRET = "s" * 40


def cannot_start(r: subprocess.CompletedProcess[str], says: str) -> None:
    """`serve` exited 3 (a resource it needs: a store, a port, a lock), without a
    traceback, and said `says` in its one line."""
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert f"palimpsest: cannot start: {says}" in r.stderr, r.stderr


def serve(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `palimpsest serve` in `cwd` (where it would create files); it must exit."""
    cmd = [sys.executable, "-m", "palimpsest", "serve", "--host", "127.0.0.1"]
    if "--port" not in args:
        cmd += ["--port", str(free_port())]
    if "--db" not in args and "--store" not in args:
        cmd += ["--db", str(cwd / "p.db")]
    if "--lock-wait" not in args:  # a lock held by a server that stays: refused at once
        cmd += ["--lock-wait", "0"]
    return subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--jwt-secret", "short"], {}, "the JWT secret is 5 bytes long"),
        (["--jwt-public-key", "missing.pem"], {}, "cannot read the JWT public key missing.pem"),
        (["--jwt-jwks-url", "idp.example.com/certs"], {},
         "jwt_jwks_url (PALIMPSEST_JWT_JWKS_URL) must be an http(s) URL of a JWKS"),
        (["--store", "redis://127.0.0.1:6379"], {}, "unknown store URL redis://"),
        (["--webhook", "example.com/hook"], {}, "a webhook URL starts with http://"),
        (["--max-frame-bytes", "0"], {}, "max_frame_bytes (PALIMPSEST_MAX_FRAME_BYTES) must"),
        (["--snapshot-every", "-5"], {}, "snapshot_every (PALIMPSEST_SNAPSHOT_EVERY) must be"),
        (["--log-level", "loud"], {}, "log_level (PALIMPSEST_LOG_LEVEL) must be one of debug"),
        ([], {"PALIMPSEST_MAX_FRAME_BYTES": "8M"},
         "PALIMPSEST_MAX_FRAME_BYTES='8M' is not an integer"),
        ([], {"PALIMPSEST_LOG_JSON": "maybe"}, "PALIMPSEST_LOG_JSON='maybe' is not one of 1, true"),
        ([], {"PALIMPSEST_UNDO_MAX_GROUP": "-1"}, "undo_max_group (PALIMPSEST_UNDO_MAX_GROUP)"),
        (["--root-path", "collab/"], {}, "root_path (PALIMPSEST_ROOT_PATH) must begin with /"),
        # an origin without its scheme (or with a path) never matches a browser's Origin
        (["--allow-origin", "app.example.com"], {},
         "allow_origin (PALIMPSEST_ALLOW_ORIGIN): 'app.example.com' is not an origin"),
        ([], {"PALIMPSEST_ALLOW_ORIGIN": "https://a.example,https://b.example/app"},
         "allow_origin (PALIMPSEST_ALLOW_ORIGIN): 'https://b.example/app' is not an origin"),
        # not finite: an OverflowError's traceback, or a disk-warm thread dying at the
        # first edit, before they were refused
        ([], {"PALIMPSEST_ATTRIBUTION_CACHE_MB": "inf"},
         "attribution_cache_mb (PALIMPSEST_ATTRIBUTION_CACHE_MB) must be a finite number"),
        ([], {"PALIMPSEST_ATTRIBUTION_CACHE_MB": "1e400"}, "attribution_cache_mb (PALIMPSEST_"),
        ([], {"PALIMPSEST_WARM_DISK_MS": "inf"}, "warm_disk_ms (PALIMPSEST_WARM_DISK_MS) must"),
        (["--warm-disk-ms", "nan"], {}, "warm_disk_ms (PALIMPSEST_WARM_DISK_MS) must be a fin"),
        ([], {"PALIMPSEST_HANDSHAKE_TIMEOUT": "inf"}, "handshake_timeout (PALIMPSEST_HANDSHA"),
        ([], {"PALIMPSEST_RECOVERING_MINUTES": "-inf"}, "recovering_minutes (PALIMPSEST_RECO"),
        # a sync every microsecond burns a core: 0 is off, else at least 1 ms
        ([], {"PALIMPSEST_WARM_DISK_MS": "0.001"},
         "warm_disk_ms (PALIMPSEST_WARM_DISK_MS) must be 0 (off) or at least 1 (ms between"),
        # a start waiting 31 years for a lock is a second server started by mistake that
        # nobody hears of: a reload's handover is over in minutes
        (["--lock-wait", "1e9"], {},
         "lock_wait (PALIMPSEST_LOCK_WAIT) must be at most 3600 (seconds), not 1000000000.0"),
        # a pong deadline of 0 closes every websocket at its first ping
        (["--ws-ping-timeout", "0"], {},
         "ws_ping_timeout (PALIMPSEST_WS_PING_TIMEOUT) must be above 0, not 0.0"),
        ([], {"PALIMPSEST_WS_PING_INTERVAL": "-1"},
         "ws_ping_interval (PALIMPSEST_WS_PING_INTERVAL) must be 0 or more, not -1.0"),
        ([], {"PALIMPSEST_WS_PING_TIMEOUT": "nan"},
         "ws_ping_timeout (PALIMPSEST_WS_PING_TIMEOUT) must be a finite number"),
        ([], {"PALIMPSEST_JWT_JWKS_URL": "https://idp.example/certs",
              "PALIMPSEST_JWT_JWKS_FETCH_SECONDS": "30"},
         "jwt_jwks_fetch_seconds (PALIMPSEST_JWT_JWKS_FETCH_SECONDS) (30) must be below"),
        # the unknown-kid refetch interval: not negative, and not so long that a
        # provider's rotation locks its users out for a day
        (["--jwt-jwks-unknown-kid-seconds", "-1"], {},
         "jwt_jwks_unknown_kid_seconds (PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS) must be 0 or "
         "more, not -1.0"),
        ([], {"PALIMPSEST_JWT_JWKS_URL": "https://idp.example/certs",
              "PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS": "86400"},
         "jwt_jwks_unknown_kid_seconds (PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS) must be at "
         "most 3600 (seconds), not 86400.0"),
        ([], {"PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS": "soon"},
         "PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS='soon' is not"),
    ],
)  # fmt: skip
def test_a_configuration_that_cannot_work_exits_2_and_creates_nothing(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    r = serve(tmp_path, *args, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert f"palimpsest serve: error: {says}" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be created: no database, no directory"


def test_a_misspelt_variable_is_named_and_one_meant_as_the_jwt_secret_stops_the_start(
    tmp_path: Path,
) -> None:
    """PALIMPSEST_* names that are no setting were ignored without a word, so that
    PALIMPSEST_JWT_SECRETT started a server open to everyone. Each is now named at start
    with the name it is closest to; one meant for the JWT secret refuses to start while
    no secret is set."""
    db = tmp_path / "p.db"
    env = {"PALIMPSEST_MAX_FRAME_BYTE": "0", "PALIMPSEST_XYZZY": "1", "PALIMPSEST_URL": "x"}
    with ServerProcess(tmp_path, db_path=db, env=env) as srv:
        log = srv.log_text()
    assert (
        "PALIMPSEST_MAX_FRAME_BYTE is not a setting of palimpsest serve (did you mean "
        "PALIMPSEST_MAX_FRAME_BYTES?): ignored"
    ) in log, log
    assert "PALIMPSEST_XYZZY is not a setting of palimpsest serve: ignored" in log, log
    assert "PALIMPSEST_URL is not" not in log, log  # the client commands' server

    r = serve(tmp_path, env={"PALIMPSEST_JWT_SECRETT": SECRET})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert (
        "palimpsest serve: error: PALIMPSEST_JWT_SECRETT is not a setting (did you mean "
        "PALIMPSEST_JWT_SECRET?), and without a JWT secret, public key or JWKS URL the server "
        "would run open to everyone"
    ) in r.stderr, r.stderr
    # with the secret set as well, the stray name is only named
    with ServerProcess(
        tmp_path / "b", env={"PALIMPSEST_JWT_SECRET": SECRET, "PALIMPSEST_JWT_SECRETT": "x"}
    ) as srv:
        assert "PALIMPSEST_JWT_SECRETT is not a setting" in srv.log_text()


def test_kubernetes_and_docker_link_variables_do_not_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Service named `palimpsest` makes Kubernetes set PALIMPSEST_PORT=tcp://HOST:PORT
    (and PALIMPSEST_SERVICE_HOST, PALIMPSEST_PORT_8000_TCP...) in every pod of its
    namespace: `serve` refused to start ("is not an integer"), --port given or not.
    A flag's variable is not read now, the service link is no port, and the link's
    variables are not named as misspelt settings."""
    env = {
        "PALIMPSEST_SERVICE_HOST": "10.0.0.5", "PALIMPSEST_SERVICE_PORT": "8000",
        "PALIMPSEST_SERVICE_PORT_HTTP": "8000", "PALIMPSEST_PORT": "tcp://10.0.0.5:8000",
        "PALIMPSEST_PORT_8000_TCP": "tcp://10.0.0.5:8000", "PALIMPSEST_PORT_8000_TCP_PROTO": "tcp",
        "PALIMPSEST_PORT_8000_TCP_PORT": "8000", "PALIMPSEST_PORT_8000_TCP_ADDR": "10.0.0.5",
    }  # fmt: skip
    with ServerProcess(tmp_path, env=env) as srv:  # (with --port)
        log = srv.log_text()
    assert "PALIMPSEST_PORT=tcp://10.0.0.5:8000 is the link Kubernetes sets" in log, log
    assert "not a setting" not in log and "Traceback" not in log, log
    # docker's --link to a container named palimpsest sets the same, and its name and
    # environment; a misspelt setting beside them is still named
    docker = {
        "PALIMPSEST_PORT": "tcp://172.17.0.2:8000", "PALIMPSEST_PORT_8000_TCP_PORT": "8000",
        "PALIMPSEST_NAME": "/app/palimpsest", "PALIMPSEST_ENV_PALIMPSEST_DB": "/data/p.db",
        "PALIMPSEST_ENV_PATH": "/usr/bin", "PALIMPSEST_MAX_FRAME_BYTEZ": "1M",
    }  # fmt: skip
    with ServerProcess(tmp_path / "docker", env=docker) as srv:
        log = srv.log_text()
    (unknown,) = [line for line in log.splitlines() if "not a setting" in line]
    assert "PALIMPSEST_MAX_FRAME_BYTEZ is not a setting" in unknown, log
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env().port == 8000  # the default, without --port
    assert Settings.from_env(port=9000).port == 9000
    monkeypatch.setenv("PALIMPSEST_MAX_FRAME_BYTES", "8M")
    assert Settings.from_env(max_frame_bytes=1024).max_frame_bytes == 1024  # flags win


def test_a_database_that_cannot_be_opened_exits_3(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.db"
    garbage.write_bytes(b"these are not the pages of a SQLite database" * 100)
    r = serve(tmp_path, "--db", str(garbage))
    cannot_start(r, f"cannot open SQLite database '{garbage}'")
    assert "file is not a database" in r.stderr
    # the file is left as it was: nothing was written into it
    assert garbage.read_bytes() == b"these are not the pages of a SQLite database" * 100

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    r = serve(tmp_path, "--db", str(a_file / "p.db"))  # its directory is a file
    cannot_start(r, f"cannot open SQLite database '{a_file / 'p.db'}'")


def test_a_database_in_a_directory_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    """`--db typo/dir/x.db` made the directories (as root, /nonexistent/dir/ too) and
    served a new, empty database there. A new database is a new file in an existing
    directory now; the default, palimpsest.db in the working directory, still starts."""
    r = serve(tmp_path, "--db", str(tmp_path / "typo" / "dir" / "x.db"))
    cannot_start(
        r,
        f"cannot open SQLite database '{tmp_path}/typo/dir/x.db': "
        f"the directory {tmp_path}/typo/dir does not exist",
    )
    assert list(tmp_path.iterdir()) == []
    r = subprocess.run(
        [sys.executable, "-m", "palimpsest", "import", "notes", "-", "--db", "typo/x.db"],
        cwd=tmp_path, input="hello", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "the directory" in r.stderr, (r.stdout, r.stderr)
    assert list(tmp_path.iterdir()) == []
    first = _first_line(tmp_path)  # no --db: palimpsest.db, here
    assert f"SQLite database {tmp_path.resolve()}/palimpsest.db (new" in first, first


def _first_line(cwd: Path, *args: str) -> str:
    """The start-up line of a server started in `cwd`, which is stopped once it listens
    (its database is open then)."""
    cmd = [sys.executable, "-m", "palimpsest", "serve", "--host", "127.0.0.1",
           "--port", str(free_port()), *args]  # fmt: skip
    with subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            for line in proc.stdout:
                if "listening on" in line:
                    break
            return first
        finally:
            proc.terminate()
            proc.wait(30)


def test_the_start_up_line_names_the_store_whole_and_a_new_database_as_new(
    tmp_path: Path,
) -> None:
    """`sqlite:///var/lib/p.db` (three slashes) is relative to the working directory:
    an operator who meant /var/lib/p.db got a new, empty database elsewhere, and a
    start-up line that only echoed the URL. The line now gives the file's absolute
    path, and says when it did not exist; a PostgreSQL URL's password is not printed."""
    (tmp_path / "var").mkdir()
    whole = tmp_path.resolve() / "var" / "p.db"
    first = _first_line(tmp_path, "--store", "sqlite:///var/p.db")
    assert f"palimpsest: store: SQLite database {whole} (new: it did not exist)," in first, first
    again = _first_line(tmp_path, "--store", f"sqlite:///{whole}")  # four slashes: absolute
    assert f"palimpsest: store: SQLite database {whole}, durability fsync" in again, again
    assert whole.exists()
    port = free_port()  # nobody listens: the line is printed, then the start fails
    r = serve(tmp_path, "--store", f"postgresql://ann:s3cret@127.0.0.1:{port}/test")
    assert r.returncode == 3 and "postgresql://ann:***@127.0.0.1" in r.stdout, r.stdout
    assert "s3cret" not in r.stdout + r.stderr


@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_the_fanout_urls_password_is_not_logged(tmp_path: Path, where: str) -> None:
    """`--fanout redis://:PW@host/12` wrote the password into the log at start-up ("fan-out
    on redis://:PW@...") while the PostgreSQL URL's was masked: both go through the same
    helper now. Nobody needs to listen there: the line is logged before Redis is asked.
    A unix socket's URL was logged as `unix:/path...`, not the `unix:///path` given."""
    if where == "unix":
        url = f"unix://{tmp_path}/r.sock?db=12&prefix=t{os.getpid()}&password=Qw3rty"
        shown = f"fan-out on unix://{tmp_path}/r.sock?db=12&"
    else:
        url = f"redis://:R3disPW@127.0.0.1:{free_port()}/12?prefix=t{os.getpid()}&password=Qw3rty"
        shown = "fan-out on redis://:***@127.0.0.1"
    with ServerProcess(tmp_path, extra_args=["--fanout", url]) as srv:
        for _ in range(200):
            if "fan-out on" in srv.log_text():
                break
            time.sleep(0.02)
        # what the server wrote (the header line is the test's: the command it ran)
        log = "\n".join(x for x in srv.log_text().splitlines() if not x.startswith("====="))
    assert shown in log, log
    assert "password=***" in log, log
    assert "R3disPW" not in log and "Qw3rty" not in log, log


def test_postgresql_that_does_not_answer_exits_3(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there: no PostgreSQL server is needed
    r = serve(tmp_path, "--store", f"postgresql://127.0.0.1:{port}/test")
    cannot_start(r, "cannot connect to PostgreSQL")
    assert "Task exception was never retrieved" not in r.stderr


def test_a_failed_start_is_a_json_line_with_log_json(tmp_path: Path) -> None:
    """With --log-json every line on stderr is a JSON record: the "cannot start" line
    was printed plain, and a log collector parsing the stream choked on the one line
    that said why the server is down. Both of its ways (a port in use, found before the
    app starts; a store that does not answer, found by the app's start)."""
    import json

    port = free_port()  # nobody listens there
    runs = [serve(tmp_path, "--log-json", "--store", f"postgresql://127.0.0.1:{port}/test")]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        runs.append(serve(tmp_path, "--log-json", "--port", str(taken.getsockname()[1])))
    for r in runs:
        assert r.returncode == 3, r.stderr
        lines = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
        said = [x for x in lines if str(x.get("msg", "")).startswith("cannot start: ")]
        assert len(said) == 1 and said[0]["level"] == "error", r.stderr


def test_a_port_in_use_exits_3_and_names_it_before_the_store_creates_anything(
    tmp_path: Path,
) -> None:
    """The port is bound before the store opens. uvicorn binds only after the app's start,
    which had opened the store: a start refused for a port in use left a new, schema'd
    database and its -serving lock file behind (a typo in --db made a stray database,
    and the next start called it existing, not new). An existing database is left as
    it was."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = serve(tmp_path, "--port", str(port))
        cannot_start(r, f"127.0.0.1:{port} is in use")
        assert "choose another --port" in r.stderr
        assert "store:" not in r.stdout, r.stdout  # no store was opened to be named
        assert list(tmp_path.iterdir()) == [], "nothing may be created: no database, no lock"

        existing = tmp_path / "p.db"
        with contextlib.closing(sqlite3.connect(existing)) as db:
            db.execute("CREATE TABLE mine (x)")
            db.commit()
        before = existing.read_bytes()
        cannot_start(serve(tmp_path, "--port", str(port)), f"127.0.0.1:{port} is in use")
    assert [p.name for p in tmp_path.iterdir()] == ["p.db"]
    assert existing.read_bytes() == before


def test_an_embedding_app_gets_the_same_refusals() -> None:
    with pytest.raises(ValueError, match=r"max_doc_bytes \(PALIMPSEST_MAX_DOC_BYTES\)"):
        Palimpsest(settings=Settings(max_doc_bytes=0))
    with pytest.raises(ValueError, match="port number"):
        Settings(port=70000).check()
    with pytest.raises(ValueError, match="must be one of uvloop, asyncio, not 'UVLOOP'"):
        Settings(event_loop="UVLOOP").check()  # compared as it is used
    Settings(log_level="WARNING").check()  # logging takes a level in any case
    with pytest.raises(ValueError, match="unknown store URL mysql://"):
        open_store("mysql://127.0.0.1/notes")
    # what 0 means "off" or "at once" for stays allowed, and so do the defaults
    Settings(unload_after_seconds=0, undo_capture_ms=0, max_events_per_second=0).check()
    Settings().check()
    assert type(open_store("notes.db")).__name__ == "SQLiteStore"  # a bare path


def test_a_second_server_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    """Two servers on one SQLite file without a fan-out bus both started, and neither
    heard of the other's edits: each one's clients saw the other's only after a reload.
    The second is refused now; admin commands still work beside the first, and the lock
    goes with the process, kill -9 included."""
    db = tmp_path / "team.db"
    with ServerProcess(tmp_path / "a", db_path=db) as first:
        r = serve(tmp_path, "--db", str(db))
        cannot_start(
            r, f"SQLite database '{db}' is in use: another server (pid {first.pid}) serves it"
        )
        assert "--fanout redis://" in r.stderr
        assert httpx.get(f"{first.http_url}/healthz").status_code == 200  # untouched
        r = subprocess.run(
            [sys.executable, "-m", "palimpsest", "verify", "--allow-empty", "--db", str(db)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, (r.stdout, r.stderr)  # an admin command, beside it
        first.kill9()
        with ServerProcess(tmp_path / "b", db_path=db) as second:  # the lock went with it
            assert httpx.get(f"{second.http_url}/healthz").status_code == 200


def test_a_database_in_use_exits_3_whatever_the_lock_wait(tmp_path: Path) -> None:
    """README: a start refused because another server serves the database exits 3, as
    it does after a wait (--lock-wait 1) so without one (--lock-wait 0); a field report
    had 0 exit 2, the status of a configuration that cannot work."""
    db = tmp_path / "team.db"
    with ServerProcess(tmp_path / "a", db_path=db) as first:
        for wait in ("0", "1"):
            r = serve(tmp_path, "--db", str(db), "--lock-wait", wait)
            cannot_start(
                r, f"SQLite database '{db}' is in use: another server (pid {first.pid}) serves it"
            )


@pytest.mark.postgres
async def test_a_postgresql_schema_in_use_exits_3_whatever_the_lock_wait(tmp_path: Path) -> None:
    """The same on PostgreSQL: --lock-wait 0 and 1 both exit 3 (README: "is in use")."""
    async with fresh_schema() as url:
        async with ServerProcess(tmp_path / "a", extra_args=["--store", url]):
            for wait in ("0", "1"):
                r = await asyncio.to_thread(serve, tmp_path, "--store", url, "--lock-wait", wait)
                cannot_start(r, f"PostgreSQL schema '{url.rsplit('schema=', 1)[1]}' is in use")


async def test_a_start_waits_for_a_stopping_server_to_release_the_database(
    tmp_path: Path,
) -> None:
    """An app server's reload (gunicorn's HUP) starts the new process while the old one
    still finishes its requests, holding the database's serving lock: the new one was
    refused at once, exited 3, and gunicorn's master stopped. A start now waits for the
    lock (--lock-wait, saying so once, naming the holder) and serves once the old
    server has gone, with everything the old one took; one that waits in vain is
    refused, after its wait, as before."""
    db = tmp_path / "team.db"
    # the first drains on SIGTERM, serving on, holding the lock
    async with ServerProcess(
        tmp_path / "a", db_path=db, extra_args=["--drain-seconds", "3"]
    ) as first:
        async with client.connect(first.ws_url, "notes", user="al") as c:
            c.text().insert(0, "typed before the reload")
            await c.flush()
        late = await asyncio.to_thread(serve, tmp_path, "--db", str(db), "--lock-wait", "0.5")
        assert f"waiting for pid {first.pid} to release the serving lock on {db}" in late.stderr
        cannot_start(late, f"SQLite database '{db}' is in use: another server (pid {first.pid})")
        second = ServerProcess(
            tmp_path / "b", db_path=db, extra_args=["--lock-wait", "120"], start_timeout=120
        )
        starting = asyncio.create_task(second.__aenter__())
        await eventually(
            lambda: f"waiting for pid {first.pid} to release" in second.log_text(),
            timeout=60,
            what="the second server waiting for the first's lock",
        )
        assert not starting.done()
    # the first has stopped (SIGTERM: its drain, then its shutdown): the second serves
    await starting
    try:
        assert second.log_text().count("waiting for pid") == 1, second.log_tail()
        async with client.connect(second.ws_url, "notes", user="bo") as c:
            assert str(c.text()) == "typed before the reload"
    finally:
        await second.__aexit__(None, None, None)


def test_a_second_server_on_one_sqlite_file_through_a_symlink_is_refused(
    tmp_path: Path,
) -> None:
    """The lock was taken next to the path as spelt: a second server given a symlink to
    the file (or another relative spelling) locked `link.db-serving` and served the same
    file beside the first. The lock is beside the real file now."""
    db = tmp_path / "data.db"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "link.db").symlink_to(db)
    with ServerProcess(tmp_path / "a", db_path=db) as first:
        r = serve(tmp_path / "other", "--db", "link.db")
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert f"another server (pid {first.pid}) serves it" in r.stderr, r.stderr
        r = serve(tmp_path / "other", "--db", "../other/../data.db")
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert httpx.get(f"{first.http_url}/healthz").status_code == 200  # untouched


@pytest.mark.redis
async def test_servers_sharing_a_fanout_bus_share_a_sqlite_file(tmp_path: Path) -> None:
    """With the same --fanout, several processes on one SQLite file hear each other: both
    start, and a client of one sees the other's edits live. A server without the bus is
    still refused beside them."""
    db = tmp_path / "team.db"
    bus = ["--fanout", fanout_url()]
    async with ServerProcess(tmp_path / "a", db_path=db, extra_args=bus) as a, ServerProcess(
        tmp_path / "b", db_path=db, extra_args=bus
    ) as b:  # fmt: skip
        async with client.connect(b.ws_url, "shared", user="bo") as on_b, client.connect(
            a.ws_url, "shared", user="al"
        ) as on_a:  # fmt: skip
            on_a.text().insert(0, "from a")
            await on_a.flush()
            await on_b.wait_for(lambda: str(on_b.text()) == "from a", timeout=10)
        r = await asyncio.to_thread(serve, tmp_path, "--db", str(db))
        assert r.returncode == 3 and "serves it without a fan-out bus" not in r.stderr, r.stderr
        assert "is in use" in r.stderr, r.stderr


async def _serving_sessions(store_url: str) -> list[tuple[str, str]]:
    """(application name, lock mode) of the sessions that hold the serving lock on the
    schema of ``store_url`` (server/serving_lock.py)."""
    schema = store_url.rsplit("schema=", 1)[1]
    conn = await asyncpg.connect(PG_URL, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT a.application_name, l.mode FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.classid = $1 AND l.objid = hashtext($2)::oid "
            "AND l.objsubid = 2",
            SERVING_LOCK,
            schema,
        )
    finally:
        await conn.close()
    return sorted((r[0], r[1]) for r in rows)


@pytest.mark.postgres
async def test_a_second_server_on_one_postgresql_schema_is_refused(tmp_path: Path) -> None:
    """The same rule on PostgreSQL: two servers on one schema without a fan-out bus each
    committed, and each brought in the other's events only when it next appended, so
    their clients saw different text. The second is refused, naming the first; a server
    on another schema starts; the lock goes with the first's session when it is killed,
    and it is taken again when PostgreSQL drops that session under a running server."""
    async with fresh_schema() as url, fresh_schema() as other:
        store = ["--store", url]
        async with ServerProcess(tmp_path / "a", extra_args=store) as first:
            me = f"palimpsest serve pid {first.pid} on {socket.gethostname()}"[:63]
            assert await _serving_sessions(url) == [(me, "ExclusiveLock")]
            r = await asyncio.to_thread(serve, tmp_path, *store)
            schema = url.rsplit("schema=", 1)[1]
            cannot_start(
                r,
                f"PostgreSQL schema '{schema}' is in use: another server ({me}) serves it, "
                "and this one has no fan-out bus",
            )
            # with a bus, beside one that has none: refused too, saying which lacks it
            r = await asyncio.to_thread(serve, tmp_path, *store, "--fanout", fanout_url())
            assert r.returncode == 3 and "serves it without a fan-out bus" in r.stderr, r.stderr
            async with ServerProcess(tmp_path / "o", extra_args=["--store", other]):
                pass  # another schema is another lock
            # PostgreSQL drops the lock's session (a restart, a cut): the server takes the
            # lock again, so a second server is still refused afterwards
            conn = await asyncpg.connect(PG_URL, timeout=10)
            try:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    me,
                )
            finally:
                await conn.close()
            for _ in range(100):
                if await _serving_sessions(url) == [(me, "ExclusiveLock")]:
                    break
                await asyncio.sleep(0.2)
            assert await _serving_sessions(url) == [(me, "ExclusiveLock")], first.log_tail()
            assert "the serving lock's connection to PostgreSQL was lost" in first.log_text()
            async with client.connect(first.ws_url, "still", user="al") as c:
                c.text().insert(0, "served")  # the store's own pool was never touched
                await c.flush()
            first.kill9()
            async with ServerProcess(tmp_path / "b", extra_args=store) as second:
                async with client.connect(second.ws_url, "still", user="bo") as c:
                    assert str(c.text()) == "served"


@pytest.mark.postgres
@pytest.mark.redis
async def test_servers_sharing_a_fanout_bus_share_a_postgresql_schema(tmp_path: Path) -> None:
    """With the same --fanout, several servers on one schema share the lock; one without
    the bus is refused beside them."""
    async with fresh_schema() as url:
        bus = ["--store", url, "--fanout", fanout_url()]
        async with ServerProcess(tmp_path / "a", extra_args=bus) as a, ServerProcess(
            tmp_path / "b", extra_args=bus
        ) as b:  # fmt: skip
            assert [m for _, m in await _serving_sessions(url)] == ["ShareLock", "ShareLock"]
            r = await asyncio.to_thread(serve, tmp_path, "--store", url)
            assert r.returncode == 3, (r.stdout, r.stderr)
            assert f"serve pid {a.pid} on" in r.stderr and f"serve pid {b.pid} on" in r.stderr
            assert "this one has no fan-out bus" in r.stderr, r.stderr


@pytest.mark.postgres
async def test_edits_of_people_who_left_survive_postgresql_dropping_the_pool(
    tmp_path: Path,
) -> None:
    """PostgreSQL terminates the server's pooled sessions again and again (a failover,
    an operator's pg_terminate_backend) while people each type one edit and close the
    tab at once. A pooled connection left mid-operation raised asyncpg's
    InternalClientError ("cannot switch to state 12"), which the committer took for a
    refusal: it closed the senders and dropped the edit, so the edit of someone who had
    already left was lost (27 of 300 in the field). Now it is held and retried: every
    edit is logged, once."""
    async with fresh_schema() as url, ServerProcess(
        tmp_path / "s", extra_args=["--store", url]
    ) as srv:  # fmt: skip
        stop = asyncio.Event()
        killed = 0

        async def terminate() -> None:
            nonlocal killed
            conn = await asyncpg.connect(PG_URL, timeout=10)
            try:
                while not stop.is_set():
                    killed += len(await conn.fetch(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'palimpsest' AND pid <> pg_backend_pid() "
                        "AND datname = current_database()"
                    ))  # fmt: skip
                    await asyncio.sleep(0.05)
            finally:
                await conn.close()

        tokens = [f"<tab{i}>" for i in range(400)]
        todo = list(tokens)

        async def person() -> None:
            while todo:
                token = todo.pop()
                async with client.connect(srv.ws_url, "tabs", user=token[1:-1]) as c:
                    c.text().insert(0, token)  # and the tab is closed at once

        killer = asyncio.create_task(terminate())
        try:
            await asyncio.gather(*(person() for _ in range(4)))
        finally:
            stop.set()
            await killer
        assert killed > 5  # the pool was cut while they typed

        async def text() -> str:
            async with httpx.AsyncClient(base_url=srv.http_url, timeout=10) as h:
                r = await h.get("/api/docs/tabs/versions/head")
                return str(r.json()["roots"]["content"]["value"]) if r.status_code == 200 else ""

        for _ in range(150):  # held edits are retried with back-off
            now = await text()
            if all(t in now for t in tokens):
                break
            await asyncio.sleep(0.2)
        missing = [t for t in tokens if t not in now]
        assert not missing, (missing, srv.log_tail(20))
        assert all(now.count(t) == 1 for t in tokens)


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["--webhook", "http://ann:s3cretpw@[::1/hook"], "webhooks (PALIMPSEST_WEBHOOKS)"),
        (["--store", "postgresql://ann:s3cretpw@[::1/db"], "store (PALIMPSEST_STORE)"),
        (["--webhook", "http://ann:s3cretpw@example.com:8o8o/hook"],
         "webhooks (PALIMPSEST_WEBHOOKS)"),
    ],
)  # fmt: skip
def test_a_url_that_cannot_be_read_is_one_line_naming_the_setting_not_its_password(
    tmp_path: Path, args: list[str], setting: str
) -> None:
    """A malformed --webhook URL stopped `serve` with a 39-line traceback (urlsplit's
    "Invalid IPv6 URL", raised while masking its password for the log); a malformed
    --store said only "Invalid IPv6 URL". Now: one line naming the setting, exit 2, and
    the password never printed."""
    r = serve(tmp_path, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "s3cretpw" not in out, out
    [line] = [x for x in r.stderr.splitlines() if "error" in x]
    assert line.startswith(f"palimpsest serve: error: {setting}: "), line
    assert list(tmp_path.iterdir()) == []


async def test_an_app_that_cannot_start_says_why_in_its_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under an app server the refusal was only a line deep in its traceback (hypercorn
    --workers 2: a LifespanFailureError around it): the app logs it first, in one line."""
    db = str(tmp_path / "p.db")
    first, second = Palimpsest(settings=Settings(db=db)), Palimpsest(settings=Settings(db=db))
    async with first.lifespan():
        with pytest.raises(StoreUnavailable):
            async with second.lifespan():
                pass
    said = [r for r in caplog.records if r.getMessage().startswith("cannot start: ")]
    assert len(said) == 1 and said[0].levelname == "ERROR", caplog.text
    assert "is in use: another Palimpsest in this process" in said[0].getMessage()


#: a process that holds a SQLite file's serving lock (as a server would: flock on
#: `<db>-serving`, its pid written) until its stdin closes
_HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1] + "-serving", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("how", ["serve", "uvicorn"])
def test_sigterm_ends_a_start_waiting_for_the_serving_lock(tmp_path: Path, how: str) -> None:
    """A start waiting for the serving lock (--lock-wait 30, another process holding
    it) ignored SIGTERM: `serve` did nothing for 15 s, then its forced-shutdown error
    (exit 1); under `uvicorn --factory palimpsest.app:create_app` it waited out the
    whole wait (kill -9 was needed). Nothing is served yet: the wait ends at once, said
    in the log, and `serve` ends by the signal, as a stopped server does (uvicorn with
    its status for a start that failed, 3)."""
    db = tmp_path / "held.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        port = str(free_port())
        if how == "serve":
            cmd = [sys.executable, "-m", "palimpsest", "serve", "--host", "127.0.0.1",
                   "--port", port, "--db", str(db), "--lock-wait", "30"]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "uvicorn", "--factory", "palimpsest.app:create_app",
                   "--host", "127.0.0.1", "--port", port]  # fmt: skip
        env = {**os.environ, "PALIMPSEST_DB": str(db), "PALIMPSEST_LOCK_WAIT": "30"}
        with open(tmp_path / "log", "w+") as log:
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)
            try:
                waiting = f"waiting for pid {holder.pid} to release the serving lock on {db}"
                deadline = time.monotonic() + 60
                while waiting not in (tmp_path / "log").read_text():
                    assert proc.poll() is None, (tmp_path / "log").read_text()
                    assert time.monotonic() < deadline, (tmp_path / "log").read_text()
                    time.sleep(0.05)
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=10)  # (a bound for failing: the wait is 30 s)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        text = (tmp_path / "log").read_text()
        # (uvicorn exits 3 when a start fails, whatever failed it: its own SystemExit)
        assert code == (-signal.SIGTERM if how == "serve" else 3), (code, text)
        assert (
            f"received SIGTERM while waiting for the serving lock on {db}: stopped "
            "waiting; nothing was served"
        ) in text, text
        assert "shutdown took over" not in text and "cannot start" not in text, text
    finally:
        holder.communicate("")
