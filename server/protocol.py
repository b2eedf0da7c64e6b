"""Pure encode/decode of y-websocket frames. No I/O.

A frame is ``varUint(message type) + payload``:

- ``0`` sync: ``varUint(sub type) + varUint8Array(payload)`` where the sub type is
  ``0`` step 1 (a state vector), ``1`` step 2 (an update) or ``2`` update.
- ``1`` awareness: ``varUint8Array(awareness update)``.
- ``2`` auth: ``varUint(0) + varString(reason)`` = permission denied.
- ``3`` query awareness: no payload.
- ``100`` Palimpsest extension: ``varString(JSON object)``. Plain y-websocket clients
  never receive it unless they sent one first (that is how a client opts in).

Decoding is strict: a truncated varint, an unknown type, trailing bytes or a length
that runs past the end raise :class:`~server.errors.ProtocolError` saying what was
expected and what arrived.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .bounded_json import loads_bounded
from .errors import FrameTooLarge, ProtocolError

MSG_SYNC = 0
MSG_AWARENESS = 1
MSG_AUTH = 2
MSG_QUERY_AWARENESS = 3
MSG_EXTENSION = 100

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

AUTH_PERMISSION_DENIED = 0

_MAX_VARUINT_BYTES = 10  # 64-bit values at most; lib0 writes up to 53 bits


# --- primitives -------------------------------------------------------------------


def write_var_uint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varUint must be >= 0, got {value}")
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def write_var_string(text: str) -> bytes:
    return write_var_bytes(text.encode("utf-8"))


#: a varUint of 4 to _MAX_VARUINT_BYTES bytes (continuation bytes, then a last one)
_LONG_VARUINT = re.compile(rb"[\x80-\xff]{3,%d}[\x00-\x7f]" % (_MAX_VARUINT_BYTES - 1))
#: long varUints seen, by their bytes: client ids repeat in every update of a client
_LONG_VALUES: dict[bytes, int] = {}
_LONG_VALUES_MAX = 4096


def _decode_long(raw: bytes) -> int:
    result = 0
    for i, byte in enumerate(raw):
        result |= (byte & 0x7F) << (7 * i)
    return result


def varuint_value(raw: bytes) -> int:
    """The value of one whole varUint's bytes; long ones (client ids, the same few again
    and again) decoded once and remembered. Two and three bytes (clocks and positions up
    to 2 million, each a different value) are computed: remembered, they would only push
    the client ids out."""
    n = len(raw)
    if n == 1:
        return raw[0]
    if n == 2:
        return (raw[0] & 0x7F) | (raw[1] << 7)
    if n == 3:
        return (raw[0] & 0x7F) | ((raw[1] & 0x7F) << 7) | (raw[2] << 14)
    got = _LONG_VALUES.get(raw)
    if got is None:
        got = _decode_long(raw)
        if len(_LONG_VALUES) >= _LONG_VALUES_MAX:
            _LONG_VALUES.clear()
        _LONG_VALUES[raw] = got
    return got


class Reader:
    """A cursor over a frame; every read checks bounds."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read_var_uint(self, what: str = "varUint") -> int:
        data = self.data
        pos = self.pos
        if pos + 2 < len(data):
            # most varUints are one to three bytes (lengths, counts, clocks): no loop
            byte = data[pos]
            if byte < 0x80:
                self.pos = pos + 1
                return byte
            b1 = data[pos + 1]
            if b1 < 0x80:
                self.pos = pos + 2
                return (byte & 0x7F) | (b1 << 7)
            b2 = data[pos + 2]
            if b2 < 0x80:
                self.pos = pos + 3
                return (byte & 0x7F) | ((b1 & 0x7F) << 7) | (b2 << 14)
            if type(data) is bytes:
                # longer: a Yjs client id (53 bits, 7-8 bytes) most often, the same few
                # again and again: scanned in C, decoded once
                m = _LONG_VARUINT.match(data, pos)
                if m is not None:
                    self.pos = m.end()
                    return varuint_value(m.group())
        elif pos < len(data) and data[pos] < 0x80:
            self.pos = pos + 1
            return data[pos]
        result = 0
        shift = 0
        end = min(pos + _MAX_VARUINT_BYTES, len(data))
        while pos < end:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return result
            shift += 7
        if pos >= len(data) and shift < 7 * _MAX_VARUINT_BYTES:
            raise ProtocolError(
                f"truncated {what}: expected another byte at offset {pos}, "
                f"frame ends at {len(data)}"
            )
        raise ProtocolError(f"{what} longer than {_MAX_VARUINT_BYTES} bytes")

    def read_var_bytes(self, what: str = "payload") -> bytes:
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] < 0x80:  # a one-byte length
            length = data[pos]
            self.pos = pos + 1
        else:
            length = self.read_var_uint(f"length of {what}")
        end = self.pos + length
        if end > len(self.data):
            raise ProtocolError(
                f"{what} declares {length} bytes but only {len(self.data) - self.pos} remain"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def read_var_string(self, what: str = "string") -> str:
        raw = self.read_var_bytes(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"{what} is not valid UTF-8: {e}") from e

    def expect_end(self, what: str) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(
                f"{len(self.data) - self.pos} unexpected trailing bytes after {what}"
            )


# --- messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


@dataclass(frozen=True, slots=True)
class AuthMessage:
    kind: int
    reason: str


@dataclass(frozen=True, slots=True)
class Extension:
    body: dict[str, Any]


Message = (
    SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate | QueryAwareness | AuthMessage | Extension
)


def sync_update_of(frame: bytes) -> bytes | None:
    """The update of a sync update frame (type 0, 2) whose length takes one or two bytes,
    as :func:`decode` would read it; None for any other frame (``decode`` reads and judges
    those). An editor's every keystroke is such a frame: this skips the Reader and the
    message object (a third of decoding one)."""
    n = len(frame)
    if n < 3 or frame[0] != MSG_SYNC or frame[1] != SYNC_UPDATE:
        return None
    size = frame[2]
    if size < 0x80:
        return frame[3:] if n == 3 + size else None
    if n < 4 or frame[3] >= 0x80:
        return None
    return frame[4:] if n == 4 + ((size & 0x7F) | (frame[3] << 7)) else None


#: message types a client sends that the server reads; any other is ignored (ignored_type)
SERVER_READS = frozenset({MSG_SYNC, MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_EXTENSION})
#: ignored message types up to this one are counted under their number, the rest together
TYPE_LABELS_UP_TO = 15


def ignored_type(frame: bytes) -> int | None:
    """The message type of a frame the server ignores, or None for one it reads.

    As y-websocket's server does, the server ignores a message type the protocol does
    not define (an app's own, added with y-websocket's ``messageHandlers``: closing
    the socket for it cut the app off, and y-websocket 2.x reconnected in a loop) and
    an auth message from a client (they go from the server to clients). Their bodies
    are not read. A frame whose type cannot be read is refused (ProtocolError)."""
    if not frame:
        raise ProtocolError("empty frame: expected a varUint message type")
    mtype = frame[0] if frame[0] < 0x80 else Reader(frame).read_var_uint("message type")
    return None if mtype in SERVER_READS else mtype


def type_label(mtype: int) -> str:
    """A metrics label for an ignored message type: its number up to TYPE_LABELS_UP_TO,
    ``other`` past it (a client cannot make a new series per frame)."""
    return str(mtype) if mtype <= TYPE_LABELS_UP_TO else "other"


def decode(frame: bytes) -> Message:
    """Decode one frame, or raise ProtocolError."""
    if not frame:
        raise ProtocolError("empty frame: expected a varUint message type")
    r = Reader(frame)
    mtype = r.read_var_uint("message type")
    msg: Message
    if mtype == MSG_SYNC:
        sub = r.read_var_uint("sync message type")
        if sub == SYNC_STEP1:
            msg = SyncStep1(r.read_var_bytes("state vector"))
        elif sub == SYNC_STEP2:
            msg = SyncStep2(r.read_var_bytes("sync step 2 update"))
        elif sub == SYNC_UPDATE:
            msg = SyncUpdate(r.read_var_bytes("update"))
        else:
            raise ProtocolError(f"unknown sync message type {sub}: expected 0, 1 or 2")
    elif mtype == MSG_AWARENESS:
        msg = AwarenessUpdate(r.read_var_bytes("awareness update"))
    elif mtype == MSG_QUERY_AWARENESS:
        msg = QueryAwareness()
    elif mtype == MSG_AUTH:
        kind = r.read_var_uint("auth message type")
        msg = AuthMessage(kind, r.read_var_string("auth reason"))
    elif mtype == MSG_EXTENSION:
        text = r.read_var_string("extension message")
        try:
            body = loads_bounded(text)
        except ValueError as e:
            raise ProtocolError(f"extension message is not JSON: {str(e)[:120]}") from e
        if not isinstance(body, dict):
            raise ProtocolError(
                f"extension message must be a JSON object, got {type(body).__name__}"
            )
        msg = Extension(body)
    else:
        raise ProtocolError(
            f"unknown message type {mtype}: expected 0 (sync), 1 (awareness), "
            f"2 (auth), 3 (query awareness) or {MSG_EXTENSION} (extension)"
        )
    r.expect_end(type(msg).__name__)
    return msg


def encode_sync_step1(state_vector: bytes) -> bytes:
    return bytes([MSG_SYNC, SYNC_STEP1]) + write_var_bytes(state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    return bytes([MSG_SYNC, SYNC_STEP2]) + write_var_bytes(update)


def encode_sync_update(update: bytes) -> bytes:
    return bytes([MSG_SYNC, SYNC_UPDATE]) + write_var_bytes(update)


def encode_awareness(payload: bytes) -> bytes:
    return bytes([MSG_AWARENESS]) + write_var_bytes(payload)


def encode_query_awareness() -> bytes:
    return bytes([MSG_QUERY_AWARENESS])


def encode_permission_denied(reason: str) -> bytes:
    return bytes([MSG_AUTH, AUTH_PERMISSION_DENIED]) + write_var_string(reason)


def encode_extension(body: dict[str, Any]) -> bytes:
    return write_var_uint(MSG_EXTENSION) + write_var_string(json.dumps(body, separators=(",", ":")))


def encode(msg: Message) -> bytes:
    if isinstance(msg, SyncStep1):
        return encode_sync_step1(msg.state_vector)
    if isinstance(msg, SyncStep2):
        return encode_sync_step2(msg.update)
    if isinstance(msg, SyncUpdate):
        return encode_sync_update(msg.update)
    if isinstance(msg, AwarenessUpdate):
        return encode_awareness(msg.payload)
    if isinstance(msg, QueryAwareness):
        return encode_query_awareness()
    if isinstance(msg, AuthMessage):
        return bytes([MSG_AUTH]) + write_var_uint(msg.kind) + write_var_string(msg.reason)
    return encode_extension(msg.body)


# --- Yjs payload helpers -------------------------------------------------------------


def encode_state_vector(sv: dict[int, int]) -> bytes:
    """A Yjs v1 state vector: varUint(count), then varUint(client) varUint(clock) each."""
    out = bytearray(write_var_uint(len(sv)))
    for client, clock in sv.items():
        out += write_var_uint(client)
        out += write_var_uint(clock)
    return bytes(out)


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Decode a Yjs v1 state vector into {client id: clock}.

    On the path of every update (hence the inlined varint loop)."""
    values: list[int] = []
    value = shift = 0
    for byte in sv:
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            values.append(value)
            value = shift = 0
        else:
            shift += 7
            if shift > 63:
                raise ProtocolError("varUint in state vector longer than 10 bytes")
    if shift or not values or len(values) != 1 + 2 * values[0]:
        raise ProtocolError(f"malformed state vector of {len(sv)} bytes")
    return dict(zip(values[1::2], values[2::2], strict=True))


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: a colour as a cursor's style takes it: #rgb(a) / #rrggbb(aa), a colour function of
#: numbers (rgb, hsl, hwb, lab, lch, oklab, oklch, color), var(--name), or a name; nothing
#: that could end the declaration (";") or fetch (url())
_CSS_COLOR = re.compile(
    r"#[0-9a-fA-F]{3,8}"
    r"|(?:rgba?|hsla?|hwb|lab|lch|oklab|oklch|color)\([0-9a-zA-Z.,%/+ -]{1,80}\)"
    r"|var\(--[a-zA-Z0-9_-]{1,60}\)|[a-zA-Z]{1,30}"
)


def _check_colors(client: int, state: Any, depth: int = 0) -> None:
    """The colours a presence state gives (``user.color``, ``colorLight``, Lexical's own
    ``color`` at the top, any key with "color" or "colour" in it, in nested objects too)
    must be colours: editors' cursor plugins (Tiptap's, y-codemirror's, Lexical's) write
    them into a style as given, and ``red; background: url(https://…)`` made every
    viewer's browser fetch what the sender chose."""
    if not isinstance(state, dict) or depth > 4:
        return
    for key, value in state.items():
        if isinstance(value, dict):
            _check_colors(client, value, depth + 1)
        elif isinstance(value, str) and ("color" in key.lower() or "colour" in key.lower()):
            if not _CSS_COLOR.fullmatch(value):
                raise ProtocolError(
                    f"presence (awareness) state of client {client}: {key[:40]} is not a "
                    f"colour ({value[:40]!r})"
                )


#: one past the largest integer a JavaScript number holds exactly (lib0 reads no more)
SAFE_INTEGER = 1 << 53


def decode_awareness(
    payload: bytes, max_entries: int | None = None, *, check: bool = True
) -> list[tuple[int, int, str]]:
    """Decode an awareness update into [(client id, clock, state JSON)].

    A state must be JSON: y-protocols parses every state it receives, and one that does
    not parse throws out of y-websocket's message handler (a Node.js client dies), so a
    relayed one would take down every other client of the document. `max_entries`:
    refuse (FrameTooLarge) an update of more entries, before reading any. ``check=False``
    leaves the states unparsed: the caller checks (:func:`check_awareness_state`) those
    it keeps (most of what providers send echoes states the server holds already)."""
    r = Reader(payload)
    n = r.read_var_uint("awareness entry count")
    if max_entries is not None and n > max_entries:
        raise FrameTooLarge(f"awareness update of {n} entries is over the limit of {max_entries}")
    out: list[tuple[int, int, str]] = []
    for _ in range(n):
        client = r.read_var_uint("awareness client id")
        clock = r.read_var_uint("awareness clock")
        if client >= SAFE_INTEGER or clock >= SAFE_INTEGER:
            # lib0 throws "Integer out of Range" reading either: relayed, it killed every
            # Node.js y-websocket client of the document, and each one that joined
            raise ProtocolError(
                f"presence (awareness) client id {client} or clock {clock} is past 2^53 - 1"
            )
        state = r.read_var_string("awareness state")
        if check:
            check_awareness_state(client, state)
        out.append((client, clock, state))
    r.expect_end("awareness update")
    return out


def check_awareness_state(client: int, state: str) -> None:
    """Raise ProtocolError unless `state` (of Yjs client `client`) is JSON whose colours
    are colours (what :func:`decode_awareness` checks of every state)."""
    try:
        value = json.loads(state, parse_constant=_not_json)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(
            f"presence (awareness) state of client {client} is not JSON: {e}"
        ) from e
    _check_colors(client, value)


def encode_awareness_entries(entries: list[tuple[int, int, str]]) -> bytes:
    out = bytearray(write_var_uint(len(entries)))
    for client, clock, state in entries:
        out += write_var_uint(client)
        out += write_var_uint(clock)
        out += write_var_string(state)
    return bytes(out)
