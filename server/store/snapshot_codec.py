"""How a snapshot row is stored: its state and meta compressed together, checksummed as
stored.

A packed row holds, in the store's ``state`` column, ``zlib(varUint(len(state)) + state
+ meta JSON)``; in ``meta`` the marker :data:`PACKED`; in ``checksum``
``sha256(stored bytes):sha256(marker)``, the same two-part form as the rows before it,
over exactly what is stored. So a damaged row is recognised before anything is
decompressed, a marker damaged into JSON is caught by its checksum (never read as an
older row whose state would be the compressed bytes), and the PostgreSQL store's SQL
check of a row holds for both forms.

Rows written before (``meta`` holds the JSON text, ``state`` the raw update, checksum
``sha256(state)[:sha256(meta)]``) stay readable: :func:`damage` and :func:`unpack` take
both.

Measured on automerge-paper (259 snapshots of the growing document, 43.8 MB raw): zlib
level 1 keeps 49.4 % of the bytes in 0.55 s for all of them, level 3 47.2 % (0.78 s),
level 6 44.5 % (2.59 s), level 9 44.4 % (3.90 s); decompressing the largest state
(325 KB) takes ~1.3-1.8 ms at any level. Level 1: snapshots are written during ingest,
and at level 6 their compression showed in the server's CPU per event
(bench/backbone.py), for 10 % fewer bytes. Large states are compressed off the event
loop (:func:`pack_async`). The undo stacks of three authors at their bounded depth
(50.7 KB of meta JSON) compress to 18.9 KB (level 6) inside the same stream. zstd is
not in the standard library here and was not measured worth a dependency.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from typing import Any

from ..errors import ProtocolError
from ..protocol import Reader, write_var_bytes

#: the ``meta`` column of a packed row (never JSON: older rows always start with "{")
PACKED = "zlib1"
LEVEL = 1
#: a bare ladder rung (server.retention) is written once, off the editing path, and
#: kept long: compressed harder (level 6: 44.5 % of the bytes against 49.4 % at level
#: 1, measured above; ~10 ms for the largest state of automerge-paper)
BARE_LEVEL = 6
#: states at least this big are compressed on a worker thread (zlib releases the GIL)
THREAD_AT = 32 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: the suffix of the meta column of a bare row (a ladder rung whose meta kept only what
#: the ladder needs, see server.retention): ``zlib1/bare`` or ``zlib1@<seq>/bare``
BARE = "/bare"


def marker(delta_of: int = 0, bare: bool = False) -> str:
    """The meta column of a packed row; a ladder rung stored as the difference from the
    snapshot at seq `delta_of` (see server.retention) says so: ``zlib1@<seq>``; one
    without the extensions' meta (undo stacks, owners) ends in ``/bare``."""
    return (f"{PACKED}@{delta_of}" if delta_of else PACKED) + (BARE if bare else "")


def pack(
    state: bytes, meta_text: str, delta_of: int = 0, bare: bool = False
) -> tuple[bytes, str, str]:
    """(stored bytes, checksum, meta column) of a snapshot row."""
    body = write_var_bytes(state) + meta_text.encode()
    blob = zlib.compress(body, BARE_LEVEL if bare else LEVEL)
    column = marker(delta_of, bare)
    return blob, f"{_sha(blob)}:{_sha(column.encode())}", column


async def pack_async(
    state: bytes, meta_text: str, delta_of: int = 0, bare: bool = False
) -> tuple[bytes, str, str]:
    """:func:`pack`, on a worker thread for a large state: the event loop keeps serving."""
    if len(state) < THREAD_AT:
        return pack(state, meta_text, delta_of, bare)
    return await asyncio.to_thread(pack, state, meta_text, delta_of, bare)


def is_packed(meta_column: str) -> bool:
    return meta_column == PACKED or meta_column.startswith((PACKED + "@", PACKED + "/"))


def is_bare(meta_column: str) -> bool:
    """A packed row whose meta holds only what the ladder needs (no undo stacks)."""
    return is_packed(meta_column) and meta_column.endswith(BARE)


def delta_of(meta_column: str) -> int:
    """The seq a packed row is the difference from (0: it holds the whole state)."""
    _, at, seq = meta_column.removesuffix(BARE).partition("@")
    return int(seq) if at and seq.isdigit() else 0


def unpack(stored: bytes, meta_column: str) -> tuple[bytes, str]:
    """(state, meta JSON text) of a row, packed or not; raises ValueError (or zlib.error)
    when a packed row does not decode."""
    if not is_packed(meta_column):
        return stored, meta_column
    r = Reader(zlib.decompress(stored))
    try:
        state = r.read_var_bytes("snapshot state")
    except ProtocolError as e:
        raise ValueError(str(e)) from e
    return state, r.data[r.pos :].decode()


def damage(stored: bytes, checksum: str, meta_column: str) -> str | None:
    """Why a row's stored bytes cannot be trusted (checksum only, nothing decompressed),
    or None. Older rows: see base.snapshot_damage, which also checks their meta."""
    state_sum, _, meta_sum = checksum.partition(":")
    if _sha(stored) != state_sum:
        return "state checksum does not match"
    if meta_sum and _sha(meta_column.encode()) != meta_sum:
        return "meta checksum does not match"
    if is_packed(meta_column) and not meta_sum:
        return "meta checksum missing"
    return None


def decode(stored: bytes, checksum: str, meta_column: str) -> tuple[bytes, dict[str, Any]]:
    """The state and meta of a row whose checksum holds; ValueError saying why not."""
    why = damage(stored, checksum, meta_column)
    if why is not None:
        raise ValueError(why)
    try:
        state, meta_text = unpack(stored, meta_column)
    except (ValueError, zlib.error, UnicodeDecodeError) as e:
        raise ValueError(f"does not decompress ({e})") from e
    try:
        meta = json.loads(meta_text)
    except ValueError as e:  # JSONDecodeError
        raise ValueError(f"meta is not JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"meta is a JSON {type(meta).__name__}, not an object")
    return state, meta


__all__ = [
    "BARE",
    "BARE_LEVEL",
    "LEVEL",
    "PACKED",
    "damage",
    "decode",
    "delta_of",
    "is_bare",
    "is_packed",
    "marker",
    "pack",
    "pack_async",
    "unpack",
]
