"""Typed origins: every change to a live document says where it came from.

What is persisted, broadcast and tracked for undo follows from the origin's type:

=================  =========  ===========  =======================================
origin             logged     broadcast    undo tracking (per actor)
=================  =========  ===========  =======================================
ClientOrigin       yes        yes          yes, the actor's edit
ServerOrigin       yes        yes          restore/import: yes; undo/redo: by the
                                           actor's UndoManager itself
PeerOrigin         no (the    locally      yes: the actor's edit made on another
                   other                   process
                   process
                   did)
ReplayOrigin       no (read   no           yes: rebuilds the actor's stacks on load
                   from log)
SystemOrigin       no         no           no
=================  =========  ===========  =======================================

The table is read from the origins themselves: each class says whether its changes are
``logged`` by this process (and so reach ``on_logged``, ``on_committed`` and the
fan-out), ``broadcast`` to this process's connections, and ``tracked`` for undo. The
room, the undo extension and the fan-out decide from these attributes, nothing else.

pycrdt identifies a transaction's origin by ``hash()``. Every origin that carries an
actor hashes as that actor, so one UndoManager per actor, with
``include_origin(actor_origin(actor))``, tracks that actor's changes whichever
connection, process or replay they came through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


def _actor_hash(actor: str) -> int:
    return hash(("palimpsest-actor", actor))


@dataclass(frozen=True, slots=True, eq=False)
class _ActorOrigin:
    actor: str

    logged: ClassVar[bool] = False
    broadcast: ClassVar[bool] = True
    tracked: ClassVar[bool] = True

    def __hash__(self) -> int:
        return _actor_hash(self.actor)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ActorOrigin) and other.actor == self.actor


@dataclass(frozen=True, slots=True, eq=False)
class ClientOrigin(_ActorOrigin):
    """An update sent by a client connection."""

    logged: ClassVar[bool] = True
    conn_id: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class ServerOrigin(_ActorOrigin):
    """A change the server made on behalf of an actor: undo, redo, restore, revert, import."""

    logged: ClassVar[bool] = True
    kind: str = "restore"


@dataclass(frozen=True, slots=True, eq=False)
class PeerOrigin(_ActorOrigin):
    """An event already logged by another process, arrived through fan-out."""

    instance: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class ReplayOrigin(_ActorOrigin):
    """An event replayed from the log while loading a document."""

    broadcast: ClassVar[bool] = False
    seq: int = 0
    kind: str = "edit"


@dataclass(frozen=True, slots=True)
class SystemOrigin:
    """Loading a snapshot, internal bookkeeping: never logged, broadcast or tracked."""

    logged: ClassVar[bool] = False
    broadcast: ClassVar[bool] = False
    tracked: ClassVar[bool] = False
    reason: str = "system"


def actor_origin(actor: str) -> _ActorOrigin:
    """The origin value an UndoManager includes to track every change by `actor`."""
    return _ActorOrigin(actor)


Origin = ClientOrigin | ServerOrigin | PeerOrigin | ReplayOrigin | SystemOrigin
