"""Palimpsest's exceptions.

::

    PalimpsestError
    ├── ProtocolError            a frame that does not follow the wire protocol (close 4400)
    │   └── UnsupportedType      a Yjs type the server's engine (yrs) cannot hold
    ├── DocNameError             a document name that is not allowed (close 4400 / HTTP 400)
    ├── UpdateRejected           an update that fails to decode or apply (close 4400)
    ├── FrameTooLarge            a frame over the configured limit (close 4413)
    │   └── BodyTooLarge         a request body over its route's limit (HTTP 413)
    ├── AuthError                missing, bad or expired token (close 4401 / HTTP 401)
    │   └── Forbidden            valid token, not allowed here (close 4403 / HTTP 403)
    │       └── ForeignItems     new items under client ids other users own
    ├── RateLimited              too many events (close 1013, transient) or requests
    │   │                        (HTTP 429)
    │   └── TooManyConnections   too many websockets from one address (close 4429)
    ├── NotFound                 unknown document, seq or tag (HTTP 404)
    │   └── Deleted              a document that was deleted, not written since (HTTP 410)
    ├── BadRequest               a malformed HTTP request (HTTP 400)
    ├── TooDeep                  a version nested deeper than the history renders (HTTP 422)
    ├── Conflict                 does not fit the document as it is (HTTP 409)
    │   ├── ActorTaken           a rename of an actor to a name already in the store
    │   └── Locked               a write to a document locked read-only (HTTP 423)
    ├── ExtensionFailed          an extension's hook raised something else than these
    │                            (close 1011 / HTTP 500): what it guarded is refused
    └── StoreError               the event store failed (close 1011 / HTTP 503)
        ├── StoreUnavailable     the store cannot be reached now; try again (close 1013)
        └── LogDamaged           a document's log lacks events its head says it holds:
                                 refused, never written on top (close 1011 / HTTP 503)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store.base import Event

#: Never swallowed. pycrdt raises ``pyo3_runtime.PanicException``, which derives from
#: BaseException, so the boundaries around it catch BaseException: after these. A
#: MemoryError is not a panic that broke a document, nor a reason to drop one update: it
#: goes up to where it is logged, and `palimpsest serve` stops for it (out_of_memory.py)
FATAL: tuple[type[BaseException], ...] = (
    KeyboardInterrupt,
    SystemExit,
    asyncio.CancelledError,
    MemoryError,
)


class PalimpsestError(Exception):
    """Base of every error Palimpsest raises on purpose."""

    close_code = 1011
    http_status = 500
    #: seconds after which trying again may succeed, sent as Retry-After (None: unsaid)
    retry_after: int | None = None
    #: the HTTP answer's "error" (None: the class's name)
    error_name: str | None = None


class ProtocolError(PalimpsestError):
    close_code = 4400
    http_status = 400


class UnsupportedType(ProtocolError):
    """A well-formed Yjs update holding a type yrs cannot read (Y.XmlHook): the server
    cannot hold it, so it is refused in these words rather than as undecodable."""


class DocNameError(PalimpsestError):
    close_code = 4400
    http_status = 400
    error_name = "BadRequest"  # over HTTP, as every other malformed request


class UpdateRejected(PalimpsestError):
    close_code = 4400
    http_status = 400


class UpdateGap(UpdateRejected):
    """An update whose new items leave a clock gap or name items the document does not
    hold (ownership.py): never logged; its connection drops it and its sync step 2
    brings what it misses (resync.py), or it is refused."""

    def __init__(self, detail: str, client: int, clock: int) -> None:
        super().__init__(f"{detail}: re-sync")
        #: what is wrong, without the advice
        self.detail = detail
        #: it applies once the document holds `client`'s items below `clock`
        self.client = client
        self.clock = clock


class FrameTooLarge(PalimpsestError):
    close_code = 4413
    http_status = 413


class BodyTooLarge(FrameTooLarge):
    """A request body over its route's limit, found while it is read (the request guard
    stops reading there): 413, named as the guard's early refusal is."""


class AuthError(PalimpsestError):
    close_code = 4401
    http_status = 401


class Forbidden(AuthError):
    close_code = 4403
    http_status = 403


class ForeignItems(Forbidden):
    """An update that carries new items under client ids other users own, or (a step 2)
    that other live connections name as their own, unclaimed yet (ownership.py).
    In a sync step 2 they may be another tab's edits still on their way from their
    owner (resync.py): the step 2 is asked for again without them."""

    def __init__(self, message: str, clients: tuple[int, ...]) -> None:
        super().__init__(message)
        #: every client id of the update with new items another user owns
        self.clients = clients


