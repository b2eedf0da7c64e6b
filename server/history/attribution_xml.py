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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pycrdt import Doc, XmlElement, XmlFragment, XmlText

from .attribution import EMBED, TextTrack, _alive_at, track_blame, track_diff
from .render import jsonable
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


#: elements nested deeper than this stop the mirror (its walks recurse; y-prosemirror's
#: trees are a few levels deep, a hostile client's need not be)
MAX_DEPTH = 200


class XmlBroken(Exception):
    """The mirror no longer follows the document: the root is served unattributed."""


class XNode:
    """An element (`tag` a str, "" for the root fragment) or a text (`tag` None)."""

    __slots__ = ("tag", "track", "kids", "changes")

    def __init__(self, tag: str | None) -> None:
        self.tag = tag
        #: an element's children, one byte each, or a text's characters
        self.track = TextTrack()
        #: an element's children by their byte in `track.content`; None for a text
        self.kids: dict[int, XNode] | None = None if tag is None else {}
        #: an element's attributes set or removed after it was made: (seq, key), in
        #: the order of the log (yrs reports a key only when its visible value changed)
        self.changes: list[tuple[int, str]] = []

    def children_at(self, seq: int) -> Iterator[tuple[XNode, list[Any]]]:
        """The children alive at `seq`, in order, with the run that holds each."""
        assert self.kids is not None
        for run in self.track.runs():
            if _alive_at(run, seq):
                for off in range(run[0], run[0] + run[1]):
                    yield self.kids[off], run

    def all_children(self) -> Iterator[tuple[XNode, list[Any]]]:
        """Every child ever inserted, in order (tombstones too), with its run."""
        assert self.kids is not None
        for run in self.track.runs():
            for off in range(run[0], run[0] + run[1]):
                yield self.kids[off], run


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


class XmlTrack:
    """The mirror of one XML root."""

    __slots__ = ("root", "failed", "told")

    def __init__(self) -> None:
        self.root = XNode("")
        #: why the mirror stopped following the document (it is then not served)
        self.failed: str | None = None
        self.told = False  # logged

    # --- folding -------------------------------------------------------------------------

    def apply(self, events: list[Any], seq: int) -> None:
        """Fold one transaction's deep events (pycrdt XmlEvents) as event `seq`."""
        if self.failed is not None:
            return
        try:
            for e in sorted(events, key=lambda e: len(e.path)):
                if len(e.path) >= MAX_DEPTH:
                    raise XmlBroken(f"elements nested deeper than {MAX_DEPTH}")
                node = self.root
                for i in e.path:
                    assert node.kids is not None
                    node = node.kids[_nth_alive(node.track, i)]
                self._apply(node, e.delta, seq, len(e.path))
                if e.keys and node.kids is not None:
                    node.changes += [(seq, str(k)) for k in e.keys]
        except (XmlBroken, KeyError, ValueError, AssertionError) as e:
            self.failed = f"event {seq}: {e!r}"

    def _apply(self, node: XNode, delta: list[dict[str, Any]], seq: int, depth: int) -> None:
        if node.kids is None:
            node.track.apply_delta(delta, seq)
            return
        pos = 0
        for op in delta:
            if "retain" in op:
                pos += int(op["retain"])
            elif "insert" in op:
                items = op["insert"]
                start = len(node.track.content)
                for k, item in enumerate(items):
                    node.kids[start + k] = _build(item, seq, depth + 1)
                node.track.insert(pos, EMBED * len(items), seq)
                pos += len(items)
            elif "delete" in op:
                node.track.delete(pos, int(op["delete"]), seq)

    # --- checking ------------------------------------------------------------------------

    def matches(self, fragment: XmlFragment) -> bool:
        """Whether the tree at head is `fragment`'s: the same elements, texts of the same
        characters."""
        if self.failed is not None:
            return False
        try:
            return _same(self.root, fragment)
        except (KeyError, AssertionError):
            return False

    # --- answers -------------------------------------------------------------------------

    def blame(
        self, seq: int, actors: list[str], first: int, version: XmlFragment
    ) -> list[dict[str, Any]]:
        """The tree at `seq` (`version`: the root at that seq), each element with who
        inserted it and its attributes, each text with its blame runs (formatted)."""
        return _blame(self.root, seq, actors, first, version)

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
        va = dict(_pairs(self.root, a, version_a))
        vb = dict(_pairs(self.root, b, version_b))
        found = [] if reformatted is None else reformatted
        return _diff(self.root, a, b, actor, va, vb, True, True, 0, found)

    def frozen(self) -> Frozen:
        """The tree's shape, copied for a replay in a worker thread (the loop goes on
        extending the tree meanwhile)."""
        kids: dict[int, list[tuple[int, int, int]]] = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.kids is not None:
                children = list(node.all_children())
                kids[id(node)] = [(run[2], run[3], id(kid)) for kid, run in children]
                stack += [kid for kid, _ in children]
        return id(self.root), kids


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
                node = root
                for i in e.path:
                    node = [k for ins, dele, k in kids[node] if ins <= s and not 0 < dele <= s][i]
                follow(node, e.delta)

    return on_xml


