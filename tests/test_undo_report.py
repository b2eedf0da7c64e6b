"""What an undo did to what other users wrote, in its answer: undoing the Enter that made
a paragraph keeps the paragraph when others typed in it since, with their words, and says
so (``kept_containers``, docs/undo.md), over the websocket, over HTTP and in the Python
client's OpResult (more in test_undo_containers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from conftest import RunningServer, eventually, free_port, run_server
from pycrdt import XmlElement, XmlFragment, XmlText

from palimpsest import client
from palimpsest.client import KeptContainers, OpResult, Removed
from palimpsest.client.cli import main as client_main
from palimpsest.settings import Settings

LINE = "The quick brown fox jumps over the lazy dog."
BOB_5 = {"user": "bob", "characters": 5, "items": 0}


def make_settings(db: Path) -> Settings:
    return Settings(db=str(db), port=free_port(), unload_after_seconds=0.3, undo_capture_ms=0)


def fragment(s: client.Session) -> XmlFragment:
    return s.doc.get("default", type=XmlFragment)


def paragraphs(s: client.Session) -> list[str]:
    return [str(p.children[0]) for p in fragment(s).children]


@contextlib.asynccontextmanager
async def enter_and_typing(
    srv: RunningServer, doc: str
) -> AsyncIterator[tuple[client.Session, client.Session]]:
    """Bob writes a line; Alice presses Enter before "jumps" (as y-prosemirror does it:
    the tail deleted, a new paragraph holding a copy of it); Bob types "very " in the
    new paragraph."""
    async with (
        client.connect(srv.ws_url, doc, user="bob") as b,
        client.connect(srv.ws_url, doc, user="alice") as a,
    ):
        p = fragment(b).children.append(XmlElement("paragraph"))
        p.children.append(XmlText()).insert(0, LINE)
        await b.flush()
        await a.wait_for(lambda: paragraphs(a) == [LINE])
        with a.doc.transaction():
            text = fragment(a).children[0].children[0]
            at = LINE.index("jumps")
            del text[at : len(LINE)]
            new = fragment(a).children.insert(1, XmlElement("paragraph"))
            new.children.append(XmlText()).insert(0, LINE[at:])
        await a.flush()
        await b.wait_for(lambda: len(paragraphs(b)) == 2)
        tail = fragment(b).children[1].children[0]
        tail.insert(str(tail).index("lazy"), "very ")
        await b.flush()
        await a.wait_for(lambda: "very" in paragraphs(a)[1])
        yield a, b


async def test_undo_of_an_enter_keeps_the_paragraph_with_what_others_typed_in_it(
    tmp_path: Path,
) -> None:
    """Alice's undo of her Enter takes her copy of the tail out of the new paragraph and
    puts the tail back in the first one; the new paragraph stays, with bob's "very " in
    it (Yjs's UndoManager took it out with the paragraph), and the answer says so."""
    at = LINE.index("jumps")
    tail = len(LINE) - at
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with enter_and_typing(srv, "ws") as (a, b):
            answer = await a.request({"type": "undo"})
            assert answer["ok"] is True and "removed_others" not in answer, answer
            # the paragraph and its text
            assert answer["kept_containers"] == {"items": 2, "others": [BOB_5]}, answer
            assert answer["removed"] == {"characters": tail, "items": 0}, answer
            await b.wait_for(lambda: paragraphs(b) == [LINE, "very "])
            # her redo splits the line again, bob's words where he typed them
            answer = await a.request({"type": "redo"})
            assert answer["ok"] is True and "removed_others" not in answer, answer
            await b.wait_for(
                lambda: paragraphs(b) == [LINE[:at], LINE[at:].replace("lazy", "very lazy")]
            )

        async with enter_and_typing(srv, "http") as (a, _b):
            async with httpx.AsyncClient() as http:
                r = await http.post(f"{srv.url}/api/docs/http/undo?user=alice")
            assert r.status_code == 200
            assert "removed_others" not in r.json(), r.json()
            assert r.json()["kept_containers"]["others"] == [BOB_5], r.json()

        async with enter_and_typing(srv, "py") as (a, _b):
            got = await a.undo()
            # her copy of the tail out of the new paragraph, the tail back in the first
            # one; the paragraph and its text kept with bob's words (the Python client's
            # OpResult had no kept_containers: a script could not tell)
            assert got == OpResult(
                True, got.seq, None, (), removed_characters=tail, added_characters=tail,
                kept_containers=KeptContainers(2, (Removed("bob", 5, 0),)), reverts=(2,),
            ), got  # fmt: skip
            redone = await a.redo()
            assert redone.ok and redone.kept_containers is None, redone

        async with enter_and_typing(srv, "pyhttp") as (a, _b):
            async with client.History(srv.url, user="alice") as h:
                got = await h.undo("pyhttp")
            assert got.ok and got.removed_others == (), got
            assert got.kept_containers == KeptContainers(2, (Removed("bob", 5, 0),)), got


async def test_an_undo_of_ones_own_text_reports_nothing(tmp_path: Path) -> None:
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "own", user="alice") as a,
            client.connect(srv.ws_url, "own", user="bob") as b,
        ):
            a.text().insert(0, "hello ")
            await a.flush()
            await b.wait_for(lambda: str(b.text()) == "hello ")
            b.text().insert(6, "world")
            await b.flush()
            a.text().insert(0, ">")
            await a.flush()
            await a.wait_for(lambda: str(a.text()) == ">hello world")
            answer = await a.request({"type": "undo"})
            assert answer["ok"] is True and "removed_others" not in answer, answer
            answer = await a.request({"type": "undo"})
            assert answer["ok"] is True and "removed_others" not in answer, answer
            await b.wait_for(lambda: str(b.text()) == "world")


