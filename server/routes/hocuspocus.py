"""The Hocuspocus endpoint, ``/hocuspocus``: ``@hocuspocus/provider`` clients, unmodified.

One socket carries any number of documents (see :mod:`server.hocuspocus` for the
frames). Each open document is a :class:`DocPeer` of the same room ``/ws/{doc}`` uses,
so the documents, the log, undo and the rules are the same whichever protocol a client
speaks. The socket itself is a :class:`~server.routes.ws.Connection`: the same eager
reader, bounded send queue, rate limit and close handling.

Each document's first frame is normally an auth message (3.x and 4.x providers always
send one; 2.x only with a ``token``). Its token is checked with the same JWT rules as
``?token=`` on ``/ws``; in open development mode it names the user (see
docs/hocuspocus.md). The answer is Authenticated (``read-write`` / ``readonly``) or
PermissionDenied with the reason; frames read while the room loads wait in order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from functools import partial
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import hocuspocus as H
from .. import protocol as P
from ..auth import ExpiryWatch, Identity
from ..auth.open import OpenAccess
from ..backend import Backend, with_params
from ..closes import cause_of_error
from ..conn_guard import ConnectionGuard
from ..deletion import refuse_stale_copy
from ..dispatch import NOT_AUTHENTICATED
from ..errors import (
    AuthError,
    Forbidden,
    ForeignItems,
    FrameTooLarge,
    LogDamaged,
    PalimpsestError,
    ProtocolError,
    RateLimited,
    StoreError,
    UpdateGap,
    UpdateRejected,
)
from ..extensions import Client
from ..hocuspocus_peer import DocPeer, SyncStatus
from ..limits import frame_limit
from ..locking import lock_of
from ..names import validate_doc_name
from ..repeat_logs import Who
from ..repeat_refusals import held_back, request_key
from ..resync import overdue_words
from ..room import EMPTY_UPDATE, Room
from .wire_write import detach_reader
from .ws import (
    ANY,
    Connection,
    client_id,
    count_refusal,
    extension_answer,
    held_left,
    offered,
    reason_of,
    refuse_error,
    refused_again,
    said_closed,
    settle_held,
    take_ready_part,
)
from .ws import (
    adds_anything as _adds_anything,
)

log = logging.getLogger("palimpsest.hocuspocus")

#: documents one socket may have open (each holds a room in memory)
MAX_DOCS_PER_SOCKET = 256
#: refused document names remembered per socket (their frames are dropped quietly)
MAX_DENIED = 1024
#: what one held frame costs beyond its bytes (the Frame, its bytes and name objects),
#: so that frames of no body (a query awareness) are not held for free
HELD_FRAME_COST = 128


def held_cost(frame: H.Frame) -> int:
    """What holding `frame` counts against its socket's bound (HocuspocusSocket.held)."""
    return len(frame.body) + len(frame.doc) + HELD_FRAME_COST


def close_code_of(e: PalimpsestError) -> int:
    """Hocuspocus's close codes where it has one for the case."""
    if isinstance(e, FrameTooLarge):
        return H.MESSAGE_TOO_BIG
    if isinstance(e, ProtocolError | UpdateRejected):
        return H.RESET_CONNECTION
    return e.close_code


def _claimed_user(token: str) -> str:
    """Open mode: the token names the user, or is a JWT whose ``sub`` does (unverified:
    open mode believes everyone), so an app's real tokens work against a dev server."""
    if token.count(".") == 2:
        import jwt  # (where used: not imported at start-up, see auth/tokens.py)

        try:
            sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
        except jwt.InvalidTokenError:
            return token
        if isinstance(sub, str):
            return sub
    return token


#: why a document was refused that came without a token (nor ?token= on the socket)
NO_TOKEN = (
    "not authenticated: no token came for '{doc}': a token is required, in the provider's "
    "auth message (its `token` option; a token callback that fails sends none)"
)
#: the close reason of a socket one of whose documents' token expired
TOKEN_EXPIRED = "token expired: authenticate again with a fresh token"
#: what extensions see of the socket itself (on_connect, on_disconnect): it has no
#: identity of its own, each document is authenticated in-band
SOCKET_IDENTITY = Identity("(hocuspocus socket)", "read", ())


