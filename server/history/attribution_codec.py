"""The attribution index as stored: what a cold server reads instead of replaying the log.

One blob per document (the store's derived-data row of kind :data:`KIND`), zlib of:

    varUint(len(header)) + header JSON (its "rich": the roots that ever had formatting
                    or embeds)
    per actor run:  varUint pairs in the "actors" section (actor index, count)
    per text root:  its content bytes, then its runs as four int64 columns
                    (start and inserted-by as deltas, length, deleted-by - inserted-by
                    + 1, or 0 while alive);
                    the header's "moved" the text moved in it, with who wrote it, and
                    "moved_away" the text deleted where it was moved from
    per XML root:   (attribution_xml; the header's "xml" names each root's nodes in
                    pre-order: an element by its tag, a text by 0, or 1 if it ever had
                    formatting, or [that, the bytes of its embedded shared types...]
                    if it holds any, a map by null; and "xml_changes" the attributes
                    or keys each node had set, "xml_moved" the text moved in each
                    with who wrote it and "xml_moved_away" where it was moved from)
                    each node's track as a text root's,
                    children in the order of their bytes in their parent's track
    per text root that holds shared types (Lexical's): its tree's nodes as an XML
                    root's (the header's "trees"), but for the root's own track, which
                    is the text root's above

Columns of fixed-width integers cost nothing to build or read in Python (``array``)
and compress well (the high bytes are zeros). The Yjs document the index folds is not
stored: it is the version at the index's seq, loaded like any version (nearest snapshot
+ the events after it), and the index then extends from there. The header carries the
sha256 prefix of the update of event `seq`: a document deleted and made again under the
same name, or a log that changed under the index, does not match, and the index is
rebuilt instead of served; so is an index whose "base" (the seq it started from: a
compacted log's base, or 0) is not the log's base any more: it was built before a
compaction, and names the writers of the events folded away.
"""

from __future__ import annotations

import json
import logging
import sys
import zlib
from array import array
from itertools import accumulate, pairwise
from typing import Any

from pycrdt import Doc

from ..errors import ProtocolError
from ..protocol import Reader, write_var_bytes
from .attribution import BLOCK, AttributionIndex, TextTrack, gc_paused
from .attribution_xml import ELEMENT, MAP_NODE, TEXT_NODE, XmlTrack, XNode
from .render import XML, infer_root_types

log = logging.getLogger("palimpsest.history")

#: the store's derived-data kind of the persisted index
KIND = "attribution"
#: 2: the header says which roots ever had formatting or embeds ("rich"); an index of
#: version 1 does not, and is rebuilt like any index that does not match. 3: XML roots
#: ("xml"); an index of version 2 is read as it was, its untracked roots looked at again
#: (an XML one makes the index be rebuilt, see AttributionIndex.new_roots). 4: the shared
#: types embedded in texts (Lexical's), the trees of text roots that hold some ("trees")
#: and text moved ("xml_moved"); an index of version 2 or 3 whose text roots hold
#: shared types, or of version 3 with an XML tree, is rebuilt. 5: where moved text was
#: deleted ("moved_away", "xml_moved_away"); an index of version 4 that knew of moves
#: is rebuilt (a diff would show their deletes as plain ones). 6: the copies an undo, a
#: redo or a restore made keep their writers (a "moved" or "xml_moved" entry with a
#: fourth field, 1, see attribution.Copies); an index of an earlier version is rebuilt
#: (whether it holds copies, named for their undoer, is not known without the log). 7:
#: a restore's text is matched as copies only, never as moved (a wrecker's letters it
#: deleted and inserted again were the wrecker's); an index of version 6 is rebuilt. 8:
#: deleted-by is stored as deleted-by - inserted-by + 1 (0: alive), where 7 stored the
#: difference itself, so that text an event inserted and deleted again (a client's
#: merged frame) read back as alive: such an index disagreed with its version and was
#: rebuilt on every read (a cold blame of a replayed automerge-paper, 2.9 s); one of
#: version 7 is read as it was (one that holds such text is refused and rebuilt). 9:
#: the copies an undo, a redo or a restore made are matched in the whole stretch around
#: them, where 8 looked at most 65,536 runs on each side and named the copies past them
#: for their undoer (a 1 MB book's overwrite undone: 50,551 characters); an index of
#: version 7 or 8 with a text of more runs than that is rebuilt (runs only ever split,
#: so one with fewer never reached the bound), any other is read as it was
VERSION = 9
READS = (7, 8, 9)
#: the most runs a text of an index of version 8 or before holds and is read back
OLD_GAP_RUNS = 1 << 16
LEVEL = 6


