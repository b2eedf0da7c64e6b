"""Administration over HTTP (role admin): deleting a document, importing a Yjs update
into it, and compacting it (with ``purge_deleted``: erasing deleted text, server.erasure).

    POST /api/docs/{doc}/compact  {"before": 120, "purge_deleted": true}
        ->  {"doc": "notes", "base": 120, "removed": 120, "purged": true, "closed": 2}

    DELETE /api/docs/{doc}   ->  {"doc": "notes", "deleted": true, "closed": 2}

A locked document (server.locking) is not deleted: 423 ``Locked``, until it is unlocked.

Every connection to the document is closed with 4404 (y-websocket does not reconnect
after a 44xx close), its live room is dropped without a final snapshot, and its events,
snapshots and tags are removed from the store, which keeps a tombstone. 404 when the
store holds nothing of the name (410 when it was deleted before), even with connections
open to it, which are left alone: nothing was written there. With several processes, the others drop
their rooms and close their connections too (fan-out, or the store when a message is
lost), and no copy of the deleted content gets back in (see ``server/deletion.py``).

    POST /api/docs/{doc}/updates?source=NAME   (application/octet-stream: a Yjs v1 update)
        ->  {"seq": 7, "ts": "...", "bytes": 812, "clients": 3}

The update becomes one event of kind ``import`` by the caller, through the live room
(Room.import_update): durable first, then applied and sent to every connected client,
as an edit is. It may carry items of any Yjs client id, and claims none of them
(ownership.imported_clients): a move from another server while its editors' tabs stay
open, with no downtime. Admin only, for that reason. 400 when the body is not an update,
or leaves a gap (items after clocks the document lacks); ``"seq": null`` when the
document holds all of it already.

The body may be as large as a document (``max_doc_bytes``, 64 MiB by default), not only
``max_http_body_bytes`` (1 MiB) as on the other routes: a whole document's state
(``palimpsest export --format update``) is one update, and it is applied whole or not
at all. The request guard hands it on as it arrives and refuses it (413
``BodyTooLarge``, naming MAX_DOC_BYTES) as soon as it is over; it is read here only
after the caller is authenticated. A request cut off before its last byte applies
nothing: the update is taken only once read whole, and becomes one event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import erasure
from ..backend import Backend
from ..bounded_json import loads_bounded
from ..deletion import delete_named, missing
from ..errors import BadRequest, UpdateRejected
from ..extensions import Extension
from ..limits import Limits
from ..maintenance import CompactedWithoutStacks, compact_doc, plan_compact
from ..names import validate_doc_name
from ..params import check_body
from ..util import iso

log = logging.getLogger("palimpsest.admin")

#: the longest ?source= an import takes (kept in the event's meta)
MAX_SOURCE = 200


class Admin(Extension):
    """Administration routes."""

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/docs/{doc}", delete_doc, methods=["DELETE"]),
            Route("/api/docs/{doc}/updates", import_update, methods=["POST"]),
            Route("/api/docs/{doc}/compact", compact, methods=["POST"]),
        ]


async def delete_doc(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    doc = validate_doc_name(request.path_params["doc"])
    identity = await backend.authenticate(request, doc, "admin")
    closed = await delete_named(backend, doc, identity.user)
    return JSONResponse({"doc": doc, "deleted": True, "closed": closed})


async def compact(request: Request) -> Response:
    """Compaction (``palimpsest compact``) on a running server; with ``purge_deleted`` the
    base holds no deleted content, and the live room is reloaded from it here (before
    and after: a connection that came meanwhile loaded the old base) and, through the
    fan-out, on the other processes (server.erasure)."""
    backend: Backend = request.app.state.backend
    doc = validate_doc_name(request.path_params["doc"])
    identity = await backend.authenticate(request, doc, "admin")
    raw = await request.body()
    try:
        body: Any = loads_bounded(raw, text_only=True) if raw.strip() else {}
    except ValueError as e:
        raise BadRequest(f"the body is not JSON: {str(e)[:200]}") from e
    if isinstance(body, dict):
        check_body(request, body)
    if not isinstance(body, dict) or body.get("before") in (None, ""):
        raise BadRequest('the body must say where: {"before": SEQ | "TAG" | "ISO-8601 TIME"}')
    purge = body.get("purge_deleted", False)
    if not isinstance(purge, bool):
        raise BadRequest('"purge_deleted" is true or false')
    if await backend.store.doc_info(doc) is None:
        raise await missing(backend.store, doc)
    plan = await plan_compact(backend.store, doc, body["before"])
    if plan.events == 0 and not (purge and plan.base_seq):
        return JSONResponse({"doc": doc, "base": plan.base_seq, "removed": 0, "purged": False,
                             "closed": 0})  # fmt: skip
    closed = await erasure.reload_room(backend, doc) if purge else 0
    # without purge the same content: the room here goes on (server.base_watch)
    async with nullcontext() if purge else backend.rooms.adopting(doc):
        try:
            removed = await compact_doc(backend.store, plan, backend.settings,
                                        purge_deleted=purge)  # fmt: skip
        except CompactedWithoutStacks as e:
            removed = e.removed  # logged below; the events are gone either way
            log.error("compact %s: %s", doc, e)
    if purge:
        closed += await erasure.reload_room(backend, doc)
        await backend.extensions.purged(doc, identity.user)  # the other processes reload
    base = max(plan.before, plan.base_seq)
    return JSONResponse(
        {"doc": doc, "base": base, "removed": removed, "purged": purge, "closed": closed}
    )


async def import_update(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    doc = validate_doc_name(request.path_params["doc"])
    identity = await backend.authenticate(request, doc, "admin")
    source = request.query_params.get("source") or "http"
    if len(source) > MAX_SOURCE:
        raise BadRequest(f"?source= is at most {MAX_SOURCE} characters")
    # read only now that the caller is an admin; the request guard bounds it as it
    # arrives (max_doc_bytes: a whole document's state) and checked its media type
    update = await request.body()
    if not update:
        raise UpdateRejected("the body is empty: it must be a Yjs v1 update")
    room = await backend.rooms.get(doc)
    try:
        limits = backend.extension(Limits)
        if limits is not None:
            limits.check_update(room, len(update))
        ev = await room.import_update(identity.user, update, {"source": source})
    finally:
        backend.rooms.release(room)
    if ev is None:
        return JSONResponse({"seq": None, "reason": "the document holds all of it already"})
    return JSONResponse(
        {
            "seq": ev.seq,
            "ts": iso(ev.ts),
            "bytes": len(ev.update),
            "clients": len(ev.meta.get("relays", ())),
        }
    )