class HocuspocusSocket(Connection):
    def __init__(self, ws: WebSocket, backend: Backend, client: Client) -> None:
        super().__init__(ws, backend, client)
        self.status = backend.extension(SyncStatus)
        self.docs: dict[str, DocPeer] = {}
        #: documents being authenticated, with the frames read for them meanwhile
        self.opening: dict[str, list[H.Frame]] = {}
        #: documents refused, or closed by the server: their frames are dropped until a
        #: new auth message opens them again; each with the sync statuses its provider
        #: waits for of the updates dropped (_owed_after), sent once they are in the log
        self.denied: dict[str, int] = {}
        #: documents the client closed (type 7), with the frames it sent for them since:
        #: they wait for an auth message opening the document again (client_closed)
        self.left: dict[str, list[H.Frame]] = {}
        #: documents not opened yet whose first frames are not an auth message nor a
        #: sync step 1: they wait for one (early), as Hocuspocus queues them
        self.early: dict[str, list[H.Frame]] = {}
        #: what the frames the socket holds cost (held_cost), wherever they wait: before
        #: a document's auth message (early), after the client closed it (left), while
        #: it is authenticated (opening) and while its room loads (DocPeer.pending).
        #: One bound for all of them (keep): each used to have its own, per document for
        #: all but the first, so a socket could make the server hold eight frames' worth
        #: of bytes times every document it closed
        self.held = 0
        #: documents the server closed, with the presence entries their close removed
        #: (client, clock, "null"): sent back to the provider when it opens them again
        self.gone_presence: dict[str, list[tuple[int, int, str]]] = {}
        self._n = itertools.count(1)
        self._loads: set[asyncio.Task[None]] = set()
        #: frames of message types this server does not know, ignored (unknown_type)
        self.unknown_types = 0

    # --- the read loop ---------------------------------------------------------------

    async def serve(self, room: Room | None = None) -> None:
        try:
            await self.read(self.dispatch)
        except WebSocketDisconnect as e:
            self.client_went(e.code, e.reason or None)
        except PalimpsestError as e:
            self.refuse(e)
        finally:
            for peer in list(self.docs.values()):
                self.leave(peer)
            self.close_after_client()
            await self.wait_closed()
            detach_reader(self.ws)  # (else a cycle keeps the socket's memory: wire_write)
            for task in list(self._tasks):
                task.cancel()

    def refuse(self, e: PalimpsestError) -> None:
        """Close the socket for what one of its frames brought on. A refusal for good
        (44xx) said for this address within the minute is said at DEBUG, counted, with
        the socket's connect and disconnect lines (server.repeat_logs): a provider
        reconnects at once and sends the same frame again."""
        code = close_code_of(e)
        if held_back(e.close_code):
            self.repeated = not self.backend.repeat_lines.refused(self.who, code, str(e))
        (log.debug if self.repeated else log.info)("%s: closing with %d: %s", self.id, code, e)
        self.backend.refused(reason_of(e))
        self.close(code, str(e), cause_of_error(e))

    def dispatch(self, data: bytes) -> None:
        settings = self.backend.settings
        frame = H.decode(data)
        if isinstance(frame, H.Heartbeat):
            self.guard.check_rate(len(data))
            if frame.type == H.PING:  # as a 4.x provider answers the server's
                self.send(H.encode_pong())
            return
        # a sync step 2 or update may be as large as the document (limits.frame_limit),
        # judged without the document name as on /ws; any other frame whole
        update = frame.type == H.SYNC and frame.body[:1] in (b"\x01", b"\x02")
        most = frame_limit(settings, update)
        if (len(frame.body) if update else len(data)) > most:
            raise FrameTooLarge(f"frame of {len(data)} bytes is over the limit of {most}")
        self.guard.check_rate(len(data))  # every frame kind, of every document on the socket
        if frame.type > H.SYNC_STATUS:
            self.unknown_type(frame)
            return
        peer = self.docs.get(frame.doc)
        if peer is None:
            waiting = self.opening.get(frame.doc)
            held = self.left.get(frame.doc)
            if waiting is None and held is not None and not _reopens(frame):
                if frame.type != H.CLOSE:
                    self.keep(frame, f"frames for {frame.doc!r}, which you closed")
                    held.append(frame)
            elif waiting is None and held is None and not _reopens(frame) \
                    and frame.doc not in self.denied:  # fmt: skip
                self.wait_for_auth(frame)
            elif waiting is None:
                early = self.early.pop(frame.doc, None)
                if early is not None:
                    self.open(frame, early, keep=True)
                else:
                    self.open(frame, self.left.pop(frame.doc, []))
            elif frame.type == H.CLOSE:
                self.unhold(self.opening.pop(frame.doc))  # closed before it was opened
                self.client_closed(frame.doc)
            else:
                # (an auth message too: a renewal sent at once is answered once it opens)
                self.keep(frame, f"frames for {frame.doc!r} while it opens")
                waiting.append(frame)
        elif peer.room is None:
            if frame.type == H.CLOSE:
                self.leave(peer)
                self.client_closed(peer.doc)
            else:  # an auth message too: a renewal (sendToken) is answered once it loads
                self.keep(frame, f"frames for {frame.doc!r} while it loads")
                peer.pending.append(frame)
        elif peer.renewing is not None:
            # after an auth message on the document: judged under its outcome (refresh)
            self.keep(frame, f"frames for {frame.doc!r} while its token is renewed")
            peer.renewing.append(frame)
        else:
            self.handle_frames(peer, peer.room, [frame])

    def unknown_type(self, frame: H.Frame) -> None:
        """A type this server has no handler for (a newer provider's), of a document whose
        name reads: ignored, whether the document is open or not, as Hocuspocus's server
        does ("no handler defined"), rather than closing the socket and every document
        on it. Said once per socket at INFO (a provider that sends it again and again
        would fill the log), then at DEBUG."""
        self.backend.extensions.ignored("hocuspocus", P.type_label(frame.type))
        say = log.debug if self.unknown_types else log.info
        self.unknown_types += 1
        say("%s: ignored a frame of unknown Hocuspocus message type %d for %r (%d bytes); "
            "this server knows 0 to %d", self.id, frame.type, frame.doc, len(frame.body),
            H.SYNC_STATUS)  # fmt: skip

    # --- opening and closing documents ---------------------------------------------------

    def wait_for_auth(self, frame: H.Frame) -> None:
        """A frame of a document not open, neither an auth message nor a sync step 1 (how
        every provider starts one): it waits for one, as Hocuspocus's server queues the
        frames before a document's auth message. A 3.x provider's socket sends what it
        queued offline as the first answer arrives, which may be another document's
        Authenticated while this one's token is still being fetched (a token callback):
        that frame opened the document without a token, and in JWT mode the provider,
        whose token was good, got a stray PermissionDenied. They count against the
        socket's bound on what it holds (keep), for at most MAX_DENIED documents; a close
        drops them."""
        early = self.early.get(frame.doc)
        if frame.type == H.CLOSE:
            if early is not None:
                self.unhold(self.early.pop(frame.doc))
            return
        self.keep(frame, "frames sent before their auth message")
        if early is None:
            if len(self.early) >= MAX_DENIED:
                raise RateLimited(f"frames for more than {MAX_DENIED} documents not opened")
            early = self.early[frame.doc] = []
        early.append(frame)

    def open(self, frame: H.Frame, held: list[H.Frame], *, keep: bool = False) -> None:
        """Open a document with its first frame: an auth message, or (a 2.x provider
        without a token sends none) any other. `held`: the frames sent for it since the
        client closed it, handled after an auth message, as Hocuspocus does; dropped
        when a sync step 1 without one opens it (a new provider's start, whose sync
        carries what they held). `keep`: they are frames sent before its first auth
        message or step 1 (wait_for_auth), handled in order before a step 1 too."""
        if frame.type == H.CLOSE:
            self.unhold(held)
            return
        if frame.type == H.AUTH:
            token: str | None = H.decode_auth(frame.body).token
        elif frame.doc in self.denied:
            # answered already; a new auth message tries again (and brings the dropped
            # updates: reopened)
            self.denied[frame.doc] = _owed_after(self.denied[frame.doc], [frame])
            self.unhold(held)
            return
        else:
            token = None  # a 2.x provider without a token sends no auth message
            if held and not keep:
                log.debug("%s: %d frames sent for %r after its close dropped: a sync "
                          "step 1 without an auth message opened it", self.id, len(held),
                          frame.doc)  # fmt: skip
                self.unhold(held)
                held = []
            self.keep(frame, f"frames for {frame.doc!r} while it opens")
        frames = self.opening[frame.doc] = held if frame.type == H.AUTH else [*held, frame]
        task = asyncio.create_task(
            self.authenticate(frame.doc, token, frames, authed=frame.type == H.AUTH),
            name=f"open:{self.id}:{frame.doc}",
        )
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def authenticate(
        self, doc: str, token: str | None, frames: list[H.Frame], *, authed: bool
    ) -> None:
        """The extensions' authenticate (the token as ?token=, or in open mode as the
        claimed ?user=); then the document opens, with the frames read meanwhile."""
        try:
            validate_doc_name(doc)
            try:
                identity = await self.backend.authenticate(
                    self.credentials(token, doc), doc, "read"
                )
            except AuthError as e:
                # (what the extensions look for, ?token= and Authorization, is not how a
                # provider sends a token here; a 3.x provider whose token callback
                # failed said so itself, but a 2.x provider without a token is told by
                # this alone, and the two cannot be told apart)
                if token or "token" in self.ws.query_params:
                    raise
                if not str(e).startswith(NOT_AUTHENTICATED):
                    raise
                raise AuthError(NO_TOKEN.format(doc=doc)) from e
            if len(self.docs) >= MAX_DOCS_PER_SOCKET:
                raise RateLimited(
                    f"{MAX_DOCS_PER_SOCKET} documents are open on this socket, the most one "
                    "may have: close one (or open this one on another socket) first"
                )
        except PalimpsestError as e:
            if self.opening.get(doc) is frames:
                del self.opening[doc]
                self.unhold(frames)
            log.info("%s: refused %r: %s", self.id, doc, e)
            self.backend.refused(reason_of(e))
            self.deny(doc, _owed_after(self.denied.get(doc, 0), frames))
            self.send(H.encode_permission_denied(doc, str(e)))
            return
        if self.opening.get(doc) is not frames or self._close is not None:
            return  # closed while its credentials were checked
        del self.opening[doc]
        owed = self.denied.pop(doc, None)
        gone = self.gone_presence.pop(doc, [])
        guard = ConnectionGuard(self.backend, self.backend.settings, identity, doc, self.host)
        peer = DocPeer(self, doc, identity, next(self._n), guard, self.status)
        self.docs[doc] = peer
        if authed:
            self.send(H.encode_authenticated(doc, read_only=not identity.can_write))
        peer.pending.extend(frames)
        self._watch_doc_expiry(peer)
        # (at DEBUG while this document's refusals of this address and user repeat: a
        # provider opening it again with the update refused, server.repeat_logs)
        peer.repeating = self.backend.repeat_lines.connecting(self.who_of(peer))
        (log.debug if peer.repeating else log.info)(
            "open %s doc=%s user=%s", peer.id, peer.doc, peer.actor
        )
        await self.load(peer, reopened=owed, gone=gone)

    def _watch_doc_expiry(self, peer: DocPeer) -> None:
        """A document's session ends with its token, as a /ws socket's does: once it
        expires (plus the leeway its verification allowed) the document closes, with a
        close message saying why, and opens again with a new auth message carrying a
        fresh token. Without this an expired token kept its access on /hocuspocus for
        as long as the socket lived."""
        if peer.expiry is not None:  # (renewed: the new token's expiry replaces it)
            peer.expiry.cancel()
            peer.expiry = None
        if peer.identity.exp is None:
            return

        def expire() -> None:
            peer.expiry = None
            self._expire_doc(peer)

        # the wall clock read again every EXPIRY_RECHECK seconds, and at every update
        peer.expiry = ExpiryWatch(peer.identity, expire)

    def _expire_doc(self, peer: DocPeer) -> None:
        """A document's token expired: the socket closes (4205, ResetConnection), its
        frames read after this dropped unhandled. Every provider reconnects on it and
        sends each document's token again, calling a ``token`` callback for a fresh one;
        each document syncs, and what was typed meanwhile travels in its step 2. Closing
        that one document (a close message) lost edits: a 2.x provider cannot read one
        (an uncaught error in Node; a browser's stayed synced, its edits dropped), and a
        3.x provider holds its edits until the app calls ``sendToken()``, never calling
        its callback. The socket's other documents re-sync and lose nothing either."""
        if self.docs.get(peer.doc) is not peer or self._close is not None:
            return
        log.info("%s: the token of %r (%s) expired: closing the socket with %d so that its "
                 "providers authenticate again", self.id, peer.doc, peer.actor,
                 H.RESET_CONNECTION)  # fmt: skip
        self.backend.refused("token_expired")
        self.shut(peer)
        self.close(H.RESET_CONNECTION, f"{TOKEN_EXPIRED} (document {peer.doc!r})",
                   cause="auth_expired")  # fmt: skip

    def client_closed(self, doc: str) -> None:
        """The client closed `doc` (type 7): answered with a close message, as
        Hocuspocus 3.x does (its ``provider_initiated``; a provider has detached the
        document before it sends its close, so the answer reaches none that is gone).
        Its later frames wait for an auth message opening it again (self.left), as
        Hocuspocus queues them; they used to open it at once as the socket's user (in
        open mode ``anonymous``), whose edits of the user's Yjs client were refused."""
        self.unhold(self.left.pop(doc, []))
        if len(self.left) >= MAX_DENIED:
            for held in self.left.values():
                self.unhold(held)
            self.left.clear()
        self.left[doc] = []
        self.send(H.encode_close(doc, H.CLOSED_BY_CLIENT))

    def keep(self, frame: H.Frame, why: str) -> None:
        """Count a frame the socket is about to hold until its document opens or loads
        against the socket's one bound, eight frames' worth of bytes for all the
        documents it holds frames for, whatever they wait for (`why`, for the close
        reason): past it the socket closes (1013, RateLimited). unhold() gives it back
        as the frame is handled or dropped."""
        limit = 8 * self.backend.settings.max_frame_bytes
        cost = held_cost(frame)
        if self.held + cost > limit:
            raise RateLimited(
                f"over {limit} bytes held for documents not open on this socket: {why}"
            )
        self.held += cost

    def unhold(self, frames: list[H.Frame]) -> None:
        """Frames counted by keep() are handled or dropped: no longer held."""
        self.held -= sum(held_cost(f) for f in frames)

    def deny(self, doc: str, owed: int = 0) -> None:
        """Frames of `doc` are dropped until a new auth message opens it again; `owed`:
        the sync statuses its provider waits for of what was dropped so far."""
        self.denied.pop(doc, None)
        if len(self.denied) >= MAX_DENIED:
            del self.denied[next(iter(self.denied))]  # (the oldest)
        self.denied[doc] = owed

    def close_doc(self, peer: DocPeer, e: PalimpsestError) -> None:
        """A frame of an open document was refused (malformed, forged, over a limit): as
        Hocuspocus does, that document closes, with PermissionDenied saying why (every
        provider reads it; a close message, type 7, crashed 2.x), and the socket stays
        open for its other documents. The client opens it again with a new auth message
        (`sendToken()`; a provider sends one when its socket reconnects), and the two
        sides sync then (`sync_reopened`).

        A refusal for good (44xx: the update splits a character, does not decode, ...)
        said for this document, address and user within the minute is said at DEBUG,
        counted (server.repeat_logs), with the document's open and close lines: the
        provider keeps the update and sends it again each time it opens the document."""
        if held_back(e.close_code):
            peer.repeated = not self.backend.repeat_lines.refused(
                self.who_of(peer), e.close_code, str(e)
            )
        (log.debug if peer.repeated else log.info)("%s: closing %r: %s", self.id, peer.doc, e)
        self.backend.refused(reason_of(e))
        self.shut(peer)
        # PermissionDenied, not a close message (type 7): a 2.x provider cannot read one
        # (its Node process died on "unknown type: 7"), and no frame tells 2.x from 3.x
        self.send(H.encode_permission_denied(peer.doc, str(e)[:1000]))

    def who_of(self, peer: DocPeer) -> Who:
        """Whose refusals of `peer`'s document are held back when they repeat
        (server.repeat_logs): the document, the socket's address and the document's
        user (each document of a socket is authenticated on its own)."""
        return (peer.doc, self.host, peer.identity.user)

    def shut(self, peer: DocPeer) -> None:
        """The server closes an open document (close_doc, a renewal refused): its frames
        are dropped until a new auth message. The updates it took before still get their
        sync status once they are in the log; the dropped ones' are owed (deny)."""
        room = peer.room
        if room is not None:
            if len(self.gone_presence) >= MAX_DENIED:
                self.gone_presence.clear()
            self.gone_presence[peer.doc] = [
                (c, e.clock, "null") for c, e in room.presence.entries.items()
                if e.peer_id == peer.id
            ]  # fmt: skip
        owed = _owed(peer)  # (the updates read while a renewal was decided among them)
        self.leave(peer, forget=room is None)
        self.deny(peer.doc, owed)
        if room is not None:
            self.spawn(self._forget_after_flush(peer, room))

    async def _forget_after_flush(self, peer: DocPeer, room: Room) -> None:
        try:
            await room.flush()
        except StoreError:
            pass  # the room is reloading and has closed its peers
        finally:
            peer.forget()

    def credentials(self, token: str | None, doc: str) -> Any:
        """The socket's request, with an in-band token where the extensions look for
        credentials: ?token=, or in open mode the user it claims as ?user=; and the
        document it is for as ``path_params["doc"]``, as on ``/ws/{doc}``."""
        if not token:  # none, or empty: what the socket's URL says (?token=, ?user=)
            return with_params(self.ws, doc)
        if self.backend.extension(OpenAccess) is not None:
            return with_params(self.ws, doc, user=_claimed_user(token))
        return with_params(self.ws, doc, token=token)

    async def load(
        self,
        peer: DocPeer,
        reopened: int | None = None,
        gone: list[tuple[int, int, str]] | None = None,
    ) -> None:
        """Load `peer`'s room and handle the frames read meanwhile. `reopened`: the
        document was refused or closed on this socket before, and an auth message opens
        it again, with the sync statuses owed for the updates dropped meanwhile; `gone`:
        the presence its close removed."""
        try:
            room = await self.backend.rooms.get(peer.doc)
        except LogDamaged as e:  # (said once, as an error, by Rooms)
            # (the socket closes: counted once, as its disconnect, cause store_error)
            self.close(1011, e.reason, cause="store_error")
            return
        except StoreError as e:
            reason = "the store is unavailable, try again"
            # once a minute per document, with a count (server.repeat_logs)
            first = self.backend.repeat_loads.refused((peer.doc, *ANY), 1013, reason)
            (log.warning if first else log.debug)(
                "cannot load %s: %s", peer.doc, e,
                extra={"doc": peer.doc, "user": peer.actor, "code": 1013, "reason": reason},
            )  # fmt: skip
            self.close(1013, reason, cause="store_error")
            return
        if self.docs.get(peer.doc) is not peer or self._close is not None:
            self.backend.rooms.release(room)  # closed while loading
            return
        peer.room = room
        peer.guard.presence.joining(room)
        room.join(peer, sync_step1=False)  # Hocuspocus answers the client's step 1 instead
        frames, peer.pending = peer.pending, []
        self.unhold(frames)
        if reopened is not None and not any(_starts_sync(f) for f in frames):
            self.sync_reopened(peer, room, reopened, gone or [])
        self.handle_frames(peer, room, frames)

    def sync_reopened(
        self, peer: DocPeer, room: Room, owed: int, gone: list[tuple[int, int, str]]
    ) -> None:
        """A document the server had closed (or refused) opened again by an auth message
        alone (``sendToken()``): a provider sends its sync step 1 only as its socket
        opens, so without this neither side learnt what the other lacked, and every
        later update of the tab, past the gap of those dropped while it was closed, was
        dropped too. The server sends its sync step 1 (the provider's step 2 answers
        with what the log lacks: the dropped updates) and a step 2 of the whole document
        (what others wrote meanwhile; what the provider holds is not known). That step 2
        is not counted by the provider: its sync status stands for the dropped updates
        (`owed`), none when none was (Resync.step2). First it asks for the provider's
        presence, which left the room with the document: the removal of its clients
        (`gone`) first, at the clocks everyone holds, upon which y-protocols bumps its
        own client's clock and sends its state, which everyone takes (its state at the
        old clock, everyone ignores); then a query awareness (a close that removed
        none)."""
        peer.resync.sent_step1 = True
        peer.resync.uncounted = True
        peer.resync.dropped = owed
        # its user's presence left the room as it closed, and the provider sends it again
        # only when it changes (or its 15 s renewal): asked for, so the others see the
        # user at once (before the sync, whose step 2 they see after it)
        if gone:
            peer.send(P.encode_awareness(P.encode_awareness_entries(gone)))
        peer.send(P.encode_query_awareness())
        peer.send(P.encode_sync_step1(peer.resync.state_vector(room.doc.get_state())))
        room.answer_sync_step1(peer, b"\x00")
        (log.debug if peer.repeating else log.info)(
            "%s: %r opened again: syncing (%d updates dropped while it was closed)",
            self.id, peer.doc, owed,
        )  # fmt: skip

    def leave(self, peer: DocPeer, *, forget: bool = True) -> None:
        if self.docs.get(peer.doc) is peer:
            del self.docs[peer.doc]
        if peer.expiry is not None:
            peer.expiry.cancel()
            peer.expiry = None
        if forget:
            peer.forget()
        self.unhold(peer.pending)  # (frames read while it loaded: dropped)
        peer.pending = []
        if peer.renewing is not None:  # (and those read while its renewal was decided)
            self.unhold(peer.renewing)
            peer.renewing = None
        peer.resync.end()  # (its wait, if any, ends)
        room, peer.room = peer.room, None
        if room is not None:
            room.leave(peer)
            held_left(room, peer.id, peer.actor)
            self.backend.rooms.release(room)
            # (at DEBUG when its refusal was a repeat: close_doc)
            (log.debug if peer.repeated else log.info)(
                "close %s doc=%s user=%s", peer.id, peer.doc, peer.actor
            )

    # --- one frame of an open document -----------------------------------------------------

    def handle_frames(self, peer: DocPeer, room: Room, frames: list[H.Frame]) -> None:
        """Handle `frames` of an open document in order, until one closes it; those
        after an auth message (a renewal) wait for its outcome (peer.renewing)."""
        try:
            for i, frame in enumerate(frames):
                if peer.room is not room:
                    break
                if peer.renewing is not None:
                    # (read before: their bound was checked then, and they were given back)
                    peer.renewing.extend(frames[i:])
                    self.held += sum(held_cost(f) for f in frames[i:])
                    break
                self.handle_frame(peer, room, frame)
        except PalimpsestError as e:
            self.close_doc(peer, e)

    def handle_frame(self, peer: DocPeer, room: Room, frame: H.Frame) -> None:
        t = frame.type
        if t in (H.SYNC, H.SYNC_REPLY):
            msg = H.decode_sync(frame.body)
            if isinstance(msg, P.SyncStep1):
                refuse_stale_copy(room, msg.state_vector)
                if t == H.SYNC:  # a sync reply's step 1 wants the step 2 only
                    # (leaving out what its step 2s may not carry: server.resync)
                    peer.resync.sent_step1 = True
                    peer.send(P.encode_sync_step1(peer.resync.state_vector(room.doc.get_state())))
                room.answer_sync_step1(peer, msg.state_vector)
            else:
                self.update(peer, room, msg.update, step2=isinstance(msg, P.SyncStep2))
        elif t == H.AWARENESS:
            # each document's presence share is its own (a socket may carry 256 of them,
            # each provider with a Yjs client id of its own)
            presence = H.decode_awareness(frame.body)
            entries = peer.guard.presence.admit(room, presence, peer.id)
            room.note_presence(peer.id, presence)  # (the first says whose it is)
            if entries:
                room.receive_awareness(peer, entries)
            if peer.guard.presence.refund(room):
                self.guard.refund_message()  # (the socket's: every document's frames count)
        elif t == H.QUERY_AWARENESS:
            room.send_awareness(peer)
        elif t == H.STATELESS:
            body = H.parse_request(H.decode_string(frame.body, "stateless payload"))
            if body is not None:
                self.spawn(self.request(peer, room, body))
        elif t == H.BROADCAST_STATELESS:
            payload = H.decode_string(frame.body, "stateless payload")
            # what the server answers requests with: relayed, a reader could answer
            # everyone's undo requests in the server's name
            H.check_broadcast(payload)
            self.broadcast_stateless(room, payload)
        elif t == H.CLOSE:
            self.leave(peer)
            self.client_closed(peer.doc)
        elif t == H.SYNC_STATUS:
            raise ProtocolError("sync status messages go from the server to clients")
        elif t == H.AUTH:
            token = H.decode_auth(frame.body).token
            peer.renewing = []
            self.spawn(self.refresh(peer, token))

    async def refresh(self, peer: DocPeer, token: str) -> None:
        """An auth message on an open document: a fresh token for the same user renews
        the document's session (its expiry, its role), answered Authenticated; the
        provider sends one with ``sendToken()``, so a short-lived token is replaced
        before its document closes. A token refused, or one for another user, closes the
        document (PermissionDenied with the reason) until a new auth message.

        The frames read after it wait meanwhile (peer.renewing), as those before a
        document's first auth message do, and are judged under its outcome (an update
        sent in the same burst as a read-only token, or as one no longer granting the
        document, used to be taken under the old session, and saved)."""
        try:
            conn = self.credentials(token, peer.doc)
            identity = await self.backend.authenticate(conn, peer.doc, "read")
            if identity.user != peer.identity.user:
                raise Forbidden(
                    f"a token of {identity.user!r} cannot renew {peer.identity.user!r}'s session"
                )
        except PalimpsestError as e:
            if self.docs.get(peer.doc) is peer:
                if held_back(e.close_code):  # (held back as close_doc's are)
                    peer.repeated = not self.backend.repeat_lines.refused(
                        self.who_of(peer), e.close_code, str(e)
                    )
                (log.debug if peer.repeated else log.info)(
                    "%s: refused renewing %r: %s", self.id, peer.doc, e
                )
                self.backend.refused(reason_of(e))
                self.shut(peer)
                self.send(H.encode_permission_denied(peer.doc, str(e)))
            return
        if self.docs.get(peer.doc) is not peer:
            return  # closed meanwhile
        upgraded = identity.can_write and not peer.identity.can_write
        peer.renew(identity, ConnectionGuard(self.backend, self.backend.settings, identity,
                                             peer.doc, self.host))  # fmt: skip
        self._watch_doc_expiry(peer)
        self.send(H.encode_authenticated(peer.doc, read_only=not identity.can_write))
        if upgraded and peer.room is not None and peer.resync.may_write():
            # a reader's edits were refused, and its provider holds them: asked for (its
            # step 2, not counted by it, stands for them), else its next edit, past
            # their gap, was dropped and nothing asked for the step 2 that carries it
            log.info("%s: %r may be written now: asking for the edits refused as a "
                     "reader's", self.id, peer.doc)  # fmt: skip
            self.ask_sync(peer, peer.room)
        held, peer.renewing = peer.renewing or [], None
        self.unhold(held)
        if peer.room is not None:
            self.handle_frames(peer, peer.room, held)

    def update(self, peer: DocPeer, room: Room, update: bytes, *, step2: bool) -> None:
        if peer.identity.expired():  # by the wall clock now, before the timer notices
            self._expire_doc(peer)
            return
        if not peer.identity.can_write or lock_of(room) is not None:
            # (a locked document answers every token as a read-only one: server.locking)
            # Hocuspocus's read-only answer: saved only when it changes nothing (a step 2
            # of a reader who has not edited; an echo), refused otherwise
            saved = update == EMPTY_UPDATE or not _adds_anything(room, update)
            uncounted = step2 and peer.resync.uncounted
            if uncounted:
                peer.resync.uncounted = False
            locked = peer.identity.can_write
            if step2:
                peer.resync.refused_step2()
            if not saved:
                self.backend.refused("locked" if locked else "read_only")
                peer.resync.locked_out = locked
                # (a reader's too: a write token may replace its token, `refresh`)
                peer.resync.read_only_out = not locked
                if not step2:
                    # counted by the provider: the step 2 after the unlock (or a write
                    # token) carries it (server.resync), and its sync status says so;
                    # and claims its ids
                    peer.resync.dropped += 1
                    peer.resync.refused_plain(update)
            elif uncounted:
                return  # a step 2 the provider does not wait for (sync_reopened)
            self.send(H.encode_sync_status(peer.doc, saved))
            return
        creating = self.admit_update(room, update, peer.guard, peer.client, step2=step2)
        own = peer.resync.own(room.announced(peer.id)) if step2 else None
        try:
            logged = room.receive_update(
                peer.author, update, reply_to_step1=step2, own=own, conn=peer.id
            )
        except ForeignItems as e:
            if not step2:
                raise
            # other tabs' edits, on their way from their owners: asked again without
            # them (or refused, when our request left them out already): server.resync
            peer.resync.foreign(e)
            log.info("%s: a step 2 of %r with other users' edits (client ids %s) held; "
                     "asking again without them", self.id, peer.doc, e.clients)  # fmt: skip
            self.ask_sync(peer, room)
            return
        except UpdateGap as e:
            if step2 and peer.resync.hold(e):
                log.info("%s: a step 2 of %r waits for another user's edits: %s",
                         self.id, peer.doc, e.detail)  # fmt: skip
                take_ready_part(room, peer.author, update, own or frozenset(), peer.id)
                self.spawn(peer.resync.wait(room, partial(self.ask_sync, peer, room),
                                            partial(self.overdue, peer)))  # fmt: skip
                return
            self.gap(peer, room, e, update, step2=step2)
            return
        if logged and creating:
            peer.guard.created()
        if step2:
            owed = peer.resync.step2(room)
            settle_held(room, peer.id)
            if owed > 0:  # the updates it carries that were dropped before it (gap)
                self.spawn(self.saved_after_flush(peer, room, owed))
            elif owed < 0:  # a step 2 the provider does not wait for (sync_reopened)
                peer.author.skip += 1
        if not logged:
            # nothing to log: saved as soon as everything this client sent before is
            self.spawn(self.saved_after_flush(peer, room))

    def gap(self, peer: DocPeer, room: Room, gap: UpdateGap, update: bytes, *, step2: bool) -> None:
        """An update that starts past what the document holds (or names items it does
        not): what it builds on was lost, e.g. written into a connection that died
        half-open. The provider still holds all of it, so the document stays open (a
        close message would leave a 3.x provider connected and never re-opening it, and
        a 2.x provider cannot read one) and the update is dropped (server.resync):

        - before the document's sync step 2: it was typed while the provider was
          offline and queued, and that step 2 (its answer to our step 1) carries it, as
          on /ws. Its sync status goes out once that step 2 is durable.
        - after it: the server asks for a re-sync with a sync step 1; the provider's
          answer, a step 2, carries it, and that step 2's sync status stands for it
          (for those dropped while it was on its way, theirs once it is durable)."""
        if not peer.resync.gap(gap, update, step2=step2):
            log.debug("%s: an update past a gap dropped (%s)", peer.id, gap)
            return
        # (once per document at INFO: a client that keeps sending gaps would fill the log)
        say = log.info if peer.resync.asks == 1 else log.debug
        say("%s: asking %r for a re-sync: %s", self.id, peer.doc, gap.detail)
        self.ask_sync(peer, room)

    def ask_sync(self, peer: DocPeer, room: Room) -> None:
        """Send a sync step 1 of `peer`'s document (a re-sync request), if still open."""
        if peer.room is room:
            peer.send(P.encode_sync_step1(peer.resync.state_vector(room.doc.get_state())))

    def overdue(self, peer: DocPeer, gap: UpdateGap) -> None:
        """A step 2 has waited OVERDUE_SECONDS for another user's edits: said in the
        log (the provider's unsynced changes stay above 0 meanwhile: not saved)."""
        log.warning("%s: %r (%s): %s", self.id, peer.doc, peer.actor, overdue_words(gap))
        self.backend.refused("waits_for_other_users_edits")
        if peer.room is not None:
            self.send(H.encode_sync_status(peer.doc, False))

    async def saved_after_flush(self, peer: DocPeer, room: Room, times: int = 1) -> None:
        try:
            await room.flush()
        except StoreError:
            return  # the room is reloading and has closed its peers
        if peer.room is room:
            for _ in range(times):
                peer.author.saved()

    async def request(self, peer: DocPeer, room: Room, body: dict[str, Any]) -> None:
        answer = await extension_answer(
            self.backend,
            room,
            peer.client,
            body,
            flush=room.flush,
            charge=self.charge,
            session=peer.author.id,  # (its edits are logged as its author's)
        )
        self.send(H.encode_json(peer.doc, answer))

    def broadcast_stateless(self, room: Room, payload: str) -> None:
        for other in list(room.peers.values()):
            if isinstance(other, DocPeer):  # y-websocket clients have no stateless messages
                other.sock.send(H.encode_stateless(other.doc, payload))

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _starts_sync(frame: H.Frame) -> bool:
    """A sync step 1 of the client: how a provider starts a document (its socket
    opened); the sync follows it, the server's step 1 and step 2 answering it."""
    return frame.type == H.SYNC and frame.body[:1] == b"\x00"


