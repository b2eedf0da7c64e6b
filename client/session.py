"""A live session: a local pycrdt Doc kept in sync with the server over the y-websocket
protocol, reconnecting by itself.

    async with client.connect("ws://127.0.0.1:8000/ws", "notes", user="ada") as session:
        session.text().insert(0, "hello ")           # edit; sent in the background
        await session.wait_for(lambda: "world" in session.text(), timeout=5)
        result = await session.undo()                 # server-side, per user
        await session.flush()                         # the server holds all our edits

How the wire is used (see docs/client.md for the long version):

- On every (re)connect the client sends its step 1 (its state vector) and the server
  sends its own. The client answers the server's step 1 with a step 2 holding every
  local change the server lacks: that is how edits made while offline reach the server,
  exactly once. Local changes made before that answer are not sent separately (the
  step 2 carries them); changes made after it are sent as sync updates, coalesced into
  at most ``max_frames_per_second`` frames so the server's rate limit is never hit.
- No frame carries more than about 1 MiB of update when the update can be cut (client.split):
  a larger step 2 goes as a step 2 and sync updates that each apply, so edits made
  offline never add up to a frame over the server's limit.
- Remote updates are applied under a flag so they are never sent back.
- Undo, redo and close_group go through the extension message (type 100) on the same
  socket, after every edit sent before them.
- Close codes 4400-4499 (except 4429) are permanent: the session fails with the
  matching :mod:`client.errors` exception. Anything else (server restart, kill -9,
  1011/1013, a dead network) makes it back off and reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import itertools
import json
import logging
import random
import re
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import websockets
from pycrdt import Array, Doc, Map, TransactionEvent, XmlElement, XmlText, merge_updates
from pycrdt import Text as YText

from palimpsest import protocol as P
from palimpsest.errors import DocNameError, ProtocolError
from palimpsest.names import validate_doc_name
from palimpsest.ranges import Ranges, subtract, union
from palimpsest.updates import decode_update_meta

from .errors import (
    AuthFailed,
    BadDocName,
    BadURL,
    ClientError,
    Locked,
    ReadOnly,
    Refused,
    ServerError,
    ServerGone,
    Timeout,
    WrongType,
    from_close,
)
from .handshake import UpgradeConnection, handshake_error
from .split import split_update
from .text import Text

log = logging.getLogger("palimpsest.client")

#: ``connect(token=...)``: a token, or what gives a fresh one at each (re)connection (a
#: function or an ``async def``), for tokens that expire while the session lives
TokenProvider = Callable[[], str | Awaitable[str]]

#: sessions not closed yet, for one that brings another's doc to take its changes over
_live: weakref.WeakSet[Session] = weakref.WeakSet()

_EMPTY_UPDATE = b"\x00\x00"
#: a clock the server's sync step 1 gives a client id whose items it will not take from
#: this connection (server/resync.py's MAX_CLOCK: other users' edits, which their writers
#: bring): our step 2 leaves them out, and flush() does not wait for them
_DECLINED_CLOCK = 2**32 - 1
#: flush()'s asks for the server's whole state: the first after this many seconds, then
#: twice as long each time, at most _PROBE_MAX_SECONDS apart
_PROBE_FIRST_SECONDS = 0.05
_PROBE_MAX_SECONDS = 1.0
_MAX_FRAME_UPDATE_BYTES = 1 << 20  # coalesce local updates up to this size per frame
_PRESENCE_RENEW_SECONDS = 15.0  # y-protocols drops presence not renewed for 30 s
_PRESENCE_TIMEOUT_SECONDS = 30.0  # and so do we, others' presence
_PRESENCE_CHECK_SECONDS = 3.0  # how often both are looked at (y-protocols: 3 s)
#: a group's idle time when the server's open_group answer does not say (its default)
_GROUP_IDLE_MS = 60_000
#: what pycrdt raises (an ExceptionGroup) when observers raised while a transaction
#: ended: the transaction, an applied update included, is done all the same
_OBSERVER_ERROR = "Observer callback error"


class _Out(NamedTuple):
    """A frame queued for the socket, and the local changes it is the last to carry
    (with the update it carries, which tells when the server has them: _Sent)."""

    frame: bytes
    changes: int = 0
    nbytes: int = 0
    update: bytes = b""


class _Sent(NamedTuple):
    """Local changes handed to the socket, not yet known to be on the server: it has
    them once an update it sends holds our client id's items up to `end` (its echo of
    the update, merged or not), or, for an update that only deletes (`end` 0), the
    deletions in `deletes`, or once a later frame is confirmed (it reads in order)."""

    changes: int
    nbytes: int
    end: int
    #: None: an update that does not parse, which only a later frame confirms
    deletes: Ranges | None

    @classmethod
    def of(cls, out: _Out, client_id: int) -> _Sent:
        try:
            meta = decode_update_meta(out.update)
        except ProtocolError:
            return cls(out.changes, out.nbytes, 0, None)
        end = max((e for _, e in meta.structs.get(client_id, ())), default=0)
        return cls(out.changes, out.nbytes, end, {} if end else meta.deletes)


async def ask_token(provider: TokenProvider, url: str) -> str:
    """A fresh token from `provider` (a function or an ``async def``); AuthFailed when it
    raises or gives something else than a str (`url`: whose provider, for the message)."""
    try:
        token = provider()
        if inspect.isawaitable(token):
            token = await token
    except Exception as e:
        raise AuthFailed(f"the token provider of {url} failed: {e!r}") from e
    if not isinstance(token, str):
        raise AuthFailed(f"the token provider of {url} gave {type(token).__name__}, not a str")
    return token


def _covers(have: Ranges, need: Ranges) -> bool:
    """Whether the clock ranges `have` (in any order, overlapping) hold every range of
    `need`."""
    return not subtract(need, union({}, have))


def _seconds(value: float | None) -> str:
    """A duration for a message: "1 s", "0.25 s", "no limit"."""
    if value is None:
        return "no limit"
    return f"{value:.2f}".rstrip("0").rstrip(".") + " s"


def _unconfirmed(timeout: float | None, declined: set[int] | None = None) -> str:
    """flush()'s message when the server did not confirm our edits in time (`declined`:
    client ids of other users' edits the server does not take from us)."""
    others = (
        ". The document here also holds other users' edits the server does not take from "
        f"this session (client ids {', '.join(map(str, sorted(declined)))}); flush() does "
        "not wait for those, but an edit of ours made on them waits for them"
        if declined
        else ""
    )
    return (
        f"the server did not confirm our edits within {_seconds(timeout)}. It confirms "
        "them once it has logged them, so: it may be slow or not answering (overloaded, "
        "paused, a slow or broken network), or holding edits while its store refuses "
        "writes (its /readyz then says so and why)" + others
    )


def redact(url: str) -> str:
    """`url` with its token's value left out, for messages and logs."""
    return re.sub(r"([?&]token=)[^&#]*", "\\1…", url)


@dataclass(frozen=True, slots=True)
class Removed:
    """What an undo or a redo took out that another user wrote: undoing the Enter that
    made a paragraph takes out what others typed in it since (docs/undo.md); the other
    one of the two brings it back."""

    #: who wrote it; None when the server cannot tell (a relayed client id)
    user: str | None
    #: characters of text
    characters: int
    #: anything else: elements (a paragraph, a heading), embeds, map or array values
    items: int


@dataclass(frozen=True, slots=True)
class KeptContainers:
    """What an undo or a redo kept instead of taking it out: elements (a paragraph, a
    block, a nested map: any shared type) the reverted step made that others have
    written in since, with what they wrote (docs/undo.md, "What others wrote inside
    what you made stays")."""

    #: how many of the caller's elements it kept
    items: int
    #: what the others wrote in them, per user (counted as ``removed_others`` is)
    others: tuple[Removed, ...] = ()


