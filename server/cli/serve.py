"""`palimpsest serve`: run the server under uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import logs
from ..logs import JSONFormatter
from ..out_of_memory import OUT_OF_MEMORY, OutOfMemory
from ..store import sqlite_path
from ..util import without_password
from . import add_store_options, settings_from, setup_logging

log = logging.getLogger("palimpsest")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the server", description="Run the Palimpsest server.")
    p.add_argument("--host", help="address to listen on (env PALIMPSEST_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (env PALIMPSEST_PORT; default 8000)")
    add_store_options(p)
    p.add_argument(
        "--durability", choices=("fsync", "os"),
        help="what a commit survives before anyone sees the edit: fsync = a power cut "
        "(default), os = the process being killed, not the machine going down "
        "(env PALIMPSEST_DURABILITY; docs/durability.md)",
    )  # fmt: skip
    p.add_argument(
        "--warm-disk-ms", type=float, metavar="MS",
        help="SQLite, durability fsync: while edits come in, fdatasync the database file "
        "every MS ms without a commit, so a lone edit's commit finds the disk awake; 0 = "
        "off (env PALIMPSEST_WARM_DISK_MS; default 2; docs/durability.md)",
    )  # fmt: skip
    p.add_argument(
        "--event-loop", choices=("uvloop", "asyncio"),
        help="uvloop (default, where installed) or the standard library's asyncio loop "
        "(env PALIMPSEST_EVENT_LOOP)",
    )  # fmt: skip
    p.add_argument(
        "--recovering", type=float, metavar="MINUTES",
        help="for MINUTES after the start, take back from clients the edits the store "
        "lost, other users' included (after a database failover, a crash with "
        "durability os, or a backup restored to a new path or machine; a backup restored "
        "with `backup --replace` opens an hour by itself) (env "
        "PALIMPSEST_RECOVERING_MINUTES; default 0: off; docs/operations.md)",
    )  # fmt: skip
    p.add_argument(
        "--root-path", metavar="PREFIX",
        help="the path a reverse proxy serves this server under, e.g. /collab (it strips it "
        "from the requests it passes on; env PALIMPSEST_ROOT_PATH; docs/operations.md)",
    )  # fmt: skip
    p.add_argument(
        "--drain-seconds", type=float, metavar="S",
        help="on SIGTERM, answer /readyz with 503 for S seconds while serving on, so that a "
        "load balancer following readiness sends clients elsewhere, then shut down (env "
        "PALIMPSEST_DRAIN_SECONDS; default 0: at once; docs/operations.md)",
    )  # fmt: skip
    p.add_argument(
        "--lock-wait", type=float, metavar="S",
        help="when another server holds the database's serving lock, wait up to S seconds "
        "for it (a reload's handover) before refusing to start (env PALIMPSEST_LOCK_WAIT; "
        "default 30, at most 3600; 0: refuse at once); SIGTERM ends the wait",
    )  # fmt: skip
    p.add_argument("--fanout", help="redis://… to run several processes (env PALIMPSEST_FANOUT)")
    p.add_argument(
        "--jwt-secret",
        help="HS256 secret, or several comma-separated while keys rotate, each KID:SECRET "
        "or SECRET, the current one first; none = open mode (env PALIMPSEST_JWT_SECRET)",
    )
    p.add_argument(
        "--jwt-public-key",
        help="PEM file for RS256/ES256 tokens, or several comma-separated, each KID:PATH "
        "or PATH (env PALIMPSEST_JWT_PUBLIC_KEY)",
    )
    p.add_argument(
        "--jwt-jwks-url", metavar="URL",
        help="an identity provider's JWKS URL (its jwks_uri): its RS256/ES256 keys, fetched "
        "at start and kept up to date as it rotates them (env PALIMPSEST_JWT_JWKS_URL; "
        "docs/security.md)",
    )  # fmt: skip
    p.add_argument(
        "--jwt-jwks-refresh-seconds", type=float, metavar="S",
        help="seconds between fetches of the JWKS (env PALIMPSEST_JWT_JWKS_REFRESH_SECONDS; "
        "default 600; 0 = only at start and when a token names an unknown kid)",
    )  # fmt: skip
    p.add_argument(
        "--jwt-jwks-fetch-seconds", type=float, metavar="S",
        help="seconds one fetch of the JWKS may take in all, a provider that trickles its "
        "answer given up past it (env PALIMPSEST_JWT_JWKS_FETCH_SECONDS; default 5; below "
        "the hook timeout)",
    )  # fmt: skip
    p.add_argument(
        "--jwt-jwks-unknown-kid-seconds", type=float, metavar="S",
        help="the fewest seconds between two fetches of the JWKS for tokens naming a kid "
        "the server lacks (env PALIMPSEST_JWT_JWKS_UNKNOWN_KID_SECONDS; default 30; 0 = a "
        "fetch for each; at most 3600)",
    )  # fmt: skip
    p.add_argument(
        "--jwt-audience",
        help="tokens must carry an aud claim naming this (or one of several, comma-separated; "
        "env PALIMPSEST_JWT_AUDIENCE); default: aud not checked",
    )
    p.add_argument(
        "--jwt-issuer",
        help="tokens must carry this iss claim (or one of several, comma-separated; env "
        "PALIMPSEST_JWT_ISSUER); default: iss not checked",
    )
    p.add_argument("--snapshot-every", type=int, help="events between snapshots (default 1000)")
    p.add_argument("--max-frame-bytes", type=int, help="largest frame accepted (default 8 MiB)")
    p.add_argument(
        "--allow-origin", action="append", metavar="ORIGIN",
        help="a browser origin allowed to open websockets and POST (repeatable; besides the "
        "server's own and localhost; env PALIMPSEST_ALLOW_ORIGIN, comma-separated)",
    )  # fmt: skip
    p.add_argument(
        "--allow-host", action="append", metavar="NAME",
        help="open mode: a host name the server answers to, besides loopback names, IP "
        "addresses, --host and the hosts of --allow-origin (a guard against DNS "
        "rebinding; repeatable; .example.com = the domain and its subdomains, * = any; "
        "env PALIMPSEST_ALLOW_HOST, comma-separated)",
    )  # fmt: skip
    p.add_argument(
        "--webhook", action="append", metavar="URL",
        help="POST every event, in batches, to this URL (repeatable; env PALIMPSEST_WEBHOOKS, "
        "comma-separated; see docs/changefeed.md)",
    )  # fmt: skip
    p.add_argument(
        "--webhook-secret", help="sign webhook bodies with HMAC-SHA256 (X-Palimpsest-Signature)"
    )
    p.add_argument(
        "--webhook-max-failures", type=int,
        help="failed deliveries in a row before a webhook is marked failing (default 10)",
    )  # fmt: skip
    p.add_argument(
        "--webhook-retry-max", type=float,
        help="longest pause between retries of a failed delivery, seconds (default 60)",
    )  # fmt: skip
    p.add_argument(
        "--undo-skip-roots", action="append", metavar="ROOT",
        help="a root that undo, redo, revert and restore leave as it is now: bookkeeping "
        "beside the content (repeatable or comma-separated; env PALIMPSEST_UNDO_SKIP_ROOTS; "
        "a Y.PermanentUserData map is left alone without it; docs/undo.md)",
    )  # fmt: skip
    p.add_argument(
        "--ws-per-message-deflate", action="store_true", default=None,
        help="compress websocket messages (permessage-deflate) for the clients that offer "
        "it: a large document's first sync crosses a slow link in a fraction of the "
        "bytes, for CPU on every message (env PALIMPSEST_WS_PER_MESSAGE_DEFLATE; default "
        "off; docs/operations.md)",
    )  # fmt: skip
    p.add_argument(
        "--ws-ping-interval", type=float, metavar="S",
        help="seconds between keepalive pings on each websocket; 0 = none (env "
        "PALIMPSEST_WS_PING_INTERVAL; default 20)",
    )  # fmt: skip
    p.add_argument(
        "--ws-ping-timeout", type=float, metavar="S",
        help="seconds a websocket's pong may take before the connection is closed (1011), "
        "given again while the client takes the server's bytes or sends its own (a large "
        "first sync on a slow link): a dead connection is noticed within about interval + "
        "timeout (env PALIMPSEST_WS_PING_TIMEOUT; default 20, above 0; docs/operations.md)",
    )  # fmt: skip
    p.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    p.add_argument("--log-level", help="debug, info, warning, error (default info)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..app import create_app
    from ..auth.tokens import auth_banner
    from ..descriptors import DescriptorGate
    from ..handshake import uvicorn_options
    from ..limits import Limits
    from ..serving_lock import StoppedWaiting

    try:
        settings = settings_from(
            args,
            host=args.host,
            port=args.port,
            fanout=args.fanout,
            root_path=args.root_path,
            drain_seconds=args.drain_seconds,
            lock_wait=args.lock_wait,
            durability=args.durability,
            recovering_minutes=args.recovering,
            warm_disk_ms=args.warm_disk_ms,
            event_loop=args.event_loop,
            jwt_secret=args.jwt_secret,
            jwt_public_key=args.jwt_public_key,
            jwt_jwks_url=args.jwt_jwks_url,
            jwt_jwks_refresh_seconds=args.jwt_jwks_refresh_seconds,
            jwt_jwks_fetch_seconds=args.jwt_jwks_fetch_seconds,
            jwt_jwks_unknown_kid_seconds=args.jwt_jwks_unknown_kid_seconds,
            jwt_audience=args.jwt_audience,
            jwt_issuer=args.jwt_issuer,
            snapshot_every=args.snapshot_every,
            max_frame_bytes=args.max_frame_bytes,
            allow_origin=tuple(args.allow_origin) if args.allow_origin else None,
            allow_host=tuple(args.allow_host) if args.allow_host else None,
            webhooks=tuple(args.webhook) if args.webhook else None,
            webhook_secret=args.webhook_secret,
            webhook_max_failures=args.webhook_max_failures,
            webhook_retry_max=args.webhook_retry_max,
            undo_skip_roots=_roots(args.undo_skip_roots),
            ws_per_message_deflate=args.ws_per_message_deflate,
            ws_ping_interval=args.ws_ping_interval,
            ws_ping_timeout=args.ws_ping_timeout,
            log_json=args.log_json,
            log_level=args.log_level,
        )
        settings.check()
        setup_logging(settings.log_level, settings.log_json)
        _unknown_env(settings)
        _open_files(settings.fd_reserve)
        loop = _event_loop(settings.event_loop)
        app = create_app(settings)
        app.stop_on_signals = False  # GoingAwayServer stops it (after its drain)
        app.log_startup_error = False  # said in one line by serve (_StartupFailure)
    except ValueError as e:  # what was configured cannot work: say what, start nothing
        logs.echo(f"palimpsest serve: error: {e}", sys.stderr)
        logs.flush()
        return CONFIG_ERROR
    try:
        # the address first: uvicorn binds it only after the app's start has opened the
        # store, and a start refused for a port in use left a new database behind (and
        # its lock file), which the next start took for one that existed
        sockets = _listen(settings.host, settings.port)
    except OSError as e:
        said = f"palimpsest: cannot start: {_cannot_listen(e, settings)}"
        logs.echo(_start_line(said, settings.log_json, logging.ERROR), sys.stderr)
        logs.flush()
        return STARTUP_FAILED
    where = _where(settings)
    store = f"palimpsest: store: {where}, durability {settings.durability}, loop {loop}"
    logs.echo(_start_line(store, settings.log_json), sys.stdout)
    open_mode = not settings.signed_tokens
    # loud when the server is open: the open mode's extension has logged the warning
    # already (once, where an embedding app sees it too), unless the log level hides it
    if not open_mode or not logging.getLogger("palimpsest.auth").isEnabledFor(logging.WARNING):
        level = logging.WARNING if open_mode else logging.INFO
        logs.echo(_start_line(auth_banner(settings), settings.log_json, level), sys.stderr)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="none",  # _serve runs it on the loop chosen above
        # off unless asked for (DESIGN.md: on many tiny frames Node ws's compression
        # stalls its sends); on, a large first sync crosses a slow link compressed
        ws_per_message_deflate=settings.ws_per_message_deflate,
        # the keepalive: a dead connection is noticed within about interval + timeout
        ws_ping_interval=settings.ws_ping_interval or None,  # (0: no pings)
        ws_ping_timeout=settings.ws_ping_timeout,
        log_level="warning",
        # its request lines would carry a websocket's ?token=… (docs/operations.md)
        access_log=False,
        log_config=None,  # uvicorn's own lines go through our handler (JSON with --log-json)
        lifespan="on",
        root_path=settings.root_path,  # the ASGI root_path: the page's <base> follows it
        timeout_graceful_shutdown=10,
        **uvicorn_options(
            settings,
            app.backend.extension(Limits),
            DescriptorGate(settings.fd_reserve, app.backend.refused),
            app.backend.refused,
        ),
    )
    uv = logging.getLogger("uvicorn")
    uv.handlers[:] = logging.getLogger("palimpsest").handlers
    uv.propagate = False
    failure = _StartupFailure(app)
    logging.getLogger("uvicorn.error").addFilter(failure)
    server = _going_away_server()(config)
    failure.server = server
    _tune_gc()
    ok = _serve(server, sockets, settings.host, settings.port, loop, settings.log_json,
                app.backend.refused)  # fmt: skip
    if _OOM.where is not None:
        return OUT_OF_MEMORY
    if ok:
        return server.exit_status or 0  # (SIGQUIT: 131)
    if isinstance(app.startup_error, StoppedWaiting):
        # told to stop while it waited for the serving lock (said in the log): not a
        # start that failed, the stop of one that had served nothing yet
        return _stopped_by(server)
    said = f"palimpsest: cannot start: {failure.reason(settings)}"
    logs.echo(_start_line(said, settings.log_json, logging.ERROR), sys.stderr)
    logs.flush()
    return STARTUP_FAILED


def _roots(flags: list[str] | None) -> tuple[str, ...] | None:
    """--undo-skip-roots as given (repeated, or comma-separated as its variable is);
    None when not given: the variable, or the default, holds."""
    if not flags:
        return None
    return tuple(r.strip() for flag in flags for r in flag.split(",") if r.strip())


def _stopped_by(server: Any) -> int:
    """End the process by the signal that stopped `server` before it served, as a
    server that served ends (GoingAwayServer.capture_signals: uvicorn's way out of a
    failed start, SystemExit, skipped that); SIGQUIT, whose default action dumps core,
    as exit status 131 instead."""
    logs.flush()
    for sig in reversed(server._captured_signals):
        if sig == getattr(signal, "SIGQUIT", None):
            return 128 + int(sig)
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)
    return 0


def _open_files(reserve: int) -> None:
    """Raise the soft open-files limit to the hard one and say what it is: every
    websocket holds a descriptor, and the soft limit a shell or systemd starts a service
    with (1024) is reached long before the hard one (docs/operations.md)."""
    from ..descriptors import raise_nofile_limit

    limits = raise_nofile_limit()
    if limits is None:
        return
    before, soft, hard = limits
    raised = f" (raised from {before})" if before != soft else ""
    if soft < 0:
        log.info("open files: no limit%s", raised)
        return
    line = (f"open files: limit {soft}{raised}, hard limit {'none' if hard < 0 else hard}; "
            f"websockets are refused (503) past {soft - reserve} descriptors in use, the "
            f"last {reserve} kept for HTTP and the store")  # fmt: skip
    if soft - reserve < 4 * reserve:
        log.warning("%s: a small limit (raise LimitNOFILE= or ulimit -n)", line)
    else:
        log.info("%s", line)


def _unknown_env(settings: Any) -> None:
    """Say which PALIMPSEST_* variables nothing reads, one line each. One that looks like
    the JWT secret's or key's, while neither is set, stops the start (ValueError): the
    server would otherwise run open to everyone when its operator meant it closed."""
    from ..settings import AUTH_ENV, kubernetes_link, unknown_env

    link = os.environ.get("PALIMPSEST_PORT")
    if link is not None and kubernetes_link(link):
        log.info("PALIMPSEST_PORT=%s is the link Kubernetes sets for a Service named "
                 "palimpsest, not a port: ignored (listening on port %d)", link[:100],
                 settings.port)  # fmt: skip
    for name, close in unknown_env(os.environ):
        if (close in AUTH_ENV or "JWT" in name) and not settings.signed_tokens:
            raise ValueError(
                f"{name} is not a setting (did you mean {close or ' or '.join(sorted(AUTH_ENV))}?)"
                ", and without a JWT secret, public key or JWKS URL the server would run open to "
                "everyone: correct the name, or unset it to run in open mode"
            )
        meant = f" (did you mean {close}?)" if close else ""
        log.warning("%s is not a setting of palimpsest serve%s: ignored", name, meant)


#: exit statuses of `palimpsest serve`: what was configured cannot work (nothing was
#: started), and the server could not start (its store, its address)
CONFIG_ERROR = 2
STARTUP_FAILED = 3


class _StartupFailure(logging.Filter):
    """Why uvicorn could not start the server, said once instead of in its log lines.

    The cause users meet there is the store: the app's lifespan keeps the error;
    Starlette hands uvicorn its traceback, and uvicorn logs it. Those records are held
    back and `serve` says the cause in one line. Anything else, a bug, keeps uvicorn's
    traceback. (The address is taken before, by `_listen`.)"""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self.app = app
        self.server: Any = None  # once it has started, every record goes through

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or (self.server is not None and self.server.started):
            return True
        if self.app.startup_error is not None:
            message = str(record.msg)
            # the lifespan's traceback, then "Application startup failed. Exiting."
            return not message.startswith(("Traceback", "Application startup failed"))
        return True

    def reason(self, settings: Any) -> str:
        if self.app.startup_error is not None:
            return str(self.app.startup_error)
        return "see the errors above"


def _listen(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for `host` and `port`, one per address the name has, as asyncio's
    create_server makes them for uvicorn (SO_REUSEADDR, IPv6 sockets v6 only; an empty
    host binds every interface); uvicorn listens on them once the app has started.
    Raises the OSError of the first bind that fails, with nothing left open."""
    infos = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _cannot_listen(e: OSError, settings: Any) -> str:
    import errno

    where = f"{settings.host}:{settings.port}"
    if e.errno == errno.EADDRINUSE:
        return f"{where} is in use (another server?): stop it or choose another --port"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{settings.host} is not an address of this machine (--host)"
    if e.errno == errno.EACCES:
        return f"no permission to listen on {where} (ports below 1024 need privileges)"
    if isinstance(e, socket.gaierror):
        return f"{settings.host} is no address or host name this machine resolves (--host)"
    return f"cannot listen on {where}: {e.strerror or e}"


