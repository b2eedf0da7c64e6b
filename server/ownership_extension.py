"""The attribution rule's extension: each room's owner map (ownership.Owners) is
restored from the snapshot's meta when a document loads (made from the log up to it
when the snapshot has none: one written before the rule), extended by every event
replayed after that snapshot, and written with each snapshot. Live events are recorded
by the room itself (Room._apply), before anyone else may claim a client id.

Kept apart from ownership.py, which the room imports: the extension interface imports
the snapshot machinery, which imports the room."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import StoreError, StoreUnavailable
from .extensions import Extension
from .origins import Origin, ReplayOrigin
from .ownership import META_KEY, map_of_log
from .room import Room
from .store.base import Event

log = logging.getLogger("palimpsest.ownership")

if TYPE_CHECKING:
    from .backend import Backend


class Ownership(Extension):
    reads_doc_per_event = False  # on_applied reads the event

    def setup(self, backend: Backend) -> None:
        self.backend = backend

    async def on_load(self, room: Room) -> None:
        meta = room.snapshot_meta
        at = room.loaded.snapshot_seq
        if META_KEY not in meta and at:
            # a snapshot written before the rule (an upgraded store): its ids are their
            # writers' as the log says, not the first claimant's
            server = room.owners.server
            try:
                made = await map_of_log(self.backend.store, room.name, at, server)
            except StoreError as e:
                if isinstance(e, StoreUnavailable):
                    raise  # (the load fails, and is tried again)
                # the log up to the snapshot cannot be read (a damaged segment): the
                # document still loads from its snapshot, its ids unowned as before
                log.warning("%s: the owners of its client ids cannot be read from its "
                            "log (%s): they stay unowned", room.name, e)  # fmt: skip
                made = None
            room.owners.restore(made)
            return
        room.owners.restore(meta.get(META_KEY))

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        if isinstance(origin, ReplayOrigin):
            room.owners.record(event.actor, event.update, relays=event.meta.get("relays", ()))

    def snapshot_meta(self, room: Room) -> Mapping[str, Any]:
        return {META_KEY: room.owners.to_meta()}


__all__ = ["Ownership"]
