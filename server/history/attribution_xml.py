"""Who wrote what in an XML root: the attribution of Tiptap's, ProseMirror's and other
y-prosemirror documents, whose text lives in XmlTexts inside XmlElements.

The index mirrors the root's tree (:class:`XNode`): an element's children are a
:class:`TextTrack` of one byte per child ever inserted (tombstones included, as for
characters), each byte naming its child node; a text's characters are a TextTrack as a
text root's are. It is folded by the deep events of the root, one transaction per event
(so never by ids, see AttributionIndex): an element's children delta inserts new nodes,
built from the element or text as it stands after the transaction (yrs sends no event
for a type made in the same transaction, nor for one inside a type it deleted: the
tests make both), and deletes bytes of the children track; a
text's delta folds into its track. Events are taken shallowest first, since a path names
children as they are after the transaction.

The same argument as for a text root holds at every level: a sequence never reorders its
items and a deleted one never comes back, so the tree at head, with its tombstones,
restricted to what is alive at seq S (a node alive and every ancestor alive) is the tree
at S. Element attributes and text formatting are not folded: the answers read them off
the version(s) asked for, walked beside the mirror. The fold notes only which event set
which attribute of an element (who changed a heading's level); who formatted a text is
found as for a text root, by a replay (rich_diff.replay_marks, :func:`observe_trees`).

A text's embedded shared types (Lexical's paragraphs are XmlTexts holding a Y.Map per
text node) are nodes too, kept in the text's `kids` by their byte; a map notes who set
each key. A deep event's path names one by its UTF-16 offset among the text's alive
characters (the tracks count bytes: :func:`_embed_at` walks). Text an event deletes and
inserts again (a paragraph split or joined, a text node split) keeps its writers: see
attribution.Moves.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from pycrdt import Doc, Map, Text, XmlElement, XmlFragment, XmlText

from . import matching
from .attribution import (
    EMBED,
    Copies,
    Moves,
    TextTrack,
    _alive_at,
    _text,
    diff_steps,
    finish,
    track_blame,
)
from .render import MAX_DEPTH, jsonable, text_delta
from .rich_diff import (
    Follow,
    Mismatch,
    Observe,
    Seq,
    laid_blame,
    runs_of,
    with_formatting,
)

#: what a replay needs of a tree (:func:`frozen`): its root's key, and each element's
#: children as (inserted by, deleted by or 0, the child's key)
Frozen = tuple[int, dict[int, list[tuple[int, int, int]]]]


#: (MAX_DEPTH: elements nested deeper than this stop the mirror, as they stop the
#: rendering: its walks recurse; y-prosemirror's trees are a few levels deep, a hostile
#: client's need not be)


class XmlBroken(Exception):
    """The mirror no longer follows the document: the root is served unattributed."""


#: what a node is: an XML element (the root fragment too), a text (an XmlText, or a text
#: root holding shared types: Lexical's), or a map embedded in a text (Lexical's text
#: nodes' properties)
ELEMENT, TEXT_NODE, MAP_NODE = 0, 1, 2


class XNode:
    """An element (`tag` a str, "" for the root fragment), a text or a map (`tag` None)."""

    __slots__ = ("tag", "kind", "track", "kids", "changes")

    def __init__(self, tag: str | None, kind: int | None = None) -> None:
        self.tag = tag
        self.kind = kind if kind is not None else ELEMENT if tag is not None else TEXT_NODE
        #: an element's children, one byte each, or a text's characters (a map: empty)
        self.track = TextTrack()
        #: an element's children by their byte in `track.content`; a text's embedded
        #: shared types by theirs (a Lexical paragraph's text nodes)
        self.kids: dict[int, XNode] = {}
        #: attributes (of an element or text) or keys (of a map) set or removed after it
        #: was made: (seq, key), in the order of the log (yrs reports a key only when its
        #: visible value changed)
        self.changes: list[tuple[int, str]] = []

    def children_at(self, seq: int) -> Iterator[tuple[XNode, list[Any]]]:
        """The children alive at `seq`, in order, with the run that holds each."""
        for run in self.track.runs():
            if _alive_at(run, seq):
                for off in range(run[0], run[0] + run[1]):
                    if off in self.kids:
                        yield self.kids[off], run

    def all_children(self) -> Iterator[tuple[XNode, list[Any]]]:
        """Every child ever inserted, in order (tombstones too), with its run."""
        for run in self.track.runs():
            for off in range(run[0], run[0] + run[1]):
                if off in self.kids:
                    yield self.kids[off], run

    def child(self, i: int | str) -> XNode | None:
        """The child that a deep event's path names by `i`: an element's i-th child
        alive, or the shared type at UTF-16 offset i of a text; None for a type the
        mirror does not follow (an array embedded in a text, a type inside a map)."""
        if self.kind == MAP_NODE:
            return None
        if not isinstance(i, int):
            raise XmlBroken(f"a path by key {i!r} in an element or text")
        if self.kind == ELEMENT:
            return self.kids[_nth_alive(self.track, i)]
        return self.kids.get(_embed_at(self.track, i))


def _nth_alive(track: TextTrack, k: int) -> int:
    """The byte (its offset in `track.content`) of the k-th alive byte of `track`."""
    for bi, block in enumerate(track.blocks):
        n = track.alive[bi]
        if k >= n:
            k -= n
            continue
        for run in block:
            if run[3] == 0:
                if k < run[1]:
                    return int(run[0] + k)
                k -= run[1]
    raise XmlBroken("a path past the children of an element")


def _utf16(data: bytes | bytearray) -> int:
    if data.isascii():
        return len(data)
    return len(bytes(data).decode("utf-8", errors="replace").encode("utf-16-le")) // 2


def _embed_at(track: TextTrack, k: int) -> int:
    """The byte of the embed at UTF-16 offset `k` of a text's alive characters (a deep
    event's path counts UTF-16 units in a text, where deltas count bytes)."""
    content = track.content
    if track.ascii():
        # a byte is a unit (a Lexical root holds its paragraphs' embeds and nothing
        # else): found through the blocks' counts, not a walk of every run before it,
        # which made each keystroke in paragraph N of a Lexical document cost O(N)
        try:
            at = _nth_alive(track, k)
        except XmlBroken:
            raise XmlBroken("a path to no embed of a text") from None
        if content[at : at + 1] != EMBED:
            raise XmlBroken("a path to no embed of a text")
        return at
    for run in track.runs():
        if run[3] or not run[1]:
            continue
        data = content[run[0] : run[0] + run[1]]
        n = _utf16(data)
        if k >= n:
            k -= n
            continue
        off = 0
        while k > 0:
            lead = data[off]
            width = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            off += width
            k -= 2 if width == 4 else 1
        if k or data[off : off + 1] != EMBED:
            break
        return int(run[0] + off)
    raise XmlBroken("a path to no embed of a text")


