"""The EventStore interface: one per-document append-only log, snapshots and tags.

Every backend (memory, SQLite, PostgreSQL) implements :class:`EventStore` and passes the
shared contract suite in ``tests/store/contract.py``.

Contract:

- ``append`` assigns each document's events the next seqs (1, 2, 3…, gap-free) and makes
  the whole batch durable atomically, across documents: all of it or none of it.
- Events are never changed or deleted, except by the explicit retention command
  (``compact``) and by ``delete_doc``.
- ``put_snapshot(doc, seq, state, meta)`` stores the full encoded state equal to folding
  events 1..seq; a checksum of the state and of the meta JSON is kept with it and checked
  when it is read back (:func:`snapshot_damage`), and a damaged one (either part, or meta
  that is not a JSON object) is reported by ``snapshots()`` as ``valid=False`` with the
  reason in ``damage`` and skipped by ``latest_snapshot``, never raised. Stores write
  snapshot rows packed (:func:`snapshot_row`: state and meta compressed together, the
  checksum of exactly the stored bytes, see ``snapshot_codec``) and read both forms.
- Snapshots are a cache: ``delete_snapshots`` drops the ones retention does not keep.
  Derived data (``put_derived``/``derived``: e.g. the stored attribution index) is a
  cache of the log too, checksummed, dropped with the document and by ``compact``.
- Timestamps are integers, milliseconds since the epoch, given by the caller (the server's
  clock) so that undo grouping is the same after a restart.
- Driver errors become :class:`~server.errors.StoreError` (or ``StoreUnavailable`` when the
  store cannot be reached) at this boundary, with the driver's error as ``__cause__``.
- ``append`` also gives every event a global position (``Event.pos``), strictly increasing
  in commit order across documents: positions become visible in order (no reader sees P
  before every position below P that will ever exist), so ``read_all(after=P)`` resumes a
  reader of the whole log exactly. A document's positions increase with its seqs.
- A damaged sealed segment (its checksum does not hold) is never read as events: a read
  that needs it raises StoreError, and :meth:`EventStore.segment_damage` names it.
- Event meta holds nothing the update already says: the Yjs clients of an event are
  :attr:`Event.clients`, derived from its update.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _quote
from typing import TYPE_CHECKING, Any

from ..lifecycle import Service
from . import snapshot_codec
from .doc_pages import DocPage
from .segments import SEGMENT_EVENTS
from .update_clients import update_clients

if TYPE_CHECKING:
    from .cursors import WebhookCursors
    from .doc_locks import DocLocks
    from .revocations import Revocations

log = logging.getLogger("palimpsest.store")


#: the kind of a deletion on the changefeed (EventStore.deletions): never an event in a
#: document's log
DELETED = "deleted"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _mono_ms() -> int:
    return time.monotonic_ns() // 1_000_000


#: how far EventClock runs ahead of the wall clock at most (ms): a step back, or another
#: process's clock, by more is followed rather than run on from
MAX_AHEAD_MS = 15 * 60_000


class EventClock:
    """What a room stamps its events with (ms): the wall clock, except that it never runs
    back. A wall clock stepped back (NTP, a restored VM) is not followed: the clock runs
    on from its last reading by the monotonic clock, at three quarters of its speed, until
    the wall clock is past it (a step of 10 minutes is caught up in 40). That is this
    process's clock, the same for every document.

    A stamp this process sees committed later than its own for a document (the store
    raised it to the document's last event's, written by a process whose clock is ahead)
    is taken up the same way, for that document alone (:meth:`observe`): its later
    stamps run on from it until this clock is past it, while every other document keeps
    this process's clock. (It was one clock for all: a process whose clock was 5 minutes
    fast, writing one shared document, moved every document of a correct process 5
    minutes ahead, new ones only it wrote too.)

    The store keeps a document's ts from going back whatever it is given; this keeps the
    gaps between a writer's edits, which undo groups by, what they were: stamped with
    the document's last ts until the wall clock caught up, every edit of those minutes
    was one undo step. It runs at most MAX_AHEAD_MS ahead of the wall clock: past that (a
    clock stepped back by hours, a stamp from a clock set a year ahead), it follows the
    wall clock, the store keeps each document's ts from going back, and the edits of a
    document written in that span are stamped with its last ts until the wall clock is
    past it (their pauses are then no undo steps' ends)."""

    __slots__ = ("_last", "_mono", "_wall_ms", "_mono_ms", "_seen")

    #: documents run on from a stamp seen on them, kept at most this many (the oldest
    #: dropped: their runs on from a stamp up to MAX_AHEAD_MS ahead end within 60 min)
    SEEN_MAX = 10_000

    def __init__(
        self, wall: Callable[[], int] | None = None, mono: Callable[[], int] | None = None
    ) -> None:
        self._wall_ms = wall or now_ms
        self._mono_ms = mono or _mono_ms
        self._last = 0
        self._mono = 0
        #: document -> (a stamp seen on it ahead of this clock, the monotonic ms then)
        self._seen: dict[str, tuple[int, int]] = {}

    def __call__(self, doc: str | None = None) -> int:
        """A stamp for an event of `doc` now (None: of no document in particular)."""
        raw = wall = self._wall_ms()
        mono = self._mono_ms()
        if self._last:  # ahead of the wall clock, it runs at 3/4 speed until caught up
            ran = self._last + (mono - self._mono) * 3 // 4
            if wall < ran <= wall + MAX_AHEAD_MS:
                wall = ran
        self._last = wall
        self._mono = mono
        if doc is not None and self._seen:
            seen = self._seen.get(doc)
            if seen is not None:
                ran = seen[0] + (mono - seen[1]) * 3 // 4
                if wall < ran <= raw + MAX_AHEAD_MS:
                    return ran
                del self._seen[doc]  # caught up (or the wall clock stepped far back)
        return wall

    def observe(self, ts: int, doc: str) -> None:
        """`ts` was committed for an event of `doc` this process stamped earlier: run on
        from it for `doc` (not from one more than MAX_AHEAD_MS ahead of this process's
        wall clock)."""
        now = self(doc)
        if now < ts <= self._wall_ms() + MAX_AHEAD_MS:
            self._seen.pop(doc, None)
            self._seen[doc] = (ts, self._mono_ms())
            if len(self._seen) > self.SEEN_MAX:
                del self._seen[next(iter(self._seen))]

    def reset(self) -> None:
        """Forget what it ran on from: the wall clock again (tests)."""
        self._last = 0
        self._seen.clear()


#: the clock rooms stamp events with (palimpsest.room)
EVENT_CLOCK = EventClock()


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# one encoder for every event: json.dumps with options builds a new encoder per call
_encode_meta = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dump_meta(meta: dict[str, Any]) -> str:
    if len(meta) == 1 and type(meta.get("conn")) is str:
        # the meta of every client edit: formatted directly, on the path of every event
        # (the same text as the encoder's, so that a snapshot meta checksum survives a copy)
        return f'{{"conn":{_quote(meta["conn"])}}}'
    return _encode_meta(meta)


def snapshot_checksum(state: bytes, meta_text: str) -> str:
    """What a snapshot row stores: the state's sha256, ':', the meta JSON text's sha256.

    Rows written before the meta was covered hold only the state's sha256; they stay
    valid (their meta is still checked to be a JSON object)."""
    return f"{checksum(state)}:{checksum(meta_text.encode())}"


def snapshot_damage(state: bytes, stored: str, meta_text: str) -> str | None:
    """Why a stored snapshot row cannot be used, or None when it is sound (a packed row:
    its checksum; an older row: both checksums and its meta JSON)."""
    why = snapshot_codec.damage(state, stored, meta_text)
    if why is not None or snapshot_codec.is_packed(meta_text):
        return why
    try:
        meta = json.loads(meta_text)
    except ValueError as e:  # JSONDecodeError, and UnicodeDecodeError from bad bytes
        return f"meta is not JSON ({e})"
    if not isinstance(meta, dict):
        return f"meta is a JSON {type(meta).__name__}, not an object"
    return None


def snapshot_from_row(
    doc: str, seq: int, ts: int, state: bytes, stored: str, meta_text: str
) -> Snapshot | None:
    """The snapshot of a stored row, or None (logged) when the row is damaged: every store
    reads snapshots through here, so a damaged one is skipped the same way everywhere."""
    try:
        plain, meta = snapshot_codec.decode(state, stored, meta_text)
    except ValueError as e:
        log.error("snapshot %s@%d is damaged (%s); skipping it", doc, seq, e)
        return None
    return Snapshot(doc, seq, ts, plain, stored, meta)


def _delta_of(meta: dict[str, Any] | None) -> int:
    value = (meta or {}).get("delta_of", 0)
    return value if isinstance(value, int) and value > 0 else 0


def _bare(meta: dict[str, Any] | None) -> bool:
    return (meta or {}).get("bare") is True


def snapshot_row(state: bytes, meta: dict[str, Any] | None) -> tuple[bytes, str, str]:
    """What a store writes for a snapshot: (state column, checksum, meta column). A meta
    ``delta_of`` (a ladder rung stored as a difference, see server.retention) is also
    said by the meta column, so that listing snapshots tells it without decompressing."""
    return snapshot_codec.pack(state, dump_meta(meta or {}), _delta_of(meta), _bare(meta))


async def snapshot_row_async(state: bytes, meta: dict[str, Any] | None) -> tuple[bytes, str, str]:
    """:func:`snapshot_row`, compressing a large state on a worker thread."""
    return await snapshot_codec.pack_async(
        state, dump_meta(meta or {}), _delta_of(meta), _bare(meta)
    )


def derived_from_row(doc: str, kind: str, data: bytes, stored: str) -> bytes | None:
    """The bytes of a derived-data row whose checksum holds, or None (logged)."""
    if checksum(data) != stored:
        log.error("derived data %s/%s is damaged (checksum); ignoring it", doc, kind)
        return None
    return data


# NewEvent and Event are frozen, and built for every event on the editing path and for
# every event read: their __init__ are written out below (init=False) and set each slot
# through its descriptor, which is what the frozen dataclass's generated __init__ does
# through object.__setattr__, at about half the cost (1.9 -> 1.1 µs for an Event).


@dataclass(frozen=True, slots=True, init=False)
class NewEvent:
    """An event to append; the store gives it its seq."""

    actor: str
    kind: str
    update: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    ts: int = field(default_factory=now_ms)

    def __init__(
        self,
        actor: str,
        kind: str,
        update: bytes,
        meta: dict[str, Any] | None = None,
        ts: int | None = None,
    ) -> None:
        _new_actor(self, actor)
        _new_kind(self, kind)
        _new_update(self, update)
        _new_meta(self, {} if meta is None else meta)
        _new_ts(self, now_ms() if ts is None else ts)


_new_actor, _new_kind, _new_update, _new_meta, _new_ts = (
    getattr(NewEvent, f).__set__ for f in ("actor", "kind", "update", "meta", "ts")
)


@dataclass(frozen=True, slots=True, init=False)
class Event:
    doc: str
    seq: int
    ts: int
    actor: str
    kind: str
    update: bytes
    meta: dict[str, Any]
    #: the global commit position: assigned by the store at append, strictly increasing
    #: in commit order across every document (and every process sharing the store), so
    #: that a reader that has seen position P has seen everything committed before it
    pos: int = 0

    def __init__(
        self,
        doc: str,
        seq: int,
        ts: int,
        actor: str,
        kind: str,
        update: bytes,
        meta: dict[str, Any],
        pos: int = 0,
    ) -> None:
        _ev_doc(self, doc)
        _ev_seq(self, seq)
        _ev_ts(self, ts)
        _ev_actor(self, actor)
        _ev_kind(self, kind)
        _ev_update(self, update)
        _ev_meta(self, meta)
        _ev_pos(self, pos)

    @property
    def clients(self) -> list[int]:
        """The Yjs client ids whose items this event's update carries (derived, not stored)."""
        return update_clients(self.update)


_ev_doc, _ev_seq, _ev_ts, _ev_actor, _ev_kind, _ev_update, _ev_meta, _ev_pos = (
    getattr(Event, f).__set__
    for f in ("doc", "seq", "ts", "actor", "kind", "update", "meta", "pos")
)


def check_replacing(
    doc: str, replacing: tuple[int | None, int], generation: int | None, head: int | None
) -> None:
    """In an import's transaction (EventStore.import_doc's ``replacing``): raise
    MovedMeanwhile unless the name holds the document the caller read, at the head it
    read (`generation`, `head`: what the store holds now, None when nothing)."""
    from ..errors import MovedMeanwhile

    now = (generation, head or 0) if head else (None, 0)
    was = replacing if replacing[1] else (None, 0)
    if now != was:
        raise MovedMeanwhile(
            f"document {doc!r} changed in the target while the copy read it (head "
            f"{was[1]}, now {now[1]}{'' if now[0] == was[0] else ', another generation'})"
        )


def rising(events: Sequence[Event]) -> list[Event]:
    """A document's events (in seq order) with each ts raised to the greatest before it,
    as appends stamp them (EventStore.append): a copy of a log written before that, or by
    another store, is written so (import_doc), and its lookups by time agree."""
    out: list[Event] = []
    top = 0
    for e in events:
        if e.ts < top:
            e = Event(e.doc, e.seq, top, e.actor, e.kind, e.update, e.meta, e.pos)
        top = e.ts
        out.append(e)
    return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    doc: str
    seq: int
    ts: int
    state: bytes
    checksum: str
    meta: dict[str, Any]

    @property
    def valid(self) -> bool:
        text = dump_meta(self.meta)
        if snapshot_damage(self.state, self.checksum, text) is None:
            return True  # the older row form
        packed = snapshot_codec.pack(self.state, text, self.delta_of, self.bare)
        return packed[1] == self.checksum

    @property
    def bare(self) -> bool:
        """Its meta kept only what the ladder needs (see server.retention): a room, which
        restores undo stacks and owners from a snapshot's meta, never loads from it."""
        return _bare(self.meta)

    @property
    def delta_of(self) -> int:
        """The seq of the snapshot this one is the difference from (0: `state` is the
        whole state). See snapshots.load, which resolves it."""
        return _delta_of(self.meta)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    doc: str
    seq: int
    ts: int
    size: int
    valid: bool
    #: why it is not valid ("" when it is)
    damage: str = ""
    #: the seq of the snapshot this one is the difference from (0: a whole state)
    delta_of: int = 0
    #: its meta kept only what the ladder needs: no undo stacks, no owners (a room never
    #: loads from it, see server.retention)
    bare: bool = False


def snapshot_info(
    doc: str, seq: int, ts: int, state: bytes, stored: str, meta_text: str
) -> SnapshotInfo:
    """`size`: the bytes the row stores (compressed, for a packed row)."""
    damage = snapshot_damage(state, stored, meta_text)
    delta = snapshot_codec.delta_of(meta_text) if snapshot_codec.is_packed(meta_text) else 0
    bare = snapshot_codec.is_bare(meta_text)
    return SnapshotInfo(doc, seq, ts, len(state), damage is None, damage or "", delta, bare)


#: DocInfo.made: (generation, created_ts)
Made = tuple[int | None, int | None]


@dataclass(frozen=True, slots=True)
class DocInfo:
    doc: str
    head: int
    updated_ts: int | None
    events_bytes: int
    base_seq: int = 0  # events at or below this seq were folded away by compact
    #: when this document was created (a name deleted and written again within the same
    #: millisecond has the same: generation tells them apart)
    created_ts: int | None = None
    #: this document's own number in its store, never given to another one: a name
    #: deleted and written again (or replaced by an import) gets a new one. SQLite's and
    #: PostgreSQL's docs row id (AUTOINCREMENT, an identity), the memory store's counter;
    #: None from a store that has no such number
    generation: int | None = None

    @property
    def made(self) -> Made:
        """What tells this document from the others of its name, before and after it:
        what a cache of a name checks (history.service) and a version's ETag is built
        from (routes.history). Its generation, and its created_ts for a store that
        has no generation (it used to be created_ts alone: a name written again within
        the same millisecond was taken for the old document)."""
        return (self.generation, self.created_ts)


#: what identifies a document's compaction base: its seq and the checksum of the base
#: snapshot's row; (0, "") for a document never compacted (or not in the store). Every
#: compaction that changes the base changes it, also a purge at the same seq (it rewrites
#: the base's state), and nothing else does (retention never rewrites the base). A room
#: keeps the one it loaded from (server.rooms): its snapshots are written only while the
#: store's is still that one, and a room whose mark changed is reloaded (server.base_watch).
BaseMark = tuple[int, str]
NO_BASE: BaseMark = (0, "")


@dataclass(frozen=True, slots=True)
class Tag:
    doc: str
    name: str
    seq: int
    ts: int
    actor: str


#: what a TagMove did to its tag
TAG_ACTIONS = ("create", "move", "delete")


@dataclass(frozen=True, slots=True)
class TagMove:
    """One change of a tag, kept for good (EventStore.tag_history): a tag moved or
    deleted used to leave no trace of where it had pointed."""

    doc: str
    name: str
    #: when (ms; raised to the document's last event's ts, as a tag's is) and by whom
    ts: int
    actor: str
    #: one of TAG_ACTIONS
    action: str
    #: the version it names after the change (None: deleted)
    seq: int | None
    #: the version it named before (None: created)
    was: int | None


#: rewrites a snapshot's meta for a renamed actor: the new meta, or None when the actor
#: is not in it (server.pseudonym knows which entries name actors)
MetaRewrite = Callable[[dict[str, Any]], "dict[str, Any] | None"]


@dataclass(frozen=True, slots=True)
class ActorRenamed:
    """What :meth:`EventStore.rename_actor` changed."""

    #: the old name was interned (an actor of events); False: only tags or metas named it
    symbol: bool = False
    #: documents whose events the actor wrote (their stored attribution index is dropped)
    docs: tuple[str, ...] = ()
    tags: int = 0
    #: snapshot rows rewritten (undo stacks, owners)
    snapshots: int = 0
    #: snapshot rows that could not be read (damaged), left as they are: they may still
    #: name the old actor (palimpsest verify lists them)
    damaged_snapshots: int = 0
    #: stored attribution indexes dropped (a cache: rebuilt on the next blame)
    derived: int = 0
    #: tag history rows renamed (who created, moved or deleted a tag)
    tag_moves: int = 0


#: EventStore.restamp's mapping of an event's ts (one after its cutoff) to its new ts
Stamp = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class Restamped:
    """What EventStore.restamp rewrote: events, snapshots (their ts or meta), tags, and
    the records of tag changes (tag_history) stamped in the same span."""

    events: int = 0
    snapshots: int = 0
    tags: int = 0
    tag_moves: int = 0


def renamed_snapshot_row(
    state: bytes, stored: str, meta_text: str, rewrite: MetaRewrite
) -> tuple[bytes, str, str] | None:
    """The row (state column, checksum, meta column) of a snapshot whose meta `rewrite`
    changed, written anew (packed); None when it names nobody to rename. Raises
    ValueError for a damaged row."""
    plain, meta = snapshot_codec.decode(state, stored, meta_text)
    renamed = rewrite(meta)
    return None if renamed is None else snapshot_row(plain, renamed)


def restamped_snapshot_row(
    ts: int, state: bytes, stored: str, meta_text: str, after: int, stamp: Stamp,
    rewrite: MetaRewrite,
) -> tuple[int, bytes, str, str] | None:  # fmt: skip
    """The row (ts, state column, checksum, meta column) of a snapshot that
    EventStore.restamp changes: its ts when after `after`, its meta when `rewrite` changes
    it; None when neither does. A damaged row keeps its meta (it cannot be read)."""
    try:
        row = renamed_snapshot_row(state, stored, meta_text, rewrite)
    except ValueError:
        row = None
    if row is None and ts <= after:
        return None
    return (stamp(ts) if ts > after else ts, *(row or (state, stored, meta_text)))


#: in a compaction base snapshot's meta: the ts of the event at its seq, which the
#: compaction deleted (maintenance.compact_doc; bases made before it have none)
BASE_TS = "base_ts"
#: in a compaction base snapshot's meta: the ts of the document's first event (seq 1),
#: which a compaction deleted too: before it the document was empty (`?at=` is seq 0, as
#: it was before the compaction). Kept by every later compaction; bases made before
#: 7 Dec 2026 have none
FIRST_TS = "first_ts"

#: what a committed append survives (``--durability``): ``fsync`` (the default) waits for
#: the disk, so a commit survives a power cut or a kernel crash; ``os`` hands the commit
#: to the operating system without waiting for the disk, so it survives the server
#: process being killed but not the machine going down (the last moments of commits are
#: lost then, never reordered or torn). See docs/durability.md.
DURABILITY = ("fsync", "os")

#: the largest seq or position a store holds (PostgreSQL's bigint, SQLite's integer): a
#: request naming a larger one is refused as a bad request before it reaches the store
MAX_SEQ = 2**63 - 1


def check_durability(durability: str) -> str:
    if durability not in DURABILITY:
        raise ValueError(f"durability must be one of {', '.join(DURABILITY)}, not {durability!r}")
    return durability


def floors_of(batches: Sequence[object], floors: Sequence[int] | None) -> list[int]:
    """EventStore.append's floors, one per batch (0 each when none are given)."""
    if floors is None:
        return [0] * len(batches)
    if len(floors) != len(batches):
        raise ValueError(f"{len(floors)} floors for {len(batches)} batches: one per batch")
    return [int(f) for f in floors]


def generations_of(
    batches: Sequence[object], generations: Sequence[int | None] | None
) -> list[int | None]:
    """EventStore.append's generations, one per batch (None each when none are given)."""
    if generations is None:
        return [None] * len(batches)
    if len(generations) != len(batches):
        raise ValueError(
            f"{len(generations)} generations for {len(batches)} batches: one per batch"
        )
    return [None if g is None else int(g) for g in generations]


def exact_of(batches: Sequence[object], exact: Sequence[bool] | None) -> list[bool]:
    """EventStore.append's `exact`, one per batch (False each when none are given)."""
    if exact is None:
        return [False] * len(batches)
    if len(exact) != len(batches):
        raise ValueError(f"{len(exact)} exact flags for {len(batches)} batches: one per batch")
    return [bool(x) for x in exact]


def append_takes(append: Callable[..., Any], keyword: str) -> bool:
    """Whether a store's append (the bound method) takes `keyword` (``floors``,
    ``generations``). A store made for an earlier version (an EventStore of one's own, a
    subclass whose append overrides the built-in one's, a wrapper set on the instance)
    does not: the committer gives it none. Without floors, a room whose log was deleted
    under it is found out after its commit (server.deletion.Deletion.on_logged), not
    before; without generations, only floors are checked."""
    try:
        params = inspect.signature(append).parameters
    except (TypeError, ValueError):
        return False
    return keyword in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class EventStore(Service, ABC):
    """Where events, snapshots and tags live. Used with ``async with`` or start()/stop()."""

    #: a short name for logs and metrics: "memory", "sqlite", "postgresql"
    name: str = "abstract"
    #: the schema version start() found, before it upgraded anything (0: it made the
    #: schema, or keeps none); `palimpsest migrate` tells from it what older versions
    #: wrote the database (server.upgrade_notes)
    found_schema_version: int = 0
    #: random bytes the store made when it was created and keeps (SQLite and PostgreSQL:
    #: the store_salt table; a backup keeps them, a copy into another store does not),
    #: read by start(): part of the server's Yjs client id of each document
    #: (snapshots.server_client_id), so that two independent stores write a name's
    #: server-made items under other ids. None for a store made before stores had one
    #: (its ids stay the name's alone, as they were)
    server_salt: bytes | None = None

    @property
    def disk_warm_syncs(self) -> int | None:
        """Syncs issued between commits to keep the disk awake (SQLite's ``warm_disk_ms``),
        for /metrics; None for a store that does not (the default)."""
        return None

    @abstractmethod
    async def start(self) -> None:
        """Connect and create or migrate the schema."""

    @abstractmethod
    async def stop(self) -> None: ...

    async def abandon(self) -> list[str]:
        """Instead of stop() when the start of what uses the store failed (the store's own
        start, or a later part's): stop without upkeep writes, and remove the files this
        run's start created, which hold nothing yet; never a file that was there before,
        nor one another process has open. Returns the paths removed. Called whether or
        not start() completed. Default: stop(), nothing to remove (PostgreSQL, memory)."""
        await self.stop()
        return []

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers now."""

    @abstractmethod
    async def check_writable(self) -> None:
        """Raise StoreError (with the cause) unless a write transaction commits durably now.

        A small real write (no rows of the log change): /readyz uses it to tell a store
        that answers reads but refuses writes (full disk, I/O errors, read-only) from one
        that works."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The version of the schema the store holds (after start(): this code's)."""

    def schema_notes(self) -> list[str]:
        """What the start found wrong in the schema and mended (a table of caches that
        was missing, made again empty), one sentence each: `palimpsest verify` says
        them. None by default."""
        return []

    async def identity(self) -> str | None:
        """What tells this store from another of its kind (after start()): the same for
        every process that shares its log, different for one that does not (the fan-out
        tells deployments on one bus apart by it). None when the store cannot tell
        (the default): then nothing is told apart."""
        return None

    # --- the log ---------------------------------------------------------------------

    @abstractmethod
    async def append(
        self,
        batches: Sequence[tuple[str, Sequence[NewEvent]]],
        floors: Sequence[int] | None = None,
        generations: Sequence[int | None] | None = None,
        exact: Sequence[bool] | None = None,
    ) -> list[list[Event]]:
        """Append every batch atomically; returns the stored events, batch by batch.

        An event's ts is its writer's clock (NewEvent.ts) raised, when that is earlier,
        to the ts of the document's previous event, in the transaction that gives it its
        seq: a document's ts never decrease in seq order, whatever the clocks of the
        processes writing it (a clock stepped back by NTP, two servers minutes apart),
        so that "the version at time T" (seq_at) is one prefix of its log.

        `floors`, one per batch: the head its document must have at least, as read in
        the same transaction before this append's events (a room's seq before its
        batch: the committer gives it, see commit.Committer.append). A head only grows,
        other processes' appends included, except when the document is deleted: a head
        below the floor means the log was deleted under the writer, and appending would
        make the document again from the deleted one (a stale room's event at seq 1).
        Such a batch is left out, and its list comes back empty; the others commit. 0,
        or no floors, checks nothing (the default, and what a store that does not take
        the argument does: the committer then gives none, see append_takes).

        `generations`, one per batch: the generation (DocInfo.generation) the document
        must have, checked in the same transaction, from the same read of its row as the
        floor (no query or round trip more); None checks nothing. A floor cannot tell a
        new document of the name already past the writer's seq (deleted, written again,
        and written more than the old one was): its generation can. Such a batch is
        left out as one below its floor is (its document another one, or none).

        `exact`, one per batch: True when the head must be the floor itself, not only at
        least that (a server change made on the document as the log had it at that head:
        events other processes logged since would slip in under it, unseen, and survive
        it). Such a batch whose head moved on is left out as one below its floor is; the
        committer tells the two apart by `exact` (HeadMoved). None, or False, checks the
        floor alone. A store whose append does not take it gets none (append_takes): the
        change is then appended after whatever came, as before."""

    async def end_unanswered_appends(self) -> None:  # noqa: B027 - nothing to end by default
        """Make final the outcome of every append of this process that got no answer (a
        timeout, a lost connection, a caller cancelled while the store worked): when this
        returns, none of them can still commit, so a read from then on tells whether each
        one did. Raises StoreError while that cannot be made sure of (the store does not
        answer). Before it looks for held appends in the log, the committer calls this
        (commit.Committer._settle): an append still on its way would otherwise be missed
        there, tried again, and logged twice. Nothing calls it on a commit's way. The
        default does nothing: an append of the memory store ran whole or not at all."""

    @contextlib.asynccontextmanager
    async def server_changes(self, doc: str) -> AsyncIterator[None]:
        """Held while a process makes a server change of `doc` (an undo, a redo, a
        restore, a text written whole, a seed): it reads the log to its head, makes the
        change on the document that fold gives and appends it. Those changes all carry
        the document's one server Yjs client id (snapshots.server_client_id), so two
        processes making them at once would both write the items that continue its
        clock: one of them would not apply anywhere. A store that several processes share
        lets one at a time hold it, per document; the default does nothing (one process
        has one room per document, whose pipeline makes its changes one by one).
        Raises StoreUnavailable when it cannot be taken now."""
        yield

    @abstractmethod
    async def read(
        self, doc: str, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[Event]:
        """Events with after < seq <= upto, in seq order."""

    @abstractmethod
    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """Events of every document with pos > after, in pos (commit) order."""

    @abstractmethod
    async def last_position(self) -> int:
        """The highest global position assigned so far (0 for an empty store)."""

    @abstractmethod
    async def head(self, doc: str) -> int:
        """The last seq of the document, 0 if it has none."""

    async def heads(self, docs: Sequence[str]) -> dict[str, int]:
        """The last seq of each document (0 for one with none), in as few round trips as
        the store allows (fan-out checks every loaded document every few seconds)."""
        return {doc: await self.head(doc) for doc in docs}

    @abstractmethod
    async def query(
        self,
        doc: str,
        *,
        after: int = 0,
        limit: int = 100,
        actor: str | None = None,
        since_ts: int | None = None,
        until_ts: int | None = None,
        kinds: Sequence[str] | None = None,
        before: int | None = None,
        desc: bool = False,
    ) -> list[Event]:
        """A page of events matching the filters with after < seq (< before, if given),
        in seq order; with `desc`, the newest `limit` of them, highest seq first (the
        next page down: ``before=`` the last seq of this one)."""

    @abstractmethod
    async def seq_at(self, doc: str, ts: int) -> int:
        """The last seq whose ts <= the given ts (0 if none); precisely, the seq before
        the first event whose ts is after it (the head when none is). The two are the
        same since appends keep ts non-decreasing (see append); in a log written before
        that, an event stamped after `ts` is never counted in, nor any after it."""

    @abstractmethod
    async def list_docs(self) -> list[DocInfo]:
        """Every document, by name (tools that walk the whole store: copy, admin)."""

    async def doc_count(self) -> int:
        """How many documents the store holds (what list_docs would list), counted by
        the store (``palimpsest_documents``, server.metrics); a store without a count of
        its own lists them."""
        return len(await self.list_docs())

    @abstractmethod
    async def doc_page(self, page: DocPage) -> list[DocInfo]:
        """One page of the document list (``GET /api/docs``): the documents whose names
        are in `page`'s ranges, in its order, after its cursor, at most its limit,
        selected and ordered by the store (see doc_pages)."""

    @abstractmethod
    async def doc_info(self, doc: str) -> DocInfo | None: ...

    @abstractmethod
    async def delete_doc(self, doc: str, tombstone: bytes = b"", *, by: str = "") -> bool:
        """Remove the document's events, snapshots and tags; False if it had none.

        In the same transaction, when it existed, records `tombstone` (the encoded state
        vector of the deleted document, merged by the caller with any earlier one) for
        :meth:`tombstone`: the name may be used again, and copies of the deleted
        content (a stale process's room, a client's local copy) are recognised by it;
        and the deletion itself for the changefeed (:meth:`deletions`): the next global
        position, taken from the same counter as events' in that transaction, with the
        document's last seq, the time and `by` (who deleted it)."""

    @abstractmethod
    async def deletions(
        self, after: int = 0, upto: int | None = None, limit: int = 1000
    ) -> list[Event]:
        """The deletions recorded by ``delete_doc`` with after < pos <= upto, in pos
        order (at most `limit`), each as an Event of kind ``deleted``: the document's
        name, its last seq, the time, who deleted it (``actor``), its position; no
        update, no meta."""

    async def read_feed(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """What the changefeed follows: events (:meth:`read_all`) and deletions
        (:meth:`deletions`) with pos > after, merged in pos order, at most `limit`.

        Both are read up to the last position read first: every position up to it is
        committed (positions become visible in order), so neither read can see a
        position past one the other has not seen yet, and none is skipped."""
        last = await self.last_position()
        if last <= after:
            return []
        events = [e for e in await self.read_all(after=after, limit=limit) if e.pos <= last]
        if len(events) == limit:
            last = events[-1].pos
        gone = await self.deletions(after=after, upto=last, limit=limit)
        if not gone:
            return events
        return sorted([*events, *gone], key=lambda e: e.pos)[:limit]

    @abstractmethod
    async def tombstone(self, doc: str) -> bytes | None:
        """The state vector recorded by the last ``delete_doc`` of this name, if any."""

    @abstractmethod
    async def tombstones(self) -> dict[str, bytes]:
        """Every recorded tombstone, by document name (for ``palimpsest copy``)."""

    @abstractmethod
    async def put_tombstone(self, doc: str, tombstone: bytes) -> None:
        """Record `tombstone` for `doc` as given, replacing any (``palimpsest copy``, which
        merges it with the one here first); the document's log is left alone."""

    # --- sealing (the compact log, see store/log_layout.py) ----------------------------

    @abstractmethod
    async def seal(self, doc: str, *, run: int = SEGMENT_EVENTS, rest: int = 0) -> int:
        """Seal the document's oldest tail events, ``run`` at a time, into compressed
        segments; returns how many events were sealed (0 when fewer than ``run`` wait).
        With ``rest``, a last shorter run of at least ``rest`` events is sealed too (a
        document gone idle), and the store keeps no copy in memory of the tail rows left
        (fewer than ``rest``): they wait in the log until the document is written again.

        Off the editing path, safe beside appends and other sealers (in any process): each
        run moves from the tail into its segment in one transaction, or not at all. Every
        read sees a sealed event exactly as before."""

    @abstractmethod
    async def seal_due(self, *, run: int = SEGMENT_EVENTS) -> int:
        """Seal every document that has at least ``run`` unsealed events; the count sealed."""

    @abstractmethod
    async def segment_damage(self, doc: str) -> list[str]:
        """Why each damaged segment of the document cannot be read (empty when all hold)."""

    # --- snapshots -------------------------------------------------------------------

    @abstractmethod
    async def put_snapshot(
        self,
        doc: str,
        seq: int,
        state: bytes,
        meta: dict[str, Any] | None = None,
        *,
        base: BaseMark | None = None,
        generation: int | None = None,
    ) -> bool:
        """Store the state at seq (replacing one at the same seq); True if written.
        `base`: only while the document's compaction base is still that one and below
        `seq`, and its head at least `seq`, checked in the write's own transaction (a
        live room's snapshot, or a rung rewritten from what was read: a compaction by
        another process, e.g. ``palimpsest compact --purge-deleted``, refuses it; so does
        a deletion, whose document has no head: a room it was deleted under wrote its
        snapshot under the deleted name). `generation`: only while the document is
        still of that generation (DocInfo.generation), checked in the same transaction:
        a room's snapshot is never written into another document of its name (one made
        by ``palimpsest copy --replace``, or deleted and written again, under it)."""

    @abstractmethod
    async def compaction_bases(self, docs: Sequence[str]) -> dict[str, BaseMark]:
        """The compaction base of each document as :data:`BaseMark` (one read for all:
        the background check of the rooms a server holds, server.base_watch)."""

    async def compaction_base(self, doc: str) -> BaseMark:
        return (await self.compaction_bases([doc]))[doc]

    async def generations(self, docs: Sequence[str]) -> dict[str, int | None]:
        """Each document's generation (DocInfo.generation: another one once it was deleted
        and written again, or replaced by ``palimpsest copy --replace``), None for one the
        store does not hold (or a store that numbers none). One read for all in the
        stores here (the background check of the rooms a server holds,
        server.base_watch); this default asks doc_info once per document."""
        out: dict[str, int | None] = {}
        for doc in docs:
            info = await self.doc_info(doc)
            out[doc] = info.generation if info is not None else None
        return out

    async def put_snapshot_if_due(
        self,
        doc: str,
        seq: int,
        state: bytes,
        meta: dict[str, Any] | None = None,
        *,
        min_gap: int = 1,
        base: BaseMark | None = None,
        generation: int | None = None,
    ) -> bool:
        """Write the snapshot unless a valid one at a seq > ``seq - min_gap`` exists (or,
        in a store shared by several processes, another one is writing a snapshot of the
        document right now; or, with `base` or `generation`, put_snapshot refuses it).
        True if written.
        Several processes that checkpoint the same documents write through this, so
        that one of them does it."""
        for info in reversed(await self.snapshots(doc)):
            if info.seq > seq - max(min_gap, 1) and info.valid:
                return False
        return await self.put_snapshot(doc, seq, state, meta, base=base, generation=generation)

    @abstractmethod
    async def latest_snapshot(self, doc: str, at_most: int | None = None) -> Snapshot | None:
        """The newest snapshot with seq <= at_most whose checksum holds."""

    @abstractmethod
    async def snapshots(self, doc: str) -> list[SnapshotInfo]: ...

    # --- retention (explicit, opt-in) -------------------------------------------------

    @abstractmethod
    async def compact(
        self,
        doc: str,
        before: int,
        state: bytes,
        *,
        above: Mapping[int, tuple[bytes, dict[str, Any]]] | None = None,
    ) -> int:
        """Fold events 1..before into a base snapshot at `before` and drop them.

        Returns the number of events removed. Seqs are not renumbered. The document's
        derived data is dropped with them (the attribution index names who wrote the
        text the base now holds).

        `above`: (state, meta) by seq, the snapshots after `before` folded again from
        this base (a purge, server.erasure): every snapshot of the document after
        `before` is replaced by these in the same transaction, so that nobody ever
        reads the new base under a snapshot folded from the old one (nor keeps one
        written meanwhile: snapshots are a cache)."""

    # --- named versions --------------------------------------------------------------

    @abstractmethod
    async def put_tag(self, doc: str, name: str, seq: int, actor: str, *, move: bool = True) -> Tag:
        """Name version `seq` of `doc`; a tag of that name moves to it. With ``move``
        False an existing tag of that name stays as it is, atomically: the answer is the
        tag as stored, which then names its own seq (the caller compares)."""

    @abstractmethod
    async def tags(self, doc: str) -> list[Tag]: ...

    @abstractmethod
    async def delete_tag(self, doc: str, name: str, actor: str = "") -> bool:
        """Remove the tag; False when there was none. `actor`: who, for tag_history."""

    @abstractmethod
    async def tag_history(self, doc: str, name: str | None = None) -> list[TagMove]:
        """Every creation, move and deletion of the document's tags (of the tag `name`
        only, when given), oldest first: written by put_tag and delete_tag in the same
        transaction as the change (a put that leaves the tag where it was is none).
        Compaction keeps them; deleting the document removes them with its tags."""

    # --- bulk copy (palimpsest copy) ---------------------------------------------------

    @abstractmethod
    async def import_doc(
        self,
        info: DocInfo,
        events: Sequence[Event],
        snapshots: Sequence[Snapshot],
        tags: Sequence[Tag],
        *,
        replace: bool = False,
        keep_positions: bool = False,
        tombstone: bytes | None = None,
        replacing: tuple[int | None, int] | None = None,
        tag_moves: Sequence[TagMove] = (),
    ) -> None:
        """Write a whole document as it is (seqs, snapshots and tags kept) atomically.

        `tag_moves`: the record of its tags' changes as the source has it (its
        tag_history, oldest first), written as it is: who changed a tag when stays
        known in the copy. A replaced document's records go with its tags.

        The events get this store's next positions, or, with ``keep_positions``, keep
        their own (the source's commit order, so that its followers' cursors stay valid:
        for a store that has given out none of them, which the caller checks), and
        positions from then on come after them.

        Raises StoreError for a document that already exists here, unless ``replace``,
        and, with ``keep_positions``, for a position an event written here holds (the
        tail's, which holds what a server wrote since the caller's check).

        `tombstone`, when given, is written as the name's (:meth:`tombstone`) in the same
        transaction: ``copy --replace`` records there what the replaced document held
        (deletion.replace_tombstone), so that no client's copy of it comes back.

        `replacing`: the (generation, head) of the document of the name that `tombstone`
        was read from. The import checks in its transaction, where no append to the
        document can come between the check and the write, that the name still holds
        that document at that head, and raises MovedMeanwhile otherwise (a writer
        committed to it since the read, or it was deleted or replaced), writing nothing:
        the caller reads it again, so that no edit of the replaced document is left
        out of the tombstone. (None, 0) (or a head of 0): the name held no document."""

    @abstractmethod
    async def import_deletions(self, records: Sequence[Event]) -> int:
        """Write deletion records (:meth:`deletions`) as they are, positions kept, in one
        transaction; how many were written. For a copy that kept its source's positions
        (``import_doc(keep_positions=True)``): the target's changefeed then holds the
        source's ``deleted`` records where the source's does. A record already here (the
        same position, document and seq: an earlier run of the copy) is left as it is,
        and positions from then on come after the last one.

        Raises StoreError for a position another record here holds, or an event of the
        tail (what a server wrote since the caller's check)."""

    @abstractmethod
    async def carry_positions(self, last: int) -> None:
        """Give out positions after ``last`` from now on (nothing changes when the store
        is past it already): a copy that kept its source's positions carries them past
        the source's end, which events deleted or left behind may have set."""

    # --- retention and derived data (caches of the log) --------------------------------

    @abstractmethod
    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> int:
        """Drop the snapshots of `doc` at these seqs (retention: see server.retention);
        returns how many there were. Never touches the log."""

    async def reclaim_snapshots(self, *, idle: bool = False) -> None:  # noqa: B027 - optional
        """Make the space of snapshots deleted or rewritten (retention) reusable, where
        the store does not by itself (PostgreSQL: VACUUM). Retention calls it after a prune
        that changed anything; `idle`: after the last snapshot of a document gone idle."""

    @abstractmethod
    async def put_derived(self, doc: str, kind: str, seq: int, data: bytes) -> None:
        """Store `data` derived from the log of `doc` up to `seq` (e.g. the attribution
        index), checksummed, replacing the one of this kind unless that one is at a
        higher seq (several processes may store it). Dropped with the document."""

    @abstractmethod
    async def derived(self, doc: str, kind: str) -> tuple[int, bytes] | None:
        """(seq, data) of the stored derived data of this kind, or None when there is
        none or its checksum does not hold (logged, never raised)."""

    @abstractmethod
    async def rename_actor(self, old: str, new: str, rewrite: MetaRewrite) -> ActorRenamed:
        """Rename actor `old` to `new` everywhere the store keeps it, in one transaction:
        the interned name of its events, tags, and every snapshot's meta (`rewrite`);
        drops the stored attribution indexes of the documents it wrote. Raises
        ActorTaken when `new` is an actor already, or `old` is also an event kind. For
        a store no server serves (their caches keep the old name). The store's own
        copies of the old bytes (freed pages, old row versions) are scrubbed as far as
        it can (SQLite: rewritten with secure_delete, checkpointed, vacuumed;
        PostgreSQL: VACUUM FULL of the tables it rewrote)."""

    @abstractmethod
    async def restamp(self, doc: str, after: int, stamp: Stamp, rewrite: MetaRewrite) -> Restamped:
        """Give every event of `doc` whose ts is after `after` the ts ``stamp(ts)``, in
        one transaction with the rest of the document's times after `after`: its tags'
        and snapshots' ts, the ts of its tags' records of changes (tag_history: stamped
        by the same clock as the tag, whose ts stays its last record's), its created and
        updated times (the floor of its next event's ts), and every snapshot's meta
        through `rewrite` (None: left as it is). Sealed segments that hold such events
        are written again. `stamp` must keep the log non-decreasing: rising, and at
        least the ts of every event at or before `after` (server.maintenance.restamp_doc).
        For a store no server serves: their rooms and caches keep the old times
        (``palimpsest restamp``)."""

    # --- webhook delivery cursors (server.changefeed) ---------------------------------

    @abstractmethod
    def webhook_cursors(self) -> WebhookCursors:
        """Where webhook deliveries keep their cursors (server.store.cursors): in this
        store, so that a restart (or another process) resumes where delivery stopped."""

    @abstractmethod
    def doc_locks(self) -> DocLocks:
        """The locked documents (server.store.doc_locks, server.locking), kept in this
        store so that every process and every restart holds them read-only."""

    @abstractmethod
    def revocations(self) -> Revocations:
        """The revoked users (server.store.revocations), kept in this store so that every
        process and every restart refuses their old tokens."""
