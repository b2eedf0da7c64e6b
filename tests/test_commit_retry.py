"""The committer's retry after a commit whose outcome was lost (issue 19, fault 2).

A connection can fail after the append reached PostgreSQL and before its answer came
back: the transaction took effect, the caller saw an error. Holding and retrying such an
append would log every edit twice, so before a retry the committer looks for the events in
the log. Real parts: the machine's PostgreSQL behind a TCP relay that swallows the answer
to the message carrying the append (an append is one statement, its own transaction: the
message with the event's bytes is the one that commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence
from typing import Self

import pytest
from conftest import eventually, free_port
from scaleout import fresh_schema
from stallproxy import StallingProxy

from palimpsest.commit import Committer, Recheck
from palimpsest.store.base import NewEvent
from palimpsest.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


class _ArmedRelay:
    """A TCP relay to PostgreSQL (at port `target`) that watches for a message holding
    the bytes it is armed with; subclasses say what then happens to the connection."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.armed: bytes | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {w, uw}
        await self._relay(r, w, ur, uw)

    async def _relay(
        self,
        r: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        ur: asyncio.StreamReader,
        uw: asyncio.StreamWriter,
    ) -> None:
        raise NotImplementedError


class CommitSwallower(_ArmedRelay):
    """Relays TCP to PostgreSQL; once armed with some bytes, the first connection that
    sends a message containing them is broken as soon as PostgreSQL answers it, before
    the answer is passed on."""

    def __init__(self, target: int) -> None:
        super().__init__(target)
        self.swallowed = 0

    async def _relay(
        self,
        r: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        ur: asyncio.StreamReader,
        uw: asyncio.StreamWriter,
    ) -> None:
        muted = False

        async def up() -> None:
            nonlocal muted
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    uw.write(data)
                    await uw.drain()
                    if self.armed is not None and self.armed in data:
                        self.armed, muted = None, True
                        self.swallowed += 1
            with contextlib.suppress(Exception):
                uw.close()

        async def down() -> None:
            with contextlib.suppress(Exception):
                while data := await ur.read(65536):
                    if muted:
                        # PostgreSQL answered the COMMIT: it took effect. The client
                        # never hears it: the connection breaks here.
                        w.transport.abort()
                        uw.transport.abort()
                        return
                    w.write(data)
                    await w.drain()
            with contextlib.suppress(Exception):
                w.close()

        await asyncio.gather(up(), down())


async def test_a_commit_whose_answer_was_lost_is_not_logged_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="palimpsest.commit")
    async with fresh_schema() as url, CommitSwallower(5432) as relay:
        store = PostgresStore(url.replace(":5432/", f":{relay.port}/"), command_timeout=2.0)
        async with store, Committer(store) as committer:
            [first] = await committer.append("d", [NewEvent("ann", "edit", b"one", {}, 1)])
            assert first.seq == 1
            relay.armed = b"\x00\x00\x00\x03two"  # the update, a bytea parameter
            [second] = await committer.append(
                "d", [NewEvent("ann", "edit", b"two", {}, 2)], hold=lambda: True
            )
            assert relay.swallowed == 1  # the answer to the append was lost: the error was seen
            assert second.seq == 2 and committer.refusing is None
            # the refusal was logged, and so is its end (found in the log: nothing logged
            # it, and a lone server never said its store took commits again)
            said = [r.getMessage() for r in caplog.records]
            assert any("refuses commits" in m for m in said), said
            assert any("takes commits again" in m and "found in the log" in m for m in said)
            assert [e.update for e in await store.read("d")] == [b"one", b"two"]
            [third] = await committer.append("d", [NewEvent("ann", "edit", b"three", {}, 3)])
            assert third.seq == 3


class StatementHolder(_ArmedRelay):
    """Relays TCP to PostgreSQL; once armed with some bytes, the first connection that
    sends a message containing them has that message, and all it sends after, held on its
    way (a stalled route, a stopped server) until ``release()``: then it is passed on, the
    way to PostgreSQL is closed behind it, and ``ended`` is set once PostgreSQL has closed
    its side (after running the message, or because its backend was gone)."""

    def __init__(self, target: int) -> None:
        super().__init__(target)
        self.held = 0
        self.ended = asyncio.Event()
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    async def _relay(
        self,
        r: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        ur: asyncio.StreamReader,
        uw: asyncio.StreamWriter,
    ) -> None:
        holding = False

        async def up() -> None:
            nonlocal holding
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    if self.armed is not None and self.armed in data:
                        self.armed, holding = None, True
                        self.held += 1
                        await self._released.wait()
                        uw.write(data)  # whatever else the client sent is gone with it
                        uw.write_eof()
                        return
                    uw.write(data)
                    await uw.drain()
            with contextlib.suppress(Exception):
                uw.close()

        async def down() -> None:
            with contextlib.suppress(Exception):
                while data := await ur.read(65536):
                    with contextlib.suppress(Exception):  # the client may have gone
                        w.write(data)
            if holding:
                self.ended.set()
            with contextlib.suppress(Exception):
                w.close()

        await asyncio.gather(up(), down())


