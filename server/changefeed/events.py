"""The JSON of an event on the changefeed (SSE streams and webhook batches).

The same object as ``GET /api/docs/{doc}/events`` returns (seq, ts, actor, kind, size,
meta, reverts), plus what a follower of many documents needs: ``doc``, the global
position ``pos``, and ``update``: the Yjs update bytes, base64-encoded, exactly as
logged, so that a read model can fold them (``updates=false`` leaves them out).

A document's deletion is on the feed too, at its own position: ``kind`` ``deleted``,
with ``doc``, ``pos``, ``seq`` (the document's last), ``ts`` and ``actor`` (who deleted
it), and nothing else.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..history import event_json
from ..store.base import DELETED, Event
from ..util import iso

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def feed_json(ev: Event, *, updates: bool = True) -> dict[str, Any]:
    if ev.kind == DELETED:
        # a deletion (EventStore.deletions): the document's name, its last seq, when and
        # by whom; no update (nothing to fold: drop the document)
        return {"doc": ev.doc, "pos": ev.pos, "seq": ev.seq, "ts": iso(ev.ts),
                "actor": ev.actor, "kind": DELETED}  # fmt: skip
    out: dict[str, Any] = {"doc": ev.doc, "pos": ev.pos, **event_json(ev)}
    if updates:
        out["update"] = base64.b64encode(ev.update).decode("ascii")
    return out


def feed_text(ev: Event, *, updates: bool = True) -> str:
    return _dumps(feed_json(ev, updates=updates))


def sse_frame(ident: int, data: str) -> bytes:
    """One SSE message: ``id:`` then ``data:`` (JSON never holds a raw newline)."""
    return f"id: {ident}\ndata: {data}\n\n".encode()


def sse_cursor(ident: int) -> bytes:
    """An ``id:`` without data: a browser's EventSource dispatches nothing but takes the
    id as its Last-Event-ID, so a reconnect skips what the caller may not see."""
    return f"id: {ident}\n\n".encode()


HEARTBEAT = b": heartbeat\n\n"


__all__ = ["HEARTBEAT", "feed_json", "feed_text", "sse_cursor", "sse_frame"]
