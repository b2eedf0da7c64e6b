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

Only a split the update makes is refused. A document written before the refusal (or
given such an update by an import) may hold a character already split: its halves are
two items, and every client that edits next to them names that boundary (the right
origin of a keystroke typed before the second half, the end of a deletion). That is not
the update's doing, and yrs already holds the boundary: refusing it cut such clients
off (10 of 60 keystrokes beside the emoji an old writer's client split).

Per room, the clocks at which each such character begins are kept, and the boundaries
inside them the document already has: from the snapshot's meta and each event applied
since (replayed or live), or, for a snapshot written before they were kept, read once
from the document's encoding. A document without any such character costs one dictionary
lookup per update.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc

from .errors import UpdateRejected
from .extensions import Client, Extension
from .origins import ClientOrigin, Origin
from .room import Room
from .store.base import Event
from .updates import astral_starts, split_points

#: the snapshot meta entry: {client id (a string): [clock, ...]}
META_KEY = "astral"
#: the snapshot meta entry of the boundaries inside such characters the document has:
#: {client id (a string): [the clock of the second half, ...]}
SPLIT_KEY = "astral_split"

_Clocks = dict[int, set[int]]


class Starts:
    """One room's clocks at which a character past U+FFFF begins, per client, and those
    of the second halves of such characters its items are already split at."""

    def __init__(self, room: Room) -> None:
        self.room = room
        meta = room.snapshot_meta.get(META_KEY)
        split = room.snapshot_meta.get(SPLIT_KEY)
        #: None: not known yet (a snapshot written before they were kept)
        self.high: _Clocks | None = None
        self.split: _Clocks | None = None
        if isinstance(meta, dict):
            self.high = {int(c): set(clocks) for c, clocks in meta.items()}
            if isinstance(split, dict):
                self.split = {int(c): set(clocks) for c, clocks in split.items()}
        elif _empty(room.doc):
            self.high, self.split = {}, {}

    def known(self) -> tuple[_Clocks, _Clocks]:
        if self.high is None or self.split is None:  # once per such document
            update = self.room.doc.get_update()
            high = self.high if self.high is not None else {}
            for client, clocks in astral_starts(update).items():
                high.setdefault(client, set()).update(clocks)
            self.high, self.split = high, {}
            if any(high.values()):  # (else no split can be inside one: nothing to read)
                _add_splits(self.split, high, update)
        return self.high, self.split

    def add(self, update: bytes, checked: bool) -> None:
        """An event applied to the document; `checked`: it passed :meth:`check`, so it
        split nothing the document did not have split already."""
        if self.high is None:
            return  # read from the whole document when first needed
        for client, clocks in astral_starts(update).items():
            self.high.setdefault(client, set()).update(clocks)
        if self.split is not None and self.high and not checked:
            _add_splits(self.split, self.high, update)

    def check(self, update: bytes) -> None:
        high = self.high if self.high is not None else self.known()[0]
        own = astral_starts(update)  # (one regex search for most updates)
        if not high and not own:
            return
        for client, at in split_points(update):
            begins = at - 1
            if begins in high.get(client, ()) or begins in own.get(client, ()):
                if at in self.known()[1].get(client, ()):
                    continue  # a boundary the document has: not this update's doing
                raise UpdateRejected(
                    f"the update splits a character past U+FFFF (an emoji?) in two, at "
                    f"client {client} clock {at}: Yjs counts it as two UTF-16 units, the "
                    "server's document cannot hold half of it"
                )


def _add_splits(split: _Clocks, high: _Clocks, update: bytes) -> None:
    """Note where `update` (applied, or the document's whole state) splits a character
    past U+FFFF that begins at a clock of `high`."""
    for client, at in split_points(update):
        if at - 1 in high.get(client, ()):
            split.setdefault(client, set()).add(at)


def _empty(doc: Doc[Any]) -> bool:
    return doc.get_state() == b"\x00"


class SurrogateSplits(Extension):
    """The refusal (``on_update``) and the bookkeeping it needs."""

    reads_doc_per_event = False  # only the event's update (and, once, the document)

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None:
        room.state(Starts)  # made before the first event applies: the document as loaded

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        # a client's update of this process passed on_update; a replayed one, a peer's,
        # an import or a server change may split what a JavaScript client may name later
        room.state(Starts).add(event.update, checked=isinstance(origin, ClientOrigin))

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        room.state(Starts).check(update)

    def snapshot_meta(self, room: Room) -> dict[str, Any]:
        high, split = room.state(Starts).known()
        return {
            META_KEY: {str(c): sorted(clocks) for c, clocks in high.items() if clocks},
            SPLIT_KEY: {str(c): sorted(clocks) for c, clocks in split.items() if clocks},
        }


__all__ = ["META_KEY", "SPLIT_KEY", "Starts", "SurrogateSplits"]