async def test_a_commit_held_up_on_its_way_is_not_logged_twice_when_it_arrives() -> None:
    """The append's statement stalls on its way (a stalled route, a stopped PostgreSQL),
    asyncpg gives up on it and the committer holds the edit; the retry looked for it in
    the log, did not find it (it had not arrived) and appended it; then the stalled
    statement arrived, ran and committed: the edit was logged twice. Now the retry ends
    the backend the stalled statement was sent to first, so it never runs."""
    async with fresh_schema() as url, StatementHolder(5432) as relay:
        store = PostgresStore(url.replace(":5432/", f":{relay.port}/"), command_timeout=1.0)
        async with store, Committer(store) as committer:
            await committer.append("d", [NewEvent("ann", "edit", b"one", {}, 1)])
            relay.armed = b"\x00\x00\x00\x03two"  # the update, a bytea parameter
            [second] = await committer.append(
                "d", [NewEvent("ann", "edit", b"two", {}, 2)], hold=lambda: True
            )
            assert relay.held == 1 and second.seq == 2
            relay.release()  # the stalled statement arrives
            async with asyncio.timeout(20):
                await relay.ended.wait()
            assert [(e.seq, e.update) for e in await store.read("d")] == [(1, b"one"), (2, b"two")]
            [third] = await committer.append("d", [NewEvent("ann", "edit", b"three", {}, 3)])
            assert third.seq == 3


def _said(caplog: pytest.LogCaptureFixture, pattern: str) -> list[re.Match[str]]:
    found = (re.search(pattern, r.getMessage()) for r in caplog.records)
    return [m for m in found if m is not None]


