"""Who may write which Yjs client ids, and no update that would wait forever as pending.

Attribution (``blame``, per-user undo) trusts the event that carried an item, and Yjs
trusts the (client, clock) IDs in an update. Without a rule a writer could send items
under another user's client id (swallowing that user's own undelivered edits, which
then look like duplicates) or items whose origin is another user's *next* clock (they
wait as pending and appear, inside the victim's event, when the victim types). So:

- A client id belongs to the actor whose update first wrote it in this document. An
  update may carry new structs (past what the document and the updates queued before it
  hold) only for client ids that are new or that belong to its sender; the server's own
  client id (undo, redo, restore) belongs to no client. Otherwise it is refused whole
  (Forbidden, 4403), nothing logged.
- New structs must continue their client's clock without a gap, and every origin and
  parent they name must be held by the document, the queued updates or the update
  itself. Otherwise it is refused whole (UpdateRejected, 4400): it could only wait as
  pending. A legitimate client re-syncs through step 2, which has no gap.

The owner map persists in snapshot meta (``owners``) and is extended by every event
replayed or applied afterwards. A snapshot written before the map existed leaves the
client ids it holds unowned: the first actor who writes one of them again claims it.
The cost per update is its own size, never the document's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import Forbidden, ProtocolError, UpdateRejected
from .updates import decode_update_meta

if TYPE_CHECKING:
    from .backend import Backend
    from .room import Room
    from .store.base import Event

META_KEY = "owners"


class Owners:
    __slots__ = ("claims", "owners", "queued", "server")

    def __init__(self, server_client: int) -> None:
        self.server = server_client
        #: client id -> the actor who first wrote it
        self.owners: dict[int, str] = {}
        #: client id -> the actor whose admitted, not yet logged update writes it first;
        #: the log decides (another process may log an earlier claim)
        self.claims: dict[int, str] = {}
        #: client id -> clock its admitted, not yet applied updates reach. Kept when a
        #: commit fails: other updates may still be queued behind it, and a stale entry
        #: only lets that client's own owner re-send its clocks
        self.queued: dict[int, int] = {}

    def admit(self, actor: str, update: bytes, state: dict[int, int]) -> None:
        """Refuse `update` from `actor` (raises) unless it follows the rule; note what it
        claims and reaches. `state`: the live document's state vector."""
        try:
            meta = decode_update_meta(update)
        except ProtocolError as e:
            raise UpdateRejected(f"update does not parse: {e}") from e
        reach: dict[int, int] = {}
        for client, ranges in meta.structs.items():
            have = max(state.get(client, 0), self.queued.get(client, 0))
            new = [(s, e) for s, e in ranges if e > have]
            if not new:
                continue
            if client == self.server:
                raise Forbidden(f"client id {client} is the server's")
            owner = self.owners.get(client) or self.claims.get(client)
            if owner is not None and owner != actor:
                raise Forbidden(f"client id {client} belongs to another user")
            for start, end in new:
                if start > have:
                    raise UpdateRejected(
                        f"items of client {client} start at clock {start}, the document has "
                        f"{have}: re-sync"
                    )
                have = end
            reach[client] = have
        for client, need in meta.refs.items():
            got = reach.get(client) or max(state.get(client, 0), self.queued.get(client, 0))
            if need > got:
                raise UpdateRejected(
                    f"an item refers to client {client} clock {need - 1}, which the document "
                    "does not have: re-sync"
                )
        for client, end in reach.items():
            if client not in self.owners:
                self.claims.setdefault(client, actor)
            self.queued[client] = end

    def record(self, actor: str, update: bytes) -> None:
        """A logged event (replayed, applied, or from another process): its new client
        ids belong to its actor."""
        try:
            clients = decode_update_meta(update).structs
        except ProtocolError:
            return
        for client in clients:
            if client != self.server:
                self.owners.setdefault(client, actor)
                self.claims.pop(client, None)

    def to_meta(self) -> dict[str, str]:
        return {str(c): a for c, a in self.owners.items()}

    def restore(self, meta: Any) -> None:
        if isinstance(meta, dict):
            for c, a in meta.items():
                if isinstance(a, str) and str(c).isdigit():
                    self.owners.setdefault(int(c), a)


def install(backend: Backend) -> None:
    def on_load(room: Room) -> None:
        room.owners.restore(room.extra.get("snapshot_meta", {}).get(META_KEY))

    def on_replay(room: Room, ev: Event) -> None:
        room.owners.record(ev.actor, ev.update)

    def meta_hook(room: Room) -> dict[str, Any]:
        return {META_KEY: room.owners.to_meta()}

    backend.rooms.on_load.append(on_load)
    backend.rooms.on_replay.append(on_replay)
    backend.snapshots.meta_hooks.append(meta_hook)


__all__ = ["META_KEY", "Owners", "install"]
