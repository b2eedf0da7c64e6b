"""Pure encode/decode of Hocuspocus frames (``@hocuspocus/provider`` 2.x to 4.x). No I/O.

A frame is ``varString(document name) + varUint(message type) + payload``; one socket
carries any number of documents. Types, as Hocuspocus's server defines them:

- ``0`` sync, ``4`` sync reply: a y-websocket sync message (step 1, step 2, update). A
  sync reply's step 1 asks for a step 2 only, not for the server's own step 1 too.
- ``1`` awareness: ``varUint8Array(awareness update)``; ``3`` query awareness: nothing.
- ``2`` auth: client to server ``varUint(0) + varString(token)`` (4.x providers append
  ``varString(provider version)``); server to client ``varUint(1) + varString(reason)``
  (permission denied) or ``varUint(2) + varString("read-write" | "readonly")``
  (authenticated). A server's ``varUint(0)`` alone asks for the token again.
- ``5`` stateless, ``6`` broadcast stateless: ``varString(payload)``.
- ``7`` close: the client leaves one document; the server answers it, as 3.x servers
  do, with ``varString("provider_initiated")`` (a provider detaches the document before
  it sends its close, so the answer reaches no provider, and a 2.x one, which cannot
  read a close message, never sees it), and closes a document with the reason why.
- ``8`` sync status: ``varUint(1)`` when an update the client sent is saved, ``0`` when
  it was refused (read-only).
- ``9`` ping, ``10`` pong (4.x): of the socket, not of a document, so the type's one
  byte is the whole frame (no document name: none fits in one byte, so a one-byte
  ``[9]`` or ``[10]`` is nothing else). A 4.x provider answers a ping with a pong.

Any other type (one a newer provider sends; 9 or 10 with a document name) is a
:class:`Frame` all the same: Hocuspocus's server ignores a message type it has no
handler for, and so does the endpoint.

Frames that y-websocket rooms send are translated by :func:`from_y_websocket`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import protocol as P
from .bounded_json import loads_bounded
from .errors import ProtocolError

SYNC = 0
AWARENESS = 1
AUTH = 2
QUERY_AWARENESS = 3
SYNC_REPLY = 4
STATELESS = 5
BROADCAST_STATELESS = 6
CLOSE = 7
SYNC_STATUS = 8
PING = 9
PONG = 10

AUTH_TOKEN = 0
AUTH_PERMISSION_DENIED = 1
AUTH_AUTHENTICATED = 2

SCOPE_READ_WRITE = "read-write"
SCOPE_READONLY = "readonly"

#: the reason of the close message answering a client's own (Hocuspocus's)
CLOSED_BY_CLIENT = "provider_initiated"

#: Hocuspocus's close codes (@hocuspocus/common CloseEvents)
MESSAGE_TOO_BIG = 1009
RESET_CONNECTION = 4205
UNAUTHORIZED = 4401
FORBIDDEN = 4403


@dataclass(frozen=True, slots=True)
class Frame:
    doc: str
    type: int
    #: the rest of the frame, after the type
    body: bytes


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A ping or pong of the socket itself (the one byte of its type)."""

    type: int


@dataclass(frozen=True, slots=True)
class Auth:
    token: str
    #: sent by 4.x providers only
    version: str | None


def decode(frame: bytes) -> Frame | Heartbeat:
    """Split a frame into document name, type and body (any type: what the server does
    not know of is the caller's to ignore), or the socket's ping or pong; raise
    ProtocolError for a frame whose document name or type cannot be read."""
    if not frame:
        raise ProtocolError("empty frame: expected varString(document name) + varUint(type)")
    if len(frame) == 1 and frame[0] in (PING, PONG):
        return Heartbeat(frame[0])
    r = P.Reader(frame)
    doc = r.read_var_string("document name")
    mtype = r.read_var_uint("message type")
    return Frame(doc, mtype, frame[r.pos :])


def decode_auth(body: bytes) -> Auth:
    r = P.Reader(body)
    kind = r.read_var_uint("auth message type")
    if kind != AUTH_TOKEN:
        raise ProtocolError(f"auth message type {kind} from a client: expected 0 (token)")
    token = r.read_var_string("token")
    version = r.read_var_string("provider version") if r.pos < len(body) else None
    r.expect_end("auth message")
    return Auth(token, version)


