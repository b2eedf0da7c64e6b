"""An app with its own users that embeds Palimpsest at /collab.

The app keeps users, login sessions and a plain-text copy of every document in its own
SQLite database. Palimpsest is mounted at ``/collab`` (websocket ``/collab/ws/{doc}``,
HTTP API ``/collab/api/...``, the editor page ``/collab/?doc=NAME``) and knows nothing
of the app's users except through two extensions:

- ``SessionAuth.authenticate`` turns the app's session cookie into an Identity (a
  request with a cookie gets Palimpsest's Origin check, so pages of other origins of
  the same site cannot use it: docs/extending.md);
- ``PlainTextCopy.on_committed`` keeps the app's ``copies`` table up to date with the
  text of each document, after every durable change, off the editing path (and
  ``on_deleted`` drops the copy of a deleted document: it runs after every batch of
  that document, so no copy comes back after it). ``on_committed`` is at most once: the
  batches queued when the process died (a kill -9) are never delivered, so
  ``PlainTextCopy.on_load`` catches a stale copy up when its document is next loaded
  (opened by someone). A document nobody opens again keeps its stale copy: an app that
  needs every copy current at startup compares each copy's seq with the store's head
  (``backend.store.head(doc)``) and folds ``backend.doc_at(doc, head)`` for those behind,
  or reads the changefeed from a position it keeps (docs/changefeed.md).

Run it with Palimpsest installed (``pip install -e .``, which ./scripts/serve does)::

    .venv/bin/python examples/notes_app.py --port 8000
    # open http://127.0.0.1:8000/ , log in as ada / lovelace (or grace / hopper)

tests/test_embedding.py runs it with a real server and real websocket clients.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import html
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs

import aiosqlite
from pycrdt import Doc, Text
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from palimpsest import Extension, Identity, Palimpsest
from palimpsest.backend import Backend
from palimpsest.room import Room
from palimpsest.settings import Settings
from palimpsest.store.base import Event

USERS = {"ada": "lovelace", "grace": "hopper"}
#: the app's roles: ada administers (she may delete documents), grace writes
ROLES = {"ada": "admin", "grace": "write"}


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)


class AppDB:
    """The app's own database: users, sessions and the plain-text copies."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "the app database is not open"
        return self._db

    async def __aenter__(self) -> AppDB:
        self._db = await aiosqlite.connect(self.path)
        await self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, salt BLOB, hash BLOB);
            CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, user TEXT);
            CREATE TABLE IF NOT EXISTS copies (doc TEXT PRIMARY KEY, seq INTEGER, text TEXT);
            """
        )
        for name, password in USERS.items():
            salt = secrets.token_bytes(16)
            await self.db.execute(
                "INSERT OR IGNORE INTO users VALUES (?, ?, ?)", (name, salt, _hash(password, salt))
            )
        await self.db.commit()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.db.close()
        self._db = None

    async def login(self, user: str, password: str) -> str | None:
        async with self.db.execute("SELECT salt, hash FROM users WHERE name = ?", (user,)) as c:
            row = await c.fetchone()
        if row is None or not secrets.compare_digest(_hash(password, row[0]), row[1]):
            return None
        token = secrets.token_urlsafe(24)
        await self.db.execute("INSERT INTO sessions VALUES (?, ?)", (token, user))
        await self.db.commit()
        return token

    async def user_of(self, token: str) -> str | None:
        async with self.db.execute("SELECT user FROM sessions WHERE token = ?", (token,)) as c:
            row = await c.fetchone()
        return str(row[0]) if row else None

    async def save_copy(self, doc: str, seq: int, text: str) -> None:
        await self.db.execute(
            "INSERT INTO copies VALUES (?, ?, ?) ON CONFLICT(doc) DO UPDATE SET "
            "seq = excluded.seq, text = excluded.text WHERE excluded.seq > copies.seq",
            (doc, seq, text),
        )
        await self.db.commit()

    async def delete_copy(self, doc: str) -> None:
        await self.db.execute("DELETE FROM copies WHERE doc = ?", (doc,))
        await self.db.commit()

    async def copy(self, doc: str) -> tuple[int, str] | None:
        async with self.db.execute("SELECT seq, text FROM copies WHERE doc = ?", (doc,)) as c:
            row = await c.fetchone()
        return (int(row[0]), str(row[1])) if row else None


class SessionAuth(Extension):
    """The app's login session (cookie ``session``) is the Palimpsest identity."""

    credentials = "a session cookie: log in at /login"

    def __init__(self, db: AppDB) -> None:
        self.db = db

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        token = conn.cookies.get("session")
        user = await self.db.user_of(token) if token else None
        if user is None:
            return None  # not ours: no other extension accepts it either, so: 401 / 4401
        return Identity(user, ROLES.get(user, "read"), docs=("*",))


