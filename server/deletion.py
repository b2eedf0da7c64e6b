"""Deleting a document, on every process: the store is the truth, fan-out the fast path.

``delete_document`` closes this process's connections (4404), drops the live room without
a final snapshot, and deletes the log, snapshots and tags, leaving a tombstone in the
store: the state vector of the deleted document. Then it tells the other processes over
fan-out. Each of them learns of a deletion in one of three ways:

- the fan-out message (at once): connections closed with 4404, room dropped;
- its gap check (when the message was lost): a loaded room whose seq is past the store's
  head, which only a deletion makes go back;
- a commit of the stale room (an edit it took in between, a server change): the store
  refuses it, since the room's seq (the append's floor, EventStore.append) is past the
  document's head, and writes nothing of it; the room is dropped the same way
  (Room._fail, DeletedMeanwhile: 4404 with the deletion's reason, 410 over HTTP). With
  a store that takes no floors the commit lands at a seq not past the room's own, and
  ``Deletion.on_logged`` drops the room after it.

The same refusal keeps out a room that loaded the document on this very process while
``delete_document`` ran, between dropping the rooms and deleting the log: it held the
old document, and its first commit (the page's close of an undo group, queued there and
committed as the deletion drops that room) was logged at seq 1 of the emptied log, the
document made again with one event of the deleted one.

The name can be used again: a new document starts empty (a new generation). What it must
never take in is the deleted content. Every room loads the tombstone and refuses an
update that brings items of the deleted document (a Yjs client id below the clock the
tombstone recorded for it, past what the room has): the sender is closed with 4404. A
y-websocket client that kept its copy and reconnects is refused at its first step 2.

A replace (``palimpsest copy --replace``) leaves the same record of the document it
overwrote: the import writes, in its transaction, the replaced document's state vector
merged into the name's tombstone (``replace_tombstone``), which the rooms refuse alike.
So a y-websocket tab that kept its Y.Doc across the replace's 4409 and reconnects (within
~250 ms, unless its app disconnects it at once) is refused, and does not sync the
replaced content into the new document. The tombstone also counts the replaces it took
in, under the client id REPLACES that no Yjs client takes: that count is what tells a
replace from a deletion, since both merge a state vector into the same bytes. A room
whose document was replaced under it (was_replaced) closes its clients with 4409, one
deleted with 4404; a stale copy is refused with 4409 when the tombstone counts a replace
and the name holds a document (refuse_deleted_content: the client must drop its copy
and load what the name holds, which a 4409 handler does), with 4404 otherwise. The
tombstone cannot say which of its entries a replace brought and which a deletion: a
copy of a document deleted before or after a replace of its name, the name holding a
document, is refused with 4409 too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycrdt import get_state

from . import protocol as P
from .errors import (
    FATAL,
    Deleted,
    Locked,
    NotFound,
    ProtocolError,
    ReplacedMeanwhile,
    StaleReplacedCopy,
    StoreError,
    deleted_reason,
    replaced_reason,
)
from .extensions import Client, Extension
from .locking import refusal
from .origins import Origin, PeerOrigin
from .room import Room
from .snapshots import load
from .store.base import Event, EventStore

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("palimpsest.deletion")


@dataclass(slots=True)
class Tombstone:
    """Per room: the tombstone of a deleted document of the same name (its state vector,
    decoded), the highest seq this room committed or loaded, and whether it is being
    dropped."""

    sv: dict[int, int] | None = None
    seen: int = 0
    dropped: bool = False


async def missing(store: EventStore, doc: str) -> NotFound:
    """The error for `doc` not in the store: `Deleted` (410) where a deletion left its
    tombstone and nothing was written since, `NotFound` (404) for a name never used."""
    if await store.tombstone(doc) is not None:
        return Deleted(
            f"document {doc!r} was deleted; what is written under its name now starts it anew"
        )
    return NotFound(f"no document named {doc!r}")


def merge_state_vectors(*svs: bytes | None) -> bytes:
    merged: dict[int, int] = {}
    for sv in svs:
        if sv:
            for client, clock in P.decode_state_vector(sv).items():
                merged[client] = max(merged.get(client, 0), clock)
    return _encode(merged)


def _encode(sv: dict[int, int]) -> bytes:
    out = bytearray(P.write_var_uint(len(sv)))
    for client in sorted(sv):
        out += P.write_var_uint(client) + P.write_var_uint(sv[client])
    return bytes(out)


#: the client id under which a tombstone counts the replaces (``copy --replace``) it
#: took in: past the 32 bits Yjs clients draw theirs from, never one of a document's
REPLACES = 2**53 - 1


def replaces_in(tomb: dict[int, int] | None) -> int:
    """How many replaces a (decoded) tombstone took in (0 for none, or none at all)."""
    return tomb.get(REPLACES, 0) if tomb else 0


def replace_tombstone(tomb: bytes | None, replaced: bytes) -> bytes:
    """The tombstone of a name whose document of state vector `replaced` is replaced:
    the name's tombstone `tomb` (None: none) with that state vector merged in, and one
    more replace counted (REPLACES). It changes the name's generation (snapshots.new_doc:
    the server's own Yjs client id), as a deletion's does."""
    merged = P.decode_state_vector(merge_state_vectors(tomb, replaced))
    merged[REPLACES] = replaces_in(P.decode_state_vector(tomb) if tomb else None) + 1
    return _encode(merged)


async def tombstone_for(store: EventStore, doc: str, room: Room | None = None) -> bytes:
    """What deleting `doc` must remember: its state vector (from the live room, or the
    store), with any earlier tombstone's."""
    sv = room.doc.get_state() if room is not None else (await load(store, doc)).doc.get_state()
    return merge_state_vectors(await store.tombstone(doc), sv)


