"""Every API route refuses a query parameter or JSON body key it does not read (400,
naming the key and what the route takes), and the undo routes refuse ``?user=`` naming
someone other than the token's user (server.params). A field tester's classroom: a
revert with ``"dry_run": true`` in the body really reverted, and a teacher's ``undo
?user=s05`` undid the teacher's own moderation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import RunningServer, run_server
from test_auth import HTTP_ROUTES

from palimpsest.auth.tokens import mint
from palimpsest.params import CREDENTIALS, TAKES
from palimpsest.settings import Settings

SECRET = "test-secret-of-at-least-thirty-two-bytes!"
DOC = "class-1"
SPEC = Path(__file__).parent.parent / "docs" / "openapi.yaml"


def tok(user: str, role: str = "write") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, user, role, ['class-*'], 600)}"}


TEACHER = "teacher"


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    settings.jwt_secret = SECRET
    settings.max_http_writes_per_second = 0
    async with run_server(settings) as s:
        yield s


@pytest.fixture
async def open_server(settings: Settings) -> AsyncIterator[RunningServer]:
    settings.max_http_writes_per_second = 0
    async with run_server(settings) as s:
        yield s


async def text(c: httpx.AsyncClient, doc: str = DOC) -> str:
    r = await c.get(f"/api/docs/{doc}/versions/head", headers=tok(TEACHER, "admin"))
    assert r.status_code == 200, r.text
    roots = r.json()["roots"]
    return str(roots["content"]["value"])


async def lesson(c: httpx.AsyncClient) -> None:
    """The teacher's prompt, tagged start; s13 writes junk, s05 a mistake; the teacher
    reverts s13 (their moderation)."""
    admin = tok(TEACHER, "admin")
    put = f"/api/docs/{DOC}/text"
    assert (await c.put(put, headers=admin, json={"text": "Prompt."})).status_code == 200
    assert (await c.post(f"/api/docs/{DOC}/tags", headers=admin, json={"name": "start"})).is_success
    r = await c.put(put, headers=tok("s13"), json={"text": "Prompt. JUNK"})
    assert r.status_code == 200, r.text
    r = await c.put(put, headers=tok("s05"), json={"text": "Prompt. JUNK MISTAKE"})
    assert r.status_code == 200, r.text
    r = await c.post(
        f"/api/docs/{DOC}/revert", headers=admin, json={"actor": "s13", "since": "start"}
    )
    assert r.status_code == 200 and r.json()["seq"] is not None, r.text
    assert await text(c) == "Prompt. MISTAKE"


async def test_dry_run_in_the_body_is_refused_and_nothing_is_reverted(
    server: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as c:
        await lesson(c)
        admin = tok(TEACHER, "admin")
        head = (await c.get(f"/api/docs/{DOC}/versions/head", headers=admin)).json()["seq"]
        body = {"actor": "s05", "since": "start", "dry_run": True}
        r = await c.post(f"/api/docs/{DOC}/revert", headers=admin, json=body)
        assert r.status_code == 400, r.text
        assert "'dry_run' is a query parameter" in r.json()["detail"]
        assert "?dry_run=true" in r.json()["detail"]
        r = await c.post(
            f"/api/docs/{DOC}/restore", headers=admin, json={"seq": "start", "dry_run": True}
        )
        assert r.status_code == 400, r.text
        assert "'dry_run' is a query parameter" in r.json()["detail"]
        assert await text(c) == "Prompt. MISTAKE"
        after = (await c.get(f"/api/docs/{DOC}/versions/head", headers=admin)).json()["seq"]
        assert after == head
        # in its place, the query: a dry run, nothing written
        r = await c.post(
            f"/api/docs/{DOC}/revert?dry_run=true",
            headers=admin,
            json={"actor": "s05", "since": "start"},
        )
        assert r.status_code == 200 and r.json()["dry_run"] is True, r.text
        assert await text(c) == "Prompt. MISTAKE"
        # a body key in the query is told where it goes
        r = await c.post(f"/api/docs/{DOC}/revert?since=start&actor=s05", headers=admin)
        assert r.status_code == 400
        assert "goes in the JSON body" in r.json()["detail"]


WRITES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", f"/api/docs/{DOC}/revert", {"actor": "s05", "since": "start"}),
    ("POST", f"/api/docs/{DOC}/restore", {"seq": "start"}),
    ("PUT", f"/api/docs/{DOC}/text", {"text": "x"}),
    ("POST", f"/api/docs/{DOC}/tags", {"name": "t2"}),
    ("PUT", f"/api/docs/{DOC}/tags/t3", {"seq": 1}),
    ("DELETE", f"/api/docs/{DOC}/tags/start", None),
    ("POST", f"/api/docs/{DOC}/undo", None),
    ("POST", f"/api/docs/{DOC}/redo", None),
    ("POST", f"/api/docs/{DOC}/undo/open", {"group": "g1"}),
    ("POST", f"/api/docs/{DOC}/undo/close", None),
    ("POST", f"/api/docs/{DOC}/compact", {"before": 1}),
    ("DELETE", f"/api/docs/{DOC}", None),
    ("POST", "/api/revocations/victim", None),
    ("DELETE", "/api/revocations/victim", None),
    ("POST", "/api/webhooks/wh-000000000000/enable", None),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
async def test_write_routes_refuse_unknown_keys(
    server: RunningServer, method: str, path: str, body: dict[str, Any] | None
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as c:
        await lesson(c)
        admin = (
            tok(TEACHER, "admin")
            if "revocations" not in path and "webhooks" not in path
            else {"Authorization": f"Bearer {mint(SECRET, TEACHER, 'admin', ['*'], 600)}"}
        )
        before = await text(c)
        r = await c.request(method, path, headers=admin, json={**(body or {}), "bogus": 1})
        assert r.status_code == 400, r.text
        assert "'bogus'" in r.json()["detail"], r.text
        r = await c.request(method, f"{path}?bogus=1", headers=admin, json=body)
        assert r.status_code == 400, r.text
        assert "unknown query parameter 'bogus'" in r.json()["detail"], r.text
        assert await text(c) == before


async def test_read_routes_refuse_unknown_query_parameters(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as c:
        await lesson(c)
        admin = tok(TEACHER, "admin")
        for path in ("events", "sessions", "versions", "versions/head", "diff", "blame", "tags"):
            r = await c.get(f"/api/docs/{DOC}/{path}?bogus=1", headers=admin)
            assert r.status_code == 400, (path, r.text)
            assert "unknown query parameter 'bogus'" in r.json()["detail"]
        r = await c.get(f"/api/docs/{DOC}/events?after=0&limit=5", headers=admin)
        assert r.status_code == 200, r.text


async def test_undo_for_another_user_is_refused(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as c:
        await lesson(c)
        admin = tok(TEACHER, "admin")
        for path in ("undo", "redo", "undo/open", "undo/close"):
            r = await c.post(f"/api/docs/{DOC}/{path}?user=s05", headers=admin)
            assert r.status_code == 400, (path, r.text)
            detail = r.json()["detail"]
            assert "acts for the token's user only" in detail and "revert" in detail
        for query, body in (("?actor=s05", None), ("?as=s05", None), ("", {"actor": "s05"})):
            r = await c.post(f"/api/docs/{DOC}/undo{query}", headers=admin, json=body)
            assert r.status_code == 400, (query, body, r.text)
        # nor any other write: they act as the token's user too
        r = await c.put(f"/api/docs/{DOC}/text?user=s05", headers=admin, json={"text": "x"})
        assert r.status_code == 400 and "acts for the token's user only" in r.text, r.text
        # the teacher's moderation stands
        assert await text(c) == "Prompt. MISTAKE"
        # ?user= naming the token's own user is the same request as without it
        r = await c.post(f"/api/docs/{DOC}/undo?user=s05", headers=tok("s05"))
        assert r.status_code == 200, r.text
        assert await text(c) == "Prompt."


async def test_open_mode_user_is_the_user(open_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=open_server.url) as c:
        put = f"/api/docs/{DOC}/text"
        assert (await c.put(f"{put}?user=s01", json={"text": "a"})).status_code == 200
        assert (await c.put(f"{put}?user=s05", json={"text": "a b"})).status_code == 200
        r = await c.post(f"/api/docs/{DOC}/undo?user=s05")
        assert r.status_code == 200, r.text
        r = await c.get(f"/api/docs/{DOC}/versions/head")
        assert r.json()["roots"]["content"]["value"] == "a"


def _spec_takes() -> dict[tuple[str, str], tuple[set[str], set[str] | None]]:
    spec = yaml.safe_load(SPEC.read_text())

    def deref(x: Any) -> Any:
        while isinstance(x, dict) and "$ref" in x:
            node: Any = spec
            for k in x["$ref"].lstrip("#/").split("/"):
                node = node[k]
            x = node
        return x

    out: dict[tuple[str, str], tuple[set[str], set[str] | None]] = {}
    for path, ops in spec["paths"].items():
        common = [deref(p) for p in ops.get("parameters", [])]
        for method, op in ops.items():
            if method == "parameters":
                continue
            params = common + [deref(p) for p in op.get("parameters", [])]
            query = {p["name"] for p in params if p.get("in") == "query"}
            body: set[str] | None = None
            content = deref(op.get("requestBody", {})).get("content", {})
            if "application/json" in content:
                body = set(
                    deref(content["application/json"].get("schema", {})).get("properties", {})
                )
            out[(method.upper(), path)] = (query, body)
    return out


def test_the_table_is_the_spec() -> None:
    """server.params.TAKES lists what docs/openapi.yaml lists, route by route, and
    every API route of the app is in it."""
    spec = _spec_takes()
    for (method, template), takes in TAKES.items():
        path = template.replace("{doc:path}", "{doc}").replace("{user:path}", "{user}")
        path = path.replace("{action:str}", "{action}")
        query, body = spec[(method, path)]
        assert set(takes.query) == query - set(CREDENTIALS), (method, template)
        assert set(takes.body or ()) == (body or set()), (method, template)
    api = {r for r in HTTP_ROUTES if r[1].startswith("/api/")}
    assert api == set(TAKES), api ^ set(TAKES)


async def test_what_a_route_takes_reads_well_when_it_takes_no_query_parameter(
    open_server: RunningServer,
) -> None:
    """A field tester's ``POST …/undo?bogus=1`` was told the route "takes the query
    parameters none; every route takes token, user too"."""
    async with httpx.AsyncClient(base_url=open_server.url) as c:
        r = await c.post("/api/docs/words/undo?user=ann&bogus=1")
        assert r.status_code == 400, r.text
        assert r.json()["detail"] == (
            "unknown query parameter 'bogus': POST /api/docs/{doc}/undo takes no query "
            "parameters of its own; every route takes token and user"
        ), r.text
        # a route with a body: its keys, and none in the query
        r = await c.post("/api/docs/words/undo/close?user=ann&bogus=1")
        assert r.json()["detail"] == (
            "unknown query parameter 'bogus': POST /api/docs/{doc}/undo/close takes no "
            "query parameters of its own and the body key group; every route takes token "
            "and user"
        ), r.text
        r = await c.post("/api/docs/words/undo/close?user=ann&group=g")
        assert r.json()["detail"] == (
            "'group' goes in the JSON body, not the query: POST /api/docs/{doc}/undo/close "
            "takes the body key group and no query parameters"
        ), r.text
        # one with parameters lists them, "and" before the last
        r = await c.get("/api/docs/words/versions?user=ann&bogus=1")
        assert r.json()["detail"] == (
            "unknown query parameter 'bogus': GET /api/docs/{doc}/versions takes the query "
            "parameters at, seq and format; every route takes token and user too"
        ), r.text
        r = await c.post("/api/docs/words/revert?user=ann&bogus=1", json={"actor": "x"})
        assert r.json()["detail"] == (
            "unknown query parameter 'bogus': POST /api/docs/{doc}/revert takes the query "
            "parameter dry_run and the body keys actor, since and until; every route takes "
            "token and user too"
        ), r.text
        r = await c.get("/api/docs?user=ann&bogus=1")
        assert r.json()["detail"] == (
            "unknown query parameter 'bogus': GET /api/docs takes the query parameters "
            "prefix, after, limit and sort; every route takes token and user too"
        ), r.text
