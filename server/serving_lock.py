"""One server process per SQLite file or PostgreSQL schema, unless they share a fan-out bus.

Two `palimpsest serve` processes on one SQLite file without `--fanout` both start and
both commit, but neither hears of the other's edits: a client of one sees what the
other's clients typed only after its room reloads, and an edit made in between is made
against text that is no longer there. The log stays whole (each process brings in what
the other appended when it next appends); the live views do not. The usual way into it
is by accident: a second `serve` left running, `uvicorn --workers 4` on an embedding
app, a supervisor and a shell.

So a server holds a lock on ``<database>-serving`` (next to SQLite's ``-wal`` and
``-shm``, beside the file a symlink leads to) while it serves: exclusive without a
fan-out bus, shared with one (processes that share a bus hear each other). The
operating system drops it when the process ends, kill -9 included. Admin commands take
no lock: they work beside a running server. The file holds the pid of the last process
that took the lock, for the message. A start that fails removes the file when it made
it and no other process holds a lock on it (``release(discard_new=True)``): a lock is
only taken on a file that is still at its path, so a server that opened it just before
it went tries again on a new one.

On PostgreSQL the same holds, one level up: several processes on one schema without a
bus each commit, and each brings in the others' events only when it next appends. There
the lock is a session-level advisory lock (``PostgresServingLock``).

A start whose lock is held waits for it, up to ``wait`` seconds (Settings.lock_wait),
before it refuses: an app server that reloads (gunicorn's HUP and USR2, a worker
recycled by --max-requests) starts the new process while the old one still serves and
finishes its requests, and the new one refused at once took the whole service down
(gunicorn's master stops when a worker fails to boot). The wait is said once in the log;
a second server started by mistake still gets its refusal, after the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .errors import StoreUnavailable

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks; not guarded there
    fcntl = None  # type: ignore[assignment]

SUFFIX = "-serving"
log = logging.getLogger("palimpsest.store")
#: seconds between two tries of a lock that is held, while a start waits for it
_RETRY_SECONDS = 0.1


class StoppedWaiting(StoreUnavailable):
    """The start was told to stop (SIGTERM) while it waited for the lock (app.py)."""


class Served(StoreUnavailable):
    """:func:`not_served` or :func:`pg_not_served` found the lock held (a server serves
    the store, or another command holds it): the message says who. `command`: the
    command that holds it (``"migrate"``), when it said so; None: a server."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


class _Held(Exception):
    """The lock is held by another process (`holder`: its pid, when known; `command`:
    the admin command it is, when it said so: not_served's `by`)."""

    def __init__(self, holder: int | None, command: str | None = None) -> None:
        super().__init__(holder)
        self.holder = holder
        self.command = command


class _Waiting:
    """A start's wait for a lock another process holds: the deadline, and the one line
    that says it (logged once, naming the holder)."""

    def __init__(self, seconds: float, what: str) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what
        self.said = False

    async def again(self, holder: str) -> bool:
        """Whether to try again (after a pause), or refuse now (the wait is over)."""
        if time.monotonic() >= self.deadline:
            if self.said:
                log.warning("%s: still held by %s after %g s", self.what, holder, self.seconds)
            return False
        if not self.said:
            log.warning("waiting for %s to release %s (up to %g s: a reload's handover; "
                        "lock_wait, --lock-wait)", holder, self.what, self.seconds)  # fmt: skip
            self.said = True
        await asyncio.sleep(_RETRY_SECONDS)
        return True


