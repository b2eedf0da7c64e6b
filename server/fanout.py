"""Fan-out between server processes over Redis pub/sub; the log stays the truth.

Several processes share one store (PostgreSQL). Each still writes ahead: an edit is
durable in the store before anyone sees it. Then its process publishes ``(doc, seq,
update…)`` on the Redis channel ``PREFIX:DOC``; every other process with that document
loaded hands the events to its room (``Room.receive_peer_events``), which applies them in
seq order with a peer origin (never logged again) and broadcasts them to its own clients.

A purge of deleted content (``P``, server.erasure) makes them reload their room of it.
A deletion travels the same way (``D`` and a JSON header): every process closes its
connections to the document with 4404 and drops its room (see ``server/deletion.py``),
unless the store says the room's document is still the name's (a late message, about an
earlier document of the name); the gap check below notices a lost one from the store (a
head that went back).

A revocation of a user (``server/revocation.py``) travels on the channel
``PREFIX:!revoked`` (no document name holds a ``!``), ``R`` and a JSON header: every
process holds the user revoked and closes their connections; a lost one is read from
the store within ``revocation.REFRESH_SECONDS``. Connections an app closes
(``Backend.disconnect``) travel on ``PREFIX:!disconnect``, ``X`` and a JSON header:
every process closes its own of them; a lost one is not made good (the app's
``authenticate`` refuses the reconnect).

Presence (awareness) travels the same way, and is relayed, not stored: a process's
connections' states reach the others' clients. Each process expires the states it holds
that are not renewed (``awareness_timeout_seconds``; Room._expire_presence), relayed
ones too, so those of a process that dies go after the timeout; the removal of its own
connections' states is published like any presence change, and whichever removal
reaches a process second changes nothing.

Redis may lose messages (a restart, a slow subscriber cut off, a publish that failed), so
correctness never depends on it:

- a room that receives seq N+2 while at N reads N+1 from the store first;
- after every (re)subscription, and after a room loads, each room reads what the store
  has beyond its seq;
- every ``check`` seconds, the heads of all loaded documents are read in one query, and a
  room still behind a head seen at the previous check reads the rest from the store (so
  even a lost last message, or Redis being down, costs at most two check periods).

A hung Redis (stopped, or a black hole on the way: connections stay open, nothing
answers) fails nothing by itself: a subscription quiet for a check period is pinged,
and given up when the ping goes unanswered as long again; a publish fails after
``COMMAND_TIMEOUT``. Either makes :meth:`Fanout.trouble` say so (``/readyz``
"degraded", ``palimpsest_fanout_connected`` 0) until Redis answers again: the
subscription once Redis confirms a new one, the publishes once a PUBLISH goes through
(with nothing to publish meanwhile, a probe on ``PREFIX:!probe``; a PING is no proof:
a Redis user may be refused PUBLISH and allowed PING). A publisher whose publishes
fail says so when they begin to, then once a minute with the messages dropped.

The fan-out URL is ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix:///PATH``: what
redis-py connects with, its own query options included) plus optional query parameters
of ours: ``prefix`` (channel prefix, default ``palimpsest``: processes that share a log
must share it) and ``check`` (seconds between gap checks, default 2, from 0.05 to 3600).
:func:`parse_url` refuses a URL that cannot work, before anything starts
(``Settings.check``: ``palimpsest serve`` exits with 2).

Generations: an events message names the generation of the document its events were
appended to (``"g"``: DocInfo.generation, the room's), and a room drops events of
another (Room.receive_peer_events): a message held on its way (a stalled link to Redis)
may arrive after the document was deleted and its name written again, with seqs that
follow the new document's. A message that names none (an older process's, during a
rolling upgrade; a new document's first commit, before its room learnt the generation)
is taken by its seqs, as before; older processes ignore the key. A presence message
names its room's generation too (Room.receive_relayed_presence): a process whose room
still holds the deleted document (its deletion's message held on the way) relayed its
connections' cursors into the rooms of the new document elsewhere.

Deployments: Redis pub/sub ignores the database number, so servers on one Redis with
one prefix hear each other whatever ``/DB`` their URLs name. Every message says the
deployment it comes from (``"d"``, first in its JSON header: 8 characters hashed from
``EventStore.identity()``, which names the store itself), and a process drops a message
of another deployment before it reads anything else of it (one byte comparison),
counts it (``foreign``) and says so once per foreign deployment. A message that names
none (an older process of this deployment, during a rolling upgrade) is taken as
before; older processes ignore the key.

Snapshots with several processes: each process counts peer events toward its rooms'
snapshot policy, so without coordination every process would checkpoint the same
document. With a fan-out URL the policy is ``shared`` and writes through the store's
``put_snapshot_if_due`` (PostgreSQL: a per-document advisory lock lets one process write
at a time), skipped when a valid snapshot within half a period already exists.

:class:`Fanout` is an extension: it publishes what ``on_logged`` and ``on_awareness``
see (this process's own events and presence: peer origins are never published again),
heals a room in ``on_load``, and is its own service.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from . import erasure
from .commit import LOG_EVERY
from .cutoff import StoreCutoff
from .deletion import (
    Deletion,
    deleted_elsewhere,
    deleted_reason,
    replaced_elsewhere,
    was_replaced,
)
from .errors import PalimpsestError, StoreError
from .extensions import Extension
from .lifecycle import Service, cancel_and_wait
from .logs import OncePerMinute
from .origins import Origin, PeerOrigin
from .revocation import Revocation
from .room import Room
from .store.base import Event, EventStore
from .util import without_password

if TYPE_CHECKING:
    from redis import asyncio as aioredis
    from redis.asyncio.client import PubSub

    from .backend import Backend

log = logging.getLogger("palimpsest.fanout")
#: a gap check fails every check period (2 s) while the store is down: said at most as
#: often as the committer says that the store refuses commits
log.addFilter(OncePerMinute("fan-out gap check failed", every=LOG_EVERY))

#: messages waiting for Redis beyond this are dropped (the others heal from the log)
OUTBOX_MAX = 10_000
#: this many gap checks within UNDELIVERED_WINDOW seconds that found events the bus never
#: delivered, while subscribed throughout, are logged as a warning (see Fanout._missed)
UNDELIVERED_WARN = 3
UNDELIVERED_WINDOW = 60
#: gap-check periods (and seconds at least) a message may come after the gap check that
#: healed its events before they count as never delivered: under load (a field test's
#: load average of 10) the bus brings them late, or the room has them queued
UNDELIVERED_GRACE_CHECKS = 4
UNDELIVERED_GRACE_MIN = 2.0
#: healed rooms waited on for a late message at most
LATE_MAX = 1000
#: a subscription quiet for this long (the gap-check period, within these bounds) is
#: pinged, and one whose ping has gone unanswered as long again is given up as lost: a
#: hung Redis (stopped, swapping, or a black hole on the path) keeps its connections open
#: and answers nothing, and the subscription would wait for ever, reported healthy
SILENCE_MIN = 1.0
SILENCE_MAX = 10.0
#: a command to Redis (a publish, a ping, a subscription) that has no answer within this
#: many seconds fails, rather than holding the publisher (a URL's own ?socket_timeout=
#: wins)
COMMAND_TIMEOUT = 5.0
# how long stop() waits for its tasks, then for Redis's connections to close
STOP_WITHIN = 5.0


#: while publishes fail, the log says so again (with the messages dropped) this often
PUBLISH_FAILING_EVERY = 60.0

#: bounds of the gap-check period (``?check=``, seconds). Below: the checks read the
#: store's heads back to back (at 0, a core at 100 %, and the store's time with it);
#: above: a lost message, or Redis being down, would cost hours instead of seconds
CHECK_MIN = 0.05
CHECK_MAX = 3600.0
#: the schemes redis-py connects with (redis.asyncio.connection.parse_url)
SCHEMES = ("redis://", "rediss://", "unix://")
#: the channel prefix when the URL names none
DEFAULT_PREFIX = "palimpsest"
#: how a message's JSON header begins when it names its deployment
DEPLOYMENT_KEY = b'{"d":"'
#: foreign deployments remembered (and told of) at most: the rest are only counted
FOREIGN_MAX = 64


def parse_url(url: str, name: str = "the fan-out URL") -> tuple[str, str, float]:
    """(redis URL, channel prefix, gap-check seconds) from a fan-out URL.

    Raises ValueError, in one line that begins with `name`, for a URL that cannot work:
    a scheme redis-py does not connect with, a prefix or a check period out of bounds,
    an option neither ours nor Redis's. Nothing is connected to."""
    if not url.lower().startswith(SCHEMES):
        # the scheme only: the rest may hold a password
        was = f"not {url.split('://', 1)[0]}://" if "://" in url else "not one without a scheme"
        raise ValueError(f"{name} must be a redis://, rediss:// or unix:// URL, {was}")
    # split by hand: urlunsplit would write unix:///path back as unix:/path
    base, _, query = url.split("#", 1)[0].partition("?")
    prefix, check, rest = DEFAULT_PREFIX, 2.0, []
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k == "prefix":
            prefix = v
        elif k == "check":
            check = _check_seconds(v, name)
        else:
            rest.append((k, v))
    if not prefix or any(c in prefix for c in "*?[]\\"):
        raise ValueError(
            f"{name} option prefix={prefix!r} must be non-empty, without glob characters "
            "(* ? [ ] \\)"
        )
    redis_url = f"{base}?{urlencode(rest)}" if rest else base
    # redis-py costs 0.16-0.27 s to import, and only a server with --fanout (and the CLI's
    # publishes) needs it: imported where used, never at start-up without a fan-out
    from redis import asyncio as aioredis
    from redis.exceptions import RedisError

    try:
        # what start() does, short of connecting: a value or an option redis-py refuses
        # would otherwise surface only as the subscriber first connects, in its task
        pool = aioredis.ConnectionPool.from_url(redis_url, **connect_options(redis_url))
        pool.make_connection()  # type: ignore[no-untyped-call]
    except (ValueError, RedisError) as e:  # (a TLS option's bad value: a RedisError)
        raise ValueError(f"{name} is not a Redis URL that redis-py takes: {e}") from None
    except TypeError as e:  # the connection class's keyword arguments
        raise ValueError(
            f"{name} has an option that is neither ours (prefix, check) nor Redis's: {e}"
        ) from None
    return redis_url, prefix, check


