"""Administration over HTTP: deleting a document (role admin).

    DELETE /api/docs/{doc}   ->  {"doc": "notes", "deleted": true, "closed": 2}

Every connection to the document is closed with 4404 (y-websocket does not reconnect
after a 44xx close), its live room is dropped without a final snapshot, and its events,
snapshots and tags are removed from the store. 404 when the document has neither events
nor a live room. Only this process's connections are closed: with several processes,
the others' rooms notice nothing until their connections leave.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..backend import Backend
from ..errors import NotFound
from ..extensions import Extension
from ..names import validate_doc_name


class Admin(Extension):
    """Administration routes."""

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/api/docs/{doc}", delete_doc, methods=["DELETE"])]


async def delete_doc(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    doc = validate_doc_name(request.path_params["doc"])
    identity = await backend.authenticate(request, doc, "admin")
    room = backend.rooms.get_loaded(doc)
    closed = 0
    if room is not None:
        for peer in list(room.peers.values()):
            peer.close(4404, f"document {doc!r} was deleted by {identity.user}")
            closed += 1
    discarded = await backend.rooms.discard(doc)
    existed = await backend.store.delete_doc(doc)
    if not existed and discarded is None:
        raise NotFound(f"no document {doc!r}")
    await backend.extensions.deleted(doc, identity.user)
    return JSONResponse({"doc": doc, "deleted": True, "closed": closed})
