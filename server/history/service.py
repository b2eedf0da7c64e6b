"""Browsable history: events, editing sessions, any version, attributed diffs, blame,
restore and named versions (tags). Framework-free; server/routes/history.py is the HTTP
face of it.

- A version at seq S is rebuilt by :func:`server.snapshots.load` (nearest valid
  snapshot at or below S + the events after it, never the whole log).
- Blame and text diffs come from the attribution index (server.history_attribution),
  kept in memory per document and extended incrementally.
- Restore is a forward event of kind ``restore`` computed on the live document
  (server.history_restore), so it broadcasts, converges and is undoable like any edit.
- Sessions group each actor's events separated by less than a gap (5 minutes).

A ``ref`` (wherever a seq is accepted) is a seq number, a tag name, or ``head``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pycrdt import Array, Doc, Map, Text, XmlFragment, merge_updates

from .. import cpu_account, subdoc_options
from ..bookkeeping import bookkeeping_of
from ..deletion import missing
from ..errors import BadRequest, Conflict, LogDamaged, NotFound, StoreError, StoreUnavailable
from ..limits import Limits
from ..log_damage import check_gapless, hole_error, lacking
from ..origins import ServerOrigin
from ..ownership import Owners
from ..protocol import decode_state_vector
from ..removed import Change, change_in_parts
from ..snapshots import load
from ..store.base import (
    BASE_TS,
    FIRST_TS,
    MAX_SEQ,
    DocInfo,
    Event,
    EventStore,
    Made,
    Tag,
    TagMove,
)
from ..util import iso, parse_iso
from . import sliced
from .attribution import AttributionIndex
from .attribution_cache import AttributionCache
from .attribution_nested import NestedCache, NestedIndex, NestedTrack, followed, parse_path
from .attribution_xml import observe_trees
from .render import (
    ARRAY,
    MAP,
    ROOT_CLASSES,
    TEXT,
    XML,
    array_items,
    copy_with_items,
    infer_root_types,
    learn_types,
    render_root,
    root_entry,
    root_names,
    root_tree_entry,
    structural_diff,
    typed_roots,
)
from .restore import (
    Copying,
    Writers,
    apply_delta,
    check_depth,
    make_equal,
    rebase_text,
    scratch_client,
    set_text,
)
from .rich_diff import (
    ATTRIBUTE_FORMATS_WORK,
    Mismatch,
    attribute_formats,
    formatted_blame,
    formatted_ops,
    observe_texts,
    replay_marks,
)
from .sessions import Sessions, SessionsCache
from .undefined import marked

if TYPE_CHECKING:
    from ..auth import Identity
    from ..backend import Backend
    from ..room import Room

#: what a tree walk (History._walk) answers
W = TypeVar("W")

log = logging.getLogger("palimpsest.history")

#: a root's kind as a refusal names it (as the Python client's WrongType does)
_KIND_WORDS = {MAP: "a map", ARRAY: "an array", XML: "an XML tree"}

#: editing sessions: same actor, gaps shorter than this
SESSION_GAP_MS = 5 * 60 * 1000
#: sessions kept in memory at the default gap (the web page's): per document, at most
#: this many documents and this much estimated memory (sessions.SessionsCache)...
SESSIONS_KEPT = 32
SESSIONS_KEPT_BYTES = 32 * 1024 * 1024
#: ...and at any other gap, apart, so that a reader who tries many gaps does not push
#: the default gap's out (the gap goes up to a week, in seconds: 604,800 of them)
OTHER_GAPS_KEPT = 8
OTHER_GAPS_KEPT_BYTES = 8 * 1024 * 1024
#: the documents whose root types and creation this service remembers (see History.info):
#: the least recently used beyond these are forgotten, with their cached history
KNOWN_DOCS = 1024
MAX_PAGE = 1000
#: a diff over at most this many events, asked before the document's attribution index
#: exists, folds just its range rather than building the index
RANGE_DIFF_MAX = 20_000
#: no control character, no '/', no space at either end (" " and "v1 " looked like
#: no name and like "v1")
_TAG = re.compile(r"[^ \x00-\x1f\x7f/]([^\x00-\x1f\x7f/]{0,62}[^ \x00-\x1f\x7f/])?")
_INT = re.compile(r"-?[0-9]+")


def public_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Event metadata as readers see it: the connection id names the server's host and
    process (``host:pid/n``), so they get an opaque digest that still tells connections
    apart (an edit's ``conn``; the ``session`` whose undo step an undo_mark closed)."""
    hidden = {
        key: hashlib.sha256(value.encode()).hexdigest()[:12]
        for key in ("conn", "session")
        if isinstance(value := meta.get(key), str)
    }
    return {**meta, **hidden} if hidden else meta


def event_json(ev: Event) -> dict[str, Any]:
    reverts: list[int] | None = None
    if isinstance(ev.meta.get("reverts"), list):
        reverts = [int(s) for s in ev.meta["reverts"]]
    elif ev.kind == "restore" and isinstance(ev.meta.get("restores"), int):
        reverts = [int(ev.meta["restores"])]
    return {
        "seq": ev.seq,
        # the global commit position (GET /api/events/stream resumes by it)
        "pos": ev.pos,
        "ts": iso(ev.ts),
        "actor": ev.actor,
        "kind": ev.kind,
        "size": len(ev.update),
        # the Yjs clients are derived from the update (the log does not store them)
        "meta": {**public_meta(ev.meta), "clients": ev.clients},
        "reverts": reverts,
    }


def tag_json(tag: Tag) -> dict[str, Any]:
    return {"name": tag.name, "seq": tag.seq, "ts": iso(tag.ts), "actor": tag.actor}


def tag_move_json(move: TagMove) -> dict[str, Any]:
    return {"name": move.name, "action": move.action, "seq": move.seq, "was": move.was,
            "ts": iso(move.ts), "actor": move.actor}  # fmt: skip


def tag_key(name: str) -> str:
    """A tag name in the form it is stored and compared in: Unicode NFC, as user names are
    (docs/security.md). "versão" typed as a + combining tilde (NFD, what macOS file names
    and some keyboards give) made a second tag that looked like the first, and the other
    spelling read no tag at all (404)."""
    return unicodedata.normalize("NFC", name)


def validate_tag_name(given: Any) -> str:
    if given is None or given == "":
        raise BadRequest('the tag has no name: send {"name": "…", "seq": N}')
    if not isinstance(given, str):
        raise BadRequest(f'a tag name is a string, not {type(given).__name__}: {{"name": "…"}}')
    name = tag_key(given)
    if not _TAG.fullmatch(name):
        raise BadRequest(
            "a tag name is 1-64 printable characters, without '/' or a space at either end"
        )
    if _INT.fullmatch(name) or name == "head":
        raise BadRequest(f"{name!r} cannot be a tag name: it reads as a seq")
    if name in (".", ".."):  # clients collapse them in a URL's path: /tags/.. is /docs/x/
        raise BadRequest(f"{name!r} cannot be a tag name: it reads as a path")
    return name


def _plain_runs(root: Any) -> tuple[str, list[Any]] | None:
    """A text root's blame as its text and, for each code point, who wrote it and in
    which event (actor, seq): the same character alive at two versions has the same
    pair. None for any other root, or runs that are not all plain text."""
    if not isinstance(root, dict) or root.get("type") != "text":
        return None
    parts: list[str] = []
    who: list[Any] = []
    for run in root.get("runs") or []:
        text = run.get("text") if isinstance(run, dict) else None
        if not isinstance(text, str):
            return None
        parts.append(text)
        who.extend([(run.get("actor"), run.get("seq"))] * len(text))
    return "".join(parts), who


