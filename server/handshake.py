"""The HTTP request head (a websocket upgrade too) under guard, below the ASGI app.

uvicorn arms its keep-alive timer only after a response, so a socket that connects and
sends half a request line, or drips one header byte at a time, stays open for good and
is invisible to the app's per-address limit. This protocol (uvicorn's h11 protocol plus
three rules) closes that:

- a complete request, its head and its body, within ``handshake_timeout`` seconds of
  its first byte (or of the connection), else ``408`` and close: a body that stalls
  (``content-length: 1000`` and four bytes of it) held its socket and up to
  ``max_http_body_bytes`` of memory for good, before any token was looked at;
- a head of at most ``max_request_head_bytes``, else ``431`` and close (h11 detects it
  while the head is incomplete; uvicorn's own 400 for it is never written, because h11
  refuses to send a response to a request it never parsed; a head that arrives whole
  in one read is measured by the RequestGuard);
- until the request is complete, a socket counts against ``max_connections_per_ip``;
  a websocket upgrade over it is refused (``429``, ``Retry-After: 1``, a JSON body as
  the API's errors have, and close); a websocket upgrade from a trusted proxy is judged
  by the address it forwards (X-Forwarded-For, as uvicorn reads it), whose open
  websockets are at the limit already: ``429`` and close, as for a client that connects
  directly;
- a plain HTTP request (no websocket upgrade) over the limit is served all the same:
  the page, ``/static``, the API's reads, and the operations routes a Prometheus
  scraper or a load balancer's health check asks for. An office of 300 behind one NAT
  address, whose websockets hold every slot, could not load the page or read a
  document's history (each 429), and a health check behind that address saw the
  server down exactly then. The limit bounds what an address holds open for long
  (websockets, handshakes): a request whose head has arrived is not counted, under the
  limit either, so serving one over the limit lets that address hold nothing it could
  not hold anyway. A socket over the limit waits for its head on one
  of ``SPARE_PER_ADDRESS`` spare slots per address, under the same
  ``handshake_timeout`` (more at once: ``429`` at once, the head unseen), and is served
  with ``connection: close`` (no keep-alive, which would carry a later upgrade past
  this count);
- a websocket upgrade that would leave fewer than ``fd_reserve`` file descriptors free
  is answered ``503`` (Retry-After) and closed, so that health checks, metrics and
  history requests still have descriptors (descriptors.DescriptorGate).

Past the handshake, the websocket protocol (uvicorn's sans-I/O one) under one more rule:
the bytes of update frames over ``max_frame_bytes`` that all connections hold while those
frames arrive stay within ``max_large_frames_bytes`` (limits.LargeFrames); the
connection whose frame would go over is closed with 1013 (try again later) before more
of it is read.

A websocket upgrade is parsed again by ``websockets``, whose request-line limit is 8 KiB
by default (``WEBSOCKETS_MAX_LINE_LENGTH``, read when it is imported): a token of 8 KiB
in ``?token=`` would never open a socket. :func:`uvicorn_options` raises it to the head
limit.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol

from .descriptors import DescriptorGate
from .keepalive import ProgressKeepalive
from .limits import LargeFrames, too_many_detail, ws_max_size
from .repeat_logs import RepeatLines, Who, _Repeats
from .settings import Settings

log = logging.getLogger("palimpsest.handshake")


def forwarded_client(scope: dict[str, Any], trusted: list[str] | str | None) -> str | None:
    """The client address uvicorn's ProxyHeadersMiddleware (trusting `trusted`, its
    ``forwarded_allow_ips``) gives a request whose ASGI `scope` this is, when it differs
    from the socket's; None when it does not. The middleware awaits nothing before it
    calls the app, so its coroutine ends at its first step."""
    seen: list[str] = []
    socket_host = scope["client"][0]  # (the middleware sets the scope's client)

    async def app(inner: Any, receive: Any, send: Any) -> None:
        client = inner.get("client")
        if client:
            seen.append(str(client[0]))

    middleware = ProxyHeadersMiddleware(app, trusted if trusted is not None else "127.0.0.1")
    step = middleware(scope, _nothing, _nothing)  # type: ignore[arg-type]
    try:
        step.send(None)
    except StopIteration:
        pass
    else:  # (a middleware that waits for something: not the one known here)
        step.close()
        return None
    if not seen or seen[0] == socket_host:
        return None
    return seen[0]


async def _nothing(*args: Any) -> Any:
    raise RuntimeError("not called")


def _response(
    status: int,
    phrase: str,
    text: str,
    retry_after: bytes = b"",
    content_type: bytes = b"text/plain; charset=utf-8",
) -> bytes:
    body = text.encode()
    retry = b"retry-after: " + retry_after + b"\r\n" if retry_after else b""
    return (
        f"HTTP/1.1 {status} {phrase}\r\n".encode()
        + b"content-type: " + content_type + b"\r\n"
        + retry
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )  # fmt: skip


def too_many_response(limit: int) -> bytes:
    """The 429 of a connection over ``max_connections_per_ip`` = `limit`: ``Retry-After:
    1`` and the JSON of the API's errors (docs/security.md's refusal table, README's
    HTTP API), saying the limit. A browser's WebSocket sees 1006 whatever it says; a
    client that reads the body (ours, websockets' InvalidStatus) learns what to do."""
    body = json.dumps(
        {"error": "TooManyConnections", "detail": too_many_detail(limit)},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return _response(429, "Too Many Requests", body, b"1", b"application/json")


#: the reason of a connection refused with 429 for its address's connections, as the
#: websocket route counts a TooManyConnections (4429)
TOO_MANY = "too_many_connections"

#: sockets over the limit waiting for their request head, per address: a plain HTTP
#: request on one is served (a page load's few requests at once, a scraper, a health
#: check), a websocket upgrade refused
SPARE_PER_ADDRESS = 8


#: sockets closed for want of a complete request within handshake_timeout, said one by
#: one in each interval of HEAD_TIMEOUTS_EVERY seconds; the rest are counted, said in one
#: line at its end (a slowloris of hundreds of sockets made a line each)
HEAD_TIMEOUTS_SAID = 3
HEAD_TIMEOUTS_EVERY = 60.0


class HeadTimeouts:
    """The log of sockets closed with 408: the first HEAD_TIMEOUTS_SAID of an interval
    at INFO, the rest at DEBUG, counted, and said in one INFO line (how many, from how
    many addresses) when the interval ends."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.every = HEAD_TIMEOUTS_EVERY
        self._began: float | None = None
        self._said = 0
        self._held = 0
        self._hosts: set[str] = set()
        self._seconds = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def closed(self, client: Any, part: str, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._began is None or (self._timer is None and now >= self._began + self.every):
            self._began, self._said = now, 0
        if self._said < HEAD_TIMEOUTS_SAID:
            self._said += 1
            more = self._said == HEAD_TIMEOUTS_SAID
            self.log.info("closing a connection from %s: no complete request %s within %gs%s",
                          client, part, seconds,
                          "; more within a minute are counted in one line" if more else "",
                          )  # fmt: skip
            return
        self.log.debug("closing a connection from %s: no complete request %s within %gs",
                       client, part, seconds)  # fmt: skip
        self._held += 1
        self._seconds = seconds
        if len(self._hosts) < 10_000:
            self._hosts.add(str(client[0]) if isinstance(client, tuple) else str(client))
        if self._timer is None:
            self._timer = loop.call_at(self._began + self.every, self._say_held)

    def _say_held(self) -> None:
        began = self._began if self._began is not None else 0.0
        self.log.info(
            "%d more connections from %d addresses closed in the last %.0f s: no complete "
            "request head or body within %gs (handshake_timeout; each at DEBUG)",
            self._held, len(self._hosts), asyncio.get_running_loop().time() - began,
            self._seconds,
        )  # fmt: skip
        self._timer, self._began, self._held = None, None, 0
        self._hosts.clear()


class RefusedAddresses(RepeatLines):
    """The 429s of the per-address connection limit, said as RepeatLines says refusals:
    the first from an address at WARNING, its repeats within a minute counted at DEBUG,
    then said in one WARNING line with their count. A tab or a fleet of clients behind
    one address that reconnects in a loop made a line each (1,052 in 14 s in a field
    test's reconnect storm)."""

    def refused_address(self, host: str) -> bool:
        """A connection from `host` refused: True to say it (the first in a minute)."""
        return self.refused(("", host, ""), 429, "too many connections")

    def _said(self, key: tuple[Who, int, str], seen: _Repeats) -> None:
        (_, host, _), code, reason = key
        self.log.warning(
            "%d more connections from %s refused with %d in the last %.0f s: %s",
            seen.count, host, code, self.clock() - seen.said, reason,
        )  # fmt: skip


def guarded_protocol(
    settings: Settings,
    limits: Any,
    gate: DescriptorGate | None = None,
    refused: Callable[[str], None] = lambda reason: None,
) -> type[H11Protocol]:
    """An h11 protocol class bound to `settings`, the per-address counter `limits`
    (an object with ``connect(host) -> bool``, ``allows(host) -> bool`` and
    ``disconnect(host)``) and the file descriptors' `gate` (none: websockets are not
    refused for want of descriptors); `refused(reason)` counts a connection refused by
    the per-address limit (Backend.refused: ``palimpsest_refused_total``)."""
    repeats = RefusedAddresses(log)
    head_timeouts = HeadTimeouts(log)
    #: sockets over their address's limit waiting to say whether they are a plain
    #: HTTP request or a websocket upgrade, per address (SPARE_PER_ADDRESS)
    spare: collections.Counter[str] = collections.Counter()

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _counted: str | None = None
        #: over the limit: the address of the spare slot it holds, until its head is
        #: complete (a websocket upgrade is refused then)
        _spare: str | None = None
        #: a spare socket's request line so far; None once it is read (and followed by
        #: ``connection: close``)
        _line: bytes | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            host = self.client[0] if self.client else "unknown"
            if not limits.connect(host):
                if spare[host] < SPARE_PER_ADDRESS:
                    # a plain HTTP request is served: its head says
                    spare[host] += 1
                    self._spare = host
                    self._line = b""
                    self._arm()
                    return
                self._too_many(host, "a connection")
                return
            self._counted = host
            self._arm()

        def _release_spare(self) -> None:
            host, self._spare = self._spare, None
            if host is not None:
                spare[host] -= 1
                if spare[host] <= 0:
                    del spare[host]

        def _too_many(self, host: str, what: str) -> None:
            """Refuse with 429 (the address is at max_connections_per_ip), counted; said
            at WARNING the first time in a minute, its repeats then in one line."""
            refused(TOO_MANY)
            say = log.warning if repeats.refused_address(host) else log.debug
            say("refused %s from %s with 429: too many connections (max_connections_per_ip "
                "%d; repeats within a minute are said in one line)", what, host,
                settings.max_connections_per_ip)  # fmt: skip
            self._close_with(too_many_response(settings.max_connections_per_ip))

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(
                    settings.handshake_timeout, self._head_timeout
                )

        def _head_done(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._release_spare()
            if self._counted is not None:
                limits.disconnect(self._counted)
                self._counted = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            part = "body" if self.conn.their_state is h11.SEND_BODY else "head"
            head_timeouts.closed(self.client, part, settings.handshake_timeout)
            self._refuse(408, "Request Timeout", f"the request {part} did not arrive in time")

        def _refuse(self, status: int, phrase: str, text: str) -> None:
            self._close_with(_response(status, phrase, text))

        def _close_with(self, answer: bytes) -> None:
            if not self.transport.is_closing():
                if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    # (an answer already begun, an early 413, is only cut off)
                    self.transport.write(answer)
                self.transport.close()
            self._head_done()

        def data_received(self, data: bytes) -> None:
            if self._spare is not None and self._line is not None:
                # over the limit: a plain HTTP request is served, an upgrade refused
                # (handle_websocket_upgrade), once the head is whole
                self._line += data
                end = self._line.find(b"\n")
                if end < 0 and len(self._line) < settings.max_request_head_bytes:
                    return  # (the head timer still runs)
                data, self._line = self._line, None
                if end >= 0:
                    # served, then closed: the answer says "connection: close" (h11
                    # and uvicorn read it from the request; a client's own Connection
                    # header comes after it, and uvicorn reads an upgrade from the
                    # last), and whatever the client sent after it is not read.
                    # (No line end within the head's bound: h11 refuses it, 431.)
                    data = data[: end + 1] + b"connection: close\r\n" + data[end + 1 :]
            super().data_received(data)
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                self._head_done()  # closed, or handed over to the websocket protocol
            elif self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                self._arm()  # still waiting for a complete head, or its body
            else:
                self._head_done()

        def handle_websocket_upgrade(self, event: h11.Request) -> None:
            if self._spare is not None:
                # over the limit, on a spare slot: only plain HTTP is served there
                self._too_many(self._spare, "a websocket")
                return
            client = self._forwarded(event)
            if client is not None and not limits.allows(client):
                # behind a trusted proxy, the address counted so far was the proxy's:
                # the client's own is refused here as a direct client's is, with a 429
                # a browser backs off from (after the accept, a 4429 close brought the
                # tab straight back, ten times a second)
                self._too_many(client, "a websocket")
                return
            refusal = gate.refusal(len(self.connections)) if gate is not None else None
            if refusal is None:
                super().handle_websocket_upgrade(event)
                return
            # before the websocket protocol takes it: a plain answer, the socket closed
            self.transport.write(_response(503, "Service Unavailable", refusal, b"5"))
            self.transport.close()
            self._head_done()

        def _forwarded(self, event: h11.Request) -> str | None:
            """The client's address the app will see, when it is not the socket's (a
            trusted proxy's X-Forwarded-For, as uvicorn reads it: its own middleware
            is run on the request's head); None otherwise."""
            if not self.client or not self.config.proxy_headers:
                return None
            scope: dict[str, Any] = {
                "type": "websocket",
                "client": self.client,
                "headers": list(event.headers),
            }
            return forwarded_client(scope, self.config.forwarded_allow_ips)

        def send_400_response(self, msg: str) -> None:
            if self.conn.their_state is h11.ERROR and self.conn.our_state is h11.IDLE:
                # h11 cannot answer a request it never parsed: over-long heads land here
                too_long = len(self.conn.trailing_data[0]) >= settings.max_request_head_bytes
                if too_long:
                    self._refuse(431, "Request Header Fields Too Large",
                                 f"the request head is over {settings.max_request_head_bytes} "
                                 "bytes")  # fmt: skip
                else:
                    self._refuse(400, "Bad Request", msg)
                return
            super().send_400_response(msg)
            self._head_done()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_done()
            super().connection_lost(exc)

    return GuardedH11Protocol


class ReceiveQueue:
    """What uvicorn's websocket protocol needs of its queue of ASGI messages for the app
    (``put_nowait``, ``get``, ``empty``), without an asyncio.Queue's four deques (its
    getters, putters, items, and the waiters of its ``join()`` event: some 3 kB a
    connection, held for its life). Unbounded, as uvicorn's is; one reader (the app's
    ``receive()``). Its deque exists only while messages wait, its future only while the
    reader does."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        assert self._items is not None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


def bounded_websocket_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's sans-I/O websocket protocol, whose connections together hold at most
    ``max_large_frames_bytes`` of the frames over ``max_frame_bytes`` they are receiving
    (module docstring). What a connection has received since its last whole message is
    counted as it arrives (frame headers and all: a close bound, not an exact one). Its
    keepalive does not cut a connection still making progress (server.keepalive)."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    large = LargeFrames(settings)
    small = settings.max_frame_bytes

    class BoundedWebSocketProtocol(ProgressKeepalive, WebSocketsSansIOProtocol):
        #: the budget all connections of this server share
        large_frames = large
        #: what this connection took of it
        taken = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.queue = ReceiveQueue()  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.bound_held(0)

        def bound_held(self, kept: int) -> bool:
            """Take from (or give back to) the shared budget what this connection holds
            of a message over ``max_frame_bytes`` after a read: `kept` bytes of a frame
            kept by wire_write's own parser, plus websockets' buffer and the fragments
            uvicorn keeps. False, and the connection closed with 1013, when the budget
            has no room for it."""
            held = kept + len(self.conn.reader.buffer)
            if self.frames:
                held += sum(map(len, self.frames))
            over = held - small
            if over <= 0:
                self._give_back()
                return True
            if over > self.taken:
                if self.close_sent or not large.take(over - self.taken):
                    self._refuse_large()
                    return False
                self.taken = over
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            self._give_back()
            super().connection_lost(exc)

        async def send(self, message: Any) -> None:
            await super().send(message)
            if message["type"] == "websocket.accept" and self.handshake_complete:
                # the upgrade request and its answer, parsed headers and all (some 4 kB),
                # were kept for the socket's life; uvicorn reads them only until its
                # answer is sent (the scope keeps the headers the app reads). The request
                # is emptied too: websockets' parser keeps it in a local for good.
                self.request.headers.clear()
                self.request = self.response = None  # type: ignore[assignment]

        def _give_back(self) -> None:
            if self.taken:
                large.give(self.taken)
                self.taken = 0

        def _refuse_large(self) -> None:
            self._give_back()
            if self.close_sent:
                return
            reason = (
                "the server is receiving other large updates: try again (over "
                f"max_large_frames_bytes, {large.budget} bytes, in all)"
            )
            log.warning("%s: closing a websocket with 1013: %s", self.client, reason)
            self.close_sent = True
            self.frames = []
            self.conn.send_close(1013, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    return BoundedWebSocketProtocol


def uvicorn_options(
    settings: Settings,
    limits: Any,
    gate: DescriptorGate | None = None,
    refused: Callable[[str], None] = lambda reason: None,
) -> dict[str, Any]:
    """The uvicorn.Config options that put the guard in place (with the descriptors'
    `gate`, if any, and `refused` counting its 429s: Backend.refused), the websocket
    protocol (bounded_websocket_protocol) and its message size limit
    (limits.ws_max_size)."""
    import websockets.http11

    # websockets reads this knob from the environment at import time; the head limit
    # is what bounds the request line now
    websockets.http11.MAX_LINE_LENGTH = max(
        websockets.http11.MAX_LINE_LENGTH, settings.max_request_head_bytes
    )
    return {
        "http": guarded_protocol(settings, limits, gate, refused),
        "h11_max_incomplete_event_size": settings.max_request_head_bytes,
        "ws": bounded_websocket_protocol(settings),
        "ws_max_size": ws_max_size(settings),
    }


__all__ = ["ReceiveQueue", "guarded_protocol", "too_many_response", "uvicorn_options"]
