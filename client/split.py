"""Splitting a Yjs update (v1 encoding) into smaller updates that each apply on their own.

A server refuses frames over its limit (8 MiB by default, close 4413), so the client
never sends an update larger than a chunk (about 1 MiB) in one piece when it can cut it:

    for part in split_update(update, 1 << 20):
        ...                     # each part applies, in order, where `update` would

The parts, applied in order to a document that holds what `update` builds on, make the
same document as `update`, and none of them waits as pending: every item goes after the
items its origins and parent name (those of the update itself in an earlier or the same
part), each client's items in clock order without a gap, and the delete set after every
item (in the last parts). That is what the server's admission rule asks of every
update (server/ownership.py). A run of text, of JSON values or of deleted content that
is larger than a chunk by itself is cut the way Yjs splits an item: the right part
starts at the next clock, with the left part's last character as its origin. An item
that cannot be cut (one binary value, one embed, one large JSON value) goes in a part of
its own, however large: the server may refuse it (4413, the message names its size).

The layout (lib0's ``UpdateEncoderV1``, as read by server/updates.py)::

    varUint(#clients) { varUint(#structs) varUint(client) varUint(first clock) struct* }*
    delete set: varUint(#clients) { varUint(client) varUint(#ranges)
                                    { varUint(clock) varUint(length) }* }*
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from palimpsest.errors import ProtocolError
from palimpsest.protocol import Reader, write_var_string, write_var_uint
from palimpsest.updates import skip_any, skip_item, utf16_length

_BIT8, _BIT7, _BIT6 = 0x80, 0x40, 0x20
_GC, _SKIP = 0, 10
# content refs (the low five bits of an item's info byte)
_DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC = range(1, 10)
_XML_ELEMENT, _XML_HOOK = 3, 5
#: bytes a part's headers may take besides its structs (counts, client ids, clocks)
_HEADER = 32

#: a delete set: (client, [(clock, length), ...]) in the order encoded
DeleteSet = list[tuple[int, list[tuple[int, int]]]]


@dataclass(slots=True)
class _Struct:
    client: int
    clock: int
    #: in clock units
    length: int
    #: the struct as encoded (info byte first)
    data: bytes
    #: the (client, clock) ids it needs to integrate: its origins and its parent
    refs: list[tuple[int, int]] = field(default_factory=list)


def split_update(update: bytes, limit: int) -> list[bytes]:
    """`update` as parts of at most about `limit` bytes each (see the module's doc);
    ``[update]`` when it is no larger, or when it is not a v1 update this reader follows
    (the receiver then judges it whole)."""
    if len(update) <= limit:
        return [update]
    try:
        groups, deletes = _read(update)
    except ProtocolError:
        return [update]
    budget = max(limit - _HEADER, 64)
    queues: dict[int, collections.deque[_Struct]] = {}
    for client, structs in groups.items():
        q: collections.deque[_Struct] = collections.deque()
        for s in structs:
            q.extend(_cut(s, budget) if len(s.data) > budget else (s,))
        queues[client] = q
    return _Packer(budget).pack(queues, deletes)


class _Packer:
    """Fills parts with structs in an order where each one's references come first."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.parts: list[bytes] = []
        # the part being filled: client -> (first clock, end clock, encoded structs)
        self.segments: dict[int, tuple[int, int, list[bytes]]] = {}
        self.size = 0

    def add(self, s: _Struct) -> None:
        cost = len(s.data) + (0 if s.client in self.segments else _HEADER)
        if self.segments and self.size + cost > self.budget:
            self.flush()
            cost = len(s.data) + _HEADER
        seg = self.segments.get(s.client)
        if seg is None:
            self.segments[s.client] = (s.clock, s.clock + s.length, [s.data])
        else:
            first, end, data = seg
            if s.clock > end:  # a gap the update had (a Skip): keep it
                data.append(bytes([_SKIP]) + write_var_uint(s.clock - end))
            data.append(s.data)
            self.segments[s.client] = (first, s.clock + s.length, data)
        self.size += cost

    def flush(self, deletes: bytes = b"\x00") -> None:
        out = [write_var_uint(len(self.segments))]
        for client, (first, _end, data) in self.segments.items():
            out += [write_var_uint(len(data)), write_var_uint(client), write_var_uint(first)]
            out += data
        out.append(deletes)
        self.parts.append(b"".join(out))
        self.segments = {}
        self.size = 0

    def pack(
        self,
        queues: dict[int, collections.deque[_Struct]],
        deletes: DeleteSet,
    ) -> list[bytes]:
        # what the receiver holds of each client of the update: up to its first clock
        # before anything is sent, then whatever the parts so far carry
        have = {c: q[0].clock for c, q in queues.items() if q}

        def ready(s: _Struct) -> bool:
            return all(c not in have or k < have[c] for c, k in s.refs)

        while any(queues.values()):
            progress = False
            for client, q in queues.items():
                while q and ready(q[0]):
                    s = q.popleft()
                    self.add(s)
                    have[client] = s.clock + s.length
                    progress = True
            if not progress:
                # references nobody holds: the update could not integrate whole either;
                # send the rest as it came and let the receiver judge
                for client, q in queues.items():
                    while q:
                        s = q.popleft()
                        self.add(s)
                        have[client] = s.clock + s.length
        self._deletes(deletes)
        return self.parts

    def _deletes(self, deletes: DeleteSet) -> None:
        """The delete set after every struct: in the last part when it fits, else over
        parts of its own (each a valid update with no structs)."""
        encoded: list[tuple[int, list[bytes]]] = [
            (client, [write_var_uint(k) + write_var_uint(n) for k, n in ranges])
            for client, ranges in deletes
        ]
        total = sum(_HEADER + sum(len(r) for r in rs) for _, rs in encoded)
        if self.size + total <= self.budget or not self.segments and total <= self.budget:
            self.flush(_encode_deletes(encoded))
            return
        if self.segments:
            self.flush()
        chunk: list[tuple[int, list[bytes]]] = []
        size = 0
        for client, ranges in encoded:
            taken: list[bytes] = []
            for r in ranges:
                if size + len(r) + _HEADER > self.budget and (taken or chunk):
                    if taken:
                        chunk.append((client, taken))
                    self.flush(_encode_deletes(chunk))
                    chunk, taken, size = [], [], 0
                taken.append(r)
                size += len(r)
            if taken:
                chunk.append((client, taken))
                size += _HEADER
        if chunk:
            self.flush(_encode_deletes(chunk))


def _encode_deletes(ranges: list[tuple[int, list[bytes]]]) -> bytes:
    out = [write_var_uint(len(ranges))]
    for client, rs in ranges:
        out += [write_var_uint(client), write_var_uint(len(rs)), *rs]
    return b"".join(out)


def _cut(s: _Struct, budget: int) -> list[_Struct]:
    """An item larger than `budget` as consecutive items of at most about `budget` bytes
    each, as Yjs splits an item; ``[s]`` when its content cannot be cut."""
    r = Reader(s.data)
    info = r.data[0]
    r.pos = 1
    if info in (_GC, _SKIP):
        return [s]
    right = None
    if info & _BIT8:
        r.read_var_uint()
        r.read_var_uint()
    if info & _BIT7:
        right = (r.read_var_uint(), r.read_var_uint())
    if not info & (_BIT8 | _BIT7):
        if r.read_var_uint():
            r.read_var_bytes()
        else:
            r.read_var_uint()
            r.read_var_uint()
        if info & _BIT6:
            r.read_var_bytes()
    head = s.data[: r.pos]
    kind = info & 31
    pieces: list[tuple[bytes, int]]  # (encoded content, length in clock units)
    if kind == _STRING:
        pieces = [(write_var_string(p), utf16_length(p)) for p in _cut_text(r, budget)]
    elif kind in (_ANY, _JSON):
        n = r.read_var_uint()
        begin = r.pos  # the first value's
        ends = []
        for _ in range(n):
            if kind == _ANY:
                skip_any(r, 1)
            else:
                r.read_var_bytes()
            ends.append(r.pos)
        pieces = []
        count = 0
        for i, end in enumerate(ends):
            if count and end - begin > budget:
                pieces.append((write_var_uint(count) + s.data[begin : ends[i - 1]], count))
                begin, count = ends[i - 1], 0
            count += 1
        if count:
            pieces.append((write_var_uint(count) + s.data[begin : ends[-1]], count))
    else:
        return [s]
    if len(pieces) <= 1:
        return [s]
    out: list[_Struct] = []
    clock = s.clock
    for i, (content, length) in enumerate(pieces):
        if i == 0:
            out.append(_Struct(s.client, clock, length, head + content, list(s.refs)))
        else:
            # the right part of a split: after the left part's last unit, before the
            # same right origin; with an origin, its parent is the origin's
            left = (s.client, clock - 1)
            data = bytes([info | _BIT8]) + write_var_uint(left[0]) + write_var_uint(left[1])
            refs = [left]
            if right is not None:
                data += write_var_uint(right[0]) + write_var_uint(right[1])
                refs.append(right)
            out.append(_Struct(s.client, clock, length, data + content, refs))
        clock += length
    return out


def _cut_text(r: Reader, budget: int) -> list[str]:
    raw = r.read_var_bytes()
    pieces = []
    pos = 0
    while pos < len(raw):
        end = min(pos + budget, len(raw))
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        pieces.append(raw[pos:end].decode("utf-8"))
        pos = end
    return pieces


def _read(update: bytes) -> tuple[dict[int, list[_Struct]], DeleteSet]:
    """The update's structs by client (in clock order) and its delete set."""
    r = Reader(update)
    groups: dict[int, list[_Struct]] = {}
    for _ in range(r.read_var_uint("number of clients")):
        n = r.read_var_uint("number of structs")
        client = r.read_var_uint("client id")
        clock = r.read_var_uint("first clock")
        structs = groups.setdefault(client, [])
        for _ in range(n):
            start = r.pos
            if start >= len(update):
                raise ProtocolError("truncated update")
            info = update[start]
            r.pos += 1
            refs: list[tuple[int, int]] = []
            if info == _GC or info == _SKIP:
                length = r.read_var_uint("struct length")
                if info == _SKIP:
                    clock += length
                    continue
            else:
                needs: dict[int, int] = {}  # client -> the clock it needs up to
                length = skip_item(r, info, needs)
                refs = [(c, need - 1) for c, need in needs.items()]
            if length:  # (yrs writes text items of length 0: they hold nothing, and a
                # part whose only struct of a client is one is refused, see updates.py)
                structs.append(_Struct(client, clock, length, update[start : r.pos], refs))
            clock += length
    deletes: DeleteSet = []
    for _ in range(r.read_var_uint("delete set clients")):
        client = r.read_var_uint("delete set client")
        ranges = [
            (r.read_var_uint("deleted clock"), r.read_var_uint("deleted length"))
            for _ in range(r.read_var_uint("delete set ranges"))
        ]
        deletes.append((client, ranges))
    r.expect_end("the update's delete set")
    return {c: s for c, s in groups.items() if s}, deletes
