"""Group commit with a leading caller (server/commit.py): a lone append is committed on its
caller's own task at once (after one turn of the loop when other rooms have work coming,
so that their appends join it; without that turn when none has); appends made while a
transaction is in flight share the next one; stopping waits for a transaction a caller
is running. Real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from conftest import eventually
from pycrdt import Doc, Text

from palimpsest.backend import Backend
from palimpsest.commit import Committer
from palimpsest.settings import Settings
from palimpsest.store.base import Event, NewEvent
from palimpsest.store.sqlite import INLINE_EVENTS, SQLiteStore


def ev(i: int) -> NewEvent:
    return NewEvent("ann", "edit", f"u{i}".encode(), {}, i)


async def test_a_lone_append_commits_alone_and_a_burst_shares_commits(tmp_path: Path) -> None:
    batches: list[int] = []
    store = SQLiteStore(tmp_path / "p.db")
    async with store, Committer(store, on_batch=lambda n, _s: batches.append(n)) as committer:
        for i in range(3):  # one at a time: each is its own transaction, at once
            [stored] = await committer.append("solo", [ev(i)])
            assert stored.seq == i + 1
        assert batches == [1, 1, 1]
        batches.clear()
        # 40 documents at once, as 40 rooms would have them: each has work coming
        # until its task takes it up and appends. The first caller leads, after one turn
        # of the loop in which the others queue; they share its transaction (or the
        # following ones)
        rooms = [object() for _ in range(40)]
        for i, r in enumerate(rooms):
            committer.announce(f"d{i}", r)

        async def room(i: int) -> list[Event]:
            committer.withdraw(f"d{i}", rooms[i])  # the room's task takes its work up
            return await committer.append(f"d{i}", [ev(i)])

        results = await asyncio.gather(*(room(i) for i in range(40)))
        assert [[(e.doc, e.seq) for e in r] for r in results] == [[(f"d{i}", 1)] for i in range(40)]
        assert sum(batches) == 40
        assert len(batches) < 40 and max(batches) > 1, batches
        positions = [r[0].pos for r in results]
        assert positions == sorted(positions) and len(set(positions)) == 40


async def test_stop_waits_for_a_transaction_a_caller_leads(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "p.db")
    async with store:
        committer = Committer(store)
        await committer.start()
        # more events than commit on the loop's own thread (INLINE_EVENTS): the caller
        # leads, and its transaction runs on the writer thread
        events = [ev(i) for i in range(INLINE_EVENTS + 1)]
        lead = asyncio.create_task(committer.append("d", events))
        await asyncio.sleep(0)
        assert committer._busy and not lead.done()
        await asyncio.wait_for(committer.stop(), 10)  # does not hang on the leader
        stored = await lead
        assert [e.seq for e in stored] == list(range(1, INLINE_EVENTS + 2))
        assert [e.update for e in await store.read("d")] == [e.update for e in events]


async def test_a_leader_cancelled_while_the_writer_thread_has_its_append_logs_it_once(
    tmp_path: Path,
) -> None:
    """A caller leading a transaction is cancelled (its room closed) while its append waits
    on the writer thread behind a slow write: the append still commits, later. The writer
    task then settled it before trying it again: it looked it up in the log on the reader
    connection, before the append had run, did not find it, and appended it again: logged
    twice. Now it first waits until the writer thread is done with every append handed
    to it (SQLiteStore.end_unanswered_appends)."""
    store = SQLiteStore(tmp_path / "p.db")
    async with store, Committer(store) as committer:
        await committer.append("d", [ev(1)])
        gate = threading.Event()
        slow = asyncio.create_task(store.on_writer(lambda _c: gate.wait(10)))  # a slow disk
        await eventually(store.writer.in_call)
        lead = asyncio.create_task(committer.append("d", [ev(2)], hold=lambda: True))
        await eventually(lambda: committer.waiting_since is not None)  # handed to the thread
        lead.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lead
        # the writer task's next try reaches the writer thread too, behind the append
        await eventually(lambda: len(store.writer._pending) == 2)
        gate.set()
        await slow
        [third] = await committer.append("d", [ev(3)])
        assert [(e.seq, e.update) for e in await store.read("d")] == [
            (1, b"u1"), (2, b"u2"), (3, b"u3")
        ]  # fmt: skip
        assert third.seq == 3


async def test_a_lone_append_takes_no_turn_of_the_loop_unless_another_room_has_work(
    tmp_path: Path,
) -> None:
    """With nothing else coming, the leader commits before the loop runs anything else
    (the turn would only delay it); with another document's work coming, it lets that
    turn pass first, and that document's append joins its transaction."""
    order: list[str] = []
    store = SQLiteStore(tmp_path / "p.db")
    on_batch = lambda n, _s: order.append(f"commit of {n}")  # noqa: E731
    async with store, Committer(store, on_batch=on_batch) as committer:
        loop = asyncio.get_running_loop()
        loop.call_soon(order.append, "the next turn")
        await committer.append("a", [ev(1)])
        assert order[0] == "commit of 1", order  # committed before that turn ran
        await asyncio.sleep(0)
        assert order == ["commit of 1", "the next turn"]

        order.clear()
        room_b_itself = object()
        committer.announce("b", room_b_itself)  # b's room has an edit queued, its task not run yet

        async def room_b() -> list[Event]:
            committer.withdraw("b", room_b_itself)
            return await committer.append("b", [ev(2)])

        b = asyncio.create_task(room_b())
        loop.call_soon(order.append, "the next turn")
        [a] = await committer.append("a", [ev(3)])
        [b_ev] = await b
        assert order[:2] == ["the next turn", "commit of 2"], order  # one transaction
        assert (a.doc, a.seq, b_ev.doc, b_ev.seq) == ("a", 2, "b", 1)
        assert not committer.coming