class _Reader(Reader):
    """The protocol's bounds-checked reader, over the index's length-prefixed chunks."""

    __slots__ = ("v",)

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.v = VERSION  # (the header's, once read)

    def chunk(self) -> bytes:
        try:
            return self.read_var_bytes("attribution index chunk")
        except ProtocolError as e:
            raise ValueError(f"truncated attribution index: {e}") from e


def _ints(values: list[int]) -> bytes:
    return array("q", values).tobytes()


def _from_ints(data: bytes) -> list[int]:
    a = array("q")
    a.frombytes(data)
    return a.tolist()


def _deltas(values: list[int]) -> list[int]:
    return [b - a for a, b in pairwise([0, *values])]


def encode(index: AttributionIndex, fingerprint: str) -> bytes:
    """The stored form of `index` (fingerprint: see :func:`fingerprint`)."""
    names = sorted(set(index.actors))
    ids = {a: i for i, a in enumerate(names)}
    actor_runs: list[int] = []
    prev = None
    for a in index.actors:
        i = ids[a]
        if i == prev:
            actor_runs[-1] += 1
        else:
            actor_runs += [i, 1]
            prev = i
    roots = sorted(index.tracks)
    header = {
        "v": VERSION,
        "doc": index.doc_name,
        "seq": index.seq,
        "first": index.first,
        "base": index.base,
        "failed": index.failed,
        "roots": roots,
        "pending": sorted(index.pending),
        "seen": sorted(index._seen),
        "actors": names,
        "fp": fingerprint,
        "rich": [n for n in roots if index.tracks[n].rich],
    }
    text_moved = {n: index.tracks[n].moved for n in roots if index.tracks[n].moved}
    if text_moved:  # a text root's text moved or copied: [first byte, bytes, written by(, 1)]
        header["moved"] = text_moved
    text_away = {n: index.tracks[n].moved_away for n in roots if index.tracks[n].moved_away}
    if text_away:  # where it was moved from: [first byte, bytes]
        header["moved_away"] = text_away
    parts: list[bytes] = []
    for name in roots:
        parts += _track_parts(index.tracks[name])
    changes: list[list[Any]] = []  # [root, node (pre-order), seq, key] per attribute set
    moved: list[list[Any]] = []  # [root, node, first byte, bytes, written by] per move
    away: list[list[Any]] = []  # [root, node, first byte, bytes] per text moved away
    for section, trees in (("trees", index.trees), ("xml", index.xml)):
        found: dict[str, Any] = {}
        for name in sorted(trees):
            tree = trees[name]
            if tree.failed is not None:
                found[name] = tree.failed
                continue
            nodes: list[Any] = []
            for i, node in enumerate(_preorder(tree.root)):
                nodes.append(_describe(node))
                if i or section == "xml":  # (a text root's own track is stored above)
                    parts += _track_parts(node.track)
                    moved += [[name, i, *m] for m in node.track.moved]
                    away += [[name, i, *m] for m in node.track.moved_away]
                changes += [[name, i, s, k] for s, k in node.changes]
            found[name] = nodes
        if found:
            header[section] = found
    if changes:
        header["xml_changes"] = changes
    if moved:
        header["xml_moved"] = moved
    if away:
        header["xml_moved_away"] = away
    parts[:0] = [json.dumps(header, separators=(",", ":")).encode(), _ints(actor_runs)]
    body = b"".join(write_var_bytes(p) for p in parts)
    return zlib.compress(body, LEVEL)