def is_node(value: Any) -> bool:
    """Whether an embed of a text is a shared type the mirror follows."""
    return isinstance(value, XmlText | XmlElement | Map)


class XmlTrack:
    """The mirror of one XML root, or of a text root that holds shared types."""

    __slots__ = ("root", "failed", "told")

    def __init__(self, root: XNode | None = None) -> None:
        self.root = XNode("") if root is None else root
        #: why the mirror stopped following the document (it is then not served)
        self.failed: str | None = None
        self.told = False  # logged

    # --- folding -------------------------------------------------------------------------

    def apply(self, events: list[Any], seq: int, copies: Copies | None = None) -> None:
        """Fold one transaction's deep events (pycrdt XmlEvents, TextEvents, MapEvents)
        as event `seq` (`copies`: the text it may bring back, see attribution.Copies:
        within a text node; a node an undo brings back whole is its undoer's)."""
        if self.failed is not None:
            return
        moves = Moves()
        try:
            for e in sorted(events, key=lambda e: len(e.path)):
                if len(e.path) >= MAX_DEPTH:
                    raise XmlBroken(f"elements nested deeper than {MAX_DEPTH}")
                node: XNode | None = self.root
                for i in e.path:
                    node = node.child(i) if node is not None else None
                if node is None:  # inside a type not followed: no character of ours
                    continue
                if node.kind == ELEMENT:
                    _apply_children(node, e.delta, seq, len(e.path), moves, copies)
                elif node.kind == TEXT_NODE:
                    apply_text(node, e.delta, seq, len(e.path), moves=moves, copies=copies)
                keys = getattr(e, "keys", None)
                if keys:
                    node.changes += [(seq, str(k)) for k in keys]
            moves.settle(seq)
        except (XmlBroken, KeyError, ValueError, AssertionError) as e:
            self.failed = f"event {seq}: {e!r}"

    # --- checking ------------------------------------------------------------------------

    def matches(self, real: Any) -> bool:
        """Whether the tree at head is `real`'s (the root: a fragment, or a text): the
        same elements, texts of the same characters, the same shared types in them."""
        if self.failed is not None:
            return False
        try:
            return _same(self.root, real)
        except (KeyError, AssertionError):
            return False

    # --- answers -------------------------------------------------------------------------

    def blame(
        self, seq: int, actors: list[str], first: int, version: XmlFragment
    ) -> list[dict[str, Any]]:
        """The tree at `seq` (`version`: the root at that seq), each element with who
        inserted it and its attributes, each text with its blame runs (formatted)."""
        with _reading(version):
            return _blame(self.root, seq, actors, first, version)

    def text_blame(
        self, seq: int, actors: list[str], first: int, version: Any
    ) -> list[dict[str, Any]]:
        """The blame runs of a text root that holds shared types (`version`: the root at
        that seq), each embedded shared type a run of its own with its ``node``."""
        with _reading(version):
            return _text_runs(self.root, seq, actors, first, version)

    def diff(
        self,
        a: int,
        b: int,
        actor: Callable[[int], str | None],
        version_a: XmlFragment,
        version_b: XmlFragment,
        reformatted: list[tuple[dict[str, Any], int]] | None = None,
    ) -> list[dict[str, Any]]:
        """The tree from seq a to seq b: every node alive at either, with its op. Each
        text whose ops have a format op goes to `reformatted`, with its node's key (its
        format ops name nobody until :func:`observe_trees`' replay and attribute_formats)."""
        with _reading(version_a, version_b):
            ctx = _DiffContext(self.root, a, b, actor, version_a, version_b, reformatted)
            return _diff(self.root, ctx, True, True, 0)

    def text_diff(
        self, a: int, b: int, actor: Callable[[int], str | None], version_a: Any, version_b: Any
    ) -> list[dict[str, Any]]:
        """The ops of a text root that holds shared types, from seq a to seq b (the
        versions: the root at each), each embedded shared type an op of its own with its
        ``node``: the node's diff."""
        with _reading(version_a, version_b):
            ctx = _DiffContext(self.root, a, b, actor, version_a, version_b, None)
            entry: dict[str, Any] = {}
            _fill(self.root, entry, ctx, True, True, 0)
            return list(entry["ops"])

    def frozen(self) -> Frozen:
        """The tree's shape, copied for a replay in a worker thread (the loop goes on
        extending the tree meanwhile): the elements' children (a text's embedded types
        are not followed by the replay)."""
        kids: dict[int, list[tuple[int, int, int]]] = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.kind == ELEMENT:
                children = list(node.all_children())
                kids[id(node)] = [(run[2], run[3], id(kid)) for kid, run in children]
                stack += [kid for kid, _ in children]
        return id(self.root), kids