class ServingLock:
    def __init__(self, db_path: str, shared: bool, wait: float = 0.0) -> None:
        """``shared``: this process has a fan-out bus (so may others). ``wait``: seconds a
        start waits for a lock another process holds before it refuses."""
        # next to the file itself, whichever spelling of its path each server was given
        # (a symlink, another relative path, a hard link aside): one file, one lock
        self.path = os.path.realpath(db_path) + SUFFIX
        self.db_path = db_path
        self.shared = shared
        self.wait = wait
        self._fd = -1
        #: this process made the lock file (nothing was at its path)
        self._made = False
        #: why no lock could be taken (the lock file could not be opened), if so
        self._unlocked: str | None = None
        #: the lock, as the log names it
        self.what = f"the serving lock on {db_path}"

    async def acquire(self) -> None:
        """Takes the lock, waiting up to ``wait`` seconds while another process holds it,
        or raises StoreUnavailable saying who holds it and what to do."""
        if fcntl is None:
            return
        waiting = _Waiting(self.wait, self.what)
        while True:
            try:
                return self._try()
            except _Held as held:
                who = f"pid {held.holder}" if held.holder else "another process"
                if held.command:
                    who = f"`palimpsest {held.command}` ({who})"
                # (this very process holds it: another app on the file, nothing to wait for)
                if held.holder == os.getpid() or not await waiting.again(who):
                    raise StoreUnavailable(self._refusal(held.holder, held.command)) from None

    def _try(self) -> None:
        """One try at the lock: taken, or _Held."""
        for _ in range(100):  # another start removing the file it made: a few rounds
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                made = True
            except FileExistsError:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                except OSError as e:
                    return self._no_lock(e)
                made = False
            except FileNotFoundError:  # no such directory: the store's start refuses it
                return
            except OSError as e:
                return self._no_lock(e)
            self._lock(fd)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd, self._made = fd, made
                return
            os.close(fd)  # removed (a failed start's) once we had opened it: again
        raise StoreUnavailable(f"the lock file {self.path} keeps being removed")

    def _no_lock(self, e: OSError) -> None:
        # said once the server serves (serving()): a start that fails for the same cause
        # (a directory it cannot write) says it in the store's words, and this warning
        # before that refusal only misled
        self._unlocked = f"{e}"

    def _lock(self, fd: int) -> None:
        """Lock `fd`, or close it and raise _Held naming who holds the lock."""
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder, command = _read_holder(fd)
            os.close(fd)
            raise _Held(holder, command) from None
        except OSError:
            os.close(fd)
            raise

    def _refusal(self, holder: int | None, command: str | None = None) -> str:
        if command:  # an admin command that keeps servers off meanwhile (not_served)
            return (
                f"SQLite database {self.db_path!r} is in use: `palimpsest {command}` "
                f"(pid {holder}) holds its serving lock while it works on it. Start the "
                "server once it is done"
            )
        who = f"another server (pid {holder})" if holder else "another server"
        if holder == os.getpid():
            who = "another Palimpsest in this process (two apps on one file)"
        if self.shared:
            why = f"{who} serves it without a fan-out bus, so it would not hear this one"
        else:  # held exclusively (no bus there) or shared (a bus this one lacks)
            why = f"{who} serves it, and this one has no fan-out bus to hear its edits by"
        return (
            f"SQLite database {self.db_path!r} is in use: {why}. Stop it, or run every "
            "server on it with the same --fanout redis://... (docs/scaleout.md)"
        )

    async def serving(self) -> None:
        """The server started: the file says its pid from now on (written only then, so
        that a start that fails leaves a file that was there as it was)."""
        if self._unlocked is not None:
            log.warning("no lock on %s (%s): a second server would not be refused", self.path,
                        self._unlocked)  # fmt: skip
        if self._fd < 0:
            return
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:  # a full disk: the lock holds all the same, without the pid
            log.warning("the lock file %s does not say this server's pid: %s", self.path, e)

    async def release(self, discard_new: bool = False) -> None:
        """Drop the lock. `discard_new` (a start that failed): remove the lock file too
        when this process made it and no other holds a lock on it (taken exclusively
        first, then removed while held: a server that opened it meanwhile finds it gone
        once it has the lock, and opens a new one)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            if discard_new and self._made and fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return  # another server holds it (shared, with a bus): theirs too
                with contextlib.suppress(FileNotFoundError):
                    if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                        os.unlink(self.path)
                        log.info("the start failed: removed the lock file it made (%s)",
                                 self.path)  # fmt: skip
        finally:
            os.close(fd)  # closing drops the flock


#: how often the lock's connection is checked, and re-made when PostgreSQL dropped it
_PG_CHECK_SECONDS = 5.0
#: the sessions holding the serving lock ($1 SERVING_LOCK, $2 the schema's name), after
#: the columns a query selects
_HOLDERS = (
    "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 "
    "AND l.objid = hashtext($2)::oid AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


class PostgresServingLock:
    """One server per PostgreSQL schema, unless they share a fan-out bus: the same rule
    as for a SQLite file, with a session-level advisory lock for the flock. It is held by
    a connection of its own for as long as the server serves; PostgreSQL drops it when
    that session ends (the process killed, the connection lost). A lost connection is
    re-made and the lock taken again; if another server took it in between, the log says
    so (this one keeps serving: its clients' edits are still committed)."""

    def __init__(self, dsn: str, schema: str | None, shared: bool, wait: float = 0.0) -> None:
        self.dsn = dsn
        self.schema = schema
        self.shared = shared
        #: seconds a start waits for the lock while another server holds it
        self.wait = wait
        self._conn: Any = None
        self._keeper: asyncio.Task[None] | None = None
        self.name = schema or ""

    @property
    def what(self) -> str:
        """The lock, as the log names it."""
        return f"the serving lock on PostgreSQL schema {self.name!r}"

    async def acquire(self) -> None:
        await self._take(first=True)
        self._keeper = asyncio.create_task(self._keep(), name="palimpsest-serving-lock")

    async def serving(self) -> None:
        """The server started (its application_name names it from the start)."""

    async def release(self, discard_new: bool = False) -> None:
        """Drop the lock (its session ends). `discard_new`: nothing to remove here."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):  # (not wait_for: it can lose a cancel)
                    await conn.close()  # ends the session: drops the lock

    async def _take(self, first: bool) -> None:
        import asyncpg

        from .store.postgres import (
            CONNECT_TIMEOUT,
            SERVING_LOCK,
            SESSION_WAIT,
            check_pooling,
            keep_alive,
            no_session,
            opening,
        )

        app = f"palimpsest serve pid {os.getpid()} on {socket.gethostname()}"[:63]
        with opening():
            # (unnamed statements: see check_pooling)
            conn = await asyncpg.connect(
                self.dsn,
                timeout=CONNECT_TIMEOUT,
                server_settings={"application_name": app},
                statement_cache_size=0,
            )
        try:
            keep_alive(conn)  # (its session is the lock: a dead one found while it idles)
            if first:  # a session-level lock needs a session: not a transaction pooler's
                with opening():
                    await check_pooling(self.dsn, conn)
            try:
                # the lock's session stays idle for the server's life: PostgreSQL's
                # idle_session_timeout (14+) would end it every so often, and with it the
                # lock (a gap in which a server without a bus could start), so it is off
                # for this session; with a pooler in between, its own idle timeout must
                # be longer than _PG_CHECK_SECONDS (the checks keep the session busy)
                with contextlib.suppress(asyncpg.PostgresError):
                    await conn.execute("SET idle_session_timeout = 0", timeout=SESSION_WAIT)
                # the schema the store's tables live in: its ?schema=, or the default one
                self.name = self.schema or (
                    await conn.fetchval("SELECT current_schema()", timeout=SESSION_WAIT) or ""
                )
                take = "pg_try_advisory_lock_shared" if self.shared else "pg_try_advisory_lock"
                waiting = _Waiting(self.wait if first else 0.0, self.what)
                while True:
                    got = await conn.fetchval(
                        f"SELECT {take}($1, hashtext($2))", SERVING_LOCK, self.name,
                        timeout=SESSION_WAIT,
                    )  # fmt: skip
                    if got:
                        break
                    holders = await conn.fetch(
                        f"SELECT l.mode, a.application_name {_HOLDERS}",
                        SERVING_LOCK,
                        self.name,
                        timeout=SESSION_WAIT,
                    )
                    names = sorted({str(h["application_name"]) for h in holders
                                    if h["application_name"]})  # fmt: skip
                    if not await waiting.again(", ".join(names) or "another server"):
                        raise StoreUnavailable(self._refusal(holders))
            except TimeoutError as e:
                raise no_session(e) from e
        except BaseException:
            # (not a plain close: one that got no answer may wait for good)
            try:
                async with asyncio.timeout(2):  # (not wait_for: it can lose a cancel)
                    await conn.close()
            except Exception:  # noqa: BLE001 - any failure: the socket is dropped instead
                conn.terminate()
            raise
        self._conn = conn
        if not first:
            log.info("the serving lock on PostgreSQL schema %r is held again", self.name)

    def _refusal(self, holders: list[Any]) -> str:
        names = sorted({str(h["application_name"]) for h in holders if h["application_name"]})
        who = f"another server ({', '.join(names)})" if names else "another server"
        exclusive = any(h["mode"] == "ExclusiveLock" for h in holders)
        if self.shared and exclusive:
            why = f"{who} serves it without a fan-out bus, so it would not hear this one"
        else:
            why = f"{who} serves it, and this one has no fan-out bus to hear its edits by"
        return (
            f"PostgreSQL schema {self.name!r} is in use: {why}. Stop it, or run every server "
            "on it with the same --fanout redis://... (docs/scaleout.md)"
        )

    async def _alive(self) -> str | None:
        """None while the lock's session answers; else what happened to it."""
        conn = self._conn
        if conn is None:
            return "no connection"
        if conn.is_closed():
            return (
                "PostgreSQL or the network closed it: a restart, a failover, "
                "pg_terminate_backend, a pooler's or a firewall's idle timeout"
            )
        try:  # a cut without a FIN closes nothing: ask
            # (not wait_for: on 3.11 it can lose the cancel that stops the keeper)
            async with asyncio.timeout(5):
                await conn.fetchval("SELECT 1")
        except TimeoutError:
            return "it did not answer within 5 s"
        except Exception as e:  # noqa: BLE001 - any failure means the session is in doubt
            return f"{type(e).__name__}: {e}"
        return None

    async def _keep(self) -> None:
        """Re-makes the lock's session when PostgreSQL dropped it (a restart, a network
        cut): while it is gone, a server without a bus could start beside this one."""
        lost = False
        while True:
            await asyncio.sleep(_PG_CHECK_SECONDS)
            cause = await self._alive()
            if cause is None:
                continue
            if not lost:
                log.warning("the serving lock's connection to PostgreSQL was lost (%s); taking "
                            "it again", cause)  # fmt: skip
                lost = True
            await self._close()
            try:
                await self._take(first=False)
                lost = False
            except StoreUnavailable as e:
                if "is in use" in str(e):
                    log.error("%s (taken while this server's lock was lost)", e)
                    return
            except Exception as e:  # noqa: BLE001 - the store reports its own trouble
                log.debug("serving lock: %s", e)


def _read_pid(fd: int) -> int | None:
    """The pid the file names, if that process is alive (a server that is still starting
    has not written its own yet: the one there may be an earlier server's). None too
    when a command wrote it (:func:`not_served`'s `by`): not a server."""
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    except (OSError, ValueError):
        return None
    return _alive(pid)


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    """The pid the file names if that process is alive, and the command it names (None:
    none, a server's pid alone)."""
    try:
        words = os.pread(fd, 64, 0).decode().split()
        pid = int(words[0]) if words else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None, None
    pid = _alive(pid or None)
    command = words[1] if pid is not None and len(words) > 1 else None
    return pid, command


def _alive(pid: int | None) -> int | None:
    """`pid` if that process is alive, else None."""
    if pid is not None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:  # another user's process: alive
            pass
    return pid


@contextlib.contextmanager
def not_served(db_path: str, by: str | None = None) -> Iterator[None]:
    """Holds the serving lock of the SQLite file ``db_path`` exclusively, so that no
    server serves it meanwhile (``palimpsest backup --replace`` writing over it); raises
    Served (a StoreUnavailable) if a server serves it now. The lock file is the one a
    server takes (:class:`ServingLock`: beside the file a symlink leads to), and one this
    made is removed again (as a server's failed start does), while still held. `by`: the
    command, written with this pid into the file while held (``"123 migrate"``), so that
    another one refused meanwhile says who holds it (a server's start reads no pid in
    it, and refuses as for another server)."""
    if fcntl is None:
        yield
        return
    path = os.path.realpath(db_path) + SUFFIX
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            made = True
        except FileExistsError:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            made = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder, command = _read_holder(fd)
            os.close(fd)
            pid = f" (pid {holder})" if holder else ""
            if command:
                raise Served(f"`palimpsest {command}`{pid} holds the serving lock of "
                             f"{db_path}: wait for it to finish", command) from None  # fmt: skip
            raise Served(f"a server{pid} serves {db_path}: stop it first") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # a failed start removed the file it made: lock the one there now
    if by is not None:
        with contextlib.suppress(OSError):  # (a full disk: held all the same)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {by}\n".encode(), 0)
    try:
        yield
    finally:
        try:
            if made:  # removed while held: a server that opened it meanwhile opens anew
                with contextlib.suppress(FileNotFoundError):
                    if os.path.samestat(os.fstat(fd), os.stat(path)):
                        os.unlink(path)
        finally:
            os.close(fd)


@contextlib.asynccontextmanager
async def pg_not_served(dsn: str, schema: str | None, by: str) -> AsyncIterator[None]:
    """:func:`not_served` for a PostgreSQL schema: holds its serving lock exclusively
    (no server serves it meanwhile, nor starts); raises StoreUnavailable naming the
    servers that serve it now. `by` names the command (its session's application_name,
    which a server refused meanwhile names)."""
    import asyncpg

    from .store.postgres import CONNECT_TIMEOUT, SERVING_LOCK, opening

    app = f"palimpsest {by} pid {os.getpid()} on {socket.gethostname()}"[:63]
    with opening():
        conn = await asyncpg.connect(
            dsn, timeout=CONNECT_TIMEOUT, server_settings={"application_name": app}
        )
    try:
        name = schema or await conn.fetchval("SELECT current_schema()") or ""
        if not await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", SERVING_LOCK, name
        ):
            holders = await conn.fetch(
                f"SELECT DISTINCT a.application_name {_HOLDERS}",
                SERVING_LOCK,
                name,
            )
            names = sorted(str(h[0]) for h in holders if h[0])
            # a command's session names it (`by`, above); a server's "palimpsest serve …"
            commands = {n.split()[1] for n in names if n.startswith("palimpsest ")
                        and len(n.split()) > 1 and n.split()[1] != "serve"}  # fmt: skip
            if names and len(commands) == len(names) == 1:
                (command,) = commands
                raise Served(f"`{names[0]}` holds the serving lock of PostgreSQL schema "
                             f"{name!r}: wait for it to finish", command)  # fmt: skip
            who = f"a server ({', '.join(names)})" if names else "a server"
            raise Served(f"{who} serves PostgreSQL schema {name!r}: stop it first")
        yield
    finally:
        await conn.close()  # ends the session: drops the lock


