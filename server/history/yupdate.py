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


def _uint(d: bytes, p: int) -> tuple[int, int]:
    # unrolled for up to four bytes: a client id takes five, a clock one to three
    b = d[p]
    if b < 0x80:
        return b, p + 1
    n = b & 0x7F
    b = d[p + 1]
    if b < 0x80:
        return n | b << 7, p + 2
    n |= (b & 0x7F) << 7
    b = d[p + 2]
    if b < 0x80:
        return n | b << 14, p + 3
    n |= (b & 0x7F) << 14
    b = d[p + 3]
    if b < 0x80:
        return n | b << 21, p + 4
    n |= (b & 0x7F) << 21
    p += 3
    shift = 28
    while True:
        p += 1
        b = d[p]
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, p + 1
        shift += 7
        if shift > 70:
            raise Unsupported("varUint too long")


def _skip_bytes(d: bytes, p: int) -> int:
    n, p = _uint(d, p)
    return p + n


def _skip_any(d: bytes, p: int, depth: int = 0) -> int:
    if depth > 64:
        raise Unsupported("Any nested too deep")
    t = d[p]
    p += 1
    if t in (127, 126, 121, 120):  # undefined, null, false, true
        return p
    if t == 125:  # varInt
        while d[p] & 0x80:
            p += 1
        return p + 1
    if t == 124:
        return p + 4
    if t in (123, 122):
        return p + 8
    if t in (119, 116):  # string, bytes
        return _skip_bytes(d, p)
    if t == 118:  # object
        n, p = _uint(d, p)
        for _ in range(n):
            p = _skip_bytes(d, p)
            p = _skip_any(d, p, depth + 1)
        return p
    if t == 117:  # array
        n, p = _uint(d, p)
        for _ in range(n):
            p = _skip_any(d, p, depth + 1)
        return p
    raise Unsupported(f"Any of type {t}")


def _utf16_length(data: bytes) -> int:
    if data.isascii():
        return len(data)
    s = data.decode("utf-8", errors="surrogatepass")
    return len(s) + sum(1 for c in s if ord(c) > 0xFFFF)


def decode(update: bytes) -> tuple[list[Struct], list[tuple[int, int, int]]]:
    """The structs of `update` in their encoded order, and its delete set as
    (client, clock, length) ranges."""
    try:
        return _decode(update)
    except IndexError as e:
        raise Unsupported("truncated update") from e
    except UnicodeDecodeError as e:
        raise Unsupported("string is not UTF-8") from e


def _decode(d: bytes) -> tuple[list[Struct], list[tuple[int, int, int]]]:
    structs: list[Struct] = []
    u = _uint
    nclients, p = u(d, 0)
    for _ in range(nclients):
        nstructs, p = u(d, p)
        client, p = u(d, p)
        clock, p = u(d, p)
        for _ in range(nstructs):
            info = d[p]
            p += 1
            kind = info & 0x1F
            if kind == GC or kind == SKIP:
                raise Unsupported("GC or Skip struct")
            origin = right = None
            parent: str | ID | None = None
            sub = None
            if info & 0x80:
                oc, p = u(d, p)
                ok, p = u(d, p)
                origin = (oc, ok)
            if info & 0x40:
                rc, p = u(d, p)
                rk, p = u(d, p)
                right = (rc, rk)
            if not info & 0xC0:
                is_root, p = u(d, p)
                if is_root == 1:
                    n, p = u(d, p)
                    parent = d[p : p + n].decode()
                    p += n
                else:
                    pc, p = u(d, p)
                    pk, p = u(d, p)
                    parent = (pc, pk)
                if info & 0x20:
                    n, p = u(d, p)
                    sub = d[p : p + n].decode()
                    p += n
            data = None
            if kind == STRING:
                n, p = u(d, p)
                data = d[p : p + n]
                if len(data) != n:
                    raise Unsupported("truncated string")
                p += n
                length = _utf16_length(data)
            elif kind == DELETED:
                length, p = u(d, p)
            elif kind == EMBED or kind == BINARY:  # a JSON string, a buffer: one unit
                p = _skip_bytes(d, p)
                length = 1
            elif kind == FORMAT:
                p = _skip_bytes(d, _skip_bytes(d, p))
                length = 1
            elif kind == TYPE:
                ref, p = u(d, p)
                if ref in (_XML_ELEMENT, _XML_HOOK):
                    p = _skip_bytes(d, p)
                length = 1
            elif kind == JSON:
                length, p = u(d, p)
                for _ in range(length):
                    p = _skip_bytes(d, p)
            elif kind == ANY:
                length, p = u(d, p)
                for _ in range(length):
                    p = _skip_any(d, p)
            elif kind == SUBDOC:
                p = _skip_any(d, _skip_bytes(d, p))
                length = 1
            else:
                raise Unsupported(f"content kind {kind}")
            if length <= 0:
                raise Unsupported("empty struct")
            structs.append(Struct(client, clock, length, origin, right, parent, sub, kind, data))
            clock += length
    deletes: list[tuple[int, int, int]] = []
    nclients, p = u(d, p)
    for _ in range(nclients):
        client, p = u(d, p)
        n, p = u(d, p)
        for _ in range(n):
            clock, p = u(d, p)
            length, p = u(d, p)
            deletes.append((client, clock, length))
    if p != len(d):
        raise Unsupported("trailing bytes")
    return structs, deletes


__all__ = ["Struct", "Unsupported", "decode"]