def close_peers(room: Room, reason: str) -> int:
    """Close every connection of `room` with 4404 and `reason`, which says the document
    "was deleted" (as refuse_deleted_content's does): the Python client tells a deleted
    document (its ``Deleted``) from another 4404 by those words."""
    peers = list(room.peers.values())
    for peer in peers:
        peer.close(4404, reason)
    return len(peers)


async def delete_document(backend: Backend, doc: str, by: str) -> tuple[bool, int]:
    """Delete `doc` everywhere; (whether the store held it, connections closed here).

    A document is what the store holds. A name with nothing in it (never written, or a
    room open with no edit logged yet) has nothing to delete: its connections stay open
    and no tombstone is written, so that every process answers alike (404, or 410 for a
    name deleted before), whether or not it holds a room of that name, and as the history
    routes answer for it."""
    if await backend.store.doc_info(doc) is None:
        return False, 0
    room = backend.rooms.get_loaded(doc)
    closed = close_peers(room, deleted_reason(doc)) if room else 0
    discarded = await backend.rooms.discard(doc)
    tombstone = await tombstone_for(backend.store, doc, discarded)
    existed = await backend.store.delete_doc(doc, tombstone, by=by)
    # a connection that came in meanwhile loaded the old document again
    await deleted_elsewhere(backend, doc, deleted_reason(doc))
    await backend.extensions.deleted(doc, by)  # the fan-out tells the other processes
    log.info("deleted %s (by %s; %d connections closed here)", doc, by, closed)
    return existed, closed


async def delete_named(backend: Backend, doc: str, by: str) -> int:
    """``DELETE /api/docs/{doc}`` once its caller may (``Palimpsest.delete`` for a host
    app), `doc` a valid name: refused while locked (Locked, 423), deleted
    everywhere (delete_document), or NotFound (Deleted, 410, for a name deleted before)
    when the store holds nothing of it. Returns the connections closed here."""
    lock = await backend.store.doc_locks().get(doc)
    if lock is not None:  # (a frozen contract is not thrown away by mistake: unlock first)
        raise Locked(f"{refusal(lock)}; unlock it (DELETE /api/docs/{doc}/lock) to delete it")
    existed, closed = await delete_document(backend, doc, by)
    if not existed:
        raise await missing(backend.store, doc)
    return closed


async def deleted_elsewhere(backend: Backend, doc: str, reason: str) -> None:
    """Another process (or the store) says `doc` was deleted: drop what we hold of it."""
    room = backend.rooms.get_loaded(doc)
    if room is None:
        return
    n = close_peers(room, reason)
    await backend.rooms.discard(doc)
    log.info("dropped %s: %s (%d connections closed)", doc, reason, n)


async def was_replaced(store: EventStore, room: Room) -> bool:
    """Whether the name of `room` holds another document than the room's because it was
    replaced (``palimpsest copy --replace``), not deleted: a document of another
    generation is there and the name's tombstone counts more replaces than the one the
    room loaded with (replace_tombstone; a deletion merges its state vector and counts
    none), or is that very one (a copy of an earlier version wrote none)."""
    info = await store.doc_info(room.name)
    if info is None or info.generation is None or info.generation == room.generation:
        return False
    tomb = await store.tombstone(room.name)
    state = room.peek(Tombstone)
    loaded = state.sv if state is not None else None
    now = P.decode_state_vector(tomb) if tomb else None
    return now == (loaded or None) or replaces_in(now) > replaces_in(loaded)


async def replaced_elsewhere(backend: Backend, doc: str, stale: Room | None = None) -> None:
    """The name holds another document than the loaded room's (``palimpsest copy
    --replace`` wrote it under a running server): drop the room without a final snapshot
    (nothing of the old document is written into the new one) and close its connections
    with 4409 and errors.replaced_reason, which never says "deleted". With `stale`, only
    that room (one loaded since is the new document's)."""
    room = backend.rooms.get_loaded(doc)
    if room is None or (stale is not None and room is not stale):
        return
    peers = list(room.peers.values())
    for peer in peers:
        peer.close(ReplacedMeanwhile.close_code, replaced_reason(doc))
    await backend.rooms.discard(doc)
    log.info("dropped %s: replaced in the store (%d connections closed)", doc, len(peers))