class PlainTextCopy(Extension):
    """A plain-text copy of each document's ``content`` text in the app's own table."""

    def __init__(self, db: AppDB, root: str = "content") -> None:
        self.db = db
        self.root = root
        #: the document as of the last batch seen, to fold the next batch onto
        self._docs: dict[str, tuple[int, Doc]] = {}

    def setup(self, backend: Backend) -> None:
        self.backend = backend

    async def on_committed(self, doc: str, events: Sequence[Event]) -> None:
        held = self._docs.get(doc)
        if held is not None and held[0] == events[0].seq - 1:
            ydoc = held[1]
        else:  # first sight (or events we missed): start from the log
            if await self.backend.store.head(doc) < events[-1].seq:
                # deleted since (its room, and the document held here, went with it):
                # on_deleted comes next, after this batch; folding the batch onto the
                # empty log would write a wrong copy meanwhile
                return
            ydoc = await self.backend.doc_at(doc, events[0].seq - 1)
        for ev in events:
            ydoc.apply_update(ev.update)
        self._docs[doc] = (events[-1].seq, ydoc)
        await self.db.save_copy(doc, events[-1].seq, str(ydoc.get(self.root, type=Text)))

    async def on_load(self, room: Room) -> None:
        """Catch a stale copy up from the document as loaded: on_committed is at most
        once (docs/extending.md), so the batches queued when the process died (kill -9),
        or edits made while this app was not running, never reach it."""
        found = await self.db.copy(room.name)
        if room.seq and (found is None or found[0] < room.seq):
            await self.db.save_copy(room.name, room.seq, str(room.doc.get(self.root, type=Text)))

    def on_unload(self, room: Room) -> None:
        self._docs.pop(room.name, None)  # memory follows the live documents

    async def on_deleted(self, doc: str, by: str) -> None:
        self._docs.pop(doc, None)
        await self.db.delete_copy(doc)


def build_app(db_path: str | Path, store: str, settings: Settings | None = None) -> Starlette:
    db = AppDB(db_path)
    collab = Palimpsest(
        store=store, extensions=[SessionAuth(db), PlainTextCopy(db)], settings=settings
    )

    async def home(request: Request) -> Response:
        token = request.cookies.get("session")
        user = await db.user_of(token) if token else None
        if user is None:
            return RedirectResponse("/login", status_code=303)
        return HTMLResponse(
            f"<p>Hello {html.escape(user)}. "
            f'<a href="/collab/?doc=notes&user={html.escape(user)}">Edit the notes</a> · '
            '<a href="/copies/notes">their plain-text copy</a></p>'
        )

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(
                '<form method="post"><input name="user"> <input name="password" '
                'type="password"> <button>Log in</button></form>'
            )
        form = parse_qs((await request.body()).decode())
        token = await db.login(form.get("user", [""])[0], form.get("password", [""])[0])
        if token is None:
            return HTMLResponse("wrong user or password", status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie("session", token, httponly=True, samesite="strict")
        return response

    async def copy(request: Request) -> Response:
        token = request.cookies.get("session")
        if token is None or await db.user_of(token) is None:
            return JSONResponse({"error": "log in at /login"}, status_code=401)
        found = await db.copy(request.path_params["doc"])
        if found is None:
            return JSONResponse({"error": "no copy yet"}, status_code=404)
        return JSONResponse({"seq": found[0], "text": found[1]})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with db, collab.lifespan(app):
            yield

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/copies/{doc}", copy),
            Mount("/collab", app=collab),
        ],
        lifespan=lifespan,
    )
    app.state.db = db
    app.state.collab = collab
    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", default="notes_app.db", help="the app's own database")
    p.add_argument("--store", default="sqlite:///notes_collab.db", help="Palimpsest's store")
    args = p.parse_args()
    app = build_app(args.db, args.store)
    uvicorn.run(app, port=args.port, ws="websockets-sansio", ws_per_message_deflate=False)


if __name__ == "__main__":
    main()