class RateLimited(PalimpsestError):
    close_code = 1013
    http_status = 429


class TooManyConnections(RateLimited):
    close_code = 4429
    http_status = 429


class NotFound(PalimpsestError):
    close_code = 4404
    http_status = 404


class Deleted(NotFound):
    """The document was deleted (its tombstone is in the store) and nothing has been
    written under its name since: 410, so a reader can tell it from a name never used."""

    http_status = 410


def deleted_reason(doc: str) -> str:
    """The 4404 reason for a document deleted by someone: it names no one (every user
    connected reads it; who deleted it is in the server's log). It says "was deleted", as
    refuse_deleted_content's does: the Python client tells a deleted document (its
    ``Deleted``) from another 4404 by those words."""
    return f"the document was deleted ({doc!r})"


class DeletedMeanwhile(Deleted):
    """The store refused a room's append: the document's log was deleted under the room
    (its head is below the seq the room had seen: EventStore.append's floors), by a
    deletion that raced the room's load or that this process was not told of. Nothing
    was written. The room is dropped, its connections closed with 4404 and ``reason``
    (server.room.Room._fail); an HTTP caller of the change gets 410 ``Deleted``."""

    error_name = "Deleted"  # the answer of every other route for a deleted document

    def __init__(self, doc: str) -> None:
        super().__init__(
            f"document {doc!r} was deleted while this change was being made: nothing was "
            "written; what is written under its name now starts it anew"
        )
        self.doc = doc
        #: the words for a close frame
        self.reason = deleted_reason(doc)


def replaced_reason(doc: str) -> str:
    """The 4409 reason for a document replaced under its room (``palimpsest copy
    --replace`` while a server has it open): it never says "deleted" (the Python client
    would raise Deleted), and tells the client to load the new document; the name last,
    where a close frame's 123 bytes cut a long one."""
    return (
        "the document was replaced; edits since were not saved: reconnect with an empty "
        f"copy ({doc!r})"
    )


class ReplacedMeanwhile(DeletedMeanwhile):
    """The store refused a room's append because the name holds another document now
    (another generation, DocInfo.generation, and a log of its own): ``palimpsest copy
    --replace`` wrote it while the room had the old one open (or the old one was deleted
    and a new one written on a process that did not tell this one). Nothing of the
    room's was written. The room is dropped as for a deletion (no final snapshot), its
    connections closed with 4409 and ``reason``; an HTTP caller of the change gets 409
    ``Replaced``."""

    error_name = "Replaced"
    close_code = 4409
    http_status = 409

    def __init__(self, doc: str) -> None:
        PalimpsestError.__init__(
            self,
            f"document {doc!r} was replaced while this change was being made: nothing was "
            "written; the new document is what its name holds now",
        )
        self.doc = doc
        self.reason = replaced_reason(doc)


class StaleReplacedCopy(NotFound):
    """A client's copy holds items of a document that ``palimpsest copy --replace``
    replaced (the name's tombstone records them, deletion.replace_tombstone): a tab that
    kept its Y.Doc across the 4409 and reconnected. Refused with 4409, as the replace
    closed it, and words that never say "deleted": what its app does on the replace's
    4409 (drop the Y.Doc, connect with a new one) is what it must do now."""

    error_name = "Replaced"
    close_code = 4409
    http_status = 409

    def __init__(self, doc: str) -> None:
        super().__init__(
            "the document was replaced and this copy holds the old one: reconnect with an "
            f"empty copy ({doc!r})"
        )
        self.doc = doc


class BadRequest(PalimpsestError):
    close_code = 4400
    http_status = 400


class TooDeep(PalimpsestError):
    """A version holds values nested deeper than the history renders (maps, arrays and
    XML elements in one another: history.render.MAX_DEPTH): its JSON would overflow the
    stack of the server that renders it and of the readers that parse it. The version is
    still there whole, as a Yjs update."""

    close_code = 4400
    http_status = 422


class Conflict(PalimpsestError):
    """The request does not fit the document as it is (a root of another type)."""

    close_code = 4409
    http_status = 409


class ActorTaken(Conflict):
    """A rename of an actor (``palimpsest rename-actor``) refused: the new name is an
    actor of the store already (a merge of two users is not done), or the old one is
    also the name of an event kind."""

    #: the new name is an actor and the old one is none any more: the rename was done
    #: (by an earlier run), nothing is left to do
    renamed_already = False


