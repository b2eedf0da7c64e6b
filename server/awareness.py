"""Presence of one document (y-protocols awareness): who is here, with their cursor and
name. Relayed to everyone, never stored.

Each entry is a Yjs client id with a clock and a JSON state (or ``null``: gone). A newer
clock wins; a connection may only speak for the clients it announced; a connection that
leaves takes its clients' states with it. Removals are remembered (the newest 10,000)
so that a stale re-announcement cannot revive a client everyone dropped.

A state not renewed within a timeout expires (:meth:`Awareness.expire`), as in
y-protocols (``outdatedTimeout`` 30 s; clients renew theirs every 15 s): a frozen or
throttled tab whose socket still answers pings would otherwise leave its cursor to
every newcomer. Entries are kept in the order they were last set, oldest first, so that
finding the expired ones costs only what expires.

A state at clock 0 of a client nobody knows changes nothing, as in y-protocols (whose
``applyAwarenessUpdate`` takes a state only past the clock it holds, 0 for a stranger):
it is the ``{}`` every provider's Awareness starts with, which each peer would drop. It
is not relayed; the connection that sent it is only remembered as its client's
(:attr:`Awareness.quiet`), which it announced (ownership.py). The total size of the
states (:attr:`Awareness.bytes`) is kept as they change: a provider echoes every state
it receives, so what an echo costs must not depend on the number of states.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

from . import protocol as P

#: removals remembered per document, oldest forgotten first
GONE_MAX = 10_000


@dataclass(slots=True)
class Entry:
    clock: int
    state: str
    #: the connection that announced it
    peer_id: str
    #: when it was set or last renewed (time.monotonic())
    renewed: float
    #: the state's size in bytes (UTF-8)
    size: int


class Awareness:
    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        #: clock at which a client's presence was removed (for stale re-announcements)
        self._gone: dict[int, int] = {}
        #: clients announced only at clock 0 (not relayed) -> the announcing connection
        self.quiet: dict[int, str] = {}
        #: the bytes of every state held (sum of Entry.size)
        self.bytes = 0

    def payload(self) -> bytes:
        """Every known state, encoded (what a newcomer or a query gets)."""
        return P.encode_awareness_entries([(c, e.clock, e.state) for c, e in self.entries.items()])

    def drop(self, peer_id: str) -> bytes | None:
        """A connection left: remove its clients; their removal, encoded, or None."""
        removed = self.leave(peer_id)
        return P.encode_awareness_entries(removed) if removed else None

    def leave(self, peer_id: str) -> list[tuple[int, int, str]]:
        """A connection left: remove its clients; their removal entries (:meth:`drop`)."""
        if self.quiet:
            for client in [c for c, p in self.quiet.items() if p == peer_id]:
                del self.quiet[client]
        gone = [(c, e) for c, e in self.entries.items() if e.peer_id == peer_id]
        # At the clock each holds, as y-protocols' removeAwarenessStates removes a remote
        # client (and y-websocket's server sends it): every receiver holds that clock and
        # removes on a null at it, and the client's next change, one clock on, is new to
        # everyone. A removal one clock on was dropped with it: the client back at that
        # clock (its next change after the re-sent one) was not relayed.
        for client, e in gone:
            del self.entries[client]
            self.bytes -= e.size
            self._remember_gone(client, e.clock)
        return [(c, e.clock, "null") for c, e in gone]

    def owner(self, client: int) -> str | None:
        """The connection that announced `client` (a state held, or one at clock 0)."""
        known = self.entries.get(client)
        return known.peer_id if known is not None else self.quiet.get(client)

    def merge(
        self,
        peer_id: str,
        payload: bytes | Sequence[tuple[int, int, str]],
        live: Container[str],
        tell: Callable[[bytes], None] | None = None,
    ) -> bytes | None:
        """Merge the entries a connection sent (newer clocks win): an encoded update, or
        its entries decoded and checked (presence.PresenceGuard.admit); what was
        accepted, encoded, or None. `live`: the ids of connections still here (an entry
        of one that left may be taken over). `tell` sends a frame back to the sender
        (None: the entries were relayed from another process, nobody to tell)."""
        accepted = self.accept(peer_id, payload, live, tell)
        return P.encode_awareness_entries(accepted) if accepted else None

    def accept(
        self,
        peer_id: str,
        payload: bytes | Sequence[tuple[int, int, str]],
        live: Container[str],
        tell: Callable[[bytes], None] | None = None,
    ) -> list[tuple[int, int, str]]:
        """:meth:`merge`, returning the entries accepted, in order."""
        accepted: list[tuple[int, int, str]] = []
        told: dict[int, int] = {}  # stale clients -> their removal's clock
        now = time.monotonic()
        items = P.decode_awareness(payload) if isinstance(payload, bytes) else payload
        for client, clock, state in items:
            known = self.entries.get(client)
            if known is not None and known.peer_id != peer_id and known.peer_id in live:
                continue  # a connection may only speak for its own clients
            if known is None:
                quiet = self.quiet.get(client)
                if quiet is not None and quiet != peer_id and quiet in live:
                    continue  # (announced by another connection still here)
                gone = self._gone.get(client)
                if state == "null":
                    # nothing to remove; remember the clock so a stale echo cannot revive it
                    self._remember_gone(client, max(clock, gone or 0))
                    self.quiet.pop(client, None)
                    continue
                if gone is not None and clock <= gone:
                    # Everyone holds a removal of this client at clock `gone` and would
                    # ignore this state. Tell the client it was removed: y-protocols then
                    # bumps its clock and re-sends its state, which everyone accepts.
                    told[client] = gone
                    continue
                if clock == 0:
                    # the {} a provider starts with: every peer would drop it (y-protocols
                    # holds clock 0 for a client it does not know); only its sender is kept
                    self.quiet[client] = peer_id
                    continue
            if (
                known is None
                or clock > known.clock
                or (clock == known.clock and state == "null" and known.state != "null")
            ):
                if known is not None:
                    del self.entries[client]
                    self.bytes -= known.size
                if state == "null":
                    self._remember_gone(client, clock)
                else:
                    # (to the end: the entries stay in the order they were renewed)
                    size = len(state.encode())
                    self.entries[client] = Entry(clock, state, peer_id, now, size)
                    self.bytes += size
                    self._gone.pop(client, None)
                    self.quiet.pop(client, None)
                accepted.append((client, clock, state))
        if told and tell is not None:
            # one frame for them all (a newcomer's echo of a snapshot names every client
            # that left since it was sent)
            removed = P.encode_awareness_entries([(c, g, "null") for c, g in told.items()])
            tell(P.encode_awareness(removed))
        return accepted

    def expire(self, before: float) -> list[tuple[int, Entry]]:
        """Remove the states last set or renewed before `before` (a time.monotonic()),
        and return them by client id, oldest first. As y-protocols' outdated check does,
        each is removed at its own clock: a null at the clock a client holds removes the
        state there, and the client's next renewal, at a higher clock, brings it back."""
        expired: list[tuple[int, Entry]] = []
        for client, e in self.entries.items():
            if e.renewed >= before:
                break  # (the rest were renewed later still)
            expired.append((client, e))
        for client, e in expired:
            del self.entries[client]
            self.bytes -= e.size
            self._remember_gone(client, e.clock)
        return expired

    def oldest(self) -> float | None:
        """When the least recently renewed state was renewed, or None without states."""
        for e in self.entries.values():
            return e.renewed
        return None

    def changes(self, peer_id: str, client: int, clock: int, state: str) -> bool:
        """Whether an entry from connection `peer_id` would change this presence (what
        merge accepts, or a removal it remembers) rather than re-send what is here: the
        state of a client another connection announced, or one at or below the clock
        held for that client (present or removed). Providers re-send (echo) every
        state they receive, a newcomer the whole snapshot at once. A state at clock 0 of
        a client not held changes nothing either (y-protocols drops it)."""
        known = self.entries.get(client)
        if known is not None:
            if known.peer_id != peer_id:
                return False
            return clock > known.clock or (
                clock == known.clock and state == "null" and known.state != "null"
            )
        if self.quiet.get(client, peer_id) != peer_id:
            return False
        return clock > self._gone.get(client, 0)

    def stale(self, client: int, clock: int) -> bool:
        """Whether a state of `client` at `clock` is older than its removal (merge
        refuses it, and tells the sender)."""
        gone = self._gone.get(client)
        return gone is not None and clock <= gone

    def _remember_gone(self, client: int, clock: int) -> None:
        self._gone.pop(client, None)
        self._gone[client] = clock
        while len(self._gone) > GONE_MAX:  # bounded: oldest removals first
            del self._gone[next(iter(self._gone))]


__all__ = ["Awareness", "Entry"]