def _structural(
    va: Doc[Any], vb: Doc[Any], name: str, ta: dict[str, str], tb: dict[str, str]
) -> dict[str, Any]:
    """The structural diff of root `name` (not a text) from version `va` to `vb`, whose
    root types are `ta` and `tb`: run in a worker thread, the versions the caller's."""
    kind = tb.get(name) or ta[name]
    old = render_root(va, name, kind) if name in ta else None
    new = render_root(vb, name, kind) if name in tb else None
    return structural_diff(kind, old, new)


def _fragment(version: Doc[Any], name: str) -> XmlFragment:
    """XML root `name` of a version (a scratch document), empty if it has none yet."""
    fragment: XmlFragment = version.get(name, type=XmlFragment)
    return fragment


#: how many times restore plans its change again when the document changed meanwhile
#: (History.restore)
RESTORE_TRIES = 3


class _Moved(Exception):
    """The live document changed since restore's change was planned."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """Restore's change planned on a copy of the live document (History._plan_restore)."""

    #: the room's seq the copy was taken at
    seq: int
    #: the server's client's clock in the copy: another server change moves it
    clock: int
    #: the updates (a transaction each) and, for a text with writers, whose they took out
    parts: list[tuple[bytes, dict[Any, int] | None]]
    #: what they take out, per writer, and put in
    change: Change
    #: [originals, copies] of the deleted text and nodes they write again (restore.Copying)
    copies: list[list[str]]


def _clock(doc: Doc[Any]) -> int:
    return decode_state_vector(doc.get_state()).get(doc.client_id, 0)


def _restore_types(
    live: Doc[Any], live_types: dict[str, str], names: list[str], known: dict[str, str]
) -> dict[str, str]:
    """The type of each root restore makes equal: as the live document has it fixed,
    else as the version's are known, else guessed from `live`."""
    names = sorted(set(known) | set(names))
    untyped = [n for n in names if n not in live_types and n not in known]
    guessed = infer_root_types(live, untyped)
    return {n: live_types.get(n) or known.get(n) or guessed.get(n) or TEXT for n in names}


def _restore_parts(
    actor: str,
    live: Doc[Any],
    target: Doc[Any],
    types: dict[str, str],
    writers: dict[str, Writers],
    items: dict[str, list[Any]] | None = None,
    skip_roots: tuple[str, ...] = (),
    copies: list[list[str]] | None = None,
) -> list[tuple[bytes, dict[Any, int] | None]]:
    """Restore's change: every root of `live` made equal to `target`'s, in
    transactions of `actor`'s (one event: Room.server_change merges them), but the
    bookkeeping roots (`skip_roots`, settings.undo_skip_roots, and a
    Y.PermanentUserData's map: server/bookkeeping.py), which keep what they hold now:
    restored to a version before a user came, PUD's map lost their entry, and every
    PUD client threw. Each
    plain text root blame named writers for (`writers`) is a transaction of its own,
    so that what it took out counts for them (removed.change_in_parts): the updates
    made and, for those, who wrote what they took out (None: the items' owners say).
    `items`: the items of `live`'s root arrays (render.copy_with_items). `copies` gets
    [originals, copies] for the version's deleted text and XML nodes the change writes
    again (restore.Copying), for the event's meta."""
    skip = bookkeeping_of((live, target), types, skip_roots)
    if skip:
        types = {n: t for n, t in types.items() if n not in skip}
    # before anything is changed: a version too deep to copy is refused whole (a root
    # array's items read once, in linear time, for make_equal too)
    held = set(target.keys())
    wants: dict[str, list[Any]] = {}
    for name, kind in types.items():
        if name not in held:
            continue
        if kind == ARRAY:
            wants[name] = array_items(target, name)
            for item in wants[name]:
                check_depth(item, 2)
        else:
            check_depth(target.get(name, type=ROOT_CLASSES[kind]))
    own = sorted(n for n in writers if types.get(n) == TEXT)
    groups = [{n: TEXT} for n in own]
    groups.append({n: t for n, t in types.items() if n not in writers or t != TEXT})
    parts: list[tuple[bytes, dict[Any, int] | None]] = []
    captured: list[bytes] = []
    copying = Copying(live, target) if copies is not None else None
    sub = live.observe(lambda e: captured.append(e.update))
    try:
        for group in groups:
            named: list[dict[Any, int]] = []
            with live.transaction(origin=ServerOrigin(actor, "restore")):
                make_equal(live, target, group, writers, named, items, wants, copying)
            if captured:
                update = captured[0] if len(captured) == 1 else merge_updates(*captured)
                parts.append((update, named[0] if named else None))
                captured.clear()
    finally:
        live.unobserve(sub)
    if copying is not None and copies is not None:
        copies.extend(copying.pairs())
    return parts