@dataclass(frozen=True, slots=True)
class OpResult:
    """The answer to undo / redo / open_group / close_group: the new seq, or why nothing
    happened; an undo's or a redo's also says what it visibly did (docs/undo.md)."""

    ok: bool
    seq: int | None = None
    reason: str | None = None
    #: an undo's or a redo's: what it took out that other users wrote, per user
    removed_others: tuple[Removed, ...] = ()
    #: open_group's and close_group's: the explicit undo group's id
    group: str | None = field(default=None, repr=False)
    #: close_group's, of a group: the undo steps it made (1 unless it outgrew a step's
    #: bounds, or was cut by an undo, a restore or its idle time: docs/undo.md)
    steps: int | None = field(default=None, repr=False)
    #: open_group's: the group's idle time on the server, in ms (None from a server
    #: that does not say); the session renews the group well before it
    idle_ms: int | None = field(default=None, repr=False)
    #: an undo's or a redo's: characters and items (elements, embeds, map or array
    #: values) it took out in all (the caller's own and others'), and put back;
    #: formatting marks are not counted, as in a restore's answer (History.restore)
    removed_characters: int = 0
    removed_items: int = 0
    added_characters: int = 0
    added_items: int = 0
    #: an undo's or a redo's: the seqs of each later step it skipped, having nothing
    #: left to revert (another user deleted or moved all it inserted: an editor's
    #: Enter, a cut and paste); gone from the stack; the step it reverted is below them
    skipped: tuple[tuple[int, ...], ...] = ()
    #: an undo's or a redo's: the elements of the caller's it kept because others wrote
    #: in them, and what they wrote; None when it kept none
    kept_containers: KeptContainers | None = None
    #: an undo's or a redo's: the seqs of the step it took back (an undo's: the user's
    #: edits; a redo's: the undo it redoes), as the event's ``meta.reverts``; () when
    #: nothing was done
    reverts: tuple[int, ...] = ()
    #: an undo's or a redo's: "restored" when it stopped at a step a restore had done
    #: already (its text is back: the last of ``skipped``) and changed nothing; else None
    already: str | None = None

    def __bool__(self) -> bool:
        return self.ok


@dataclass(slots=True)
class UndoGroup:
    """What ``async with session.undo_group() as g`` gives: the open's answer
    (``opened``; ``ok``, ``seq``, ``group`` are its), and, once the block is left, the
    close's (``closed``) with ``steps``: how many undo steps the group made, 1 unless it
    outgrew a step's bounds (the server's ``UNDO_GROUP_MAX_EVENTS``, 10,000 events, or
    ``UNDO_GROUP_MAX_BYTES``) or was cut by the user's own undo or a restore; one undo
    then takes back the last step only (docs/undo.md, "Bounds")."""

    opened: OpResult
    #: close_group's answer, once the block is left (None inside it, or when the close
    #: failed on the way out of an error)
    closed: OpResult | None = None

    @property
    def ok(self) -> bool:
        return self.opened.ok

    @property
    def seq(self) -> int | None:
        """The open mark's seq (the ``since`` of a revert of the answer)."""
        return self.opened.seq

    @property
    def group(self) -> str | None:
        return self.opened.group

    @property
    def steps(self) -> int | None:
        """How many undo steps the group made; None until it is closed."""
        return None if self.closed is None else self.closed.steps

    def __bool__(self) -> bool:
        return self.opened.ok


def _refusal_of(reason: str) -> type[Refused]:
    """The error for an operation the server refused with `reason`: Locked for a lock's
    refusal (server.locking: "locked: the document ... is locked read-only by ..."; it
    says "read-only" too, so it is told apart first), ReadOnly for a read-only token's
    ("read-only: you cannot ..."), else Refused."""
    if reason.startswith("locked:"):
        return Locked
    return ReadOnly if reason.startswith("read-only") else Refused


def op_result(answer: dict[str, Any]) -> OpResult:
    """An OpResult from the server's answer (over the websocket or HTTP)."""
    seq = answer.get("seq")
    ok = bool(answer.get("ok"))
    reason = answer.get("reason") or answer.get("detail")  # (an HTTP error's: "detail")
    group, steps = answer.get("group"), answer.get("steps")
    removed, added = _amount(answer.get("removed")), _amount(answer.get("added"))
    skipped = answer.get("skipped")
    return OpResult(
        ok,
        seq if isinstance(seq, int) else None,
        None if ok or reason is None else str(reason),
        tuple(_removed(answer.get("removed_others"))),
        group if isinstance(group, str) else None,
        steps if isinstance(steps, int) else None,
        idle if isinstance(idle := answer.get("idle_ms"), int) and idle > 0 else None,
        *removed,
        *added,
        tuple(tuple(int(s) for s in step) for step in skipped if isinstance(step, list))
        if isinstance(skipped, list)
        else (),
        _kept(answer.get("kept_containers")),
        tuple(int(s) for s in reverts if isinstance(s, int))
        if isinstance(reverts := answer.get("reverts"), list)
        else (),
        already if isinstance(already := answer.get("already"), str) else None,
    )


def _kept(entry: Any) -> KeptContainers | None:
    """An answer's ``{"items": N, "others": [...]}``; None when absent (nothing kept)."""
    if not isinstance(entry, dict):
        return None
    return KeptContainers(int(entry.get("items") or 0), tuple(_removed(entry.get("others"))))


def _amount(entry: Any) -> tuple[int, int]:
    """(characters, items) of an answer's ``{"characters": C, "items": I}``; (0, 0)
    when absent (an answer to open_group or close_group, or a failed undo)."""
    if not isinstance(entry, dict):
        return 0, 0
    return int(entry.get("characters") or 0), int(entry.get("items") or 0)


def _removed(entries: Any) -> list[Removed]:
    if not isinstance(entries, list):
        return []
    return [
        Removed(
            e["user"] if isinstance(e.get("user"), str) else None,
            int(e.get("characters") or 0),
            int(e.get("items") or 0),
        )
        for e in entries
        if isinstance(e, dict)
    ]


async def _late_op_result(answer: asyncio.Future[dict[str, Any]]) -> OpResult:
    return op_result(await answer)


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """A late answer nobody awaited: its error (ServerGone) is not worth a warning."""
    if not fut.cancelled():
        fut.exception()


