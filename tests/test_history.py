"""History over HTTP against a real server: events, sessions, versions, diffs, blame,
restore and tags."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from datetime import datetime
from typing import Any

import httpx
import pytest
from conftest import PG_URL, RunningServer, eventually, run_server
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture
from yclient import connect

from palimpsest.auth.tokens import mint
from palimpsest.backend import Backend
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent
from palimpsest.store.postgres import PostgresStore
from palimpsest.util import iso


async def _head(server: RunningServer, doc: str) -> int:
    return await server.backend.store.head(doc)


async def _write(server: RunningServer, doc: str) -> dict[str, int]:
    """alice types "Hello", bob appends " world", alice replaces "Hello" by "Bye";
    returns the seq after each step."""
    marks: dict[str, int] = {}
    async with connect(server.ws_url, doc, "alice") as a, connect(server.ws_url, doc, "bob") as b:
        a.insert(0, "Hello")
        await eventually(lambda: b.content == "Hello")
        marks["hello"] = await _head(server, doc)
        b.insert(5, " world")
        await eventually(lambda: a.content == "Hello world")
        marks["world"] = await _head(server, doc)
        with a.doc.transaction():
            del a.text[0:5]
            a.text.insert(0, "Bye")
        await eventually(lambda: b.content == "Bye world")
        marks["bye"] = await _head(server, doc)
    return marks


async def test_events_versions_blame_and_diff(server: RunningServer) -> None:
    marks = await _write(server, "h1")
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.get("/api/docs/h1/events", params={"limit": 2})
        page = r.json()
        assert r.status_code == 200 and len(page["events"]) == 2
        assert page["next_after"] == page["events"][-1]["seq"]
        ev = page["events"][0]
        assert set(ev) >= {"seq", "ts", "actor", "kind", "size", "meta", "reverts"}
        assert ev["kind"] == "edit" and ev["size"] > 0 and ev["reverts"] is None
        assert ev["ts"].endswith("Z")
        rest = (await c.get("/api/docs/h1/events", params={"after": page["next_after"]})).json()
        assert rest["next_after"] is None
        seqs = [e["seq"] for e in page["events"] + rest["events"]]
        assert seqs == list(range(1, marks["bye"] + 1))
        bobs = (await c.get("/api/docs/h1/events", params={"actor": "bob"})).json()["events"]
        assert bobs and {e["actor"] for e in bobs} == {"bob"}
        future = iso(10**13)
        none = (await c.get("/api/docs/h1/events", params={"since": future})).json()
        assert none["events"] == []

        v = (await c.get(f"/api/docs/h1/versions/{marks['hello']}")).json()
        assert v["seq"] == marks["hello"] and v["ts"]
        assert v["roots"]["content"] == {"type": "text", "value": "Hello"}
        head = (await c.get("/api/docs/h1/versions/head")).json()
        assert head["roots"]["content"]["value"] == "Bye world"
        at = (await c.get("/api/docs/h1/versions", params={"at": v["ts"]})).json()
        # the last event at or before that instant (events of the same millisecond too)
        all_events = (await c.get("/api/docs/h1/events")).json()["events"]
        when = datetime.fromisoformat(v["ts"])
        want = max(e["seq"] for e in all_events if datetime.fromisoformat(e["ts"]) <= when)
        assert want >= marks["hello"]
        assert at["seq"] == want, (at["seq"], want)
        want_text = (await c.get(f"/api/docs/h1/versions/{want}")).json()["roots"]["content"]
        assert at["roots"]["content"] == want_text
        before = await c.get("/api/docs/h1/versions", params={"at": "2000-01-01T00:00:00Z"})
        assert before.json()["seq"] == 0 and before.json()["roots"] == {}

        r = await c.get(f"/api/docs/h1/versions/{marks['world']}", params={"format": "update"})
        assert r.headers["content-type"] == "application/octet-stream"
        ydoc: Doc[Any] = Doc()
        ydoc.apply_update(r.content)
        assert str(ydoc.get("content", type=Text)) == "Hello world"

        blame = (await c.get("/api/docs/h1/blame")).json()
        runs = blame["roots"]["content"]["runs"]
        assert "".join(x["text"] for x in runs) == "Bye world"
        assert runs[0]["actor"] == "alice" and runs[0]["text"] == "Bye"
        assert runs[-1]["actor"] == "bob" and runs[-1]["text"] == " world"
        assert all(0 < x["seq"] <= marks["bye"] for x in runs)
        old = (await c.get("/api/docs/h1/blame", params={"seq": marks["world"]})).json()
        assert [(x["text"], x["actor"]) for x in old["roots"]["content"]["runs"]] == [
            ("Hello", "alice"),
            (" world", "bob"),
        ]

        d = (await c.get("/api/docs/h1/diff", params={"from": marks["hello"], "to": "head"})).json()
        assert d["from"] == marks["hello"] and d["to"] == marks["bye"]
        ops = d["roots"]["content"]["ops"]
        assert "".join(o["text"] for o in ops if o["op"] != "delete") == "Bye world"
        assert "".join(o["text"] for o in ops if o["op"] != "insert") == "Hello"
        deleted = [o for o in ops if o["op"] == "delete"]
        assert deleted and all(o["actor"] == "alice" for o in deleted)
        inserted = {o["text"]: o["actor"] for o in ops if o["op"] == "insert"}
        assert inserted[" world"] == "bob" and inserted["Bye"] == "alice"
        assert all(o["seq"] > marks["hello"] for o in ops if o["op"] != "equal")


async def test_sessions_group_each_actors_edits(server: RunningServer) -> None:
    await _write(server, "h2")
    async with httpx.AsyncClient(base_url=server.url) as c:
        s = (await c.get("/api/docs/h2/sessions")).json()["sessions"]
        assert {x["actor"] for x in s} == {"alice", "bob"}
        assert len(s) == 2  # interleaved edits, but each actor typed without a pause
        total = (await c.get("/api/docs/h2/events", params={"limit": 1000})).json()["events"]
        assert sum(x["events"] for x in s) == len(total)
        alice = next(x for x in s if x["actor"] == "alice")
        assert alice["start_seq"] == 1 and alice["end_seq"] == len(total)
        assert alice["start"] <= alice["end"]
        only_bob = (await c.get("/api/docs/h2/sessions", params={"actor": "bob"})).json()
        assert [x["actor"] for x in only_bob["sessions"]] == ["bob"]


async def test_bad_requests_get_4xx_and_write_nothing(server: RunningServer) -> None:
    marks = await _write(server, "h3")
    head = marks["bye"]
    async with httpx.AsyncClient(base_url=server.url) as c:
        cases = [
            ("GET", "/api/docs/nope/versions/1", None, 404),
            ("GET", "/api/docs/nope/events", None, 404),
            ("GET", "/api/docs/h3/versions/999", None, 404),
            ("GET", "/api/docs/h3/versions/-1", None, 400),
            ("GET", "/api/docs/h3/versions/-0", None, 400),
            ("GET", "/api/docs/h3/versions/1234567890123456789", None, 400),
            ("GET", "/api/docs/h3/versions/no-such-tag", None, 404),
            ("GET", "/api/docs/h3/versions?at=yesterday", None, 400),
            ("GET", "/api/docs/h3/events?since=not-a-time", None, 400),
            ("GET", "/api/docs/h3/events?limit=0", None, 400),
            ("GET", "/api/docs/h3/events?after=x", None, 400),
            # past a bigint: PostgreSQL's driver raised on it (SSE streams broke mid-way)
            ("GET", "/api/docs/h3/events?after=9223372036854775808", None, 400),
            ("GET", "/api/docs/h3/sessions?after=99999999999999999999999", None, 400),
            ("GET", f"/api/docs/h3/diff?from={head}&to=1", None, 400),
            ("GET", "/api/docs/h3/diff?from=0&to=999", None, 404),
            ("GET", "/api/docs/h3/blame?seq=999", None, 404),
            ("GET", "/api/docs/h3/versions/1?format=pdf", None, 400),
            ("GET", "/api/docs/h3/events?order=newest", None, 400),  # was ignored
            ("GET", "/api/docs/h3/events?order=desc&before=x", None, 400),
            ("GET", "/api/docs/h3/events?order=asc&before=0", None, 400),
            ("GET", "/api/docs/bad name/versions/1", None, 400),
            ("POST", "/api/docs/h3/restore", {}, 400),
            ("POST", "/api/docs/h3/restore", {"seq": None}, 400),
            ("POST", "/api/docs/h3/restore", {"seq": ""}, 400),
            ("POST", "/api/docs/h3/restore", {"seq": 1.5}, 400),
            ("POST", "/api/docs/h3/restore", {"seq": 1e300}, 400),  # past a bigint
            ("POST", "/api/docs/h3/restore", {"seq": 2**63}, 400),
            ("POST", "/api/docs/h3/restore", {"seq": 999}, 404),
            ("POST", "/api/docs/h3/restore", {"seq": "nope"}, 404),
            ("POST", "/api/docs/nope/restore", {"seq": 1}, 404),
            ("POST", "/api/docs/h3/tags", {"name": "", "seq": 1}, 400),
            ("POST", "/api/docs/h3/tags", {"name": "12", "seq": 1}, 400),
            ("POST", "/api/docs/h3/tags", {"name": "v1", "seq": 999}, 404),
            ("DELETE", "/api/docs/h3/tags/none", None, 404),
            # clients collapse them in a path: DELETE …/tags/.. reached …/docs/h3/, and
            # a 307 on to DELETE /api/docs/h3 (a client following it deleted the doc)
            ("POST", "/api/docs/h3/tags", {"name": ".", "seq": 1}, 400),
            ("POST", "/api/docs/h3/tags", {"name": "..", "seq": 1}, 400),
            ("DELETE", "/api/docs/h3/", None, 404),
            ("GET", "/api/docs/h3/events/", None, 404),
        ]
        for method, url, body, status in cases:
            r = await c.request(method, url, json=body)
            assert r.status_code == status, (method, url, r.status_code, r.text)
            err = r.json()
            assert err["error"] and err["detail"], (url, err)
        r = await c.post(
            "/api/docs/h3/restore",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400
    assert await _head(server, "h3") == head
    assert await server.backend.store.tags("h3") == []


async def test_tags_name_versions(server: RunningServer) -> None:
    marks = await _write(server, "h4")
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post(
            "/api/docs/h4/tags",
            json={"name": "draft 1", "seq": marks["hello"]},
            params={"user": "carol"},
        )
        assert r.status_code == 201
        assert r.json()["tag"]["seq"] == marks["hello"] and r.json()["tag"]["actor"] == "carol"
        r = await c.post("/api/docs/h4/tags", json={"name": "final"})
        assert r.json()["tag"]["seq"] == marks["bye"]
        tags = (await c.get("/api/docs/h4/tags")).json()["tags"]
        assert [(t["name"], t["seq"]) for t in tags] == [
            ("draft 1", marks["hello"]),
            ("final", marks["bye"]),
        ]
        assert all(set(t) == {"name", "seq", "ts", "actor"} for t in tags)
        v = (await c.get("/api/docs/h4/versions/draft 1")).json()
        assert v["roots"]["content"]["value"] == "Hello"
        d = (await c.get("/api/docs/h4/diff", params={"from": "draft 1", "to": "final"})).json()
        assert (d["from"], d["to"]) == (marks["hello"], marks["bye"])
        b = (await c.get("/api/docs/h4/blame", params={"seq": "draft 1"})).json()
        assert b["seq"] == marks["hello"]
        r = await c.put("/api/docs/h4/tags/final", json={"seq": marks["world"]})
        assert r.status_code == 200 and r.json()["tag"]["seq"] == marks["world"]
        r = await c.put("/api/docs/h4/tags/final", json={"seq": "head"})
        assert r.json()["tag"]["seq"] == marks["bye"]
        # JSON's 2.0 is the integer 2 (JSON Schema counts it so, and docs/openapi.yaml
        # says integer); null names the head as an absent seq does
        r = await c.put("/api/docs/h4/tags/final", json={"seq": float(marks["world"])})
        assert r.status_code == 200 and r.json()["tag"]["seq"] == marks["world"]
        r = await c.put("/api/docs/h4/tags/final", json={"seq": None})
        assert r.status_code == 200 and r.json()["tag"]["seq"] == marks["bye"]
        r = await c.delete("/api/docs/h4/tags/draft 1")
        assert r.status_code == 200
        assert [t["name"] for t in r.json()["tags"]] == ["final"]
        assert (await c.get("/api/docs/h4/versions/draft 1")).status_code == 404


async def test_a_name_in_use_moves_only_when_the_caller_lets_it(server: RunningServer) -> None:
    """Naming a version with a name in use moved the tag silently: a teacher who clicked
    "Name…" twice lost the first. Callers as they were still move it; ``"move": false``
    refuses with 409 and changes nothing."""
    marks = await _write(server, "h4m")
    async with httpx.AsyncClient(base_url=server.url, params={"user": "carol"}) as c:

        async def named() -> dict[str, int]:
            return {t["name"]: t["seq"] for t in (await c.get("/api/docs/h4m/tags")).json()["tags"]}

        body = {"name": "before feedback", "seq": marks["hello"], "move": False}
        r = await c.post("/api/docs/h4m/tags", json=body)
        assert r.status_code == 201 and r.json()["tag"]["seq"] == marks["hello"], r.text
        # the same version: as it is, and 200 (nothing was created)
        again = await c.post("/api/docs/h4m/tags", json=body)
        assert again.status_code == 200 and again.json()["tag"] == r.json()["tag"], again.text
        for refused in (
            c.post("/api/docs/h4m/tags", json={**body, "seq": marks["bye"]}),
            c.put("/api/docs/h4m/tags/before feedback", json={"seq": "head", "move": False}),
        ):
            r = await refused
            assert r.status_code == 409, r.text
            assert r.json()["detail"] == (
                f"'before feedback' already names version #{marks['hello']} of 'h4m': "
                f'send "move": true to move it to #{marks["bye"]}'
            )
            assert await named() == {"before feedback": marks["hello"]}
        for bad in ("no", 0, 1, [], {}):
            r = await c.post("/api/docs/h4m/tags", json={**body, "move": bad})
            assert r.status_code == 400 and '"move"' in r.json()["detail"], r.text
        assert await named() == {"before feedback": marks["hello"]}

        # without "move" (or with true, or null) the name moves, as it always did
        for move in ({}, {"move": True}, {"move": None}):
            seq = marks["world"] if move else marks["bye"]
            r = await c.post(
                "/api/docs/h4m/tags", json={"name": "before feedback", "seq": seq, **move}
            )
            assert r.status_code == 200 and r.json()["tag"]["seq"] == seq, r.text
        r = await c.put("/api/docs/h4m/tags/before feedback", json={"seq": marks["hello"]})
        assert r.status_code == 200 and await named() == {"before feedback": marks["hello"]}


async def test_a_tag_name_is_one_name_in_any_unicode_spelling(server: RunningServer) -> None:
    """Tag names were kept as sent while user names are taken to NFC: "versão" posted
    in NFC and then in NFD (a + combining tilde) made two tags that looked alike (201
    twice), and each spelling read only its own. Every route that takes a tag name
    takes it to NFC, and finds a tag stored in another spelling before that."""
    marks = await _write(server, "h4u")
    nfc, nfd = "vers\u00e3o-nfc", "versa\u0303o-nfc"
    async with httpx.AsyncClient(base_url=server.url, params={"user": "carol"}) as c:
        r = await c.post("/api/docs/h4u/tags", json={"name": nfc, "seq": marks["hello"]})
        assert r.status_code == 201, r.text
        r = await c.post("/api/docs/h4u/tags", json={"name": nfd, "seq": marks["hello"]})
        assert r.status_code == 200 and r.json()["tag"]["name"] == nfc, r.text
        assert [t["name"] for t in r.json()["tags"]] == [nfc]
        for spelling in (nfc, nfd):
            v = await c.get(f"/api/docs/h4u/versions/{spelling}")
            assert v.status_code == 200 and v.json()["seq"] == marks["hello"], spelling
            b = await c.get("/api/docs/h4u/blame", params={"seq": spelling})
            assert b.status_code == 200 and b.json()["seq"] == marks["hello"], spelling
        r = await c.put(f"/api/docs/h4u/tags/{nfd}", json={"seq": marks["bye"]})
        assert r.status_code == 200 and r.json()["tag"] == {**r.json()["tag"], "name": nfc}
        assert [(t["name"], t["seq"]) for t in r.json()["tags"]] == [(nfc, marks["bye"])]
        r = await c.delete(f"/api/docs/h4u/tags/{nfd}")
        assert r.status_code == 200 and r.json() == {"deleted": nfc, "tags": []}, r.text
        # a tag stored in NFD before names were taken to NFC: read and deleted by either
        await server.backend.store.put_tag("h4u", nfd, marks["world"], "carol")
        v = await c.get(f"/api/docs/h4u/versions/{nfc}")
        assert v.status_code == 200 and v.json()["seq"] == marks["world"], v.text
        # (a compaction's `before`, as `palimpsest compact --before`, names it so too)
        r = await c.post("/api/docs/h4u/compact", json={"before": nfc})
        assert r.status_code == 200, r.text
        r = await c.delete(f"/api/docs/h4u/tags/{nfc}")
        assert r.status_code == 200 and r.json() == {"deleted": nfd, "tags": []}, r.text


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_every_tag_change_is_recorded_across_restarts_and_compaction(
    settings: Settings, schema: str, kind: str
) -> None:
    """A named version could be moved or deleted silently: "draft-1" re-pointed from one
    version to another and back read only where it pointed now, and a DELETE left
    nothing. Each creation, move and deletion is kept with who and when, answered by
    GET /tags/{name}/history (and GET /tags?history=true, deleted names included), kept
    by a restart and by a compaction of the versions it named."""
    doc = "h-audit"

    def backend() -> Backend | None:
        if kind == "postgres":
            return Backend(settings, store=PostgresStore(f"{PG_URL}?schema={schema}"))
        return None

    async with run_server(settings, backend()) as srv:
        marks = await _write(srv, doc)
        async with httpx.AsyncClient(base_url=srv.url) as c:
            moves = (("ann", marks["hello"]), ("bob", marks["bye"]), ("cy", marks["world"]))
            for user, seq in moves:
                r = await c.post(f"/api/docs/{doc}/tags", params={"user": user},
                                 json={"name": "draft-1", "seq": seq})  # fmt: skip
                assert r.status_code in (200, 201), r.text
            r = await c.put(f"/api/docs/{doc}/tags/draft-1", params={"user": "cy"},
                            json={"seq": marks["world"]})  # fmt: skip
            assert r.status_code == 200, r.text  # (where it is: no change recorded)
            r = await c.post(f"/api/docs/{doc}/tags", params={"user": "dee"},
                             json={"name": "final", "seq": marks["bye"]})  # fmt: skip
            assert r.status_code == 201, r.text
            r = await c.delete(f"/api/docs/{doc}/tags/final", params={"user": "eve"})
            assert r.status_code == 200, r.text
    want = [
        ("create", None, marks["hello"], "ann"),
        ("move", marks["hello"], marks["bye"], "bob"),
        ("move", marks["bye"], marks["world"], "cy"),
    ]
    async with run_server(settings, backend()) as srv:  # (a restart)
        async with httpx.AsyncClient(base_url=srv.url) as c:
            for compacted in (False, True):
                r = await c.get(f"/api/docs/{doc}/tags/draft-1/history")
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["name"] == "draft-1", body
                moves = body["history"]
                assert [(m["action"], m["was"], m["seq"], m["actor"]) for m in moves] == want
                assert all(set(m) == {"name", "action", "seq", "was", "ts", "actor"}
                           for m in moves)  # fmt: skip
                assert [m["ts"] for m in moves] == sorted(m["ts"] for m in moves)
                # a deleted tag: gone from the list, its record kept
                r = await c.get(f"/api/docs/{doc}/tags/final/history")
                assert [(m["action"], m["was"], m["seq"], m["actor"]) for m in r.json()["history"]
                        ] == [("create", None, marks["bye"], "dee"),
                              ("delete", marks["bye"], None, "eve")]  # fmt: skip
                r = await c.get(f"/api/docs/{doc}/tags", params={"history": "true"})
                listing = r.json()
                assert [t["name"] for t in listing["tags"]] == ["draft-1"]
                assert sorted((m["name"], m["action"]) for m in listing["history"]) == sorted(
                    [("draft-1", a) for a, *_ in want] + [("final", "create"), ("final", "delete")]
                )
                assert "history" not in (await c.get(f"/api/docs/{doc}/tags")).json()
                r = await c.get(f"/api/docs/{doc}/tags/never/history")
                assert r.status_code == 404, r.text
                if not compacted:
                    # the versions the tag named before go; its record stays
                    r = await c.post(f"/api/docs/{doc}/compact", params={"user": "ops"},
                                     json={"before": marks["world"]})  # fmt: skip
                    assert r.status_code == 200, r.text


async def test_errors_are_named_alike_and_say_what_is_wrong(server: RunningServer) -> None:
    """A bad document name answered "error": "DocNameError" where every other malformed
    request says BadRequest; a tag posted without a name was told the name's syntax
    instead of that it had none."""
    await _write(server, "h4e")
    async with httpx.AsyncClient(base_url=server.url, params={"user": "carol"}) as c:
        for url in ("/api/docs/bad name/versions/1", "/api/docs/.x/events"):
            r = await c.get(url)
            assert r.status_code == 400, r.text
            assert r.json()["error"] == "BadRequest" and "document name" in r.json()["detail"]
        for body in ({"seq": 1}, {"name": None, "seq": 1}, {"name": ""}):
            r = await c.post("/api/docs/h4e/tags", json=body)
            assert r.status_code == 400 and r.json()["error"] == "BadRequest", r.text
            assert "no name" in r.json()["detail"], r.text
        r = await c.post("/api/docs/h4e/tags", json={"name": 12})
        assert r.status_code == 400 and "a string" in r.json()["detail"], r.text


async def test_restore_broadcasts_and_is_undoable_by_its_author(server: RunningServer) -> None:
    marks = await _write(server, "h5")
    async with connect(server.ws_url, "h5", "dave") as watcher:
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.post(
                "/api/docs/h5/restore", json={"seq": marks["hello"]}, params={"user": "carol"}
            )
            assert r.status_code == 200, r.text
            seq = r.json()["seq"]
            assert seq == marks["bye"] + 1
            await eventually(lambda: watcher.content == "Hello", what="restore broadcast")
            ev = (await c.get("/api/docs/h5/events", params={"after": seq - 1})).json()["events"][0]
            assert (ev["kind"], ev["actor"], ev["meta"]["restores"]) == (
                "restore",
                "carol",
                marks["hello"],
            )
            assert ev["reverts"] == [marks["hello"]]
            only = (await c.get("/api/docs/h5/events", params={"kind": "restore,undo"})).json()
            assert [e["seq"] for e in only["events"]] == [seq]
            again = (await c.post("/api/docs/h5/restore", json={"seq": marks["hello"]})).json()
            assert again == {"seq": None, "restores": marks["hello"], "reason": "already equal"}
            assert await _head(server, "h5") == seq

            blame = (await c.get("/api/docs/h5/blame")).json()["roots"]["content"]["runs"]
            assert "".join(x["text"] for x in blame) == "Hello"
            # kept characters keep their authors, and what the restore wrote again is
            # the version's text, named for whoever wrote it there, not for carol
            was = (await c.get("/api/docs/h5/blame", params={"seq": marks["hello"]})).json()
            runs = was["roots"]["content"]["runs"]
            assert [(ch, x["actor"]) for x in blame for ch in x["text"]] == [
                (ch, x["actor"]) for x in runs for ch in x["text"]
            ]
            assert "carol" not in {x["actor"] for x in blame}

            r = await c.post("/api/docs/h5/undo", params={"user": "carol"})
            assert r.status_code == 200, r.text
            await eventually(lambda: watcher.content == "Bye world", what="restore undone")
            v = (await c.get("/api/docs/h5/versions/head")).json()
            assert v["roots"]["content"]["value"] == "Bye world"


async def test_restore_while_others_type_converges(server: RunningServer) -> None:
    marks = await _write(server, "h6")
    async with connect(server.ws_url, "h6", "alice") as a, connect(server.ws_url, "h6", "bob") as b:

        async def typing(client: Any, ch: str) -> None:
            for _ in range(40):
                client.insert(len(client.text), ch)
                await asyncio.sleep(0.005)

        async def restoring() -> None:
            async with httpx.AsyncClient(base_url=server.url) as c:
                for ref in (marks["hello"], marks["world"]):
                    r = await c.post(
                        "/api/docs/h6/restore", json={"seq": ref}, params={"user": "carol"}
                    )
                    assert r.status_code == 200, r.text
                    await asyncio.sleep(0.02)

        await asyncio.gather(typing(a, "a"), typing(b, "b"), restoring())

        async def converged() -> bool:
            room = server.backend.rooms.get_loaded("h6")
            live = str(room.doc.get("content", type=Text)) if room else None
            return a.content == b.content == live

        await eventually(converged, what="every replica on the same content")
        final = a.content
    async with httpx.AsyncClient(base_url=server.url) as c:
        v = (await c.get("/api/docs/h6/versions/head")).json()
        assert v["roots"]["content"]["value"] == final
        events = (await c.get("/api/docs/h6/events?limit=1000")).json()["events"]
    # the oracle, from the log alone: the last restore brings back "Hello world"; each
    # keystroke logged after it stays; of those logged before it, only ones that came
    # while it was planned can stay (a plan the document moved under is applied merged
    # with what came meanwhile, on its last try: HistoryService.restore), and the
    # planning began after the first restore was answered
    restores = [e["seq"] for e in events if e["kind"] == "restore"]
    assert len(restores) == 2
    after = [e["actor"] for e in events if e["seq"] > restores[-1]]
    assert set(after) <= {"alice", "bob"}
    assert sum(1 for e in events if e["actor"] in ("alice", "bob") and e["seq"] > 3) == 80
    assert "".join(ch for ch in final if ch not in "ab") == "Hello world"
    for ch, who in (("a", "alice"), ("b", "bob")):
        since_first = sum(1 for e in events if e["actor"] == who and e["seq"] > restores[0])
        assert after.count(who) <= final.count(ch) <= since_first, (ch, final, restores)


async def test_map_array_xml_roots_render_diff_and_restore(server: RunningServer) -> None:
    src: Doc[Any] = Doc()
    async with connect(server.ws_url, "h7", "alice", ydoc=src) as a:
        m = src.get("m", type=Map)
        arr = src.get("a", type=Array)
        x = src.get("x", type=XmlFragment)
        a.insert(0, "héllo")
        m["k"] = 1
        arr.extend([1, "two"])
        x.children.append(XmlElement("p", {"class": "c"}, [XmlText("hi")]))
        await eventually(lambda: _head(server, "h7"))
        first = 0

        async def settled() -> bool:
            nonlocal first
            first = await _head(server, "h7")
            return first >= 4

        await eventually(settled)
        with src.transaction():
            m["k"] = 2
            m["new"] = "v"
            arr.append(3.5)
            a.text.insert(len(a.text), " wörld")
            x.children.append(XmlText("tail"))
        await eventually(lambda: _head(server, "h7"))
        async with httpx.AsyncClient(base_url=server.url) as c:

            async def at_head() -> bool:
                v = (await c.get("/api/docs/h7/versions/head")).json()
                return v["roots"].get("a", {}).get("value") == [1, "two", 3.5]

            await eventually(at_head)
            v1 = (await c.get(f"/api/docs/h7/versions/{first}")).json()["roots"]
            assert v1["content"] == {"type": "text", "value": "héllo"}
            assert v1["m"] == {"type": "map", "value": {"k": 1}}
            assert v1["a"] == {"type": "array", "value": [1, "two"]}
            assert v1["x"] == {"type": "xml", "value": '<p class="c">hi</p>'}
            d = (await c.get("/api/docs/h7/diff", params={"from": first})).json()["roots"]
            assert d["m"]["type"] == "map"
            assert {(ch["key"], ch["op"]) for ch in d["m"]["changes"]} == {
                ("k", "change"),
                ("new", "add"),
            }
            assert [o for o in d["a"]["ops"] if o["op"] == "insert"][0]["values"] == [3.5]
            assert [o["text"] for o in d["content"]["ops"] if o["op"] == "insert"] == [" wörld"]
            blame = (await c.get("/api/docs/h7/blame", params={"root": "content"})).json()
            assert "".join(r["text"] for r in blame["roots"]["content"]["runs"]) == "héllo wörld"

            r = await c.post("/api/docs/h7/restore", json={"seq": first}, params={"user": "bob"})
            assert r.status_code == 200 and r.json()["seq"], r.text
            await eventually(lambda: str(m) == '{"k":1}' and a.content == "héllo")
            await eventually(lambda: arr.to_py() == [1.0, "two"])
            await eventually(lambda: str(x) == '<p class="c">hi</p>')
            head = (await c.get("/api/docs/h7/versions/head")).json()["roots"]
            assert {k: v for k, v in head.items()} == v1


async def test_roles_read_write_admin(settings: Settings) -> None:
    secret = "history-test-secret-with-enough-bytes-0123456789"
    settings.jwt_secret = secret
    async with run_server(settings) as srv:
        backend = srv.backend
        await backend.committer.append("h8", [NewEvent("alice", "edit", _text_update("hi"))])

        def auth(role: str) -> dict[str, str]:
            return {"authorization": f"Bearer {mint(secret, 'u-' + role, role, ['h8'])}"}

        async with httpx.AsyncClient(base_url=srv.url) as c:
            assert (await c.get("/api/docs/h8/versions/1")).status_code == 401
            r = await c.get("/api/docs/h8/versions/1", headers=auth("read"))
            assert r.status_code == 200 and r.json()["roots"]["content"]["value"] == "hi"
            for role, status in (("read", 403), ("write", 200)):
                r = await c.post("/api/docs/h8/restore", json={"seq": 0}, headers=auth(role))
                assert r.status_code == status, (role, r.text)
            for role, status in (("write", 403), ("admin", 201)):
                r = await c.post("/api/docs/h8/tags", json={"name": "t"}, headers=auth(role))
                assert r.status_code == status, (role, r.text)
            r = await c.delete("/api/docs/h8/tags/t", headers=auth("write"))
            assert r.status_code == 403
            assert (await c.get("/api/docs/h8/tags", headers=auth("read"))).json()["tags"]
            other = {"authorization": f"Bearer {mint(secret, 'eve', 'admin', ['other'])}"}
            assert (await c.get("/api/docs/h8/events", headers=other)).status_code == 403
        evs = await backend.store.read("h8")
        assert [(e.kind, e.actor) for e in evs] == [("edit", "alice"), ("restore", "u-write")]


def _text_update(s: str) -> bytes:
    d: Doc[Any] = Doc()
    d.get("content", type=Text).insert(0, s)
    return d.get_update()


async def test_a_text_emptied_at_head_keeps_its_history(server: RunningServer) -> None:
    async with connect(server.ws_url, "h9", "alice") as a:
        a.insert(0, "gone soon")
        await eventually(lambda: _head(server, "h9"))
        written = await _head(server, "h9")
        del a.text[0 : len(a.text)]

        async def deleted() -> bool:
            return await _head(server, "h9") > written

        await eventually(deleted)
    async with httpx.AsyncClient(base_url=server.url) as c:
        head = (await c.get("/api/docs/h9/versions/head")).json()
        assert head["roots"]["content"]["value"] == ""
        b = (await c.get("/api/docs/h9/blame", params={"seq": written})).json()
        assert b["roots"]["content"]["runs"] == [
            {"text": "gone soon", "actor": "alice", "seq": written}
        ]
        d = (await c.get("/api/docs/h9/diff", params={"from": written})).json()
        ops = d["roots"]["content"]["ops"]
        assert [(o["op"], o["text"], o["actor"]) for o in ops] == [("delete", "gone soon", "alice")]


async def test_binary_values_render_as_base64_objects(server: RunningServer) -> None:
    """A Yjs Uint8Array value (a whiteboard's thumbnail; pycrdt gives it as a bytearray)
    made versions, diff and `export --format json` fail with 500 / a traceback (bytearray
    is not JSON). It renders as {"$bytes": "<base64>"} everywhere history renders values."""
    src: Doc[Any] = Doc()
    blob = {"$bytes": "AQID/w=="}  # bytes 1, 2, 3, 255
    async with connect(server.ws_url, "bin", "alice", ydoc=src) as a:
        files = src.get("files", type=Map)
        files["thumb"] = b"\x01\x02\x03\xff"
        await eventually(lambda: _head(server, "bin"))
        first = await _head(server, "bin")
        with src.transaction():
            files["name"] = "a.png"
            files["thumb"] = b""
            files["list"] = Array([b"\x00", 1])
        async with httpx.AsyncClient(base_url=server.url) as c:

            async def at_head() -> bool:
                r = await c.get("/api/docs/bin/versions/head")
                assert r.status_code == 200, r.text
                return "name" in r.json()["roots"]["files"]["value"]

            await eventually(at_head)
            head = (await c.get("/api/docs/bin/versions/head")).json()["roots"]["files"]
            assert head["value"] == {
                "thumb": {"$bytes": ""},
                "name": "a.png",
                "list": [{"$bytes": "AA=="}, 1],
            }
            v1 = (await c.get(f"/api/docs/bin/versions/{first}")).json()["roots"]
            assert v1 == {"files": {"type": "map", "value": {"thumb": blob}}}
            r = await c.get("/api/docs/bin/diff", params={"from": first})
            assert r.status_code == 200, r.text
            changes = {ch["key"]: ch for ch in r.json()["roots"]["files"]["changes"]}
            assert changes["thumb"]["old"] == blob and changes["thumb"]["new"] == {"$bytes": ""}
            export = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "palimpsest", "export", "--db",
                str(server.backend.settings.db), "--format", "json", "bin",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await export.communicate()
            assert export.returncode == 0, err.decode()
            assert json.loads(out)["roots"]["files"]["value"]["list"] == [{"$bytes": "AA=="}, 1]
            assert a.ws.close_code is None


async def test_a_subdocument_renders_as_its_guid(server: RunningServer) -> None:
    """A Y.Doc held in a map (a subdocument) made versions and diff answer 500 (a Doc is
    not JSON). It renders as {"$doc": "<guid>"}."""
    src: Doc[Any] = Doc()
    async with connect(server.ws_url, "subdoc", "alice", ydoc=src):
        pages = src.get("pages", type=Map)
        sub: Doc[Any] = Doc()
        pages["intro"] = sub
        await eventually(lambda: _head(server, "subdoc"))
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.get("/api/docs/subdoc/versions/head")
            assert r.status_code == 200, r.text
            assert r.json()["roots"]["pages"]["value"] == {"intro": {"$doc": sub.guid}}
            r = await c.get("/api/docs/subdoc/diff", params={"from": 0})
            assert r.status_code == 200, r.text


async def test_a_version_with_binary_values_is_restored_with_them(server: RunningServer) -> None:
    """Restoring a version whose Uint8Array values differ from the live ones failed the
    room (pycrdt reads them as bytearray and refuses that as a value: 503, every client
    dropped), and wrote the ones nested in an object or an array as null. The version
    comes back whole, bytes and all."""
    src: Doc[Any] = Doc()
    async with connect(server.ws_url, "bin-restore", "alice", ydoc=src) as a:
        files = src.get("files", type=Map)
        with src.transaction():
            files["thumb"] = b"\x01\x02"
            files["meta"] = {"sig": b"\x03", "parts": [b"\x04", 5]}
            files["list"] = Array([b"\x06"])
        await eventually(lambda: _head(server, "bin-restore"))
        first = await _head(server, "bin-restore")
        with src.transaction():
            files["thumb"] = b"\x09"
            files["meta"] = {"sig": b"\x0a", "parts": []}
            del files["list"]
        async with httpx.AsyncClient(base_url=server.url) as c:
            await eventually(lambda: _head_is_past(server, "bin-restore", first))
            want = (await c.get(f"/api/docs/bin-restore/versions/{first}")).json()["roots"]
            r = await c.post(
                "/api/docs/bin-restore/restore", params={"user": "bob"}, json={"seq": first}
            )
            assert r.status_code == 200, r.text
            head = (await c.get("/api/docs/bin-restore/versions/head")).json()["roots"]
            assert head == want
            assert want["files"]["value"]["meta"] == {
                "sig": {"$bytes": "Aw=="},
                "parts": [{"$bytes": "BA=="}, 5],
            }
        # the restore reached the client as bytes too, and its connection stayed open
        await eventually(lambda: files.get("thumb") == bytearray(b"\x01\x02"))
        assert files["meta"] == {"sig": bytearray(b"\x03"), "parts": [bytearray(b"\x04"), 5]}
        assert list(files["list"]) == [bytearray(b"\x06")]
        assert a.ws.close_code is None


async def _head_is_past(server: RunningServer, doc: str, seq: int) -> bool:
    return await _head(server, doc) > seq


async def test_an_emptied_root_keeps_its_type_whatever_is_asked_first(
    settings: Settings,
) -> None:
    """A map or array root emptied by deletes was rendered as text "" by the first
    versions/head after a restart, and as a map or array once an older version had
    been asked for (its type was learnt from what was visible). It is known from the
    items the root ever held, deleted ones too."""
    async with run_server(settings) as server:
        src: Doc[Any] = Doc()
        async with connect(server.ws_url, "emptied", "alice", ydoc=src):
            shapes, elements = src.get("shapes", type=Map), src.get("elements", type=Array)
            frag, note = src.get("xml", type=XmlFragment), src.get("note", type=Text)
            with src.transaction():
                shapes["s0"] = Map({"x": 1})
                elements.append(Map({"id": "e0"}))
                frag.children.append(XmlElement("p", {}, [XmlText("hi")]))
                note.insert(0, "gone")
            await eventually(lambda: _head(server, "emptied"))
            with src.transaction():
                del shapes["s0"]
                del elements[0]
                del frag.children[0]
                del note[0:4]

            async def emptied() -> bool:
                return await _head(server, "emptied") == 2

            await eventually(emptied)
    want = {
        "shapes": {"type": "map", "value": {}},
        "elements": {"type": "array", "value": []},
        "xml": {"type": "xml", "value": ""},
        "note": {"type": "text", "value": ""},
    }
    for first in ("head", "1"):  # a restart, then either version asked for first
        async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as c:
            if first == "1":
                assert (await c.get("/api/docs/emptied/versions/1")).status_code == 200
            head = (await c.get("/api/docs/emptied/versions/head")).json()["roots"]
            assert head == want, (first, head)


#: a Yjs client (y-websocket) writes XML into a map and an array, then edits it
NESTED_XML = """
import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
const { WS, HTTP, DOC } = process.env
const events = async () => (await fetch(`${HTTP}/api/docs/${DOC}/events?limit=100`)).json()
const logged = async (seq) => {
  const end = Date.now() + 10000
  while ((await events()).events.length < seq) {
    if (Date.now() > end) throw new Error('timed out waiting for event ' + seq)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
const ydoc = new Y.Doc()
const provider = new WebsocketProvider(WS, DOC, ydoc,
  { params: { user: 'ann' }, WebSocketPolyfill: WebSocket, disableBc: true })
await new Promise((resolve) => provider.once('synced', resolve))
const pages = ydoc.getMap('pages')
ydoc.transact(() => {
  const page = new Y.XmlFragment()
  const p = new Y.XmlElement('paragraph')
  p.insert(0, [new Y.XmlText('hello')])
  page.insert(0, [p])
  pages.set('page1', page)
  const heading = new Y.XmlElement('heading')
  heading.setAttribute('level', '1')
  heading.insert(0, [new Y.XmlText('Title')])
  const inner = new Y.Map()
  inner.set('note', new Y.XmlText('plain'))
  const list = new Y.Array()
  list.insert(0, [heading, 7, inner])
  pages.set('list', list)
})
await logged(1)
pages.get('page1').get(0).get(0).insert(5, ' world')
await logged(2)
provider.destroy()
process.exit(0)
"""


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_xml_nested_in_maps_and_arrays_renders_as_xml(server: RunningServer) -> None:
    """A Y.XmlFragment held in a Y.Map (a page of a multi-page editor), an XmlElement in
    a Y.Array, an XmlText in a map in it: versions and diff answered 500 and `export
    --seq` failed (pycrdt's to_py: "XmlFragment has no Python equivalent"). XML renders
    as XML at any depth, as an XML root does."""
    out = await node_scenario(NESTED_XML, server.ws_url, server.url, "pages")
    first = ['<heading level="1">Title</heading>', 7, {"note": "plain"}]
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.get("/api/docs/pages/versions/head")
        assert r.status_code == 200, r.text
        assert r.json()["roots"] == {
            "pages": {
                "type": "map",
                "value": {"page1": "<paragraph>hello world</paragraph>", "list": first},
            }
        }
        r = await c.get("/api/docs/pages/versions/1")
        assert r.status_code == 200, r.text
        assert r.json()["roots"]["pages"]["value"]["page1"] == "<paragraph>hello</paragraph>"
        r = await c.get("/api/docs/pages/diff", params={"from": 1})
        assert r.status_code == 200, r.text
        assert r.json()["roots"]["pages"]["changes"] == [
            {
                "key": "page1",
                "op": "change",
                "old": "<paragraph>hello</paragraph>",
                "new": "<paragraph>hello world</paragraph>",
            }
        ]
    export = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "palimpsest", "export", "--db", str(server.backend.settings.db),
        "--seq", "1", "--format", "json", "pages",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await export.communicate()
    assert export.returncode == 0, err.decode()
    assert json.loads(out)["roots"]["pages"]["value"] == {
        "page1": "<paragraph>hello</paragraph>",
        "list": first,
    }


async def test_events_newest_first_page_down_with_before(server: RunningServer) -> None:
    """``?order=desc``: the newest events first, without reading the log from the start;
    ``before=next_before`` is the next page down, with the filters as oldest first."""
    doc = "h-desc"
    d: Doc[Any] = Doc()
    text = d.get("content", type=Text)
    for i in range(25):
        sv = d.get_state()
        text.insert(len(str(text)), "x")
        who = ["alice", "bob"][i % 2]
        await server.backend.committer.append(doc, [NewEvent(who, "edit", d.get_update(sv))])
    async with httpx.AsyncClient(base_url=server.url) as c:

        async def page(**params: Any) -> dict[str, Any]:
            r = await c.get(f"/api/docs/{doc}/events", params={"order": "desc", **params})
            assert r.status_code == 200, r.text
            answer: dict[str, Any] = r.json()
            return answer

        first = await page(limit=10)
        assert [e["seq"] for e in first["events"]] == list(range(25, 15, -1))
        assert first["next_before"] == 16 and "next_after" not in first
        second = await page(limit=10, before=first["next_before"])
        assert [e["seq"] for e in second["events"]] == list(range(15, 5, -1))
        last = await page(limit=10, before=second["next_before"])
        assert [e["seq"] for e in last["events"]] == [5, 4, 3, 2, 1]
        assert last["next_before"] is None
        bob = await page(limit=3, actor="bob")
        assert [e["seq"] for e in bob["events"]] == [24, 22, 20]
        assert {e["actor"] for e in bob["events"]} == {"bob"}
        bob2 = await page(limit=3, actor="bob", before=bob["next_before"])
        assert [e["seq"] for e in bob2["events"]] == [18, 16, 14]
        assert [e["seq"] for e in (await page(after=20))["events"]] == [25, 24, 23, 22, 21]
        # the same events as oldest first, mirrored
        asc = (await c.get(f"/api/docs/{doc}/events", params={"limit": 1000})).json()
        assert (await page(limit=1000))["events"] == asc["events"][::-1]
        assert "next_before" not in asc


async def test_blame_at_seq_0_has_no_roots_as_its_version(server: RunningServer) -> None:
    """The version at seq 0 (or at a time before the first event) is empty: ``roots``
    {} in versions/0, and in blame (which answered the roots of the head, a text root
    with no runs and an XML root with no nodes)."""
    doc = "h-zero"
    d: Doc[Any] = Doc()
    d.get("content", type=Text).insert(0, "hello")
    await server.backend.committer.append(doc, [NewEvent("alice", "edit", d.get_update())])
    sv = d.get_state()
    frag = d.get("default", type=XmlFragment)
    frag.children.append(XmlElement("p", {}, [XmlText("hi")]))
    await server.backend.committer.append(doc, [NewEvent("bob", "edit", d.get_update(sv))])
    async with httpx.AsyncClient(base_url=server.url) as c:
        first = (await c.get(f"/api/docs/{doc}/events")).json()["events"][0]["ts"]
        before = iso(datetime.fromisoformat(first).timestamp() * 1000 - 1000)
        v0 = (await c.get(f"/api/docs/{doc}/versions/0")).json()
        assert v0["seq"] == 0 and v0["roots"] == {}
        at = (await c.get(f"/api/docs/{doc}/versions", params={"at": before})).json()
        assert at["seq"] == 0 and at["roots"] == {}
        for params in ({"seq": 0}, {"seq": 0, "join": "actor"}, {"at": before}):
            r = await c.get(f"/api/docs/{doc}/blame", params=params)
            assert r.status_code == 200, r.text
            assert r.json()["seq"] == 0 and r.json()["roots"] == {}, r.json()
        r = await c.get(f"/api/docs/{doc}/blame", params={"seq": 0, "root": "default"})
        assert r.status_code == 404, r.text
        head = (await c.get(f"/api/docs/{doc}/blame")).json()["roots"]
        assert set(head) == {"content", "default"}
        # at seq 1 the XML root was not written yet: not in the version, nor in blame
        v1 = (await c.get(f"/api/docs/{doc}/versions/1")).json()["roots"]
        b1 = (await c.get(f"/api/docs/{doc}/blame", params={"seq": 1})).json()["roots"]
        assert set(v1) == set(b1) == {"content"}, b1
        now = iso(datetime.fromisoformat(first).timestamp() * 1000 + 3_600_000)
        assert (await c.get(f"/api/docs/{doc}/blame", params={"at": now})).json()["seq"] == 2
        r = await c.get(f"/api/docs/{doc}/blame", params={"at": now, "seq": 1})
        assert r.status_code == 400, r.text


async def _set_created_ts(store: Any, doc: str, ts: int) -> None:
    """Set `doc`'s created_ts in the store's own table (SQLite file or PostgreSQL), as
    a document made again within the same millisecond as the one deleted has it."""
    if isinstance(store, PostgresStore):
        async with store.pool.acquire() as conn:
            await conn.execute("UPDATE docs SET created_ts = $1 WHERE name = $2", ts, doc)
        return
    db = sqlite3.connect(store.path)
    try:
        with db:
            db.execute("UPDATE docs SET created_ts = ? WHERE name = ?", (ts, doc))
    finally:
        db.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_version_etag_tells_a_name_written_again_within_a_millisecond_apart(
    settings: Settings, schema: str, kind: str
) -> None:
    """A version's ETag is built from what tells the document from the one deleted
    before it under its name. It was its created_ts, in milliseconds: a name deleted and
    written again within the same one kept every ETag, and a browser's cached copy of the
    old document's version was answered 304 and shown for the new one. Now the store's
    generation (its docs row id, never given twice) is in it: here the created_ts of the
    new document is set to the old one's, and the ETags still differ."""
    doc = "h-gen"
    store = PostgresStore(f"{PG_URL}?schema={schema}") if kind == "postgres" else None
    backend = Backend(settings, store=store) if store is not None else None
    async with run_server(settings, backend) as srv:

        async def write(*words: str) -> None:
            d: Doc[Any] = Doc()
            text = d.get("content", type=Text)
            for s in words:
                sv = d.get_state()
                text.insert(len(str(text)), s)
                await srv.backend.committer.append(doc, [NewEvent("al", "edit", d.get_update(sv))])

        await write("one", " two")
        old = await srv.backend.store.doc_info(doc)
        assert old is not None
        async with httpx.AsyncClient(base_url=srv.url) as c:
            url = f"/api/docs/{doc}/versions"
            tags = {p: (await c.get(f"{url}/{p}")).headers["etag"] for p in ("2", "head")}
            r = await c.delete(f"/api/docs/{doc}", params={"user": "ops"})
            assert r.status_code == 200, r.text
            await write("uno", " dos")
            await _set_created_ts(srv.backend.store, doc, old.created_ts or 0)
            new = await srv.backend.store.doc_info(doc)
            assert new is not None and new.created_ts == old.created_ts
            for path, etag in tags.items():
                r = await c.get(f"{url}/{path}", headers={"if-none-match": etag})
                assert r.status_code == 200, (path, r.status_code)
                assert r.json()["roots"]["content"]["value"] == "uno dos"
                assert r.headers["etag"] != etag, path


async def test_what_history_keeps_of_a_name_written_again_elsewhere_is_forgotten(
    settings: Settings,
) -> None:
    """The history service keeps per document what it learnt (sessions, root types),
    and forgets it when the store's document is another one: deleted and written again
    by another process, whose fan-out message may never come. It told them apart by
    created_ts alone: written again within the same millisecond, the old document's
    sessions were answered for the new one. Here the deletion goes to the store
    directly (as another process's would) and the created_ts is set to the old one's."""
    doc = "h-gen-cache"
    async with run_server(settings) as srv:

        async def write(actor: str, *words: str) -> None:
            d: Doc[Any] = Doc()
            text = d.get("content", type=Text)
            for s in words:
                sv = d.get_state()
                text.insert(len(str(text)), s)
                ev = NewEvent(actor, "edit", d.get_update(sv))
                await srv.backend.committer.append(doc, [ev])

        await write("alice", "one", " two")
        old = await srv.backend.store.doc_info(doc)
        assert old is not None
        async with httpx.AsyncClient(base_url=srv.url) as c:
            url = f"/api/docs/{doc}/sessions"
            r = await c.get(url)
            assert [x["actor"] for x in r.json()["sessions"]] == ["alice"], r.json()
            assert await srv.backend.store.delete_doc(doc)
            await write("bob", "uno", " dos", " tres")
            await _set_created_ts(srv.backend.store, doc, old.created_ts or 0)
            r = await c.get(url)
            assert [x["actor"] for x in r.json()["sessions"]] == ["bob"], r.json()


async def test_a_version_at_a_fixed_seq_is_cached_as_immutable(server: RunningServer) -> None:
    """versions/{seq} answers an ETag and ``private, max-age, immutable``, and 304 to
    its If-None-Match; versions/head (or a tag, or ?at=) an ETag to revalidate, never
    immutable. The ETag changes when the name is deleted and written again (its seqs
    are reused) and when a compaction rewrites the base (a purge changes an update)."""
    doc = "h-cache"
    d: Doc[Any] = Doc()
    text = d.get("content", type=Text)

    async def write(s: str) -> None:
        sv = d.get_state()
        text.insert(len(str(text)), s)
        await server.backend.committer.append(doc, [NewEvent("alice", "edit", d.get_update(sv))])

    for s in ("one", " two", " three"):
        await write(s)
    async with httpx.AsyncClient(base_url=server.url) as c:
        url = f"/api/docs/{doc}/versions"
        r = await c.get(f"{url}/2")
        assert r.status_code == 200 and r.json()["roots"]["content"]["value"] == "one two"
        etag, cache = r.headers.get("etag"), r.headers.get("cache-control", "")
        assert etag and etag.startswith('"')
        assert "private" in cache and "immutable" in cache and "max-age=" in cache, cache
        again = await c.get(f"{url}/2", headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        listed = await c.get(f"{url}/2", headers={"if-none-match": f'"other", W/{etag}'})
        assert listed.status_code == 304
        other = await c.get(f"{url}/1", headers={"if-none-match": etag})
        assert other.status_code == 200 and other.headers["etag"] != etag
        update = await c.get(f"{url}/2", params={"format": "update"})
        assert update.headers["etag"] not in (etag, None)
        assert "immutable" in update.headers["cache-control"]
        tree = await c.get(f"{url}/2", params={"format": "tree"})
        assert tree.headers["etag"] not in (etag, update.headers["etag"])
        # "latest": revalidated, never immutable
        r = await c.post(f"/api/docs/{doc}/tags", json={"name": "t", "seq": 3})
        assert r.status_code == 201, r.text
        for latest in (f"{url}/head", url, f"{url}/t", f"{url}?at=2100-01-01T00:00:00Z"):
            r = await c.get(latest)
            assert r.status_code == 200 and r.headers.get("etag"), latest
            assert "immutable" not in r.headers.get("cache-control", ""), latest
            assert "no-cache" in r.headers["cache-control"], latest
        head_etag = (await c.get(f"{url}/head")).headers["etag"]
        assert (await c.get(f"{url}/head", headers={"if-none-match": head_etag})).status_code == 304
        await write(" four")
        r = await c.get(f"{url}/head", headers={"if-none-match": head_etag})
        assert r.status_code == 200 and r.headers["etag"] != head_etag
        # a compaction that purges rewrites the base: seq 3's update changes
        seq3 = await c.get(f"{url}/3", params={"format": "update"})
        r = await c.post(f"/api/docs/{doc}/compact", params={"user": "ops"},
                         json={"before": 2, "purge_deleted": True})  # fmt: skip
        assert r.status_code == 200, r.text
        r = await c.get(f"{url}/3", params={"format": "update"},
                        headers={"if-none-match": seq3.headers["etag"]})  # fmt: skip
        assert r.status_code == 200 and r.headers["etag"] != seq3.headers["etag"]
        # deleted and written again: the same seqs, another document
        r = await c.delete(f"/api/docs/{doc}", params={"user": "ops"})
        assert r.status_code == 200, r.text
        d = Doc()
        text = d.get("content", type=Text)
        for s in ("uno", " dos"):
            await write(s)
        r = await c.get(f"{url}/2", headers={"if-none-match": etag})
        assert r.status_code == 200 and r.json()["roots"]["content"]["value"] == "uno dos"
        assert r.headers["etag"] != etag


async def test_a_diff_takes_a_time_as_versions_at_reads_it(server: RunningServer) -> None:
    """A field test: diff?from=2026-12-07T00:50:43Z answered 404 "no tag named ...",
    while versions?at= and compact take a time. ?from= and ?to= take one too: the
    version at that time (the last event at or before it), as versions?at= reads it."""
    marks = await _write(server, "hdt")
    async with httpx.AsyncClient(base_url=server.url) as c:
        events = (await c.get("/api/docs/hdt/events")).json()["events"]
        ts = {e["seq"]: e["ts"] for e in events}
        t_hello, t_world = ts[marks["hello"]], ts[marks["world"]]
        a = (await c.get("/api/docs/hdt/versions", params={"at": t_hello})).json()["seq"]
        b = (await c.get("/api/docs/hdt/versions", params={"at": t_world})).json()["seq"]
        by_seq = await c.get("/api/docs/hdt/diff", params={"from": a, "to": b})
        assert by_seq.status_code == 200, by_seq.text
        by_time = await c.get("/api/docs/hdt/diff", params={"from": t_hello, "to": t_world})
        assert by_time.status_code == 200, by_time.text
        assert by_time.json() == by_seq.json()
        # an offset other than Z, and a time before the first event (seq 0)
        off = datetime.fromisoformat(t_hello).astimezone().isoformat()
        r = await c.get("/api/docs/hdt/diff", params={"from": off, "to": t_world})
        assert r.status_code == 200 and r.json() == by_seq.json(), r.text
        r = await c.get("/api/docs/hdt/diff", params={"from": "2000-01-01T00:00:00Z"})
        whole = await c.get("/api/docs/hdt/diff", params={"from": 0})
        assert r.status_code == 200 and r.json() == whole.json(), r.text
        # a tag of that name is the tag's version still; neither a tag nor a time is a 404
        r = await c.put(f"/api/docs/hdt/tags/{t_world}", json={"seq": marks["hello"]})
        assert r.status_code in (200, 201), r.text
        r = await c.get("/api/docs/hdt/diff", params={"from": 0, "to": t_world})
        tagged = await c.get("/api/docs/hdt/diff", params={"from": 0, "to": marks["hello"]})
        assert r.json() == tagged.json()
        r = await c.get("/api/docs/hdt/diff", params={"from": "nope"})
        assert r.status_code == 404 and "not an ISO-8601 time" in r.text, r.text


async def test_before_its_first_event_a_compacted_document_was_empty(
    server: RunningServer,
) -> None:
    """A field test: after `compact`, versions?at= a time before the document's first
    event answered 404 "compacted away", where it answered seq 0 (the empty document)
    before. The base keeps the first event's time: before it the answer is seq 0 again,
    and between it and the base the 404 says when the first event was. Blame of the
    base's text, whose writers the compaction folded away, says so (`compacted`), where
    its null actor said nothing."""
    from palimpsest.maintenance import compact_doc, plan_compact
    from palimpsest.util import parse_iso

    doc, store = "compacted-at", server.backend.store
    d: Doc[Any] = Doc()
    text = d.get("content", type=Text)
    for who, word, at in (("ann", "one ", "2021-01-01"), ("ann", "two ", "2021-06-01"),
                          ("bob", "three", "2022-01-01")):  # fmt: skip
        sv = d.get_state()
        text.insert(len(text), word)
        ts = parse_iso(f"{at}T00:00:00Z")
        await store.append([(doc, [NewEvent(who, "edit", d.get_update(sv), {}, ts)])])
    async with httpx.AsyncClient(base_url=server.url) as c:

        async def early() -> list[Any]:
            out = []
            for what in ("versions", "blame"):
                r = await c.get(f"/api/docs/{doc}/{what}", params={"at": "2020-01-01T00:00:00Z"})
                assert r.status_code == 200, r.text
                out.append(r.json())
            return out

        before = await early()
        assert before[0]["seq"] == 0 and before[0]["roots"] == {}, before
        await compact_doc(store, await plan_compact(store, doc, 2), server.backend.settings)
        assert await early() == before
        r = await c.get(f"/api/docs/{doc}/versions", params={"at": "2021-03-01T00:00:00Z"})
        assert r.status_code == 404, r.text
        assert "compacted away" in r.json()["detail"], r.text
        assert "its first event was at 2021-01-01T00:00:00.000Z" in r.json()["detail"], r.text
        for join in ("event", "actor"):
            r = await c.get(f"/api/docs/{doc}/blame", params={"join": join})
            runs = r.json()["roots"]["content"]["runs"]
            assert [(x["text"], x["actor"], x["seq"], x.get("compacted")) for x in runs] == [
                ("one two ", None, 2, True),
                ("three", "bob", 3, None),
            ], runs
