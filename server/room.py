"""One live document: its pycrdt Doc, awareness, connections, and the write-ahead pipeline.

Write-ahead order for every update a client sends:

1. the connection's reader validates it (decodes, or the sender is refused) and queues
   it, without waiting for anything, so sockets are always read eagerly;
2. the room's pipeline task takes everything queued, appends it through the group
   committer, and waits until it is durable;
3. only then applies each update to the live document (in seq order) and broadcasts it.

So the live document only ever holds what the log holds, and a step 2 answered to a
newcomer never contains an edit that could still be lost. Server-made changes (undo,
redo, restore) are computed on the live document, held back from everyone until their
event is durable, and if the store refuses them for good the room is dropped and
reloaded from the log (its connections get 1013 and re-sync). While an extension checks
their content (``on_server_update``), those of CHECKED_KINDS are made on a copy first.

While the store refuses writes for a reason that may pass (a full disk, an I/O error, a
read-only file, the database unreachable), the room holds: what is queued stays queued
(not applied, not broadcast, not acknowledged) while the committer retries with back-off,
connections stay open and readers keep reading; when the store is back, everything
commits in order. Held client updates are bounded (``hold_max_bytes``): past the bound
their senders are closed with 1013 and re-send through sync step 2 when they come back.
Before a held batch is tried again, and before a batch of updates whose senders have
left is committed, they are checked against the log once more (``_still_adding``): a
process cut off from the store alone closes its connections (server/cutoff.py), its
clients re-send their edits to another process, and what that one logged meanwhile,
queued here as its events, is not logged a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pycrdt import Doc, Subscription, TransactionEvent, get_state, merge_updates

from . import protocol as P
from . import subdoc_options
from .awareness import Awareness, Entry
from .closes import RELOADING, STORE_FAILED
from .doc_observers import DocObservers
from .errors import (
    FATAL,
    DeletedMeanwhile,
    DocumentBroken,
    FrameTooLarge,
    HeadMoved,
    HookWroteDocument,
    PalimpsestError,
    ProtocolError,
    ReplacedMeanwhile,
    SeededMeanwhile,
    StoreError,
    StoreUnavailable,
    UnsupportedType,
    UpdateGap,
    UpdateRejected,
    panicked,
)
from .known import KnownDeletions, adds_anything, change_of, deletions_of, still_adding
from .lifecycle import cancel_and_wait
from .origins import (
    ClientOrigin,
    Origin,
    PeerOrigin,
    ReplayOrigin,
    ServerOrigin,
    SystemOrigin,
)
from .ownership import Owners, OwnIds, imported_clients
from .ranges import Ranges
from .repeat_logs import FailedLines
from .store.base import EVENT_CLOCK, NO_BASE, BaseMark, Event, NewEvent
from .updates import (
    EMPTY_BYTES,
    UpdateMeta,
    decode_update_meta,
    not_v1,
    ready_part,
    too_many_new_clients,
    unsupported,
    yrs_reads,
)

#: what events are stamped with (a test may set another)
now_ms = EVENT_CLOCK

log = logging.getLogger("palimpsest.room")

EMPTY_UPDATE = b"\x00\x00"
#: who and what an ``on_load`` hook's change to the document is logged as
SEED_ACTOR = "server"
SEED_KIND = "seed"
#: the kind of an update brought from elsewhere (Room.import_update, palimpsest import)
IMPORT_KIND = "import"
#: the server changes whose content the extensions check before they are logged
#: (``on_server_update``): what a user writes through the server (PUT /text, POST
#: /updates, a restore, a revert). Undo, redo and an undo group's mark are not: they
#: bring back what the document held, and a refused undo would stay on top of its
#: user's stack and refuse every undo after it (docs/extending.md)
CHECKED_KINDS = frozenset({"edit", IMPORT_KIND, "restore", "revert"})
#: server changes worked out from the document as it is (a text written whole, a
#: restore), appended only right after the head they were worked out on
#: (Room._make_exact_change)
EXACT_KINDS = frozenset({"edit", "restore"})
#: how many times such a change is made again when other processes keep logging edits
#: between its read of the log and its append; the last try is appended after them
EXACT_TRIES = 5
#: client update bytes a room keeps queued while the store refuses writes
HOLD_MAX_BYTES = 16 * 1024 * 1024
#: seconds a presence state lives without being renewed (y-protocols' outdatedTimeout)
PRESENCE_TIMEOUT = 30.0
#: most entries in one presence frame the room relays (Settings.max_awareness_clients_per_room)
PRESENCE_BATCH = 1000


#: what a room's task is awaiting, by the coroutine it is in (the first found in this
#: order), in the words of the log (Room.awaiting)
_AWAITS = (
    (
        "_catch_up_held",
        "a read of the log (events another process logged that it lacks), retried while "
        "the store refuses it",
    ),
    ("_catch_up", "a read of the log (events another process logged that it lacks)"),
    ("_run_server_change", "a server change (undo, redo, restore), its turn or its commit"),
    (
        "_bus_or_read",
        "the events another process logged just before its commit (from the fan-out, or a "
        "read of the log, whichever comes first)",
    ),
    ("_of_another_document", "a read of its document's generation in the store"),
    ("_deleted_or_replaced", "a read of whether its document was replaced (a refused commit)"),
    ("append", "its commit"),
    ("_maybe_snapshot", "a snapshot"),
)


class Peer(Protocol):
    """What a room needs of a connection. send() and close() never block."""

    id: str
    actor: str

    def send(self, frame: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class Committer(Protocol):
    #: a room announces work it has queued, and withdraws it once its task takes it up
    #: or ends (commit.py)
    def announce(self, doc: str, owner: object) -> None: ...

    def withdraw(self, doc: str, owner: object) -> None: ...

    async def append(
        self,
        doc: str,
        events: Sequence[NewEvent],
        *,
        hold: Callable[[], bool] | None = None,
        floor: int = 0,
        generation: int | None = None,
        recheck: Callable[[Sequence[NewEvent]], Sequence[NewEvent]] | None = None,
        exact: bool = False,
    ) -> list[Event]: ...


class EventReader(Protocol):
    """What a room needs of the store besides appending: reading the log, and taking
    turns on server changes with the other processes that share it."""

    async def read(
        self, doc: str, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[Event]: ...

    def server_changes(self, doc: str) -> contextlib.AbstractAsyncContextManager[None]: ...


@dataclass(slots=True)
class _ClientUpdate:
    peer: Peer
    update: bytes
    meta: dict[str, Any]
    #: where its new items start and what they reach, per client (ownership.Owners.admit),
    #: recorded once it is logged
    reach: dict[int, tuple[int, int]]
    #: its delete set, as read when it was admitted (not read again as it is applied);
    #: None when that read failed (then it is read as it is applied)
    deletes: Ranges | None


@dataclass(slots=True)
class _ServerChange:
    actor: str
    kind: str
    change: Callable[[Doc[Any]], Any]
    meta: dict[str, Any]
    future: asyncio.Future[Event | None]
    #: log an event (with an empty update) even when the change changes nothing; a
    #: callable: asked once the change ran (what it found decides: an undo whose step a
    #: restore did already, actions.perform)
    always: bool | Callable[[], bool] = False
    #: the update `change` applies, when it is known beforehand (an import)
    update: bytes | None = None


def _always(item: _ServerChange) -> bool:
    """Whether `item`'s change is logged when it changed nothing (asked after it ran)."""
    return item.always() if callable(item.always) else item.always


@dataclass(frozen=True, slots=True)
class ServerUpdate:
    """A change the server is about to log for a user, as ``on_server_update`` sees it:
    made on a copy of the document, before anything is logged or applied."""

    actor: str
    #: edit (PUT /api/docs/{doc}/text), import, restore or revert (CHECKED_KINDS)
    kind: str
    #: the Yjs update that will be logged, applied to the live document and broadcast
    update: bytes
    #: the document as it will be after the change: a copy made for the hooks, with
    #: the live document's root types (read it: what is written into it goes nowhere)
    doc: Doc[Any]


@dataclass(slots=True)
class _PeerEvents:
    events: list[Event]
    #: read from the store (Fanout.heal), not received on the bus
    from_store: bool = False
    #: the generation of the document they were appended to, as their message names it
    #: (None: it names none; see Room.receive_peer_events)
    generation: int | None = None
    #: the process that sent them (for the log line of a message dropped)
    sender: str = ""


@dataclass(slots=True)
class _Barrier:
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Fail:
    """The live document diverged from the log (Room.diverged): reload the room."""

    error: BaseException


_Item = _ClientUpdate | _ServerChange | _PeerEvents | _Barrier | _Fail


class RoomObserver(Protocol):
    """What a room tells the extensions (server.dispatch.Extensions is the one)."""

    #: False when a hook of before_apply / applied reads the document at each event
    #: (then every event of a batch is applied to it by itself)
    merged_apply: bool

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None: ...

    def applied(self, room: Room, event: Event, origin: Origin) -> None: ...

    def committed(self, room: Room, events: list[Event]) -> None: ...

    def awareness(self, room: Room, entries: bytes) -> None: ...

    def server_change(self, room: Room, actor: str, kind: str) -> None: ...

    #: whether `server_update` checks anything: only then is a server change of
    #: CHECKED_KINDS made on a copy of the document first (a copy costs a full encode)
    checks_server_updates: bool

    def server_update(self, room: Room, change: ServerUpdate) -> None: ...

    def unloaded(self, room: Room) -> None: ...


class _Nobody:
    """A room nobody observes (tools that fold documents outside a server)."""

    merged_apply = True

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None:
        pass

    def applied(self, room: Room, event: Event, origin: Origin) -> None:
        pass

    def committed(self, room: Room, events: list[Event]) -> None:
        pass

    def awareness(self, room: Room, entries: bytes) -> None:
        pass

    def server_change(self, room: Room, actor: str, kind: str) -> None:
        pass

    checks_server_updates = False

    def server_update(self, room: Room, change: ServerUpdate) -> None:
        pass

    def unloaded(self, room: Room) -> None:
        pass


@dataclass(frozen=True, slots=True)
class LoadInfo:
    """How a room was loaded."""

    snapshot_seq: int | None
    replayed: int
    seconds: float


S = TypeVar("S")


