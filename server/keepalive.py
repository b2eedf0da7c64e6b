"""The websocket keepalive of ``palimpsest serve``: a connection still making progress is
not cut for a late pong.

uvicorn's keepalive (``ws_ping_interval``, ``ws_ping_timeout``) sends a ping and fails
the connection with 1011 "keepalive ping timeout" when its pong has not come within the
timeout. But the ping goes out behind what the server sent before it, on the same
stream, and the pong behind what the client sends: a large document's first sync (one
message, the whole document) crossing a slow link took longer than the timeout, and the
connection was cut while the message was still arriving; on every reconnect again, so
the document never opened. A client uploading a large step 2 on a slow link was cut the
same way.

So when the pong is late, the connection is given more time, ``ws_ping_timeout`` again,
as long as it made progress since the last look: the peer took more of the bytes sent
before the ping (the kernel's count of bytes the peer acknowledged: TCP_INFO), or, once
it has taken them all (the ping too), bytes arrived from it. A peer that does neither
for ``ws_ping_timeout`` (gone, frozen, behind a dead route) is cut as before, and so is
one that keeps sending but takes none of what was sent before the ping (it does not
read: what is queued for it would stay for as long as it keeps sending); and, when
what is queued for it cannot leave (its window closed), its socket is aborted rather
than closed: a close would wait for those bytes to
leave for as long as the peer keeps its TCP connection alive, holding its presence and
its place in ``max_connections_per_ip``.

Where TCP_INFO cannot be read (not Linux), the progress seen is the transport's own
buffer shrinking: what the kernel holds besides is not seen, and a connection whose
sends all fit in the kernel's buffer is judged by its pong alone, as before.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover  (not a POSIX system)
    fcntl = termios = None  # type: ignore[assignment]

#: struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received, u64 each,
#: at this offset (Linux 4.1 and later; an older kernel returns a shorter struct)
_TCP_INFO_COUNTS = 120
_TCP_INFO_BYTES = _TCP_INFO_COUNTS + 16
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def tcp_counts(sock: Any) -> tuple[int, int] | None:
    """(bytes the peer acknowledged, bytes received) on TCP socket `sock` since it
    opened, or None when the kernel does not say."""
    if _TCP_INFO is None or sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_BYTES)
    except (OSError, ValueError, AttributeError):
        return None
    if len(info) < _TCP_INFO_BYTES:
        return None
    acked, received = struct.unpack_from("=QQ", info, _TCP_INFO_COUNTS)
    return acked, received


class ProgressKeepalive:
    """A mixin for uvicorn's ``WebSocketsSansIOProtocol`` (its ``send_keepalive_ping``
    and ``keepalive_timeout``): see the module's doc."""

    # (uvicorn's protocol's)
    transport: Any
    ping_timeout: float | None
    pong_timer: Any
    loop: Any
    close_sent: bool
    disconnected: bool

    #: what was seen at the ping or the last look: TCP counts (or None), and the
    #: transport's buffer size
    _seen: tuple[tuple[int, int] | None, int] = (None, 0)
    #: the peer has taken the ping itself once it acknowledged this many bytes
    _ping_at = 0
    #: the keepalive closed the connection (1011 "keepalive ping timeout"): uvicorn then
    #: reports its end to the app as the peer's (1005, no close frame), which the app
    #: reads this to tell apart (keepalive_cut)
    keepalive_failed = False

    def _look(self) -> tuple[tuple[int, int] | None, int]:
        transport = self.transport
        counts = tcp_counts(transport.get_extra_info("socket"))
        return counts, transport.get_write_buffer_size()

    def send_keepalive_ping(self) -> None:
        super().send_keepalive_ping()  # type: ignore[misc]
        if self.pong_timer is None:
            return  # (not sent, or no timeout)
        self._seen = seen = self._look()
        counts, buffered = seen
        if counts is not None:
            # everything handed to the transport so far, the ping last: what the peer
            # acknowledged, what waits in the transport's buffer, and what is in the
            # kernel's send queue (not sent yet, or not acknowledged)
            self._ping_at = counts[0] + buffered + _queued(self.transport)

    def keepalive_timeout(self) -> None:
        if not (self.close_sent or self.transport.is_closing()) and self._progress():
            assert self.ping_timeout is not None
            self.pong_timer = self.loop.call_later(self.ping_timeout, self.keepalive_timeout)
            return
        if not (self.close_sent or self.transport.is_closing()):
            self.keepalive_failed = True
        super().keepalive_timeout()  # type: ignore[misc]
        transport = self.transport
        if transport.get_write_buffer_size() and not self.disconnected:
            # the close frame waits behind bytes the peer does not take
            transport.abort()

    def _progress(self) -> bool:
        """Whether the peer took more of what was sent before the ping, or sent bytes,
        since the last look (the ping, or the last time this was asked)."""
        (before, buffered_before), now = self._seen, self._look()
        self._seen = now
        counts, buffered = now
        if counts is None or before is None:
            return buffered < buffered_before
        acked, received = counts
        if before[0] < self._ping_at:
            # The peer has not taken all that was sent before the ping: only its taking
            # more says it is alive. What it sends does not: a client that sends (a sync
            # step 1 every 0.2 s) and never reads pinned what was queued for it (a field
            # test's 20 sockets on a 4.3 MB document, 260 MB) for as long as it liked.
            return acked > before[0]
        return received > before[1]


def keepalive_cut(protocol: Any) -> bool:
    """Whether the websocket protocol object `protocol` (uvicorn's, under a starlette
    WebSocket: wire_write.protocol_of) was closed by this keepalive: no answer to its
    ping and no progress (closes.KEEPALIVE_TIMEOUT)."""
    return getattr(protocol, "keepalive_failed", False) is True


def _queued(transport: Any) -> int:
    """Bytes in the kernel's send queue of `transport`'s socket (sent and not yet
    acknowledged, or not sent yet); 0 when it does not say."""
    sock = transport.get_extra_info("socket")
    if fcntl is None or sock is None or not hasattr(termios, "TIOCOUTQ"):
        return 0
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError, AttributeError):
        return 0
    return int(struct.unpack("i", buf)[0])


__all__ = ["ProgressKeepalive", "keepalive_cut", "tcp_counts"]
