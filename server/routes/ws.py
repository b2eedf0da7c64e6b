"""The websocket endpoint: one Connection per socket, read eagerly, written straight to
the socket while it keeps up (``wire_write``) and through a bounded queue when it does
not, so that a slow client never stalls anyone else."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pycrdt import get_state
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import cpu_account, subdoc_options
from .. import protocol as P
from ..auth import ExpiryWatch
from ..auth.tokens import token_of
from ..backend import Backend
from ..closes import (
    KEEPALIVE_TIMEOUT,
    Closed,
    cause_of_client,
    cause_of_code,
    cause_of_error,
    library_refused,
    server_closed,
)
from ..conn_guard import ConnectionGuard
from ..deletion import refuse_stale_copy
from ..errors import (
    FATAL,
    AuthError,
    DocNameError,
    ExtensionFailed,
    ForeignItems,
    FrameTooLarge,
    LogDamaged,
    PalimpsestError,
    ProtocolError,
    RateLimited,
    StoreError,
    StoreUnavailable,
    TooManyConnections,
    UpdateGap,
    UpdateRejected,
)
from ..extensions import Client, OpContext
from ..keepalive import keepalive_cut
from ..limits import Limits, frame_limit
from ..locking import lock_of, refusal
from ..logs import INSTANCE
from ..names import validate_doc_name
from ..protocol import sync_update_of
from ..repeat_refusals import counted_after_open, held_back, request_key
from ..resync import HeldSteps, Resync, overdue_words
from ..room import EMPTY_UPDATE, Room
from ..updates import ReadAhead, not_v1, read_ahead, unsupported
from ..util import close_reason
from .wire_write import detach_reader, direct_reader, direct_writer, protocol_of, wake_reader

log = logging.getLogger("palimpsest.ws")

_ids = itertools.count(1)

#: seconds a closing connection may take to flush before its socket is aborted
CLOSE_GRACE = 2.0
#: seconds after a document's load failed for a store that is unavailable in which
#: /ws refuses a document that is not loaded at the handshake, with HTTP 503 and
#: Retry-After: an accepted socket closed with 1013 made y-websocket reset its back-off
#: and come back ~7 times a second; a refused handshake makes it back off (to 2.5 s).
#: The first request past it tries the load again (a probe); a load that succeeds
#: ends it at once. Documents loaded here are served all along.
STORE_DOWN_SECONDS = 2.0
#: the address and user of the "cannot load" lines' repeats: said per document
ANY = ("any address", "any user")


def adds_anything(room: Room, update: bytes) -> bool:
    """Whether `update` would change `room`'s document (the no-op rule); UpdateRejected
    when it does not decode."""
    try:
        get_state(update)
    except FATAL:
        raise
    except BaseException as e:  # pyo3 PanicException is one
        raise UpdateRejected(
            unsupported(update) or not_v1(update, f"update does not decode: {e}")
        ) from e
    return room._adds_anything(update)


@dataclass
class _Parts:
    """The parts of one update announced, as they come (Connection._parts)."""

    nbytes: int
    count: int
    updates: list[bytes] = field(default_factory=list)
    received: int = 0
    step2: bool = False


class Connection:
    """A Peer of a room, over a starlette WebSocket."""

    def __init__(
        self, ws: WebSocket, backend: Backend, client: Client, opened: float | None = None
    ) -> None:
        """`opened`: when the socket was accepted (time.monotonic()), which its
        duration counts from: its room may have waited for the store since."""
        self.ws = ws
        self.backend = backend
        self.client = client
        self.identity = client.identity
        self.actor = client.identity.user
        self.doc = client.doc
        self.id = client.id
        self.ext = False  # opted in to extension messages
        settings = backend.settings
        # (frame, bytes reserved in the address/room budget, is a sync step 2 answer).
        # Made, with the sender task that empties it, only when a frame cannot go straight
        # to the socket, or at the close (_queue_for_sending): an idle connection whose
        # socket keeps up has neither (an asyncio.Queue and a task with its coroutine are
        # a good part of what a connection would otherwise hold, bench/conn_memory.py)
        self._queue: asyncio.Queue[tuple[bytes, int, bool] | None] | None = None
        # a backlog bigger than a whole document is worse than a re-sync
        self._queued_bytes = 0
        self._max_queued_bytes = settings.max_send_queue_bytes
        self.host = client.address
        #: whose refusals' log lines are held back when they repeat (server.repeat_logs)
        self.who = (client.doc, client.address, client.identity.user)
        #: this connection's refusal was a repeat: its lines went to DEBUG
        self.repeated = False
        self.guard = ConnectionGuard(backend, settings, client.identity, client.doc, self.host)
        # Answers are private to this connection (a broadcast frame is one object shared
        # by every queue), so they are what a client can multiply: they also count
        # against its address and its document (self.guard.reserve).
        self._answering = False
        self._answers_queued = 0
        #: what an update past a gap gets: dropped, made good by a sync step 2
        self.resync = Resync()
        #: the parts of an update announced ({"type": "parts"}) held until the last comes
        self._parts_held: _Parts | None = None
        self._close: tuple[int, str] | None = None
        #: why this side closed (closes.CAUSES), when it said so where it closed
        self._cause: str | None = None
        #: the close code and reason the client sent (1006: the socket went without one)
        self._client_close: tuple[int, str] | None = None
        self._client_cause = "client_closed"
        self._opened = time.monotonic() if opened is None else opened
        #: the sender task, from the first frame queued (or the close) on; its end is the
        #: connection's: the close frame sent (or the socket gone)
        self._sender: asyncio.Task[None] | None = None
        #: the abort CLOSE_GRACE after close(), cancelled once the sender has closed: it
        #: held the connection (its socket, scope, room and guard) that long after a
        #: clean close, every connection of a wave closing together at once
        self._grace: asyncio.TimerHandle | None = None
        #: writes a frame synchronously when the socket is writable (None: not uvicorn's
        #: sansio protocol, every frame goes through the queue and the sender task)
        self._direct = direct_writer(ws)
        #: the sender task holds a frame it is writing (the queue may look empty)
        self._sending = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._expiry: ExpiryWatch | None = None
        #: what the direct reader could not handle, for the reading task to raise
        #: a message was refused under the direct reader: the next are dropped (read())
        self._refusing = False
        #: messages the direct reader handled (the rest came through ws.receive())
        self.direct_messages = 0
        #: while a large sync step 2 is read in a worker thread (_read_ahead): the frames
        #: that came after it, handled once it is
        self._later: list[bytes] | None = None
        #: frames of message types the server ignores (ignore())
        self.ignored_frames = 0

    # --- Peer ---------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if self._close is not None:
            return
        # nothing waits before it: straight to the socket, in order, no task in between
        if (
            self._direct is not None
            and not self._sending
            and (self._queue is None or self._queue.empty())
            and self._direct(frame)
        ):
            return
        reserved = 0
        if self._answering:
            over = self.guard.reserve(len(frame))
            if over is not None:
                log.warning("%s: answers queued for %s over budget, dropping", self.id, over)
                self.backend.refused("send_budget_overflow")
                self.close(1013, "server busy: too much queued for your address or document",
                           cause="slow_client")  # fmt: skip
                return
            reserved = len(frame)
        if self._queued_bytes + len(frame) > self._max_queued_bytes:
            log.warning(
                "%s: send queue over %d bytes, dropping the connection",
                self.id,
                self._max_queued_bytes,
            )
            self.guard.release(reserved)
            self.backend.refused("send_queue_overflow")
            self.close(1013, "send queue overflow: reconnect and re-sync", cause="slow_client")
            return
        answer = self._answering and frame[:2] == _STEP2
        try:
            self._queue_for_sending().put_nowait((frame, reserved, answer))
            self._queued_bytes += len(frame)
            self._answers_queued += answer
        except asyncio.QueueFull:
            self.guard.release(reserved)
            log.warning("%s: send queue overflow, dropping the connection", self.id)
            self.backend.refused("send_queue_overflow")
            self.close(1013, "send queue overflow: reconnect and re-sync", cause="slow_client")

    def close(self, code: int, reason: str, cause: str | None = None) -> None:
        """Close with `code` and `reason`; `cause` (one of closes.CAUSES) is what the
        disconnect is counted as, told from the code when not given."""
        if self._close is not None:
            return
        self._close = (code, close_reason(reason))
        self._cause = cause
        # wake the sender, which sends what is queued before this point, then closes
        queue = self._queue_for_sending()
        try:
            queue.put_nowait(None)
        except asyncio.QueueFull:
            # drop the backlog: the client re-syncs anyway
            self._drain()
            queue.put_nowait(None)
        if not self.closed:
            self._grace = asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort_if_stuck)

    def _queue_for_sending(self) -> asyncio.Queue[tuple[bytes, int, bool] | None]:
        """The send queue, and its sender task running (both made on first use)."""
        queue = self._queue
        if queue is None:
            queue = self._queue = asyncio.Queue(self.backend.settings.send_queue_frames)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop(), name=f"send:{self.id}")
        return queue

    @property
    def queued_frames(self) -> int:
        """Frames waiting to be sent, the one being written included."""
        return (self._queue.qsize() if self._queue is not None else 0) + self._sending

    @property
    def closed(self) -> bool:
        """The close frame was sent (or the socket is gone): the sender task has ended."""
        return self._sender is not None and self._sender.done()

    async def wait_closed(self) -> None:
        """Until `closed` (after close(): the sender task sends the close frame). As
        waiting on an event would, a cancellation here leaves the sender running."""
        sender = self._sender
        assert sender is not None, "close() first"
        await asyncio.shield(sender)

    def _drain(self) -> None:
        queue = self._queue
        while queue is not None and not queue.empty():
            item = queue.get_nowait()
            if item is not None:
                self.guard.release(item[1])
        self._queued_bytes = 0
        self._answers_queued = 0

    def _abort_if_stuck(self) -> None:
        """A client that stopped reading fills its socket, so neither the frame being sent
        nor the close frame can go out, and the socket would stay open for as long as the
        client keeps the TCP connection alive. Abort it; the reader then sees the disconnect."""
        if self.closed:
            return
        # uvicorn's protocol object is the ASGI receive callable's owner (starlette wraps
        # send, not receive); without it the keepalive ping timeout ends the connection
        protocol = protocol_of(self.ws)
        transport = getattr(protocol, "transport", None)
        abort = getattr(transport, "abort", None)
        if callable(abort):
            log.warning("%s: the client does not read; aborting its connection", self.id)
            self._cause = "slow_client"
            abort()

    # --- loops ----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        queue = self._queue
        assert queue is not None
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                frame, reserved, answer = item
                self._queued_bytes -= len(frame)
                self._answers_queued -= answer
                self._sending = True
                try:
                    await self.ws.send_bytes(frame)
                finally:
                    self._sending = False
                    self.guard.release(reserved)
        except Exception:  # the socket went away: the reader sees the disconnect
            pass
        finally:
            self._drain()
            code, reason = self._close or (1000, "")
            if self.ws.application_state == WebSocketState.CONNECTED:
                try:
                    await self.ws.close(code, reason)
                except Exception:
                    pass
            if self._grace is not None:  # closed: nothing left to abort
                self._grace.cancel()
                self._grace = None

    def charge(self, nbytes: int) -> None:
        """Bytes written on this client's behalf (undo, redo) count against its rate."""
        self.guard.charge(nbytes)

    def handle(self, room: Room, frame: bytes) -> None:
        """Handle one frame synchronously: decode, then hand it to the room (never waits)."""
        if self._expire_if_over():
            return
        limit = frame_limit(self.backend.settings, frame[:2] in _UPDATE_FRAMES)
        if len(frame) > limit:
            raise FrameTooLarge(f"frame of {len(frame)} bytes is over the limit of {limit}")
        self.guard.check_rate(len(frame))
        if self._later is not None:
            self._later.append(frame)  # (in order, after the update read ahead)
            return
        update = sync_update_of(frame)
        if update is not None:  # the commonest frame, read without a message object
            self._receive_update(room, update, False)
            return
        ignored = P.ignored_type(frame)
        if ignored is not None:
            self.ignore(ignored, len(frame))
            return
        msg = P.decode(frame)
        if isinstance(msg, P.SyncStep1):
            if self._answers_queued:
                # the answer still queued plus the updates broadcast after it already
                # bring this client up to date: answering again only multiplies memory
                return
            refuse_stale_copy(room, msg.state_vector)
            self._answering = True
            try:
                room.answer_sync_step1(self, msg.state_vector)
            finally:
                self._answering = False
        elif isinstance(msg, P.SyncStep2 | P.SyncUpdate):
            self._receive_update(room, msg.update, isinstance(msg, P.SyncStep2))
        elif isinstance(msg, P.AwarenessUpdate):
            entries = self.guard.presence.admit(room, msg.payload, self.id)
            room.note_presence(self.id, msg.payload)  # (the first says whose it is)
            if entries:
                room.receive_awareness(self, entries)
            if self.guard.presence.refund(room):
                self.guard.refund_message()
        elif isinstance(msg, P.QueryAwareness):
            self._answering = True
            try:
                room.send_awareness(self)
            finally:
                self._answering = False
        elif isinstance(msg, P.Extension):
            self.ext = True
            if msg.body.get("type") == "parts":
                self._parts(room, msg.body)  # in order with the updates, never waits
                return
            task = asyncio.create_task(self._extension(room, msg.body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def ignore(self, mtype: int, nbytes: int) -> None:
        """A frame of a message type the server ignores (protocol.ignored_type), already
        counted against the connection's rates: counted by type, and said once per
        connection at INFO (a client that sends it again and again would fill the log),
        then at DEBUG."""
        self.backend.extensions.ignored("ws", P.type_label(mtype))
        say = log.debug if self.ignored_frames else log.info
        self.ignored_frames += 1
        what = "an auth message" if mtype == P.MSG_AUTH else f"a frame of message type {mtype}"
        say("%s (%s on %s): ignored %s (%d bytes): the server reads 0 (sync), "
            "1 (awareness), 3 (query awareness) and %d (extension) from clients",
            self.id, self.actor, self.doc, what, nbytes, P.MSG_EXTENSION)  # fmt: skip

    def _parts(self, room: Room, body: dict[str, Any]) -> None:
        """``{"type": "parts", "bytes": N, "count": K}``: the next K updates are the parts
        of one update of N bytes in all. They are held here, then handed to the room
        merged, as one update: the size limit judges it whole, and a connection that
        ends before the last part leaves nothing of them in the document (a paste was
        kept as a prefix cut mid-line). No answer: a refusal closes 4413."""
        nbytes, count = body.get("bytes"), body.get("count")
        for value in (nbytes, count):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProtocolError('"parts" needs "bytes" and "count", whole numbers from 1')
        assert isinstance(nbytes, int) and isinstance(count, int)
        if self._parts_held is not None:
            raise ProtocolError("parts announced before the last ones all came")
        limit = self.backend.settings.max_doc_bytes
        if nbytes > limit or count > nbytes:
            raise FrameTooLarge(f"none of an update sent in parts was applied: {nbytes} bytes "
                                f"are over the document's limit of {limit}")  # fmt: skip
        if not self.identity.can_write or lock_of(room) is not None:
            return  # (its updates are refused one by one, as any)
        limits = self.backend.extension(Limits)
        if limits is not None:
            limits.check_parts(room, nbytes)
        self._parts_held = _Parts(nbytes, count)

    def _whole(self, update: bytes, step2: bool) -> tuple[bytes, bool] | None:
        """`update` as a part of announced parts: None while more are to come, then all of
        them merged (and whether the first was a sync step 2, as the client's first part
        of its answer to our step 1 is)."""
        held = self._parts_held
        assert held is not None
        held.updates.append(update)
        held.step2 = held.step2 or step2
        held.received += len(update)
        if held.received > held.nbytes:
            raise ProtocolError(f"the parts are larger than the {held.nbytes} bytes announced")
        if len(held.updates) < held.count:
            return None
        self._parts_held = None
        if len(held.updates) == 1:
            return held.updates[0], held.step2
        try:
            return subdoc_options.merge(*held.updates), held.step2
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            raise UpdateRejected(f"the parts announced do not make one update: {e}") from e

    def _receive_update(self, room: Room, update: bytes, step2: bool) -> None:
        if not self.identity.can_write:
            if update != EMPTY_UPDATE:
                self.backend.refused("read_only")
                self.send(P.encode_permission_denied("read-only: your edits are not accepted"))
            return
        lock = lock_of(room)
        if lock is not None:
            # refused as a read-only token's edit is (server.locking), whole: the parts
            # of one held are dropped with it; one that adds nothing (a reconnecting
            # reader's step 2) changes nothing, and is dropped without a word
            self._parts_held = None
            if step2:
                self.resync.refused_step2()
            if update != EMPTY_UPDATE and adds_anything(room, update):
                self.resync.locked_out = True
                if not step2:
                    self.resync.refused_plain(update)
                self.backend.refused("locked")
                self.send(P.encode_permission_denied(refusal(lock)))
            return
        if self._parts_held is not None:
            whole = self._whole(update, step2)
            if whole is None:
                return
            update, step2 = whole
        if (
            step2
            and len(update) > READ_AHEAD_BYTES
            and room.empty
            and not isinstance(update, ReadAhead)
        ):
            # a whole document brought into an empty one (not capped: Room.check_new_
            # clients): read in a worker thread, not on the loop, the frames after it held
            self._later = []
            task = asyncio.create_task(self._read_ahead(room, update))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        creating = self.admit_update(room, update, self.guard, step2=step2)
        try:
            own = self.resync.own(room.announced(self.id)) if step2 else None
            if room.receive_update(self, update, reply_to_step1=step2, own=own) and creating:
                self.guard.created()
        except ForeignItems as e:
            if not step2:
                raise
            # other tabs' edits, on their way from their owners (resync.py): asked again
            # without them (or refused, when our request left them out already)
            self.resync.foreign(e)
            log.info("%s (%s on %s): a step 2 with other users' edits (client ids %s) "
                     "held; asking again without them", self.id, self.actor, self.doc,
                     e.clients)  # fmt: skip
            self._ask_sync(room)
            return
        except UpdateGap as e:
            if step2 and self.resync.hold(e):
                # built on another user's edits still on their way: what of it does not
                # is taken now, the rest asked for again once the document holds them
                log.info("%s (%s on %s): a step 2 waits for another user's edits: %s",
                         self.id, self.actor, self.doc, e.detail)  # fmt: skip
                take_ready_part(room, self, update, self.resync.own(room.announced(self.id)))
                task = asyncio.create_task(
                    self.resync.wait(room, partial(self._ask_sync, room), self._overdue)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            if not self.resync.gap(e, update, step2=step2):
                # typed while connecting (its step 2, the answer to ours, carries it), or
                # past a re-sync asked for already (whose step 2 carries it)
                log.debug("%s: an update past a gap dropped (%s)", self.id, e)
                return
            # (at INFO once per connection: a client that keeps sending gaps would fill
            # the log)
            say = log.info if self.resync.asks == 1 else log.debug
            say("%s (%s on %s): asking for a re-sync: %s", self.id, self.actor, self.doc, e.detail)
            self._ask_sync(room)
            return
        if step2:
            self.resync.step2(room)
            settle_held(room, self.id)

    def unlocked(self, room: Room) -> None:
        """`room`'s document was unlocked (server.locking): a re-sync asked for when the
        lock refused edits of this connection (Resync.unlocked)."""
        if self.resync.unlocked():
            log.debug("%s (%s on %s): unlocked: asking for a re-sync", self.id, self.actor,
                      self.doc)  # fmt: skip
            self._ask_sync(room)

    def _ask_sync(self, room: Room) -> None:
        """Send the client a sync step 1 (a re-sync request: its step 2 answers it)."""
        self._answering = True
        try:
            self.send(P.encode_sync_step1(self.resync.state_vector(room.doc.get_state())))
        finally:
            self._answering = False

    def _overdue(self, gap: UpdateGap) -> None:
        """A step 2 has waited OVERDUE_SECONDS for another user's edits: say so."""
        why = overdue_words(gap)
        log.warning("%s (%s on %s): %s", self.id, self.actor, self.doc, why)
        self.backend.refused("waits_for_other_users_edits")
        self.send(P.encode_permission_denied(why))
        if self.ext:
            self.send(P.encode_extension({"type": "error", "reason": why}))

    async def _read_ahead(self, room: Room, update: bytes) -> None:
        """A large sync step 2 into an empty document: read in a worker thread, then
        handled as what that reading returned (updates.ReadAhead: the room's path takes
        what was found from it instead of reading it again on the loop), then the frames
        that came meanwhile, in order."""
        try:
            ahead = await cpu_account.to_thread(read_ahead, update)
            if self._close is not None:
                return
            later, self._later = self._later or [], None
            self._receive_update(room, ahead, True)
            for i, frame in enumerate(later):
                self.handle(room, frame)
                if self._later is not None:  # another one read ahead: the rest after it
                    self._later[:0] = later[i + 1 :]
                    break
        except WebSocketDisconnect:
            pass
        except PalimpsestError as e:
            self._later = None
            self._refusing = True  # (the frames still to come are dropped: read())
            self._refuse(e)

    def admit_update(
        self,
        room: Room,
        update: bytes,
        guard: ConnectionGuard,
        client: Client | None = None,
        *,
        step2: bool = False,
    ) -> bool:
        """Raise unless `guard`'s identity may send `update` now: the extensions'
        on_update (document size, …), the quota of new documents, the cap on new client
        ids (Room.check_new_clients; `step2`: it answers our sync step 1). The frame was already
        charged against the rate. `client`: the document's, when one socket serves
        several (Hocuspocus). True when the update would create the document: the
        caller counts it (guard.created) once the room took it, so that an update
        refused there (it does not decode, it forges items) creates nothing."""
        if update == EMPTY_UPDATE:
            return False
        room.check_new_clients(
            update, self.backend.settings.max_new_clients_per_update, step2=step2
        )
        self.backend.extensions.update(room, client or self.client, update)
        if room.seq == 0 and not room.queued_bytes:
            guard.check_creation()
            return True
        return False

    async def _extension(self, room: Room, body: dict[str, Any]) -> None:
        answer = await extension_answer(
            self.backend, room, self.client, body, flush=room.flush, charge=self.charge
        )
        self._answering = True
        try:
            self.send(P.encode_extension(answer))
        finally:
            self._answering = False

    async def serve(self, room: Room) -> None:
        """Read every frame as soon as it arrives until the client goes away."""
        self._watch_expiry()
        self._answering = True
        try:
            self.guard.presence.joining(room)
            room.join(self)
        finally:
            self._answering = False
        try:
            await self.read(partial(self.handle, room))
        except WebSocketDisconnect as e:
            self.client_went(e.code, e.reason or None)
        except PalimpsestError as e:
            self._refuse(e)
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None
            room.leave(self)
            held_left(room, self.id, self.actor)
            self.backend.rooms.release(room)
            self.close_after_client()
            await self.wait_closed()
            detach_reader(self.ws)  # (else a cycle keeps the socket's memory: wire_write)
            for task in list(self._tasks):
                task.cancel()

    def _refuse(self, e: PalimpsestError) -> None:
        """Close the connection for what one of its frames brought on. A refusal for good
        (44xx) said for this address, user and document within the minute is said at
        DEBUG, counted (server.repeat_logs): a provider sends the refused update again on
        every reconnect, ten times a second."""
        if held_back(e.close_code):
            self.repeated = not self.backend.repeat_lines.refused(self.who, e.close_code, str(e))
        say = log.debug if self.repeated else log.info
        if isinstance(e, ProtocolError | UpdateRejected | FrameTooLarge | StoreError | RateLimited):
            say("%s (%s on %s): closing with %d: %s",
                self.id, self.actor, self.doc, e.close_code, e)  # fmt: skip
            self._refused(e)
            if isinstance(e, UpdateRejected | ProtocolError) and self.ext:
                self.send(P.encode_extension({"type": "error", "reason": str(e)}))
        else:
            say("%s: closing with %d: %s", self.id, e.close_code, e)
            self._refused(e)
        self.close(e.close_code, str(e), cause_of_error(e))

    def client_went(self, code: int | None, reason: str | None) -> None:
        """The client closed (or its socket went): the code and reason the ASGI server
        reported (reason None: no close frame came, closes.cause_of_client)."""
        if self._client_close is None:
            code = code if isinstance(code, int) else 1006
            self._client_close = (code, reason or "")
            if reason is None and keepalive_cut(protocol_of(self.ws)):
                # the server's keepalive closed it (uvicorn reports 1005, as if the
                # client went): logged "cause=connection_lost code=1005 … (closed by
                # the client …)" after 40 s of no answer
                self.close(*KEEPALIVE_TIMEOUT, "keepalive_timeout")
                return
            if server_closed(code, reason):  # the ASGI server's, at its shutdown
                self.close(code, "server shutting down", "server_shutdown")
                return
            refused = library_refused(code, reason)
            if refused is not None:  # websockets refused its frame, and closed
                self.close(code, reason or "", refused)
                return
            self._client_cause = cause_of_client(code, reason is not None)

    def close_after_client(self) -> None:
        """At the end of serve(): close with 1000 unless this side closed already (the
        client went away first)."""
        if self._close is None:
            if self._client_close is None:
                self.client_went(None, None)
            self.close(1000, "", self._client_cause)

    def closed_as(self) -> Closed:
        """How this connection ended (once serve() has returned)."""
        seconds = time.monotonic() - self._opened
        server = self._close or (1000, "")
        client = self._client_close
        by_client = client is not None and self._cause in ("client_closed", "connection_lost")
        if by_client and client is not None:
            return Closed(self._cause or "client_closed", client[0], client[1], seconds, True)
        cause = self._cause or cause_of_code(*server)
        return Closed(cause, server[0], server[1], seconds, False)

    def _refused(self, e: PalimpsestError) -> None:
        """Count a refusal after the socket opened; towards the handshake hold only when
        the request brings it on (counted_after_open: 4404, its document was deleted),
        not for a frame this connection sent (4400, 4403, 4413): another tab of the same
        user sends the same request and was held back with it."""
        self.backend.refused(reason_of(e))
        if counted_after_open(e.close_code):
            self.backend.repeat_refusals.refused(request_key(self.ws), e.close_code)

    async def read(self, handle: Callable[[bytes], None]) -> None:
        """Hand every binary message to `handle` until the client goes away or the
        connection closes; raise what `handle` raises (the caller closes for it).

        Under uvicorn's sansio protocol a message is handled as uvicorn parses it, not
        via this task (wire_write.direct_reader): what `handle` raises there is kept,
        and this task, woken for it, raises it as for a message it read itself. This
        task still sees what the direct reader leaves: text messages and the close."""

        # What `handle` raised under the direct reader, without its traceback, and never
        # held by this connection or a variable of this frame once raised: its frames hold
        # the message's bytes, and a cycle through them (the connection held the
        # exception) is freed only by a full collection, rare on a quiet server
        # (serve.py's _tune_gc): every refused oversized frame (up to 16 MiB read) stayed
        # in memory, GBs within seconds of reconnecting clients.
        refused: list[Exception] = []
        # the direct reader runs in uvicorn's protocol callbacks, outside this request's
        # context: the lines said there (a hook's failure or slowness) lacked the
        # instance's name every other line carries. One ContextVar set a message, named.
        named = INSTANCE.get()

        def on_message(data: bytes) -> None:
            if self._close is not None or self._refusing:
                return  # closing: the reading loop would not have read it either
            self.direct_messages += 1
            token = INSTANCE.set(named) if named is not None else None
            try:
                handle(data)
            except Exception as e:
                self._refusing = True
                e.__context__ = e.__cause__ = None
                refused.append(e.with_traceback(None))
                wake_reader(self.ws)
            finally:
                if token is not None:
                    INSTANCE.reset(token)

        direct_reader(self.ws, on_message)
        while self._close is None:
            message = await self.ws.receive()
            if refused:
                raise refused.pop()
            if message["type"] == "websocket.disconnect":
                self.client_went(message.get("code"), message.get("reason"))
                return
            data = message.get("bytes")
            if data is None:
                raise ProtocolError("text frame received: the protocol uses binary frames")
            handle(data)

    def _watch_expiry(self) -> None:
        """A session ends with its token: close with 4401 once it expires (plus the
        leeway its verification allowed), so the client fetches a fresh token. The
        wall clock is read again every EXPIRY_RECHECK seconds (auth.ExpiryWatch), and
        at every frame (_expire_if_over)."""
        self._expiry = ExpiryWatch(self.identity, self._expire)

    def _expire(self) -> None:
        if self._close is not None:
            return  # closing already (a frame read after the close)
        log.info("%s (%s): token expired, closing with 4401", self.id, self.actor)
        self.backend.refused("token_expired")
        # (counted: this request's token is refused from now on, at the handshake too)
        self.backend.repeat_refusals.refused(request_key(self.ws), AuthError.close_code)
        self.close(AuthError.close_code, "token expired: reconnect with a fresh token",
                   cause="auth_expired")  # fmt: skip

    def _expire_if_over(self) -> bool:
        """Whether the session is over by the wall clock now (closed with 4401 then): a
        frame read after exp is dropped, an edit not taken, even before the timer
        notices (a clock stepped forward)."""
        if not self.identity.expired():
            return False
        self._expire()
        return True


#: a sync step 2 into an empty document larger than this is read in a worker thread
#: (Connection._read_ahead): 64 KiB of tiny items under as many client ids takes ~0.1 s
READ_AHEAD_BYTES = 64 * 1024
#: frame prefix of a sync step 2 (message type 0, sync message type 1)
_STEP2 = bytes([0, 1])
#: frame prefixes of the frames that carry an update: sync step 2, sync update
_UPDATE_FRAMES = (_STEP2, bytes([0, 2]))


async def extension_answer(
    backend: Backend,
    room: Room,
    client: Client,
    body: dict[str, Any],
    *,
    flush: Callable[[], Awaitable[None]],
    charge: Callable[[int], None] = lambda _n: None,
    session: str | None = None,
) -> dict[str, Any]:
    """The result message for an extension request of `client`: an extension's websocket
    operation, or ``hello`` (who you are, which operations there are). `session`: the
    connection id its edits are logged with, when not the client's (OpContext)."""
    op = body.get("type")
    ops = backend.extensions.ops
    handler = ops.get(op) if isinstance(op, str) else None
    if op == "hello":
        answer: dict[str, Any] = {
            **backend.extensions.hello_answer(room, client),
            "ok": True,
            "user": client.user,
            "role": client.identity.role,
            "ops": sorted(ops),
        }
    elif handler is None:
        answer = {"ok": False, "reason": f"unknown extension message type {op!r}"}
    else:
        try:
            answer = await handler(OpContext(backend, room, client, flush, charge, session), body)
        except PalimpsestError as e:
            answer = {
                "ok": False,
                "reason": str(e),
                "code": type(e).__name__,
                "status": e.http_status,
            }
        except Exception as e:
            log.exception("extension %s failed", op)
            answer = {"ok": False, "reason": f"internal error: {e!r}"}
    return {"type": "result", "id": body.get("id"), **answer}


def take_ready_part(
    room: Room, peer: Any, update: bytes, own: frozenset[int], conn: str | None = None
) -> None:
    """Hold a sync step 2 that waits for other users' edits (`update`, from `peer`;
    `conn`: as for Room.receive_update) with the room's others (resync.HeldSteps), and
    log what of all of them applies now, each part under the same rules as any step 2
    of its own connection; the rest waits (resync.py). Two users whose lost edits build
    on each other's would else each wait for the other for good."""

    def take(part: bytes) -> None:
        room.receive_update(peer, part, reply_to_step1=True, own=own, conn=conn)

    held = room.state(HeldSteps)
    held.hold(conn or peer.id, peer.actor, update, take)
    held.settle(room.clock)


def settle_held(room: Room, conn: str) -> None:
    """Connection `conn`'s sync step 2 was taken whole: its held one, if any, is past,
    and what it brought may be what other held step 2s wait for (resync.HeldSteps)."""
    held = room.peek(HeldSteps)
    if held is not None and len(held):
        held.drop(conn)
        held.settle(room.clock)


def held_left(room: Room, conn: str, actor: str) -> None:
    """Connection `conn` closed: its held step 2, if any, is kept and said."""
    held = room.peek(HeldSteps)
    size = held.left(conn) if held is not None else 0
    if size:
        log.warning("%s (%s on %s) closed with %d bytes of its edits still waiting for "
                    "other users' edits; they are kept while the document stays loaded "
                    "and logged if those come (docs/operations.md#recovering-lost-edits)",
                    conn, actor, room.name, size)  # fmt: skip


#: what a WHATWG URL parser (every browser's WebSocket, Node's ``ws``) does to a name of
#: dots: ``/ws/..`` is sent as ``/``, ``/ws/.`` as ``/ws/`` (``%2e`` is a dot to it)
DOT_SEGMENTS = "a name '.' or '..' (or %2e) is a path segment the client's URL parser took out"


#: where each provider connects, said to a websocket at a path of none of the routes
#: (short: a close reason holds 123 bytes)
WHERE = "y-websocket goes to /ws/{doc}, Hocuspocus to /hocuspocus"


def validate_path_name(doc: str, path: str, query: bytes = b"") -> None:
    """validate_doc_name for the name in a websocket's path, saying what became of a name
    of dots: the request arrives at ``/ws/`` (an empty name) or ``/`` (the route there
    has none), which would otherwise be a 403 at the handshake, not the 4400 close with
    a reason that every other bad name gets; and where to connect, for a websocket at a
    path of no route (``/notes``, ``/ws``, ``/hocuspocus/notes``: the catch-all route).
    A ``?`` in the query (`query`, raw) is one in the document name y-websocket put into
    the URL unencoded (``notes?x=1`` became ``/ws/notes?x=1?user=alice``: the document
    ``notes``, and no ``user``)."""
    if b"?" in query:
        url = f"{path[-30:]}?{query[:30].decode('latin-1')}"
        raise DocNameError(
            f"a document name cannot hold '?': {url} has two (y-websocket puts the name "
            "in the URL unencoded)"
        )
    if doc:
        validate_doc_name(doc)
    elif path.endswith("/ws/"):
        raise DocNameError(f"document name is empty: {DOT_SEGMENTS}")
    elif path.endswith("/"):
        # (the site's root given as the provider's URL, or a name of dots taken out)
        raise DocNameError(
            f"no document name in {path[-20:]}: {WHERE}; '.' and '..' are lost in URLs"
        )
    else:
        raise DocNameError(f"no websocket at {path[-40:]}: {WHERE}")


def client_id(backend: Backend) -> str:
    """A connection id unique in this process (and, with the instance, across them)."""
    return f"{backend.settings.instance}/{next(_ids)}"


def reason_of(e: BaseException) -> str:
    """A metrics label for a refusal: the error class in snake case (frame_too_large, …)."""
    if isinstance(e, ForeignItems):
        return "forbidden"  # (a kind of it; the label stays what dashboards count)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(e).__name__).lower()


def store_known_down(backend: Backend) -> bool:
    """Whether a load failed for an unavailable store within STORE_DOWN_SECONDS (and no
    load succeeded since)."""
    at = backend.store_down_at
    return at is not None and time.monotonic() - at < STORE_DOWN_SECONDS


def _can_deny(ws: WebSocket) -> bool:
    """Whether the ASGI server can answer the handshake with an HTTP status of the app's
    (the ``websocket.http.response`` extension: uvicorn's does)."""
    return "websocket.http.response" in ws.scope.get("extensions", {})


async def refuse_error(ws: WebSocket, e: PalimpsestError) -> None:
    """Refuse a websocket not yet accepted for `e`: accepted and closed with its code,
    but for too many connections from the address (about the moment: a burst past the
    handshake guard's count, or no guard, an embedding app's own uvicorn), answered
    with HTTP 429 where the ASGI server can, which y-websocket backs off from and comes
    back after, where a 4429 close stops it for good (3.1 and later)."""
    if isinstance(e, TooManyConnections) and _can_deny(ws):
        # (the JSON of the API's errors, as the handshake guard's 429: handshake.py)
        body = {"error": type(e).__name__, "detail": str(e)}
        response = JSONResponse(body, 429, headers={"Retry-After": "1"})
        await ws.send_denial_response(response)
        return
    await refuse(ws, e.close_code, str(e))


def offered(ws: WebSocket) -> str | None:
    """The first subprotocol the client offered (``new WebSocket(url, [p])``), which the
    accept names back: a browser aborts a handshake whose answer names none (and its
    page saw 1006, never the close's reason). None of them changes what is spoken."""
    protocols = ws.scope.get("subprotocols") or []
    return str(protocols[0]) if protocols else None


async def refuse(ws: WebSocket, code: int, reason: str) -> None:
    await ws.accept(subprotocol=offered(ws))
    await ws.close(code, close_reason(reason))


def said_closed(
    backend: Backend, client: Client, closed: Closed, what: str = "", repeated: bool = False
) -> None:
    """The disconnect line (its fields apart in JSON lines: logs.FIELDS; at DEBUG for a
    connection whose refusal was a repeat, server.repeat_logs) and the extensions'
    on_closed (the metric palimpsest_disconnects_total{cause})."""
    by = "the client" if closed.by_client else "the server"
    (log.debug if repeated else log.info)(
        "disconnect %s%s doc=%s user=%s cause=%s code=%d reason=%r (closed by %s after %.1f s)",
        client.id, what, client.doc, client.user, closed.cause, closed.code, closed.reason, by,
        closed.seconds,
        extra={"peer": client.id, "doc": client.doc, "user": client.user, "cause": closed.cause,
               "code": closed.code, "reason": closed.reason, "seconds": round(closed.seconds, 3)},
    )  # fmt: skip
    backend.extensions.closed(client, closed)


#: the body of the HTTP 500 a request is refused with at the handshake once an app's
#: extension failed in on_connect on it several times (repeat_refusals); the close of
#: the attempts before named the extension, and the log has the traceback
EXTENSION_FAILED_AGAIN = (
    "an extension of this server failed on this request again (close 1011 just before): "
    "the server's log says why"
)


async def refused_again(ws: WebSocket, backend: Backend, key: bytes, what: str) -> bool:
    """Refuse at the handshake a request refused several times just now (repeat_refusals),
    and say so (True): HTTP 403 for a refusal for good (a close before the accept), 500
    for an extension's bug in on_connect, so that y-websocket backs off instead of
    coming back 10 times a second (it counts an accepted socket as a success, whatever
    its close code)."""
    held = backend.repeat_refusals.holding(key)
    if held is None:
        return False
    log.debug("refused websocket for %s at the handshake: refused with %d again", what, held)
    backend.refused("repeated_refusal")
    if held == ExtensionFailed.close_code and _can_deny(ws):
        await ws.send_denial_response(PlainTextResponse(EXTENSION_FAILED_AGAIN, 500))
    else:
        await ws.close(held)
    return True


def count_refusal(backend: Backend, key: bytes, e: PalimpsestError) -> None:
    """Count a refusal before the accept towards the request's hold: one for good (44xx),
    and an extension's bug in on_connect or authenticate, which fails again at every
    attempt (repeat_refusals)."""
    counted = held_back(e.close_code) or isinstance(e, ExtensionFailed)
    backend.repeat_refusals.refused(key, e.close_code, counted)


async def websocket_endpoint(ws: WebSocket) -> None:
    backend: Backend = ws.app.state.backend
    doc = ws.path_params.get("doc", "")  # (none at /: validate_path_name)
    if ws.path_params.get("elsewhere") and _can_deny(ws):
        # a path of no route (the catch-all's): HTTP 404 at the handshake, saying where
        # to connect (a browser's console shows the status, clients read the body, the
        # log has the line), as a wrong URL is anywhere; it was a bare 403
        said = f"no websocket at {ws.url.path[-60:]}: {WHERE}"
        log.info("refused websocket with 404: %s", said)
        backend.refused("not_found")
        await ws.send_denial_response(PlainTextResponse(said, 404))
        return
    key = request_key(ws)
    if await refused_again(ws, backend, key, repr(doc)):
        return
    try:
        validate_path_name(doc, ws.url.path, ws.scope.get("query_string", b""))
        identity = await backend.authenticate(ws, doc, "read")
        client = Client(
            client_id(backend),
            doc,
            identity,
            ws.client.host if ws.client else "unknown",
        )
        passed = await backend.extensions.connect(client)
    except PalimpsestError as e:
        if isinstance(e, AuthError) and offered(ws) is not None and token_of(ws) is None:
            # (y-websocket's `protocols` option used for the token, as some servers read it)
            e = AuthError(
                "a token in the websocket's subprotocol is not read here: give it as "
                "?token= (y-websocket's params: {token})"
            )
        log.info("refused websocket for %r: %s", doc, e, extra={"doc": doc, "code": e.close_code})
        backend.refused(reason_of(e))
        count_refusal(backend, key, e)
        await refuse_error(ws, e)
        return
    try:
        loaded = backend.rooms.get_loaded(doc) is not None
        if backend.store_cut_off and _can_deny(ws):
            # cut off from a store the other processes reach (server/cutoff.py): this
            # process's connections were closed to go to one of them
            log.debug("refused websocket for %r at the handshake: cut off from the store",
                      doc, extra={"doc": doc, "user": client.user, "code": 503})  # fmt: skip
            backend.refused("store_unavailable")
            await ws.send_denial_response(
                PlainTextResponse(
                    "this server cannot reach the store; reconnect",
                    503,
                    headers={"Retry-After": "2"},
                )
            )
            return
        if not loaded and store_known_down(backend) and _can_deny(ws):
            # refused at the handshake (not accepted: a refusal, not a disconnect), so
            # that y-websocket backs off; its load would fail as the last one did
            log.debug("refused websocket for %r at the handshake: the store is unavailable",
                      doc, extra={"doc": doc, "user": client.user, "code": 503})  # fmt: skip
            backend.refused("store_unavailable")
            await ws.send_denial_response(
                PlainTextResponse(
                    "the store is unavailable, try again", 503, headers={"Retry-After": "2"}
                )
            )
            return
        await ws.accept(subprotocol=offered(ws))
        accepted = time.monotonic()
        try:
            room = await backend.rooms.get(doc)
        except StoreError as e:
            if isinstance(e, StoreUnavailable):
                code, reason = 1013, "the store is unavailable, try again"
                backend.store_down_at = time.monotonic()
            elif isinstance(e, LogDamaged):  # (said once, as an error, by Rooms)
                code, reason = 1011, e.reason
            else:  # not a moment's trouble: a query failed (a damaged database, say)
                code, reason = 1011, "the document cannot be read: the server's log says why"
            if not isinstance(e, LogDamaged):
                # once a minute per document, with a count (server.repeat_logs): a
                # client comes back for as long as the store is down
                first = backend.repeat_loads.refused((doc, *ANY), code, reason)
                (log.warning if first else log.debug)(
                    "cannot load %s: %s", doc, e,
                    extra={"doc": doc, "user": client.user, "code": code, "reason": reason},
                )  # fmt: skip
            with contextlib.suppress(Exception):  # (the client may be gone already)
                await ws.close(code, reason)
            waited = time.monotonic() - accepted
            # an accepted socket that ended: counted once, as a disconnect (store_error)
            backend.extensions.closed(client, Closed("store_error", code, reason, waited, False))
            return
        if not loaded:  # the store answered a load: it is up
            backend.store_down_at = None
        conn = Connection(ws, backend, client, accepted)
        # (at DEBUG while this address's refusals on this document repeat: a provider
        # coming back with its refused update, server.repeat_logs)
        say = log.debug if backend.repeat_lines.connecting(conn.who) else log.info
        say("connect %s doc=%s user=%s", conn.id, doc, conn.actor,
            extra={"peer": conn.id, "doc": doc, "user": conn.actor})  # fmt: skip
        try:
            await conn.serve(room)
        finally:
            said_closed(backend, client, conn.closed_as(), repeated=conn.repeated)
    finally:
        await backend.extensions.disconnect(client, passed)