def _owed_after(owed: int, frames: list[H.Frame]) -> int:
    """The sync statuses a provider waits for once `frames` of its document are
    dropped, `owed` before them: each update counts one (``unsyncedChanges``), a sync
    step 1 sets the count to one (the provider's ``startSync``: its step 2 to come);
    step 2s it sends in answer to ours it does not count."""
    for frame in frames:
        if frame.type == H.SYNC and frame.body[:1] == b"\x02":
            owed += 1
        elif _starts_sync(frame):
            owed = 1
    return owed


def _owed(peer: DocPeer) -> int:
    """The sync statuses `peer`'s provider still waits for of what the server dropped
    as it closes: the updates dropped past a gap, and the count its sync step 1 set
    when its step 2 has not come yet (not one answering a step 1 of ours it did not
    count, or a re-sync request, whose dropped update stands for it)."""
    r = peer.resync
    unanswered = r.sent_step1 and not r.stepped and not r.uncounted and r.asked is None
    # (and those of the updates read while a renewal was decided, dropped with it)
    return _owed_after(r.dropped + unanswered, peer.renewing or [])


def _reopens(frame: H.Frame) -> bool:
    """Whether a frame opens a document the client closed: an auth message, or a sync
    step 1 (how every provider starts a document: a 2.x provider without a token sends
    no auth message)."""
    return frame.type == H.AUTH or _starts_sync(frame)