class _Peer:
    """A connection as a room sees it (the frames it is sent are not looked at)."""

    def __init__(self, pid: str) -> None:
        self.id = pid
        self.actor = pid

    def send(self, frame: bytes) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"{self.id} closed: {code} {reason}")


def _keystrokes(text: str) -> list[bytes]:
    src: Doc = Doc()
    updates: list[bytes] = []
    src.observe(lambda e: updates.append(e.update))
    for i, ch in enumerate(text):
        src.get("content", type=Text).insert(i, ch)
    return updates


async def test_rooms_announce_their_work_so_that_edits_of_one_turn_share_a_commit(
    tmp_path: Path,
) -> None:
    """Real rooms over a real SQLite file: edits that reach two rooms in one turn of the
    loop are committed together; an edit alone is committed alone; once the rooms are
    done, no document is left announced (which would cost every later commit a turn)."""
    backend = Backend(Settings(), SQLiteStore(tmp_path / "p.db"))
    async with backend:
        batches: list[int] = []
        backend.committer.on_batch = lambda n, _s: batches.append(n)
        a, b = await backend.rooms.get("a"), await backend.rooms.get("b")
        pa, pb = _Peer("ann"), _Peer("bob")
        a.join(pa)
        b.join(pb)
        ka, kb = _keystrokes("xy"), _keystrokes("pq")
        assert a.receive_update(pa, ka[0]) and b.receive_update(pb, kb[0])  # one turn
        assert backend.committer.coming == {"a": a, "b": b}
        await a.flush()
        await b.flush()
        assert batches == [2]
        assert not backend.committer.coming
        assert a.receive_update(pa, ka[1])  # alone
        await a.flush()
        assert batches == [2, 1]
        assert not backend.committer.coming
        assert str(a.doc.get("content", type=Text)) == "xy"
        assert [e.seq for e in await backend.store.read("a")] == [1, 2]
        assert [e.seq for e in await backend.store.read("b")] == [1]


async def test_a_room_withdraws_only_its_own_announcement(tmp_path: Path) -> None:
    """A room replaced under the same name (a reload after a failure) while the old
    room's task is still ending: the old task's last withdrawal must not take the new
    room's announcement with it, or the new room's edit would miss the turn that lets
    it share a commit with another room's."""
    store = SQLiteStore(tmp_path / "p.db")
    async with store, Committer(store) as committer:
        old, new, other = object(), object(), object()
        committer.announce("d", old)
        committer.announce("d", new)  # the new room queued an edit before the old ended
        committer.withdraw("d", old)  # the old room's task ends
        assert committer.coming == {"d": new}
        committer.announce("e", other)
        # so a commit led by another document still waits one turn for d's edit
        order: list[str] = []
        committer.on_batch = lambda n, _s: order.append(f"commit of {n}")

        async def room_d() -> list[Event]:
            committer.withdraw("d", new)
            return await committer.append("d", [ev(1)])

        d = asyncio.create_task(room_d())
        committer.withdraw("e", other)
        await committer.append("e", [ev(2)])
        await d
        assert order == ["commit of 2"], order  # one transaction for both
        assert committer.coming == {}


