"""The store contract: one abstract test class that every EventStore backend passes.

A backend's test module only says how to create its store (``create``), how to open the
same data again (``reopen``, None when nothing survives; ``child_url`` for another
process), and how to damage a snapshot or a sealed segment in its own storage
(``damage_snapshot``, ``set_snapshot_meta``, ``damage_segment``). See test_memory.py,
test_sqlite.py, test_postgres.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from palimpsest.errors import ActorTaken, StoreError
from palimpsest.store import open_store, snapshot_codec
from palimpsest.store.base import Event, EventStore, NewEvent, checksum, dump_meta, now_ms
from palimpsest.store.doc_pages import DocPage, NameRange
from palimpsest.store.revocations import Revoked
from store.cursor_contract import CursorContract


def ev(actor: str = "ann", kind: str = "edit", update: bytes = b"u", ts: int = 1000,
       **meta: Any) -> NewEvent:  # fmt: skip
    return NewEvent(actor, kind, update, dict(meta), ts)


class StoreContract(CursorContract):
    """Subclass as ``TestXStore(StoreContract)`` and implement the three hooks."""

    #: whether a failing event can be made for this backend (see poison_event)
    can_fail_midway = True
    #: whether the backend seals its log into segments (the memory store does not)
    seals = True

    def child_url(self) -> str | None:
        """A URL another process can open the same store with (None: it cannot)."""
        return None

    async def damage_segment(self, store: EventStore, doc: str, first_seq: int) -> None:
        """Flip a byte of the stored segment of doc that starts at first_seq."""
        raise NotImplementedError

    async def create(self) -> EventStore:
        raise NotImplementedError

    async def delete_tail_row(self, store: EventStore, doc: str, seq: int) -> None:
        """Delete the tail row (doc, seq) through another connection (an admin command's
        compaction, as the server sees it)."""
        raise NotImplementedError

    async def reopen(self, store: EventStore) -> EventStore | None:
        """A new store over the same data (after store.stop()), or None."""
        return None

    async def damage_snapshot(self, store: EventStore, doc: str, seq: int) -> None:
        """Corrupt the stored state of snapshot (doc, seq) behind the store's back."""
        raise NotImplementedError

    async def set_snapshot_meta(self, store: EventStore, doc: str, seq: int, text: str) -> None:
        """Overwrite the stored meta JSON text of snapshot (doc, seq) behind the store's back."""
        raise NotImplementedError

    async def set_snapshot_checksum(
        self, store: EventStore, doc: str, seq: int, value: str
    ) -> None:
        """Overwrite the stored checksum of snapshot (doc, seq) behind the store's back."""
        raise NotImplementedError

    async def set_snapshot_state(self, store: EventStore, doc: str, seq: int, data: bytes) -> None:
        """Overwrite the stored state column of snapshot (doc, seq) behind the store's back."""
        raise NotImplementedError

    async def older_snapshot_row(
        self, store: EventStore, doc: str, seq: int, state: bytes, meta: str, stored: str
    ) -> None:
        """Make snapshot (doc, seq) a row of the form written before rows were packed."""
        await self.set_snapshot_state(store, doc, seq, state)
        await self.set_snapshot_meta(store, doc, seq, meta)
        await self.set_snapshot_checksum(store, doc, seq, stored)

    async def set_event_ts(self, store: EventStore, doc: str, seq: int, ts: int) -> None:
        """Overwrite the ts of tail event (doc, seq) behind the store's back (a log
        written before appends kept ts non-decreasing)."""
        raise NotImplementedError

    def poison_event(self) -> NewEvent:
        """An event the backend's storage refuses (to test that batches are atomic)."""
        return NewEvent(None, "edit", b"u", {}, 1)  # type: ignore[arg-type]

    @pytest.fixture
    async def store(self) -> AsyncIterator[EventStore]:
        s = await self.create()
        await s.start()
        try:
            yield s
        finally:
            await s.stop()

    # --- append --------------------------------------------------------------------------

    async def test_append_gives_gap_free_seqs_per_doc(self, store: EventStore) -> None:
        out = await store.append([("a", [ev(), ev()]), ("b", [ev()])])
        assert [[e.seq for e in b] for b in out] == [[1, 2], [1]]
        out = await store.append([("a", [ev()]), ("b", [ev(), ev(), ev()])])
        assert [[e.seq for e in b] for b in out] == [[3], [2, 3, 4]]
        assert await store.head("a") == 3
        assert await store.head("b") == 4
        assert await store.head("nope") == 0

    async def test_same_doc_twice_in_one_batch(self, store: EventStore) -> None:
        out = await store.append([("a", [ev(update=b"1")]), ("a", [ev(update=b"2")])])
        assert [[e.seq for e in b] for b in out] == [[1], [2]]
        assert [e.update for e in await store.read("a")] == [b"1", b"2"]

    async def test_empty_batches(self, store: EventStore) -> None:
        assert await store.append([("a", [])]) == [[]]
        assert await store.append([]) == []
        assert await store.head("a") == 0

    async def test_events_round_trip_exactly(self, store: EventStore) -> None:
        data = bytes(range(256)) * 3
        [[stored]] = await store.append(
            [("doc/é", [ev("bob", "undo", data, 1234567890123, reverts=[1, 2], conn="x")])]
        )
        assert stored == Event("doc/é", 1, 1234567890123, "bob", "undo", data,
                               {"reverts": [1, 2], "conn": "x"}, 1)  # fmt: skip
        [back] = await store.read("doc/é")
        assert back == stored
        assert isinstance(back.update, bytes)

    async def test_concurrent_appends_stay_gap_free(self, store: EventStore) -> None:
        async def writer(i: int) -> list[int]:
            seqs = []
            for j in range(10):
                [[e]] = await store.append([("c", [ev(update=f"{i}:{j}".encode())])])
                seqs.append(e.seq)
            return seqs

        got = await asyncio.gather(*(writer(i) for i in range(5)))
        allseqs = sorted(s for seqs in got for s in seqs)
        assert allseqs == list(range(1, 51))
        assert [e.seq for e in await store.read("c")] == list(range(1, 51))
        # each writer's events are in its own order
        for i, seqs in enumerate(got):
            assert seqs == sorted(seqs), i

    # --- the global position -------------------------------------------------------------

    async def test_positions_follow_commit_order_across_documents(self, store: EventStore) -> None:
        assert await store.last_position() == 0
        assert await store.read_all() == []
        first = await store.append([("a", [ev(update=b"a1"), ev(update=b"a2")]),
                                    ("b", [ev(update=b"b1")])])  # fmt: skip
        second = await store.append([("b", [ev(update=b"b2")]), ("a", [ev(update=b"a3")])])
        stored = [e for batch in first + second for e in batch]
        assert [e.pos for e in stored] == [1, 2, 3, 4, 5]
        assert await store.last_position() == 5
        got = await store.read_all()
        assert [(e.doc, e.seq, e.pos, e.update) for e in got] == [
            (e.doc, e.seq, e.pos, e.update) for e in stored
        ]
        # resumable from any position, a page at a time
        assert [e.pos for e in await store.read_all(after=2, limit=2)] == [3, 4]
        assert [e.pos for e in await store.read_all(after=5)] == []
        # the per-document reads carry the same positions
        assert [e.pos for e in await store.read("a")] == [1, 2, 5]

    async def test_concurrent_appenders_never_reorder_positions(self, store: EventStore) -> None:
        async def writer(doc: str) -> None:
            for j in range(15):
                await store.append([(doc, [ev(update=f"{doc}{j}".encode())])])

        await asyncio.gather(*(writer(d) for d in "abcd"))
        got = await store.read_all(limit=1000)
        assert [e.pos for e in got] == list(range(1, 61))
        for doc in "abcd":  # each document's events in seq order along the positions
            assert [e.seq for e in got if e.doc == doc] == list(range(1, 16))
        assert await store.last_position() == 60

    async def test_positions_survive_a_restart_and_continue(self, store: EventStore) -> None:
        await store.append([("a", [ev(), ev()])])
        async with self.reopened(store) as again:
            assert await again.last_position() == 2
            [[e]] = await again.append([("b", [ev()])])
            assert e.pos == 3
            assert [x.pos for x in await again.read_all()] == [1, 2, 3]

    async def test_a_deletion_takes_the_next_position_and_is_on_the_feed(
        self, store: EventStore
    ) -> None:
        await store.append([("a", [ev(update=b"a1"), ev(update=b"a2")])])
        await store.append([("b", [ev(update=b"b1")])])
        assert await store.deletions() == []
        assert await store.delete_doc("a", b"\x00", by="ada") is True
        assert await store.delete_doc("nothing", b"\x00", by="ada") is False  # no record
        [[b2]] = await store.append([("b", [ev(update=b"b2")])])
        assert b2.pos == 5  # after the deletion's position 4: one sequence
        assert await store.last_position() == 5
        [gone] = await store.deletions()
        assert (gone.doc, gone.seq, gone.pos, gone.actor, gone.kind, gone.update) == (
            "a", 2, 4, "ada", "deleted", b"",
        )  # fmt: skip
        assert gone.ts > 0
        # the log holds no such event (nor the deleted document's events any more)
        assert [e.pos for e in await store.read_all()] == [3, 5]
        feed = await store.read_feed()
        assert [(e.doc, e.kind, e.pos) for e in feed] == [
            ("b", "edit", 3), ("a", "deleted", 4), ("b", "edit", 5),
        ]  # fmt: skip
        # resumed from any position, a page at a time: each once
        assert [e.pos for e in await store.read_feed(after=2, limit=2)] == [3, 4]
        assert [e.pos for e in await store.read_feed(after=3, limit=1)] == [4]
        assert [e.pos for e in await store.read_feed(after=4)] == [5]
        assert await store.read_feed(after=5) == []
        assert [e.pos for e in await store.deletions(after=4)] == []
        assert [e.pos for e in await store.deletions(after=0, upto=3)] == []
        # the name written again and deleted again: a second record, its own last seq
        await store.append([("a", [ev(update=b"n1")])])
        assert await store.delete_doc("a", b"\x01") is True
        assert [(e.doc, e.seq, e.pos) for e in await store.deletions()] == [
            ("a", 2, 4), ("a", 1, 7),
        ]  # fmt: skip

    async def test_deletions_survive_a_restart(self, store: EventStore) -> None:
        await store.append([("a", [ev()]), ("b", [ev()])])
        await store.delete_doc("a", b"\x00", by="ada")
        async with self.reopened(store) as again:
            assert [(e.doc, e.kind, e.pos) for e in await again.read_feed(after=2)] == [
                ("a", "deleted", 3)
            ]
            [[e]] = await again.append([("b", [ev()])])
            assert e.pos == 4

    async def test_revoked_users(self, store: EventStore) -> None:
        revocations = store.revocations()
        assert await revocations.list() == []
        await revocations.put(Revoked("bob", 100, "root", 1))
        await revocations.put(Revoked("acme/alice", 200, "root", 2))
        await revocations.put(Revoked("bob", 300, "ann", 3))  # again: the new time
        assert await revocations.list() == [
            Revoked("acme/alice", 200, "root", 2), Revoked("bob", 300, "ann", 3)]  # fmt: skip
        async with self.reopened(store) as again:  # kept for every process and restart
            assert [r.user for r in await again.revocations().list()] == ["acme/alice", "bob"]
            assert await again.revocations().remove("bob") is True
            assert await again.revocations().remove("bob") is False
            assert [r.user for r in await again.revocations().list()] == ["acme/alice"]

    async def test_a_failing_batch_leaves_nothing(self, store: EventStore) -> None:
        if not self.can_fail_midway:
            pytest.skip("this backend cannot refuse an event midway")
        await store.append([("a", [ev()])])
        with pytest.raises(StoreError):
            await store.append([("a", [ev(), ev()]), ("b", [ev()]), ("z", [self.poison_event()])])
        assert await store.head("a") == 1
        assert await store.head("b") == 0
        assert [e.seq for e in await store.read("a")] == [1]
        assert await store.read("b") == []
        assert await store.doc_info("b") is None
        # and the store still works, with no gap
        [[e]] = await store.append([("a", [ev()])])
        assert e.seq == 2

    async def test_a_batch_below_its_floor_is_left_out_and_the_others_commit(
        self, store: EventStore
    ) -> None:
        """A room that had seen seq 3 of a document appends after the document was
        deleted under it (its head is 0): its batch is left out, in the transaction
        that commits the other rooms' batches, and the name stays deleted (its
        tombstone, no docs row). A floor the head reaches, or 0, appends as usual."""
        await store.append([("gone", [ev(), ev(), ev()]), ("kept", [ev(), ev()])])
        assert await store.delete_doc("gone", b"\x01\x07\x03", by="root")
        last = await store.last_position()
        out = await store.append(
            [("kept", [ev(update=b"k")]), ("gone", [ev(update=b"stale")]), ("new", [ev()])],
            floors=[2, 3, 0],
        )
        assert [[e.seq for e in evs] for evs in out] == [[3], [], [1]]
        assert all(e.pos > last for evs in out for e in evs)
        assert await store.head("gone") == 0
        assert await store.doc_info("gone") is None
        assert await store.read("gone") == []
        assert await store.tombstone("gone") == b"\x01\x07\x03"
        assert [e.update for e in await store.read("kept")][-1] == b"k"
        # a floor the head does not reach, on a document there (deleted and made anew)
        [[one]] = await store.append([("gone", [ev(update=b"anew")])])
        assert one.seq == 1
        assert await store.append([("gone", [ev(), ev()])], floors=[3]) == [[]]
        assert [e.update for e in await store.read("gone")] == [b"anew"]
        # a floor at or below the head: other writers advanced it (another process)
        [[e2]] = await store.append([("gone", [ev()])], floors=[1])
        [[e3]] = await store.append([("kept", [ev()])], floors=[1])
        assert (e2.seq, e3.seq) == (2, 4)
        # the same document twice in one append: each batch against the head before it
        out = await store.append([("gone", [ev()]), ("gone", [ev()])], floors=[9, 2])
        assert [[e.seq for e in evs] for evs in out] == [[], [3]]
        assert [e.seq for e in await store.read_all(after=last)] == [3, 1, 1, 2, 4, 3]
        with pytest.raises(ValueError, match="one per batch"):
            await store.append([("kept", [ev()])], floors=[0, 0])

    async def test_a_batch_of_another_generation_is_left_out(self, store: EventStore) -> None:
        """A writer that loaded generation G of a document appends after the name was
        deleted and written again past its floor: the head passes the floor, the
        generation does not; the batch is left out, the others commit. None checks
        nothing; a document with no row is no generation."""
        await store.append([("g", [ev(), ev()])])
        old = await store.doc_info("g")
        assert old is not None and old.generation is not None
        assert await store.delete_doc("g", b"", by="root")
        await store.append([("g", [ev(update=b"new")] * 3)])
        new = await store.doc_info("g")
        assert new is not None and new.generation != old.generation
        out = await store.append(
            [("g", [ev(update=b"stale")]), ("k", [ev()]), ("g", [ev(update=b"ok")])],
            floors=[2, 0, 2],
            generations=[old.generation, None, new.generation],
        )
        assert [[e.seq for e in evs] for evs in out] == [[], [1], [4]]
        assert [e.update for e in await store.read("g")] == [b"new"] * 3 + [b"ok"]
        info = await store.doc_info("g")
        assert info is not None and (info.head, info.generation) == (4, new.generation)
        # a generation on a name with no row: refused, and no row made
        assert await store.append([("none", [ev()])], generations=[new.generation]) == [[]]
        assert await store.doc_info("none") is None
        [[one]] = await store.append([("g", [ev()])], generations=[None])
        assert one.seq == 5
        with pytest.raises(ValueError, match="one per batch"):
            await store.append([("k", [ev()])], generations=[None, None])

    async def test_an_exact_batch_is_left_out_once_the_head_moved_past_its_floor(
        self, store: EventStore
    ) -> None:
        """A server change made on the document at head 2 appends with ``exact``: only
        while the head is still 2 (another process's edit logged in between would come
        before it, unseen by it). Left out like a batch below its floor, in a
        transaction whose other batches commit; False (or no flags) checks the floor
        alone. A new document's exact floor is 0."""
        await store.append([("x", [ev(), ev()])])
        await store.append([("x", [ev(update=b"between")])])  # another writer: head 3
        last = await store.last_position()
        out = await store.append(
            [("x", [ev(update=b"stale")]), ("k", [ev()]), ("x", [ev(update=b"late")])],
            floors=[2, 0, 2],
            generations=[None, None, None],
            exact=[True, True, False],
        )
        assert [[e.seq for e in evs] for evs in out] == [[], [1], [4]]
        assert [e.update for e in await store.read("x", after=2)] == [b"between", b"late"]
        assert all(e.pos > last for evs in out for e in evs)
        [[five]] = await store.append([("x", [ev(update=b"ok")])], floors=[4], exact=[True])
        assert five.seq == 5
        assert await store.append([("x", [ev()])], floors=[6], exact=[True]) == [[]]
        [[one]] = await store.append([("new", [ev()])], floors=[0], exact=[True])
        assert one.seq == 1
        with pytest.raises(ValueError, match="one per batch"):
            await store.append([("k", [ev()])], exact=[True, True])

    async def test_a_snapshot_of_another_generation_is_refused(self, store: EventStore) -> None:
        """A room's snapshot (written with the generation it loaded) of a document
        replaced under it (import_doc(replace=True): palimpsest copy --replace), or
        deleted and written again: refused in the write's transaction, the new
        document's snapshots untouched. Its own generation goes in; None checks nothing."""
        from palimpsest.store.base import NO_BASE, DocInfo, Snapshot

        await store.append([("g", [ev(), ev()])])
        old = await store.doc_info("g")
        assert old is not None and old.generation is not None
        assert await store.put_snapshot("g", 2, b"mine", generation=old.generation) is True
        assert await store.put_snapshot_if_due(
            "g", 2, b"due", min_gap=0, generation=old.generation
        ) is False  # fmt: skip
        # replaced: another document of the name, at the same seqs
        events = [Event("g", seq, 2000 + seq, "imp", "edit", b"n%d" % seq, {}) for seq in (1, 2)]
        snap = Snapshot("g", 2, 2002, b"new", checksum(b"new"), {})
        await store.import_doc(DocInfo("g", 2, 2002, 4), events, [snap], [], replace=True)
        now = await store.doc_info("g")
        assert now is not None and now.generation not in (None, old.generation)
        for base in (None, NO_BASE):
            assert await store.put_snapshot(
                "g", 2, b"stale", base=base, generation=old.generation
            ) is False  # fmt: skip
            assert await store.put_snapshot_if_due(
                "g", 3, b"stale", min_gap=0, base=base, generation=old.generation
            ) is False  # fmt: skip
        assert [(s.seq, s.state) for s in [await store.latest_snapshot("g")] if s] == [(2, b"new")]
        assert await store.put_snapshot("g", 1, b"one", generation=now.generation) is True
        # deleted, then written again: neither the deleted one's nor a name with no row
        assert await store.delete_doc("g", b"", by="root")
        assert await store.put_snapshot("g", 1, b"gone", generation=now.generation) is False
        await store.append([("g", [ev()])])
        again = await store.doc_info("g")
        assert again is not None and again.generation != now.generation
        assert await store.put_snapshot("g", 1, b"stale", generation=now.generation) is False
        assert await store.snapshots("g") == []
        assert await store.put_snapshot("g", 1, b"again", generation=again.generation) is True
        assert await store.put_snapshot("none", 1, b"x", generation=again.generation) is False
        assert await store.put_snapshot("g", 1, b"any", generation=None) is True

    async def test_a_snapshot_with_a_base_past_the_head_is_refused(self, store: EventStore) -> None:
        """A room's snapshot (written with its base) of a document deleted under it, or
        at a seq the log does not hold: refused in the write's transaction, nothing
        written under the name. One at or below the head goes in."""
        from palimpsest.store.base import NO_BASE

        await store.append([("s", [ev(), ev(), ev()])])
        assert await store.put_snapshot("s", 4, b"ahead", base=NO_BASE) is False
        assert await store.put_snapshot_if_due("s", 4, b"ahead", base=NO_BASE) is False
        assert await store.put_snapshot("s", 3, b"three", base=NO_BASE) is True
        assert await store.delete_doc("s", b"", by="root")
        assert await store.put_snapshot("s", 3, b"stale", base=NO_BASE) is False
        assert await store.put_snapshot_if_due("s", 3, b"stale", base=NO_BASE) is False
        assert await store.put_snapshot("none", 1, b"x", base=NO_BASE) is False
        assert await store.snapshots("s") == [] and await store.snapshots("none") == []
        assert await store.latest_snapshot("s") is None

    async def test_events_survive_a_restart(self, store: EventStore) -> None:
        await store.append([("a", [ev(update=b"x"), ev(update=b"y")])])
        await store.put_snapshot("a", 1, b"state")
        async with self.reopened(store) as again:
            assert [e.update for e in await again.read("a")] == [b"x", b"y"]
            [[e]] = await again.append([("a", [ev()])])
            assert e.seq == 3
            snap = await again.latest_snapshot("a")
            assert snap is not None and snap.state == b"state"
        await store.start()

    # --- reading ---------------------------------------------------------------------------

    async def test_read_ranges(self, store: EventStore) -> None:
        await store.append([("a", [ev(update=bytes([i])) for i in range(1, 11)])])
        assert [e.seq for e in await store.read("a")] == list(range(1, 11))
        assert [e.seq for e in await store.read("a", after=3)] == list(range(4, 11))
        assert [e.seq for e in await store.read("a", after=3, upto=5)] == [4, 5]
        assert [e.seq for e in await store.read("a", after=3, limit=2)] == [4, 5]
        assert [e.seq for e in await store.read("a", upto=2)] == [1, 2]
        assert await store.read("a", after=10) == []
        assert await store.read("a", after=5, upto=5) == []
        assert await store.read("other") == []

    async def test_query_filters_and_pages(self, store: EventStore) -> None:
        evs = [
            ev("ann", "edit", b"1", 100),
            ev("bob", "edit", b"2", 200),
            ev("ann", "undo", b"3", 300),
            ev("bob", "redo", b"4", 400),
            ev("ann", "edit", b"5", 500),
            ev("cy", "restore", b"6", 600),
        ]
        await store.append([("q", evs), ("other", [ev("ann")])])

        async def seqs(**kw: Any) -> list[int]:
            return [e.seq for e in await store.query("q", **kw)]

        assert await seqs() == [1, 2, 3, 4, 5, 6]
        assert await seqs(actor="ann") == [1, 3, 5]
        assert await seqs(actor="nobody") == []
        assert await seqs(kinds=["undo", "redo"]) == [3, 4]
        assert await seqs(since_ts=200, until_ts=400) == [2, 3, 4]
        assert await seqs(since_ts=450) == [5, 6]
        assert await seqs(until_ts=100) == [1]
        assert await seqs(actor="ann", kinds=["edit"], since_ts=200) == [5]
        # pagination: after the last seq of a page
        assert await seqs(limit=2) == [1, 2]
        assert await seqs(after=2, limit=2) == [3, 4]
        assert await seqs(after=4, limit=2) == [5, 6]
        assert await seqs(after=6, limit=2) == []
        assert await seqs(actor="ann", after=1, limit=1) == [3]
        page = await store.query("q", after=1, limit=1)
        assert page[0].update == b"2" and page[0].actor == "bob"

    async def test_query_newest_first(self, store: EventStore) -> None:
        """``desc=True``: the same filters, the newest first; ``before`` (exclusive) pages
        down from the last seq of a page, ``after`` still bounds from below."""
        evs = [ev(["ann", "bob"][i % 2], ["edit", "undo"][i % 3 == 0], b"%d" % i, 100 * i)
               for i in range(1, 11)]  # fmt: skip
        await store.append([("q", evs), ("other", [ev("ann")])])

        async def seqs(**kw: Any) -> list[int]:
            return [e.seq for e in await store.query("q", desc=True, **kw)]

        assert await seqs() == list(range(10, 0, -1))
        assert await seqs(limit=3) == [10, 9, 8]
        assert await seqs(before=8, limit=3) == [7, 6, 5]
        assert await seqs(before=2, limit=3) == [1]
        assert await seqs(before=1, limit=3) == []
        assert await seqs(after=6, limit=10) == [10, 9, 8, 7]
        assert await seqs(after=3, before=6) == [5, 4]
        assert await seqs(actor="ann", limit=2) == [10, 8]
        assert await seqs(actor="ann", before=7, limit=2) == [6, 4]
        assert await seqs(kinds=["undo"]) == [9, 6, 3]
        assert await seqs(since_ts=400, until_ts=700) == [7, 6, 5, 4]
        assert await seqs(actor="nobody") == []
        assert [e.seq for e in await store.query("q", before=4)] == [1, 2, 3]  # asc too
        page = await store.query("q", desc=True, limit=1)
        assert page[0].update == b"10" and page[0].actor == "ann"

    async def test_seq_at(self, store: EventStore) -> None:
        await store.append([("t", [ev(ts=100), ev(ts=200), ev(ts=200), ev(ts=300)])])
        assert await store.seq_at("t", 50) == 0
        assert await store.seq_at("t", 100) == 1
        assert await store.seq_at("t", 199) == 1
        assert await store.seq_at("t", 200) == 3
        assert await store.seq_at("t", 10**13) == 4
        assert await store.seq_at("none", 10**13) == 0

    async def test_ts_never_goes_back_within_a_document(self, store: EventStore) -> None:
        """An event's ts is its writer's clock (NewEvent.ts), raised to its document's
        previous event's ts when that clock is behind (stepped back by NTP, another
        process's): in separate commits, in one group commit's batches and within a
        batch. The version at a time is then the prefix of events stamped by it."""
        out = await store.append([("t", [ev(ts=1000), ev(ts=2000)])])
        assert [e.ts for e in out[0]] == [1000, 2000]
        # a clock 10 minutes behind, then back in time again within one batch
        [[c, d]] = await store.append([("t", [ev(ts=1500), ev(ts=2500)])])
        [b1, o, b2] = await store.append(
            [("t", [ev(ts=3000), ev(ts=2800)]), ("o", [ev(ts=5)]), ("t", [ev(ts=900)])]
        )
        assert [c.ts, d.ts, *(e.ts for e in b1 + b2)] == [2000, 2500, 3000, 3000, 3000]
        assert [e.ts for e in o] == [5]  # another document's clock is its own
        [[e]] = await store.append([("o", [ev(ts=4)])])
        assert e.ts == 5
        stored = await store.read("t")
        assert [(x.seq, x.ts) for x in stored] == [
            (1, 1000), (2, 2000), (3, 2000), (4, 2500), (5, 3000), (6, 3000), (7, 3000),
        ]  # fmt: skip
        assert [x.seq for x in await store.query("t", since_ts=2001)] == [4, 5, 6, 7]
        assert [x.seq for x in await store.query("t", until_ts=1999)] == [1]
        info = await store.doc_info("t")
        assert info is not None and info.updated_ts == 3000
        for at, seq in ((999, 0), (1000, 1), (1999, 1), (2000, 3), (2999, 4), (3000, 7)):
            assert await store.seq_at("t", at) == seq, at
        if self.seals:
            assert await store.seal("t", run=2) == 6  # three segments, one tail row
            for at, seq in ((999, 0), (1999, 1), (2000, 3), (2999, 4), (3000, 7)):
                assert await store.seq_at("t", at) == seq, at
        # a copy of a log whose ts go back is written rising
        info = await store.doc_info("t")
        assert info is not None
        stamps = [9, 7, 8, 6, 10, 3, 11]
        back = [dataclasses.replace(x, doc="u", ts=t) for x, t in zip(stored, stamps, strict=True)]
        await store.import_doc(dataclasses.replace(info, doc="u", updated_ts=11), back, [], [])
        assert [x.ts for x in await store.read("u")] == [9, 9, 9, 9, 10, 10, 11]
        [[e]] = await store.append([("u", [ev(ts=1)])])
        assert (e.seq, e.ts) == (8, 11)

    async def test_seq_at_in_a_log_whose_ts_go_back(self, store: EventStore) -> None:
        """A log written before appends kept ts non-decreasing may hold an event stamped
        later than one after it: the version at T then ends before the first event
        stamped after T, so that no event from after T is in it (nor compacted by
        ``compact --before T``), though some of T's or before may be left out."""
        await store.append([("t", [ev(ts=100 * i) for i in range(1, 7)])])
        await self.set_event_ts(store, "t", 3, 1000)  # 100 200 1000 400 500 600
        assert [e.ts for e in await store.read("t")] == [100, 200, 1000, 400, 500, 600]
        for at, seq in ((50, 0), (250, 2), (450, 2), (999, 2), (1000, 6)):
            assert await store.seq_at("t", at) == seq, at
        if self.seals:
            assert await store.seal("t", run=2) == 6
            for at, seq in ((50, 0), (250, 2), (450, 2), (999, 2), (1000, 6)):
                assert await store.seq_at("t", at) == seq, at

    async def test_list_docs_and_doc_info(self, store: EventStore) -> None:
        assert await store.list_docs() == []
        assert await store.doc_info("b") is None
        await store.append([("b", [ev(update=b"12", ts=5), ev(update=b"345", ts=9)])])
        await store.append([("a", [ev(update=b"x", ts=7)])])
        docs = await store.list_docs()
        assert [(d.doc, d.head, d.updated_ts, d.events_bytes, d.base_seq) for d in docs] == [
            ("a", 1, 7, 1, 0),
            ("b", 2, 9, 5, 0),
        ]
        info = await store.doc_info("b")
        assert info is not None and (info.head, info.events_bytes, info.updated_ts) == (2, 5, 9)

    async def test_doc_page(self, store: EventStore) -> None:
        """Pages of the document list as the store selects and orders them: names by
        code point in every store (PostgreSQL's collation may differ), a glob's ``_``
        a literal, keyset cursors for both sorts, exact limits."""
        ts = {"A": 5, "Z": 9, "_x": 1, "a": 7, "a-b": 7, "a.b": 3, "a~": 8, "ab": 2,
              "abc": 7, "b": 4, "team-a": 6, "team-b": 9, "teamx": 2, "x1y2z": 1,
              "x_y": 5, "xay": 3}  # fmt: skip
        await store.append([(n, [ev(ts=t)]) for n, t in ts.items()])
        by_name = sorted(ts)
        by_updated = sorted(ts, key=lambda n: (-ts[n], n))
        every = (NameRange(""),)

        async def names(*ranges: NameRange, **kw: Any) -> list[str]:
            return [d.doc for d in await store.doc_page(DocPage(tuple(ranges), **kw))]

        async def paged(ranges: tuple[NameRange, ...], sort: str, limit: int) -> list[str]:
            out: list[str] = []
            page = DocPage(ranges, sort, limit=limit)
            while rows := await store.doc_page(page):
                assert len(rows) <= limit
                out += [d.doc for d in rows]
                last = rows[-1]
                page = dataclasses.replace(page, after_name=last.doc, after_updated=last.updated_ts)
            return out

        assert await names(*every) == by_name == ["A", "Z", "_x", "a", "a-b", "a.b", "ab", "abc",
                                                  "a~", "b", "team-a", "team-b", "teamx",
                                                  "x1y2z", "x_y", "xay"]  # fmt: skip
        assert await names(*every, sort="updated") == by_updated
        assert by_updated[:4] == ["Z", "team-b", "a~", "a"]  # newest first, ties by name
        assert await names(*every, limit=3) == by_name[:3]
        assert await names(*every, after_name="a~") == by_name[by_name.index("a~") + 1 :]
        assert await names(*every, sort="updated", after_updated=7, after_name="a-b", limit=3) == [
            "abc", "team-a", "A"
        ]  # fmt: skip
        for sort in ("name", "updated"):
            for limit in (1, 2, 5, 16):
                assert await paged(every, sort, limit) == (
                    by_name if sort == "name" else by_updated
                )
        assert await names(NameRange("a")) == ["a", "a-b", "a.b", "ab", "abc", "a~"]
        assert await names(NameRange("team-")) == ["team-a", "team-b"]
        assert await names(NameRange("a", exact=True), NameRange("team-b", exact=True)) == [
            "a", "team-b"
        ]  # fmt: skip
        assert await names(NameRange("x", glob="x?y*")) == ["x1y2z", "x_y", "xay"]
        assert await names(NameRange("x", glob="x_y")) == ["x_y"]  # not LIKE's "_"
        assert await names(NameRange("", glob="*b")) == ["a-b", "a.b", "ab", "b", "team-b"]
        assert await names(NameRange("nothing")) == await names() == []
        mixed = (NameRange("team-"), NameRange("ab", exact=True), NameRange("x", glob="x?y"))
        assert await names(*mixed, sort="updated") == ["team-b", "team-a", "x_y", "xay", "ab"]
        assert await paged(mixed, "updated", 2) == ["team-b", "team-a", "x_y", "xay", "ab"]
        assert await paged(mixed, "name", 2) == ["ab", "team-a", "team-b", "x_y", "xay"]

    async def test_delete_doc(self, store: EventStore) -> None:
        await store.append([("d", [ev(), ev()]), ("keep", [ev()])])
        await store.put_snapshot("d", 2, b"s")
        await store.put_tag("d", "v1", 1, "ann")
        assert await store.delete_doc("d") is True
        assert await store.delete_doc("d") is False
        assert await store.head("d") == 0
        assert await store.read("d") == []
        assert await store.doc_info("d") is None
        assert await store.latest_snapshot("d") is None
        assert await store.snapshots("d") == []
        assert await store.tags("d") == []
        assert [d.doc for d in await store.list_docs()] == ["keep"]
        assert await store.head("keep") == 1
        [[e]] = await store.append([("d", [ev()])])
        assert e.seq == 1  # a deleted document starts over

    async def test_a_name_written_again_is_another_generation(self, store: EventStore) -> None:
        """DocInfo.generation tells a document from the one deleted before it under its
        name, whatever the clock says (created_ts is in milliseconds: a name deleted and
        written again within one has the same): never given twice, also not to
        another name, and not changed by what happens to the document afterwards."""
        await store.append([("g", [ev(ts=5)]), ("other", [ev(ts=5)])])
        first = await store.doc_info("g")
        other = await store.doc_info("other")
        assert first is not None and other is not None and first.generation is not None
        assert other.generation != first.generation
        await store.append([("g", [ev(ts=6)])])
        later = await store.doc_info("g")
        assert later is not None and later.generation == first.generation
        assert [d.generation for d in await store.list_docs() if d.doc == "g"] == [first.generation]
        seen = {first.generation, other.generation}
        for _ in range(2):
            await store.delete_doc("g")
            await store.append([("g", [ev(ts=5)])])
            again = await store.doc_info("g")
            assert again is not None and again.generation not in seen, (again, seen)
            seen.add(again.generation)

    async def test_rename_actor(self, store: EventStore) -> None:
        await store.append([("d", [ev("ann"), ev("bob"), ev("ann"), ev("bob")])])
        await store.append([("e", [ev("bob")])])
        if self.seals:
            assert await store.seal("d", run=2) == 4  # in segments and in the tail
        await store.append([("d", [ev("ann", meta_of="ann")])])
        await store.put_snapshot("d", 4, b"s", {"owners": {"7": "ann", "8": "bob"}})
        await store.put_snapshot("e", 1, b"s", {"owners": {"8": "bob"}})
        await store.put_tag("d", "v1", 1, "ann")
        await store.put_tag("d", "gone", 2, "ann")
        assert await store.delete_tag("d", "gone", "ann")
        await store.put_derived("d", "attribution", 4, b"ann wrote")
        await store.put_derived("e", "attribution", 1, b"bob wrote")

        def rewrite(meta: dict[str, Any]) -> dict[str, Any] | None:
            owners = meta["owners"]
            if "ann" not in owners.values():
                return None
            return {**meta, "owners": {c: "p1" if a == "ann" else a for c, a in owners.items()}}

        done = await store.rename_actor("ann", "p1", rewrite)
        assert (done.docs, done.tags, done.snapshots, done.derived) == (("d",), 1, 1, 1)
        assert done.tag_moves == 3  # the records of who created, moved or deleted tags
        # (in the same millisecond, records come by tag name: the order is not the point)
        assert sorted((m.name, m.action, m.actor) for m in await store.tag_history("d")) == [
            ("gone", "create", "p1"),
            ("gone", "delete", "p1"),
            ("v1", "create", "p1"),
        ]
        assert [e.actor for e in await store.read("d")] == ["p1", "bob", "p1", "bob", "p1"]
        assert [e.actor for e in await store.query("d", actor="p1")] == ["p1"] * 3
        assert await store.query("d", actor="ann") == []
        assert (await store.read("d"))[-1].meta == {"meta_of": "ann"}  # content: not ours
        assert [t.actor for t in await store.tags("d")] == ["p1"]
        snap = await store.latest_snapshot("d")
        assert snap is not None and snap.valid
        assert snap.meta["owners"] == {"7": "p1", "8": "bob"}
        assert await store.derived("d", "attribution") is None  # a cache: rebuilt
        assert await store.derived("e", "attribution") == (1, b"bob wrote")
        [[e]] = await store.append([("d", [ev("ann")])])  # the old name is a new actor now
        assert e.actor == "ann"
        assert [e.actor for e in await store.read("d")][-2:] == ["p1", "ann"]
        with pytest.raises(ActorTaken, match="actor of this store already"):
            await store.rename_actor("bob", "p1", rewrite)  # no merge
        with pytest.raises(ActorTaken, match="event kind"):
            await store.rename_actor("edit", "changed", rewrite)
        assert [e.actor for e in await store.read("e")] == ["bob"]

    async def test_restamp(self, store: EventStore) -> None:
        far = now_ms() + 365 * 86_400_000  # a clock a year ahead
        await store.append([("r", [ev(ts=1000), ev(ts=2000)])])
        await store.append([("r", [ev(ts=far), ev(ts=far + 10), ev(ts=far + 10)])])
        await store.append([("o", [ev(ts=far)])])  # another document: left alone
        if self.seals:
            assert await store.seal("r", run=2) == 4  # 3..4 in a segment, 5 in the tail
        await store.put_tag("r", "v", 4, "ann")  # (its ts raised to the last event's)
        await store.put_tag("r", "v", 3, "bob")  # moved: two records of tag changes
        await store.put_tag("r", "v", 4, "ann")
        await store.put_snapshot("r", 4, b"s", {"undo": {"last_ts": far + 10}})
        await store.put_snapshot("r", 2, b"s", {"undo": {"last_ts": 2000}})  # (ts: far + 10)
        now = now_ms()

        def rewrite(meta: dict[str, Any]) -> dict[str, Any] | None:
            if meta["undo"]["last_ts"] <= now:
                return None
            return {**meta, "undo": {"last_ts": 2011}}

        done = await store.restamp("r", now, lambda ts: 2001 + ts - far, rewrite)
        # the records of the tag's changes were stamped by the same clock as the tag:
        # they follow it (the last one's ts is the tag's), in their order
        moves = await store.tag_history("r", "v")
        assert [(m.ts, m.action, m.seq, m.was) for m in moves] == [
            (2011, "create", 4, None), (2011, "move", 3, 4), (2011, "move", 4, 3)]  # fmt: skip
        assert (done.events, done.snapshots, done.tags, done.tag_moves) == (3, 2, 1, 3)
        assert [e.ts for e in await store.read("r")] == [1000, 2000, 2001, 2011, 2011]
        assert [e.seq for e in await store.query("r", since_ts=2005)] == [4, 5]
        assert [e.seq for e in await store.query("r", until_ts=2005)] == [1, 2, 3]
        assert await store.seq_at("r", 2005) == 3
        assert [t.ts for t in await store.tags("r")] == [2011]
        snap = await store.latest_snapshot("r")
        assert snap is not None and snap.valid and snap.seq == 4
        assert (snap.ts, snap.meta) == (2011, {"undo": {"last_ts": 2011}})
        older = await store.latest_snapshot("r", at_most=2)
        assert older is not None and older.meta == {"undo": {"last_ts": 2000}}
        assert older.ts == 2011  # when it was written, as the log now says
        info = await store.doc_info("r")
        assert info is not None and info.updated_ts == 2011
        assert [e.ts for e in await store.read("o")] == [far]
        # the next event's floor is the new last ts, not the far one
        [[e6]] = await store.append([("r", [ev(ts=3000)])])
        assert e6.ts == 3000
        if self.seals:
            assert await store.seal("r", run=2) == 2  # 5 and 6, as the log holds them
            assert await store.segment_damage("r") == []
        assert [e.ts for e in await store.read("r")] == [1000, 2000, 2001, 2011, 2011, 3000]
        again = await store.restamp("r", now, lambda ts: 0, rewrite)
        assert (again.events, again.snapshots, again.tags, again.tag_moves) == (0, 0, 0, 0)

    async def test_delete_doc_leaves_a_tombstone(self, store: EventStore) -> None:
        await store.append([("t", [ev()])])
        assert await store.tombstone("t") is None
        assert await store.delete_doc("t", b"\x01\x05\x03") is True
        assert await store.tombstone("t") == b"\x01\x05\x03"
        assert await store.tombstone("other") is None
        assert await store.delete_doc("other", b"\x00") is False
        assert await store.tombstone("other") is None  # nothing existed: nothing to keep out
        await store.append([("t", [ev()])])  # the name is used again: the tombstone stays
        assert await store.tombstone("t") == b"\x01\x05\x03"
        assert await store.delete_doc("t", b"\x01\x05\x07") is True
        assert await store.tombstone("t") == b"\x01\x05\x07"

    # --- snapshots --------------------------------------------------------------------------

    async def test_snapshots(self, store: EventStore) -> None:
        await store.append([("s", [ev() for _ in range(10)])])
        assert await store.latest_snapshot("s") is None
        await store.put_snapshot("s", 3, b"three", {"undo": {"ann": ["x"]}})
        await store.put_snapshot("s", 7, b"seven")
        snap = await store.latest_snapshot("s")
        assert snap is not None and (snap.seq, snap.state, snap.doc) == (7, b"seven", "s")
        # the checksum covers exactly what is stored: the packed state and meta, and the
        # meta column (its format marker)
        stored, _, _ = snapshot_codec.pack(b"seven", dump_meta({}))
        assert snap.checksum == f"{checksum(stored)}:{checksum(snapshot_codec.PACKED.encode())}"
        assert snap.valid
        snap = await store.latest_snapshot("s", at_most=6)
        assert snap is not None and (snap.seq, snap.state) == (3, b"three")
        assert snap.meta == {"undo": {"ann": ["x"]}}
        assert await store.latest_snapshot("s", at_most=2) is None
        infos = await store.snapshots("s")
        sizes = [
            len(snapshot_codec.pack(b"three", dump_meta({"undo": {"ann": ["x"]}}))[0]),
            len(stored),
        ]
        assert [(i.seq, i.size, i.valid) for i in infos] == [
            (3, sizes[0], True),
            (7, sizes[1], True),
        ]
        # the same seq again replaces it
        await store.put_snapshot("s", 7, b"seven!")
        snap = await store.latest_snapshot("s")
        assert snap is not None and snap.state == b"seven!"
        assert len(await store.snapshots("s")) == 2

    async def test_a_damaged_snapshot_is_skipped_and_reported(self, store: EventStore) -> None:
        await store.append([("s", [ev() for _ in range(10)])])
        for seq in (2, 5, 8):
            await store.put_snapshot("s", seq, f"state-{seq}".encode())
        await self.damage_snapshot(store, "s", 8)
        snap = await store.latest_snapshot("s")
        assert snap is not None and (snap.seq, snap.state) == (5, b"state-5")
        infos = await store.snapshots("s")
        assert [(i.seq, i.valid) for i in infos] == [(2, True), (5, True), (8, False)]
        await self.damage_snapshot(store, "s", 5)
        await self.damage_snapshot(store, "s", 2)
        assert await store.latest_snapshot("s") is None
        # a new good one at the damaged seq repairs it
        await store.put_snapshot("s", 8, b"fixed")
        snap = await store.latest_snapshot("s")
        assert snap is not None and (snap.seq, snap.state) == (8, b"fixed")

    async def test_a_read_sees_every_write_answered_before_it_while_other_reads_run(
        self, store: EventStore
    ) -> None:
        # read-your-writes across callers: a server answers PUT (the append returned),
        # then its client's GET reads while other requests' reads are in flight (seen on
        # SQLite: a statement left active on the shared read connection kept its
        # snapshot, older than the append, for the reads queued meanwhile)
        await store.append([("busy", [ev() for _ in range(6)])])
        for seq in range(1, 7):
            await store.put_snapshot("busy", seq, f"state-{seq}".encode())
        for seq in (5, 6):  # latest_snapshot reads on past them
            await self.damage_snapshot(store, "busy", seq)
        done = False

        async def reader() -> None:
            while not done:
                snap = await store.latest_snapshot("busy")
                assert snap is not None and snap.seq == 4
                await store.doc_info("busy")
                await store.heads(["busy", "fresh-0"])

        readers = [asyncio.create_task(reader()) for _ in range(6)]
        try:
            for i in range(150):
                doc = f"fresh-{i}"
                await store.append([(doc, [ev()])])
                info = await store.doc_info(doc)
                assert info is not None and info.head == 1, (doc, info)
                assert await store.head(doc) == 1, doc
                assert (await store.heads([doc]))[doc] == 1, doc
        finally:
            done = True
            await asyncio.gather(*readers)

    @pytest.mark.parametrize(
        "meta",
        [
            '{"undo": {"ann": ["x"]',  # cut short: not JSON
            '{"undo": {"ann": ["y"]}}',  # JSON, but not what was written
            "[1, 2]",  # JSON, not an object
            "\x01\ufffe{",  # control characters, not JSON
        ],
    )
    async def test_a_snapshot_with_damaged_meta_is_skipped_and_reported(
        self, store: EventStore, meta: str
    ) -> None:
        await store.append([("m", [ev() for _ in range(10)])])
        await store.put_snapshot("m", 4, b"four", {"undo": {"ann": ["x"]}})
        await store.put_snapshot("m", 8, b"eight", {"undo": {"ann": ["x"]}})
        await self.set_snapshot_meta(store, "m", 8, meta)
        snap = await store.latest_snapshot("m")  # no JSONDecodeError: the older one
        assert snap is not None and (snap.seq, snap.state) == (4, b"four")
        assert snap.meta == {"undo": {"ann": ["x"]}}
        assert await store.latest_snapshot("m", at_most=7) == snap
        infos = await store.snapshots("m")
        assert [(i.seq, i.valid) for i in infos] == [(4, True), (8, False)]
        assert "meta" in infos[1].damage, infos[1].damage
        await self.set_snapshot_meta(store, "m", 4, "{")
        assert await store.latest_snapshot("m") is None
        # a new good one at the damaged seq repairs it
        await store.put_snapshot("m", 8, b"eight", {"undo": {}})
        snap = await store.latest_snapshot("m")
        assert snap is not None and (snap.seq, snap.meta) == (8, {"undo": {}})

    async def test_a_snapshot_written_before_meta_was_checksummed_still_loads(
        self, store: EventStore
    ) -> None:
        """Rows whose checksum is the state's alone (written by earlier versions)."""
        await store.append([("o", [ev() for _ in range(3)])])
        await store.put_snapshot("o", 3, b"old", {"k": 1})
        await self.older_snapshot_row(store, "o", 3, b"old", '{"k":1}', checksum(b"old"))
        snap = await store.latest_snapshot("o")
        assert snap is not None and (snap.seq, snap.meta) == (3, {"k": 1})
        assert [i.valid for i in await store.snapshots("o")] == [True]
        await self.set_snapshot_meta(store, "o", 3, "{")
        assert await store.latest_snapshot("o") is None
        assert [i.valid for i in await store.snapshots("o")] == [False]

    async def test_a_snapshot_row_written_before_rows_were_packed_still_loads(
        self, store: EventStore
    ) -> None:
        """Raw state, JSON meta, checksum of both: the rows of schema versions 1-3."""
        await store.append([("p", [ev() for _ in range(4)])])
        await store.put_snapshot("p", 2, b"x")
        meta = dump_meta({"undo": {"a": 1}})
        await self.older_snapshot_row(
            store, "p", 2, b"plain", meta, f"{checksum(b'plain')}:{checksum(meta.encode())}"
        )
        snap = await store.latest_snapshot("p")
        assert snap is not None and (snap.state, snap.meta) == (b"plain", {"undo": {"a": 1}})
        assert [(i.size, i.valid) for i in await store.snapshots("p")] == [(5, True)]
        # a newer, packed one beside it
        await store.put_snapshot("p", 4, b"packed" * 100, {"undo": {"b": 2}})
        snap = await store.latest_snapshot("p")
        assert snap is not None and (snap.state, snap.meta) == (b"packed" * 100, {"undo": {"b": 2}})
        assert [i.size < 600 for i in await store.snapshots("p")] == [True, True]

    async def test_a_packed_snapshot_whose_bytes_do_not_decompress_is_skipped(
        self, store: EventStore
    ) -> None:
        """Damaged bytes with a checksum that matches them (written so by a bug, or both
        changed): decompression fails, and it is skipped, never served."""
        await store.append([("z", [ev() for _ in range(6)])])
        await store.put_snapshot("z", 3, b"three", {"k": 3})
        await store.put_snapshot("z", 6, b"six", {"k": 6})
        junk = b"not zlib at all"
        await self.set_snapshot_state(store, "z", 6, junk)
        await self.set_snapshot_checksum(
            store, "z", 6, f"{checksum(junk)}:{checksum(snapshot_codec.PACKED.encode())}"
        )
        snap = await store.latest_snapshot("z")
        assert snap is not None and (snap.seq, snap.state, snap.meta) == (3, b"three", {"k": 3})

    async def test_a_snapshot_stored_as_a_difference_says_so(self, store: EventStore) -> None:
        """A ladder rung stored as a difference (server.retention): its row names the
        snapshot it is taken from, and listing tells it without decompressing."""
        await store.append([("r", [ev() for _ in range(6)])])
        await store.put_snapshot("r", 3, b"whole", {"undo": {}})
        await store.put_snapshot("r", 6, b"diff", {"undo": {}, "delta_of": 3})
        snap = await store.latest_snapshot("r")
        assert snap is not None and (snap.seq, snap.state, snap.delta_of) == (6, b"diff", 3)
        assert snap.valid
        infos = await store.snapshots("r")
        assert [(i.seq, i.delta_of, i.valid) for i in infos] == [(3, 0, True), (6, 3, True)]
        # the marker is covered by the checksum: changed, the row is damaged
        await self.set_snapshot_meta(store, "r", 6, snapshot_codec.marker(2))
        assert [(i.seq, i.valid) for i in await store.snapshots("r")] == [(3, True), (6, False)]
        snap = await store.latest_snapshot("r")
        assert snap is not None and snap.seq == 3

    async def test_delete_snapshots(self, store: EventStore) -> None:
        await store.append([("d", [ev() for _ in range(9)])])
        for seq in (3, 6, 9):
            await store.put_snapshot("d", seq, f"s{seq}".encode())
        assert await store.delete_snapshots("d", [3, 9, 4]) == 2
        assert [i.seq for i in await store.snapshots("d")] == [6]
        assert await store.delete_snapshots("d", []) == 0
        assert len(await store.read("d")) == 9  # the log is untouched

    async def test_derived_data(self, store: EventStore) -> None:
        await store.append([("v", [ev() for _ in range(9)])])
        assert await store.derived("v", "attribution") is None
        await store.put_derived("v", "attribution", 5, b"five")
        await store.put_derived("v", "other", 9, b"nine")
        assert await store.derived("v", "attribution") == (5, b"five")
        # a higher seq replaces it, a lower one (another process behind) does not
        await store.put_derived("v", "attribution", 8, b"eight")
        await store.put_derived("v", "attribution", 6, b"six")
        assert await store.derived("v", "attribution") == (8, b"eight")
        assert await store.derived("v", "other") == (9, b"nine")
        # dropped with the document
        await store.delete_doc("v")
        assert await store.derived("v", "attribution") is None

    async def test_derived_data_stored_is_read_back_at_once(self, store: EventStore) -> None:
        """A stored attribution index of a long document (921 kB at seq 105,047 in the
        field, over one at seq 36,870) is the row read right after its write returns.
        The field's stale read back was the cache's (it read before the write
        committed: test_attribution_read_back); the store answers this way."""
        import random

        rng = random.Random(7)
        older = rng.randbytes(300_000)
        newer = rng.randbytes(921_124)
        await store.append([("long", [ev() for _ in range(20)])])
        await store.put_derived("long", "attribution", 7, older)
        assert await store.derived("long", "attribution") == (7, older)
        await store.put_derived("long", "attribution", 19, newer)
        assert await store.derived("long", "attribution") == (19, newer)
        await store.put_derived("long", "attribution", 7, older)  # a slower writer, behind
        assert await store.derived("long", "attribution") == (19, newer)

    async def test_compact(self, store: EventStore) -> None:
        await store.append([("c", [ev(update=b"ab", ts=100 + i) for i in range(10)])])
        await store.put_snapshot("c", 3, b"three")
        await store.put_snapshot("c", 8, b"eight")
        await store.put_derived("c", "attribution", 9, b"who wrote 1..9")
        await store.put_derived("other", "attribution", 9, b"another document's")
        removed = await store.compact("c", 6, b"base-6")
        assert removed == 6
        # derived data names what the folded events did (who wrote what): gone with them
        assert await store.derived("c", "attribution") is None
        assert await store.derived("other", "attribution") == (9, b"another document's")
        assert [e.seq for e in await store.read("c")] == [7, 8, 9, 10]
        assert await store.head("c") == 10
        info = await store.doc_info("c")
        assert info is not None and (info.base_seq, info.events_bytes) == (6, 8)
        base = await store.latest_snapshot("c", at_most=7)
        assert base is not None and (base.seq, base.state) == (6, b"base-6")
        assert [i.seq for i in await store.snapshots("c")] == [6, 8]
        # the version at a time before the first kept event is the base
        assert await store.seq_at("c", 109) == 10
        [[e]] = await store.append([("c", [ev()])])
        assert e.seq == 11  # seqs are not renumbered
        assert await store.compact("c", 6, b"base-6") == 0

    # --- tags -------------------------------------------------------------------------------

    async def test_tags(self, store: EventStore) -> None:
        await store.append([("t", [ev() for _ in range(5)])])
        assert await store.tags("t") == []
        t = await store.put_tag("t", "draft", 4, "ann")
        assert (t.doc, t.name, t.seq, t.actor) == ("t", "draft", 4, "ann") and t.ts > 0
        await store.put_tag("t", "v1", 2, "bob")
        await store.put_tag("t", "a", 4, "bob")
        assert [(x.name, x.seq) for x in await store.tags("t")] == [
            ("v1", 2),
            ("a", 4),
            ("draft", 4),
        ]
        await store.put_tag("t", "v1", 5, "cy")  # the same name moves
        tags = {x.name: x for x in await store.tags("t")}
        assert (tags["v1"].seq, tags["v1"].actor) == (5, "cy") and len(tags) == 3
        assert await store.delete_tag("t", "v1") is True
        assert await store.delete_tag("t", "v1") is False
        assert [x.name for x in await store.tags("t")] == ["a", "draft"]
        assert await store.tags("other") == []

    async def test_tag_history_keeps_every_position_a_tag_had(self, store: EventStore) -> None:
        """A tag moved or deleted left no record of where it had pointed: "draft-1"
        re-pointed 2 -> 5 -> 3 read only as 3. Every creation, move and deletion is kept
        with who and when; a put that leaves the tag where it was, or one refused by
        move=False, is no change; deleting the document removes them with its tags."""
        await store.append([("th", [ev() for _ in range(5)])])
        await store.put_tag("th", "draft-1", 2, "ann")
        await store.put_tag("th", "draft-1", 5, "bob")
        await store.put_tag("th", "draft-1", 5, "bob")  # where it is: no change
        await store.put_tag("th", "draft-1", 4, "cy", move=False)  # refused: none
        await store.put_tag("th", "other", 1, "cy")
        await store.put_tag("th", "draft-1", 3, "cy")
        assert await store.delete_tag("th", "draft-1", "dee") is True
        assert await store.delete_tag("th", "draft-1", "dee") is False
        moves = await store.tag_history("th", "draft-1")
        assert [(m.action, m.was, m.seq, m.actor) for m in moves] == [
            ("create", None, 2, "ann"),
            ("move", 2, 5, "bob"),
            ("move", 5, 3, "cy"),
            ("delete", 3, None, "dee"),
        ]
        assert all(m.doc == "th" and m.name == "draft-1" and m.ts > 0 for m in moves)
        assert [m.ts for m in moves] == sorted(m.ts for m in moves)
        every = await store.tag_history("th")
        assert sorted((m.name, m.action) for m in every) == sorted(
            [("draft-1", m.action) for m in moves] + [("other", "create")]
        )
        await store.put_tag("th", "draft-1", 1, "eve")  # a name used again: created again
        assert (await store.tag_history("th", "draft-1"))[-1].action == "create"
        assert await store.tag_history("nothing") == []
        await store.delete_doc("th")
        assert await store.tag_history("th") == []

    async def test_tags_and_snapshots_are_stamped_no_earlier_than_the_documents_events(
        self, store: EventStore
    ) -> None:
        """A tag's ts (when it was named) and a snapshot's (when it was written) were the
        store's wall clock as it was: after a clock stepped back, a tag made later than
        its version's events said it was made before them. They are raised to the
        document's last event's ts, as the events' own ts are (never back within a
        document); a clock ahead of the events is kept as it is."""
        later = now_ms() + 3_600_000  # events stamped an hour on: the clock stepped back
        await store.append([("late", [ev(ts=later - 10), ev(ts=later), ev(ts=later)])])
        tag = await store.put_tag("late", "v1", 2, "ann")
        kept = await store.put_tag("late", "v2", 3, "ann", move=False)
        assert tag.ts >= later and kept.ts >= later, (tag, kept)
        assert all(t.ts >= later for t in await store.tags("late"))
        await store.put_snapshot("late", 2, b"two")
        await store.compact("late", 1, b"base-1")
        snaps = await store.snapshots("late")
        assert [s.seq for s in snaps] == [1, 2] and all(s.ts >= later for s in snaps), snaps
        # a document whose events are older: the clock, as it is
        before = now_ms()
        await store.append([("early", [ev(ts=1000)])])
        tag = await store.put_tag("early", "v1", 1, "ann")
        await store.put_snapshot("early", 1, b"one")
        (snap,) = await store.snapshots("early")
        assert tag.ts >= before and snap.ts >= before and tag.ts < later

    async def test_a_tag_put_without_move_keeps_the_one_in_use(self, store: EventStore) -> None:
        await store.append([("tm", [ev() for _ in range(5)])])
        first = await store.put_tag("tm", "before feedback", 2, "ann", move=False)
        assert (first.seq, first.actor) == (2, "ann")
        kept = await store.put_tag("tm", "before feedback", 5, "bob", move=False)
        assert kept == first  # the tag in use, as it is: the caller sees it names 2
        assert [(t.name, t.seq, t.actor) for t in await store.tags("tm")] == [
            ("before feedback", 2, "ann")
        ]
        moved = await store.put_tag("tm", "before feedback", 5, "bob")  # move: as always
        assert (moved.seq, moved.actor) == (5, "bob")
        assert [(t.seq, t.actor) for t in await store.tags("tm")] == [(5, "bob")]

    async def test_ping(self, store: EventStore) -> None:
        await store.ping()

    # --- capabilities every caller may use (no hasattr probing) ---------------------------

    async def test_schema_version(self, store: EventStore) -> None:
        assert await store.schema_version() >= 1

    async def test_heads_of_many_docs_at_once(self, store: EventStore) -> None:
        await store.append([("h1", [ev(), ev()]), ("h2", [ev()])])
        assert await store.heads(["h1", "h2", "none"]) == {"h1": 2, "h2": 1, "none": 0}
        assert await store.heads([]) == {}

    async def test_put_snapshot_if_due_skips_when_a_recent_valid_one_exists(
        self, store: EventStore
    ) -> None:
        await store.append([("d", [ev() for _ in range(50)])])
        assert await store.put_snapshot_if_due("d", 20, b"twenty", min_gap=10) is True
        assert await store.put_snapshot_if_due("d", 25, b"25", min_gap=10) is False
        assert await store.put_snapshot_if_due("d", 30, b"30", {"k": 1}, min_gap=10) is True
        snap = await store.latest_snapshot("d")
        assert snap is not None and (snap.seq, snap.state, snap.meta) == (30, b"30", {"k": 1})
        # a damaged recent one does not count
        await self.damage_snapshot(store, "d", 30)
        assert await store.put_snapshot_if_due("d", 32, b"32", min_gap=10) is True
        assert [i.seq for i in await store.snapshots("d")] == [20, 30, 32]

    async def test_compaction_base_changes_with_every_compaction(self, store: EventStore) -> None:
        """The mark a live room keeps (server.rooms): a snapshot written with it is
        refused once the document was compacted, also again at the same base."""
        from palimpsest.store.base import NO_BASE

        await store.append([("c", [ev() for _ in range(10)])])
        assert await store.compaction_bases(["c", "none"]) == {"c": NO_BASE, "none": NO_BASE}
        assert await store.compaction_bases([]) == {}
        assert await store.put_snapshot("c", 3, b"three", base=NO_BASE) is True
        await store.compact("c", 4, b"four")
        first = await store.compaction_base("c")
        assert first[0] == 4 and first[1]
        assert await store.put_snapshot("c", 6, b"six", base=NO_BASE) is False
        assert await store.put_snapshot("c", 4, b"over", base=first) is False  # at the base
        assert await store.put_snapshot("c", 6, b"six", base=first) is True
        assert await store.put_snapshot_if_due("c", 8, b"8", base=NO_BASE) is False
        # a purge rewrites the base at the same seq: another mark
        await store.put_snapshot("c", 4, b"four, purged", {"base": True})
        again = await store.compaction_base("c")
        assert again[0] == 4 and again != first
        assert await store.compaction_bases(["c"]) == {"c": again}
        assert await store.put_snapshot("c", 7, b"seven", base=first) is False
        assert await store.put_snapshot_if_due("c", 8, b"8", base=again) is True
        assert [i.seq for i in await store.snapshots("c")] == [4, 6, 8]
        snap = await store.latest_snapshot("c", 4)
        assert snap is not None and snap.state == b"four, purged"

    async def test_compact_replaces_the_snapshots_above_the_base_at_once(
        self, store: EventStore
    ) -> None:
        """A purge (server.erasure) hands compact the snapshots after the base folded
        again from it: every one stored after the base is replaced by them in the same
        transaction (one written meanwhile goes too: a cache)."""
        await store.append([("r", [ev() for _ in range(12)])])
        for seq in (2, 5, 8, 11):
            await store.put_snapshot("r", seq, b"old %d" % seq, {"k": seq})
        above = {5: (b"new 5", {"k": 5}), 8: (b"new 8", {"k": 8, "x": 1})}
        assert await store.compact("r", 3, b"base", above=above) == 3
        got = {}
        for info in await store.snapshots("r"):
            snap = await store.latest_snapshot("r", info.seq)
            assert snap is not None and snap.seq == info.seq
            got[info.seq] = (snap.state, snap.meta)
        assert got == {3: (b"base", {"base": True}), **above}
        assert [e.seq for e in await store.read("r")] == list(range(4, 13))

    async def test_import_doc_keeps_seqs_snapshots_and_tags(self, store: EventStore) -> None:
        from palimpsest.store.base import DocInfo, Snapshot, Tag

        events = [Event("imp", seq, 1000 + seq, "ann", "edit", b"u%d" % seq, {"n": seq})
                  for seq in range(5, 9)]  # fmt: skip
        snap = Snapshot("imp", 4, 999, b"base", checksum(b"base"), {"base": True})
        tag = Tag("imp", "v1", 6, 1006, "bob")
        info = DocInfo("imp", 8, 1008, 8, base_seq=4)
        await store.import_doc(info, events, [snap], [tag])
        # the same events, at this store's next positions
        assert await store.read("imp") == [dataclasses.replace(e, pos=i + 1)
                                           for i, e in enumerate(events)]  # fmt: skip
        assert await store.head("imp") == 8
        got = await store.doc_info("imp")
        assert got is not None and (got.head, got.base_seq) == (8, 4)
        latest = await store.latest_snapshot("imp")
        assert latest is not None and (latest.seq, latest.state) == (4, b"base")
        assert [(t.name, t.seq, t.actor) for t in await store.tags("imp")] == [("v1", 6, "bob")]
        # the next append continues after the imported head
        [[e]] = await store.append([("imp", [ev()])])
        assert e.seq == 9
        # an existing document is refused unless replaced, and nothing changes
        with pytest.raises(StoreError):
            await store.import_doc(info, events[:1], [], [])
        assert await store.head("imp") == 9
        await store.import_doc(DocInfo("imp", 5, 1005, 2, base_seq=4), events[:1], [], [],
                               replace=True)  # fmt: skip
        assert [e.seq for e in await store.read("imp")] == [5]
        assert await store.tags("imp") == [] and await store.head("imp") == 5

    async def test_import_doc_carries_the_tag_history(self, store: EventStore) -> None:
        """A copied document's tags keep the record of their changes as the source has it
        (who, when, from which version to which: a tag deleted there included); a replace
        leaves none of the replaced document's records."""
        from palimpsest.store.base import DocInfo, Tag, TagMove

        events = [Event("th2", seq, 1000 + seq, "ann", "edit", b"u%d" % seq, {})
                  for seq in range(1, 4)]  # fmt: skip
        tag = Tag("th2", "v1", 3, 1009, "bob")
        moves = [TagMove("th2", "v1", 1005, "ann", "create", 1, None),
                 TagMove("th2", "gone", 1006, "eve", "create", 2, None),
                 TagMove("th2", "gone", 1007, "eve", "delete", None, 2),
                 TagMove("th2", "v1", 1009, "bob", "move", 3, 1)]  # fmt: skip
        info = DocInfo("th2", 3, 1003, 4)
        await store.import_doc(info, events, [], [tag], tag_moves=moves)
        assert await store.tag_history("th2") == moves
        assert await store.tag_history("th2", "v1") == [moves[0], moves[3]]
        # the next change numbers on after the copied ones
        await store.put_tag("th2", "v1", 2, "cy")
        assert [(m.action, m.seq, m.was) for m in await store.tag_history("th2", "v1")] == [
            ("create", 1, None), ("move", 3, 1), ("move", 2, 3)]  # fmt: skip
        # replaced: the records are the new source's, none of the replaced document's
        await store.import_doc(info, events, [], [tag], replace=True, tag_moves=moves[:1])
        assert await store.tag_history("th2") == moves[:1]
        await store.import_doc(info, events, [], [], replace=True)
        assert await store.tag_history("th2") == []

    async def test_import_doc_writes_the_tombstone_it_is_given(self, store: EventStore) -> None:
        """``copy --replace`` records the replaced document's state vector as the name's
        tombstone in the import's transaction; an import refused writes none."""
        from palimpsest.store.base import DocInfo

        events = [Event("tb", 1, 1001, "ann", "edit", b"u1", {})]
        info = DocInfo("tb", 1, 1001, 2)
        await store.import_doc(info, events, [], [])
        assert await store.tombstone("tb") is None
        with pytest.raises(StoreError):  # exists, no replace: nothing written
            await store.import_doc(info, events, [], [], tombstone=b"\x01\x05\x02")
        assert await store.tombstone("tb") is None
        await store.import_doc(info, events, [], [], replace=True, tombstone=b"\x01\x05\x02")
        assert await store.tombstone("tb") == b"\x01\x05\x02"
        await store.import_doc(info, events, [], [], replace=True, tombstone=b"\x01\x05\x03")
        assert await store.tombstones() == {"tb": b"\x01\x05\x03"}

    async def test_import_doc_refuses_a_replaced_document_that_moved(
        self, store: EventStore
    ) -> None:
        """``replacing``: the import checks in its transaction that the name holds the
        document the caller read its state vector from, at that head; one a writer
        committed to since (or deleted, or a name that got a document) is refused with
        MovedMeanwhile, nothing written, tombstone included."""
        from palimpsest.errors import MovedMeanwhile
        from palimpsest.store.base import DocInfo

        events = [Event("mv", 1, 1001, "ann", "edit", b"u1", {})]
        info = DocInfo("mv", 1, 1001, 2)
        with pytest.raises(MovedMeanwhile):  # read as a document that is not there
            await store.import_doc(info, events, [], [], replace=True, replacing=(7, 3))
        await store.import_doc(info, events, [], [], replace=True, replacing=(None, 0))
        read = await store.doc_info("mv")
        assert read is not None
        [[_]] = await store.append([("mv", [ev()])])  # a writer, after the read
        with pytest.raises(MovedMeanwhile):
            await store.import_doc(info, events, [], [], replace=True, tombstone=b"\x01\x05\x02",
                                   replacing=(read.generation, read.head))  # fmt: skip
        assert await store.head("mv") == 2 and await store.tombstone("mv") is None
        now = await store.doc_info("mv")
        assert now is not None
        await store.import_doc(info, events, [], [], replace=True, tombstone=b"\x01\x05\x02",
                               replacing=(now.generation, now.head))  # fmt: skip
        assert await store.head("mv") == 1 and await store.tombstone("mv") == b"\x01\x05\x02"
        assert await store.delete_doc("mv", b"\x01\x05\x03")
        with pytest.raises(MovedMeanwhile):  # deleted since the read
            await store.import_doc(
                info, events, [], [], replace=True, replacing=(now.generation, 1)
            )

    async def test_import_doc_may_keep_the_events_positions(self, store: EventStore) -> None:
        """What `palimpsest copy` into a new store does: documents come one by one, each
        with its events' positions in the source, interleaved; read_all gives the
        source's commit order back, and new positions come after the highest."""
        from palimpsest.store.base import DocInfo

        def log(doc: str, positions: list[int]) -> list[Event]:
            return [Event(doc, seq, 1000, "ann", "edit", b"\x00\x00", {}, pos)
                    for seq, pos in enumerate(positions, 1)]  # fmt: skip

        a, b = log("a", [1, 2, 5, 9]), log("b", [3, 4, 8])
        await store.import_doc(DocInfo("a", 4, 1000, 4), a, [], [], keep_positions=True)
        await store.import_doc(DocInfo("b", 3, 1000, 3), b, [], [], keep_positions=True)
        assert await store.read_all() == sorted(a + b, key=lambda e: e.pos)
        assert await store.read_all(after=4) == [a[2], b[2], a[3]]
        assert await store.last_position() == 9
        await store.carry_positions(12)  # the source's last, a deleted document's
        await store.carry_positions(11)  # never back
        assert await store.last_position() == 12
        [[e]] = await store.append([("b", [ev()])])
        assert (e.seq, e.pos) == (4, 13)

    async def test_import_doc_refuses_a_position_taken_here(self, store: EventStore) -> None:
        """Positions kept into a store where something took one of them since the copy
        decided to keep them (a server writing on the target): refused, nothing written,
        rather than two events at one position. The imported run is sealed into a
        segment, which the index of the tail's positions does not cover."""
        from palimpsest.store.base import DocInfo
        from palimpsest.store.segments import SEGMENT_EVENTS

        [[mine]] = await store.append([("mine", [ev()])])
        theirs = [Event("a", seq, 1000, "ann", "edit", b"\x00\x00", {}, mine.pos + seq - 1)
                  for seq in range(1, SEGMENT_EVENTS + 1)]  # fmt: skip
        info = DocInfo("a", SEGMENT_EVENTS, 1000, 2 * SEGMENT_EVENTS)
        with pytest.raises(StoreError, match=f"position {mine.pos} is taken"):
            await store.import_doc(info, theirs, [], [], keep_positions=True)
        assert await store.head("a") == 0
        assert [e.doc for e in await store.read_all()] == ["mine"]

    async def test_import_deletions_keeps_their_positions(self, store: EventStore) -> None:
        """What `palimpsest copy` that keeps positions does with the source's deletion
        records: each where the source had it on the feed, between the events around it;
        one already here is left (a copy run again), a position held here by another
        record or an event is refused with nothing written, and new positions come after
        the last one."""
        from palimpsest.store.base import DELETED, DocInfo

        a = [Event("a", seq, 1000, "ann", "edit", b"\x00\x00", {}, pos)
             for seq, pos in ((1, 1), (2, 3))]  # fmt: skip
        await store.import_doc(DocInfo("a", 2, 1000, 2), a, [], [], keep_positions=True)
        gone = [Event("g", 4, 1500, "ada", DELETED, b"", {}, 2),
                Event("h", 1, 1600, "bob", DELETED, b"", {}, 6)]  # fmt: skip
        assert await store.import_deletions(gone) == 2
        assert await store.deletions() == gone
        assert [(e.doc, e.kind, e.pos) for e in await store.read_feed()] == [
            ("a", "edit", 1), ("g", "deleted", 2), ("a", "edit", 3), ("h", "deleted", 6),
        ]  # fmt: skip
        assert await store.last_position() == 6
        assert await store.import_deletions(gone) == 0  # here already
        with pytest.raises(StoreError, match="position 6 is taken"):
            await store.import_deletions([Event("x", 1, 1, "ann", DELETED, b"", {}, 7),
                                          dataclasses.replace(gone[1], doc="other")])  # fmt: skip
        with pytest.raises(StoreError, match="position 3 is taken"):
            await store.import_deletions([dataclasses.replace(gone[0], pos=3)])
        with pytest.raises(StoreError, match="position 2 is taken"):  # and the other way
            await store.import_doc(DocInfo("b", 1, 1000, 1), [dataclasses.replace(a[0], doc="b",
                                   pos=2)], [], [], keep_positions=True)  # fmt: skip
        assert await store.deletions() == gone and await store.head("b") == 0
        [[e]] = await store.append([("a", [ev()])])
        assert e.pos == 7

    async def test_check_writable_changes_nothing(self, store: EventStore) -> None:
        await store.append([("w", [ev(update=b"1")])])
        await store.check_writable()
        await store.check_writable()
        assert [e.update for e in await store.read("w")] == [b"1"]
        assert [d.doc for d in await store.list_docs()] == ["w"]

    # --- sealed segments (the compact log) -----------------------------------------------
    # Tests seal in runs of RUN events (the server seals 256 at a time) so that a few
    # hundred events make many segments and boundaries.

    async def _history(self, store: EventStore, docs: str = "ab", n: int = 300) -> list[Event]:
        """n events in each of `docs`, interleaved batch by batch, with varied actors,
        kinds, metas, clocks (one steps back) and sizes; returns them as stored."""
        out: list[Event] = []
        kinds = ["edit", "edit", "undo", "redo", "restore"]
        for i in range(0, n, 7):
            batch = []
            for d in docs:
                evs = [
                    ev(["ann", "bob", "cy"][(j + ord(d)) % 3], kinds[j % 5],
                       bytes([j % 256]) * (1 + j % 9), 1000 + 10 * j - (50 if j == 100 else 0),
                       **({"conn": f"c{j % 4}"} if j % 3 else {}),
                       **({"reverts": [j - 1]} if kinds[j % 5] == "undo" else {}))
                    for j in range(i, min(i + 7, n))
                ]  # fmt: skip
                batch.append((d, evs))
            for stored in await store.append(batch):
                out += stored
        return out

    async def _sealed(self, store: EventStore, doc: str) -> int:
        return await store.seal(doc, run=RUN)

    async def test_reads_are_the_same_across_the_tail_and_segments(self, store: EventStore) -> None:
        stored = await self._history(store)
        a = [e for e in stored if e.doc == "a"]

        async def answers() -> list[Any]:
            out: list[Any] = [await store.read("a"), await store.read("b")]
            out += [await store.read_all(limit=10_000), await store.list_docs()]
            for after, upto, limit in [(0, None, 5), (30, 100, None), (31, 33, None),
                                       (60, None, 70), (250, None, 100), (299, None, None),
                                       (0, 64, None), (64, 65, None), (290, 400, 3)]:  # fmt: skip
                out.append(await store.read("a", after=after, upto=upto, limit=limit))
            for after in (0, 5, 64, 200, 599):
                out.append(await store.read_all(after=after, limit=37))
            for kw in [{}, {"actor": "bob"}, {"kinds": ["undo", "redo"]}, {"since_ts": 1500},
                       {"until_ts": 1700, "actor": "cy"}, {"after": 100, "limit": 20},
                       {"kinds": ["nothing"]}]:  # fmt: skip
                q: dict[str, Any] = {"limit": 1000, **kw}
                out.append(await store.query("a", **q))
            for ts in (999, 1000, 1955, 2000, 3500, 10**13):
                out.append(await store.seq_at("a", ts))
            return out

        before = await answers()
        assert before[0] == a
        sealed = await self._sealed(store, "a")
        if self.seals:
            assert sealed == 300 - 300 % RUN
        assert await self._sealed(store, "a") == 0  # nothing more is due
        mid = await answers()
        assert mid == before
        await store.seal_due(run=RUN)
        assert await answers() == before
        assert await store.segment_damage("a") == []
        # appends go on after sealing, and read the same
        [[e]] = await store.append([("a", [ev(update=b"new")])])
        assert (e.seq, e.pos) == (301, 601)
        assert await store.read("a", after=299) == [a[-1], e]

    async def test_an_idle_document_seals_its_shorter_last_run(self, store: EventStore) -> None:
        stored = await self._history(store, "i", 100)
        k = 1 if self.seals else 0
        # 96 in whole runs; the 4 left are fewer than `rest`: they stay rows
        assert await store.seal("i", run=RUN, rest=5) == 96 * k
        two = await store.append([("i", [ev(update=b"x"), ev(update=b"y")])])
        assert await store.seal("i", run=RUN, rest=5) == 6 * k  # a short segment
        four = await store.append([("i", [ev(update=b"z") for _ in range(4)])])
        assert await store.seal("i", run=RUN, rest=5) == 0
        got = await store.read("i")
        assert got == stored + two[0] + four[0]
        assert await store.read("i", after=99, upto=103) == got[99:103]
        # whole runs go on after a short one
        await store.append([("i", [ev(update=b"w") for _ in range(RUN)])])
        assert await store.seal("i", run=RUN) == RUN * k
        assert [e.seq for e in await store.read("i")] == list(range(1, 107 + RUN))
        assert await store.segment_damage("i") == []

    async def test_sealing_takes_what_it_appended_from_memory_exactly(
        self, store: EventStore
    ) -> None:
        """A run this process appended is sealed from the rows it noted at commit (no read
        back, log_layout.RecentRows): the log reads the same after; when another connection
        deleted one of those rows meanwhile, the seal is refused by its own row count and
        the memory of that document is dropped (the next try reads the log)."""
        if not self.seals:
            pytest.skip("this backend keeps no segments")
        recent = store._recent  # type: ignore[attr-defined]
        for i in range(3 * RUN):  # appends of one event, as typed
            await store.append([("m", [ev(update=f"x{i}".encode())])])
        doc_id = next(iter(recent._docs))
        held = recent.run(doc_id, 1, 3 * RUN)
        assert held is not None and [r[0] for r in held] == list(range(1, 3 * RUN + 1))
        before = await store.read("m")
        assert [bytes(r[5]) for r in held] == [e.update for e in before]
        assert await store.seal("m", run=RUN) == 3 * RUN
        assert await store.read("m") == before and await store.segment_damage("m") == []
        assert recent.run(doc_id, 1, 1) is None  # sealed: let go
        more = await store.append([("m", [ev(update=f"y{i}".encode()) for i in range(RUN)])])
        assert recent.run(doc_id, 3 * RUN + 1, RUN) is not None
        await self.delete_tail_row(store, "m", 3 * RUN + 2)
        assert await store.seal("m", run=RUN) == 0
        assert recent.run(doc_id, 3 * RUN + 1, 1) is None
        del more[0][1]
        assert await store.read("m") == before + more[0]

    async def test_a_segment_damaged_after_it_was_read_is_still_found(
        self, store: EventStore
    ) -> None:
        """Decoded segments are kept for the next reads (log_layout.DECODED): one damaged
        after it was read is found all the same, and never served."""
        if not self.seals:
            pytest.skip("this backend keeps no segments")
        await self._history(store, "z", 3 * RUN)
        assert await store.seal("z", run=RUN) == 3 * RUN
        before = await store.read("z")
        assert await store.read("z") == before
        await self.damage_segment(store, "z", RUN + 1)
        with pytest.raises(StoreError, match="damaged"):
            await store.read("z", after=RUN, upto=RUN + 2)
        assert await store.read("z", upto=RUN) == before[:RUN]
        assert await store.read("z", after=2 * RUN) == before[2 * RUN :]

    async def test_a_page_of_events_decodes_only_its_part_of_a_segment(
        self, store: EventStore
    ) -> None:
        """A page of ``/events`` (``query``), of ``read`` and of the changefeed
        (``read_all``) from sealed segments is the same as from a whole decode, across
        segment boundaries and with filters; from a segment too big to keep decoded
        (log_layout.DECODED.MAX_ONE) it inflates the segment only up to its last event
        (segments.decode_some), counted by segments.DECOMPRESSED: a page of 50 events
        of 12 kB from segments of 512 costs a tenth of one, not several, and holds
        less than one (tracemalloc)."""
        if not self.seals:
            pytest.skip("this backend keeps no segments")
        from palimpsest.store import log_layout
        from palimpsest.store.segments import DECOMPRESSED

        run, size, n = 512, 12 << 10, 1300
        assert run * size > log_layout.DECODED.MAX_ONE
        for i in range(0, n, 100):
            await store.append([("big", [
                ev(["ann", "bob", "cy"][j % 3], ["edit", "undo"][j % 7 == 0],
                   j.to_bytes(4, "big") * (size // 4), 1000 + j, **({"conn": f"c{j % 5}"}
                   if j % 2 else {}))
                for j in range(i, min(n, i + 100))
            ])])  # fmt: skip
        whole = await store.read("big")  # rows: the oracle
        assert await store.seal("big", run=run) == 2 * run
        log_layout.DECODED.clear()
        assert await store.read("big") == whole  # every segment decoded whole
        by_pos = sorted(whole, key=lambda e: e.pos)
        for after in (0, 1, 400, 462, 500, 511, 512, 1000, 1023, 1024, 1250, 1299):
            for limit in (1, 50, 100, 600):
                log_layout.DECODED.clear()
                assert (
                    await store.query("big", after=after, limit=limit)
                    == (whole[after : after + limit])
                ), (after, limit)
                assert (
                    await store.read("big", after=after, limit=limit)
                    == (whole[after : after + limit])
                )
                pos = by_pos[after - 1].pos if after else 0
                got = await store.read_all(after=pos, limit=limit)
                assert [e for e in got if e.doc == "big"] == by_pos[after : after + limit]
            for kw in ({"actor": "bob"}, {"kinds": ["undo"]}, {"since_ts": 1700},
                       {"until_ts": 1600, "actor": "cy"}):  # fmt: skip
                log_layout.DECODED.clear()
                q: dict[str, Any] = {"after": after, "limit": 50, **kw}
                want = [e for e in whole if e.seq > after
                        and ("actor" not in kw or e.actor == kw["actor"])
                        and ("kinds" not in kw or e.kind in kw["kinds"])
                        and e.ts >= kw.get("since_ts", 0)
                        and e.ts <= kw.get("until_ts", 10**13)][:50]  # fmt: skip
                assert await store.query("big", **q) == want, q

        # newest first (``desc``): the same pages, mirrored, from the end of each segment
        newest = whole[::-1]
        for before in (None, 1300, 1290, 1025, 1024, 1000, 513, 512, 300, 2, 1):
            top = 1301 if before is None else before
            for limit in (1, 50, 600):
                log_layout.DECODED.clear()
                want_desc = [e for e in newest if e.seq < top][:limit]
                got_desc = await store.query("big", desc=True, before=before, limit=limit)
                assert got_desc == want_desc, (before, limit)
            for kw in ({"actor": "bob"}, {"kinds": ["undo"]}, {"since_ts": 1700},
                       {"until_ts": 1600, "actor": "cy"}, {"after": 500}):  # fmt: skip
                log_layout.DECODED.clear()
                q = {"before": before, "limit": 50, "desc": True, **kw}
                want = [e for e in newest if e.seq < top and e.seq > kw.get("after", 0)
                        and ("actor" not in kw or e.actor == kw["actor"])
                        and ("kinds" not in kw or e.kind in kw["kinds"])
                        and e.ts >= kw.get("since_ts", 0)
                        and e.ts <= kw.get("until_ts", 10**13)][:50]  # fmt: skip
                assert await store.query("big", **q) == want, q

        segment = run * (size + 32)
        page = 50 * size + 64 * run + (64 << 10)  # its updates, columns, metas, a chunk
        assert page < segment / 2
        for read in (
            lambda: store.query("big", limit=50),
            lambda: store.query("big", after=run, limit=50),  # the second segment's first
            lambda: store.read("big", limit=50),
            lambda: store.read_all(limit=50),
        ):
            log_layout.DECODED.clear()
            before = DECOMPRESSED.bytes
            assert len(await read()) == 50
            assert 0 < DECOMPRESSED.bytes - before <= page, DECOMPRESSED.bytes - before
        # the newest 50 are all tail rows: no segment is inflated for them
        log_layout.DECODED.clear()
        before = DECOMPRESSED.bytes
        assert len(await store.query("big", desc=True, limit=50)) == 50
        assert DECOMPRESSED.bytes == before
        # A page that starts late in a segment (or whose events are sparse there) inflates
        # the segment up to it (one stream), a chunk at a time: what it holds is the page
        for read in (
            lambda: store.query("big", after=run - 10, limit=50),
            lambda: store.query("big", actor="cy", limit=50),
            lambda: store.query("big", before=2 * run, desc=True, limit=50),  # a segment's end
        ):
            log_layout.DECODED.clear()
            tracemalloc.start()
            try:
                assert len(await read()) == 50
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < segment, peak  # a whole decode holds the segment and more

    #: the store method every SQL read goes through (wrapped by the next test)
    reader = "_fetchall"

    async def test_a_sealer_that_another_overtook_goes_on_from_there(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Two sealers of one document (two processes): one reads where the log is sealed
        up to, the other seals that run before the first reads the rows after it. The
        first finds a tail that starts past its run, and goes on from where the other
        stopped instead of warning that the tail is broken (it was, until 1 Dec)."""
        url = self.child_url()
        if url is None or not self.seals:
            pytest.skip("no other process can open this backend's store")
        other = open_store(url)
        await other.start()
        try:
            # appended by the other: this store holds none of the rows in memory, and
            # reads them from the log
            for i in range(0, 3 * RUN, 8):
                await other.append([("o", [ev(update=f"x{j}".encode()) for j in range(i, i + 8)])])
            before = await store.read("o")
            read = getattr(store, self.reader)
            overtaken = []

            async def reading(sql: str, *args: Any, **kw: Any) -> Any:
                if "FROM log WHERE doc" in sql and not overtaken:
                    # the other seals the first two runs (as one segment) right here
                    overtaken.append(await other.seal("o", run=2 * RUN))
                return await read(sql, *args, **kw)

            setattr(store, self.reader, reading)
            with caplog.at_level("WARNING", logger="palimpsest"):
                sealed = await store.seal("o", run=RUN)
            assert overtaken == [2 * RUN]
            assert sealed == RUN  # the third run, after the other's
            assert not [r for r in caplog.records if "not a whole run" in r.getMessage()]
            assert await store.read("o") == before
            assert await other.read("o") == before
            assert await store.segment_damage("o") == []
        finally:
            await other.stop()

    async def test_generations_of_many_documents_in_one_call(self, store: EventStore) -> None:
        """generations() agrees with doc_info().generation for each document: None for
        one the store does not hold, another number once it was deleted and written
        again (what server.base_watch compares with its rooms')."""
        await store.append([("a", [ev()]), ("b", [ev()])])
        a, b = await store.doc_info("a"), await store.doc_info("b")
        assert a is not None and b is not None
        assert await store.generations(["a", "b", "none"]) == {
            "a": a.generation, "b": b.generation, "none": None,
        }  # fmt: skip
        await store.delete_doc("b")
        assert await store.generations(["b"]) == {"b": None}
        await store.append([("b", [ev()])])
        again = await store.doc_info("b")
        assert again is not None
        got = await store.generations(["a", "b"])
        assert got == {"a": a.generation, "b": again.generation}
        if b.generation is not None:
            assert again.generation != b.generation
        assert await store.generations([]) == {}

    @pytest.mark.parametrize("then", ["deleted", "replaced"])
    async def test_a_sealer_whose_document_is_deleted_meanwhile_says_nothing(
        self, store: EventStore, caplog: pytest.LogCaptureFixture, then: str
    ) -> None:
        """A document deleted (or deleted and written again: replaced) while people type:
        the sealer read where its log is sealed up to, then the delete took the tail rows
        before it read them. It found fewer rows than a run, and warned "cannot seal ...:
        its tail is not a whole run" (a field report, 7 Dec) about a log that is not
        broken but gone: it now stops at DEBUG."""
        if not self.seals:
            pytest.skip("this backend does not seal")
        for i in range(0, 2 * RUN, 8):
            await store.append([("d", [ev(update=f"x{j}".encode()) for j in range(i, i + 8)])])
        store._recent.clear()  # type: ignore[attr-defined]  # a sealer that reads the rows from the log
        read = getattr(store, self.reader)
        deleted = []

        async def reading(sql: str, *args: Any, **kw: Any) -> Any:
            if "FROM log WHERE doc" in sql and not deleted:
                # the delete (of a room's HTTP DELETE, or of `palimpsest delete`) lands here
                deleted.append(await store.delete_doc("d"))
                if then == "replaced":
                    await store.append([("d", [ev(update=b"new") for _ in range(3)])])
            return await read(sql, *args, **kw)

        setattr(store, self.reader, reading)
        with caplog.at_level("DEBUG", logger="palimpsest"):
            sealed = await store.seal("d", run=RUN)
        assert deleted == [True]
        assert sealed == 0
        loud = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
        assert loud == [], loud
        after = [b"new"] * 3 if then == "replaced" else []
        assert [e.update for e in await store.read("d")] == after
        assert await store.segment_damage("d") == []

    async def test_symbols_new_since_the_last_load_are_loaded_in_turn(
        self, store: EventStore
    ) -> None:
        """Kinds logged for the first time in quick succession by another process or
        connection (a first undo, then at once a first redo): a read meets the first,
        loads the symbols, and its read again meets the next, committed meanwhile. A
        symbol is stored before any event names it, so that one is loaded in turn: it
        was "an event names symbol id N that is not stored", which ended every
        changefeed stream reading past the pair (three at once, seen 5 Dec)."""
        url = self.child_url()
        if url is None or not self.seals:
            pytest.skip("no other process can open this backend's store")
        other = open_store(url)
        await other.start()
        try:
            await other.append([("d", [ev(kind="undo")])])
            read = getattr(store, self.reader)
            first_logged = iter(["redo", "restore"])

            async def reading(sql: str, *args: Any, **kw: Any) -> Any:
                rows = await read(sql, *args, **kw)
                if sql.startswith("SELECT id, name FROM symbols"):
                    kind = next(first_logged, None)
                    if kind is not None:  # right after this load
                        await other.append([("d", [ev(kind=kind)])])
                return rows

            setattr(store, self.reader, reading)
            assert [e.kind for e in await store.read_all()] == ["undo", "redo", "restore"]
            assert [e.kind for e in await store.read("d")] == ["undo", "redo", "restore"]
        finally:
            await other.stop()

    async def test_sealing_beside_appends_loses_and_doubles_nothing(
        self, store: EventStore
    ) -> None:
        written: dict[str, list[bytes]] = {"a": [], "b": []}
        done = False

        async def writer(doc: str) -> None:
            for i in range(120):
                batch = [ev(update=f"{doc}{i}.{k}".encode()) for k in range(3)]
                await store.append([(doc, batch)])
                written[doc] += [e.update for e in batch]

        async def sealer() -> int:
            n = 0
            while not done:
                n += await store.seal_due(run=RUN)
                await asyncio.sleep(0)
            return n

        task = asyncio.create_task(sealer())
        await asyncio.gather(writer("a"), writer("b"))
        done = True
        sealed = await task
        sealed += await store.seal_due(run=RUN)
        if self.seals:
            assert sealed == 2 * (360 - 360 % RUN)
        for doc in "ab":
            got = await store.read(doc)
            assert [e.seq for e in got] == list(range(1, 361))
            assert [e.update for e in got] == written[doc]
        everything = await store.read_all(limit=10_000)
        assert [e.pos for e in everything] == list(range(1, 721))

    async def test_a_damaged_segment_is_reported_and_never_served(self, store: EventStore) -> None:
        if not self.seals:
            pytest.skip("this backend keeps no segments")
        stored = await self._history(store, "a", 100)
        await self._sealed(store, "a")  # segments 1..32, 33..64, 65..96; tail 97..100
        await self.damage_segment(store, "a", 33)
        assert await store.segment_damage("a") == ["segment 33..64: checksum does not match"]
        for read in (lambda: store.read("a"), lambda: store.read("a", after=40, upto=41),
                     lambda: store.read_all(),
                     lambda: store.query("a", after=10, limit=50)):  # fmt: skip
            with pytest.raises(StoreError, match=r"segment a@33\.\.64 .* is damaged"):
                await read()
        # what does not need it still reads
        assert await store.read("a", upto=32) == stored[:32]
        assert await store.read("a", after=64) == stored[64:]
        assert [e.pos for e in await store.read_all(limit=32)] == list(range(1, 33))
        # and it is not sealed over, nor compacted through
        assert await self._sealed(store, "a") == 0
        with pytest.raises(StoreError, match="damaged"):
            await store.compact("a", 40, b"state")
        assert await store.read("a", upto=32) == stored[:32]

    async def test_compact_delete_and_import_across_segments(self, store: EventStore) -> None:
        from palimpsest.store.base import DocInfo

        stored = await self._history(store, "ab", 100)
        a = [e for e in stored if e.doc == "a"]
        await store.seal_due(run=RUN)
        info = await store.doc_info("a")
        assert info is not None and info.events_bytes == sum(len(e.update) for e in a)
        # a cut inside a segment keeps the events after it, sealed or not
        assert await store.compact("a", 40, b"base") == 40
        assert await store.read("a") == a[40:]
        assert await store.read("a", after=50, limit=3) == a[50:53]
        info = await store.doc_info("a")
        assert info is not None and (info.base_seq, info.events_bytes) == (
            40, sum(len(e.update) for e in a[40:]))  # fmt: skip
        assert await store.compact("a", 99, b"base2") == 59
        assert await store.read("a") == a[99:]
        assert await self._sealed(store, "a") == 0
        # deleting drops every segment; the name starts over
        assert await store.delete_doc("b") is True
        assert await store.read("b") == [] and await store.segment_damage("b") == []
        [[e]] = await store.append([("b", [ev(update=b"again")])])
        assert e.seq == 1 and await store.read("b") == [e]
        # an imported log is written as segments and tail, and reads back the same
        events = [dataclasses.replace(x, doc="imp") for x in a]
        await store.import_doc(DocInfo("imp", 100, 2000, 0), events, [], [])
        back = await store.read("imp")
        assert [(x.seq, x.ts, x.actor, x.kind, x.update, x.meta) for x in back] == [
            (x.seq, x.ts, x.actor, x.kind, x.update, x.meta) for x in a]  # fmt: skip
        assert await store.query("imp", actor="bob", limit=5) == [
            x for x in back if x.actor == "bob"][:5]  # fmt: skip

    async def test_kill_9_while_sealing_loses_and_doubles_nothing(self, store: EventStore) -> None:
        url = self.child_url()
        if url is None or not self.seals:
            pytest.skip("no other process can open this backend's store")
        stored = await self._history(store, "k", 1200)
        expected = [(e.seq, e.update, e.pos) for e in stored]
        for delay in (0.3, 0.8, 1.5):
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _SEALER, url, "k",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert child.stdout is not None
            assert (await child.stdout.readline()).strip() == b"sealing"
            await asyncio.sleep(delay)
            child.kill()
            await child.wait()
            got = await store.read("k")
            assert [(e.seq, e.update, e.pos) for e in got] == expected
            assert await store.segment_damage("k") == []
            assert [e.pos for e in await store.read_all(limit=5000)] == list(range(1, 1201))
        # sealing picks up where the killed one stopped
        await store.seal("k", run=4)
        assert [(e.seq, e.update, e.pos) for e in await store.read("k")] == expected

    async def test_server_changes_of_a_document_take_turns_across_processes(
        self, store: EventStore
    ) -> None:
        """While another process holds a document's turn on server changes
        (``server_changes``), this one waits for it, and sees what the other appended in
        its turn; another document's turn is free meanwhile."""
        url = self.child_url()
        if url is None:
            pytest.skip("no other process can open this backend's store")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _TURN_HOLDER, url, "t",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        try:
            assert (await child.stdout.readline()).strip() == b"held"
            async with store.server_changes("another"):
                pass

            async def in_turn() -> list[str]:
                async with store.server_changes("t"):
                    seen = [e.actor for e in await store.read("t")]
                    await store.append([("t", [ev("parent")])])
                    return seen

            waiting = asyncio.create_task(in_turn())
            await asyncio.sleep(0.3)  # (time for a turn not kept to be taken wrongly)
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            assert await asyncio.wait_for(waiting, 30) == ["child"]
            assert await child.wait() == 0
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert [e.actor for e in await store.read("t")] == ["child", "parent"]


RUN = 32

#: a child process that holds a document's turn on server changes until told to go on,
#: and appends an event in it
_TURN_HOLDER = """
import asyncio, sys
from palimpsest.store import open_store
from palimpsest.store.base import NewEvent

async def main(url, doc):
    store = open_store(url)
    await store.start()
    async with store.server_changes(doc):
        print("held", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await store.append([(doc, [NewEvent("child", "edit", b"u", {}, 1000)])])
    await store.stop()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""

#: a child process that seals one document four events at a time until it is killed
_SEALER = """
import asyncio, sys
from palimpsest.store import open_store

async def main(url, doc):
    store = open_store(url)
    await store.start()
    print("sealing", flush=True)
    while True:
        if not await store.seal(doc, run=4):
            await asyncio.sleep(0.01)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
