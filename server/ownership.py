"""Who may write which Yjs client ids, and no update that would wait forever as pending.

Attribution (``blame``, per-user undo) trusts the event that carried an item, and Yjs
trusts the (client, clock) IDs in an update. Without a rule a writer could send items
under another user's client id (swallowing that user's own undelivered edits, which
then look like duplicates) or items whose origin is another user's *next* clock (they
wait as pending and appear, inside the victim's event, when the victim types). So:

- A client id belongs to the actor whose update first wrote it in this document. An
  update may carry new structs (past what the document and the updates queued before it
  hold) only for client ids that are new or that belong to its sender; the server's own
  client id (undo, redo, restore) belongs to no client, nor does another store's server's
  that a copied snapshot names (``Owners.former``). Otherwise it is refused whole
  (Forbidden, 4403; ForeignItems, naming the other users' ids), nothing logged. In a
  sync step 2 those may be another tab's edits still on their way from their owner:
  its connection asks again without them rather than closing (resync.py).
- A sync step 2 (a client's answer to the server's step 1) carries whatever the client
  holds that the store lacks: its own offline edits, other tabs' edits it got over a
  BroadcastChannel, and, when the store lost edits (a backup restored, a new database
  file), other people's too. It claims only its connection's own client id
  (:class:`OwnIds`: the one its first presence update names) and those of its
  connection's plain updates that were not taken (refused by a lock, dropped past a
  gap: resync.Resync.own), which it brings in; the others are relayed, claimed by
  nobody until their own client writes them, and listed in the event's meta
  (``relays``) so that a reload or another process decides the same.
  An import (:func:`imported_clients`) relays every client id it carries but the
  server's: they belong to the tabs that wrote the document on another server, which
  keep them and reconnect here. While
  the store recovers lost edits (``relay_until``, settings.recovering_minutes), a
  step 2 may also carry items of client ids that belong to other users, or to the
  server (its undo, redo, restore or text replacement made after the backup): they are
  the edits the store lost, which every client holds a copy of; logged in the sender's
  event, their owner unchanged, and not the sender's to undo (its undo step holds only
  what is under its own ids: undo.recorder.RoomUndo._senders_own).
- New structs must continue their client's clock without a gap, and every origin and
  parent they name, and every item the update deletes, must be held by the document, the
  queued updates or the update itself. Otherwise it is refused whole (UpdateRejected,
  4400): it could only wait as pending. A legitimate client re-syncs through step 2,
  which has no gap.

The owner map persists in snapshot meta (``owners``) and is extended by every event
replayed or applied afterwards. A snapshot written before the map existed (by a version
before this rule, upgraded with ``palimpsest migrate``) has none: the map is made from
the log's events up to it as the document loads (:func:`map_of_log`), as a load from the
log alone makes it, and written with the next snapshot. Its ids used to stay unowned:
an undo counted its own writer's text as nobody's (``removed_others`` with user null)
and the first user who wrote one of them again claimed it. Only where that log is gone
(a compaction base written before the rule) do they stay unowned.
The cost per update is its own size, never the document's.

The writers of the server's own client id, which every user's undos, redos, restores
and text edits share, are kept with the map: per run of its clocks, the actor of the
server change that wrote it (``"server"``: [[first clock, actor], ...]; one run per
change by someone else than the one before), so that an undo can say whose text it took
out (server.removed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable
from typing import TYPE_CHECKING, Any

from .errors import Forbidden, ForeignItems, ProtocolError, UpdateGap, UpdateRejected
from .updates import UpdateMeta, decode_update_meta

if TYPE_CHECKING:
    from .store.base import EventStore

META_KEY = "owners"


class Owners:
    __slots__ = ("claims", "clocks", "former", "owners", "relay_until", "server", "server_runs")

    def __init__(self, server_client: int, relay_until: float = 0.0) -> None:
        self.server = server_client
        #: until when (time.monotonic()) a sync step 2 may carry other users' items the
        #: document lacks (the store is recovering lost edits; see the module's doc)
        self.relay_until = relay_until
        #: client id -> the actor who first wrote it
        self.owners: dict[int, str] = {}
        #: client id -> the actor whose admitted, not yet logged update writes it first;
        #: the log decides (another process may log an earlier claim)
        self.claims: dict[int, str] = {}
        #: client id -> clock the document and the admitted updates reach: seeded from
        #: the document's state vector once (decoding it costs the number of clients),
        #: then extended by each admitted update and each event applied, so that a check
        #: costs the update's size. Kept when a commit fails (other updates may still be
        #: queued behind it), and past items Yjs holds pending: both only let the owner
        #: of that client id re-send its own clocks
        self.clocks: dict[int, int] | None = None
        #: who wrote the server's client id's clocks: (first clock, actor) per run, in
        #: clock order, a run going on to the next one's first clock; actor None for the
        #: items a sync step 2 relayed (whose server change the store lost)
        self.server_runs: list[tuple[int, str | None]] = []
        #: other servers' client ids whose items the document holds (a copy from another
        #: store, snapshots.server_client_id; a name's earlier generation): no client's
        #: to write, as the server's own is not
        self.former: set[int] = set()

    def admit(
        self,
        actor: str,
        update: bytes,
        state: Callable[[], dict[int, int]],
        meta: UpdateMeta | None = None,
        *,
        step2: bool = False,
        own: Container[int] | None = None,
        imported: bool = False,
        others: Container[int] = (),
    ) -> dict[int, tuple[int, int]]:
        """Refuse `update` from `actor` (raises) unless it follows the rule; note what it
        claims and reaches, and return that: client id -> (the clock its new items start
        at, the clock they reach), for ``written`` once the update is logged, so it is
        parsed once; applied in order, that is exactly what the update inserts. `state`:
        the live document's state vector (asked once). `meta`: the update's, when the
        caller read it already. `step2`: it answers the server's sync step 1. `own`:
        the only client ids it may claim (a step 2's: its connection's own, OwnIds);
        None: every new one. `imported`: an import (an admin's, Room.import_update): it
        may write under any client id, the server's too, and claims none (see
        :func:`imported_clients`); gaps and pending items are refused as always.
        `others`: client ids that other live connections name as their own (a step 2's:
        OwnIds.others); new items under one of them, unclaimed yet, are that connection's
        to deliver, refused like an owned id's (ForeignItems)."""
        if self.clocks is None:
            self.clocks = dict(state())
        clocks = self.clocks
        if meta is None:
            try:
                meta = decode_update_meta(update)
            except ProtocolError as e:
                raise UpdateRejected(f"update does not parse: {e}") from e
        if imported:
            own = ()
        else:
            fast = self._admit_one_run(actor, meta, clocks, own, others)
            if fast is not None:
                return fast
        relay = imported or (step2 and self.relay_until > 0 and time.monotonic() < self.relay_until)
        reach: dict[int, int] = {}
        starts: dict[int, int] = {}
        for client, ranges in meta.structs.items():
            have = clocks.get(client, 0)
            if len(ranges) == 1:  # the commonest: a keystroke, a paste (no list made)
                if ranges[0][1] <= have:
                    continue
                new = ranges
            else:
                new = [(s, e) for s, e in ranges if e > have]
                if not new:
                    continue
            if (client == self.server or client in self.former) and not relay:
                # (while the store recovers, its own lost changes come back as others'
                # do: an undo or a restore made after the backup, which clients hold)
                raise Forbidden(f"client id {client} is the server's")
            owner = self.owners.get(client) or self.claims.get(client)
            if (owner != actor if owner is not None else client in others) and not relay:
                raise ForeignItems(
                    f"client id {client} belongs to another user",
                    self._foreign(actor, meta, clocks, others),
                )
            starts[client] = have
            for start, end in new:
                if start > have:
                    raise UpdateGap(
                        f"items of client {client} start at clock {start}, the document has {have}",
                        client,
                        start,
                    )
                have = end
            reach[client] = have
        for client, need in meta.refs.items():
            got = reach.get(client) or clocks.get(client, 0)
            if need > got:
                raise UpdateGap(
                    f"an item refers to client {client} clock {need - 1}, which the document "
                    "does not have",
                    client,
                    need,
                )
        for client, ranges in meta.deletes.items():
            # a deletion of items nobody has written yet would wait as pending and take
            # them out as their author types them, in the author's name
            got = reach.get(client) or clocks.get(client, 0)
            upto = max(e for _, e in ranges) if ranges else 0
            if upto > got:
                raise UpdateGap(
                    f"the update deletes items of client {client} up to clock {upto - 1}, "
                    "which the document does not have",
                    client,
                    upto,
                )
        out: dict[int, tuple[int, int]] = {}
        for client, end in reach.items():
            if (
                client not in self.owners
                and (own is None or client in own)
                and client != self.server
                and client not in self.former
            ):
                self.claims.setdefault(client, actor)
            clocks[client] = end
            out[client] = (starts[client], end)
        return out

    def _foreign(
        self, actor: str, meta: UpdateMeta, clocks: dict[int, int], others: Container[int]
    ) -> tuple[int, ...]:
        """The client ids other users own (or, unclaimed, other live connections name as
        their own: `others`) that `meta`'s update has new items of."""
        out = []
        for client, ranges in meta.structs.items():
            if (
                client == self.server
                or client in self.former
                or not ranges
                or ranges[-1][1] <= clocks.get(client, 0)
            ):
                continue
            owner = self.owners.get(client) or self.claims.get(client)
            if owner != actor if owner is not None else client in others:
                out.append(client)
        return tuple(sorted(out))

    def _admit_one_run(
        self,
        actor: str,
        meta: UpdateMeta,
        clocks: dict[int, int],
        own: Container[int] | None = None,
        others: Container[int] = (),
    ) -> dict[int, tuple[int, int]] | None:
        """`admit` of the commonest update (a keystroke, a paste: one run of new items of
        one client, no deletion) when it passes; None for any other update, or one the
        rule refuses (the general path then says why)."""
        structs = meta.structs
        if len(structs) != 1 or meta.deletes:
            return None
        ((client, ranges),) = structs.items()
        if len(ranges) != 1 or client == self.server or client in self.former:
            return None
        start, end = ranges[0]
        have = clocks.get(client, 0)
        if start != have or end <= have:
            return None
        owner = self.owners.get(client) or self.claims.get(client)
        if owner != actor if owner is not None else client in others:
            return None
        for c, need in meta.refs.items():
            if need > (end if c == client else clocks.get(c, 0)):
                return None
        if client not in self.owners and (own is None or client in own):
            self.claims.setdefault(client, actor)
        clocks[client] = end
        return {client: (have, end)}

    def holds(self, client: int, clock: int, state: Callable[[], dict[int, int]]) -> bool:
        """Whether the document and the updates admitted hold `client`'s items below
        `clock`. `state`: the live document's state vector (asked when no update was
        admitted yet)."""
        clocks = self.clocks if self.clocks is not None else state()
        return clocks.get(client, 0) >= clock

    def surely_new(self, update: bytes, meta: UpdateMeta | None = None) -> bool:
        """Whether an item of `update` lies past the clock admitted or logged for its
        client: then it adds to the document for sure (the live document's state vector
        never runs ahead of these clocks), and the no-op rule need not diff it. False
        when unsure (no clocks yet, an update that does not parse, nothing past them).
        `meta`: the update's, when the caller read it already."""
        clocks = self.clocks
        if clocks is None:
            return False
        if meta is None:
            try:
                meta = decode_update_meta(update)
            except ProtocolError:
                return False
        for client, ranges in meta.structs.items():
            if ranges and ranges[-1][1] > clocks.get(client, 0):
                return True
        return False

    def record(
        self,
        actor: str,
        update: bytes,
        meta: UpdateMeta | None = None,
        relays: Iterable[Any] = (),
    ) -> None:
        """A logged event (replayed, applied, from another process, or the server's own):
        its new client ids belong to its actor, but those it relayed (`relays`, from the
        event's meta). `meta`: the update's, when the caller read it already."""
        if meta is None:
            try:
                meta = decode_update_meta(update)
            except ProtocolError:
                return
        clients = meta.structs
        self.written(
            actor,
            {client: (ranges[0][0], ranges[-1][1]) for client, ranges in clients.items()},
            relays,
        )

    def written(
        self, actor: str, reach: dict[int, tuple[int, int]], relays: Iterable[Any] = ()
    ) -> None:
        """As `record`, from what `admit` returned for the logged update (`relays`: the
        client ids it wrote without claiming them, see the module's doc)."""
        relayed = {c for c in relays if isinstance(c, int)} if relays else ()
        for client, (start, end) in reach.items():
            if self.clocks is not None and self.clocks.get(client, 0) < end:
                self.clocks[client] = end
            if client == self.server:
                self._server_wrote(start, None if client in relayed else actor)
            elif client not in relayed and client not in self.former:
                self.owners.setdefault(client, actor)
                self.claims.pop(client, None)

    def _server_wrote(self, start: int, actor: str | None) -> None:
        runs = self.server_runs
        if runs and runs[-1][0] >= start:
            return  # known already (a replay over runs a snapshot's meta restored)
        if not runs or runs[-1][1] != actor:
            runs.append((start, actor))

    def to_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {str(c): a for c, a in self.owners.items()}
        if self.server_runs:
            out["server"] = [list(run) for run in self.server_runs]
            out["server_client"] = self.server  # whose runs they are
        if self.former:
            out["former_servers"] = sorted(self.former)
        return out

    def restore(self, meta: Any) -> None:
        """The map of a snapshot (`meta`: its ``owners``), or of the log up to it
        (:func:`map_of_log`). It comes before the events replayed after the snapshot,
        which a room records first: an id's owner there is its first writer, whoever
        those events name."""
        if isinstance(meta, dict):
            for c, a in meta.items():
                if isinstance(a, str) and str(c).isdigit():
                    self.owners[int(c)] = a
                    self.claims.pop(int(c), None)
            former = meta.get("former_servers")
            if isinstance(former, list):
                self.former.update(c for c in former if isinstance(c, int) and c != self.server)
            theirs = meta.get("server_client")
            if isinstance(theirs, int) and theirs != self.server:
                # runs of another server's id (the snapshot was copied from another
                # store, or is of the name's earlier generation): not this server's
                # clocks; that id stays a server's, its items nobody's in particular
                self.former.add(theirs)
                self.owners.pop(theirs, None)
                return
            self._restore_runs(meta.get("server"))

    def _restore_runs(self, runs: Any) -> None:
        """The snapshot's runs, before those of the events replayed after it."""
        if not isinstance(runs, list):
            return
        first = self.server_runs[0][0] if self.server_runs else None
        older = [
            (run[0], run[1])
            for run in runs
            if isinstance(run, list)
            and len(run) == 2
            and isinstance(run[0], int)
            and isinstance(run[1], str | None)
            and (first is None or run[0] < first)
        ]
        self.server_runs[:0] = older


