"""Undo and redo of text a restore brought back already (field test s13, s14).

A restore writes new text that makes the document equal to a version: when that text
stands for text someone deleted, or typed and undid, their undo of the deletion (their
redo of the typing) found nothing to say the text was back, brought the original back
too, and everyone read it twice. The restore now records its copies (meta ``copies``)
as an undo does, and the undo or redo skips what has a live copy; a step with nothing
else left is done by the restore: the undo or redo stops there, changing nothing
(``"already": "restored"``), instead of reverting the user's step below it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from conftest import eventually
from pycrdt import Doc, XmlElement, XmlFragment, XmlText
from test_undo import converged, edit, make_settings, server_text, serving, undo
from yclient import YClient, connect

from palimpsest.known import KnownDeletions
from palimpsest.ranges import Ranges, size, subtract
from palimpsest.undo.recorder import RoomUndo
from palimpsest.updates import decode_update_meta

DOC = "restored"


async def _post(http: httpx.AsyncClient, what: str, user: str, body: Any = None) -> Any:
    r = await http.post(f"/api/docs/{DOC}/{what}", params={"user": user}, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _said(answer: dict[str, Any]) -> dict[str, Any]:
    """A websocket answer less its envelope (``type``, ``id``) and the ``can_undo`` /
    ``can_redo`` every undo and redo answers (tests/test_undo.py)."""
    return {k: v for k, v in answer.items() if k not in ("type", "id", "can_undo", "can_redo")}


async def _blame(http: httpx.AsyncClient) -> list[tuple[str, str]]:
    r = await http.get(f"/api/docs/{DOC}/blame", params={"join": "actor"})
    return [(run["text"], run["actor"]) for run in r.json()["roots"]["content"]["runs"]]


async def _bob_types_alice_deletes(
    srv: Any, http: httpx.AsyncClient, a: YClient, b: YClient
) -> int:
    """Bob types "Keep this. Draft sentence.", Alice deletes " Draft sentence.": the seq
    of the version that had it (her deletion is the next)."""
    await edit(b, srv, DOC, lambda: b.insert(0, "Keep this. Draft sentence."))
    await converged(srv, DOC, "Keep this. Draft sentence.", a, b)
    version = (await http.get(f"/api/docs/{DOC}/events?order=desc&limit=1")).json()
    seq: int = version["events"][0]["seq"]
    await edit(a, srv, DOC, lambda: a.text.__delitem__(slice(10, 26)))
    await converged(srv, DOC, "Keep this.", a, b)
    return seq


async def test_undo_of_a_deletion_a_restore_brought_back_does_not_double_it(
    tmp_path: Path,
) -> None:
    """Bob types, Alice deletes a sentence, Carol restores the version that had it: Bob's
    undo of his typing takes the restore's copy out too; once Carol undoes the restore
    (after a reload: the copies read from the log), Alice's undo brings her deletion
    back, once. (Her undo while the copy is there: the tests below.)"""
    s = make_settings(tmp_path / "db")
    async with serving(s) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with connect(srv.ws_url, DOC, "alice") as a, connect(srv.ws_url, DOC, "bob") as b:
            seq = await _bob_types_alice_deletes(srv, http, a, b)
            deletion = seq + 1
            restored = await _post(http, "restore", "carol", {"seq": seq})
            assert restored["added"]["characters"] == len(" Draft sentence.")
            await converged(srv, DOC, "Keep this. Draft sentence.", a, b)
            # blame as before: the restored sentence is its writer's (matched to the text
            # deleted), not the restorer's
            assert await _blame(http) == [("Keep this. Draft sentence.", "bob")]

            r = await undo(b)  # bob's typing: the restore's copy of it with it
            assert r["ok"] is True, r
            await converged(srv, DOC, "", a, b)
            assert (await undo(b, "redo"))["ok"]
            await converged(srv, DOC, "Keep this. Draft sentence.", a, b)

        # the stacks and the copies, read again from the log
        await eventually(lambda: srv.backend.rooms.get_loaded(DOC) is None, what="unloaded")
        async with connect(srv.ws_url, DOC, "alice") as a:
            # the restore's copy taken out: alice's undo brings her deletion back, once
            assert (await _post(http, "undo", "carol"))["ok"]
            await converged(srv, DOC, "Keep this.", a)
            r = await undo(a)
            assert r["ok"] is True and r["added"]["characters"] == len(" Draft sentence."), r
            assert r["reverts"] == [deletion] and "already" not in r, r
            await converged(srv, DOC, "Keep this. Draft sentence.", a)


async def test_redo_of_typing_a_restore_brought_back_does_not_double_it(tmp_path: Path) -> None:
    """Alice types a sentence and undoes it, Carol restores the version that had it:
    Alice's redo finds it done by the restore, and changes nothing."""
    s = make_settings(tmp_path / "db")
    async with serving(s) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with connect(srv.ws_url, DOC, "alice") as a:
            await edit(a, srv, DOC, lambda: a.insert(0, "Keep this."))
            await edit(a, srv, DOC, lambda: a.insert(10, " Good idea."))
            await converged(srv, DOC, "Keep this. Good idea.", a)
            version = (await http.get(f"/api/docs/{DOC}/events?order=desc&limit=1")).json()
            seq = version["events"][0]["seq"]
            r = await undo(a)
            assert r["ok"] is True
            undone = r["seq"]
            await converged(srv, DOC, "Keep this.", a)
            await _post(http, "restore", "carol", {"seq": seq})
            await converged(srv, DOC, "Keep this. Good idea.", a)

            # the restore did what the redo would: it stops there (field test s14)
            r = await undo(a, "redo")
            assert r == {**r, "ok": True, "already": "restored", "skipped": [[undone]]}, r
            assert r["added"] == r["removed"] == {"characters": 0, "items": 0}, r
            assert server_text(srv, DOC) == "Keep this. Good idea."
            assert a.content == "Keep this. Good idea."
            # the step left the redo stack, and went to no undo stack: the sentence is
            # the restore's now (Carol's undo takes it out), not a redo's of alice's
            assert _said(await undo(a, "redo")) == {"ok": False, "reason": "nothing to redo"}
            assert (await _post(http, "undo", "carol"))["ok"]
            await converged(srv, DOC, "Keep this.", a)


