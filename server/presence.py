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
are neither counted nor relayed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .bounded_json import loads_bounded
from .errors import ProtocolError
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

    def admit(self, room: Room, entries: list[Entry], peer_id: str) -> list[Entry]:
        """The entries the room may merge, from connection `peer_id`; raises (closing
        the connection) on a state that is invalid or over this connection's limits.
        Entries of clients announced by another connection (an echo) are left out, and
        so are those that would take the document over its limits: the sender keeps
        editing, unseen."""
        s = self.settings
        sizes = [0 if state == "null" else check_state(state, s) for _, _, state in entries]
        presence = room.presence
        mine = dict(self.mine)
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
