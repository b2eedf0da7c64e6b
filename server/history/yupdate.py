"""The structs of a Yjs update (v1 encoding), as the attribution index folds them by id.

Only what placing an item needs is kept: its id and length in clock units, its origins,
its parent when the update names it, the kind of its content and, for a string, its
UTF-8 bytes. Anything this reader does not follow (a GC or Skip struct, a v2 update,
a malformed one) raises :class:`Unsupported`, and the index then folds by text deltas
instead (attribution.AttributionIndex).

The encoding is lib0's (``Y.encodeStateAsUpdate``): varUint counts, per client its
structs from a starting clock, then the delete set as (client, clock, length) ranges.
An item's info byte says which of origin, right origin and parent follow, and its low
five bits the content's kind.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ProtocolError
from ..protocol import Reader

# content kinds (the info byte's low five bits)
GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, SUBDOC = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
SKIP = 10
_XML_ELEMENT, _XML_HOOK = 3, 5

ID = tuple[int, int]


class Unsupported(Exception):
    """An update this reader does not follow: the caller folds it another way."""


class Struct(NamedTuple):
    client: int
    clock: int
    #: in clock units (UTF-16 code units for a string)
    length: int
    origin: ID | None
    right: ID | None
    #: a root's name, a parent item's id, or None when the origins imply it
    parent: str | ID | None
    #: a map entry's key (set only with an explicit parent)
    sub: str | None
    kind: int
    #: a string's UTF-8 bytes
    data: bytes | None
    #: a shared type's type ref (YArray 0, YMap 1, YText 2, YXmlElement 3, …), TYPE only
    type_ref: int | None = None


def _skip_any(r: Reader, depth: int = 0) -> None:
    if depth > 64:
        raise Unsupported("Any nested too deep")
    t = r.data[r.pos]
    r.pos += 1
    if t in (127, 126, 121, 120):  # undefined, null, false, true
        return
    if t == 125:  # varInt: the same continuation bits as a varUint
        r.read_var_uint("varInt")
    elif t == 124:
        r.pos += 4
    elif t in (123, 122):
        r.pos += 8
    elif t in (119, 116):  # string, bytes
        r.read_var_bytes("Any")
    elif t == 118:  # object
        for _ in range(r.read_var_uint()):
            r.read_var_bytes("key")
            _skip_any(r, depth + 1)
    elif t == 117:  # array
        for _ in range(r.read_var_uint()):
            _skip_any(r, depth + 1)
    else:
        raise Unsupported(f"Any of type {t}")


def _utf16_length(data: bytes) -> int:
    if data.isascii():
        return len(data)
    s = data.decode("utf-8", errors="surrogatepass")
    return len(s) + sum(1 for c in s if ord(c) > 0xFFFF)


def decode(update: bytes, *, gc: bool = False) -> tuple[list[Struct], list[tuple[int, int, int]]]:
    """The structs of `update` in their encoded order, and its delete set as
    (client, clock, length) ranges. `gc`: a GC or Skip struct is one of kind GC, with
    no origins nor parent (what it was in is not known any more), instead of
    Unsupported."""
    try:
        return _decode(Reader(update), gc)
    except (ProtocolError, IndexError) as e:
        raise Unsupported(f"malformed update: {e}") from e
    except UnicodeDecodeError as e:
        raise Unsupported("string is not UTF-8") from e


def _decode(r: Reader, gc: bool = False) -> tuple[list[Struct], list[tuple[int, int, int]]]:
    # the protocol's bounds-checked reader (its varUints unrolled, client ids remembered)
    d = r.data
    u = r.read_var_uint
    read_bytes = r.read_var_bytes  # returns them; most callers only step over
    structs: list[Struct] = []
    for _ in range(u()):
        nstructs = u()
        client = u()
        clock = u()
        for _ in range(nstructs):
            info = d[r.pos]
            r.pos += 1
            kind = info & 0x1F
            if kind == GC or kind == SKIP:
                if not gc:
                    raise Unsupported("GC or Skip struct")
                length = u()
                if length <= 0:
                    raise Unsupported("empty struct")
                structs.append(Struct(client, clock, length, None, None, None, None, GC, None))
                clock += length
                continue
            origin = right = None
            parent: str | ID | None = None
            sub = None
            if info & 0x80:
                origin = (u(), u())
            if info & 0x40:
                right = (u(), u())
            if not info & 0xC0:
                parent = r.read_var_string("root name") if u() == 1 else (u(), u())
                if info & 0x20:
                    sub = r.read_var_string("key")
            data = None
            type_ref = None
            if kind == STRING:
                data = read_bytes("string")
                length = _utf16_length(data)
            elif kind == DELETED:
                length = u()
            elif kind == EMBED or kind == BINARY:  # a JSON string, a buffer: one unit
                read_bytes("content")
                length = 1
            elif kind == FORMAT:
                read_bytes("key")
                read_bytes("value")
                length = 1
            elif kind == TYPE:
                type_ref = u()
                if type_ref in (_XML_ELEMENT, _XML_HOOK):
                    read_bytes("name")
                length = 1
            elif kind == JSON:
                length = u()
                for _ in range(length):
                    read_bytes("JSON")
            elif kind == ANY:
                length = u()
                for _ in range(length):
                    _skip_any(r)
            elif kind == SUBDOC:
                read_bytes("guid")
                _skip_any(r)
                length = 1
            else:
                raise Unsupported(f"content kind {kind}")
            if length <= 0:
                raise Unsupported("empty struct")
            structs.append(
                Struct(client, clock, length, origin, right, parent, sub, kind, data, type_ref)
            )
            clock += length
    deletes: list[tuple[int, int, int]] = []
    for _ in range(u()):
        client = u()
        for _ in range(u()):
            clock = u()
            deletes.append((client, clock, u()))
    r.expect_end("the update")
    return structs, deletes


def in_causal_order(structs: list[Struct], known: dict[int, int] | None = None) -> list[Struct]:
    """`structs` reordered so that each comes after the structs its origins and parent
    name (Yjs's own order of integration: ``integrateStructs``), each client's in clock
    order. A document's whole state is encoded client by client (highest id first), so
    its structs name structs of other clients listed after them, which the fold by ids
    refuses (an update it folds comes from one editor, in that order already).
    Unsupported when a struct names an id the structs do not hold, unless below
    `known` (a state vector: the update is a document's state from there on)."""
    from collections import deque

    queues: dict[int, deque[Struct]] = {}
    for s in structs:
        queues.setdefault(s.client, deque()).append(s)
    state: dict[int, int] = dict(known) if known else {}
    out: list[Struct] = []
    for first in list(queues):
        stack = [first]
        while stack:
            queue = queues[stack[-1]]
            if not queue:
                stack.pop()
                continue
            s = queue[0]
            need = None
            for ref in (s.origin, s.right, s.parent):
                if type(ref) is tuple and ref[1] >= state.get(ref[0], 0):
                    need = ref[0]
                    break
            if need is not None:
                if need in stack or not queues.get(need):
                    raise Unsupported("a missing dependency")
                stack.append(need)  # integrate that client's structs up to it first
                continue
            queue.popleft()
            out.append(s)
            state[s.client] = s.clock + s.length
            if len(stack) > 1:
                stack.pop()  # back to the struct that waited: does it still?
    return out


def decode_causal(update: bytes) -> tuple[list[Struct], list[tuple[int, int, int]]]:
    """decode(), the structs in_causal_order (for a whole document's state)."""
    structs, deletes = decode(update)
    return in_causal_order(structs), deletes


__all__ = ["Struct", "Unsupported", "decode", "decode_causal", "in_causal_order"]
