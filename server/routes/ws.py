"""The websocket endpoint: one Connection per socket, read eagerly, written through a
bounded queue so that a slow client never stalls anyone else."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import protocol as P
from ..auth import Identity
from ..backend import Backend
from ..errors import (
    FrameTooLarge,
    PalimpsestError,
    ProtocolError,
    RateLimited,
    StoreError,
    UpdateRejected,
)
from ..names import validate_doc_name
from ..room import EMPTY_UPDATE, Room
from ..tokens import limits_of

log = logging.getLogger("palimpsest.ws")

_ids = itertools.count(1)

#: seconds a closing connection may take to flush before its socket is aborted
CLOSE_GRACE = 2.0


class Connection:
    """A Peer of a room, over a starlette WebSocket."""

    def __init__(self, ws: WebSocket, backend: Backend, identity: Identity, doc: str) -> None:
        self.ws = ws
        self.backend = backend
        self.identity = identity
        self.actor = identity.user
        self.doc = doc
        self.id = f"{backend.settings.instance}/{next(_ids)}"
        self.ext = False  # opted in to extension messages
        settings = backend.settings
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(settings.send_queue_frames)
        # a backlog bigger than a whole document is worse than a re-sync
        self._queued_bytes = 0
        self._max_queued_bytes = max(settings.max_doc_bytes, 8 * settings.max_frame_bytes)
        self.limits = limits_of(backend)
        self._close: tuple[int, str] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = asyncio.Event()
        # token bucket for events per second
        self._rate = settings.max_events_per_second
        self._tokens = 2 * self._rate
        self._last = asyncio.get_running_loop().time()

    # --- Peer ---------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if self._close is not None:
            return
        if self._queued_bytes + len(frame) > self._max_queued_bytes:
            log.warning(
                "%s: send queue over %d bytes, dropping the connection",
                self.id,
                self._max_queued_bytes,
            )
            self.backend.refused("send_queue_overflow")
            self.close(1013, "send queue overflow: reconnect and re-sync")
            return
        try:
            self._queue.put_nowait(frame)
            self._queued_bytes += len(frame)
        except asyncio.QueueFull:
            log.warning("%s: send queue overflow, dropping the connection", self.id)
            self.backend.refused("send_queue_overflow")
            self.close(1013, "send queue overflow: reconnect and re-sync")

    def close(self, code: int, reason: str) -> None:
        if self._close is not None:
            return
        self._close = (code, reason[:120])
        # wake the sender, which sends what is queued before this point, then closes
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            # drop the backlog: the client re-syncs anyway
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queued_bytes = 0
            self._queue.put_nowait(None)
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort_if_stuck)

    def _abort_if_stuck(self) -> None:
        """A client that stopped reading fills its socket, so neither the frame being sent
        nor the close frame can go out, and the socket would stay open for as long as the
        client keeps the TCP connection alive. Abort it; the reader then sees the disconnect."""
        if self.closed.is_set():
            return
        # uvicorn's protocol object is the ASGI receive callable's owner (starlette wraps
        # send, not receive); without it the keepalive ping timeout ends the connection
        protocol = getattr(getattr(self.ws, "_receive", None), "__self__", None)
        transport = getattr(protocol, "transport", None)
        abort = getattr(transport, "abort", None)
        if callable(abort):
            log.warning("%s: the client does not read; aborting its connection", self.id)
            abort()

    # --- loops ----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        try:
            while True:
                frame = await self._queue.get()
                if frame is None:
                    break
                self._queued_bytes -= len(frame)
                await self.ws.send_bytes(frame)
        except Exception:  # the socket went away: the reader sees the disconnect
            pass
        finally:
            code, reason = self._close or (1000, "")
            if self.ws.application_state == WebSocketState.CONNECTED:
                try:
                    await self.ws.close(code, reason)
                except Exception:
                    pass
            self.closed.set()

    def _take_token(self) -> bool:
        now = asyncio.get_running_loop().time()
        self._tokens = min(2 * self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def handle(self, room: Room, frame: bytes) -> None:
        """Handle one frame synchronously: decode, then hand it to the room (never waits)."""
        settings = self.backend.settings
        if len(frame) > settings.max_frame_bytes:
            raise FrameTooLarge(
                f"frame of {len(frame)} bytes is over the limit of {settings.max_frame_bytes}"
            )
        msg = P.decode(frame)
        if isinstance(msg, P.SyncStep1):
            room.answer_sync_step1(self, msg.state_vector)
        elif isinstance(msg, P.SyncStep2 | P.SyncUpdate):
            if not self.identity.can_write:
                if msg.update != EMPTY_UPDATE:
                    self.backend.refused("read_only")
                    self.send(P.encode_permission_denied("read-only: your edits are not accepted"))
                return
            self.admit_update(room, msg.update)
            room.receive_update(self, msg.update, reply_to_step1=isinstance(msg, P.SyncStep2))
        elif isinstance(msg, P.AwarenessUpdate):
            self.admit_awareness(msg.payload)
            room.receive_awareness(self, msg.payload)
        elif isinstance(msg, P.QueryAwareness):
            room.send_awareness(self)
        elif isinstance(msg, P.AuthMessage):
            raise ProtocolError("auth messages go from the server to clients, not back")
        elif isinstance(msg, P.Extension):
            self.ext = True
            task = asyncio.create_task(self._extension(room, msg.body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def admit_update(self, room: Room, update: bytes) -> None:
        """Raise unless this connection may send `update` now (rate, document size)."""
        if self._rate > 0 and not self._take_token():
            # transient: the client keeps its unsent edits and re-sends them on re-sync
            raise RateLimited(
                f"more than {self._rate:g} updates per second on this connection; "
                "reconnect to re-sync"
            )
        if update != EMPTY_UPDATE:
            self.limits.check_update(room, len(update))

    def admit_awareness(self, payload: bytes) -> None:
        limit = self.backend.settings.max_awareness_bytes
        if len(payload) > limit:
            raise FrameTooLarge(
                f"awareness update of {len(payload)} bytes is over the limit of {limit}"
            )

    async def _extension(self, room: Room, body: dict[str, Any]) -> None:
        answer = await extension_answer(self.backend, room, self, body)
        self.send(P.encode_extension(answer))

    async def serve(self, room: Room) -> None:
        """Read every frame as soon as it arrives until the client goes away."""
        self._sender = asyncio.create_task(self._send_loop(), name=f"send:{self.id}")
        room.join(self)
        try:
            while self._close is None:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    raise ProtocolError("text frame received: the protocol uses binary frames")
                self.handle(room, data)
        except WebSocketDisconnect:
            pass
        except (ProtocolError, UpdateRejected, FrameTooLarge, StoreError, RateLimited) as e:
            log.info(
                "%s (%s on %s): closing with %d: %s", self.id, self.actor, self.doc, e.close_code, e
            )
            self.backend.refused(reason_of(e))
            if isinstance(e, UpdateRejected | ProtocolError) and self.ext:
                self.send(P.encode_extension({"type": "error", "reason": str(e)}))
            self.close(e.close_code, str(e))
        except PalimpsestError as e:
            log.info("%s: closing with %d: %s", self.id, e.close_code, e)
            self.backend.refused(reason_of(e))
            self.close(e.close_code, str(e))
        finally:
            room.leave(self)
            self.backend.rooms.release(room)
            if self._close is None:
                self.close(1000, "")
            await self.closed.wait()
            for task in list(self._tasks):
                task.cancel()


async def extension_answer(
    backend: Backend, room: Room, peer: Any, body: dict[str, Any]
) -> dict[str, Any]:
    """The result message for an extension request from `peer` (which has .identity)."""
    op = body.get("type")
    handler = backend.extensions.get(op) if isinstance(op, str) else None
    if op == "hello":
        answer: dict[str, Any] = {
            "ok": True,
            "user": peer.actor,
            "role": peer.identity.role,
            "ops": sorted(backend.extensions),
        }
    elif handler is None:
        answer = {"ok": False, "reason": f"unknown extension message type {op!r}"}
    else:
        try:
            answer = await handler(backend, room, peer, body)
        except PalimpsestError as e:
            answer = {"ok": False, "reason": str(e), "code": type(e).__name__}
        except Exception as e:
            log.exception("extension %s failed", op)
            answer = {"ok": False, "reason": f"internal error: {e!r}"}
    return {"type": "result", "id": body.get("id"), **answer}


def reason_of(e: BaseException) -> str:
    """A metrics label for a refusal: the error class in snake case (frame_too_large, …)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(e).__name__).lower()


