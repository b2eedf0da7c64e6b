"""Which Yjs clients wrote the items of an update, read from the update itself.

The log does not store this (it is in every update: issue 13, "no meta field that can be
derived from the update"); history derives it when it shows an event. The state vector
of an update is no answer: Yjs (``encodeStateVectorFromUpdate``) and yrs count only
clients whose structs start at clock 0, so every incremental keystroke gives ``{}``.

Reads the struct section of a Yjs v1 update (the delete set that follows names the
authors of deleted items, not the deleter, so it is not read). Cost: one pass over the
update's bytes.
"""

from __future__ import annotations

from ..errors import ProtocolError
from ..protocol import Reader
from ..updates import skip_item_header

# lib0 `writeAny` type tags
_ANY_FIXED = {127: 0, 126: 0, 124: 4, 123: 8, 122: 8, 121: 0, 120: 0}
_ANY_VARINT, _ANY_STRING, _ANY_OBJECT, _ANY_ARRAY, _ANY_BYTES = 125, 119, 118, 117, 116
# content refs (the low five bits of a struct's info byte)
_GC, _DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC, _SKIP = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
)  # fmt: skip
_XML_ELEMENT, _XML_HOOK = 3, 5


def update_clients(update: bytes) -> list[int]:
    """The sorted client ids that have items (or GC'd ranges) in a Yjs v1 update."""
    r = Reader(update)
    clients: set[int] = set()
    for _ in range(r.read_var_uint("number of clients")):
        n = r.read_var_uint("number of structs")
        client = r.read_var_uint("client id")
        r.read_var_uint("first clock")
        for _ in range(n):
            if _skip_struct(r):
                clients.add(client)
    return sorted(clients)


def _skip_struct(r: Reader) -> bool:
    """Move past one struct; False for a Skip (a gap in a merged update, nobody's item)."""
    if r.pos >= len(r.data):
        raise ProtocolError("update ends inside its structs")
    info = r.data[r.pos]
    r.pos += 1
    ref = info & 0x1F
    if ref in (_GC, _SKIP):
        r.read_var_uint("length")
        return ref == _GC
    skip_item_header(r, info)
    _skip_content(r, ref)
    return True


def _skip_content(r: Reader, ref: int) -> None:
    if ref == _DELETED:
        r.read_var_uint("deleted length")
    elif ref == _JSON:
        for _ in range(r.read_var_uint("JSON count")):
            r.read_var_string("JSON")
    elif ref == _BINARY:
        r.read_var_bytes("binary")
    elif ref in (_STRING, _EMBED):
        r.read_var_string("string")
    elif ref == _FORMAT:
        r.read_var_string("format key")
        r.read_var_string("format value")
    elif ref == _TYPE:
        if r.read_var_uint("type ref") in (_XML_ELEMENT, _XML_HOOK):
            r.read_var_string("type name")
    elif ref == _ANY:
        for _ in range(r.read_var_uint("any count")):
            _skip_any(r)
    elif ref == _DOC:
        r.read_var_string("doc guid")
        _skip_any(r)
    else:
        raise ProtocolError(f"unknown content ref {ref} in update")


def _skip_any(r: Reader) -> None:
    """Move past one lib0 ``writeAny`` value, nested objects and arrays in it too, with a
    stack of its own (no recursion: a whiteboard's JSON value 1,000 objects deep is
    stored and synced, and the event list that reads it answered 400)."""
    # per open object or array: the values left to read in it, and whether each has a key
    stack: list[list[int]] = [[1, 0]]
    while stack:
        top = stack[-1]
        if top[0] == 0:
            stack.pop()
            continue
        top[0] -= 1
        if top[1]:
            r.read_var_string("object key")
        if r.pos >= len(r.data):
            raise ProtocolError("update ends inside a value")
        tag = r.data[r.pos]
        r.pos += 1
        if tag in _ANY_FIXED:
            r.pos += _ANY_FIXED[tag]
        elif tag == _ANY_VARINT:
            while True:
                if r.pos >= len(r.data):
                    raise ProtocolError("update ends inside a varInt")
                byte = r.data[r.pos]
                r.pos += 1
                if byte < 0x80:
                    break
        elif tag == _ANY_STRING:
            r.read_var_string("string value")
        elif tag == _ANY_OBJECT:
            stack.append([r.read_var_uint("object size"), 1])
        elif tag == _ANY_ARRAY:
            stack.append([r.read_var_uint("array size"), 0])
        elif tag == _ANY_BYTES:
            r.read_var_bytes("bytes value")
        else:
            raise ProtocolError(f"unknown value type {tag} in update")
        if r.pos > len(r.data):
            raise ProtocolError("update ends inside a value")