def check_url(url: str) -> str:
    """The URL, if it names a server: http(s):// or ws(s):// and a host; else BadURL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise BadURL(f"{url!r} is not a server URL: give http://HOST:PORT (or ws://HOST:PORT/ws)")
    return url


def split_base(url: str) -> tuple[str, list[tuple[str, str]]]:
    """A base URL (``http://HOST:PORT/collab?user=ann``) as its scheme, host and path
    prefix without a trailing ``/`` (``http://HOST:PORT/collab``), and its query's
    parameters (``[("user", "ann")]``), which every request under it keeps; a fragment is
    dropped. A path is appended to the first, never to the query."""
    parts = urlsplit(check_url(url))
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, parse_qsl(parts.query, keep_blank_values=True)


def merge_query(base: list[tuple[str, str]], own: dict[str, str]) -> list[tuple[str, str]]:
    """The base URL's parameters, then a request's own: a name both give takes the
    request's value (``?user=`` in the base, ``user=`` given to the call)."""
    return [(k, v) for k, v in base if k not in own] + list(own.items())


def ws_url(url: str, doc: str, user: str | None = None, token: str | None = None) -> str:
    """The websocket URL of `doc` under a base like ``ws://HOST:PORT/ws`` (http:// works too;
    a bare ``http://HOST:PORT`` gets ``/ws`` added). A path prefix (a server mounted under
    ``/collab``) and the base's query (``?user=ann``) are kept: ``http://H/collab?user=ann``
    gives ``ws://H/collab/ws/DOC?user=ann``; `user` and `token` replace the base's own."""
    base, query = split_base(url)
    if base.startswith("http://") or base.startswith("https://"):
        base = "ws" + base[4:]
        if not base.endswith("/ws"):
            base += "/ws"
    own = {k: v for k, v in (("user", user), ("token", token)) if v is not None}
    params = merge_query(query, own)
    return f"{base}/{quote(doc, safe='')}" + (f"?{urlencode(params)}" if params else "")


class Session:
    """One document, live. Create it with :func:`connect`; use it with ``async with``, or
    ``session = await client.connect(...)`` then ``await session.close()``."""

    def __init__(
        self,
        url: str,
        doc: str,
        *,
        user: str | None = None,
        token: str | TokenProvider | None = None,
        ydoc: Doc[Any] | None = None,
        reconnect: bool = True,
        connect_timeout: float = 10.0,
        max_backoff: float = 5.0,
        give_up_after: float | None = None,
        max_frames_per_second: float = 100.0,
        ping_interval: float | None = 10.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        try:
            validate_doc_name(doc)
        except DocNameError as e:
            raise BadDocName(str(e)) from None
        self.name = doc
        self._token = token
        self._url = ws_url(url, doc, user, None if callable(token) else token)
        self._endpoint = ws_url(url, doc)  # the server's document, whoever we are
        #: where the URL goes without its token (a provider's changes)
        self._url_of: Callable[[str], str] = lambda t: ws_url(url, doc, user, t)
        #: the websocket URL, its token (if any) left out: safe to print
        self.url = redact(self._url_of("") if token is not None else self._url)
        self.doc: Doc[Any] = ydoc if ydoc is not None else Doc()
        #: the user and role the server knows us as (from the hello answer)
        self.user: str | None = user
        self.role: str | None = None
        #: the reason of the server's last "permission denied" (a read-only connection)
        self.denied: str | None = None
        #: our edits were refused: by the server, or here on a read-only session; a
        #: Locked one only until the server takes our edits again (the lock lifted)
        self._refused: ReadOnly | None = None
        #: how many refusals the server sent (a flush that sends refused edits again
        #: sees whether they were refused again)
        self._refusals = 0
        #: the highest clock of our own items the server is known to hold (its step 1's
        #: state vector, its echoes of our updates)
        self._server_clock = 0
        #: client ids whose items this connection's server will not take from us (its
        #: step 1 claims them whole: other users' edits, their writers' to bring, e.g.
        #: ones typed after a backup the server was restored from, the writer gone)
        self._declined: set[int] = set()
        #: the client ids last named in the log as declined (said once per set)
        self._declined_said: frozenset[int] = frozenset()
        #: while Locked: the server holding our items up to this clock says it takes our
        #: edits again (those refused included: it takes none past a gap)
        self._locked_until = 0
        #: how many times the session connected (1 after open(), +1 per reconnect)
        self.connections = 0
        self._reconnect = reconnect
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._give_up_after = give_up_after
        for name, value in (("ping_interval", ping_interval), ("ping_timeout", ping_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be above 0 (or None: off), not {value!r}")
        #: the keepalive: a ping every ping_interval s; the connection is given up when
        #: neither its pong nor any other byte arrived for ping_timeout s (a pong behind
        #: a large message still arriving is not late: client.handshake.UpgradeConnection)
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._frame_interval = 1.0 / max_frames_per_second if max_frames_per_second > 0 else 0.0

        self._ws: Any = None
        self._replied = False  # this connection answered the server's step 1
        self._synced_now = False  # this connection got its step 2
        self._ready = asyncio.Event()  # connected, answered and synced
        self._first_sync = asyncio.Event()
        self._failed: ClientError | None = None
        self._closing = False
        #: the event loop that opened the session: its task, futures and socket live there
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None  # its thread's ident
        self._warned_thread = False
        self._runner: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

        self._applying = False
        self._pending: list[bytes] = []  # local updates not yet sent
        # local changes (transactions) and their update bytes not yet handed to a socket
        self._unsent = 0
        self._unsent_bytes = 0
        # handed to this connection's socket, not known to have reached the server (the
        # server's echo, a confirmed flush or a clean close says they did; a lost
        # connection counts them as unsent again: the next step 2 carries whatever the
        # server lacks), in the order sent
        self._unconfirmed: collections.deque[_Sent] = collections.deque()
        self._outbox: collections.deque[_Out] = collections.deque()
        self._wake = asyncio.Event()
        self._sending = False
        self._last_update_sent = 0.0

        self._ids = itertools.count(1)
        self._requests: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._probe: asyncio.Future[bytes] | None = None
        self._waiters: list[asyncio.Future[None]] = []

        self._presence: dict[str, Any] | None = None
        self._clock = 0
        #: other clients' presence, by client id
        self.presence: dict[int, dict[str, Any]] = {}
        self._presence_clocks: dict[int, int] = {}
        self._presence_seen: dict[int, float] = {}  # when each entry was last renewed
        self._presence_sent = 0.0  # when ours was last sent

        #: the explicit undo group we have open on the server (open_group): every
        #: reconnection opens it again before it sends our sync step 2, so the edits
        #: made meanwhile join it too
        self._group: str | None = None
        self._reopen_id: int | None = None  # that request's id, until it is answered
        self._held_step1: bytes | None = None  # the server's step 1, answered after it
        self._reopen_timer: asyncio.TimerHandle | None = None
        #: renews our open group (open_group again) before the server's idle time ends
        #: it, until it is closed: (the group, the task, what stops it)
        self._keeper: tuple[str, asyncio.Task[None], asyncio.Event] | None = None

        self._texts: dict[str, Text] = {}
        self._sub = self.doc.observe(self._on_local)

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> Self:
        """Connect and wait for the first sync; raise a :mod:`client.errors` exception if the
        server refuses or cannot be reached within `connect_timeout`. A session opens
        once: failed or cancelled (a timeout around it, Ctrl-C), it is closed, its task
        stopped (it never connects later), and a new one is needed."""
        if self._closing:
            raise RuntimeError(
                f"this session on {self.name!r} is closed (closed, or its open() failed or "
                "was cancelled): make a new one with client.connect()"
            )
        if self._runner is not None:
            raise RuntimeError("the session is already open")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._take_over()
        runner = self._runner = asyncio.create_task(self._run(), name=f"palimpsest:{self.name}")
        try:
            return await self._opened(runner)
        except BaseException:
            # refused, unreachable, timed out, or cancelled: nothing may go on trying
            # behind the caller's back (connecting later, sending later edits)
            try:
                await self._stop_runner(graceful=False)
            finally:
                self._closed(warn=False)
            raise

    def _take_over(self) -> None:
        """Count as ours the changes a failed session on the same document left unsent
        in the doc we were given (``ydoc=old.doc``: the way on after its token expired):
        our sync step 2 carries them, so they are ours to send, or to say lost."""
        for other in list(_live):
            if (
                other is not self
                and other.doc is self.doc
                and other._failed is not None
                and not other._closing
                and other._endpoint == self._endpoint
            ):
                self._unsent += other._unsent
                self._unsent_bytes += other._unsent_bytes
                other._unsent = other._unsent_bytes = 0
        _live.add(self)

    async def _opened(self, runner: asyncio.Task[None]) -> Self:
        """open()'s wait: the first sync (and our role), or why not."""
        first = asyncio.ensure_future(self._first_sync.wait())
        try:
            await asyncio.wait(
                {first, runner}, timeout=self._connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            first.cancel()
        if self._first_sync.is_set():
            # and the hello's answer (our role), which comes right after: a read-only
            # session refuses edits from the start (not knowing it, it would let them be
            # made locally, for the server to refuse them)
            with contextlib.suppress(ClientError):
                await self.wait_for(lambda: self.role is not None, self._connect_timeout)
            return self
        if self._failed is not None:
            raise self._failed
        last = self._last_error
        if isinstance(last, ServerGone | ServerError):  # never reached it, or it failed
            raise type(last)(
                f"{last} (tried for {_seconds(self._connect_timeout)})", code=last.code
            )
        raise Timeout(
            f"no sync with {self.url} within {_seconds(self._connect_timeout)} "
            "(server not answering?)"
        )

    async def close(self, *, flush_timeout: float = 5.0) -> None:
        """Send what is pending (waiting up to `flush_timeout` while connected), withdraw
        presence, close the socket. It does not wait for the server to confirm: ``await
        flush()`` first for that. Local changes that could not be sent (made while
        disconnected, or the connection was lost, or the wait ran out) or that were sent
        as the connection died (the server had not echoed them) are lost with the
        session: logged as a warning that says how many.

        Cancelled (a timeout around it, Ctrl-C), it stops waiting but still closes the
        socket and says what is lost, then lets the cancellation go on; called while a
        cancellation unwinds (``async with`` left by one), it does all of it."""
        if self._closing:
            return
        if self._loop is not None and self._loop.is_closed():
            # its loop ended (asyncio.run returned), cancelling the session's task with
            # it: nothing can be sent any more, what is lost is said
            self._closing = True
            self._closed(warn=True)
            return
        self._own_loop()
        interrupted: asyncio.CancelledError | None = None
        try:
            await self._send_pending(flush_timeout)
        except asyncio.CancelledError as e:
            interrupted = e  # the rest is done all the same, without waiting
        self._closing = True
        if self._keeper is not None:
            self._keeper[2].set()  # (it ends at once: the session is closing)
            self._keeper = None
        try:
            await self._stop_runner(graceful=interrupted is None)
        except asyncio.CancelledError as e:
            interrupted = interrupted or e
        self._closed(warn=True)
        if interrupted is not None:
            raise interrupted

    async def _send_pending(self, flush_timeout: float) -> None:
        """close()'s first half: our presence withdrawn, and what is pending put into the
        socket, while connected, up to `flush_timeout`."""
        if not self._ready.is_set() or self._failed is not None:
            return
        if self._presence is not None:
            self._clock += 1
            withdrawn = P.encode_awareness_entries([(self.doc.client_id, self._clock, "null")])
            self._outbox.append(_Out(P.encode_awareness(withdrawn)))
            self._wake.set()
        # until everything is in the socket, or the connection is known to be gone (a
        # reconnection would come too late: the session is closing)
        with contextlib.suppress(ClientError, TimeoutError):
            await self.wait_for(
                lambda: self._all_sent() or not self._ready.is_set(),
                flush_timeout, what="sending pending updates",
            )  # fmt: skip

    def _closed(self, *, warn: bool) -> None:
        """The session's end, once its runner is stopped: the document no longer
        observed, requests failed, and (`warn`) what did not reach the server said."""
        _live.discard(self)
        self.doc.unobserve(self._sub)
        for text in self._texts.values():  # (else the document's observers keep it all)
            text.detach()
        self._fail_requests(ServerGone("the session is closed"))
        if warn and self._unsent and self.denied is None:
            log.warning(
                "%s: closed with %d local change(s) (about %d bytes of updates) that did "
                "not reach the server, or may not have (the connection was lost as they "
                "were sent): they are lost; await flush() before close() to be sure",
                self.name, self._unsent, self._unsent_bytes,
            )  # fmt: skip
        self._notify()

    def __await__(self) -> Generator[Any, None, Self]:
        """``session = await client.connect(...)``: open it (a notebook's top-level await;
        ``await session.close()`` when done)."""
        return self.open().__await__()

    async def __aenter__(self) -> Self:
        if self._runner is not None and not self._closing:
            return self  # (``async with await client.connect(...)``: open already)
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _stop_runner(self, *, graceful: bool = True) -> None:
        """Close the socket (`graceful`: with the close handshake, up to 2 s; else at
        once) and stop the runner. Always done in full: a cancellation aimed at the
        caller meanwhile is raised after (not the runner's own, which ends here)."""
        self._closing = True
        current = asyncio.current_task()
        before = current.cancelling() if current is not None else 0
        interrupted: asyncio.CancelledError | None = None
        ws = self._ws
        if ws is not None:
            if graceful:
                try:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(2):  # (not wait_for: it can lose a cancel)
                            await ws.close()
                except asyncio.CancelledError as e:
                    interrupted = e
            # (no answer to our close in time, or no time to wait for one: the runner's
            # end closes the socket all the same, see _disconnected)
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError as e:
                # the runner's own cancel ends here; one aimed at whoever is stopping the
                # session (counted by cancelling() since we began) goes on up
                if current is not None and current.cancelling() > before:
                    interrupted = interrupted or e
            except Exception as e:  # what it expects, it reports through _failed
                log.warning("%s: the connection's task failed: %r", self.name, e)
        if interrupted is not None:
            raise interrupted

    # --- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected and in sync right now."""
        return self._ready.is_set()

    @property
    def error(self) -> ClientError | None:
        """Why the session stopped for good, if it did (an edit then raises it at once); or
        :class:`ReadOnly` once our edits were refused (by the server, or here: an edit
        made through pycrdt on a read-only session), the session reading on: the local
        document then holds what the server does not."""
        return self._failed or self._refused

    @property
    def read_only(self) -> bool:
        """The server gave us the read role: every edit is refused (``ReadOnly``)."""
        return self.role == "read"

    def _off_thread(self) -> bool:
        """Whether this is a thread other than that of the session's loop (which still
        runs: once it has ended, nothing else touches the document)."""
        return (
            self._thread is not None
            and threading.get_ident() != self._thread
            and self._loop is not None
            and not self._loop.is_closed()
        )

    def _check_writable(self) -> None:
        """Raise, before an edit changes anything: RuntimeError from a thread other than
        the loop's, ReadOnly on a read-only session, and the error that ended a session
        for good (a token expired, give_up_after passed): kept here, the edit would
        reach no server, and only flush() or close()'s warning said so."""
        if self._off_thread():
            raise RuntimeError(
                f"an edit of {self.name!r} from a thread other than that of the event loop "
                "that opened the session: pycrdt's transactions are not thread-safe (an "
                "edit from another thread joins, or breaks, the one the session's thread "
                "has open), so the document is edited, and read, on the loop's thread; "
                "from another thread, hand the loop a coroutine that edits, with "
                "asyncio.run_coroutine_threadsafe (docs/client.md, Threads and sync code)"
            )
        if self._failed is not None:
            raise self._failed
        if self.read_only:
            raise ReadOnly(
                f"{self.name!r} is open read-only (user {self.user!r}, role 'read'): the "
                "server refuses every edit; use a token with the write role"
            )

    @property
    def pending(self) -> int:
        """Local changes (transactions) not yet handed to a socket: queued, or made while
        disconnected (the next connection's sync step 2 carries them). Counted with the
        changes a lost connection may not have delivered, as close() counts them."""
        return self._unsent

    def text(self, name: str = "content") -> Text:
        """The Y.Text root `name` with code-point positions (see :class:`client.text.Text`).
        Raises :class:`WrongType` when the root holds another type (a map, an array, an
        XML tree): a text over it would read empty and its edits would show nowhere."""
        t = self._texts.get(name)
        if t is None:
            kind = root_kind(self.doc, name)
            if kind not in (None, "text"):
                raise WrongType(
                    f"the root {name!r} of {self.name!r} holds {kind}, not text: "
                    f"use session.doc.get({name!r}, type=...) with its own type"
                )
            t = self._texts[name] = Text(self.doc.get(name, type=YText), self._check_writable)
        return t

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, if it is the session's (or the session is not open yet); a
        RuntimeError that says the rule if not: its task, futures and socket belong to
        the loop that opened it, and waiting on them from another loop only times out."""
        loop = asyncio.get_running_loop()
        if self._loop is not None and loop is not self._loop:
            gone = "has ended" if self._loop.is_closed() else "still runs, elsewhere"
            raise RuntimeError(
                f"the session on {self.name!r} is used from an event loop other than the "
                f"one that opened it (which {gone}): a session belongs to the event loop "
                "that opened it. Each asyncio.run() is a new loop: open a session inside "
                "the coroutine that asyncio.run() runs (async with client.connect(...)), "
                "or keep one loop in a thread and hand it coroutines with "
                "asyncio.run_coroutine_threadsafe (docs/client.md, Threads and sync code)"
            )
        return loop

    # --- waiting ------------------------------------------------------------------------------

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float | None = 10.0,  # noqa: ASYNC109 (the httpx-style API)
        what: str = "",
    ) -> None:
        """Wait until ``predicate()`` is true; it is checked now and after every remote
        change, presence change and (re)connection. Raises :class:`Timeout`, or the error
        that stopped the session."""
        loop = self._own_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._failed is not None:
                raise self._failed
            if predicate():
                return
            if self._closing:
                raise ServerGone("the session is closed")
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise Timeout(f"{what or 'condition'} not met within {_seconds(timeout)}")
            try:
                # not asyncio.wait_for: on 3.11 it loses a cancellation that comes in the
                # turn `fut` is woken (an edit sent, a remote change), and the cancelled
                # task went on waiting, up to its whole timeout
                async with asyncio.timeout(remaining):
                    await fut
            except TimeoutError:
                raise Timeout(f"{what or 'condition'} not met within {_seconds(timeout)}") from None

    async def wait_connected(self, timeout: float | None = 10.0) -> None:  # noqa: ASYNC109 (the httpx-style API)
        """Wait until the session is connected and in sync again."""
        await self.wait_for(lambda: self._ready.is_set(), timeout, what="reconnection")

    async def _ready_or_raise(self, within: float | None, what: str, budget: float | None) -> None:
        """Wait for the connection up to `within` seconds; the message names `budget`
        (the caller's whole timeout, of which `within` may be what is left)."""
        try:
            await self.wait_connected(within)
        except Timeout:
            raise ServerGone(
                f"cannot {what}: not connected to {self.url} within {_seconds(budget)} "
                f"(reconnecting: {self._last_error or 'no error seen'})"
            ) from None

    def _all_sent(self) -> bool:
        """Every local change and queued frame is in this connection's socket."""
        return not self._outbox and not self._pending and not self._sending and self._replied

    async def _drained(self, within: float | None) -> None:
        await self.wait_for(self._all_sent, within, what="sending pending updates")

    async def flush(self, timeout: float | None = 10.0) -> None:  # noqa: ASYNC109 (the httpx-style API)
        """Return once the server holds every local change (its events are durable: the
        server applies an update only after logging it). Raises :class:`ReadOnly` if the
        server refused our edits, :class:`ServerGone` if not connected within `timeout`.

        Other users' edits the document here holds that the server will not take from
        this session (it takes a client id's items from its writer only: bob's edits
        typed after the backup a server was restored from, his tab closed) are not
        waited for: they are named in the log at INFO, and in the Timeout's message when
        an edit of ours built on them waits for them (docs/client.md, flush)."""
        loop = self._own_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        probe = _PROBE_FIRST_SECONDS
        while True:
            if isinstance(self._refused, Locked):
                await self._ready_or_raise(left(), "flush", timeout)
                await self._send_refused_again(left(), timeout)
            if self._refused is not None:
                raise self._refused
            await self._ready_or_raise(left(), "flush", timeout)
            try:
                await self._drained(left())
            except Timeout:
                raise Timeout(
                    f"our edits were not all sent within {_seconds(timeout)}: the "
                    "connection is slow, or the server is not reading (busy or not "
                    "answering)"
                ) from None
            if await self._server_has_everything(left(), timeout):
                return
            if deadline is not None and loop.time() >= deadline:
                raise Timeout(_unconfirmed(timeout, self._declined))
            # (asked again after a while, twice as long each time: each answer is the
            # whole document)
            rest = left()
            await asyncio.sleep(probe if rest is None else min(probe, rest))
            probe = min(probe * 2, _PROBE_MAX_SECONDS)

    async def _send_refused_again(self, within: float | None, budget: float | None) -> None:
        """flush() while our edits are refused for a lock: when the server holds them all
        (the lock lifted, a re-sync brought them in), the session recovers; else what it
        lacks is sent again, and either it is refused again (still locked: the error
        stays) or the server takes it (unlocked: recovered), or `within` runs out
        (Timeout, naming `budget`)."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        sent_again = False
        probe = _PROBE_FIRST_SECONDS
        refusals = self._refusals
        while isinstance(self._refused, Locked):
            theirs = await self._server_state(left(), budget)
            if theirs is None:
                return  # (the connection dropped: flush() waits for the next one)
            if not isinstance(self._refused, Locked):
                return
            if self._refusals != refusals:
                return  # refused again: still locked
            scratch: Doc[Any] = Doc()
            scratch.apply_update(theirs)
            state = self._without_declined(scratch.get_state())
            if not self._lacks(scratch):
                self._edits_taken()
                return
            if not sent_again:
                sent_again = True
                missing = self.doc.get_update(state)
                self._send_frame(P.encode_sync_update(missing))
            await asyncio.sleep(probe)
            probe = min(probe * 2, _PROBE_MAX_SECONDS)

    async def _server_state(self, within: float | None, budget: float | None) -> bytes | None:
        """The server's whole state (asked with a step 1 with an empty state vector);
        None when the connection drops first, Timeout (naming `budget`, the flush's
        timeout) when no answer comes within `within` seconds."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._probe = fut
        self._send_frame(P.encode_sync_step1(b"\x00"))
        try:
            async with asyncio.timeout(within):  # (not wait_for: it can lose a cancel)
                return await fut
        except TimeoutError:
            raise Timeout(
                _unconfirmed(within if budget is None else budget, self._declined)
            ) from None
        except ClientError:
            return None

    def _without_declined(self, state: bytes) -> bytes:
        """State vector `state` with the client ids the server declines (`_declined`)
        held whole: what we have to give it."""
        if not self._declined:
            return state
        sv = P.decode_state_vector(state)
        for client in self._declined:
            sv[client] = _DECLINED_CLOCK
        return P.encode_state_vector(sv)

    def _lacks(self, scratch: Doc[Any]) -> bool:
        """Whether `scratch` (holding the server's state) lacks anything of our
        document that the server takes from us: not the items of the client ids it
        declines (`_declined`: other users' edits, their writers' to bring); when it
        lacks something, it is changed: use it no more."""
        theirs = P.decode_state_vector(scratch.get_state())
        ours = P.decode_state_vector(self.doc.get_state())
        if any(theirs.get(c, 0) < clock for c, clock in ours.items() if c not in self._declined):
            return True  # items of ours (or of others, which it takes) it lacks
        # deletions: applied to the server's state, ours change it if it lacks one of
        # them (a deletion of a declined id's item it lacks waits there, changing nothing)
        changed: list[bool] = []
        scratch.observe(lambda _e: changed.append(True))
        scratch.apply_update(self.doc.get_update(self._without_declined(scratch.get_state())))
        return bool(changed)

    async def _server_has_everything(
        self, within: float | None, budget: float | None = None
    ) -> bool:
        """Ask for the server's whole state (a step 1 with an empty state vector) and see
        whether our document holds anything it lacks (and takes from us: not other
        users' edits it declines, `_declined`); Timeout (naming `budget`, the
        flush's timeout) when no answer comes within `within` seconds."""
        theirs = await self._server_state(within, budget)
        if theirs is None:
            return False
        scratch: Doc[Any] = Doc()
        scratch.apply_update(theirs)
        if not self._lacks(scratch):
            # everything sent so far reached it (a change made since would be in our doc)
            self._unconfirmed.clear()
            self._server_clock = self._own_clock()
            return True
        return False

    def _own_clock(self) -> int:
        """The clock of our own items in our document (how many we made)."""
        return P.decode_state_vector(self.doc.get_state()).get(self.doc.client_id, 0)

    def _edits_refused(self, reason: str) -> None:
        """The server refused an update of ours ("permission denied", `reason`): for a
        lock (``locked: ...``) until the server takes our edits again, else for good
        (a read-only token). Said at WARNING once (per lock), its repeats at DEBUG."""
        self.denied = reason
        self._refusals += 1
        first = self._refused is None
        if reason.startswith("locked:") and (first or isinstance(self._refused, Locked)):
            own = self._own_clock()
            # our items the server lacks: taken once it holds them; none (a refused
            # update that only deletes): taken once it holds one we make after it
            self._locked_until = max(self._locked_until, own if own > self._server_clock
                                     else own + 1)  # fmt: skip
            self._refused = Locked(
                f"the server refused edits on {self.name!r}: {reason}. They stay in the "
                "local document and reach the server once it is unlocked (the session "
                "recovers by itself: its next edit, or flush(), sends them again)"
            )
            (log.warning if first else log.debug)(
                "%s: the server refused our edits: %s (said once per lock; kept here, sent "
                "again once it is unlocked)", self.name, reason,
            )  # fmt: skip
        else:
            self._refused = ReadOnly(f"the server refused edits on {self.name!r}: {reason}")
            (log.warning if first else log.debug)(
                "%s: the server refused our edits: %s", self.name, reason
            )
        self._notify()

    def _edits_taken(self) -> None:
        """The server took our edits again after refusing them for a lock: recovered."""
        if isinstance(self._refused, Locked):
            log.info("%s: the server takes our edits again (the document was unlocked); "
                     "those refused meanwhile reached it", self.name)  # fmt: skip
            self._refused = None
            self.denied = None
            self._locked_until = 0
            self._notify()

    # --- presence ---------------------------------------------------------------------------

    def set_presence(self, state: dict[str, Any] | None) -> None:
        """Publish our presence (cursor, name, colour…: any JSON object); None withdraws it."""
        self._presence = state
        self._clock += 1
        if self._ready.is_set():
            self._send_presence()

    def _send_presence(self) -> None:
        state = "null" if self._presence is None else json.dumps(self._presence)
        self._presence_sent = asyncio.get_running_loop().time()
        self._send_frame(
            P.encode_awareness(
                P.encode_awareness_entries([(self.doc.client_id, self._clock, state)])
            )
        )

    def _on_awareness(self, payload: bytes) -> None:
        me = self.doc.client_id
        now = asyncio.get_running_loop().time()
        changed = False
        for client, clock, state in P.decode_awareness(payload):
            if client == me:
                continue
            known = self._presence_clocks.get(client)
            if known is not None and clock < known:
                continue
            self._presence_clocks[client] = clock
            if state == "null":
                self._presence_seen.pop(client, None)
                changed |= self.presence.pop(client, None) is not None
            else:
                try:
                    value = json.loads(state)
                except ValueError:
                    continue
                self.presence[client] = value if isinstance(value, dict) else {"value": value}
                self._presence_seen[client] = now
                changed = True
        if changed:
            self._notify()

    def _expire_presence(self) -> None:
        """Drop others' presence not renewed for 30 s (y-protocols' outdatedTimeout: every
        client renews its own every 15 s, so an entry that old belongs to a client that
        went away without a word reaching us)."""
        cutoff = asyncio.get_running_loop().time() - _PRESENCE_TIMEOUT_SECONDS
        old = [c for c, seen in self._presence_seen.items() if seen <= cutoff]
        for client in old:
            del self._presence_seen[client]
            self.presence.pop(client, None)
        if old:
            self._notify()

    # --- extension requests ---------------------------------------------------------------------

    async def request(self, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109 (the httpx-style API)
        """Send an extension request ({"type": …}) after every edit made so far, and return
        the server's answer body. Once sent it is not withdrawn: a Timeout's ``late`` is
        the answer to come; cancelled, it is done all the same (docs/client.md, "A
        cancelled request is not withdrawn either": shield it to learn the outcome)."""
        await self._ready_or_raise(timeout, f"send {body.get('type')!r}", timeout)
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[rid] = fut
        self._send_frame(P.encode_extension({**body, "id": rid}))
        try:
            # not asyncio.wait_for: on 3.11 it loses a cancellation that comes in the turn
            # the answer does (the request then returned as if not cancelled)
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            # sent, so the server may still do it: the answer stays awaited (a connection
            # lost first fails it with ServerGone, see _fail_requests)
            fut.add_done_callback(_retrieved)
            raise Timeout(
                f"no answer to {body.get('type')!r} within {_seconds(timeout)}: it was "
                "sent and the server may still do it; await the error's .late for its "
                "answer",
                late=fut,
            ) from None
        except asyncio.CancelledError:
            fut.cancel()
            raise
        finally:
            if fut.done():
                self._requests.pop(rid, None)

    async def _op(self, op: str | dict[str, Any], within: float) -> OpResult:
        body = {"type": op} if isinstance(op, str) else op
        try:
            return op_result(await self.request(body, within))
        except Timeout as e:
            if e.late is None:
                raise
            late = asyncio.ensure_future(_late_op_result(e.late))
            late.add_done_callback(_retrieved)
            raise Timeout(str(e), late=late) from None

    async def undo(self, timeout: float = 10.0) -> OpResult:  # noqa: ASYNC109 (the httpx-style API)
        """Undo our most recent change group (server-side, selective: others' edits stay).
        Raises :class:`ReadOnly` at once on a read-only session, as an edit does (its
        answer, ok false, read as "nothing to undo")."""
        self._check_writable()
        return await self._op("undo", timeout)

    async def redo(self, timeout: float = 10.0) -> OpResult:  # noqa: ASYNC109 (the httpx-style API)
        """Re-apply what our last undo reverted. Raises :class:`ReadOnly` at once on a
        read-only session."""
        self._check_writable()
        return await self._op("redo", timeout)

    async def close_group(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109 (the httpx-style API)
        *,
        group: str | None = None,
    ) -> OpResult:
        """End the current undo step: the next edit starts a new one; and our explicit
        group (:meth:`open_group`). With `group`, only that group, if it is still open
        (closing one twice does nothing the second time); the answer's ``steps`` says
        how many undo steps it made. Raises :class:`ReadOnly` at once on a read-only
        session."""
        self._check_writable()
        # the server closes the group at once, not after the edits queued before the
        # request: wait until it holds them, or they would join the next group
        await self.flush(timeout)
        # and a renewal on its way must be answered first: the server runs a
        # connection's requests side by side, and one logged after the close opened
        # the group again
        await self._stop_keeper(group)
        if group is None:
            self._group = None
            return await self._op("close_group", timeout)
        result = await self._group_op({"type": "close_group", "group": group}, timeout)
        if self._group == group:
            self._group = None
        return result

    async def open_group(
        self,
        group: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 (the httpx-style API)
    ) -> OpResult:
        """Open an explicit undo group (docs/undo.md): our edits from now on are one undo
        step, whatever their pauses, until :meth:`close_group`, bounded by the server's
        ``UNDO_GROUP_MAX_EVENTS`` / ``_BYTES`` and ended after ``UNDO_GROUP_IDLE_MS``
        without an edit. It survives reconnections (opened again, by its id, before the
        edits made offline go) and server restarts. `group`: its id (a new one by
        default); opening it again renews it. Returns once the server has opened it:
        edits made after that are in it. Prefer :meth:`undo_group`."""
        self._check_writable()
        gid = group if group is not None else uuid.uuid4().hex
        await self._stop_keeper(None)  # (the server closes the other group, if any)
        self._group = gid  # a reconnection from here on opens it again
        result = await self._group_op({"type": "open_group", "group": gid}, timeout)
        if not result.ok and self._group == gid:
            self._group = None
        if result.ok and self._group == gid:
            every = (result.idle_ms if result.idle_ms is not None else _GROUP_IDLE_MS) / 3000
            stop = asyncio.Event()
            task = asyncio.create_task(self._keep_group(gid, every, stop))
            self._keeper = (gid, task, stop)
        return result

    async def _keep_group(self, gid: str, every: float, stop: asyncio.Event) -> None:
        """Open our group `gid` again after `every` seconds (a third of the server's idle
        time) without an edit sent or a renewal, while it is ours and open: the server
        ends a group that long after the user's last change or renewal, and the edits
        after the pause began a step of their own; opening the open group again renews
        it (docs/undo.md). Only in pauses: each renewal is an undo_mark event in the
        log (webhooks and streams see it), and the edits keep the group alive already;
        renewed every `every` seconds whatever, a bot streaming into the group wrote a
        mark every 20 s for nothing."""
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()  # (opened just now)
        while self._group == gid and not stop.is_set():
            # due `every` after our last edit sent or renewal, whichever is later
            wait = max(renewed_at, self._last_update_sent) + every - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):  # (not wait_for: it can lose a cancel)
                        await stop.wait()
                continue  # (checked again: an edit sent meanwhile puts it off)
            if stop.is_set() or self._group != gid or self._closing or self._failed:
                return
            renewed_at = loop.time()
            if not self.connected:
                continue  # a reconnection opens it again (before our step 2) anyway
            try:
                renewed = await self._op({"type": "open_group", "group": gid}, max(every, 10.0))
            except ClientError as e:
                log.warning("%s: could not renew undo group %r: %s", self.name, gid, e)
                continue
            if not renewed.ok:
                log.warning("%s: could not renew undo group %r: %s", self.name, gid, renewed.reason)

    async def _stop_keeper(self, group: str | None) -> None:
        """Stop renewing our group (`group`: only if it is that one), and wait for a
        renewal on its way to be answered."""
        if self._keeper is None or (group is not None and self._keeper[0] != group):
            return
        _gid, task, stop = self._keeper
        self._keeper = None
        stop.set()
        with contextlib.suppress(Exception):
            await task

    @contextlib.asynccontextmanager
    async def undo_group(
        self,
        group: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 (the httpx-style API)
    ) -> AsyncIterator[UndoGroup]:
        """``async with session.undo_group() as g:`` the edits made inside are one undo
        step, however long they pause (:meth:`open_group`; the session renews the group
        before the server's idle time ends it), closed on the way out, after the server
        holds them (an error inside closes it too). After the block, ``g.steps`` says
        how many undo steps it made (more than 1 when it outgrew the server's
        ``UNDO_GROUP_MAX_EVENTS`` / ``_BYTES``: one undo then takes back the last part
        only) and ``g.closed`` is the close's whole answer. Raises :class:`Refused`
        (:class:`ReadOnly` on a read-only session, :class:`Locked` on a locked document)
        when the server does not open it."""
        opened = await self.open_group(group, timeout)
        if not opened.ok:
            raise _refusal_of(opened.reason or "")(
                f"the server did not open an undo group on {self.name!r}: {opened.reason}"
            )
        assert opened.group is not None
        handle = UndoGroup(opened)
        try:
            yield handle
        except BaseException:
            with contextlib.suppress(ClientError):
                handle.closed = await self.close_group(timeout, group=opened.group)
            raise
        handle.closed = await self.close_group(timeout, group=opened.group)

    async def _group_op(self, body: dict[str, Any], within: float) -> OpResult:
        """open_group or close_group with a group id: done again when the connection
        drops before the answer (both are idempotent), within `within` seconds in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                return await self._op(body, max(0.0, deadline - loop.time()))
            except ServerGone:
                if self._failed is not None or self._closing or loop.time() >= deadline:
                    raise

    def _fail_requests(self, error: ClientError) -> None:
        for fut in self._requests.values():
            if not fut.done():
                fut.set_exception(error)
        self._requests.clear()
        if self._probe is not None and not self._probe.done():
            self._probe.set_exception(error)
            self._probe.exception()  # retrieved: a flush that gave up does not warn
        self._probe = None

    # --- local changes ------------------------------------------------------------------------

    def _on_local(self, event: TransactionEvent) -> None:
        if self._applying:
            return
        update = event.update
        if update == _EMPTY_UPDATE:
            return
        if self._off_thread():
            # made through pycrdt (session.text() refuses before) from another thread:
            # the document holds it, so it is sent, but the session's state is the
            # loop's to change (and asyncio's Event is not thread-safe)
            if not self._warned_thread:
                self._warned_thread = True
                log.warning(
                    "%s: the document was edited from another thread (not the event "
                    "loop's): the edit is sent, but pycrdt is not thread-safe and such "
                    "edits can break the session's own; edit on the loop's thread "
                    "(docs/client.md, Threads and sync code)", self.name,
                )  # fmt: skip
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # (its loop closed meanwhile)
                self._loop.call_soon_threadsafe(self._local_change, update)
            return
        self._local_change(update)

    def _local_change(self, update: bytes) -> None:
        """A local change (its update) to send: counted, and queued, on the loop's thread."""
        if self.read_only:
            # made through pycrdt (session.text() refuses before): not sent, the server
            # would refuse it; the local document now differs from the server's
            self._refused = ReadOnly(
                f"a local edit on {self.name!r}, open read-only (user {self.user!r}, role "
                "'read'), was not sent: the local document now holds what the server does "
                "not; use a token with the write role"
            )
            log.warning("%s: %s", self.name, self._refused)
            self._notify()
            return
        self._unsent += 1
        self._unsent_bytes += len(update)
        if not self._replied:  # carried by the step 2 this connection has yet to send
            return
        self._pending.append(update)
        self._wake.set()

    def _send_frame(self, frame: bytes) -> None:
        """Queue a frame after every local update made so far (they go first, merged)."""
        if self._replied and self._pending:
            self._outbox.extend(self._take_updates_frames())
        self._outbox.append(_Out(frame))
        self._wake.set()

    def _take_updates_frames(self, limit: int | None = None) -> list[_Out]:
        """Merge pending local updates into sync update frames of at most ~1 MiB each (an
        update larger than that by itself is cut into parts that each apply)."""
        frames: list[_Out] = []
        while self._pending and (limit is None or len(frames) < limit):
            n, size = 0, 0
            for u in self._pending:
                if n and size + len(u) > _MAX_FRAME_UPDATE_BYTES:
                    break
                n += 1
                size += len(u)
            batch = self._pending[:n]
            del self._pending[:n]
            merged = batch[0] if n == 1 else merge_updates(*batch)
            frames += _update_frames(merged, n, size, first=P.encode_sync_update)
        return frames

    async def _send_loop(self, ws: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox or (self._replied and self._pending):
                if self._outbox:
                    out = self._outbox[0]
                else:
                    wait = self._last_update_sent + self._frame_interval - loop.time()
                    if wait > 0:  # let more local changes pile up into the next frame
                        await asyncio.sleep(wait)
                        continue
                    self._outbox.extend(self._take_updates_frames(limit=1))
                    self._last_update_sent = loop.time()
                    continue
                self._sending = True
                try:
                    await ws.send(out.frame)
                except websockets.ConnectionClosed:
                    return  # the reader sees the close and reconnects
                finally:
                    self._sending = False
                # sent (in the socket's buffer, which the server reads eagerly)
                if self._outbox and self._outbox[0] is out:
                    self._outbox.popleft()
                    if out.changes:
                        self._unsent = max(0, self._unsent - out.changes)
                        self._unsent_bytes = max(0, self._unsent_bytes - out.nbytes)
                        self._unconfirmed.append(_Sent.of(out, self.doc.client_id))
            self._notify()

    async def _connect_url(self) -> str:
        """The URL to connect to, with a fresh token from the provider, if there is one;
        AuthFailed if the provider fails (a refusal at the first connection, a retry
        after)."""
        if not callable(self._token):
            return self._url
        return self._url_of(await ask_token(self._token, self.url))

    # --- the connection ------------------------------------------------------------------------

    _last_error: ClientError | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        down_since: float | None = None
        while not self._closing:
            try:
                ws = await websockets.connect(
                    await self._connect_url(),
                    max_size=None,
                    compression=None,
                    open_timeout=self._connect_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                    close_timeout=2,
                    create_connection=UpgradeConnection,
                )
            except (OSError, TimeoutError, websockets.InvalidHandshake, AuthFailed) as e:
                err: ClientError = (
                    e if isinstance(e, AuthFailed) else handshake_error(self.url, e, redact(str(e)))
                )  # (AuthFailed: the token provider's)
                self._last_error = err
                first = not self._first_sync.is_set()
                if first and (isinstance(err, Refused) or not self._reconnect):
                    self._failed = err  # nothing to keep: say so at once
                    return
                # a server not up yet (started with its bot, restarting): tried again
                # until open() gives up, after connect_timeout
                if not first and attempt == 1:  # once an outage, not every attempt
                    log.warning("%s: cannot reconnect yet (%s); retrying", self.name, err)
            else:
                synced = self.connections
                try:
                    code, reason = await self._serve(ws)
                finally:
                    self._disconnected()
                if self.connections > synced:
                    # the back-off starts anew only after a sync: a server that accepts
                    # the socket and closes it (a document it cannot load) is tried
                    # with a growing delay, as one that refuses it
                    attempt = 0
                if self._closing:
                    return
                err = from_close(code, reason, self.name)
                self._last_error = err
                permanent = 4400 <= code < 4500 and code != 4429
                renewed = False
                if code == 4401 and callable(self._token) and self.connections > synced:
                    # a token that worked expired: the provider gives a fresh one (one
                    # refused at once stays a refusal, or a bad provider would loop)
                    permanent = False
                    renewed = True
                # (a warning: a bot at the default log level sees its edits wait offline;
                # a token's expiry with a provider to renew it is routine)
                log.log(
                    logging.INFO if code == 1000 or renewed else logging.WARNING,
                    "%s: connection closed with %s %s%s", self.name, code, reason,
                    "" if permanent or not self._reconnect else "; reconnecting",
                )  # fmt: skip
                if permanent:
                    self._failed = err
                    self._notify()
                    return
            if not self._reconnect and self._first_sync.is_set():
                self._failed = self._last_error or ServerGone("the connection was lost")
                self._notify()
                return
            now = loop.time()
            down_since = down_since if down_since is not None and attempt else now
            if self._give_up_after is not None and now - down_since > self._give_up_after:
                self._failed = ServerGone(
                    f"gave up reconnecting to {self.url} after {_seconds(self._give_up_after)}: "
                    f"{self._last_error}"
                )
                self._notify()
                return
            delay = min(self._max_backoff, 0.05 * 2**attempt) * (0.5 + random.random() / 2)
            if self._last_error is not None and self._last_error.code == 4429:
                delay = max(delay, 1.0)
            attempt += 1
            await asyncio.sleep(delay)

    def _disconnected(self) -> None:
        ws, self._ws = self._ws, None
        transport = getattr(ws, "transport", None)
        if transport is not None and not transport.is_closing():
            # the runner cancelled with its socket open (close() not waiting for the
            # close handshake, asyncio.run ending with the session open): closed now,
            # not left to a ResourceWarning at exit
            transport.abort()
        if self._reopen_timer is not None:
            self._reopen_timer.cancel()
            self._reopen_timer = None
        self._reopen_id = self._held_step1 = None
        self._ready.clear()
        self._replied = False
        self._synced_now = False
        for task in (self._sender, self._renewer):
            if task is not None:
                task.cancel()
        self._sender = self._renewer = None
        self._sending = False
        self._pending.clear()
        # whatever was queued for the old socket is moot: the next step 2 carries every
        # local change the server lacks (sent or not, as far as we know), and requests
        # are failed below
        self._outbox.clear()
        if self._closing and ws is not None and ws.close_code not in (None, 1006):
            # we closed and the server answered: it had read every frame sent before
            # our close frame
            self._unconfirmed.clear()
        self._unsent += sum(sent.changes for sent in self._unconfirmed)
        self._unsent_bytes += sum(sent.nbytes for sent in self._unconfirmed)
        self._unconfirmed.clear()
        # others' presence as we knew it: they announce it again to the next connection
        # (the server sends what it holds), and anyone who left meanwhile is gone
        self.presence.clear()
        self._presence_seen.clear()
        self._fail_requests(
            ServerGone("the connection dropped before the server answered; it may or may "
                       "not have been applied")
        )  # fmt: skip
        self._notify()

    async def _serve(self, ws: Any) -> tuple[int, str]:
        """Run one connection until it closes; return its close code and reason."""
        self._ws = ws
        self._replied = False
        self._synced_now = False
        self._declined.clear()  # (this connection's server says anew what it declines)
        self._outbox.clear()
        # our step 1 first, then presence and the extension hello (which opts us in)
        self._outbox.append(_Out(P.encode_sync_step1(self.doc.get_state())))
        if self._presence is not None:
            self._clock += 2  # past the "null" the server sent for our last connection
            state = json.dumps(self._presence)
            self._presence_sent = asyncio.get_running_loop().time()
            self._outbox.append(
                _Out(
                    P.encode_awareness(
                        P.encode_awareness_entries([(self.doc.client_id, self._clock, state)])
                    )
                )
            )
        hello_id = next(self._ids)
        self._outbox.append(_Out(P.encode_extension({"type": "hello", "id": hello_id})))
        self._held_step1 = None
        self._reopen_id = None
        if self._group is not None:
            # before the step 2 (held until it is answered): what we typed offline, and
            # what follows, stays in the group even if it ended on the server meanwhile
            self._reopen_id = next(self._ids)
            reopen = {"type": "open_group", "group": self._group, "id": self._reopen_id}
            self._outbox.append(_Out(P.encode_extension(reopen)))
            self._reopen_timer = asyncio.get_running_loop().call_later(
                self._connect_timeout, self._reopened, None
            )
        self._sender = asyncio.create_task(self._send_loop(ws))
        self._wake.set()
        self._renewer = asyncio.create_task(self._renew_presence())
        try:
            async for raw in ws:
                if isinstance(raw, str):
                    raise ProtocolError("text frame from the server")
                self._handle(P.decode(raw), hello_id)
        except websockets.ConnectionClosed:
            pass
        except ProtocolError as e:
            log.warning("%s: bad frame from the server: %s", self.name, e)
            with contextlib.suppress(Exception):
                await ws.close(4400, str(e)[:120])
            return 4400, f"the server sent a bad frame: {e}"
        code = ws.close_code
        return (1006, "connection lost") if code is None else (int(code), ws.close_reason or "")

    def _handle(self, msg: P.Message, hello_id: int) -> None:
        if isinstance(msg, P.SyncStep1):
            if self._reopen_id is not None:
                self._held_step1 = msg.state_vector  # answered once our group is open
                return
            self._answer_step1(msg.state_vector)
        elif isinstance(msg, P.SyncStep2):
            if self._probe is not None and not self._probe.done() and self._synced_now:
                self._probe.set_result(msg.update)
                self._probe = None
                return
            self._apply_remote(msg.update)
            self._confirm(msg.update)
            self._synced_now = True
            self._check_ready()
        elif isinstance(msg, P.SyncUpdate):
            self._apply_remote(msg.update)
            self._confirm(msg.update)
        elif isinstance(msg, P.AwarenessUpdate):
            self._on_awareness(msg.payload)
        elif isinstance(msg, P.AuthMessage):
            self._edits_refused(msg.reason)
        elif isinstance(msg, P.Extension):
            body = msg.body
            if body.get("type") == "result":
                rid = body.get("id")
                if rid == hello_id:
                    self.user = body.get("user", self.user)
                    self.role = body.get("role")
                    self._notify()
                    return
                if rid is not None and rid == self._reopen_id:
                    self._reopened(body)
                    return
                fut = self._requests.pop(rid, None) if isinstance(rid, int) else None
                if fut is not None and not fut.done():
                    fut.set_result(body)
            elif body.get("type") == "error":
                log.warning("%s: the server reports: %s", self.name, body.get("reason"))
        # QueryAwareness is for servers; a client ignores it

    def _answer_step1(self, state_vector: bytes) -> None:
        """Our sync step 2: every local change the server lacks, offline edits included;
        updates queued before it are dropped so that none is sent twice. A large one
        goes as a step 2 and sync updates, each under the frame limit."""
        self._pending.clear()
        with contextlib.suppress(ProtocolError):
            sv = P.decode_state_vector(state_vector)
            theirs = sv.get(self.doc.client_id, 0)
            self._server_clock = max(self._server_clock, theirs)
            declined = {c for c, clock in sv.items() if clock >= _DECLINED_CLOCK}
            declined.discard(self.doc.client_id)
            if declined - self._declined:
                self._declined |= declined
                self._say_declined()
        update = self.doc.get_update(state_vector)
        self._replied = True
        if update == _EMPTY_UPDATE:  # the server holds every local change
            self._unsent = self._unsent_bytes = 0
        self._outbox.extend(
            _update_frames(update, self._unsent, self._unsent_bytes, P.encode_sync_step2)
        )
        self._wake.set()
        self._check_ready()

    def _say_declined(self) -> None:
        """Say (at INFO, once per set) that the server will not take other users' edits
        that our document holds, and what becomes of them."""
        ids = frozenset(self._declined)
        if ids == self._declined_said:
            return
        self._declined_said = ids
        log.info(
            "%s: the document here holds other users' edits (client ids %s) that the "
            "server does not take from this session: it takes them only from their "
            "writers (edits typed after the backup a server was restored from, their "
            "writer gone, stay here only). flush() confirms the rest: this session's own "
            "edits", self.name, ", ".join(map(str, sorted(ids))),
        )  # fmt: skip

    def _reopened(self, answer: dict[str, Any] | None) -> None:
        """Our undo group is open again after a reconnection (`answer`), or the answer
        did not come in time (None): the server's step 1 held meanwhile is answered."""
        if self._reopen_timer is not None:
            self._reopen_timer.cancel()
            self._reopen_timer = None
        if self._reopen_id is None:
            return
        self._reopen_id = None
        if answer is None or not answer.get("ok"):
            why = "no answer in time" if answer is None else answer.get("reason")
            log.warning("%s: could not open undo group %r again: %s", self.name, self._group, why)
        held, self._held_step1 = self._held_step1, None
        if held is not None and self._ws is not None:
            self._answer_step1(held)

    def _confirm(self, update: bytes) -> None:
        """Forget the sent changes that `update`, from the server, shows it holds: the
        server sends only what it logged, and reads a connection's frames in order, so a
        confirmed frame confirms those sent before it."""
        locked = isinstance(self._refused, Locked)
        if not self._unconfirmed and not locked:
            return
        try:
            meta = decode_update_meta(update)
        except ProtocolError:
            return
        ours = meta.structs.get(self.doc.client_id, ())
        held = max((end for _, end in ours), default=0)
        self._server_clock = max(self._server_clock, held)
        if locked and held >= self._locked_until:
            self._edits_taken()
        last = -1
        for i, sent in enumerate(self._unconfirmed):
            if sent.end and sent.end <= held:
                last = i
        for _ in range(last + 1):
            self._unconfirmed.popleft()
        while self._unconfirmed and not self._unconfirmed[0].end:
            deletes = self._unconfirmed[0].deletes
            if deletes is None or not _covers(meta.deletes, deletes):
                break
            self._unconfirmed.popleft()

    def _check_ready(self) -> None:
        if self._replied and self._synced_now and not self._ready.is_set():
            self.connections += 1
            self._ready.set()
            self._first_sync.set()
            self._notify()

    def _apply_remote(self, update: bytes) -> None:
        self._applying = True
        try:
            self.doc.apply_update(update)
        except BaseException as e:  # pyo3 PanicException derives from BaseException
            if isinstance(e, KeyboardInterrupt | SystemExit | asyncio.CancelledError):
                raise
            if isinstance(e, ExceptionGroup) and e.message == _OBSERVER_ERROR:
                # the update applied; an observer of the document (the caller's own
                # code) raised while it did: theirs to fix, no reason to drop the server
                for error in e.exceptions:
                    log.error(
                        "%s: a document observer raised while a remote update was applied "
                        "(the update is applied; the session goes on): %r",
                        self.name, error, exc_info=error,
                    )  # fmt: skip
            else:
                raise ProtocolError(f"the server sent an update that does not apply: {e}") from e
        finally:
            self._applying = False
        self._notify()

    async def _renew_presence(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_PRESENCE_CHECK_SECONDS)
            self._expire_presence()
            if (
                self._presence is not None
                and self._ready.is_set()
                and loop.time() - self._presence_sent >= _PRESENCE_RENEW_SECONDS
            ):
                self._clock += 1
                self._send_presence()


def _update_frames(
    update: bytes, changes: int, nbytes: int, first: Callable[[bytes], bytes]
) -> list[_Out]:
    """`update` as frames of at most about 1 MiB of update each: `first` (a step 2 or a
    sync update) with its first part, sync updates with the others (each applies on its
    own, in order: client.split). The last frame carries the `changes` count."""
    parts = split_update(update, _MAX_FRAME_UPDATE_BYTES)
    frames = [_Out(first(parts[0]))] + [_Out(P.encode_sync_update(p)) for p in parts[1:]]
    frames[-1] = _Out(frames[-1].frame, changes, nbytes, parts[-1])
    if len(parts) > 1:
        # announced first, so that the server's size limit judges the parts together:
        # all of them kept, or the whole refused (4413) before any is applied, never a
        # torn prefix (a server that does not know the message ignores it)
        total = sum(len(p) for p in parts)
        parts_msg = {"type": "parts", "bytes": total, "count": len(parts)}
        frames.insert(0, _Out(P.encode_extension(parts_msg)))
    return frames


def root_kind(doc: Doc[Any], name: str) -> str | None:
    """What the root `name` of `doc` holds, as the server names it ("text", "a map",
    "an array", "an XML tree"), or None when the document has no such root or nothing
    visible in it (any type may take it). A root pycrdt has not typed yet (one only
    received) is looked at on a scratch copy, since asking for a root fixes its type."""
    if name not in doc.keys():
        return None
    root = dict(doc.items())[name]
    if root is None:
        scratch: Doc[Any] = Doc()
        scratch.apply_update(doc.get_update())
        if len(scratch.get(name, type=Map)) > 0:
            return "a map"
        if str(scratch.get(name, type=YText)):
            return "text"
        # (as the server guesses: XML elements and texts alone make an XML tree, anything
        # else an array, a notebook's list of cells or a board's of XML fragments)
        items = list(scratch.get(name, type=Array))
        if not items:
            return None
        if all(isinstance(item, XmlElement | XmlText) for item in items):
            return "an XML tree"
        return "an array"
    if isinstance(root, YText):
        return "text"
    if isinstance(root, Map):
        return "a map"
    if isinstance(root, Array):
        return "an array"
    return "an XML tree"


#: ``connect(url, doc, user=..., token=...)``: a session on `doc` at `url`
#: (``ws://HOST:PORT/ws``); ``async with`` opens it (ready after the first sync) and closes
#: it. ``user`` names you in open development mode; ``token`` is a JWT when the server has
#: a secret, or a function (or ``async def``) that returns a fresh one, called at each
#: (re)connection, so that a session outlives its tokens. The name reads well at the call
#: site; the parameters are Session's.
connect = Session
