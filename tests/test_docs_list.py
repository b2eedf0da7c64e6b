"""GET /api/docs: pages selected by the store (prefix, after, limit, sort=name|updated, a
`next` cursor), a token's patterns as name ranges that never let another name through,
and a clear 400 for a parameter that is unknown or bad. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PG_URL, run_server

from palimpsest.auth.tokens import mint
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent

SECRET = "docs-list-secret-docs-list-secret"
#: document -> its updated time (ms); u1-p10 shares u1-p1's start, x_y is a LIKE trap
DOCS = {"u1-p1": 5, "u1-p2": 9, "u1-p10": 7, "u2-p1": 3, "u2-p2": 9, "team-a": 6,
        "team-b": 1, "teamx": 8, "x_y": 2, "xzy": 4, "A": 4}  # fmt: skip
BY_NAME = sorted(DOCS)
BY_UPDATED = sorted(DOCS, key=lambda d: (-DOCS[d], d))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'list.db'}"
        return
    from scaleout import fresh_schema

    async with fresh_schema(PG_URL) as url:
        yield url


@pytest.fixture
async def http(store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with run_server(Settings(store=store_url, jwt_secret=SECRET)) as srv:
        await srv.backend.store.append(
            [(d, [NewEvent("ann", "edit", b"\x00\x00", ts=ts)]) for d, ts in DOCS.items()]
        )
        async with httpx.AsyncClient(base_url=srv.url) as c:
            yield c


def auth(*docs: str, role: str = "read") -> dict[str, str]:
    return {"authorization": f"Bearer {mint(SECRET, 'ann', role, list(docs))}"}


async def get(http: httpx.AsyncClient, docs: tuple[str, ...], **params: Any) -> dict[str, Any]:
    r = await http.get("/api/docs", params=params, headers=auth(*docs))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def names(http: httpx.AsyncClient, docs: tuple[str, ...], **params: Any) -> list[str]:
    return [d["doc"] for d in (await get(http, docs, **params))["docs"]]


async def every_page(http: httpx.AsyncClient, docs: tuple[str, ...], **params: Any) -> list[str]:
    out: list[str] = []
    after = None
    for _ in range(50):
        body = await get(http, docs, **params, **({"after": after} if after else {}))
        assert len(body["docs"]) <= int(params.get("limit", 1000))
        out += [d["doc"] for d in body["docs"]]
        after = body["next"]
        if after is None:
            return out
        assert body["docs"], "a next cursor after an empty page"
    raise AssertionError("paging did not end")


async def test_pages_by_name_and_by_updated(http: httpx.AsyncClient) -> None:
    body = await get(http, ("*",))
    assert [d["doc"] for d in body["docs"]] == BY_NAME and body["next"] is None
    assert set(body) == {"position", "docs", "next"} and body["position"] > 0
    first = body["docs"][BY_NAME.index("u1-p2")]
    assert first == {"doc": "u1-p2", "head": 1, "updated": "1970-01-01T00:00:00.009Z",
                     "size": 2, "loaded": False, "locked": False}  # fmt: skip
    assert await names(http, ("*",), sort="updated") == BY_UPDATED
    assert BY_UPDATED[:3] == ["u1-p2", "u2-p2", "teamx"]  # newest first, ties by name
    assert await names(http, ("*",), sort="name") == BY_NAME
    page = await get(http, ("*",), limit=3)
    assert [d["doc"] for d in page["docs"]] == BY_NAME[:3] and page["next"] == BY_NAME[2]
    assert await names(http, ("*",), after="team-b") == BY_NAME[BY_NAME.index("team-b") + 1 :]
    assert await names(http, ("*",), after="1/team-b") == BY_NAME[BY_NAME.index("team-b") + 1 :]
    page = await get(http, ("*",), limit=2, sort="updated")
    assert page["next"] == "9/u2-p2"
    assert await names(http, ("*",), sort="updated", after="9/u2-p2", limit=2) == [
        "teamx",
        "u1-p10",
    ]
    # sort=updated after a plain name: after that document where it stands now
    assert await names(http, ("*",), sort="updated", after="u2-p2", limit=2) == ["teamx", "u1-p10"]
    r = await http.get("/api/docs", params={"sort": "updated", "after": "u9"}, headers=auth("*"))
    assert r.status_code == 404 and "no document 'u9'" in r.json()["detail"]
    r = await http.get(
        "/api/docs", params={"sort": "updated", "after": "u2-p2"}, headers=auth("u1-*")
    )
    assert r.status_code == 404  # a name the token does not grant is no position to start at
    for limit in (1, 2, 4, 11, 1000):
        assert await every_page(http, ("*",), limit=limit) == BY_NAME
        assert await every_page(http, ("*",), limit=limit, sort="updated") == BY_UPDATED
    # a last full page says there is no other
    assert (await get(http, ("*",), limit=len(DOCS)))["next"] is None


async def test_prefix(http: httpx.AsyncClient) -> None:
    assert await names(http, ("*",), prefix="u1-p1") == ["u1-p1", "u1-p10"]
    assert await names(http, ("*",), prefix="team") == ["team-a", "team-b", "teamx"]
    assert await names(http, ("*",), prefix="team-", sort="updated") == ["team-a", "team-b"]
    assert await names(http, ("*",), prefix="nothing") == []
    assert await every_page(http, ("*",), prefix="u", limit=2) == [
        "u1-p1", "u1-p10", "u1-p2", "u2-p1", "u2-p2"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("patterns", "params", "expected"),
    [
        # per-page tokens: exact names, never the name that merely starts with one
        (("u1-p1", "u1-p2"), {}, ["u1-p1", "u1-p2"]),
        (("u1-p1", "u1-p2"), {"sort": "updated"}, ["u1-p2", "u1-p1"]),
        (("u1-p1", "u1-p2"), {"prefix": "u1-p1"}, ["u1-p1"]),
        (("u1-p1", "u1-p2"), {"prefix": "u2"}, []),
        (("u1-p1", "u1-p2"), {"after": "u1-p1"}, ["u1-p2"]),
        (("u1-*",), {}, ["u1-p1", "u1-p10", "u1-p2"]),
        (("u1-*",), {"prefix": "u1-p1"}, ["u1-p1", "u1-p10"]),
        (("u1-*", "u1-p2"), {}, ["u1-p1", "u1-p10", "u1-p2"]),
        (("team-*", "u2-p1"), {"sort": "updated"}, ["team-a", "u2-p1", "team-b"]),
        # globs: "?" is one character (LIKE's "_" is not let through as a wildcard)
        (("u?-p1",), {}, ["u1-p1", "u2-p1"]),
        (("x_y",), {}, ["x_y"]),
        (("*y",), {}, ["x_y", "xzy"]),
        (("*-p1*",), {"prefix": "u1"}, ["u1-p1", "u1-p10"]),
        # a [set] is checked on what the store returns
        (("u[2]-p*", "team-[ab]"), {}, ["team-a", "team-b", "u2-p1", "u2-p2"]),
        (("u[!1]-p1",), {"limit": 1}, ["u2-p1"]),
        # nothing a token cannot name
        (("no/such",), {}, []),
        ((), {}, []),
    ],
)
async def test_a_token_lists_only_what_it_grants(
    http: httpx.AsyncClient, patterns: tuple[str, ...], params: dict[str, Any], expected: list[str]
) -> None:
    assert await names(http, patterns, **params) == expected
    assert await every_page(http, patterns, **{**params, "limit": 1}) == expected


async def test_credentials_in_the_query_are_no_unknown_parameter(
    http: httpx.AsyncClient,
) -> None:
    tok = mint(SECRET, "ann", "read", ["u2-*"])
    r = await http.get("/api/docs", params={"token": tok, "limit": 1})
    assert r.status_code == 200, r.text
    assert [d["doc"] for d in r.json()["docs"]] == ["u2-p1"] and r.json()["next"] == "u2-p1"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"page": "2"}, "unknown query parameter 'page'"),
        ({"limit": "0"}, "?limit= must be a whole number from 1 to 1000"),
        ({"limit": "1001"}, "from 1 to 1000"),
        ({"limit": "ten"}, "from 1 to 1000"),
        ({"limit": "-1"}, "from 1 to 1000"),
        ({"sort": "size"}, "?sort= must be one of name, updated"),
        ({"prefix": "a/b"}, "?prefix= must be (the start of) a document name"),
        ({"prefix": "x" * 129}, "at most 128"),
        ({"after": "a b"}, "?after= must be (the start of) a document name"),
        ({"sort": "updated", "after": "x/u1-p1"}, "must be the `next` of the previous page"),
        ({"sort": "updated", "after": "9/"}, "must be the `next` of the previous page"),
        ({"after": "9/"}, "must be the `next` of the previous page"),
        ({"sort": "updated", "after": "9/a b"}, "?after= must be (the start of)"),
        ([("limit", "1"), ("limit", "2")], "?limit= is given 2 times"),
    ],
)
async def test_a_bad_parameter_is_a_400_that_says_why(
    http: httpx.AsyncClient, params: Any, says: str
) -> None:
    r = await http.get("/api/docs", params=params, headers=auth("*"))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "BadRequest" and says in r.json()["detail"], r.json()


async def test_a_page_holds_1000_documents_at_most(store_url: str) -> None:
    async with run_server(Settings(store=store_url, jwt_secret=SECRET)) as srv:
        many = [f"d{i:04d}" for i in range(1001)]
        await srv.backend.store.append([(d, [NewEvent("ann", "edit", b"\x00\x00")]) for d in many])
        async with httpx.AsyncClient(base_url=srv.url) as http:
            body = (await http.get("/api/docs", headers=auth("*"))).json()
            assert [d["doc"] for d in body["docs"]] == many[:1000] and body["next"] == "d0999"
            body = (
                await http.get("/api/docs", params={"after": "d0999"}, headers=auth("*"))
            ).json()
            assert [d["doc"] for d in body["docs"]] == ["d1000"] and body["next"] is None
