"""A client's edit is applied with the document's observers muted; the room hands over
what it inserts and deletes instead (Room.current_change, server/doc_observers.py). That
must be exactly what an observer of the transaction would have seen: the same inserted
clock ranges (state vector before/after) and the same newly deleted ranges (the
transaction's delete set), through inserts, deletions of others' text, deletions of
what is already deleted, and an update that deletes its own new items."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text
from roomhelp import Peer, as_set, observed_change

from palimpsest.backend import Backend
from palimpsest.extensions import Extension
from palimpsest.origins import ClientOrigin, Origin
from palimpsest.ranges import Ranges
from palimpsest.room import Room
from palimpsest.settings import Settings
from palimpsest.store.base import Event
from palimpsest.store.memory import MemoryStore


class Spy(Extension):
    """Records, per applied client edit, the change the room handed over."""

    def __init__(self) -> None:
        self.handed: list[tuple[Ranges, Ranges] | None] = []

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        if isinstance(origin, ClientOrigin):
            self.handed.append(room.current_change)


async def test_the_handed_change_is_what_an_observer_sees() -> None:
    spy = Spy()
    backend = Backend(Settings(), MemoryStore(), [spy])
    async with backend:
        room = await backend.rooms.get("d")
        seen: list[tuple[Ranges, Ranges]] = []

        # not muted: subscribed directly
        room.doc.observe(lambda e: seen.append(observed_change(e)))
        docs = {name: Doc() for name in ("ann", "bob")}
        peers = {name: Peer(f"{name}-1", name) for name in docs}
        out: dict[str, list[bytes]] = {name: [] for name in docs}
        for name, d in docs.items():
            d.observe(lambda e, name=name: out[name].append(e.update))

        async def send(name: str) -> None:
            for u in out[name]:
                assert room.receive_update(peers[name], u)
                await room.flush()
                for other, d in docs.items():  # everyone catches up (as the broadcast would)
                    if other != name:
                        d.apply_update(u)
            out[name].clear()
            for o in out.values():
                o.clear()  # what the others just applied is not theirs to send

        ann = docs["ann"].get("content", type=Text)
        bob = docs["bob"].get("content", type=Text)
        ann.insert(0, "hello world")
        await send("ann")
        bob.insert(5, ", dear")
        await send("bob")
        del ann[3:9]  # across ann's and bob's text
        await send("ann")
        bob.insert(0, ">>")
        await send("bob")
        with docs["bob"].transaction():  # new text, deleted in the same update
            bob.insert(2, "tmp")
            del bob[2:5]
        await send("bob")
        # bob deletes a range part of which ann deleted already
        docs["bob"].apply_update(docs["ann"].get_update())
        del bob[2:6]
        await send("bob")
        # a sync step 2 after an offline edit: bob's whole state, every deletion so far
        # (known) and a new one, new text
        del bob[0:1]
        bob.insert(len(bob), "!")
        out["bob"] = [docs["bob"].get_update()]
        await send("bob")
        assert str(room.doc.get("content", type=Text)) == str(ann) == str(bob)
        assert len(spy.handed) == len(seen) == 7
        for handed, observed in zip(spy.handed, seen, strict=True):
            assert handed is not None, "a client edit's change is handed over"
            assert as_set(handed[0]) == as_set(observed[0])
            assert as_set(handed[1]) == as_set(observed[1])
        assert any(h and h[1] for h in spy.handed), "deletions were exercised"


def test_a_held_batch_mutes_once_and_observes_again_after() -> None:
    """DocObservers.hold() / release() (as the room's task holds them while busy):
    muted transactions in a row go unseen, a `resume()` inside makes the next one seen,
    an observer added while muted waits for the resume, and the release subscribes every
    observer again (even when the batch raises)."""
    from palimpsest.doc_observers import DocObservers

    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    seen: list[str] = []
    late: list[str] = []
    obs = DocObservers(doc)
    obs.add(lambda e: seen.append("a"))

    def edit(s: str) -> None:
        with doc.transaction():
            text.insert(len(text), s)

    obs.hold()
    try:
        with obs.muted():
            edit("1")
        with obs.muted():
            edit("2")
        obs.add(lambda e: late.append("b"))
        edit("3")  # still muted: the hold is on and nothing resumed
        obs.resume()
        edit("4")
        with obs.muted():
            edit("5")
    finally:
        obs.release()
    assert seen == ["a"] and late == ["b"]  # only "4" was observed
    edit("6")
    assert seen == ["a", "a"] and late == ["b", "b"]
    obs.hold()
    try:
        with obs.muted():
            raise RuntimeError("a failed batch")
    except RuntimeError:
        pass
    finally:
        obs.release()
    edit("7")
    assert seen == ["a"] * 3 and late == ["b"] * 3
    assert str(text) == "1234567"


def test_surely_new_only_when_an_item_is_past_the_admitted_clocks() -> None:
    """Owners.surely_new lets an update skip the no-op diff: only when one of its items
    lies past what was admitted or logged for its client; unsure (False) before any
    admission, for an echo of what is known, for a deletion alone, for garbage."""
    from palimpsest.ownership import Owners

    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    ups: list[bytes] = []
    doc.observe(lambda e: ups.append(e.update))
    text.insert(0, "ab")
    text.insert(2, "c")
    del text[0:1]
    owners = Owners(1)
    assert not owners.surely_new(ups[0])  # no clocks yet: the diff decides
    owners.admit("ann", ups[0], lambda: {})
    assert not owners.surely_new(ups[0])  # an echo: nothing past the clocks
    assert owners.surely_new(ups[1])  # "c" comes after "ab"
    owners.admit("ann", ups[1], lambda: {})
    assert not owners.surely_new(ups[1])
    assert not owners.surely_new(ups[2])  # a deletion alone: the diff decides
    assert not owners.surely_new(b"\x01\x05")  # does not parse: the diff decides
