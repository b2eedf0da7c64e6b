"""Values a Yjs client may write that JSON cannot say as they are, through the history
API and the CLI, against a real server on SQLite with real Yjs clients under Node: NaN
and ±Infinity (a whiteboard's bug: Yjs encodes and syncs them), values nested too deep
to render (groups of groups of shapes)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually, run_server
from nodehelp import scenario
from pycrdt import Doc, XmlElement, XmlFragment, XmlText
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture
from yclient import connect

from palimpsest import Extension
from palimpsest.backend import Backend
from palimpsest.features import builtin_extensions
from palimpsest.history.render import MAX_DEPTH
from palimpsest.settings import Settings


def strict_json(raw: bytes | str) -> Any:
    """`raw` parsed as JSON.parse would: NaN, Infinity and -Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=refuse)


async def cli(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "palimpsest", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


#: until the document has `n` events, asked of the event list (not of versions/head,
#: which renders the document)
STORED = """
const stored = async (n) => until(`${n} events stored`, async () =>
  (await (await fetch(`${HTTP}/api/docs/${DOC}/events`)).json()).events.length === n)
"""

NON_FINITE = scenario(
    STORED
    + """
const { ydoc, provider, synced } = connect('alice')
await synced
ydoc.transact(() => {
  const shape = new Y.Map()
  ydoc.getMap('shapes').set('s', shape)
  shape.set('x', NaN); shape.set('y', Infinity); shape.set('w', -Infinity)
  shape.set('nested', { a: NaN, b: [Infinity, 2.5] }); shape.set('ok', 1)
})
await stored(1)
// what JSON.stringify makes of the shape: what the history must give
console.log(JSON.stringify(ydoc.getMap('shapes').toJSON()))
provider.destroy()
process.exit(0)
"""
)


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_nan_and_infinity_render_as_null_as_json_stringify_does(
    server: RunningServer,
) -> None:
    """A shape with x=NaN, y=Infinity: versions/head and the diff answered 500 in plain
    text (Python's json refuses them), `export --format json` wrote NaN (not JSON) and
    `verify` found the snapshot different from the log (NaN != NaN). They render as
    null, as JSON.stringify writes them."""
    doc = "board-nan"
    out = await node_scenario(NON_FINITE, server.ws_url, server.url, doc)
    shapes = json.loads(out)
    assert shapes["s"]["x"] is None and shapes["s"]["nested"] == {"a": None, "b": [None, 2.5]}
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.get(f"/api/docs/{doc}/versions/head")
        assert r.status_code == 200, r.text
        assert strict_json(r.content)["roots"]["shapes"] == {"type": "map", "value": shapes}
        r = await c.get(f"/api/docs/{doc}/versions/head", params={"format": "tree"})
        assert r.status_code == 200, r.text
        r = await c.get(f"/api/docs/{doc}/diff", params={"from": 0})
        assert r.status_code == 200, r.text
        changes = strict_json(r.content)["roots"]["shapes"]["changes"]
        assert changes == [{"key": "s", "op": "add", "new": shapes["s"]}]
        # the room unloads and writes its snapshot (what verify compares the log with)
        await eventually(
            lambda: server.backend.store.latest_snapshot(doc), what="a snapshot written"
        )
    db = str(server.backend.settings.db)
    code, out, err = await cli("export", "--db", db, "--format", "json", doc)
    assert code == 0, err.decode()
    assert strict_json(out)["roots"]["shapes"]["value"] == shapes
    code, out, err = await cli("verify", "--db", db, doc)
    assert code == 0, (out + err).decode()


def nested_json(depth: int) -> str:
    """A scenario that sets shapes.g to a JSON value `depth` objects deep."""
    return scenario(
        STORED
        + f"""
const {{ ydoc, provider, synced }} = connect('alice')
await synced
let v = {{ leaf: true }}
for (let i = 1; i < {depth}; i++) v = {{ child: v }}
ydoc.getMap('shapes').set('g', v)
await stored(1)
provider.destroy()
process.exit(0)
"""
    )


def nested_maps(depth: int) -> str:
    """A scenario that nests `depth` Y.Maps in one another under shapes.g."""
    return scenario(
        STORED
        + f"""
const {{ ydoc, provider, synced }} = connect('alice')
await synced
ydoc.transact(() => {{
  let parent = ydoc.getMap('shapes'); let key = 'g'
  for (let i = 0; i < {depth}; i++) {{
    const m = new Y.Map(); parent.set(key, m); parent = m; key = 'child'
  }}
  parent.set('leaf', true)
}})
await stored(1)
provider.destroy()
process.exit(0)
"""
    )


def depth_of(value: Any) -> int:
    """How many objects deep `value` is (iteratively: it may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
    return deepest


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
@pytest.mark.parametrize("kind", ["json", "ymap"])
async def test_values_nested_too_deep_are_refused_with_422(
    server: RunningServer, kind: str
) -> None:
    """A JSON value 500 objects deep, 1,000 Y.Maps in one another: versions and diff
    answered 500 (RecursionError). Up to MAX_DEPTH levels render; deeper ones are a 422
    that names the limit and the way to read the version whole (?format=update)."""
    make = nested_json if kind == "json" else nested_maps
    fits, deep = f"{kind}-fits", f"{kind}-deep"
    # (the root map is the first level)
    await node_scenario(make(MAX_DEPTH - 1), server.ws_url, server.url, fits)
    await node_scenario(make(1000), server.ws_url, server.url, deep)
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.get(f"/api/docs/{fits}/versions/head")
        assert r.status_code == 200, r.text
        assert depth_of(r.json()["roots"]["shapes"]["value"]) == MAX_DEPTH
        assert (await c.get(f"/api/docs/{fits}/diff", params={"from": 0})).status_code == 200
        for path, params in [
            ("versions/head", {}),
            ("versions/head", {"format": "tree"}),
            ("diff", {"from": 0}),
        ]:
            r = await c.get(f"/api/docs/{deep}/{path}", params=params)
            assert r.status_code == 422, (path, r.status_code, r.text[:300])
            body = r.json()
            assert body["error"] == "TooDeep", body
            assert f"{MAX_DEPTH}" in body["detail"] and "format=update" in body["detail"]
        r = await c.get(f"/api/docs/{deep}/versions/head", params={"format": "update"})
        assert r.status_code == 200
        # blame serves it (unattributed past the same depth), as before
        assert (await c.get(f"/api/docs/{deep}/blame")).status_code == 200
        # the room unloads and writes its snapshot (what verify compares the log with)
        await eventually(
            lambda: server.backend.store.latest_snapshot(deep), what="a snapshot written"
        )
    db = str(server.backend.settings.db)
    code, out, err = await cli("export", "--db", db, "--format", "json", deep)
    assert code == 1 and f"{MAX_DEPTH}" in err.decode(), (code, err.decode())
    assert b"Traceback" not in err and b"--format update" in err
    # verify compares what it can (the state vectors): too deep is no problem of the log
    code, out, err = await cli("verify", "--db", db, deep)
    assert code == 0, (out + err).decode()


async def test_xml_nested_deep_renders_as_a_string_and_refuses_as_a_tree(
    server: RunningServer,
) -> None:
    """1,000 XML elements in one another: the XML string (versions, diff) recursed until
    a RecursionError (a 500); it is written with a stack of its own now, whatever the
    depth. ``?format=tree`` nests a JSON object per element: past MAX_DEPTH a 422."""
    ydoc: Doc[Any] = Doc()
    async with connect(server.ws_url, "deep-xml", "eve", ydoc=ydoc):
        with ydoc.transaction():  # (pycrdt nests a prepared element by recursion)
            node = ydoc.get("prosemirror", type=XmlFragment).children.append(XmlElement("div"))
            for _ in range(999):
                node = node.children.append(XmlElement("div"))
            node.children.append(XmlText("bottom"))
        await eventually(lambda: server.backend.store.head("deep-xml"), what="logged")
    want = "<div>" * 1000 + "bottom" + "</div>" * 1000
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.get("/api/docs/deep-xml/versions/head")
        assert r.status_code == 200, r.text[:300]
        assert r.json()["roots"]["prosemirror"] == {"type": "xml", "value": want}
        r = await c.get("/api/docs/deep-xml/diff", params={"from": 0})
        assert r.status_code == 200, r.text[:300]
        r = await c.get("/api/docs/deep-xml/versions/head", params={"format": "tree"})
        assert r.status_code == 422 and r.json()["error"] == "TooDeep", r.text[:300]


async def test_an_uncaught_error_under_api_answers_json(settings: Settings) -> None:
    """A bug that escapes a route (the NaN above was one: ValueError from the JSON
    encoder) answered Starlette's plain-text "Internal Server Error", where every other
    error of the API is JSON. Under /api/ it is ``{"error": "InternalError", "detail"}``
    now (the traceback is logged, not sent); elsewhere still plain text."""

    async def broken(request: Request) -> Response:
        raise RuntimeError("secret 42")

    class Broken(Extension):
        def routes(self) -> Sequence[BaseRoute]:
            return [Route("/api/broken", broken), Route("/broken", broken)]

    backend = Backend(settings, extensions=[Broken(), *builtin_extensions(settings)])
    async with run_server(settings, backend) as srv, httpx.AsyncClient(base_url=srv.url) as c:
        r = await c.get("/api/broken")
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["error"] == "InternalError" and "secret" not in body["detail"], body
        assert "GET /api/broken" in body["detail"]
        r = await c.get("/broken")
        assert r.status_code == 500 and r.headers["content-type"].startswith("text/plain")


def nested_then_flat(depth: int, kind: str) -> str:
    """A scenario: alice sets shapes.g to a value `depth` levels deep (a JSON value or
    nested Y.Maps: seq 1), then to a flat one (seq 2)."""
    build = (
        f"let v = {{ leaf: true }}; for (let i = 1; i < {depth}; i++) v = {{ child: v }};"
        " ydoc.getMap('shapes').set('g', v)"
        if kind == "json"
        else f"""ydoc.transact(() => {{
  let parent = ydoc.getMap('shapes'); let key = 'g'
  for (let i = 0; i < {depth}; i++) {{
    const m = new Y.Map(); parent.set(key, m); parent = m; key = 'child'
  }}
  parent.set('leaf', true)
}})"""
    )
    return scenario(
        STORED
        + f"""
const {{ ydoc, provider, synced }} = connect('alice')
await synced
{build}
await stored(1)
ydoc.getMap('shapes').set('g', 'flat')
await stored(2)
provider.destroy()
process.exit(0)
"""
    )


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
@pytest.mark.parametrize("kind", ["json", "ymap"])
async def test_restore_and_revert_to_a_version_too_deep_answer_422_and_write_nothing(
    server: RunningServer, kind: str
) -> None:
    """Restore (and its dry run, and revert) to a version 1,000 levels deep recursed
    until a RecursionError: a 500. They answer the history's 422 TooDeep, and nothing is
    written. Restoring from such a head to a shallow version works (what a hostile
    client's value is taken out with)."""
    doc = f"deep-restore-{kind}"
    await node_scenario(nested_then_flat(1000, kind), server.ws_url, server.url, doc)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        for path in ["restore", "restore?dry_run=true"]:
            r = await c.post(f"/api/docs/{doc}/{path}", params={"user": "bob"}, json={"seq": 1})
            assert r.status_code == 422, (path, r.status_code, r.text[:300])
            assert r.json()["error"] == "TooDeep", r.text[:300]
            assert f"{MAX_DEPTH}" in r.json()["detail"]
        assert await server.backend.store.head(doc) == 2
        r = await c.get(f"/api/docs/{doc}/versions/head")
        assert r.json()["roots"]["shapes"]["value"] == {"g": "flat"}
        # a revert of alice's changes since 1 brings the deep value back (a Yjs-level
        # change: it renders nothing); its dry run first
        for path in ["revert?dry_run=true", "revert"]:
            r = await c.post(f"/api/docs/{doc}/{path}", params={"user": "bob"},
                             json={"actor": "alice", "since": 1})  # fmt: skip
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        # restore from a head that deep to a shallow version works (what a hostile
        # client's value is taken out with)
        r = await c.post(f"/api/docs/{doc}/restore", params={"user": "bob"}, json={"seq": 0})
        assert r.status_code == 200, r.text[:300]
        r = await c.get(f"/api/docs/{doc}/versions/head")
        assert r.json()["roots"].get("shapes", {}).get("value", {}) == {}, r.text[:300]


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
@pytest.mark.parametrize("kind", ["json", "ymap"])
async def test_undo_of_a_step_that_set_a_value_too_deep_never_answers_500(
    server: RunningServer, kind: str
) -> None:
    """Alice's step that set a value 1,000 levels deep, then one that set it flat: her
    undos (and a redo) walk the step's containers (undo/containers.py) and the values
    they bring back; each works (or says TooDeep), never a 500."""
    doc = f"deep-undo-{kind}"
    await node_scenario(nested_then_flat(1000, kind), server.ws_url, server.url, doc)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        # (her two edits are one step: no pause between them)
        for path in ["undo", "redo", "undo", "redo"]:
            r = await c.post(f"/api/docs/{doc}/{path}", params={"user": "alice"})
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        r = await c.get(f"/api/docs/{doc}/versions/head")
        assert r.json()["roots"]["shapes"]["value"] == {"g": "flat"}, r.text[:300]