#: events read at a time by map_of_log
_PAGE = 1000


async def map_of_log(log: EventStore, doc: str, upto: int, server_client: int) -> dict[str, Any]:
    """The owner map (as snapshot meta holds it) of `doc`'s events up to seq `upto`:
    for a snapshot at `upto` written without one (by a version before this rule), so
    that its client ids belong to the users who wrote them, as they would had the
    document loaded from its log alone. Events a compaction dropped are not there: their
    ids stay unowned."""
    owners = Owners(server_client)
    after = 0
    while after < upto:
        events = await log.read(doc, after=after, upto=upto, limit=_PAGE)
        if not events:
            break
        for ev in events:
            owners.record(ev.actor, ev.update, relays=ev.meta.get("relays", ()))
        after = events[-1].seq
    return owners.to_meta()


class OwnIds:
    """Which Yjs client id is a connection's own, the one its sync step 2 may claim: the
    one its first presence (awareness) update names, when that update names exactly
    one client, with a state, and no other live connection here named it first too.

    y-websocket's and Hocuspocus' providers send exactly their own state first as their
    socket opens (y-websocket's ``websocket.onopen``, Hocuspocus' ``startSync``). Every
    later update may hold other clients' states: a provider re-sends what it receives,
    and with y-websocket's BroadcastChannel (on by default) the states of the other
    tabs of the browser, which reach it before their own sockets open. Any id a
    connection named used to be its own: a tab forwarded its neighbour's presence, then
    answered a re-sync with a step 2 that held the neighbour's edits (got over the
    channel) and took the neighbour's client id; every edit of the neighbour's was then
    refused (4403, "belongs to another user") on every reconnect, its text never saved.

    An id that two live connections named first (a tab with no state of its own, whose
    first update forwards a neighbour's) is neither's own: nobody can tell which one
    wrote it, and only a plain update (which a provider sends of its own transactions
    only, never of what it got from another tab or the server) claims it then."""

    __slots__ = ("_disputed", "_first", "_namers")

    def __init__(self) -> None:
        #: connection id -> the client id its first presence update named; None: not
        #: exactly one, or a removal
        self._first: dict[str, int | None] = {}
        #: client id -> the live connections whose first presence update named it
        self._namers: dict[int, set[str]] = {}
        #: connections whose first id another live connection named first too: neither
        #: has it, for as long as it is connected (which of the two wrote it, if either,
        #: is no clearer once the other has gone)
        self._disputed: set[str] = set()

    def noted(self, peer_id: str) -> bool:
        """Whether connection `peer_id`'s first presence update came already."""
        return peer_id in self._first

    def first(self, peer_id: str, entries: list[tuple[int, int, str]]) -> None:
        """Connection `peer_id`'s presence update of `entries` (client id, clock, state
        JSON); only the first one of a connection decides."""
        if peer_id in self._first:
            return
        client = entries[0][0] if len(entries) == 1 and entries[0][2] != "null" else None
        self._first[peer_id] = client
        if client is not None:
            namers = self._namers.setdefault(client, set())
            namers.add(peer_id)
            if len(namers) > 1:
                self._disputed |= namers

    def own(self, peer_id: str) -> frozenset[int]:
        """The client ids connection `peer_id` may claim through a sync step 2."""
        client = self._first.get(peer_id)
        if client is None or peer_id in self._disputed:
            return frozenset()
        return frozenset((client,))

    def others(self, peer_id: str) -> frozenset[int]:
        """The client ids other live connections than `peer_id` have as their own."""
        return frozenset(
            client
            for client, namers in self._namers.items()
            if any(p != peer_id and p not in self._disputed for p in namers)
        )

    def left(self, peer_id: str) -> None:
        """Connection `peer_id` left."""
        client = self._first.pop(peer_id, None)
        self._disputed.discard(peer_id)
        if client is not None:
            namers = self._namers[client]
            namers.discard(peer_id)
            if not namers:
                del self._namers[client]


def imported_clients(meta: UpdateMeta, server_client: int) -> list[int]:
    """The client ids an imported update (`meta`: its own) carries items of, but the
    server's (`server_client`): the import relays them (the event's ``relays``), so that
    it claims none of them. They belong to the clients that wrote them elsewhere (a tab
    still open on the old server goes on typing under its id when it reconnects here),
    and each goes to the first user who writes under it again, as after a sync step 2
    that relays them. The server's stays the server's (data exported from this store:
    its undos, restores, texts written whole), its runs written in the importer's name.
    Another Palimpsest store's server wrote under another id (each store's salt,
    snapshots.server_client_id): relayed too, it can never collide with this one's."""
    return sorted(c for c in meta.structs if c != server_client)


__all__ = ["META_KEY", "OwnIds", "Owners", "imported_clients", "map_of_log"]
