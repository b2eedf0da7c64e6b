"""Who may do what: the token matrix over every HTTP route and every websocket message type.

Every route of the app must appear in HTTP_ROUTES with the role it needs: a route that
is missing fails test_every_route_is_in_the_matrix, so new routes cannot skip auth."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
import websockets
from conftest import RunningServer, eventually, http_routes, run_server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pycrdt import Doc, Text
from serverproc import ServerProcess
from starlette.requests import Request

from palimpsest import hocuspocus as H
from palimpsest import protocol as P
from palimpsest.app import create_app
from palimpsest.auth import Identity, authorize
from palimpsest.auth.identity import LEEWAY
from palimpsest.auth.open import OpenAccess
from palimpsest.auth.tokens import OPEN_MODE_WARNING, JWTAuth, mint
from palimpsest.backend import Backend
from palimpsest.cli import main as cli_main
from palimpsest.errors import AuthError, Forbidden
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent

SECRET = "test-secret-of-at-least-thirty-two-bytes!"
DOC = "matrix-1"
ROLES = ("read", "edit", "write", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}

#: (method, path template) -> the role the route needs (None: public)
HTTP_ROUTES: dict[tuple[str, str], str | None] = {
    ("GET", "/"): None,
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
    ("GET", "/api/docs"): "read",
    ("GET", "/api/me"): "read",
    ("DELETE", "/api/docs/{doc}"): "admin",
    ("GET", "/api/docs/{doc}/lock"): "read",
    ("PUT", "/api/docs/{doc}/lock"): "admin",
    ("DELETE", "/api/docs/{doc}/lock"): "admin",
    ("POST", "/api/docs/{doc}/compact"): "admin",
    ("GET", "/api/docs/{doc}/events"): "read",
    ("GET", "/api/docs/{doc}/versions"): "read",
    ("GET", "/api/docs/{doc}/versions/{ref}"): "read",
    ("GET", "/api/docs/{doc}/sessions"): "read",
    ("GET", "/api/docs/{doc}/diff"): "read",
    ("GET", "/api/docs/{doc}/blame"): "read",
    ("GET", "/api/docs/{doc}/tags"): "read",
    ("POST", "/api/docs/{doc}/tags"): "admin",
    ("PUT", "/api/docs/{doc}/tags/{name}"): "admin",
    ("DELETE", "/api/docs/{doc}/tags/{name}"): "admin",
    ("GET", "/api/docs/{doc}/tags/{name}/history"): "read",
    ("POST", "/api/docs/{doc}/restore"): "write",
    ("POST", "/api/docs/{doc}/revert"): "write",
    ("POST", "/api/docs/{doc}/updates"): "admin",
    ("PUT", "/api/docs/{doc}/text"): "write",
    ("POST", "/api/docs/{doc}/undo"): "edit",
    ("POST", "/api/docs/{doc}/redo"): "edit",
    ("POST", "/api/docs/{doc}/undo/open"): "edit",
    ("POST", "/api/docs/{doc}/undo/close"): "edit",
    # the changefeed: streams answer text/event-stream (only their status is read here)
    ("GET", "/api/docs/{doc:path}/events/stream"): "read",
    ("GET", "/api/events/stream"): "read",
    ("GET", "/api/webhooks"): "admin",
    ("POST", "/api/webhooks/{hook}/{action:str}"): "admin",
    ("GET", "/api/revocations"): "admin",
    ("POST", "/api/revocations/{user:path}"): "admin",
    ("DELETE", "/api/revocations/{user:path}"): "admin",
}
#: routes over every document (the webhooks carry every document's events): they need
#: a token for every document, docs ["*"]; an admin of some documents is refused (403)
EVERY_DOC_ROUTES = {("GET", "/api/webhooks"), ("POST", "/api/webhooks/{hook}/{action:str}"),
                    ("GET", "/api/revocations"), ("POST", "/api/revocations/{user:path}"),
                    ("DELETE", "/api/revocations/{user:path}")}  # fmt: skip
PATH_VALUES = {"doc": DOC, "ref": "1", "name": "v1", "hook": "wh-000000000000",
               "action": "enable", "user": "victim"}  # fmt: skip


def token(
    role: str = "write",
    docs: tuple[str, ...] = ("matrix-*",),
    user: str = "alice",
    ttl: float = 600,
    secret: str = SECRET,
    now: float | None = None,
) -> str:
    return mint(secret, user, role, list(docs), ttl, now=now)


def no_iat(user: str, role: str = "write", docs: tuple[str, ...] = ("matrix-*",)) -> str:
    claims = {"sub": user, "role": role, "docs": list(docs), "exp": int(time.time()) + 600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bad_tokens() -> dict[str, tuple[str | None, int]]:
    """Token variants refused before any role check: name -> (token or None, expected
    status). Minted when a test runs (a module-level token would expire in a long run)."""
    exp = int(time.time()) + 600
    return {
        "missing": (None, 401),
        "garbage": ("not-a-token", 401),
        "expired": (token("admin", now=time.time() - 7200, ttl=60), 401),
        "wrong-signature": (token("admin", secret="another-secret-also-thirty-two-bytes!"), 401),
        "alg-none": (
            jwt.encode(
                {"sub": "eve", "role": "admin", "docs": ["*"], "exp": exp}, None, algorithm="none"
            ),
            401,
        ),
        "no-role": (
            jwt.encode({"sub": "eve", "docs": ["*"], "exp": exp}, SECRET, algorithm="HS256"),
            401,
        ),
        "no-exp": (
            jwt.encode({"sub": "eve", "role": "admin", "docs": ["*"]}, SECRET, algorithm="HS256"),
            401,
        ),
        "bad-role": (
            jwt.encode(
                {"sub": "eve", "role": "root", "docs": ["*"], "exp": exp}, SECRET, algorithm="HS256"
            ),
            401,
        ),
        "wrong-doc": (token("admin", docs=("other-*", "matrix")), 403),
    }


BAD_TOKEN_NAMES = sorted(bad_tokens())


@pytest.fixture
def jwt_settings(db_path: Path, settings: Settings) -> Settings:
    settings.jwt_secret = SECRET
    # the token matrix makes over 100 writes from one address at once (the default burst):
    # what it tests is auth, not the rate limit
    settings.max_http_writes_per_second = 0
    return settings


@pytest.fixture
async def jserver(jwt_settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(jwt_settings) as s:
        yield s


def ws_url(server: RunningServer, doc: str, tok: str | None, **extra: str) -> str:
    q = {**({"token": tok} if tok else {}), **extra}
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    return f"{server.ws_url}/{doc}" + (f"?{qs}" if qs else "")


async def close_of(ws: websockets.ClientConnection) -> tuple[int, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None, "closed without a close frame"
        return e.rcvd.code, e.rcvd.reason


class Raw:
    """A websocket that records every decoded frame it receives."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.frames: list[P.Message] = []
        self.closed: tuple[int, str] | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for raw in self.ws:
                assert isinstance(raw, bytes)
                self.frames.append(P.decode(raw))
        except websockets.ConnectionClosed:
            pass
        rcvd = self.ws.protocol.close_rcvd
        self.closed = (rcvd.code, rcvd.reason) if rcvd else (1006, "")

    def of(self, kind: type) -> list[Any]:
        return [f for f in self.frames if isinstance(f, kind)]

    async def answer(self, rid: int) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for f in self.of(P.Extension):
                if f.body.get("id") == rid:
                    return dict(f.body)
            return None

        return await eventually(found, what=f"an answer to request {rid}")  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self.ws.close()
        await self.task


