"""Helpers for the changefeed tests: raw SSE reading over HTTP, writing edits, reading
the log back from the server's own store file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from palimpsest import client
from palimpsest.client.stream import SSEMessage, parse_sse


class RawStream:
    """One SSE connection, read message by message (comments kept as heartbeats)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.heartbeats = 0
        self.status = 0
        self.content_type = ""
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=30.0))
        self._cm: Any = None
        self._messages: AsyncIterator[SSEMessage] | None = None

    async def __aenter__(self) -> RawStream:
        self._cm = self._http.stream("GET", self.url, headers=self.headers)
        r = await self._cm.__aenter__()
        self.status = r.status_code
        self.response_headers = r.headers
        self.content_type = r.headers.get("content-type", "")
        if r.status_code == 200:
            self._messages = parse_sse(self._lines(r))
        else:
            self.body = (await r.aread()).decode()
        return self

    async def _lines(self, r: httpx.Response) -> AsyncIterator[str]:
        async for line in r.aiter_lines():
            if line.startswith(":"):
                self.heartbeats += 1
            yield line

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(None, None, None)
        await self._http.aclose()

    async def next(self, timeout: float = 10.0) -> SSEMessage:
        assert self._messages is not None
        return await asyncio.wait_for(anext(self._messages), timeout)

    async def events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The next n events (id-only messages skipped), as (id, JSON) checked to agree."""
        out: list[dict[str, Any]] = []
        while len(out) < n:
            msg = await self.next(timeout)
            if msg.data:
                ev = json.loads(msg.data)
                ev["_id"] = int(msg.id) if msg.id is not None else None
                out.append(ev)
        return out


async def type_into(ws_url: str, doc: str, texts: list[str], user: str = "ada") -> None:
    """One connection that inserts each text at the end, one durable event each."""
    async with client.connect(ws_url, doc, user=user) as s:
        for t in texts:
            text = s.text()
            text.insert(len(text), t)
            await s.flush()


def fold(updates: list[bytes]) -> str:
    from pycrdt import Doc, Text

    d: Doc[Any] = Doc()
    for u in updates:
        d.apply_update(u)
    return str(d.get("content", type=Text))