@contextlib.contextmanager
def _reading(*versions: Any) -> Iterator[None]:
    """One transaction per version's document for a whole walk: each read would make
    one of its own otherwise (a third of a Lexical document's blame). The versions are
    the request's own scratch documents, read by this thread alone meanwhile."""
    with contextlib.ExitStack() as stack:
        for v in versions:
            stack.enter_context(v.doc.transaction())
        yield


def observe_trees(trees: dict[str, Frozen]) -> Observe:
    """A replay's observers (rich_diff.replay_marks) of the texts of XML roots `trees`,
    keeping each text's ranges by its node's key: the text is found by its event's path
    among the children alive at that event."""

    def observe(doc: Doc[Any], seq: Seq, follow: Follow) -> list[Any]:
        return [
            doc.get(name, type=XmlFragment).observe_deep(_text_follower(tree, seq, follow))
            for name, tree in trees.items()
        ]

    return observe


def _text_follower(tree: Frozen, seq: Seq, follow: Follow) -> Callable[[list[Any]], None]:
    # (a closure without defaults: pycrdt passes a callback as many arguments as it takes)
    root, kids = tree

    def on_xml(evs: list[Any]) -> None:
        s = seq()
        if s is None:
            return
        for e in evs:
            if isinstance(e.target, XmlText):
                node: int | None = root
                for i in e.path:
                    if node not in kids:  # inside a text: its types are not followed
                        node = None
                        break
                    node = [k for ins, dele, k in kids[node] if ins <= s and not 0 < dele <= s][i]
                if node is not None:
                    follow(node, e.delta)

    return on_xml


def _gone_nodes(moves: Moves, node: XNode, gone: list[tuple[int, int, int]]) -> None:
    """Children (of an element) or embedded nodes (of a text) in the runs `gone` just
    took out: the text alive in each, and in the nodes alive under it, is a stretch of
    its own for the event's moves (a node taken out earlier is not: its text was gone)."""
    stack = _kids_in(node, gone)
    while stack:
        kid = stack.pop()
        alive = [(r[0], r[1], r[2]) for r in kid.track.runs() if r[3] == 0]
        if kid.kind == TEXT_NODE:
            moves.gone_text(kid.track, alive)
        stack += _kids_in(kid, alive)


def _kids_in(node: XNode, runs: list[tuple[int, int, int]]) -> list[XNode]:
    """The children of `node` whose bytes are in `runs` (first byte, bytes, seq)."""
    if not node.kids:
        return []
    if node.kind == ELEMENT:  # (every byte of an element's track is a child)
        return [node.kids[o] for start, n, _ in runs for o in range(start, start + n)]
    return [kid for o, kid in node.kids.items() if any(s <= o < s + n for s, n, _ in runs)]


def _apply_children(
    node: XNode,
    delta: list[dict[str, Any]],
    seq: int,
    depth: int,
    moves: Moves,
    copies: Copies | None = None,
) -> None:
    """Fold an element's children delta (`copies`: told where children were inserted)."""
    pos = 0
    for op in delta:
        if "retain" in op:
            pos += int(op["retain"])
        elif "insert" in op:
            items = op["insert"]
            start = len(node.track.content)
            for k, item in enumerate(items):
                node.kids[start + k] = _build(item, seq, depth + 1, moves)
            node.track.insert(pos, EMBED * len(items), seq)
            if copies is not None:
                copies.later.append(functools.partial(copy_children, copies, node, pos))
            pos += len(items)
        elif "delete" in op:
            gone: list[tuple[int, int, int]] = []
            node.track.delete(pos, int(op["delete"]), seq, gone)
            _gone_nodes(moves, node, gone)