class Room:
    def __init__(
        self,
        name: str,
        doc: Doc[Any],
        seq: int,
        *,
        committer: Committer,
        reader: EventReader,
        observer: RoomObserver | None = None,
        on_broken: Callable[[Room, BaseException], None] | None = None,
        snapshotter: Callable[[Room], Awaitable[None] | None] | None = None,
        presence_timeout: float = PRESENCE_TIMEOUT,
        presence_batch: int = PRESENCE_BATCH,
    ) -> None:
        self.name = name
        self.doc = doc
        #: every event 1..seq is applied to doc, none after
        self.seq = seq
        #: ts (ms) of the event being applied: undo grouping follows the log's clock
        self.current_ts = now_ms(self.name)
        self.current_event: Event | None = None
        self.peers: dict[str, Peer] = {}
        #: who is here (presence, relayed, never stored)
        self.presence = Awareness()
        #: presence frames broadcast so far: each may come back from every provider as an
        #: echo (presence.PresenceGuard.refund)
        self.presence_frames = 0
        #: presence changes not broadcast yet, the newest entry per client id (clock,
        #: state): sent as one frame at the next loop turn (see _broadcast_presence)
        self._presence_out: dict[int, tuple[int, str]] = {}
        self._presence_flush: asyncio.Handle | None = None
        #: most entries in one such frame: each provider sends back the entries of a
        #: frame that it applies, and the room takes an update of at most its presence's
        #: entry limit from a connection (presence.PresenceGuard.admit)
        self.presence_batch = presence_batch
        #: seconds a presence state lives without renewal (see _expire_presence)
        self.presence_timeout = presence_timeout
        self._presence_timer: asyncio.TimerHandle | None = None
        self.observer: RoomObserver = observer or _Nobody()
        self.events_since_snapshot = 0
        #: update bytes applied since the room was loaded (replay included); at the last
        #: snapshot, this count and the snapshot's size. Snapshot policy and the document
        #: size limit both derive what they need from these.
        self.applied_bytes = 0
        self.snapshot_applied_bytes = 0
        self.last_snapshot_bytes = 0
        #: update bytes of client updates queued for the log, not applied yet, and how
        #: many updates; since when those have seen no commit of this room's edits
        #: (time.monotonic(), None while none is queued): what waits for the store
        #: (Committer.waiting)
        self.queued_bytes = 0
        self.queued_edits = 0
        self.queued_since: float | None = None
        #: per connection, per Yjs client, one past the highest clock of the updates it
        #: has queued (cleared when none is left, or a batch fails): the no-op rule counts
        #: them as held for that connection, so that a client's step 2 carrying what its
        #: update just sent is not logged twice. Its own only: should that batch fail, its
        #: sender is closed and re-sends; another connection would have been told it was
        #: saved
        self._pending_sv: dict[str, dict[int, int]] = {}
        #: most client updates committed in one transaction
        self.max_batch = 1024
        #: what extensions stored in the meta of the snapshot the room loaded from
        self.snapshot_meta: dict[str, Any] = {}
        #: the compaction base the room was loaded from (read before the load): its
        #: snapshots are written only while the store's is still this one, and a room
        #: whose base changed under it is reloaded (server.base_watch)
        self.base: BaseMark = NO_BASE
        #: the generation of the document the room loaded (DocInfo.generation, read with
        #: its head before the load), which its appends must find (EventStore.append's
        #: generations): a new document of the name, even one past the room's seq, is
        #: another. None: the document had no row yet (or the store numbers none): then
        #: learnt once, through `generation_of`, after the room's first append made it
        self.generation: int | None = None
        self.generation_of: Callable[[str], Awaitable[int | None]] | None = None
        #: the generation reads that failed, said once a minute for all rooms (a store
        #: that is down fails every new document's): server.rooms gives its own
        self.generation_failures: FailedLines | None = None
        #: whether the room's document was replaced under it, not deleted
        #: (deletion.was_replaced; set by Rooms)
        self.replaced_of: Callable[[Room], Awaitable[bool]] | None = None
        self._learning: asyncio.Task[None] | None = None
        #: generations of other documents of the name whose events reached the room
        #: (late fan-out messages of a deleted or replaced one): dropped, said once each
        self._other_generations: set[int] = set()
        #: those whose presence reached the room (said once each), and those the store
        #: said were the name's while the room did not know its own
        self._other_presence: set[int] = set()
        self._presence_generations: set[int] = set()
        #: presence relayed by other processes, held in order while the store is asked
        #: whether a generation is the room's document's (receive_relayed_presence)
        self._presence_held: list[tuple[Peer, bytes, int | None]] = []
        self._presence_check: asyncio.Task[None] | None = None
        #: how the room was loaded (set once loading is done)
        self.loaded = LoadInfo(None, 0, 0.0)
        self._states: dict[type[Any], Any] = {}
        #: bound of ``queued_bytes`` while the store refuses writes (see the module doc)
        self.hold_max_bytes = HOLD_MAX_BYTES
        self._committer = committer
        self._reader = reader
        self._on_broken = on_broken
        self._snapshotter = snapshotter
        self._inbox: list[_Item] = []
        #: the items the pipeline took out of the inbox and is working through
        self._taken: list[_Item] = []
        self._wake = asyncio.Event()
        #: set when another process's events are queued (while _bus_or_read awaits them)
        self._peer_arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._server_change_in_flight = False
        self._deferred_sync: list[tuple[Peer, bytes]] = []
        #: every deletion the log holds (built on first use, then extended per event)
        self._deleted: KnownDeletions | None = None
        #: which actor owns which Yjs client id (ownership.py)
        self.owners = Owners(doc.client_id)
        #: which client id is each connection's own (its sync step 2 may claim it)
        self.own_ids = OwnIds()
        #: held sync step 2s waiting for client ids' items, by client id (resync.py):
        #: set when an event carrying some is logged (``waking``)
        self._waking: dict[int, set[asyncio.Event]] = {}
        #: transaction observers of the doc (extensions'), muted for client edits
        self.doc_observers = DocObservers(doc)
        #: while a client's edit is applied: (inserted, deleted) ranges, so that document
        #: observers need not see its transaction (None otherwise: observe it)
        self.current_change: tuple[Ranges, Ranges] | None = None
        #: admitted clocks match the document (no commit or apply has failed)
        self._exact_reach = True
        self.broken: BaseException | None = None
        #: the live document holds what is in no event (Room.diverged): never snapshot it
        self._diverged = False
        self.closed = False
        self.stopping = False

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"room:{self.name}")

    async def stop(self) -> None:
        """Finish what is queued, then stop the pipeline."""
        self.stopping = True  # a store that refuses writes is not waited out any more
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        if self._learning is not None:
            self._learning.cancel()  # (its room gone, what it learns is of no use)
        if self._presence_check is not None:
            self._presence_check.cancel()
        self._send_presence()  # (what is pending goes now: nobody flushes it later)
        if self._task is not None and not self._task.done():
            try:
                await self.flush()
            except StoreError:
                if not isinstance(self.broken, DeletedMeanwhile):
                    raise
                # its log was deleted under it: what was queued was refused, and those
                # waiting for it were told (Room._fail); the deletion goes on
            await cancel_and_wait(self._task)
        self.closed = True

    # --- per-room state of extensions -----------------------------------------------------

    def state(self, kind: type[S], factory: Callable[[Room], S] | None = None) -> S:
        """The room's instance of `kind`, made by ``factory(room)`` (default ``kind(room)``)
        the first time it is asked for."""
        found = self._states.get(kind)
        if found is None:
            found = self._states[kind] = (factory or kind)(self)  # type: ignore[call-arg]
        return found

    def peek(self, kind: type[S]) -> S | None:
        """The room's instance of `kind` if one was made, else None."""
        return self._states.get(kind)

    @property
    def consistent(self) -> bool:
        """True when the doc equals the fold of events 1..seq (no server change in flight)."""
        return not self._server_change_in_flight and self.broken is None and not self._diverged

    @property
    def idle(self) -> bool:
        return not self.peers and not self._inbox and not self._server_change_in_flight

    def diverged(self, error: BaseException) -> None:
        """The live document changed outside the pipeline (an extension's hook wrote into
        it): it holds what no event has. Nothing snapshots it from now on, and the room
        is dropped before anything else queued (_fail: its clients reconnect with 1013
        and the next load is the log's). Before the room starts (loading) `error` is
        raised: the load starts again."""
        self._diverged = True
        if self._task is None:
            raise error
        self._inbox.insert(0, _Fail(error))
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed and applied."""
        if self._task is None or self._task.done():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._push(_Barrier(fut))
        await fut

    # --- connections -------------------------------------------------------------------

    def join(self, peer: Peer, *, sync_step1: bool = True) -> None:
        """Register a connection; send it the server's step 1 (unless its protocol sends
        that in answer to the client's) and the known presence."""
        self.peers[peer.id] = peer
        if sync_step1:
            peer.send(P.encode_sync_step1(self.doc.get_state()))
        if self.presence.entries:
            peer.send(P.encode_awareness(self.presence.payload()))

    def leave(self, peer: Peer) -> None:
        self.own_ids.left(peer.id)
        if self.peers.pop(peer.id, None) is None:
            return
        removed = self.presence.leave(peer.id)
        if removed:
            self._broadcast_presence(removed)
            self.observer.awareness(self, P.encode_awareness_entries(removed))

    def _broadcast_events(
        self, events: list[Event], authors: frozenset[str] = frozenset()
    ) -> list[tuple[int, bytes]]:
        """Send durable events to every connection, their authors' included.

        The echo to the author is what y-websocket's server and Hocuspocus do, and editor
        bindings rely on it: y-prosemirror (Tiptap) keeps a stale selection after a
        client-side undo until the next transaction, and without the echo that next
        transaction is someone else's edit, which the binding then fails to draw.

        A batch goes out as merged updates (one frame per MERGE_CHUNK events) instead of
        one frame per event: a client that receives a burst of thousands of keystrokes
        then gets a handful of frames, which keeps send queues short and saves a
        websocket write per event per connection.

        ``authors`` (connection ids) get the frames last: they already hold their edits,
        everyone else is waiting for them (a socket write on loopback costs tens of µs,
        the time it takes to wake the reader on the other end).

        Returns the merged updates, each with the number of events it holds, in order
        (the room applies them to its document as they are, see ``_apply_merged``)."""
        if not events:
            return []
        merged = _merged([ev.update for ev in events])
        for _, update in merged:
            frame = P.encode_sync_update(update)
            if not authors:
                self.broadcast(frame)
                continue
            later = []
            for pid, peer in list(self.peers.items()):
                if pid in authors:
                    later.append(peer)
                else:
                    peer.send(frame)
            for peer in later:
                peer.send(frame)
        return merged

    def broadcast(self, frame: bytes, exclude: str | None = None) -> None:
        for pid, peer in list(self.peers.items()):
            if pid != exclude:
                peer.send(frame)

    # --- inbound from clients (never blocks) ------------------------------------------

    def answer_sync_step1(self, peer: Peer, state_vector: bytes) -> None:
        if self._server_change_in_flight:
            self._deferred_sync.append((peer, state_vector))
            return
        try:
            update = subdoc_options.restored(self.doc, self.doc.get_update(state_vector))
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            raise ProtocolError(f"sync step 1 carries an invalid state vector: {e}") from e
        peer.send(P.encode_sync_step2(update))

    @property
    def empty(self) -> bool:
        """The document holds no item, and no update is queued for it."""
        if self.queued_edits:
            return False
        clocks = self.owners.clocks
        return not clocks if clocks is not None else self.doc.get_state() == b"\x00"

    def check_new_clients(self, update: bytes, cap: int, *, step2: bool = False) -> None:
        """Refuse (UpdateRejected, 4400) an update that writes items of more than `cap`
        client ids the document and the updates queued for it do not hold, before it is
        read past the cap (updates.too_many_new_clients). A sync step 2 into a document
        that holds nothing yet is not capped: a client bringing a whole document back
        into a fresh database. 0: no cap."""
        if not cap or (step2 and self.empty):
            return
        clocks = self.owners.clocks
        known: Container[int] = clocks if clocks is not None else self._live_state()
        why = too_many_new_clients(update, known, cap)
        if why is not None:
            raise UpdateRejected(why)

    def announced(self, peer_id: str) -> frozenset[int]:
        """The Yjs client id connection `peer_id` announced as its own (the one its first
        presence update named: ownership.OwnIds), which its sync step 2 may claim. Not
        every id its presence names: a provider forwards the other tabs' states."""
        return self.own_ids.own(peer_id)

    def note_presence(self, peer_id: str, payload: bytes) -> None:
        """Connection `peer_id` sent presence update `payload` (admitted: it decodes);
        its first one says which client id is its own (ownership.OwnIds)."""
        if self.own_ids.noted(peer_id):
            return
        try:
            entries = P.decode_awareness(payload, 1)
        except FrameTooLarge:
            entries = []  # more than one: whose is not said
        self.own_ids.first(peer_id, entries)

    def receive_update(
        self,
        peer: Peer,
        update: bytes,
        *,
        reply_to_step1: bool = False,
        own: Container[int] | None = None,
        conn: str | None = None,
    ) -> bool:
        """Validate and queue a client's update. Returns False when it is a no-op: it
        adds no item and deletes nothing the log does not already hold (pycrdt's
        `Provider` echoes every update back; a step 2 re-sends the whole delete set).
        `reply_to_step1`: it answers the server's sync step 1 (while the store recovers
        lost edits, such an update may carry other users' items: ownership.py); `own`:
        then, the client ids it may claim (its connection's, see :meth:`announced`);
        `conn`: the id that connection's presence is noted under, when not `peer`'s."""
        if update == EMPTY_UPDATE:
            return False
        try:
            if not yrs_reads(update):  # (read ahead, in a worker thread: a large step 2)
                get_state(update)  # it decodes, or the sender is refused
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            why = unsupported(update) or not_v1(update, f"update does not decode: {e}")
            raise UpdateRejected(why) from e
        try:
            parsed = decode_update_meta(update)  # once, for both rules
        except UnsupportedType as e:
            raise UpdateRejected(str(e)) from e
        except ProtocolError as e:
            # refused even when it would change nothing: yrs reads a v2 update as an
            # empty v1 one followed by bytes it ignores, and that was dropped silently
            raise UpdateRejected(not_v1(update, f"update does not parse: {e}")) from e
        owners = self.owners
        if not owners.surely_new(update, parsed) and not self._adds_anything(
            update, parsed, peer.id
        ):
            return False
        # the attribution rule: forged client ids and would-be pending items are refused
        others = self.own_ids.others(conn or peer.id) if own is not None else ()
        reach = owners.admit(
            peer.actor,
            update,
            self._live_state,
            parsed,
            step2=reply_to_step1,
            own=own,
            others=others,
        )
        meta: dict[str, Any] = {"conn": peer.id}
        if own is not None:
            relays = sorted(c for c in reach if c not in own)
            if relays:  # written, not claimed: a reload decides the same (ownership.py)
                meta["relays"] = relays
        self._push(_ClientUpdate(peer, update, meta, reach, parsed.deletes))
        if not self.queued_edits:
            self.queued_since = time.monotonic()
        self.queued_bytes += len(update)
        self.queued_edits += 1
        pending = self._pending_sv.setdefault(peer.id, {})
        for client, ranges in parsed.structs.items():
            if ranges and ranges[-1][1] > pending.get(client, 0):
                pending[client] = ranges[-1][1]
        return True

    def awaiting(self) -> str:
        """What the room's task is waiting for now, in words (for the log of edits that
        wait: Committer's watch). Read off its coroutines' chain, which costs nothing
        while nobody asks."""
        task = self._task
        if task is None or task.done():
            return "nothing (its task has ended)"
        names = []
        coro: Any = task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            names.append(coro.cr_code.co_name)
            coro = coro.cr_await
        for name, words in _AWAITS:
            if name in names:
                return words
        # (none of the above: no wait on the store; the innermost name, for a developer)
        return f"its own work (internally {names[-1]})" if names else "nothing"

    def ready_part(self, update: bytes) -> bytes | None:
        """The part of `update` that applies now, against what the document and the
        updates queued for it hold (updates.ready_part: a step 2 that waits for another
        user's edits, resync.py)."""
        clocks = self.owners.clocks
        known = clocks if clocks is not None else self._live_state()
        return ready_part(update, lambda client: known.get(client, 0))

    def clock(self, client: int) -> int:
        """The clock up to which the document, with the updates queued for it, holds
        `client`'s items."""
        clocks = self.owners.clocks
        return (clocks if clocks is not None else self._live_state()).get(client, 0)

    def holds(self, client: int, clock: int) -> bool:
        """Whether the document, with the updates queued for it, holds `client`'s items
        below `clock` (what an update past a gap waits for: resync.py)."""
        return self.owners.holds(client, clock, self._live_state)

    @contextlib.contextmanager
    def waking(self, clients: Iterable[int], wake: asyncio.Event) -> Iterator[None]:
        """Set `wake` each time an event carrying items of one of `clients` is logged
        (applied here: from a client, another process or the server), while the block
        runs: what a sync step 2 held for other users' edits waits on (resync.py)."""
        clients = tuple(clients)
        for client in clients:
            self._waking.setdefault(client, set()).add(wake)
        try:
            yield
        finally:
            for client in clients:
                waiting = self._waking.get(client)
                if waiting is not None:
                    waiting.discard(wake)
                    if not waiting:
                        del self._waking[client]

    def _logged_clients(self, clients: Iterable[int]) -> None:
        """An event carrying items of `clients` was applied: wake who waits for them."""
        for client in clients:
            for wake in self._waking.get(client, ()):
                wake.set()

    def _live_state(self) -> dict[int, int]:
        return P.decode_state_vector(self.doc.get_state())

    def _adds_anything(
        self, update: bytes, meta: UpdateMeta | None = None, peer_id: str | None = None
    ) -> bool:
        """The no-op rule (known.py): against the live document's state vector and the
        deletions logged so far; the cost is the update's, not the document's. `meta`:
        the update's, when it was read already; `peer_id`: its sender's, whose updates
        still queued count too."""
        deleted = self.deletions()
        if meta is not None and update[:1] == b"\x00":
            # no structs at all (a deletion, typed or echoed): the diff against the state
            # vector would be its own delete set, so that is what is checked, without it
            return deleted.adds_to(meta.deletes)
        if not adds_anything(update, self.doc.get_state(), deleted):
            return False
        pending = self._pending_sv.get(peer_id) if peer_id is not None else None
        if (
            not pending
            or meta is None
            or meta.deletes
            or any(c not in pending for c in meta.structs)
        ):
            return True
        # its items may all be queued already, not applied yet (an update sent as the
        # connection opened, then the step 2 that carries it): against those too
        state = P.decode_state_vector(self.doc.get_state())
        for client, end in pending.items():
            if end > state.get(client, 0):
                state[client] = end
        return adds_anything(update, P.encode_state_vector(state), deleted)

    def deletions(self) -> KnownDeletions:
        """Every deletion the log holds: the live document's delete set, and deletions
        of items it does not hold yet (pending in Yjs). Read from the document once per
        room, then extended by each event as it is applied: so it lags the document only
        while a server change's append is awaited (its change is in the document, the
        event not yet applied), which the pipeline's own turns never see."""
        if self._deleted is None:
            # once per room: everything deleted in the document as loaded
            self._deleted = KnownDeletions.of_doc(self.doc)
        return self._deleted

    def _note_deletions(self, dels: Ranges) -> None:
        """Add an applied update's delete set to the union."""
        if self._deleted is not None:
            self._deleted.add(dels)

    def _note_logged(
        self,
        actor: str,
        update: bytes,
        relays: Iterable[Any] = (),
        meta: UpdateMeta | None = None,
    ) -> None:
        """An applied event this room did not admit (a server change, one from another
        process or the store): its deletions to the union and its new client ids (but
        those it relayed) to `actor`, from one read of it (`meta`, when read already).
        One that does not parse did not apply either."""
        if meta is None:
            try:
                meta = decode_update_meta(update)
            except ProtocolError:
                return
        self._note_deletions(meta.deletes)
        self.owners.record(actor, update, meta, relays)
        if self._waking:
            self._logged_clients(meta.structs)

    @property
    def awareness(self) -> dict[int, Entry]:
        """The presence entries by Yjs client id (clock, state, announcing connection)."""
        return self.presence.entries

    def receive_awareness(
        self,
        peer: Peer,
        payload: bytes | Sequence[tuple[int, int, str]],
        *,
        relayed: bool = False,
    ) -> None:
        """Merge presence entries (newer clocks win: an encoded update, or its entries
        checked by presence.PresenceGuard.admit) and relay them to the connections (at
        the next loop turn, with the other changes of this one: _broadcast_presence).
        ``relayed``: they come from another process (fan-out), so hooks do not see them."""
        accepted = self.presence.accept(
            peer.id, payload, self.peers, tell=None if relayed else peer.send
        )
        if accepted:
            # echo to the sender too: y-websocket clients close sockets silent for 30 s
            self._broadcast_presence(accepted)
            if not relayed:
                self.observer.awareness(self, P.encode_awareness_entries(accepted))
            self._watch_presence()

    def receive_relayed_presence(
        self, peer: Peer, payload: bytes, generation: int | None = None
    ) -> None:
        """Presence another process relayed (fan-out), announced in a room of the
        document of `generation` there (its message names it). States of another
        document of the name are dropped, never relayed: a process whose room still
        holds a deleted document (its deletion's message held on a stalled link to
        Redis) publishes its connections' cursors, which would show in the new
        document's. A room that does not know its own generation yet asks the store
        (once per generation; what comes meanwhile waits behind, in order). None (an
        older process's message, or a room that does not know its generation): taken,
        as before."""
        if not self._presence_held:
            ours = self._presence_ours(generation)
            if ours is not None:
                if ours:
                    self.receive_awareness(peer, payload, relayed=True)
                return
        self._presence_held.append((peer, payload, generation))
        if self._presence_check is None:
            self._presence_check = asyncio.create_task(
                self._check_presence(), name=f"presence generation of {self.name}"
            )

    def _presence_ours(self, generation: int | None) -> bool | None:
        """Whether relayed presence of `generation` is of the room's document (None:
        unknown until the store says)."""
        if (
            generation is None
            or generation == self.generation
            or generation in self._presence_generations
        ):
            return True
        if self.generation is None and generation not in self._other_generations:
            if self.generation_of is not None:
                return None
            return True
        said = log.debug if generation in self._other_presence else log.info
        if len(self._other_presence) < 64:
            self._other_presence.add(generation)
        said(
            "room %s: dropped presence of another document of the name (generation %d, "
            "the room's %s): a late message of one deleted or replaced since",
            self.name, generation, self.generation, extra={"doc": self.name},
        )  # fmt: skip
        return False

    async def _check_presence(self) -> None:
        """Take the held presence in order, reading the name's generation for the
        first of a generation not known to be the room's or another's."""
        try:
            while self._presence_held:
                peer, payload, generation = self._presence_held[0]
                ours = self._presence_ours(generation)
                if ours is None and generation is not None and self.generation_of is not None:
                    try:
                        now = await self.generation_of(self.name)
                    except Exception as e:  # (unknown: taken, as before)
                        log.debug("room %s: the generation of its document could not be "
                                  "read (%s)", self.name, e)  # fmt: skip
                        now = generation
                    if now == generation:
                        self._presence_generations.add(generation)
                    elif len(self._other_generations) < 64:
                        self._other_generations.add(generation)
                    else:  # (no room to remember it: dropped as the room's own is unknown)
                        self._presence_held.pop(0)
                    continue
                self._presence_held.pop(0)
                if ours and not self.stopping and self.broken is None:
                    try:
                        self.receive_awareness(peer, payload, relayed=True)
                    except PalimpsestError as e:  # (as the fan-out's own call says it)
                        log.error("room %s: bad presence relayed: %s", self.name, e)
        finally:
            self._presence_check = None

    def _broadcast_presence(self, entries: Iterable[tuple[int, int, str]]) -> None:
        """Relay presence changes to every connection, the sender included: at the next
        loop turn, in one frame with every other change made until then, one entry per
        client (the newest: what the room accepts only ever moves a client's clock on,
        or removes it at its clock). y-protocols' awareness message carries many
        clients. A room of N providers filling up, or renewing every 15 s, changes N
        states at once, and every provider sends back each frame that changed something
        for it: one frame per change made N^2 frames each way, which a busy process
        driving hundreds of providers could not keep up with (nor could the server).
        A newcomer that joins before the frame goes gets the changes in its snapshot
        and again in the frame (it ignores a clock it holds). A frame holds at most
        ``presence_batch`` entries, the room's limit on states: a provider sends back
        what it applies, and the states held plus those removed within a turn could be
        more. Changes that reach it go at once."""
        for client, clock, state in entries:
            self._presence_out[client] = (clock, state)
            if len(self._presence_out) >= self.presence_batch:
                self._send_presence()
        if self._presence_out and self._presence_flush is None:
            self._presence_flush = asyncio.get_running_loop().call_soon(self._send_presence)

    def _send_presence(self) -> None:
        """Send the presence changes pending (_broadcast_presence) as one frame."""
        if self._presence_flush is not None:
            self._presence_flush.cancel()
            self._presence_flush = None
        out, self._presence_out = self._presence_out, {}
        if not out or not self.peers:
            return
        entries = [(client, clock, state) for client, (clock, state) in out.items()]
        self.presence_frames += 1
        self.broadcast(P.encode_awareness(P.encode_awareness_entries(entries)))

    def _watch_presence(self) -> None:
        """Make sure the presence timer runs while there are states: one timer per room,
        due when the least recently renewed state would expire."""
        if self._presence_timer is not None or self.stopping or self.broken is not None:
            return
        oldest = self.presence.oldest()
        if oldest is None:
            return
        delay = max(0.0, oldest + self.presence_timeout - time.monotonic())
        self._presence_timer = asyncio.get_running_loop().call_later(delay, self._expire_presence)

    def _expire_presence(self) -> None:
        """Remove the states not renewed within ``presence_timeout`` and tell everyone,
        as y-websocket's server does (y-protocols' outdated check): a frozen or throttled
        tab whose socket still answers pings renews nothing, and its cursor would be
        every newcomer's. Clients renew every 15 s; one that is alive and sees its own
        state removed re-announces it at a higher clock, which is accepted.

        A state relayed from another process expires here too, so that one of a process
        that died goes; its own process removes it at about the same time and publishes
        that, and whichever removal comes second changes nothing (a null for a client
        not here is only remembered). Only this process's connections' removals are
        published (hooks see them as any presence change)."""
        self._presence_timer = None
        if self.stopping or self.broken is not None:
            return
        expired = self.presence.expire(time.monotonic() - self.presence_timeout)
        if expired:
            self._broadcast_presence((c, e.clock, "null") for c, e in expired)
            own = [(c, e.clock, "null") for c, e in expired if e.peer_id in self.peers]
            if own:
                self.observer.awareness(self, P.encode_awareness_entries(own))
        self._watch_presence()

    def send_awareness(self, peer: Peer) -> None:
        peer.send(P.encode_awareness(self.presence.payload()))

    # --- server-made changes and peers ---------------------------------------------------

    async def server_change(
        self,
        actor: str,
        kind: str,
        change: Callable[[Doc[Any]], Any],
        meta: dict[str, Any] | None = None,
        *,
        always: bool | Callable[[], bool] = False,
        update: bytes | None = None,
    ) -> Event | None:
        """Run `change(doc)` in the pipeline; log what it changed as one event of `kind`.

        Returns the event, or None when the change changed nothing (no event), unless
        `always`: then a change of nothing is logged too, with an empty update (a marker,
        such as the end of an undo group); a callable `always` is asked after `change`
        ran. The event's meta is a copy of `meta` as
        `change` left it: what the change found (an undo's reverted seqs, the seq it was
        made at) may be filled in there.

        A change of CHECKED_KINDS is shown to the extensions' ``on_server_update`` first,
        made on a copy of the document (`update`: the update `change` applies, when it
        is known beforehand): one of them may refuse it, and nothing is logged."""
        self.observer.server_change(self, actor, kind)  # (an extension may refuse it)
        if isinstance(self.broken, DeletedMeanwhile):  # (_push says "reloaded")
            raise type(self.broken)(self.name)  # deleted, or replaced
        fut: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()
        meta = {} if meta is None else meta
        self._push(_ServerChange(actor, kind, change, meta, fut, always, update))
        return await fut

    async def import_update(
        self, actor: str, update: bytes, meta: dict[str, Any] | None = None
    ) -> Event | None:
        """Apply a Yjs v1 `update` brought from elsewhere (another server's document, a
        backup) as one event of kind ``import`` by `actor`, through the pipeline as a
        server change: durable first, then applied and broadcast. It may write under any
        client id (an admin's move of a document, whose writers' tabs may still be open)
        and claims none of them, but the server's stays the server's
        (ownership.imported_clients, in the event's ``relays``). Refused
        (UpdateRejected, 400) when it does not decode, or leaves a gap or names items
        the document lacks (it could only wait as pending). None when it adds nothing."""
        try:
            get_state(update)
            read = decode_update_meta(update)
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            why = unsupported(update) or (
                EMPTY_BYTES if not update else f"the body is not a Yjs v1 update: {e}"
            )
            raise UpdateRejected(why) from e
        out = {"format": "update", **(meta or {})}
        relays = imported_clients(read, self.owners.server)
        if relays:
            out["relays"] = relays

        def change(doc: Doc[Any]) -> None:
            try:
                self.owners.admit(actor, update, self._live_state, read, imported=True)
            except UpdateGap as e:  # (its words are for a client, which re-syncs)
                raise UpdateRejected(
                    f"{e.detail}: import the document's whole state, or its updates in order"
                ) from None
            try:
                with doc.transaction(origin=ServerOrigin(actor, IMPORT_KIND)):
                    doc.apply_update(update)
            except FATAL:
                raise
            except BaseException as e:  # pyo3 PanicException is one
                self._exact_reach = False  # admitted, not applied: clocks ran ahead
                raise UpdateRejected(f"the update does not apply: {e}") from None

        return await self.server_change(actor, IMPORT_KIND, change, out, update=update)

    async def log_loaded_change(self, updates: Sequence[bytes]) -> Event:
        """Log what an ``on_load`` hook wrote into the document (seeding it, as a
        Hocuspocus ``onLoadDocument`` does) as one event of kind ``seed`` by ``server``,
        before the room starts and anyone sees it: a seed that was not logged was in
        snapshots but not in the log, and after a crash its items, which carry the
        server's client id, were refused in every client's step 2 (4403)."""
        assert self._task is None, "only before the room starts"
        update = updates[0] if len(updates) == 1 else merge_updates(*updates)
        ts = self.current_ts = now_ms(self.name)
        new = NewEvent(SEED_ACTOR, SEED_KIND, update, {"by": "on_load"}, ts)
        # not held: a store that refuses fails the load, and the next one seeds again.
        # Another process may have logged events since the load; a server change among
        # them (its own seed, maybe) took the server's clocks this seed's items have: the
        # load starts again, on the document as it is now (Rooms._load; its clients wait).
        async with self._reader.server_changes(self.name):
            for ev in await self._reader.read(self.name, after=self.seq):
                if self.owners.server in ev.clients:
                    raise SeededMeanwhile(
                        f"{self.name}: another process made a server change (event "
                        f"{ev.seq}, {ev.kind}) while this one seeded the document"
                    )
            stored = await self._append([new])
            return await self._own_event(stored, update)

    async def _append(
        self,
        events: Sequence[NewEvent],
        hold: Callable[[], bool] | None = None,
        recheck: Callable[[Sequence[NewEvent]], Sequence[NewEvent]] | None = None,
        exact: bool = False,
    ) -> list[Event]:
        """Commit `events` as the room's (floor: its seq; its generation): a log deleted
        under the room refuses them, DeletedMeanwhile; with `exact`, a log whose head
        is not the room's seq any more too, HeadMoved (Committer.append). A room whose
        document had no row when it loaded learns the generation its first append made
        (one read, once, in a task of its own: no commit waits for it; the document
        deleted and made again before it would be taken for the room's own, as every
        document was before generations)."""
        try:
            stored = await self._committer.append(
                self.name,
                events,
                hold=hold,
                floor=self.seq,
                generation=self.generation,
                recheck=recheck,
                exact=exact,
            )
        except DeletedMeanwhile as e:
            raise await self._deleted_or_replaced(e) from None
        if (
            self.generation is None
            and stored
            and self.generation_of is not None
            and self._learning is None
        ):
            self._learning = asyncio.create_task(
                self._learn_generation(self.generation_of), name=f"generation of {self.name}"
            )
        return stored

    async def _deleted_or_replaced(self, error: DeletedMeanwhile) -> DeletedMeanwhile:
        """What the store's refusal of the room's append means: ReplacedMeanwhile when
        the name holds a document of another generation now and no deletion was
        recorded since the load (``palimpsest copy --replace`` wrote it under the room),
        else `error` (deleted). Two reads, on a refusal only."""
        if isinstance(error, ReplacedMeanwhile) or self.replaced_of is None:
            return error
        try:
            replaced = await self.replaced_of(self)
        except Exception as e:  # (the refusal stands; only its words are in doubt)
            log.warning("%s: whether it was replaced could not be read (%s)", self.name, e)
            return error
        return ReplacedMeanwhile(self.name) if replaced else error

    async def _learn_generation(self, read: Callable[[str], Awaitable[int | None]]) -> None:
        try:
            generation = await read(self.name)
        except Exception as e:  # the events are stored: only the check is lost
            failures = self.generation_failures
            tail = failures.failed(self.name) if failures is not None else ""
            (log.debug if tail is None else log.warning)(
                "%s: its generation could not be read (%s): its appends are checked by "
                "their floor alone%s", self.name, e, tail or "", extra={"doc": self.name},
            )  # fmt: skip
            return
        if self.generation_failures is not None:
            self.generation_failures.worked()
        if self.generation is None:
            self.generation = generation

    async def _own_event(self, stored: list[Event], update: bytes) -> Event:
        """An event of the server's own (a server change, a seed) just appended, whose
        change the live document has already: what another process appended before it
        first, then it counted, noted, broadcast and told to the hooks."""
        ev = stored[0]
        if ev.seq != self.seq + 1:
            await self._catch_up_held(ev.seq - 1)
        self.seq = ev.seq
        self.events_since_snapshot += 1
        self.applied_bytes += len(update)
        self._note_logged(ev.actor, update, ev.meta.get("relays", ()))
        if update != EMPTY_UPDATE:
            self.broadcast(P.encode_sync_update(update))
        self.observer.applied(self, ev, ServerOrigin(ev.actor, ev.kind))
        self._committed(stored)
        return ev

    def receive_peer_events(
        self,
        events: list[Event],
        *,
        from_store: bool = False,
        generation: int | None = None,
        sender: str = "",
    ) -> None:
        """Events another process logged (fan-out): applied in seq order, gaps read from
        the store. `from_store`: read from the store, not received on the bus (their
        origin says so: PeerOrigin's instance "store", as the gaps').

        `generation`: that of the document they were appended to (their message names
        it). Events of another document of the name are dropped, never applied nor
        sent: a message delayed on its way (a process whose link to Redis stalled) can
        arrive after the document was deleted and its name written again, with seqs
        that follow the new document's. A room that does not know its own generation
        yet (its document had no row when it loaded) reads the store's once, in its
        pipeline (_of_another_document). None (a message of an older process, or of a
        new document's first commit): taken by its seqs, as before."""
        if generation is not None and self.generation is not None:
            if generation != self.generation:
                self._drop_other(generation, events, sender)
                return
        self._push(_PeerEvents(events, from_store, generation, sender))

    async def _of_another_document(self, item: _PeerEvents) -> bool:
        """Whether `item` holds events of another document of the room's name than the
        room's (dropped: said once per generation at INFO, then at DEBUG)."""
        theirs = item.generation
        if theirs is None or theirs == self.generation:
            return False
        if self.generation is None and theirs not in self._other_generations:
            if self.generation_of is None:
                return False
            try:
                now = await self.generation_of(self.name)
            except Exception as e:  # (unknown: taken by their seqs, as before)
                log.debug("room %s: the generation of its document could not be read (%s)",
                          self.name, e)  # fmt: skip
                return False
            if now == theirs:  # the document the name holds: the room's own
                if self.generation is None:
                    self.generation = theirs
                if self.generation == theirs:
                    return False
        return self._drop_other(theirs, item.events, item.sender)

    def _drop_other(self, generation: int, events: list[Event], sender: str) -> bool:
        said = log.debug if generation in self._other_generations else log.info
        if len(self._other_generations) < 64:
            self._other_generations.add(generation)
        seqs = f"{events[0].seq}..{events[-1].seq}" if events else "none"
        said(
            "room %s: dropped events (seq %s, from %s) of another document of the name "
            "(generation %d, the room's %s): a late message of one deleted or replaced "
            "since", self.name, seqs, sender or "?", generation, self.generation,
            extra={"doc": self.name},
        )  # fmt: skip
        return True

    # --- the pipeline ----------------------------------------------------------------------

    def _push(self, item: _Item) -> None:
        if self.broken is not None:
            raise StoreError(f"room {self.name!r} is being reloaded")
        self._inbox.append(item)
        if self._task is None or not self._task.done():
            # a stopped room's work is never taken up: announced, it would cost every
            # later commit a turn of the loop (``Committer.coming``)
            self._committer.announce(self.name, self)
        self._wake.set()
        if self._peer_arrived is not None and isinstance(item, _PeerEvents):
            self._peer_arrived.set()

    async def _run(self) -> None:
        # The document's observers stay muted from one batch of client edits to the next
        # while the room is busy (unsubscribing and subscribing them again costs more than
        # a keystroke: doc_observers.py), and are subscribed again before anything else
        # changes the document (a server change; an event from elsewhere, in _apply) and
        # whenever the room goes idle. Only this task changes the live document.
        observers = self.doc_observers
        observers.hold()
        try:
            await self._pipeline()
        finally:
            observers.release()
            self._committer.withdraw(self.name, self)  # what is left is never taken up

    async def _pipeline(self) -> None:
        observers = self.doc_observers
        while True:
            if not self._inbox:
                self._taken = []  # (held no longer than its work)
                observers.resume()
                self._wake.clear()
                await self._wake.wait()
                continue
            items, self._inbox = self._inbox, []
            self._taken = items
            self._committer.withdraw(self.name, self)
            i = 0
            checked = False  # the snapshot policy saw the last step already
            try:
                while i < len(items):
                    item = items[i]
                    if isinstance(item, _ClientUpdate):
                        # one batch per commit, bounded: the first edits of a burst
                        # are broadcast (and checkpointed) without waiting for the last
                        batch, between, j = _client_batch(items, i, self.max_batch)
                        await self._commit_client_updates(batch, between)
                        i = j
                        # what the batch passed over and did not need before its own
                        # events (seqs after them, or the commit failed): in their order
                        for peer in between:
                            if not await self._of_another_document(peer):
                                await self._apply_peer_events(peer.events, peer.from_store)
                        await self._maybe_snapshot()
                        checked = True
                        continue
                    checked = False
                    if isinstance(item, _ServerChange):
                        await self._run_server_change(item)
                    elif isinstance(item, _PeerEvents):
                        if not await self._of_another_document(item):
                            await self._apply_peer_events(item.events, item.from_store)
                    elif isinstance(item, _Barrier):
                        if not item.future.done():
                            item.future.set_result(None)
                    elif isinstance(item, _Fail):
                        i += 1
                        raise item.error
                    i += 1
            except BaseException as e:
                if isinstance(e, asyncio.CancelledError):
                    raise
                if isinstance(e, HookWroteDocument):  # the dispatcher said whose hook
                    log.error("room %s: %s", self.name, e)
                elif isinstance(e, DeletedMeanwhile):  # the store refused its append
                    log.warning("room %s: %s; dropping the room", self.name, e)
                else:
                    log.exception("room %s pipeline failed", self.name)
                # and what was queued meanwhile: its waiters are told too
                rest, self._inbox = items[i:] + self._inbox, []
                self._fail(e, rest)
                return
            if not checked:
                await self._maybe_snapshot()

    async def _commit_client_updates(
        self, batch: list[_ClientUpdate], between: list[_PeerEvents]
    ) -> None:
        queued = sum(len(u.update) for u in batch)
        try:
            await self._commit_and_apply(batch, between)
        finally:
            self.queued_bytes -= queued
            self.queued_edits -= len(batch)
            # the rest waits from now on: it came while this batch was on its way
            self.queued_since = time.monotonic() if self.queued_edits else None
            if not self.queued_bytes:
                self._pending_sv.clear()

    async def _commit_and_apply(
        self, batch: list[_ClientUpdate], between: list[_PeerEvents]
    ) -> None:
        """Commit `batch`, then apply it. `between`: other processes' events queued
        among the batch's updates (taken along, _client_batch); those that come before the
        batch in the log are applied first, those of them that arrived meanwhile too, so
        the log's order holds without reading them from the store again. The rest is the
        caller's to apply (after the batch, or in order if the commit failed).

        The batch is checked against the log again (``_still_adding``) before it is
        committed when some of its senders have left, and before each retry when the
        store refused it (the committer's ``recheck``): what other processes logged of it
        meanwhile is left out, of the append and of the batch alike, so that the events
        stored and the updates applied still pair up; a batch left with nothing commits
        nothing (the other processes' events, queued, bring it)."""
        if any(u.peer.id not in self.peers for u in batch):
            # their senders have left (closed: this process was cut off from the store,
            # server.cutoff), and may have re-sent them to another process meanwhile
            still = self._still_adding(batch)
            if len(still) < len(batch):
                log.info(
                    "room %s: %d of %d queued edits of connections that have left add "
                    "nothing to the log any more (other processes logged their changes "
                    "meanwhile): not logged again",
                    self.name, len(batch) - len(still), len(batch),
                )  # fmt: skip
                batch = still
            if not batch:
                return
        ts = now_ms(self.name)
        new = [NewEvent(u.peer.actor, "edit", u.update, u.meta, ts) for u in batch]
        of = {id(n): u for n, u in zip(new, batch, strict=True)}
        kept: list[NewEvent] = new

        def recheck(events: Sequence[NewEvent]) -> Sequence[NewEvent]:
            # (on the committer's task, before a retry; the room's own awaits the append)
            nonlocal kept
            still = {id(u) for u in self._still_adding([of[id(e)] for e in events])}
            kept = [e for e in events if id(of[id(e)]) in still]
            return kept

        try:
            # (floor: a log deleted under the room refuses it, DeletedMeanwhile)
            stored = await self._append(new, hold=self._hold, recheck=recheck)
        except StoreError as e:
            # Refused for good, or held past the bound. Nothing was logged, applied or
            # acknowledged: the senders come back later and re-send through sync step 2.
            if isinstance(e, StoreUnavailable):
                reason = (
                    f"the store refuses writes and {self.queued_bytes} bytes of edits are "
                    "waiting; reconnect later to re-send"
                )
            else:
                reason = f"{STORE_FAILED}; reconnect to re-send"
            self._exact_reach = False  # admitted, never applied: clocks ran ahead
            self._pending_sv.clear()  # (ahead too: what they re-send must count as new)
            log.warning(
                "room %s: commit failed (%s); closing %d senders with %d: %s",
                self.name, e, len({u.peer.id for u in batch}), e.close_code, reason,
            )  # fmt: skip
            gone = [u for u in batch if u.peer.id not in self.peers]
            for peer in {u.peer.id: u.peer for u in batch}.values():
                peer.close(e.close_code, reason[:120])
            if gone:  # nobody here to re-send them; their clients may still hold them
                # (a y-websocket client keeps its Y.Doc and re-sends what the server
                # lacks on reconnecting, here or to another process: lost only if the
                # client never comes back, a tab closed during the outage)
                actors = ", ".join(sorted({u.peer.actor for u in gone}))
                log.warning(
                    "room %s: %d bytes of edits by %s are not stored here: the store refused "
                    "them and their connections have left; a client that reconnects (to any "
                    "process) resends them, they are lost only if it never returns",
                    self.name, sum(len(u.update) for u in gone), actors,
                    extra={"doc": self.name, "user": actors},
                )  # fmt: skip
            return
        if len(kept) < len(new):  # held, and some of it was logged elsewhere meanwhile
            left = {id(e) for e in kept}
            batch = [u for n, u in zip(new, batch, strict=True) if id(n) in left]
        if not stored:  # all of it: their events, queued, are applied as they come
            return
        # Another process appended to the document since this room's seq: its events
        # are on their way through the fan-out, most often here already (queued behind
        # the batch, or arrived while it was committing). Those are applied from here;
        # only what is still missing is read from the store (a round trip: at 40 ms to
        # PostgreSQL, three each commit paid before, and the backlog grew).
        first = stored[0].seq
        if first != self.seq + 1:
            between.extend(self._take_peer_events())
            await self._apply_peer_runs(between, first)
            if self.seq < first - 1:
                await self._bus_or_read(first, between)
        await self._catch_up_held(first - 1)
        # Durable now: out before it is applied here, so that no one waits for the
        # document's upkeep (undo, attribution, the no-op rule's bookkeeping: ~200 µs of
        # a lone edit's ~1.6 ms in the server, bench/latency_timeline.py). Nothing runs
        # in between (no await), so a newcomer's sync answer still sees the document
        # either before the batch or after it. The updates were checked before they were
        # logged (they decode; the attribution rule admitted every item), so they apply;
        # should one still fail, the log holds it all the same, a reload meets the same
        # failure, and its sender is closed.
        merged = self._broadcast_events(stored, frozenset(u.peer.id for u in batch))
        # the document's observers stay muted across the batch (and the next ones): the
        # room's task holds them while it is busy (_run)
        try:
            if self.observer.merged_apply:
                self._apply_merged(stored, batch, merged)
            else:
                self._apply_each(stored, batch)
        finally:  # durable and sent, whether or not the live document took them
            self.events_since_snapshot += len(stored)
            self._committed(stored)

    def _apply_each(self, events: list[Event], batch: list[_ClientUpdate]) -> None:
        origins: dict[str, ClientOrigin] = {}
        for ev, u in zip(events, batch, strict=True):
            if not self._apply(ev, _origin_of(origins, u.peer), u.reach, u.deletes):
                u.peer.close(4400, f"update at seq {ev.seq} does not apply")

    def _apply_merged(
        self, events: list[Event], batch: list[_ClientUpdate], merged: list[tuple[int, bytes]]
    ) -> None:
        """Apply a committed batch of client edits as the merged updates it was broadcast
        in: one transaction per merged update instead of one per edit (applying
        MERGE_CHUNK keystrokes merged costs a small part of applying them one by one,
        and the merge was made for the broadcast anyway). Then each event goes through
        the room's bookkeeping and the extensions' before_apply / on_applied in order, as when
        applied alone, with the change it made handed over (``current_change``). Only
        when no hook reads the document per event (``Extension.reads_doc_per_event``)
        and the change of every edit is known (``_known_change``); otherwise, or when a
        merged update does not apply, one by one (re-applying what a failed merged
        update did integrate changes nothing)."""
        i = 0
        for n, update in merged:
            evs, part = events[i : i + n], batch[i : i + n]
            i += n
            if n == 1 or not self._exact_reach or self._deleted is None:
                self._apply_each(evs, part)
                continue
            try:
                with self.doc_observers.muted():
                    self.doc.apply_update(update)
            except FATAL:
                raise
            except BaseException as e:  # pyo3 PanicException is one
                if panicked(e):  # the document is broken: the room reloads (_fail)
                    raise DocumentBroken(evs[0], e) from None
                log.warning(
                    "room %s: events %d..%d merged do not apply (%r); one by one",
                    self.name, evs[0].seq, evs[-1].seq, e,
                )  # fmt: skip
                self._exact_reach = False
                self._apply_each(evs, part)
                continue
            origins: dict[str, ClientOrigin] = {}
            for ev, u in zip(evs, part, strict=True):
                self._apply(ev, _origin_of(origins, u.peer), u.reach, u.deletes, in_doc=True)

    def _still_adding(self, batch: list[_ClientUpdate]) -> list[_ClientUpdate]:
        """The updates of `batch` that still add anything to the log (known.still_adding)
        now that other processes' events are queued here, unapplied: those admitted
        while the room's appends were held may be in them already (their clients were
        closed, cut off from the store, and re-sent them to another process). Counted
        as logged: the document, and every event of another process the room has
        queued (of its own document, as far as it can tell without a read). One whose
        items are partly in those events inserts less than its admission counted: the
        changes of the room's edits are observed again from then on (_exact_reach)."""
        logged = [
            ev.update
            for x in (*self._taken, *self._inbox)
            if isinstance(x, _PeerEvents)
            and (x.generation is None or x.generation == self.generation)
            for ev in x.events
            if ev.seq > self.seq
        ]
        try:
            found = still_adding(
                [self._change_of(u) for u in batch], self._live_state(), self.deletions(), logged
            )
        except FATAL:
            raise
        except Exception:  # (when unsure, everything is logged: a no-op is harmless)
            log.exception("room %s: re-checking queued edits failed; logging them all", self.name)
            return batch
        if any(partly for _, partly in found):
            self._exact_reach = False
        return [u for u, (adds, _) in zip(batch, found, strict=True) if adds]

    def _change_of(self, u: _ClientUpdate) -> tuple[Ranges, Ranges] | None:
        """What `u` may add to the log, for known.still_adding: the items its admission
        found new (the others the document or the updates queued before it held) and
        its delete set, as read then; read again from the update once admitted clocks
        may have run ahead of the document (a commit or an apply failed)."""
        if not self._exact_reach:
            return change_of(u.update)
        dels = u.deletes if u.deletes is not None else deletions_of(u.update)
        return {c: [(s, e)] for c, (s, e) in u.reach.items() if e > s}, dels

    def _hold(self) -> bool:
        """Whether to keep waiting for a store that refuses writes (asked after each try)."""
        return not self.stopping and self.queued_bytes <= self.hold_max_bytes

    async def _run_server_change(self, item: _ServerChange) -> None:
        # Computed on the document as the log has it, one process at a time: its items
        # carry the server's one Yjs client id and continue its clock, so another
        # process making one at once (or a room behind the log: Redis down, a message
        # lost) wrote items with the same IDs, and one of the two applied nowhere. A
        # room behind also undid an older step than the one just acknowledged, and
        # diffed a text written whole against an old text. The store's turn
        # (server_changes) is held from the read of the log's head until the change is
        # appended; a store that cannot give it now is waited out. One that gives it but
        # cannot be read (a lone process's, whose room is never behind) is no reason to
        # refuse: the change is held like an edit until it takes the append.
        async with contextlib.AsyncExitStack() as turn:
            try:
                await self._wait_out(
                    lambda: turn.enter_async_context(self._reader.server_changes(self.name)),
                    "a server change",
                )
            except StoreError as e:
                if not item.future.done():
                    item.future.set_exception(e)
                return
            try:
                await self._catch_up()
            except DeletedMeanwhile:
                raise  # (the room holds a deleted document: dropped, the change told)
            except StoreError:
                pass
            await self._make_server_change(item)

    async def _wait_out(self, step: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run `step`, again while the store is unavailable (unless the room stops)."""
        delay = 0.05
        while True:
            try:
                await step()
                return
            except StoreUnavailable as e:
                if self.stopping:
                    raise
                if delay == 0.05:
                    log.warning("room %s: %s waits for the store: %s", self.name, what, e)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)

    async def _make_server_change(self, item: _ServerChange) -> None:
        captured: list[bytes] = []

        def capture(e: TransactionEvent) -> None:
            captured.append(e.update)

        self._server_change_in_flight = True
        self.doc_observers.resume()  # its transactions are observed (undo tracks them)
        try:
            if item.kind in EXACT_KINDS and item.update is None:
                await self._make_exact_change(item)
                return
            if self.observer.checks_server_updates and item.kind in CHECKED_KINDS:
                checked = self._checked(item)
                if checked is None:
                    return  # refused, failed, or no change: the future says which
                item.change = checked[0]
            sub: Subscription = self.doc.observe(capture)
            self.current_ts = now_ms(self.name)
            try:
                item.change(self.doc)
            except FATAL:
                raise
            except BaseException as e:  # pyo3 PanicException is one
                self.doc.unobserve(sub)
                if captured:
                    raise  # the doc changed and we cannot log it: reload the room
                if not item.future.done():
                    item.future.set_exception(e if isinstance(e, Exception) else RuntimeError(e))
                return
            self.doc.unobserve(sub)
            if not captured and not _always(item):
                if not item.future.done():
                    item.future.set_result(None)
                return
            if not captured:
                update = EMPTY_UPDATE
            else:
                update = captured[0] if len(captured) == 1 else merge_updates(*captured)
                # undo's and restore's copies of a subdocument: its options as logged
                update = subdoc_options.restored(self.doc, update, by_guid=True)
                subdoc_options.note(self.doc, update)
            new = NewEvent(item.actor, item.kind, update, dict(item.meta), self.current_ts)
            # held like client edits while the store refuses writes: the live doc already
            # has the change, so giving up means reloading the room
            stored = await self._append([new], hold=self._hold)
            ev = await self._own_event(stored, update)
            if not item.future.done():
                item.future.set_result(ev)
        finally:
            self._server_change_in_flight = False
            deferred, self._deferred_sync = self._deferred_sync, []
            for peer, sv_bytes in deferred:
                if peer.id in self.peers:
                    try:
                        self.answer_sync_step1(peer, sv_bytes)
                    except ProtocolError as e:
                        peer.close(e.close_code, str(e))

    async def _make_exact_change(self, item: _ServerChange) -> None:
        """A change of EXACT_KINDS: made on a copy of the document (_checked) and
        appended only while the log's head is still the room's seq (the store checks it
        in the append's transaction: Committer.append's `exact`), then made on the live
        document. The turn keeps other processes' server changes out, but not their
        clients' edits: one logged between the turn's read of the log and the append
        came after the change in the log, unseen by it, and survived it (a restore made
        through one process while its user typed through another kept what was typed
        just before, at the very seq that said it was the version). When the head moved
        on, the room reads what came and makes the change again, on the document as it
        is then, up to EXACT_TRIES times; the last try is appended after whatever came,
        merged with it as a concurrent edit is (edits that never stop)."""
        show = self.observer.checks_server_updates
        for attempt in range(EXACT_TRIES):
            self.current_ts = now_ms(self.name)
            worked = self._checked(item, show=show)
            if worked is None:
                return  # refused, failed, or no change: the future says which
            change, made = worked
            update = EMPTY_UPDATE
            if made is not None:  # (undo's and restore's copies of a subdocument)
                update = subdoc_options.restored(self.doc, made, by_guid=True)
            new = NewEvent(item.actor, item.kind, update, dict(item.meta), self.current_ts)
            last = attempt == EXACT_TRIES - 1
            try:
                # held like client edits while the store refuses writes
                stored = await self._append([new], hold=self._hold, exact=not last)
            except HeadMoved:
                seq = self.seq
                await self._wait_out(self._catch_up, "a server change reading the log")
                if self.seq == seq:  # nothing past it: the log went below it
                    raise await self._deleted_or_replaced(DeletedMeanwhile(self.name)) from None
                log.debug(
                    "room %s: %s made again: the log moved on from seq %d to %d before it "
                    "was appended", self.name, item.kind, seq, self.seq,
                )  # fmt: skip
                continue
            # logged: the live document has to have it now (one that does not apply is
            # raised, and the room reloads from the log)
            change(self.doc)
            if made is not None:
                subdoc_options.note(self.doc, update)
            ev = await self._own_event(stored, update)
            if not item.future.done():
                item.future.set_result(ev)
            return

    def _checked(
        self, item: _ServerChange, show: bool = True
    ) -> tuple[Callable[[Doc[Any]], Any], bytes | None] | None:
        """`item`'s change made on a copy of the live document and shown to the
        extensions (``on_server_update``; unless not `show`) before anything is logged or
        applied: a Yjs change cannot be taken back, so on the live document a refusal
        would have meant reloading the room. Returns what to run on the live document
        (the copy's update, the same items under the same client id; or the item's own
        change when its update was known beforehand) and that update (None for a
        marker), or None when the item's future is settled: refused, failed, or nothing
        to change."""
        fork: Doc[Any] = Doc(skip_gc=True, client_id=self.doc.client_id)
        fork.apply_update(self.doc.get_update())
        for name, root in self.doc.items():
            if root is not None:
                fork.get(name, type=type(root))
        change = item.change
        update = item.update
        try:
            if update is not None:
                try:
                    fork.apply_update(update)
                except FATAL:
                    raise
                except BaseException:  # pyo3 PanicException is one
                    # the live document refuses it too, its change says why
                    return change, update
            else:
                captured: list[bytes] = []
                sub = fork.observe(lambda e: captured.append(e.update))
                try:
                    item.change(fork)
                finally:
                    fork.unobserve(sub)
                if not captured:
                    if _always(item):
                        return change, None  # (a marker: nothing to check)
                    item.future.set_result(None)
                    return None
                made = captured[0] if len(captured) == 1 else merge_updates(*captured)
                origin = ServerOrigin(item.actor, item.kind)

                def change(live: Doc[Any]) -> None:
                    with live.transaction(origin=origin):
                        live.apply_update(made)

                update = made
            if show:
                self.observer.server_update(self, ServerUpdate(item.actor, item.kind, update, fork))
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            if not item.future.done():
                item.future.set_exception(e if isinstance(e, Exception) else RuntimeError(e))
            return None
        return change, update

    async def _apply_peer_events(self, events: list[Event], from_store: bool = False) -> None:
        events = sorted((e for e in events if e.seq > self.seq), key=lambda e: e.seq)
        if not events:
            return
        # (they are durable, and so is what comes before them: a store that cannot be
        # read for a moment is waited out, not a reason to drop the room)
        await self._catch_up_held(events[0].seq - 1)
        # the events that follow the document without a gap go out before they are
        # applied here, as a client's committed batch does (_commit_and_apply): they
        # are durable, and were checked by the process that logged them. Unless one
        # does not read as a well-formed update now (one logged by an older version, or
        # written into the store by hand): it may break the document (DocumentBroken),
        # and a client that had it raw would keep a text the reload does not give.
        # From it on, each is applied first, then sent (below).
        run: list[tuple[Event, UpdateMeta]] = []
        for ev in events:
            if ev.seq != self.seq + 1 + len(run):
                break
            try:
                read = decode_update_meta(ev.update)  # (once: _apply takes it along)
            except ProtocolError:
                break
            run.append((ev, read))
        via = "store" if from_store else "peer"
        self._broadcast_events([ev for ev, _ in run])
        for ev, read in run:
            self._apply(ev, PeerOrigin(ev.actor, via), read=read)
        applied = []
        for ev in events[len(run) :]:  # after a gap (or a repeat): read, applied, sent
            if ev.seq <= self.seq:
                continue
            if ev.seq != self.seq + 1:
                await self._catch_up_held(ev.seq - 1)
            if self._apply(ev, PeerOrigin(ev.actor, via)):
                applied.append(ev)
        self._broadcast_events(applied)
        self._after_peer([ev for ev, _ in run] + applied)

    def _take_peer_events(self) -> list[_PeerEvents]:
        """Other processes' events queued in the inbox, taken out of it (they are
        applied in seq order wherever they are: they are durable, and every other item
        reads the document as the log has it when its turn comes)."""
        peers = [x for x in self._inbox if isinstance(x, _PeerEvents)]
        if peers:
            self._inbox = [x for x in self._inbox if not isinstance(x, _PeerEvents)]
        return peers

    async def _bus_or_read(self, before: int, between: list[_PeerEvents]) -> None:
        """Bring the room to seq `before` - 1, after a commit of its own that the other
        process's events came just before: the fan-out brings them within moments (that
        process got its answer about when this one did), a read of the store within a
        round trip. Both are awaited, the first that brings them wins; the bus's are
        taken into `between`. (A read that lost is left to end by itself.)"""
        upto = before - 1
        read = asyncio.ensure_future(self._read_own(self.seq, upto))
        arrived = self._peer_arrived = asyncio.Event()
        try:
            while self.seq < upto and not read.done():
                bus = asyncio.ensure_future(arrived.wait())
                try:
                    await asyncio.wait((read, bus), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    bus.cancel()
                if arrived.is_set():
                    arrived.clear()
                    between.extend(self._take_peer_events())
                    await self._apply_peer_runs(between, before)
            if self.seq < upto and read.done():
                if isinstance(read.exception(), DeletedMeanwhile):
                    read.result()  # (raises it: the room holds a deleted document)
                if read.exception() is None:
                    self._apply_read(read.result(), upto)
        finally:
            self._peer_arrived = None
            if not read.done():
                read.add_done_callback(_ignore_outcome)

    async def _apply_peer_runs(self, queued: list[_PeerEvents], before: int) -> None:
        """Apply the events of `queued` that follow the room's seq without a gap, below
        seq `before`, in seq order (those read from the store and those received on the
        bus in runs of their own). Those after a gap wait: for the bus or a read."""
        ours = [p for p in queued if not await self._of_another_document(p)]
        evs = sorted(
            ((e, p.from_store) for p in ours for e in p.events if self.seq < e.seq < before),
            key=lambda x: x[0].seq,
        )
        run: list[Event] = []
        flag = False
        nxt = self.seq + 1
        for ev, from_store in evs:
            if ev.seq < nxt:
                continue  # (the same event twice: the bus and a gap check's read)
            if ev.seq > nxt:
                break
            if run and from_store != flag:
                await self._apply_peer_events(run, flag)
                run = []
            run.append(ev)
            flag = from_store
            nxt += 1
        if run:
            await self._apply_peer_events(run, flag)

    async def _catch_up(self, upto: int | None = None) -> None:
        """Apply events seq+1..upto (to the log's end when None) from the store, written
        by another process; for a room that is up to date (as one process's rooms
        always are) one read that finds nothing."""
        if upto is not None and upto <= self.seq:
            return
        missing = await self._read_own(self.seq, upto)
        self._apply_read(missing)
        if upto is not None and self.seq < upto:
            raise StoreError(
                f"room {self.name!r}: the store is missing events {self.seq + 1}..{upto}"
            )

    async def _read_own(self, after: int, upto: int | None) -> list[Event]:
        """The store's events after < seq <= upto, when they are the room's document's.
        The store's events name no generation: a read that found some, or fewer than
        asked for, reads the name's generation after them (a generation is never given
        twice, so one that is still the room's was the room's when they were read).
        Another (the document deleted, and perhaps written again, by a process that has
        not told this one yet: its message held on a stalled link to Redis) raises
        DeletedMeanwhile (ReplacedMeanwhile for a copy --replace): the room is dropped,
        its clients closed with 4404 (4409), and none of the new document's events is
        applied here or sent to the old one's clients. A room whose generation is not
        known takes them by their seqs, as before."""
        events = await self._reader.read(self.name, after=after, upto=upto)
        if self.generation is None or self.generation_of is None:
            return events
        found = events and events[-1].seq > after
        short = upto is not None and (not events or events[-1].seq < upto)
        if not found and not short:
            return events
        now = await self.generation_of(self.name)
        if now == self.generation:
            return events
        log.warning(
            "room %s: the store holds another document of the name (generation %s, the "
            "room's %d) past the room's seq %d: deleted or replaced under the room, whose "
            "message has not come; none of its events applied",
            self.name, now, self.generation, after, extra={"doc": self.name},
        )  # fmt: skip
        raise await self._deleted_or_replaced(DeletedMeanwhile(self.name))

    def _apply_read(self, events: list[Event], upto: int | None = None) -> None:
        """Apply events read from the store that follow the room's seq (up to `upto`)."""
        applied = []
        for ev in events:
            if upto is not None and ev.seq > upto:
                break
            if ev.seq == self.seq + 1:
                applied.append(ev)
                if self._apply(ev, PeerOrigin(ev.actor, "store")):
                    self.broadcast(P.encode_sync_update(ev.update))
        self._after_peer(applied)

    async def _catch_up_held(self, upto: int) -> None:
        """:meth:`_catch_up` before applying events that are durable (this room's just
        logged, or another process's come through the fan-out): a store that cannot be
        read for a moment is waited out, as a refused write is, rather than dropping the
        room (every client closed with 1013 and refused until the store came back: a
        field test's 20 s PostgreSQL cut). The edits that come meanwhile are held."""
        await self._wait_out(lambda: self._catch_up(upto), f"catching up to seq {upto}")

    def _after_peer(self, events: list[Event]) -> None:
        # events logged elsewhere: count them toward snapshots, but never publish again
        self.events_since_snapshot += len(events)

    def _apply(
        self,
        ev: Event,
        origin: Origin,
        reach: dict[int, tuple[int, int]] | None = None,
        dels: Ranges | None = None,
        *,
        in_doc: bool = False,
        read: UpdateMeta | None = None,
    ) -> bool:
        """Apply one durable event to the live doc. False if it does not apply. `read`:
        its update read already (an event from another process). `reach`:
        what ownership's admit found in a client's update (so it is not parsed again):
        then the document's observers are muted and the change handed over instead
        (``current_change``, see doc_observers.py); `dels`: its delete set, when read
        already. `in_doc`: the document has it already (``_apply_merged``, with `reach`):
        only the bookkeeping and the hooks."""
        self.current_ts = ev.ts
        self.current_event = ev
        change = None
        if reach is not None:
            if dels is None:
                dels = deletions_of(ev.update)  # read once, for the change and the union
            change = self._known_change(reach, dels)
        self.current_change = change
        self.observer.before_apply(self, ev, origin)
        ok = True
        try:
            if in_doc:
                pass  # the merged update of its batch put it there (_apply_merged)
            elif change is None:
                self.doc_observers.resume()  # observed (muted while the room holds them)
                with self.doc.transaction(origin=origin):
                    self.doc.apply_update(ev.update)
            elif self.doc_observers.quiet:  # muted already (the room holds them)
                self.doc.apply_update(ev.update)
            else:
                # no observer sees this transaction: its origin would go unread, and
                # apply_update's own transaction is enough
                with self.doc_observers.muted():
                    self.doc.apply_update(ev.update)
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            log.error("room %s: event %d does not apply: %r", self.name, ev.seq, e)
            if panicked(e):
                # the live document is broken (every later operation on it panics): the
                # pipeline drops the room (_fail), its clients reconnect, and the next
                # load rebuilds the document without this event (snapshots.load)
                self.current_event = None
                raise DocumentBroken(ev, e) from None
            ok = False
            self._exact_reach = False
        self.seq = ev.seq
        self.applied_bytes += len(ev.update)
        self.current_event = None
        if ok:
            subdoc_options.note(self.doc, ev.update)
            if reach is None:  # not admitted here
                self._note_logged(ev.actor, ev.update, ev.meta.get("relays", ()), read)
            else:
                self._note_deletions(dels or {})  # read above whenever reach is given
                self.owners.written(ev.actor, reach, ev.meta.get("relays", ()))
                if self._waking:
                    self._logged_clients(reach)
            self.observer.applied(self, ev, origin)
        self.current_change = None
        return ok

    def _known_change(
        self, reach: dict[int, tuple[int, int]], dels: Ranges
    ) -> tuple[Ranges, Ranges] | None:
        """What a client's update inserts and deletes (`dels`: its delete set), applied
        now, without observing the transaction: its new items from its admission (in
        order, whole: the attribution rule refuses gaps and unknown references), its
        deletions that the log does not hold yet. None when unsure: once a commit or an
        apply failed, admitted clocks may run ahead of the document (the next updates
        would wait as pending)."""
        if not self._exact_reach or self._deleted is None:
            return None
        ins: Ranges = {c: [(s, e)] for c, (s, e) in reach.items() if e > s}
        return ins, (self._deleted.missing(dels) if dels else {})

    def _committed(self, events: list[Event]) -> None:
        self.observer.committed(self, events)

    async def _maybe_snapshot(self) -> None:
        if self._snapshotter is not None:
            res = self._snapshotter(self)
            if res is not None:
                await res

    def _fail(self, error: BaseException, rest: Sequence[_Item]) -> None:
        """Drop the room after `error`: its clients reconnect (1013) and the next load
        is the log's. A log deleted under the room (DeletedMeanwhile) has nothing to
        load: its clients are closed with 4404 and the deletion's reason, as the
        deletion's own closes them, and a server change queued on it is told the
        document was deleted (410 over HTTP); one replaced under it (ReplacedMeanwhile:
        copy --replace) the same way with 4409, "replaced", and 409."""
        self.broken = error
        if isinstance(error, DeletedMeanwhile):
            code, reason = error.close_code, error.reason
        else:
            code, reason = 1013, f"{RELOADING}, reconnect"
        for item in rest:
            if isinstance(item, _ServerChange | _Barrier) and not item.future.done():
                if isinstance(error, DeletedMeanwhile) and isinstance(item, _ServerChange):
                    item.future.set_exception(type(error)(self.name))
                else:  # (a flush's waiter reads StoreError as "the room is gone")
                    item.future.set_exception(StoreError(f"room {self.name!r} failed: {error}"))
            elif isinstance(item, _ClientUpdate):
                item.peer.close(code, reason)
        for peer in list(self.peers.values()):
            peer.close(code, reason)
        if self._on_broken is not None:
            self._on_broken(self, error)


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # (retrieved: a read whose answer came too late to matter)


