"""Limits against hostile clients that are not about tokens: rates, send-queue budgets,
documents created per hour, and the :class:`Limits` extension that holds the shared
ones (websockets per address, the send budget, the creation quota) and checks the size
of documents. docs/security.md lists each with its threat. (JSON from clients is read
by ``bounded_json``.)"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from .auth import Identity
from .errors import Forbidden, FrameTooLarge, TooManyConnections
from .extensions import Client, Extension
from .room import Room
from .settings import Settings


class Bucket:
    """A token bucket: `rate` per second, bursts of twice that. A cost may take it into
    debt (one large frame, or an undo that appended a lot); while in debt everything is
    refused, so the average stays at `rate`."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = 2 * rate
        self._last = now

    def _refill(self, now: float) -> None:
        self.tokens = min(2 * self.rate, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, cost: float, now: float, *, debt: bool = True) -> bool:
        """Spend `cost` unless the bucket is empty or in debt; False = over the rate.
        ``debt=False``: only if the bucket holds all of `cost` (a burst is exactly 2x)."""
        if self.rate <= 0:
            return True
        self._refill(now)
        if self.tokens <= 0 or (not debt and self.tokens < cost):
            return False
        self.tokens -= cost
        return True

    def full(self, now: float) -> bool:
        """Whether it has refilled to its burst: forgetting it changes nothing."""
        return self.tokens + (now - self._last) * self.rate >= 2 * self.rate

    def charge(self, cost: float, now: float) -> None:
        """Spend `cost` after the fact (work done on the client's behalf)."""
        if self.rate > 0:
            self._refill(now)
            self.tokens -= cost

    def refund(self, cost: float, now: float) -> None:
        """Give back `cost` taken for what turned out to cost nothing (up to the burst)."""
        if self.rate > 0:
            self._refill(now)
            self.tokens = min(2 * self.rate, self.tokens + cost)


class Budget:
    """Bytes held per key (a client address, a document), each key bounded by its own
    limit. A connection reserves before queueing and releases when the bytes are sent."""

    def __init__(self) -> None:
        self.held: Counter[str] = Counter()

    def reserve(self, keys: Iterable[tuple[str, int]], n: int) -> str | None:
        """Reserve `n` bytes under every (key, limit); None when done, else the key that
        is over its limit (nothing reserved)."""
        pairs = list(keys)
        for key, limit in pairs:
            if self.held[key] + n > limit:
                return key
        for key, _ in pairs:
            self.held[key] += n
        return None

    def release(self, keys: Iterable[str], n: int) -> None:
        for key in keys:
            left = self.held[key] - n
            if left > 0:
                self.held[key] = left
            else:
                self.held.pop(key, None)


class CreationQuota:
    """New documents per identity (:attr:`Identity.key`: the user and the documents
    its token grants) in a sliding hour: a token granting ``*`` would otherwise let its
    holder create documents without end (each one a log, rows, snapshots). Counted in
    memory by this process, for the identities that created something in the last hour
    only: one that has not is forgotten (oldest first, amortised O(1) a call)."""

    WINDOW = 3600.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        #: identity -> (when, doc) it created, oldest first; the identities in the order
        #: of their last creation, so the ones whose hour is over are at the front
        self._made: OrderedDict[Hashable, deque[tuple[float, str]]] = OrderedDict()

    def allow(self, who: Hashable, doc: str, limit: int, now: float, *, count: bool = True) -> bool:
        """Count `doc` as created by `who`; False when that is over `limit` an hour.
        ``count=False``: only whether it may, nothing counted."""
        if limit <= 0:
            return True
        self._forget_idle(now)
        made = self._made.get(who)
        if made is not None:
            while made and made[0][0] < now - self.WINDOW:
                made.popleft()
            if any(d == doc for _, d in made):
                return True
            if len(made) >= limit:
                return False
        if count:
            if made is None:
                made = self._made[who] = deque()
            made.append((now, doc))
            self._made.move_to_end(who)
        return True

    def _forget_idle(self, now: float) -> None:
        """Drop the identities whose last creation is over an hour old, from the front:
        each is dropped at most once for the call that added it, so a call costs O(1)
        amortised, not O(identities)."""
        while self._made:
            who, made = next(iter(self._made.items()))
            if made and made[-1][0] >= now - self.WINDOW:
                return
            del self._made[who]

    def check(self, identity: Identity, doc: str, limit: int, *, count: bool = True) -> None:
        """Count the first write into the empty `doc`, which creates it, against
        `identity` (an admin is not counted); Forbidden over `limit` an hour. Every
        path that creates a document asks: a socket's first update, PUT /text.
        ``count=False``: only check, before the write is taken (an update refused after
        this creates nothing); the caller counts it (count=True) once it is."""
        if identity.is_admin:
            return
        if not self.allow(identity.key, doc, limit, self.clock(), count=count):
            raise Forbidden(
                f"{identity.user!r} created {limit} documents in the last hour: "
                "that is the limit (max_new_docs_per_hour)"
            )