def _track_parts(track: TextTrack) -> list[bytes]:
    runs = list(track.runs())
    return [
        bytes(track.content),
        _ints(_deltas([r[0] for r in runs])),
        _ints([r[1] for r in runs]),
        _ints(_deltas([r[2] for r in runs])),
        _ints([r[3] - r[2] + 1 if r[3] else 0 for r in runs]),  # (see VERSION)
    ]


def _preorder(node: XNode) -> list[XNode]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(n.kids[k] for k in sorted(n.kids, reverse=True))
    return out


def _describe(node: XNode) -> Any:
    """A node in the header: an element's tag, a text's formatting flag (with the bytes
    of its embedded shared types, if any), None for a map."""
    if node.kind == MAP_NODE:
        return None
    if node.kind == ELEMENT:
        return node.tag
    rich = int(node.track.rich)
    return [rich, *sorted(node.kids)] if node.kids else rich


def _read_track(r: _Reader, what: str) -> TextTrack:
    content = bytearray(r.chunk())
    starts = list(accumulate(_from_ints(r.chunk())))
    lens = _from_ints(r.chunk())
    ins = list(accumulate(_from_ints(r.chunk())))
    shift = 1 if r.v >= 8 else 0  # (see VERSION)
    dels = [d + i - shift if d else 0 for d, i in zip(_from_ints(r.chunk()), ins, strict=True)]
    if not len(starts) == len(lens) == len(ins) == len(dels):
        raise ValueError(f"attribution index of {what}: columns differ in length")
    if r.v < 9 and len(starts) > OLD_GAP_RUNS:
        raise ValueError(f"attribution index of {what}: version {r.v} of {len(starts)} runs")
    runs = _merged(starts, lens, ins, dels)
    alive = [r[1] if r[3] == 0 else 0 for r in runs]
    track = TextTrack()
    track.content = content
    track.blocks = [runs[i : i + BLOCK] for i in range(0, len(runs), BLOCK)] or [[]]
    track.alive = [sum(alive[i : i + BLOCK]) for i in range(0, len(runs), BLOCK)] or [0]
    return track


def _merged(starts: list[int], lens: list[int], ins: list[int], dels: list[int]) -> list[list[int]]:
    """The runs, each one that continues the one before it (its bytes follow on in the
    content, inserted and deleted by the same events) joined to it. A fold by ids keeps
    a run per Yjs item: a keystroke each, where they were typed in one event (a client's
    merged frame), 182k runs for automerge-paper's 105k characters. Read back, the index
    folds by deltas, which split runs where they need to, and blame and diffs answer by
    bytes: 17k runs of 4 fields instead (its runs 30 -> 3 MB)."""
    runs: list[list[int]] = []
    last: list[int] = [-1, 0, -1, -1]
    for s, n, i, d in zip(starts, lens, ins, dels, strict=True):
        if s == last[0] + last[1] and i == last[2] and d == last[3] and n and last[1]:
            last[1] += n
        else:
            last = [s, n, i, d]
            runs.append(last)
    return runs