def refuse_stale_copy(room: Room, state_vector: bytes) -> None:
    """Refuse (4404) a client whose sync step 1 says it holds items of the deleted
    document, before it is sent anything of the new one: its provider merged the two
    and showed the deleted text inside the new document until its step 2 was refused."""
    state = room.peek(Tombstone)
    if state is None or not state.sv:
        return
    try:
        sv = P.decode_state_vector(state_vector)
    except ProtocolError:
        return  # answering it says what is wrong
    refuse_deleted_content(room, state.sv, sv)


def refuse_deleted_content(room: Room, tomb: dict[int, int], sv: dict[int, int]) -> None:
    """An update bringing items of the deleted (or replaced) document is refused: 4409
    (StaleReplacedCopy) when the tombstone counts a replace and the name holds a
    document, 4404 otherwise (see the module docstring)."""
    ours = P.decode_state_vector(room.doc.get_state())
    for client, end in sv.items():
        have = ours.get(client, 0)
        if end > have and have < tomb.get(client, 0):
            if replaces_in(tomb) and room.seq > 0:
                raise StaleReplacedCopy(room.name)
            # (no name: the client knows its own, and with one the sentence passed a
            # close frame's 123 bytes; the server's log names it)
            raise NotFound(
                "the document was deleted and this copy holds its content: start from an "
                "empty document to use the name again"
            )


class Deletion(Extension):
    """Every room knows the tombstone of its name; a room whose log was deleted under it
    is dropped: when a commit lands at a seq it had already (a store that takes no
    floors: the others refuse that commit, see the module docstring), or when events reach it
    from the store rather than the fan-out and the store's tombstone is newer than the
    one it loaded with (a deletion whose message was lost, and a new document of the
    name past the room's seq already: a commit there jumps ahead)."""

    #: on_applied reads only the origin
    reads_doc_per_event = False

    def setup(self, backend: Backend) -> None:
        self.backend = backend
        self._pending: set[asyncio.Task[None]] = set()
        #: rooms whose tombstone is being read (one read at a time per room)
        self._checking: set[str] = set()

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        if isinstance(origin, PeerOrigin) and origin.instance == "store":
            self.suspect(room)

    def suspect(self, room: Room) -> None:
        """Events reached `room` from the store, not through the fan-out (its commit
        jumped over them, or the gap check found them): had a deletion's message been
        lost, they are a new document's. Its tombstone is read, in the background."""
        if room.name in self._checking:
            return
        self._checking.add(room.name)
        task = asyncio.get_running_loop().create_task(self._check_generation(room))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _check_generation(self, room: Room) -> None:
        doc = room.name
        try:
            tomb = await self.backend.store.tombstone(doc)
        except StoreError as e:
            log.warning("room %s: cannot read its tombstone now: %s", doc, e)
            return
        finally:
            self._checking.discard(doc)
        state = room.peek(Tombstone)
        if not tomb or state is None or state.dropped:
            return
        if state.sv is not None and P.decode_state_vector(tomb) == state.sv:
            return  # the same generation as when it loaded
        if self.backend.rooms.get_loaded(doc) is not room:
            return
        state.dropped = True
        if replaces_in(P.decode_state_vector(tomb)) > replaces_in(state.sv):
            log.warning("room %s: the document was replaced since it loaded: dropping it", doc)
            await replaced_elsewhere(self.backend, doc, room)
            return
        log.warning("room %s: the document was deleted since it loaded (its deletion "
                    "message never came): dropping it", doc)  # fmt: skip
        await deleted_elsewhere(self.backend, doc, f"document {doc!r} was deleted")

    async def on_load(self, room: Room) -> None:
        state = room.state(Tombstone, lambda r: Tombstone(seen=r.seq))
        tomb = await self.backend.store.tombstone(room.name)
        if tomb:
            state.sv = P.decode_state_vector(tomb)

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        state = room.peek(Tombstone)
        if state is None or not state.sv:
            return
        try:
            sv = P.decode_state_vector(get_state(update))
        except FATAL:
            raise
        except BaseException:  # pyo3 PanicException is one: the room refuses it
            return
        refuse_deleted_content(room, state.sv, sv)

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        doc = room.name
        # the room has applied this batch already: had it no state, it had seen up to
        # just before it (r.seq would read the batch as a seq it had, a false deletion)
        state = room.state(Tombstone, lambda r: Tombstone(seen=events[0].seq - 1))
        seen, state.seen = state.seen, max(state.seen, events[-1].seq)
        if events[0].seq > seen or state.dropped:
            return
        # the store gave a seq this room had already: the log was deleted under it
        state.dropped = True
        log.warning("room %s past seq %d committed seq %d: deleted elsewhere", doc, seen,
                    events[0].seq)  # fmt: skip
        task = asyncio.get_running_loop().create_task(
            deleted_elsewhere(self.backend, doc, f"document {doc!r} was deleted")
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


__all__ = [
    "Deletion",
    "Tombstone",
    "delete_document",
    "delete_named",
    "deleted_elsewhere",
    "deleted_reason",
    "merge_state_vectors",
    "REPLACES",
    "replace_tombstone",
    "replaces_in",
    "replaced_elsewhere",
    "was_replaced",
    "tombstone_for",
]
