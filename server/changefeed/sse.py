"""The changefeed over Server-Sent Events.

- ``GET /api/docs/{doc}/events/stream``: one document's events in seq order, each with
  ``id: <seq>``; the backlog from the log first, then live.
- ``GET /api/events/stream``: every document the caller may read, in global commit
  order, each with ``id: <pos>``.

Resuming: ``Last-Event-ID`` (sent by a reconnecting EventSource) or ``?after=``; the
header wins, since a browser reconnects to the same URL. A cursor past the log's end
(a document written again after a deletion, a log from a copy or a backup) is refused
with 409: the stream would otherwise wait, silently, past events it never sends.

A stream holds no queue: it reads a page of the store after its cursor, sends it, and
when the store has nothing more it waits for a commit (server.changefeed.wakeup) or a
heartbeat period, whichever comes first. A slow reader therefore costs one page of
memory and backs up only its own TCP connection. The stream ends when the server shuts
down, when the caller's token expires and when the store fails (`_ended_by_store`);
clients reconnect and resume. A stream asked for while the store cannot be reached is
refused (503, Retry-After) before it starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..auth import Identity, may_open
from ..errors import BadRequest, Conflict, StoreError, TooManyConnections
from ..names import validate_doc_name
from ..revocation import Revocation
from ..store.base import MAX_SEQ
from .events import HEARTBEAT, feed_text, sse_cursor, sse_frame

if TYPE_CHECKING:
    from .extension import Changefeed

log = logging.getLogger("palimpsest.changefeed")

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: what an EventSource waits before reconnecting (ms), sent first on every stream
RETRY_MS = 1000


def _now() -> float:
    return asyncio.get_running_loop().time()


def _after(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Last-Event-ID / ?after= must be an integer, not {raw[:40]!r}") from None
    if not 0 <= value <= MAX_SEQ:
        raise BadRequest(f"Last-Event-ID / ?after= must be between 0 and {MAX_SEQ}, not {raw[:40]}")
    return value


def _ended_by_store(e: StoreError, stream: str, last_id: int) -> None:
    """A stream whose store fails (unreachable, a damaged segment) ends its body cleanly
    with this one line in the log: raised out of a started response, the error was an
    "Exception in ASGI application" traceback and a torn chunked body. The follower
    reconnects and resumes after its last id; while the store cannot be reached, a new
    stream is refused with 503 before it starts."""
    log.warning("changefeed stream %s ended after id %d: %s", stream, last_id, e)


def _updates(request: Request) -> bool:
    raw = request.query_params.get("updates", "true").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest(f"?updates= must be true or false, not {raw[:20]!r}")
    return raw in ("true", "1")


class Streams:
    """The two SSE routes of one Changefeed."""

    def __init__(self, feed: Changefeed) -> None:
        self.feed = feed
        #: streams open now (a gauge in /metrics), and per client address
        self.open = 0
        self._by_address: dict[str, int] = {}

    def _admit(self, request: Request) -> str:
        """Check the stream against its address's bound (429 beyond it) and count it
        there and then: counted only once its response ran, 80 streams asked for at
        once all passed a bound of 64. The response releases it (`_Counted`)."""
        address = request.client.host if request.client else "unknown"
        if self._by_address.get(address, 0) >= self.feed.max_streams_per_ip:
            self.feed.backend.refused("too_many_streams")
            raise TooManyConnections(
                f"{self.feed.max_streams_per_ip} changefeed streams are open from {address} "
                "already (CHANGEFEED_MAX_STREAMS_PER_IP)"
            )
        self._count(address)
        return address

    def _count(self, address: str) -> None:
        self.open += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1

    def _release(self, address: str) -> None:
        self.open -= 1
        left = self._by_address.get(address, 1) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/docs/{doc:path}/events/stream", self.doc_stream),
            Route("/api/events/stream", self.all_stream),
        ]

    async def doc_stream(self, request: Request) -> Response:
        backend = self.feed.backend
        doc = validate_doc_name(request.path_params["doc"])
        identity = await backend.authenticate(request, doc, "read")
        after, updates = _after(request), _updates(request)
        # read with or without a cursor: a store that cannot be reached is a 503 now,
        # not a 200 whose body dies at its first read
        head = await backend.store.head(doc)
        if after > head:
            raise Conflict(
                f"Last-Event-ID / ?after= {after} is past the last seq of {doc!r}, {head}: the "
                "document was deleted and written again, or its log restored from a "
                "backup; read it again from 0"
            )
        address = self._admit(request)
        return _Counted(
            self._doc_events(doc, after, updates, identity), partial(self._release, address)
        )

    async def all_stream(self, request: Request) -> Response:
        identity = await self.feed.backend.authenticate(request, None, "read")
        if "doc" in request.query_params:  # (streamed every document, silently)
            raise BadRequest(
                "the global stream has no ?doc= filter: follow one document at "
                "/api/docs/{doc}/events/stream"
            )
        after, updates = _after(request), _updates(request)
        last = await self.feed.backend.store.last_position()  # (a 503 now, as above)
        if after > last:
            # positions given out by another log (a copy to another store; a backup
            # restored over a newer file by hand, not by `backup --replace`): the
            # stream would wait past everything this log will give out
            raise Conflict(
                f"Last-Event-ID / ?after= {after} is past this log's last position "
                f"{last}: the cursor comes from another log (a copy, a backup restored "
                "by hand); read it again from 0"
            )
        address = self._admit(request)
        return _Counted(self._all_events(after, updates, identity), partial(self._release, address))

    def _expired(self, identity: Identity) -> bool:
        """The token expired, or its user was revoked since (the stream ends)."""
        if identity.seconds_left() == 0.0:
            return True
        revocation = self.feed.backend.extension(Revocation)
        return revocation is not None and revocation.refused(identity) is not None

    def _idle(self, identity: Identity, quiet_since: float) -> float:
        """How long to wait for a commit before a heartbeat: what is left of the
        heartbeat since the stream last sent something, or less when the token expires
        sooner (the stream ended at the first heartbeat after it). Counted from the last
        thing sent, not from the last wakeup: commits that sent nothing (others', in
        documents the caller may not read; the poller's) started the wait anew, and a
        stream among busy documents said nothing at all for as long as they were busy."""
        due = max(0.0, quiet_since + self.feed.heartbeat - _now())
        left = identity.seconds_left()
        return due if left is None else min(due, left)

    async def _doc_events(
        self, doc: str, after: int, updates: bool, identity: Identity
    ) -> AsyncIterator[bytes]:
        feed, store = self.feed, self.feed.backend.store
        yield f"retry: {RETRY_MS}\n\n".encode()
        cursor = after
        quiet_since = _now()
        try:
            while not feed.closing and not self._expired(identity):
                ticket = feed.wakeup.ticket(doc)
                events = await store.read(doc, after=cursor, limit=feed.page)
                for ev in events:
                    yield sse_frame(ev.seq, feed_text(ev, updates=updates))
                    cursor = ev.seq
                if events:
                    quiet_since = _now()
                if len(events) == feed.page:
                    continue
                if not await feed.wait(ticket, self._idle(identity, quiet_since)):
                    yield HEARTBEAT
                    quiet_since = _now()
        except StoreError as e:
            _ended_by_store(e, f"of {doc!r}", cursor)

    async def _all_events(
        self, after: int, updates: bool, identity: Identity
    ) -> AsyncIterator[bytes]:
        feed, store = self.feed, self.feed.backend.store
        yield f"retry: {RETRY_MS}\n\n".encode()
        cursor = sent = after
        everything = identity.docs == ("*",)
        backlog = True  # (until a read comes up short: the log's end when the stream began)
        quiet_since = _now()
        try:
            while not feed.closing and not self._expired(identity):
                ticket = feed.wakeup.ticket()
                events = await store.read_feed(after=cursor, limit=feed.page)
                for ev in events:
                    cursor = ev.pos
                    if everything or may_open(identity, ev.doc):
                        yield sse_frame(ev.pos, feed_text(ev, updates=updates))
                        sent, quiet_since = cursor, _now()
                if len(events) == feed.page or backlog:
                    # a full page (a long scan is not silent), or the end of the backlog:
                    # what the caller may not see at its end moves the cursor now, not at
                    # the next heartbeat (a reconnect meanwhile read it all again). The
                    # backlog was there before the stream began: this times nobody's edit
                    if sent != cursor:
                        yield sse_cursor(cursor)
                        sent, quiet_since = cursor, _now()
                    if len(events) == feed.page:
                        continue
                    backlog = False
                if not await feed.wait(ticket, self._idle(identity, quiet_since)):
                    # live events the caller may not see moved the cursor: said in place
                    # of a heartbeat, so that a reconnect does not read them again, and
                    # not as they come, which would time others' edits in documents
                    # the caller may not read
                    yield HEARTBEAT if sent == cursor else sse_cursor(cursor)
                    sent, quiet_since = cursor, _now()
        except StoreError as e:
            _ended_by_store(e, "of every document", sent)


class _Counted(StreamingResponse):
    """A stream's response, which releases the count `_admit` took when it ends, however
    it ends (it never started: the client was gone)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=_HEADERS)
        self._done = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._done()


__all__ = ["RETRY_MS", "Streams"]
