"""Following the changefeed: Server-Sent Events of one document or of every document.

    async with History("http://127.0.0.1:8000", user="ada") as h:
        async for ev in h.stream("notes", after=0):      # backlog, then live, forever
            print(ev.seq, ev.actor, ev.kind)
        async for ev in h.stream_all(after=position):    # every document you may read
            save(ev.pos, ev.doc, ev.update)

The iterators never end by themselves: when the connection drops or the server
restarts they reconnect (with back-off) and resume after the last id they saw (the
``Last-Event-ID`` header), so the events come gap-free and in order. A refusal (a bad
name, a bad token, forbidden) is raised; so is a server that stays unreachable past
``give_up`` seconds, when given. A document nobody has written yet is no refusal: its
stream is open and empty, and its first event comes as soon as it is written (a
follower may start before the document exists).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import ClientError, RateLimited, Refused, ServerGone, from_http


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """An event of the log as the changefeed carries it."""

    doc: str
    seq: int
    #: the global commit position (strictly increasing across every document)
    pos: int
    ts: str
    actor: str
    kind: str
    size: int
    meta: dict[str, Any] = field(default_factory=dict)
    reverts: list[int] = field(default_factory=list)
    #: the Yjs update, exactly as logged (None when asked with updates=False)
    update: bytes | None = None


def event_of(data: str) -> StreamEvent:
    e = json.loads(data)
    update = e.get("update")
    return StreamEvent(
        str(e["doc"]), int(e["seq"]), int(e.get("pos") or 0), str(e.get("ts")),
        str(e.get("actor")), str(e.get("kind")), int(e.get("size") or 0),
        dict(e.get("meta") or {}), list(e.get("reverts") or []),
        base64.b64decode(update) if isinstance(update, str) else None,
    )  # fmt: skip


@dataclass(slots=True)
class SSEMessage:
    id: str | None
    data: str


async def parse_sse(lines: AsyncIterator[str]) -> AsyncGenerator[SSEMessage, None]:
    """SSE messages as the EventSource spec reads them. A block with an ``id:`` and no
    data is yielded with ``data == ""``: it moves the resume point all the same."""
    data: list[str] = []
    ident: str | None = None
    async for line in lines:
        if line == "":
            if data or ident is not None:
                yield SSEMessage(ident, "\n".join(data))
            data, ident = [], None
            continue
        if line.startswith(":"):
            continue  # a comment: the heartbeat
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            ident = value


class Follower:
    """One stream, reconnecting: ``async for ev in Follower(...)``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        path: str,
        *,
        after: int,
        updates: bool,
        idle_timeout: float = 60.0,
        max_delay: float = 5.0,
        give_up: float | None = None,
    ) -> None:
        self.http = http
        self.path = path
        #: the last id seen (seq for one document, position for the global stream)
        self.after = after
        self.updates = updates
        self.idle_timeout = idle_timeout
        self.max_delay = max_delay
        self.give_up = give_up
        #: how many times it (re)connected
        self.connects = 0
        self._runs: list[AsyncGenerator[StreamEvent, None]] = []

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        run = self._run()
        self._runs.append(run)
        return run

    async def aclose(self) -> None:
        """End the stream: its connection closed, inner iterators first (History does
        this on leaving ``async with``; one a task is inside of ends, StopAsyncIteration,
        when its History is closed). Left to the loop's shutdown instead, after an
        ``async for`` left with ``break``, they were closed all at once and one closing
        another printed "aclose(): asynchronous generator is already running"."""
        runs, self._runs = self._runs, []
        for run in runs:
            if getattr(run, "ag_running", False):
                # a task is inside it, waiting: that task owns it (closing the client's
                # connections ends its wait), and closing it from here would raise
                continue
            await run.aclose()

    async def _run(self) -> AsyncGenerator[StreamEvent, None]:
        delay = 0.1
        loop = asyncio.get_running_loop()
        #: when the stream last lost its connection; None while it has one
        down_since: float | None = None
        while not self.http.is_closed:  # (its History was closed: the stream ends)
            down_since = loop.time() if down_since is None else down_since
            try:
                async with self._connect(self._deadline(down_since)) as r:
                    down_since = None
                    async with contextlib.aclosing(self._events(r)) as events:
                        async for ev in events:
                            delay = 0.1
                            yield ev
                # the server ended the stream (shutting down, or a token about to expire)
                delay = 0.1
            except RuntimeError:
                if self.http.is_closed:  # closed while this waited ("Cannot send a request")
                    return
                raise
            except (httpx.TransportError, ServerGone, TimeoutError) as e:
                if self.http.is_closed:
                    return
                deadline = self._deadline(down_since)
                if deadline is not None and loop.time() >= deadline:
                    why = str(e) or f"no answer within {self.give_up:g} s"
                    raise ServerGone(f"following {self.path}: server unreachable: {why}") from e
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_delay)

    def _deadline(self, down_since: float | None) -> float | None:
        """When to stop waiting for a connection (loop time): ``give_up`` after it was
        lost, so that an attempt a server never answers (it accepts the connection and
        hangs) ends then too, not after ``idle_timeout``; None without ``give_up``, or
        while connected."""
        if self.give_up is None or down_since is None:
            return None
        return down_since + self.give_up

    @contextlib.asynccontextmanager
    async def _connect(self, deadline: float | None) -> AsyncIterator[httpx.Response]:
        """The stream's response, once the server answered it (by `deadline`, loop
        time, else TimeoutError); a refusal is raised, trouble as ServerGone."""
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(self.after)}
        params = {"updates": "true" if self.updates else "false"}
        timeout = httpx.Timeout(10.0, read=self.idle_timeout)
        request = self.http.stream(
            "GET", self.path, headers=headers, params=params, timeout=timeout
        )
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout_at(deadline):
                r = await stack.enter_async_context(request)
                if r.status_code >= 400:
                    body = (await r.aread()).decode(errors="replace")
                    try:
                        detail: Any = json.loads(body)
                    except ValueError:
                        detail = body
                    err: ClientError = from_http(r.status_code, detail, f"following {self.path}")
                    if isinstance(err, Refused) and not isinstance(err, RateLimited):
                        raise err
                    raise ServerGone(str(err))  # (a full stream limit too: its slots come back)
            self.connects += 1
            yield r

    async def _events(self, r: httpx.Response) -> AsyncGenerator[StreamEvent, None]:
        async with contextlib.aclosing(parse_sse(r.aiter_lines())) as messages:
            async for msg in messages:
                if msg.id is not None and msg.id.isdigit():
                    last = int(msg.id)
                else:
                    last = None
                if msg.data:
                    ev = event_of(msg.data)
                    if last is not None and last <= self.after:
                        continue  # never again what was already handed out
                    if last is not None:
                        self.after = last
                    yield ev
                elif last is not None and last > self.after:
                    self.after = last


__all__ = ["Follower", "SSEMessage", "StreamEvent", "event_of", "parse_sse"]
