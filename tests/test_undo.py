"""Per-user server-side undo and redo: over the websocket, over HTTP, across restarts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from conftest import RunningServer, eventually, free_port, run_server
from pycrdt import Doc, Map, Text
from yclient import YClient, connect

from palimpsest.settings import Settings


def make_settings(db: Path, **kw: Any) -> Settings:
    s = Settings(db=str(db), port=free_port(), unload_after_seconds=0.3, undo_capture_ms=0)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def server_text(srv: RunningServer, doc: str, root: str = "content") -> str | None:
    room = srv.backend.rooms.get_loaded(doc)
    if room is None:
        return None
    return str(room.doc.get(root, type=Text))


async def converged(srv: RunningServer, doc: str, expected: str, *clients: YClient) -> None:
    await eventually(
        lambda: server_text(srv, doc) == expected and all(c.content == expected for c in clients),
        what=f"everyone has {expected!r}: server={server_text(srv, doc)!r} "
        f"clients={[c.content for c in clients]!r}",
    )


async def edit(c: YClient, srv: RunningServer, doc: str, fn: Any) -> None:
    """One edit by c, waited for until the server has it."""
    room = srv.backend.rooms.get_loaded(doc)
    assert room is not None
    before = room.seq
    fn()
    await eventually(lambda: room.seq > before, what="the server logged the edit")


async def undo(c: YClient, kind: str = "undo") -> dict[str, Any]:
    return await c.request({"type": kind})


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings) as s:
        yield s


async def test_undo_redo_text_keeps_other_users_edits(tmp_path: Path) -> None:
    async with serving(make_settings(tmp_path / "db")) as srv:
        async with connect(srv.ws_url, "t1", "alice") as a, connect(srv.ws_url, "t1", "bob") as b:
            await edit(a, srv, "t1", lambda: a.insert(0, "hello "))
            await converged(srv, "t1", "hello ", a, b)
            await edit(b, srv, "t1", lambda: b.insert(6, "world"))
            await converged(srv, "t1", "hello world", a, b)
            await edit(a, srv, "t1", lambda: a.insert(11, "!!"))
            await edit(b, srv, "t1", lambda: b.insert(0, ">"))
            await converged(srv, "t1", ">hello world!!", a, b)

            r = await undo(a)
            assert r["ok"] is True and isinstance(r["seq"], int)
            await converged(srv, "t1", ">hello world", a, b)
            r = await undo(a)
            assert r["ok"] is True
            await converged(srv, "t1", ">world", a, b)
            r = await undo(a)
            assert r == {"type": "result", "id": r["id"], "ok": False, "reason": "nothing to undo",
                         "can_undo": False, "can_redo": True}  # fmt: skip

            r = await undo(a, "redo")
            assert r["ok"] is True
            await converged(srv, "t1", ">hello world", a, b)
            # bob's undo reverts bob's last change only
            r = await undo(b)
            assert r["ok"] is True
            await converged(srv, "t1", "hello world", a, b)
            r = await undo(a, "redo")
            assert r["ok"] is True
            await converged(srv, "t1", "hello world!!", a, b)
            r = await undo(a, "redo")
            assert r["ok"] is False and r["reason"] == "nothing to redo"

        events = await srv.backend.store.read("t1")
        kinds = [(e.actor, e.kind) for e in events if e.kind != "edit"]
        assert kinds == [
            ("alice", "undo"),
            ("alice", "undo"),
            ("alice", "redo"),
            ("bob", "undo"),
            ("alice", "redo"),
        ]
        undos = [e for e in events if e.kind == "undo"]
        edits = {e.seq: e for e in events if e.kind == "edit"}
        assert all(edits[s].actor == "alice" for s in undos[0].meta["reverts"])
        assert undos[0].meta["reverts"] == [max(s for s, e in edits.items() if e.actor == "alice")]
        redo = [e for e in events if e.kind == "redo"][0]
        assert redo.meta["reverts"] == [undos[1].seq]


async def test_map_three_users_undo_only_their_own(tmp_path: Path) -> None:
    async with serving(make_settings(tmp_path / "db")) as srv:
        async with (
            connect(srv.ws_url, "m1", "alice") as a,
            connect(srv.ws_url, "m1", "bob") as b,
            connect(srv.ws_url, "m1", "carol") as c,
        ):
            ma, mb, mc = (x.doc.get("m", type=Map) for x in (a, b, c))

            def server_map() -> dict[str, Any] | None:
                room = srv.backend.rooms.get_loaded("m1")
                return None if room is None else room.doc.get("m", type=Map).to_py()

            async def all_maps(expected: dict[str, Any]) -> None:
                await eventually(
                    lambda: (
                        server_map() == expected
                        and all(m.to_py() == expected for m in (ma, mb, mc))
                    ),
                    what=f"every map is {expected}: {server_map()} {ma.to_py()} {mc.to_py()}",
                )

            await edit(a, srv, "m1", lambda: ma.__setitem__("a", 1))
            await edit(b, srv, "m1", lambda: mb.__setitem__("b", 2))
            await all_maps({"a": 1, "b": 2})
            await edit(a, srv, "m1", lambda: ma.__setitem__("b", 3))  # overwrites bob's
            await edit(c, srv, "m1", lambda: mc.__setitem__("c", 4))
            await all_maps({"a": 1, "b": 3, "c": 4})

            assert (await undo(a))["ok"]
            await all_maps({"a": 1, "b": 2, "c": 4})  # bob's value comes back
            assert (await undo(c))["ok"]
            await all_maps({"a": 1, "b": 2})
            assert (await undo(a))["ok"]
            await all_maps({"b": 2})
            assert (await undo(a, "redo"))["ok"]
            assert (await undo(a, "redo"))["ok"]
            await all_maps({"a": 1, "b": 3})
            assert (await undo(c, "redo"))["ok"]
            await all_maps({"a": 1, "b": 3, "c": 4})


async def test_three_users_text_undo_inside_and_around(tmp_path: Path) -> None:
    async with serving(make_settings(tmp_path / "db")) as srv:
        async with (
            connect(srv.ws_url, "t3", "alice") as a,
            connect(srv.ws_url, "t3", "bob") as b,
            connect(srv.ws_url, "t3", "carol") as c,
        ):
            await edit(a, srv, "t3", lambda: a.insert(0, "AAAA"))
            await converged(srv, "t3", "AAAA", a, b, c)
            await edit(b, srv, "t3", lambda: b.insert(2, "bb"))  # inside alice's text
            await edit(c, srv, "t3", lambda: c.insert(0, "c"))  # before it
            await converged(srv, "t3", "cAAbbAA", a, b, c)
            await edit(a, srv, "t3", lambda: a.text.__delitem__(slice(0, 2)))  # deletes c + A
            await converged(srv, "t3", "AbbAA", a, b, c)
            await edit(c, srv, "t3", lambda: c.insert(5, "z"))  # after
            await converged(srv, "t3", "AbbAAz", a, b, c)

            assert (await undo(a))["ok"]  # the deletion comes back, carol's "c" too
            await converged(srv, "t3", "cAAbbAAz", a, b, c)
            assert (await undo(a))["ok"]  # alice's insertion goes, bob's stays inside
            await converged(srv, "t3", "cbbz", a, b, c)
            assert (await undo(b))["ok"]
            await converged(srv, "t3", "cz", a, b, c)
            assert (await undo(a, "redo"))["ok"]
            await converged(srv, "t3", "cAAAAz", a, b, c)


async def test_new_edit_clears_redo_and_grouping_by_capture_window(tmp_path: Path) -> None:
    async with serving(make_settings(tmp_path / "db", undo_capture_ms=60_000)) as srv:
        async with connect(srv.ws_url, "g1", "alice") as a:
            for i, ch in enumerate("abc"):
                await edit(a, srv, "g1", lambda i=i, ch=ch: a.insert(i, ch))
            r = await a.request({"type": "close_group"})
            assert r["ok"] is True and isinstance(r["seq"], int)
            for i, ch in enumerate("de"):
                await edit(a, srv, "g1", lambda i=i, ch=ch: a.insert(3 + i, ch))
            await converged(srv, "g1", "abcde", a)
            assert (await undo(a))["ok"]  # "de" was one step
            await converged(srv, "g1", "abc", a)
            await edit(a, srv, "g1", lambda: a.insert(3, "X"))
            r = await undo(a, "redo")
            assert r["ok"] is False and r["reason"] == "nothing to redo"
            assert (await undo(a))["ok"]  # X (after an undo, a new step)
            await converged(srv, "g1", "abc", a)
            assert (await undo(a))["ok"]  # "abc" was one step
            await converged(srv, "g1", "", a)
    # the grouping is decided by the log: after a restart "abc" is still one step
    async with serving(make_settings(tmp_path / "db", undo_capture_ms=60_000)) as srv:
        async with connect(srv.ws_url, "g1", "alice") as a:
            assert (await undo(a, "redo"))["ok"]
            await converged(srv, "g1", "abc", a)
            assert (await undo(a))["ok"]
            await converged(srv, "g1", "", a)


async def test_undo_from_second_connection_and_http(tmp_path: Path) -> None:
    async with serving(make_settings(tmp_path / "db")) as srv:
        async with connect(srv.ws_url, "h1", "alice") as a1, connect(srv.ws_url, "h1", "bob") as b:
            await edit(a1, srv, "h1", lambda: a1.insert(0, "one "))
            await edit(b, srv, "h1", lambda: b.insert(4, "B"))
            await edit(a1, srv, "h1", lambda: a1.insert(5, " two"))
            await converged(srv, "h1", "one B two", a1, b)
            async with connect(srv.ws_url, "h1", "alice") as a2:
                assert (await undo(a2))["ok"]
                await converged(srv, "h1", "one B", a1, a2, b)
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.post("/api/docs/h1/undo", params={"user": "alice"})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["ok"] is True and body["kind"] == "undo"
                await converged(srv, "h1", "B", a1, b)
                r = await http.post("/api/docs/h1/undo", params={"user": "alice"})
                assert r.status_code == 409
                assert r.json() == {"ok": False, "reason": "nothing to undo"}
                r = await http.post("/api/docs/h1/redo", params={"user": "alice"})
                assert r.status_code == 200
                await converged(srv, "h1", "one B", a1, b)
                r = await http.post("/api/docs/bad name!/undo", params={"user": "alice"})
                assert r.status_code in (400, 404)
        # no websocket at all: the room is loaded for the request
        await eventually(lambda: "h1" not in srv.backend.rooms, what="the room unloads")
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/api/docs/h1/redo", params={"user": "alice"})
            assert r.status_code == 200, r.text
            r = await http.post("/api/docs/h1/undo", params={"user": "bob"})
            assert r.status_code == 200, r.text
        async with connect(srv.ws_url, "h1", "carol") as c:
            await converged(srv, "h1", "one  two", c)


async def test_undo_of_deletion_across_restarts_and_snapshots(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "db", snapshot_every=3)
    async with serving(settings) as srv:
        async with connect(srv.ws_url, "r1", "alice") as a, connect(srv.ws_url, "r1", "bob") as b:
            await edit(a, srv, "r1", lambda: a.insert(0, "hello world"))
            await edit(a, srv, "r1", lambda: a.text.__delitem__(slice(5, 11)))  # " world"
            await edit(b, srv, "r1", lambda: b.insert(5, "!"))
            await converged(srv, "r1", "hello!", a, b)
            await edit(a, srv, "r1", lambda: a.text.__delitem__(slice(0, 2)))  # "he"
            await converged(srv, "r1", "llo!", a, b)
    snaps = await _snapshots(tmp_path / "db", "r1")
    assert snaps and max(snaps) >= 3  # the stacks come from a snapshot's meta
    async with serving(make_settings(tmp_path / "db", snapshot_every=3)) as srv:
        async with connect(srv.ws_url, "r1", "alice") as a:
            assert (await undo(a))["ok"]
            await converged(srv, "r1", "hello!", a)
            assert (await undo(a))["ok"]  # " world" comes back at its place (before "!")
            await converged(srv, "r1", "hello world!", a)
    async with serving(make_settings(tmp_path / "db", snapshot_every=3)) as srv:
        async with connect(srv.ws_url, "r1", "alice") as a:
            # the restored copies belong to the insertion step: undoing it removes them
            assert (await undo(a))["ok"]
            await converged(srv, "r1", "!", a)
            assert (await undo(a, "redo"))["ok"]
            await converged(srv, "r1", "hello world!", a)


async def _snapshots(db: Path, doc: str) -> list[int]:
    from palimpsest.store import open_store

    async with open_store(f"sqlite:///{db}") as store:
        return [s.seq for s in await store.snapshots(doc)]


async def test_server_change_by_actor_is_undoable(tmp_path: Path) -> None:
    """A restore (history) runs as a server change under ServerOrigin(actor, "restore"):
    it is that actor's step like an edit."""
    from palimpsest.origins import ServerOrigin

    async with serving(make_settings(tmp_path / "db")) as srv:
        async with connect(srv.ws_url, "s1", "alice") as a, connect(srv.ws_url, "s1", "bob") as b:
            await edit(a, srv, "s1", lambda: a.insert(0, "draft"))
            await converged(srv, "s1", "draft", a, b)
            room = srv.backend.rooms.get_loaded("s1")
            assert room is not None

            def restore(doc: Doc[Any]) -> None:
                with doc.transaction(origin=ServerOrigin("bob", "restore")):
                    t = doc.get("content", type=Text)
                    del t[0 : len(t)]
                    t.insert(0, "final")

            ev = await room.server_change("bob", "restore", restore)
            assert ev is not None
            await converged(srv, "s1", "final", a, b)
            assert (await undo(b))["ok"]
            await converged(srv, "s1", "draft", a, b)
            assert (await undo(b, "redo"))["ok"]
            await converged(srv, "s1", "final", a, b)
            r = await undo(a)  # alice's text was deleted by bob: nothing left to undo
            assert r["ok"] is False