async def test_commits_waiting_on_a_stalled_store_are_said_at_once_and_measured_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that hangs (here a proxy that holds every byte: a stopped PostgreSQL or a
    lost route looks the same) fails nothing until asyncpg gives up, twice its
    command_timeout later (the statement, then the pool's wait for the cancel): 60 s by
    default, and nothing was logged meanwhile. The wait is logged within seconds, with
    how much waits; its end says how long commits waited, from when they stopped, not
    from the first timeout, whether the store refused them meanwhile or not."""
    caplog.set_level(logging.INFO, logger="palimpsest.commit")
    async with fresh_schema() as url:
        with StallingProxy(5432) as proxy:
            store = PostgresStore(url.replace(":5432/", f":{proxy.port}/"), command_timeout=15.0)
            async with store, Committer(store) as committer:
                await committer.append("d", [NewEvent("ann", "edit", b"one", {}, 1)])
                for i, refused in enumerate((False, True), start=2):
                    caplog.clear()
                    await asyncio.to_thread(proxy.stall)
                    began = time.monotonic()
                    held = asyncio.create_task(
                        committer.append("d", [NewEvent("ann", "edit", b"%d" % i, {}, i)],
                                         hold=lambda: True)
                    )  # fmt: skip
                    waits = await eventually(
                        lambda: _said(caplog, r"has not answered a commit for .*: 1 events of "
                                      r"1 document \(1 bytes\) wait"),
                        timeout=20, what="the wait logged",
                    )  # fmt: skip
                    assert len(waits) == 1  # once, however long it waits
                    assert not held.done() and committer.refusing is None
                    if refused:  # the first timeout too, before it answers again
                        await eventually(lambda: committer.refusing is not None, timeout=60)
                    await asyncio.to_thread(proxy.resume)
                    resumed = time.monotonic()
                    [stored] = await held
                    assert stored.update == b"%d" % i
                    [back] = _said(caplog, r"takes commits again after ([0-9.]+) s")
                    # (to 0.1 s, rounded; the commit began a turn of the loop after `began`)
                    assert float(back[1]) >= resumed - began - 0.1, (back[0], resumed - began)


async def test_the_refusal_is_logged_once_however_its_cause_changes(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL refused connections for 3.2 s, and "the postgresql store refuses
    commits" was logged 6 times, documented as at most every 10 s: each retry's error
    differed from the last (the append's, then the look in the log's; a reset, then a
    closed connection), and a new message was logged at once. Now a stretch of refusals
    is said once per LOG_EVERY (made long here: however many retries, one line), and
    its end at INFO (it was a WARNING: alerts on warnings fired on the recovery)."""
    caplog.set_level(logging.INFO, logger="palimpsest.commit")
    monkeypatch.setattr("palimpsest.commit.LOG_EVERY", 3600.0)
    with StallingProxy(5432) as proxy:
        async with fresh_schema() as url:
            store = PostgresStore(url.replace(":5432/", f":{proxy.port}/"), command_timeout=2.0)
            async with store, Committer(store) as committer:
                await committer.append("d", [NewEvent("ann", "edit", b"one", {}, 1)])
                await asyncio.to_thread(proxy.cut)
                held = asyncio.create_task(
                    committer.append(
                        "d", [NewEvent("ann", "edit", b"two", {}, 2)], hold=lambda: True
                    )
                )
                await eventually(lambda: committer.failures >= 6, timeout=30, what="6 refusals")
                causes = {str(committer.refusing)}
                # the cause changes for sure: connections closed as they open become a
                # port that refuses them (left to the retries under a cut, the error read
                # "connection reset" or "connection_lost()" by turns, or one for 30 s)
                await asyncio.to_thread(proxy.refuse)
                await eventually(
                    lambda: causes.add(str(committer.refusing)) or len(causes) > 1,
                    timeout=30, what="a refusal of another cause",
                )  # fmt: skip
                refused = [r for r in caplog.records if "refuses commits" in r.getMessage()]
                assert len(refused) == 1, [r.getMessage() for r in refused]
                await asyncio.to_thread(proxy.resume)
                [two] = await held
                assert two.seq == 2
                # its end is said at INFO: an alert on WARNING fires on trouble, not on
                # its end
                [back] = [r for r in caplog.records if "takes commits again" in r.getMessage()]
                assert back.levelno == logging.INFO


async def test_a_lost_answer_is_found_in_the_log_under_the_ts_the_store_gave_it() -> None:
    """An append raises its events' ts to the document's last (EventStore.append): a
    process cut off from the store stamps its held edits when the cut began, and the
    others' appends stamp theirs later. The look in the log searched the ts the edits
    were stamped with, found nothing, and the retry logged them twice."""
    async with fresh_schema() as url, CommitSwallower(5432) as relay:
        store = PostgresStore(url.replace(":5432/", f":{relay.port}/"), command_timeout=2.0)
        async with store, Committer(store) as committer:
            # another process's event, stamped later than the held edit will be
            [first] = await committer.append("d", [NewEvent("bob", "edit", b"one", {}, 5000)])
            relay.armed = b"\x00\x00\x00\x03two"
            [second] = await committer.append(
                "d", [NewEvent("ann", "edit", b"two", {}, 2)], hold=lambda: True, floor=1
            )
            assert relay.swallowed == 1
            assert second.seq == 2 and second.ts == first.ts
            assert [e.update for e in await store.read("d")] == [b"one", b"two"]


async def test_a_held_append_logs_only_what_its_recheck_keeps() -> None:
    """Before a held append is tried again (after the look in the log), its caller says
    which of its events still add anything (``recheck``; a room: those other processes
    did not log meanwhile): only those are stored and returned, in order; an append
    left with nothing is answered [] without a transaction, and the store counts as
    taking commits again."""
    with StallingProxy(5432) as proxy:
        async with fresh_schema() as url:
            store = PostgresStore(url.replace(":5432/", f":{proxy.port}/"), command_timeout=2.0)
            async with store, Committer(store) as committer:
                await committer.append("d", [NewEvent("ann", "edit", b"one", {}, 1)])
                asked: list[list[bytes]] = []

                def keep(updates: set[bytes]) -> Recheck:
                    def recheck(events: Sequence[NewEvent]) -> list[NewEvent]:
                        asked.append([e.update for e in events])
                        return [e for e in events if e.update in updates]

                    return recheck

                evs = [NewEvent("ann", "edit", b"%d" % i, {}, 2) for i in (2, 3, 4)]
                await asyncio.to_thread(proxy.cut)
                held = asyncio.create_task(
                    committer.append("d", evs, hold=lambda: True, recheck=keep({b"2", b"4"}))
                )
                await eventually(lambda: committer.refusing is not None, timeout=30)
                await asyncio.to_thread(proxy.resume)
                stored = await held
                assert [(e.seq, e.update) for e in stored] == [(2, b"2"), (3, b"4")]
                assert asked == [[b"2", b"3", b"4"]]  # once: before the retry that took
                await asyncio.to_thread(proxy.cut)
                none = asyncio.create_task(
                    committer.append(
                        "d", [NewEvent("ann", "edit", b"5", {}, 3)], hold=lambda: True,
                        recheck=keep(set()),
                    )
                )  # fmt: skip
                await eventually(lambda: committer.refusing is not None, timeout=30)
                await asyncio.to_thread(proxy.resume)
                assert await none == []
                assert committer.refusing is None and committer.waiting_since is None
                assert [e.update for e in await store.read("d")] == [b"one", b"2", b"4"]
