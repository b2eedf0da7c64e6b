"""Folding the attribution index by Yjs ids, without asking pycrdt for text deltas.

A text event's delta is what the index used to fold: the retain/insert/delete of each
transaction at visible positions. yrs computes it by walking the text's items from the
start, so that each event costs in proportion to the document's length: on
sveltecomponent's 18k events, 6 us per event in the first quarter and 56 in the last,
72 % of the whole fold (bench/notes.md, 3 Dec 2026).

Here the index places each inserted item itself, from the update's own structs: after
its origin, before its right origin, and between concurrent inserts at the same place
by Yjs's rule (``Item.integrate`` in Yjs, YATA), so that the runs keep exactly the order
of the document's items, tombstones included. A deletion marks the runs of its id
ranges. Nothing walks the text.

The fold by ids holds only from an empty document, over every event in order (it must
know every id ever issued). It gives way to the fold by deltas, for good, at the first
update it does not follow (a GC or Skip struct, a missing dependency, an update that
repeats ids already seen: yupdate.Unsupported), before anything of that update is
applied. A surprise half way through an update (:class:`Broken`: content a text does
not hold, a split inside a surrogate pair) leaves the runs unusable: the index says so
(``broken``) and its owner builds it again by deltas. ``AttributionIndex.verify``
compares the visible text with the document's after each build or extension.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Generator
from typing import Any

from . import yupdate
from .attribution import (
    BLOCK,
    DELTA_STEP,
    EMBED,
    MOVE_BYTES,
    R_BLOCK,
    R_CLOCK,
    R_DEL,
    R_INS,
    R_LEN,
    R_NCLOCK,
    R_OC,
    R_OK,
    R_RC,
    R_RK,
    R_START,
    R_TRACK,
    Copies,
    Moves,
    TextTrack,
)

Run = list[Any]


class Broken(Exception):
    """The runs no longer mirror the document: build the index again by deltas."""


def _byte_offset(track: TextTrack, run: Run, k: int) -> int:
    """The bytes of `run`'s first `k` clock units (UTF-16 code units of its text)."""
    n = run[R_LEN]
    if n == run[R_NCLOCK] or n == 0:
        return k if n else 0
    start = run[R_START]
    text = bytes(track.content[start : start + n]).decode("utf-8", errors="surrogatepass")
    units = off = 0
    for ch in text:
        if units == k:
            return off
        if units > k:
            break
        units += 2 if ord(ch) > 0xFFFF else 1
        off += len(ch.encode("utf-8", errors="surrogatepass"))
    if units == k:
        return off
    raise Broken("a split inside a surrogate pair")


