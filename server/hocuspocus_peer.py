"""A document on a Hocuspocus socket, as its room sees it (see server.routes.hocuspocus).

The room sends y-websocket frames; a :class:`DocPeer` prefixes the document name (and
translates the few frames that differ). Its updates are recorded under an
:class:`_Author`, through which the sync status goes out once they are committed: the
:class:`SyncStatus` extension sees the commits (``on_logged``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import hocuspocus as H
from . import protocol as P
from .auth import ExpiryWatch, Identity
from .conn_guard import ConnectionGuard
from .extensions import Client, Extension
from .resync import Resync
from .room import Room
from .store.base import Event


class Socket(Protocol):
    id: str
    host: str

    def send(self, frame: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class DocPeer:
    """One document on a Hocuspocus socket: the Peer its room sees."""

    def __init__(
        self,
        sock: Socket,
        doc: str,
        identity: Identity,
        n: int,
        guard: ConnectionGuard,
        status: SyncStatus | None,
    ) -> None:
        self.sock = sock
        #: this document's identity's limits (creation quota); rates are the socket's
        self.guard = guard
        self.doc = doc
        self.identity = identity
        self.actor = identity.user
        self.id = f"{sock.id}#{n}"
        #: the document's connection, as extensions see it
        self.client = Client(self.id, doc, identity, sock.host)
        self.status = status
        self.room: Room | None = None
        #: frames read before the room was loaded (within the socket's bound on what it
        #: holds: HocuspocusSocket.keep)
        self.pending: list[H.Frame] = []
        #: while an auth message on the open document (a renewal) is being decided, the
        #: frames read after it, judged under its outcome once decided; None otherwise
        #: (within the socket's bound on what it holds: HocuspocusSocket.keep)
        self.renewing: list[H.Frame] | None = None
        #: what an update past a gap gets: dropped, made good by a sync step 2 (the
        #: server sends its step 1 in answer to the client's, not as the document opens)
        self.resync = Resync(sent_step1=False)
        #: the timer that closes the document when its token expires
        self.expiry: ExpiryWatch | None = None
        #: opened while this document's refusals of its address and user repeat: its
        #: open line went to DEBUG (server.repeat_logs)
        self.repeating = False
        #: its refusal was a repeat: its closing and close lines went to DEBUG
        self.repeated = False
        self.author = _Author(self)
        if status is not None:
            status.authors[self.author.id] = self.author

    def renew(self, identity: Identity, guard: ConnectionGuard) -> None:
        """A fresh token of the same user: its identity (expiry, role) from now on."""
        self.identity = identity
        guard.presence = self.guard.presence  # the clients it holds presence for stay its
        self.guard = guard
        self.client = Client(self.id, self.doc, identity, self.sock.host)

    def send(self, frame: bytes) -> None:
        self.sock.send(H.from_y_websocket(self.doc, frame))

    def unlocked(self, room: Room) -> None:
        """`room`'s document was unlocked (server.locking): a re-sync asked for when the
        lock refused edits of this document (Resync.unlocked); the provider does not
        count its step 2, whose sync status stands for the refused updates."""
        if self.room is room and self.resync.unlocked():
            self.send(P.encode_sync_step1(self.resync.state_vector(room.doc.get_state())))

    def forget(self) -> None:
        """No sync status for this document any more (the client closed it)."""
        if self.status is not None:
            self.status.authors.pop(self.author.id, None)

    def close(self, code: int, reason: str) -> None:
        # One socket for every document: 2.x providers cannot read a close message for
        # one document, so closing one closes all. Each provider reconnects and re-syncs.
        self.sock.close(code, reason)


class _Author:
    """The sender its room records for a DocPeer's updates. Its id differs from the
    DocPeer's, so the room's broadcast never leaves the DocPeer out: the update comes
    back to its sender (Hocuspocus echoes) whether or not the room echoes to authors."""

    def __init__(self, peer: DocPeer) -> None:
        self.peer = peer
        self.id = peer.id + "/w"
        self.actor = peer.actor
        #: sync statuses to leave out: ones the provider does not wait for (a step 2
        #: answering a step 1 it did not count, Resync.step2)
        self.skip = 0

    def send(self, frame: bytes) -> None:
        self.peer.send(frame)

    def close(self, code: int, reason: str) -> None:
        self.peer.close(code, reason)

    def saved(self) -> None:
        if self.skip:
            self.skip -= 1
            return
        self.peer.sock.send(H.encode_sync_status(self.peer.doc, True))


class SyncStatus(Extension):
    """Sync status (saved) to Hocuspocus clients once their updates are durable (and
    after the broadcast that echoes them)."""

    def __init__(self) -> None:
        #: the author of each pending client update, by the connection id in its meta
        self.authors: dict[str, _Author] = {}

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        if not self.authors:  # no Hocuspocus client anywhere: nothing to tell
            return
        for ev in events:
            conn = ev.meta.get("conn")
            author = self.authors.get(conn) if isinstance(conn, str) else None
            if author is not None:
                author.saved()


__all__ = ["DocPeer", "Socket", "SyncStatus"]
