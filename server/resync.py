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

Another user's edits on their way. y-websocket shares updates between the tabs of one
browser over a BroadcastChannel, which is quicker than a socket: a tab may hold another
tab's (another user's) edits before their owner's socket delivered them, and its step 2
then carries them. They are under a client id another user owns, which no writer may
write (ownership.py: it would swallow the owner's own undelivered edits), so the step 2
is refused (ForeignItems), nothing of it logged; but the connection is not closed (that
locked two users of one browser out for good: each tab's step 2 carried the other's
undelivered edits, on every reconnect). The server asks again at once, with a sync step
1 whose state vector says it holds those client ids whole (``MAX_CLOCK``): the answer
carries everything the client holds but them, so its user's own edits. Those ids stay
left out for the connection's life (their owners deliver their own edits); a step 2
that answers such a request and still carries new items under one of them ignored the
state vector: refused (4403), as any forged write.

If the user's own edits build on the left-out ones (typed after them), that step 2 has a
gap on a left-out id: it is held (the connection open, presence going on, the updates
sent meanwhile dropped: the client keeps them all). The document's held step 2s are
kept together (:class:`HeldSteps`, one per connection) and, each time one is held,
what of all of them applies now is logged at once, each part in its own sender's
name, in the order the parts build on each other (updates.ready_parts). Two users
whose lost edits build on each other's (a backup restored: a1, b1 on a1, a2 on b1, …)
each hold a step 2 that waits for the other's; taken one step 2 at a time, that cost a
round trip to a client per turn of theirs (a day of interleaved typing: thousands), and
once one of them closed their tab before the end, the other's edits waited for good
and were lost with the tab. A held step 2 stays after its connection closes, as long
as the document is loaded. The rest is asked for again once the document holds more of
the left-out ids' items (their owners delivered some).
When the wait takes longer than ``OVERDUE_SECONDS`` (the owner's tab closed before its socket
sent them, say) the wait is said, once: a warning in the server's log, and to the
client a "permission denied" message (y-websocket prints it on the console; Hocuspocus
a sync status of "not saved") and, if it opted in, an extension error. The connection
still waits: the owner may come back with them. Nothing else can save those edits
without taking the other user's items from a writer who does not own them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from . import protocol as P
from .errors import ForeignItems, PalimpsestError, ProtocolError, UpdateGap, UpdateRejected
from .updates import decode_update_meta, ready_parts

log = logging.getLogger("palimpsest.ws")

#: the clock a re-sync request gives the client ids it leaves out: a Yjs client writes
#: none of its items past it (the largest clock yrs reads, u32)
MAX_CLOCK = 2**32 - 1
#: seconds a step 2 is held for another user's edits before the wait is said
OVERDUE_SECONDS = 20.0
#: held step 2s of closed connections a document keeps (the oldest goes first)
LEFT_MAX = 16
#: client ids of a connection's plain updates not taken (refused by a lock, dropped past
#: a gap) its step 2s may claim (a provider writes under one per document; a new one
#: only when Yjs finds its id taken)
REFUSED_IDS_MAX = 8


class Holds(Protocol):
    def holds(self, client: int, clock: int) -> bool: ...

    def clock(self, client: int) -> int: ...

    def waking(
        self, clients: Iterable[int], wake: asyncio.Event
    ) -> AbstractContextManager[None]: ...


class Resync:
    """The gap rule's state for one document on one connection."""

    __slots__ = (
        "_wake", "asked", "asks", "dropped", "left_out", "locked_out", "read_only_out", "reasked",
        "refused_ids", "sent_step1", "stepped", "uncounted", "waiting",
    )  # fmt: skip

    def __init__(self, *, sent_step1: bool = True) -> None:
        #: the client sent a sync step 2 (its answer to a step 1 of ours)
        self.stepped = False
        #: a sync step 1 of ours went out, whose answer (a step 2) carries what the
        #: client typed before it: on /ws as the connection joins; on /hocuspocus only
        #: in answer to the client's, or as a document opens again (until then an
        #: update past a gap asks for one at once: nothing else would carry it)
        self.sent_step1 = sent_step1
        #: the step 2 to come answers a step 1 the client did not count among its
        #: unsynced changes (a Hocuspocus document opened again: `step2`)
        self.uncounted = False
        #: the gap a sync step 1 of ours asked to fill, until a step 2 comes
        self.asked: UpdateGap | None = None
        #: re-syncs asked for on this connection
        self.asks = 0
        #: updates dropped since the last step 2 (which the next one carries)
        self.dropped = 0
        #: client ids of other users this connection's step 2s carried: every sync step
        #: 1 to it from then on says they are held whole, so its answers leave them out
        self.left_out: set[int] = set()
        #: a sync step 1 of ours that leaves ids out is on its way (no other is sent)
        self.reasked = False
        #: the gap on a left-out id a held step 2 had: asked again once it is filled
        self.waiting: UpdateGap | None = None
        #: an update or a step 2 of this connection that would have changed the document
        #: was refused because it was locked (server.locking): asked for again at the
        #: unlock (`unlocked`)
        self.locked_out = False
        #: as `locked_out`, refused because the connection's token was a read-only one:
        #: asked for again once a token that may write replaces it (`may_write`)
        self.read_only_out = False
        #: the client ids of this connection's plain updates (not step 2s) the lock
        #: refused or a gap dropped: the step 2 that brings them in may claim them
        #: (`own`), as those updates would have had they been taken
        self.refused_ids: set[int] = set()
        #: what wakes the wait of the held step 2 (made by `wait`, set by the room)
        self._wake: asyncio.Event | None = None

    def gap(self, gap: UpdateGap, update: bytes, *, step2: bool) -> bool:
        """The room refused `update`, past `gap`. Raise it when the update is a sync
        step 2; else the update is dropped: True when the caller must now ask for a
        re-sync (send a sync step 1), False when a step 2 on its way carries it.

        The step 2 that carries it may claim its client ids (`own`), as the update would
        have, taken: a provider sends plain updates of its own transactions only. A step
        2 claims only its connection's announced id (OwnIds), none for a client that
        sends no presence (the Python one, a headless y-websocket bot): its first edit,
        dropped past a lost frame, came back relayed, its id claimed by nobody: nothing
        of it was its writer's to undo or revert, and the first other user to write
        under that id took it, every later edit of the writer refused (4403)."""
        if step2:
            raise gap
        self._note_ids(update)
        self.dropped += 1
        if (
            (not self.stepped and self.sent_step1)
            or self.asked is not None
            or self.reasked
            or self.waiting
        ):
            return False
        self.sent_step1 = True
        self.asked = gap
        self.asks += 1
        return True

    def step2(self, room: Holds) -> int:
        """The client's sync step 2 was admitted. Raise UpdateRejected if it answers a re-sync
        request and the gap asked about is still there. Returns how many updates
        dropped before it it carries, besides the one the request was for (for
        Hocuspocus's sync status: the step 2's own stands for that one); -1 when the
        step 2's own sync status is one too many (it answers a step 1 the client did not
        count, `uncounted`, and carries no update it counted)."""
        self.stepped = True
        self.reasked = False
        asked, self.asked = self.asked, None
        dropped, self.dropped = self.dropped, 0
        if self.uncounted:
            self.uncounted = False
            if asked is None:
                return dropped - 1
        if asked is None:
            return dropped
        if asked.client in self.left_out and not room.holds(asked.client, asked.clock):
            return dropped - 1  # (another user's to fill: the update is in this step 2)
        if not room.holds(asked.client, asked.clock):
            raise UpdateRejected(f"gap not filled by your sync step 2: {asked.detail}")
        return dropped - 1

    def refused_step2(self) -> None:
        """The client's sync step 2 was refused whole, nothing of it taken (the document
        is locked: server.locking): it answered our step 1 all the same. From now on an
        update past a gap (built on what the step 2 or the refused updates carried) is
        not one typed while connecting: it asks for a re-sync, whose step 2 carries it
        all (without this, every update of a client that connected while the document
        was locked and typed was dropped past its gap, silently, until it reconnected).
        The updates dropped before it stay owed: the next step 2 carries them."""
        self.stepped = True
        self.asked = None
        self.reasked = False

    def refused_plain(self, update: bytes) -> None:
        """The lock refused `update`, a plain update of this connection (not a step 2)
        that would have changed the document. Taken, it would have claimed the new
        client ids it writes under (ownership.py: a provider sends of its own
        transactions only); the step 2 that answers the unlock's re-sync carries its
        items instead, and a step 2 claims only its connection's announced id
        (OwnIds), none for a client that sends no presence (the Python one): those
        items were relayed, claimed by nobody, and a revert of their writer's edits
        said they were "an unknown writer's". So their ids are noted for `own`. (Ids
        another user owns are still refused there, as in any update.)"""
        self._note_ids(update)

    def _note_ids(self, update: bytes) -> None:
        """The client ids `update`, a plain update of this connection that was not
        taken (`refused_plain`, `gap`), writes under: its step 2s may claim them."""
        if len(self.refused_ids) >= REFUSED_IDS_MAX:
            return
        try:
            clients = decode_update_meta(update).structs
        except ProtocolError:
            return  # (refused for that once the lock is lifted)
        for client in clients:
            if len(self.refused_ids) < REFUSED_IDS_MAX:
                self.refused_ids.add(client)

    def own(self, announced: frozenset[int]) -> frozenset[int]:
        """The client ids a sync step 2 of this connection may claim: the one it
        `announced` as its own (Room.announced) and those of its plain updates the lock
        refused or a gap dropped (`refused_plain`, `gap`)."""
        return announced | self.refused_ids if self.refused_ids else announced

    def unlocked(self) -> bool:
        """The document was unlocked: True when the caller must now ask for a re-sync
        (send a sync step 1), as the lock refused edits of this connection, which its
        client still holds; its step 2 brings them all in, deletions too (which no later
        update of the client carries, nor shows as a gap), at once (the tab may close
        before the user types again). False when none was refused, or a request is on
        its way. The client did not ask for that step 2 (`uncounted`)."""
        if not self.locked_out:
            return False
        self.locked_out = False
        return self._ask_again()

    def may_write(self) -> bool:
        """The connection's read-only token was replaced by one that may write (a
        Hocuspocus provider's ``sendToken()``): as at an unlock (`unlocked`), True when
        the caller must now ask for a re-sync, as edits of this connection were refused
        as a reader's, which its client still holds and builds on: its next update,
        past their gap, was dropped with nothing asking for the step 2 that carries it."""
        if not self.read_only_out:
            return False
        self.read_only_out = False
        return self._ask_again()

    def _ask_again(self) -> bool:
        """A re-sync the client did not ask for (`unlocked`, `may_write`): False when a
        request is on its way already."""
        if self.asked is not None or self.reasked or self.waiting:
            return False
        self.sent_step1 = True
        self.uncounted = True
        self.reasked = True  # (no other request until its step 2 comes: `gap`)
        self.asks += 1
        return True

    def foreign(self, refused: ForeignItems) -> None:
        """The client's sync step 2 carried new items under other users' client ids
        (`refused`): leave them out of every sync step 1 to it from now on; the caller
        asks again (`state_vector`). Raise `refused` if it carried one that was left
        out already: the client ignored the state vector of our request."""
        if any(c in self.left_out for c in refused.clients):
            raise refused
        self.left_out.update(refused.clients)
        self.reasked = True
        self.asks += 1

    def hold(self, gap: UpdateGap) -> bool:
        """The client's step 2 has `gap`: True when it is on a left-out client id (the
        step 2 is held until the owner fills it: `wait`), False when it is refused."""
        if gap.client not in self.left_out:
            return False
        self.end()  # (a wait for an earlier one ends: this one's begins)
        self.waiting = gap
        self.reasked = False
        return True

    def end(self) -> None:
        """No step 2 is held any more (the document closed): its wait ends."""
        self.waiting = None
        if self._wake is not None:
            self._wake.set()

    def state_vector(self, state: bytes) -> bytes:
        """The state vector of a sync step 1 to this client: `state` (the document's),
        with the left-out client ids held whole."""
        if not self.left_out:
            return state
        sv = P.decode_state_vector(state)
        for client in self.left_out:
            sv[client] = MAX_CLOCK
        return P.encode_state_vector(sv)

    def wait(
        self, room: Holds, ask: Callable[[], None], overdue: Callable[[UpdateGap], None]
    ) -> Coroutine[None, None, None]:
        """Until the document holds more of the left-out client ids' items than when
        the step 2 was held (`waiting`: their owners delivered some, which the step 2's
        part that waits may build on), then `ask` (the caller sends a sync step 1
        again, `state_vector`). Woken by the room as it logs an event carrying items of
        a left-out id (Room.waking), not by looking again and again. `overdue` once,
        when that takes longer than OVERDUE_SECONDS. Ends with `end` (or another step 2
        held); cancelled with the connection. Called as the step 2 is held (what the
        document holds is read then); the caller runs the coroutine as a task."""
        # read now, not as the task begins: an owner's update admitted before that (in
        # the same turn of the event loop) counted as held already, its logging did not
        # end the wait, and the step 2 waited for the owner's next edit, for good if none
        base = {client: room.clock(client) for client in self.left_out}
        return self._wait(room, ask, overdue, self.waiting, base)

    async def _wait(
        self,
        room: Holds,
        ask: Callable[[], None],
        overdue: Callable[[UpdateGap], None],
        gap: UpdateGap | None,
        base: dict[int, int],
    ) -> None:
        if gap is None or self.waiting is not gap:
            return  # (another step 2 was held before this task began: its wait is on)
        wake = self._wake = asyncio.Event()
        overdue_in: float | None = OVERDUE_SECONDS
        with room.waking(base, wake):
            while all(room.clock(client) <= clock for client, clock in base.items()):
                try:
                    # (not wait_for: on 3.11 it can lose a cancel that comes in the turn
                    # the event is set, and the task waited on)
                    async with asyncio.timeout(overdue_in):
                        await wake.wait()
                except TimeoutError:
                    if self.waiting is gap:
                        overdue(gap)
                    overdue_in = None  # (said once)
                wake.clear()
                if self.waiting is not gap:
                    return
        self._wake = None
        self.waiting = None
        self.reasked = True
        self.asks += 1
        ask()


@dataclass
class _Held:
    actor: str
    update: bytes
    #: logs a part of it as a sync step 2 of its connection (Room.receive_update)
    take: Callable[[bytes], object]
    left: bool = False


class HeldSteps:
    """The sync step 2s of one document that wait for other users' edits (Resync.hold),
    the newest of each connection, taken together (see the module's doc). A room's
    state (Room.state)."""

    def __init__(self, room: object = None) -> None:
        self._held: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, conn: str, actor: str, update: bytes, take: Callable[[bytes], object]) -> None:
        """Connection `conn`'s (of `actor`) step 2 `update` waits; `take` logs a part of
        it as that connection's."""
        self._held.pop(conn, None)
        self._held[conn] = _Held(actor, update, take)

    def drop(self, conn: str) -> None:
        """Connection `conn` sent a step 2 that was taken whole: its held one is past."""
        self._held.pop(conn, None)

    def left(self, conn: str) -> int:
        """Connection `conn` closed: its held step 2, if any, is kept (LEFT_MAX of them)
        and taken when what it waits for comes. Returns its size in bytes (0: none)."""
        held = self._held.get(conn)
        if held is None:
            return 0
        held.left = True
        gone = [c for c, h in self._held.items() if h.left]
        for c in gone[: max(0, len(gone) - LEFT_MAX)]:
            lost = self._held.pop(c)
            log.warning("a held sync step 2 of %s (%d bytes), from a connection that has "
                        "closed, is given up: more than %d wait", lost.actor,
                        len(lost.update), LEFT_MAX)  # fmt: skip
        return len(held.update)

    def settle(self, held: Callable[[int], int]) -> int:
        """Log what of the held step 2s applies now, on a document (and queued updates)
        that holds, per client id, the items below `held(client)`: each part as its own
        connection's step 2 would be (the attribution rule judges it as any), in the order
        they build on each other. Drops those taken whole. Returns the parts logged."""
        if not self._held:
            return 0
        conns = list(self._held)
        entries = [self._held[c] for c in conns]
        parts, done = ready_parts([e.update for e in entries], held)
        refused: set[int] = set()
        for i, part in parts:
            if i in refused:
                continue
            try:
                entries[i].take(part)
            except (UpdateGap, ForeignItems) as e:
                # (another user's items besides: left out at the next request)
                log.debug("a part of %s's held step 2 waits too: %s", entries[i].actor, e)
                refused.add(i)
            except PalimpsestError as e:
                log.info("a part of %s's held step 2 is refused: %s", entries[i].actor, e)
                refused.add(i)
                self._held.pop(conns[i], None)
        for i, whole in enumerate(done):
            if whole and i not in refused:
                self._held.pop(conns[i], None)
        return len(parts)


def overdue_words(gap: UpdateGap) -> str:
    """What a client whose step 2 waits OVERDUE_SECONDS for another user's edits is told."""
    return (
        f"your edits since the last save are not saved yet: they build on another user's "
        f"edits (client id {gap.client}) that tab has not delivered; they will be once it "
        "does (keep this tab open)"
    )


__all__ = [
    "MAX_CLOCK", "OVERDUE_SECONDS", "REFUSED_IDS_MAX", "HeldSteps", "Resync", "overdue_words",
]  # fmt: skip