async def open_raw(server: RunningServer, doc: str, tok: str | None, **extra: str) -> Raw:
    ws = await websockets.connect(ws_url(server, doc, tok, **extra), compression=None)
    raw = Raw(ws)
    await ws.send(P.encode_sync_step1(b"\x00"))
    await eventually(lambda: raw.of(P.SyncStep2) or raw.closed, what="sync step 2")
    return raw


def an_update(text: str, client_id: int = 4242) -> bytes:
    d: Doc = Doc(client_id=client_id)
    d.get("content", type=Text).insert(0, text)
    return d.get_update()


async def content_of(server: RunningServer, doc: str) -> str:
    room = server.backend.rooms.get_loaded(doc)
    if room is None:
        return ""
    return str(room.doc.get("content", type=Text))


# --- the websocket ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", BAD_TOKEN_NAMES)
async def test_bad_tokens_close_the_websocket_with_a_code_and_reason(
    jserver: RunningServer, variant: str
) -> None:
    tok, status = bad_tokens()[variant]
    ws = await websockets.connect(ws_url(jserver, DOC, tok), compression=None)
    code, reason = await close_of(ws)
    assert code == {401: 4401, 403: 4403}[status], (variant, code, reason)
    assert reason, "the close carries a reason"
    assert DOC not in jserver.backend.rooms, "a refused connection never loads the document"


async def test_a_subprotocol_is_named_back_and_a_token_there_is_said_not_read(
    jserver: RunningServer,
) -> None:
    """fteditors: `new WebsocketProvider(url, doc, ydoc, {protocols: [token]})`: the accept
    named no subprotocol, so Chromium aborted the handshake and the page saw 1006 in a
    loop, never the 4401. The first one offered is named back, the refusal says where a
    token goes, and a client that offers one and gives its token in the query works."""
    tok = token("write")
    ws = await websockets.connect(ws_url(jserver, DOC, None), subprotocols=[tok], compression=None)  # type: ignore[list-item]
    assert ws.subprotocol == tok
    code, reason = await close_of(ws)
    assert code == 4401 and "subprotocol is not read here: give it as ?token=" in reason, reason
    ws = await websockets.connect(ws_url(jserver, DOC, tok), subprotocols=["y"], compression=None)  # type: ignore[list-item]
    try:
        assert ws.subprotocol == "y"
        assert isinstance(P.decode(await ws.recv()), P.SyncStep1)
    finally:
        await ws.close()


