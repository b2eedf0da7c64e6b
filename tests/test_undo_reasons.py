"""Why an undo or a redo did nothing, in its answer's ``reason`` (docs/undo.md's table):
a redo whose text someone else deleted since, and an undo past the stack's depth
(``undo_max_depth``), over the websocket, HTTP and the Python client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from conftest import eventually, free_port, run_server

from palimpsest import client
from palimpsest.settings import Settings

GONE_BY_OTHERS = "nothing left to redo: what it deletes was deleted by someone else since"


def make_settings(db: Path, **kw: Any) -> Settings:
    s = Settings(db=str(db), port=free_port(), unload_after_seconds=0.3, undo_capture_ms=0)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


async def test_a_redo_of_a_deletion_someone_else_made_since_says_so(tmp_path: Path) -> None:
    """A field tester's: Alice deletes Bob's words and undoes (they come back, as the
    server's copy, which Bob's step owns); Bob undoes his typing (they go again); Alice's
    redo, a deletion of what is gone already, answered "cannot redo: the place what it
    brings back was in is gone", which it does not bring back anything. The step stays
    on her stack: once Bob's redo brings his words back, her redo deletes them."""
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "words", user="alice") as a,
            client.connect(srv.ws_url, "words", user="bob") as b,
        ):
            ta, tb = a.text(), b.text()
            ta.insert(0, "Alice start. ")
            await a.flush()
            await b.wait_for(lambda: "start" in str(tb))
            tb.insert(len(tb), "Bob middle. ")
            await b.flush()
            await a.wait_for(lambda: "Bob" in str(ta))
            ta.delete(str(ta).index("Bob"), len("Bob middle. "))
            await a.flush()
            deleted = await a.undo()
            assert deleted.ok, deleted
            await a.wait_for(lambda: str(ta) == "Alice start. Bob middle. ")
            assert (await b.undo()).ok
            await a.wait_for(lambda: str(ta) == "Alice start. ")

            redone = await a.redo()
            assert not redone.ok and redone.reason == GONE_BY_OTHERS, redone
            assert redone.skipped == ((deleted.seq,),), redone
            answer = await a.request({"type": "redo"})  # the websocket's answer
            assert answer == {
                "type": "result", "id": answer["id"], "ok": False, "reason": GONE_BY_OTHERS,
                "skipped": [[deleted.seq]],
                "can_undo": True, "can_redo": True,  # (the step stayed on her stack)
            }, answer  # fmt: skip
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.post("/api/docs/words/redo", params={"user": "alice"})
            assert r.status_code == 409, r.text
            assert r.json() == {"ok": False, "reason": GONE_BY_OTHERS, "skipped": [[deleted.seq]]}

            # it stayed on her stack: Bob's redo brings his words back, hers deletes them
            assert (await b.redo()).ok
            await a.wait_for(lambda: str(ta) == "Alice start. Bob middle. ")
            again = await a.redo()
            assert again.ok and again.removed_characters == len("Bob middle. "), again
            await b.wait_for(lambda: str(tb) == "Alice start. ")


async def test_a_redo_whose_place_is_gone_still_says_so(tmp_path: Path) -> None:
    """A redo that brings text back (of an undo of typing) into a container deleted
    since keeps its reason: the place is gone, not "deleted by someone else"."""
    from pycrdt import XmlElement, XmlFragment, XmlText

    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "place", user="alice") as a,
            client.connect(srv.ws_url, "place", user="bob") as b,
        ):
            fb = b.doc.get("default", type=XmlFragment)
            fb.children.append(XmlElement("paragraph")).children.append(XmlText("Bob's. "))
            await b.flush()
            fa = a.doc.get("default", type=XmlFragment)
            await a.wait_for(lambda: len(fa.children) == 1)
            fa.children[0].children[0].insert(7, "Alice's.")
            await a.flush()
            assert (await a.undo()).ok
            await b.wait_for(lambda: str(fb.children[0].children[0]) == "Bob's. ")
            del fb.children[0]  # bob deletes the paragraph
            await b.flush()
            await a.wait_for(lambda: len(fa.children) == 0)
            redone = await a.redo()
            assert not redone.ok and redone.skipped, redone
            assert redone.reason == (
                "cannot redo: the place what it brings back was in is gone (deleted since)"
            ), redone


async def test_an_undo_past_the_depth_limit_says_older_changes_are_past_it(
    tmp_path: Path,
) -> None:
    """After ``undo_max_depth`` undos the next answered "nothing to undo" while the
    user's older text was still there, theirs: it says that those changes are past the
    limit, as long as the stacks last (a reload from the snapshot, a restart). A user
    who never reached the limit is told "nothing to undo"."""
    settings = make_settings(tmp_path / "db", undo_max_depth=3)
    past = "nothing left to undo: older changes are past the undo limit (UNDO_MAX_DEPTH=3)"
    async with run_server(settings) as srv:
        async with (
            client.connect(srv.ws_url, "deep", user="alice") as a,
            client.connect(srv.ws_url, "deep", user="bob") as b,
        ):
            for i in range(5):
                a.text().insert(len(a.text()), f"w{i} ")
                await a.flush()
            b.text().insert(0, "B ")
            await b.flush()
            for _ in range(3):
                assert (await a.undo()).ok
            await a.wait_for(lambda: str(a.text()) == "B w0 w1 ")
            nothing = await a.undo()
            assert not nothing.ok and nothing.reason == past, nothing
            assert nothing.skipped == (), nothing
            assert (await b.undo()).ok
            assert (await b.undo()).reason == "nothing to undo"
            # a redo and its undo: still past it
            assert (await a.redo()).ok
            assert (await a.undo()).ok
            assert (await a.undo()).reason == past
        await eventually(
            lambda: srv.backend.rooms.get_loaded("deep") is None, what="the room unloaded"
        )
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/api/docs/deep/undo", params={"user": "alice"})
            assert (r.status_code, r.json()) == (409, {"ok": False, "reason": past}), r.text
            r = await http.post("/api/docs/deep/undo", params={"user": "bob"})
            assert r.json() == {"ok": False, "reason": "nothing to undo"}, r.text
    settings.port = free_port()
    async with run_server(settings) as srv:
        async with client.connect(srv.ws_url, "deep", user="alice") as a:
            assert (await a.undo()).reason == past


async def test_an_undo_of_a_deletion_whose_place_is_gone_says_so(tmp_path: Path) -> None:
    """Alice deletes words in Bob's paragraph, and Bob deletes the paragraph: her undo,
    which inserted nothing, has nowhere to bring them back, and says that (it said
    "others deleted or moved all that your changes inserted")."""
    from pycrdt import XmlElement, XmlFragment, XmlText

    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "noplace", user="alice") as a,
            client.connect(srv.ws_url, "noplace", user="bob") as b,
        ):
            fb = b.doc.get("default", type=XmlFragment)
            fb.children.append(XmlElement("paragraph")).children.append(XmlText("Bob's words."))
            await b.flush()
            fa = a.doc.get("default", type=XmlFragment)
            await a.wait_for(lambda: len(fa.children) == 1)
            del fa.children[0].children[0][0:6]
            await a.flush()
            await b.wait_for(lambda: str(fb.children[0].children[0]) == "words.")
            del fb.children[0]
            await b.flush()
            await a.wait_for(lambda: len(fa.children) == 0)
            undone = await a.undo()
            assert not undone.ok and len(undone.skipped) == 1, undone
            assert undone.reason == (
                "nothing left to undo: the place what it brings back was in is gone (deleted since)"
            ), undone