async def test_undo_of_her_own_deletion_a_restore_brought_back_stops_there(
    tmp_path: Path,
) -> None:
    """Field test s13 as played: Alice types the sentence herself, deletes part of it,
    Carol restores the version with it. Alice's undo finds it done by the restore and
    stops there, changing nothing: it does not go on to take out her typing (her whole
    text, the restored copy included), as it does below a step another user moved
    away. Her next undo takes out her typing; across a reload too (the log says what
    the first undo consumed)."""
    s = make_settings(tmp_path / "db")
    async with serving(s) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with connect(srv.ws_url, DOC, "alice") as a:
            await edit(a, srv, DOC, lambda: a.insert(0, "Keep this. Draft sentence."))
            version = (await http.get(f"/api/docs/{DOC}/events?order=desc&limit=1")).json()
            seq = version["events"][0]["seq"]
            await edit(a, srv, DOC, lambda: a.text.__delitem__(slice(10, 26)))
            await converged(srv, DOC, "Keep this.", a)
            deletion = seq + 1
            await _post(http, "restore", "carol", {"seq": seq})
            await converged(srv, DOC, "Keep this. Draft sentence.", a)

            r = await undo(a)
            assert r == {
                **r,
                "ok": True,
                "already": "restored",
                "skipped": [[deletion]],
                "reverts": [],
                "removed": {"characters": 0, "items": 0},
                "added": {"characters": 0, "items": 0},
            }, r
            assert server_text(srv, DOC) == "Keep this. Draft sentence."
            assert a.content == "Keep this. Draft sentence."
            # nothing went to the redo stack: a redo does not delete the restore's text
            assert _said(await undo(a, "redo")) == {"ok": False, "reason": "nothing to redo"}
            assert server_text(srv, DOC) == "Keep this. Draft sentence."

        await eventually(lambda: srv.backend.rooms.get_loaded(DOC) is None, what="unloaded")
        async with connect(srv.ws_url, DOC, "alice") as a:
            await eventually(lambda: a.content == "Keep this. Draft sentence.", what="synced")
            # her typing, the restore's copy of her sentence with it
            r = await undo(a)
            assert r["ok"] is True and r["reverts"] == [seq], r
            assert r["removed"]["characters"] == len("Keep this. Draft sentence."), r
            await converged(srv, DOC, "", a)
            assert _said(await undo(a)) == {"ok": False, "reason": "nothing to undo"}
            assert (await undo(a, "redo"))["ok"]
            await converged(srv, DOC, "Keep this. Draft sentence.", a)


def _paragraphs(doc: Doc) -> list[str]:
    return [str(p) for p in doc.get("default", type=XmlFragment).children]