async def test_text_an_undo_put_back_counts_as_its_undoers_after_a_reload(
    tmp_path: Path,
) -> None:
    """Bob's "very " brought back by his own redo carries the server's client id, which
    every user's undos share: still Bob's, also once the room was unloaded and loaded
    from its snapshot again."""
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with enter_and_typing(srv, "copies") as (a, b):
            assert (await b.undo()).ok
            await a.wait_for(lambda: "very" not in str(fragment(a)))
            assert (await b.redo()).ok
            await a.wait_for(lambda: "very" in str(fragment(a)))
        await eventually(
            lambda: srv.backend.rooms.get_loaded("copies") is None, what="the room unloaded"
        )
        async with client.connect(srv.ws_url, "copies", user="alice") as a:
            answer = await a.request({"type": "undo"})
            assert answer["kept_containers"]["others"] == [BOB_5], answer
            await a.wait_for(lambda: paragraphs(a) == [LINE, "very "])


async def test_elements_of_others_are_counted_apart(tmp_path: Path) -> None:
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with enter_and_typing(srv, "items") as (a, b):
            new = fragment(b).children[1]
            new.children.append(XmlElement("hardBreak"))
            await b.flush()
            await a.wait_for(lambda: len(list(fragment(a).children[1].children)) == 2)
            answer: dict[str, Any] = await a.request({"type": "undo"})
            assert "removed_others" not in answer, answer
            assert answer["kept_containers"]["others"] == [
                {"user": "bob", "characters": 5, "items": 1}
            ], answer