async def test_a_stopped_room_announces_nothing(tmp_path: Path) -> None:
    """Events that reach a room after it stopped (a fan-out message racing its unload)
    are never taken up: announced, the document would stay in ``coming`` and every later
    commit led by another room would wait a turn of the loop for it."""
    backend = Backend(Settings(), SQLiteStore(tmp_path / "p.db"))
    async with backend:
        a = await backend.rooms.get("a")
        await a.stop()
        a.receive_peer_events([])
        assert "a" not in backend.committer.coming


async def _held_writer(store: SQLiteStore, committer: Committer) -> threading.Event:
    """Hold the writer thread (a slow disk) with one append in flight behind it: what is
    appended next queues. Returns the gate that lets the disk go on."""
    gate = threading.Event()
    asyncio.create_task(store.on_writer(lambda _c: gate.wait(10)))
    await eventually(store.writer.in_call)
    asyncio.create_task(committer.append("lead", [ev(0)]))
    await eventually(lambda: committer.waiting_since is not None)  # handed to the thread
    return gate


async def test_a_small_append_rides_in_the_next_commit_past_large_ones_queued_before_it(
    tmp_path: Path,
) -> None:
    """Five documents' appends of 1024 events (a flooding room's batch each) queue ahead
    of one quiet document's single edit, more than one transaction holds (batch_max 4096).
    The quiet edit goes in the very next transaction (it waited one or more others); every
    document's appends keep their order, a later small one of a document included; nothing
    is lost or logged twice, and no transaction holds more than batch_max events."""
    batches: list[int] = []
    store = SQLiteStore(tmp_path / "p.db")
    async with store, Committer(store, on_batch=lambda n, _s: batches.append(n)) as committer:
        gate = await _held_writer(store, committer)
        sent = {d: [f"{d}{i}".encode() for i in range(1024)] for d in "ABCDE"}
        sent["Q"] = [b"quiet"]
        calls = [(d, u) for d, u in sent.items()] + [("E", [b"E-after"])]
        sent["E"] = sent["E"] + [b"E-after"]
        tasks = []
        queued = 0
        for d, updates in calls:
            evs = [NewEvent("ann", "edit", u, {}, i) for i, u in enumerate(updates)]
            tasks.append(asyncio.create_task(committer.append(d, evs)))
            queued += len(evs)
            await eventually(lambda n=queued: committer.pending == n)  # queued in this order
        gate.set()
        await asyncio.gather(*tasks)
        assert batches[0] == 1 and sum(batches) == 1 + 5 * 1024 + 2, batches
        assert max(batches) <= committer.batch_max, batches
        logged = {d: await store.read(d) for d in sent}
        for d, updates in sent.items():
            assert [(e.seq, e.update) for e in logged[d]] == list(enumerate(updates, start=1)), d
            assert [e.pos for e in logged[d]] == sorted(e.pos for e in logged[d]), d
        [lead] = await store.read("lead")
        in_order = sorted([lead.pos] + [e.pos for evs in logged.values() for e in evs])
        first_after = set(in_order[1 : 1 + batches[1]])  # the transaction after the lead's
        assert logged["Q"][0].pos in first_after, batches


async def test_an_append_larger_than_batch_max_goes_alone_and_first(tmp_path: Path) -> None:
    """One append over batch_max, first in line, is its own transaction: a small one
    queued behind it goes in the next (it is never split, nor overtaken)."""
    batches: list[int] = []
    store = SQLiteStore(tmp_path / "p.db")
    on_batch = lambda n, _s: batches.append(n)  # noqa: E731
    async with store, Committer(store, batch_max=8, on_batch=on_batch) as committer:
        gate = await _held_writer(store, committer)
        big = asyncio.create_task(committer.append("big", [ev(i) for i in range(20)]))
        await eventually(lambda: committer.pending == 20)
        small = asyncio.create_task(committer.append("small", [ev(99)]))
        await eventually(lambda: committer.pending == 21)
        gate.set()
        [big_events, [small_event]] = await asyncio.gather(big, small)
        assert batches == [1, 20, 1]
        assert small_event.pos > max(e.pos for e in big_events)
