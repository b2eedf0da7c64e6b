"""An update past a gap, on an open connection: dropped whole, and made good by the
sync step 2 of the client that sent it. The same rule on ``/ws`` and ``/hocuspocus``.

A gap (ownership.py: new items that start past their client's clock, or that name or
delete items the document does not hold) means the client holds something the server
never got: typed offline, or written into a connection that died half-open. The
update is never logged with its gap (it could only wait as pending), and the client
still holds all of it. Every y-websocket and Hocuspocus provider answers a sync step 1
with a step 2 holding everything the given state vector lacks, so:

- before the connection's step 2 (the client's answer to the server's step 1, sent as
  it connected): the update was typed while connecting, and that step 2 carries it.
- after it: the server asks for a re-sync with a sync step 1 of its own; the step 2
  that answers it carries the dropped update with what it builds on.

Bounded against a client that sends gaps on purpose: one re-sync request outstanding
at a time (an update past a gap meanwhile is dropped: the same step 2 carries it), and
the step 2 that answers it must fill the gap it asked about, or the connection is
refused (4400), as is a step 2 that has a gap itself: nothing else would carry what
either lacks. A client sends a gap after a step 2 only after a lost frame; each
request costs it that step 2 besides.
"""

from __future__ import annotations

from typing import Protocol

from .errors import UpdateGap, UpdateRejected


class Holds(Protocol):
    def holds(self, client: int, clock: int) -> bool: ...


class Resync:
    """The gap rule's state for one document on one connection."""

    __slots__ = ("asked", "asks", "dropped", "stepped")

    def __init__(self) -> None:
        #: the client sent a sync step 2 (its answer to a step 1 of ours)
        self.stepped = False
        #: the gap a sync step 1 of ours asked to fill, until a step 2 comes
        self.asked: UpdateGap | None = None
        #: re-syncs asked for on this connection
        self.asks = 0
        #: updates dropped since the last step 2 (which the next one carries)
        self.dropped = 0

    def gap(self, gap: UpdateGap, *, step2: bool) -> bool:
        """The room refused an update past `gap`. Raise it when the update is a sync
        step 2; else the update is dropped: True when the caller must now ask for a
        re-sync (send a sync step 1), False when a step 2 on its way carries it."""
        if step2:
            raise gap
        self.dropped += 1
        if not self.stepped or self.asked is not None:
            return False
        self.asked = gap
        self.asks += 1
        return True

    def step2(self, room: Holds) -> int:
        """The client's sync step 2 was admitted. Raise UpdateRejected if it answers a re-sync
        request and the gap asked about is still there. Returns how many updates
        dropped before it it carries, besides the one the request was for (for
        Hocuspocus's sync status: the step 2's own stands for that one)."""
        self.stepped = True
        asked, self.asked = self.asked, None
        dropped, self.dropped = self.dropped, 0
        if asked is None:
            return dropped
        if not room.holds(asked.client, asked.clock):
            raise UpdateRejected(f"gap not filled by your sync step 2: {asked.detail}")
        return dropped - 1


__all__ = ["Resync"]
