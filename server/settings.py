"""Configuration: defaults, overridden by PALIMPSEST_* environment variables, then flags."""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit


def _env(name: str) -> str | None:
    return os.environ.get("PALIMPSEST_" + name.upper())


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    #: SQLite file (the embedded default); ignored when `store` is set
    db: str = "palimpsest.db"
    #: store URL: sqlite:///path, postgresql://..., memory://
    store: str | None = None
    #: what a commit survives before an edit is broadcast: "fsync" (a power cut; the
    #: default) or "os" (the process being killed, not the machine going down)
    durability: str = "fsync"
    #: SQLite with durability fsync: while edits come in, an fdatasync of the database
    #: file every so many ms without a commit keeps the disk's I/O path warm, so that the
    #: next lone edit's commit does not pay for waking it (docs/durability.md); 0 = off,
    #: else at least WARM_DISK_MS_LEAST
    warm_disk_ms: float = 2.0
    #: PostgreSQL: the most connections of each of a process's two pools (its main one,
    #: and the one that holds documents' turns on server changes); with the serving
    #: lock's and the index builder's a process opens up to 2 × this + 2
    pg_pool_size: int = 10
    #: PostgreSQL: seconds a statement may take before asyncpg gives it up (and cancels
    #: it, which it waits for as long again at most)
    pg_command_timeout: float = 30.0
    #: `palimpsest serve`'s event loop: "uvloop" (libuv, the default where it is
    #: installed) or "asyncio" (the standard library's)
    event_loop: str = "uvloop"
    #: the path prefix a reverse proxy serves this server under ("/collab" for nginx's
    #: `location /collab/ { proxy_pass http://127.0.0.1:8000/; }`), which it strips from
    #: the requests it passes on; the page's URLs are made under it. "" = served at /
    root_path: str = ""
    #: fan-out bus URL (redis://...); none = single process
    fanout: str | None = None
    #: HS256 secret; none = open development mode. Several, comma-separated, while keys
    #: rotate: each ``KID:SECRET`` or ``SECRET``, the current one first (auth.tokens)
    jwt_secret: str | None = None
    #: PEM public key file for RS256/ES256 tokens; several, comma-separated, each
    #: ``KID:PATH`` or ``PATH``
    jwt_public_key: str | None = None
    #: an identity provider's JWKS URL (its OpenID ``jwks_uri``): its RS256/ES256 keys,
    #: fetched at start (a start that cannot fails), again every
    #: jwt_jwks_refresh_seconds, and when a token names a kid the server lacks (at most
    #: once per jwt_jwks_unknown_kid_seconds); server.auth.jwks
    jwt_jwks_url: str | None = None
    #: seconds between fetches of the JWKS; 0 = only at start and on an unknown kid
    jwt_jwks_refresh_seconds: float = 600.0
    #: seconds one fetch of the JWKS may take in all (a provider that trickles its answer
    #: is given up past it, the fetch failed); below hook_timeout_seconds, which a token
    #: waiting for the fetch of a new kid is under
    jwt_jwks_fetch_seconds: float = 5.0
    #: the fewest seconds between two fetches of the JWKS made because a token named a
    #: kid the server lacks (tokens with made-up kids cost the provider one request per
    #: this many seconds; one with a key published meanwhile is refused until it is
    #: past); 0 = a fetch for each such token (those arriving during one wait for it);
    #: at most MAX_UNKNOWN_KID_SECONDS
    jwt_jwks_unknown_kid_seconds: float = 30.0
    #: when set, every token must carry an ``aud`` claim naming one of these (comma-
    #: separated) / an ``iss`` claim that is one of these; none = not checked
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    max_frame_bytes: int = 8 * 1024 * 1024
    max_doc_bytes: int = 64 * 1024 * 1024
    #: what all connections together may hold of the update frames that are over
    #: max_frame_bytes while they arrive (such a frame may be as large as the document:
    #: limits.frame_limit); past it (or max_doc_bytes, if larger) the connection whose
    #: frame would go over is closed with 1013 (try again later) before more is read
    max_large_frames_bytes: int = 256 * 1024 * 1024
    #: new Yjs client ids (none of whose items the document holds yet) one update of a
    #: writer may bring; past it the update is refused (4400) before it is read further.
    #: Not for a sync step 2 into a document that holds nothing yet (a whole document
    #: brought back into a fresh database). 0 = unlimited
    max_new_clients_per_update: int = 1024
    #: what one presence (awareness) update may change; the states of others it sends
    #: back unchanged (every provider echoes what it receives) are not counted
    max_awareness_bytes: int = 64 * 1024
    #: per connection, messages of every kind per second (burst = 2x); 0 = unlimited
    max_events_per_second: float = 1000.0
    max_connections_per_ip: int = 200
    #: file descriptors kept free for HTTP requests (health checks, metrics, history) and
    #: the store: a websocket that would leave fewer free is refused with 503
    #: (docs/operations.md); 0 = none kept
    fd_reserve: int = 64
    #: frames queued for one slow client before it is dropped
    send_queue_frames: int = 65536
    #: `palimpsest serve`: negotiate permessage-deflate (RFC 7692) with the websocket
    #: clients that offer it (browsers and Node's ws do; the Python client does not):
    #: every message then travels compressed, a document's first sync (one message,
    #: the whole document) too, at a cost in CPU per message sent and received and a
    #: compressor's memory per connection. Off by default: small edits gain nothing
    #: from it (docs/operations.md, "Large documents on slow links")
    ws_per_message_deflate: bool = False
    #: `palimpsest serve`'s keepalive: a ping to every websocket each ws_ping_interval
    #: seconds (0 = none), and the connection closed (1011) when its pong has not come
    #: ws_ping_timeout seconds later. A client gone without a word (a laptop closed, a
    #: route lost) is noticed within about their sum; its presence and its connection's
    #: share of the per-address limit go with it. The pong comes after whatever was
    #: sent before the ping, so a connection still making progress (the client taking
    #: the server's bytes, a large document's first sync on a slow link, or sending its
    #: own) is given the timeout again (server.keepalive, docs/operations.md)
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    # --- hostile clients (docs/security.md says which threat each one stops) ---
    #: inbound bytes per second per connection, every frame kind, plus what its undo/redo
    #: requests append (burst = 2x); 0 = unlimited
    max_bytes_per_second: float = 8 * 1024 * 1024
    #: bytes queued for one connection before it is dropped
    max_send_queue_bytes: int = 64 * 1024 * 1024
    #: answers (sync step 2, presence snapshots, extension results) queued for all the
    #: connections of one client address / one document before the one asking is dropped
    max_send_queue_bytes_per_ip: int = 256 * 1024 * 1024
    max_send_queue_bytes_per_room: int = 512 * 1024 * 1024
    #: one presence state (JSON object or null): encoded size and nesting depth
    max_awareness_state_bytes: int = 16 * 1024
    max_awareness_depth: int = 16
    #: minutes from the start during which a client's sync step 2 may carry items of
    #: other users' client ids that the store lacks (edits lost by the store: a backup
    #: restored, a crash with durability os, a database failover), so that clients'
    #: copies of them are taken back; 0 = off, the default (docs/operations.md). A
    #: backup restored with `palimpsest backup --replace` opens 60 minutes by itself
    recovering_minutes: float = 0.0
    #: presence entries (Yjs client ids) one connection / one document may hold
    max_awareness_clients_per_connection: int = 8
    max_awareness_clients_per_room: int = 1000
    #: all presence states of one document together (what a newcomer receives first)
    max_awareness_room_bytes: int = 2 * 1024 * 1024
    #: seconds a presence state lives without being renewed: then it is removed, for
    #: everyone, as y-websocket's server does (y-protocols' outdatedTimeout; clients
    #: renew theirs every 15 s)
    awareness_timeout_seconds: float = 30.0
    #: seconds a client has to send a complete HTTP request head (websocket upgrade too)
    handshake_timeout: float = 10.0
    #: seconds an extension's awaited hook (authenticate, on_connect, on_load,
    #: on_disconnect, on_deleted, on_committed) may take before it counts as failed
    hook_timeout_seconds: float = 30.0
    #: largest HTTP request head (request line + headers): tokens travel in the URL
    max_request_head_bytes: int = 64 * 1024
    #: largest HTTP request body (restore, tags)
    max_http_body_bytes: int = 1024 * 1024
    #: state-changing API requests (POST, PUT, PATCH, DELETE under /api/) per second per
    #: client address, burst = 2x; 0 = unlimited
    max_http_writes_per_second: float = 50.0
    #: Origins allowed for websockets and state-changing HTTP requests, besides the
    #: server's own and localhost ones; "*" allows every origin
    allow_origin: tuple[str, ...] = ()
    #: open mode: host names the server answers to besides loopback names, IP addresses,
    #: `host` and the hosts of allow_origin (a guard against DNS rebinding);
    #: ".example.com" = that domain and its subdomains, "*" = any
    allow_host: tuple[str, ...] = ()
    #: new documents one non-admin identity may create per hour (per process); 0 = unlimited
    max_new_docs_per_hour: int = 100
    snapshot_every: int = 1000
    #: events per sealed segment of the log (compressed off the editing path)
    segment_events: int = 1024
    snapshot_quiet_seconds: float = 10.0
    #: snapshot retention (server.retention): the newest kept, then a ladder with at most
    #: this many events between two kept ones, its bytes bounded by the last (0: unbounded)
    snapshot_keep_recent: int = 3
    snapshot_max_gap: int = 3000
    snapshot_ladder_bytes: int = 0
    unload_after_seconds: float = 5.0
    #: seconds between checks that no document with a room here was compacted by another
    #: process that could not tell this one (``palimpsest compact`` on the store, no
    #: fan-out): such a room is reloaded (server.base_watch); 0 = only its next snapshot
    #: notices
    compaction_check_seconds: float = 1.0
    #: on SIGTERM, `palimpsest serve` first answers /readyz with 503 ("draining") for this
    #: many seconds while it keeps serving (connections old and new), so that a load
    #: balancer that follows readiness stops sending clients here, then shuts down;
    #: 0 = shut down at once (docs/operations.md, "Graceful shutdown")
    drain_seconds: float = 0.0
    #: with a fan-out: seconds this process's commits may wait on the store while other
    #: processes' commits keep arriving over the fan-out (the store works for them: this
    #: process is cut off from it) before it closes its websockets with 1013 so that they
    #: reconnect to another process (server/cutoff.py); 0 = hold them as in an outage
    store_cutoff_seconds: float = 10.0
    #: seconds a starting server waits for the serving lock of its SQLite file or
    #: PostgreSQL schema while another process holds it (server/serving_lock.py), before
    #: it refuses to start: an app server's reload (gunicorn's HUP) starts the new worker
    #: while the old one still finishes; 0 = refuse at once
    lock_wait: float = 30.0
    #: memory the attribution indexes kept for blame and diffs may take, in MB, as
    #: estimated (docs/history.md); the least recently used beyond it, or beyond 8
    #: documents, are dropped (the store keeps them). 0 = bounded by the count only
    attribution_cache_mb: float = 64.0
    #: log where the event loop was whenever it was held this long (ms; a diagnostic,
    #: server/stall_watch.py); 0 = off
    stall_report_ms: float = 0.0
    undo_capture_ms: int = 500
    undo_max_depth: int = 200
    #: events in one undo step at most (typing that never pauses still makes steps)
    undo_max_group: int = 1000
    #: one step of an explicit undo group (open_group ... close_group, docs/undo.md) at
    #: most: events, and bytes of their updates (past either, the group goes on in a new
    #: step); and ms without a change or a renewal by its user after which it ends
    undo_group_max_events: int = 10_000
    undo_group_max_bytes: int = 8 * 1024 * 1024
    undo_group_idle_ms: int = 60_000
    #: roots of a document that undo, redo, revert and restore leave as they are now
    #: (comma-separated in PALIMPSEST_UNDO_SKIP_ROOTS): bookkeeping an editor keeps
    #: beside the content, not what anyone wrote. A Y.PermanentUserData's map (what
    #: y-prosemirror's attribution keeps in ``users``) is left alone without being named
    #: here (server/bookkeeping.py; docs/undo.md, "Bookkeeping roots")
    undo_skip_roots: tuple[str, ...] = ()
    #: largest number of events in one group commit
    commit_batch_max: int = 4096
    # --- the changefeed (docs/changefeed.md) ---
    #: webhook URLs that receive every event in batches (repeatable --webhook)
    webhooks: tuple[str, ...] = ()
    #: HMAC-SHA256 key that signs webhook bodies (X-Palimpsest-Signature); none = unsigned
    webhook_secret: str | None = None
    #: failed deliveries in a row before a webhook is marked failing
    webhook_max_failures: int = 10
    #: first and longest pause between retries of a failed delivery (seconds)
    webhook_retry_first: float = 0.5
    webhook_retry_max: float = 60.0
    #: events per webhook POST at most
    webhook_batch: int = 100
    #: how long a process's claim on delivering a webhook holds without renewal (another
    #: process, or this one restarted after a crash, takes over after it)
    webhook_lease_seconds: float = 10.0
    #: seconds between heartbeats of an idle SSE stream
    changefeed_heartbeat: float = 15.0
    #: SSE changefeed streams open at once from one client address (429 beyond)
    changefeed_max_streams_per_ip: int = 64
    #: seconds between reads of the store's last position (wakes followers when another
    #: writer's commit was not announced)
    changefeed_poll: float = 2.0
    log_json: bool = False
    log_level: str = "info"
    instance: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """The defaults, the PALIMPSEST_* variables over them, `overrides` (the flags,
        None where not given) over those. A variable whose setting is overridden is not
        read at all, and ``PALIMPSEST_PORT=tcp://...`` (kubernetes_link) is no port."""
        s = cls()
        for f in fields(cls):
            raw = _env(f.name)
            if raw is None or overrides.get(f.name) is not None:
                continue  # a flag wins: a variable it replaces may say anything
            if f.name == "port" and kubernetes_link(raw):
                continue
            setattr(s, f.name, _coerce(f.name, f.type, raw))
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        return s

    def check(self) -> None:
        """Raise ValueError naming the first setting that cannot work (a negative size, a
        zero frame limit, an unknown log level...) by its field and environment variable.
        ``palimpsest serve`` reports it and exits with 2; an embedding app gets it from
        ``Palimpsest(settings=...)``."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):  # inf, 1e400 or nan: no size, period or rate
                raise ValueError(f"{_name(f.name)} must be a finite number, not {value!r}")
            if value < 0 or (value == 0 and f.name in _POSITIVE):
                least = "above 0" if f.name in _POSITIVE else "0 or more"
                raise ValueError(f"{_name(f.name)} must be {least}, not {value!r}")
        if self.lock_wait > MAX_LOCK_WAIT:
            # a reload's handover lasts the old server's drain and shutdown: minutes at
            # most; a start that waits longer is a second server started by mistake,
            # waiting unseen instead of being refused
            raise ValueError(
                f"{_name('lock_wait')} must be at most {MAX_LOCK_WAIT:g} (seconds), not "
                f"{self.lock_wait!r}: long enough for a reload's handover"
            )
        if self.jwt_jwks_unknown_kid_seconds > MAX_UNKNOWN_KID_SECONDS:
            # a provider's rotation would refuse every token of its new key that long
            raise ValueError(
                f"{_name('jwt_jwks_unknown_kid_seconds')} must be at most "
                f"{MAX_UNKNOWN_KID_SECONDS:g} (seconds), not "
                f"{self.jwt_jwks_unknown_kid_seconds!r}: a token signed with a key the "
                "provider published since the last fetch is refused until it is past"
            )
        if 0 < self.warm_disk_ms < WARM_DISK_MS_LEAST:
            raise ValueError(
                f"{_name('warm_disk_ms')} must be 0 (off) or at least {WARM_DISK_MS_LEAST:g} "
                f"(ms between syncs), not {self.warm_disk_ms!r}"
            )
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ValueError(
                f"{_name('root_path')} must begin with / and not end with one (e.g. "
                f"/collab), not {self.root_path!r}"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"{_name('port')} must be a port number (0-65535), not {self.port}")
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if (str(value).lower() if name == "log_level" else value) not in allowed:
                raise ValueError(
                    f"{_name(name)} must be one of {', '.join(allowed)}, not {value!r}"
                )
        for name, urls in (("store", (self.store,) if self.store else ()),
                           ("webhooks", self.webhooks)):  # fmt: skip
            for url in urls:
                # (a PostgreSQL URL may name several host:port, which urlsplit does
                # not read as a port: only a webhook's port is checked)
                why = _unreadable_url(url, port=name == "webhooks")
                if why:  # (the URL is not shown: it may hold a password)
                    raise ValueError(f"{_name(name)}: a URL that cannot be read: {why}")
        for origin in self.allow_origin:
            # an origin is scheme://host[:port]: a bare name or a path would never match
            # a browser's Origin, and every page of it would be refused without a word
            parts = urlsplit(origin.strip())
            if origin.strip() not in ("*", "null") and (
                parts.scheme.lower() not in ("http", "https")
                or not parts.hostname
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"{_name('allow_origin')}: {origin!r} is not an origin: write it as a "
                    "browser sends it, scheme://host[:port] (e.g. https://app.example.com)"
                )
        for name in ("jwt_audience", "jwt_issuer"):
            if getattr(self, name) and not self.signed_tokens:
                raise ValueError(
                    f"{_name(name)} checks signed tokens: it needs a JWT secret, public key "
                    "or JWKS URL (without one the server runs open, and would check nothing)"
                )
        if self.jwt_jwks_url:
            parts = urlsplit(self.jwt_jwks_url.strip())
            why = _unreadable_url(self.jwt_jwks_url)
            if why or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"{_name('jwt_jwks_url')} must be an http(s) URL of a JWKS (e.g. "
                    "https://idp.example.com/realms/acme/protocol/openid-connect/certs)"
                    + (f": {why}" if why else "")
                )
            if self.jwt_jwks_fetch_seconds >= self.hook_timeout_seconds:
                # a token naming a new kid waits for the fetch under the hook's timeout:
                # past it, the request fails as a 500 instead of a 401 saying why
                raise ValueError(
                    f"{_name('jwt_jwks_fetch_seconds')} ({self.jwt_jwks_fetch_seconds:g}) must "
                    f"be below {_name('hook_timeout_seconds')} ({self.hook_timeout_seconds:g})"
                )
        if self.fanout:
            # a URL Redis does not take, or a gap-check period of 0 (a busy loop), would
            # otherwise fail only once the store is open, or never
            from .fanout import parse_url

            parse_url(self.fanout, _name("fanout"))

    @property
    def signed_tokens(self) -> bool:
        """Whether tokens are required (a secret, a public key or a JWKS URL is set);
        otherwise the server runs open."""
        return bool(self.jwt_secret or self.jwt_public_key or self.jwt_jwks_url)

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.db}"


#: settings that cannot be 0: nothing would fit, nothing would ever be done, or every
#: wait would end at once (the others are 0 or more; where 0 means "off" or
#: "unlimited", the field's comment says so)
#: the longest lock_wait: an hour (a reload's handover takes the old server's drain
#: and shutdown, seconds to minutes)
MAX_LOCK_WAIT = 3600.0
#: the longest jwt_jwks_unknown_kid_seconds: an hour (a provider that rotates and signs
#: with its new key at once has its users refused for up to that long)
MAX_UNKNOWN_KID_SECONDS = 3600.0

_POSITIVE = frozenset(
    {
        "max_frame_bytes", "max_doc_bytes", "max_large_frames_bytes", "max_awareness_bytes",
        "max_connections_per_ip", "pg_pool_size", "pg_command_timeout",
        "send_queue_frames", "max_send_queue_bytes", "max_send_queue_bytes_per_ip",
        "max_send_queue_bytes_per_room", "max_awareness_state_bytes", "max_awareness_depth",
        "max_awareness_clients_per_connection", "max_awareness_clients_per_room",
        "max_awareness_room_bytes", "awareness_timeout_seconds", "handshake_timeout",
        "hook_timeout_seconds", "max_request_head_bytes", "jwt_jwks_fetch_seconds",
        "max_http_body_bytes", "snapshot_every", "segment_events", "undo_max_depth",
        "undo_max_group", "undo_group_max_events", "undo_group_max_bytes",
        "undo_group_idle_ms", "commit_batch_max", "webhook_max_failures", "webhook_retry_first",
        "webhook_retry_max", "webhook_batch", "webhook_lease_seconds",
        "changefeed_heartbeat", "changefeed_max_streams_per_ip", "changefeed_poll",
        "ws_ping_timeout",
    }
)  # fmt: skip
#: the shortest period of the disk warmer, in ms: shorter ones only burn a core on syncs
#: (1 ms was already slower than 2 ms: docs/durability.md)
WARM_DISK_MS_LEAST = 1.0
#: settings with a fixed set of values, as they are used (the log level in any case)
_CHOICES = {
    "durability": ("fsync", "os"),
    "event_loop": ("uvloop", "asyncio"),
    "log_level": ("debug", "info", "warning", "error", "critical"),
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


#: PALIMPSEST_* names read elsewhere than here: the client commands' (URL, USER, TOKEN,
#: TRACES), the page's directory (STATIC), and the project's scripts and tests
OTHER_ENV = frozenset(
    {
        "PALIMPSEST_URL", "PALIMPSEST_USER", "PALIMPSEST_TOKEN", "PALIMPSEST_TRACES",
        "PALIMPSEST_STATIC", "PALIMPSEST_BIN", "PALIMPSEST_CHROMIUM", "PALIMPSEST_SCREENSHOTS",
        "PALIMPSEST_Y_WEBSOCKET",
    }
)  # fmt: skip
_OTHER_ENV_PREFIXES = ("PALIMPSEST_TEST_", "PALIMPSEST_BENCH_")
#: the settings without which the server runs open to everyone
AUTH_ENV = frozenset(
    {"PALIMPSEST_JWT_SECRET", "PALIMPSEST_JWT_PUBLIC_KEY", "PALIMPSEST_JWT_JWKS_URL"}
)


#: the variables Kubernetes sets in every pod of a namespace with a Service named
#: "palimpsest" (PALIMPSEST_SERVICE_HOST, PALIMPSEST_PORT_8000_TCP_ADDR...), and docker's
#: --link to a container of that name or alias (the same PALIMPSEST_PORT_*, with
#: PALIMPSEST_NAME=/app/palimpsest and PALIMPSEST_ENV_<its environment>): not ours
_LINK_NAMES = re.compile(
    r"PALIMPSEST_SERVICE_(HOST|PORT)(_\w+)?|PALIMPSEST_PORT_\d+_(TCP|UDP|SCTP)(_\w+)?"
    r"|PALIMPSEST_ENV_\w+"
)


def kubernetes_link(value: str) -> bool:
    """Whether a PALIMPSEST_PORT value is the service link Kubernetes sets for a Service
    named "palimpsest" (``tcp://10.0.0.5:8000``, as docker's --link does), not a port."""
    return re.fullmatch(r"(tcp|udp|sctp)://.+", value.strip().lower()) is not None


def unknown_env(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The PALIMPSEST_* variables of `environ` that nothing reads (a typo is otherwise
    ignored without a word), each with the known name closest to it, if any is close."""
    known = sorted({_env_name(f.name) for f in fields(Settings)} | OTHER_ENV)
    out: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        if not name.startswith("PALIMPSEST_") or name in known:
            continue
        if name.startswith(_OTHER_ENV_PREFIXES) or _LINK_NAMES.fullmatch(name):
            continue
        if name == "PALIMPSEST_NAME" and environ[name].startswith("/"):  # docker's link
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        out.append((name, close[0] if close else None))
    return out


def _unreadable_url(url: str, port: bool = True) -> str:
    """Why `url` cannot be split into its parts (said in words: it is not quoted, as it
    may hold a password), or "" when it can."""
    try:
        parts = urlsplit(url)
    except ValueError:  # urlsplit's "Invalid IPv6 URL"
        return "a [ without its ] (an IPv6 address is written [::1])"
    try:
        if port:
            _ = parts.port
    except ValueError:
        return "its port is not a number from 0 to 65535"
    return ""


def _name(field_name: str) -> str:
    """The field as an embedding app sets it, and the environment variable (each of
    `serve`'s flags is the field's name with dashes)."""
    return f"{field_name} (PALIMPSEST_{field_name.upper()})"


def _env_name(field_name: str) -> str:
    return "PALIMPSEST_" + field_name.upper()


def _coerce(name: str, typ: Any, raw: str) -> Any:
    t = str(typ)
    try:
        if t.startswith("int"):
            return int(raw)
        if t.startswith("float"):
            return float(raw)
    except ValueError:
        kind = "an integer" if t.startswith("int") else "a number"
        raise ValueError(f"{_env_name(name)}={raw!r} is not {kind}") from None
    if t.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if t.startswith("bool"):
        if raw.strip().lower() not in _TRUE + _FALSE:
            raise ValueError(
                f"{_env_name(name)}={raw!r} is not one of {', '.join(_TRUE + _FALSE[:-1])}"
            )
        return raw.strip().lower() in _TRUE
    return raw
