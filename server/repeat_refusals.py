"""Requests refused for good that come straight back.

A websocket refused with a 44xx close (bad token, forbidden, bad name) was accepted
first, so that the client learns why; but y-websocket's provider counts an accepted
socket as a successful connection, restarts its back-off from 100 ms and reconnects
about ten times a second for as long as the page is open. Once the same request (same
address, document, query, and headers) was refused so `times` times within
`window` seconds, further attempts are refused at the handshake (HTTP 403: the browser
sees a failed connection, 1006) until the oldest of those refusals is older than the
window: the provider's back-off then applies, and about `times` attempts in every
`window` seconds still get the close with their reason (so a permission granted
meanwhile is noticed). A different request (a fresh token) is never held back.

Counted are the refusals at the handshake, and those after the socket opened that the
request brings on whatever the connection sends (`counted_after_open`: its token
expired, its document was deleted). Not counted are those for what one connection sent
(a frame too large, an update that does not decode, items under another user's client
id): a second tab of the same user sends the same request, and with nothing refused of
its own it was held back for as long as the first tab's provider sent its refused update
again (on every reconnect: it is in its Y.Doc).

Counted too, though it is no refusal for good: an app's extension whose ``on_connect``
raised a bug (ExtensionFailed, close 1011). It fails the same way at every attempt
(y-websocket 3.0 reads no close code: an accepted socket closed with 1011 brought it
back 100 ms later, ten times a second, each attempt running the hook again), so once
repeated it is refused at the handshake with HTTP 500; a fix deployed, or a hook whose
trouble was a moment's, lets the request in once the window has passed."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from starlette.websockets import WebSocket

#: refusals of the same request within WINDOW seconds before the handshake refuses it
TIMES = 3
WINDOW = 30.0
#: requests remembered at most (oldest forgotten first)
MOST = 10_000
#: the headers that differ between two attempts of one client and decide nothing (the
#: handshake's nonce); every other header is part of "the same request": an app's
#: `authenticate` may read any (an `X-Api-Key`, an auth proxy's `X-Forwarded-User`), and
#: a valid key must never share the hold of a revoked one sent from the same address
_VOLATILE = frozenset({b"sec-websocket-key"})
#: close codes after the socket opened that the request brings on (counted_after_open)
_OF_THE_REQUEST = frozenset({4401, 4404})


def request_key(ws: WebSocket) -> bytes:
    """A digest of the request (its address, path, query and headers but the nonce):
    what decides its refusal is in it, and no token is kept, only the digest."""
    h = hashlib.blake2b(digest_size=16)
    host = ws.client.host if ws.client else ""
    for part in (host.encode(), ws.scope.get("path", "").encode(), ws.scope["query_string"]):
        h.update(len(part).to_bytes(4, "big") + part)
    headers = sorted((k.lower(), v) for k, v in ws.scope["headers"] if k.lower() not in _VOLATILE)
    for k, v in headers:
        h.update(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v)
    return h.digest()


def held_back(code: int) -> bool:
    """Whether a refusal with this close code counts: a permanent one (44xx), not the
    too-many-connections 4429, which is about the moment."""
    return 4400 <= code < 4500 and code != 4429


def counted_after_open(code: int) -> bool:
    """Whether a close with this code after the socket opened counts: 4401 (the token
    expired, or no longer verifies) and 4404 (the document was deleted) are about the
    request; 4400, 4403 and 4413 about a frame the connection sent."""
    return code in _OF_THE_REQUEST


class RepeatRefusals:
    def __init__(
        self,
        times: int = TIMES,
        window: float = WINDOW,
        most: int = MOST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.times = times
        self.window = window
        self.most = most
        self.clock = clock
        #: request -> (its last close code, when it was refused with it, newest last)
        self._seen: OrderedDict[bytes, tuple[int, deque[float]]] = OrderedDict()

    def refused(self, key: bytes, code: int, counted: bool | None = None) -> None:
        """Request `key` was refused with close `code` (after its socket was accepted).
        `counted`: whether the refusal counts (None: a refusal for good, held_back); the
        websocket route counts an extension's bug in on_connect too (1011, the module
        says why)."""
        if not (held_back(code) if counted is None else counted):
            return
        last = self._seen.pop(key, None)
        times = last[1] if last is not None and last[0] == code else deque(maxlen=self.times)
        times.append(self.clock())
        self._seen[key] = (code, times)
        while len(self._seen) > self.most:
            self._seen.popitem(last=False)

    def holding(self, key: bytes) -> int | None:
        """The close code request `key` was refused with `times` times within the window
        (refuse it at the handshake), or None."""
        last = self._seen.get(key)
        if last is None:
            return None
        code, times = last
        now = self.clock()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._seen[key]
            return None
        return code if len(times) >= self.times else None


__all__ = ["RepeatRefusals", "counted_after_open", "held_back", "request_key"]
