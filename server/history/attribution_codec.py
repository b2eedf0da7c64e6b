"""The attribution index as stored: what a cold server reads instead of replaying the log.

One blob per document (the store's derived-data row of kind :data:`KIND`), zlib of:

    varUint(len(header)) + header JSON
    per actor run:  varUint pairs in the "actors" section (actor index, count)
    per text root:  its content bytes, then its runs as four int64 columns
                    (start and inserted-by as deltas, length, deleted-by - inserted-by);
                    with ids (version 2, an index folded by Yjs ids), seven more: each
                    run's Yjs id (client, as an index into the header's "clients", and
                    clock), its length in clock units, its origin's and its right
                    origin's ids (client index and clock, -1 for none)

Columns of fixed-width integers cost nothing to build or read in Python (``array``)
and compress well (the high bytes are zeros). The Yjs document the index folds is not
stored: it is the version at the index's seq, loaded like any version (nearest snapshot
+ the events after it), and the index then extends from there. The header carries the
sha256 prefix of the update of event `seq`: a document deleted and made again under the
same name, or a log that changed under the index, does not match, and the index is
rebuilt instead of served.

Version 2 adds the ids, so that an index read back goes on folding by ids
(server/history/attribution_ids.py) instead of by text deltas, which walk the text from
its start for every event: a long-lived document's refreshes then cost what its first
build did. An index that folds by deltas (read back from version 1, or handed over) is
stored without them. Version 1 blobs still decode.
"""

from __future__ import annotations

import json
import sys
import zlib
from array import array
from itertools import accumulate
from typing import Any

from pycrdt import Doc

from ..errors import ProtocolError
from ..protocol import Reader, decode_state_vector, write_var_bytes
from .attribution import (
    BLOCK,
    R_CLIENT,
    R_CLOCK,
    R_NCLOCK,
    R_OC,
    R_OK,
    R_RC,
    R_RK,
    AttributionIndex,
    TextTrack,
    gc_paused,
)
from .attribution_ids import IdFold