async def test_undo_of_deleted_paragraphs_a_restore_brought_back_does_not_double_them(
    tmp_path: Path,
) -> None:
    """Tiptap's shape (an XmlFragment of paragraphs, field test s13b): Bob writes two
    paragraphs, Alice deletes the second, and words inside the first; Carol restores
    the version with both; Alice's undo skips both steps (a paragraph made again, and
    text changed in place), before and after a reload."""
    intro = "<paragraph>Intro paragraph.</paragraph>"
    second = "<paragraph>Second paragraph draft.</paragraph>"
    s = make_settings(tmp_path / "db")
    async with serving(s) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with (
            connect(srv.ws_url, DOC, "alice", ydoc=Doc()) as a,
            connect(srv.ws_url, DOC, "bob", ydoc=Doc()) as b,
        ):
            mine = a.doc.get("default", type=XmlFragment)
            his = b.doc.get("default", type=XmlFragment)
            for n, words in enumerate(("Intro paragraph.", "Second paragraph draft.")):
                await edit(b, srv, DOC, lambda: his.children.append(XmlElement("paragraph")))
                await edit(
                    b, srv, DOC, lambda n=n, w=words: his.children[n].children.append(XmlText(w))
                )
            await eventually(lambda: _paragraphs(a.doc) == [intro, second], what="synced")
            version = (await http.get(f"/api/docs/{DOC}/events?order=desc&limit=1")).json()
            seq = version["events"][0]["seq"]
            await edit(a, srv, DOC, lambda: mine.children.__delitem__(1))
            await edit(a, srv, DOC, lambda: mine.children[0].children[0].__delitem__(slice(5, 15)))
            assert _paragraphs(a.doc) == ["<paragraph>Intro.</paragraph>"]

            restored = await _post(http, "restore", "carol", {"seq": seq})
            assert restored["seq"] is not None
            await eventually(lambda: _paragraphs(a.doc) == [intro, second], what="restored")
            await eventually(lambda: _paragraphs(b.doc) == [intro, second], what="restored")

            # each undo finds its step done by the restore, and stops there
            r = await undo(a)
            assert r == {**r, "ok": True, "already": "restored", "skipped": [[seq + 2]]}, r
            room = srv.backend.rooms.get_loaded(DOC)
            assert room is not None
            assert _paragraphs(room.doc) == [intro, second]

        await eventually(lambda: srv.backend.rooms.get_loaded(DOC) is None, what="unloaded")
        async with connect(srv.ws_url, DOC, "alice", ydoc=Doc()) as a:
            r = await undo(a)
            assert r == {**r, "ok": True, "already": "restored", "skipped": [[seq + 1]]}, r
            assert _paragraphs(a.doc) == [intro, second]
            assert _said(await undo(a)) == {"ok": False, "reason": "nothing to undo"}


async def test_a_revert_after_a_restore_neither_doubles_nor_leaves_restored_text(
    tmp_path: Path,
) -> None:
    """A revert goes by the same copies: of Alice's deletion, which the restore brought
    back, nothing is left to revert; Bob's text, the restore's copy of it included (his
    in blame), is all taken out by a revert of Bob."""
    s = make_settings(tmp_path / "db")
    async with serving(s) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with connect(srv.ws_url, DOC, "alice") as a, connect(srv.ws_url, DOC, "bob") as b:
            seq = await _bob_types_alice_deletes(srv, http, a, b)
            await _post(http, "restore", "carol", {"seq": seq})
            await converged(srv, DOC, "Keep this. Draft sentence.", a, b)

            r = await _post(http, "revert", "teacher", {"actor": "alice", "since": seq})
            assert (r["seq"], r["reason"]) == (None, "nothing to revert"), r
            assert server_text(srv, DOC) == "Keep this. Draft sentence."
            r = await _post(http, "revert", "teacher", {"actor": "bob", "since": 0})
            assert r["seq"] is not None, r
            await converged(srv, DOC, "", a, b)


async def test_the_copies_are_looked_for_in_the_rooms_deletions(tmp_path: Path) -> None:
    """Whether a step's deletions have a live copy a restore made (RoomUndo._copied) is
    read off the room's union of deletions (Room.deletions, kept per event), not off the
    whole document each undo (2-3 ms at a 640 kB state): the same answer as the
    document's own delete set gives, with the copy alive, then deleted."""
    s = make_settings(tmp_path / "db")
    async with serving(s) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with connect(srv.ws_url, DOC, "alice") as a, connect(srv.ws_url, DOC, "bob") as b:
            seq = await _bob_types_alice_deletes(srv, http, a, b)
            await _post(http, "restore", "carol", {"seq": seq})
            await converged(srv, DOC, "Keep this. Draft sentence.", a, b)
            room = srv.backend.rooms.get_loaded(DOC)
            assert room is not None
            state = room.peek(RoomUndo)
            assert state is not None and state.restored
            step = state.stacks("alice").undo[-1]  # her deletion
            dels = subtract(step.dels, step.ins)
            assert size(dels) == len(" Draft sentence.")

            def answers() -> tuple[Ranges, Ranges, Ranges]:
                whole = decode_update_meta(room.doc.get_update()).deletes
                return (
                    state._copied(room.doc, dels, step.ins, room.deletions),
                    state._copied(room.doc, dels, step.ins),  # (the fallback's read)
                    state._copied(room.doc, dels, step.ins, lambda: _known(whole)),
                )

            assert answers() == (dels, dels, dels)  # the restore's copy is there
            await edit(b, srv, DOC, lambda: b.text.__delitem__(slice(4, 26)))
            await converged(srv, DOC, "Keep", a, b)
            assert answers() == ({}, {}, {})  # bob deleted it (and more) since


def _known(ranges: Ranges) -> KnownDeletions:
    known = KnownDeletions()
    known.add(ranges)
    return known
