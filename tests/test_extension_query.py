"""An app's own authenticate reading a query parameter of its own (``?api_key=``): the
extension declares it (``Extension.takes_query``) and every HTTP route takes it, rather
than refusing it with 400 as an unknown parameter. Starlette's TestClient on the app's
real lifespan, a real SQLite file."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.routing import Mount

from palimpsest import Extension, Identity, Palimpsest

with warnings.catch_warnings():
    # (this Starlette wants httpx2 for its TestClient; FastAPI's users have httpx)
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


class ApiKey(Extension):
    reads_cookies = False
    takes_query = ("api_key",)

    async def authenticate(self, conn: HTTPConnection) -> Identity | None:
        return Identity("alice", "write") if conn.query_params.get("api_key") == "k1" else None


class Undeclared(ApiKey):
    takes_query = ()


def client(tmp_path: Path, ext: Extension) -> Iterator[TestClient]:
    collab = Palimpsest(store=f"sqlite:///{tmp_path}/app.db", extensions=[ext])
    app = Starlette(routes=[Mount("/collab", app=collab)], lifespan=collab.lifespan)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def declared(tmp_path: Path) -> Iterator[TestClient]:
    yield from client(tmp_path, ApiKey())


@pytest.fixture
def undeclared(tmp_path: Path) -> Iterator[TestClient]:
    yield from client(tmp_path, Undeclared())


def test_a_declared_parameter_is_taken_on_every_route(declared: TestClient) -> None:
    c = declared
    r = c.put("/collab/api/docs/d/text?api_key=k1", json={"text": "hello"})
    assert r.status_code == 200, r.text
    r = c.get("/collab/api/docs/d/versions?api_key=k1")
    assert r.status_code == 200, r.text
    assert r.json()["roots"]["content"]["value"] == "hello"
    r = c.get("/collab/api/docs?api_key=k1")
    assert r.status_code == 200, r.text
    assert [d["doc"] for d in r.json()["docs"]] == ["d"]
    r = c.get("/collab/api/docs/d/events?api_key=k1&limit=5")
    assert r.status_code == 200, r.text
    assert r.json()["events"]
    r = c.get("/collab/api/docs/d/versions?api_key=wrong")
    assert r.status_code == 401, r.text
    with c.websocket_connect("/collab/ws/d?api_key=k1") as ws:
        assert ws.receive_bytes()[:1] == b"\x00"  # sync step 1: in
    # a parameter nobody takes is still refused, and the answer lists what every
    # route takes besides its own
    r = c.get("/collab/api/docs/d/versions?api_key=k1&sice=3")
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "'sice'" in detail and "token" in detail and "api_key" in detail, detail
    r = c.get("/collab/api/docs?api_key=k1&sice=3")
    assert r.status_code == 400, r.text
    assert "token" in r.json()["detail"] and "api_key" in r.json()["detail"]


def test_an_undeclared_parameter_is_refused(undeclared: TestClient) -> None:
    r = undeclared.get("/collab/api/docs/d/versions?api_key=k1")
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "'api_key'" in detail and "token" in detail, detail


class Claims(ApiKey):
    """Declares names the core routes read: each would cancel their guard."""


@pytest.mark.parametrize(
    "names, said",
    [
        # ?dry_run= taken on every route: DELETE /api/docs/x?dry_run=true deleted for real
        (("api_key", "dry_run"), "'dry_run'"),
        (("before", "seq"), "'before'"),
        (["api_key", "kind"], "'kind'"),
        # a body key: "text" in the query would no longer be told it goes in the body
        (("text",), "'text'"),
        # the credentials the built-in authenticators read
        (("token",), "'token'"),
        ({"user"}, "'user'"),
    ],
)
def test_a_name_the_core_routes_take_is_refused_at_start(
    tmp_path: Path, names: object, said: str
) -> None:
    ext = Claims()
    ext.takes_query = names  # type: ignore[assignment]
    with pytest.raises(ValueError) as e:
        Palimpsest(store=f"sqlite:///{tmp_path}/app.db", extensions=[ext])
    msg = str(e.value)
    assert "takes_query" in msg and said in msg and "Claims" in msg, msg


@pytest.mark.parametrize(
    "names",
    [
        "api_key",  # a plain string: split into a, p, i, _, k, e, y
        ("api_key", 3),
        None,
        {"api_key": 1},
    ],
)
def test_a_declaration_that_is_not_names_is_refused_at_start(tmp_path: Path, names: object) -> None:
    ext = Claims()
    ext.takes_query = names  # type: ignore[assignment]
    with pytest.raises(TypeError) as e:
        Palimpsest(store=f"sqlite:///{tmp_path}/app.db", extensions=[ext])
    msg = str(e.value)
    assert "takes_query" in msg and "Claims" in msg, msg


@pytest.mark.parametrize("name", ["", "api key", "a&b", "x=1", "é", "k" * 65, "1st"])
def test_an_implausible_name_is_refused_at_start(tmp_path: Path, name: str) -> None:
    ext = Claims()
    ext.takes_query = ("api_key", name)
    with pytest.raises(ValueError) as e:
        Palimpsest(store=f"sqlite:///{tmp_path}/app.db", extensions=[ext])
    assert "takes_query" in str(e.value) and repr(name[:40]) in str(e.value), str(e.value)


def test_refused_names_cover_every_core_parameter() -> None:
    """The set refused is derived from the routes' table: a parameter added to a route
    later is refused too."""
    from palimpsest.params import CREDENTIALS, TAKES, core_names

    names = core_names()
    for takes in TAKES.values():
        assert set(takes.query) <= names
        assert set(takes.body or ()) <= names
    assert set(CREDENTIALS) <= names


def test_a_good_list_or_set_declaration_is_taken(tmp_path: Path) -> None:
    ext = Claims()
    ext.takes_query = ["api_key", "x-tenant"]  # type: ignore[assignment]
    yield_ = client(tmp_path, ext)
    c = next(yield_)
    try:
        r = c.put("/collab/api/docs/d/text?api_key=k1&x-tenant=t", json={"text": "hi"})
        assert r.status_code == 200, r.text
        r = c.get("/collab/api/docs/d/versions?api_key=k1&x-tenant=t")
        assert r.status_code == 200, r.text
        # the core routes' guard is whole: ?dry_run= is still refused where not taken
        r = c.put("/collab/api/docs/d/text?api_key=k1&dry_run=true", json={"text": "no"})
        assert r.status_code == 400, r.text
        r = c.post("/collab/api/docs/d/undo?api_key=k1&dry_run=true")
        assert r.status_code == 400, r.text
        assert (
            c.get("/collab/api/docs/d/versions?api_key=k1").json()["roots"]["content"]["value"]
            == "hi"
        )
    finally:
        yield_.close()