def copy_children(copies: Copies, node: XNode, pos: int) -> Iterator[None]:
    """Children an undo, a redo or a restore inserted into element `node` after `pos`
    alive children: each that copies a deleted child beside it (in the same stretch
    between two children alive before and after, see attribution.Copies), of the same
    kind and tag, in order, keeps the writers of the text it copies (the child itself
    is its copier's). A pause (a yield) after each node looked at and each pair
    matched (a restore may make thousands of paragraphs again, see Copies.settle_steps)."""
    seq, track = copies.seq, node.track
    runs = track.gap(*copies.where(track, pos), seq)
    made = [
        node.kids[o] for r in runs if r[2] == seq and not r[3] for o in range(r[0], r[0] + r[1])
    ]
    orig = [
        node.kids[o]
        for r in runs
        if r[3] and r[3] != seq and copies.source(r)
        for o in range(r[0], r[0] + r[1])
    ]
    yield from _copy_nodes(copies, made, orig)


def _copy_nodes(copies: Copies, made: list[XNode], orig: list[XNode]) -> Iterator[None]:
    """Pair the nodes `made` (new, all of them this event's) with the deleted nodes
    `orig` whose content each copies, and carry each pair's writers over (see
    :func:`copy_children`): by content (their text and their children's, as made and
    as `orig` held it at what the event brings back), then of one kind and tag with
    texts alike, then of one kind and tag in order as a last resort (matching.by_content).
    By order first, a paragraph a restore made again beside one it changed in place was
    paired with the deleted paragraph before its own: one writer's text named another's."""
    if not made or not orig:
        return
    new, old = [], []
    for n in made:
        new.append(_copied(n, _made_run))
        yield
    for n in orig:
        old.append(_copied(n, copies.inner))
        yield
    kinds = [(n.kind, n.tag) if n.kind != MAP_NODE else None for n in made]
    was = [(n.kind, n.tag) if n.kind != MAP_NODE else None for n in orig]
    pairs = matching.by_content(
        [d for d, _ in new],
        [d for d, _ in old],
        kinds,
        was,
        lambda i, j: matching.similar(new[i][1], old[j][1]),
        order=True,
    )
    yield
    for i, j in pairs:
        yield from _copy_node(copies, made[i], orig[j])
        yield


def _made_run(run: list[Any]) -> bool:
    return not run[3]


def _copied(node: XNode, keep: Callable[[list[Any]], bool]) -> tuple[bytes, str]:
    """A node's content, of the runs `keep` picks in it and in its children: a digest
    of its kind, tag, text and children's (a map: a digest of its own, never equal), and
    its plain text (each text apart by a line break)."""
    h = hashlib.blake2b(digest_size=16)
    if node.kind == MAP_NODE:
        h.update(b"map %d" % id(node))
        return h.digest(), ""
    h.update(json.dumps([node.kind, node.tag]).encode())
    runs = [r for r in node.track.runs() if r[1] and keep(r)]
    if node.kind == TEXT_NODE:
        data = b"".join(node.track.content[r[0] : r[0] + r[1]] for r in runs)
        h.update(b"%d:" % len(data) + data)
        plain = _text(data)
    else:
        texts = []
        for r in runs:
            for o in range(r[0], r[0] + r[1]):
                kid = node.kids.get(o)
                if kid is not None:
                    d, t = _copied(kid, keep)
                    h.update(d)
                    texts.append(t)
        plain = "\n".join(texts)
    if node.kind == TEXT_NODE and node.kids:  # (a text's embedded types, in order)
        for r in runs:
            for o in range(r[0], r[0] + r[1]):
                kid = node.kids.get(o)
                if kid is not None:
                    h.update(_copied(kid, keep)[0])
    return h.digest(), plain


def _copy_node(copies: Copies, new: XNode, old: XNode) -> Iterator[None]:
    inner = [r for r in old.track.runs() if copies.inner(r)]
    if new.kind == TEXT_NODE:
        yield from copies.match_steps(new.track, list(new.track.runs()), old.track, inner)
    elif new.kind == ELEMENT:
        made = [kid for kid, _ in new.all_children()]
        kept = [old.kids[o] for r in inner for o in range(r[0], r[0] + r[1]) if o in old.kids]
        yield from _copy_nodes(copies, made, kept)


def apply_text(
    node: XNode,
    delta: list[dict[str, Any]],
    seq: int,
    depth: int,
    later: list[tuple[XNode, int, Any]] | None = None,
    moves: Moves | None = None,
    copies: Copies | None = None,
) -> None:
    """Fold a text's delta (positions in bytes, an embed one), each embedded shared type
    a node of its own, built as it stands; or, with `later` (a native event's delta,
    whose transaction cannot be read from), noted there to be built (:func:`build_later`)
    once the transaction is over. `moves`: where the event's inserted and deleted text
    is noted."""
    broken: list[XmlBroken] = []  # raised once the whole delta is folded

    def on_insert(start: int, data: bytes, value: Any) -> None:
        if isinstance(value, str):
            if moves is not None:
                moves.inserted.append((node.track, start, data))
        elif later is not None:
            later.append((node, start, value))
        elif is_node(value):
            try:
                node.kids[start] = _build(value, seq, depth + 1, moves)
            except XmlBroken as e:
                broken.append(e)

    gone: list[tuple[int, int, int]] | None = None if moves is None else []
    node.track.apply_delta(delta, seq, on_insert, gone, copies)
    if moves is not None and gone:
        moves.gone_text(node.track, gone)
        _gone_nodes(moves, node, gone)
    if broken:
        raise broken[0]


