"""Presence (awareness) from a client, checked before the room relays it.

Every peer parses the states we relay: y-websocket's ``JSON.parse`` throws on a state
that is not JSON and the client stops syncing; a deeply nested state overflows a
recursive parser. So a state must be a JSON object or null, small and shallow, else
the connection is closed with 4400 and nothing is relayed. Entries are bounded per
connection (it speaks for its own Yjs client ids: one, for y-websocket; 4400 beyond) and
per document (the room's whole presence is every newcomer's first frame). A client that
relays what it received counts none of it: y-websocket's provider sends on every change
of its awareness, other clients' states included, so each page echoes everyone else's;
entries of clients another connection announced (or that left) are not its own, and
are neither counted nor relayed. Nor do echoes count against ``max_awareness_bytes``:
a newcomer's provider sends back the whole snapshot it received (which may hold
``max_awareness_room_bytes``), so only the entries an update changes are held to it; the
update itself is bounded by the frame limit and by the room's entry count."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import protocol as P
from .bounded_json import loads_bounded
from .errors import FrameTooLarge, ProtocolError
from .settings import Settings

if TYPE_CHECKING:
    from .room import Room

log = logging.getLogger("palimpsest.presence")

Entry = tuple[int, int, str]  # (client id, clock, state JSON)


def check_state(state: str, settings: Settings) -> int:
    """Raise unless `state` is an acceptable presence state; its size in bytes."""
    size = len(state.encode())
    if size > settings.max_awareness_state_bytes:
        raise ProtocolError(
            f"presence state of {size} bytes is over the limit of "
            f"{settings.max_awareness_state_bytes}"
        )
    try:
        value = loads_bounded(state, settings.max_awareness_depth)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"presence state is not valid JSON: {str(e)[:80]}") from e
    if value is not None and not isinstance(value, dict):
        raise ProtocolError(
            f"presence state must be a JSON object or null, not {type(value).__name__}"
        )
    return size


class PresenceGuard:
    """One connection's presence: which client ids it holds and how many bytes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mine: dict[int, int] = {}  # client id -> state bytes
        self.room_full_reported = False

    def admit(self, room: Room, payload: bytes, peer_id: str) -> list[Entry]:
        """The entries of awareness update `payload` the room may merge, from connection
        `peer_id`; raises (closing the connection) on an update or a state that is
        invalid or over this connection's limits. Entries that change nothing (an echo:
        the state of a client another connection announced, or one at or below the
        clock held for its client) are neither counted nor checked; only what the update
        changes is held to ``max_awareness_bytes``. Entries of clients announced by
        another connection are left out, and so are those that would take the document
        over its limits: the sender keeps editing, unseen."""
        s = self.settings
        presence = room.presence
        # A provider re-sends every state it receives, a newcomer the whole snapshot
        # (up to the room's states) plus its own: the frame limit bounds its bytes,
        # this its entries (each one is parsed)
        most = (
            max(s.max_awareness_clients_per_room, len(presence.entries))
            + s.max_awareness_clients_per_connection
        )
        entries = P.decode_awareness(payload, most)
        changed = [presence.changes(peer_id, *entry) for entry in entries]
        changes = [entry for entry, c in zip(entries, changed, strict=True) if c]
        size = len(P.encode_awareness_entries(changes)) if changes else 0
        if size > s.max_awareness_bytes:
            raise FrameTooLarge(
                f"awareness update changing {size} bytes of presence is over the limit of "
                f"{s.max_awareness_bytes}"
            )
        sizes = [
            0 if state == "null" else check_state(state, s) if c else len(state.encode())
            for (_, _, state), c in zip(entries, changed, strict=True)
        ]
        # its clients whose states expired (or were taken over) are no longer counted
        mine = {
            c: n
            for c, n in self.mine.items()
            if (e := presence.entries.get(c)) is not None and e.peer_id == peer_id
        }
        own: list[tuple[Entry, int]] = []
        for entry, size in zip(entries, sizes, strict=True):
            client, clock, state = entry
            known = presence.entries.get(client)
            if known is not None and known.peer_id != peer_id:
                continue  # another connection's client: an echo (Awareness.merge ignores it)
            own.append((entry, size))
            if state == "null":
                mine.pop(client, None)
            elif known is not None or not presence.stale(client, clock):
                mine[client] = size  # (a stale one is refused by merge: not counted)
        if len(mine) > s.max_awareness_clients_per_connection:
            raise ProtocolError(
                f"presence for {len(mine)} clients on one connection is over the limit of "
                f"{s.max_awareness_clients_per_connection}"
            )
        count = len(room.awareness)
        total = sum(len(e.state) for e in room.awareness.values())
        out: list[Entry] = []
        for (client, clock, state), size in own:
            known = room.awareness.get(client)
            if state != "null":
                new = known is None
                grow = size - (len(known.state) if known is not None else 0)
                if (
                    count + new > s.max_awareness_clients_per_room
                    or total + grow > s.max_awareness_room_bytes
                ):
                    mine.pop(client, None)
                    if not self.room_full_reported:
                        self.room_full_reported = True
                        log.warning("presence of %s is full: a state is not relayed", room.name)
                    continue
                count += new
                total += grow
            out.append((client, clock, state))
        self.mine = mine
        return out


__all__ = ["PresenceGuard", "check_state"]
