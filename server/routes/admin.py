"""Administration over HTTP: deleting a document (role admin).

    DELETE /api/docs/{doc}   ->  {"doc": "notes", "deleted": true, "closed": 2}

Every connection to the document is closed with 4404 (y-websocket does not reconnect
after a 44xx close), its live room is dropped without a final snapshot, and its events,
snapshots and tags are removed from the store, which keeps a tombstone. 404 when the
store holds nothing of the name (410 when it was deleted before), even with connections
open to it, which are left alone: nothing was written there. With several processes, the others drop
their rooms and close their connections too (fan-out, or the store when a message is
lost), and no copy of the deleted content gets back in (see ``server/deletion.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..backend import Backend
from ..deletion import delete_document, missing
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
    existed, closed = await delete_document(backend, doc, identity.user)
    if not existed:
        raise await missing(backend.store, doc)
    return JSONResponse({"doc": doc, "deleted": True, "closed": closed})