async def test_a_token_that_does_not_decode_is_refused_in_plain_words(
    jserver: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged token (a sign-in link cut short, three dotted words) was refused with
    the decoder's words, which the page showed the person signing in: "malformed token:
    Invalid header string: 'utf-8' codec can't decode byte 0xb7 in position 1: invalid
    start byte". The reason is now plain; the detail is in the server's log."""
    header, payload, signature = token("read").split(".")
    cut = payload[: len(payload) - 4 - (len(payload) - 1) % 4]  # (no base64 is 4n+1 long)
    damaged = {
        "abc.def.ghi": "codec can't decode",  # the header does not decode
        "not-a-token": "Not enough segments",
        f"{header}.{cut}.{signature}": "Invalid payload padding",  # the claims do not
        # signed, but its claims are no JSON
        jwt.PyJWS().encode(b"not json", SECRET, algorithm="HS256"): "Invalid payload string",
    }
    with caplog.at_level(logging.INFO, logger="palimpsest.auth"):
        async with httpx.AsyncClient(base_url=jserver.url) as http:
            for tok, detail in damaged.items():
                ws = await websockets.connect(ws_url(jserver, DOC, tok), compression=None)
                assert await close_of(ws) == (4401, "the token is damaged or not a token"), tok
                r = await http.get("/api/docs", headers={"authorization": f"Bearer {tok}"})
                assert r.status_code == 401, tok
                assert r.json()["detail"] == "the token is damaged or not a token", tok
                logged = [rec.getMessage() for rec in caplog.records if detail in rec.getMessage()]
                assert logged, (tok, detail, caplog.text)


@pytest.mark.parametrize("role", ROLES)
async def test_websocket_message_matrix(jserver: RunningServer, role: str) -> None:
    store = jserver.backend.store
    watcher = await open_raw(jserver, DOC, token("read", user="watcher"))
    conn = await open_raw(jserver, DOC, token(role, user=f"u-{role}"), user="mallory")
    assert conn.closed is None
    head0 = await store.head(DOC)
    before = await content_of(jserver, DOC)

    # hello: the identity is the token's, whatever ?user= claims
    await conn.ws.send(P.encode_extension({"type": "hello", "id": 1}))
    hello = await conn.answer(1)
    assert (hello["user"], hello["role"]) == (f"u-{role}", role)

    # sync step 1: everyone may read
    n2 = len(conn.of(P.SyncStep2))
    await conn.ws.send(P.encode_sync_step1(b"\x00"))
    await eventually(lambda: len(conn.of(P.SyncStep2)) > n2, what="step 2 answer")

    # awareness and query awareness: everyone has presence
    state = f'{{"user":{{"name":"{role}"}}}}'
    await conn.ws.send(P.encode_awareness(P.encode_awareness_entries([(777, 1, state)])))
    await eventually(
        lambda: any(
            role in p.payload.decode(errors="replace") for p in watcher.of(P.AwarenessUpdate)
        ),
        what="the watcher sees the presence",
    )
    na = len(conn.of(P.AwarenessUpdate))
    await conn.ws.send(P.encode_query_awareness())
    await eventually(lambda: len(conn.of(P.AwarenessUpdate)) > na, what="awareness answer")

    # updates (sync update and step 2): edit and up
    await conn.ws.send(P.encode_sync_update(an_update(f"[{role}-update]", 1000 + RANK[role])))
    await conn.ws.send(P.encode_sync_step2(an_update(f"[{role}-step2]", 2000 + RANK[role])))
    if role == "read":
        await eventually(lambda: len(conn.of(P.AuthMessage)) >= 2, what="two permission denials")
        assert all(
            m.kind == P.AUTH_PERMISSION_DENIED and "read-only" in m.reason
            for m in conn.of(P.AuthMessage)
        )
        # the server handled both frames (it answered them); a barrier on the pipeline,
        # then nothing may have been applied, logged or broadcast
        room = jserver.backend.rooms.get_loaded(DOC)
        assert room is not None
        await room.flush()
        assert await store.head(DOC) == head0
        assert await content_of(jserver, DOC) == before
        assert not watcher.of(P.SyncUpdate)
    else:

        def watcher_text() -> str:
            # a batch may arrive as one merged update: look at what the frames carry
            d: Doc = Doc()
            for m in watcher.of(P.SyncUpdate):
                d.apply_update(m.update)
            return str(d.get("content", type=Text))

        await eventually(
            lambda: f"[{role}-update]" in watcher_text() and f"[{role}-step2]" in watcher_text(),
            what="the watcher receives both edits",
        )
        events = await store.read(DOC, after=head0)
        assert {e.actor for e in events} == {f"u-{role}"}, "the actor comes from the token"
        text = await content_of(jserver, DOC)
        assert f"[{role}-update]" in text and f"[{role}-step2]" in text
        assert not conn.of(P.AuthMessage)

    # undo / redo over the websocket: never for read
    head1 = await store.head(DOC)
    await conn.ws.send(P.encode_extension({"type": "undo", "id": 2}))
    undo = await conn.answer(2)
    await conn.ws.send(P.encode_extension({"type": "redo", "id": 3}))
    redo = await conn.answer(3)
    if role == "read":
        assert undo["ok"] is False and redo["ok"] is False
        assert undo.get("code") == redo.get("code") == "Forbidden", (undo, redo)
        assert await store.head(DOC) == head1
    else:
        # its own edits above are there to undo, and the redo brings them back
        assert undo["ok"] is True, undo
        assert redo["ok"] is True, redo
        assert await store.head(DOC) == head1 + 2
        text = await content_of(jserver, DOC)
        assert f"[{role}-update]" in text and f"[{role}-step2]" in text
    assert conn.closed is None, "no message of the matrix closes a valid connection"
    assert watcher.closed is None
    await conn.aclose()
    await watcher.aclose()


#: extension operations a read-only connection may use (everything else must be refused)
#: (close_group only ends the caller's own undo capture group: it changes no document)
READ_OK_OPS = {"hello", "close_group"}


async def test_every_extension_op_is_refused_to_read_tokens(jserver: RunningServer) -> None:
    """Every registered websocket operation, present or future, is checked: a read token
    gets ok=false and nothing changes."""
    await seed(jserver)
    store = jserver.backend.store
    ops = sorted(set(jserver.backend.extensions.ops) - READ_OK_OPS)
    assert {"undo", "redo"} <= set(ops), ops  # an empty registry would check nothing
    conn = await open_raw(jserver, DOC, token("read", user="reader"))
    head, tags = await store.head(DOC), len(await store.tags(DOC))
    for i, op in enumerate(ops, start=10):
        await conn.ws.send(P.encode_extension({"type": op, "id": i, "seq": 1, "name": "v1"}))
        answer = await conn.answer(i)
        assert answer["ok"] is False and answer.get("code") == "Forbidden", (op, answer)
    assert await store.head(DOC) == head and len(await store.tags(DOC)) == tags
    assert conn.closed is None
    await conn.aclose()


async def test_auth_messages_from_clients_are_ignored(jserver: RunningServer) -> None:
    """As y-websocket's server does: the socket stays open, and the message changes
    nothing of who the connection is (the token says it)."""
    conn = await open_raw(jserver, DOC, token("read", user="rita"))
    await conn.ws.send(P.encode_permission_denied("let me in as admin"))
    await conn.ws.send(P.encode_extension({"type": "hello", "id": 1}))
    hello = await conn.answer(1)
    assert (hello["user"], hello["role"]) == ("rita", "read")
    assert conn.closed is None
    await conn.aclose()


async def test_identity_comes_from_the_token_not_from_user_param(jserver: RunningServer) -> None:
    conn = await open_raw(jserver, DOC, token("write", user="alice"), user="mallory")
    await conn.ws.send(P.encode_sync_update(an_update("by alice")))
    await eventually(lambda: jserver.backend.store.head(DOC), what="logged")
    events = await jserver.backend.store.read(DOC)
    assert [e.actor for e in events] == ["alice"]
    await conn.aclose()


async def test_glob_patterns_grant_exactly_their_documents(jserver: RunningServer) -> None:
    tok = token("read", docs=("team-*", "notes"))
    for doc, code in (
        ("team-a", None),
        ("notes", None),
        ("notes2", 4403),
        ("xteam-a", 4403),
        ("Team-a", 4403),
    ):
        ws = await websockets.connect(ws_url(jserver, doc, tok), compression=None)
        if code is None:
            assert isinstance(P.decode(await ws.recv()), P.SyncStep1)
            await ws.close()
        else:
            assert (await close_of(ws))[0] == code, doc


async def test_an_edit_token_types_and_undoes_its_own_but_cannot_rewrite_history(
    jserver: RunningServer,
) -> None:
    """A classroom: a student's `edit` token edits over a real websocket and undoes its own
    change over HTTP, but restore, revert, PUT text and tags (which change others' work)
    are 403 naming the role they need; the teacher's `write` token still restores,
    reverts and puts text. (Restore and revert needed `write`, the only role that edits:
    every student could wipe the class's text or revert the teacher's moderation.)"""
    store = jserver.backend.store
    teacher = await open_raw(jserver, DOC, token("write", user="teacher"))
    await teacher.ws.send(P.encode_sync_update(an_update("[teacher]", 501)))
    await eventually(lambda: store.head(DOC), what="the teacher's text logged")
    teacher_seq = await store.head(DOC)
    student = await open_raw(jserver, DOC, token("edit", user="student"))
    await student.ws.send(P.encode_sync_update(an_update("[student]", 502)))

    async def has(text: str) -> bool:
        return text in await content_of(jserver, DOC)

    await eventually(lambda: has("[student]"), what="the student's edit applied")
    assert not student.of(P.AuthMessage), "an edit token's edit was denied"
    events = await store.read(DOC, after=teacher_seq)
    assert [e.actor for e in events] == ["student"]
    room = jserver.backend.rooms.get_loaded(DOC)
    assert room is not None

    edit = {"authorization": f"Bearer {token('edit', user='student')}"}
    write = {"authorization": f"Bearer {token('write', user='teacher')}"}
    async with httpx.AsyncClient(base_url=jserver.url, timeout=10) as http:
        r = await http.post(f"/api/docs/{DOC}/undo", headers=edit, json={})
        assert r.status_code == 200 and r.json()["ok"] is True, r.text
        await room.flush()
        text = await content_of(jserver, DOC)
        assert "[student]" not in text and "[teacher]" in text, text

        head = await store.head(DOC)
        refused = {
            ("POST", "restore", '"write"'): {"seq": 1},
            ("POST", "revert", '"write"'): {"actor": "teacher", "since": 0},
            ("PUT", "text", '"write"'): {"text": "wiped"},
            ("POST", "tags", '"admin"'): {"name": "v1", "seq": 1},
        }
        for (method, route, needed), body in refused.items():
            r = await http.request(method, f"/api/docs/{DOC}/{route}", headers=edit, json=body)
            assert r.status_code == 403, (route, r.status_code, r.text)
            detail = r.json()["detail"]
            assert r.json()["error"] == "Forbidden" and f"needs role {needed}" in detail.replace(
                "'", '"'
            ), (route, detail)
        assert await store.head(DOC) == head and not await store.tags(DOC)
        assert "[teacher]" in await content_of(jserver, DOC)

        # the teacher's write token still may
        r = await http.post(f"/api/docs/{DOC}/revert", headers=write,
                            json={"actor": "student", "since": 0})  # fmt: skip
        assert r.status_code == 200, r.text
        r = await http.put(f"/api/docs/{DOC}/text", headers=write, json={"text": "moderated"})
        assert r.status_code == 200, r.text
        r = await http.post(f"/api/docs/{DOC}/restore", headers=write, json={"seq": teacher_seq})
        assert r.status_code == 200, r.text
        await room.flush()
        assert await content_of(jserver, DOC) == "[teacher]"
    assert student.closed is None and teacher.closed is None
    await student.aclose()
    await teacher.aclose()


# --- HTTP ---------------------------------------------------------------------------------


def fill(path: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1).split(":")[0]
        assert name in PATH_VALUES, f"no test value for path parameter {name!r} of {path}"
        return PATH_VALUES[name]

    return re.sub(r"\{([^}]+)\}", value, path)


def test_every_route_is_in_the_matrix(jwt_settings: Settings) -> None:
    app = create_app(jwt_settings)
    missing = [r for r in http_routes(app) if r not in HTTP_ROUTES]
    assert not missing, f"routes missing from the token matrix in tests/test_auth.py: {missing}"
    # and the matrix tests no route the app has not (it would pass for nothing)
    stale = [r for r in HTTP_ROUTES if r not in http_routes(app)]
    assert not stale, f"the token matrix names routes nobody serves: {stale}"


async def seed(server: RunningServer) -> None:
    conn = await open_raw(server, DOC, token("write"))
    await conn.ws.send(P.encode_sync_update(an_update("seed")))
    await eventually(lambda: server.backend.store.head(DOC), what="seeded")
    await conn.aclose()


async def test_http_token_matrix(jserver: RunningServer) -> None:
    await seed(jserver)
    app = jserver.server.config.app
    routes = [r for r in http_routes(app) if r in HTTP_ROUTES]
    # destructive routes last, so that the others still find the document
    routes.sort(key=lambda r: (r[0] == "DELETE", r[1] == "/api/docs/{doc}"))
    failures: list[str] = []
    store = jserver.backend.store
    async with httpx.AsyncClient(base_url=jserver.url, timeout=10) as http:

        async def call(method: str, path: str, tok: str | None) -> httpx.Response:
            headers = {"authorization": f"Bearer {tok}"} if tok else {}
            body = {} if method in ("POST", "PUT", "PATCH") else None
            raw = None
            if path.endswith("/updates"):  # (a Yjs update: the empty one)
                body, raw = None, b"\x00\x00"
                headers["content-type"] = "application/octet-stream"
            async with http.stream(method, fill(path), headers=headers, json=body,
                                   content=raw, params={"user": "mallory"}) as r:  # fmt: skip
                # a stream that was let in never ends: its status says enough
                if not r.headers.get("content-type", "").startswith("text/event-stream"):
                    await r.aread()
                return r

        # refusals first: nothing they ask may happen
        head = await store.head(DOC)
        tags = len(await store.tags(DOC))
        for method, path in routes:
            need = HTTP_ROUTES[(method, path)]
            for variant, (tok, status) in bad_tokens().items():
                if need is None:
                    continue
                if variant == "wrong-doc" and "{doc" not in path:
                    continue
                r = await call(method, path, tok)
                if r.status_code != status:
                    failures.append(f"{method} {path} with {variant}: {r.status_code} != {status}")
                elif r.json().get("error") != ("AuthError" if status == 401 else "Forbidden"):
                    failures.append(f"{method} {path} with {variant}: body {r.text[:100]}")
            for role in ROLES:
                if need is not None and RANK[role] < RANK[need]:
                    r = await call(method, path, token(role))
                    if r.status_code != 403:
                        failures.append(f"{method} {path} as {role}: {r.status_code}, not 403")
        assert await store.head(DOC) == head, "a refused request changed the log"
        assert len(await store.tags(DOC)) == tags, "a refused request changed the tags"
        assert await store.doc_info(DOC) is not None, "a refused request deleted the document"

        # then every role that suffices gets past auth (the answer may still be 4xx
        # for the empty body, but never 401/403)
        for method, path in routes:
            need = HTTP_ROUTES[(method, path)]
            for role in ROLES:
                if need is None or RANK[role] >= RANK[need]:
                    if (method, path) == ("DELETE", "/api/docs/{doc}") and role != "admin":
                        continue
                    if (method, path) in EVERY_DOC_ROUTES:
                        r = await call(method, path, token(role))  # docs ["matrix-*"]
                        if r.status_code != 403:
                            failures.append(f"{method} {path} for some docs: {r.status_code}")
                        r = await call(method, path, token(role, docs=("*",)))
                    else:
                        r = await call(method, path, token(role))
                    if r.status_code in (401, 403) or r.status_code >= 500:
                        failures.append(f"{method} {path} as {role}: {r.status_code} {r.text[:80]}")
            if need is None:
                r = await call(method, path, None)
                if r.status_code in (401, 403) or r.status_code >= 500:
                    failures.append(f"public {method} {path}: {r.status_code}")
    assert not failures, "\n".join(failures)


async def test_delete_doc_is_admin_only_and_closes_its_connections(jserver: RunningServer) -> None:
    await seed(jserver)
    conn = await open_raw(jserver, DOC, token("read", user="reader"))
    async with httpx.AsyncClient(base_url=jserver.url) as http:
        url = f"/api/docs/{DOC}"
        r = await http.delete(url, headers={"authorization": f"Bearer {token('write')}"})
        assert r.status_code == 403
        assert conn.closed is None
        r = await http.delete(url, headers={"authorization": f"Bearer {token('admin')}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"doc": DOC, "deleted": True, "closed": 1}
        await eventually(lambda: conn.closed, what="the reader is closed")
        assert conn.closed is not None and conn.closed[0] == 4404
        assert await jserver.backend.store.head(DOC) == 0
        assert await jserver.backend.store.doc_info(DOC) is None
        assert await jserver.backend.store.latest_snapshot(DOC) is None, "no final snapshot"
        r = await http.delete(url, headers={"authorization": f"Bearer {token('admin')}"})
        assert r.status_code == 410 and r.json()["error"] == "Deleted"  # deleted already
        admin = {"authorization": f"Bearer {token('admin')}"}
        r = await http.delete("/api/docs/..%2Fetc", headers=admin)
        assert r.status_code in (400, 404)


async def test_bearer_and_query_token_on_http(jserver: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=jserver.url) as http:
        assert (await http.get("/api/docs")).status_code == 401
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {token('read')}"})
        assert r.status_code == 200
        r = await http.get("/api/docs", params={"token": token("read")})
        assert r.status_code == 200
        # the header's "Bearer " copied into the query (y-websocket's params) is read too
        r = await http.get("/api/docs", params={"token": f"Bearer {token('read')}"})
        assert r.status_code == 200
        r = await http.get("/api/docs", headers={"authorization": "Basic YWxpY2U6eA=="})
        assert r.status_code == 401 and r.json()["error"] == "AuthError"


# --- modes, keys, the CLI -------------------------------------------------------------------


def request(query: str = "", headers: dict[str, str] | None = None) -> Request:
    """A starlette Request as an extension's authenticate() receives it."""
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": "GET", "path": "/api/docs", "query_string": query.encode(),
             "headers": raw}  # fmt: skip
    return Request(scope)


async def aidentify(backend: Backend, token: str | None, user: str | None) -> Identity:
    """Who the backend's extensions say a request with ?token= and ?user= is."""
    query = urlencode({k: v for k, v in (("token", token), ("user", user)) if v})
    return await backend.extensions.authenticate(request(query))


def identify(backend: Backend, token: str | None, user: str | None) -> Identity:
    return asyncio.run(aidentify(backend, token, user))


def test_open_mode_says_so_loudly(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="palimpsest.auth"):
        backend = Backend(settings)
    assert backend.extension(OpenAccess) is not None and backend.extension(JWTAuth) is None
    assert any(
        OPEN_MODE_WARNING in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    ident = identify(backend, None, "bob")
    assert (ident.user, ident.role) == ("bob", "admin")


@pytest.mark.parametrize(
    ("args", "open_warnings", "banners"),
    [
        ([], 1, 0),  # logged by the open mode's extension, not printed again
        (["--log-level", "error"], 1, 0),  # the log hides it: printed instead
        (["--jwt-secret", SECRET], 0, 1),
    ],
)
def test_serve_names_its_auth_mode_once(
    tmp_path: Path, args: list[str], open_warnings: int, banners: int
) -> None:
    """`palimpsest serve`'s start-up says which auth mode it is in, exactly once."""
    with ServerProcess(tmp_path, extra_args=args) as srv:
        text = srv.log_text()
    assert text.count(OPEN_MODE_WARNING) == open_warnings, text
    # said once per line: the log line had "palimpsest.auth: palimpsest: WARNING: no ..."
    assert "palimpsest.auth: palimpsest:" not in text and "WARNING: WARNING" not in text, text
    if open_warnings and not args:
        assert f"WARNING palimpsest.auth: {OPEN_MODE_WARNING}" in text, text
    if args == ["--log-level", "error"]:
        assert f"palimpsest: WARNING: {OPEN_MODE_WARNING}" in text, text
    assert text.count("palimpsest: auth: signed tokens required (HS256)") == banners, text


def test_jwt_mode_ignores_user_param_and_needs_a_token(jwt_settings: Settings) -> None:
    backend = Backend(jwt_settings)
    assert backend.extension(OpenAccess) is None and backend.extension(JWTAuth) is not None
    with pytest.raises(AuthError, match="a token"):
        identify(backend, None, "bob")
    ident = identify(backend, token("read", user="carol", docs=("a*",)), "bob")
    assert (ident.user, ident.role, ident.docs) == ("carol", "read", ("a*",))
    # the Bearer header carries it on HTTP
    bearer = token("write", user="dan")
    ident2 = asyncio.run(backend.extensions.authenticate(
        request(headers={"Authorization": f"Bearer {bearer}"})))  # fmt: skip
    assert (ident2.user, ident2.role) == ("dan", "write")
    authorize(ident, "abc", "read")
    with pytest.raises(Forbidden):
        authorize(ident, "abc", "write")
    with pytest.raises(Forbidden):
        authorize(ident, "bcd", "read")


def _pem(public: Any) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_public_key_tokens(kind: str, settings: Settings, tmp_path: Path) -> None:
    private: Any = (
        rsa.generate_private_key(65537, 2048)
        if kind == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pub = tmp_path / "key.pub.pem"
    pub.write_bytes(_pem(private.public_key()))
    settings.jwt_public_key = str(pub)
    backend = Backend(settings)
    good = mint(private, "dora", "write", ["*"], 60, algorithm=kind)
    assert (await aidentify(backend, good, None)).user == "dora"
    # the public key is not an HMAC secret: algorithm confusion is refused
    forged = jwt.encode(
        {"sub": "eve", "role": "admin", "docs": ["*"], "exp": int(time.time()) + 60},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(AuthError, match="algorithm"):
        await aidentify(backend, forged, None)
    other: Any = (
        rsa.generate_private_key(65537, 2048)
        if kind == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    with pytest.raises(AuthError, match="signature"):
        await aidentify(backend, mint(other, "eve", "admin", ["*"], 60, algorithm=kind), None)
    async with run_server(settings, backend) as srv:
        raw = await open_raw(srv, "pk-doc", good)
        assert raw.closed is None
        await raw.aclose()
        ws = await websockets.connect(ws_url(srv, "pk-doc", forged), compression=None)
        assert (await close_of(ws))[0] == 4401


def test_cli_mints_tokens_the_server_accepts(
    jwt_settings: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t0 = time.time()
    code = cli_main(
        [
            "token",
            "--user",
            "erin",
            "--role",
            "read",
            "--docs",
            "a*,b",
            "--docs",
            "c",
            "--ttl",
            "120",
            "--secret",
            SECRET,
        ]
    )
    t1 = time.time()
    assert code == 0
    out, err = capsys.readouterr()
    assert err == ""  # --docs given: nothing to say
    tok = out.strip()
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["role"], claims["docs"]) == ("erin", "read", ["a*", "b", "c"])
    assert int(t0) + 120 <= claims["exp"] <= int(t1) + 121  # minted in between, 120 s ahead
    ident = identify(Backend(jwt_settings), tok, None)
    assert ident.docs == ("a*", "b", "c")
    # with an EC private key: ES256
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "k.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert cli_main(["token", "--user", "f", "--private-key", str(pem)]) == 0
    out, err = capsys.readouterr()
    tok = out.strip()  # alone on stdout; without --docs, stderr says what it grants
    assert err == "palimpsest token: no --docs: this token opens every document as write\n"
    assert jwt.get_unverified_header(tok)["alg"] == "ES256"
    assert jwt.decode(tok, key.public_key(), algorithms=["ES256"])["docs"] == ["*"]
    monkeypatch.delenv("PALIMPSEST_JWT_SECRET", raising=False)
    assert cli_main(["token", "--user", "g"]) == 2, "no secret, no key: refused"
    capsys.readouterr()
    # --jwt-secret, as `serve` names it, is taken too
    assert cli_main(["token", "--user", "j", "--jwt-secret", SECRET]) == 0
    assert jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])["sub"] == "j"
    # no token a server with that key would refuse: it is checked as the server checks it
    for argv, says in (
        (["--user", "", "--secret", SECRET], "token claim 'sub' must be a user name"),
        (["--user", "h", "--secret", "short"], "the JWT secret is 5 bytes long"),
        (["--user", "h", "--secret", SECRET, "--ttl", "1e9"], "token claim 'exp'"),
    ):
        assert cli_main(["token", *argv]) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and f"a server would refuse this token: {says}" in err, err


async def test_document_list_shows_only_granted_documents(jserver: RunningServer) -> None:
    store = jserver.backend.store
    for name in ("team-a", "team-b", "secret"):
        await store.append([(name, [NewEvent("u", "edit", an_update(name))])])
    tok = token("read", docs=("team-*",), user="carol")
    async with httpx.AsyncClient(base_url=jserver.url) as http:
        r = await http.get("/api/docs", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200
    assert sorted(d["doc"] for d in r.json()["docs"]) == ["team-a", "team-b"]


#: names that read as another or as nothing: a C1 control (U+0085 ends a line in some
#: readers), a bidi override ("ecila" shown as "alice"), a zero-width space, a line
#: separator, private use, blanks, spaces at either end
#: woman technologist (ZWJ), Persian "I want" (ZWNJ), the flag of Scotland (tag characters)
JOINED_NAMES = (
    "\U0001f469\u200d\U0001f4bb dev",
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
)
UNPRINTABLE_NAMES = ("a\x85b", "\u202eecila", "al\u200bice", "a\u2028b", "\ue000", " ",
                     "\u00a0\u3000", " alice", "alice ", "a\nb")  # fmt: skip


async def test_user_names_that_do_not_print_are_refused(settings: Settings) -> None:
    """The rule "1-64 printable characters" let C1 controls, bidi overrides and a name of one
    space through, as ?user= in open mode and as a token's sub."""
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        for name in UNPRINTABLE_NAMES:
            r = await http.put(
                f"/api/docs/names/text?{urlencode({'user': name})}", json={"text": name}
            )
            assert r.status_code == 401 and "user name" in r.json()["detail"], (name, r.text)
        url = f"{server.ws_url}/names?{urlencode({'user': chr(0x202E) + 'ecila'})}"
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4401, ws.close_reason
        r = await http.get("/api/me", params={"user": "\u0634" * 65})
        assert r.status_code == 401 and "got 65 code points" in r.json()["detail"], r.text
        r = await http.get("/api/me", params={"user": "\u0634" * 64})
        assert r.status_code == 200, r.text
        # (joiners are format characters that names need: emoji sequences, Persian)
        legit = ("alice", "Ada Lovelace", "José", "李雷", "a b", "\U0001f600", *JOINED_NAMES)
        for name in legit:
            r = await http.put(
                f"/api/docs/names/text?{urlencode({'user': name})}", json={"text": name}
            )
            assert r.status_code == 200, (name, r.text)
        events = (await http.get("/api/docs/names/events")).json()["events"]
        assert [e["actor"] for e in events] == list(legit)
    settings.jwt_secret = SECRET
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        for name in UNPRINTABLE_NAMES:
            tok = token("write", docs=("*",), user=name)
            r = await http.get("/api/docs", headers={"authorization": f"Bearer {tok}"})
            assert r.status_code == 401 and "'sub'" in r.json()["detail"], (name, r.text)


# --- key rotation ----------------------------------------------------------------------------

OLD_SECRET = "old-secret-of-at-least-thirty-two-bytes!"
NEW_SECRET = "new-secret-of-at-least-thirty-two-bytes!"


async def test_key_rotation_accepts_every_listed_key_and_kid_selects(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several keys at once, the current first: tokens signed with any of them are
    accepted on the websocket and over HTTP; a token naming a kid is verified with that
    key alone; `palimpsest token` signs with the current secret and names its kid.
    Before, "S1,S2" was one secret, and neither S1's nor S2's tokens verified."""
    idp = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "idp.pub.pem"
    pub.write_bytes(_pem(idp.public_key()))
    settings.jwt_secret = f"new:{NEW_SECRET}, old:{OLD_SECRET}"
    settings.jwt_public_key = f"idp-1:{pub}"

    def tok(secret: Any, kid: str | None = None, algorithm: str = "HS256") -> str:
        return mint(secret, "rita", "write", ["rot-*"], 600, algorithm=algorithm, kid=kid)

    accepted = {
        "old key, its kid": tok(OLD_SECRET, "old"),
        "new key, its kid": tok(NEW_SECRET, "new"),
        "old key, no kid": tok(OLD_SECRET),
        "public key, its kid": tok(idp, "idp-1", "ES256"),
    }
    refused = {
        "old key named as the new": (tok(OLD_SECRET, "new"), "does not verify with key 'new'"),
        "a key nobody listed": (tok(SECRET), "signature does not verify"),
        "HS256 naming the public key": (tok(NEW_SECRET, "idp-1"), "not an HS256 key"),
        # a kid names one key: a listed key's token naming another is refused, saying so
        "new key, a kid unknown here": (
            tok(NEW_SECRET, "elsewhere"),
            "token key id 'elsewhere' is not one of the server's keys (HS256 new, HS256 old, "
            "ES256 idp-1)",
        ),
    }
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        for what, t in accepted.items():
            raw = await open_raw(srv, "rot-doc", t)
            assert raw.closed is None, (what, raw.closed)
            await raw.ws.send(P.encode_sync_update(an_update(what, 5000 + len(what))))
            r = await http.get("/api/docs", headers={"authorization": f"Bearer {t}"})
            assert r.status_code == 200, (what, r.text)
            await raw.aclose()
        for what, (t, says) in refused.items():
            ws = await websockets.connect(ws_url(srv, "rot-doc", t), compression=None)
            code, reason = await close_of(ws)
            assert code == 4401 and says in reason, (what, code, reason)
            r = await http.get("/api/docs", headers={"authorization": f"Bearer {t}"})
            assert r.status_code == 401 and says in r.json()["detail"], (what, r.text)
        # the CLI signs with the current (first) secret and names it
        assert cli_main(["token", "--user", "sam", "--docs", "rot-*", "--secret",
                         settings.jwt_secret]) == 0  # fmt: skip
        minted = capsys.readouterr().out.strip()
        assert jwt.get_unverified_header(minted)["kid"] == "new"
        assert jwt.decode(minted, NEW_SECRET, algorithms=["HS256"])["sub"] == "sam"
        raw = await open_raw(srv, "rot-doc", minted)
        assert raw.closed is None
        await raw.aclose()
    # the old key retired: its tokens are refused, the new key's still pass
    settings.jwt_secret = f"new:{NEW_SECRET}"
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        old = {"authorization": f"Bearer {accepted['old key, its kid']}"}
        assert (await http.get("/api/docs", headers=old)).status_code == 401
        new = {"authorization": f"Bearer {accepted['new key, its kid']}"}
        assert (await http.get("/api/docs", headers=new)).status_code == 200


def test_key_lists_are_checked_at_start(settings: Settings) -> None:
    """Each listed secret is held to the length rule; two keys may not share a kid."""
    settings.jwt_secret = f"a:{NEW_SECRET},b:short"
    with pytest.raises(ValueError, match="secret 'b' is 5 bytes long"):
        Backend(settings)
    settings.jwt_secret = f"a:{NEW_SECRET},a:{OLD_SECRET}"
    with pytest.raises(ValueError, match="two JWT keys are named 'a'"):
        Backend(settings)


# --- revocation ------------------------------------------------------------------------------


async def test_revoking_a_user_closes_their_sockets_and_refuses_their_old_tokens(
    jwt_settings: Settings, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, a fired user kept their open sockets and their tokens until exp: nothing
    but a new secret (everyone logged out) shut them out."""
    old = token("write", user="fired", now=time.time() - 60)
    admin = {"authorization": f"Bearer {token('admin', docs=('*',), user='boss')}"}
    async with run_server(jwt_settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        ws_conn = await open_raw(srv, DOC, old)
        hp = await websockets.connect(f"{srv.url.replace('http', 'ws')}/hocuspocus")
        await hp.send(H.prefix(DOC) + bytes([H.AUTH, H.AUTH_TOKEN]) + P.write_var_string(old))
        while True:  # (its answer to the auth message, and the sync it starts)
            frame = H.decode(await asyncio.wait_for(hp.recv(), 10))
            if isinstance(frame, H.Frame) and frame.type == H.AUTH:
                assert frame.body[0] == H.AUTH_AUTHENTICATED, frame
                break
        other = await open_raw(srv, DOC, token("write", user="stays"))
        assert ws_conn.closed is None and other.closed is None
        # only an admin of every document may revoke
        r = await http.post("/api/revocations/fired",
                            headers={"authorization": f"Bearer {token('admin')}"})  # fmt: skip
        assert r.status_code == 403 and ws_conn.closed is None
        r = await http.post("/api/revocations/fired", headers=admin)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["user"], body["revoked"], body["by"], body["closed"]) == (
            "fired", True, "boss", 2)  # fmt: skip
        await eventually(lambda: ws_conn.closed, what="the revoked user's socket closes")
        assert ws_conn.closed is not None
        assert ws_conn.closed[0] == 4401 and "access revoked for 'fired'" in ws_conn.closed[1]
        code, reason = await close_of(hp)
        assert code == 4401 and "access revoked" in reason
        assert other.closed is None, "another user's socket stays open"
        # their old token, and one that says not when it was issued, are refused
        for t in (old, no_iat("fired")):
            ws = await websockets.connect(ws_url(srv, DOC, t), compression=None)
            code, reason = await close_of(ws)
            assert code == 4401 and reason.startswith("access revoked"), reason
            r = await http.get("/api/docs", headers={"authorization": f"Bearer {t}"})
            assert r.status_code == 401 and "access revoked" in r.json()["detail"]
        # a token issued at `since` (LEEWAY after the revocation) works: minted with that
        # iat once this clock is within LEEWAY of it, as an issuer that waited would
        since = int(datetime.fromisoformat(body["since"]).timestamp())
        await eventually(lambda: time.time() >= since - LEEWAY, what="since within LEEWAY")
        fresh = token("write", user="fired", now=since)
        raw = await open_raw(srv, DOC, fresh)
        assert raw.closed is None
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {fresh}"})
        assert r.status_code == 200
        r = await http.get("/api/revocations", headers=admin)
        assert [u["user"] for u in r.json()["revoked"]] == ["fired"]
        # lifted: the old token is let in again (until it expires)
        assert (await http.delete("/api/revocations/fired", headers=admin)).json() == {
            "user": "fired", "revoked": False}  # fmt: skip
        assert (await http.delete("/api/revocations/fired", headers=admin)).status_code == 404
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {old}"})
        assert r.status_code == 200
        # `palimpsest revoke` beside the running server: it reads the store again
        assert await asyncio.to_thread(cli_main, ["revoke", "fired", "--db", str(db_path)]) == 0
        assert "fired revoked" in capsys.readouterr().out
        await eventually(lambda: raw.closed, timeout=15, what="closed after the CLI's revocation")
        assert raw.closed is not None and raw.closed[0] == 4401
        await other.aclose()
    # kept in the store: a restarted server refuses the old token still
    async with run_server(jwt_settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {old}"})
        assert r.status_code == 401 and "access revoked" in r.json()["detail"]
    cli = partial(asyncio.to_thread, cli_main)
    assert await cli(["revoke", "--list", "--db", str(db_path)]) == 0
    assert json.loads(capsys.readouterr().out)["user"] == "fired"
    assert await cli(["revoke", "--lift", "fired", "--db", str(db_path)]) == 0
    assert capsys.readouterr().out == "palimpsest revoke: fired no longer revoked\n"
    # lifting again is done already, as revoking again is (it exited 1)
    assert await cli(["revoke", "--lift", "fired", "--db", str(db_path)]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("palimpsest revoke: fired was not revoked: nothing to lift\n", "")


async def test_a_revocation_refuses_a_token_minted_before_it_by_an_issuer_whose_clock_is_fast(
    jwt_settings: Settings,
) -> None:
    """Before, a token minted just before the revocation by an issuer whose clock ran a
    few seconds ahead (iat = now + 5, inside the 30 s leeway the token is verified with)
    still got 200 after it, while older tokens got 401: its iat was after the revocation's
    second. A revocation refuses tokens issued up to the leeway after it too."""
    ahead = token("write", user="fired", now=time.time() + 5)
    admin = {"authorization": f"Bearer {token('admin', docs=('*',), user='boss')}"}
    async with run_server(jwt_settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {ahead}"})
        assert r.status_code == 200, r.text  # (accepted: its issuer's clock is within LEEWAY)
        at = time.time()
        r = await http.post("/api/revocations/fired", headers=admin)
        assert r.status_code == 200, r.text
        since = int(datetime.fromisoformat(r.json()["since"]).timestamp())
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {ahead}"})
        assert r.status_code == 401 and "access revoked" in r.json()["detail"], r.text
        assert since > at + LEEWAY  # (what it answers says so)
        ws = await websockets.connect(ws_url(srv, DOC, ahead), compression=None)
        code, reason = await close_of(ws)
        assert code == 4401 and reason.startswith("access revoked"), reason
        # one issued up to LEEWAY after the revocation is refused as well; one issued at
        # `since` works (minted with that iat once this clock is within LEEWAY of it)
        r = await http.get("/api/docs", headers={
            "authorization": f"Bearer {token('write', user='fired', now=since - 1)}"})  # fmt: skip
        assert r.status_code == 401, r.text
        await eventually(lambda: time.time() >= since - LEEWAY, what="since within LEEWAY")
        fresh = token("write", user="fired", now=since)
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {fresh}"})
        assert r.status_code == 200, r.text


# --- audience and issuer --------------------------------------------------------------------


async def test_audience_and_issuer_are_required_when_set(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, aud and iss were never checked: any token signed with the key was taken,
    one minted for another service with the same secret (or identity provider) too."""

    def tok(**claims: Any) -> str:
        body = {"sub": "ida", "role": "write", "docs": ["aud-*"], "iat": int(time.time()),
                "exp": int(time.time()) + 600, **claims}  # fmt: skip
        return jwt.encode(body, SECRET, algorithm="HS256")

    foreign = tok(aud="billing", iss="https://id.example")
    settings.jwt_secret = SECRET
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        # unset: not checked, as before
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {foreign}"})
        assert r.status_code == 200
    settings.jwt_audience = "collab, collab-staging"
    settings.jwt_issuer = "https://id.example"
    cases = {
        "both, the first audience": (tok(aud="collab", iss="https://id.example"), None),
        "an aud list naming the second": (
            tok(aud=["x", "collab-staging"], iss="https://id.example"),
            None,
        ),  # fmt: skip
        "another service's": (foreign, "audience (aud) is not this server's"),
        "no aud": (tok(iss="https://id.example"), 'missing the "aud" claim'),
        "no iss": (tok(aud="collab"), 'missing the "iss" claim'),
        "another issuer": (tok(aud="collab", iss="https://evil.example"), "issuer (iss)"),
    }
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        for what, (t, says) in cases.items():
            r = await http.get("/api/docs", headers={"authorization": f"Bearer {t}"})
            if says is None:
                assert r.status_code == 200, (what, r.text)
                raw = await open_raw(srv, "aud-doc", t)
                assert raw.closed is None, what
                await raw.aclose()
            else:
                assert r.status_code == 401 and says in r.json()["detail"], (what, r.text)
                ws = await websockets.connect(ws_url(srv, "aud-doc", t), compression=None)
                code, reason = await close_of(ws)
                assert code == 4401 and says in reason, (what, reason)
        # the CLI mints what the server with the same environment requires
        monkeypatch.setenv("PALIMPSEST_JWT_AUDIENCE", settings.jwt_audience)
        monkeypatch.setenv("PALIMPSEST_JWT_ISSUER", settings.jwt_issuer)
        monkeypatch.setenv("PALIMPSEST_JWT_SECRET", SECRET)
        assert await asyncio.to_thread(cli_main, ["token", "--user", "ida", "--docs", "aud-*"]) == 0
        minted = capsys.readouterr().out.strip()
        claims = jwt.decode(minted, options={"verify_signature": False})
        assert (claims["aud"], claims["iss"]) == ("collab", "https://id.example")
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {minted}"})
        assert r.status_code == 200
    # checking them needs keys: an open server would check nothing
    with pytest.raises(ValueError, match="jwt_audience .* needs a JWT secret"):
        Settings(jwt_audience="collab").check()


@pytest.mark.parametrize(
    "pattern",
    ["日本-*", "café", "-notes*", "notes/*", "[é]*", "a b", "x" * 129 + "*", "*[é]", "[é-"],
)
def test_token_refuses_docs_patterns_no_document_name_can_match(
    pattern: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pattern that no valid name matches made a token that could open nothing (names
    are ASCII letters, digits and _ . ~ : @ -): refused with the reason, exit 2."""
    code = cli_main(["token", "--user", "u", "--docs", f"ok-*,{pattern}", "--secret", SECRET])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (pattern, out, err)
    assert f"--docs pattern {pattern!r} matches no document name" in err, err
    assert "ASCII letters" in err, err


@pytest.mark.parametrize(
    "pattern", ["*", "team-*", "a?c", "[!x]*", "*-", "*.md", "[a-c]?", "_x~y:z@w.v-1", "x[-é]"]
)
def test_token_takes_docs_patterns_some_name_matches(
    pattern: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["token", "--user", "u", "--docs", pattern, "--secret", SECRET])
    out, err = capsys.readouterr()
    assert code == 0 and out.count(".") == 2, (pattern, err)


async def test_a_bad_document_name_is_said_to_need_ascii(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for name in ("日本語", "café"):
            r = await http.get(f"/api/docs/{name}/events")
            assert r.status_code == 400
            assert "allowed: ASCII letters, digits and _ . ~ : @ -" in r.json()["detail"]


async def test_time_claims_that_are_not_numbers_are_refused_as_such(
    jserver: RunningServer,
) -> None:
    """A field test: an ``iat`` written as a string ("1796600000") was taken (PyJWT reads
    it with int()), although docs/auth.md says a number, while an ``exp`` string was
    refused; and ``exp: true`` was refused as "token expired" (int(True) is 1, 1970).
    Each time claim that is not a number is refused saying so."""
    now = int(time.time())

    def tok(**claims: Any) -> str:
        body = {"sub": "ida", "role": "write", "docs": ["*"], "exp": now + 600, **claims}
        return jwt.encode(body, SECRET, algorithm="HS256")

    cases = {
        "iat as a string": (tok(iat=str(now)), "claim 'iat' must be a number"),
        "iat true": (tok(iat=True), "claim 'iat' must be a number"),
        "iat a string ahead": (tok(iat=str(now + 86400)), "claim 'iat' must be a number"),
        "exp true": (tok(exp=True), "claim 'exp' must be a number"),
        "exp a past string": (tok(exp=str(now - 7200)), "claim 'exp' must be a number"),
        "exp a string ahead": (tok(exp=str(now + 600)), "claim 'exp' must be a number"),
        "nbf as a string": (tok(nbf=str(now)), "claim 'nbf' must be a number"),
    }
    async with httpx.AsyncClient(base_url=jserver.url) as http:
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {tok(iat=now)}"})
        assert r.status_code == 200, r.text  # (a number is taken)
        for what, (t, says) in cases.items():
            r = await http.get("/api/docs", headers={"authorization": f"Bearer {t}"})
            assert r.status_code == 401, (what, r.text)
            assert says in r.text, (what, r.text)
            assert "expired" not in r.text, (what, r.text)
