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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
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


class Awareness:
    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        #: clock at which a client's presence was removed (for stale re-announcements)
        self._gone: dict[int, int] = {}

    def payload(self) -> bytes:
        """Every known state, encoded (what a newcomer or a query gets)."""
        return P.encode_awareness_entries([(c, e.clock, e.state) for c, e in self.entries.items()])

    def drop(self, peer_id: str) -> bytes | None:
        """A connection left: remove its clients; their removal, encoded, or None."""
        gone = [(c, e) for c, e in self.entries.items() if e.peer_id == peer_id]
        if not gone:
            return None
        for client, e in gone:
            del self.entries[client]
            self._remember_gone(client, e.clock + 1)
        return P.encode_awareness_entries([(c, e.clock + 1, "null") for c, e in gone])

    def merge(
        self,
        peer_id: str,
        payload: bytes,
        live: Container[str],
        tell: Callable[[bytes], None] | None = None,
    ) -> bytes | None:
        """Merge the entries a connection sent (newer clocks win); what was accepted,
        encoded, or None. `live`: the ids of connections still here (an entry of one that
        left may be taken over). `tell` sends a frame back to the sender (None: the entries
        were relayed from another process, nobody to tell)."""
        accepted: list[tuple[int, int, str]] = []
        told: dict[int, int] = {}  # stale clients -> their removal's clock
        now = time.monotonic()
        for client, clock, state in P.decode_awareness(payload):
            known = self.entries.get(client)
            if known is not None and known.peer_id != peer_id and known.peer_id in live:
                continue  # a connection may only speak for its own clients
            if known is None:
                gone = self._gone.get(client)
                if state == "null":
                    # nothing to remove; remember the clock so a stale echo cannot revive it
                    self._remember_gone(client, max(clock, gone or 0))
                    continue
                if gone is not None and clock <= gone:
                    # Everyone holds a removal of this client at clock `gone` and would
                    # ignore this state. Tell the client it was removed: y-protocols then
                    # bumps its clock and re-sends its state, which everyone accepts.
                    told[client] = gone
                    continue
            if (
                known is None
                or clock > known.clock
                or (clock == known.clock and state == "null" and known.state != "null")
            ):
                if state == "null":
                    self.entries.pop(client, None)
                    self._remember_gone(client, clock)
                else:
                    # (to the end: the entries stay in the order they were renewed)
                    self.entries.pop(client, None)
                    self.entries[client] = Entry(clock, state, peer_id, now)
                    self._gone.pop(client, None)
                accepted.append((client, clock, state))
        if told and tell is not None:
            # one frame for them all (a newcomer's echo of a snapshot names every client
            # that left since it was sent)
            removed = P.encode_awareness_entries([(c, g, "null") for c, g in told.items()])
            tell(P.encode_awareness(removed))
        return P.encode_awareness_entries(accepted) if accepted else None

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
        state they receive, a newcomer the whole snapshot at once."""
        known = self.entries.get(client)
        if known is not None:
            if known.peer_id != peer_id:
                return False
            return clock > known.clock or (
                clock == known.clock and state == "null" and known.state != "null"
            )
        gone = self._gone.get(client)
        return gone is None or clock > gone

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
