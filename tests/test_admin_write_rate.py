"""An admin's HTTP writes have a bucket of their own (max_http_writes_per_second), keyed
by the user their verified token names, not by their address: an admin running a bulk
operation from the office NAT its users write from neither gets the users' 429s nor
throttles them. Only a token the server verifies as role admin gets it: a forged or
lesser one is counted against its address as before (docs/security.md)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, run_server
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.routing import Mount
from test_auth import token
from test_embedding import running

from palimpsest import Extension, Identity, Palimpsest
from palimpsest.auth.tokens import JWTAuth
from palimpsest.settings import Settings

SECRET = "test-secret-of-at-least-thirty-two-bytes!"


def rated(settings: Settings) -> Settings:
    settings.jwt_secret = SECRET
    # bursts of 1, one back every 2 s: the second write in a row from a bucket is refused
    settings.max_http_writes_per_second = 0.5
    return settings


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient]]:
    """The server on these settings, and an HTTP client of it."""
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        yield server, http


@pytest.fixture
async def rated_server(
    settings: Settings,
) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient]]:
    """The server with the secret and a write rate of 0.5 a second (rated), and a client."""
    async with serving(rated(settings)) as served:
        yield served


def bob_and_root() -> tuple[str, str]:
    """A writer's token and an admin's (minted when a test runs)."""
    return token("write", ("rated",), user="bob"), token("admin", ("*",), user="root")


async def put(http: httpx.AsyncClient, tok: str, text: str) -> httpx.Response:
    return await http.put(
        "/api/docs/rated/text",
        json={"text": text},
        headers={"authorization": f"Bearer {tok}"},
    )


async def test_an_admin_writes_from_a_bucket_of_their_own(
    rated_server: tuple[RunningServer, httpx.AsyncClient],
) -> None:
    _, http = rated_server
    user, admin = bob_and_root()
    assert (await put(http, user, "bob 1")).status_code == 200
    r = await put(http, user, "bob 2")
    assert r.status_code == 429, r.text  # the address's bucket is empty
    assert "too many write requests from 127.0.0.1" in r.json()["detail"]
    r = await put(http, admin, "admin 1")
    assert r.status_code == 200, r.text  # not the address's bucket
    r = await put(http, admin, "admin 2")
    assert r.status_code == 429, r.text  # the same rate, for the admin's own
    assert "too many write requests from admin root" in r.json()["detail"]
    # a token claiming admin that the server does not verify: the address's bucket
    forged = token("admin", ("*",), user="root", secret="another-secret-also-thirty-two-bytes!")
    r = await put(http, forged, "forged")
    assert r.status_code == 429, r.text
    assert "from 127.0.0.1" in r.json()["detail"]


async def test_an_admin_does_not_throttle_the_users_of_their_address(
    rated_server: tuple[RunningServer, httpx.AsyncClient],
) -> None:
    server, http = rated_server
    user, admin = bob_and_root()
    assert (await put(http, admin, "admin 1")).status_code == 200
    assert (await put(http, admin, "admin 2")).status_code == 429
    r = await put(http, user, "bob 1")
    assert r.status_code == 200, r.text
    assert await server.backend.store.head("rated") == 2


async def test_open_mode_counts_everyone_by_address(db_path: Path, settings: Settings) -> None:
    """Open mode makes everyone admin by a name they choose: no bucket of their own."""
    settings.max_http_writes_per_second = 0.5
    claims = token("admin", ("*",), user="root")
    async with serving(settings) as (_, http):
        assert (await put(http, claims, "one")).status_code == 200
        r = await put(http, claims, "two")
        assert r.status_code == 429, r.text
        assert "from 127.0.0.1" in r.json()["detail"]


class CountedTokens(Extension):
    """An app's own authenticate hook: the built-in tokens' verification, counting calls."""

    def __init__(self) -> None:
        #: the document each call was asked about (conn.path_params, docs/extending.md)
        self.asked: list[str | None] = []
        self.tokens = JWTAuth(SECRET)

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        self.asked.append(conn.path_params.get("doc"))
        return await self.tokens.authenticate(conn)


async def test_an_admin_write_asks_the_apps_authenticate_once(tmp_path: Path) -> None:
    """The guard verifies an admin's token for the bucket; the route takes that identity
    (its role and documents still checked for the route) rather than asking the app's
    hook, and verifying the token, a second time."""
    hook = CountedTokens()
    settings = Settings(max_http_writes_per_second=0.5, unload_after_seconds=0.5)
    collab = Palimpsest(f"sqlite:///{tmp_path / 'collab.db'}", [hook], settings=settings)
    app = Starlette(routes=[Mount("/collab", app=collab)], lifespan=collab.lifespan)
    async with running(app) as host, httpx.AsyncClient(base_url=f"http://{host}/collab") as http:
        r = await put(http, token("admin", ("*",), user="root"), "admin 1")
        assert r.status_code == 200, r.text
        assert hook.asked == ["rated"]  # once, seeing the request as its route does
        r = await put(http, token("admin", ("*",), user="root"), "admin 2")
        assert r.status_code == 429, r.text  # the admin's own bucket, as ever
        assert "too many write requests from admin root" in r.json()["detail"]
        # the identity the guard verified is still held to the route's document
        r = await put(http, token("admin", ("other",), user="ops"), "elsewhere")
        assert r.status_code == 403, r.text
        # a bad token claiming admin is still refused by the route
        forged = token("admin", ("*",), user="eve", secret="another-secret-also-thirty-two-bytes!")
        r = await put(http, forged, "forged")
        assert r.status_code == 401, r.text
        assert await collab.backend.store.head("rated") == 1