class Locked(Conflict):
    """A write to a document an admin locked read-only (server.locking): refused until
    it is unlocked."""

    close_code = 4423
    http_status = 423


class ExtensionFailed(PalimpsestError):
    """A hook that decides (``authenticate``, ``on_connect``, ``on_server_change``,
    ``on_server_update``) raised an exception that is not a PalimpsestError: a bug in an
    extension. What it was asked about is refused, as a server error (the traceback is
    logged; the client reads which hook failed, not the exception's message). Not
    ``on_update``: a bug there lets the client's update through (server.dispatch)."""

    close_code = 1011
    http_status = 500


class StoreError(PalimpsestError):
    close_code = 1011
    http_status = 503


class MovedMeanwhile(StoreError):
    """An import that replaces a document (``palimpsest copy --replace``) found it moved
    since the caller read it (EventStore.import_doc's ``replacing``): a writer committed
    to it, or it was deleted or replaced, in between. Nothing was written; the caller
    reads it again."""


class HeadMoved(StoreError):
    """The store left out an append that had to follow the head its writer read
    (EventStore.append's ``exact``): another process logged events in between (or the
    log was deleted under it). Nothing was written; the room reads what came and makes
    its change again (Room._make_server_change), so it never reaches a caller there."""

    def __init__(self, doc: str) -> None:
        super().__init__(f"document {doc!r} moved past the head this change was made on")
        self.doc = doc


class StoreUnavailable(StoreError):
    close_code = 1013
    http_status = 503
    retry_after = 1


class LogDamaged(StoreError):
    """A document whose log lacks events its head says it holds (rows deleted by hand, a
    partial restore): not served, so that nothing is written on top of it (new events
    after the gap, a snapshot the log contradicts). ``reason``: the words for a close
    frame (123 bytes at most)."""

    def __init__(self, doc: str, problem: str, *, served: bool = False) -> None:
        # `served`: the document itself still loads (a hole below the snapshot its load
        # starts from): only what needs the missing events is refused
        then = (
            "Run `palimpsest verify` to see the damage"
            if served
            else "It is not served until it is repaired: run `palimpsest verify`"
        )
        super().__init__(
            f"{doc!r} is damaged: {problem}. {then}, and see "
            "docs/storage.md#a-log-that-lacks-events"
        )
        self.doc = doc
        self.problem = problem
        self.reason = "the document is damaged (its log lacks events): run palimpsest verify"


def described(e: BaseException, timeout: float | None = None) -> str:
    """`e` as the reason in a message: its text, or what it is when it has none (a
    TimeoutError's text is empty: "cannot connect to PostgreSQL: " said nothing). A
    timeout says how long it waited when `timeout` is given."""
    text = str(e).strip()
    if text:
        return text
    if isinstance(e, TimeoutError):
        waited = f"within {timeout:g} s " if timeout is not None else ""
        return f"no answer {waited}({type(e).__name__})"
    return type(e).__name__


def panicked(e: BaseException) -> bool:
    """Whether pycrdt's apply failed with a panic of yrs (pyo3's PanicException derives
    from BaseException, not Exception), which leaves the document broken: later
    operations on it panic too, or render what it does not hold. An update that does
    not decode raises an Exception before it changes anything."""
    return not isinstance(e, Exception) and not isinstance(e, FATAL)


class DocumentBroken(Exception):
    """Event `seq` made yrs panic applying it: the document it was applied to cannot be
    used any more: it is rebuilt with the event as merge_updates rewrites it, or without
    it (server.snapshots.load). Not a PalimpsestError: it never reaches a client."""

    def __init__(self, ev: Event, cause: BaseException) -> None:
        super().__init__(f"event {ev.doc}/{ev.seq} breaks the document (yrs panicked: {cause})")
        self.doc, self.seq, self.update, self.cause = ev.doc, ev.seq, ev.update, cause


class SeededMeanwhile(Exception):
    """An ``on_load`` seed found that another process made a server change in the
    document (its own seed, most often) since this one read it: the seed's items would
    take the server's clocks those have. The load starts again, on the document as it is
    now (server.rooms), where the hook finds the other's seed. Not a PalimpsestError: it
    never reaches a client (the store answered; nothing is unavailable)."""


class HookWroteDocument(Exception):
    """An extension's hook wrote into a live document outside ``on_load`` (the change is
    in no event): the room is reloaded from the log, and that hook is no longer called
    (server.dispatch). Not a PalimpsestError: it never reaches a client (they get 1013,
    the room reloading)."""