def _client_batch(
    items: list[_Item], i: int, limit: int
) -> tuple[list[_ClientUpdate], list[_PeerEvents], int]:
    """The client updates of one commit, from items[i] (one): those that follow it, up
    to `limit`, passing over other processes' events (durable already: whatever this
    process appends comes after them in the log, so the batch's updates may be logged
    before the room applies them), not over anything else (a server change reads the
    document with every edit queued before it; a barrier waits for those). Returns the
    batch, the events passed over, and where the items after the batch begin."""
    batch: list[_ClientUpdate] = []
    end = j = i
    while j < len(items) and len(batch) < limit:
        item = items[j]
        if isinstance(item, _ClientUpdate):
            batch.append(item)
            end = j + 1
        elif not isinstance(item, _PeerEvents):
            break
        j += 1
    between = [x for x in items[i:end] if isinstance(x, _PeerEvents)]
    return batch, between, end


def _origin_of(origins: dict[str, ClientOrigin], peer: Peer) -> ClientOrigin:
    """The origin of a peer's edits, one per peer in a batch (an origin is immutable)."""
    got = origins.get(peer.id)
    if got is None:
        got = origins[peer.id] = ClientOrigin(peer.actor, peer.id)
    return got


#: pycrdt's merge costs more per update the more it merges at once (automerge-paper's
#: keystrokes: 1.3 µs each 64 at a time, 2.2 at 256), and applying the merged update less
#: (0.7 against 0.6 µs): 64 costs the least in all, and a burst still goes out in few frames
MERGE_CHUNK = 64