async def test_a_restore_is_an_undo_step_of_its_own(tmp_path: Path) -> None:
    """A restore made right after its restorer's typing, and typing right after it, are
    steps apart however close in time (a capture window of a minute here): undoing the
    restore took the typing before it too, and would have taken the typing after."""
    from palimpsest import client

    async with serving(make_settings(tmp_path / "db", undo_capture_ms=60_000)) as srv:
        async with client.History(srv.url, user="ann") as h:
            await h.put_text("own", "Base. ")
            version = (await h.version("own", "head")).seq
            await h.put_text("own", "Base. Typed.")
            restored = await h.restore("own", version)
            assert restored.seq is not None and restored.removed_characters == len("Typed.")
            await h.put_text("own", "Base. After.")
            assert server_text(srv, "own") == "Base. After."
            assert (await h.undo("own")).ok  # the typing after
            assert server_text(srv, "own") == "Base. "
            assert (await h.undo("own")).ok  # the restore alone
            assert server_text(srv, "own") == "Base. Typed."
            assert (await h.undo("own")).ok  # the typing before (one step: a minute)
            assert server_text(srv, "own") == ""


async def test_http_undo_of_a_name_with_no_document_is_a_404_as_reads_answer(
    tmp_path: Path,
) -> None:
    """A field tester's ``POST /api/docs/nosuchdoc/undo`` answered 409 "nothing to
    undo", as for a document that is there, while every read of the name answered 404:
    a typo in the name went unseen. A websocket connection makes the document: its undo
    answers "nothing to undo". So do opening and closing an undo group: a close answered
    200 "none was open", and an open made the document (its mark its first event)."""
    from palimpsest import client

    async with serving(make_settings(tmp_path / "db")) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            read = await http.get("/api/docs/nosuchdoc/events", params={"user": "alice"})
            assert read.status_code == 404, read.text
            for op in ("undo", "redo", "undo/open", "undo/close"):
                r = await http.post(f"/api/docs/nosuchdoc/{op}", params={"user": "alice"})
                assert r.status_code == 404, (op, r.text)
                assert (
                    r.json()
                    == read.json()
                    == {
                        "error": "NotFound",
                        "detail": "no document named 'nosuchdoc'",
                    }
                ), r.text
            # (with a group named too)
            for op in ("undo/open", "undo/close"):
                r = await http.post(
                    f"/api/docs/nosuchdoc/{op}", params={"user": "alice"}, json={"group": "g"}
                )
                assert r.status_code == 404 and r.json()["error"] == "NotFound", (op, r.text)
            # (and no room was loaded to say so, nor the document made)
            assert srv.backend.rooms.get_loaded("nosuchdoc") is None
            assert await srv.backend.store.doc_info("nosuchdoc") is None
        async with client.History(srv.url, user="alice") as h:
            for call in (h.undo, h.open_group, h.close_group):
                try:
                    await call("nosuchdoc")
                except client.NotFound as e:
                    assert "no document named 'nosuchdoc'" in str(e)
                else:
                    raise AssertionError(f"History.{call.__name__} of no document: no NotFound")
        async with connect(srv.ws_url, "nosuchdoc", "alice") as a:
            r = await undo(a)
            assert r == {"type": "result", "id": r["id"], "ok": False, "reason": "nothing to undo",
                         "can_undo": False, "can_redo": False}  # fmt: skip