def _read_tree(r: _Reader, name: str, nodes: list[Any], root: TextTrack | None = None) -> XmlTrack:
    """The tree of root `name`, its nodes described in pre-order (:func:`_describe`);
    `root`: a text root's track, the tree's root node's (not stored again)."""
    tags = iter(nodes)
    what = f"root {name!r}"

    def node(track: TextTrack | None = None) -> XNode:
        desc = next(tags)
        if desc is None:
            n = XNode(None, MAP_NODE)
        elif isinstance(desc, str):
            n = XNode(desc)
        elif isinstance(desc, int | list):
            n = XNode(None)
        else:
            raise ValueError(f"attribution index of {what}: a node described as {desc!r}")
        n.track = _read_track(r, what) if track is None else track
        if n.kind == ELEMENT:
            offsets: list[Any] = list(range(len(n.track.content)))
        elif isinstance(desc, list):
            n.track.rich = bool(desc[0])
            offsets = desc[1:]
        else:
            n.track.rich = bool(desc)
            offsets = []
        for k in offsets:
            if not isinstance(k, int) or not 0 <= k < len(n.track.content):
                raise ValueError(f"attribution index of {what}: a child at byte {k!r}")
            n.kids[k] = node()
        return n

    tree = XmlTrack()
    try:
        tree.root = node(root)
    except StopIteration:
        raise ValueError(f"attribution index of {what}: too few nodes") from None
    if next(tags, None) is not None:
        raise ValueError(f"attribution index of {what}: too many nodes")
    if tree.root.kind != (ELEMENT if root is None else TEXT_NODE):
        raise ValueError(f"attribution index of {what}: its root is of another kind")
    return tree


def _tree(r: _Reader, name: str, nodes: Any, h: dict[str, Any], root: TextTrack | None) -> XmlTrack:
    """The tree of root `name` as stored (`root`: a text root's track)."""
    if isinstance(nodes, str):  # it had stopped following the document
        tree = XmlTrack() if root is None else XmlTrack(_text_root(root))
        tree.failed, tree.told = nodes, True
        return tree
    if not isinstance(nodes, list):
        raise ValueError(f"attribution index of root {name!r}: no nodes")
    if root is None and nodes and not isinstance(nodes[0], str):
        raise ValueError(f"attribution index of root {name!r}: its root is of another kind")
    tree = _read_tree(r, name, nodes, root)
    preorder = _preorder(tree.root)
    for at, i, s, k in h.get("xml_changes", []):
        if at == name:
            preorder[int(i)].changes.append((int(s), str(k)))
    for at, i, *m in h.get("xml_moved", []):  # [first byte, bytes, written by(, copy)]
        if at == name:
            preorder[int(i)].track.moved.append([int(x) for x in m])
    for at, i, start, n in h.get("xml_moved_away", []):
        if at == name:
            preorder[int(i)].track.moved_away.append([int(start), int(n)])
    return tree


def _text_root(track: TextTrack) -> XNode:
    node = XNode(None)
    node.track = track
    return node


def header(data: bytes) -> dict[str, Any]:
    """The header of a stored index (seq, fingerprint…), raising ValueError if it does
    not decode."""
    return _open(data)[1]


def base(data: bytes) -> int:
    """The seq a stored index started from: a compacted log's base, or 0 (its header's
    "base"). An index stored before the header kept it (5 Dec 2026) tells it all the
    same: one built from a base notes the base's text as written by nobody ("") at its
    first seq, and no event is logged by an empty actor."""
    r, h = _open(data)
    if "base" in h:
        return int(h["base"])
    runs = _from_ints(r.chunk())
    names = h["actors"]
    return int(h["first"]) if runs and names[runs[0]] == "" else 0


def _open(data: bytes) -> tuple[_Reader, dict[str, Any]]:
    """A reader past the header of a stored index, and the header."""
    try:
        body = zlib.decompress(data)
    except zlib.error as e:
        raise ValueError(f"attribution index does not decompress: {e}") from e
    r = _Reader(body)
    h = json.loads(r.chunk())
    if not isinstance(h, dict) or h.get("v") not in READS:
        raise ValueError("not an attribution index of this version")
    r.v = int(h["v"])
    return r, h


def decode(data: bytes, doc: Doc[Any]) -> AttributionIndex:
    """The index stored in `data`, folding on from `doc` (the version at its seq)."""
    return assemble(parse(data), doc)


