"""Locking a document read-only (a teacher freezing an exam paper, a legal team a
contract): role admin locks and unlocks; while it is locked nobody's edit is taken.

    PUT    /api/docs/{doc}/lock   {"reason": "exam in progress"}   (the body is optional)
        ->  {"doc": "exam", "locked": true, "by": "ann", "at": "...", "reason": "...", "seq": 12}
    DELETE /api/docs/{doc}/lock
        ->  {"doc": "exam", "locked": false, "seq": 13}
    GET    /api/docs/{doc}/lock   (role read)
        ->  {"doc": "exam", "locked": true, "by": "ann", "at": "...", "reason": "..."}

The lock is a row of the store's ``doc_locks`` table (server.store.doc_locks): the
truth, read by every room as it loads, so it survives restarts and holds on every
process. Locking and unlocking are also logged, as an event of kind ``lock`` or
``unlock`` with an empty update (meta ``{"reason": ...}``): the history and the
changefeed show who locked and when, and the event is how the other processes learn of
it at once (it travels the fan-out as every event does, and a lost message is read from
the store by the gap check, as a lost edit is). Locking a locked document again
replaces its reason (and logs again); unlocking one that is not locked changes nothing
(``"seq": null``).

While a document is locked:

- a websocket client still connects, syncs and receives, and its updates are refused as
  a read-only token's are: y-websocket gets a permission-denied message (``locked:
  REASON``) and the update is dropped, whole; Hocuspocus gets ``SyncStatus`` false. An
  update that adds nothing (a reconnecting reader's step 2) is dropped without a word;
- every server change is refused with 423 ``Locked``: ``PUT /text``, imports, restore,
  revert, undo and redo (over HTTP and the websocket operations), undo marks; and
  ``DELETE /api/docs/{doc}`` (unlock it first);
- what was queued before the lock (edits already received) is logged before the lock
  event: the log shows every edit before ``lock`` or after ``unlock``.

A client's edits refused while the lock held stay in its Y.Doc, as a read-only user's
do. The unlock (this process's or another's, through its event: ``on_applied``) asks
each connection whose edits were refused for a re-sync, a sync step 1
(resync.Resync.unlocked): its step 2 brings them in at once, deletions too, which no
later update of the client would carry. Failing that (a request on its way already),
the re-sync an edit of it past them asks for does; a sync step 2 the lock refused (the
client connected while it held) ends the connection's sync all the same
(Resync.refused_step2), so such an edit is not taken for one typed while connecting and
dropped for good. A client closed meanwhile brings them in as it reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .bounded_json import loads_bounded
from .errors import BadRequest, Locked
from .extensions import Extension
from .names import validate_doc_name
from .origins import Origin, ReplayOrigin
from .params import check_body
from .room import Room
from .store.base import Event, now_ms
from .store.doc_locks import MAX_REASON, DocLock, reason_problem, shown

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("palimpsest.locking")

#: the kinds of the events that record a lock and an unlock
LOCK_KIND = "lock"
UNLOCK_KIND = "unlock"
KINDS = (LOCK_KIND, UNLOCK_KIND)


@dataclass(slots=True)
class LockState:
    """Per room: the lock in force (None: not locked)."""

    lock: DocLock | None = None


def lock_of(room: Room) -> DocLock | None:
    state = room.peek(LockState)
    return state.lock if state is not None else None


def refusal(lock: DocLock) -> str:
    """What a refused edit is told."""
    why = f": {shown(lock.reason)}" if lock.reason else ""
    return f"locked: the document {lock.doc!r} is locked read-only by {lock.by}{why}"


def lock_json(doc: str, lock: DocLock | None) -> dict[str, Any]:
    if lock is None:
        return {"doc": doc, "locked": False}
    return {"doc": doc, "locked": True, **lock.json()}


def check_unlocked(room: Room) -> None:
    """Locked (423) when `room`'s document is locked."""
    lock = lock_of(room)
    if lock is not None:
        raise Locked(refusal(lock))


async def lock_document(backend: Backend, doc: str, by: str, reason: str) -> tuple[DocLock, int]:
    """Lock `doc` (which must exist): stored first, in force in the room here at once
    (edits queued before stay before it), then logged; (the lock, the event's seq)."""
    from .deletion import missing

    if await backend.store.doc_info(doc) is None:
        raise await missing(backend.store, doc)
    row = DocLock(doc, by, now_ms(), reason)
    await backend.store.doc_locks().put(row)
    room = await backend.rooms.get(doc)
    try:
        room.state(LockState).lock = row
        ev = await room.server_change(by, LOCK_KIND, _nothing, {"reason": reason}, always=True)
    finally:
        backend.rooms.release(room)
    assert ev is not None  # (always: a change of nothing is logged)
    log.info("locked %s (by %s, event %d): %s", doc, by, ev.seq, reason or "no reason given")
    return row, ev.seq