def _merged(updates: list[bytes]) -> list[tuple[int, bytes]]:
    """`updates` merged MERGE_CHUNK at a time, in order: (how many, the update). A chunk
    that does not merge stays as its updates, one each."""
    out: list[tuple[int, bytes]] = []
    for i in range(0, len(updates), MERGE_CHUNK):
        chunk = updates[i : i + MERGE_CHUNK]
        if len(chunk) == 1:
            out.append((1, chunk[0]))
            continue
        try:
            out.append((len(chunk), subdoc_options.merge(*chunk)))
        except FATAL:
            raise
        except BaseException:  # pyo3 PanicException is one
            out.extend((1, u) for u in chunk)
    return out


def replay(
    doc: Doc[Any],
    events: Sequence[Event],
    on_apply: Callable[[Event], None] | None = None,
    before_apply: Callable[[Event], None] | None = None,
) -> int:
    """Fold events onto a doc with replay origins; returns how many failed to apply.
    Raises DocumentBroken (the doc is unusable) when one makes yrs panic."""
    failed = 0
    for ev in events:
        origin = ReplayOrigin(ev.actor, ev.seq, ev.kind)
        if before_apply is not None:
            before_apply(ev)
        try:
            with doc.transaction(origin=origin):
                doc.apply_update(ev.update)
        except FATAL:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            if panicked(e):
                raise DocumentBroken(ev, e) from None
            log.error("event %s/%d does not apply on replay: %r", ev.doc, ev.seq, e)
            failed += 1
        if on_apply is not None:
            on_apply(ev)
    return failed


__all__ = [
    "LoadInfo",
    "Peer",
    "Room",
    "RoomObserver",
    "ServerOrigin",
    "SystemOrigin",
    "replay",
]