log = logging.getLogger("palimpsest.limits")

#: what a sync step 2 or update frame adds to its update at most (message type, sync
#: message type, the update's varUint length)
UPDATE_FRAME_OVERHEAD = 16
#: the websocket message size above the largest frame accepted: a Hocuspocus frame's
#: document name, and room for a frame over its limit to be read and refused with 4413
#: and a reason rather than cut off by the websocket library (1009)
WS_MAX_SIZE_MARGIN = 64 * 1024


def frame_limit(settings: Settings, update: bool) -> int:
    """The largest frame a client may send: ``max_frame_bytes``, except a frame that
    carries an update (sync step 2 or update), which may be as large as the document may
    be (``max_doc_bytes``). Offline work comes back in one sync step 2, the client's
    answer to the server's step 1 (y-websocket and Hocuspocus send it whole): edits
    each accepted online may be over the frame limit together, and refusing them would
    refuse them on every reconnect. What such a frame adds is then judged by the
    document's size (Limits.check_update) and counted against the byte rate."""
    if update:
        return max(settings.max_frame_bytes, settings.max_doc_bytes + UPDATE_FRAME_OVERHEAD)
    return settings.max_frame_bytes


def too_many_detail(limit: int) -> str:
    """What a connection refused for its address's connections is told (the 429's JSON
    detail at the handshake, handshake.py; a 4429 close's reason under an ASGI server
    that cannot answer a handshake: within a close reason's 123 bytes)."""
    return (
        f"at most {limit} connection{'s' if limit != 1 else ''} at once from one address "
        "(MAX_CONNECTIONS_PER_IP): "
        "close one, or try again later"
    )


class LargeFrames:
    """What all connections together hold of update frames over ``max_frame_bytes``
    while they arrive (``max_large_frames_bytes``, at least ``max_doc_bytes``): one such
    frame may be as large as the document (frame_limit), so without a bound across
    connections each connection could make the server hold that much (a client that
    sends all of a frame but its last fragment holds it for as long as it likes)."""

    def __init__(self, settings: Settings) -> None:
        self.budget = max(settings.max_large_frames_bytes, settings.max_doc_bytes)
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.budget:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


def ws_max_size(settings: Settings) -> int:
    """The websocket library's message size limit (uvicorn's ``ws_max_size``): the
    largest frame accepted (frame_limit) plus a margin; what a connection may make the
    server hold in memory for one frame."""
    largest = max(settings.max_frame_bytes, frame_limit(settings, True))
    return max(largest + WS_MAX_SIZE_MARGIN, 2 * settings.max_frame_bytes, 1 << 20)


@dataclass(slots=True)
class _Measured:
    """A room's last measurement of its encoded size, at ``room.applied_bytes`` = at."""

    size: int = 0
    at: int = -1


