"""The backend: the store, the group committer, the rooms and the features wired to them.

Framework-free: app.py puts HTTP and websocket routes on top of it, the CLI and the
tests use it directly. Lifecycle: ``async with Backend(settings):`` or start()/stop().
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .auth import Authenticator, Identity
from .commit import Committer
from .lifecycle import Service
from .room import Room, RoomHooks
from .rooms import Rooms
from .settings import Settings
from .snapshots import SnapshotPolicy
from .store import EventStore, open_store

log = logging.getLogger("palimpsest")

#: an extension-message handler: (backend, room, peer, request body) -> answer body
ExtensionHandler = Callable[["Backend", Room, Any, dict[str, Any]], Awaitable[dict[str, Any]]]


class Backend(Service):
    def __init__(self, settings: Settings | None = None, store: EventStore | None = None) -> None:
        self.settings = settings or Settings()
        self.store = store or open_store(self.settings.store_url)
        self.committer = Committer(self.store, batch_max=self.settings.commit_batch_max)
        self.hooks = RoomHooks()
        self.snapshots = SnapshotPolicy(
            self.store,
            every=self.settings.snapshot_every,
            quiet_seconds=self.settings.snapshot_quiet_seconds,
        )
        self.rooms = Rooms(
            self.store,
            self.committer,
            self.snapshots,
            hooks=self.hooks,
            unload_after=self.settings.unload_after_seconds,
        )
        self.extensions: dict[str, ExtensionHandler] = {}
        self.auth: Any = Authenticator()
        #: things with start()/stop() that live as long as the backend (fan-out, …)
        self.services: list[Any] = []
        #: called with a short reason label whenever a connection or a frame is refused
        self.on_refused: list[Callable[[str], None]] = []
        self._started = False
        self._install_features()

    def _install_features(self) -> None:
        """Each feature module wires itself with an install(backend) function."""
        from . import features

        for install in features.installers():
            install(self)

    def identify(self, token: str | None, user: str | None) -> Identity:
        return self.auth.identify(token, user)  # type: ignore[no-any-return]

    def authenticate_ws(self, ws: Any, doc: str) -> Identity:
        """Identity of a websocket from ?token= (or ?user= in open mode), allowed to read doc."""
        q = ws.query_params
        identity = self.identify(q.get("token"), q.get("user"))
        self.auth.authorize(identity, doc, "read")
        return identity

    def authenticate_http(self, request: Any, doc: str | None, need: str) -> Identity:
        """Identity of an HTTP request from the Bearer token (or ?user=), allowed `need` on doc."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        if token is None:
            token = request.query_params.get("token")
        identity = self.identify(token, request.query_params.get("user"))
        self.auth.authorize(identity, doc, need)
        return identity

    def refused(self, reason: str) -> None:
        for cb in self.on_refused:
            cb(reason)

    async def going_away(self, reason: str = "server shutting down, reconnect") -> int:
        """Graceful shutdown, before the web server closes its sockets: close every
        connection with 1001 (going away: clients reconnect, elsewhere or later) and
        flush every room, so that everything already read is durable. Returns how many
        connections were closed."""
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
                log.warning("flushing %s on shutdown failed: %s", room.name, e)
        log.info("going away: closed %d connections, flushed %d rooms", closed, len(rooms))
        return closed

    async def start(self) -> None:
        await self.store.start()
        await self.committer.start()
        for svc in self.services:
            await svc.start()
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self.rooms.stop()
        for svc in reversed(self.services):
            try:
                await svc.stop()
            except Exception:
                log.exception("stopping %r failed", svc)
        await self.committer.stop()
        await self.store.stop()