def _check_seconds(value: str, name: str) -> float:
    try:
        check = float(value)
    except ValueError:
        check = float("nan")
    if not CHECK_MIN <= check <= CHECK_MAX:  # nan too
        raise ValueError(
            f"{name} option check={value} is not a number of seconds from {CHECK_MIN:g} to "
            f"{CHECK_MAX:g} (the period of the gap check)"
        )
    return check


def shared_channels_warning(url: str) -> str | None:
    """What to say at start when `url` names a Redis database other than 0 and no
    prefix: whoever chose the number meant to keep a deployment apart by it, and pub/sub
    ignores it (the channels of every database are the same)."""
    redis_url, prefix, _check = parse_url(url)
    query = url.split("#", 1)[0].partition("?")[2]
    if any(k == "prefix" for k, _ in parse_qsl(query, keep_blank_values=True)):
        return None
    from redis.asyncio.connection import parse_url as redis_url_options

    db = redis_url_options(redis_url).get("db") or 0
    if not db:
        return None
    return (
        f"the fan-out URL names Redis database {db} and no ?prefix=: Redis pub/sub ignores "
        f"the database number, so every server on this Redis with the default prefix "
        f"{prefix!r} shares the channels {prefix}:*, whatever database its URL names. "
        "Messages of another deployment (another store) are told apart and dropped, but "
        "still travel to every server: give each deployment a ?prefix= of its own "
        "(docs/scaleout.md)"
    )


def deployment_of(identity: str | None) -> str | None:
    """The deployment a message names (8 URL-safe characters) from the identity of its
    store (EventStore.identity), or None when the store cannot tell."""
    if identity is None:
        return None
    digest = hashlib.sha256(identity.encode()).digest()[:6]
    return base64.urlsafe_b64encode(digest).decode()


async def store_deployment(store: EventStore) -> str | None:
    """:func:`deployment_of` the store's identity; None (with a warning) when it cannot
    be read now."""
    try:
        return deployment_of(await store.identity())
    except Exception as e:  # noqa: BLE001 - any failure: tell nothing apart, as before
        log.warning("fan-out: the store's identity could not be read (%s): messages of "
                    "other deployments on this bus are not told apart", e)  # fmt: skip
        return None


def connect_options(redis_url: str) -> dict[str, Any]:
    """The keyword arguments of our connections to `redis_url` (TCP keepalive is no
    option of a unix socket's)."""
    options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": COMMAND_TIMEOUT}
    if not redis_url.lower().startswith("unix://"):
        options["socket_keepalive"] = True
    return options


@functools.lru_cache(maxsize=64)
def _head(instance: str, deployment: str | None) -> bytes:
    """How a header begins, its closing brace left off: ``{"d":DEPLOYMENT,"i":INSTANCE``
    (the deployment first, compared as bytes: DEPLOYMENT_KEY), or ``{"i":INSTANCE`` as
    older processes wrote it. The same for every message of a process: made once."""
    head = {"d": deployment, "i": instance} if deployment else {"i": instance}
    return json.dumps(head, separators=(",", ":")).encode()[:-1]


def encode(
    instance: str,
    events: list[Event],
    deployment: str | None = None,
    generation: int | None = None,
) -> bytes:
    """One message: a JSON header line, then the updates back to back. `generation`:
    that of the document the events were appended to (DocInfo.generation, ``"g"``),
    None when the room that logged them does not know it yet (a new document's first
    commit) or the store numbers none: the message is then taken by its seqs alone."""
    rows = [[e.seq, e.ts, e.actor, e.kind, e.meta, len(e.update), e.pos] for e in events]
    return b"".join(
        (
            _head(instance, deployment),
            b"" if generation is None else b',"g":%d' % generation,
            b',"e":',
            json.dumps(rows, separators=(",", ":")).encode(),
            b"}\n",
            *(e.update for e in events),
        )
    )


def encode_awareness(
    instance: str, entries: bytes, deployment: str | None = None, generation: int | None = None
) -> bytes:
    """Presence: ``A``, a JSON header line, then the encoded awareness entries.
    `generation`: that of the document of the room whose connections' states they are
    (``"g"``, as an events message's; None when the room does not know it)."""
    g = b"" if generation is None else b',"g":%d' % generation
    return b"A" + _head(instance, deployment) + g + b"}\n" + entries


