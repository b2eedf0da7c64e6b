"""The one dispatcher: calls the extensions' hooks, in list order.

Each hook is dispatched only to the extensions that override it (found once, when the
app is built), so a hook nobody uses costs nothing on the editing path. ``on_logged``
sees each committed batch in the room's task; ``on_committed`` runs off the editing
path: each extension that has it gets its own ordered feed, drained by its own task
(a task switch per batch, so the built-in features that never await use
``on_logged``); the rest are plain calls whose exceptions are logged, never raised into
the room that made them (``on_update``, ``on_server_change``, ``on_server_update``,
``authenticate`` and ``on_connect`` excepted: refusing is what they are for; an
exception of theirs that is not a PalimpsestError, a bug, refuses as ExtensionFailed,
its traceback logged; but a bug in on_update is logged and counted, and the client's
update goes on: _decide says why).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute

from .auth import Identity
from .closes import Closed
from .errors import AuthError, ExtensionFailed, HookWroteDocument, PalimpsestError
from .extensions import Client, Extension, Operation
from .hook_failures import HookFailures
from .hook_timing import CLOCK, Steps, timed
from .lifecycle import Service, cancel_and_wait
from .origins import Origin
from .params import declared_query
from .snapshots import SnapshotWritten
from .store.base import Event

if TYPE_CHECKING:
    from .backend import Backend
    from .room import Room, ServerUpdate

log = logging.getLogger("palimpsest.extensions")
#: how the refusal of a request no extension found credentials in begins (its rest says
#: what they look for; an endpoint with a way of its own rewords it: routes.hocuspocus)
NOT_AUTHENTICATED = "not authenticated: "

E = TypeVar("E", bound=Extension)

#: batches waiting for one extension's on_committed before the oldest are dropped
FEED_MAX = 100_000
#: seconds the extensions' on_committed queues get to catch up on shutdown
DRAIN_SECONDS = 10.0

#: said after "Name.on_update(doc) failed": a bug in on_update refuses nothing (_decide)
UPDATE_GOES_ON = "; the update goes on"

#: the keys of the answer to ``hello`` that are the core's (Extension.hello_answer)
HELLO_KEYS = ("type", "id", "ok", "user", "role", "ops")

#: every hook, and whether it is awaited (True); the others run in a room's pipeline or a
#: request and must not be coroutines (one would never run: an `async def on_update`
#: refused nothing)
_HOOKS: dict[str, bool] = {
    "authenticate": True,
    "on_connect": True,
    "on_disconnect": True,
    "on_committed": True,
    "on_deleted": True,
    "on_purged": True,
    "on_load": True,
    "on_unload": False,
    "before_apply": False,
    "on_applied": False,
    "on_logged": False,
    "on_update": False,
    "on_server_change": False,
    "on_server_update": False,
    "on_awareness": False,
    "snapshot_meta": False,
    "hello_answer": False,
    "on_snapshot": False,
    "on_refused": False,
    "on_ignored": False,
    "on_closed": False,
    "on_request": False,
    "on_commit_batch": False,
    "on_peer_commit": False,
}


@dataclass(slots=True)
class _Deleted:
    """An on_deleted call queued behind the on_committed batches before it."""

    doc: str
    by: str
    #: done once the call returned (or failed, or was given up)
    done: asyncio.Future[None]


#: a per-event hook: the bound method, its name for logs, its extension, and whether it
#: is watched for writes into the document
_PerEvent = tuple[Any, str, Extension, bool]


class _Feed:
    """One extension's on_committed calls, in order, on its own task; its on_deleted
    calls too, in the same order: a document's deletion reaches the extension after
    every batch of it that was queued before (an index whose on_committed was still
    behind put a deleted document back after on_deleted)."""

    def __init__(self, ext: Extension, timeout: float, failures: HookFailures) -> None:
        self.ext = ext
        self.timeout = timeout
        self.failures = failures
        self.queue: list[tuple[str, Sequence[Event]] | _Deleted] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0
        #: the batch whose on_committed is running (doc, first seq, last seq), if any
        self.running: tuple[str, int, int] | None = None
        #: set whenever nothing is queued or running
        self.idle = asyncio.Event()
        self.idle.set()

    def put(self, doc: str, events: Sequence[Event]) -> None:
        self.queue.append((doc, events))
        self.idle.clear()
        if len(self.queue) > FEED_MAX:
            # the oldest batch (a deletion is never dropped: it is the last word)
            i = next(i for i, item in enumerate(self.queue) if not isinstance(item, _Deleted))
            del self.queue[i]
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.error("%s.on_committed is %d batches behind; %d dropped",
                          _name(self.ext), FEED_MAX, self.dropped)  # fmt: skip
        self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.queue:
                self.idle.set()
                self.wake.clear()
                await self.wake.wait()
                continue
            item = self.queue.pop(0)
            if isinstance(item, _Deleted):
                hook, about = "on_deleted", item.doc
            else:
                doc, events = item
                hook, about = "on_committed", f"{doc}, seq {events[0].seq}..{events[-1].seq}"
                self.running = (doc, events[0].seq, events[-1].seq)
            try:
                if isinstance(item, _Deleted):
                    await self._deleted(item)
                    continue
                committed = self.ext.on_committed(doc, events)
                await _awaited(self.ext, "on_committed", committed, self.timeout)
            except TimeoutError as e:
                log.error("%s.on_committed(%s): %s: given up, the next batch goes on",
                          _name(self.ext), about, e)  # fmt: skip
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this feed is stopping
                # raised inside the hook (a task of its own that was cancelled): the
                # feed would have ended with it, and every later batch gone unseen
                log.error("%s.%s(%s) raised CancelledError; the next batch goes on",
                          _name(self.ext), hook, about)  # fmt: skip
            except Exception as e:
                self.failures.failed(_hook(self.ext, "on_committed"), about, e)
            finally:
                self.running = None

    def put_deleted(self, doc: str, by: str) -> asyncio.Future[None]:
        """Queue on_deleted(doc, by) after what is queued; done once it ran."""
        item = _Deleted(doc, by, asyncio.get_running_loop().create_future())
        self.queue.append(item)
        self.idle.clear()
        self.wake.set()
        return item.done

    async def _deleted(self, item: _Deleted) -> None:
        try:
            await _call_deleted(self.failures, self.ext, item.doc, item.by, self.timeout)
        finally:
            if not item.done.done():
                item.done.set_result(None)

    async def drain(self) -> None:
        await self.idle.wait()

    def undelivered(self) -> str:
        """What a stop now leaves undelivered: the batches queued, and the one whose
        on_committed is running (cancelled with the feed's task, so never delivered)."""
        queued = sum(not isinstance(item, _Deleted) for item in self.queue)
        n = queued + (self.running is not None)
        said = f"{n} batches not delivered"
        if self.running is not None:
            doc, first, last = self.running
            said += f" ({doc}, seq {first}..{last} (running) given up"
            said += f", {queued} queued)" if queued else ")"
        return said

    def deletions_left(self) -> list[_Deleted]:
        """The on_deleted calls still queued (taken out of the queue)."""
        left = [item for item in self.queue if isinstance(item, _Deleted)]
        self.queue = [item for item in self.queue if not isinstance(item, _Deleted)]
        return left


async def _call_deleted(
    failures: HookFailures, ext: Extension, doc: str, by: str, seconds: float
) -> None:
    try:
        await _awaited(ext, "on_deleted", ext.on_deleted(doc, by), seconds)
    except Exception as e:
        failures.failed(_hook(ext, "on_deleted"), doc, e)


def _failed(
    failures: HookFailures, ext: Extension, hook: str, about: str, e: Exception
) -> ExtensionFailed:
    """What a deciding hook's exception other than a PalimpsestError (a refusal on
    purpose) becomes: a bug, logged with its traceback and answered as ExtensionFailed,
    so that the client reads a reason, a Hocuspocus socket closes only that document,
    and HTTP answers JSON."""
    failures.failed(_hook(ext, hook), about, e)
    return ExtensionFailed(f"the server's extension {_name(ext)} failed in {hook}")


async def _awaited(ext: Extension, hook: str, result: Any, seconds: float) -> Any:
    """`ext`'s awaited `hook`'s call (`result`), awaited for `seconds` at most: a hook
    awaiting what never answers (a dead database connection) held its client, a load
    or a shutdown for ever. A plain `def` that returns a coroutine is fine; one that
    returns None said "object NoneType can't be used in 'await' expression", which did
    not say what to do. An app's extension's steps are timed (hook_timing.Steps): one
    that blocks between its awaits (a time.sleep in an async def) is named in the log,
    as a plain hook that blocks is."""
    if not inspect.isawaitable(result):
        raise TypeError(
            f"{hook} returned {type(result).__name__}, not an awaitable: make it an async def"
        )
    if not _builtin(ext):
        result = Steps(result, _hook(ext, hook))
    began = time.monotonic()
    async with asyncio.timeout(seconds) as deadline:
        try:
            return await result
        except asyncio.CancelledError:
            if deadline.expired():
                # (a plain hook that blocked the loop meanwhile is why, more often than not)
                held = CLOCK.held_since(began)
                raise TimeoutError(
                    f"{hook} did not return within {seconds:g} s (HOOK_TIMEOUT_SECONDS)"
                    + (f"; {held}" if held else "")
                ) from None
            raise


def _name(ext: Extension) -> str:
    return ext.name or type(ext).__name__


def _hook(ext: Extension, hook: str) -> str:
    """A hook as logs and errors name it: ``Name.hook``."""
    return f"{_name(ext)}.{hook}"


def _builtin(ext: Extension) -> bool:
    """One of Palimpsest's own features (server.features), not an app's extension."""
    return type(ext).__module__.startswith(__package__ + ".")


def _watched(ext: Extension) -> bool:
    """Whether `ext`'s per-event hooks are checked for writes into ``room.doc``: two
    state vectors per call, a cost that grows with the document's Yjs client ids (~4 µs
    for one, ~0.1 ms for 1,000), on top of the Yjs transaction per event that reading the
    document per event costs already."""
    return ext.reads_doc_per_event and not _builtin(ext)


def _check_kinds(ext: Extension) -> None:
    """Refuse, when the app is built, a hook that is a coroutine where it is called, not
    awaited: it would never run (an `async def on_update` refuses nothing)."""
    for hook, awaited in _HOOKS.items():
        if awaited or getattr(type(ext), hook) is getattr(Extension, hook):
            continue
        if inspect.iscoroutinefunction(getattr(ext, hook)):
            raise TypeError(
                f"{ext!r}: {hook} is an async def, but it is called, never awaited (it runs "
                f"in the room's pipeline or the request): make it a plain def"
            )


class Extensions(Service):
    """The extensions of one backend, and the hooks' dispatch."""

    def __init__(self, extensions: Sequence[Extension], hook_timeout: float = 30.0) -> None:
        self.all: tuple[Extension, ...] = tuple(extensions)
        #: seconds an awaited hook may take before it counts as failed
        self.hook_timeout = hook_timeout
        for ext in self.all:
            _check_kinds(ext)
        self.ops: dict[str, Operation] = {}
        self._takes_query: tuple[str, ...] = ()
        self.routes: list[BaseRoute] = []
        self.services: list[Service] = []
        self._by: dict[str, tuple[Extension, ...]] = {}
        for hook in _HOOKS:
            base = getattr(Extension, hook)
            self._by[hook] = tuple(e for e in self.all if getattr(type(e), hook) is not base)
        #: how failing hooks are logged (a traceback a minute per hook, then a count)
        self.failures = HookFailures()
        self._feeds = [_Feed(e, hook_timeout, self.failures) for e in self._by["on_committed"]]
        #: each plain hook's (extension, call), bound once; an app's extensions' calls
        #: timed (hook_timing: one that blocks the event loop is named in the log)
        self._plain = {
            hook: tuple((e, timed(e, hook)) for e in self._by[hook])
            for hook, awaited in _HOOKS.items()
            if not awaited
        }
        # the hooks called per event, bound once: on the editing path (and replay)
        self._before_apply: tuple[_PerEvent, ...] = ()
        self._on_applied: tuple[_PerEvent, ...] = ()
        #: whether a committed batch of client edits may be applied to the document as
        #: merged updates, the per-event hooks run after (Extension.reads_doc_per_event)
        self.merged_apply = True
        self._bind()

    def _bind(self) -> None:
        """The per-event hooks, bound once (the editing path and replay call them), with
        whether each is watched for writes into the document: an app's extension's that
        reads the document per event (``reads_doc_per_event``; one that says it does not
        read ``room.doc`` there writes nothing there either, and is spared the check)."""
        self._before_apply = tuple(
            (timed(e, "before_apply"), _hook(e, "before_apply"), e, _watched(e))
            for e in self._by["before_apply"]
        )
        self._on_applied = tuple(
            (timed(e, "on_applied"), _hook(e, "on_applied"), e, _watched(e))
            for e in self._by["on_applied"]
        )
        self.merged_apply = not any(
            e.reads_doc_per_event for e in self._by["before_apply"] + self._by["on_applied"]
        )
        #: whether a room makes a server change on a copy first, for on_server_update
        self.checks_server_updates = bool(self._by["on_server_update"])

    def _wrote(self, ext: Extension, hook: str, room: Room) -> HookWroteDocument:
        """`ext`'s `hook` wrote into `room.doc`: said, and that hook is off from now on
        (called again, the hook would write again at the room's next load: it would never
        load). The caller drops the room, which reloads from the log."""
        named = _hook(ext, hook)
        self._by[hook] = tuple(e for e in self._by[hook] if e is not ext)
        if hook in self._plain:
            self._plain[hook] = tuple((e, c) for e, c in self._plain[hook] if e is not ext)
        self._bind()
        log.error(
            "%s wrote into room.doc of %s: a change in no event (connected clients never get "
            "it, a later joiner and the next snapshot would, and the log would not). Undone: "
            "the room reloads from the log (its clients reconnect), and %s is no longer "
            "called until the server restarts. Change a document through "
            "`await room.server_change(actor, kind, change)`, which logs it (from a plain "
            "hook, in a task of yours); only on_load may write room.doc (a seed, logged)",
            named, room.name, named,
        )  # fmt: skip
        return HookWroteDocument(f"{named} wrote into the live document; it reloads from the log")

    @property
    def takes_query(self) -> tuple[str, ...]:
        """The query parameters every HTTP route takes for the extensions
        (``Extension.takes_query``), in list order, as checked in ``setup``."""
        return self._takes_query

    @property
    def read_cookies(self) -> bool:
        """Whether an extension that authenticates may accept a cookie
        (``Extension.reads_cookies``): requests with one then get the Origin check."""
        return any(e.reads_cookies for e in self._by["authenticate"])

    def setup(self, backend: Backend) -> None:
        for ext in self.all:
            ext.setup(backend)
        names: dict[str, None] = {}
        for ext in self.all:
            # a string, or a name a core route reads, refused here (params.declared_query)
            names.update(dict.fromkeys(declared_query(_name(ext), ext.takes_query)))
        self._takes_query = tuple(names)
        for ext in self.all:
            for name, op in ext.operations().items():
                if name in self.ops or name == "hello":
                    raise ValueError(f"{ext!r}: the operation {name!r} is taken")
                self.ops[name] = op
            self.routes.extend(ext.routes())
            self.services.extend(ext.services())

    def get(self, kind: type[E]) -> E | None:
        """The first extension of this type (e.g. ``extensions.get(Fanout)``), or None."""
        for ext in self.all:
            if isinstance(ext, kind):
                return ext
        return None

    def __iter__(self) -> Any:
        return iter(self.all)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        for feed in self._feeds:
            # of this start's event loop (a stopped app may start again on another)
            feed.wake = asyncio.Event()
            feed.idle = asyncio.Event()
            feed.idle.set()
            feed.task = asyncio.create_task(feed.run(), name=f"on_committed:{feed.ext!r}")
        for svc in self.services:
            await svc.start()

    async def drain(self) -> None:
        """Wait until every on_committed queued so far has run."""
        for feed in self._feeds:
            await feed.drain()

    async def stop(self) -> None:
        for feed in self._feeds:
            if feed.task is None:
                continue
            try:
                async with asyncio.timeout(DRAIN_SECONDS):  # (not wait_for: it can lose a cancel)
                    await feed.drain()
            except TimeoutError:
                log.error("%s.on_committed did not catch up within %g s on shutdown; %s "
                          "(the changefeed delivers from a position instead: "
                          "docs/changefeed.md)", _name(feed.ext), DRAIN_SECONDS,
                          feed.undelivered())  # fmt: skip
            await cancel_and_wait(feed.task)
            feed.task = None
            # a deletion's on_deleted still runs (its batches before it are dropped: no
            # call of the extension comes after it, which is all the order promised)
            for left in feed.deletions_left():
                await feed._deleted(left)
            feed.queue.clear()  # (not delivered by a later start of the same app)
            feed.idle.set()
        for svc in reversed(self.services):
            try:
                await svc.stop()
            except Exception:
                log.exception("stopping %r failed", svc)
        self.failures.close()

    # --- requests ---------------------------------------------------------------------

    async def authenticate(self, conn: HTTPConnection) -> Identity:
        for ext in self._by["authenticate"]:
            try:
                called = ext.authenticate(conn)
                identity = await _awaited(ext, "authenticate", called, self.hook_timeout)
            except PalimpsestError:
                raise
            except Exception as e:
                raise _failed(self.failures, ext, "authenticate", conn.url.path, e) from e
            if identity is not None:
                if not isinstance(identity, Identity):
                    wrong = TypeError(f"it returned {type(identity).__name__}, not an Identity "
                                      "(or None)")  # fmt: skip
                    raise _failed(self.failures, ext, "authenticate", conn.url.path, wrong)
                return identity
        wanted = [e.credentials for e in self._by["authenticate"] if e.credentials]
        raise AuthError(
            NOT_AUTHENTICATED + ("; or ".join(wanted) or "no credentials this server accepts")
        )

    async def connect(self, client: Client) -> list[Extension]:
        """on_connect in order; returns the extensions it passed (their on_disconnect is
        owed even when a later one refuses)."""
        passed: list[Extension] = []
        try:
            for ext in self._by["on_connect"]:
                try:
                    await _awaited(ext, "on_connect", ext.on_connect(client), self.hook_timeout)
                except PalimpsestError:
                    raise
                except Exception as e:
                    raise _failed(self.failures, ext, "on_connect", client.doc, e) from e
                passed.append(ext)
        except BaseException:
            await self.disconnect(client, passed)
            raise
        return passed

    async def disconnect(self, client: Client, passed: Sequence[Extension] | None = None) -> None:
        wanted = self._by["on_disconnect"]
        if passed is not None:
            wanted = tuple(e for e in wanted if e in passed or e not in self._by["on_connect"])
        for ext in wanted:
            try:
                await _awaited(ext, "on_disconnect", ext.on_disconnect(client), self.hook_timeout)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_disconnect"), client.doc, e)

    # --- after the fact -------------------------------------------------------------------

    def committed(self, room: Room, events: list[Event]) -> None:
        if events:
            # one batch that no hook can change under the next one (a hook that emptied
            # the list took the batch from every later hook, the room's own included)
            batch = tuple(events)
            wrote: HookWroteDocument | None = None
            for ext, call in self._plain["on_logged"]:
                watched = not _builtin(ext)
                sv = room.doc.get_state() if watched else b""
                try:
                    call(room, batch)
                except Exception as e:
                    about = f"{room.name}, seq {batch[0].seq}..{batch[-1].seq}"
                    self.failures.failed(_hook(ext, "on_logged"), about, e)
                if watched and room.doc.get_state() != sv:
                    wrote = wrote or self._wrote(ext, "on_logged", room)
            for feed in self._feeds:
                feed.put(room.name, batch)
            if wrote is not None:  # (the batch is durable: delivered all the same)
                raise wrote  # the room's pipeline drops it

    # --- in the pipeline ----------------------------------------------------------------

    async def loaded(self, room: Room) -> None:
        for ext in self._by["on_load"]:
            try:
                await _awaited(ext, "on_load", ext.on_load(room), self.hook_timeout)
            except PalimpsestError:
                raise
            except Exception as e:
                self.failures.failed(_hook(ext, "on_load"), room.name, e)

    async def deleted(self, doc: str, by: str) -> None:
        """on_deleted, in list order. An extension with on_committed gets it in its feed,
        after every batch queued before (of this document and the others): the batches
        of a document are delivered, and on_deleted is the last call about it. The
        deletion is answered once it ran, or after HOOK_TIMEOUT_SECONDS of waiting
        behind the batches (it still runs after them)."""
        feeds = {feed.ext: feed for feed in self._feeds if feed.task is not None}
        for ext in self._by["on_deleted"]:
            feed = feeds.get(ext)
            if feed is None:
                await _call_deleted(self.failures, ext, doc, by, self.hook_timeout)
                continue
            done = feed.put_deleted(doc, by)
            try:
                async with asyncio.timeout(self.hook_timeout):  # (wait_for can lose a cancel)
                    await asyncio.shield(done)
            except TimeoutError:
                log.warning("%s.on_deleted(%s) still waits behind %d on_committed batches "
                            "after %g s; the deletion is answered without it (it runs "
                            "after them)", _name(ext), doc, len(feed.queue),
                            self.hook_timeout)  # fmt: skip

    async def purged(self, doc: str, by: str) -> None:
        for ext in self._by["on_purged"]:
            try:
                await _awaited(ext, "on_purged", ext.on_purged(doc, by), self.hook_timeout)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_purged"), doc, e)

    def unloaded(self, room: Room) -> None:
        for ext, call in self._plain["on_unload"]:
            try:
                call(room)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_unload"), room.name, e)

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None:
        for hook, named, ext, watched in self._before_apply:
            sv = room.doc.get_state() if watched else b""
            try:
                hook(room, event, origin)
            except Exception as e:
                self.failures.failed(named, f"{room.name}@{event.seq}", e)
            if watched and room.doc.get_state() != sv:
                raise self._wrote(ext, "before_apply", room)  # the room's pipeline drops it

    def applied(self, room: Room, event: Event, origin: Origin) -> None:
        for hook, named, ext, watched in self._on_applied:
            sv = room.doc.get_state() if watched else b""
            try:
                hook(room, event, origin)
            except Exception as e:
                self.failures.failed(named, f"{room.name}@{event.seq}", e)
            if watched and room.doc.get_state() != sv:
                raise self._wrote(ext, "on_applied", room)  # the room's pipeline drops it

    def update(self, room: Room, client: Client, update: bytes) -> None:
        self._decide("on_update", room, client, update)

    def server_change(self, room: Room, actor: str, kind: str) -> None:
        self._decide("on_server_change", room, actor, kind)

    def server_update(self, room: Room, change: ServerUpdate) -> None:
        self._decide("on_server_update", room, change)

    def _decide(self, hook: str, room: Room, *args: Any) -> None:
        """A plain hook that may refuse: each extension's in order, a PalimpsestError
        raised as it is, anything else (a bug) as ExtensionFailed, except from on_update:
        there a bug is logged and counted, and the update goes on to the next extension.

        Why on_update lets a bug through: the refusal closed the sender's socket (1011),
        y-websocket came back and sent the same update again, for ever (a deterministic
        bug fails every time), and the user's text, refused at every try, was never
        logged: gone with the tab. The sender did nothing wrong, and an extension that
        means to refuse raises a PalimpsestError. A server change's bug (HTTP, a
        websocket operation) still refuses: its caller reads the 500 and does not retry."""
        for ext, call in self._plain[hook]:
            # on_update is called per frame, where no work grows with the document: it is
            # not checked; a server change (heavy already) is
            watched = hook == "on_server_change" and not _builtin(ext)
            sv = room.doc.get_state() if watched else b""
            try:
                call(room, *args)
            except PalimpsestError:
                raise
            except Exception as e:
                if hook == "on_update":
                    self.failures.failed(_hook(ext, hook), room.name, e, UPDATE_GOES_ON)
                    continue
                raise _failed(self.failures, ext, hook, room.name, e) from e
            finally:
                if watched and room.doc.get_state() != sv:
                    room.diverged(self._wrote(ext, hook, room))

    def awareness(self, room: Room, entries: bytes) -> None:
        for ext, call in self._plain["on_awareness"]:
            try:
                call(room, entries)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_awareness"), room.name, e)

    def snapshot_meta(self, room: Room) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        for ext, call in self._plain["snapshot_meta"]:
            try:
                mine = dict(call(room))
                if not _builtin(ext):
                    # stored as JSON: an entry that is not failed the write of every
                    # snapshot, and the store's error could not say whose it was (the
                    # built-in features' entries, undo stacks, are large and never fail)
                    json.dumps(mine)
            except Exception as e:
                also = " (its entries are left out of the snapshot)"
                self.failures.failed(_hook(ext, "snapshot_meta"), room.name, e, also)
                continue
            meta.update(mine)
        return meta

    def hello_answer(self, room: Room, client: Client) -> dict[str, Any]:
        """The extensions' keys of the answer to `client`'s ``hello`` (list order: a later
        one's key wins); ``ok``, ``user``, ``role`` and ``ops`` are the core's."""
        answer: dict[str, Any] = {}
        for ext, call in self._plain["hello_answer"]:
            try:
                answer.update(call(room, client))
            except Exception as e:
                self.failures.failed(_hook(ext, "hello_answer"), room.name, e)
        for key in HELLO_KEYS:
            answer.pop(key, None)
        return answer

    def snapshot(self, written: SnapshotWritten) -> None:
        for ext, call in self._plain["on_snapshot"]:
            try:
                call(written)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_snapshot"), written.doc, e)

    def refused(self, reason: str) -> None:
        for ext, call in self._plain["on_refused"]:
            try:
                call(reason)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_refused"), reason, e)

    def ignored(self, endpoint: str, mtype: str) -> None:
        for ext, call in self._plain["on_ignored"]:
            try:
                call(endpoint, mtype)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_ignored"), endpoint, e)

    def closed(self, client: Client, closed: Closed) -> None:
        for ext, call in self._plain["on_closed"]:
            try:
                call(client, closed)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_closed"), client.doc, e)

    def request(self, route: str, method: str, status: int) -> None:
        for ext, call in self._plain["on_request"]:
            try:
                call(route, method, status)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_request"), route, e)

    def commit_batch(self, events: int, seconds: float) -> None:
        for ext, call in self._plain["on_commit_batch"]:
            try:
                call(events, seconds)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_commit_batch"), f"{events} events", e)

    def peer_commit(self, doc: str) -> None:
        for ext, call in self._plain["on_peer_commit"]:
            try:
                call(doc)
            except Exception as e:
                self.failures.failed(_hook(ext, "on_peer_commit"), doc, e)
