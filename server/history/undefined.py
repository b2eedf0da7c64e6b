"""Values Yjs holds as ``undefined``, kept undefined when a restore writes them again.

A Yjs client may set an attribute or a map entry to ``undefined`` (y-prosemirror does
for a node attribute whose value is undefined: Milkdown's image ``title``); Yjs encodes
it as its own lib0 value (tag 127), apart from ``null`` (126). pycrdt reads both as
None and writes None as null, so a restore that copied such an element back wrote its
``title`` as null, and Milkdown refused the image.

So the version a restore copies from is read with every top-level undefined value of
an item (an attribute's, a map entry's, an array element's) replaced by ``MARK``, a
string nobody writes (``marked``): the restore sees where they are, and writes an
attribute or a map entry whose value is ``MARK`` as undefined (``set_undefined``):
pycrdt sets the key to None, then an item holding undefined is put right after it, as
a Yjs client's update would (the same key, the None item deleted by it). An array
element, or undefined nested inside an object, is written as null, as before.
"""

from __future__ import annotations

import secrets
from typing import Any

from pycrdt import Doc, Map, XmlElement, XmlText

from .. import protocol as P
from ..protocol import Reader, decode_state_vector
from ..updates import read_delete_set, skip_any, skip_item, skip_item_header

#: stands for undefined in a version read by ``marked`` (random: no document holds it)
MARK = f"\0palimpsest-undefined-{secrets.token_hex(8)}\0"
_MARK_ANY = bytes([119]) + P.write_var_string(MARK)  # lib0 any: a string

_UNDEFINED = 127
_ANY = 8
_HAS_ORIGIN = 0x80
_GC, _SKIP = 0, 10


def _rewritten(update: bytes) -> bytes | None:
    """`update` (v1) with each top-level undefined value of an item's content written as
    MARK; None when it holds none."""
    r = Reader(update)
    out = bytearray()
    found = False
    copied = 0  # update[:copied] is in `out`
    uint = r.read_var_uint
    for _ in range(uint("number of clients")):
        n = uint("number of structs")
        uint("client id")
        uint("first clock")
        for _ in range(n):
            info = update[r.pos]
            r.pos += 1
            if info in (_GC, _SKIP):
                uint("struct length")
                continue
            if info & 31 != _ANY:
                skip_item(r, info, {})
                continue
            # the header, then the values one by one
            skip_item_header(r, info)
            count = uint("any content length")
            for _ in range(count):
                if update[r.pos] == _UNDEFINED:
                    out += update[copied : r.pos]
                    out += _MARK_ANY
                    r.pos += 1
                    copied = r.pos
                    found = True
                else:
                    skip_any(r, 1)
    read_delete_set(r)
    if not found:
        return None
    out += update[copied:]
    return bytes(out)


def marked(version: Doc[Any]) -> Doc[Any]:
    """`version` itself when it holds no undefined value, else a copy of it whose
    top-level undefined values read as MARK."""
    update = version.get_update()
    rewritten = _rewritten(update)
    if rewritten is None:
        return version
    copy: Doc[Any] = Doc()
    copy.apply_update(rewritten)
    return copy


def set_undefined(live: Map[Any] | XmlElement | XmlText, key: str) -> None:
    """Set `key` of the map, or the attribute `key` of the XML node, `live` (integrated
    in a document, inside its transaction) to undefined."""
    if isinstance(live, Map):
        live[key] = None
    else:
        live.attributes[key] = None
    doc = live.doc
    client = doc.client_id
    clock = decode_state_vector(doc.get_state())[client]  # the None item's clock + 1
    item = bytes([_HAS_ORIGIN | _ANY]) + P.write_var_uint(client) + P.write_var_uint(clock - 1)
    item += P.write_var_uint(1) + bytes([_UNDEFINED])
    # one client, one struct from `clock`; an empty delete set
    head = P.write_var_uint(1) + P.write_var_uint(1)
    doc.apply_update(head + P.write_var_uint(client) + P.write_var_uint(clock) + item + b"\0")


def unmarked(value: Any) -> Any:
    """`value` as pycrdt reads the live document (undefined is None there)."""
    return None if value == MARK else value


__all__ = ["MARK", "marked", "set_undefined", "unmarked"]
