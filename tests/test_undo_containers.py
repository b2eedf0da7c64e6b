"""An undo never takes out another user's live content by deleting a container the undoer
made (docs/undo.md, "What others wrote inside what you made stays"): an element its step
inserted that now holds what others wrote is kept, and only the undoer's own content in
it goes; the answer says what it kept (``kept_containers``). And a redo whose content's
place is gone says so (``skipped``, a reason) rather than "nothing to redo".

Shaped as BlockNote writes its documents (a root ``blockGroup`` holding every block as a
``blockContainer`` with its content, a nested ``blockGroup`` for indented children),
with real clients over real websockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import free_port, run_server
from pycrdt import XmlElement, XmlFragment, XmlText

from palimpsest import client
from palimpsest.settings import Settings


def make_settings(db: Path) -> Settings:
    return Settings(db=str(db), port=free_port(), unload_after_seconds=0.3, undo_capture_ms=0)


def fragment(s: client.Session) -> XmlFragment:
    return s.doc.get("document-store", type=XmlFragment)


def block(words: str, ident: str) -> XmlElement:
    """A BlockNote block: blockContainer(id) > paragraph > text."""
    return XmlElement(
        "blockContainer",
        {"id": ident},
        [XmlElement("paragraph", {"textAlignment": "left"}, [XmlText(words)])],
    )


def words(s: client.Session) -> str:
    return str(fragment(s))


async def test_undo_of_the_step_that_made_the_root_keeps_what_others_wrote_in_it(
    tmp_path: Path,
) -> None:
    """Alice's first step made BlockNote's single root blockGroup with her block; Bob and
    Carol added blocks to it. Her undo takes out her block only: the root stays with
    theirs (taken out, every tab re-created an empty root at once, alice's tab in her
    name, which cleared her redo: their text was lost). Her redo brings her block back."""
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "bn", user="alice") as a,
            client.connect(srv.ws_url, "bn", user="bob") as b,
            client.connect(srv.ws_url, "bn", user="carol") as c,
        ):
            fragment(a).children.append(XmlElement("blockGroup", {}, [block("Alice first.", "a1")]))
            await a.flush()
            for s, text, ident in ((b, "Bob paragraph.", "b1"), (c, "Carol paragraph.", "c1")):
                await s.wait_for(lambda s=s: "Alice first." in words(s))
                group = fragment(s).children[0]
                group.children.append(block(text, ident))
                await s.flush()
            await a.wait_for(lambda: "Carol paragraph." in words(a) and "Bob" in words(a))

            answer: dict[str, Any] = await a.request({"type": "undo"})
            assert answer["ok"] is True, answer
            assert "removed_others" not in answer, answer
            assert answer["kept_containers"] == {
                "items": 1,
                "others": [
                    {"user": "bob", "characters": 14, "items": 4},
                    {"user": "carol", "characters": 16, "items": 4},
                ],
            }, answer
            # her block: the container, its paragraph, their two attributes (XmlText is not counted)
            assert answer["removed"] == {"characters": 12, "items": 4}, answer
            for s in (a, b, c):
                await s.wait_for(lambda s=s: "Alice first." not in words(s))
                root = list(fragment(s).children)
                assert len(root) == 1 and root[0].tag == "blockGroup"
                assert [x.attributes["id"] for x in root[0].children] == ["b1", "c1"]

            answer = await a.request({"type": "redo"})
            assert answer["ok"] is True and "removed_others" not in answer, answer
            for s in (a, b, c):
                await s.wait_for(lambda s=s: "Alice first." in words(s))
                group = fragment(s).children[0]
                assert [x.attributes["id"] for x in group.children] == ["a1", "b1", "c1"]


async def test_a_redo_whose_place_is_gone_says_so(tmp_path: Path) -> None:
    """Bob's "Parent" with an indented child; Alice adds a sibling in Bob's nested group;
    Bob deletes his child. Alice's undo leaves the nested group empty, which BlockNote's
    schema forbids: Bob's tab deletes it. Alice's redo cannot put her block back (its
    parent is gone): it says so, and which step it could not redo."""
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "nested", user="bob") as b,
            client.connect(srv.ws_url, "nested", user="alice") as a,
        ):
            parent = block("Parent", "p")
            fragment(b).children.append(XmlElement("blockGroup", {}, [parent]))
            parent.children.append(XmlElement("blockGroup", {}, [block("child by bob", "ch")]))
            await b.flush()
            await a.wait_for(lambda: "child by bob" in words(a))
            nested = fragment(a).children[0].children[0].children[1]
            nested.children.append(block("alice sibling", "as"))
            await a.flush()
            await b.wait_for(lambda: "alice sibling" in words(b))
            nested = fragment(b).children[0].children[0].children[1]
            del nested.children[0]
            await b.flush()
            await a.wait_for(lambda: "child by bob" not in words(a))

            undone: dict[str, Any] = await a.request({"type": "undo"})
            assert undone["ok"] is True, undone
            await b.wait_for(lambda: "alice sibling" not in words(b))
            # what BlockNote does with an empty blockGroup
            del fragment(b).children[0].children[0].children[1]
            await b.flush()
            await a.wait_for(lambda: len(list(fragment(a).children[0].children[0].children)) == 1)

            answer: dict[str, Any] = await a.request({"type": "redo"})
            assert answer["ok"] is False, answer
            assert answer["skipped"] == [[undone["seq"]]], answer
            assert "gone" in answer["reason"], answer
            got = await a.redo()
            assert not got.ok and got.skipped == ((undone["seq"],),), got