def encode_deleted(instance: str, by: str, deployment: str | None = None) -> bytes:
    """A deletion: ``D``, a JSON header line."""
    return b"D" + _head(instance, deployment) + b',"by":' + json.dumps(by).encode() + b"}\n"


#: the first byte of a presence, deletion, purge, revocation or disconnect message (an
#: events message begins with {)
_A_OR_D = (ord("A"), ord("D"), ord("P"), ord("R"), ord("X"))


def foreign_deployment(data: bytes, mark: bytes) -> str | None:
    """The deployment a message names when it is not the one `mark` begins (the
    DEPLOYMENT_KEY and ours), else None: ours, or a message naming none (an older
    process's). An empty `mark` (ours unknown) takes every message."""
    at = 1 if data[0] in _A_OR_D else 0  # (never empty: a message has a header)
    if not mark or data.startswith(mark, at) or not data.startswith(DEPLOYMENT_KEY, at):
        return None
    start = at + len(DEPLOYMENT_KEY)
    end = data.find(b'"', start, start + 64)
    return data[start:end].decode("utf-8", "replace") if end > 0 else "?"


#: the channel (after ``PREFIX:``) of revocations: not a document name (names.py)
REVOKED_CHANNEL = "!revoked"


def encode_revocation(
    instance: str, user: str, since: int | None, by: str, deployment: str | None = None
) -> bytes:
    """A revocation (`since`: the second from which the user's tokens count again) or,
    with `since` None, its lifting: ``R``, a JSON header line (its deployment first, as
    every message's: another deployment's revocation of a user of the same name is not
    ours)."""
    tail = json.dumps({"user": user, "since": since, "by": by}, separators=(",", ":"))
    return b"R" + _head(instance, deployment) + b"," + tail[1:].encode() + b"\n"


#: how the publisher asks the role of the Redis node it publishes to (Fanout._check_role)
ROLE = ("ROLE",)
INFO_REPLICATION = ("INFO", "replication")


def _role_of(answer: Any) -> tuple[str, str]:
    """(role, its primary as HOST:PORT or "?") from what ROLE or INFO replication
    answered: ``[b"slave", host, port, ...]``, ``[b"master", ...]``; {"role": ...}."""

    def text(x: Any) -> str:
        return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)

    if isinstance(answer, dict):
        host, port = answer.get("master_host", "?"), answer.get("master_port", "?")
        return text(answer.get("role", "?")), f"{text(host)}:{text(port)}"
    if isinstance(answer, (list, tuple)) and answer:
        role = text(answer[0])
        if role in ("slave", "replica") and len(answer) >= 3:
            return role, f"{text(answer[1])}:{text(answer[2])}"
        return role, "?"
    return "?", "?"


#: the channel (after ``PREFIX:``) of the probes a publisher whose publishes fail sends
#: while it has nothing else to publish (Fanout._publish): not a document name
PROBE_CHANNEL = "!probe"


def encode_probe(instance: str, deployment: str | None = None) -> bytes:
    """A probe: ``A`` and a JSON header line, an empty presence message, so that a
    process older than the probes takes it for presence in a room it never has."""
    return b"A" + _head(instance, deployment) + b"}\n"


#: the channel (after ``PREFIX:``) of Backend.disconnect: not a document name (names.py)
DISCONNECT_CHANNEL = "!disconnect"


def encode_disconnect(
    instance: str,
    user: str | None,
    doc: str | None,
    code: int,
    reason: str,
    deployment: str | None = None,
) -> bytes:
    """Connections to close (Backend.disconnect): ``X``, a JSON header line."""
    tail = json.dumps(
        {"user": user, "doc": doc, "code": code, "reason": reason}, separators=(",", ":")
    )
    return b"X" + _head(instance, deployment) + b"," + tail[1:].encode() + b"\n"


class NotPrimary(RuntimeError):
    """A one-shot publish (publish_deleted, publish_purged, publish_revocation) found the
    Redis node of the fan-out URL a replica, and published nothing there."""


async def _publish_once(url: str, channel: str, message: bytes) -> None:
    """Publish one message on ``PREFIX:channel`` of the fan-out bus `url`, for tools that
    change the store without serving (the CLI).

    The role of the Redis node is asked first, on the connection the PUBLISH then takes,
    as the servers' publisher asks it (Fanout._check_role): a replica (a failover that
    left the URL on the old primary) takes a PUBLISH without complaint and passes it to
    no process on the primary, so on one this raises NotPrimary and publishes nothing. A
    user refused both ROLE and INFO replication is not checked (as the servers do)."""
    from redis import asyncio as aioredis
    from redis.exceptions import ResponseError

    redis_url, prefix, _check = parse_url(url)
    r = aioredis.Redis.from_url(
        redis_url, single_connection_client=True, **connect_options(redis_url)
    )
    try:
        for command in (ROLE, INFO_REPLICATION):
            try:
                answer = await r.execute_command(*command)  # type: ignore[no-untyped-call]
            except ResponseError:
                continue
            role, primary = _role_of(answer)
            if role in ("slave", "replica"):
                raise NotPrimary(
                    f"Redis at {without_password(redis_url)} is a replica (role {role} of "
                    f"{primary}), not the primary: a message published there reaches no "
                    "server on the primary (a failover? point --fanout at the primary); "
                    "nothing was published"
                )
            break
        await r.publish(f"{prefix}:{channel}", message)
    finally:
        await r.aclose()


async def publish_revocation(
    url: str, user: str, since: int | None, by: str, deployment: str | None = None
) -> None:
    """Tell the processes on the fan-out bus `url` of a revocation (one-shot, for tools
    that revoke without serving, such as ``palimpsest revoke``): those of `deployment`
    (store_deployment of the store it was made in), or all (None). NotPrimary when the
    node is a replica (_publish_once)."""
    await _publish_once(url, REVOKED_CHANNEL, encode_revocation("cli", user, since, by, deployment))


async def publish_deleted(url: str, doc: str, by: str, deployment: str | None = None) -> None:
    """Tell the processes on the fan-out bus `url` that `doc` was deleted (one-shot, for
    tools that delete without serving, such as ``palimpsest delete``): those of
    `deployment` (store_deployment of the store it was deleted from), or all (None).
    NotPrimary when the node is a replica (_publish_once)."""
    await _publish_once(url, doc, encode_deleted("cli", by, deployment))


async def publish_events(
    url: str, doc: str, events: list[Event], deployment: str | None = None
) -> None:
    """Tell the processes on the fan-out bus `url` of events appended to `doc` by a tool
    that does not serve (``palimpsest lock``): those that have it open apply them as
    another process's. NotPrimary when the node is a replica (_publish_once)."""
    await _publish_once(url, doc, encode("cli", events, deployment))


def encode_purged(instance: str, by: str, deployment: str | None = None) -> bytes:
    """A purge of deleted content (server.erasure): ``P``, a JSON header line."""
    return b"P" + _head(instance, deployment) + b',"by":' + json.dumps(by).encode() + b"}\n"


async def publish_purged(url: str, doc: str, by: str, deployment: str | None = None) -> None:
    """Tell the processes on the fan-out bus `url` that `doc`'s deleted content was
    purged (``palimpsest compact --purge-deleted``): they reload their room of it; those
    of `deployment` (store_deployment), or all (None). NotPrimary when the node is a
    replica (_publish_once)."""
    await _publish_once(url, doc, encode_purged("cli", by, deployment))