def served_alone(db_path: str) -> str | None:
    """Who serves the SQLite file ``db_path`` without a fan-out bus (holding its serving
    lock exclusively), None when no server does (none at all, or ones that share a bus:
    they hold it shared)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(os.path.realpath(db_path) + SUFFIX, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            return f"a server (pid {holder})" if holder else "a server"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


async def pg_served_alone(dsn: str, schema: str | None, by: str) -> str | None:
    """:func:`served_alone` for a PostgreSQL schema."""
    import asyncpg

    from .store.postgres import CONNECT_TIMEOUT, SERVING_LOCK, opening

    app = f"palimpsest {by} pid {os.getpid()} on {socket.gethostname()}"[:63]
    with opening():
        conn = await asyncpg.connect(
            dsn, timeout=CONNECT_TIMEOUT, server_settings={"application_name": app}
        )
    try:
        name = schema or await conn.fetchval("SELECT current_schema()") or ""
        if await conn.fetchval(
            "SELECT pg_try_advisory_lock_shared($1, hashtext($2))", SERVING_LOCK, name
        ):
            return None
        holders = await conn.fetch(f"SELECT DISTINCT a.application_name {_HOLDERS}",
                                   SERVING_LOCK, name)  # fmt: skip
        names = sorted(str(h[0]) for h in holders if h[0])
        return f"a server ({', '.join(names)})" if names else "a server"
    finally:
        await conn.close()  # ends the session: drops the lock


__all__ = [
    "SUFFIX",
    "PostgresServingLock",
    "Served",
    "ServingLock",
    "StoppedWaiting",
    "not_served",
    "pg_not_served",
    "pg_served_alone",
    "served_alone",
]