def _build(item: Any, seq: int, depth: int) -> XNode:
    """The node of an element or text as it stands, all of it written at `seq`."""
    if depth >= MAX_DEPTH:
        raise XmlBroken(f"elements nested deeper than {MAX_DEPTH}")
    if isinstance(item, XmlText):
        node = XNode(None)
        data = bytearray()
        for insert, attrs in item.diff():
            if isinstance(insert, str):
                data += insert.encode()
                node.track.rich |= bool(attrs)
            else:
                data += EMBED
                node.track.rich = True
        if data:
            node.track.insert(0, bytes(data), seq)
    elif isinstance(item, XmlElement):
        node = XNode(str(item.tag))
        kids = list(item.children)
        assert node.kids is not None
        for k, kid in enumerate(kids):
            node.kids[k] = _build(kid, seq, depth + 1)
        if kids:
            node.track.insert(0, EMBED * len(kids), seq)
    else:
        raise XmlBroken(f"an XML child of type {type(item).__name__}")
    return node


def _same(node: XNode, real: Any) -> bool:
    if node.kids is None:
        if not isinstance(real, XmlText):
            return False
        return bool(node.track.length == len(real))
    if node.tag and (not isinstance(real, XmlElement) or real.tag != node.tag):
        return False
    kids = list(real.children)
    alive = [n for n, run in node.all_children() if run[3] == 0]
    return len(kids) == len(alive) and all(_same(n, k) for n, k in zip(alive, kids, strict=True))


def _pairs(node: XNode, seq: int, real: Any) -> Iterator[tuple[int, Any]]:
    """(id of each node alive at `seq`, the version's element or text), walking both."""
    yield id(node), real
    if node.kids is None:
        return
    kids = list(real.children)
    alive = [n for n, _ in node.children_at(seq)]
    if len(kids) != len(alive):
        raise Mismatch(f"{len(alive)} children where the version has {len(kids)}")
    for n, k in zip(alive, kids, strict=True):
        yield from _pairs(n, seq, k)


def _attributes(real: Any) -> dict[str, Any]:
    return {str(k): jsonable(v) for k, v in real.attributes}


def _blame(node: XNode, seq: int, actors: list[str], first: int, real: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    kids = list(real.children)
    alive = list(node.children_at(seq))
    if len(kids) != len(alive):
        raise Mismatch(f"{len(alive)} children where the version has {len(kids)}")
    for (kid, run), k in zip(alive, kids, strict=True):
        ins = run[2]
        i = ins - first
        who = actors[i] if 0 <= i < len(actors) else None
        if kid.kids is None:
            runs = track_blame(kid.track, seq, actors, first)
            if kid.track.rich:
                runs = laid_blame(runs, runs_of(k.diff()))
            out.append({"actor": who, "seq": ins, "runs": runs})
        else:
            out.append({"element": kid.tag, "attributes": _attributes(k), "actor": who,
                        "seq": ins, "children": _blame(kid, seq, actors, first, k)})  # fmt: skip
    return out


def _diff(
    node: XNode,
    a: int,
    b: int,
    actor: Callable[[int], str | None],
    va: dict[int, Any],
    vb: dict[int, Any],
    at_a: bool,
    at_b: bool,
    gone: int,
    reformatted: list[tuple[dict[str, Any], int]],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kid, run in node.all_children():
        in_a = at_a and _alive_at(run, a)
        in_b = at_b and _alive_at(run, b)
        if not (in_a or in_b):
            continue
        if in_a and in_b:
            entry: dict[str, Any] = {"op": "equal", "actor": None, "seq": None}
            kid_gone = 0
        elif in_b:
            entry = {"op": "insert", "actor": actor(run[2]), "seq": run[2]}
            kid_gone = 0
        else:
            s = run[3] if run[3] and run[3] <= b else gone
            entry = {"op": "delete", "actor": actor(s) if s else None, "seq": s or None}
            kid_gone = s
        if kid.kids is None:
            ops = track_diff(kid.track, a, b, actor, at_a=in_a, at_b=in_b, gone=kid_gone)
            if kid.track.rich:
                ra = runs_of(va[id(kid)].diff()) if in_a else []
                rb = runs_of(vb[id(kid)].diff()) if in_b else []
                ops = with_formatting(ops, ra, rb)
                if any(op["op"] == "format" for op in ops):
                    reformatted.append((entry, id(kid)))
            entry["ops"] = ops
        else:
            real = vb[id(kid)] if in_b else va[id(kid)]
            entry["element"] = kid.tag
            entry["attributes"] = now = _attributes(real)
            if in_a and in_b:
                was = _attributes(va[id(kid)])
                if was != now:  # who set the attributes that differ, last
                    differ = {k for k in was.keys() | now.keys() if was.get(k) != now.get(k)}
                    by = [s for s, k in kid.changes if a < s <= b and k in differ]
                    entry.update(op="format", actor=actor(by[-1]) if by else None,
                                 seq=by[-1] if by else None, was=was)  # fmt: skip
            entry["children"] = _diff(kid, a, b, actor, va, vb, in_a, in_b, kid_gone, reformatted)
        out.append(entry)
    return out


__all__ = ["Frozen", "XNode", "XmlBroken", "XmlTrack", "observe_trees"]
