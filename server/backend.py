"""The backend: the store, the group committer, the rooms, and the extensions that
every feature attaches through (server.extensions; dispatched by server.dispatch).

Framework-free apart from the HTTPConnection that ``authenticate`` hands to extensions:
server.app puts HTTP and websocket routes on top of it, the CLI and the tests use it
directly. Lifecycle: ``async with Backend(settings):`` or start()/stop().
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from pycrdt import Doc
from starlette.requests import HTTPConnection

from . import stall_watch
from .auth import Identity, authorize
from .auth.open import OpenAccess
from .commit import Committer
from .dispatch import Extensions
from .errors import AuthError, described
from .lifecycle import Service
from .params import check_request
from .recovery import recovery_marker, restored_minutes
from .repeat_logs import RepeatLines
from .repeat_refusals import RepeatRefusals
from .retention import Retention
from .revocation import Revocation
from .rooms import Rooms
from .settings import Settings
from .snapshots import SnapshotPolicy, load
from .store import EventStore, open_store, sqlite_path

if TYPE_CHECKING:
    from .extensions import Extension

log = logging.getLogger("palimpsest")


def with_params(conn: HTTPConnection, doc: str | None = None, **params: str) -> HTTPConnection:
    """The same request or websocket with these query parameters set: for credentials
    that travel inside a protocol rather than in the URL (a Hocuspocus auth message), so
    that the extensions' ``authenticate`` sees them where it looks (``?token=``), along
    with the connection's headers and cookies. `doc`: the document it is for, as
    ``conn.path_params["doc"]`` (where ``/ws/{doc}`` and ``/api/docs/{doc}/…`` have it),
    for a socket that carries many. A ``token`` given replaces the request's
    ``Authorization`` header too (read first, it made each document's own token moot)."""
    query = [(k, v) for k, v in conn.query_params.multi_items() if k not in params]
    query += list(params.items())
    scope = {**conn.scope, "query_string": urlencode(query).encode()}
    if "token" in params:
        scope["headers"] = [
            (k, v) for k, v in conn.scope.get("headers", []) if k != b"authorization"
        ]
    if doc is not None:
        scope["path_params"] = {**conn.scope.get("path_params", {}), "doc": doc}
    return HTTPConnection(scope)


#: where an HTTP request's state holds the identity the extensions gave it
#: (Backend.authenticate with keep=True), with the credentials it was given for
_VERIFIED = "palimpsest.verified"


def _credentials(scope: Any) -> tuple[Any, ...]:
    """All that the extensions' ``authenticate`` could have read of a request: its
    method, path, path parameters (the document), query string and headers (cookies
    among them)."""
    return (
        scope.get("method"),
        scope.get("path"),
        tuple(sorted((str(k), repr(v)) for k, v in scope.get("path_params", {}).items())),
        scope.get("query_string"),
        tuple(tuple(h) for h in scope.get("headers", ())),
    )


def _keep_verified(conn: HTTPConnection, identity: Identity) -> None:
    if conn.scope.get("type") == "http":
        state = conn.scope.setdefault("state", {})
        state[_VERIFIED] = (_credentials(conn.scope), identity)


def _take_verified(conn: HTTPConnection) -> Identity | None:
    """The identity kept for this request, once (taken: a later call asks again), and
    only while its credentials are those it was given for; else None."""
    if conn.scope.get("type") != "http":
        return None
    state = conn.scope.get("state")
    kept = state.pop(_VERIFIED, None) if isinstance(state, dict) else None
    if kept is None or kept[0] != _credentials(conn.scope):
        return None
    identity: Identity = kept[1]
    return identity


E = TypeVar("E", bound="Extension")


class Backend(Service):
    def __init__(
        self,
        settings: Settings | None = None,
        store: EventStore | None = None,
        extensions: Sequence[Extension] | None = None,
    ) -> None:
        """`extensions`: every extension, in order; None = the built-in features for
        these settings (server.features.builtin_extensions)."""
        self.settings = settings or Settings()
        self.store = store or open_store(
            self.settings.store_url,
            durability=self.settings.durability,
            warm_disk_ms=self.settings.warm_disk_ms,
            pg_pool_size=self.settings.pg_pool_size,
            pg_command_timeout=self.settings.pg_command_timeout,
        )
        if extensions is None:
            from .features import builtin_extensions

            extensions = builtin_extensions(self.settings)
        self.extensions = Extensions(extensions, self.settings.hook_timeout_seconds)
        self.committer = Committer(
            self.store,
            batch_max=self.settings.commit_batch_max,
            on_batch=self.extensions.commit_batch,
        )
        self.snapshots = SnapshotPolicy(
            self.store,
            every=self.settings.snapshot_every,
            quiet_seconds=self.settings.snapshot_quiet_seconds,
            shared=bool(self.settings.fanout),
            observer=self.extensions,
            retention=Retention(
                self.settings.snapshot_keep_recent,
                self.settings.snapshot_max_gap,
                self.settings.snapshot_ladder_bytes,
            ),
        )
        self.rooms = Rooms(
            self.store,
            self.committer,
            self.snapshots,
            observer=self.extensions,
            on_load=self.extensions.loaded,
            unload_after=self.settings.unload_after_seconds,
            presence_timeout=self.settings.awareness_timeout_seconds,
            presence_batch=self.settings.max_awareness_clients_per_room,
        )
        # their queued edits wait for the store too (metrics, /readyz, the commit log)
        self.committer.rooms = self.rooms.live
        self._started = False
        self._stall_watch: stall_watch.StallWatch | None = None
        #: set when the server starts shutting down (before connections are closed):
        #: long-lived HTTP responses (the changefeed's streams) end on it
        self.stopping = asyncio.Event()
        #: while the server drains before a shutdown (Settings.drain_seconds): when the
        #: drain ends (time.monotonic()); /readyz answers 503 meanwhile
        self.draining_until: float | None = None
        #: websocket requests refused for good that come straight back (routes/ws.py)
        self.repeat_refusals = RepeatRefusals()
        #: the log lines of refusals that come straight back, said once a minute
        self.repeat_lines = RepeatLines(logging.getLogger("palimpsest.ws"))
        #: the "cannot load DOC" lines of websockets whose document the store cannot
        #: load (an outage), said once a minute per document with a count (routes/ws.py)
        self.repeat_loads = RepeatLines(
            logging.getLogger("palimpsest.ws"), note="each at DEBUG, counted in the metrics"
        )
        #: when a document's load last failed for a store that is unavailable, until a
        #: load succeeds (time.monotonic()): /ws refuses documents not loaded at the
        #: handshake meanwhile (routes/ws.py, store_known_down)
        self.store_down_at: float | None = None
        #: this process is cut off from a store that the other processes reach (server/
        #: cutoff.py): /ws refuses new connections at the handshake meanwhile
        self.store_cut_off = False
        #: the store checks of /readyz still out, by kind (routes/ops.py): one at a time
        self.store_checks: dict[str, asyncio.Task[None]] = {}
        self.extensions.setup(self)

    @property
    def started(self) -> bool:
        """start() succeeded and stop() has not begun."""
        return self._started

    def extension(self, kind: type[E]) -> E | None:
        """The first extension of this type, or None (e.g. ``backend.extension(Fanout)``)."""
        return self.extensions.get(kind)

    async def authenticate(
        self, conn: HTTPConnection, doc: str | None, need: str, *, keep: bool = False
    ) -> Identity:
        """Who is asking (the extensions' ``authenticate``, in order), allowed to do `need`
        (read | edit | write | admin) on `doc` (None: no single document). Raises AuthError
        (401 / 4401) or Forbidden (403 / 4403).

        `keep`: the identity the extensions gave is kept with the HTTP request, for the
        next call about it to take instead of asking them again (the write rate's guard
        verifies an admin's token before the route does, server.app._admin_of). Only the
        extensions' answer is taken over: the checks below are made again, for that
        call's `doc` and `need`."""
        identity = _take_verified(conn)
        if identity is None:
            identity = await self.extensions.authenticate(conn)
            if keep:
                _keep_verified(conn, identity)
        if identity.seconds_left() == 0.0:  # an app's own identity, past its exp
            raise AuthError("token expired (its exp has passed): sign in again")
        revocation = self.extension(Revocation)
        if revocation is not None:  # a revoked user's token issued before it: 401
            revocation.check(identity)
        authorize(identity, doc, need)
        # after the caller is known: a 400 tells nobody more than a 401 would
        await check_request(
            conn,
            identity.user,
            self.extension(OpenAccess) is not None,
            self.extensions.takes_query,
        )
        return identity

    def refused(self, reason: str) -> None:
        self.extensions.refused(reason)

    def disconnect(
        self,
        user: str | None = None,
        doc: str | None = None,
        *,
        code: int = 4403,
        reason: str = "access withdrawn",
    ) -> int:
        """Close the open connections of `user` (None: everyone's) to `doc` (None: to
        every document) now, with `code` (4000-4999; 4403, refused, by default: y-websocket
        3.1 does not reconnect on 4400-4499; 4401 makes clients fetch new credentials)
        and `reason`, on this process and, through the fan-out, on every other one. For
        an app that withdraws a permission in its own records while a socket is open: a
        socket is authenticated once, when it opens. Returns how many were closed here
        (on ``/hocuspocus`` the socket that carries such a document, with its others).
        A fan-out message may be lost (Redis restarting): a reconnect asks your
        ``authenticate`` again, which must refuse it too."""
        if user is None and doc is None:
            raise ValueError("disconnect whom? name a user, a document or both")
        if not 4000 <= code <= 4999:
            raise ValueError(f"code must be an application close code, 4000-4999, not {code}")
        closed = self.close_connections(user, doc, code, reason)
        from .fanout import Fanout

        fanout = self.extension(Fanout)
        if fanout is not None:
            fanout.publish_disconnect(user, doc, code, reason)
        return closed

    def close_connections(self, user: str | None, doc: str | None, code: int, reason: str) -> int:
        """:meth:`disconnect` on this process alone (what the fan-out does here for
        another process's)."""
        if doc is not None:
            room = self.rooms.get_loaded(doc)
            rooms = [room] if room is not None else []
        else:
            rooms = list(self.rooms.loaded.values())
        closed = 0
        for room in rooms:
            for peer in list(room.peers.values()):
                if user is None or peer.actor == user:
                    peer.close(code, reason)
                    closed += 1
        if closed:
            log.info("closed %d connections of %s to %s (%d %s)", closed, user or "everyone",
                     doc or "every document", code, reason)  # fmt: skip
        return closed

    async def doc_at(self, doc: str, seq: int | None = None) -> Doc[Any]:
        """A scratch copy of the document as it was at `seq` (default: the log's head):
        the nearest valid snapshot + the events after it. Never the live room's doc."""
        return (await load(self.store, doc, upto=seq)).doc

    async def going_away(self, reason: str = "server shutting down, reconnect") -> int:
        """Graceful shutdown, before the web server closes its sockets: close every
        connection with 1001 (going away: clients reconnect, elsewhere or later) and
        flush every room, so that everything already read is durable. Returns how many
        connections were closed."""
        self.stopping.set()
        closed = 0
        rooms = list(self.rooms.loaded.values())
        for room in rooms:
            for peer in list(room.peers.values()):
                peer.close(1001, reason)
                closed += 1
        for room in rooms:
            try:
                await room.flush()
            except Exception as e:  # the room reloads from the log; nothing acknowledged is lost
                log.warning("flushing %s on shutdown failed: %s", room.name, described(e))
        log.info("going away: closed %d connections, flushed %d rooms", closed, len(rooms))
        return closed

    async def start(self) -> None:
        """Start the store, the committer, then the extensions' services. When a part
        fails, what had started is stopped again, in reverse (the store last), before the
        error goes on up: an open store keeps threads (aiosqlite's are not daemons) that
        would keep the process from ever exiting. The store is abandoned rather than
        stopped: a database file this start created is removed, one that was there is
        left as it was found."""
        # a new one per start, on this start's event loop: an Event waited on binds to
        # its loop, and a stopped backend may start again on another (an app's tests,
        # one TestClient or pytest-asyncio loop each); read it as `backend.stopping`
        # when it is needed, not kept from an earlier start
        self.stopping = asyncio.Event()
        started: list[Service] = []
        try:
            await self.store.start()
            started.append(self.store)
            await self.committer.start()
            started.append(self.committer)
            # stopped even when its start fails part-way: the services that did start
            # stop in reverse (the dispatcher's stop tolerates those that did not)
            started.append(self.extensions)
            await self.extensions.start()
            self._stall_watch = stall_watch.start_from_settings(self.settings.stall_report_ms)
            self._open_recovery()
        except BaseException:
            self.stopping.set()
            await self._stop_parts([p for p in started if p is not self.store])
            await self._abandon_store()
            raise
        self._started = True

    async def _abandon_store(self) -> None:
        """After a failed start: the store stops, and a new database its start created is
        removed (EventStore.abandon): a failed `serve --db typo.db` leaves no empty
        database behind for the next start to take for an existing one."""
        try:
            removed = await self.store.abandon()
        except Exception:
            log.exception("stopping the store after a failed start failed")
            return
        if removed:
            log.warning("the start failed: removed the new database it had created (%s)",
                        ", ".join(removed))  # fmt: skip

    def _open_recovery(self) -> None:
        """The window in which clients' sync step 2 may bring back other users' edits
        the store lost (settings.recovering_minutes; a restored SQLite backup's marker
        file opens one of an hour, and is removed)."""
        minutes, why = self.settings.recovering_minutes, "recovering_minutes"
        if self.store.name == "sqlite":
            # the store's own file: an embedding app passes its store, not settings.db
            from .store.sqlite import SQLiteStore

            store = self.store
            path = (
                store.path
                if isinstance(store, SQLiteStore)
                else sqlite_path(self.settings.store_url)
            )
            marker = recovery_marker(str(Path(path).resolve()))
            left = restored_minutes(marker)
            if left > minutes:
                minutes, why = left, f"{marker.name}: the database was restored"
        if minutes > 0:
            self.rooms.relay_until = time.monotonic() + minutes * 60
            log.warning(
                "recovering lost edits for %g min (%s): a client's sync step 2 may bring "
                "back other users' edits the store lacks; they are logged in its name",
                minutes, why,
            )  # fmt: skip

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.stopping.set()
        if self._stall_watch is not None:
            self._stall_watch.stop()
            self._stall_watch = None
        await self.rooms.stop()
        # on_committed catches up with the last events, then the services stop
        await self.extensions.stop()
        await self.committer.stop()
        await self.store.stop()
        self.repeat_lines.close()
        self.repeat_loads.close()

    async def _stop_parts(self, started: list[Service]) -> None:
        """Stop what a failed start() had started, in reverse; a part that fails to stop
        is logged and the others still stop (the start's own error is the one raised)."""
        for part in reversed(started):
            try:
                await part.stop()
            except Exception:
                log.exception("stopping %r after a failed start failed", part)