def _mark_compacted(value: Any, base: int) -> None:
    """Mark `compacted` each run and node of a blame whose writer a compaction folded
    away (its text is the base's, written at seq `base` by nobody known): its `actor`
    null says no more than that, where a reader took it for a fault."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if "actor" in v and v["actor"] is None and v.get("seq") == base:
                v["compacted"] = True
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _plan(
    actor: str,
    seq: int,
    state: bytes,
    client_id: int,
    live_types: dict[str, str],
    names: list[str],
    target: Doc[Any],
    known: dict[str, str],
    writers: dict[str, Writers],
    owners: Owners,
    skip_roots: tuple[str, ...] = (),
) -> _Plan:
    """History._plan_restore's work, in a worker thread: a copy of the live document
    (`state`, under its `client_id`, its root arrays' items read as it is built), the
    change made on it, and what that took out and put in."""
    untyped = [n for n in set(known) | set(names) if n not in live_types and n not in known]
    probe: Doc[Any] = Doc(skip_gc=True)
    if untyped:
        probe.apply_update(state)
    types = _restore_types(probe, live_types, names, known)
    arrays = [n for n, t in types.items() if t == ARRAY]
    live, items = copy_with_items(state, arrays, client_id)
    clock = _clock(live)
    copies: list[list[str]] = []
    parts = _restore_parts(actor, live, target, types, writers, items, skip_roots, copies)
    change = change_in_parts(live, owners, parts) if parts else Change({}, (0, 0))
    return _Plan(seq, clock, parts, change, copies)


#: the root PUT /text writes in a document that has none (and `cat`/`edit` default to)
DEFAULT_TEXT_ROOT = "content"


def pick_text_root(doc: str, kinds: dict[str, str]) -> str:
    """See :meth:`History.default_text_root`; `kinds`: each root's type."""
    if not kinds or DEFAULT_TEXT_ROOT in kinds:
        return DEFAULT_TEXT_ROOT
    texts = [name for name, kind in kinds.items() if kind == TEXT]
    if len(texts) == 1:
        return texts[0]
    listing = ", ".join(f"{name} ({kinds[name]})" for name in sorted(kinds))
    if not texts:
        raise BadRequest(
            f"{doc!r} holds no text root (its roots: {listing}): name the root to write "
            'with "root" (a new name adds a text beside them)'
        )
    raise BadRequest(f'{doc!r} has several text roots ({listing}): choose one with "root"')


class History:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.attribution = AttributionCache(
            backend.store,
            last_edit=lambda: backend.committer.last_commit,
            max_bytes=int(backend.settings.attribution_cache_mb * 1024 * 1024),
        )
        #: the attribution of the texts nested in map and array roots (not stored)
        self.nested = NestedCache(backend.store)
        #: per document known (see _created), the root types learnt so far (a root's
        #: type never changes)
        self._types: dict[str, dict[str, str]] = {}
        self._sessions = SessionsCache(SESSIONS_KEPT, SESSIONS_KEPT_BYTES)
        self._other_gaps = SessionsCache(OTHER_GAPS_KEPT, OTHER_GAPS_KEPT_BYTES)
        #: per document, the DocInfo.made the caches above were built for: another
        #: one means the name was deleted and written again since, on this process or
        #: another (whose fan-out message may never come), and what they hold is forgotten.
        #: Least recently used first: at most known_docs of them, the others forgotten
        self._created: OrderedDict[str, Made] = OrderedDict()
        self.known_docs = KNOWN_DOCS

    @property
    def store(self) -> EventStore:
        return self.backend.store

    # --- resolving references -------------------------------------------------------------

    async def info(self, doc: str) -> DocInfo:
        info = await self.store.doc_info(doc)
        if info is None:
            self.forget(doc)
            raise await missing(self.store, doc)
        if self._created.get(doc, info.made) != info.made:
            self.forget(doc)
        self._created[doc] = info.made
        self._created.move_to_end(doc)
        while len(self._created) > self.known_docs:
            self.forget(next(iter(self._created)))
        return info

    def forget(self, doc: str) -> None:
        """Drop what this service holds of `doc` (its root types, sessions, attribution
        index): the document was deleted, or not used for long (see known_docs)."""
        self._types.pop(doc, None)
        self._sessions.forget(doc)
        self._other_gaps.forget(doc)
        self.attribution.drop(doc)
        self.nested.drop(doc)
        self._created.pop(doc, None)

    def _learnt(self, doc: str) -> dict[str, str]:
        """The root types learnt of `doc`, kept while the document is known (see info,
        which makes it known); for one that is not, a dict of its own, not kept."""
        if doc not in self._created:
            return {}
        return self._types.setdefault(doc, {})

    async def resolve(self, doc: str, ref: Any, info: DocInfo | None = None) -> int:
        """A seq from a seq number, a tag name or "head"; checked against the log."""
        info = info or await self.info(doc)
        if ref is None or ref == "" or ref == "head":
            return info.head
        if isinstance(ref, float) and ref.is_integer():
            ref = int(ref)  # JSON's 220.0 is the integer 220 (as JSON Schema counts)
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise BadRequest(f"a version is a seq number or a tag name, not {ref!r}")
        if isinstance(ref, str) and not _INT.fullmatch(ref.strip()):
            # (compared in NFC: a tag named before names were taken to NFC is found too)
            key = tag_key(ref)
            for tag in await self.store.tags(doc):
                if tag_key(tag.name) == key:
                    return self._check(doc, tag.seq, info)
            raise NotFound(f"document {doc!r} has no tag named {ref!r}")
        if isinstance(ref, str) and ref.strip().startswith("-"):
            # "-0" too: a seq is written as digits, as docs/openapi.yaml's Ref says
            raise BadRequest(f"seq must be >= 0, not {ref.strip()}")
        if isinstance(ref, str) and len(ref.strip()) > 18:
            raise BadRequest(f"seq {ref[:24]}... is out of range")
        if isinstance(ref, int) and ref > MAX_SEQ:  # a JSON number (strings: just above)
            raise BadRequest(f"seq {str(ref)[:24]}... is out of range")
        return self._check(doc, int(ref), info)

    async def resolve_or_time(self, doc: str, ref: Any, info: DocInfo | None = None) -> int:
        """As resolve, or an ISO-8601 time that names no tag: the version at that time
        (the last event at or before it), as versions?at= reads it (a diff's ?from= and
        ?to=: a time was a 404 "no tag named", while versions?at= and compact take one)."""
        info = info or await self.info(doc)
        try:
            return await self.resolve(doc, ref, info)
        except NotFound as e:
            if not isinstance(ref, str) or _INT.fullmatch(ref.strip()):
                raise
            try:
                ts = parse_iso(ref)
            except BadRequest:
                raise NotFound(f"{e}, and {ref[:64]!r} is not an ISO-8601 time") from None
            return await self.seq_at(doc, ts, info)

    @staticmethod
    def _check(doc: str, seq: int, info: DocInfo) -> int:
        if seq < 0:
            raise BadRequest(f"seq must be >= 0, not {seq}")
        if seq > info.head:
            raise NotFound(f"document {doc!r} has no seq {seq}: its head is {info.head}")
        if seq < info.base_seq:
            raise NotFound(
                f"seq {seq} of {doc!r} was compacted away: history starts at {info.base_seq}"
            )
        return seq

    async def seq_at(self, doc: str, ts_ms: int, info: DocInfo | None = None) -> int:
        """The last seq whose event has ts <= ts_ms. Before a compaction's base, the
        version was compacted away (404, as its seq is), but before the document's
        first event, which the base keeps the time of, it was empty: seq 0, as before
        the compaction; a base made before its time was recorded answers for any time
        before the first event left."""
        info = info or await self.info(doc)
        seq = await self.store.seq_at(doc, ts_ms)
        if seq >= info.base_seq:
            return seq
        base_ts, first_ts = await self._base_ts(doc, info)
        if base_ts is None or ts_ms >= base_ts:
            return info.base_seq
        if first_ts is not None and ts_ms < first_ts:
            return 0
        why = (
            f"its first event was at {iso(first_ts)}"
            if first_ts is not None
            else "whether it had been written by then is not known either: the compaction "
            "that made its base (before 7 Dec 2026) kept no time of its first event"
        )
        raise NotFound(
            f"{doc!r} as it was at {iso(ts_ms)} was compacted away: history starts at seq "
            f"{info.base_seq} ({iso(base_ts)}); {why}"
        )

    async def _base_ts(self, doc: str, info: DocInfo) -> tuple[int | None, int | None]:
        """The ts of the compaction base's event and of the document's first event, kept
        in the base snapshot's meta (None where it keeps none)."""
        if info.base_seq <= 0:
            return None, None
        snap = await self.store.latest_snapshot(doc, at_most=info.base_seq)
        if snap is None or snap.seq != info.base_seq:
            return None, None
        ts, first = snap.meta.get(BASE_TS), snap.meta.get(FIRST_TS)
        return (
            ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
            first if isinstance(first, int) and not isinstance(first, bool) else None,
        )

    async def event_ts(self, doc: str, seq: int) -> str | None:
        if seq <= 0:
            return None
        evs = await self.store.read(doc, after=seq - 1, upto=seq)
        if evs:
            return iso(evs[0].ts)
        info = await self.store.doc_info(doc)
        base_ts = (await self._base_ts(doc, info))[0] if info and seq == info.base_seq else None
        return iso(base_ts) if base_ts is not None else None

    # --- versions ---------------------------------------------------------------------------

    async def doc_at(self, doc: str, seq: int) -> Doc[Any]:
        """A scratch document equal to the fold of events 1..seq."""
        return (await self._load(doc, seq))[0]

    async def _load(self, doc: str, seq: int) -> tuple[Doc[Any], int | None]:
        """The document at seq (nearest snapshot + the events after it), and the ts of
        event seq when it was among those replayed."""
        loaded = await load(self.store, doc, upto=seq, off_loop=True)
        try:
            check_gapless(doc, loaded)
        except LogDamaged as e:
            # a hole below the snapshot the document loads from (the load refuses the
            # others): name the missing seqs and what is still served
            told = await hole_error(self.store, doc, f"version {seq} was asked for")
            raise (told or e) from None
        if loaded.seq < seq:  # (resolve checked seq against the head)
            what = f"version {seq} was asked for"
            raise await hole_error(self.store, doc, what) or await lacking(
                self.store, doc, seq, loaded.seq, what
            )
        ts = loaded.last_ts if loaded.replayed and loaded.seq == seq else None
        return loaded.doc, ts

    def types(self, doc: str, ydoc: Doc[Any]) -> dict[str, str]:
        """Types of every root of `ydoc` (cached per document once learnt)."""
        return self._with_learnt(doc, ydoc, learn_types(ydoc, dict(self._learnt(doc))))

    async def types_off_loop(self, doc: str, ydoc: Doc[Any]) -> dict[str, str]:
        """types(), what grows with the document (inferring untyped roots: a copy of it)
        in a worker thread: `ydoc` must be the caller's alone (a version loaded for it)."""
        learnt = await cpu_account.to_thread(learn_types, ydoc, dict(self._learnt(doc)))
        return self._with_learnt(doc, ydoc, learnt)

    def _with_learnt(self, doc: str, ydoc: Doc[Any], learnt: dict[str, str]) -> dict[str, str]:
        known = self._learnt(doc)
        for name, kind in learnt.items():
            known.setdefault(name, kind)
        return {n: known.get(n, TEXT) for n in root_names(ydoc)}

    async def version(self, doc: str, seq: int, tree: bool = False) -> dict[str, Any]:
        """The version as JSON; `tree`: its XML roots as JSON trees (``?format=tree``),
        not strings."""
        ydoc, ts_ms = await self._load(doc, seq)
        types = await self.types_off_loop(doc, ydoc)
        entry = root_tree_entry if tree else root_entry
        # (a root of 10,000 notebook cells took 1.2 s to render, on the event loop)
        roots = await cpu_account.to_thread(
            lambda: {n: entry(ydoc, n, k) for n, k in types.items()}
        )
        if ts_ms is not None:
            ts: str | None = iso(ts_ms)
        else:
            try:
                ts = await self.event_ts(doc, seq)
            except StoreUnavailable:
                raise
            except StoreError as e:
                # a damaged segment holds event seq: the version came whole from a
                # snapshot at seq (a load that needed the segment failed above); only
                # the event's time cannot be read (docs/storage.md#damage)
                log.info("%s@%d served from its snapshot without its time: %s", doc, seq, e)
                return {"doc": doc, "seq": seq, "ts": None, "roots": roots}
        if ts is None and seq > 0:
            # a snapshot at seq, and no event: the compaction base, or a log that lacks
            # its last events (rows deleted by hand) and is not to be served as sound
            info = await self.info(doc)
            if seq != info.base_seq:
                what = "its head is" if seq == info.head else "version"
                raise await lacking(self.store, doc, seq, info.base_seq, f"{what} {seq}")
        return {"doc": doc, "seq": seq, "ts": ts, "roots": roots}

    async def version_update(self, doc: str, seq: int) -> bytes:
        ydoc = await self.doc_at(doc, seq)
        return subdoc_options.restored(ydoc, ydoc.get_update())

    # --- attribution ----------------------------------------------------------------------

    async def _index_for(self, doc: str, info: DocInfo, seqs: list[int]) -> AttributionIndex:
        """The attribution index, folded to head, tracking every root known to be text
        or XML.

        A root with nothing visible at head has no known type: the versions asked for
        (`seqs`) teach it, and a root learnt to be text or XML makes the index track it."""
        cached = self.attribution.peek(doc)
        if cached is not None and cached.seq > info.head:  # deleted and re-created
            self.attribution.drop(doc)
        elif self.attribution.stale(doc, info.base_seq):  # compacted since it was built
            self.attribution.drop(doc)
        known = self._types.get(doc)
        if known is None:
            stored = await self.attribution.warm(doc, info.head)
            if stored is not None:  # a cold server: the stored index names its roots
                known = self._learnt(doc)
                for name, kind in stored.roots().items():
                    known.setdefault(name, kind)
            else:
                await self.types_off_loop(doc, await self.doc_at(doc, info.head))
                known = self._learnt(doc)
        index = await self.attribution.get(doc, info.head, self._tracked(known))
        if any(n not in known and n not in index.roots() for n in index.doc.keys()):
            for seq in sorted(set(seqs)):
                await self.types_off_loop(doc, await self.doc_at(doc, seq))
            index = await self.attribution.get(doc, info.head, self._tracked(known))
        for name, kind in index.roots().items():
            known.setdefault(name, kind)
        return index

    async def refresh_attribution(self, doc: str, build_from: int) -> bool:
        """Store the attribution index of `doc` up to its head (see attribution_cache):
        called off the editing path, when the document's room unloads."""

        async def roots() -> dict[str, str]:
            known = self._types.get(doc)
            if known is None:
                info = await self.info(doc)
                await self.types_off_loop(doc, await self.doc_at(doc, info.head))
                known = self._learnt(doc)
            return self._tracked(known)

        return await self.attribution.refresh(doc, roots, build_from)

    @staticmethod
    def _tracked(known: dict[str, str]) -> dict[str, str]:
        """The roots the attribution index tracks: text and XML ones, name -> kind."""
        return {n: k for n, k in sorted(known.items()) if k in (TEXT, XML)}

    async def _walk(
        self, doc: str, index: AttributionIndex, what: str, fn: Callable[..., W], *args: Any
    ) -> W | None:
        """A walk of a tree (attribution_xml's blame or diff, a whole tree's): in a worker
        thread, the cache's index held still by its per-document lock (a range diff's
        own index needs no lock, nor waits for one); None, logged, if the tree and the
        version(s) do not match."""
        shared = index is self.attribution.peek(doc)
        held = self.attribution.lock(doc) if shared else contextlib.nullcontext()
        try:
            async with held:
                return await cpu_account.to_thread(fn, *args)
        except Mismatch as e:
            log.warning("%s of %s: %s", what, doc, e)
            return None

    async def _sliced(
        self, doc: str, index: AttributionIndex, steps: Generator[None, None, W]
    ) -> W:
        """A walk of a text's runs (blame_steps, diff_steps) in slices on the event loop
        (history.sliced), the cache's index held still by its per-document lock as in
        _walk. Before 6 Dec 2026 a blame walked in one piece on the loop and a long
        text's diff in a worker thread, which held the loop as much (the interpreter is
        one): a book's blame or diff held every other room for 0.5-2 s."""
        shared = index is self.attribution.peek(doc)
        held = self.attribution.lock(doc) if shared else contextlib.nullcontext()
        async with held:
            return await sliced.walk(steps)

    async def blame(
        self,
        doc: str,
        seq: int,
        info: DocInfo,
        root: str | None,
        path: str | None = None,
        *,
        nested: bool = True,
    ) -> dict[str, Any]:
        """Who wrote what at `seq`: each text and XML root (or `root`), and the texts
        nested in each map and array root (`nested`; `path`: only the texts at or under
        it, see attribution_nested)."""
        segments: list[str] | None = None
        if path:
            segments = parse_path(path.strip("/"))
            if root is not None and root != segments[0]:
                raise BadRequest(f"?path= {path!r} is not in ?root= {root!r}")
            root = segments[0]
        if seq == 0:  # the empty document, whose version has no roots (the index's are
            # the head's: they were answered with no runs and no nodes)
            if root is not None:
                raise NotFound(f"document {doc!r} has no text or XML root {root!r} at seq 0")
            return {"doc": doc, "seq": 0, "roots": {}}
        index = await self._index_for(doc, info, [seq])
        roots: dict[str, Any] = {}
        version: Doc[Any] | None = None
        written: set[str] = set()  # its roots, before a get() below makes one

        async def at_seq() -> Doc[Any]:  # the version, loaded once if a root needs it
            nonlocal version
            if version is None:
                version = await self.doc_at(doc, seq)
                written.update(root_names(version))
            return version

        async def walk(name: str, blame: Callable[..., Any], at: Any) -> Any:
            """a tree's blame (a text root's holding types, or an XML root's) at `at`,
            its node in the version; None if the tree and the document disagree"""
            what = f"blame of {name!r} at {seq}"
            return await self._walk(doc, index, what, blame, seq, index.actors, index.first, at)

        for name in sorted(index.tracks):
            if root is not None and name != root:
                continue
            tree = index.trees.get(name)
            if tree is not None and tree.failed is None:  # it holds shared types
                walked = await walk(name, tree.text_blame, (await at_seq()).get(name, type=Text))
                if walked is not None:
                    roots[name] = {"type": TEXT, "runs": walked}
                    continue
            runs = await self._sliced(doc, index, index.blame_steps(name, seq))
            if index.tracks[name].rich:  # the version's formatting and embeds on the runs
                runs = await cpu_account.to_thread(formatted_blame, doc, name, runs, await at_seq())
            roots[name] = {"type": TEXT, "runs": runs}
        for name, xml in sorted(index.xml.items()):
            if (root is not None and name != root) or xml.failed is not None:
                continue
            nodes = await walk(name, xml.blame, _fragment(await at_seq(), name))
            if nodes is not None:
                roots[name] = {"type": XML, "nodes": nodes}
        # the index tracks the head's roots: one written only after seq, or never written
        # at all, answered no runs (no nodes) where the version has no such root
        empty = [n for n, e in roots.items() if not e.get("runs", e.get("nodes"))]
        if empty:
            await at_seq()
            for name in empty:
                if name not in written:
                    del roots[name]
        unfollowed: dict[str, str] = {}
        if nested:
            await self._nested_blame(doc, seq, info, root, at_seq, roots, unfollowed)
        if segments is not None:
            _at_path(doc, roots, segments, path or "")
        left = await self._not_attributed(doc, index, roots, root, at_seq, unfollowed)
        if root is not None and root not in roots:
            failed = index.xml[root].failed if root in index.xml else None
            if failed is not None:  # (logged when it stopped)
                raise NotFound(f"XML root {root!r} of {doc!r} is not attributed: {failed}")
            if left:
                raise NotFound(f"root {root!r} of {doc!r} is not attributed: {left[0]['reason']}")
            raise NotFound(f"document {doc!r} has no text or XML root {root!r} at seq {seq}")
        if info.base_seq > 0:
            _mark_compacted(roots, info.base_seq)
        answer: dict[str, Any] = {"doc": doc, "seq": seq, "roots": roots}
        if left:
            answer["not_attributed"] = left
        return answer

    async def _not_attributed(
        self,
        doc: str,
        index: AttributionIndex,
        roots: dict[str, Any],
        root: str | None,
        at_seq: Callable[[], Awaitable[Doc[Any]]],
        failed: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The roots of the version a blame left out (or `root`, if it did), each as
        {root, type, reason}: text or XML roots whose attribution could not be followed,
        maps and arrays whose nested texts could not be (`failed`: why, by name), and
        maps and arrays when the blame did not look at nested texts (restore's). A root
        with nothing in it is left out silently: there is nothing to attribute."""
        names = [n for n in sorted(index.doc.keys()) if n not in roots and root in (None, n)]
        known = self._learnt(doc)
        if any(n not in known for n in names):  # (a cold server knows its tracked roots)
            known = {**self.types(doc, await at_seq()), **known}
        out: list[dict[str, Any]] = []
        for name in names:
            kind = known.get(name)
            xml = index.xml.get(name)
            tree = index.trees.get(name)
            if xml is not None and xml.failed is not None:
                why = f"its XML could not be followed ({xml.failed})"
            elif name in index.xml or name in index.tracks:
                why = "its attribution and the version disagree (the server logged it)"
                if tree is not None and tree.failed is not None:
                    why = f"the shared types in it could not be followed ({tree.failed})"
            elif kind in (MAP, ARRAY) and failed and name in failed:
                why = failed[name]
            elif kind in (MAP, ARRAY):
                why = "blame attributes text and XML roots, and the texts a map or array holds"
            else:
                continue
            out.append({"root": name, "type": kind or TEXT, "reason": why})
        return out

    async def _nested_blame(
        self,
        doc: str,
        seq: int,
        info: DocInfo,
        root: str | None,
        at_seq: Callable[[], Awaitable[Doc[Any]]],
        roots: dict[str, Any],
        failed: dict[str, str],
    ) -> None:
        """The texts nested in the map and array roots of version `seq` (or in `root`),
        into `roots` as {type, texts}; why a root's could not be followed into `failed`."""
        kinds = await self.types_off_loop(doc, await at_seq())
        kinds = {n: k for n, k in kinds.items() if k in (MAP, ARRAY)}
        names = [n for n in sorted(kinds) if root in (None, n)]
        if not names:
            return
        version = await at_seq()

        def walk(index: NestedIndex, tree: NestedTrack, name: str, kind: str) -> Any:
            real = version.get(name, type=Array if kind == ARRAY else Map)
            items = array_items(version, name) if kind == ARRAY else None
            return tree.blame(name, seq, index.actors, index.first, real, items)

        def holding(name: str, kind: str) -> bool:
            """whether the root holds a shared type at the version (none: no text can
            be nested in it, and no index is folded for it: a text document's map of
            plain settings costs nothing)"""
            if kind == ARRAY:
                return any(map(followed, array_items(version, name)))
            return any(map(followed, version.get(name, type=Map).values()))

        held = await cpu_account.to_thread(lambda: [n for n in names if holding(n, kinds[n])])
        for name in names:
            if name not in held:
                roots[name] = {"type": kinds[name], "texts": []}
        if not held:
            return
        async with self.nested.lock(doc):
            index = await self.nested.get(doc, info.head, info.base_seq, kinds)
            for name in held:
                tree = index.trees.get(name)
                if index.failed is not None or tree is None or tree.failed is not None:
                    why = index.failed or (tree.failed if tree is not None else "not followed")
                    failed[name] = f"its nested texts could not be followed ({why})"
                    continue
                try:
                    texts = await cpu_account.to_thread(walk, index, tree, name, kinds[name])
                except Mismatch as e:
                    log.warning("nested blame of %s/%s at %d: %s", doc, name, seq, e)
                    failed[name] = "its attribution and the version disagree (the server logged it)"
                    continue
                roots[name] = {"type": kinds[name], "texts": texts}

    async def diff(
        self, doc: str, a: int, b: int, info: DocInfo, root: str | None
    ) -> dict[str, Any]:
        if a > b:
            raise BadRequest(f"from ({a}) is after to ({b})")
        cached = self.attribution.peek(doc)
        docs: tuple[Doc[Any], Doc[Any]] | None = None
        events: list[Event] | None = None

        async def versions() -> tuple[Doc[Any], Doc[Any]]:  # a and b, loaded once if needed
            nonlocal docs
            if docs is None:
                docs = await self.doc_at(doc, a), await self.doc_at(doc, b)
            return docs

        # (an index built before a compaction is built again: see _index_for)
        unusable = cached is None or cached.seq > info.head
        if (unusable or self.attribution.stale(doc, info.base_seq)) and b - a <= RANGE_DIFF_MAX:
            # no index yet: fold just the range instead of building one from seq 0
            va, vb = await versions()
            kinds = {n: k for d in (va, vb) for n, k in (await self.types_off_loop(doc, d)).items()}
            index = AttributionIndex(doc, self._tracked(kinds), by_ids=False)  # by deltas
            index.start_from(a, va.get_update())
            events = await self.store.read(doc, after=a, upto=b)
            if len(events) != b - a:  # a hole between: the fold would come out short
                what = f"a diff from {a} to {b} folds the events between"
                raise await hole_error(self.store, doc, what) or LogDamaged(
                    doc, f"its log skips seqs between {a} and {b}"
                )
            await index.fold_sliced(events)  # other rooms keep flowing
        else:
            index = await self._index_for(doc, info, [a, b])
        # roots are never removed: the index's document (at b or later) names them all
        names = sorted(set(index.doc.keys()) | set(index.roots()))
        if root is not None:
            if root not in names:
                raise NotFound(f"document {doc!r} has no root {root!r}")
            names = [root]
        roots: dict[str, Any] = {}
        reformatted: list[str] = []
        # XML texts with format ops, by root: (the text's entry, its node's key)
        xml_reformatted: dict[str, list[tuple[dict[str, Any], int]]] = {}
        for name in names:
            tree = index.trees.get(name)
            if tree is not None and tree.failed is None:  # a text root with shared types
                ta, tb = (d.get(name, type=Text) for d in await versions())
                walked = await self._walk(doc, index, f"diff of {name!r}",
                                          tree.text_diff, a, b, index.actor, ta, tb)  # fmt: skip
                if walked is not None:
                    if any(op["op"] == "format" for op in walked):
                        reformatted.append(name)
                    roots[name] = {"type": TEXT, "ops": walked}
                    continue
            if name in index.tracks:
                # (an op per run: a book's is a walk of a million runs, ~0.5 s)
                ops = await self._sliced(doc, index, index.diff_steps(name, a, b))
                if index.tracks[name].rich:  # lay the formatting over it
                    # 45 ms for a formatted 107 kB text, 0.4 s for 800 kB: off the loop
                    ops = await cpu_account.to_thread(
                        formatted_ops, doc, name, ops, *await versions()
                    )
                    if any(op["op"] == "format" for op in ops):
                        reformatted.append(name)
                roots[name] = {"type": TEXT, "ops": ops}
                continue
            va, vb = await versions()  # (only structural diffs need the two versions)
            ta, tb = await self.types_off_loop(doc, va), await self.types_off_loop(doc, vb)
            if name not in ta and name not in tb:
                continue
            # (10,000 notebook cells: rendered twice and diffed, 4 s on the event loop)
            roots[name] = await cpu_account.to_thread(_structural, va, vb, name, ta, tb)
            xml = index.xml.get(name)
            if xml is not None and xml.failed is None:
                found: list[tuple[dict[str, Any], int]] = []
                fa, fb = _fragment(va, name), _fragment(vb, name)
                # who made each element and wrote each text, beside the plain ops
                nodes = await self._walk(doc, index, f"diff of {name!r}",
                                         xml.diff, a, b, index.actor, fa, fb, found)  # fmt: skip
                if nodes is None:
                    continue
                roots[name]["nodes"] = nodes
                if found:
                    xml_reformatted[name] = found
        if (
            (reformatted or xml_reformatted)
            and docs is not None
            and (b - a) * b <= ATTRIBUTE_FORMATS_WORK
        ):
            # who formatted: the events between, replayed onto version a (rich_diff)
            trees = {name: index.xml[name].frozen() for name in xml_reformatted}  # (on the loop)
            if events is None:
                events = await self.store.read(doc, after=a, upto=b)
            actors = {ev.seq: ev.actor for ev in events}
            # one replay for both: text roots' ranges by name, XML texts' by node key
            observers = [observe_texts(reformatted), observe_trees(trees)]
            marks = await cpu_account.to_thread(replay_marks, docs[0], events, observers)
            for name in reformatted:
                ops = roots[name]["ops"]
                roots[name]["ops"] = attribute_formats(ops, marks.get(name, []), actors)
            for texts in xml_reformatted.values():
                for entry, key in texts:
                    entry["ops"] = attribute_formats(entry["ops"], marks.get(key, []), actors)
        return {"doc": doc, "from": a, "to": b, "roots": roots}

    # --- events and sessions ------------------------------------------------------------

    async def events(
        self,
        doc: str,
        *,
        after: int,
        limit: int,
        actor: str | None,
        since_ts: int | None,
        until_ts: int | None,
        kinds: list[str] | None,
        before: int | None = None,
        desc: bool = False,
    ) -> dict[str, Any]:
        """A page of events with after < seq (< before), oldest first, or with `desc`
        the newest first: then the next page down is ``before=next_before``."""
        info = await self.info(doc)
        evs = await self.store.query(
            doc,
            after=after,
            limit=limit,
            actor=actor,
            since_ts=since_ts,
            until_ts=until_ts,
            kinds=kinds,
            before=before,
            desc=desc,
        )
        more = evs[-1].seq if len(evs) == limit else None
        return {
            "events": [event_json(e) for e in evs],
            "next_before" if desc else "next_after": more,
            # where history starts: the compaction base (its version is the oldest one
            # left), 0 when the log was never compacted
            "base_seq": info.base_seq,
        }

    async def sessions(
        self,
        doc: str,
        info: DocInfo,
        *,
        gap_ms: int,
        after: int,
        limit: int,
        actor: str | None,
    ) -> dict[str, Any]:
        kept = self._sessions if gap_ms == SESSION_GAP_MS else self._other_gaps
        cache = kept.get(doc, gap_ms)
        # (deleted and made again, or compacted since: the sessions of folded events go)
        if (
            cache is None
            or cache.seq > info.head
            or cache.base != info.base_seq
            or cache.created != info.made
        ):
            base = info.base_seq
            cache = Sessions(gap_ms, seq=base, base=base, created=info.made)
        while cache.seq < info.head:
            evs = await self.store.read(doc, after=cache.seq, upto=info.head, limit=5000)
            if not evs:
                break
            for ev in evs:
                if ev.seq > cache.seq:  # (another request may have extended it meanwhile)
                    cache.add(ev)
        kept.keep(doc, cache)
        out = [
            s
            for s in cache.all()
            if s["start_seq"] > after and (actor is None or s["actor"] == actor)
        ]
        page = out[:limit]
        return {
            "sessions": page,
            "next_after": page[-1]["start_seq"] if len(out) > limit else None,
            "base_seq": info.base_seq,  # (see events)
        }

    # --- restore ------------------------------------------------------------------------

    async def restore(self, doc: str, actor: str, seq: int) -> tuple[Event | None, Change]:
        """Make the live document equal to version `seq`, as an event of kind restore
        (None when it already was), and what that took out, per writer, and put in.

        The change is planned on a copy of the live document in a worker thread (the
        event loop serves everyone else meanwhile: on a notebook of 10,000 cells it took
        5 s), then made by applying its updates. Planned again when the document changed
        meanwhile, up to RESTORE_TRIES times; the last plan is then applied as it stands
        and what came since is taken out on the loop (applied as it stood, it was merged
        with those edits, which stayed in the version at the restore's seq), unless the
        server's own client wrote meanwhile too (another user's undo, restore): its ids
        would clash, and the change is made on the live document, as it was before."""
        target = await self._version_to_restore(doc, seq)
        writers = await self._writers_for_restore(doc, seq)
        known = await self.types_off_loop(doc, target)
        room = await self.backend.rooms.get(doc)
        meta = {"restores": seq}
        try:
            for attempt in range(RESTORE_TRIES):
                plan = await self._plan_restore(room, actor, target, known, writers)
                last = attempt == RESTORE_TRIES - 1
                planned = dict(meta, copies=plan.copies) if plan.copies else dict(meta)
                more: list[tuple[bytes, dict[Any, int] | None]] = []

                def apply(
                    live: Doc[Any],
                    plan: _Plan = plan,
                    last: bool = last,
                    planned: dict[str, Any] = planned,
                    more: list[tuple[bytes, dict[Any, int] | None]] = more,
                ) -> None:
                    moved = room.seq != plan.seq
                    if moved and not (last and _clock(live) == plan.clock):
                        raise _Moved()
                    for update, _ in plan.parts:
                        with live.transaction(origin=ServerOrigin(actor, "restore")):
                            live.apply_update(update)
                    del more[:]  # (made again when the log moved on: Room)
                    if moved:
                        # the last plan, on a document that moved on since it was made:
                        # what came meanwhile is taken out too, here on the loop (a
                        # small diff after the plan), so that the version at the
                        # restore's seq is the one restored
                        copies: list[list[str]] = []
                        more.extend(self._make_equal(doc, actor, live, target, writers, copies))
                        planned["copies"] = [*plan.copies, *copies]
                        if not planned["copies"]:
                            del planned["copies"]

                try:
                    ev = await room.server_change(actor, "restore", apply, meta=planned)
                except _Moved:
                    continue
                if ev is None:
                    return None, Change({}, (0, 0))
                if more:  # (read after the fact, as below)
                    return ev, change_in_parts(room.doc, room.owners, [*plan.parts, *more])
                return ev, plan.change
            parts: list[tuple[bytes, dict[Any, int] | None]] = []
            copies: list[list[str]] = []

            def change(live: Doc[Any]) -> None:
                del copies[:], parts[:]  # (made again when the log moved on: Room)
                parts.extend(self._make_equal(doc, actor, live, target, writers, copies))

            ev = await room.server_change(actor, "restore", change, meta=dict(meta, copies=copies))
            if ev is None:
                return None, Change({}, (0, 0))
            # (read after the fact, as an undo's: deleted items keep their content)
            return ev, change_in_parts(room.doc, room.owners, parts)
        finally:
            self.backend.rooms.release(room)

    async def restore_preview(self, doc: str, actor: str, seq: int) -> tuple[int, Change | None]:
        """What restore() would do now (a dry run): the seq of the head it was computed
        at, and what it would take out and put in, or None when the document already
        equals version `seq`. Made on a copy of the live document: nothing is written."""
        target = await self._version_to_restore(doc, seq)
        writers = await self._writers_for_restore(doc, seq)
        known = await self.types_off_loop(doc, target)
        room = await self.backend.rooms.get(doc)
        try:
            plan = await self._plan_restore(room, actor, target, known, writers)
            return plan.seq, plan.change if plan.parts else None
        finally:
            self.backend.rooms.release(room)

    async def _version_to_restore(self, doc: str, seq: int) -> Doc[Any]:
        """Version `seq` as a restore copies from it: its undefined values read as
        undefined.MARK (pycrdt reads them as None, and a restore wrote them as null), in
        a worker thread (a copy of the version, when it holds any)."""
        return await cpu_account.to_thread(marked, await self.doc_at(doc, seq))

    async def _plan_restore(
        self,
        room: Room,
        actor: str,
        target: Doc[Any],
        known: dict[str, str],
        writers: dict[str, Writers],
    ) -> _Plan:
        """Restore's change planned on a copy of the room's document as it is now, in a
        worker thread: `target` (the version) and `known` (its root types) are the
        caller's alone. Only the copy's bytes are read here (a native encode, as a sync
        step 2's answer costs): the room's document is never touched off the loop."""
        live = room.doc
        seq, state, client_id = room.seq, live.get_update(), live.client_id
        owners = Owners(room.owners.server)  # (as they are now: the loop changes them)
        owners.owners = dict(room.owners.owners)
        owners.server_runs = list(room.owners.server_runs)
        owners.former = set(room.owners.former)
        live_types, names = typed_roots(live), list(live.keys())
        return await cpu_account.to_thread(
            _plan, actor, seq, state, client_id, live_types, names, target, known, writers,
            owners, self.backend.settings.undo_skip_roots,
        )  # fmt: skip

    def _make_equal(
        self,
        doc: str,
        actor: str,
        live: Doc[Any],
        target: Doc[Any],
        writers: dict[str, Writers],
        copies: list[list[str]] | None = None,
    ) -> list[tuple[bytes, dict[Any, int] | None]]:
        """Restore's change made on `live` itself (see _restore_parts), on the loop."""
        known = self.types(doc, target)
        live_types = typed_roots(live)
        types = _restore_types(live, live_types, list(live.keys()), known)
        return _restore_parts(
            actor, live, target, types, writers,
            skip_roots=self.backend.settings.undo_skip_roots, copies=copies,
        )  # fmt: skip

    async def _writers_for_restore(self, doc: str, seq: int) -> dict[str, Writers]:
        """Per plain text root: its text at the head and who wrote each code point, and
        who wrote each of the version's (blame at both), for the restore's answer to name
        whose text it took out, and for its diff to keep only the characters that are
        the version's own where the Yjs items cannot say (restore.set_text). Empty when
        blame cannot say (the restore then diffs by items, else the characters alone)."""
        try:
            info = await self.info(doc)
            now = await self.blame(doc, info.head, info, None, nested=False)
            then = await self.blame(doc, seq, info, None, nested=False) if seq != info.head else now
        except (NotFound, BadRequest, StoreError):
            return {}
        out: dict[str, Writers] = {}
        for name, root in now["roots"].items():
            old = then["roots"].get(name, {"type": "text", "runs": []})
            texts = [_plain_runs(root), _plain_runs(old)]
            if texts[0] is not None and texts[1] is not None:
                out[name] = (texts[0][0], texts[0][1], texts[1][1])
        return out

    async def default_text_root(self, doc: str) -> str:
        """The root PUT /text writes when none is named, as the CLI's ``cat`` and
        ``edit`` pick it (client/cli.py ``pick_root``): ``content`` when the document
        has it or has no root yet, else its one text root (a Jupyter file's ``source``,
        y-monaco's ``monaco``); BadRequest naming the roots otherwise. A stray
        ``content`` text beside a document's own root is what no editor of it shows."""
        room = await self.backend.rooms.get(doc)
        try:
            kinds = self.types(doc, room.doc)
        finally:
            self.backend.rooms.release(room)
        return pick_text_root(doc, kinds)

    async def put_text(
        self,
        doc: str,
        actor: str,
        root: str,
        text: str,
        creator: Identity | None = None,
        base: int | None = None,
    ) -> Event | None:
        """Make the live document's text root ``root`` equal ``text``, by the smallest
        change (as restore does), logged as one event of kind edit by ``actor``: it is
        broadcast and undoable by them. Without ``base`` the live text is overwritten:
        what others typed since the caller read it is undone. With ``base`` (the seq of
        the version ``text`` was derived from), the change is the caller's edit of that
        version, merged with what happened since as Yjs merges (rebase_text). None
        when the text was already equal (or the edit changed nothing). Conflict when
        ``root`` holds another type; NotFound when ``base`` is past the head or was
        compacted away. ``creator``: whose document-creation quota a write into an empty
        document counts against (max_new_docs_per_hour, as a socket's first update
        does)."""
        edit: tuple[int, bytes] | None = None
        if base is not None:
            edit = await self._edit_of_version(doc, root, text, base)
        room = await self.backend.rooms.get(doc)
        try:
            limits = self.backend.extension(Limits)
            if limits is not None:
                limits.check_update(room, len(text.encode()))
                if creator is not None and text and room.seq == 0 and not room.queued_bytes:
                    limits.quota.check(creator, doc, self.backend.settings.max_new_docs_per_hour)

            def change(live: Doc[Any]) -> None:
                kind = typed_roots(live).get(root)
                if kind is None and root in live.keys():
                    kind = infer_root_types(live, [root]).get(root)
                if kind not in (None, TEXT):
                    held = _KIND_WORDS.get(kind, f"a {kind}")
                    raise Conflict(f"the root {root!r} of {doc!r} holds {held}, not text")
                if edit is not None:
                    delta = rebase_text(live, root, edit)
                    with live.transaction(origin=ServerOrigin(actor, "edit")):
                        apply_delta(live.get(root, type=Text), delta)
                    return
                with live.transaction(origin=ServerOrigin(actor, "edit")):
                    set_text(live.get(root, type=Text), text)

            meta: dict[str, Any] = {"root": root}
            if base is not None:
                meta["base"] = base
            return await room.server_change(actor, "edit", change, meta=meta)
        finally:
            self.backend.rooms.release(room)

    async def _edit_of_version(
        self, doc: str, root: str, text: str, base: int
    ) -> tuple[int, bytes]:
        """The Yjs update that makes root ``root`` of version ``base`` equal ``text`` by
        the smallest change, made under a client id of its own (put_text with a base)."""
        try:
            info = await self.info(doc)
        except NotFound:
            if base != 0:
                msg = f"document {doc!r} has no seq {base}: it has no events yet"
                raise NotFound(msg) from None
            version: Doc[Any] = Doc(skip_gc=True)
        else:
            version = await self.doc_at(doc, self._check(doc, base, info))
        scratch: Doc[Any] = Doc(skip_gc=True, client_id=scratch_client(version))
        scratch.apply_update(version.get_update())
        before = scratch.get_state()
        kind = typed_roots(scratch).get(root)
        if kind is None and root in scratch.keys():
            kind = infer_root_types(scratch, [root]).get(root)
        if kind not in (None, TEXT):
            raise Conflict(f"the root {root!r} of {doc!r} held a {kind} at seq {base}, not text")
        set_text(scratch.get(root, type=Text), text)
        return scratch.client_id, scratch.get_update(before)

    # --- tags ---------------------------------------------------------------------------

    async def tags(self, doc: str) -> list[dict[str, Any]]:
        return [tag_json(t) for t in await self.store.tags(doc)]

    async def put_tag(
        self, doc: str, name: Any, ref: Any, actor: str, move: bool = True
    ) -> dict[str, Any]:
        """Name the version `ref`; a tag of that name moves to it, unless not `move`:
        then Conflict when the name already names another version."""
        tag, _ = await self.put_tag_created(doc, name, ref, actor, move)
        return tag

    async def put_tag_created(
        self, doc: str, name: Any, ref: Any, actor: str, move: bool = True
    ) -> tuple[dict[str, Any], bool]:
        """put_tag, and whether the name was new (POST /tags answers 201 then, 200 for a
        name that was there already: moved, or naming that version already)."""
        name = validate_tag_name(name)
        info = await self.info(doc)
        seq = await self.resolve(doc, ref, info)
        existed = any(tag_key(t.name) == name for t in await self.store.tags(doc))
        tag = await self.store.put_tag(doc, name, seq, actor, move=move)
        if tag.seq != seq:
            raise Conflict(
                f"{name!r} already names version #{tag.seq} of {doc!r}: send "
                f'"move": true to move it to #{seq}'
            )
        return tag_json(tag), not existed

    async def delete_tag(self, doc: str, name: str, actor: str = "") -> str:
        """Remove the tag `name` (in any Unicode spelling of it); the name it had."""
        await self.info(doc)
        key = tag_key(name)
        stored = [t.name for t in await self.store.tags(doc) if tag_key(t.name) == key]
        for found in sorted(stored, key=lambda n: n != key):  # (NFC first)
            if await self.store.delete_tag(doc, found, actor):
                return found
        raise NotFound(f"document {doc!r} has no tag named {key!r}")

    async def tag_history(self, doc: str, name: str | None = None) -> list[dict[str, Any]]:
        """Every creation, move and deletion of the document's tags (of the tag `name`,
        in any Unicode spelling, when given), oldest first. A name never used: NotFound."""
        await self.info(doc)
        moves = await self.store.tag_history(doc)
        if name is not None:
            key = tag_key(name)
            moves = [m for m in moves if tag_key(m.name) == key]
            if not moves:
                raise NotFound(f"document {doc!r} never had a tag named {key!r}")
        return [tag_move_json(m) for m in moves]


__all__ = ["History", "MAX_PAGE", "SESSION_GAP_MS", "event_json"]


def _at_path(doc: str, roots: dict[str, Any], segments: list[str], path: str) -> None:
    """Keep, of the map or array root `segments[0]` in `roots`, the texts at or under
    `segments` (NotFound when there is none)."""
    name = segments[0]
    entry = roots.get(name)
    if entry is None or "texts" not in entry:
        if entry is not None:
            raise BadRequest(
                f"?path= names texts in a map or array root; {name!r} is a {entry['type']}"
            )
        return  # (the caller says why the root is not there)
    want = segments[1:]
    texts = [t for t in entry["texts"] if [str(k) for k in t["keys"][1 : len(want) + 1]] == want]
    if not texts:
        raise NotFound(f"document {doc!r} has no text at or under {path!r}")
    roots[name] = {**entry, "texts": texts}