class IdFold:
    """Places each event's items in the index's tracks by their Yjs ids."""

    __slots__ = ("tracks", "state", "starts", "runs", "clients")

    def __init__(self, tracks: dict[str, TextTrack]) -> None:
        self.tracks = tracks
        #: the next clock of every client seen, in every root (tracked or not)
        self.state: dict[int, int] = {}
        #: per client, the tracked runs by their first clock (sorted), and the runs
        self.starts: dict[int, list[int]] = {}
        self.runs: dict[int, list[Run]] = {}
        #: one int object per client id, shared by every run that names it
        self.clients: dict[int, int] = {}

    def adopt(self, track: TextTrack) -> None:
        """Place items in `track` too (a new, empty root: AttributionIndex.adopt)."""
        if track.by_block is None:
            track.follow_by_ids()

    # --- reading an update ---------------------------------------------------------------

    def plan(
        self,
        update: bytes,
        decoded: tuple[list[yupdate.Struct], list[tuple[int, int, int]]] | None = None,
    ) -> tuple[list[yupdate.Struct], list[tuple[int, int, int]]]:
        """The update's structs and deletions, if this fold follows all of them
        (yupdate.Unsupported otherwise); nothing is changed yet. `decoded`: what
        yupdate.decode made of it already (a large one, in a worker thread)."""
        structs, deletes = decoded if decoded is not None else yupdate.decode(update)
        state = dict(self.state)
        types = False
        for s in structs:
            types = types or s.kind == yupdate.TYPE
            if s.clock != state.get(s.client, 0):
                raise yupdate.Unsupported("ids repeated or missing")
            for ref in (s.origin, s.right, s.parent):
                # ids issued before, or earlier in this update (in its order: an update
                # whose structs depend on later ones is left to the fold by deltas)
                if type(ref) is tuple and ref[1] >= state.get(ref[0], 0):
                    raise yupdate.Unsupported("a missing dependency")
            state[s.client] = s.clock + s.length
        for client, clock, length in deletes:
            if clock + length > state.get(client, 0):
                raise yupdate.Unsupported("a deletion of ids not seen")
        if types:
            self._no_types_in_text(structs)
        return structs, deletes

    def _no_types_in_text(self, structs: list[yupdate.Struct]) -> None:
        """yupdate.Unsupported if a shared type lands in a tracked text (Lexical's
        paragraphs): attribution_xml follows those, by deep events."""
        placed: list[tuple[int, int, int]] = []  # this update's units in a tracked text
        for s in structs:
            if type(s.parent) is str:
                inside = s.parent in self.tracks and s.sub is None
            else:
                ref = s.origin if s.origin is not None else s.right
                inside = ref is not None and (
                    self.find(*ref) is not None
                    or any(c == ref[0] and lo <= ref[1] < hi for c, lo, hi in placed)
                )
            if inside:
                if s.kind == yupdate.TYPE:
                    raise yupdate.Unsupported("a shared type embedded in a text")
                placed.append((s.client, s.clock, s.clock + s.length))

    # --- finding runs --------------------------------------------------------------------

    def find(self, client: int, clock: int) -> Run | None:
        """The tracked run holding id (client, clock), or None (an untracked root's)."""
        starts = self.starts.get(client)
        if not starts:
            return None
        i = bisect_right(starts, clock) - 1
        if i < 0:
            return None
        run = self.runs[client][i]
        return run if clock < run[R_CLOCK] + run[R_NCLOCK] else None

    def _right_of(self, track: TextTrack, run: Run) -> Run | None:
        bi, ri = track.where_run(run)
        blocks = track.blocks
        if ri + 1 < len(blocks[bi]):
            return blocks[bi][ri + 1]
        for b in blocks[bi + 1 :]:
            if b:
                return b[0]
        return None

    @staticmethod
    def _first(track: TextTrack) -> Run | None:
        for b in track.blocks:
            if b:
                return b[0]
        return None

    def _split(self, run: Run, k: int) -> Run:
        """Split `run` after its first `k` clock units; the second part, placed after it."""
        track: TextTrack = run[R_TRACK]
        b = _byte_offset(track, run, k)
        client, clock = run[4], run[R_CLOCK]
        right = [
            run[R_START] + b,
            run[R_LEN] - b,
            run[R_INS],
            run[R_DEL],
            client,
            clock + k,
            run[R_NCLOCK] - k,
            client,
            clock + k - 1,
            run[R_RC],
            run[R_RK],
            None,
            track,
        ]
        run[R_LEN] = b
        run[R_NCLOCK] = k
        bi, ri = track.where_run(run)
        self._put(track, bi, ri + 1, right, count=False)
        starts, runs = self.starts[client], self.runs[client]
        i = bisect_right(starts, clock)
        starts.insert(i, clock + k)
        runs.insert(i, right)
        return right

    def _put(self, track: TextTrack, bi: int, ri: int, run: Run, count: bool = True) -> None:
        block = track.blocks[bi]
        block.insert(ri, run)
        run[R_BLOCK] = block
        if count and not run[R_DEL]:
            track.alive[bi] += run[R_LEN]
        if len(block) > 2 * BLOCK:
            track._split_block(bi)

    def _end_at(self, ref: tuple[int, int]) -> Run:
        """The run ending with unit `ref` (split there if needed)."""
        run = self.find(*ref)
        if run is None:
            raise Broken(f"origin {ref} is not in the text")
        k = ref[1] - run[R_CLOCK] + 1
        if k < run[R_NCLOCK]:
            self._split(run, k)
        return run

    def _start_at(self, ref: tuple[int, int]) -> Run:
        """The run starting with unit `ref` (split there if needed)."""
        run = self.find(*ref)
        if run is None:
            raise Broken(f"right origin {ref} is not in the text")
        k = ref[1] - run[R_CLOCK]
        return self._split(run, k) if k else run

    # --- folding an update ---------------------------------------------------------------

    def apply(
        self,
        structs: list[yupdate.Struct],
        deletes: list[tuple[int, int, int]],
        seq: int,
        copies: Copies | None = None,
    ) -> bool:
        """Fold one update (planned by :meth:`plan`) as event `seq`; whether an item was
        placed among concurrent inserts. `copies`: the text it may bring back (an undo's,
        a redo's, a restore's)."""
        steps = self.apply_steps(structs, deletes, seq, copies)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return bool(done.value)

    def apply_steps(
        self,
        structs: list[yupdate.Struct],
        deletes: list[tuple[int, int, int]],
        seq: int,
        copies: Copies | None = None,
    ) -> Generator[None, None, bool]:
        """:meth:`apply`, a pause (a yield) every DELTA_STEP structs or ranges (see
        AttributionIndex.fold_sliced); returns whether an item was placed among
        concurrent inserts."""
        resolved = False
        k = 0
        # text deleted and inserted again by one update (a line moved): see Moves
        moves = (
            Moves()
            if deletes
            and (copies is None or copies.moves)
            and any(s.kind == yupdate.STRING for s in structs)
            else None
        )
        for s in structs:
            k += 1
            if k % DELTA_STEP == 0:
                yield
            self.state[s.client] = s.clock + s.length
            if s.origin is not None:
                run = self.find(*s.origin)
                track = run[R_TRACK] if run is not None else None
            elif s.right is not None:
                run = self.find(*s.right)
                track = run[R_TRACK] if run is not None else None
            elif type(s.parent) is str:
                track = self.tracks.get(s.parent)
                if track is not None and s.sub is not None:
                    raise Broken("a keyed entry in a text")
            else:
                track = None
            if track is not None:
                resolved |= self._insert(track, s, seq, moves, copies)
        # (in the order of the ids: each range's runs are split after the last one's, at
        # the end of the client's lists, not in their middle, whatever order they came in)
        for client, clock, length in sorted(deletes):
            k += 1
            if k % DELTA_STEP == 0:
                yield
            self._delete(client, clock, clock + length, seq)
        if moves is not None:
            self._moved(moves, deletes, seq)
        if copies is not None:
            yield from copies.settle_steps()
        return resolved

    def _moved(self, moves: Moves, deletes: list[tuple[int, int, int]], seq: int) -> None:
        """Note the text `deletes` took out (each text's runs deleted by `seq`, in the
        text's order) and settle what was moved."""
        gone: dict[int, list[Run]] = {}
        for client, clock, length in deletes:
            starts = self.starts.get(client)
            if not starts:
                continue
            runs = self.runs[client]
            for i in range(max(0, bisect_right(starts, clock) - 1), len(runs)):
                run = runs[i]
                if run[R_CLOCK] >= clock + length:
                    break
                if run[R_DEL] == seq and run[R_CLOCK] + run[R_NCLOCK] > clock:
                    gone.setdefault(id(run[R_TRACK]), []).append(run)
        typed = moves.inserted_bytes()
        if sum(run[R_LEN] for runs in gone.values() for run in runs) > MOVE_BYTES:
            return  # (too much to look at: not even put in order)
        seen = set(b"".join([data for _, _, data in moves.inserted]))
        for runs in gone.values():
            track: TextTrack = runs[0][R_TRACK]
            content = track.content
            data = b"".join([content[run[R_START] : run[R_START] + run[R_LEN]] for run in runs])
            text = data.replace(EMBED, b"")
            if len(text) > typed or not set(text) <= seen:
                continue  # (no move: more gone than typed, or a byte not typed again)
            runs.sort(key=lambda run: track.where_run(run))
            moves.gone_text(track, [(run[R_START], run[R_LEN], run[R_INS]) for run in runs])
        if not moves.gone:
            return
        if len(moves.inserted) > 1:  # in the text's order, as a fold by deltas has them
            ins, placed = moves.inserted, moves.placed

            def where(k: int) -> tuple[int, int, int]:
                return (id(ins[k][0]), *ins[k][0].where_run(placed[k]))

            moves.inserted = [ins[k] for k in sorted(range(len(ins)), key=where)]
        moves.settle(seq)

    def _insert(
        self,
        track: TextTrack,
        s: yupdate.Struct,
        seq: int,
        moves: Moves | None = None,
        copies: Copies | None = None,
    ) -> bool:
        kind = s.kind
        if kind == yupdate.STRING:
            data: bytes = s.data or b""
        elif kind == yupdate.EMBED or kind == yupdate.TYPE:
            data, track.rich = EMBED, True
        elif kind == yupdate.FORMAT:
            data, track.rich = b"", True
        elif kind == yupdate.DELETED:
            data = b""
        else:
            raise Broken(f"content of kind {kind} in a text")
        left = self._end_at(s.origin) if s.origin is not None else None
        right = self._start_at(s.right) if s.right is not None else None
        nxt = self._right_of(track, left) if left is not None else self._first(track)
        resolved = nxt is not right
        if resolved:
            left = self._resolve(track, s, left, right, nxt)
        clients = self.clients
        client = clients.setdefault(s.client, s.client)
        oc = ok = rc = rk = None
        if s.origin is not None:
            oc, ok = s.origin
            oc = clients.setdefault(oc, oc)
        if s.right is not None:
            rc, rk = s.right
            rc = clients.setdefault(rc, rc)
        run: Run = [
            len(track.content),
            len(data),
            seq,
            seq if kind == yupdate.DELETED else 0,
            client,
            s.clock,
            s.length,
            oc,
            ok,
            rc,
            rk,
            None,
            track,
        ]
        if moves is not None and kind == yupdate.STRING and data:
            moves.inserted.append((track, len(track.content), data))
            moves.placed.append(run)
        if copies is not None and data:
            copies.run(track, run)
        track.content += data
        if left is None:
            self._put(track, 0, 0, run)
        else:
            bi, ri = track.where_run(left)
            self._put(track, bi, ri + 1, run)
        starts = self.starts.get(client)
        if starts is None:
            self.starts[client], self.runs[client] = [s.clock], [run]
        else:
            starts.append(s.clock)  # a client's clock only grows
            self.runs[client].append(run)
        return resolved

    def _resolve(
        self,
        track: TextTrack,
        s: yupdate.Struct,
        left: Run | None,
        right: Run | None,
        o: Run | None,
    ) -> Run | None:
        """Where between `left` and `right` the item goes among concurrent inserts: Yjs's
        conflict resolution (Item.integrate), on runs."""
        origin = s.origin or (None, None)
        right_origin = s.right or (None, None)
        conflicting: set[int] = set()
        before_origin: set[int] = set()
        while o is not None and o is not right:
            before_origin.add(id(o))
            conflicting.add(id(o))
            if (o[R_OC], o[R_OK]) == origin:
                if o[4] < s.client:
                    left = o
                    conflicting.clear()
                elif (o[R_RC], o[R_RK]) == right_origin:
                    break
            else:
                holder = self.find(o[R_OC], o[R_OK]) if o[R_OC] is not None else None
                if holder is not None and id(holder) in before_origin:
                    if id(holder) not in conflicting:
                        left = o
                        conflicting.clear()
                else:
                    break
            o = self._right_of(track, o)
        return left

    def _delete(self, client: int, clock: int, end: int, seq: int) -> None:
        starts = self.starts.get(client)
        if not starts:
            return
        runs = self.runs[client]
        i = max(0, bisect_right(starts, clock) - 1)
        while i < len(runs):
            run = runs[i]
            rs = run[R_CLOCK]
            if rs >= end:
                break
            re = rs + run[R_NCLOCK]
            if re <= clock or run[R_DEL]:
                i += 1
                continue
            if rs < clock:
                self._split(run, clock - rs)
                i += 1
                continue
            if re > end:
                self._split(run, end - rs)
            run[R_DEL] = seq
            track: TextTrack = run[R_TRACK]
            track.alive[track.block_index(run[R_BLOCK])] -= run[R_LEN]
            i += 1


__all__ = ["Broken", "IdFold"]
