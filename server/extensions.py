"""The extension interface: the one way a feature attaches to Palimpsest.

An extension is an object with named hooks. Subclass :class:`Extension`, override the
hooks you need, and list the object when you build the app::

    class Audit(Extension):
        async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
            for ev in events:
                print(doc, ev.seq, ev.actor, ev.kind)

    collab = Palimpsest(store="sqlite:///app.db", extensions=[MyAuth(), Audit()])

Palimpsest's own features (signed tokens, open mode, limits, undo, history, fan-out,
metrics, administration) are extensions too, built from the settings and listed after
the app's own (see ``server.features``). Hooks run in list order; one dispatcher
(``server.dispatch.Extensions``) calls them. docs/extending.md shows every hook with an
example and the order they run in.

Three kinds of hooks, by where they run:

- **requests** (``authenticate``, ``on_connect``, ``on_disconnect``) and **loading**
  (``on_load``): awaited on the request's own path; raising a
  :class:`~server.errors.PalimpsestError` refuses the request (or the load) with that
  error's close code / HTTP status.
- **after the fact** (``on_committed``, ``on_deleted``, ``on_purged``): ``on_committed``
  is awaited off the editing path, one batch at a time and in order, per extension;
  ``on_deleted`` and ``on_purged`` before the deletion (the purge) is answered. An
  exception is logged; it never reaches a room or a client.
- **in the pipeline** (``on_unload``, ``before_apply``, ``on_applied``, ``on_logged``,
  ``on_update``, ``on_server_change``, ``on_server_update``, ``on_awareness``,
  ``snapshot_meta``, ``hello_answer``, ``on_snapshot``, ``on_refused``,
  ``on_ignored``, ``on_closed``, ``on_request``,
  ``on_commit_batch``, ``on_peer_commit``): plain functions called where the thing
  happens, so they see the room exactly as it is then. They must be quick and must not
  block: hand slow work to a task or to ``on_committed``. An exception is logged and
  the room goes on (``on_update``, ``on_server_change`` and ``on_server_update``
  excepted: a PalimpsestError there refuses the change; another exception refuses a
  server change, but not a client's update: see ``Extension.on_update``).

Per-room state is typed: ``room.state(MyState)`` returns the room's ``MyState``, made
with ``MyState(room)`` (or a factory) the first time; ``room.peek(MyState)`` returns it
or None. Nothing is keyed by strings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute

from .auth import Identity
from .closes import Closed
from .lifecycle import Service
from .origins import Origin
from .snapshots import SnapshotWritten
from .store.base import Event

if TYPE_CHECKING:
    from .backend import Backend
    from .room import Room, ServerUpdate


@dataclass(frozen=True, slots=True)
class Client:
    """One websocket connection, as extensions see it."""

    #: unique in this process: ``INSTANCE/N``
    id: str
    doc: str
    identity: Identity
    #: the client's address, as the ASGI server reports it
    address: str

    @property
    def user(self) -> str:
        return self.identity.user


@dataclass(frozen=True, slots=True)
class OpContext:
    """What a websocket extension operation is called with."""

    backend: Backend
    room: Room
    client: Client
    #: wait until everything this connection sent before the request is applied
    flush: Callable[[], Awaitable[None]]
    #: count bytes written on the client's behalf against its rate (an undo appends as
    #: much as the edit it reverts)
    charge: Callable[[int], None] = lambda _n: None
    #: the connection id its edits are logged with (their meta's ``conn``), when not
    #: ``client.id`` (a Hocuspocus document's): the session whose undo step is whose
    session: str | None = None


#: a websocket extension operation: (context, request body) -> answer body. The answer
#: goes back as ``{"type": "result", "id": <request id>, **answer}``; a PalimpsestError
#: becomes ``{"ok": false, "reason": ..., "code": <error class>}``.
Operation = Callable[[OpContext, dict[str, Any]], Awaitable[dict[str, Any]]]


class Extension:
    """Base class of every extension. Every hook does nothing unless overridden."""

    #: a name for logs (default: the class name)
    name: str = ""
    #: what credentials ``authenticate`` accepts, said to a client nobody accepted
    credentials: str = ""
    #: whether ``authenticate`` may accept what a browser sends on its own: a cookie (an
    #: app's session, docs/extending.md). While an extension that authenticates says so,
    #: a websocket or a write that carries a ``Cookie`` header gets the Origin check
    #: (request_guard.py) whatever the mode. An extension whose credentials a page must
    #: hand over itself (a token in a header or the query) sets this False, as the
    #: built-in token and open modes do: unrelated cookies of the site then change nothing
    reads_cookies: bool = True
    #: query parameters of the extension's own, taken on every HTTP route besides each
    #: route's own and the credentials (``token``, ``user``): an ``authenticate`` that
    #: reads ``conn.query_params["api_key"]`` lists ``("api_key",)``. A parameter
    #: nobody takes is refused with 400 (an ignored one can destroy data: server/params.py).
    #: A tuple (list, set) of names: a plain string, or a name Palimpsest reads itself
    #: (``dry_run``, ``before``, ``seq``, any route's own, ``token``, ``user``: it would
    #: cancel that route's refusal), is refused when the app is built
    takes_query: tuple[str, ...] = ()
    #: whether ``before_apply`` / ``on_applied`` read the live document (``room.doc``)
    #: and need it exactly before / after that one event. An extension whose hooks read
    #: only the event and the room's bookkeeping (``room.seq``, ``room.current_change``,
    #: its own state) sets this False: when no extension needs it, a committed batch of
    #: client edits is applied to the document as one merged update per broadcast frame
    #: (the merge the broadcast made already), and the hooks then run for each event
    #: of the batch in order, as they would otherwise
    reads_doc_per_event: bool = True

    # --- wiring (once, when the app is built) ---------------------------------------

    def setup(self, backend: Backend) -> None:
        """Called once, before anything starts: keep the backend if the hooks need it
        (its store, rooms and settings)."""

    def routes(self) -> Sequence[BaseRoute]:
        """Starlette routes to mount next to Palimpsest's own (under the app's mount
        point). Endpoints authenticate with ``backend.authenticate(request, doc, need)``."""
        return ()

    def services(self) -> Sequence[Service]:
        """Long-lived services, started (in list order) when the app starts and stopped
        (in reverse) when it stops."""
        return ()

    def operations(self) -> Mapping[str, Operation]:
        """Websocket extension operations by message ``type`` (message type 100 on the
        wire, also what ``hello`` lists). Two extensions may not claim one name."""
        return {}

    def hello_answer(self, room: Room, client: Client) -> Mapping[str, Any]:
        """What this extension adds to the answer to ``hello`` (who the connection is,
        which operations there are), for `client` on `room`'s document: the undo's
        ``can_undo`` / ``can_redo``. Plain and quick, as the pipeline's hooks; it cannot
        change ``ok``, ``user``, ``role`` or ``ops``. An exception is logged, and its
        keys are left out."""
        return {}

    # --- requests ---------------------------------------------------------------------

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        """Who is asking. ``conn`` is a starlette ``Request`` or ``WebSocket`` (headers,
        cookies, ``query_params``), before the websocket is accepted. Return None when
        the credentials are not yours (the next extension is asked; when none accepts,
        the request is refused with 401 / close 4401). Raise AuthError for credentials
        that are yours and bad. The core then checks ``identity.docs`` and the role."""
        return None

    async def on_connect(self, client: Client) -> None:
        """A websocket is authenticated and about to be served (its document is loaded
        next). Raise a PalimpsestError to refuse it with that error's close code."""

    async def on_disconnect(self, client: Client) -> None:
        """A websocket whose ``on_connect`` passed has gone away (whatever the reason)."""

    # --- after the fact -------------------------------------------------------------------

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        """Events this process appended to the log, after they are durable (seq, ts,
        actor, kind, update, meta), in seq order per document. Runs off the editing path:
        a slow hook delays only its own later calls; an exception is logged."""

    async def on_deleted(self, doc: str, by: str) -> None:
        """This process deleted a document (by user `by`): its events, snapshots and tags
        are gone from the store and its connections here are closed. The last call about
        the document: it runs after every ``on_committed`` batch of this extension that
        was queued before it. An exception is logged."""

    async def on_purged(self, doc: str, by: str) -> None:
        """This process purged the deleted content of a document's history (compaction
        with ``purge_deleted``, server.erasure): its room here was reloaded from the new
        base. An exception is logged."""

    # --- in the pipeline ----------------------------------------------------------------

    async def on_load(self, room: Room) -> None:
        """A document was loaded (``room.loaded`` says from which snapshot, how many
        events were replayed and how long it took), before any connection joins and
        before its pipeline starts. May read the store. A PalimpsestError refuses the
        load (the connections waiting for it get its close code, 1013 for a StoreError,
        and retry); any other exception is logged."""

    def on_unload(self, room: Room) -> None:
        """A room stopped: unloaded when idle (after its final snapshot) or dropped after
        a failure (it reloads from the log on next use). Release per-room resources."""

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None:
        """A durable event is about to be applied to the live document (also while a
        document loads: replayed events carry a ReplayOrigin)."""

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        """A durable event was applied to the live document. The origin says where it
        came from: a client of this process, a server change (undo, redo, restore; called
        once its event is durable), another process (fan-out, or read from the store), or
        the log while loading."""

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        """Events this process appended to the room's log, once durable, broadcast and
        applied (after their ``on_applied``), in seq order: the same batches as
        ``on_committed``, called in the room's own task. For bookkeeping that never
        waits (a counter, a flag, a wake-up); ``on_committed`` costs a task switch per
        batch and suits work that awaits."""

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        """A client's update passed decoding and is about to be queued for the log.
        Raise a PalimpsestError to refuse it (the connection is closed with its code).
        Any other exception is a bug of the extension: logged and counted, and the
        update goes on (refused, the user's text would be lost, and y-websocket would
        send it again at every reconnect). Changes the server makes for a user (undo,
        redo, restore, a text written whole over HTTP) do not pass here: see
        ``on_server_change``."""

    def on_server_change(self, room: Room, actor: str, kind: str) -> None:
        """The server is about to change the document for `actor`: an ``undo``, a
        ``redo``, an ``undo_mark`` (a group closed), a ``restore``, an ``edit`` (PUT
        /api/docs/{doc}/text) or an ``import`` (POST /api/docs/{doc}/updates). Raise a
        PalimpsestError to refuse it: nothing is logged, the HTTP request is answered
        with its status, a websocket operation with ``{"ok": false, ...}``. A guard that
        makes documents read-only needs this hook as well as ``on_update``. It is not
        given the change: ``on_server_update`` is, for a policy on content."""

    def on_server_update(self, room: Room, change: ServerUpdate) -> None:
        """A change the server made for ``change.actor`` and is about to log: an
        ``edit`` (PUT /api/docs/{doc}/text), an ``import`` (POST
        /api/docs/{doc}/updates), a ``restore`` or a ``revert`` (never an undo or a
        redo: docs/extending.md says why). ``change.update`` is the Yjs update that
        will be logged; ``change.doc`` the document as it will be, a copy made on the
        room's pipeline (``room.doc`` is still as it was). Raise a PalimpsestError to
        refuse it: nothing is logged or applied, the request is answered with its
        status and reason. With ``on_update`` (clients' updates) it sees every change
        of content before it is logged. Only when some extension has this hook is a
        server change made on a copy first (a full encode of the document)."""

    def on_awareness(self, room: Room, entries: bytes) -> None:
        """Presence changed by this process's connections: encoded awareness entries
        (``protocol.decode_awareness`` reads them). Not called for presence relayed from
        other processes."""

    def snapshot_meta(self, room: Room) -> Mapping[str, Any]:
        """Entries to store in the meta of a snapshot being taken of the room (read back
        as ``room.snapshot_meta`` when the document loads from it)."""
        return {}

    def on_snapshot(self, written: SnapshotWritten) -> None:
        """A snapshot was written by this process."""

    def on_refused(self, reason: str) -> None:
        """A connection or a frame was refused; `reason` is a short snake_case label."""

    def on_ignored(self, endpoint: str, mtype: str) -> None:
        """A websocket frame was ignored: a message type the server does not read from
        clients (``ws``: protocol.ignored_type; ``hocuspocus``: a type past sync
        status). `mtype` is the type's number up to 15, else ``other``."""

    def on_closed(self, client: Client, closed: Closed) -> None:
        """A websocket connection that was accepted has ended: why (``closed.cause``, one
        of ``closes.CAUSES``), its close code and reason, how long it was open."""

    def on_request(self, route: str, method: str, status: int) -> None:
        """An HTTP request was answered: its route's template (``/api/docs/{doc}``, never
        the path itself; ``unmatched`` when no route takes it), its method (``other``
        for one the API does not use) and its status."""

    def on_commit_batch(self, events: int, seconds: float) -> None:
        """One group-commit transaction finished: how many events, how long it took."""

    def on_peer_commit(self, doc: str) -> None:
        """The fan-out bus announced events of `doc` committed by a process sharing the
        store (whether or not the document is loaded here; the announcement may be this
        process's own, and Redis may lose one: read the store, don't count on it). The
        changefeed wakes its followers with it."""

    def __repr__(self) -> str:
        return f"<extension {self.name or type(self).__name__}>"


__all__ = ["Client", "Extension", "Identity", "OpContext", "Operation", "SnapshotWritten"]
