"""The SQLite store's writer: one connection, calls in order, small appends inline.

A small append (a lone keystroke) commits on the event loop's thread when the writer
thread has nothing queued or running, and on the writer thread otherwise (a burst, a
write in flight, or small commits that have been slow). Either way the commit is
synchronous=FULL and on disk when append returns, and calls never overlap or reorder,
except that upkeep (a seal, old snapshots dropped) lets appends queued behind it go
first. WAL checkpoints run on the writer thread between calls."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlitehelp import sqlite_conn

from palimpsest.store import sqlite as sqlite_store
from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import (
    INLINE_EVENTS,
    INLINE_EVENTS_OS,
    INLINE_MAX_SECONDS,
    SQLiteStore,
    _in_transaction,
)

UPDATE = b"\x01\x01\xb9\xe3\xa4\x8a\x0c\x00\x04\x01\x07content\x01a\x00"


def ev(i: int = 0) -> NewEvent:
    return NewEvent("ann", "edit", UPDATE, {"conn": "t/1"}, 1_000 + i)


@pytest.fixture
def quick_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small commits run inline whatever this disk's fsync costs today: the tests that
    use it are about the inline path itself (the bound on slow commits is tested apart,
    test_small_calls_go_to_the_thread_while_commits_are_slow)."""
    monkeypatch.setattr(sqlite_store, "INLINE_MAX_SECONDS", 60.0)


def rows_in_file(path: Path) -> int:
    with sqlite_conn(path) as c:  # another connection: what is committed
        return int(c.execute("SELECT COUNT(*) FROM log").fetchone()[0])


async def test_a_lone_append_commits_on_the_loop_thread_durably(
    tmp_path: Path, quick_disk: None
) -> None:
    path = tmp_path / "w.db"
    async with SQLiteStore(path) as store:
        await store.append([("doc", [ev()])])  # the first creates the doc and symbols
        before = store.writer.inline_calls
        stored = await store.append([("doc", [ev(1)])])
        assert store.writer.inline_calls == before + 1
        assert [e.seq for e in stored[0]] == [2]
        assert rows_in_file(path) == 2
        assert (await store.pragmas())["synchronous"] == 2  # FULL: fsynced at commit
        where = await store.writer.call(lambda c: threading.get_ident(), small=True)
        assert where == threading.get_ident()


async def test_a_turn_of_typing_commits_on_the_loop_thread(
    tmp_path: Path, quick_disk: None
) -> None:
    """The 12-15 events a turn of the two-writer replay commits (one writer's edits
    while it waited for the other's) go inline with fsync too: through the writer
    thread, the hop cost that replay's commits a third of their time."""
    path = tmp_path / "w.db"
    async with SQLiteStore(path) as store:
        await store.append([("doc", [ev()])])
        before = store.writer.inline_calls
        stored = await store.append([("doc", [ev(i) for i in range(15)])])
        assert store.writer.inline_calls == before + 1
        assert [e.seq for e in stored[0]] == list(range(2, 17))
        assert rows_in_file(path) == 16  # committed, as another connection reads it
        stored = await store.append([("doc", [ev(i) for i in range(INLINE_EVENTS)])])
        assert store.writer.inline_calls == before + 2
        assert rows_in_file(path) == 16 + INLINE_EVENTS