def _new_measured(_room: Room) -> _Measured:
    return _Measured()


class Limits(Extension):
    """Open websockets per client address, and the size of documents.

    Client addresses are what the ASGI server reports: uvicorn replaces the socket's
    address with the X-Forwarded-For entry of a trusted proxy only when the proxy's
    address is in ``FORWARDED_ALLOW_IPS`` (default: loopback only), so a client on the
    internet cannot choose its own address."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections: Counter[str] = Counter()
        #: the send-queue budget shared by every connection of the backend
        self.budget = Budget()
        #: new documents per identity in the last hour
        self.quota = CreationQuota()

    async def on_connect(self, client: Client) -> None:
        if not self.connect(client.address):
            log.warning("refused websocket for %r from %s: too many connections",
                        client.doc, client.address)  # fmt: skip
            raise TooManyConnections(too_many_detail(self.settings.max_connections_per_ip))

    async def on_disconnect(self, client: Client) -> None:
        self.disconnect(client.address)

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        self.check_update(room, len(update))

    def check_parts(self, room: Room, nbytes: int) -> None:
        """A client announces that its next frames are the parts of one update of
        `nbytes` in all (the Python client cuts an update over ~1 MiB into parts that
        each apply: a paste of 5 MB); the connection holds the parts and hands them to
        the room merged, as one update, which the size limit judges whole
        (routes.ws.Connection). Refused here already when the whole cannot fit: the
        client learns it before it sends them."""
        try:
            self.check_update(room, nbytes)
        except FrameTooLarge as e:
            raise FrameTooLarge(f"none of an update sent in parts was applied: {e}") from None

    # connections per address

    def connect(self, host: str) -> bool:
        """Count a new websocket from `host`; False (not counted) when over the limit."""
        if self.connections[host] >= self.settings.max_connections_per_ip:
            return False
        self.connections[host] += 1
        return True

    def allows(self, host: str) -> bool:
        """Whether one more websocket from `host` would be within the limit (nothing is
        counted: connect() counts it when it opens)."""
        return self.connections[host] < self.settings.max_connections_per_ip

    def disconnect(self, host: str) -> None:
        self.connections[host] -= 1
        if self.connections[host] <= 0:
            del self.connections[host]

    # document size

    def check_update(self, room: Room, nbytes: int) -> None:
        """Raise FrameTooLarge (4413) if an update of `nbytes` would take the document over
        ``max_doc_bytes``.

        Cheap: the estimate is the document's last measured encoded size plus every update
        applied or queued since (an over-estimate: updates merge). Each snapshot is a
        measurement (the room keeps its size and the bytes applied at that point); beyond
        those, the live document is measured only when the estimate crosses the limit and
        enough was applied since the last measurement (an eighth of the document or 1/64
        of the limit, whichever is less), so the cost stays proportional to what is
        written, and an update near the limit may be refused up to that margin early."""
        limit = self.settings.max_doc_bytes
        size, at = room.last_snapshot_bytes, room.snapshot_applied_bytes
        measured = room.state(_Measured, _new_measured)
        if measured.at > at:
            size, at = measured.size, measured.at
        if size + room.applied_bytes - at + room.queued_bytes + nbytes <= limit:
            return
        if room.applied_bytes - at >= max(1024, min(size // 8, limit // 64)):
            size, at = len(room.doc.get_update()), room.applied_bytes
            measured.size, measured.at = size, at
            if size + room.queued_bytes + nbytes <= limit:
                return
        raise FrameTooLarge(
            f"document {room.name!r} would grow over the limit of {limit} bytes "
            f"(MAX_DOC_BYTES; now about {size + room.applied_bytes - at + room.queued_bytes}, "
            f"update {nbytes})"
        )


__all__ = [
    "Limits",
    "Bucket",
    "Budget",
    "CreationQuota",
    "LargeFrames",
    "frame_limit",
    "too_many_detail",
    "ws_max_size",
]
