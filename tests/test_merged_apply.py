"""A committed batch of client edits is applied to the room's document as the merged
updates it was broadcast in (Room._apply_merged), one transaction per merged update
instead of one per edit, when no extension's per-event hook reads the document
(Extension.reads_doc_per_event). Every event still goes through the room's bookkeeping
and the hooks, in order, with the change it made handed over; an extension that reads
the document gets every event applied by itself, as before."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from pycrdt import Doc, Text
from roomhelp import Peer, as_set, observed_change

from palimpsest.backend import Backend
from palimpsest.errors import Forbidden
from palimpsest.extensions import Extension
from palimpsest.features import builtin_extensions
from palimpsest.origins import ClientOrigin, Origin
from palimpsest.ranges import Ranges
from palimpsest.room import MERGE_CHUNK, Room
from palimpsest.settings import Settings
from palimpsest.store.base import Event, NewEvent
from palimpsest.store.memory import MemoryStore
from palimpsest.undo.actions import perform


class Hooks(Extension):
    """Records the hooks' calls, (hook, seq, room.seq), and the change handed to each."""

    reads_doc_per_event = False

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.handed: list[tuple[Ranges, Ranges] | None] = []

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None:
        self.calls.append(("before_apply", event.seq, room.seq))

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        assert isinstance(origin, ClientOrigin) and origin.actor == event.actor
        self.calls.append(("on_applied", event.seq, room.seq))
        self.handed.append(room.current_change)


