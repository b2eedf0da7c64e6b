"""The ASGI app: :class:`Palimpsest`, a Backend with its routes, mountable in any
Starlette or FastAPI app::

    collab = Palimpsest(store="sqlite:///app.db", extensions=[MyAuth()])
    app = Starlette(routes=[Mount("/collab", app=collab)], lifespan=collab.lifespan)

The websocket is then at ``/collab/ws/{doc}``, the HTTP API under ``/collab/api/``, the
page at ``/collab/``. ``palimpsest serve`` runs the same object under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib.resources
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from .auth.open import OpenAccess
from .auth.tokens import token_of
from .backend import Backend
from .errors import PalimpsestError, StoreError, StoreUnavailable
from .extensions import Extension
from .fanout import Fanout
from .logs import INSTANCE, carry_instance
from .page_headers import PageHeaders
from .request_count import CountRequests
from .request_guard import LOCAL_ORIGIN, RequestGuard, normal_origin
from .routes import docs, hocuspocus, ops
from .routes.ws import websocket_endpoint
from .serving_lock import PostgresServingLock, ServingLock, StoppedWaiting
from .settings import Settings
from .stop_signals import on_stop_signals
from .store import EventStore, SQLiteStore, open_store

log = logging.getLogger("palimpsest.app")


def static_dir() -> Path:
    """The directory of the page (index.html, app.js, palimpsest.js, style.css):
    PALIMPSEST_STATIC when set; else the installed package's (``palimpsest/static`` in a
    wheel; in an editable install, where its files link to the repository's, the
    repository's own directory); else the repository's ``static/`` next to ``server/``
    (run from a checkout without installing)."""
    configured = os.environ.get("PALIMPSEST_STATIC")
    if configured:
        return Path(configured)
    try:
        page = importlib.resources.files("palimpsest") / "static" / "index.html"
    except (ImportError, TypeError):  # palimpsest not importable as a package
        page = None
    if isinstance(page, Path) and page.is_file():
        return page.resolve().parent  # (an editable install's links: the files' own)
    return Path(__file__).resolve().parent.parent / "static"


STATIC_DIR = static_dir()


#: response headers the API tells clients to read, beyond those a browser always lets a
#: page of another origin see: which seq a version's update is (GET versions/{ref}
#: ?format=update) and how long to wait after a 429
EXPOSED_HEADERS = ["X-Palimpsest-Seq", "Retry-After", "ETag"]


def _cors(settings: Settings) -> Middleware:
    """CORS for the origins the guard lets in, localhost ones (any port: a Vite page on
    localhost:5173) and those of ``--allow-origin``: a page there may use the HTTP API
    and import /static/palimpsest.js (its preflight answered, its answers readable), as
    it may already open the websocket, and read the headers the API documents
    (EXPOSED_HEADERS). Without credentials: the API's are tokens
    (``Authorization``), never cookies a browser would add on its own. Other origins get
    no CORS headers: their browser reads nothing, and the guard refuses their writes."""
    origins = [normal_origin(o) for o in settings.allow_origin]
    return Middleware(
        CORSMiddleware,
        allow_origins=["*"] if "*" in origins else origins,
        allow_origin_regex=LOCAL_ORIGIN,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )


async def index(request: Request) -> Response:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return PlainTextResponse(
            "Palimpsest is running. The page is not built (static/index.html)."
        )
    # the page's URLs are relative to where it is mounted: tell it with <base>
    base = html.escape(request.scope.get("root_path", "").rstrip("/") + "/", quote=True)
    text = page.read_text(encoding="utf-8").replace("<head>", f'<head>\n  <base href="{base}">', 1)
    return HTMLResponse(text)


async def palimpsest_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PalimpsestError)
    # an error is an answer about now: browsers keep a 410 with no such header forever
    # (Chromium), and the name can be written again the next moment
    headers = {"Cache-Control": "no-store"}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    detail = str(exc)
    doc = request.path_params.get("doc")
    if isinstance(exc, StoreError) and isinstance(doc, str) and repr(doc) not in detail:
        # the store's own words name no document ("SQLite query failed: …")
        detail = f"{doc!r}: {detail}"
    if isinstance(exc, StoreError) and not isinstance(exc, StoreUnavailable):
        # a read the store could not answer (a damaged segment, a log that lacks
        # events): the client got 503 and the detail, and the operator learns it from
        # the log too (a store that is down is said by /readyz and the commits)
        log.warning("%d %s %s: %s", exc.http_status, request.method, request.url.path, detail)
    return JSONResponse(
        {"error": exc.error_name or type(exc).__name__, "detail": detail},
        status_code=exc.http_status,
        headers=headers,
    )


#: what an HTTPException's status is called in the API's JSON errors
_HTTP_ERRORS = {404: "NotFound", 405: "MethodNotAllowed"}


async def http_error(request: Request, exc: Exception) -> Response:
    """Under ``/api/`` the answer is JSON like every other error of the API (no such
    route, a method the route does not take); elsewhere (the page, ``/static``) it is
    Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    root = request.scope.get("root_path", "")
    path = request.scope["path"]
    path = path[len(root) :] if root and path.startswith(root) else path
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    if not path.startswith("/api/"):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    if exc.status_code == 404:
        detail = f"no route {request.method} {path}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{path} does not take {request.method}" + (
            f"; it takes {allowed}" if allowed else ""
        )
    else:
        detail = exc.detail
    error = _HTTP_ERRORS.get(exc.status_code, "HTTPError")
    return JSONResponse(
        {"error": error, "detail": detail}, status_code=exc.status_code, headers=exc.headers
    )