#: at most this long to close connections with 1001 and flush the rooms on SIGTERM
GOING_AWAY_SECONDS = 10
#: at most this long from SIGTERM to the process's exit: the flush above, then uvicorn's
#: own shutdown and the backend's stop (final snapshots, the store closed). A store that
#: does not answer would hold each of those for its own timeout (PostgreSQL: 83 s in
#: all); past this the process exits at once (FORCED_EXIT)
SHUTDOWN_SECONDS = GOING_AWAY_SECONDS + 5
#: the exit status of a shutdown cut short by SHUTDOWN_SECONDS (a second signal: 128 +
#: its number, as a shell reports a process a signal ended)
FORCED_EXIT = 1


def _where(settings: Any) -> str:
    """The store, for the start-up line. A SQLite file by its absolute path, and said to
    be new when it does not exist yet: `sqlite:///var/lib/p.db` (three slashes) is a
    path relative to the working directory, and started a new, empty database there
    without a word that it was not the one meant."""
    url = settings.store_url
    if url.startswith(("postgresql://", "postgres://")):
        return without_password(url)
    if url.startswith("memory://"):
        return "memory (nothing is kept)"
    path = sqlite_path(url)
    if path == ":memory:":
        return "SQLite in memory (nothing is kept)"
    full = Path(path).resolve()
    return f"SQLite database {full}" + ("" if full.exists() else " (new: it did not exist)")