async def test_hello_says_whether_the_user_can_undo_and_redo_now(tmp_path: Path) -> None:
    """A client's Undo and Redo buttons started in an unknown state: ``hello`` said who
    and which operations, not whether the user had anything to undo or redo, until the
    first undo. It says so (``can_undo``, ``can_redo``), per user, from any connection."""

    async def hello(c: YClient, user: str) -> tuple[bool, bool]:
        r = await c.request({"type": "hello"})
        assert r["ok"] is True and r["user"] == user, r
        return r["can_undo"], r["can_redo"]

    async with serving(make_settings(tmp_path / "db")) as srv:
        async with connect(srv.ws_url, "hi", "alice") as a, connect(srv.ws_url, "hi", "bob") as b:
            assert await hello(a, "alice") == (False, False)
            await edit(a, srv, "hi", lambda: a.insert(0, "one"))
            assert await hello(a, "alice") == (True, False)
            assert await hello(b, "bob") == (False, False)  # alice's step, not bob's
            # the answer to an undo or redo says them too, after it (the page's buttons
            # follow each answer without asking hello again)
            await edit(a, srv, "hi", lambda: a.insert(0, "two "))
            r = await undo(a)
            assert r["ok"] and (r["can_undo"], r["can_redo"]) == (True, True), r
            r = await undo(a)
            assert r["ok"] and (r["can_undo"], r["can_redo"]) == (False, True), r
            assert await hello(a, "alice") == (False, True)
            r = await undo(a)  # (refused: the answer says so too)
            assert not r["ok"] and (r["can_undo"], r["can_redo"]) == (False, True), r
        # a new connection of hers (another tab) starts right
        async with connect(srv.ws_url, "hi", "alice") as a2:
            assert await hello(a2, "alice") == (False, True)
            r = await undo(a2, "redo")
            assert r["ok"] and (r["can_undo"], r["can_redo"]) == (True, True), r
            r = await undo(a2, "redo")
            assert r["ok"] and (r["can_undo"], r["can_redo"]) == (True, False), r
            assert await hello(a2, "alice") == (True, False)
