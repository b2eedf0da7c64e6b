"""Refusing an update that splits a character past U+FFFF (an emoji, ...) in two.

Yjs counts text in UTF-16 code units, so such a character takes two clocks (a surrogate
pair), and a JavaScript client can insert between its halves, or delete one of them:
an editor or a script that counts code points does, ``ytext.insert(2, "X")`` into
"a🌍b". yrs keeps text as UTF-8 and cannot hold half a character: applying such an
update, the server's document and its own encoding disagreed (the live document read
"a🌍Xb", its snapshot "a🌍bX", a restart and every Python client yet other texts), and
later edits of the Python clients were lost. Such an update is refused (4400) before it
is logged; the client that made it holds half characters, which no other client could
show either.

Per room, the clocks at which each such character begins are kept: from the snapshot's
meta and each event applied since (replayed or live), or, for a snapshot written before
they were kept, read once from the document's encoding. A document without any such
character costs one dictionary lookup per update.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc

from .errors import UpdateRejected
from .extensions import Client, Extension
from .origins import Origin
from .room import Room
from .store.base import Event
from .updates import astral_starts, split_points

#: the snapshot meta entry: {client id (a string): [clock, ...]}
META_KEY = "astral"


class Starts:
    """One room's clocks at which a character past U+FFFF begins, per client."""

    def __init__(self, room: Room) -> None:
        self.room = room
        meta = room.snapshot_meta.get(META_KEY)
        #: None: not known yet (a snapshot written before they were kept)
        self.high: dict[int, set[int]] | None
        if isinstance(meta, dict):
            self.high = {int(c): set(clocks) for c, clocks in meta.items()}
        elif _empty(room.doc):
            self.high = {}
        else:
            self.high = None

    def known(self) -> dict[int, set[int]]:
        if self.high is None:
            self.high = {}
            self.add(self.room.doc.get_update())  # once per such document
        return self.high

    def add(self, update: bytes) -> None:
        if self.high is None:
            return  # read from the whole document when first needed
        for client, clocks in astral_starts(update).items():
            self.high.setdefault(client, set()).update(clocks)

    def check(self, update: bytes) -> None:
        high = self.known()
        own = astral_starts(update)  # (one regex search for most updates)
        if not high and not own:
            return
        for client, at in split_points(update):
            begins = at - 1
            if begins in high.get(client, ()) or begins in own.get(client, ()):
                raise UpdateRejected(
                    f"the update splits a character past U+FFFF (an emoji?) in two, at "
                    f"client {client} clock {at}: Yjs counts it as two UTF-16 units, the "
                    "server's document cannot hold half of it"
                )


def _empty(doc: Doc[Any]) -> bool:
    return doc.get_state() == b"\x00"


class SurrogateSplits(Extension):
    """The refusal (``on_update``) and the bookkeeping it needs."""

    reads_doc_per_event = False  # only the event's update (and, once, the document)

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None:
        room.state(Starts)  # made before the first event applies: the document as loaded

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        room.state(Starts).add(event.update)

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        room.state(Starts).check(update)

    def snapshot_meta(self, room: Room) -> dict[str, Any]:
        high = room.state(Starts).known()
        return {META_KEY: {str(c): sorted(clocks) for c, clocks in high.items() if clocks}}


__all__ = ["META_KEY", "Starts", "SurrogateSplits"]