#: the signals that stop `serve` gracefully, and those it ignores (docs/operations.md)
STOPPING_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGBREAK")
    if hasattr(signal, name)
)  # fmt: skip
IGNORED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)


def _going_away_server() -> Any:
    import uvicorn

    class GoingAwayServer(uvicorn.Server):
        """On SIGTERM/SIGINT (and SIGHUP, SIGQUIT): stop accepting, close our websockets
        with 1001 (going away, so clients reconnect elsewhere) and flush every room, THEN
        let uvicorn shut down
        (it would close them with 1012), after which the lifespan stops the backend (final
        snapshots of open rooms, the committer drained).

        All of it within SHUTDOWN_SECONDS, and a second SIGTERM/SIGINT ends it at once:
        uvicorn took a second SIGTERM for the first again, and a second Ctrl-C still
        waited for the backend to stop. Exiting then loses nothing acknowledged: an edit
        is acknowledged (broadcast) only once it is durable; what the store has not taken
        was never acknowledged, and is still on its senders, who re-send it when they
        reconnect."""

        watchdog: threading.Thread | None = None
        #: the exit status `serve` returns instead of ending by the signal (SIGQUIT)
        exit_status: int | None = None

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """uvicorn's, for more signals: SIGHUP and SIGQUIT stop the server as SIGTERM
            and SIGINT do (they killed it at once, silently: no 1001 to the clients, no
            final snapshot), SIGUSR1 and SIGUSR2 are ignored with a log line (they
            killed it too). At the end the process ends by the signal that stopped it,
            as uvicorn does (SIGTERM: 143 in a shell; SIGINT: KeyboardInterrupt, 0), but
            for SIGQUIT, whose default action dumps core: exit status 131 instead."""
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handlers = {sig: self.handle_exit for sig in STOPPING_SIGNALS}
            hup = getattr(signal, "SIGHUP", None)
            if hup is not None and signal.getsignal(hup) is signal.SIG_IGN:
                # started under nohup (or by anything that ignores SIGHUP on purpose): the
                # terminal's hangup must not stop it; taking SIGHUP over did, and the
                # exit's SIGHUP raised again was ignored (status 0)
                del handlers[hup]
                log.info("SIGHUP is ignored: the server was started with it ignored "
                         "(nohup); SIGTERM, SIGINT or SIGQUIT stop it")  # fmt: skip
            handlers.update({sig: self.handle_ignored for sig in IGNORED_SIGNALS})
            previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            for sig in reversed(self._captured_signals):
                if sig == getattr(signal, "SIGQUIT", None):
                    self.exit_status = 128 + sig
                    continue
                signal.raise_signal(sig)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:  # the operator does not want to wait (nor drain)
                _exit_now(self, f"a second {signal.Signals(sig).name}", 128 + sig)
            log.info("received %s: shutting down", signal.Signals(sig).name)
            super().handle_exit(sig, frame)
            self.watch_shutdown()

        def handle_ignored(self, sig: int, frame: Any) -> None:
            log.warning("received %s: ignored (SIGTERM, SIGINT, SIGHUP or SIGQUIT stop the "
                        "server)", signal.Signals(sig).name)  # fmt: skip

        def stop(self) -> None:
            """Stop as on SIGTERM, without the signal raised again at the end (uvicorn
            re-raises the signals it captured, and the process ends by it)."""
            self.should_exit = True
            self.watch_shutdown()

        def watch_shutdown(self) -> None:
            if self.watchdog is None:
                c = self.config
                backend = _find_backend(c.loaded_app if c.loaded else c.app)
                drain = backend.settings.drain_seconds if backend is not None else 0.0
                self.watchdog = threading.Thread(target=_watch_shutdown, args=(self, drain),
                                                 name="shutdown-watchdog", daemon=True)  # fmt: skip
                self.watchdog.start()

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            import asyncio

            app: Any = self.config.loaded_app if self.config.loaded else self.config.app
            backend = _find_backend(app)
            drain = backend.settings.drain_seconds if backend is not None else 0.0
            if backend is not None and drain > 0:
                # still listening and serving: a balancer that follows /readyz takes this
                # process out of its endpoints, and what it sends meanwhile is served
                log.info("draining: /readyz answers 503 for %g s, connections served", drain)
                backend.draining_until = time.monotonic() + drain
                await asyncio.sleep(drain)
            log.info("shutting down: no new connections; closing clients with 1001")
            for srv in self.servers:
                srv.close()
            if backend is not None:
                try:
                    # bounded: a store that hangs must not make SIGTERM hang (the rest is
                    # in the log or still on the clients, who re-send on reconnect)
                    # (not wait_for: it can lose a cancel)
                    async with asyncio.timeout(GOING_AWAY_SECONDS):
                        closed = await backend.going_away()
                    # let the close frames go out before uvicorn takes the sockets down
                    await _wait_closed(backend, closed)
                except TimeoutError:
                    log.error("flushing the rooms took over %ds; shutting down anyway",
                              GOING_AWAY_SECONDS)  # fmt: skip
                except Exception:
                    log.exception("graceful close of the connections failed")
            await super().shutdown(sockets)
            log.info("stopped")
            # uvicorn ends the process by the signal it caught, right after: what the log
            # queued goes out first, within logs.DRAIN_SECONDS (an output that takes
            # nothing, a pipe nobody reads, does not hold the exit)
            logs.flush()

    return GoingAwayServer


