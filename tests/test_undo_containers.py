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


async def test_a_step_restored_after_a_restart_reads_only_what_came_after_it(
    tmp_path: Path,
) -> None:
    """Bob's 60 paragraphs; Alice's Enter makes a paragraph of hers, Bob types in it and
    then elsewhere; the server restarts (the stacks come back from the snapshot's meta).
    The restored step has the floor it had before the restart (Step.floor, persisted
    compactly), so telling its containers reads only what came after it, not the
    whole document: the same answer either way. Alice's undo then keeps her paragraph
    with Bob's word in it, her own words go."""
    settings = make_settings(tmp_path / "db")
    async with run_server(settings) as srv:
        async with (
            client.connect(srv.ws_url, "restart", user="bob") as b,
            client.connect(srv.ws_url, "restart", user="alice") as a,
        ):
            with b.doc.transaction():
                for i in range(60):
                    p = fragment(b).children.append(XmlElement("paragraph"))
                    p.children.append(XmlText(f"bob line {i}."))
            await b.flush()
            await a.wait_for(lambda: len(fragment(a).children) == 60)
            with a.doc.transaction():
                p = fragment(a).children.insert(30, XmlElement("paragraph"))
                p.children.append(XmlText("alice new"))
            await a.flush()
            await b.wait_for(lambda: "alice new" in words(b))
            fragment(b).children[30].children[0].insert(0, "bob ")
            await b.flush()
            fragment(b).children[5].children[0].insert(0, "later ")
            await b.flush()
            await a.wait_for(lambda: "bob alice new" in words(a) and "later bob" in words(a))
            room = await srv.backend.rooms.get("restart")
            await eventually(
                lambda: "later bob" in str(room.doc.get("document-store", type=XmlFragment))
            )
            state = undo.state_of(room)
            step = state.stacks("alice").undo[-1]
            live_floor = state.floor(step)
            assert live_floor is not None
            whole = kept_containers(room.doc, step.ins)
            assert whole is not None and whole.containers == 2
            seqs = list(step.seqs)

    settings = make_settings(tmp_path / "db")
    async with run_server(settings) as srv:
        async with client.connect(srv.ws_url, "restart", user="alice") as a:
            await a.wait_for(lambda: "bob alice new" in words(a))
            room = await srv.backend.rooms.get("restart")
            state = undo.state_of(room)
            snap = await srv.backend.store.latest_snapshot("restart")
            assert snap is not None and snap.seq == room.seq  # the stacks are the meta's
            step = state.stacks("alice").undo[-1]
            assert step.seqs == seqs
            floor = state.floor(step)
            assert floor is not None, "a step from the snapshot's meta has no floor"
            assert {c: k for c, k in floor.items() if k} == {
                c: k for c, k in live_floor.items() if k
            }
            held = kept_containers(room.doc, step.ins, floor)
            assert held == whole
            # what was read: Alice's paragraph and Bob's words after it, not 60 paragraphs
            assert held is not None and held.read * 10 < whole.read, (held.read, whole.read)

            answer: dict[str, Any] = await a.request({"type": "undo"})
            assert answer["ok"] is True, answer
            assert answer["kept_containers"] == {
                "items": 2,
                "others": [{"user": "bob", "characters": 4, "items": 0}],
            }, answer
            await a.wait_for(lambda: "alice new" not in words(a))
            assert str(fragment(a).children[30].children[0]) == "bob "
            assert len(fragment(a).children) == 61


async def test_a_restored_floor_stays_right_through_snapshots_its_actor_missed(
    tmp_path: Path,
) -> None:
    """Alice's paragraph, then a restart; while she is away Carol (a client the document
    never saw before Alice's step) types in it and the server restarts again: Alice's
    stacks went through that second snapshot as the first had them (never decoded),
    with the first's base. After the second restart her step has a floor, under which
    Carol's client is at 0: her undo reads Carol's words and keeps the paragraph with
    them. (That such an entry keeps its own base: the test below.)"""
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "away", user="bob") as b,
            client.connect(srv.ws_url, "away", user="alice") as a,
        ):
            with b.doc.transaction():
                for i in range(20):
                    p = fragment(b).children.append(XmlElement("paragraph"))
                    p.children.append(XmlText(f"bob line {i}."))
            await b.flush()
            await a.wait_for(lambda: len(fragment(a).children) == 20)
            with a.doc.transaction():
                p = fragment(a).children.insert(10, XmlElement("paragraph"))
                p.children.append(XmlText("alice new"))
            await a.flush()
            await b.wait_for(lambda: "alice new" in words(b))

    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with client.connect(srv.ws_url, "away", user="carol") as c:
            await c.wait_for(lambda: "alice new" in words(c))
            fragment(c).children[10].children[0].insert(0, "carol ")
            await c.flush()
            room = await srv.backend.rooms.get("away")
            live = room.doc.get("document-store", type=XmlFragment)
            await eventually(lambda: "carol alice new" in str(live))
            carol = c.doc.client_id
            assert "alice" not in undo.state_of(room).actors  # still as the meta had it

    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with client.connect(srv.ws_url, "away", user="alice") as a:
            await a.wait_for(lambda: "carol alice new" in words(a))
            room = await srv.backend.rooms.get("away")
            state = undo.state_of(room)
            floor = state.floor(state.stacks("alice").undo[-1])
            assert floor is not None and floor.get(carol, 0) == 0, floor
            answer: dict[str, Any] = await a.request({"type": "undo"})
            assert answer["ok"] is True, answer
            assert answer["kept_containers"] == {
                "items": 2,
                "others": [{"user": "carol", "characters": 6, "items": 0}],
            }, answer
            await a.wait_for(lambda: "alice new" not in words(a))
            assert str(fragment(a).children[10].children[0]) == "carol "


def test_a_floor_kept_through_a_meta_its_actor_missed_is_relative_to_its_own_base() -> None:
    """A step's floor in a meta is relative to the base its actor's entry names. An entry
    that goes through a later meta undecoded (its actor away) keeps that base: read
    against the later meta's, a client that wrote in between (client 2 here) would get
    its later clock as the floor, above what it wrote inside the step's containers."""
    from pycrdt import Doc, Text

    from palimpsest.commit import Committer
    from palimpsest.room import Room
    from palimpsest.store.memory import MemoryStore
    from palimpsest.undo import RoomUndo, Stacks, Step

    store = MemoryStore()
    doc: Doc[Any] = Doc()

    def write(client: int, words: str) -> None:
        other: Doc[Any] = Doc(client_id=client)
        other.apply_update(doc.get_update())
        text = other.get("t", type=Text)
        text.insert(len(text), words)
        doc.apply_update(other.get_update(doc.get_state()))

    def undo_state() -> RoomUndo:
        room = Room("d", doc, 1, committer=Committer(store), reader=store)
        return RoomUndo(room, 0, 100)

    write(1, "a")
    write(2, "b")  # the base: {1: 1, 2: 1}
    first = undo_state()
    first.actors["alice"] = Stacks([Step([1], {1: [(1, 2)]}, {}, floor={1: 1})])
    write(1, "c")  # alice's step
    meta = first.to_meta()
    first.close()
    write(2, "dd")  # client 2 writes after alice's step: {2: 3}
    second = undo_state()
    second.load_meta(meta)
    meta = second.to_meta()  # alice's entry as it came
    second.close()
    assert "alice" not in second.actors
    third = undo_state()
    third.load_meta(meta)
    step = third.stacks("alice").undo[-1]
    assert third.floor(step) == {1: 1, 2: 1}
    third.close()