def decode(doc: str, data: bytes) -> tuple[str, list[Event] | bytes]:
    """(instance, events) for an events message, (instance, entries) for presence."""
    instance, body, _generation = decode_message(doc, data)
    return instance, body


def decode_message(doc: str, data: bytes) -> tuple[str, list[Event] | bytes, int | None]:
    """:func:`decode`, and the generation of the document an events message's events
    were appended to, or a presence message's states were announced in (None: a message
    that names none, an older process's or a new document's first commit: see
    encode)."""
    nl = data.index(b"\n")
    presence = data[:1] == b"A"
    head = json.loads(data[1:nl] if presence else data[:nl])
    generation = head.get("g")
    if generation is not None and type(generation) is not int:
        raise ValueError(f"fan-out message for {doc!r}: generation {generation!r} is no number")
    if presence:
        return str(head["i"]), data[nl + 1 :], generation
    pos = nl + 1
    events = []
    for seq, ts, actor, kind, meta, n, *rest in head["e"]:
        # the global position is the 7th field (absent from older processes' messages)
        gpos = int(rest[0]) if rest else 0
        events.append(Event(doc, int(seq), int(ts), actor, kind, data[pos : pos + n], meta, gpos))
        pos += n
    if pos != len(data):
        raise ValueError(f"fan-out message for {doc!r}: {len(data) - pos} bytes left over")
    return str(head["i"]), events, generation


class _Relay:
    """Stands for another process's connections in a room's presence (never joins it)."""

    def __init__(self, instance: str) -> None:
        self.id = f"fanout:{instance}"
        self.actor = ""

    def send(self, frame: bytes) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