#: the store's derived-data kind of the persisted index
KIND = "attribution"
VERSION = 2
#: the versions this code reads (1: without ids)
READS = (1, 2)
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
    return [b - a for a, b in zip([0, *values[:-1]], values, strict=True)]


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
    by_ids = index.folds_by_ids
    stored = index._ids.pending if index._ids is not None else None
    if not isinstance(stored, _StoredIds):
        stored = None
    clients: dict[int, int] = {}
    if stored is not None:
        clients = {c: i for i, c in enumerate(stored.clients)}
    elif by_ids:
        for name in roots:
            for r in index.tracks[name].runs():
                for c in (r[R_CLIENT], r[R_OC], r[R_RC]):
                    if c is not None and c not in clients:
                        clients[c] = len(clients)
    header = {
        "v": VERSION if by_ids else 1,
        "doc": index.doc_name,
        "seq": index.seq,
        "first": index.first,
        "failed": index.failed,
        "roots": roots,
        "pending": sorted(index.pending),
        "seen": sorted(index._seen),
        "actors": names,
        "fp": fingerprint,
    }
    if by_ids:
        header["clients"] = list(clients)
    parts = [json.dumps(header, separators=(",", ":")).encode(), _ints(actor_runs)]
    for name in roots:
        track = index.tracks[name]
        runs = list(track.runs())
        starts = [r[0] for r in runs]
        ins = [r[2] for r in runs]
        parts += [
            bytes(track.content),
            _ints(_deltas(starts)),
            _ints([r[1] for r in runs]),
            _ints(_deltas(ins)),
            _ints([r[3] - r[2] if r[3] else 0 for r in runs]),
        ]
        if stored is not None:  # read back and not folded on since: as they were
            parts += stored.columns[name]
        elif by_ids:
            parts += [
                _ints([clients[r[R_CLIENT]] for r in runs]),
                _ints([r[R_CLOCK] for r in runs]),
                _ints([r[R_NCLOCK] for r in runs]),
                _ints([-1 if r[R_OC] is None else clients[r[R_OC]] for r in runs]),
                _ints([-1 if r[R_OK] is None else r[R_OK] for r in runs]),
                _ints([-1 if r[R_RC] is None else clients[r[R_RC]] for r in runs]),
                _ints([-1 if r[R_RK] is None else r[R_RK] for r in runs]),
            ]
    body = b"".join(write_var_bytes(p) for p in parts)
    return zlib.compress(body, LEVEL)


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
    index = AttributionIndex(str(h["doc"]), [], ydoc=doc)
    stored = None
    if h["v"] >= 2:
        # folds on by ids: every tracked item is in the runs. Their ids are only read
        # when the index folds on (IdFold.pending), not for a blame or diff at its seq
        fold = IdFold(index.tracks)
        stored = _StoredIds(fold, [int(c) for c in h["clients"]], doc)
        fold.pending = stored
        index.resume_by_ids(fold)
    tracks: list[tuple[str, TextTrack]] = []
    for name in roots:
        content = bytearray(r.chunk())
        starts = list(accumulate(_from_ints(r.chunk())))
        lens = _from_ints(r.chunk())
        ins = list(accumulate(_from_ints(r.chunk())))
        dels = [d + i if d else 0 for d, i in zip(_from_ints(r.chunk()), ins, strict=True)]
        if not len(starts) == len(lens) == len(ins) == len(dels):
            raise ValueError(f"attribution index of root {name!r}: columns differ in length")
        if stored is not None:
            cols = stored.columns[name] = [r.chunk() for _ in range(7)]
            if any(len(c) != 8 * len(starts) for c in cols):
                raise ValueError(f"attribution index of root {name!r}: id columns differ")
        runs = list(map(list, zip(starts, lens, ins, dels, strict=True)))
        alive = [n if d == 0 else 0 for n, d in zip(lens, dels, strict=True)]
        track = TextTrack()
        track.content = content
        track.blocks = [runs[i : i + BLOCK] for i in range(0, len(runs), BLOCK)] or [[]]
        track.alive = [sum(alive[i : i + BLOCK]) for i in range(0, len(runs), BLOCK)] or [0]
        tracks.append((name, track))
    if r.pos != len(r.data):
        raise ValueError("attribution index has trailing bytes")
    for name, track in tracks:
        index.adopt(name, track)  # by ids: before the seq is set (adopt would hand over)
    index.actors = actors
    index.first = int(h["first"])
    index.seq = int(h["seq"])
    index.failed = int(h["failed"])
    index.pending = {str(n) for n in h["pending"]}
    index._seen = {str(n) for n in h["seen"]} | set(roots)
    return index


class _StoredIds:
    """The ids of a stored index (version 2) as read: its runs get them, and the fold
    its view of them, when it first folds on (``IdFold.materialize``); until then a
    blame or a diff does without, and storing the index again writes them as read."""

    __slots__ = ("fold", "clients", "doc", "columns")

    def __init__(self, fold: IdFold, clients: list[int], doc: Doc[Any]) -> None:
        self.fold = fold
        self.clients = clients
        #: the document at the index's seq (nothing folded on yet: its state vector is
        #: the fold's)
        self.doc = doc
        #: per root, the seven id columns as stored
        self.columns: dict[str, list[bytes]] = {}

    def __call__(self) -> None:
        """Give every run its ids (13 fields, as IdFold makes them) and index them;
        ValueError when they cannot be a fold's (IdFold.place_runs)."""
        fold, clients = self.fold, self.clients
        for name, raw in self.columns.items():
            track = fold.tracks[name]
            ix, clocks, nclocks, ocs, oks, rcs, rks = (_from_ints(c) for c in raw)
            try:
                for run, c, k, nk, a, ak, b, bk in zip(
                    track.runs(), ix, clocks, nclocks, ocs, oks, rcs, rks, strict=True
                ):
                    run += (
                        clients[c],
                        k,
                        nk,
                        None if a < 0 else clients[a],
                        None if ak < 0 else ak,
                        None if b < 0 else clients[b],
                        None if bk < 0 else bk,
                        None,
                        track,
                    )
            except (IndexError, ValueError) as e:
                raise ValueError(f"stored ids of root {name!r} do not fit: {e}") from e
        fold.state = decode_state_vector(self.doc.get_state())
        fold.place_runs(clients)


__all__ = ["KIND", "decode", "encode", "header"]