async def refuse(ws: WebSocket, code: int, reason: str) -> None:
    await ws.accept()
    await ws.close(code, reason[:120])


async def websocket_endpoint(ws: WebSocket) -> None:
    backend: Backend = ws.app.state.backend
    doc = ws.path_params["doc"]
    try:
        validate_doc_name(doc)
        identity = backend.authenticate_ws(ws, doc)
    except PalimpsestError as e:
        log.info("refused websocket for %r: %s", doc, e)
        backend.refused(reason_of(e))
        await refuse(ws, e.close_code, str(e))
        return
    limits = limits_of(backend)
    host = ws.client.host if ws.client else "unknown"
    if not limits.connect(host):
        log.warning("refused websocket for %r from %s: too many connections", doc, host)
        backend.refused("too_many_connections")
        limit = backend.settings.max_connections_per_ip
        await refuse(ws, 4429, f"more than {limit} connections from your address")
        return
    try:
        await ws.accept()
        try:
            room = await backend.rooms.get(doc)
        except StoreError as e:
            log.warning("cannot load %s: %s", doc, e)
            backend.refused("store_unavailable")
            await ws.close(1013, "the store is unavailable, try again")
            return
        conn = Connection(ws, backend, identity, doc)
        log.info("connect %s doc=%s user=%s", conn.id, doc, conn.actor)
        try:
            await conn.serve(room)
        finally:
            log.info("disconnect %s doc=%s user=%s", conn.id, doc, conn.actor)
    finally:
        limits.disconnect(host)
