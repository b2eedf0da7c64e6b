"""Who wrote what: the attribution index behind blame and attributed diffs.

For each text root, the index keeps every byte ever inserted (UTF-8, the unit of
pycrdt's Text positions), in document order, deleted ones included (tombstones), each
with the seq of the event that inserted it and the seq of the event that deleted it (0
while alive). It is built by folding the log's events onto a scratch document: from an
empty document, by the Yjs ids of each update's items (attribution_ids: where each
goes, by its origins, without walking the text); otherwise (from a snapshot, read back
from the store, or past an update the fold by ids does not follow) by each
transaction's text delta (retain/insert/delete at visible positions), which pycrdt
computes by walking the text from its start.

Because a Yjs sequence never reorders its items and a deleted item never comes back
(undo and restore insert copies), the order at head, restricted to the bytes alive at
seq S (inserted <= S, not deleted by S), is the text at S. So one structure answers
blame at any seq, and the diff of any two seqs, without replaying anything per request.
Where a new insertion lands among tombstones is not recorded exactly by deltas (by ids
it is; by deltas it goes before them), and it does not matter for blame or diffs: such
a tombstone and the new bytes are never alive at the same seq, and a diff lists each
gap's deletions before its insertions. It does for the copies an undo or a restore
makes (the deleted text beside a copy is found by order): see TextTrack.gap.

Cost and lifetime (see docs/history.md and attribution_cache): the index is built
once from the start of the log (the only full pass: 5.4-9.3 s for automerge-paper's
259,778 events by ids, 31.9-34.9 s by deltas), stored (attribution_codec), read back by
a cold server, and extended with the events appended since (by deltas: the stored runs
carry no ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import gc
import logging
import sys
import time
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import (
    Callable,
    Container,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, TypeVar

from pycrdt import Doc, Text, XmlFragment
from pycrdt._base import base_types, process_event

from .. import cpu_account
from ..errors import FATAL, DocumentBroken, panicked
from ..snapshots import Fixes
from ..store.base import Event
from .render import TEXT, XML, infer_root_types

if TYPE_CHECKING:
    from .attribution_xml import XmlTrack

log = logging.getLogger("palimpsest.history")

#: what a walk in steps answers (finish)
_R = TypeVar("_R")

#: an embedded object in a text counts one position; shown as U+FFFC in blame and diffs
EMBED = b"\x1a"
#: runs (or answers) walked between two pauses of a blame's or diff's walk in steps
#: (blame_steps, diff_steps): ~0.1 ms
WALK_STEP = 256
#: runs per block of the blocked list (split at twice this)
BLOCK = 64
#: (by ids) the gap between two blocks' order keys when numbered (TextTrack.block_index):
#: that many splits between two blocks before all are numbered again
KEY_GAP = 1 << 64
#: the fields of a run: [first byte, bytes, inserted by seq, deleted by seq (0 alive)];
#: a run folded by ids (attribution_ids) carries more after these four
R_START, R_LEN, R_INS, R_DEL = 0, 1, 2, 3
#: (by ids) the Yjs id of its first clock unit, its length in clock units, the origin and
#: right origin of its first unit (client and clock each, None when there is none; not
#: tuples, which cost a run 100 bytes more), the block that holds it and its track
R_CLIENT, R_CLOCK, R_NCLOCK, R_OC, R_OK, R_RC, R_RK, R_BLOCK, R_TRACK = range(4, 13)
#: the memory of a run, as the cache's byte budget estimates it (attribution_cache): a
#: list of 4 ints, in its block; one folded by ids (13 fields, and held by id in
#: attribution_ids.IdFold too); and of its Yjs document per byte ever inserted (measured
#: on automerge-paper: 59.5 MB for 182k runs by ids, tracemalloc; read back, its 17k
#: runs and document ~8 MB of RSS)
RUN_BYTES = 180
RUN_BYTES_BY_IDS = 330
DOC_BYTES_PER_BYTE = 20
#: events read per store query while folding
READ_PAGE = 2000
#: at most this many events folded between two yields to the event loop
FOLD_SLICE = 250
#: the ops of one text delta folded between two pauses of a fold by slices (and the
#: insert or delete ranges of one update folded by ids): ~1-3 ms
DELTA_STEP = 512
#: (by ids, folding by slices) an update larger than this is decoded in a worker thread
DECODE_ON_LOOP_BYTES = 1 << 16
#: about this much wall time folded between two yields to the event loop: a first build
#: of a long log takes seconds, and an edit arriving meanwhile waits for the slice under
#: way (slices of 250 events took up to ~50 ms on a large document, and showed as a run
#: of 5-25 ms fan-out latencies while an idle document's index was built)
SLICE_SECONDS = 0.001
#: a background fold while edits are being made: shorter slices, longer pauses (a fifth
#: of the CPU at most)
BUSY_SLICE_SECONDS = 0.00025
BUSY_PAUSE = 4


class TextTrack:
    """The runs of one text root: [first byte id, length, inserted by seq, deleted by seq].

    Runs live in blocks (a blocked list) with each block's count of alive bytes, so that
    finding a visible position costs O(blocks + block size), not O(document)."""

    __slots__ = ("blocks", "alive", "content", "_bi", "_base", "_ri", "_q", "by_block", "_keys",
                 "rich", "moved", "moved_away", "_ascii_upto", "steps")  # fmt: skip

    def __init__(self) -> None:
        self.blocks: list[list[list[Any]]] = [[]]
        self.alive: list[int] = [0]
        #: every byte ever inserted, by id
        self.content = bytearray()
        # the block of the last edit and the alive bytes before it: edits are local, and
        # edits only change counts at or after this block
        self._bi = 0
        self._base = 0
        # and, within that block, a run and the alive bytes of the runs before it (-1:
        # none): the ops of one delta come in document order, so the next position is
        # found from there, not from the block's first run (see _find)
        self._ri = -1
        self._q = 0
        #: while folded by ids (attribution_ids): each block's order key, by id(block),
        #: and the keys in the blocks' order (see block_index)
        self.by_block: dict[int, int] | None = None
        self._keys: list[int] = []
        #: runs looked at by _find and run splits made, for tests: one delta's cost is
        #: linear in its ops plus the runs it passes (test_attribution_fragmented)
        self.steps = 0
        #: whether the text ever had formatting or embeds (a diff then lays the versions'
        #: formatting over its runs, see rich_diff)
        self.rich = False
        #: characters an event deleted and inserted again (a line or a paragraph's end
        #: moved, see :class:`Moves`), or that an undo, a redo or a restore inserted as a
        #: copy of deleted ones (see :class:`Copies`): [first byte, bytes, written by
        #: seq], and a fourth field, 1, for a copy; by first byte; blame names their
        #: writer, not the event that moved or copied them
        self.moved: list[list[int]] = []
        #: the other side: characters an event deleted because it moved them (it
        #: inserted them again elsewhere): [first byte, bytes], by first byte; a diff
        #: marks their delete ``moved``
        self.moved_away: list[list[int]] = []
        #: bytes of `content` known to be ASCII, or -1 once one is not (see `ascii`)
        self._ascii_upto = 0

    def ascii(self) -> bool:
        """Whether every byte ever inserted is ASCII, so that each is one UTF-16 unit
        (and a UTF-16 offset the same as a byte count). `content` only grows: only what
        came since the last call is looked at."""
        upto = self._ascii_upto
        if upto < 0:
            return False
        content = self.content
        if upto < len(content):
            if not content[upto:].isascii():
                self._ascii_upto = -1
                return False
            self._ascii_upto = len(content)
        return True

    def writers(self, start: int, n: int, ins: int) -> list[int]:
        """Who wrote each of bytes start..start+n (of a run inserted by `ins`)."""
        return [w for _, k, w in self.stretches(start, n, ins) for _ in range(k)]

    def stretches(self, start: int, n: int, ins: int) -> list[tuple[int, int, int]]:
        """Bytes start..start+n (of a run inserted by `ins`) as (first byte, bytes,
        written by) stretches."""
        return [(at, k, ins if m is None else m[2]) for at, k, m in _cut(self.moved, start, n)]

    def insert_pieces(self, start: int, n: int, ins: int) -> list[tuple[int, int, bool, int]]:
        """Bytes start..start+n (of a run inserted by `ins`) as (first byte, bytes, moved
        there by `ins`, the seq that wrote them when they are a copy, else `ins`) pieces:
        a copy an undo or a restore made is not a move."""
        return [
            (at, k, m is not None and m[2] != ins and len(m) == 3,
             m[2] if m is not None and len(m) > 3 else ins)
            for at, k, m in _cut(self.moved, start, n)
        ]  # fmt: skip

    def note_moved(self, start: int, writers: list[int], copy: bool = False) -> None:
        """Bytes from `start` (inserted by the event being folded, so past the bytes of
        every range noted before it, though not past this event's) were written by
        `writers`, one each; `copy`: they are a copy (see :class:`Copies`), not moved."""
        for _ in self.note_moved_steps(start, writers, copy):
            pass

    def note_moved_steps(
        self, start: int, writers: list[int], copy: bool = False
    ) -> Iterator[None]:
        """:meth:`note_moved`, a pause (a yield) after every MATCH_STEP writers."""
        ranges: list[list[int]] = []
        for k, w in enumerate(writers):
            if k % MATCH_STEP == MATCH_STEP - 1:
                yield
            last = ranges[-1] if ranges else None
            if last is not None and last[2] == w and last[0] + last[1] == start + k:
                last[1] += 1
            else:
                ranges.append([start + k, 1, w, 1] if copy else [start + k, 1, w])
        moved = self.moved
        if not moved or moved[-1][0] < start:
            moved += ranges
        else:  # (an update's structs may be placed in the text in any order)
            i = bisect_right(moved, [start, -1])
            moved[i:i] = ranges

    def note_moved_away(self, start: int, n: int) -> None:
        """Bytes start..start+n were deleted by the event being folded, which inserted
        them again elsewhere (see :class:`Moves`)."""
        away = self.moved_away
        i = bisect_right(away, [start, -1])
        if i and away[i - 1][0] + away[i - 1][1] == start:
            away[i - 1][1] += n
            if i < len(away) and away[i][0] == start + n:  # (it joins the next one too)
                away[i - 1][1] += away.pop(i)[1]
        elif i < len(away) and away[i][0] == start + n:
            away[i][0], away[i][1] = start, away[i][1] + n
        else:
            away.insert(i, [start, n])

    def away_pieces(self, start: int, n: int) -> list[tuple[int, int, bool]]:
        """Bytes start..start+n as (first byte, bytes, deleted by a move) pieces."""
        return [(at, k, m is not None) for at, k, m in _cut(self.moved_away, start, n)]

    @property
    def length(self) -> int:
        return sum(self.alive)

    def apply_delta(
        self,
        delta: list[dict[str, Any]],
        seq: int,
        on_insert: Callable[[int, bytes, Any], None] | None = None,
        gone: list[tuple[int, int, int]] | None = None,
        copies: Copies | None = None,
    ) -> None:
        """Fold a text's delta as event `seq`; `on_insert`: told each insert's first
        byte, bytes and value (attribution_xml follows the shared types among them, and
        notes text moved); `gone`: given the runs it deletes (see :meth:`delete`);
        `copies`: told where each insert is (the event may bring deleted text back)."""
        for _ in self.delta_steps(delta, seq, on_insert, gone, copies):
            pass

    def delta_steps(
        self,
        delta: list[dict[str, Any]],
        seq: int,
        on_insert: Callable[[int, bytes, Any], None] | None = None,
        gone: list[tuple[int, int, int]] | None = None,
        copies: Copies | None = None,
    ) -> Iterator[None]:
        """:meth:`apply_delta`, a pause (a yield) every DELTA_STEP ops: one event's
        delta may hold a hundred thousand ops (a replace-all, a delete of every other
        character), and a fold by slices (AttributionIndex.fold_sliced) gives the event
        loop its turn between them. The ops before a pause are folded, the others not:
        the runs answer any seq before the event's meanwhile (its inserts are not alive
        there yet, and what it deleted still is)."""
        pos = 0
        for k, op in enumerate(delta):
            if k % DELTA_STEP == DELTA_STEP - 1:
                yield
            if "retain" in op:
                pos += int(op["retain"])
                if "attributes" in op:
                    self.rich = True
            elif "insert" in op:
                value = op["insert"]
                if isinstance(value, str):
                    data = value.encode()
                    if "attributes" in op:
                        self.rich = True
                else:
                    data, self.rich = EMBED, True
                if data:
                    if on_insert is not None:
                        on_insert(len(self.content), data, value)  # (where insert puts it)
                    self.insert(pos, data, seq)
                    if copies is not None:  # (a later op of the delta is past it)
                        copies.at(self, pos)
                pos += len(data)
            elif "delete" in op:
                self.delete(pos, int(op["delete"]), seq, gone)

    def _find(self, p: int) -> tuple[int, int, int]:
        """The point after `p` alive bytes: (block, run, offset inside the run or 0).

        From the block and run of the last point found when `p` is past it (a delta's
        ops, an element's children ops), so that a delta costs its ops plus the runs it
        passes, not a scan of a block per op (a delete of every other character, in one
        update, took seconds: a block's runs scanned from its first for each op, and
        every block from the first after each block split)."""
        if p == 0:
            self._bi = self._base = 0
            self._ri = self._q = 0
            return 0, 0, 0
        alive, last = self.alive, len(self.blocks) - 1
        bi, base = self._bi, self._base
        while bi > 0 and base >= p:
            bi -= 1
            base -= alive[bi]
        while bi < last and base + alive[bi] < p:
            base += alive[bi]
            bi += 1
        if bi != self._bi:
            self._ri = -1
        self._bi, self._base = bi, base
        p -= base
        runs = self.blocks[bi]
        first, q = self._ri, self._q
        if first < 0 or p <= q:  # (at the very point: from the block's start, to land
            first, q = 0, 0  # as the scan from there does, before any tombstones)
        p -= q
        steps = 0
        for ri in range(first, len(runs)):
            run = runs[ri]
            steps += 1
            if run[3] == 0:
                n = run[1]
                if p < n:
                    self._ri, self._q = ri, q
                    self.steps += steps
                    return bi, ri, p
                p -= n
                q += n
                if p == 0:
                    self._ri, self._q = ri + 1, q
                    self.steps += steps
                    return bi, ri + 1, 0
        raise ValueError("position past the end of the text")

    @staticmethod
    def _split(runs: list[list[Any]], ri: int, off: int) -> None:
        # a run folded by ids (attribution_ids) carries more fields: by deltas they are
        # not kept, the fold by ids having stopped for good
        run = runs[ri]
        s, n, ins, dele = run[0], run[1], run[2], run[3]
        runs[ri] = [s, off, ins, dele]
        runs.insert(ri + 1, [s + off, n - off, ins, dele])

    def _split_block(self, bi: int) -> None:
        runs = self.blocks[bi]
        half = len(runs) // 2
        b = runs[half:]
        del runs[half:]  # the first half stays the same list: its runs still point to it
        alive_a = sum(r[1] for r in runs if r[3] == 0)
        self.blocks.insert(bi + 1, b)
        self.alive[bi : bi + 1] = [alive_a, self.alive[bi] - alive_a]
        self.steps += half
        # the last point found stays where it is (not back to the first block: a delta
        # of many ops splits many blocks, each then walked from the first)
        if self._bi > bi:
            self._bi += 1
        elif self._bi == bi and self._ri > half:
            self._bi, self._base = bi + 1, self._base + alive_a
            self._ri, self._q = self._ri - half, self._q - alive_a
        if self.by_block is not None:
            keys = self._keys
            lo = keys[bi]
            hi = keys[bi + 1] if bi + 1 < len(keys) else lo + 2 * KEY_GAP
            if hi - lo < 2:  # (no key left between the two: number them again)
                self._number_blocks()
            else:
                keys.insert(bi + 1, (lo + hi) // 2)
                self.by_block[id(b)] = keys[bi + 1]
            for run in b:
                run[R_BLOCK] = b

    def _number_blocks(self) -> None:
        """(by ids) Give the blocks order keys KEY_GAP apart."""
        self._keys = [i * KEY_GAP for i in range(len(self.blocks))]
        self.by_block = {id(blk): k for blk, k in zip(self.blocks, self._keys, strict=True)}

    def follow_by_ids(self) -> None:
        """Start folding by ids (attribution_ids): the blocks get order keys."""
        self._number_blocks()

    def block_index(self, block: list[Any]) -> int:
        """(by ids) The index of `block`, by its order key: a block split inserts a key
        between its neighbours' instead of numbering every block after it again (that
        was a pass over the blocks per split, quadratic in a delete of many ranges)."""
        assert self.by_block is not None
        return bisect_left(self._keys, self.by_block[id(block)])

    def leave_ids(self) -> None:
        """Stop folding by ids: the blocks' alive counts changed under the last point
        found, which is forgotten."""
        self.by_block = None
        self._keys = []
        self._bi = self._base = 0
        self._ri = -1

    def insert(self, p: int, data: bytes, seq: int) -> None:
        start = len(self.content)
        self.content += data
        bi, ri, off = self._find(p)
        runs = self.blocks[bi]
        q = self._q  # (the alive bytes of the block before run ri)
        if off:
            self._split(runs, ri, off)
            ri += 1
            q += off
        prev = runs[ri - 1] if ri > 0 else None
        if prev is not None and prev[2] == seq and prev[3] == 0 and prev[0] + prev[1] == start:
            prev[1] += len(data)
        else:
            runs.insert(ri, [start, len(data), seq, 0])
            ri += 1
        self._ri, self._q = ri, q + len(data)  # (the point after the bytes inserted)
        self.alive[bi] += len(data)
        if len(runs) > 2 * BLOCK:
            self._split_block(bi)

    def delete(
        self, p: int, n: int, seq: int, gone: list[tuple[int, int, int]] | None = None
    ) -> None:
        """Delete `n` alive bytes from position `p` as event `seq`; `gone`: given each
        run it deletes, as (first byte, bytes, inserted by), in order."""
        bi, ri, off = self._find(p)
        runs = self.blocks[bi]
        if off:
            self._split(runs, ri, off)
            ri += 1
            self._ri, self._q = ri, self._q + off
        grown = bi
        while n > 0:
            if ri >= len(runs):
                bi += 1
                while bi < len(self.blocks) and self.alive[bi] == 0:
                    bi += 1  # only tombstones there: nothing to delete
                if bi >= len(self.blocks):
                    raise ValueError("deletion past the end of the text")
                runs, ri = self.blocks[bi], 0
                continue
            run = runs[ri]
            if run[3] == 0:
                if run[1] > n:
                    self._split(runs, ri, n)
                    run = runs[ri]
                run[3] = seq
                n -= run[1]
                self.alive[bi] -= run[1]
                if gone is not None:
                    gone.append((run[0], run[1], run[2]))
            ri += 1
        if bi != grown and len(self.blocks[bi]) > 2 * BLOCK:  # (the last run split there)
            self._split_block(bi)
        if len(self.blocks[grown]) > 2 * BLOCK:
            self._split_block(grown)

    def runs(self) -> Iterator[list[int]]:
        for block in self.blocks:
            yield from block

    def where_run(self, run: list[Any]) -> tuple[int, int]:
        """The block and index of `run` while folded by ids (attribution_ids: a run
        knows its block). list.index tries identity first, and two runs differ in
        their first fields (ids are unique): a C loop over at most 2 * BLOCK runs."""
        block = run[R_BLOCK]
        return self.block_index(block), block.index(run)

    def gap(self, bi: int, ri: int, seq: int) -> list[list[Any]]:
        """:meth:`gap_steps` in one piece."""
        steps = self.gap_steps(bi, ri, seq)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def gap_steps(self, bi: int, ri: int, seq: int) -> Generator[None, None, list[list[Any]]]:
        """The runs around the point before run `ri` of block `bi` that are deleted or
        inserted by event `seq`, in order: the stretch between two characters that were
        alive before the event, and are after it (an insert of `seq` lands in one).
        All of it, however many runs (an old document's whole text deleted and brought
        back lies among the tombstones of all its history: 2 x 65,536 runs were once the
        bound, and the copies past it were the undoer's); a pause (a yield) after every
        MATCH_STEP runs. Each stretch is walked once per event (Copies.settle_steps).

        A run folded by deltas (4 fields), inserted where there was text deleted
        before, lies before those tombstones (a delta does not say where among them it
        went, see the module's docstring), though Yjs may have put it after them: typing
        on at the end of a word another's restore just deleted (the typist's insert
        follows its deleted last letter), or text typed where a restore deleted before
        the restorer's undo brought it back beside the tombstones. So on the right, the
        stretch goes on past such runs (at most GAP_FLOAT runs, not part of it) to the
        tombstones deleted before every one of them was inserted: they are in the
        stretch, as the fold by ids would have them."""
        blocks = self.blocks

        def passable(run: list[Any]) -> bool:
            return bool(run[3]) or run[2] == seq or not run[1]

        left: list[list[Any]] = []
        b, r = bi, ri - 1
        while True:
            while r < 0 and b > 0:
                b -= 1
                r = len(blocks[b]) - 1
            if r < 0 or not passable(blocks[b][r]):
                break
            left.append(blocks[b][r])
            r -= 1
            if len(left) % MATCH_STEP == 0:
                yield
        right: list[list[Any]] = []
        b, r = bi, ri
        floor, floated = seq, 0  # (the earliest insert of the runs passed over, how many)
        while True:
            while r >= len(blocks[b]) and b + 1 < len(blocks):
                b, r = b + 1, 0
            if r >= len(blocks[b]):
                break
            run = blocks[b][r]
            r += 1
            if not floated and passable(run):
                right.append(run)
                if len(right) % MATCH_STEP == 0:
                    yield
            elif not run[3] and run[2] != seq and len(run) == 4 and floated < GAP_FLOAT:
                floor, floated = min(floor, run[2]), floated + 1  # (passed over)
            elif run[3] and run[3] < floor:  # (beyond: deleted before all those were typed)
                right.append(run)
                if len(right) % MATCH_STEP == 0:
                    yield
            elif run[1]:  # (alive text not passed over, or this event's beyond it)
                break
        left.reverse()
        return left + right


#: an event that deletes more text than this, or whose deleted stretches times its
#: inserts are more than MOVE_PAIRS (a whole document pasted over another), is not
#: looked at for moves: its text is named for it, as any insert's is
MOVE_BYTES = 1 << 14
#: and the search of one event's moves stops (none noted) past this many bytes read
#: (a file pasted over with changes throughout: 0.2 s for 50 kB before this bound)
MOVE_WORK = 1 << 22
#: (bytes.translate) 1 for an embed, 0 for any other byte
_EMBEDS = bytes(1 if b == EMBED[0] else 0 for b in range(256))
MOVE_PAIRS = 4096


#: at most this many alive runs folded by deltas passed over to the tombstones beyond
#: them, looking for the text an undo, a redo or a restore copied (see TextTrack.gap),
#: and at most COPY_WORK pairs of characters compared where the copy is not the deleted
#: text or a part of it (difflib: ~20 ms)
GAP_FLOAT = 256
COPY_WORK = 1 << 20
#: bytes (or runs) looked at in Python between two pauses of a copy's matching
MATCH_STEP = 1 << 14
MATCH_RUNS = 256
#: the kinds of events that may copy deleted text (Copies.of)
COPY_KINDS = frozenset(("undo", "redo", "revert", "restore"))


class Copies:
    """What an undo, a redo or a restore inserted that is a copy of deleted text. Yjs
    cannot bring a deleted item back: an undo (or redo) inserts a copy of what it
    restores, next to the original (the deleted items stay where they were, as
    tombstones), and a restore inserts the text of the old version where its
    difference to the current one is. Such a copy keeps its writers in blame, as text
    moved does: the event's inserts are matched, in order, with the text deleted
    around them (in the stretch between the two characters alive on each side, see
    :meth:`TextTrack.gap`) that the event brings back (`source`: for an undo or a redo,
    text deleted by the events it reverts; for a restore, text alive at the version it
    restores), and each character matched is written by whoever wrote the one it
    copies. Both folds (by ids and by deltas) find the same stretches, wherever within
    them each put the copy. An XML node brought back whole is matched with the deleted
    node beside it (attribution_xml.copy_children; `inner`: which text inside a node
    taken out whole it brings back)."""

    __slots__ = ("seq", "source", "inner", "spots", "later", "moves", "anywhere")

    def __init__(
        self,
        seq: int,
        source: Callable[[list[Any]], bool],
        inner: Callable[[list[Any]], bool],
        *,
        moves: bool = True,
        anywhere: bool = False,
    ) -> None:
        self.seq = seq
        self.source = source
        self.inner = inner
        #: whether what the stretches around the inserts did not match is looked for in
        #: the whole text too (an undo's or a redo's: the text its reverted events
        #: deleted, wherever it lies; a fold by deltas puts an earlier copy of the text
        #: around it before its tombstones, away from them)
        self.anywhere = anywhere
        #: whether the event's text deleted and inserted again is looked at as moved
        #: first: not a restore's, which deletes what a wrecker typed and inserts the
        #: version's text, the same letters maybe (it was taken for the wrecker's, moved)
        self.moves = moves
        #: where each insert is: (text, alive bytes before it, or the run it is)
        self.spots: list[tuple[TextTrack, int, list[Any] | None]] = []
        #: what else to settle (an XML element's children brought back): each a call,
        #: or a call whose steps (an iterator) are taken with pauses between
        self.later: list[Callable[[], Iterator[None] | None]] = []

    @staticmethod
    def of(seq: int, kind: str, meta: Mapping[str, Any]) -> Copies | None:
        """The copies event `seq` of `kind` may make, or None (an edit makes none)."""
        if kind in COPY_KINDS and kind != "restore":
            reverts = meta.get("reverts")
            if isinstance(reverts, list) and reverts:
                seqs = frozenset(int(x) for x in reverts if isinstance(x, int))
                return Copies(
                    seq,
                    lambda r: r[3] in seqs,
                    lambda r: not r[3] or r[3] in seqs,
                    anywhere=True,
                )
        elif kind == "restore":
            v = meta.get("restores")
            if isinstance(v, int) and not isinstance(v, bool):
                return Copies(
                    seq,
                    lambda r: r[2] <= v < r[3],
                    lambda r: r[2] <= v and (not r[3] or v < r[3]),
                    moves=False,
                )
        return None

    def at(self, track: TextTrack, pos: int) -> None:
        """An insert after `pos` alive bytes of `track` (by deltas)."""
        self.spots.append((track, pos, None))

    def run(self, track: TextTrack, run: list[Any]) -> None:
        """An insert, run `run` of `track` (by ids)."""
        self.spots.append((track, -1, run))

    def settle(self) -> None:
        """Note the copies the event made (once its inserts and deletes are folded, and
        its moves noted: text moved is not looked at again)."""
        for _ in self.settle_steps():
            pass

    def settle_steps(self) -> Iterator[None]:
        """settle(), a pause (a yield) after each stretch matched: an undo or a restore
        of a long text makes many, 0.8 s of matching in one piece on the event loop for
        a 1.3 MB manuscript's restore, while its authors waited to open it (see
        AttributionIndex.fold_sliced)."""
        seq = self.seq
        covered: set[int] = set()  # the runs of the stretches looked at (by id())
        left: dict[int, TextTrack] = {}  # the texts where an insert was not all matched
        for track, pos, run in self.spots:
            bi, ri = self.where(track, pos, run)
            block = track.blocks[bi]
            at = block[ri] if ri < len(block) else block[ri - 1] if ri else None
            if at is not None and id(at) in covered:
                yield  # (finding an insert's run: the undo of a restore makes thousands)
                continue  # (one stretch, many inserts: an undo of a long delete)
            runs = yield from track.gap_steps(bi, ri, seq)
            yield
            orig: list[list[Any]] = []
            for j in range(0, len(runs), MATCH_STEP):
                part = runs[j : j + MATCH_STEP]
                covered.update(map(id, part))
                orig += [r for r in part if r[3] and r[3] != seq and self.source(r)]
                yield
            yield from self.match_steps(track, runs, track, orig)
            yield
            if self.anywhere and id(track) not in left and self._left(track, runs):
                left[id(track)] = track
        for track in left.values():  # (what is left, against the text's other tombstones)
            made: list[list[Any]] = []
            orig = []
            for j, run in enumerate(track.runs()):
                if j % MATCH_STEP == MATCH_STEP - 1:
                    yield
                if run[2] == seq and not run[3]:
                    made.append(run)
                elif run[3] and run[3] != seq and id(run) not in covered and self.source(run):
                    orig.append(run)
            yield from self.match_steps(track, made, track, orig)
            yield
        for settle in self.later:
            steps = settle()
            if steps is not None:
                yield from steps
            yield

    def _left(self, track: TextTrack, runs: list[list[Any]]) -> bool:
        """Whether some of what this event inserted among `runs` is neither moved nor
        matched as a copy."""
        seq = self.seq
        return any(
            m is None
            for run in runs
            if run[2] == seq and not run[3] and run[1]
            for _, _, m in _cut(track.moved, run[0], run[1])
        )

    @staticmethod
    def where(track: TextTrack, pos: int, run: list[Any] | None = None) -> tuple[int, int]:
        """The block and run of an insert: `run` (by ids), or after `pos` alive bytes."""
        if run is not None:
            return track.where_run(run)
        bi, ri, _ = track._find(pos)
        return bi, ri

    def match(
        self, track: TextTrack, runs: list[list[Any]], src: TextTrack, orig: list[list[Any]]
    ) -> None:
        """Match what this event inserted among `runs` of `track` (not moved) with the
        runs `orig` of `src`, in order, whole characters; note the writers of each
        character matched."""
        for _ in self.match_steps(track, runs, src, orig):
            pass

    def match_steps(
        self, track: TextTrack, runs: list[list[Any]], src: TextTrack, orig: list[list[Any]]
    ) -> Iterator[None]:
        """:meth:`match`, a pause (a yield) after every MATCH_STEP bytes or so of work
        done in Python and every search of the deleted text: the undo of a restore that
        took out half a book copies 0.6 M characters, matched with 1.1 MB of text in one
        piece on the event loop for 3-6 s (docs/history.md)."""
        seq, content = self.seq, track.content
        made: list[tuple[int, int]] = []  # (first byte, bytes) inserted, not moved
        for j, run in enumerate(runs):
            if run[2] == seq and not run[3] and run[1]:
                made += [(at, k) for at, k, m in _cut(track.moved, run[0], run[1]) if m is None]
            if j % MATCH_RUNS == MATCH_RUNS - 1:
                yield
        if not made or not orig:
            return
        new = b"".join([content[at : at + k] for at, k in made])
        old = b"".join([src.content[r[0] : r[0] + r[1]] for r in orig])
        yield
        blocks = yield from _matched_steps(new, old)  # (byte in new, byte in old, bytes)
        if not blocks:
            return
        writers: list[int] = []  # who wrote each byte of `old`
        for r in orig:
            for at in range(r[0], r[0] + r[1], MATCH_STEP):
                writers += src.writers(at, min(MATCH_STEP, r[0] + r[1] - at), r[2])
                yield
        at_new: list[int] = []  # the first byte of each byte of `new`
        for at, k in made:
            at_new += range(at, at + k)
            if k > MATCH_STEP:
                yield
        yield
        for lo, from_, n in blocks:
            hi = lo + n
            k = lo
            while k < hi:  # (stretches of consecutive first bytes: one note each)
                e = k + 1
                while e < hi and at_new[e] == at_new[e - 1] + 1:
                    e += 1
                    if (e - k) % MATCH_STEP == 0:
                        yield
                yield from track.note_moved_steps(
                    at_new[k], writers[from_ + k - lo : from_ + e - lo], copy=True
                )
                yield  # (a copy in many pieces: each note inserts into a long list)
                k = e


def _matched(new: bytes, old: bytes) -> list[tuple[int, int, int]]:
    """Where the bytes of `new` are in `old`: see _matched_steps."""
    steps = _matched_steps(new, old)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _matched_steps(new: bytes, old: bytes) -> Generator[None, None, list[tuple[int, int, int]]]:
    """Where the bytes of `new` (what an event inserted) are in `old` (the deleted text
    it may copy), in order, whole characters: (byte in new, byte in old, bytes) blocks,
    each the longest next part of `new` found in `old` after the last (a long undo's
    pieces, a restore's); difflib where that leaves characters out and the texts are
    short. Depends on the two texts only, not on how the runs cut them. UTF-8 is
    self-synchronizing: a find starts on a character. A pause (a yield) after each
    search of `old` and every MATCH_STEP bytes of `new` looked at in Python."""
    part = old.find(new)
    if part >= 0:  # the copy of a delete, or of a part of it
        return [(0, part, len(new))]
    yield
    blocks: list[tuple[int, int, int]] = []
    bounds = yield from _char_starts(new)  # characters, and the end
    c = cursor = work = 0  # c: the character of `new` to match next
    while c < len(bounds) - 1 and work < COPY_WORK * 16:
        i = bounds[c]
        lo, hi = c, len(bounds) - 1  # the longest prefix found ends at character lo
        while lo < hi:
            mid = (lo + hi + 1) // 2
            work += len(old) - cursor
            found = old.find(new[i : bounds[mid]], cursor) >= 0
            yield
            if found:
                lo = mid
            else:
                hi = mid - 1
        if lo == c:
            c += 1  # a character of no copy
            if c % MATCH_STEP == 0:
                yield
            continue
        n = bounds[lo] - i
        at = old.find(new[i : i + n], cursor)
        yield
        blocks.append((i, at, n))
        cursor, c = at + n, lo
    if sum(n for _, _, n in blocks) == len(new):
        return blocks
    # (counted before the characters are listed: a book's would be millions of objects)
    n_old = len(old) if old.isascii() else len(old.decode("utf-8", "surrogateescape"))
    if (len(bounds) - 1) * n_old > COPY_WORK:
        return blocks  # (what the parts found: the rest is the copier's)
    a, b = _chars(new), _chars(old)
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    a_at, b_at = _offsets(a), _offsets(b)
    return [(a_at[i], b_at[j], a_at[i + n] - a_at[i]) for i, j, n in sm.get_matching_blocks() if n]


def _char_starts(data: bytes) -> Generator[None, None, Sequence[int]]:
    """The byte each UTF-8 character of `data` starts at, and the end (a pause after
    every MATCH_STEP bytes; nothing to list for ASCII)."""
    if data.isascii():
        return range(len(data) + 1)
    out: list[int] = []
    for lo in range(0, len(data), MATCH_STEP):
        out += [k for k in range(lo, min(lo + MATCH_STEP, len(data))) if data[k] & 0xC0 != 0x80]
        yield
    out.append(len(data))
    return out


def _chars(data: bytes) -> list[bytes]:
    """UTF-8 bytes as whole characters."""
    return [c.encode("utf-8", "surrogateescape") for c in data.decode("utf-8", "surrogateescape")]


def _offsets(chars: list[bytes]) -> list[int]:
    """The byte each character starts at, and the end."""
    out = [0]
    for c in chars:
        out.append(out[-1] + len(c))
    return out


def _cut(ranges: list[list[int]], start: int, n: int) -> list[tuple[int, int, list[int] | None]]:
    """Bytes start..start+n cut where `ranges` ([first byte, bytes, ...], by first byte,
    none overlapping) begin and end: (first byte, bytes, the range that holds them or
    None)."""
    out: list[tuple[int, int, list[int] | None]] = []
    at, end = start, start + n
    for j in range(max(bisect_right(ranges, [start, 1 << 62]) - 1, 0), len(ranges)):
        m = ranges[j]
        if m[0] >= end:
            break
        lo, hi = max(m[0], at), min(m[0] + m[1], end)
        if lo >= hi:
            continue
        if lo > at:
            out.append((at, lo - at, None))
        out.append((lo, hi - lo, m))
        at = hi
    if at < end:
        out.append((at, end - at, None))
    return out


class Moves:
    """What one event inserted and deleted in a document's texts. Editors move text by
    deleting it and inserting it again, in one transaction: y-prosemirror when Enter
    splits a paragraph or Backspace joins two, Lexical also when a format splits a
    text node, CodeMirror and Monaco when a line moves up or down. Such text keeps its
    writers in blame: each deleted stretch (the bytes the event deleted from a text, in
    the text's order, or the text of a node it took out; an embed in it needs no
    match) that parts of the event's inserted text cover entirely, each byte once, is
    moved; each such part keeps its writers. Typing over a selection is not a
    move (the typed text covers only part of it, and a single character counts only
    as the last of a stretch); pasting the very text over it is, and keeps its writers
    too, as does the old part of an indent made deeper (the added spaces are typed).
    Within bounds of work (MOVE_BYTES, MOVE_PAIRS, MOVE_WORK)."""

    __slots__ = ("inserted", "placed", "gone", "deleted", "size", "work")

    def __init__(self) -> None:
        #: (text, first byte, bytes) of each insert, in the text's order (the order
        #: decides which of two equal stretches a part is taken from: the folds by ids
        #: and by deltas must agree)
        self.inserted: list[tuple[TextTrack, int, bytes]] = []
        #: (by ids) the run of each insert, to put them in the text's order
        self.placed: list[Any] = []
        #: (text, the runs one delete marked, in the text's order) of each delete
        self.gone: list[tuple[TextTrack, list[tuple[int, int, int]]]] = []
        #: each deleted stretch (made by :meth:`settle`): its bytes (embeds included:
        #: they count as matched), its text and runs
        self.deleted: list[tuple[bytes, TextTrack, list[tuple[int, int, int]]]] = []
        self.size = 0  # bytes deleted so far
        self.work = 0  # bytes read searching

    def inserted_bytes(self) -> int:
        """The text the event inserted, embeds left out."""
        return sum(len(data) - data.count(EMBED) for _, _, data in self.inserted)

    def gone_text(self, track: TextTrack, gone: list[tuple[int, int, int]]) -> None:
        """One delete of a text's characters (`gone`: the runs it marked); read only if
        the event inserted text too (a keystroke's delete is not)."""
        self.size += sum(n for _, n, _ in gone)
        self.gone.append((track, gone))

    def settle(self, seq: int) -> None:
        """Note the moves of event `seq` in the texts they were inserted into."""
        if not self.gone or not self.inserted or self.size > MOVE_BYTES:
            return
        typed = self.inserted_bytes()
        for track, gone in self.gone:
            content = track.content
            data = b"".join([content[s : s + n] for s, n, _ in gone])
            # (more text than the event inserted cannot be all moved: typing over a
            # long selection is dropped here, before any search)
            if 0 < len(data) - data.count(EMBED) <= typed:
                self.deleted.append((data, track, gone))
        if not self.deleted or len(self.deleted) * len(self.inserted) > MOVE_PAIRS:
            return
        covered = [bytearray(d.translate(_EMBEDS)) for d, _, _ in self.deleted]
        # each text's inserts joined, in the text's order: how an update cut them into
        # pieces (structs by ids, ops by deltas) must not change what is found
        texts: dict[int, tuple[TextTrack, bytearray, list[tuple[int, int, int]]]] = {}
        for track, start, data in self.inserted:
            _, joined, segments = texts.setdefault(id(track), (track, bytearray(), []))
            segments.append((len(joined), start, len(data)))
            joined += data
        found: list[tuple[TextTrack, list[tuple[int, int, int]], int, int, int, int]] = []
        for track, joined, segments in texts.values():
            off = 0
            for piece in bytes(joined).split(EMBED):
                if self.work > MOVE_WORK:
                    return
                for at_piece, i, at, n in self._parts(piece, covered):
                    covered[i][at : at + n] = b"\x01" * n
                    found.append((track, segments, off + at_piece, i, at, n))
                off += len(piece) + 1
        writers: dict[int, list[int]] = {}  # who wrote each byte of a stretch moved
        for track, segments, off, i, at, n in found:
            if not all(covered[i]):  # (parts never overlap: each byte matched once)
                continue
            if i not in writers:
                _, source, gone = self.deleted[i]
                writers[i] = [w for s, k, ins in gone for w in source.writers(s, k, ins)]
            for seg_off, start, length in segments:  # (a part may span two inserts)
                lo, hi = max(off, seg_off), min(off + n, seg_off + length)
                if lo < hi:
                    track.note_moved(
                        start + lo - seg_off, writers[i][at + lo - off : at + hi - off]
                    )
        for i in writers:  # each stretch moved: its delete was a move's too
            _, source, gone = self.deleted[i]
            for s, k, _ in gone:
                source.note_moved_away(s, k)

    def _free(self, i: int, sub: bytes, covered: list[bytearray]) -> int:
        """Where `sub` is in stretch i on bytes not matched yet, or -1."""
        stretch, c = self.deleted[i][0], covered[i]
        self.work += len(stretch)
        at = stretch.find(sub)
        while at >= 0:
            if not any(c[at : at + len(sub)]):
                return at
            self.work += len(stretch)
            at = stretch.find(sub, at + 1)
        return -1

    def _parts(self, piece: bytes, covered: list[bytearray]) -> Iterator[tuple[int, int, int, int]]:
        """Where an inserted piece's text was deleted: (its byte in the piece, the
        stretch, its byte there, bytes), the longest part first, whole characters, on
        bytes of the stretch not matched yet (`covered`); parts found in no stretch
        (typed) are left out. A part of one character counts only if it is all that is
        left of its stretch (the newline of a line moved), not any letter of it (typing
        "t" over "the" is no move). Of stretches that hold as long a part, one that is
        all of it, then one not used yet, is taken: "line 1" is the stretch "line 1",
        not the start of "line 10"."""
        # (a join takes text from two paragraphs into one insert: several stretches)
        bounds = [k for k in range(len(piece) + 1) if k == len(piece) or piece[k] & 0xC0 != 0x80]
        pos = 0  # index into bounds
        while pos < len(bounds) - 1:
            best: tuple[int, bool, bool, int, int] | None = None  # (end, all, new, i, at)
            for i, (stretch, _, _) in enumerate(self.deleted):
                lo, hi = pos, len(bounds) - 1
                if self._free(i, piece[bounds[pos] :], covered) >= 0:  # (all the rest)
                    lo = hi
                while lo < hi:  # the longest prefix found: a shorter one is found too
                    mid = (lo + hi + 1) // 2
                    if self._free(i, piece[bounds[pos] : bounds[mid]], covered) >= 0:
                        lo = mid
                    else:
                        hi = mid - 1
                if self.work > MOVE_WORK:
                    return
                if lo == pos:
                    continue
                n = bounds[lo] - bounds[pos]
                left = covered[i].count(0)
                if lo == pos + 1 and left != n:
                    continue  # one character, and more of the stretch left: typed
                key = (lo, n == len(stretch), left == len(stretch), i)
                if best is None or key[:3] > best[:3]:
                    best = (*key, self._free(i, piece[bounds[pos] : bounds[lo]], covered))
            if best is None:
                pos += 1  # a character typed, not moved
                continue
            end, _, _, i, at = best
            yield bounds[pos], i, at, bounds[end] - bounds[pos]
            pos = end


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a synchronous pass that makes many
    acyclic objects (the runs of an index, the answer of a blame): its collections,
    triggered by the allocations and scanning every run each time, otherwise cost more
    than the pass itself (measured on automerge-paper: a blame 180 -> 65 ms, reading a
    stored index back 140 -> 60 ms). Nothing awaits inside, so nothing else runs on the
    loop; a worker thread's pass (rich_diff) pauses it for the process meanwhile, and
    whichever pass found it enabled enables it again, so overlapping passes leave it on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _is_native_type(value: Any) -> bool:
    """Whether a native text event's embed is a shared type (not JSON, as Quill's are):
    one of pycrdt's native types (process_event, which wraps them, keys on the same)."""
    return type(value) in base_types


def _alive_at(run: list[int], seq: int) -> bool:
    return run[2] <= seq and (run[3] == 0 or run[3] > seq)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\x1a", "\ufffc")


#: roots to track: text roots by name, or name -> kind (TEXT or XML)
Roots = Iterable[str] | Mapping[str, str]


def root_kinds(roots: Roots) -> dict[str, str]:
    """Roots to track, name -> kind (TEXT or XML); a plain list names text roots."""
    if isinstance(roots, Mapping):
        return {str(n): str(k) for n, k in roots.items()}
    return dict.fromkeys(roots, TEXT)


class AttributionIndex:
    """The attribution of one document's text and XML roots, folded up to `seq`."""

    def __init__(
        self,
        doc: str,
        roots: Roots,
        *,
        ydoc: Doc[Any] | None = None,
        by_ids: bool = True,
        fixes: Mapping[int, bytes | None] | None = None,
    ) -> None:
        from .attribution_ids import IdFold
        from .attribution_xml import XmlTrack

        kinds = root_kinds(roots)

        self.doc_name = doc
        #: the document the index folds (`ydoc`: one already at the index's seq, when a
        #: stored index is read back, see attribution_codec)
        self.doc: Doc[Any] = Doc(skip_gc=True) if ydoc is None else ydoc
        self.tracks: dict[str, TextTrack] = {}
        #: the XML roots' trees (attribution_xml): folded by their deep events, each
        #: event a transaction of its own, so an index with one never folds by ids
        self.xml: dict[str, XmlTrack] = {}
        #: the text roots that hold shared types (Lexical's paragraphs): their trees
        #: (attribution_xml), each rooted at the root's track, from their first such
        #: embed folded by deep events
        self.trees: dict[str, XmlTrack] = {}
        self._growing: list[tuple[str, XmlTrack, list[Any]]] = []  # (see _grow_tree)
        self._xml_checked = -1  # the seq check_xml last looked at
        #: the actor of each seq from `first` on (interned: a few distinct names)
        self.actors: list[str] = []
        self.first = 0
        #: the seq the index started from: a compacted log's base (start_from), or 0.
        #: Another base in the store means the log was compacted since, and the index
        #: still names the writers of the folded events: it is built again
        self.base = 0
        self.seq = 0
        self.failed = 0
        #: roots seen with nothing visible yet: their type is still unknown
        self.pending: set[str] = set()
        self._cur = 0
        #: the copies the event being folded may make (an undo's, a redo's, a restore's)
        self._copies: Copies | None = None
        #: while folding by slices: the text deltas of the transaction being applied,
        #: folded once it is over, a pause between slices of them (see fold_sliced)
        self._deferred: list[Iterator[None]] | None = None
        #: (by ids, folding by slices) large updates decoded in a worker thread, by seq
        self._decoded: dict[int, Any] = {}
        self._seen: set[str] = set(kinds)
        #: keep the subscriptions alive. Their callbacks hold the index only weakly (see
        #: _observe): the document holds them, out of the cyclic collector's sight, so a
        #: strong reference would keep every index and its document forever
        self._subs: list[Any] = []
        #: events that break the document as logged (errors.DocumentBroken): seq -> the
        #: update applied instead (None: left out), as a load applies them
        #: (snapshots.load); folded by deltas
        self.fixes = Fixes(fixes or {})
        #: folding by ids (attribution_ids) while this is set: from an empty document only
        by_ids = by_ids and ydoc is None and XML not in kinds.values() and not self.fixes
        self._ids: IdFold | None = IdFold(self.tracks) if by_ids else None
        #: events folded by ids, for logs and tests
        self.by_ids = 0
        #: pauses of fold_sliced, for tests (one event of many ops is folded in several)
        self.slices = 0
        #: the runs no longer mirror the document (attribution_ids.Broken): build again
        self.broken = False
        #: whether the text must be compared with the document's (verify): after
        #: concurrent inserts were placed by ids
        self._unchecked = self._ids is not None
        for name, kind in sorted(kinds.items()):
            if kind == XML:
                self.adopt_xml(name, XmlTrack())
            else:
                self.adopt(name, TextTrack())

    def roots(self) -> dict[str, str]:
        """The roots tracked, name -> kind."""
        return {**dict.fromkeys(self.tracks, TEXT), **dict.fromkeys(self.xml, XML)}

    def adopt_xml(self, name: str, track: XmlTrack) -> None:
        """Track XML root `name` with `track` (new, or read back with the index)."""
        self._to_deltas("an XML root is tracked")
        self.xml[name] = track
        ref = weakref.ref(self)

        def on_xml(events: list[Any]) -> None:
            index = ref()
            if index is not None:
                track.apply(events, index._cur, index._copies)

        self._subs.append(self.doc.get(name, type=XmlFragment).observe_deep(on_xml))

    def tree_roots(self) -> list[tuple[str, XmlTrack, Any]]:
        """Each tree followed (attribution_xml): (root name, tree, the document's root),
        XML roots' and those of text roots holding shared types."""
        out: list[tuple[str, XmlTrack, Any]] = []
        out += [(n, t, self.doc.get(n, type=XmlFragment)) for n, t in self.xml.items()]
        out += [(n, t, self.doc.get(n, type=Text)) for n, t in self.trees.items()]
        return out

    def check_xml(self) -> None:
        """Stop serving the attribution of an XML root whose tree at head is not the
        document's (its answers then carry no names, as before XML was attributed).
        A walk of every tree: only when events were folded since the last look."""
        if self._xml_checked == self.seq:
            return
        self._xml_checked = self.seq
        for name, track, real in self.tree_roots():
            if track.failed is None and not track.matches(real):
                track.failed = f"the tree at seq {self.seq} differs from the document's"
            if track.failed is not None and not track.told:
                log.warning("attribution of %s/%s: %s", self.doc_name, name, track.failed)
                track.told = True

    def adopt(self, name: str, track: TextTrack, tree: XmlTrack | None = None) -> None:
        """Track root `name` with `track` (new, or read back with the index, with its
        `tree` if it holds shared types)."""
        if tree is not None:
            self._to_deltas("a text holds shared types")
            self.tracks[name] = track
            self._follow_tree(name, tree)
            self._observe(name, track)
            return
        self.tracks[name] = track
        if self._ids is not None:
            if self.seq:  # its earlier items were not placed: from here, by deltas
                self._to_deltas("a root tracked after the first event")
            else:
                self._ids.adopt(track)
                return
        self._observe(name, track)

    def _observe(self, name: str, track: TextTrack) -> None:
        # The callback holds the index weakly: the document (yrs) holds the callback
        # where the cyclic garbage collector cannot see it, so a reference to the index
        # from here would make index -> document -> callback -> index a cycle nothing
        # frees (an index dropped from the cache, refused or built again, a range diff's:
        # each kept its runs and its document, ~120 MB for automerge-paper's).
        ref = weakref.ref(self)

        def on_text(e: Any) -> None:
            index = ref()
            if index is None or name in index.trees:
                return  # (followed by its deep events)
            delta = e.delta
            inserts = deletes = False
            for op in delta:  # (a loop, not any(): this runs for every event folded)
                value = op.get("insert")
                if value is None:
                    deletes = deletes or "delete" in op
                    continue
                if type(value) is not str and _is_native_type(value):
                    index._grow_tree(name, track, delta)
                    return
                inserts = True
            steps = _text_steps(track, delta, index._cur, index._copies, inserts and deletes)
            if index._deferred is not None:  # (folded by slices: after the transaction)
                index._deferred.append(steps)
            else:
                for _ in steps:
                    pass

        # the native event, not pycrdt's wrapper: the wrapper also computes the event's
        # path, target and transaction, which costs ~40% more on a long fold
        text = self.doc.get(name, type=Text)
        self._subs.append(text.integrated.observe(on_text))

    def _grow_tree(self, name: str, track: TextTrack, delta: list[dict[str, Any]]) -> None:
        """Text root `name` got its first shared type (in `delta`, this event's native
        one): from here it is a tree (attribution_xml), its root node on `track`, its
        nodes built once the transaction is over (:meth:`_grown`)."""
        from .attribution_xml import XmlTrack, XNode, apply_text

        root = XNode(None)
        root.track = track
        tree = XmlTrack(root)
        self.trees[name] = tree
        later: list[Any] = []
        apply_text(root, delta, self._cur, 0, later=later)
        self._growing.append((name, tree, later))

    def _grown(self) -> None:
        """Build the nodes of the trees that grew in the transaction just applied, and
        follow their deep events from the next one."""
        from .attribution_xml import build_later

        growing, self._growing = self._growing, []
        for name, tree, later in growing:
            try:
                build_later(later, self._cur, lambda v: process_event(v, self.doc))
            except Exception as e:  # XmlBroken and whatever building a node raised
                tree.failed = f"event {self._cur}: {e!r}"
            self._follow_tree(name, tree)

    def _follow_tree(self, name: str, tree: XmlTrack) -> None:
        """Fold text root `name`'s deep events into `tree`."""
        self.trees[name] = tree
        track = self.tracks[name]
        ref = weakref.ref(self)  # (see _observe)

        def on_deep(events: list[Any]) -> None:
            index = ref()
            if index is None:
                return
            if tree.failed is None:  # (the root's delta first: its track stays whole)
                tree.apply(events, index._cur, index._copies)
                return
            for e in events:  # a tree that stopped: the root's characters go on
                if not e.path:
                    track.apply_delta(e.delta, index._cur, copies=index._copies)

        self._subs.append(self.doc.get(name, type=Text).observe_deep(on_deep))

    @property
    def folds_by_ids(self) -> bool:
        """Whether the next events are folded by ids (attribution_ids), not by deltas."""
        return self._ids is not None

    def _to_deltas(self, why: str) -> None:
        """Fold by text deltas from here on (the runs so far mirror the document)."""
        if self._ids is None:
            return
        log.info("attribution of %s folds by deltas from event %d: %s", self.doc_name,
                 self.seq + 1, why)  # fmt: skip
        self._ids = None
        for name, track in self.tracks.items():
            track.leave_ids()
            self._observe(name, track)

    async def start_at(
        self,
        seq: int,
        state: bytes,
        *,
        paced: bool = False,
        busy: Callable[[], bool] | None = None,
        hurry: Callable[[], bool] | None = None,
    ) -> None:
        """Start from a compacted log's base snapshot, the state at `seq`: its text
        counts as written at `seq`, by nobody known. Folded by ids when the index folds
        by ids (the state is an update from an empty document, its structs put in an
        order of integration first), so that the events after it are too: by deltas,
        each walks the text from its start (51,636 events after the base of a 1.3 MB
        manuscript took 147 s by deltas, against 16 s for all 101,636 by ids). In slices
        (fold_sliced), like any event; by deltas (start_from) when the fold by ids does
        not follow the state."""
        if self._ids is None or self.seq:
            self.start_from(seq, state)
            return
        from .yupdate import Unsupported, decode_causal

        try:
            self._decoded[seq] = await cpu_account.to_thread(decode_causal, state)
        except Unsupported as e:
            log.info("attribution of %s: its base at %d is folded by deltas: %s",
                     self.doc_name, seq, e)  # fmt: skip
            self.start_from(seq, state)
            return
        self.base = seq
        # one event, by nobody known ("" names nobody, as start_from's); if the fold by
        # ids gives way after all, fold_sliced folds it by deltas, the same way
        await self.fold_sliced([Event(self.doc_name, seq, 0, "", "base", state, {})],
                               paced=paced, busy=busy, hurry=hurry)  # fmt: skip

    def start_from(self, seq: int, state: bytes) -> None:
        """Start from the state at `seq` (a compacted log's base snapshot, or the first
        version of a range diff) by text deltas: its text counts as written at `seq`, by
        nobody known."""
        self.seq = seq  # (for the log line: the events by deltas are those after it)
        self._to_deltas("it starts from a snapshot")
        self._cur = seq
        self._note(seq, "")
        self.base = seq
        self.doc.apply_update(state)
        if self._growing:
            self._grown()
        self.seq = seq

    def fold(self, events: list[Event]) -> None:
        with gc_paused():
            for _ in self._fold_steps(events):
                pass

    async def fold_sliced(
        self,
        events: list[Event],
        *,
        paced: bool = False,
        busy: Callable[[], bool] | None = None,
        hurry: Callable[[], bool] | None = None,
    ) -> None:
        """Fold `events` in slices of about SLICE_SECONDS, yielding to the event loop after
        each; `paced` (background work): sleeping as long as the slice took, so that it
        takes at most half of the CPU from whatever else runs. `busy` (background work
        too): while it says edits are being made, slices of BUSY_SLICE_SECONDS and
        pauses of BUSY_PAUSE times the slice, so that an edit arriving during a slice
        waits less, and fewer edits do. The CPU time of the folding is charged to the
        task's CPU account, if any (server.cpu_account). `hurry`: while it says someone
        waits for this index, no pause between slices (not paced, not busy).

        A slice ends between two events, or inside one event's fold (its text deltas,
        or its ranges folded by ids, DELTA_STEP at a time): one event may be a whole
        document's worth of ops (a replace-all, a delete of every other character),
        which took seconds on the loop in one piece. What yrs does with the update
        (applying it) is one piece still. Meanwhile the index answers the seqs before
        the event being folded; `seq` is still the last event folded whole."""
        if self._ids is not None:  # (decoding a large update is one piece: off the loop)
            from .yupdate import Unsupported, decode

            for ev in events:
                if len(ev.update) > DECODE_ON_LOOP_BYTES and ev.seq not in self._decoded:
                    with contextlib.suppress(Unsupported):
                        self._decoded[ev.seq] = await cpu_account.to_thread(decode, ev.update)
        steps = self._fold_steps(events, sliced=True)
        done = False
        try:
            while not done:
                urgent = hurry is not None and hurry()
                busy_now = not urgent and busy is not None and busy()
                target = BUSY_SLICE_SECONDS if busy_now else SLICE_SECONDS
                t0 = time.perf_counter()
                with cpu_account.on_loop(), gc_paused():
                    for _ in steps:
                        self.slices += 1
                        if time.perf_counter() - t0 >= target:
                            break
                    else:
                        done = True
                dt = time.perf_counter() - t0
                if not done:
                    pause = dt * (BUSY_PAUSE if busy_now else 1) if paced and not urgent else 0
                    await asyncio.sleep(pause)
        finally:
            if not done:  # (cancelled: an event may be half folded)
                steps.close()
            self._decoded.clear()

    def _fold_steps(self, events: list[Event], sliced: bool = False) -> Generator[None, None, None]:
        """Fold `events`, a pause (a yield) after each event and, `sliced`, inside the
        fold of one with many ops (see fold_sliced)."""
        done = 0
        while done < len(events):
            if self._ids is not None:
                done += yield from self._fold_steps_by_ids(events[done:], sliced)
            if done < len(events) and self._ids is None:
                for ev in events[done:]:
                    yield from self._fold_event(ev, sliced)
                    yield
                return

    def _fold_event(self, ev: Event, sliced: bool) -> Iterator[None]:
        """Fold one event by its text deltas."""
        self._cur = ev.seq
        self._note(ev.seq, ev.actor)
        self._copies = copies = Copies.of(ev.seq, ev.kind, ev.meta)
        update = self.fixes.update_of(ev)
        whole = False
        try:
            if update is not None:
                self._deferred = [] if sliced else None
                try:
                    self.doc.apply_update(update)
                    deferred = self._deferred or []
                finally:
                    self._deferred = None
                for steps in deferred:
                    yield from steps
            if copies is not None:
                for _ in copies.settle_steps():
                    if sliced:
                        yield
            whole = True
        except FATAL:
            raise
        except GeneratorExit:
            raise
        except BaseException as e:  # pyo3 PanicException is one
            if panicked(e):  # the document is broken: the cache builds it again
                raise DocumentBroken(ev, e) from None
            # the same event fails in every fold (see room.replay); an error from our
            # own delta reading would surface here too: say so
            log.error("attribution of %s: event %d: %r", self.doc_name, ev.seq, e)
            self.failed += 1
            whole = True
        finally:
            self._copies = None
            if not whole:  # (given up half folded: the cache builds it again)
                self.broken = True
        if self._growing:
            self._grown()
        self.seq = ev.seq

    def _fold_steps_by_ids(self, events: list[Event], sliced: bool) -> Generator[None, None, int]:
        """Fold `events` by ids while that holds; returns how many were folded (a
        pause after each batch, and, `sliced`, inside a large one's fold)."""
        try:
            done = 0
            while done < len(events) and self._ids is not None:
                n, big = self._fold_by_ids(events[done:], sliced)
                done += n
                if big is not None:
                    yield from big
                    big = None
                yield
            return done
        except DocumentBroken:
            raise
        except GeneratorExit:
            self.broken = True
            raise
        except BaseException as e:  # pyo3 PanicException is one (its transaction's commit)
            if not panicked(e):
                raise
            if isinstance(e.__context__, DocumentBroken):
                raise e.__context__ from None
            [ev] = [ev for ev in events if ev.seq == self._cur] or events[:1]
            raise DocumentBroken(ev, e) from None

    def _fold_by_ids(
        self, events: list[Event], sliced: bool = False
    ) -> tuple[int, Iterator[None] | None]:
        """Fold `events` by ids while that holds; how many were folded. With no text
        observer to feed, they apply to the document in one transaction. `sliced`: an
        event of more than DELTA_STEP structs and ranges, or a long copy, ends the batch,
        applied to the document alone, its runs then folded by the steps returned (after
        the transaction: nothing waits on the document meanwhile)."""
        from .attribution_ids import Broken
        from .yupdate import Unsupported

        ids = self._ids
        assert ids is not None
        done = 0
        big: tuple[Event, Any, Any] | None = None
        with self.doc.transaction() as txn:
            ytxn = txn._txn
            assert ytxn is not None
            for ev in events:
                try:
                    structs, deletes = ids.plan(ev.update, self._decoded.pop(ev.seq, None))
                except Unsupported as e:
                    why = str(e)
                    break
                if sliced and (
                    len(structs) + len(deletes) > DELTA_STEP
                    or (ev.kind in COPY_KINDS and sum(s.length for s in structs) > MATCH_STEP)
                ):  # (many ops, or a long copy to match: see Copies.match_steps)
                    if done:  # (a batch of its own, planned again: from what was decoded)
                        self._decoded[ev.seq] = (structs, deletes)
                        return done, None
                    big = (ev, structs, deletes)
                self._cur = ev.seq
                self._note(ev.seq, ev.actor)
                done += 1
                try:
                    self.doc._doc.apply_update(ytxn, ev.update)
                except FATAL:
                    raise
                except BaseException as e:  # pyo3 PanicException is one
                    if panicked(e):  # the document is broken: the cache builds it again
                        raise DocumentBroken(ev, e) from None
                    log.error("attribution of %s: event %d: %r", self.doc_name, ev.seq, e)
                    self.failed += 1
                    # what of it the document took is not known here
                    self._lose_ids("the event does not apply")
                    self.seq = ev.seq
                    return done, None
                if big is not None:
                    break
                try:
                    if ids.apply(structs, deletes, ev.seq, Copies.of(ev.seq, ev.kind, ev.meta)):
                        self._unchecked = True
                except Broken as e:
                    self._lose_ids(str(e))
                    self.seq = ev.seq
                    return done, None
                self.by_ids += 1
                self.seq = ev.seq
            else:
                return done, None
        if big is not None:
            return done, self._apply_by_ids(*big)
        # the transaction is over: the next event's delta is its own
        self._to_deltas(why)
        return done, None

    def _apply_by_ids(self, ev: Event, structs: Any, deletes: Any) -> Iterator[None]:
        """Fold the runs of one large event by ids (its update applied already), a
        pause every DELTA_STEP structs or ranges."""
        from .attribution_ids import Broken

        ids = self._ids
        assert ids is not None
        whole = False
        try:
            if (yield from ids.apply_steps(structs, deletes, ev.seq,
                                           Copies.of(ev.seq, ev.kind, ev.meta))):  # fmt: skip
                self._unchecked = True
            whole = True
        except Broken as e:
            self._lose_ids(str(e))
            self.seq = ev.seq
            return
        finally:
            if not whole and self._ids is not None:
                self.broken = True  # (given up half folded)
        self.by_ids += 1
        self.seq = ev.seq

    def _lose_ids(self, why: str) -> None:
        log.warning("attribution of %s by ids stopped at event %d (%s): to build again",
                    self.doc_name, self._cur, why)  # fmt: skip
        self.broken = True
        self._ids = None
        for track in self.tracks.values():
            track.leave_ids()

    def estimated_bytes(self) -> int:
        """About how much memory the index holds (the cache's byte budget): its runs
        (a run folded by ids carries its Yjs id and origins, and is held by id too), the
        bytes ever inserted, and its Yjs document, which keeps every deleted item (about
        DOC_BYTES_PER_BYTE per byte ever inserted). Measured on automerge-paper's, read
        back: ~8 MB of RSS, estimated 6.6 MB; built by ids: ~70 MB, estimated 61 MB."""
        per_run = RUN_BYTES_BY_IDS if self._ids is not None else RUN_BYTES
        runs = content = 0
        tracks: list[TextTrack] = list(self.tracks.values())
        for tree in (*self.trees.values(), *self.xml.values()):
            stack = [tree.root]
            while stack:
                node = stack.pop()
                stack.extend(node.kids.values())
                tracks.append(node.track)
        tracks = list({id(t): t for t in tracks}.values())  # (a text root's tree's root)
        for track in tracks:
            runs += sum(map(len, track.blocks))
            content += len(track.content)
        return runs * per_run + content * (1 + DOC_BYTES_PER_BYTE) + len(self.actors) * 8

    def verify(self) -> bool:
        """Whether the index can be served: not broken, and each text at the index's seq
        is the document's (compared in full after concurrent inserts were placed by ids,
        by length otherwise)."""
        if self.broken:
            return False
        full, self._unchecked = self._unchecked, False
        for name, track in self.tracks.items():
            ytext = self.doc.get(name, type=Text)
            if not full:
                if track.length != len(ytext):  # UTF-8 bytes, an embed counting one
                    return False
                continue
            text = str(ytext).encode()  # without the embeds
            content = track.content
            ours = b"".join([content[r[0] : r[0] + r[1]] for r in track.runs() if not r[3]])
            if ours.replace(EMBED, b"") != text.replace(EMBED, b""):
                return False
        return True

    def new_roots(self) -> dict[str, str]:
        """Roots untracked so far that turned out to be text or XML, name -> kind (the
        index is then rebuilt)."""
        untracked = [n for n in self.doc.keys() if n not in self.tracks and n not in self.xml]
        candidates = [n for n in untracked if n in self.pending or n not in self._seen]
        self._seen.update(untracked)
        if not candidates:
            return {}
        types = infer_root_types(self.doc, candidates)
        self.pending = (self.pending - set(candidates)) | {n for n, t in types.items() if t is None}
        return {n: t for n, t in sorted(types.items()) if t in (TEXT, XML)}

    def _note(self, seq: int, actor: str) -> None:
        if not self.actors:
            self.first = seq
        i = seq - self.first
        while len(self.actors) < i:  # seqs are gap-free; be safe anyway
            self.actors.append("")
        if i == len(self.actors):
            self.actors.append(sys.intern(actor))
        elif 0 <= i:
            self.actors[i] = sys.intern(actor)

    def actor(self, seq: int) -> str | None:
        i = seq - self.first
        # "": the text a compacted log's base holds, by nobody known (start_from)
        return (self.actors[i] or None) if 0 <= i < len(self.actors) else None

    # --- answers ---------------------------------------------------------------------

    def blame(self, root: str, seq: int) -> list[dict[str, Any]]:
        with gc_paused():
            return self._blame(root, seq)

    def _blame(self, root: str, seq: int) -> list[dict[str, Any]]:
        return track_blame(self.tracks[root], seq, self.actors, self.first)

    def blame_steps(self, root: str, seq: int) -> Generator[None, None, list[dict[str, Any]]]:
        """blame() as steps, for a walk in slices on the event loop (history.sliced):
        the index must not change meanwhile (the cache's lock held)."""
        return blame_steps(self.tracks[root], seq, self.actors, self.first)

    def diff_steps(self, root: str, a: int, b: int) -> Generator[None, None, list[dict[str, Any]]]:
        """diff() as steps (see blame_steps)."""
        return diff_steps(self.tracks[root], a, b, self.actor)

    def text_at(self, root: str, seq: int) -> str:
        track = self.tracks[root]
        content = track.content
        return _text(
            b"".join(bytes(content[r[0] : r[0] + r[1]]) for r in track.runs() if _alive_at(r, seq))
        )

    def diff(self, root: str, a: int, b: int) -> list[dict[str, Any]]:
        """Equal, inserted and deleted runs from seq a to seq b, inserts attributed to who
        inserted them, deletes to who deleted them."""
        with gc_paused():
            return self._diff(root, a, b)

    def _diff(self, root: str, a: int, b: int) -> list[dict[str, Any]]:
        return finish(diff_steps(self.tracks[root], a, b, self.actor))


def _text_steps(
    track: TextTrack, delta: list[dict[str, Any]], seq: int, copies: Copies | None, both: bool
) -> Iterator[None]:
    """Fold a text root's delta of event `seq` (`both`: it inserts and deletes: text
    moved?), pausing as TextTrack.delta_steps does."""
    if not both or (copies and not copies.moves):
        yield from track.delta_steps(delta, seq, copies=copies)
        return
    moves = Moves()  # (text deleted and inserted again: moved?)
    gone: list[tuple[int, int, int]] = []

    def on_insert(start: int, data: bytes, value: Any) -> None:
        if type(value) is str:
            moves.inserted.append((track, start, data))

    yield from track.delta_steps(delta, seq, on_insert, gone, copies)
    moves.gone_text(track, gone)
    moves.settle(seq)


def _pieces(
    track: TextTrack, kids: Container[int] | None
) -> Iterator[tuple[int, int, int, int, bool]]:
    """The runs of `track` as (start, length, inserted by, deleted by, is a kid), each
    byte in `kids` (an embedded shared type, attribution_xml) a piece of its own."""
    for run in track.runs():
        start, n, ins, dele = run[0], run[1], run[2], run[3]
        if not kids:
            yield start, n, ins, dele, False
            continue
        seg = start
        for o in range(start, start + n):
            if o in kids:
                if o > seg:
                    yield seg, o - seg, ins, dele, False
                yield o, 1, ins, dele, True
                seg = o + 1
        if seg < start + n:
            yield seg, start + n - seg, ins, dele, False


def finish(steps: Generator[None, None, _R]) -> _R:
    """What a walk made of steps (blame_steps, diff_steps) answers, walked in one piece."""
    while True:
        try:
            next(steps)
        except StopIteration as e:
            return e.value  # type: ignore[no-any-return]


def track_blame(
    track: TextTrack,
    seq: int,
    actors: list[str],
    first: int,
    kids: Container[int] | None = None,
) -> list[dict[str, Any]]:
    """The runs of `track` alive at `seq`, grouped by who inserted them (text moved:
    by who wrote it, see Moves); with `kids` (attribution_xml), each of those bytes a
    run of its own, its ``node`` the byte."""
    if kids:
        return _blame_pieces(track, seq, actors, first, kids)
    return finish(blame_steps(track, seq, actors, first))


def blame_steps(
    track: TextTrack, seq: int, actors: list[str], first: int
) -> Generator[None, None, list[dict[str, Any]]]:
    """track_blame of a text without kids, a pause (a yield) after every block of runs
    and every WALK_STEP runs answered, so that a caller may walk it in slices
    (server.history.sliced): a book's blame is a walk of a million runs, ~0.5 s."""
    # one pass over the runs with everything local: a blame of a keystroke trace
    # answers one run per keystroke (105k for automerge-paper), so this loop is its cost.
    # The text alive goes into one buffer, and each group (a writer's stretch) is its
    # writer and where it ends there: two lists of ints, not a tuple and a list per
    # group, which outlived the walk's slices and made the collector scan the whole
    # heap (a million runs of an index) every few blames of a book
    content = memoryview(bytes(track.content))
    buf = bytearray()
    seqs: list[int] = []
    ends: list[int] = []
    cur = -1
    moved = track.moved
    starts = [m[0] for m in moved]  # (text moved: a bisect per run finds it)
    for block in track.blocks:
        yield
        for run in block:
            start, n, ins, dele = run[0], run[1], run[2], run[3]
            if ins > seq or (dele and dele <= seq) or not n:
                continue
            if moved:
                m = bisect_right(starts, start + n - 1) - 1
                if m >= 0 and moved[m][0] + moved[m][1] > start:
                    for s, k, w in track.stretches(start, n, ins):
                        if w != cur:
                            if seqs:
                                ends.append(len(buf))
                            seqs.append(w)
                            cur = w
                        buf += content[s : s + k]
                    continue
            if ins != cur:
                if seqs:
                    ends.append(len(buf))
                seqs.append(ins)
                cur = ins
            buf += content[start : start + n]
    if seqs:
        ends.append(len(buf))
    known = len(actors)
    out: list[dict[str, Any]] = []
    at = 0
    for k, ins in enumerate(seqs):  # (inline: a call per run costs a long blame 10%)
        if not k % WALK_STEP:
            yield
        end = ends[k]
        text = buf[at:end].decode("utf-8", errors="replace")
        at = end
        if "\x1a" in text:
            text = text.replace("\x1a", "\ufffc")
        i = ins - first
        out.append({"text": text, "actor": (actors[i] or None) if 0 <= i < known else None,
                    "seq": ins})  # fmt: skip
    return out


def _blame_run(ins: int, chunks: list[bytes], actors: list[str], first: int) -> dict[str, Any]:
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    text = data.decode("utf-8", errors="replace")
    if "\x1a" in text:
        text = text.replace("\x1a", "\ufffc")
    i = ins - first
    return {"text": text, "actor": (actors[i] or None) if 0 <= i < len(actors) else None,
            "seq": ins}  # fmt: skip


def _blame_pieces(
    track: TextTrack,
    seq: int,
    actors: list[str],
    first: int,
    kids: Container[int] | None,
) -> list[dict[str, Any]]:
    content = bytes(track.content)
    out: list[dict[str, Any]] = []
    cur, parts = -1, [b""]
    for start, n, ins, dele, kid in _pieces(track, kids):
        if ins > seq or (dele and dele <= seq) or not n:
            continue
        if kid:
            out.append({**_blame_run(ins, [EMBED], actors, first), "node": start})
            cur = -1
            continue
        for s, k, w in track.stretches(start, n, ins) if track.moved else ((start, n, ins),):
            if w != cur:
                parts = []
                out.append({"ins": w, "parts": parts})
                cur = w
            parts.append(content[s : s + k])
    return [run if "node" in run else _blame_run(run["ins"], run["parts"], actors, first)
            for run in out]  # fmt: skip


def diff_steps(
    track: TextTrack,
    a: int,
    b: int,
    actor: Callable[[int], str | None],
    *,
    at_a: bool = True,
    at_b: bool = True,
    gone: int = 0,
    kids: Container[int] | None = None,
) -> Generator[None, None, list[dict[str, Any]]]:
    """Equal, inserted and deleted runs of `track` from seq a to seq b (see
    AttributionIndex.diff). `at_a`/`at_b` false: nothing of it is alive at that seq (an
    XML node not in that version, attribution_xml); a run deleted only with its node
    counts as deleted by `gone`, the event that deleted the node. Each byte in `kids` (an
    embedded shared type, attribution_xml) is an op of its own, its ``node`` the byte.
    Text an event moved (see Moves) is an op of its own, ``moved`` true: the insert
    where it went and the delete where it was (their actor the mover; blame names who
    wrote it: a diff folded from version `a` alone cannot know who wrote what was there
    at `a`, and answers the same). Text an undo, a redo or a restore inserted as a copy
    (see Copies) of text written after `a` is inserted by its writer's event, as blame
    names it: the original's insertion and deletion, and the copy, are all between the
    two versions (a restore that took it out and its undo: together no change); a copy
    of text written by `a` is the change of the event that copied it. A pause (a yield)
    every WALK_STEP runs, for a caller that walks it in slices (see blame_steps)."""
    # Between two runs alive at both seqs, the runs deleted keep their order at `a`
    # and the runs inserted theirs at `b`; how the two interleave depends on where
    # an insert landed among tombstones, which a fold by deltas does not know
    # (attribution_ids does). So each such gap lists its deletions, then its
    # insertions: one answer whichever way the index was folded, and the usual shape.
    # A gap whose deletions and insertions are the same text (an undo's copy) is equal.
    content = track.content
    out: list[dict[str, Any]] = []
    equal = bytearray()
    # per kind, [seq, bytes, the kid's byte or -1, text moved] (a kid is never extended)
    gap: dict[str, list[list[Any]]] = {"delete": [], "insert": []}
    moved, away = track.moved, track.moved_away
    # (text moved: a bisect per insert or delete finds it)
    starts, away_starts = [m[0] for m in moved], [m[0] for m in away]

    def op(kind: str, s: int | None, data: bytes, node: int, moved: bool) -> dict[str, Any]:
        out = {"op": kind, "text": _text(data), "actor": actor(s) if s else None,
               "seq": s or None}  # fmt: skip
        if node >= 0:
            out["node"] = node
        if moved:
            out["moved"] = True
        return out

    def flush_gap() -> Iterator[None]:
        for kind in ("delete", "insert"):
            for i, (s, data, node, m) in enumerate(gap[kind]):
                if i and not i % WALK_STEP:
                    yield
                out.append(op(kind, s, bytes(data), node, m))
            gap[kind] = []

    def same_text() -> bytes | None:
        """The gap's text, if what it deleted is what it inserted (the copy an undo or a
        restore made of what was deleted, text deleted and typed again): no change."""
        dels, inss = gap["delete"], gap["insert"]
        if not dels or not inss or any(r[2] >= 0 for r in dels) or any(r[2] >= 0 for r in inss):
            return None
        text = b"".join([r[1] for r in inss])
        if b"".join([r[1] for r in dels]) != text or EMBED in text:  # (embeds: values)
            return None
        gap["delete"], gap["insert"] = [], []
        return text

    def same_ends() -> tuple[bytes, bytes]:
        """The text at the start and at the end of the gap that it deleted and inserted
        again, when all of one kind is the same text as whole runs at one end of the
        other: a paste as the document's first item, undone and redone, with another's
        typing after it and no character of both versions between (the deletions were
        the paste, the insertions its copy and the typing). Taken out of the gap."""
        dels, inss = gap["delete"], gap["insert"]
        if track.rich or any(r[2] >= 0 for r in dels) or any(r[2] >= 0 for r in inss):
            # (a rich text's: its formatting is diffed per character of both versions,
            # which a deleted run and another inserted are not; test_diff_rich)
            return b"", b""
        for whole, other in (("delete", "insert"), ("insert", "delete")):
            text = b"".join([r[1] for r in gap[whole]])
            runs = gap[other]
            if EMBED in text or len(runs) < 2:
                continue
            for lead in (True, False):
                size, k = 0, 0
                while k < len(runs) and size < len(text):
                    size += len(runs[k if lead else len(runs) - 1 - k][1])
                    k += 1
                if size != len(text) or k == len(runs):
                    continue
                part = runs[:k] if lead else runs[len(runs) - k :]
                if b"".join([r[1] for r in part]) != text:
                    continue
                gap[whole], gap[other] = [], runs[k:] if lead else runs[: len(runs) - k]
                return (text, b"") if lead else (b"", text)
        return b"", b""

    def settle_gap() -> Iterator[None]:
        """The gap ended (at a character of both versions, or the text's end): its
        text deleted and inserted again as unchanged, the rest as it is."""
        nonlocal equal
        trail = b""
        if gap["delete"] and gap["insert"]:
            same = same_text()
            if same is not None:
                equal += same
            else:
                lead, trail = same_ends()
                equal += lead
        if gap["delete"] or gap["insert"]:
            if equal:
                out.append(op("equal", None, bytes(equal), -1, False))
                equal = bytearray()
            yield from flush_gap()
        equal += trail

    split = bool(kids)  # (the plain runs as they are: the cost of a long text's diff)
    for i, piece in enumerate(_pieces(track, kids) if split else track.runs()):
        if not i % WALK_STEP:
            yield
        start, n, ins, dele = piece[0], piece[1], piece[2], piece[3]
        kid = split and piece[4]
        if not n:
            continue  # a format mark or deleted content: nothing to show
        in_a = at_a and ins <= a and (dele == 0 or dele > a)
        in_b = at_b and ins <= b and (dele == 0 or dele > b)
        if in_a and in_b:
            yield from settle_gap()
            if kid:
                if equal:
                    out.append(op("equal", None, bytes(equal), -1, False))
                    equal = bytearray()
                out.append(op("equal", None, EMBED, start, False))
            else:
                equal += content[start : start + n]
            continue
        if in_b:
            kind, s = "insert", ins
        elif in_a:
            kind, s = "delete", dele if dele and dele <= b else gone
        else:
            continue
        runs = gap[kind]
        pieces: list[tuple[int, int, bool, int]] | None = None
        if kind == "insert" and moved and not kid:
            m = bisect_right(starts, start + n - 1) - 1
            if m >= 0 and moved[m][0] + moved[m][1] > start:
                pieces = track.insert_pieces(start, n, ins)
        elif kind == "delete" and away and not kid:
            m = bisect_right(away_starts, start + n - 1) - 1
            if m >= 0 and away[m][0] + away[m][1] > start:
                pieces = [(at, k, move, s) for at, k, move in track.away_pieces(start, n)]
        if pieces is not None:
            for at, k, move, w in pieces:
                # a copy of text written after `a` (an undo of the restore that took it
                # out, both after `a`): its writer inserted it, as blame says; the
                # restore and the undo together did nothing. Written by `a`, the copy
                # is the change of the event that brought it back.
                by = w if w > a else s
                if runs and runs[-1][0] == by and runs[-1][2] < 0 and runs[-1][3] == move:
                    runs[-1][1].extend(content[at : at + k])
                else:
                    runs.append([by, bytearray(content[at : at + k]), -1, move])
            continue
        data = content[start : start + n]
        if runs and runs[-1][0] == s and runs[-1][2] < 0 and not kid and not runs[-1][3]:
            runs[-1][1].extend(data)
        else:
            runs.append([s, bytearray(data), start if kid else -1, False])
    yield from settle_gap()
    if equal:
        out.append(op("equal", None, bytes(equal), -1, False))
    return out