def build_later(later: list[tuple[XNode, int, Any]], seq: int, wrap: Callable[[Any], Any]) -> None:
    """Build the nodes :func:`apply_text` noted in `later` (`wrap`: pycrdt's type of a
    native one), now that their transaction is over."""
    broken: XmlBroken | None = None
    for node, start, value in later:
        value = wrap(value)
        if is_node(value):
            try:
                node.kids[start] = _build(value, seq, 1)
            except XmlBroken as e:
                broken = e
    if broken is not None:
        raise broken


def text_node(
    value: Any,
    seq: int,
    moves: Moves | None = None,
    embed: Callable[[XNode, int, Any], None] | None = None,
) -> XNode:
    """The node of a text (an XmlText or a Text) as it stands, all of it written at
    `seq` (`moves`: where its text is noted as inserted); ``embed(node, offset, insert)``
    is told of each embed, at its byte offset, before it is added."""
    node = XNode(None)
    data = bytearray()
    for insert, attrs in value.diff():
        if isinstance(insert, str):
            data += insert.encode()
            node.track.rich |= bool(attrs)
        else:
            if embed is not None:
                embed(node, len(data), insert)
            data += EMBED
            node.track.rich = True
    if data:
        node.track.insert(0, bytes(data), seq)
        if moves is not None:
            moves.inserted.append((node.track, 0, bytes(data)))
    return node


def _build(item: Any, seq: int, depth: int, moves: Moves | None = None) -> XNode:
    """The node of an element, text or map as it stands, all of it written at `seq`
    (`moves`: where its text is noted as inserted)."""
    if depth >= MAX_DEPTH:
        raise XmlBroken(f"elements nested deeper than {MAX_DEPTH}")
    if isinstance(item, XmlText):

        def embed(node: XNode, at: int, insert: Any) -> None:
            if is_node(insert):
                node.kids[at] = _build(insert, seq, depth + 1, moves)

        node = text_node(item, seq, moves, embed)
    elif isinstance(item, XmlElement):
        node = XNode(str(item.tag))
        kids = list(item.children)
        for k, kid in enumerate(kids):
            node.kids[k] = _build(kid, seq, depth + 1, moves)
        if kids:
            node.track.insert(0, EMBED * len(kids), seq)
    elif isinstance(item, Map):
        node = XNode(None, MAP_NODE)
    else:
        raise XmlBroken(f"an XML child of type {type(item).__name__}")
    return node


def _embedded(real: Any) -> list[Any]:
    """The shared types embedded in a version's text, in order."""
    return [v for v, _ in real.diff() if is_node(v)]


def _kids_of(node: XNode, seq: int | None, real: Any) -> list[tuple[XNode, Any]]:
    """The children of `node` alive at `seq` (None: at head) paired with the version's
    (`real`), Mismatch if they differ in number."""
    if node.kind == MAP_NODE:
        return []
    if node.kind == ELEMENT:
        kids = list(real.children)
    elif node.kids or (seq is None and node.track.rich):  # (the check at head looks
        kids = _embedded(real)  # for types the mirror missed; answers trust it)
    else:
        return []
    if seq is None:
        alive = [n for n, run in node.all_children() if run[3] == 0]
    else:
        alive = [n for n, _ in node.children_at(seq)]
    if len(kids) != len(alive):
        raise Mismatch(f"{len(alive)} children where the version has {len(kids)}")
    return list(zip(alive, kids, strict=True))


def _same(node: XNode, real: Any) -> bool:
    if node.kind == MAP_NODE:
        return isinstance(real, Map)
    if node.kind == TEXT_NODE:
        if not isinstance(real, XmlText | Text) or node.track.length != len(real):
            return False
    elif node.tag and (not isinstance(real, XmlElement) or real.tag != node.tag):
        return False
    try:
        pairs = _kids_of(node, None, real)
    except Mismatch:
        return False
    return all(_same(n, k) for n, k in pairs)


def _pairs(node: XNode, seq: int, real: Any) -> Iterator[tuple[int, Any]]:
    """(id of each node alive at `seq`, the version's element, text or map), walking both."""
    yield id(node), real
    for n, k in _kids_of(node, seq, real):
        yield from _pairs(n, seq, k)


def _attributes(node: XNode, real: Any) -> dict[str, Any]:
    """An element's or text's attributes, or a map's entries, in name order (pycrdt
    gives them in a hash map's order, another on every read)."""
    items = real.items() if node.kind == MAP_NODE else real.attributes
    return {k: jsonable(v) for k, v in sorted((str(k), v) for k, v in items)}