#: set once `serve` has finished (its loop closed): the watchdog has nothing left to bound
_SERVED = threading.Event()
#: the first MemoryError seen while serving stops the server (out_of_memory.py)
_OOM = OutOfMemory()


def _watch_shutdown(server: Any, drain: float) -> None:
    """The shutdown watchdog: a thread, so that it fires even while the event loop waits
    on a store that does not answer (or is held by one that blocks it). `drain`: the
    seconds of the drain before the shutdown proper (Settings.drain_seconds)."""
    if not _SERVED.wait(drain + SHUTDOWN_SECONDS):
        took = f"{drain:g}s of drain and {SHUTDOWN_SECONDS}s" if drain else f"{SHUTDOWN_SECONDS}s"
        status = OUT_OF_MEMORY if _OOM.where is not None else FORCED_EXIT
        _exit_now(server, f"the shutdown took over {took}", status)


def _exit_now(server: Any, why: str, status: int) -> None:
    """End the process at once, saying what is left behind: the edits the store has not
    taken (never acknowledged), and the final snapshots (a cache: the next start replays
    the log's tail instead)."""
    waiting = rooms = 0
    app: Any = server.config.loaded_app if server.config.loaded else server.config.app
    backend = _find_backend(app)
    try:
        for room in list(backend.rooms.loaded.values()) if backend is not None else []:
            if room.queued_bytes:
                waiting, rooms = waiting + room.queued_bytes, rooms + 1
    except RuntimeError:  # (read from another thread while the loop changed it)
        pass
    held = (
        f"; {waiting} bytes of edits in {rooms} document{'' if rooms == 1 else 's'} the store "
        "has not taken are left to their senders (never acknowledged: they re-send them "
        "when they reconnect; those who have left lose them)"
        if waiting
        else ""
    )
    log.error("%s: exiting now, without waiting for the store%s", why, held)
    logs.flush()  # bounded: an output that takes nothing does not hold the exit
    for handler in logging.getLogger("palimpsest").handlers:
        handler.flush()
    os._exit(status)


