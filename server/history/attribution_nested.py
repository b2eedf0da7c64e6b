"""Who wrote the texts nested in a map or array root: a notebook's cells (a Y.Array of
Y.Maps, each with a ``source`` Y.Text), a form's Y.Map of Y.Text fields, a block tree.

The mirror is attribution_xml's (:class:`XNode`, :class:`XmlTrack`), with two more
kinds of node: an array (:data:`ARRAY_NODE`), whose track has one byte per element ever
inserted (tombstones included), shared types or plain values alike, each shared type's
node kept in ``kids`` by its byte; and a map (:class:`KeyedNode`), whose track has one
byte per shared type ever set under a key (a plain value is not followed), with the key
of each byte, the byte deleted when its key is set again or removed. Texts are text
nodes, as in an XML tree. It is folded by each map or array root's deep events, one
transaction per event, shallowest first (a path names children as they are after the
transaction), as an XML root's tree is; a type made in the same transaction as its
parent is built as it stands. The same argument holds: nothing reorders, nothing
deleted comes back, so the mirror at head restricted to what is alive at seq S (a node
alive, and every ancestor) is the tree at S.

A text an event deletes and inserts again keeps its writers (attribution.Moves): a
cell that JupyterLab moves (it deletes the cell and inserts a copy in one transaction)
is still its writers'; so is one an undo, a redo or a restore brings back
(attribution.Copies, as for XML children). The cell itself (its ``actor`` and ``seq``)
is whoever inserted that copy.

Unlike the text and XML roots' index (attribution_cache), this one is not stored: it
is kept in memory for the few documents last blamed (:class:`NestedCache`), built on
the first blame of a map or array root from the log (its base, then every event), and
extended with the events appended since. Formatting of a nested text is not laid over
its runs, and an XML type inside a map or array is not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import logging
import sys
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pycrdt import Array, Doc, Map, Text

from ..errors import FATAL, LogDamaged
from ..keyed_locks import KeyedLocks
from ..log_damage import hole_error
from ..store.base import Event, EventStore
from .attribution import EMBED, Copies, Moves, TextTrack, _alive_at, track_blame
from .attribution_cache import RECENT
from .attribution_xml import (
    TEXT_NODE,
    XmlBroken,
    XmlTrack,
    XNode,
    _nth_alive,
    actor,
    apply_text,
    text_node,
)
from .render import ARRAY, MAX_DEPTH
from .rich_diff import Mismatch

log = logging.getLogger("palimpsest.history")

#: an array's node, and a map's (attribution_xml's kinds are 0-2)
ARRAY_NODE, KEYED_NODE = 3, 4
#: documents whose nested index is kept in memory
KEPT = 4
#: events read per store query while folding
READ_PAGE = 2000
#: about this much wall time folded between two yields to the event loop
SLICE_SECONDS = 0.002


class KeyedNode(XNode):
    """A map's node: `track` one byte per shared type set under a key, `keys` the key of
    each byte, `current` the byte each key holds at head (if a shared type)."""

    __slots__ = ("keys", "current")

    def __init__(self) -> None:
        super().__init__(None, KEYED_NODE)
        self.keys: dict[int, str] = {}
        self.current: dict[str, int] = {}


def _node(kind: int) -> XNode:
    return KeyedNode() if kind == KEYED_NODE else XNode(None, kind)


def followed(value: Any) -> bool:
    """Whether a value in a map or array is a type the mirror follows."""
    return isinstance(value, Text | Map | Array)


def _rank(track: TextTrack, byte: int) -> int:
    """The alive bytes of `track` before `byte` (a map's track: its bytes in order)."""
    k = 0
    for run in track.runs():
        if run[0] <= byte < run[0] + run[1]:
            if run[3]:
                raise XmlBroken("a key's shared type deleted twice")
            return int(k + byte - run[0])
        if not run[3]:
            k += run[1]
    raise XmlBroken("a key's shared type not in its map")


class NestedTrack(XmlTrack):
    """The mirror of one map or array root."""

    __slots__ = ()

    def apply(self, events: list[Any], seq: int, copies: Copies | None = None) -> None:
        if self.failed is not None:
            return
        moves = Moves()
        try:
            for e in sorted(events, key=lambda e: len(e.path)):
                if len(e.path) >= MAX_DEPTH:
                    raise XmlBroken(f"types nested deeper than {MAX_DEPTH}")
                node: XNode | None = self.root
                for i in e.path:
                    node = _child(node, i) if node is not None else None
                if node is None:  # inside a type not followed
                    continue
                depth = len(e.path)
                if node.kind == ARRAY_NODE:
                    _apply_array(node, e.delta, seq, depth, moves, copies)
                elif node.kind == TEXT_NODE:
                    apply_text(node, e.delta, seq, depth, moves=moves, copies=copies)
                elif isinstance(node, KeyedNode):
                    _apply_keys(node, e.keys, seq, depth, moves, copies)
            moves.settle(seq)
        except (XmlBroken, KeyError, ValueError, AssertionError) as e:
            self.failed = f"event {seq}: {e!r}"

    def blame(  # type: ignore[override]
        self,
        name: str,
        seq: int,
        actors: list[str],
        first: int,
        version: Any,
        items: list[Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Each text alive at `seq` under the root (`version`: the root at that seq;
        `items`: an array root's, read in one pass by render.array_items), in document
        order (a map's keys sorted), with its path and blame runs."""
        out: list[dict[str, Any]] = []
        docs = {id(version.doc): version.doc}
        for item in items or ():
            if followed(item):  # (read through a copy of the version: its document)
                docs.setdefault(id(item.doc), item.doc)
                break
        with contextlib.ExitStack() as stack:
            for d in docs.values():
                stack.enter_context(d.transaction())
            _blame(self.root, [name], None, seq, actors, first, version, out, 0, items)
        return out


def _child(node: XNode, i: int | str) -> XNode | None:
    """The node a deep event's path names by `i` (None: a value not followed)."""
    if node.kind == ARRAY_NODE:
        if not isinstance(i, int):
            raise XmlBroken(f"a path by key {i!r} in an array")
        return node.kids.get(_nth_alive(node.track, i))
    if isinstance(node, KeyedNode):
        at = node.current.get(str(i))
        return None if at is None else node.kids.get(at)
    if node.kind == TEXT_NODE and isinstance(i, int):
        return None  # (a type embedded in a nested text: not followed)
    raise XmlBroken(f"a path by {i!r} in a node of kind {node.kind}")


def build(value: Any, seq: int, depth: int, moves: Moves | None = None) -> XNode | None:
    """The node of a text, map or array as it stands, all of it written at `seq`
    (`moves`: where its text is noted as inserted); None for a value not followed."""
    if depth >= MAX_DEPTH:
        raise XmlBroken(f"types nested deeper than {MAX_DEPTH}")
    if isinstance(value, Text):
        return text_node(value, seq, moves)
    if isinstance(value, Array):
        node = XNode(None, ARRAY_NODE)
        items = list(value)
        for k, item in enumerate(items):
            kid = build(item, seq, depth + 1, moves)
            if kid is not None:
                node.kids[k] = kid
        if items:
            node.track.insert(0, EMBED * len(items), seq)
        return node
    if isinstance(value, Map):
        keyed = KeyedNode()
        for key in sorted(value.keys()):
            _set_key(keyed, str(key), value[key], seq, depth, moves)
        return keyed
    return None


def _set_key(
    node: KeyedNode, key: str, value: Any, seq: int, depth: int, moves: Moves | None
) -> None:
    kid = build(value, seq, depth + 1, moves)
    if kid is None:
        return
    at = len(node.track.content)
    node.track.insert(node.track.length, EMBED, seq)
    node.kids[at] = kid
    node.keys[at] = key
    node.current[key] = at


def _apply_keys(
    node: KeyedNode,
    keys: dict[str, Any],
    seq: int,
    depth: int,
    moves: Moves,
    copies: Copies | None,
) -> None:
    """Fold a map's key changes: a shared type set under a key is a new node, the one
    the key held before (set again or removed) is deleted."""
    for key, change in sorted(keys.items()):
        key = str(key)
        at = node.current.pop(key, None)
        if at is not None:
            gone: list[tuple[int, int, int]] = []
            node.track.delete(_rank(node.track, at), 1, seq, gone)
            _gone_kids(moves, node, gone)
        if change.get("action") in ("add", "update"):
            _set_key(node, key, change.get("newValue"), seq, depth, moves)
            new_at = node.current.get(key)
            if copies is not None and new_at is not None:
                copies.later.append(functools.partial(_copy_key, copies, node, key, new_at))


def _copy_key(copies: Copies, node: KeyedNode, key: str, at: int) -> None:
    """A shared type an undo, a redo or a restore set under `key` (its byte `at`) keeps
    the writers of the last one the key held that it brings back."""
    old = None
    for run in node.track.runs():
        if run[3] and run[3] != copies.seq and copies.source(run):
            for off in range(run[0], run[0] + run[1]):
                if node.keys.get(off) == key and off in node.kids:
                    old = node.kids[off]
    if old is not None:
        _copy_node(copies, node.kids[at], old)


def _apply_array(
    node: XNode,
    delta: list[dict[str, Any]],
    seq: int,
    depth: int,
    moves: Moves,
    copies: Copies | None,
) -> None:
    """Fold an array's delta: each element one byte, each shared type a node."""
    pos = 0
    for op in delta:
        if "retain" in op:
            pos += int(op["retain"])
        elif "insert" in op:
            items = op["insert"]
            start = len(node.track.content)
            for k, item in enumerate(items):
                kid = build(item, seq, depth + 1, moves)
                if kid is not None:
                    node.kids[start + k] = kid
            node.track.insert(pos, EMBED * len(items), seq)
            if copies is not None:
                copies.later.append(functools.partial(_copy_elements, copies, node, pos))
            pos += len(items)
        elif "delete" in op:
            gone: list[tuple[int, int, int]] = []
            node.track.delete(pos, int(op["delete"]), seq, gone)
            _gone_kids(moves, node, gone)


def _gone_kids(moves: Moves, node: XNode, gone: list[tuple[int, int, int]]) -> None:
    """The text alive in the nodes `gone` took out, for the event's moves."""
    stack = [node.kids[o] for s, n, _ in gone for o in range(s, s + n) if o in node.kids]
    while stack:
        kid = stack.pop()
        alive = [(r[0], r[1], r[2]) for r in kid.track.runs() if r[3] == 0]
        if kid.kind == TEXT_NODE:
            moves.gone_text(kid.track, alive)
        else:
            stack += [kid.kids[o] for s, n, _ in alive for o in range(s, s + n) if o in kid.kids]


def _copy_elements(copies: Copies, node: XNode, pos: int) -> None:
    """Elements an undo, a redo or a restore inserted into array `node` after `pos`
    alive elements: each that copies a deleted element beside it, of the same kind, in
    order, keeps the writers of the text it copies (as attribution_xml.copy_children)."""
    seq, track = copies.seq, node.track
    runs = track.gap(*copies.where(track, pos), seq)
    made = [
        node.kids[o]
        for r in runs
        if r[2] == seq and not r[3]
        for o in range(r[0], r[0] + r[1])
        if o in node.kids
    ]
    orig = [
        node.kids[o]
        for r in runs
        if r[3] and r[3] != seq and copies.source(r)
        for o in range(r[0], r[0] + r[1])
        if o in node.kids
    ]
    if not made or not orig or len(made) * len(orig) > 1 << 16:
        return
    sm = difflib.SequenceMatcher(
        None, [n.kind for n in made], [n.kind for n in orig], autojunk=False
    )
    for i, j, n in sm.get_matching_blocks():
        for new, old in zip(made[i : i + n], orig[j : j + n], strict=True):
            _copy_node(copies, new, old)


def _copy_node(copies: Copies, new: XNode, old: XNode) -> None:
    """Carry the writers of `old`'s text (deleted) over to `new` (its copy)."""
    if new.kind != old.kind:
        return
    if new.kind == TEXT_NODE:
        inner = [r for r in old.track.runs() if copies.inner(r)]
        copies.match(new.track, list(new.track.runs()), old.track, inner)
    elif isinstance(new, KeyedNode) and isinstance(old, KeyedNode):
        last: dict[str, int] = {}  # each key's last shared type in the old map
        for at in sorted(old.keys):
            last[old.keys[at]] = at
        for key, at in new.current.items():
            if key in last:
                _copy_node(copies, new.kids[at], old.kids[last[key]])
    elif new.kind == ARRAY_NODE:
        made = [new.kids[o] for o in sorted(new.kids)]
        kept = [old.kids[o] for r in old.track.runs() if copies.inner(r)
                for o in range(r[0], r[0] + r[1]) if o in old.kids]  # fmt: skip
        for a, b in zip(made, kept, strict=False):
            _copy_node(copies, a, b)


# --- answers -------------------------------------------------------------------------


def escape(key: str) -> str:
    """A map key as a path segment (RFC 6901: "~" is "~0", "/" is "~1")."""
    return key.replace("~", "~0").replace("/", "~1")


def parse_path(path: str) -> list[str]:
    """A path's segments, unescaped (the first names the root)."""
    return [s.replace("~1", "/").replace("~0", "~") for s in path.split("/")]


def _alive_bytes(node: XNode, seq: int) -> Iterator[tuple[int, list[Any]]]:
    for run in node.track.runs():
        if _alive_at(run, seq):
            for off in range(run[0], run[0] + run[1]):
                yield off, run


def _blame(
    node: XNode,
    keys: list[Any],
    item_id: str | None,
    seq: int,
    actors: list[str],
    first: int,
    real: Any,
    out: list[dict[str, Any]],
    made: int,
    items: list[Any] | None = None,
) -> None:
    if node.kind == TEXT_NODE:
        if not isinstance(real, Text):
            raise Mismatch(f"{'/'.join(map(str, keys))} is not a text in the version")
        runs = track_blame(node.track, seq, actors, first)
        ours = "".join(r["text"] for r in runs).replace("\ufffc", "")
        if ours != str(real).replace("\ufffc", ""):
            raise Mismatch(f"the text at {'/'.join(map(str, keys))} differs from the version's")
        entry: dict[str, Any] = {
            "path": "/".join(escape(k) if isinstance(k, str) else str(k) for k in keys),
            "keys": list(keys),
        }
        if item_id is not None:
            entry["id"] = item_id
        entry["actor"], entry["seq"] = actor(made, actors, first), made
        entry["runs"] = runs
        out.append(entry)
        return
    if node.kind == ARRAY_NODE:
        if not isinstance(real, Array):
            raise Mismatch(f"{'/'.join(map(str, keys))} is not an array in the version")
        # (pycrdt reads item i by a walk from the start: an array root's items come
        # read in one pass; a nested array, short as they are, is read item by item)
        values = list(real) if items is None else items
        alive = list(_alive_bytes(node, seq))
        if len(alive) != len(values):
            raise Mismatch(f"{len(alive)} elements where the version has {len(values)}")
        for i, ((off, run), value) in enumerate(zip(alive, values, strict=True)):
            kid = node.kids.get(off)
            if kid is None:
                if followed(value):
                    raise Mismatch(f"a shared type at {i} not in the mirror")
                continue
            _blame(kid, [*keys, i], item_id, seq, actors, first, value, out, run[2])
        return
    if isinstance(node, KeyedNode):
        if not isinstance(real, Map):
            raise Mismatch(f"{'/'.join(map(str, keys))} is not a map in the version")
        got = real.get("id")
        if isinstance(got, str):
            item_id = got
        typed = {str(k) for k, v in real.items() if followed(v)}
        held = [(node.keys[off], off, run) for off, run in _alive_bytes(node, seq)]
        if {k for k, _, _ in held} != typed or len(held) != len(typed):
            raise Mismatch(f"the shared types of {'/'.join(map(str, keys))} differ")
        for key, off, run in sorted(held, key=lambda h: (h[0], h[1])):
            _blame(node.kids[off], [*keys, key], item_id, seq, actors, first, real[key], out,
                   run[2])  # fmt: skip


# --- the index and its cache --------------------------------------------------------


class NestedIndex:
    """The mirrors of a document's map and array roots (name -> MAP or ARRAY), folded up
    to `seq` on a document of its own."""

    def __init__(self, doc: str, roots: dict[str, str]) -> None:
        self.doc_name = doc
        self.doc: Doc[Any] = Doc(skip_gc=True)
        self.kinds = dict(roots)
        self.trees: dict[str, NestedTrack] = {}
        self.actors: list[str] = []
        self.first = 0
        self.base = 0
        self.seq = 0
        #: why the fold stopped (an event that does not apply): nothing is served
        self.failed: str | None = None
        self._cur = 0
        self._copies: Copies | None = None
        self._subs: list[Any] = []
        ref = weakref.ref(self)  # (the document holds the callbacks: see attribution)
        for name, kind in sorted(roots.items()):
            tree = NestedTrack(_node(ARRAY_NODE if kind == ARRAY else KEYED_NODE))
            self.trees[name] = tree

            root = self.doc.get(name, type=Array if kind == ARRAY else Map)
            self._subs.append(root.observe_deep(_follower(ref, tree)))

    def _note(self, seq: int, actor: str) -> None:
        if not self.actors:
            self.first = seq
        i = seq - self.first
        while len(self.actors) < i:
            self.actors.append("")
        if i == len(self.actors):
            self.actors.append(sys.intern(actor))

    def fold_one(self, seq: int, actor: str, update: bytes, copies: Copies | None) -> None:
        if self.failed is not None:
            self.seq = seq
            return
        self._cur, self._copies = seq, copies
        self._note(seq, actor)
        try:
            self.doc.apply_update(update)
            if copies is not None:
                copies.settle()
        except FATAL:
            raise
        except BaseException as e:  # (pycrdt's panics derive from BaseException)
            self.failed = f"event {seq} does not apply ({e!r})"
            log.warning("nested attribution of %s: %s", self.doc_name, self.failed)
        finally:
            self._copies = None
        self.seq = seq

    def fold(self, events: list[Event]) -> None:
        for ev in events:
            self.fold_one(ev.seq, ev.actor, ev.update, Copies.of(ev.seq, ev.kind, ev.meta))


def _follower(ref: Any, tree: NestedTrack) -> Any:
    # (a closure without defaults: pycrdt passes a callback as many arguments as it takes)
    def on_deep(events: list[Any]) -> None:
        index = ref()
        if index is not None:
            tree.apply(events, index._cur, index._copies)

    return on_deep


class NestedCache:
    """The nested indexes of the few documents last blamed, extended on each use."""

    def __init__(self, store: EventStore, kept: int = KEPT) -> None:
        self.store = store
        self.kept = kept
        self._indexes: OrderedDict[str, NestedIndex] = OrderedDict()
        #: per document, its lock, only while someone holds it or waits for it: kept for
        #: good, they added up to one per name ever blamed (a form per customer)
        self._locks: KeyedLocks[str] = KeyedLocks()
        #: builds from the start of the log, for tests and logs: (doc, seq reached), the
        #: latest RECENT (all of them, they too grew with every name)
        self.builds: deque[tuple[str, int]] = deque(maxlen=RECENT)

    @contextlib.asynccontextmanager
    async def lock(self, doc: str) -> AsyncIterator[None]:
        async with self._locks.hold(doc):
            yield

    def drop(self, doc: str) -> None:
        self._indexes.pop(doc, None)

    async def get(self, doc: str, head: int, base: int, roots: dict[str, str]) -> NestedIndex:
        """The nested index of `doc` folded up to `head` (held under :meth:`lock` by the
        caller while it is read), following at least `roots`."""
        index = self._indexes.get(doc)
        if index is not None and (
            index.seq > head or index.base != base or not roots.items() <= index.kinds.items()
        ):
            index = None  # re-created, compacted since, or a new root to follow
        if index is None:
            index = NestedIndex(doc, {**roots})
            if base:
                snap = await self.store.latest_snapshot(doc, base)
                if snap is not None:  # its content by nobody known, as the text index's
                    index.fold_one(snap.seq, "", snap.state, None)
                    index.base = base
            await self._extend(index, head)
            self.builds.append((doc, index.seq))
        else:
            await self._extend(index, head)
        self._indexes[doc] = index
        self._indexes.move_to_end(doc)
        while len(self._indexes) > self.kept:
            self._indexes.popitem(last=False)
        return index

    async def _extend(self, index: NestedIndex, head: int) -> None:
        """Fold the events after the index's seq up to `head`, yielding to the event
        loop every SLICE_SECONDS."""
        while index.seq < head:
            events = await self.store.read(index.doc_name, after=index.seq, upto=head,
                                           limit=READ_PAGE)  # fmt: skip
            if not events:
                return
            if events[-1].seq - index.seq != len(events):  # a hole: blame would be short
                what = "blame folds every event of the log, and cannot"
                raise await hole_error(self.store, index.doc_name, what) or LogDamaged(
                    index.doc_name, f"its log skips seqs between {index.seq} and {events[-1].seq}"
                )
            t0 = time.monotonic()
            for ev in events:
                index.fold([ev])
                if time.monotonic() - t0 > SLICE_SECONDS:
                    await asyncio.sleep(0)
                    t0 = time.monotonic()


__all__ = ["ARRAY_NODE", "KEYED_NODE", "NestedCache", "NestedIndex", "NestedTrack", "parse_path"]
