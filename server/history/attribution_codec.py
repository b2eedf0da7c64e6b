"""The attribution index as stored: what a cold server reads instead of replaying the log.

One blob per document (the store's derived-data row of kind :data:`KIND`), zlib of:

    varUint(len(header)) + header JSON (its "rich": the roots that ever had formatting
                    or embeds)
    per actor run:  varUint pairs in the "actors" section (actor index, count)
    per text root:  its content bytes, then its runs as four int64 columns
                    (start and inserted-by as deltas, length, deleted-by - inserted-by)
    per XML root:   (attribution_xml; the header's "xml" names each root's nodes in
                    pre-order: an element by its tag, a text by 0, or 1 if it ever had
                    formatting, and "xml_changes" the attributes each element had set)
                    each node's track as a text root's, an element's children in the
                    order of their bytes in its track

Columns of fixed-width integers cost nothing to build or read in Python (``array``)
and compress well (the high bytes are zeros). The Yjs document the index folds is not
stored: it is the version at the index's seq, loaded like any version (nearest snapshot
+ the events after it), and the index then extends from there. The header carries the
sha256 prefix of the update of event `seq`: a document deleted and made again under the
same name, or a log that changed under the index, does not match, and the index is
rebuilt instead of served.
"""

from __future__ import annotations

import json
import sys
import zlib
from array import array
from itertools import accumulate, pairwise
from typing import Any

from pycrdt import Doc

from ..errors import ProtocolError
from ..protocol import Reader, write_var_bytes
from .attribution import BLOCK, AttributionIndex, TextTrack, gc_paused
from .attribution_xml import XmlTrack, XNode

#: the store's derived-data kind of the persisted index
KIND = "attribution"
#: 2: the header says which roots ever had formatting or embeds ("rich"); an index of
#: version 1 does not, and is rebuilt like any index that does not match. 3: XML roots
#: ("xml"); an index of version 2 is read as it was, its untracked roots looked at again
#: (an XML one makes the index be rebuilt, see AttributionIndex.new_roots)
VERSION = 3
READS = (2, 3)
LEVEL = 6


class _Reader(Reader):
    """The protocol's bounds-checked reader, over the index's length-prefixed chunks."""

    __slots__ = ()

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
        "failed": index.failed,
        "roots": roots,
        "pending": sorted(index.pending),
        "seen": sorted(index._seen),
        "actors": names,
        "fp": fingerprint,
        "rich": [n for n in roots if index.tracks[n].rich],
    }
    parts: list[bytes] = []
    for name in roots:
        parts += _track_parts(index.tracks[name])
    xml: dict[str, Any] = {}
    changes: list[list[Any]] = []  # [root, node (pre-order), seq, key] per attribute set
    for name in sorted(index.xml):
        track = index.xml[name]
        if track.failed is not None:
            xml[name] = track.failed
            continue
        nodes: list[str | int] = []
        for i, node in enumerate(_preorder(track.root)):
            nodes.append(node.tag if node.tag is not None else int(node.track.rich))
            parts += _track_parts(node.track)
            changes += [[name, i, s, k] for s, k in node.changes]
        xml[name] = nodes
    if xml:
        header["xml"] = xml
        header["xml_changes"] = changes
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
        _ints([r[3] - r[2] if r[3] else 0 for r in runs]),
    ]


def _preorder(node: XNode) -> list[XNode]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        if n.kids is not None:
            stack.extend(n.kids[k] for k in range(len(n.track.content) - 1, -1, -1))
    return out


def _read_track(r: _Reader, what: str) -> TextTrack:
    content = bytearray(r.chunk())
    starts = list(accumulate(_from_ints(r.chunk())))
    lens = _from_ints(r.chunk())
    ins = list(accumulate(_from_ints(r.chunk())))
    dels = [d + i if d else 0 for d, i in zip(_from_ints(r.chunk()), ins, strict=True)]
    if not len(starts) == len(lens) == len(ins) == len(dels):
        raise ValueError(f"attribution index of {what}: columns differ in length")
    runs = list(map(list, zip(starts, lens, ins, dels, strict=True)))
    alive = [n if d == 0 else 0 for n, d in zip(lens, dels, strict=True)]
    track = TextTrack()
    track.content = content
    track.blocks = [runs[i : i + BLOCK] for i in range(0, len(runs), BLOCK)] or [[]]
    track.alive = [sum(alive[i : i + BLOCK]) for i in range(0, len(runs), BLOCK)] or [0]
    return track


def _read_tree(r: _Reader, name: str, nodes: list[Any]) -> XmlTrack:
    """The tree of XML root `name`, its nodes' tags (or text flags) in pre-order."""
    tags = iter(nodes)

    def node() -> XNode:
        tag = next(tags)
        n = XNode(str(tag) if isinstance(tag, str) else None)
        n.track = _read_track(r, f"XML root {name!r}")
        if n.kids is None:
            n.track.rich = bool(tag)
        else:
            for k in range(len(n.track.content)):
                n.kids[k] = node()
        return n

    track = XmlTrack()
    try:
        track.root = node()
    except StopIteration:
        raise ValueError(f"attribution index of XML root {name!r}: too few nodes") from None
    if next(tags, None) is not None:
        raise ValueError(f"attribution index of XML root {name!r}: too many nodes")
    if track.root.kids is None:
        raise ValueError(f"attribution index of XML root {name!r}: its root is a text")
    return track


def header(data: bytes) -> dict[str, Any]:
    """The header of a stored index (seq, fingerprint…), raising ValueError if it does
    not decode."""
    return _open(data)[1]


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
    return r, h


def decode(data: bytes, doc: Doc[Any]) -> AttributionIndex:
    """The index stored in `data`, folding on from `doc` (the version at its seq)."""
    with gc_paused():
        return _decode(data, doc)


def _decode(data: bytes, doc: Doc[Any]) -> AttributionIndex:
    r, h = _open(data)
    names = [sys.intern(str(a)) for a in h["actors"]]
    actors: list[str] = []
    runs_col = _from_ints(r.chunk())
    for k in range(0, len(runs_col), 2):
        actors += [names[runs_col[k]]] * runs_col[k + 1]
    roots = [str(n) for n in h["roots"]]
    rich = {str(n) for n in h["rich"]}
    index = AttributionIndex(str(h["doc"]), [], ydoc=doc)
    index.actors = actors
    index.first = int(h["first"])
    index.seq = int(h["seq"])
    index.failed = int(h["failed"])
    index.pending = {str(n) for n in h["pending"]}
    index._seen = {str(n) for n in h["seen"]} | set(roots)
    if h["v"] == 2:  # XML roots were not tracked: look at every untracked root again
        index._seen = set(roots)
    for name in roots:
        track = _read_track(r, f"root {name!r}")
        track.rich = name in rich
        index.adopt(name, track)
    for name, nodes in sorted(h.get("xml", {}).items()):
        if isinstance(nodes, str):  # it had stopped following the document
            xml = XmlTrack()
            xml.failed, xml.told = nodes, True
        else:
            xml = _read_tree(r, name, nodes)
            preorder = _preorder(xml.root)
            for root, i, s, k in h.get("xml_changes", []):
                if root == name:
                    preorder[int(i)].changes.append((int(s), str(k)))
        index.adopt_xml(str(name), xml)
    index._seen |= set(index.xml)
    if r.pos != len(r.data):
        raise ValueError("attribution index has trailing bytes")
    return index


__all__ = ["KIND", "decode", "encode", "header"]
