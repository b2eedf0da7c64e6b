"""Undo and redo over HTTP, as the authenticated user (no websocket needed).

``POST /api/docs/{doc}/undo`` and ``POST /api/docs/{doc}/redo`` answer
``200 {"ok": true, "seq": S, "kind": K, "reverts": [...], "removed": {...}, "added":
{...}}`` with the new event (and ``"removed_others"`` when it took out text other users
wrote: server.removed, ``"skipped"`` when steps had nothing left, ``"already":
"restored"`` when a restore had done it, changing nothing: undo.Outcome), or
``409 {"ok": false, "reason": "nothing to undo"}``; 404 (410 where a deletion left its
tombstone) for a name with no document, as the reads answer. ``POST /api/docs/{doc}/undo/open``
(body ``{"group": ID}``, optional) opens an explicit undo group, and
``POST /api/docs/{doc}/undo/close`` (body ``{"group": ID}``, optional) ends the user's
current undo step and group (docs/undo.md); both answer 404 / 410 as undo does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import undo
from ..backend import Backend
from ..bounded_json import loads_bounded
from ..deletion import missing
from ..errors import BadRequest
from ..names import validate_doc_name
from ..params import check_body
from ..room import Room
from ..undo.extension import answer

T = TypeVar("T")


def _backend(request: Request) -> Backend:
    b: Backend = request.app.state.backend
    return b


async def _empty(backend: Backend, doc: str) -> bool:
    """No document of that name, live or logged (never written, or deleted): no room is
    loaded to say there is nothing to undo (an empty room made a later DELETE of the
    name answer that it deleted something)."""
    return backend.rooms.get_loaded(doc) is None and await backend.store.doc_info(doc) is None


async def _open(request: Request) -> tuple[Backend, str, str]:
    """(backend, doc name, acting user) after validating the name and the edit role (a
    collaborator typing undoes its own changes; restore and revert need write)."""
    backend = _backend(request)
    doc = validate_doc_name(request.path_params["doc"])
    identity = await backend.authenticate(request, doc, "edit")
    return backend, doc, identity.user


async def _with_room(backend: Backend, doc: str, fn: Callable[[Room], Awaitable[T]]) -> T:
    """`fn` of the document's room, held for the while."""
    room = await backend.rooms.get(doc)
    try:
        return await fn(room)
    finally:
        backend.rooms.release(room)


async def _perform(request: Request, kind: str) -> Response:
    backend, doc, user = await _open(request)
    if await _empty(backend, doc):
        # 404 as the reads answer (410 for a deleted one): it answered 409 "nothing to
        # undo", as for a document that is there, and a typo in the name went unseen
        raise await missing(backend.store, doc)
    outcome = undo.Outcome()
    ev = await _with_room(
        backend, doc, lambda room: undo.perform(room, user, kind, backend, outcome)
    )
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
        check_body(request, body)
    value = body.get("group")
    return undo.group_id(value) if need or value is not None else None


async def close_route(request: Request) -> Response:
    backend, doc, user = await _open(request)
    group = await _group(request, need=False)
    if await _empty(backend, doc):
        # as undo's: it answered 200 "none was open", and a typo in the name went unseen
        raise await missing(backend.store, doc)
    done = await _with_room(backend, doc, lambda room: undo.close_group(room, user, group))
    return JSONResponse(done.to_json())


async def open_route(request: Request) -> Response:
    backend, doc, user = await _open(request)
    group = await _group(request, need=True)
    assert group is not None
    if await _empty(backend, doc):
        # as undo's: its mark made the document (a deleted one anew), under a mistyped
        # name too; a group is opened on a document once something was written to it
        raise await missing(backend.store, doc)
    done = await _with_room(backend, doc, lambda room: undo.open_group(room, user, group))
    return JSONResponse(done.to_json())


routes = [
    Route("/api/docs/{doc}/undo", undo_route, methods=["POST"]),
    Route("/api/docs/{doc}/redo", redo_route, methods=["POST"]),
    Route("/api/docs/{doc}/undo/open", open_route, methods=["POST"]),
    Route("/api/docs/{doc}/undo/close", close_route, methods=["POST"]),
]