async def test_the_client_says_what_an_undo_and_a_redo_visibly_did(tmp_path: Path) -> None:
    """OpResult carries the answer's ``removed``, ``added`` and ``skipped``, over the
    websocket (Session) and over HTTP (History): alice's second step, " world", was all
    deleted by bob, so her undo skips it and takes out her first, "hello"; her redo
    brings "hello" back."""
    async with run_server(make_settings(tmp_path / "db")) as srv:
        for doc in ("ws", "http"):
            async with (
                client.connect(srv.ws_url, doc, user="alice") as a,
                client.connect(srv.ws_url, doc, user="bob") as b,
                client.History(srv.url, user="alice") as h,
            ):
                a.text().insert(0, "hello")
                await a.flush()
                a.text().insert(5, " world")
                await a.flush()
                await b.wait_for(lambda: str(b.text()) == "hello world")
                b.text().delete(5, 6)
                await b.flush()
                await a.wait_for(lambda: str(a.text()) == "hello")
                word = (await h.events(doc)).events[1]
                assert (word.actor, word.kind) == ("alice", "edit")

                undone = await (a.undo() if doc == "ws" else h.undo(doc))
                assert undone == OpResult(
                    True, undone.seq, None,
                    removed_characters=5, removed_items=0,
                    added_characters=0, added_items=0,
                    skipped=((word.seq,),), reverts=(word.seq - 1,),
                ), undone  # fmt: skip
                await b.wait_for(lambda: str(b.text()) == "")

                redone = await (a.redo() if doc == "ws" else h.redo(doc))
                assert redone == OpResult(
                    True, redone.seq, None, added_characters=5, reverts=(undone.seq,)
                ), redone
                assert redone.seq == undone.seq + 1  # type: ignore[operator]
                await b.wait_for(lambda: str(b.text()) == "hello")


async def test_a_revert_that_keeps_a_paragraph_says_so_in_the_client_and_the_cli(
    tmp_path: Path, capfd: Any
) -> None:
    """A revert of Alice's Enter keeps the paragraph Bob typed in, as her undo does; the
    server's answer said so (kept_containers) but the Python client's Reverted had no
    such field and `palimpsest revert` did not print it."""
    kept = KeptContainers(2, (Removed("bob", 5, 0),))
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with enter_and_typing(srv, "rv") as (_a, _b):
            async with client.History(srv.url, user="teacher") as h:
                dry = await h.revert("rv", "alice", since=0, dry_run=True)
                assert dry.dry_run and dry.kept_containers == kept, dry
                capfd.readouterr()
                argv = ["revert", "rv", "--actor", "alice", "--since", "0", "--dry-run",
                        "--url", srv.url, "--user", "teacher"]  # fmt: skip
                assert await asyncio.to_thread(client_main, argv) == 0
                out = capfd.readouterr().out
                assert (
                    "\n  would keep 2 items: others wrote in them: 5 characters by bob\n" in out
                ), out
                assert await asyncio.to_thread(client_main, [*argv, "--json"]) == 0
                got = json.loads(capfd.readouterr().out)
                assert got["kept_containers"] == {"items": 2, "others": [BOB_5]}, got
                done = await h.revert("rv", "alice", since=0)
                assert done.seq is not None and done.kept_containers == kept, done
                again = await h.revert("rv", "alice", since=0)
                assert again.reason and again.kept_containers is None, again


async def test_an_undo_or_redo_naming_another_user_is_refused_and_does_nothing(
    tmp_path: Path,
) -> None:
    """undo and redo act as the connection's user only: a request that names someone else
    (``"user": "eve"``) is refused, not read as the caller's own undo (which would take
    out the caller's work where they meant eve's), as the HTTP routes refuse such keys."""
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "named", user="eve") as e,
            client.connect(srv.ws_url, "named", user="mallory") as m,
        ):
            e.text().insert(0, "eve's ")
            await e.flush()
            await m.wait_for(lambda: str(m.text()) == "eve's ")
            m.text().insert(6, "mallory's")
            await m.flush()
            for kind, key in (("undo", "user"), ("undo", "actor"), ("redo", "as")):
                answer = await m.request({"type": kind, key: "eve"})
                assert answer["ok"] is False and answer["code"] == "BadRequest", answer
                assert f"not '{key}'" in answer["reason"], answer
                assert "nothing was done" in answer["reason"], answer
            answer = await m.request({"type": "open_group", "group": "g1", "user": "eve"})
            assert answer["ok"] is False and "not 'user'" in answer["reason"], answer
            assert str(m.text()) == "eve's mallory's"
            # the same request without the key is mallory's own undo, as before
            assert (await m.request({"type": "undo"}))["ok"] is True
            await e.wait_for(lambda: str(e.text()) == "eve's ")