def _find_backend(app: Any) -> Any:
    """The Backend behind uvicorn's middleware wrappers (each keeps the next in .app)."""
    for _ in range(10):
        state = getattr(app, "state", None)
        backend = getattr(state, "backend", None) if state is not None else None
        if backend is not None:
            return backend
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


async def _wait_closed(backend: Any, closed: int, within: float = 3.0) -> None:
    import asyncio

    if not closed:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if not any(room.peers for room in backend.rooms.loaded.values()):
            return
        await asyncio.sleep(0.02)


#: the cyclic collector's youngest generation runs after this many allocations (Python's
#: default: 700). Every edit allocates dozens of containers (frames, events, ranges), so at
#: 700 the collector ran ~10 times per 1,000 edits and took 3-5 us of each edit's CPU
#: (bench/ingest_cpu.py with gc.callbacks); at 20,000, 0.4 us. Garbage in cycles (rare
#: here: reference counting frees the rest at once) waits a little longer.
GC_YOUNG_THRESHOLD = 20_000

#: how long a thread holding the GIL keeps it while another waits (Python's default: 5
#: ms). Upkeep runs on worker threads (sealing's columns, ladder differences, segment
#: decoding, the SQLite writer between statements); an edit arriving while one of them
#: computes waits up to this long for the event loop to get the interpreter back, and
#: again at each of the loop's I/O steps on its path (the socket, the commit, the send).
#: 0.25 ms: a loop waking every 0.3 ms beside a thread running Python woke 1.47 ms
#: apart (p50) at 1 ms, 0.67 ms at 0.2 ms (docs/durability.md)
SWITCH_INTERVAL = 0.00025


