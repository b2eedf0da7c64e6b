"""Presence (awareness) from a client, checked before the room relays it.

Every peer parses the states we relay: y-websocket's ``JSON.parse`` throws on a state
that is not JSON and the client stops syncing; a deeply nested state overflows a
recursive parser. So a state must be a JSON object or null, small and shallow, else
the connection is closed with 4400 and nothing is relayed. A state over
``max_awareness_state_bytes`` (an avatar as a data URL) is the exception: it is dropped
(neither relayed nor held; logged once per connection, at INFO) and the connection stays.
Closing it locked its user out: y-websocket's provider sends its presence as soon as the
socket opens, before its sync step 2, so it was closed before its text ever arrived,
reconnected and was closed again about ten times a second, while the tab showed the
typing as saved. Entries are bounded per
connection (it speaks for its own Yjs client ids: one, for y-websocket; 4400 beyond) and
per document (the room's whole presence is every newcomer's first frame). A client that
relays what it received counts none of it: y-websocket's provider sends on every change
of its awareness, other clients' states included, so each page echoes everyone else's;
entries of clients another connection announced (or that left) are not its own, and
are neither counted nor relayed. Nor do echoes count against ``max_awareness_bytes``:
a newcomer's provider sends back the whole snapshot it received (which may hold
``max_awareness_room_bytes``), so only the entries an update changes are held to it; the
update itself is bounded by the frame limit and by the room's entry count.

An echo of the state held for its client is recognised with one look-up per entry,
before anything is parsed (every other state is parsed, so anything that is not JSON is
refused as ever). An update that changes nothing costs the connection no message-rate
token, up to the presence frames the room sent it (:meth:`PresenceGuard.refund`): in a
room of N providers each one sends back about N frames as the room fills, which closed
honest clients with 1013."""

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
    """One connection's presence: which client ids it holds and how many bytes, and the
    echoes it was let off."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mine: dict[int, int] = {}  # client id -> state bytes
        self.room_full_reported = False
        #: a state over max_awareness_state_bytes was dropped and logged (once)
        self.oversize_reported = False
        #: the update admitted last changed nothing (an echo: see :meth:`refund`)
        self.echo = False
        self._sent_from = 0  # Room.presence_frames before the first it sent us
        self._refunded = 0

    def joining(self, room: Room) -> None:
        """The connection is about to join `room` (Room.join, which sends it the room's
        presence when there is any): from now on, what the room sends it is counted."""
        self._sent_from = room.presence_frames - (1 if room.presence.entries else 0)
        self._refunded = 0

    def refund(self, room: Room) -> bool:
        """Whether the update admitted last gets its message-rate token back: it changed
        nothing (y-websocket's and Hocuspocus's providers send back every presence
        change they apply, so in a busy room most of what an honest client sends is
        echoes), and the connection was let off fewer echoes than the presence frames
        the room sent it. A flood of echoes is still counted; each one costs a look-up
        per entry (:meth:`admit`)."""
        if self.echo and self._refunded < room.presence_frames - self._sent_from:
            self._refunded += 1
            return True
        return False

    def admit(self, room: Room, payload: bytes, peer_id: str) -> list[Entry]:
        """The entries of awareness update `payload` the room may merge, from connection
        `peer_id`; raises (closing the connection) on an update or a state that is
        invalid or over this connection's limits. Entries that change nothing (an echo:
        the state of a client another connection announced, or one at or below the
        clock held for its client, Awareness.changes) are neither counted nor checked
        further; a state the same as the one held for its client (what a provider sends
        back) is not even parsed: one look-up. Only what the update changes is held to
        ``max_awareness_bytes``. Entries of clients announced
        by another connection are left out, and so are those that would take the
        document over its limits: the sender keeps editing, unseen. What it costs is
        bounded by the update's entries and this connection's, never the room's."""
        s = self.settings
        presence = room.presence
        # A provider re-sends every state it receives, a newcomer the whole snapshot
        # (up to the room's states) plus its own: the frame limit bounds its bytes,
        # this its entries
        most = (
            max(s.max_awareness_clients_per_room, len(presence.entries))
            + s.max_awareness_clients_per_connection
        )
        entries = P.decode_awareness(payload, most, check=False)
        # oversized states are dropped, unparsed: the rest of the update still counts
        entries = [e for e in entries if not self._too_big(room, e)]
        for client, _, state in entries:
            held = presence.entries.get(client)
            if held is None or held.state != state:
                # (what is held was checked: an echo of it, as providers send, is not)
                P.check_awareness_state(client, state)
        changed = [presence.changes(peer_id, *entry) for entry in entries]
        changes = [entry for entry, c in zip(entries, changed, strict=True) if c]
        self.echo = not changes
        size = len(P.encode_awareness_entries(changes)) if changes else 0
        if size > s.max_awareness_bytes:
            raise FrameTooLarge(
                f"awareness update changing {size} bytes of presence is over the limit of "
                f"{s.max_awareness_bytes}"
            )
        # its clients whose states expired (or were taken over) are no longer counted
        mine = {c: n for c, n in self.mine.items() if presence.owner(c) == peer_id}
        own: list[tuple[Entry, int, bool]] = []
        for entry, c in zip(entries, changed, strict=True):
            client, clock, state = entry
            owner = presence.owner(client)
            if owner is not None and owner != peer_id:
                continue  # another connection's client: an echo (Awareness.merge ignores it)
            if state == "null":
                size = 0
            elif c:
                size = check_state(state, s)
            else:
                size = len(state.encode())
            own.append((entry, size, c))
            if state == "null":
                mine.pop(client, None)
            elif client in presence.entries or not presence.stale(client, clock):
                mine[client] = size  # (a stale one is refused by merge: not counted)
        if len(mine) > s.max_awareness_clients_per_connection:
            raise ProtocolError(
                f"presence for {len(mine)} clients on one connection is over the limit of "
                f"{s.max_awareness_clients_per_connection}"
            )
        count = len(presence.entries)
        total = presence.bytes  # (kept as states change: summing them made echoes O(N))
        out: list[Entry] = []
        for (client, clock, state), size, c in own:
            if state != "null" and c:
                known = presence.entries.get(client)
                new = known is None
                grow = size - (known.size if known is not None else 0)
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

    def _too_big(self, room: Room, entry: Entry) -> bool:
        """Whether `entry`'s state is over ``max_awareness_state_bytes``: dropped, the
        first time on this connection logged (a provider re-sends it on every change
        and every 15 s, so once is enough to tell the operator why that user's
        presence is not seen)."""
        client, _, state = entry
        limit = self.settings.max_awareness_state_bytes
        if len(state) * 4 <= limit:  # (at most 4 bytes a character: no encoding)
            return False
        size = len(state.encode())
        if size <= limit:
            return False
        if not self.oversize_reported:
            self.oversize_reported = True
            log.info(
                "presence state of %d bytes from client %d in %s is over the limit of %d "
                "(max_awareness_state_bytes): dropped, not relayed; the connection stays "
                "and its edits sync",
                size,
                client,
                room.name,
                limit,
            )
        return True


__all__ = ["PresenceGuard", "check_state"]