def _entry(
    node: XNode, ins: int, who: str | None, seq: int, actors: list[str], first: int, real: Any
) -> dict[str, Any]:
    """A node's blame: an element's tag, attributes and children, a text's runs (and
    attributes, if it has any), a map's entries; each with who made it."""
    if node.kind == MAP_NODE:
        out: dict[str, Any] = {"map": _attributes(node, real), "actor": who, "seq": ins}
        changed = {k: s for s, k in node.changes if s <= seq}
        if changed:  # who last set each key changed since the map was made
            out["changed"] = {k: {"actor": actor(s, actors, first), "seq": s}
                              for k, s in sorted(changed.items())}  # fmt: skip
        return out
    if node.kind == TEXT_NODE:
        runs = _text_runs(node, seq, actors, first, real)
        out = {"actor": who, "seq": ins, "runs": runs}
        if isinstance(real, XmlText):
            attributes = _attributes(node, real)
            if attributes:
                out["attributes"] = attributes
        return out
    return {"element": node.tag, "attributes": _attributes(node, real), "actor": who,
            "seq": ins, "children": _blame(node, seq, actors, first, real)}  # fmt: skip


def actor(seq: int, actors: list[str], first: int) -> str | None:
    """Who wrote event `seq` (of ``actors``, from seq `first` on); None for nobody known."""
    i = seq - first
    return (actors[i] or None) if 0 <= i < len(actors) else None  # "": nobody known


def _text_runs(
    node: XNode, seq: int, actors: list[str], first: int, real: Any
) -> list[dict[str, Any]]:
    runs = track_blame(node.track, seq, actors, first, node.kids)
    if node.track.rich:
        runs = laid_blame(runs, runs_of(real.diff()))
    if node.kids:
        kids = iter(_embedded(real))
        for run in runs:
            if "node" in run:
                kid = next(kids, None)
                if kid is None:
                    raise Mismatch("fewer shared types in the text than in its runs")
                run["node"] = _entry(node.kids[run["node"]], run["seq"], run["actor"], seq,
                                     actors, first, kid)  # fmt: skip
        if next(kids, None) is not None:
            raise Mismatch("more shared types in the text than in its runs")
    return runs