def decode_sync(body: bytes) -> P.SyncStep1 | P.SyncStep2 | P.SyncUpdate:
    """A sync body is a y-websocket sync frame without its leading message type."""
    msg = P.decode(bytes([P.MSG_SYNC]) + body)
    assert isinstance(msg, P.SyncStep1 | P.SyncStep2 | P.SyncUpdate)
    return msg


def decode_string(body: bytes, what: str) -> str:
    r = P.Reader(body)
    text = r.read_var_string(what)
    r.expect_end(what)
    return text


def decode_awareness(body: bytes) -> bytes:
    r = P.Reader(body)
    payload = r.read_var_bytes("awareness update")
    r.expect_end("awareness message")
    return payload


def prefix(doc: str) -> bytes:
    return P.write_var_string(doc)


def encode_authenticated(doc: str, read_only: bool) -> bytes:
    scope = SCOPE_READONLY if read_only else SCOPE_READ_WRITE
    return prefix(doc) + bytes([AUTH, AUTH_AUTHENTICATED]) + P.write_var_string(scope)


def encode_permission_denied(doc: str, reason: str) -> bytes:
    return prefix(doc) + bytes([AUTH, AUTH_PERMISSION_DENIED]) + P.write_var_string(reason)


def encode_close(doc: str, reason: str) -> bytes:
    """The server closes one document of the socket (the socket and its other documents
    stay), as Hocuspocus does when handling a message of that document failed."""
    return prefix(doc) + bytes([CLOSE]) + P.write_var_string(reason)


def encode_pong() -> bytes:
    return bytes([PONG])


def encode_sync_status(doc: str, saved: bool) -> bytes:
    return prefix(doc) + bytes([SYNC_STATUS, 1 if saved else 0])


def encode_stateless(doc: str, payload: str) -> bytes:
    return prefix(doc) + bytes([STATELESS]) + P.write_var_string(payload)


def encode_json(doc: str, body: dict[str, Any]) -> bytes:
    return encode_stateless(doc, json.dumps(body, separators=(",", ":")))


def from_y_websocket(doc: str, frame: bytes) -> bytes:
    """The Hocuspocus frame for a frame a room sends to its peers.

    Sync, awareness and query-awareness frames only gain the document name (the types
    are the same); an extension result becomes a stateless message, a y-websocket
    permission-denied a Hocuspocus one."""
    head = frame[0] if frame else None
    if head == P.MSG_EXTENSION:  # one byte as varUint: 100 < 128
        msg = P.decode(frame)
        assert isinstance(msg, P.Extension)
        return encode_json(doc, msg.body)
    if head == P.MSG_AUTH:
        msg = P.decode(frame)
        assert isinstance(msg, P.AuthMessage)
        return encode_permission_denied(doc, msg.reason)
    return prefix(doc) + frame


#: what JSON.parse skips before a value
_JSON_SPACE = " \t\n\r"


def parse_request(payload: str) -> dict[str, Any] | None:
    """A stateless payload that is a Palimpsest request (a JSON object with a string
    ``type``), or None: anything else is the application's own message and is ignored.
    Read as JSON.parse reads it (leading whitespace) and within bounds (nesting, NaN,
    integer length: loads_bounded), so that no answer echoes what is not JSON."""
    text = payload.lstrip(_JSON_SPACE)
    if not text.startswith("{"):
        return None
    try:
        body = loads_bounded(text)
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        return body
    return None


def check_broadcast(payload: str) -> None:
    """Refuse a broadcast a client could take for the server's answer: a JSON object of
    type ``result``, however it is written. A payload that starts as an object must be
    JSON this server reads (bounded: not too deep, no NaN, no integer too long): one it
    cannot read cannot be told from an answer, which JSON.parse may read."""
    text = payload.lstrip(_JSON_SPACE)
    if not text.startswith("{"):
        return
    try:
        body = loads_bounded(text)
    except ValueError as e:
        raise ProtocolError(f"a broadcast that starts as a JSON object must be JSON: {e}") from e
    if isinstance(body, dict) and body.get("type") == "result":
        raise ProtocolError(
            'a broadcast cannot carry {"type": "result"}: the server answers with it'
        )