async def hocuspocus_endpoint(ws: WebSocket) -> None:
    backend: Backend = ws.app.state.backend
    host = ws.client.host if ws.client else "unknown"
    client = Client(client_id(backend), "*", SOCKET_IDENTITY, host)
    # (a socket refused several times just now is refused at the handshake: the
    # provider then backs off, up to 30 s, where it came back every second)
    key = request_key(ws)
    if await refused_again(ws, backend, key, f"a hocuspocus socket from {host}"):
        return
    try:
        passed = await backend.extensions.connect(client)
    except PalimpsestError as e:
        log.warning("refused hocuspocus socket from %s: %s", host, e)
        backend.refused(reason_of(e))
        count_refusal(backend, key, e)
        await refuse_error(ws, e)
        return
    try:
        await ws.accept(subprotocol=offered(ws))
        sock = HocuspocusSocket(ws, backend, client)
        # (at DEBUG while this address's socket refusals repeat: server.repeat_logs)
        say = log.debug if backend.repeat_lines.connecting(sock.who) else log.info
        say("connect %s (hocuspocus)", sock.id)
        try:
            await sock.serve()
        finally:
            said_closed(backend, client, sock.closed_as(), " (hocuspocus)", sock.repeated)
    finally:
        await backend.extensions.disconnect(client, passed)


routes = [WebSocketRoute("/hocuspocus", hocuspocus_endpoint)]
