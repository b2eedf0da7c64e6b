"""What a Yjs update (v1 encoding) carries, read without applying it. Pure, no I/O.

Which clock ranges of which clients its structs cover, and its delete set: enough to
tell whether an update could change a document whose state vector and deletions are
known (the no-op rule in room.py), at a cost proportional to the update, not to the
document. Like Yjs's ``parseUpdateMeta`` plus ``readDeleteSet``.

pycrdt's ``get_state(update)`` is no substitute: for an update whose structs do not
start at clock 0 (every incremental update) it returns an empty state vector.

The v1 layout (yjs ``encoding.js``, ``UpdateEncoderV1``)::

    varUint(#clients) { varUint(#structs) varUint(client) varUint(first clock)
                        struct* }*
    delete set: varUint(#clients) { varUint(client) varUint(#ranges)
                                    { varUint(clock) varUint(length) }* }*

A struct is ``uint8(info)`` then: GC (info 0) and Skip (info 10) a varUint length; an
Item its origin IDs (info bits 8 and 7), its parent when it has neither (a varUint flag,
then a varString root name or an ID), its parent sub (bit 6) and its content (info &
31), whose length is what the item advances its client's clock by.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from dataclasses import dataclass

from pycrdt import get_state

from .errors import FATAL, ProtocolError, UnsupportedType
from .protocol import _MAX_VARUINT_BYTES, Reader, varuint_value, write_var_uint
from .ranges import Ranges, read_id_set

_BIT8, _BIT7, _BIT6 = 0x80, 0x40, 0x20
_GC, _SKIP = 0, 10
# content refs (yjs ``contentRefs``)
_DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC = range(1, 10)
_XML_ELEMENT, _XML_HOOK = 3, 5  # type refs that carry a name
_TEXT_TYPE, _XML_TEXT_TYPE = 2, 6


@dataclass(frozen=True, slots=True, init=False)
class UpdateMeta:
    #: clock ranges covered by GC structs and items (Skips excluded), per client
    structs: Ranges
    #: the delete set, as encoded (ranges per client, in the order sent)
    deletes: Ranges
    #: per client, one past the highest clock an item names as its left or right origin
    #: or its parent: what must exist for the update to integrate (the ownership rule)
    refs: dict[int, int]

    def __init__(self, structs: Ranges, deletes: Ranges, refs: dict[int, int]) -> None:
        # one per update received: the slots set through their descriptors, at half the
        # cost of the frozen dataclass's object.__setattr__ (see store/base.py's Event)
        _set_structs(self, structs)
        _set_deletes(self, deletes)
        _set_refs(self, refs)


_set_structs, _set_deletes, _set_refs = (
    getattr(UpdateMeta, f).__set__ for f in ("structs", "deletes", "refs")
)


#: one past the largest client id and clock a document holds (yrs): a client id is kept
#: in 53 bits (2^53 + x is read as x: another client's items, written over), a clock in
#: 32 (2^32 + x is read as x)
CLIENT_LIMIT = 1 << 53
CLOCK_LIMIT = 1 << 32


def decode_update_meta(update: bytes) -> UpdateMeta:
    """Read an update's struct ranges and delete set. Raises ProtocolError if it is not
    a well-formed v1 update (truncated, unknown struct or content, trailing bytes), or
    names a client id or a clock past what a document holds (CLIENT_LIMIT, CLOCK_LIMIT).

    Each update is read once on its way in (``Room.receive_update``), and what was read
    goes along with it (to admission, to the apply): nothing keeps the results."""
    fast = _keystroke(update) if type(update) is bytes else None
    if fast is not None:
        return fast  # (in bounds: _keystroke declines otherwise)
    if isinstance(update, ReadAhead):
        if isinstance(update.meta, ProtocolError):
            raise update.meta
        return update.meta
    meta = _read_meta(update)
    _check_bounds(meta)
    return meta


#: column buffers of a v2 update before its rest (yjs ``UpdateEncoderV2.toUint8Array``:
#: key clock, client, left clock, right clock, info, string, parent info, type ref, len)
_V2_COLUMNS = 9


#: why an update of no bytes at all is refused (yrs says only "Cannot encode state vector
#: from update"). No Yjs client sends one: an update that changes nothing is 0x00 0x00,
#: and that one is taken as the no-op it is
EMPTY_BYTES = "empty update: 0 bytes (an update that changes nothing is the 2 bytes 00 00)"


def not_v1(update: bytes, detail: str) -> str:
    """Why `update`, which is not a well-formed v1 update, is refused: `detail`, said to
    be v2 when it has the layout of a v2 update (a client that sent the bytes of
    ``Y.encodeStateAsUpdateV2`` or of an ``updateV2`` event): a varUint 0, nine
    length-prefixed column buffers, then the rest, at least a client count and a delete
    set. Most v2 updates start with two zero bytes, which a v1 reader (yrs's, Yjs's)
    takes for an empty update followed by bytes it ignores. An update of 0 bytes is
    said to be empty (EMPTY_BYTES)."""
    if not update:
        return EMPTY_BYTES
    r = Reader(update)
    try:
        v2 = r.read_var_uint("feature flag") == 0
        for _ in range(_V2_COLUMNS if v2 else 0):
            r.read_var_bytes("column")
    except ProtocolError:
        v2 = False
    if v2 and len(update) - r.pos >= 2:
        return f"not a Yjs v1 update (v2 encoding?): {detail}"
    return detail


#: why an update holding a Y.XmlHook is refused: yrs (pycrdt) reads no hook name, so it
#: neither decodes nor applies such an update, and the server could not hold it
XML_HOOK_UNSUPPORTED = "Y.XmlHook is not supported: the server's Yjs engine (yrs) cannot read it"


def unsupported(update: bytes) -> str | None:
    """Why `update`, which yrs could not read, is refused, when our own reader can say
    more: it is well formed but holds a type yrs lacks (a Y.XmlHook, which yrs reports
    only as "Cannot encode state vector from update"). None otherwise."""
    try:
        decode_update_meta(update)
    except UnsupportedType as e:
        return str(e)
    except ProtocolError:
        pass
    return None


def _check_bounds(meta: UpdateMeta) -> None:
    """Every client id below 2^53 and every clock below 2^32: the ownership and gap
    checks read the ids as sent, the document as it keeps them, and an id past 53 bits
    wrote into another client's items (a user's text replaced, their later edits lost)."""
    for ranges in (meta.structs, meta.deletes):
        for client, spans in ranges.items():
            if client >= CLIENT_LIMIT:
                raise ProtocolError(f"client id {client} is past 2^53 - 1, the largest Yjs keeps")
            for _, end in spans:
                if end > CLOCK_LIMIT:
                    raise ProtocolError(
                        f"client {client} clock {end - 1} is past 2^32 - 1, the largest Yjs keeps"
                    )
    for client, end in meta.refs.items():
        if client >= CLIENT_LIMIT or end > CLOCK_LIMIT:
            raise ProtocolError(f"an item refers to client {client} clock {end - 1}: out of range")


#: one varUint, as a regex group (continuation bytes, then a last one)
_V = rb"([\x80-\xff]{0,%d}[\x00-\x7f])" % (_MAX_VARUINT_BYTES - 1)
#: the update a keystroke makes: one client, one struct, a string item after and/or
#: before another (info 0xC4, 0x84 or 0x44), then its length; an empty delete set follows
#: the string (checked apart). Groups: client, clock, then the origins (4, 2 or 2 of them),
#: then the string's byte length.
_KEYSTROKE = re.compile(
    rb"\x01\x01" + _V + _V
    + rb"(?:\xc4" + _V * 4 + rb"|\x84" + _V * 2 + rb"|\x44" + _V * 2 + rb")" + _V,
    re.DOTALL,
)  # fmt: skip


def _keystroke(update: bytes) -> UpdateMeta | None:
    """:func:`_read_meta` of the commonest update, by one regex match instead of a read
    per field (2.8 instead of 5 us for a typed character); None for any other shape,
    which the general reader then reads (and judges)."""
    m = _KEYSTROKE.match(update)
    if m is None:
        return None
    end = m.end()
    g = m.groups()
    length = varuint_value(g[10])
    if update[end + length :] != b"\x00" or not length:
        return None  # a delete set, trailing bytes, a truncated string, an empty one
    try:
        text = update[end : end + length].decode("utf-8")
    except UnicodeDecodeError:
        return None
    clock = varuint_value(g[1])
    refs: dict[int, int] = {}
    if g[2] is not None:  # both origins
        refs[varuint_value(g[2])] = varuint_value(g[3]) + 1
        c, k = varuint_value(g[4]), varuint_value(g[5]) + 1
    else:
        i = 6 if g[6] is not None else 8
        c, k = varuint_value(g[i]), varuint_value(g[i + 1]) + 1
    if refs.get(c, 0) < k:
        refs[c] = k
    client, end = varuint_value(g[0]), clock + utf16_length(text)
    if refs.get(client, 0) > clock:
        return None  # it names itself or later as a neighbour (_names_itself)
    if client >= CLIENT_LIMIT or end > CLOCK_LIMIT or c >= CLIENT_LIMIT or k > CLOCK_LIMIT:
        return None  # (the general reader says what is wrong)
    if len(refs) > 1 and any(x >= CLIENT_LIMIT or y > CLOCK_LIMIT for x, y in refs.items()):
        return None
    return UpdateMeta({client: [(clock, end)]}, {}, refs)


def _read_meta(update: bytes) -> UpdateMeta:
    """The general reader: any well-formed v1 update, field by field."""
    r = Reader(update)
    uint = r.read_var_uint
    size = len(update)
    structs: Ranges = {}
    refs: dict[int, int] = {}
    seen: set[int] = set()
    for _ in range(uint("number of clients")):
        n = uint("number of structs")
        client = uint("client id")
        clock = first = uint("first clock")
        if client >= CLIENT_LIMIT:  # (a Skip's too, which `structs` leaves out)
            raise ProtocolError(f"client id {client} is past 2^53 - 1, the largest Yjs keeps")
        if client in seen:
            # Yjs and yrs write each client's structs once; two sections of one client
            # (overlapping clocks: "x"@0 and "yz"@0) made yrs panic applying them, after
            # they were logged: the document could not be read again
            raise ProtocolError(f"client {client} has two sets of structs in one update")
        seen.add(client)
        for _ in range(n):
            if r.pos >= size:
                raise ProtocolError(f"truncated update: expected struct info at offset {r.pos}")
            info = update[r.pos]
            r.pos += 1
            if info == _GC or info == _SKIP:
                length = uint("struct length")
                if info == _GC:
                    if not length:
                        # it covers nothing, so no rule saw its client id, and one at
                        # another user's first clock erased their text at the next
                        # load. (Items of length 0, which yrs itself writes, load fine.)
                        raise ProtocolError(
                            f"a GC of length 0 at client {client} clock {clock}: not an update"
                        )
                    _add(structs, client, clock, clock + length)
            elif info & 31 == _STRING and info & (_BIT8 | _BIT7):
                # the common item, typed text after or before another: inline
                if info & _BIT8:
                    c, k = uint("origin client"), uint("origin clock")
                    if refs.get(c, 0) <= k:
                        refs[c] = k + 1
                    if c == client and k >= clock:
                        raise ProtocolError(_names_itself(client, clock, "origin", k))
                if info & _BIT7:
                    c, k = uint("right origin client"), uint("right origin clock")
                    if refs.get(c, 0) <= k:
                        refs[c] = k + 1
                    if c == client and k >= clock:
                        raise ProtocolError(_names_itself(client, clock, "right origin", k))
                length = utf16_length(r.read_var_string("string content"))
                _add(structs, client, clock, clock + length)
            else:
                length = skip_item(r, info, refs, (client, clock))
                _add(structs, client, clock, clock + length)
            clock += length
        if clock > CLOCK_LIMIT:
            raise ProtocolError(f"client {client} clock {clock - 1} is past 2^32 - 1")
        if clock == first:
            # no struct, or only items of length 0: nothing Yjs or yrs writes (yrs's own
            # item of length 0 comes with the next item at its clock), and yrs panics
            # applying it to a document that knows the client: a Python client that
            # received it died, the room closed its sender after logging it
            raise ProtocolError(
                f"client {client}'s structs at clock {first} cover no clock: not an update"
            )
    deletes = read_delete_set(r)
    r.expect_end("the update's delete set")
    return UpdateMeta(structs, deletes, refs)


def too_many_new_clients(update: bytes, known: Container[int], cap: int) -> str | None:
    """Why `update` is refused when it writes items of more than `cap` client ids that
    are not in `known` (the document's), None otherwise. Each new client id costs every
    later edit of the document (its state vector, the owner map), and an update of many
    tiny items under as many ids costs the most to read and apply: 32,000 of them held
    the event loop for seconds. The client sections are read one by one and the reading
    stops at the first id past the cap; an update that does not name more clients than
    `cap` in its first varUint is not read at all. One that does not parse up to there
    is left to the general reader (None), which says what is wrong with it."""
    r = Reader(update)
    uint = r.read_var_uint
    try:
        clients = uint("number of clients")
        if clients <= cap:
            return None
        new = 0
        refs: dict[int, int] = {}
        for _ in range(clients):
            n = uint("number of structs")
            client = uint("client id")
            uint("first clock")
            if client not in known:
                new += 1
                if new > cap:
                    return (
                        f"the update writes items of more than {cap} new client ids (the "
                        f"limit, max_new_clients_per_update); nothing of it was applied"
                    )
            for _ in range(n):
                info = _read_byte(r, "struct info")
                if info == _GC or info == _SKIP:
                    uint("struct length")
                else:
                    skip_item(r, info, refs)
    except ProtocolError:
        return None
    return None


class ReadAhead(bytes):
    """An update read ahead (:func:`read_ahead`): its bytes, with what was found in
    them. It goes where the update goes (the room's checks, the event logged, the
    extensions' hooks), and the readers below take what was found instead of walking
    the update again."""

    meta: UpdateMeta | ProtocolError
    astral: dict[int, list[int]] | None
    formats: Ranges | None
    #: yrs reads it (pycrdt's get_state did not raise)
    yrs_reads: bool


def read_ahead(update: bytes) -> ReadAhead:
    """Read `update` as the room's path will (its meta, the characters past U+FFFF, the
    formatting marks; whether yrs decodes it), to be called in a worker thread for a
    large update (a whole document's sync step 2); hand what it returns to the room in
    its place: the readers on the event loop then take what was found here (a step 2
    of 32,000 client ids took 0.5-0.7 s per walk, four of them, all on the loop)."""
    out = ReadAhead(update)
    try:
        out.meta = decode_update_meta(update)
    except ProtocolError as e:
        out.meta = e.with_traceback(None)
    try:
        get_state(update)
        out.yrs_reads = True
    except FATAL:
        raise
    except BaseException:  # pyo3 PanicException is one: the loop's path says why
        out.yrs_reads = False
    out.astral = out.formats = None
    if not isinstance(out.meta, ProtocolError):
        out.astral = _astral_starts(update)
        out.formats = marks_and_end(update)[0]
    return out


def yrs_reads(update: bytes) -> bool:
    """Whether `update` was read ahead (read_ahead) and yrs decodes it."""
    return isinstance(update, ReadAhead) and update.yrs_reads


def format_clocks(update: bytes) -> Ranges:
    """The clocks of the formatting marks (``ContentFormat`` items: where a bold or a
    link starts and ends in a Y.Text or Y.XmlText) an update holds, per client. A
    keystroke holds none, and is told by one regex match (_KEYSTROKE)."""
    if _KEYSTROKE.match(update) is not None:
        return {}  # one client, one text item (whatever follows is the delete set)
    if isinstance(update, ReadAhead) and update.formats is not None:
        return update.formats
    return marks_and_end(update)[0]


def marks_and_end(update: bytes) -> tuple[Ranges, int]:
    """:func:`format_clocks` of any update, and the offset where its structs end (its
    delete set begins)."""
    out: Ranges = {}
    r = Reader(update)
    for client, clock, info, _origin, _right, _text, length, _type in _items(update, r):
        if info & 31 == _FORMAT:
            _add(out, client, clock, clock + length)
    return out, r.pos


#: a UTF-8 sequence of four bytes: a character past U+FFFF (an emoji, ...), which Yjs
#: counts as two clocks (a UTF-16 surrogate pair). Binary fields match it now and then:
#: a match only means the update is read to find out.
_ASTRAL = re.compile(rb"[\xf0-\xf4][\x80-\xbf]{3}")


def astral_starts(update: bytes) -> dict[int, list[int]]:
    """Per client, the clock at which each character past U+FFFF in the update's string
    items begins (its first UTF-16 half): a split right after such a clock is a split
    inside the character (server.surrogates)."""
    if _ASTRAL.search(update) is None:
        return {}
    if isinstance(update, ReadAhead) and update.astral is not None:
        return update.astral
    return _astral_starts(update)


def _astral_starts(update: bytes) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for client, clock, _info, _origin, _right, text, _length, _type in _items(update):
        if text is None or text.isascii():
            continue
        at = clock
        for ch in text:
            if ord(ch) > 0xFFFF:
                out.setdefault(client, []).append(at)
                at += 2
            else:
                at += 1
    return out


def split_points(update: bytes) -> list[tuple[int, int]]:
    """Where in the document an update splits existing items: (client, clock) pairs, each
    the clock at which the part after the split begins: after an item's left origin,
    at its right origin, and at both ends of each deleted range."""
    out: list[tuple[int, int]] = []
    r = Reader(update)
    for _client, _clock, _info, origin, right, _text, _length, _type in _items(update, r):
        if origin is not None:
            out.append((origin[0], origin[1] + 1))
        if right is not None:
            out.append(right)
    for client, spans in read_delete_set(r).items():
        for start, end in spans:
            out.append((client, start))
            out.append((client, end))
    return out


_ID = tuple[int, int]
#: (client, clock, info byte, left origin, right origin, its text (string items), length,
#: its type ref (type items: _TEXT_TYPE, _XML_TEXT_TYPE, ...))
_Item = tuple[int, int, int, _ID | None, _ID | None, str | None, int, int | None]


def _items(update: bytes, r: Reader | None = None) -> list[_Item]:
    """Every Item of an update (see _Item); GCs and Skips are passed over. `r` is left
    at the delete set."""
    r = r or Reader(update)
    uint = r.read_var_uint
    out: list[_Item] = []
    for _ in range(uint("number of clients")):
        n = uint("number of structs")
        client = uint("client id")
        clock = uint("first clock")
        for _ in range(n):
            info = _read_byte(r, "struct info")
            if info == _GC or info == _SKIP:
                clock += uint("struct length")
                continue
            origin = right = None
            if info & _BIT8:
                origin = (uint("origin client"), uint("origin clock"))
            if info & _BIT7:
                right = (uint("right origin client"), uint("right origin clock"))
            if origin is None and right is None:
                _skip_parent(r, info)
            text: str | None = None
            type_ref: int | None = None
            if info & 31 == _STRING:
                text = r.read_var_string("string content")
                length = utf16_length(text)
            else:
                if info & 31 == _TYPE and r.pos < len(r.data):
                    type_ref = r.data[r.pos]  # (a varUint below 128: one byte)
                length = _skip_content(r, info)
            out.append((client, clock, info, origin, right, text, length, type_ref))
            clock += length
    return out


def visible_items(update: bytes) -> list[tuple[int, int, int, str | None]]:
    """(client, clock, length, text) of each item of an update that shows: its string for
    text, None for an element, an embed or a value. Left out: formatting marks, deleted
    content (what garbage collection left of an item), and texts as such (a Y.Text, a
    Y.XmlText: their characters show)."""
    return [
        (client, clock, length, text)
        for client, clock, info, _origin, _right, text, length, type_ref in _items(update)
        if info & 31 not in (_FORMAT, _DELETED) and type_ref not in (_TEXT_TYPE, _XML_TEXT_TYPE)
    ]


def _skip_parent(r: Reader, info: int, refs: dict[int, int] | None = None) -> None:
    """Skip an Item's parent (it has no origin), noting a parent item's ID in `refs`.
    A parent info of 1 is followed by a root's name, any other by an item's ID: as Yjs
    (``readParentInfo``) and yrs read it (reading a name for any non-zero info misread
    updates that yrs applies)."""
    if r.read_var_uint("parent info") == 1:
        r.read_var_bytes("parent type name")
    else:
        client, clock = r.read_var_uint("parent client"), r.read_var_uint("parent clock")
        if refs is not None:
            _ref(refs, client, clock)
    if info & _BIT6:
        r.read_var_bytes("parent sub")


def read_delete_set(r: Reader) -> Ranges:
    return read_id_set(r, "delete set")


def _add(out: Ranges, client: int, start: int, end: int) -> None:
    if end <= start:
        return
    got = out.setdefault(client, [])
    if got and got[-1][1] == start:
        got[-1] = (got[-1][0], end)
    else:
        got.append((start, end))


def _read_byte(r: Reader, what: str) -> int:
    if r.pos >= len(r.data):
        raise ProtocolError(f"truncated update: expected {what} at offset {r.pos}")
    b = r.data[r.pos]
    r.pos += 1
    return b


def _skip(r: Reader, n: int, what: str) -> None:
    if r.pos + n > len(r.data):
        raise ProtocolError(f"truncated update: {what} needs {n} bytes at offset {r.pos}")
    r.pos += n


def _ref(refs: dict[int, int], client: int, clock: int) -> None:
    if refs.get(client, 0) <= clock:
        refs[client] = clock + 1


def _names_itself(client: int, clock: int, which: str, k: int) -> str:
    """Why an item whose origin or right origin is itself or a later item of its own
    client is refused: it can never be integrated. pycrdt 0.14's ``Text.insert`` at a
    UTF-8 byte index inside a character past U+FFFF made one (right origin = its own
    id); yrs kept it pending for good (logged, never in the text, the sender's flush
    never confirmed), and Yjs's applyUpdate throws "Unexpected case" on it."""
    return (  # (what matters first: a close reason is cut at 123 bytes)
        f"an item names itself or a later item as its {which}, so it can never be "
        f"integrated: {client}:{clock} names {client}:{k}"
    )


def skip_item(r: Reader, info: int, refs: dict[int, int], at: tuple[int, int] | None = None) -> int:
    """Skip an Item's header and content, noting the IDs it refers to in `refs`; return
    its length (clock units). `at`: the item's own id, when an origin naming it or a
    later clock of its client is to be refused (ProtocolError)."""
    skip_item_header(r, info, refs, at)
    return _skip_content(r, info)


def skip_item_header(
    r: Reader,
    info: int,
    refs: dict[int, int] | None = None,
    at: tuple[int, int] | None = None,
) -> None:
    """Skip an Item's origins, or its parent (and key), up to its content, noting the
    IDs it refers to in `refs` if given; `at`: as skip_item's."""
    if info & _BIT8:
        client, clock = r.read_var_uint("origin client"), r.read_var_uint("origin clock")
        if refs is not None:
            _ref(refs, client, clock)
        if at is not None and client == at[0] and clock >= at[1]:
            raise ProtocolError(_names_itself(at[0], at[1], "origin", clock))
    if info & _BIT7:
        client = r.read_var_uint("right origin client")
        clock = r.read_var_uint("right origin clock")
        if refs is not None:
            _ref(refs, client, clock)
        if at is not None and client == at[0] and clock >= at[1]:
            raise ProtocolError(_names_itself(at[0], at[1], "right origin", clock))
    if not info & (_BIT8 | _BIT7):
        _skip_parent(r, info, refs)


def _skip_content(r: Reader, info: int) -> int:
    """Skip an Item's content (its header read); return its length (clock units)."""
    ref = info & 31
    if ref == _DELETED:
        return r.read_var_uint("deleted length")
    if ref == _JSON:
        n = r.read_var_uint("JSON content length")
        for _ in range(n):
            r.read_var_bytes("JSON value")
        return n
    if ref == _BINARY:
        r.read_var_bytes("binary content")
        return 1
    if ref == _STRING:
        return utf16_length(r.read_var_string("string content"))
    if ref == _EMBED:
        r.read_var_bytes("embed")
        return 1
    if ref == _FORMAT:
        r.read_var_bytes("format key")
        r.read_var_bytes("format value")
        return 1
    if ref == _TYPE:
        type_ref = r.read_var_uint("type ref")
        if type_ref == _XML_HOOK:
            raise UnsupportedType(XML_HOOK_UNSUPPORTED)
        if type_ref == _XML_ELEMENT:
            r.read_var_bytes("type name")
        return 1
    if ref == _ANY:
        n = r.read_var_uint("any content length")
        skip_any(r, n)
        return n
    if ref == _DOC:
        r.read_var_bytes("subdocument guid")
        skip_any(r, 1)
        return 1
    raise ProtocolError(f"unknown item content ref {ref} (info byte {info}) at offset {r.pos}")


def utf16_length(text: str) -> int:
    # Yjs clocks count UTF-16 code units; astral characters count two
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def skip_any(r: Reader, count: int) -> None:
    """Skip `count` lib0 ``any`` values, iteratively (nesting depth is attacker-chosen)."""
    # a stack of open containers: [values left, whether each value follows a key]
    stack: list[list[int]] = [[count, 0]]
    while stack:
        top = stack[-1]
        if top[0] == 0:
            stack.pop()
            continue
        top[0] -= 1
        if top[1]:
            r.read_var_bytes("object key")
        tag = _read_byte(r, "any value tag")
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            continue
        if tag == 125:  # varInt
            while _read_byte(r, "varInt") & 0x80:
                pass
        elif tag == 124:
            _skip(r, 4, "float32")
        elif tag in (123, 122):
            _skip(r, 8, "float64/bigint")
        elif tag in (119, 116):  # string, Uint8Array
            r.read_var_bytes("any string or bytes")
        elif tag == 118:  # object: n (key, value) pairs
            stack.append([r.read_var_uint("object size"), 1])
        elif tag == 117:  # array
            stack.append([r.read_var_uint("array length"), 0])
        else:
            raise ProtocolError(f"unknown any value tag {tag} at offset {r.pos - 1}")


_Struct = tuple[int, int, int, int, dict[int, int] | None]


def _structs_of(update: bytes) -> tuple[list[tuple[int, list[_Struct]]], Ranges]:
    """A v1 update's structs, per client in clock order, each as (start offset, end
    offset, clock, length, the clocks it names per client: None for a skip, after which
    nothing is contiguous), and its delete set."""
    r = Reader(update)
    uint = r.read_var_uint
    runs: list[tuple[int, list[_Struct]]] = []
    for _ in range(uint("number of clients")):
        n = uint("number of structs")
        client = uint("client id")
        clock = uint("first clock")
        structs: list[_Struct] = []
        for _ in range(n):
            start = r.pos
            info = _read_byte(r, "struct info")
            refs: dict[int, int] | None = {}
            if info == _GC or info == _SKIP:
                length = uint("struct length")
                if info == _SKIP:
                    refs = None  # (what follows a skip is not contiguous)
            else:
                assert refs is not None
                length = skip_item(r, info, refs)
            structs.append((start, r.pos, clock, length, refs))
            clock += length
        runs.append((client, structs))
    return runs, read_delete_set(r)


def _take(
    runs: list[tuple[int, list[_Struct]]], taken: list[int], have: Callable[[int], int],
    reach: dict[int, int],
) -> list[tuple[int, list[_Struct]]]:  # fmt: skip
    """Take, per client of `runs`, the structs past `taken` that apply on what `have`
    says is held (growing `reach` and `taken` as they are taken); the ones taken."""
    got: dict[int, list[_Struct]] = {}
    progress = True
    while progress:
        progress = False
        for i, (client, structs) in enumerate(runs):
            j = taken[i]
            while j < len(structs):
                _start, _end, clock, length, refs = structs[j]
                if refs is None or clock > have(client):
                    break
                if any(need > have(c) for c, need in refs.items()):
                    break
                if clock + length > have(client):
                    got.setdefault(i, []).append(structs[j])
                    reach[client] = clock + length
                j += 1
            if j > taken[i]:
                taken[i] = j
                progress = True
    return [(runs[i][0], structs) for i, structs in sorted(got.items())]


_Dels = list[tuple[int, list[tuple[int, int]]]]


def _encode_part(update: bytes, chosen: list[tuple[int, list[_Struct]]], dels: _Dels) -> bytes:
    out = bytearray(write_var_uint(len(chosen)))
    for client, structs in chosen:
        out += write_var_uint(len(structs)) + write_var_uint(client)
        out += write_var_uint(structs[0][2])
        for start, end, *_ in structs:
            out += update[start:end]
    out += write_var_uint(len(dels))
    for client, kept in dels:
        out += write_var_uint(client) + write_var_uint(len(kept))
        for a, b in kept:
            out += write_var_uint(a) + write_var_uint(b - a)
    return bytes(out)


def _deletions_between(
    deletes: Ranges, lo: Callable[[int], int], hi: Callable[[int], int]
) -> _Dels:
    """The deletions of `deletes` of items from clock lo(client) up to hi(client)."""
    out = []
    for client, spans in deletes.items():
        a0, b0 = lo(client), hi(client)
        kept = [(max(a, a0), min(b, b0)) for a, b in spans if a < b0 and b > a0]
        if kept:
            out.append((client, kept))
    return out


def ready_part(update: bytes, held: Callable[[int], int]) -> bytes | None:
    """The part of v1 `update` that applies now to a document that holds, per client id,
    the items below `held(client)`: per client, its structs in clock order up to the
    first one that starts past what is held or names an item (origin, right origin,
    parent) that neither the document nor the part holds; whole structs, as they are
    (an item typed on and merged names only what was there when its first character
    was), so the part is a valid update, and the deletions of items held. None when the
    part would write no item the document lacks. Used for a sync step 2 that has to wait
    for another user's items (server.resync): what of it does not build on them is
    taken now, so two tabs each waiting for the other's edits both go on."""
    runs, deletes = _structs_of(update)
    reach: dict[int, int] = {}

    def have(client: int) -> int:
        got = reach.get(client)
        return held(client) if got is None else got

    chosen = _take(runs, [0] * len(runs), have, reach)
    if not chosen:
        return None
    return _encode_part(update, chosen, _deletions_between(deletes, lambda c: 0, have))


def ready_parts(
    updates: list[bytes], held: Callable[[int], int]
) -> tuple[list[tuple[int, bytes]], list[bool]]:
    """What of several v1 `updates` (the held sync step 2s of one document, each of
    another user) applies now, together, to a document that holds per client id the
    items below `held(client)`: parts (the index of the update each is of, the part) in
    the order they apply in, each a valid update that names only items the document or
    the parts before it hold. Two users whose lost edits build on each other's
    (a1, b1 on a1, a2 on b1, …) each hold a step 2 that waits for the other's: taken one
    at a time (ready_part), that took a round trip to the client per turn of theirs, and
    for good once one of them left. A part holds whole structs of its own update only,
    so each stays its sender's; after the items, each update's deletions of items held
    then (past what its parts carried). Also, per update, whether the parts carry all
    of it (nothing of it waits any more)."""
    parsed = [_structs_of(u) for u in updates]
    taken = [[0] * len(runs) for runs, _ in parsed]
    reach: dict[int, int] = {}

    def have(client: int) -> int:
        got = reach.get(client)
        return held(client) if got is None else got

    dels_upto: list[dict[int, int]] = [{} for _ in updates]
    out: list[tuple[int, bytes]] = []
    progress = True
    while progress:
        progress = False
        for i, (runs, deletes) in enumerate(parsed):
            chosen = _take(runs, taken[i], have, reach)
            if not chosen:
                continue
            progress = True
            upto = dels_upto[i]
            dels = _deletions_between(deletes, lambda c: upto.get(c, 0), have)  # noqa: B023
            for client, _ in dels:
                upto[client] = have(client)
            out.append((i, _encode_part(updates[i], chosen, dels)))
    for i, (_runs, deletes) in enumerate(parsed):
        upto = dels_upto[i]
        dels = _deletions_between(deletes, lambda c: upto.get(c, 0), have)  # noqa: B023
        if dels:
            out.append((i, _encode_part(updates[i], [], dels)))
    done = [
        all(t == len(structs) for t, (_, structs) in zip(taken[i], runs, strict=True))
        and all(b <= have(c) for c, spans in deletes.items() for _, b in spans)
        for i, (runs, deletes) in enumerate(parsed)
    ]
    return out, done