class Parsed:
    """A stored index read (parse), not yet attached to a document (assemble): its
    header, its base, its runs and trees. Parsing is the cost that grows with the index
    (decompressing and reading 6 MB: 3.5-7 s on the event loop for a 1.3 MB manuscript
    after ten restores and undos), and touches no Yjs document, so it runs in a worker
    thread (AttributionCache._restore)."""

    __slots__ = ("header", "base", "actors", "tracks", "trees", "xml")

    def __init__(self) -> None:
        self.header: dict[str, Any] = {}
        self.base = 0
        self.actors: list[str] = []
        self.tracks: dict[str, TextTrack] = {}
        self.trees: dict[str, XmlTrack] = {}
        self.xml: dict[str, XmlTrack] = {}


def parse(data: bytes) -> Parsed:
    """Read a stored index (ValueError, KeyError… when it does not decode)."""
    with gc_paused():
        return _parse(data)


def _parse(data: bytes) -> Parsed:
    r, h = _open(data)
    out = Parsed()
    out.header = h
    names = [sys.intern(str(a)) for a in h["actors"]]
    actors: list[str] = []
    runs_col = _from_ints(r.chunk())
    for k in range(0, len(runs_col), 2):
        actors += [names[runs_col[k]]] * runs_col[k + 1]
    out.actors = actors
    # (see base(): an index stored before the header kept it)
    out.base = int(h.get("base", int(h["first"]) if actors and actors[0] == "" else 0))
    roots = [str(n) for n in h["roots"]]
    rich = {str(n) for n in h["rich"]}
    for name in roots:
        out.tracks[name] = track = _read_track(r, f"root {name!r}")
        track.rich = name in rich
        track.moved = [[int(x) for x in m] for m in h.get("moved", {}).get(name, [])]
        track.moved_away = [[int(s), int(n)] for s, n in h.get("moved_away", {}).get(name, [])]
    out.trees = {str(n): _tree(r, str(n), nodes, h, out.tracks.get(str(n)))
                 for n, nodes in sorted(h.get("trees", {}).items())}  # fmt: skip
    for name, nodes in sorted(h.get("xml", {}).items()):
        out.xml[str(name)] = _tree(r, str(name), nodes, h, None)
    if r.pos != len(r.data):
        raise ValueError("attribution index has trailing bytes")
    return out


def assemble(p: Parsed, doc: Doc[Any]) -> AttributionIndex:
    """The index `p` holds, folding on from `doc` (the version at its seq): on the event
    loop, which owns the document (its observers are attached here)."""
    h = p.header
    index = AttributionIndex(str(h["doc"]), [], ydoc=doc)
    index.actors = p.actors
    index.first = int(h["first"])
    index.base = p.base
    index.seq = int(h["seq"])
    index.failed = int(h["failed"])
    index.pending = {str(n) for n in h["pending"]}
    index._seen = {str(n) for n in h["seen"]} | set(p.tracks)
    for name, track in p.tracks.items():
        index.adopt(name, track, p.trees.get(name))
    for name, tree in _read_as_xml(p, doc).items():
        index.adopt_xml(name, tree)
    index._seen |= set(index.xml)
    return index


def _read_as_xml(p: Parsed, doc: Doc[Any]) -> dict[str, XmlTrack]:
    """The XML roots `p` tracks that `doc` (the version at its seq) holds as XML
    fragments still. Before 6 Dec 2026 a root holding XML nodes beside other things (a
    Y.Array of XmlFragments, of elements and values) was taken for one and stored so:
    it is an array, left untracked, and its type is learnt from the document as any
    untracked root's (a cold server had shown it as XML, and a restore had made it
    equal as one, deleting what was no XML node). The roots are read on a scratch copy
    (render.infer_root_types: 30 ms for a 2 MB ProseMirror document), and only when the
    index has an XML root."""
    if not p.xml:
        return {}
    kinds = infer_root_types(doc, p.xml)
    out = {n: t for n, t in p.xml.items() if kinds.get(n) in (XML, None)}
    for name in sorted(set(p.xml) - set(out)):
        log.info("stored attribution index of %s: root %r is an %s, not XML: left untracked",
                 p.header.get("doc"), name, kinds[name])  # fmt: skip
    return out


__all__ = ["KIND", "Parsed", "assemble", "base", "decode", "encode", "header", "parse"]