def _blame(node: XNode, seq: int, actors: list[str], first: int, real: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    kids = list(real.children)
    alive = list(node.children_at(seq))
    if len(kids) != len(alive):
        raise Mismatch(f"{len(alive)} children where the version has {len(kids)}")
    for (kid, run), k in zip(alive, kids, strict=True):
        ins = run[2]
        out.append(_entry(kid, ins, actor(ins, actors, first), seq, actors, first, k))
    return out


class _DiffContext:
    """What every node's diff needs: the seqs, who made each event, each node's version
    at a and at b (by the node's id), where texts with format ops go, and the content
    digests and plain texts of the nodes looked at for pairing (by id and side)."""

    __slots__ = ("a", "b", "actor", "va", "vb", "reformatted", "digests", "plains")

    def __init__(
        self,
        root: XNode,
        a: int,
        b: int,
        actor: Callable[[int], str | None],
        version_a: Any,
        version_b: Any,
        reformatted: list[tuple[dict[str, Any], int]] | None,
    ) -> None:
        self.a, self.b, self.actor = a, b, actor
        self.va = dict(_pairs(root, a, version_a))
        self.vb = dict(_pairs(root, b, version_b))
        self.reformatted = [] if reformatted is None else reformatted
        self.digests: dict[tuple[int, bool], Any] = {}
        self.plains: dict[tuple[int, bool], str] = {}

    def real(self, node: XNode, at_a: bool) -> Any:
        return self.va[id(node)] if at_a else self.vb[id(node)]

    def digest(self, node: XNode, at_a: bool) -> Any:
        """The content of `node` at a (`at_a`) or at b, hashed: its kind, tag,
        attributes, and its children's digests or its text with its marks; each node's
        once. A map, or a text holding shared types, is a key of its own (never paired
        by content: its diff lists its embedded types by identity)."""
        key = (id(node), at_a)
        got = self.digests.get(key)
        if got is not None:
            return got
        if self.kind(node, at_a) is None:
            got = ("", id(node))
        else:
            real = self.real(node, at_a)
            h = hashlib.blake2b(digest_size=16)
            head: list[Any] = [node.kind, node.tag, _attributes(node, real)]
            if node.kind == TEXT_NODE:
                head.append(text_delta(real.diff()))
            h.update(json.dumps(head, sort_keys=True, default=repr).encode())
            if node.kind == ELEMENT:
                for kid, _ in node.children_at(self.a if at_a else self.b):
                    d = self.digest(kid, at_a)
                    h.update(d if isinstance(d, bytes) else repr(d).encode())
            got = h.digest()
        self.digests[key] = got
        return got

    def kind(self, node: XNode, at_a: bool) -> Any:
        """What a node must share with another to be paired with it when their content
        differs: kind, tag and attributes (None: never paired by content)."""
        if node.kind == MAP_NODE or (node.kind == TEXT_NODE and node.kids):
            return None
        real = self.real(node, at_a)
        if not isinstance(real, XmlElement | XmlText):
            return None
        attrs = _attributes(node, real)
        return node.kind, node.tag, json.dumps(attrs, sort_keys=True, default=repr)

    def plain(self, node: XNode, at_a: bool) -> str:
        """The characters of a node's texts, each text apart by a line break."""
        key = (id(node), at_a)
        got = self.plains.get(key)
        if got is None:
            if node.kind == TEXT_NODE:
                got = "".join(v for v, _ in self.real(node, at_a).diff() if isinstance(v, str))
            else:
                kids = node.children_at(self.a if at_a else self.b)
                got = "\n".join(self.plain(kid, at_a) for kid, _ in kids)
            self.plains[key] = got
        return got


#: a child in a diff: the node, its op (equal, insert, delete), the event that inserted
#: or deleted it (0: none)
_Item = tuple[XNode, str, int]


def _diff(
    node: XNode, ctx: _DiffContext, at_a: bool, at_b: bool, gone: int
) -> list[dict[str, Any]]:
    """An element's children from seq a to seq b (`at_a`/`at_b`: whether the element is
    in that version; `gone`: the event that deleted it)."""
    items: list[_Item] = []
    for kid, run in node.all_children():
        in_a = at_a and _alive_at(run, ctx.a)
        in_b = at_b and _alive_at(run, ctx.b)
        if in_a and in_b:
            items.append((kid, "equal", 0))
        elif in_b:
            items.append((kid, "insert", run[2]))
        elif in_a:
            items.append((kid, "delete", run[3] if run[3] and run[3] <= ctx.b else gone))
    out: list[dict[str, Any]] = []
    gap: list[_Item] = []
    for item in items:
        if item[1] == "equal":
            out += _gap(gap, ctx)
            gap = []
            out.append(_entry_of(item, ctx))
        else:
            gap.append(item)
    return out + _gap(gap, ctx)


def _entry_of(item: _Item, ctx: _DiffContext) -> dict[str, Any]:
    """The diff of a child in one version or both."""
    kid, op, s = item
    entry: dict[str, Any] = {"op": op, "actor": ctx.actor(s) if s else None, "seq": s or None}
    _fill(kid, entry, ctx, op != "insert", op != "delete", s if op == "delete" else 0)
    return entry


def _gap(gap: list[_Item], ctx: _DiffContext) -> list[dict[str, Any]]:
    """The children between two children in both versions (or an end): each deleted
    one paired by content with an inserted one (:func:`_matched`) is one entry, the
    others are as they are; each version's children keep their order."""
    dels = [k for k, item in enumerate(gap) if item[1] == "delete"]
    ins = [k for k, item in enumerate(gap) if item[1] == "insert"]
    if not dels or not ins:
        return [_entry_of(item, ctx) for item in gap]
    pairs = _matched(ctx, [gap[k][0] for k in dels], [gap[k][0] for k in ins])
    if not pairs:
        return [_entry_of(item, ctx) for item in gap]
    # each child not paired goes after the pairs before it on its side, in the gap's order
    laid: list[tuple[int, int, int]] = []  # (pairs before it, 0 or 1 for a pair, index)
    for n, side in ((0, dels), (1, ins)):
        keys = [pair[n] for pair in pairs]
        paired = set(keys)
        laid += [(bisect_left(keys, k), 0, g) for k, g in enumerate(side) if k not in paired]
    laid += [(n, 1, n) for n in range(len(pairs))]
    out: list[dict[str, Any]] = []
    for _, is_pair, k in sorted(laid):
        if is_pair:
            x, y = gap[dels[pairs[k][0]]], gap[ins[pairs[k][1]]]
            out.append(_pair_entry(x[0], y[0], x[2], ctx))
        else:
            out.append(_entry_of(gap[k], ctx))
    return out


def _matched(ctx: _DiffContext, dels: list[XNode], ins: list[XNode]) -> list[tuple[int, int]]:
    """Which of the deleted children `dels` (in version a) are which of the inserted
    `ins` (in b), in order: those of the same content (by digest), then, between
    those, those of one kind whose texts are alike (see matching)."""
    exact = matching.in_order([ctx.digest(x, True) for x in dels],
                              [ctx.digest(y, False) for y in ins])  # fmt: skip
    out: list[tuple[int, int]] = []
    ends = [(-1, -1), *exact, (len(dels), len(ins))]
    for (i0, j0), (i1, j1) in zip(ends, ends[1:], strict=False):
        left, right = dels[i0 + 1 : i1], ins[j0 + 1 : j1]
        if left and right:
            kinds = [ctx.kind(x, True) for x in left], [ctx.kind(y, False) for y in right]

            def alike(i: int, j: int, left: list[XNode] = left, right: list[XNode] = right) -> bool:
                return matching.similar(ctx.plain(left[i], True), ctx.plain(right[j], False))

            out += [(i0 + 1 + i, j0 + 1 + j) for i, j in matching.alike(*kinds, alike)]
        if i1 < len(dels):
            out.append((i1, j1))
    return out


def _pair_entry(x: XNode, y: XNode, gone: int, ctx: _DiffContext) -> dict[str, Any]:
    """A child deleted (`x`, by event `gone`) and one inserted (`y`) paired by content:
    one entry, ``equal`` (their kind and attributes are the same), with what differs
    inside: an element's children paired again, a text's character diff, each inserted
    character named for who wrote it as blame names it (text an undo or a restore
    copied: its writer), each deleted one for who deleted it."""
    real = ctx.vb[id(y)]
    entry: dict[str, Any] = {"op": "equal", "actor": None, "seq": None}
    if y.kind == TEXT_NODE:
        entry["ops"] = _pair_ops(x, y, gone, ctx)
        attributes = _attributes(y, real)
        if attributes:
            entry["attributes"] = attributes
        return entry
    entry["element"] = y.tag
    entry["attributes"] = _attributes(y, real)
    a, b = ctx.a, ctx.b
    kids = [(k, "delete", r[3] if r[3] and r[3] <= b else gone) for k, r in x.children_at(a)]
    kids += [(k, "insert", r[2]) for k, r in y.children_at(b)]
    entry["children"] = _gap(kids, ctx)
    return entry


def _pair_ops(x: XNode, y: XNode, gone: int, ctx: _DiffContext) -> list[dict[str, Any]]:
    """The ops from text `x` at a to text `y` at b (see :func:`_pair_entry`)."""
    a, b = ctx.a, ctx.b
    old = [(r[0], r[1], r[3] if r[3] and r[3] <= b else gone)
           for r in x.track.runs() if r[1] and _alive_at(r, a)]  # fmt: skip
    new = [piece for r in y.track.runs() if r[1] and _alive_at(r, b)
           for piece in y.track.stretches(r[0], r[1], r[2])]  # fmt: skip
    ops = matching.text_ops(*_chars(x.track, old), *_chars(y.track, new), ctx.actor)
    if x.track.rich or y.track.rich:
        ops = with_formatting(ops, runs_of(ctx.va[id(x)].diff()), runs_of(ctx.vb[id(y)].diff()))
    return ops


def _chars(track: TextTrack, pieces: list[tuple[int, int, int]]) -> tuple[str, list[int]]:
    """The text of `pieces` of `track` ((first byte, bytes, seq) each) and each of its
    characters' seq (its first byte's)."""
    content = track.content
    data = bytearray()
    seqs: list[int] = []
    for start, n, s in pieces:
        data += content[start : start + n]
        seqs += [s] * n
    text = _text(bytes(data))
    first = [seqs[k] for k, byte in enumerate(data) if byte & 0xC0 != 0x80]
    if len(first) != len(text):  # (bytes that are not UTF-8, read as replaced)
        raise Mismatch("a text's characters and its bytes disagree")
    return text, first


def _fill(kid: XNode, entry: dict[str, Any], ctx: _DiffContext, in_a: bool, in_b: bool,
          gone: int) -> None:  # fmt: skip
    """A node's diff, into its `entry` (which has its op): a text's ops, an element's
    or map's attributes (``format`` if they differ, named for who set them last)."""
    real = ctx.vb[id(kid)] if in_b else ctx.va[id(kid)]
    if kid.kind == TEXT_NODE:
        a, b = ctx.a, ctx.b
        steps = diff_steps(kid.track, a, b, ctx.actor, at_a=in_a, at_b=in_b, gone=gone,
                           kids=kid.kids)  # fmt: skip
        ops = finish(steps)
        if kid.track.rich:
            ra = runs_of(ctx.va[id(kid)].diff()) if in_a else []
            rb = runs_of(ctx.vb[id(kid)].diff()) if in_b else []
            ops = with_formatting(ops, ra, rb)
            if any(op["op"] == "format" for op in ops):
                ctx.reformatted.append((entry, id(kid)))
        for op in ops:
            if "node" in op:  # an embedded shared type: its own diff
                kind = "equal" if op["op"] == "format" else op["op"]
                node = {"op": kind, "actor": op["actor"], "seq": op["seq"]}
                dead = (op["seq"] or 0) if kind == "delete" else 0
                _fill(kid.kids[op["node"]], node, ctx, kind != "insert", kind != "delete", dead)
                op["node"] = node
        entry["ops"] = ops
        if not isinstance(real, XmlText):  # (a text root has no attributes)
            return
    now = _attributes(kid, real)
    if kid.kind == ELEMENT:
        entry["element"] = kid.tag
        entry["attributes"] = now
    elif kid.kind == MAP_NODE:
        entry["map"] = now
    elif now:
        entry["attributes"] = now
    if in_a and in_b:
        was = _attributes(kid, ctx.va[id(kid)])
        if was != now:  # who set the attributes that differ, last
            differ = {k for k in was.keys() | now.keys() if was.get(k) != now.get(k)}
            last: dict[str, int] = {}
            for s, k in kid.changes:
                if ctx.a < s <= ctx.b and k in differ:
                    last[k] = s
            by = max(last.values(), default=None)
            # and each one's setter: Ann's level and Bob's align are one op, named for
            # the later; `changed` keeps Ann's, so that ?actor= can keep hers alone
            changed = {k: {"actor": ctx.actor(last[k]) if k in last else None,
                           "seq": last.get(k)} for k in sorted(differ)}  # fmt: skip
            entry.update(op="format", actor=ctx.actor(by) if by else None, seq=by, was=was,
                         changed=changed)  # fmt: skip
    if kid.kind == ELEMENT:
        entry["children"] = _diff(kid, ctx, in_a, in_b, gone)


__all__ = [
    "Frozen",
    "XNode",
    "XmlBroken",
    "XmlTrack",
    "apply_text",
    "build_later",
    "is_node",
    "observe_trees",
]