async def server_error(request: Request, exc: Exception) -> Response:
    """An exception no handler took (a bug): under ``/api/`` a JSON 500 like every other
    error of the API (it was Starlette's plain-text "Internal Server Error", which a
    client parsing the body as JSON failed on a second time), naming the request, not
    the exception (its text may hold a document's content); elsewhere plain text.
    Starlette's ServerErrorMiddleware sends this, then raises the exception on, and the
    server logs its traceback."""
    root = request.scope.get("root_path", "")
    path = request.scope["path"]
    path = path[len(root) :] if root and path.startswith(root) else path
    if not path.startswith("/api/"):
        return PlainTextResponse("Internal Server Error", status_code=500)
    return JSONResponse(
        {
            "error": "InternalError",
            "detail": f"{request.method} {path} failed: a bug in the server (its log has "
            "the traceback); please report it",
        },
        status_code=500,
        headers={"Cache-Control": "no-store"},
    )


def _claims_admin(token: str) -> bool:
    """Whether a JWT's payload, unverified, says role admin (a string, or a list holding
    it): the only requests worth authenticating before their route does."""
    import jwt  # (where used: not imported at start-up, see auth/tokens.py)

    try:
        role = jwt.decode(token, options={"verify_signature": False}).get("role")
    except Exception:
        return False
    return role == "admin" or (isinstance(role, list) and "admin" in role)


