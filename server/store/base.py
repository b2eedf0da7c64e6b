"""The EventStore interface: one per-document append-only log, snapshots and tags.

Every backend (memory, SQLite, PostgreSQL) implements :class:`EventStore` and passes the
shared contract suite in ``tests/store/contract.py``.

Contract:

- ``append`` assigns each document's events the next seqs (1, 2, 3…, gap-free) and makes
  the whole batch durable atomically, across documents: all of it or none of it.
- Events are never changed or deleted, except by the explicit retention command
  (``compact``) and by ``delete_doc``.
- ``put_snapshot(doc, seq, state)`` stores the full encoded state equal to folding events
  1..seq; a checksum is kept with it and checked when it is read back, and a damaged one
  is reported by ``snapshots()`` as ``valid=False`` and skipped by ``latest_snapshot``.
- Timestamps are integers, milliseconds since the epoch, given by the caller (the server's
  clock) so that undo grouping is the same after a restart.
- Driver errors become :class:`~server.errors.StoreError` (or ``StoreUnavailable`` when the
  store cannot be reached) at this boundary.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from ..lifecycle import Service


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# one encoder for every event: json.dumps with options builds a new encoder per call
_encode_meta = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dump_meta(meta: dict[str, Any]) -> str:
    if len(meta) == 2 and "clients" in meta and "conn" in meta:
        # the meta of every client edit: formatted directly, on the path of every event
        clients, conn = meta["clients"], meta["conn"]
        if isinstance(conn, str) and all(type(c) is int for c in clients):
            return f'{{"clients":[{",".join(map(str, clients))}],"conn":{_quote(conn)}}}'
    return _encode_meta(meta)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; the store gives it its seq."""

    actor: str
    kind: str
    update: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    ts: int = field(default_factory=now_ms)


@dataclass(frozen=True, slots=True)
class Event:
    doc: str
    seq: int
    ts: int
    actor: str
    kind: str
    update: bytes
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Snapshot:
    doc: str
    seq: int
    ts: int
    state: bytes
    checksum: str
    meta: dict[str, Any]

    @property
    def valid(self) -> bool:
        return checksum(self.state) == self.checksum


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    doc: str
    seq: int
    ts: int
    size: int
    valid: bool


@dataclass(frozen=True, slots=True)
class DocInfo:
    doc: str
    head: int
    updated_ts: int | None
    events_bytes: int
    base_seq: int = 0  # events at or below this seq were folded away by compact


@dataclass(frozen=True, slots=True)
class Tag:
    doc: str
    name: str
    seq: int
    ts: int
    actor: str


class EventStore(Service, ABC):
    """Where events, snapshots and tags live. Used with ``async with`` or start()/stop()."""

    #: a short name for logs and metrics: "memory", "sqlite", "postgresql"
    name: str = "abstract"

    @abstractmethod
    async def start(self) -> None:
        """Connect and create or migrate the schema."""

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers now."""

    # --- the log ---------------------------------------------------------------------

    @abstractmethod
    async def append(self, batches: Sequence[tuple[str, Sequence[NewEvent]]]) -> list[list[Event]]:
        """Append every batch atomically; returns the stored events, batch by batch."""

    @abstractmethod
    async def read(
        self, doc: str, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[Event]:
        """Events with after < seq <= upto, in seq order."""

    @abstractmethod
    async def head(self, doc: str) -> int:
        """The last seq of the document, 0 if it has none."""

    @abstractmethod
    async def query(
        self,
        doc: str,
        *,
        after: int = 0,
        limit: int = 100,
        actor: str | None = None,
        since_ts: int | None = None,
        until_ts: int | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[Event]:
        """A page of events matching the filters, in seq order."""

    @abstractmethod
    async def seq_at(self, doc: str, ts: int) -> int:
        """The last seq whose ts <= the given ts (0 if none)."""

    @abstractmethod
    async def list_docs(self) -> list[DocInfo]: ...

    @abstractmethod
    async def doc_info(self, doc: str) -> DocInfo | None: ...

    @abstractmethod
    async def delete_doc(self, doc: str, tombstone: bytes = b"") -> bool:
        """Remove the document's events, snapshots and tags; False if it had none.

        In the same transaction, when it existed, records `tombstone` (the encoded state
        vector of the deleted document, merged by the caller with any earlier one) for
        :meth:`tombstone`: the name may be used again, and copies of the deleted
        content (a stale process's room, a client's local copy) are recognised by it."""

    @abstractmethod
    async def tombstone(self, doc: str) -> bytes | None:
        """The state vector recorded by the last ``delete_doc`` of this name, if any."""

    # --- snapshots -------------------------------------------------------------------

    @abstractmethod
    async def put_snapshot(
        self, doc: str, seq: int, state: bytes, meta: dict[str, Any] | None = None
    ) -> None:
        """Store the state at seq (replacing one at the same seq)."""

    @abstractmethod
    async def latest_snapshot(self, doc: str, at_most: int | None = None) -> Snapshot | None:
        """The newest snapshot with seq <= at_most whose checksum holds."""

    @abstractmethod
    async def snapshots(self, doc: str) -> list[SnapshotInfo]: ...

    # --- retention (explicit, opt-in) -------------------------------------------------

    @abstractmethod
    async def compact(self, doc: str, before: int, state: bytes) -> int:
        """Fold events 1..before into a base snapshot at `before` and drop them.

        Returns the number of events removed. Seqs are not renumbered."""

    # --- named versions --------------------------------------------------------------

    @abstractmethod
    async def put_tag(self, doc: str, name: str, seq: int, actor: str) -> Tag: ...

    @abstractmethod
    async def tags(self, doc: str) -> list[Tag]: ...

    @abstractmethod
    async def delete_tag(self, doc: str, name: str) -> bool: ...