async def unlock_document(backend: Backend, doc: str, by: str) -> int | None:
    """Unlock `doc`: the event's seq, None when it was not locked."""
    if not await backend.store.doc_locks().remove(doc):
        room = backend.rooms.get_loaded(doc)
        if room is not None:
            room.state(LockState).lock = None  # (a row removed under it: the CLI's)
        return None
    room = await backend.rooms.get(doc)
    try:
        # logged while still locked (the marker is let through), then lifted: no edit
        # is taken before the unlock event
        ev = await room.server_change(by, UNLOCK_KIND, _nothing, always=True)
        room.state(LockState).lock = None
    finally:
        backend.rooms.release(room)
    assert ev is not None
    log.info("unlocked %s (by %s, event %d)", doc, by, ev.seq)
    return ev.seq


def _nothing(_doc: Any) -> None:
    return None


def lock_from_event(doc: str, event: Event) -> DocLock | None:
    """The lock an event of KINDS leaves in force."""
    if event.kind != LOCK_KIND:
        return None
    reason = event.meta.get("reason")
    return DocLock(doc, event.actor, event.ts, reason if isinstance(reason, str) else "")


class Locking(Extension):
    """The lock of every room (read from the store as it loads, followed through the
    lock and unlock events of the other processes), the refusal of server changes while
    it holds, and the routes."""

    #: on_applied reads only the event's kind
    reads_doc_per_event = False

    def setup(self, backend: Backend) -> None:
        self.backend = backend

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/api/docs/{doc}/lock", self.endpoint, methods=["GET", "PUT", "DELETE"])]

    async def on_load(self, room: Room) -> None:
        room.state(LockState).lock = await self.backend.store.doc_locks().get(room.name)

    def on_server_change(self, room: Room, actor: str, kind: str) -> None:
        if kind not in KINDS:
            check_unlocked(room)

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        # another process's lock or unlock (or this one's: the same); a replayed one is
        # history, the store's row says what holds now (on_load)
        if event.kind in KINDS and not isinstance(origin, ReplayOrigin):
            room.state(LockState).lock = lock = lock_from_event(room.name, event)
            if lock is None:
                # the connections whose edits the lock refused are asked for a re-sync
                # (their step 2 brings them in): ws.Connection, hocuspocus_peer.DocPeer
                for peer in list(room.peers.values()):
                    unlocked = getattr(peer, "unlocked", None)
                    if unlocked is not None:
                        unlocked(room)

    async def endpoint(self, request: Request) -> Response:
        backend = self.backend
        doc = validate_doc_name(request.path_params["doc"])
        if request.method == "GET":
            await backend.authenticate(request, doc, "read")
            if await backend.store.doc_info(doc) is None:
                from .deletion import missing

                raise await missing(backend.store, doc)
            return JSONResponse(lock_json(doc, await backend.store.doc_locks().get(doc)))
        identity = await backend.authenticate(request, doc, "admin")
        if request.method == "DELETE":
            seq = await unlock_document(backend, doc, identity.user)
            return JSONResponse({"doc": doc, "locked": False, "seq": seq})
        reason = await _reason(request)
        row, seq = await lock_document(backend, doc, identity.user, reason)
        return JSONResponse({**lock_json(doc, row), "seq": seq})


async def _reason(request: Request) -> str:
    raw = await request.body()
    if not raw.strip():
        return ""
    try:
        body: Any = loads_bounded(raw, text_only=True)
    except ValueError as e:
        raise BadRequest(f"the body is not JSON: {str(e)[:200]}") from e
    if not isinstance(body, dict):
        raise BadRequest('the body is a JSON object: {"reason": "..."} (or nothing)')
    check_body(request, body)
    reason = body.get("reason", "")
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise BadRequest(f'"reason" is a string of at most {MAX_REASON} characters')
    problem = reason_problem(reason)
    if problem is not None:
        raise BadRequest(f'"reason" is {problem}')
    return reason


__all__ = [
    "KINDS",
    "LOCK_KIND",
    "UNLOCK_KIND",
    "LockState",
    "Locking",
    "check_unlocked",
    "lock_document",
    "lock_json",
    "lock_of",
    "refusal",
    "unlock_document",
]
