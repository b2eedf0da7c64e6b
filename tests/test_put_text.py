"""PUT /api/docs/{doc}/text: an integration writes a text root whole, over HTTP, and the
server makes the smallest change. A real server on a loopback port, real websocket
clients (pycrdt), real SQLite."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from conftest import RunningServer, eventually, run_server
from pycrdt import Array, Map, XmlElement, XmlFragment
from yclient import connect

from palimpsest.auth.tokens import mint
from palimpsest.settings import Settings

SECRET = "put-text-secret-of-at-least-32-bytes!"


async def test_put_text_is_a_minimal_edit_broadcast_and_undoable(server: RunningServer) -> None:
    async with connect(server.ws_url, "memo", "ann") as ann, httpx.AsyncClient(
        base_url=server.url
    ) as http:  # fmt: skip
        ann.insert(0, "hello world")
        await eventually(lambda: server.backend.rooms.get_loaded("memo") is not None)
        await eventually(lambda: _live(server, "memo") == "hello world")
        r = await http.put(
            "/api/docs/memo/text", json={"text": "hello brave world"}, params={"user": "bot"}
        )
        assert r.status_code == 200, r.text
        seq = r.json()["seq"]
        assert r.json()["root"] == "content" and isinstance(seq, int)
        await eventually(lambda: ann.content == "hello brave world", what="the PUT broadcast")

        ev = (await http.get("/api/docs/memo/events", params={"after": seq - 1})).json()
        [event] = ev["events"]
        assert (event["kind"], event["actor"], event["meta"]["root"]) == ("edit", "bot", "content")
        # the smallest change: "brave " is bot's, the rest keeps ann as its author
        runs = (await http.get("/api/docs/memo/blame")).json()["roots"]["content"]["runs"]
        by = {x["text"]: x["actor"] for x in runs}
        assert by == {"hello ": "ann", "brave ": "bot", "world": "ann"}, runs

        # the same text again: nothing to do, nothing logged
        again = await http.put("/api/docs/memo/text", json={"text": "hello brave world"})
        assert again.json() == {"seq": None, "root": "content", "reason": "already equal"}
        assert await server.backend.store.head("memo") == seq

        # bot undoes its write: ann's text is back, for her too
        u = await http.post("/api/docs/memo/undo", params={"user": "bot"})
        assert u.status_code == 200 and u.json()["reverts"] == [seq], u.text
        await eventually(lambda: ann.content == "hello world", what="the undo broadcast")


async def test_put_text_merges_with_typing_and_creates_documents(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.put("/api/docs/fresh/text", json={"text": "line one\n", "root": "notes"})
        assert r.status_code == 200 and r.json()["seq"] == 1, r.text
        async with connect(server.ws_url, "fresh", "ann") as ann:
            assert str(ann.doc.get("notes", type=type(ann.text))) == "line one\n"
            ann.text.insert(0, "x")  # on the "content" root: another root, untouched
            await eventually(lambda: _head_sync(server, "fresh") >= 2)  # logged before

            async def typing() -> None:
                notes = ann.doc.get("notes", type=type(ann.text))
                for _ in range(30):
                    notes.insert(0, "a")
                    await asyncio.sleep(0.004)

            async def writing() -> None:
                for text in ("line one\nline two\n", "line one\nline two\nline three\n"):
                    w = await http.put("/api/docs/fresh/text", json={"text": text, "root": "notes"})
                    assert w.status_code == 200, w.text
                    await asyncio.sleep(0.03)

            await asyncio.gather(typing(), writing())
            notes = ann.doc.get("notes", type=type(ann.text))
            await eventually(lambda: _live(server, "fresh", "notes") == str(notes))
            final = str(notes)
        # each write replaced the whole text it saw (the a's in it went); the a's typed
        # after the last write was applied stay, so the log alone tells how many remain
        events = (await http.get("/api/docs/fresh/events?limit=1000")).json()["events"]
        writes = [e["seq"] for e in events if e["actor"] == "anonymous"]
        assert len(writes) == 3, events
        after = [e for e in events if e["seq"] > writes[-1]]
        assert {e["actor"] for e in after} <= {"ann"}
        assert final.replace("a", "") == "line one\nline two\nline three\n", final
        assert final.count("a") == len(after), (final, len(after))
        v = (await http.get("/api/docs/fresh/versions/head")).json()
        assert v["roots"]["notes"]["value"] == final
        assert v["roots"]["content"]["value"] == "x"


async def test_put_text_refusals(server: RunningServer) -> None:
    async with connect(server.ws_url, "shapes", "ann") as ann, httpx.AsyncClient(
        base_url=server.url
    ) as http:  # fmt: skip
        ann.doc.get("meta", type=Map)["title"] = "a map"
        ann.doc.get("list", type=Array).append(1)
        ann.doc.get("prose", type=XmlFragment).children.append(XmlElement("p"))
        await eventually(lambda: _head_sync(server, "shapes") >= 3)
        head = await server.backend.store.head("shapes")
        cases: list[tuple[dict[str, Any] | str, int, str]] = [
            ({"text": "x", "root": "meta"}, 409, "the root 'meta' of 'shapes' holds a map"),
            # (it said "holds a array", "holds a xml")
            ({"text": "x", "root": "list"}, 409, "the root 'list' of 'shapes' holds an array,"),
            ({"text": "x", "root": "prose"}, 409, "of 'shapes' holds an XML tree, not text"),
            ({"root": "content"}, 400, "the body must hold the new text"),
            ({"text": 5}, 400, "the body must hold the new text"),
            ({"text": "x", "root": ""}, 400, '"root" must be a name of 1 to 128'),
            ({"text": "x", "root": "r" * 129}, 400, '"root" must be a name of 1 to 128'),
            ("[1, 2]", 400, "the body must be a JSON object"),
        ]
        for body, status, says in cases:
            if isinstance(body, str):
                r = await http.put(
                    "/api/docs/shapes/text",
                    content=body,
                    headers={"content-type": "application/json"},
                )
            else:
                r = await http.put("/api/docs/shapes/text", json=body)
            assert r.status_code == status and says in r.json()["detail"], (body, r.text)
        r = await http.put(
            "/api/docs/shapes/text", content="x", headers={"content-type": "text/plain"}
        )
        assert r.status_code == 415, r.text
        r = await http.put("/api/docs/bad%20name!/text", json={"text": "x"})
        assert r.status_code == 400, r.text
        assert await server.backend.store.head("shapes") == head  # nothing was logged
        assert ann.doc.get("meta", type=Map)["title"] == "a map"


async def test_put_text_needs_write_and_respects_the_size_limits(db_path: Any) -> None:
    settings = Settings(db=str(db_path), jwt_secret=SECRET, max_doc_bytes=4096)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:

        def auth(role: str) -> dict[str, str]:
            return {"authorization": f"Bearer {mint(SECRET, 'bot', role, ['team-*'], 600)}"}

        url = "/api/docs/team-a/text"
        assert (await http.put(url, json={"text": "x"})).status_code == 401
        r = await http.put(url, json={"text": "x"}, headers=auth("read"))
        assert r.status_code == 403, r.text
        r = await http.put("/api/docs/other/text", json={"text": "x"}, headers=auth("write"))
        assert r.status_code == 403, r.text
        r = await http.put(url, json={"text": "y" * 5000}, headers=auth("write"))
        assert r.status_code == 413 and "would grow over the limit" in r.text, r.text
        assert await server.backend.store.head("team-a") == 0
        r = await http.put(url, json={"text": "kept"}, headers=auth("write"))
        assert r.status_code == 200 and r.json()["seq"] == 1, r.text
        ev = (await http.get("/api/docs/team-a/events", headers=auth("read"))).json()
        assert [e["actor"] for e in ev["events"]] == ["bot"]  # the token's user, not ?user=


def _live(server: RunningServer, doc: str, root: str = "content") -> str | None:
    from pycrdt import Text

    room = server.backend.rooms.get_loaded(doc)
    return str(room.doc.get(root, type=Text)) if room is not None else None


def _head_sync(server: RunningServer, doc: str) -> int:
    room = server.backend.rooms.get_loaded(doc)
    return room.seq if room is not None else 0


async def test_the_python_client_writes_a_text_whole(server: RunningServer) -> None:
    from palimpsest import client

    async with client.History(server.url, user="bot") as h:
        assert await h.put_text("py", "one two") == 1
        assert await h.put_text("py", "one two") is None
        assert await h.put_text("py", "one, two", root="content") == 2
        assert (await h.version("py")).text == "one, two"
        [*_, last] = (await h.events("py")).events
        assert (last.kind, last.actor) == ("edit", "bot")
    async with connect(server.ws_url, "py-map", "ann") as ann:
        ann.doc.get("content", type=Map)["k"] = 1
        await eventually(lambda: _head_sync(server, "py-map") >= 1)
        async with client.History(server.url, user="bot") as h:
            try:
                await h.put_text("py-map", "text")
            except client.Refused as e:
                assert e.code == 409 and "holds a map, not text" in str(e), e
            else:
                raise AssertionError("a text written over a map root")


async def test_a_body_over_the_http_limit_says_which_limit(server: RunningServer) -> None:
    """A text of 1.2 MB is far under the document's limit (64 MiB) but over the request
    body's (MAX_HTTP_BODY_BYTES, 1 MiB): the refusal names that limit and a name of its
    own (it was FrameTooLarge, the websocket's), and writes nothing."""
    from palimpsest import client

    limit = server.backend.settings.max_http_body_bytes
    assert server.backend.settings.max_doc_bytes > 10 * limit
    async with httpx.AsyncClient(base_url=server.url, params={"user": "bot"}) as http:
        r = await http.put("/api/docs/long/text", json={"text": "x" * (limit + 200_000)})
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "BodyTooLarge", r.text
        # written as every other error body (it had spaces after its : and ,)
        assert r.text == json.dumps(r.json(), ensure_ascii=False, separators=(",", ":"))
        assert f"limit of {limit} bytes (MAX_HTTP_BODY_BYTES)" in r.json()["detail"], r.text
    assert await server.backend.store.doc_info("long") is None
    async with client.History(server.url, user="bot") as h:
        try:
            await h.put_text("long", "x" * (limit + 1))
        except client.TooLarge as e:
            assert e.code == 413 and "MAX_HTTP_BODY_BYTES" in str(e), e
        else:
            raise AssertionError("a body over the limit was taken")


async def test_a_closed_undo_step_keeps_a_put_apart_from_the_edit_before_it(
    server: RunningServer,
) -> None:
    """What docs/client.md tells bot authors: a user's edits less than 500 ms apart are
    one undo step over every connection; closing the step before the PUT keeps the PUT
    a step of its own, so the bot's undo takes back the PUT only."""
    from palimpsest import client

    async with client.connect(server.ws_url, "bot-undo", user="bot") as s:
        s.text().insert(0, "typed by the bot's socket\n")
        await s.flush()
        async with client.History(server.url, user="bot") as h:
            closed = await h.close_group("bot-undo")
            assert closed.ok, closed
            put = await h.put_text("bot-undo", "typed by the bot's socket\nwritten by PUT\n")
            assert put is not None
            undone = await h.undo("bot-undo")
            assert undone.ok, undone
            assert (await h.version("bot-undo")).text == "typed by the bot's socket\n"


async def test_a_base_compacted_away_is_refused_and_one_after_it_merges(
    server: RunningServer,
) -> None:
    from palimpsest.maintenance import compact_doc, plan_compact

    async with httpx.AsyncClient(base_url=server.url, params={"user": "bot"}) as http:
        for text in ("one\n", "one\ntwo\n", "one\ntwo\nthree\n", "one\ntwo\nthree\nfour\n"):
            r = await http.put("/api/docs/short/text", json={"text": text})
            assert r.status_code == 200, r.text
        store = server.backend.store
        await compact_doc(store, await plan_compact(store, "short", 3), server.backend.settings)
        info = await store.doc_info("short")
        assert info is not None and info.base_seq == 3
        r = await http.put("/api/docs/short/text", json={"text": "ONE\n", "base": 1})
        assert r.status_code == 404 and "compacted away" in r.json()["detail"], r.text
        assert await store.head("short") == 4
        # from version 3 ("one two three"): "two" goes, and "four" (seq 4) stays
        r = await http.put(
            "/api/docs/short/text", json={"text": "one\nthree\n", "base": info.base_seq}
        )
        assert r.status_code == 200, r.text
        v = (await http.get("/api/docs/short/versions/head")).json()
        assert v["roots"]["content"]["value"] == "one\nthree\nfour\n", v


async def test_put_text_without_a_root_writes_the_documents_one_text_root(
    server: RunningServer,
) -> None:
    """No "root": the document's one text root (a Jupyter file's `source`), as the CLI's
    `cat` and `edit` pick it, not a stray `content` beside it; `content` in a new
    document; a 400 naming the roots when there is no one text root to pick."""
    async with httpx.AsyncClient(base_url=server.url, params={"user": "bot"}) as http:

        async def put(doc: str, **body: Any) -> httpx.Response:
            return await http.put(f"/api/docs/{doc}/text", json=body)

        async def roots(doc: str) -> dict[str, Any]:
            got: dict[str, Any] = (await http.get(f"/api/docs/{doc}/versions/head")).json()
            return {n: r["value"] for n, r in got["roots"].items()}

        assert (await put("nb", text="print(1)\n", root="source")).status_code == 200
        r = await put("nb", text="print(2)\n")
        assert r.status_code == 200 and r.json()["root"] == "source", r.text
        assert await roots("nb") == {"source": "print(2)\n"}

        r = await put("new", text="hello")
        assert r.status_code == 200 and r.json()["root"] == "content", r.text

        # beside a map (a notebook's metadata): still its one text
        async with connect(server.ws_url, "nb", "ann") as ann:
            ann.doc.get("metadata", type=Map)["kernel"] = "python3"
            await eventually(lambda: _head_sync(server, "nb") >= 3)
        r = await put("nb", text="print(3)\n")
        assert r.status_code == 200 and r.json()["root"] == "source", r.text

        assert (await put("two", text="a", root="left")).status_code == 200
        assert (await put("two", text="b", root="right")).status_code == 200
        r = await put("two", text="c")
        assert r.status_code == 400, r.text
        assert "left (text), right (text)" in r.json()["detail"], r.text
        assert await roots("two") == {"left": "a", "right": "b"}

        async with connect(server.ws_url, "maps", "ann") as ann:
            ann.doc.get("meta", type=Map)["k"] = "v"
            await eventually(lambda: _head_sync(server, "maps") >= 1)
        r = await put("maps", text="x")
        assert r.status_code == 400 and "meta (map)" in r.json()["detail"], r.text
        r = await put("maps", text="x", root="notes")  # named: added beside it
        assert r.status_code == 200 and r.json()["root"] == "notes", r.text