class Fanout(Extension, Service):
    """The fan-out of one process: an extension and its own service (start/stop)."""

    def __init__(self, url: str) -> None:
        self.redis_url, self.prefix, self.check_seconds = parse_url(url)
        self._url = url
        self.instance = ""
        self.cutoff: StoreCutoff | None = None
        #: the deployment this process's messages name (store_deployment), None when
        #: its store cannot tell (then it takes every message, as before)
        self.deployment: str | None = None
        #: what a message of this deployment begins with (after its A or D)
        self._mark = b""
        #: foreign deployments seen on the bus (told of once each; FOREIGN_MAX at most)
        self.foreign_deployments: set[str] = set()
        self._redis: aioredis.Redis | None = None
        self._outbox: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._heals: set[asyncio.Task[None]] = set()
        self._behind: dict[str, int] = {}
        #: seconds of quiet before the subscription is pinged, and of a ping unanswered
        #: before it is given up (see SILENCE_MIN)
        self.silence = min(max(self.check_seconds, SILENCE_MIN), SILENCE_MAX)
        #: observable state, for logs, metrics and tests
        #: subscribed, and Redis answering on the subscription
        self.connected = False
        #: why not, while not (the last error of the subscription)
        self.unsubscribed_by = "not subscribed yet"
        #: the error of the last publish while publishes fail, None once one goes through
        #: (with nothing to publish, a probe: Fanout._publish); when one last failed
        self.publish_failure: str | None = None
        self._publish_failed_at = -float(UNDELIVERED_WINDOW)
        #: how the role of the Redis node is asked (ROLE; INFO replication when ROLE is
        #: refused; None when both are), and when next (Fanout._check_role)
        self._role_command: tuple[str, ...] | None = ROLE
        self._role_due = 0.0
        #: what is wrong while the node publishes go to is a replica, else None
        self.on_replica: str | None = None
        self.subscriptions = 0
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.healed = 0
        #: messages of another deployment, dropped
        self.foreign = 0
        #: when the subscription began (time.monotonic()), None while there is none
        self._subscribed_at: float | None = None
        #: gap checks that found a room behind by events the bus never delivered while
        #: subscribed throughout (times), and when that was last logged
        self._undelivered: collections.deque[float] = collections.deque(maxlen=UNDELIVERED_WARN)
        self._undelivered_logged = -float(UNDELIVERED_WINDOW)
        #: the highest seq of each loaded document's events the bus brought here
        self._delivered: dict[str, int] = {}
        #: rooms gap checks healed, oldest first: (until when the bus may still bring the
        #: events, the document, the seq it should bring, the subscription then and its
        #: age); at most LATE_MAX (a miss more or less among so many changes nothing)
        self._late: collections.deque[tuple[float, str, int, float, float]] = collections.deque(
            maxlen=LATE_MAX
        )

    def setup(self, backend: Backend) -> None:
        self.backend = backend
        self.instance = backend.settings.instance
        seconds = backend.settings.store_cutoff_seconds
        # watches for a cut between this process and the store that the others reach
        # (fed with their events' arrival here)
        self.cutoff = StoreCutoff(backend, seconds) if seconds > 0 else None

    #: on_applied reads only the origin
    reads_doc_per_event = False

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        """``healed`` counts the events of other processes that a room applied from the
        store rather than from the bus, however they were read: by :meth:`heal` (the gap
        check, a new subscription, a load) or by the room itself, which reads what it
        lacks before it applies its own commit or a message past a gap (with Redis
        hung, that is how most of the other process's events arrive: they were
        uncounted)."""
        if isinstance(origin, PeerOrigin) and origin.instance == "store":
            self.healed += 1

    def services(self) -> Sequence[Service]:
        return [self] if self.cutoff is None else [self, self.cutoff]

    def channel(self, doc: str) -> str:
        return f"{self.prefix}:{doc}"

    # --- lifecycle ---------------------------------------------------------------------

    def _set_deployment(self, deployment: str | None) -> None:
        self.deployment = deployment
        self._mark = DEPLOYMENT_KEY + deployment.encode() + b'"' if deployment else b""

    async def start(self) -> None:
        self._wake = asyncio.Event()  # of this start's event loop (it may be another's)
        if self._outbox:
            self._wake.set()  # what the last run had not published yet goes first
        said = shared_channels_warning(self._url)
        if said:
            log.warning("%s", said)
        # (the store has started: the backend starts the services after it)
        self._set_deployment(await store_deployment(self.backend.store))
        from redis import asyncio as aioredis

        # never fails on Redis being down: the service keeps trying, the log covers it
        self._redis = aioredis.Redis.from_url(self.redis_url, **connect_options(self.redis_url))
        self._tasks = [
            asyncio.create_task(self._subscriber(), name="fanout-subscriber"),
            asyncio.create_task(self._publisher(), name="fanout-publisher"),
            asyncio.create_task(self._checker(), name="fanout-gap-check"),
        ]
        log.info("fan-out on %s, channels %s:*, instance %s, deployment %s",
                 without_password(self.redis_url), self.prefix, self.instance,
                 self.deployment or "unknown (messages of others are not told apart)")  # fmt: skip

    async def stop(self) -> None:
        """Cancel the tasks and close the connections, each within STOP_WITHIN: a
        shutdown is not held up by a task that ignores its cancel or a Redis that
        does not answer a close (what is left is logged, and the process goes on)."""
        tasks = [*self._tasks, *self._heals]
        for task in tasks:
            task.cancel()
        # (asyncio.wait, not a timeout around the awaits: a cancel of the awaiting task
        # goes to the task it awaits, and one that ignores it would hold it still)
        done, pending = await asyncio.wait(tasks, timeout=STOP_WITHIN) if tasks else ((), ())
        if pending:
            log.warning(
                "the fan-out stops without waiting for %s: still running %g s after "
                "being cancelled", ", ".join(sorted(t.get_name() for t in pending)),
                STOP_WITHIN,
            )  # fmt: skip
        await cancel_and_wait(*done, log=log)  # (ended: their errors are logged)
        self._tasks = []
        if self._redis is not None:
            try:
                async with asyncio.timeout(STOP_WITHIN):
                    await self._redis.aclose()
            except TimeoutError:
                log.warning("Redis did not close within %g s; the fan-out stops", STOP_WITHIN)
            except Exception as e:
                log.debug("closing Redis: %r", e)
            self._redis = None

    # --- publishing ----------------------------------------------------------------------

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        """Events this process just made durable, with the generation of the document
        the room appended them to (what on_committed does not know: by the time it
        runs, the name may hold another document, and the room is gone)."""
        if events:
            message = encode(self.instance, list(events), self.deployment, room.generation)
            self._queue(room.name, message)

    async def on_deleted(self, doc: str, by: str) -> None:
        """This process deleted `doc` (already gone from the store)."""
        self._queue(doc, encode_deleted(self.instance, by, self.deployment))

    async def on_purged(self, doc: str, by: str) -> None:
        """This process purged `doc`'s deleted content: the others reload their rooms."""
        self._queue(doc, encode_purged(self.instance, by, self.deployment))

    def publish_revocation(self, user: str, since: int | None, by: str) -> None:
        """This process revoked `user` (stored already), or lifted it (`since` None)."""
        message = encode_revocation(self.instance, user, since, by, self.deployment)
        self._queue(REVOKED_CHANNEL, message)

    def publish_disconnect(self, user: str | None, doc: str | None, code: int, reason: str) -> None:
        """This process closed connections (Backend.disconnect): the others close theirs."""
        message = encode_disconnect(self.instance, user, doc, code, reason, self.deployment)
        self._queue(DISCONNECT_CHANNEL, message)

    def on_awareness(self, room: Room, entries: bytes) -> None:
        """Presence changed by this process's connections."""
        self._queue(
            room.name, encode_awareness(self.instance, entries, self.deployment, room.generation)
        )

    def _queue(self, doc: str, message: bytes) -> None:
        self._outbox.append((doc, message))
        if len(self._outbox) > OUTBOX_MAX:
            del self._outbox[: len(self._outbox) - OUTBOX_MAX]
            self.dropped += 1
        self._wake.set()

    async def _publisher(self) -> None:
        from redis.exceptions import RedisError

        dropped = 0  # messages dropped since the publishes began to fail
        said_at, said_dropped = 0.0, 0  # when that was last said, and how many by then
        while True:
            if not self._outbox and self.publish_failure is None:
                self._wake.clear()
                due = self._role_due - time.monotonic() if self._role_command else None
                if due is None or due > 0:  # wait for something to publish, or the check
                    # (not wait_for: on 3.11 it can lose the cancel that stops us, in
                    # the turn the event is set)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(due):
                            await self._wake.wait()
                    continue
                # idle, the role check due: it alone (Redis being down is the subscriber's
                # to tell, and nothing was dropped)
                with contextlib.suppress(RedisError, OSError):
                    await self._publish([])
                continue
            batch, self._outbox = self._outbox, []
            try:
                await self._publish(batch)
            except (RedisError, OSError) as e:
                # the events are in the log: the other processes heal from it
                self.dropped += len(batch)
                why = self.refusal(e, "PUBLISH")[1]
                now = time.monotonic()
                if self.publish_failure is None:
                    log.warning("fan-out cannot publish (%s): messages are dropped until "
                                "Redis takes them again; the others heal from the log",
                                why)  # fmt: skip
                    said_at, said_dropped = now, 0
                elif now - said_at >= PUBLISH_FAILING_EVERY:  # not every half second
                    log.warning("fan-out still cannot publish (%s): %d messages dropped in "
                                "the last %.0f s, %d since it began; the others heal from "
                                "the log", why, dropped - said_dropped, now - said_at,
                                dropped)  # fmt: skip
                    said_at, said_dropped = now, dropped
                dropped += len(batch)
                self.publish_failure = why
                self._publish_failed_at = now
                await asyncio.sleep(0.5)
                continue
            if self.publish_failure is not None:
                log.info("fan-out publishes again (%d messages dropped meanwhile; "
                         "the others healed from the log)", dropped)  # fmt: skip
                dropped = 0
            self.publish_failure = None
            self.published += len(batch)

    async def _publish(self, batch: list[tuple[str, bytes]]) -> None:
        """Publish `batch`; an empty one (publishes failing, nothing to send) publishes a
        probe on ``PREFIX:!probe``, so that Redis taking publishes again is known without
        waiting for an edit. A PING answered proves nothing of the kind (a user refused
        PUBLISH by its ACL may PING): it cleared the failure, and /readyz said "ok", half
        a second after the typing paused.

        Once a check period (``silence``), the role of the Redis node is asked in the
        same pipeline, so on the very connection the publishes take (see _check_role)."""
        assert self._redis is not None
        now = time.monotonic()
        role = self._role_command if self._role_command and now >= self._role_due else None
        if role is not None:
            self._role_due = now + self.silence
        async with self._redis.pipeline(transaction=False) as pipe:
            if role is not None:
                pipe.execute_command(*role)
            for doc, message in batch:
                pipe.publish(self.channel(doc), message)
            if not batch and self.publish_failure is not None:
                probe = encode_probe(self.instance, self.deployment)
                pipe.publish(self.channel(PROBE_CHANNEL), probe)
            if not len(pipe):
                return
            results = await pipe.execute(raise_on_error=False)
        if role is not None:
            await self._check_role(role, results.pop(0))
        for result in results:
            if isinstance(result, Exception):
                raise result

    async def _check_role(self, command: tuple[str, ...], answer: Any) -> None:
        """What ROLE (or INFO replication) answered on the publishing connection.

        After a failover, a process whose connections stay on the old primary, now a
        replica of the new one, publishes into the replica: PUBLISH there is taken
        without complaint and reaches the replica's subscribers only, never the new
        primary's, and nothing failed (a count of receivers does not tell: the replica's
        own subscribers are counted, and 0 may be right). So: on a replica, say so
        (trouble(), the log) and drop the idle connections, so that the next publish
        connects anew (redis-py resolves the name again: after a DNS switch, to the new
        primary). A subscription on the replica still hears what the primary's
        publishers send (Redis replicates PUBLISH to replicas), and is left alone.
        A user refused both commands (NOPERM; a proxy without them) is not checked."""
        from redis.exceptions import ResponseError

        assert self._redis is not None
        if isinstance(answer, ResponseError):
            if command == ROLE:
                self._role_command, self._role_due = INFO_REPLICATION, 0.0
                return
            self._role_command = None
            log.warning("fan-out: this Redis user may not ask the role of the Redis node "
                        "(ROLE, INFO replication: %s): a failover that leaves this process "
                        "connected to the old primary, a replica now, would go unnoticed; "
                        "allow the user +role (docs/scaleout.md)", answer)  # fmt: skip
            return
        role, primary = _role_of(answer)
        if role not in ("slave", "replica"):
            if self.on_replica is not None:
                log.info("fan-out: Redis at %s is the primary again (role %s): "
                         "publishes reach every process", without_password(self.redis_url),
                         role)  # fmt: skip
                self.on_replica = None
            return
        said = (
            f"Redis at {without_password(self.redis_url)} is a replica (role {role} of "
            f"{primary}), not the primary: what this process publishes there never reaches "
            f"the processes on the primary (a failover that left its connection on the old "
            f"primary?); reconnecting every {self.silence:g} s until it reaches a primary"
        )
        if self.on_replica is None:
            log.warning("fan-out: %s", said)
        self.on_replica = said
        with contextlib.suppress(Exception):
            await self._redis.connection_pool.disconnect(inuse_connections=False)

    def trouble(self) -> str | None:
        """What keeps this process's edits and presence from travelling on the bus now,
        or None while it works both ways (for /readyz and the metrics)."""
        said = []
        if not self.connected:
            said.append(f"not subscribed to the fan-out bus ({self.unsubscribed_by})")
        if self.publish_failure is not None:
            said.append(f"publishes to it fail ({self.publish_failure})")
        if self.on_replica is not None:
            said.append(self.on_replica)
        return "; ".join(said) or None

    # --- receiving -----------------------------------------------------------------------

    async def _subscriber(self) -> None:
        from redis.exceptions import RedisError

        backoff = 0.1
        said: str | None = None  # what kind of failure was said since the last subscription
        while True:
            assert self._redis is not None
            pubsub = self._redis.pubsub()
            try:
                await self._psubscribe(pubsub)
                self.connected = True
                self._subscribed_at = time.monotonic()
                self.subscriptions += 1
                backoff = 0.1
                said = None
                log.info("fan-out subscribed (%d)", self.subscriptions)
                # whatever was published while we were not listening is in the log
                await self.heal_all()
                await self._listen(pubsub)
            except (RedisError, OSError) as e:
                kind, why = self.refusal(e, "PSUBSCRIBE")
                if self.connected:
                    log.warning("fan-out lost Redis (%s); healing from the log meanwhile", why)
                elif kind != said and kind != "down":
                    log.warning("fan-out cannot subscribe: %s; retrying, and healing from the "
                                "log meanwhile", why)  # fmt: skip
                elif kind != said:  # (a server started with Redis down said nothing)
                    log.warning("fan-out cannot reach Redis (%s); retrying, and healing from "
                                "the log meanwhile", why)  # fmt: skip
                said = kind  # said once while it lasts, not at every try
                self.connected = False
                self.unsubscribed_by = why
            finally:
                self.connected = False
                self._subscribed_at = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _psubscribe(self, pubsub: PubSub) -> None:
        """PSUBSCRIBE to ``PREFIX:*`` and wait for Redis to confirm it. psubscribe() only
        sends the command: a refusal (NOPERM: the user may not PSUBSCRIBE, or its channel
        rules do not cover the pattern) arrives as the next thing read. Taking the call's
        return for a subscription said "fan-out subscribed", reset the back-off and
        healed every room, about 9 times a second, each time before the NOPERM came."""
        from redis.exceptions import TimeoutError as RedisTimeoutError

        pattern = f"{self.prefix}:*"
        await pubsub.psubscribe(pattern)
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RedisTimeoutError(
                    f"Redis did not confirm PSUBSCRIBE {pattern} within {COMMAND_TIMEOUT:g} s"
                )
            msg = await pubsub.get_message(ignore_subscribe_messages=False, timeout=left)
            if msg is not None and msg["type"] == "psubscribe":
                return

    def refusal(self, e: BaseException, command: str) -> tuple[str, str]:
        """(kind, what to say) of a failure of Redis to `command`: ``"auth"``, when Redis
        refuses the URL's credentials (a configuration error: a password missing or
        wrong); ``"permission"``, when the Redis user may not run it on our channels (a
        configuration error: the ACL); else ``"down"`` (unreachable, restarting, hung).
        A missing password used to read "cannot reach Redis (HELLO must be called with
        the client already authenticated…)", as if Redis were down."""
        from redis.exceptions import (
            AuthenticationError,
            AuthenticationWrongNumberOfArgsError,
            NoPermissionError,
        )

        if isinstance(e, (AuthenticationError, AuthenticationWrongNumberOfArgsError)):
            return "auth", (
                f"Redis authentication failed ({e}): a configuration error; the user name "
                f"or password in the fan-out URL (redis://USER:PASSWORD@HOST:PORT/DB) is "
                f"missing or wrong, or the user is disabled"
            )
        if isinstance(e, NoPermissionError):
            return "permission", (
                f"Redis refuses {command} to '{self.prefix}:*' to this user ({e}): a "
                f"configuration error; the Redis user needs +psubscribe, +publish, +ping "
                f"and +role, the channels &{self.prefix}:*, and +select for a database "
                f"other than 0 in the URL (docs/scaleout.md)"
            )
        return "down", str(e) or repr(e)

    async def _listen(self, pubsub: PubSub) -> None:
        """Hand on what arrives until the subscription fails. Quiet for ``silence``
        seconds, it is pinged; a ping unanswered as long again raises TimeoutError: a
        hung Redis fails nothing and answers nothing."""
        from redis.exceptions import TimeoutError as RedisTimeoutError

        heard = time.monotonic()
        pinged: float | None = None
        while True:
            msg = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(1.0, self.silence)
            )
            now = time.monotonic()
            if msg is not None:
                heard, pinged = now, None
                if msg["type"] == "pmessage":
                    self._receive(msg["channel"], msg["data"])
            elif pinged is not None and now - pinged >= self.silence:
                raise RedisTimeoutError(
                    f"no answer on the subscription for {now - heard:.1f} s, a ping "
                    f"included: Redis hangs, or the way to it"
                )
            elif pinged is None and now - heard >= self.silence:
                await pubsub.ping()
                pinged = now

    def _receive(self, channel: bytes | str, data: bytes) -> None:
        ch = channel.decode() if isinstance(channel, bytes) else channel
        doc = ch[len(self.prefix) + 1 :]
        other = foreign_deployment(data, self._mark)
        if other is not None:  # (None: ours, or an older process's, naming none)
            self._foreign(other, doc)
            return
        if doc == PROBE_CHANNEL:
            return
        if doc == REVOKED_CHANNEL:
            self._revoked(ch, data)
            return
        if doc == DISCONNECT_CHANNEL:
            self._disconnect(ch, data)
            return
        if data[:1] not in (b"A", b"D", b"P"):  # events, loaded here or not
            self.backend.extensions.peer_commit(doc)
            if self.cutoff is not None and not data.startswith(
                _head(self.instance, self.deployment)
            ):  # another process's commit: the store takes its commits
                self.cutoff.peer_committed()
        room = self.backend.rooms.get_loaded(doc)
        if room is None:
            return
        if data[:1] == b"D":
            self._deleted(ch, doc, data)
            return
        if data[:1] == b"P":
            self._purged(ch, doc, data)
            return
        try:
            instance, body, generation = decode_message(doc, data)
        except (ValueError, KeyError, TypeError) as e:
            log.error("fan-out: malformed message on %s: %s", ch, e)
            return
        if instance == self.instance:
            return  # ours, already applied
        self.received += 1
        if isinstance(body, bytes):
            try:  # (the room drops the states of another document of the name)
                room.receive_relayed_presence(_Relay(instance), body, generation)
            except PalimpsestError as e:
                log.error("fan-out: bad presence from %s on %s: %s", instance, doc, e)
            return
        if body:
            top = max(e.seq for e in body)
            if top > self._delivered.get(doc, 0):
                self._delivered[doc] = top
        with contextlib.suppress(StoreError):  # the room is being reloaded: it reads the log
            # (the room drops events of another document of the name: its generation)
            room.receive_peer_events(body, generation=generation, sender=instance)

    def _foreign(self, other: str, doc: str) -> None:
        """A message of another deployment: dropped, counted, and said once per
        deployment. The first one of a deployment also has the store's identity read
        again: a store moved to another cluster under running processes (a switchover
        by logical replication) has a new one, which the processes started since name,
        and this process takes it (else the two halves would drop each other's
        messages until this one restarts)."""
        self.foreign += 1
        if other in self.foreign_deployments or len(self.foreign_deployments) >= FOREIGN_MAX:
            return
        self.foreign_deployments.add(other)
        task = asyncio.create_task(self._foreign_seen(other, doc))
        self._heals.add(task)
        task.add_done_callback(self._heals.discard)

    async def _foreign_seen(self, other: str, doc: str) -> None:
        now = await store_deployment(self.backend.store)
        if now is not None and now != self.deployment:
            log.warning("fan-out: the store's identity changed (deployment %s, was %s: "
                        "moved to another database cluster?); this process's messages "
                        "name the new one from now on", now, self.deployment)  # fmt: skip
            self._set_deployment(now)
            if now == other:
                return
        log.warning(
            "fan-out: messages of ANOTHER DEPLOYMENT (%s, another store than this one's, "
            "%s; first on %r) arrive on this bus (%s, channels %s:*) and are dropped: "
            "Redis pub/sub ignores the database number, so deployments on one Redis "
            "must differ in ?prefix= (docs/scaleout.md). Counted in "
            "palimpsest_fanout_foreign_messages_total; said once per deployment",
            other, self.deployment, doc, without_password(self.redis_url), self.prefix,
        )  # fmt: skip

    def _header(
        self,
        channel: str,
        data: bytes,
        *fields: str,
        valid: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any] | None:
        """The JSON header of a deletion, purge or revocation (after its first byte) from
        another process, counted as received; None for a malformed one, said (not JSON,
        without ``i`` or one of `fields`, or not `valid`), and for one of this process's
        own (done here before it was published)."""
        try:
            head: dict[str, Any] = json.loads(data[1 : data.index(b"\n")])
            instance = str(head["i"])
            for field in fields:
                head[field]  # KeyError when missing
            if valid is not None and not valid(head):
                raise ValueError(f"not a message of this channel: {data[:80]!r}")
        except (ValueError, KeyError, TypeError) as e:
            log.error("fan-out: malformed message on %s: %s", channel, e)
            return None
        if instance == self.instance:
            return None
        self.received += 1
        return head

    def _deleted(self, channel: str, doc: str, data: bytes) -> None:
        head = self._header(channel, data, "by")
        if head is None:
            return
        log.info("fan-out: %s was deleted by %s (on %s)", doc, head["by"], head["i"])
        room = self.backend.rooms.get_loaded(doc)
        task = asyncio.create_task(self._deleted_here(doc, room))
        self._heals.add(task)
        task.add_done_callback(self._heals.discard)

    async def _deleted_here(self, doc: str, room: Room | None) -> None:
        """Drop what this process holds of `doc`, deleted elsewhere; unless its room's
        document is still the name's (its generation): the message came late (held on
        a stalled link to Redis), and it is about a document deleted before the room's
        was written under the name. A message says no generation (the process that
        deleted may not hold the document), the store does: the deletion is in it
        before its message is sent. Unread (the store down, a room with no generation
        known), the room is dropped, as before."""
        if room is not None and room.generation is not None:
            try:
                info = await self.backend.store.doc_info(doc)
            except StoreError:
                info = None
            if info is not None and info.generation == room.generation:
                log.info("fan-out: the deletion of %s is of an earlier document of the name "
                         "than its room's (generation %d, still the name's): the room stays",
                         doc, room.generation)  # fmt: skip
                return
        await deleted_elsewhere(self.backend, doc, deleted_reason(doc))

    def _purged(self, channel: str, doc: str, data: bytes) -> None:
        if self._header(channel, data) is None:
            return
        task = asyncio.create_task(self._reload(doc))
        self._heals.add(task)
        task.add_done_callback(self._heals.discard)

    async def _reload(self, doc: str) -> None:
        await erasure.reload_room(self.backend, doc)

    def _revoked(self, channel: str, data: bytes) -> None:
        def valid(head: dict[str, Any]) -> bool:
            since = head["since"]
            return data[:1] == b"R" and (since is None or type(since) is int)

        head = self._header(channel, data, "user", "since", valid=valid)
        if head is None:
            return
        revocation = self.backend.extension(Revocation)
        if revocation is not None:
            revocation.apply(str(head["user"]), head["since"])

    def _disconnect(self, channel: str, data: bytes) -> None:
        def valid(head: dict[str, Any]) -> bool:
            user, doc, code = head["user"], head["doc"], head["code"]
            return (
                data[:1] == b"X"
                and (user is None or isinstance(user, str))
                and (doc is None or isinstance(doc, str))
                and (user is not None or doc is not None)
                and type(code) is int
                and 4000 <= code <= 4999
                and isinstance(head["reason"], str)
            )

        head = self._header(channel, data, "user", "doc", "code", "reason", valid=valid)
        if head is not None:
            self.backend.close_connections(head["user"], head["doc"], head["code"], head["reason"])

    def _drop_replaced(self, doc: str, room: Room) -> None:
        task = asyncio.create_task(replaced_elsewhere(self.backend, doc, room))
        self._heals.add(task)
        task.add_done_callback(self._heals.discard)

    def _drop_gone(self, room: Room) -> None:
        """The room's log went back: replaced (4409) or deleted (4404)."""

        async def drop() -> None:
            try:
                replaced = await was_replaced(self.backend.store, room)
            except StoreError:
                replaced = False
            if replaced:
                await replaced_elsewhere(self.backend, room.name, room)
            else:
                await deleted_elsewhere(self.backend, room.name, deleted_reason(room.name))

        task = asyncio.create_task(drop())
        self._heals.add(task)
        task.add_done_callback(self._heals.discard)

    # --- healing from the log ---------------------------------------------------------------

    async def heal(self, room: Room, healed: list[tuple[str, int]] | None = None) -> int:
        """Hand the room whatever the store has beyond its seq; returns how many events.
        Those of another document of the name (another generation: copy --replace wrote
        a longer log under the room) are not applied: the room is dropped (4409).
        `healed`: the check or the pass over every room this is one of, told (document,
        events) instead of a line at INFO (said at DEBUG; the caller says them all in one
        line, _said_healed: after a Redis outage, one line per document per check was
        hundreds)."""
        if room.generation is not None and await was_replaced(self.backend.store, room):
            log.info("fan-out: %s was replaced in the store; dropping its room", room.name)
            self._drop_replaced(room.name, room)
            return 0
        events = await self.backend.store.read(room.name, after=room.seq)
        events = [e for e in events if e.seq > room.seq]
        if events and room.generation is not None:
            # read after the events: a generation is never given twice, so one that is
            # still the room's now was the room's when they were read. Another (the
            # document deleted, its message lost, and its name written again past the
            # room's seq) was applied to the old document and sent to its clients,
            # before Deletion.suspect dropped the room
            info = await self.backend.store.doc_info(room.name)
            if info is None or info.generation != room.generation:
                log.info("fan-out: %s holds another document than its room's (generation "
                         "%s, the room's %s); dropping the room, nothing of it applied",
                         room.name, info.generation if info else None,
                         room.generation)  # fmt: skip
                self._drop_gone(room)
                return 0
        if events:
            (log.info if healed is None else log.debug)(
                "fan-out: %s behind the log by %d events; applying them from the store",
                room.name, len(events), extra={"doc": room.name},
            )  # fmt: skip
            if healed is not None:
                healed.append((room.name, len(events)))
            with contextlib.suppress(StoreError):
                room.receive_peer_events(events, from_store=True)  # counted as applied
            # messages were lost: a deletion's too, perhaps (its tombstone tells)
            deletion = self.backend.extension(Deletion)
            if deletion is not None:
                deletion.suspect(room)
        return len(events)

    async def heal_all(self) -> None:
        healed: list[tuple[str, int]] = []
        failed: list[str] = []
        error: StoreError | None = None
        for room in list(self.backend.rooms.loaded.values()):
            try:
                await self.heal(room, healed)
            except StoreError as e:
                failed.append(room.name)
                error = e
                log.debug("fan-out: cannot heal %s now: %s", room.name, e)
        _said_healed(healed)
        if failed:
            log.warning("fan-out: cannot heal %d documents now (%s): %s", len(failed),
                        _some(failed), error)  # fmt: skip

    async def on_load(self, room: Room) -> None:
        """A message published while the room loaded may have been missed."""
        task = asyncio.create_task(self._heal_quietly(room))
        self._heals.add(task)
        task.add_done_callback(self._heals.discard)

    async def _heal_quietly(self, room: Room) -> None:
        try:
            await self.heal(room)
        except StoreError as e:
            log.warning("fan-out: cannot heal %s now: %s", room.name, e)

    async def _checker(self) -> None:
        failed = 0  # checks failed in a row (their line is rate-limited: the filter above)
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                await self.check_gaps()
            except StoreError as e:
                failed += 1
                log.warning("fan-out gap check failed: %s", e)
                continue
            if failed:
                log.info("fan-out gap check works again after %d failed checks", failed)
                failed = 0

    def behind(self) -> int:
        """Events the store had, at the last gap check, that loaded rooms had not applied."""
        rooms = self.backend.rooms.loaded
        return sum(
            max(0, head - rooms[name].seq) for name, head in self._behind.items() if name in rooms
        )

    def _healed_behind(self, doc: str, seq: int) -> None:
        """A gap check healed `doc`'s room from the store, behind a head (`seq`) seen one
        check before. The bus may have brought those events already (queued in the room,
        behind a commit or a read) or bring them late: only when it has not brought them
        within the grace is it a miss (_check_late)."""
        since = self._subscribed_at
        if since is None or self._delivered.get(doc, 0) >= seq:
            return
        grace = max(UNDELIVERED_GRACE_CHECKS * self.check_seconds, UNDELIVERED_GRACE_MIN)
        now = time.monotonic()
        self._late.append((now + grace, doc, seq, since, now - since))

    def _check_late(self) -> None:
        """Rooms healed a grace ago whose events the bus has not brought since, with the
        subscription up throughout: misses (_missed). Brought late, or the subscription
        gone meanwhile (a reconnect: what it missed is expected), they are forgotten."""
        now, late = time.monotonic(), self._late
        while late and late[0][0] <= now:
            _, doc, seq, since, subscribed_for = late.popleft()
            if self._delivered.get(doc, 0) < seq and since == self._subscribed_at:
                self._missed(subscribed_for)

    def _missed(self, subscribed_for: float) -> None:
        """A gap check found events the bus never delivered. Now and then a message is
        lost (Redis restarted under a publisher); again and again, with the subscription
        up throughout, means the processes on this store do not share a bus: another
        Redis, or another prefix. Their users see each other's edits only as the gap
        check heals them, seconds late. The serving lock lets them start (each has a
        bus), so this is where it shows. Or another process cannot publish (its own log
        says so): while this one could not either lately, Redis is in trouble, already
        said, and no configuration is to blame."""
        now = time.monotonic()
        if subscribed_for < 2 * self.check_seconds:
            return  # the subscription is new: what it missed is expected
        if now - self._publish_failed_at < UNDELIVERED_WINDOW:
            return
        self._undelivered.append(now)
        recent = [t for t in self._undelivered if now - t < UNDELIVERED_WINDOW]
        if len(recent) >= UNDELIVERED_WARN and now - self._undelivered_logged >= UNDELIVERED_WINDOW:
            self._undelivered_logged = now
            log.warning(
                "fan-out: %d times in the last %d s a room here was behind the store by "
                "events the bus never delivered, with Redis subscribed throughout: does every "
                "server on this store use the same --fanout URL and prefix (this one: %s, "
                "prefix %r), and can each publish to it (one that cannot logs \"fan-out "
                "cannot publish\", or that its Redis \"is a replica\")? docs/scaleout.md",
                len(recent), UNDELIVERED_WINDOW, without_password(self.redis_url), self.prefix,
            )  # fmt: skip

    async def check_gaps(self) -> None:
        """Heal rooms that are still behind a head seen one check ago (the delay lets
        this process's own commits in flight land first)."""
        rooms = self.backend.rooms.loaded
        self._check_late()
        for gone in [d for d in self._delivered if d not in rooms]:
            del self._delivered[gone]
        if not rooms:
            self._behind.clear()
            return
        # seqs before the heads are read: a commit landing meanwhile is not a deletion
        seqs = {name: room.seq for name, room in rooms.items()}
        heads = await self.backend.store.heads(list(rooms))
        behind: dict[str, int] = {}
        healed: list[tuple[str, int]] = []  # (said in one line, after the pass)
        try:
            for name, room in rooms.items():
                if heads.get(name, 0) < seqs[name]:
                    # only a deletion takes a head back, its message lost, or a replace
                    # (copy --replace: a shorter log of another document)
                    self._drop_gone(room)
                    continue
                seen = self._behind.get(name)
                if seen is not None and room.seq < seen and await self.heal(room, healed):
                    self._healed_behind(name, seen)
                if heads.get(name, 0) > room.seq:
                    behind[name] = heads[name]
        finally:
            _said_healed(healed)
        self._behind = behind


#: documents a line that stands for many names (the others are counted)
SOME = 5


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:SOME])
    return shown + (f" and {len(names) - SOME} more" if len(names) > SOME else "")


def _said_healed(healed: list[tuple[str, int]]) -> None:
    """One line for the documents a gap check (or a pass over every room) applied
    events to from the store: how many, how many events, the most behind by name (each
    document's own line is at DEBUG)."""
    if not healed:
        return
    most = sorted(healed, key=lambda h: -h[1])
    events = sum(n for _, n in healed)
    log.info(
        "fan-out: %d document%s behind the log by %d events in all (%s); applied them from "
        "the store (each document's line at DEBUG)",
        len(healed), "" if len(healed) == 1 else "s", events,
        _some([f"{doc} {n}" for doc, n in most]),
        extra={"doc": most[0][0]} if len(healed) == 1 else None,
    )  # fmt: skip