def _tune_gc() -> None:
    """The server process's collector, set once the app is built: the objects of the start
    (modules, settings, the app) are frozen out of every later collection, and young
    collections run less often. Only `palimpsest serve`: an embedding app keeps its own."""
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    sys.setswitchinterval(SWITCH_INTERVAL)


def _event_loop(wanted: str) -> str:
    """The event loop `serve` will run on: uvloop when asked for and importable (its
    libuv loop wakes a task in about half the time of asyncio's, which is most of what
    an edit's round trip costs besides the fsync: bench/RESULTS.md), else asyncio.
    ``wanted`` is one of the two: Settings.check refused anything else."""
    if wanted == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            log.warning("uvloop is not installed: running on asyncio's event loop")
            return "asyncio"
    return wanted


def _start_line(text: str, json_lines: bool, level: int = logging.INFO) -> str:
    """A line `serve` prints at start whatever the log level (the store, the auth mode,
    the address: what a supervisor or a script waits for): as written, or with
    --log-json a JSON log record like every other line (without the "palimpsest: ", nor
    a "WARNING: " the record's level says)."""
    if not json_lines:
        return text
    message = text.removeprefix("palimpsest: ").removeprefix("WARNING: ")
    return JSONFormatter().format(
        logging.LogRecord("palimpsest.serve", level, __file__, 0, message, None, None)
    )


