"""What the answer to a session's websocket handshake says when it is not an upgrade.

A Palimpsest server answers the upgrade with 101, or refuses with an HTTP/1.1 status.
Anything else means something else answered at that URL: a proxy's error page, another
application, a server that speaks only HTTP/1.0 (``python -m http.server``), or one that
does not speak HTTP at all. :func:`handshake_error` turns each into the client error
that names what answered; :class:`UpgradeConnection` makes websockets give up on an
answer it cannot read as soon as it has read it, instead of waiting for the server to
close (which one that keeps the connection open never does: the session then waited
for ``connect_timeout`` and said nothing of why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode

from .errors import ClientError, NotFound, Refused, ServerError, ServerGone, from_http

#: how much of an answer that is not HTTP/1.1 is kept to say what it was
HEAD_BYTES = 2048
#: a proxy's statuses for the server behind it being down or restarting
_PROXY_DOWN = (502, 503, 504)


class NotHTTP11(websockets.InvalidMessage):
    """The answer to the handshake does not read as HTTP/1.1 (websocket's only version):
    ``head``, its first bytes (at most HEAD_BYTES)."""

    def __init__(self, head: bytes) -> None:
        super().__init__("did not receive a valid HTTP/1.1 response")
        self.head = head


class UpgradeConnection(ClientConnection):
    """A websockets client connection that keeps the first bytes of the server's answer
    to the handshake and, once websockets finds it cannot read them as an HTTP/1.1
    response, ends the connection itself: websockets then waits for the server to close
    it, and a server that keeps it open (HTTP/1.0 keep-alive, a bare 200 with no length,
    a protocol that is not HTTP) held the session until ``connect_timeout``. The
    handshake fails with :class:`NotHTTP11`, which says what was read."""

    _head = b""
    #: the event loop's time when bytes last arrived (the keepalive's sign of life)
    last_received = 0.0

    def data_received(self, data: bytes) -> None:
        self.last_received = self.loop.time()
        if self.response is None and len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        super().data_received(data)
        exc = self.protocol.handshake_exc
        # (an answer that reads, but is not an upgrade, is websockets' InvalidStatus,
        # with the response: not this)
        if self.response is None and isinstance(exc, websockets.InvalidMessage) \
                and not isinstance(exc, NotHTTP11):  # fmt: skip
            err = NotHTTP11(self._head)
            err.__cause__ = exc
            self.protocol.handshake_exc = err
            self.transport.abort()

    async def keepalive(self) -> None:
        """websockets' keepalive (a ping every ``ping_interval``; no pong within
        ``ping_timeout``: the connection is failed with 1011), but a pong counts as late
        only once nothing at all has arrived for ``ping_timeout``. The server's pong
        comes after everything it sent before it, on the same stream: behind a large
        message on a slow link (a whole document's first sync, one message) it came
        after the timeout, and the session ended its own connection while the message
        was still arriving, again on every reconnect, and never opened. A connection
        that has gone silent is still failed ``ping_timeout`` after its last byte."""
        assert self.ping_interval is not None
        latency = 0.0
        try:
            while True:
                await asyncio.sleep(max(0.0, self.ping_interval - latency))
                sent = self.loop.time()
                pong = asyncio.ensure_future(await self.ping())
                if self.ping_timeout is None:
                    continue
                while True:
                    due = max(sent, self.last_received) + self.ping_timeout
                    done, _ = await asyncio.wait({pong}, timeout=max(0.0, due - self.loop.time()))
                    if done:
                        latency = pong.result()
                        break
                    if self.loop.time() >= max(sent, self.last_received) + self.ping_timeout:
                        async with self.send_context():
                            self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                        return  # (connection_lost cancels this task)
        except Exception:
            self.logger.error("keepalive ping failed", exc_info=True)


def _printable(data: bytes, most: int = 80) -> str:
    text = re.sub(r"[^\x20-\x7e]", "?", data.decode("latin-1"))
    return text if len(text) <= most else text[: most - 1] + "…"


def _not_http11(url: str, e: NotHTTP11) -> Refused:
    """The refusal for an answer that is not HTTP/1.1: another version (HTTP/1.0: status
    line and Server header named), a malformed HTTP/1.1 response (what is wrong with
    it), or not HTTP at all (its first line named). None can become an upgrade, so it is
    not tried again (whatever its status: a 5xx of an HTTP/1.0 server will not become a
    101 either)."""
    lines = e.head.split(b"\r\n\r\n", 1)[0].split(b"\n")
    first = lines[0].rstrip(b"\r")
    m = re.fullmatch(rb"HTTP/(\d(?:\.\d)?) (\d{3})(?: .*)?", first)
    if m is None:
        return Refused(
            f"{url} answered the websocket upgrade with {_printable(first)!r}, not HTTP: "
            "not a Palimpsest server, or the wrong port (it should look like "
            "ws://HOST:PORT/ws)"
        )
    server = next(
        (v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])
         if k.strip().lower() == b"server"),
        b"",
    )  # fmt: skip
    by = f" (server: {_printable(server)})" if server else ""
    version = m[1].decode()
    if version == "1.1":
        cause: BaseException = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        why = _printable(str(cause).encode())
        what = f"a response that does not read as HTTP/1.1 ({why}):"
    else:
        what = f"an HTTP/{version} server: websockets need HTTP/1.1, so"
    return Refused(
        f"{url} answered the websocket upgrade with {_printable(first)!r}{by}, {what} not "
        "a Palimpsest server, or the wrong URL or port (it should look like "
        "ws://HOST:PORT/ws)",
        code=int(m[2]),
    )


def handshake_error(url: str, e: Exception, why: str) -> ClientError:
    """The client error for a websocket handshake that failed with `e` (websockets'
    InvalidHandshake, OSError or TimeoutError); `url` the session's (redacted), `why` what
    `e` says (redacted). A Refused fails a session's first connection at once; any
    other error is tried again until ``connect_timeout``."""
    if isinstance(e, NotHTTP11) and e.head:
        return _not_http11(url, e)
    if not isinstance(e, websockets.InvalidStatus):
        return ServerGone(f"cannot connect to {url}: {why}")
    status = e.response.status_code
    text = e.response.body.decode(errors="replace") if e.response.body else ""
    body: Any = text
    if text.startswith("{"):  # the server's {"error", "detail"} (a 429, a 503)
        with contextlib.suppress(ValueError):
            body = json.loads(text)
    err = from_http(status, body, f"opening the websocket {url}")
    if status in _PROXY_DOWN:
        return ServerError(
            f"{err} (a proxy answered: the server behind it is down or restarting?)",
            code=status,
        )
    if status < 400:
        # our server answers the upgrade with 101, or refuses with 4xx
        return Refused(
            f"{url} answered the websocket upgrade with HTTP {status}, not 101: not a "
            "Palimpsest server, or the wrong URL (it should look like ws://HOST:PORT/ws)",
            code=status,
        )
    if status in (403, 404):
        # our server refuses with close codes after accepting; an HTTP refusal of the
        # handshake means no websocket route there
        return NotFound(
            f"no websocket endpoint at {url} (HTTP {status}): the URL should look like "
            "ws://HOST:PORT/ws",
            code=status,
        )
    return err


__all__ = ["HEAD_BYTES", "NotHTTP11", "UpgradeConnection", "handshake_error"]
