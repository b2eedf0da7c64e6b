"""Undo and redo over HTTP, as the authenticated user (no websocket needed).

``POST /api/docs/{doc}/undo`` and ``POST /api/docs/{doc}/redo`` answer
``200 {"ok": true, "seq": S, "kind": K, "reverts": [...], "removed": {...}, "added":
{...}}`` with the new event (and ``"removed_others"`` when it took out text other users
wrote: server.removed, ``"skipped"`` when steps had nothing left: undo.Outcome), or
``409 {"ok": false, "reason": "nothing to undo"}``. ``POST /api/docs/{doc}/undo/open``
(body ``{"group": ID}``, optional) opens an explicit undo group, and
``POST /api/docs/{doc}/undo/close`` (body ``{"group": ID}``, optional) ends the user's
current undo step and group (docs/undo.md).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import undo
from ..backend import Backend
from ..bounded_json import loads_bounded
from ..errors import BadRequest
from ..names import validate_doc_name
from ..undo.extension import answer


def _backend(request: Request) -> Backend:
    b: Backend = request.app.state.backend
    return b


async def _empty(backend: Backend, doc: str) -> bool:
    """No document of that name, live or logged (never written, or deleted): there is
    nothing to undo, and no room is loaded to say so (an empty room made a later
    DELETE of the name answer that it deleted something)."""
    return backend.rooms.get_loaded(doc) is None and await backend.store.doc_info(doc) is None


async def _perform(request: Request, kind: str) -> Response:
    backend = _backend(request)
    doc = request.path_params["doc"]
    validate_doc_name(doc)
    identity = await backend.authenticate(request, doc, "write")
    if await _empty(backend, doc):
        return JSONResponse({"ok": False, "reason": f"nothing to {kind}"}, status_code=409)
    room = await backend.rooms.get(doc)
    outcome = undo.Outcome()
    try:
        ev = await undo.perform(room, identity.user, kind, backend, outcome)
    finally:
        backend.rooms.release(room)
    if ev is None:
        return JSONResponse(answer(ev, kind, outcome), status_code=409)
    return JSONResponse({"kind": kind, **answer(ev, kind, outcome)})


async def undo_route(request: Request) -> Response:
    return await _perform(request, undo.UNDO)


async def redo_route(request: Request) -> Response:
    return await _perform(request, undo.REDO)


async def _group(request: Request, need: bool) -> str | None:
    """The body's ``group`` (an id, docs/undo.md): a new one when `need`ed and absent."""
    raw = await request.body()
    body: Any = {}
    if raw.strip():
        try:
            body = loads_bounded(raw, text_only=True)
        except ValueError as e:
            raise BadRequest(f"the body is not JSON: {str(e)[:200]}") from e
        if not isinstance(body, dict):
            raise BadRequest('the body must be a JSON object, e.g. {"group": "answer-7"}')
    value = body.get("group")
    return undo.group_id(value) if need or value is not None else None


async def close_route(request: Request) -> Response:
    backend = _backend(request)
    doc = request.path_params["doc"]
    validate_doc_name(doc)
    identity = await backend.authenticate(request, doc, "write")
    group = await _group(request, need=False)
    if await _empty(backend, doc):
        return JSONResponse(undo.GroupAnswer(None, group, 0 if group else None).to_json())
    room = await backend.rooms.get(doc)
    try:
        done = await undo.close_group(room, identity.user, group)
    finally:
        backend.rooms.release(room)
    return JSONResponse(done.to_json())


async def open_route(request: Request) -> Response:
    backend = _backend(request)
    doc = request.path_params["doc"]
    validate_doc_name(doc)
    identity = await backend.authenticate(request, doc, "write")
    group = await _group(request, need=True)
    assert group is not None
    room = await backend.rooms.get(doc)
    try:
        done = await undo.open_group(room, identity.user, group)
    finally:
        backend.rooms.release(room)
    return JSONResponse(done.to_json())


routes = [
    Route("/api/docs/{doc}/undo", undo_route, methods=["POST"]),
    Route("/api/docs/{doc}/redo", redo_route, methods=["POST"]),
    Route("/api/docs/{doc}/undo/open", open_route, methods=["POST"]),
    Route("/api/docs/{doc}/undo/close", close_route, methods=["POST"]),
]
