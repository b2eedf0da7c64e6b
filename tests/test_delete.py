"""Deleting a document on one process (SQLite): connections closed with 4404, a tombstone
that keeps stale copies out, the name free for a new document, and a room that missed
the deletion dropping itself at its next commit."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, eventually
from pycrdt import Doc
from test_admin_cli import cli
from test_undo import converged, edit, make_settings, serving
from yclient import YClient, connect

from palimpsest.store import open_store


async def closed_4404(*clients: YClient) -> None:
    await eventually(
        lambda: all(c.close_code == 4404 for c in clients),
        what=f"closed with 4404: {[(c.close_code, c.close_reason) for c in clients]}",
    )


def copy_of(doc: Doc) -> Doc:
    out: Doc = Doc()
    out.apply_update(doc.get_update())
    return out


async def test_delete_then_a_stale_copy_is_refused_and_the_name_starts_over(
    tmp_path: Path,
) -> None:
    # a long name: the reason's sentence once named it, and a close frame's 123 bytes
    # cut it short ("…to use the name…")
    name = "chapter-07.final-draft@team-notes"
    async with serving(make_settings(tmp_path / "db")) as srv, httpx.AsyncClient() as http:
        async with connect(srv.ws_url, name, "ann") as a:
            await edit(a, srv, name, lambda: a.insert(0, "secret"))
            r = await http.delete(f"{srv.url}/api/docs/{name}", params={"user": "root"})
            assert r.status_code == 200 and r.json()["closed"] == 1, r.text
            await closed_4404(a)
            stale = a.doc
        async with connect(srv.ws_url, name, "ann", ydoc=copy_of(stale), wait_sync=False) as s:
            await closed_4404(s)
            assert "deleted" in (s.close_reason or "")
            assert (s.close_reason or "").endswith("to use the name again"), s.close_reason
        assert await srv.backend.store.head(name) == 0
        async with connect(srv.ws_url, name, "bob") as b:
            assert b.content == ""
            await edit(b, srv, name, lambda: b.insert(0, "fresh"))
            async with connect(srv.ws_url, name, "ann", ydoc=copy_of(stale), wait_sync=False) as s:
                await closed_4404(s)
                # refused at its step 1: sent nothing of the new document (its provider
                # showed the two merged until its step 2 was refused)
                assert s.content == "secret", s.content
            await edit(b, srv, name, lambda: b.insert(5, "!"))
            await converged(srv, name, "fresh!", b)
            assert b.close_code is None
        assert [e.actor for e in await srv.backend.store.read(name)] == ["bob", "bob"]
        r = await http.delete(f"{srv.url}/api/docs/nothing", params={"user": "root"})
        assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text


async def test_a_deleted_document_answers_410_until_its_name_is_written_again(
    tmp_path: Path,
) -> None:
    """A reader (the page after a reload, a script) tells a deleted document from a name
    never used: 410 `Deleted` against 404 `NotFound`, on every history route, and the
    Python client raises `Deleted` (a `NotFound`)."""
    from palimpsest import client

    async with serving(make_settings(tmp_path / "db")) as srv, httpx.AsyncClient() as http:
        q = {"user": "root"}
        async with connect(srv.ws_url, "gone", "ann") as a:
            await edit(a, srv, "gone", lambda: a.insert(0, "text"))
        r = await http.post(f"{srv.url}/api/docs/gone/tags", params=q, json={"name": "v1"})
        assert r.status_code == 201, r.text
        assert (await http.delete(f"{srv.url}/api/docs/gone", params=q)).status_code == 200
        for path in ("events", "sessions", "versions", "versions/1", "diff", "blame", "tags"):
            r = await http.get(f"{srv.url}/api/docs/gone/{path}", params=q)
            assert r.status_code == 410 and r.json()["error"] == "Deleted", (path, r.text)
            assert "was deleted" in r.json()["detail"]
            # Chromium keeps a 410 without it for good, even after the name is written
            assert r.headers["cache-control"] == "no-store"
            r = await http.get(f"{srv.url}/api/docs/never/{path}", params=q)
            assert r.status_code == 404 and r.json()["error"] == "NotFound", (path, r.text)
        r = await http.post(f"{srv.url}/api/docs/gone/restore", params=q, json={"seq": 1})
        assert r.status_code == 410, r.text
        for op in ("undo", "redo"):  # deleted, as the reads say, and no room loaded
            r = await http.post(f"{srv.url}/api/docs/gone/{op}", params=q)
            assert r.status_code == 410 and r.json()["error"] == "Deleted", r.text
        for op in ("undo/open", "undo/close"):  # as undo's (both answered 200)
            r = await http.post(f"{srv.url}/api/docs/gone/{op}", params=q)
            assert r.status_code == 410 and r.json()["error"] == "Deleted", (op, r.text)
        assert srv.backend.rooms.get_loaded("gone") is None
        r = await http.delete(f"{srv.url}/api/docs/gone", params=q)  # deleted twice
        assert r.status_code == 410 and r.json()["error"] == "Deleted", r.text

        async with client.History(srv.url, user="root") as h:
            with pytest.raises(client.Deleted) as gone:
                await h.events("gone")
            assert gone.value.code == 410 and isinstance(gone.value, client.NotFound)
            with pytest.raises(client.NotFound) as never:
                await h.events("never")
            assert not isinstance(never.value, client.Deleted)

        # written again: a new document of that name, answered for as any other
        async with connect(srv.ws_url, "gone", "bob") as b:
            await edit(b, srv, "gone", lambda: b.insert(0, "anew"))
        r = await http.get(f"{srv.url}/api/docs/gone/versions", params=q)
        assert r.status_code == 200, r.text
        assert r.json()["roots"]["content"]["value"] == "anew"


async def test_deleting_an_open_name_with_nothing_written_deletes_nothing(
    tmp_path: Path,
) -> None:
    """A room loaded by a connection but with no edit logged is no document: DELETE
    answers as for any name the store holds nothing of (404, or 410 after a deletion), as
    the history routes do then, and the connection stays open. It used to be closed with
    4404, answered 200 `deleted: true`, and then the name read 404, not 410."""
    async with serving(make_settings(tmp_path / "db")) as srv, httpx.AsyncClient() as http:
        q = {"user": "root"}
        async with connect(srv.ws_url, "empty", "ann") as a:
            r = await http.delete(f"{srv.url}/api/docs/empty", params=q)
            assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text
            r = await http.get(f"{srv.url}/api/docs/empty/events", params=q)
            assert r.status_code == 404 and r.json()["error"] == "NotFound", r.text
            await edit(a, srv, "empty", lambda: a.insert(0, "kept"))  # still connected
            assert a.close_code is None
            r = await http.delete(f"{srv.url}/api/docs/empty", params=q)
            assert r.json() == {"doc": "empty", "deleted": True, "closed": 1}, r.text
            await closed_4404(a)
        async with connect(srv.ws_url, "empty", "bob") as b:  # a deleted name, open again
            r = await http.delete(f"{srv.url}/api/docs/empty", params=q)
            assert r.status_code == 410 and r.json()["error"] == "Deleted", r.text
            r = await http.get(f"{srv.url}/api/docs/empty/events", params=q)
            assert r.status_code == 410 and r.json()["error"] == "Deleted", r.text
            await edit(b, srv, "empty", lambda: b.insert(0, "anew"))
            assert b.close_code is None
        assert [e.actor for e in await srv.backend.store.read("empty")] == ["bob"]


@pytest.mark.parametrize("how", ["edit", "undo"])
async def test_a_room_that_missed_the_deletion_drops_itself_at_its_next_commit(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], how: str
) -> None:
    """`palimpsest delete` on the database under a running server (no fan-out to tell
    it): the store refuses the room's next change (its seq is past the emptied log's
    head), and the room drops itself. (The change was logged at seq 1 until 6 Dec 2026:
    the document came back with one event of the deleted one.)"""
    db = tmp_path / "db"
    async with serving(make_settings(db)) as srv:
        async with connect(srv.ws_url, "d2", "ann") as a:
            await edit(a, srv, "d2", lambda: a.insert(0, "old text"))
            r = await cli(capfd, "delete", "d2", "--yes", "--db", str(db))
            assert r.code == 0, r
            if how == "edit":
                a.insert(8, "!")
            else:
                # the room commits the undo, then closes the connection before answering
                with contextlib.suppress(TimeoutError):
                    await a.request({"type": "undo"}, timeout=1.0)
            await closed_4404(a)
            await eventually(lambda: "d2" not in srv.backend.rooms, what="the room is dropped")
        async with open_store(f"sqlite:///{db}") as store:
            assert await store.latest_snapshot("d2") is None  # no final snapshot of it
            assert await store.doc_info("d2") is None  # nothing of it written again
            assert await store.tombstone("d2")
        async with connect(srv.ws_url, "d2", "bob") as b:
            assert "old text" not in b.content


async def test_the_new_document_of_a_deleted_name_makes_its_own_server_ids(
    tmp_path: Path,
) -> None:
    """Server-made items (here undo copies) of the document made again under a deleted
    name use another Yjs client id: their IDs can never be taken for deleted ones."""
    from pycrdt import get_state

    from palimpsest import protocol as P

    async def undo_copies(srv: RunningServer, c: YClient) -> set[int]:
        await edit(c, srv, "d3", lambda: c.insert(0, "abc"))
        await edit(c, srv, "d3", lambda: c.text.__delitem__(slice(0, 3)))
        assert (await c.request({"type": "undo"}))["ok"]  # "abc" comes back, as copies
        await converged(srv, "d3", "abc", c)
        [ev] = [e for e in await srv.backend.store.read("d3") if e.kind == "undo"]
        return set(P.decode_state_vector(get_state(ev.update)))

    async with serving(make_settings(tmp_path / "db")) as srv, httpx.AsyncClient() as http:
        async with connect(srv.ws_url, "d3", "ann") as a:
            first = await undo_copies(srv, a)
        r = await http.delete(f"{srv.url}/api/docs/d3", params={"user": "root"})
        assert r.status_code == 200, r.text
        async with connect(srv.ws_url, "d3", "bob") as b:
            again = await undo_copies(srv, b)
        assert first and again and not first & again
        # after a reload the new document keeps its id: undo and redo still line up
        await eventually(lambda: "d3" not in srv.backend.rooms, what="d3 unloads")
        async with connect(srv.ws_url, "d3", "bob") as b:
            assert (await b.request({"type": "undo"}))["ok"]  # the insertion, copies too
            await converged(srv, "d3", "", b)
            assert (await b.request({"type": "redo"}))["ok"]
            await converged(srv, "d3", "abc", b)
            assert (await b.request({"type": "redo"}))["ok"]  # the deletion again
            await converged(srv, "d3", "", b)
            assert (await b.request({"type": "undo"}))["ok"]
            await converged(srv, "d3", "abc", b)


async def test_history_of_a_name_written_again_forgets_the_deleted_document(
    tmp_path: Path,
) -> None:
    """Sessions, blame and diff were cached by name: once the new document's head reached
    the deleted one's, they showed the deleted document's writers (and folded the new
    events onto its text). Every read checks the event it last saw is still there."""
    async with serving(make_settings(tmp_path / "db")) as srv, httpx.AsyncClient() as http:
        q = {"user": "root"}

        async def history() -> tuple[set[str], list[tuple[str, str]], str]:
            s = (await http.get(f"{srv.url}/api/docs/re/sessions", params=q)).json()
            b = (await http.get(f"{srv.url}/api/docs/re/blame", params=q)).json()
            d = (await http.get(f"{srv.url}/api/docs/re/diff", params=q)).json()
            runs = [(r["text"], r["actor"]) for r in b["roots"]["content"]["runs"]]
            inserted = "".join(
                op["text"] for op in d["roots"]["content"]["ops"] if op["op"] == "insert"
            )
            return {x["actor"] for x in s["sessions"]}, runs, inserted

        async with connect(srv.ws_url, "re", "ann") as a:
            for i, word in enumerate(("old ", "secret ", "words")):
                await edit(a, srv, "re", lambda i=i, w=word: a.insert(len(a.content), w))
        assert (await history())[0] == {"ann"}  # the caches are warm
        assert (await http.delete(f"{srv.url}/api/docs/re", params=q)).status_code == 200
        async with connect(srv.ws_url, "re", "bob") as b:
            for word in ("brand ", "new ", "text ", "here"):
                await edit(b, srv, "re", lambda w=word: b.insert(len(b.content), w))
        actors, runs, inserted = await history()
        assert actors == {"bob"}
        assert "".join(t for t, _ in runs) == "brand new text here"
        assert {actor for _, actor in runs} == {"bob"}
        assert inserted == "brand new text here"