async def test_a_burst_commits_on_the_writer_thread(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    async with SQLiteStore(path) as store:
        await store.append([("doc", [ev()])])
        before = store.writer.inline_calls
        stored = await store.append([("doc", [ev(i) for i in range(INLINE_EVENTS + 1)])])
        assert store.writer.inline_calls == before
        assert [e.seq for e in stored[0]] == list(range(2, INLINE_EVENTS + 3))
        assert rows_in_file(path) == INLINE_EVENTS + 2
        where = await store.writer.call(lambda c: threading.get_ident())
        assert where != threading.get_ident()


async def test_with_durability_os_a_burst_commits_inline_up_to_its_bound(
    tmp_path: Path, quick_disk: None
) -> None:
    """No sync to wait for: a burst commits on the loop's thread (no hop), unless it is
    bigger than INLINE_EVENTS_OS (a bulk import goes to the writer thread)."""
    path = tmp_path / "w.db"
    async with SQLiteStore(path, durability="os") as store:
        await store.append([("doc", [ev()])])
        before = store.writer.inline_calls
        burst = [ev(i) for i in range(INLINE_EVENTS + 12)]  # too many for fsync
        stored = await store.append([("doc", burst)])
        assert store.writer.inline_calls == before + 1
        assert [e.seq for e in stored[0]] == list(range(2, len(burst) + 2))
        assert rows_in_file(path) == len(burst) + 1
        bulk = [ev(i) for i in range(INLINE_EVENTS_OS + 1)]
        await store.append([("doc", bulk)])
        assert store.writer.inline_calls == before + 1  # on the writer thread
        assert rows_in_file(path) == len(burst) + len(bulk) + 1


async def test_small_calls_go_to_the_thread_while_commits_are_slow(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "w.db") as store:
        store.writer.small_seconds = INLINE_MAX_SECONDS * 10  # a slow disk lately
        where = await store.writer.call(lambda c: threading.get_ident(), small=True)
        assert where != threading.get_ident()
        # each small call measured on the thread brings the average back down
        for _ in range(40):
            await store.writer.call(lambda c: None, small=True)
        assert store.writer.small_seconds < INLINE_MAX_SECONDS
        where = await store.writer.call(lambda c: threading.get_ident(), small=True)
        assert where == threading.get_ident()


async def test_a_small_call_waits_behind_a_call_in_flight(tmp_path: Path) -> None:
    """Never two users of the connection at once, and calls finish in the order made."""
    async with SQLiteStore(tmp_path / "w.db") as store:
        release = threading.Event()
        order: list[str] = []

        def slow(c: sqlite3.Connection) -> None:
            assert release.wait(10)
            order.append("slow")

        def small(c: sqlite3.Connection) -> int:
            order.append("small")
            return threading.get_ident()

        first = asyncio.create_task(store.writer.call(slow))
        await asyncio.sleep(0.05)  # the writer thread is inside `slow`
        second = asyncio.create_task(store.writer.call(small, small=True))
        await asyncio.sleep(0.05)
        assert order == [] and not second.done()
        release.set()
        await first
        where = await second
        assert order == ["slow", "small"]
        assert where != threading.get_ident()


async def test_an_inline_call_that_fails_leaves_the_writer_usable(
    tmp_path: Path, quick_disk: None
) -> None:
    path = tmp_path / "w.db"
    async with SQLiteStore(path) as store:

        def broken(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO no_such_table VALUES (1)")

        before = store.writer.inline_calls
        with pytest.raises(sqlite3.OperationalError):
            await store.writer.call(broken, small=True)
        assert store.writer.inline_calls == before + 1  # it did run inline
        await store.append([("doc", [ev()])])
        await store.append([("doc", [ev(1)])])
        assert rows_in_file(path) == 2


async def test_a_lock_held_by_another_process_never_holds_the_event_loop(
    tmp_path: Path, quick_disk: None
) -> None:
    """Another connection (an admin command on the same file) holds the write lock: a
    small append does not wait for it on the event loop's thread; it goes to the writer
    thread, which waits (busy_timeout), while the loop keeps serving."""
    path = tmp_path / "w.db"
    async with SQLiteStore(path) as store:
        await store.append([("doc", [ev()])])
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, held
        try:
            append = asyncio.create_task(store.append([("doc", [ev(1)])]))
            ticks = 0
            for _ in range(20):  # the loop runs while the append waits for the lock
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 20 and not append.done()
            assert store.writer.busy_fallbacks == 1
        finally:
            other.execute("ROLLBACK")
            other.close()
        stored = await asyncio.wait_for(append, 10)
        assert [e.seq for e in stored[0]] == [2]
        assert rows_in_file(path) == 2
        # that wait was the other connection's, not a slow disk's: the next lone append
        # commits inline again at once, its wait for locks restored
        assert store.writer.small_seconds < 0.1  # the 0.2 s wait for the lock not counted
        before = store.writer.inline_calls
        await store.append([("doc", [ev(3)])])
        assert store.writer.inline_calls == before + 1
        (timeout,) = await store.writer.call(lambda c: c.execute("PRAGMA busy_timeout").fetchone())
        assert timeout == 10_000


async def test_the_wait_for_locks_is_switched_only_between_sides(
    tmp_path: Path, quick_disk: None
) -> None:
    """Inline the connection must not wait for another connection's lock, on the thread
    it must: busy_timeout is switched when a call runs on the other side from the call
    before, so a run of lone appends runs no PRAGMA at all (the first SQLite statement
    after a pause is the expensive one)."""
    path = tmp_path / "w.db"
    async with SQLiteStore(path) as store:
        seen: list[str] = []
        await store.on_writer(lambda c: c.set_trace_callback(seen.append))
        for i in range(5):
            await store.append([("doc", [ev(i)])])
        assert store.writer.inline_calls == 5
        pragmas = [s for s in seen if "busy_timeout" in s]
        assert pragmas == ["PRAGMA busy_timeout=0"]  # once, before the first
        seen.clear()
        (timeout,) = await store.writer.call(lambda c: c.execute("PRAGMA busy_timeout").fetchone())
        assert timeout == 10_000  # the thread waits again
        await store.append([("doc", [ev(5)])])
        (inline,) = await store.writer.call(
            lambda c: c.execute("PRAGMA busy_timeout").fetchone(), small=True
        )
        assert inline == 0
        assert [s for s in seen if "busy_timeout=" in s] == [
            "PRAGMA busy_timeout=10000",
            "PRAGMA busy_timeout=0",
        ]
        await store.on_writer(lambda c: c.set_trace_callback(None))


@pytest.fixture
def checkpoint_often(monkeypatch: pytest.MonkeyPatch) -> int:
    """A checkpoint every 40 estimated pages (about 10 lone appends), not every 1,000."""
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_PAGES", 40)
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_PAGES_MAX", 160)
    return 40


def spy_checkpoints(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of every checkpoint the writer runs (the real one still runs)."""
    threads: list[int] = []
    real = sqlite_store._Writer._checkpoint

    def spy(self: sqlite_store._Writer) -> None:
        threads.append(threading.get_ident())
        real(self)

    monkeypatch.setattr(sqlite_store._Writer, "_checkpoint", spy)
    return threads


@pytest.mark.parametrize("durability", ["fsync", "os"])
async def test_inline_commits_leave_the_checkpoints_to_the_writer_thread(
    tmp_path: Path,
    quick_disk: None,
    checkpoint_often: int,
    monkeypatch: pytest.MonkeyPatch,
    durability: str,
) -> None:
    """A WAL checkpoint takes milliseconds (it syncs the WAL, copies pages, syncs the
    database): SQLite's own ran inside the COMMIT that crossed its mark, on the event
    loop's thread when that commit was an inline one. Now the writer thread runs them,
    between calls, and the WAL stays bounded all the same."""
    threads = spy_checkpoints(monkeypatch)
    path = tmp_path / "w.db"
    async with SQLiteStore(path, durability=durability) as store:
        writer = store.writer
        (auto,) = await store.on_writer(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone())
        assert auto == sqlite_store.AUTOCHECKPOINT_BACKSTOP  # SQLite's own: a backstop only
        await store.append([("doc", [ev()])])
        inline_before = writer.inline_calls
        for i in range(200):
            await store.append([("doc", [ev(i)])])
            await asyncio.sleep(0)  # as between a room's commits: the thread's turn
        await writer.call(lambda c: None)  # whatever was asked for has run
        assert writer.inline_calls - inline_before >= 150  # the appends ran inline...
        assert writer.checkpoints >= 5  # ...and the WAL was checkpointed meanwhile...
        assert len(threads) >= writer.checkpoints
        assert threading.get_ident() not in threads  # ...never on the loop's thread
        frames, done = writer.last_checkpoint
        assert 0 < frames <= 4 * checkpoint_often and done == frames  # bounded, and whole
        assert rows_in_file(path) == 201


async def test_a_steady_stream_of_commits_still_gets_checkpointed(
    tmp_path: Path, checkpoint_often: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls always queued (a burst on the writer thread): no pause to checkpoint in, so
    the writer checkpoints at CHECKPOINT_PAGES_MAX rather than let the WAL grow."""
    threads = spy_checkpoints(monkeypatch)
    async with SQLiteStore(tmp_path / "w.db") as store:
        writer = store.writer
        burst = [ev(i) for i in range(INLINE_EVENTS + 4)]  # each one for the thread
        await asyncio.gather(*(store.append([("doc", burst)]) for _ in range(150)))
        assert writer.inline_calls == 0
        assert writer.checkpoints >= 2
        assert threading.get_ident() not in threads
        frames, _ = writer.last_checkpoint
        assert frames <= 2 * sqlite_store.CHECKPOINT_PAGES_MAX


def test_when_a_checkpoint_is_due() -> None:
    writer = sqlite_store._Writer(":memory:")
    assert not writer._checkpoint_due(queued=False)
    writer.pages_due = sqlite_store.CHECKPOINT_PAGES
    assert writer._checkpoint_due(queued=False)  # due, and nothing waits
    assert not writer._checkpoint_due(queued=True)  # a call waits: it goes first
    writer.pages_due = sqlite_store.CHECKPOINT_PAGES_MAX
    assert writer._checkpoint_due(queued=True)  # the WAL has grown enough: now
    writer.pages_due = sqlite_store.CHECKPOINT_PAGES // 2
    writer.page_scale = 2.0  # learnt: each estimated page was two frames
    assert writer._checkpoint_due(queued=False)


#: how each kind of call is made (_behind_a_slow_call)
_KINDS = {"append": {"append": True}, "upkeep": {"background": True}, "other": {}}


async def _behind_a_slow_call(store: SQLiteStore, kinds: list[str]) -> list[str]:
    """Holds the writer thread in a call, queues one call of each of `kinds` (in that
    order), lets go: the order the thread ran them in."""
    order: list[str] = []
    release = threading.Event()

    def slow(c: sqlite3.Connection) -> None:
        assert release.wait(10)
        order.append("slow")

    def named(name: str) -> Callable[[sqlite3.Connection], None]:
        return lambda c: order.append(name)

    first = asyncio.create_task(store.writer.call(slow))
    await asyncio.sleep(0.05)  # the writer thread is inside `slow`
    tasks = [asyncio.create_task(store.writer.call(named(k), **_KINDS[k])) for k in kinds]
    await asyncio.sleep(0.05)
    release.set()
    await first
    await asyncio.gather(*tasks)
    return order


async def test_an_append_goes_ahead_of_upkeep_queued_before_it(tmp_path: Path) -> None:
    """A seal is nobody's edit: an append queued behind it goes first."""
    async with SQLiteStore(tmp_path / "w.db") as store:
        order = await _behind_a_slow_call(store, ["upkeep", "append"])
        assert order == ["slow", "append", "upkeep"]
        assert store.writer.overtaken == 1


async def test_an_append_never_goes_ahead_of_other_calls(tmp_path: Path) -> None:
    """Only upkeep gives way: a deletion, a compaction, a snapshot's write keep their
    place, and upkeep keeps its place before them (derived data queued before a
    document's deletion must not be written after it)."""
    async with SQLiteStore(tmp_path / "w.db") as store:
        order = await _behind_a_slow_call(store, ["upkeep", "other", "append"])
        assert order == ["slow", "upkeep", "other", "append"]
        order = await _behind_a_slow_call(store, ["other", "upkeep", "append"])
        assert order == ["slow", "other", "append", "upkeep"]
        assert store.writer.overtaken == 1


async def test_upkeep_waits_while_appends_keep_coming_but_not_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "BACKGROUND_GRACE", 0.05)
    monkeypatch.setattr(sqlite_store, "BACKGROUND_MAX_WAIT", 0.3)
    async with SQLiteStore(tmp_path / "w.db") as store:
        w = store.writer
        burst = [ev(i) for i in range(INLINE_EVENTS + 1)]  # appends for the thread
        await store.append([("doc", burst)])
        appended_before_it_ran: list[int] = []
        appended = 0

        def upkeep(c: sqlite3.Connection) -> None:
            appended_before_it_ran.append(appended)

        task = asyncio.create_task(w.call(upkeep, background=True))
        for _ in range(200):  # an append every few ms, for about a second or more
            await store.append([("doc", burst)])
            appended += 1
            await asyncio.sleep(0.005)
            if task.done() and appended > 10 + appended_before_it_ran[0]:
                break
        await task
        # it gave way to the appends that came meanwhile, then ran while they still came
        assert appended_before_it_ran[0] >= 3
        assert appended > appended_before_it_ran[0]
        assert w.overtaken >= 3


async def test_small_appends_run_inline_while_upkeep_waits(
    tmp_path: Path, quick_disk: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "BACKGROUND_GRACE", 0.3)
    async with SQLiteStore(tmp_path / "w.db") as store:
        w = store.writer
        await store.append([("doc", [ev()])])  # an append just ended: upkeep waits
        ran = threading.Event()
        task = asyncio.create_task(w.call(lambda c: ran.set(), background=True))
        await asyncio.sleep(0.01)
        assert not ran.is_set()
        before = w.inline_calls
        await store.append([("doc", [ev(1)])])
        assert w.inline_calls == before + 1  # not queued behind the waiting upkeep
        await task
        assert ran.is_set()
        assert rows_in_file(tmp_path / "w.db") == 2


async def test_upkeep_queued_when_the_store_stops_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping waits for the upkeep that was waiting for appends; none is dropped."""
    monkeypatch.setattr(sqlite_store, "BACKGROUND_GRACE", 0.2)
    store = SQLiteStore(tmp_path / "w.db")
    await store.start()
    await store.append([("doc", [ev()])])  # an append just ended: upkeep waits
    w = store.writer

    def upkeep(c: sqlite3.Connection) -> str:
        _in_transaction(
            c, "test", lambda c: c.execute("INSERT INTO tags VALUES ('doc', 'v', 1, 1, 'ann')")
        )
        return "ran"

    task = asyncio.create_task(w.call(upkeep, background=True))
    await asyncio.sleep(0)  # queued (call hands it over before it awaits)
    assert not task.done()
    await store.stop()
    assert task.done() and task.result() == "ran"
    async with SQLiteStore(tmp_path / "w.db") as again:
        assert [t.name for t in await again.tags("doc")] == ["v"]
