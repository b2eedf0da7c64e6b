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

from conftest import eventually, free_port, run_server
from pycrdt import XmlElement, XmlFragment, XmlText

from palimpsest import client, undo
from palimpsest.settings import Settings
from palimpsest.undo.containers import kept_containers


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


async def test_many_paragraphs_only_those_holding_others_words_are_kept(tmp_path: Path) -> None:
    """Alice pastes 30 paragraphs amid Bob's 60 in one step; Bob and Carol then type in
    four of hers (and Bob in his own). Her undo keeps exactly those four (each a
    paragraph and its text: 8 containers) with their words, the rest of her paste goes.
    The containers are found reading only what came after her step (its floor): the
    same answer as from the whole document."""
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "many", user="bob") as b,
            client.connect(srv.ws_url, "many", user="carol") as c,
            client.connect(srv.ws_url, "many", user="alice") as a,
        ):
            with b.doc.transaction():
                for i in range(60):
                    p = fragment(b).children.append(XmlElement("paragraph"))
                    p.children.append(XmlText(f"bob line {i}."))
            await b.flush()
            await a.wait_for(lambda: len(fragment(a).children) == 60)
            with a.doc.transaction():
                for i in range(30):
                    p = fragment(a).children.insert(30 + i, XmlElement("paragraph"))
                    p.children.append(XmlText(f"alice pasted {i}."))
            await a.flush()
            for s, mine in ((b, (2, 11, 23)), (c, (11, 17))):
                await s.wait_for(lambda s=s: len(fragment(s).children) == 90)
                for i in mine:
                    text = fragment(s).children[30 + i].children[0]
                    text.insert(0, f"{s.user} ")
            fragment(b).children[5].children[0].insert(0, "again ")
            await b.flush()
            await c.flush()

            def typed_in(s: client.Session) -> bool:
                return "carol alice pasted 17." in words(s) and "bob alice pasted 23." in words(s)

            await a.wait_for(lambda: typed_in(a))
            room = await srv.backend.rooms.get("many")
            await eventually(lambda: typed_in_doc(room.doc))
            state = undo.state_of(room)
            step = state.stacks("alice").undo[-1]
            floor = state.floor(step)
            assert floor is not None
            whole = kept_containers(room.doc, step.ins)
            assert whole is not None and whole.containers == 8
            assert kept_containers(room.doc, step.ins, floor) == whole

            answer: dict[str, Any] = await a.request({"type": "undo"})
            assert answer["ok"] is True, answer
            assert answer["kept_containers"] == {
                "items": 8,
                "others": [
                    {"user": "bob", "characters": 12, "items": 0},
                    {"user": "carol", "characters": 12, "items": 0},
                ],
            }, answer
            for s in (a, b, c):
                await s.wait_for(lambda s=s: "alice pasted" not in words(s))
                kept = [sorted(str(p.children[0]).split()) for p in fragment(s).children]
                # (Bob's and Carol's words at one place: in the order of their client ids)
                assert kept[30:34] == [["bob"], ["bob", "carol"], ["carol"], ["bob"]], kept
                assert len(fragment(s).children) == 64


def typed_in_doc(doc: Any) -> bool:
    text = str(doc.get("document-store", type=XmlFragment))
    return "carol alice pasted 17." in text and "bob alice pasted 23." in text