def _route_params(routes: Sequence[BaseRoute], scope: Scope) -> dict[str, Any]:
    """The path parameters the request's route will be given (the first route that
    matches it, as the router chooses), or those it has when none does."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return dict(child.get("path_params", {}))
    return dict(scope.get("path_params", {}))


async def _admin_of(backend: Backend, scope: Scope, routes: Sequence[BaseRoute]) -> str | None:
    """The user of a request whose bearer token the server verifies as role admin
    (extensions' ``authenticate``, expiry and revocation as for any request), else None.
    For the write rate's bucket (RequestGuard): a token that only claims admin, or
    credentials other than a bearer token (open mode's ``?user=``, cookies), are counted
    against their address. What fails here is answered by the route as ever. The
    extensions see the request as its route will (its path parameters: the document),
    and the identity they give is kept for the route (Backend.authenticate's `keep`)."""
    if backend.extension(OpenAccess) is not None:
        return None  # everyone is admin there, by a name they choose: per address
    token = token_of(HTTPConnection(scope))
    if not token or not _claims_admin(token):
        return None
    scope.setdefault("state", {})  # (shared with the copy below: the identity is kept there)
    conn = HTTPConnection({**scope, "path_params": _route_params(routes, scope)})
    try:
        # kept: the route takes this identity rather than asking the extensions (an
        # app's own hook, the token's verification) a second time for the request
        identity = await backend.authenticate(conn, None, "admin", keep=True)
    except Exception:
        return None
    return identity.user


def _refuse_shadowed(routes: list[BaseRoute]) -> None:
    """Refuse a route that an earlier one hides (the same path, a method in common): an
    extension's ``Route("/api/docs", ...)`` was never called, and nothing said so; one
    of ``/api/docs/{doc}/blame`` hid the history's."""
    seen: list[tuple[str, BaseRoute]] = []
    for route in routes:
        regex = getattr(route, "path_regex", None)
        if regex is None:
            continue
        shape = re.sub(r"\(\?P<\w+>", "(", regex.pattern)  # parameter names aside
        for other_shape, other in seen:
            if other_shape != shape or type(other) is not type(route):
                continue
            mine, theirs = getattr(route, "methods", None), getattr(other, "methods", None)
            if mine is None or theirs is None or mine & theirs:
                raise ValueError(
                    f"two routes answer one path: {route!r} would never be called, "
                    f"{other!r} answers first (Palimpsest's own routes come first, then "
                    "each extension's in order): choose another path"
                )
        seen.append((shape, route))


#: said (logged once, and in every answer) when a request comes before any lifespan ran
NO_LIFESPAN = (
    "Palimpsest's lifespan has not run, so nothing is started (store, committer, "
    "services): a host app does not run the lifespan of an app mounted in it. Pass "
    "lifespan=collab.lifespan to the host (Starlette(..., lifespan=collab.lifespan), "
    "FastAPI(lifespan=collab.lifespan)), or enter it in the host's own lifespan: "
    "`async with collab.lifespan(app): yield` (docs/extending.md#embedding)"
)
#: said when the lifespan is entered while it runs already
ALREADY_RUNNING = (
    "this Palimpsest's lifespan is already running: pass it to the host once, either "
    "lifespan=collab.lifespan (Starlette, FastAPI) or `async with collab.lifespan(app)` "
    "inside the host's own lifespan, not both (docs/extending.md#embedding)"
)
#: said when the host calls a method that needs the lifespan running, outside it
NOT_RUNNING = (
    "collab.{what}: Palimpsest's lifespan is not running, so nothing is started (store, "
    "committer, fan-out): call it while the host serves (from a request handler, or "
    "inside `async with collab.lifespan(app)`) (docs/extending.md#embedding)"
)
#: the same in a websocket's close frame (123 bytes at most)
NO_LIFESPAN_REASON = (
    "Palimpsest's lifespan has not run: enter collab.lifespan in the host's lifespan"
)


class Palimpsest:
    """Palimpsest as an ASGI app: the websocket, the HTTP API and the page.

    ``store``: a store URL (``sqlite:///path``, ``postgresql://…``, ``memory://``) or an
    EventStore; default: the settings' (``palimpsest.db``). ``extensions``: the app's own,
    whose hooks run first; then the built-in features for the settings (undo, history,
    limits, metrics, …; fan-out when ``settings.fanout`` is set; signed tokens when a JWT
    secret is set, open mode when no extension authenticates). ``builtins=False`` leaves
    the built-ins out: ``extensions`` is then the whole list.

    Mounted in another app, its lifespan must run: pass ``lifespan=collab.lifespan`` to
    the host (or enter ``collab.lifespan(app)`` inside the host's own lifespan).
    ``name``: said in each log line of this instance, for several in one process
    (docs/extending.md#instance-name); None, the default, leaves lines as they were."""

    def __init__(
        self,
        store: str | EventStore | None = None,
        extensions: Sequence[Extension] = (),
        *,
        settings: Settings | None = None,
        builtins: bool = True,
        backend: Backend | None = None,
        name: str | None = None,
    ) -> None:
        #: said in each log line of this instance (several in one process): a field
        #: ``instance`` of a JSON line, ``[name]`` after the logger's name in text
        self.name = name
        if name is not None:
            carry_instance()
        if backend is None:
            settings = settings or Settings()
            settings.check()
            if isinstance(store, str):
                store = open_store(
                    store,
                    durability=settings.durability,
                    pg_pool_size=settings.pg_pool_size,
                    pg_command_timeout=settings.pg_command_timeout,
                )
            exts = list(extensions)
            if builtins:
                from .features import builtin_extensions

                exts += builtin_extensions(settings, others=exts)
            backend = Backend(settings, store, exts)
        self.backend = backend
        #: hear the app server's stop signals (server/stop_signals.py): off under
        #: `palimpsest serve`, whose own shutdown drains first and then goes away
        self.stop_on_signals = True
        self._going_away: asyncio.Task[int] | None = None
        #: log why a start failed (off under `palimpsest serve`, which says it itself)
        self.log_startup_error = True
        #: why the lifespan could not start the backend (see lifespan)
        self.startup_error: PalimpsestError | None = None
        #: the lifespan was entered (once is enough: requests after its end are the
        #: shutdown's), and the missing lifespan was logged (see __call__)
        self._lifespan_entered = False
        self._said_no_lifespan = False
        #: the event loop the lifespan runs on, while it runs: a second entry is refused
        #: (one on a loop closed meanwhile, whose run never ended, is not)
        self._running_on: asyncio.AbstractEventLoop | None = None
        routes: list[BaseRoute] = [
            Route("/", index),
            WebSocketRoute("/ws/{doc:path}", websocket_endpoint),
            *hocuspocus.routes,
            *docs.routes,
            *ops.routes,
            *backend.extensions.routes,
        ]
        _refuse_shadowed(routes)
        # a websocket at / is one for /ws/.. (a URL parser resolves the dots), and one at
        # a path of no route (/notes, /ws, /hocuspocus/notes) went to the wrong place:
        # refused with 4400 and a reason (routes.ws.validate_path_name), as every bad
        # name is, not a bare 403 at the handshake. Last, so that an extension's own
        # websocket routes come first
        routes.append(WebSocketRoute("/{elsewhere:path}", websocket_endpoint))
        if STATIC_DIR.is_dir():
            routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
        if not (STATIC_DIR / "index.html").is_file():
            log.warning(
                "the page is not there (no %s): / answers a line of text and /static/ "
                "nothing; set PALIMPSEST_STATIC to the directory holding index.html, "
                "app.js, palimpsest.js and style.css (the repository's static/)",
                STATIC_DIR / "index.html",
            )
        self.app = Starlette(
            routes=routes,
            lifespan=self._own_lifespan,
            exception_handlers={
                PalimpsestError: palimpsest_error,
                HTTPException: http_error,
                Exception: server_error,
            },
            middleware=[
                # outermost: every answer is counted, the guard's refusals too
                Middleware(
                    CountRequests,
                    routes=tuple(routes),
                    counted=backend.extensions.request,
                ),
                Middleware(PageHeaders),  # the guard's refusals get them too
                _cors(backend.settings),
                Middleware(
                    RequestGuard,
                    settings=backend.settings,
                    is_open=lambda: backend.extension(OpenAccess) is not None,
                    cookie_auth=lambda: backend.extensions.read_cookies,
                    refused=backend.refused,
                    admin_of=lambda scope: _admin_of(backend, scope, routes),
                ),
            ],
        )
        self.app.state.backend = backend
        # no 307 from /api/docs/x/ to /api/docs/x: a path that ends in "/" is no route (a
        # JSON 404). A client that follows the redirect with the same method turned
        # `DELETE …/tags/..` (collapsed to `…/docs/x/`) into deleting the document.
        self.app.router.redirect_slashes = False

    @property
    def settings(self) -> Settings:
        return self.backend.settings

    @property
    def state(self) -> State:
        return self.app.state

    @property
    def routes(self) -> list[BaseRoute]:
        return self.app.routes

    async def delete(self, doc: str, *, by: str) -> dict[str, Any]:
        """Delete `doc` as ``DELETE /api/docs/{doc}`` does, for the host app's own code
        (an admin action of its own), which has decided who may: no authentication here.
        `by`: the user said to have deleted it (on_deleted hooks, the log, the changefeed's
        record). Every connection to it is closed with 4404, on every process (fan-out);
        the store keeps its tombstone. Returns what the route answers: ``{"doc",
        "deleted": True, "closed"}`` (connections closed in this process).

        Raises NotFound (404; Deleted, 410, for a name deleted before) when the store
        holds nothing of `doc`, Locked (423) while it is locked, BadRequest for a name
        that is not one, ValueError for a `by` that is no user name, and RuntimeError
        when the lifespan is not running (nothing is started)."""
        from .auth.identity import name_refused, user_name, valid_user_name
        from .deletion import delete_named
        from .names import validate_doc_name

        if not self.backend.started:
            raise RuntimeError(NOT_RUNNING.format(what=f"delete({doc!r})"))
        doc = validate_doc_name(doc)
        by = user_name(by) if isinstance(by, str) else by
        if not valid_user_name(by):
            raise ValueError(f"by: {name_refused(by)}")
        closed = await delete_named(self.backend, doc, by)
        return {"doc": doc, "deleted": True, "closed": closed}

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Start the backend (store, committer, extensions' services) for the duration.

        A start that fails for a reason we can name (a store that cannot be opened or
        reached) is kept in ``startup_error``: ``palimpsest serve`` says it in one line.
        A start that fails leaves no file it made: the new database (Backend.start) and
        the serving lock's file, unless another process holds it.

        Entered again while it runs (the host's own lifespan enters it, and it was
        passed as ``lifespan=`` too): RuntimeError at once, before anything is touched;
        the run that holds it goes on."""
        running = self._running_on
        if running is not None and not running.is_closed():
            raise RuntimeError(ALREADY_RUNNING)
        self._running_on = asyncio.get_running_loop()
        try:
            async with self._named_lifespan():
                yield
        finally:
            self._running_on = None

    @contextlib.asynccontextmanager
    async def _named_lifespan(self) -> AsyncIterator[None]:
        if self.name is None:
            async with self._lifespan():
                yield
            return
        host = INSTANCE.get()
        INSTANCE.set(self.name)  # what starts the backend, and the tasks it starts
        try:
            async with self._lifespan():
                INSTANCE.set(host)  # the host's own code inside says its own name
                try:
                    yield
                finally:
                    INSTANCE.set(self.name)  # (the stop's lines)
        finally:
            INSTANCE.set(host)

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        started = False
        self._lifespan_entered = True
        give_back = _default_logging(self.backend.settings)
        lock = _serving_lock(self.backend)
        try:
            if lock is not None:
                await _acquire(lock)
            async with self.backend:
                started = True
                if lock is not None:
                    await lock.serving()
                await _warm_up()
                self._going_away = None
                with (
                    on_stop_signals(self._stop_signal)
                    if self.stop_on_signals
                    else (contextlib.nullcontext())
                ):
                    try:
                        yield
                    finally:
                        if self._going_away is not None:  # (the backend stops after it)
                            with contextlib.suppress(Exception):
                                await self._going_away
        except PalimpsestError as e:
            if not started:
                self.startup_error = e
                if self.log_startup_error and not isinstance(e, StoppedWaiting):
                    # under an app server the refusal is otherwise one line deep in its
                    # traceback (hypercorn's LifespanFailureError), or not said at all
                    log.error("cannot start: %s", e)
            raise
        finally:
            try:
                if lock is not None:
                    await lock.release(discard_new=not started)
            finally:
                if give_back is not None:
                    give_back()  # (after the lock's lines: they are said in the log)

    def _stop_signal(self, name: str) -> None:
        """The app server was told to stop (SIGTERM, SIGINT): end the changefeed streams
        and close the websockets with 1001 now, rather than once the server has waited
        for every request to end (server/stop_signals.py)."""
        if self._going_away is not None or self.backend.stopping.is_set():
            return
        named = INSTANCE.set(self.name) if self.name is not None else None
        try:
            self._say_going_away(name)
        finally:
            if named is not None:
                INSTANCE.reset(named)

    def _say_going_away(self, name: str) -> None:
        log.info("received %s: the server stops; ending streams, closing connections with "
                 "1001", name)  # fmt: skip
        self._going_away = asyncio.ensure_future(self.backend.going_away())

    @contextlib.asynccontextmanager
    async def _own_lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self.lifespan(app):
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.name is None:
            return await self._call(scope, receive, send)
        named = INSTANCE.set(self.name)
        try:
            await self._call(scope, receive, send)
        finally:
            INSTANCE.reset(named)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self._lifespan_entered
            and scope["type"] in ("http", "websocket")
            and not self.backend.started
        ):
            await self._no_lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _no_lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request before any lifespan ran: the app is mounted in another whose lifespan
        does not run it (Starlette and FastAPI never run a mounted app's lifespan). Every
        request got a bare 503 "the SQLite store is not started", a websocket 1013, and
        nothing said why; now the answer and the log (once) say what to do."""
        if not self._said_no_lifespan:
            self._said_no_lifespan = True
            log.error("%s", NO_LIFESPAN)
        if scope["type"] == "websocket":
            ws = WebSocket(scope, receive, send)
            await ws.accept()
            await ws.close(1013, NO_LIFESPAN_REASON)
            return
        response = JSONResponse(
            {"error": "LifespanNotRun", "detail": NO_LIFESPAN},
            status_code=503,
            headers={"Cache-Control": "no-store"},
        )
        await response(scope, receive, send)


def _serving_lock(backend: Backend) -> ServingLock | PostgresServingLock | None:
    """A SQLite file or a PostgreSQL schema is served by one process, or by several that
    share a fan-out bus (server/serving_lock.py); the memory store is one process's own."""
    store = backend.store
    shared = backend.extension(Fanout) is not None
    if isinstance(store, SQLiteStore):
        if store.path == ":memory:":
            return None
        return ServingLock(store.path, shared=shared, wait=backend.settings.lock_wait)
    if store.name == "postgresql":
        from .store.postgres import PostgresStore

        if isinstance(store, PostgresStore):
            return PostgresServingLock(
                store.dsn, store.schema, shared=shared, wait=backend.settings.lock_wait
            )
    return None


async def _acquire(lock: ServingLock | PostgresServingLock) -> None:
    """Take the serving lock, the wait for it (lock_wait) ended by a stop signal
    (SIGTERM, SIGINT) with StoppedWaiting: nothing is served yet, so nothing is left to
    shut down. The app server hears the signal too (its handler still runs first,
    server/stop_signals.py) and ends once the start has failed. The wait ignored it:
    `palimpsest serve` waited out its 15 s shutdown bound and exited 1, uvicorn the
    whole wait (30 s by default)."""
    task = asyncio.ensure_future(lock.acquire())
    stopped: list[str] = []

    def stop(name: str) -> None:
        if not task.done() and not stopped:
            stopped.append(name)
            task.cancel()

    with on_stop_signals(stop):
        try:
            await task
        except asyncio.CancelledError:
            if not stopped:
                raise  # (the lifespan itself was cancelled)
            why = f"received {stopped[0]} while waiting for {lock.what}"
            log.warning("%s: stopped waiting; nothing was served", why)
            from .logs import flush

            flush()  # (the process ends by the signal right after: said first)
            raise StoppedWaiting(f"{why}: stopped waiting") from None


def _default_logging(settings: Settings) -> Callable[[], None] | None:
    """Under an app server (uvicorn, gunicorn, hypercorn) nothing sets up Python's logging
    for the app: Palimpsest's INFO lines (connections, loads, snapshots, the start) were
    lost and its warnings came out bare (logging's last resort). When neither the
    ``palimpsest`` logger nor the root logger has a handler, the app sets up its log as
    ``palimpsest serve`` does (server/logs.py: its level and format from the settings,
    written by a thread of its own); a process that set up its own logging keeps it.
    Done in the process that serves (the lifespan), not where the app was made: with
    gunicorn's --preload that is the master, whose thread the workers would not have.

    Returns what gives both loggers back as they were, called when the lifespan ends
    (None: nothing was set up): an embedding host that sets up its logging after that
    gets Palimpsest's lines (docs/extending.md#logging)."""
    if logging.getLogger("palimpsest").handlers or logging.getLogger().handlers:
        return None
    from .logs import take_over

    return take_over(settings.log_level, settings.log_json)


async def _warm_up() -> None:
    """Import now what starlette otherwise imports on the first request: anyio's asyncio
    backend (and its sockets and streams modules), loaded the first time a task group is
    made. That took 16-30 ms on the event loop, a stall for every connection open at the
    time (the stall watch caught it, server/stall_watch.py)."""
    import anyio

    async with anyio.create_task_group():
        pass


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> Palimpsest:
    """The app ``palimpsest serve`` runs: the built-in features for these settings; with
    none (and no backend), the settings ``serve`` reads: the PALIMPSEST_* variables over
    the defaults. So ``uvicorn --factory palimpsest.app:create_app`` (or gunicorn's and
    hypercorn's ``palimpsest.app:create_app()``) is configured as ``serve`` is, the JWT
    secret included (docs/operations.md, "Under another ASGI server")."""
    if settings is None and backend is None:
        settings = Settings.from_env()
    return Palimpsest(settings=settings, backend=backend)
