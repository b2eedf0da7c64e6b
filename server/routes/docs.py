"""The document list. (Health, readiness and metrics: server.routes.ops.)"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import may_open
from ..backend import Backend
from ..util import iso


def backend_of(request: Request) -> Backend:
    b: Backend = request.app.state.backend
    return b


async def list_docs(request: Request) -> Response:
    backend = backend_of(request)
    identity = await backend.authenticate(request, None, "read")
    # a token lists only the documents it grants (open mode grants "*")
    docs = [d for d in await backend.store.list_docs() if may_open(identity, d.doc)]
    return JSONResponse(
        {
            # the log's last global position: where `GET /api/events/stream` is now (a
            # follower that wants only what comes next, or the last few, starts there)
            "position": await backend.store.last_position(),
            "docs": [
                {
                    "doc": d.doc,
                    "head": d.head,
                    "updated": iso(d.updated_ts) if d.updated_ts else None,
                    "size": d.events_bytes,
                    "loaded": d.doc in backend.rooms,
                }
                for d in docs
            ],
        }
    )


routes = [
    Route("/api/docs", list_docs),
]