class ReadsDoc(Extension):
    """An extension that reads the document at each event (the default)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        self.texts.append(str(room.doc.get("content", type=Text)))


def typed(n_ann: int, n_bob: int) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Keystrokes of two writers, interleaved, each writer's own after the other's (as
    the broadcast brings them): (actor, update) in order, and the text after each."""
    docs = {name: Doc() for name in ("ann", "bob")}
    texts = {name: d.get("content", type=Text) for name, d in docs.items()}
    out: list[tuple[str, bytes]] = []
    after: list[str] = []
    for i in range(max(n_ann, n_bob)):
        for name, n in (("ann", n_ann), ("bob", n_bob)):
            if i >= n:
                continue
            got: list[bytes] = []
            sub = docs[name].observe(lambda e, got=got: got.append(e.update))
            t = texts[name]
            if name == "bob" and i % 7 == 6 and len(t) > 3:
                del t[1:3]  # deletions of the other's text too
            else:
                t.insert(len(t) // 2, "ab"[name == "bob"])
            docs[name].unobserve(sub)
            (other,) = set(docs) - {name}
            docs[other].apply_update(got[0])
            out.append((name, got[0]))
            after.append(str(t))
    return out, after


def backend_with(ext: Extension) -> Backend:
    """A backend over a memory store: `ext` first, then the built-in extensions."""
    settings = Settings()
    return Backend(settings, MemoryStore(), [ext, *builtin_extensions(settings)])


def queue(room: Room, updates: list[tuple[str, bytes]]) -> None:
    """Each (actor, update) received from that actor's connection, none flushed yet."""
    peers = {name: Peer(f"{name}-1", name) for name in ("ann", "bob")}
    for name, u in updates:
        assert room.receive_update(peers[name], u)


async def test_a_batch_is_applied_merged_and_every_event_still_goes_through_the_hooks() -> None:
    hooks = Hooks()
    backend = backend_with(hooks)
    async with backend:
        room = await backend.rooms.get("d")
        assert room.observer.merged_apply
        transactions: list[int] = []
        room.doc.observe(lambda e: transactions.append(1))  # not muted: subscribed directly
        updates, after = typed(300, 120)
        queue(room, updates)
        await room.flush()  # one batch: 420 edits, max_batch 1024
        n = len(updates)
        assert room.seq == n
        assert str(room.doc.get("content", type=Text)) == after[-1]
        # one transaction per merged update (MERGE_CHUNK edits each), not one per edit
        assert len(transactions) == -(-n // MERGE_CHUNK) <= n // 50
        # the hooks, for every event in order, before and after room.seq moves
        expected = []
        for seq in range(1, n + 1):
            expected += [("before_apply", seq, seq - 1), ("on_applied", seq, seq)]
        assert hooks.calls == expected
        # the change handed over for each event is what applying it alone does
        ref: Doc[Any] = Doc()
        seen: list[tuple[Ranges, Ranges]] = []

        ref.observe(lambda e: seen.append(observed_change(e)))
        for _, u in updates:
            ref.apply_update(u)
        assert len(hooks.handed) == len(seen) == n
        for handed, observed in zip(hooks.handed, seen, strict=True):
            assert handed is not None
            assert as_set(handed[0]) == as_set(observed[0])
            assert as_set(handed[1]) == as_set(observed[1])
        # undo's stacks were fed per actor: ann's undo takes out her text, not bob's
        assert await perform(room, "ann", "undo", backend) is not None
        text = str(room.doc.get("content", type=Text))
        assert "a" not in text and text.count("b") > 0
        assert await perform(room, "ann", "redo", backend) is not None
        assert str(room.doc.get("content", type=Text)) == after[-1]


async def test_an_extension_that_reads_the_document_gets_each_event_applied_alone() -> None:
    reads = ReadsDoc()
    backend = backend_with(reads)
    async with backend:
        room = await backend.rooms.get("d")
        assert not room.observer.merged_apply
        transactions: list[int] = []
        room.doc.observe(lambda e: transactions.append(1))
        updates, after = typed(40, 20)
        queue(room, updates)
        await room.flush()
        assert len(transactions) == len(updates)
        assert reads.texts == after  # the document exactly after each event


async def test_a_merged_update_that_fails_to_apply_falls_back_to_one_by_one() -> None:
    """Fault injection: the document refuses the first merged update (as a panic in the
    CRDT library would); the room applies that chunk's events one by one instead, and
    nothing is lost or skipped."""
    hooks = Hooks()
    backend = backend_with(hooks)
    async with backend:
        room = await backend.rooms.get("d")
        real = room.doc.apply_update
        refused: list[bytes] = []

        def apply_update(update: bytes) -> None:
            if not refused and len(update) > 200:  # a merged update, not a keystroke
                refused.append(update)
                raise RuntimeError("injected")
            real(update)

        room.doc.apply_update = apply_update  # type: ignore[method-assign]
        updates, after = typed(30, 10)
        queue(room, updates)
        # a handler on the room's logger itself: `palimpsest serve`'s log set-up (run by
        # other tests in this process) keeps the package's records from the root's
        got: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = got.append  # type: ignore[method-assign]
        logger = logging.getLogger("palimpsest.room")
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        try:
            await room.flush()
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        assert refused, "the merged update was tried"
        assert str(room.doc.get("content", type=Text)) == after[-1]
        assert [c[1] for c in hooks.calls if c[0] == "on_applied"] == list(
            range(1, len(updates) + 1)
        )
        assert any("merged do not apply" in r.getMessage() for r in got)


async def test_a_server_change_between_batches_is_tracked_for_undo() -> None:
    """The document's observers stay muted from one batch of client edits to the next
    while the room is busy; a server change queued between two batches is still observed
    (its author can undo it), and the room ends subscribed again once idle."""
    backend = backend_with(Hooks())
    async with backend:
        room = await backend.rooms.get("d")
        updates, after = typed(40, 0)
        queue(room, updates[:20])
        change = asyncio.create_task(
            room.server_change(
                "bob", "restore", lambda d: d.get("content", type=Text).insert(0, "SRV")
            )
        )
        await asyncio.sleep(0)  # queued behind the first batch
        queue(room, updates[20:])
        await room.flush()
        ev = await change
        assert ev is not None and ev.seq == 21
        text = room.doc.get("content", type=Text)
        assert str(text) == "SRV" + after[-1]
        assert await perform(room, "bob", "undo", backend) is not None
        assert str(text) == after[-1]
        assert await perform(room, "ann", "undo", backend) is not None
        assert str(text) == ""
        assert not room.doc_observers.quiet  # idle: subscribed again


async def test_each_update_is_read_once_on_its_way_through_the_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An update's struct ranges and delete set are read once (updates.py keeps nothing
    read): a client's as it comes in, and admission, the no-op rule and the apply use
    that read; an event logged by another process once as it is applied here, for both
    the deletions the no-op rule knows and the client ids ownership gives its author."""
    from palimpsest import updates as U

    reads: list[bytes] = []
    real = U._keystroke  # every read of a bytes update starts there

    def counting(update: bytes) -> U.UpdateMeta | None:
        reads.append(update)
        return real(update)

    monkeypatch.setattr(U, "_keystroke", counting)
    store = MemoryStore()
    settings = Settings()
    backend = Backend(settings, store, builtin_extensions(settings))
    async with backend:
        room = await backend.rooms.get("d")
        updates, after = typed(30, 20)  # bob's include deletions
        queue(room, updates)
        await room.flush()
        assert str(room.doc.get("content", type=Text)) == after[-1]
        assert sorted(reads) == sorted(u for _, u in updates)  # each once
        # another process's events: eve types on the same document, and deletes
        eve: Doc[Any] = Doc()
        eve.apply_update(room.doc.get_update())
        theirs: list[bytes] = []
        eve.observe(lambda e: theirs.append(e.update))
        text = eve.get("content", type=Text)
        text.insert(0, "eve ")
        del text[4:6]
        [logged] = await store.append([("d", [NewEvent("eve", "edit", u, {}, 0) for u in theirs])])
        reads.clear()
        room.receive_peer_events(logged)
        await room.flush()
        assert str(room.doc.get("content", type=Text)) == str(text)
        assert sorted(reads) == sorted(theirs)  # each once, the deletion included
        # what that one read gave: eve's deletion is known (sent again, it is a no-op),
        # and her client id is hers
        ann = Peer("ann-1", "ann")
        assert not room.receive_update(ann, theirs[1])
        text.insert(0, "!")
        with pytest.raises(Forbidden):
            room.receive_update(ann, theirs[-1])