def _serve(
    server: object,
    sockets: list[socket.socket],
    host: str,
    port: int,
    loop: str = "asyncio",
    json_lines: bool = False,
    refused: Any = None,
) -> bool:
    import asyncio

    import uvicorn

    from ..descriptors import AcceptFailures
    from ..out_of_memory import is_memory_error

    assert isinstance(server, uvicorn.Server)
    accept_failures = AcceptFailures(refused or (lambda reason: None))

    def on_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if accept_failures.handle(context):
            return
        if is_memory_error(context.get("exception")):
            _OOM.seen(f"asyncio: {str(context.get('message'))[:200]}")
        loop.default_exception_handler(context)

    def stop_for_memory() -> None:
        """Stop as SIGTERM does, from whichever thread saw the MemoryError; at once
        when even that cannot be asked for."""
        try:
            going_away: Any = server  # a GoingAwayServer
            running.call_soon_threadsafe(going_away.stop)
        except BaseException:
            os._exit(OUT_OF_MEMORY)

    async def serve() -> None:
        try:
            await server.serve(sockets)
        except SystemExit:
            # uvicorn's way out when it cannot start; raised in a task, it would end
            # the loop and leave "Task exception was never retrieved" behind
            return

    running: asyncio.AbstractEventLoop

    async def main() -> bool:
        nonlocal running
        running = asyncio.get_running_loop()
        running.set_exception_handler(on_loop_exception)
        _OOM.stop = stop_for_memory
        for handler in logging.getLogger("palimpsest").handlers:
            handler.addFilter(_OOM)
        task = asyncio.create_task(serve())
        while not server.started:
            if task.done():  # ended before it listened: it could not start
                return False
            await asyncio.sleep(0.02)
        listening = f"palimpsest: listening on http://{host}:{port} (ws://{host}:{port}/ws/DOC)"
        logs.echo(_start_line(listening, json_lines), sys.stdout)
        await task
        return True

    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())
    except KeyboardInterrupt:
        return True
    finally:
        _SERVED.set()
        sys.stdout.flush()
