"""An app's own logins (an extension's ``authenticate``, docs/extending.md): the
``exp`` and ``iat`` of the Identity it returns, and what the server does with them."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import websockets
from conftest import closed_with, eventually, run_server
from starlette.requests import HTTPConnection
from yclient import connect

from palimpsest import Extension, Identity
from palimpsest.auth.identity import LEEWAY
from palimpsest.auth.tokens import JWTAuth, mint
from palimpsest.backend import Backend
from palimpsest.errors import AuthError
from palimpsest.features import builtin_extensions
from palimpsest.settings import Settings

DOC = "app-doc"


class AppLogins(Extension):
    """Sessions of the app's own (?session=NAME on the websocket, an X-Session header on
    HTTP), each with its own exp (and no iat)."""

    credentials = "an app session"
    reads_cookies = False

    def __init__(self) -> None:
        self.sessions: dict[str, Identity] = {}

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        name = conn.headers.get("x-session") or conn.query_params.get("session")
        if name is None:
            return None
        if name not in self.sessions:
            raise AuthError("no such session")
        return self.sessions[name]


async def test_an_app_identity_expires_at_its_exp_a_jwt_with_the_leeway(
    settings: Settings,
) -> None:
    """The 30 s leeway is for the clock skew between a token's issuer and this server:
    it was given to every identity, so an app's session whose exp passed kept its socket
    (and its edits) for 30 s more. An app's own identity now ends at its exp: its
    socket closes with 4401 then, and an identity already past it is refused."""
    logins = AppLogins()
    backend = Backend(settings, extensions=[logins, *builtin_extensions(settings)])
    async with run_server(settings, backend) as srv:
        logins.sessions["short"] = Identity("ann", "write", exp=time.time() + 1.5)
        ws = await websockets.connect(f"{srv.ws_url}/{DOC}?session=short", compression=None)
        # well within the leeway the socket kept before
        code, reason = await closed_with(ws, timeout=LEEWAY - 10)
        assert code == 4401 and "expired" in reason, (code, reason)
        logins.sessions["past"] = Identity("ann", "write", exp=time.time() - 1)
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.get(f"/api/docs/{DOC}/versions/head", headers={"x-session": "past"})
        assert r.status_code == 401 and "expired" in r.json()["detail"], r.text
        ws = await websockets.connect(f"{srv.ws_url}/{DOC}?session=past", compression=None)
        code, reason = await closed_with(ws)
        assert code == 4401 and "expired" in reason, (code, reason)
    # a token this server verified keeps the leeway: its issuer's clock may be ahead
    auth = JWTAuth("s" * 32)
    ident = auth.identify(mint("s" * 32, "bo", "write", ["*"], ttl=-LEEWAY + 20))
    left = ident.seconds_left()
    assert ident.exp is not None and ident.exp < time.time()
    assert left is not None and 10 < left <= 20


async def test_revoking_a_user_whose_identities_have_no_iat_says_to_ask_an_administrator(
    settings: Settings,
) -> None:
    """A revocation refuses identities issued before it, and those that do not say when
    they were issued (no ``iat``): an app that gives none shuts its user out until the
    revocation is lifted, however often they sign in. The refusal said "sign in again
    for a new one", which could not help; it now says to ask an administrator."""
    logins = AppLogins()
    backend = Backend(settings, extensions=[logins, *builtin_extensions(settings)])
    async with (
        run_server(settings, backend) as srv,
        httpx.AsyncClient(base_url=srv.url) as http,
    ):
        logins.sessions["boss"] = Identity("boss", "admin", exp=time.time() + 600)
        logins.sessions["dave"] = Identity("dave", "write", exp=time.time() + 600)
        async with connect(srv.ws_url, DOC, session="dave") as dave:  # (joined: synced)
            r = await http.post("/api/revocations/dave", headers={"x-session": "boss"})
            assert r.status_code == 200 and r.json()["closed"] == 1, r.text
            since = datetime.fromisoformat(r.json()["since"]).timestamp()
            await eventually(lambda: dave.ws.close_code, what="dave's socket closed")
            code, reason = dave.ws.close_code, dave.ws.close_reason
        assert code == 4401 and reason.startswith("access revoked for 'dave'"), reason
        assert "ask an administrator" in reason and "sign in again" not in reason, reason
        # signed in again: a new session, still without iat, still refused
        logins.sessions["dave"] = Identity("dave", "write", exp=time.time() + 600)
        r = await http.get("/api/docs", headers={"x-session": "dave"})
        assert r.status_code == 401, r.text
        detail = r.json()["detail"]
        assert "ask an administrator" in detail and "sign in again" not in detail, detail
        # a session that says when it began, at `since` (the revocation's second plus
        # LEEWAY) or after, gets in
        logins.sessions["dave"] = Identity("dave", "write", exp=time.time() + 600, iat=since)
        r = await http.get("/api/docs", headers={"x-session": "dave"})
        assert r.status_code == 200, r.text


async def test_api_me_says_who_the_server_takes_the_caller_for(settings: Settings) -> None:
    """GET /api/me: the page asks it, and does not ask a user the app signed in for a
    name; open mode says so (the name is the page's to choose there)."""
    logins = AppLogins()
    logins.sessions["s1"] = Identity("grace", "edit")
    builtins = builtin_extensions(settings, others=[logins])  # (open mode off, as in an app)
    backend = Backend(settings, extensions=[logins, *builtins])
    async with run_server(settings, backend) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.get("/api/me", headers={"x-session": "s1"})
        assert r.status_code == 200, r.text
        assert r.json() == {"user": "grace", "role": "edit", "open": False}
        r = await http.get("/api/me")
        assert r.status_code == 401, r.text
    async with run_server(Settings(db=settings.db, port=8000)) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.get("/api/me?user=ann")
            assert r.status_code == 200, r.text
            assert r.json() == {"user": "ann", "role": "admin", "open": True}
