"""The changefeed over SSE against a real `palimpsest serve` process (SQLite): backlog
then live, resuming with exactly the missed events, heartbeats, permissions, and a
follower that stays gap-free and in order across a kill -9 of the server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from pathlib import Path

import httpx
import pytest
from conftest import eventually
from feedhelp import RawStream, fold, type_into
from serverproc import ServerProcess

from palimpsest import client
from palimpsest.auth.tokens import LEEWAY, mint
from palimpsest.client.stream import StreamEvent
from palimpsest.store.sqlite import SQLiteStore

FAST = {"PALIMPSEST_CHANGEFEED_HEARTBEAT": "0.3"}


async def stored(db: Path) -> list[tuple[str, int, int]]:
    """(doc, seq, pos) of every event in the server's store, in position order."""
    store = SQLiteStore(db)
    async with store:
        return [(e.doc, e.seq, e.pos) for e in await store.read_all(limit=1_000_000)]


async def test_backlog_then_live_with_ids_and_updates(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path, env=FAST) as srv:
        await type_into(srv.ws_url, "notes", ["a", "b", "c"])
        url = f"{srv.http_url}/api/docs/notes/events/stream"
        async with RawStream(url) as s:
            assert s.status == 200 and s.content_type.startswith("text/event-stream")
            backlog = await s.events(3)
            assert [e["_id"] for e in backlog] == [1, 2, 3]
            assert [e["seq"] for e in backlog] == [1, 2, 3]
            assert {e["doc"] for e in backlog} == {"notes"}
            # the same JSON as /events, plus doc, pos and the update
            async with httpx.AsyncClient() as http:
                page = (await http.get(f"{srv.http_url}/api/docs/notes/events")).json()["events"]
            for mine, theirs in zip(backlog, page, strict=True):
                assert {k: mine[k] for k in theirs} == theirs
            await type_into(srv.ws_url, "notes", ["d", "e"])
            live = await s.events(2)
            assert [e["_id"] for e in live] == [4, 5]
            positions = [e["pos"] for e in backlog + live]
            assert positions == sorted(positions) and len(set(positions)) == 5
            updates = [base64.b64decode(e["update"]) for e in backlog + live]
            assert fold(updates) == "abcde"
            # idle: heartbeats keep the connection alive (and nothing else comes)
            with pytest.raises(TimeoutError):
                await s.next(timeout=1.0)
            assert s.heartbeats >= 2


async def test_resume_gives_exactly_the_missed_events(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path, env=FAST) as srv:
        await type_into(srv.ws_url, "notes", list("abc"))
        url = f"{srv.http_url}/api/docs/notes/events/stream"
        async with RawStream(url) as s:
            first = await s.events(3)
        assert [e["_id"] for e in first] == [1, 2, 3]
        await type_into(srv.ws_url, "notes", list("defg"))
        await type_into(srv.ws_url, "other", list("xy"))  # another document: not on this stream
        # an EventSource reconnects to the same URL with Last-Event-ID: the header wins
        async with RawStream(url + "?after=1", {"Last-Event-ID": "3"}) as s:
            missed = await s.events(4)
            assert [e["_id"] for e in missed] == [4, 5, 6, 7]
            # and nothing else: the next thing on the stream is a heartbeat
            beats = s.heartbeats
            with pytest.raises(TimeoutError):
                await s.next(timeout=1.0)
            assert s.heartbeats > beats
        async with RawStream(url + "?after=6&updates=false") as s:
            (last,) = await s.events(1)
            assert last["_id"] == 7 and "update" not in last


async def test_global_stream_orders_every_document_by_position(tmp_path: Path) -> None:
    async with ServerProcess(tmp_path, env=FAST) as srv:
        await asyncio.gather(
            type_into(srv.ws_url, "one", list("abcd")), type_into(srv.ws_url, "two", list("wxyz"))
        )
        async with RawStream(f"{srv.http_url}/api/events/stream") as s:
            evs = await s.events(8)
            await type_into(srv.ws_url, "three", ["!"])
            (live,) = await s.events(1)
        log = await stored(srv.db_path)
        assert [(e["doc"], e["seq"], e["pos"]) for e in [*evs, live]] == log
        assert [e["_id"] for e in evs] == [e["pos"] for e in evs]
        # resume by position
        async with RawStream(
            f"{srv.http_url}/api/events/stream", {"Last-Event-ID": str(evs[5]["pos"])}
        ) as s:
            rest = await s.events(3)
        assert [(e["doc"], e["seq"], e["pos"]) for e in rest] == log[6:]


async def test_bad_cursor_and_unknown_rights_are_refused(tmp_path: Path) -> None:
    secret = "s" * 32
    async with ServerProcess(tmp_path, extra_args=["--jwt-secret", secret], env=FAST) as srv:
        admin = mint(secret, "root", "admin", ["*"])
        team = mint(secret, "tess", "read", ["team-*"])
        for doc in ("team-a", "team-b", "private"):
            async with client.connect(srv.ws_url, doc, token=admin) as sess:
                sess.text().insert(0, doc)
                await sess.flush()
        base = srv.http_url
        bearer = {"Authorization": f"Bearer {team}"}
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.get(
                f"{base}/api/events/stream", headers={**bearer, "Last-Event-ID": "nope"}
            )
            assert r.status_code == 400 and "Last-Event-ID" in r.json()["detail"]
            r = await http.get(f"{base}/api/docs/private/events/stream", headers=bearer)
            assert r.status_code == 403
            r = await http.get(f"{base}/api/events/stream")
            assert r.status_code == 401
            # a filter it does not have is refused, not ignored (it streamed everything)
            r = await http.get(f"{base}/api/events/stream", params={"doc": "team-a"},
                               headers=bearer)  # fmt: skip
            assert r.status_code == 400 and "no ?doc= filter" in r.text
        async with RawStream(f"{base}/api/events/stream", bearer) as s:
            seen = await s.events(2)
            assert [e["doc"] for e in seen] == ["team-a", "team-b"]
            # the cursor moves past what the caller may not see (an id without data)
            moved = None
            for _ in range(5):
                msg = await s.next()
                if not msg.data:
                    moved = msg.id
                    break
            assert moved == "3"


async def _follow(
    follower: client.stream.Follower, into: list[StreamEvent], stop: asyncio.Event
) -> None:
    async for ev in follower:
        into.append(ev)
        if stop.is_set():
            return


async def test_followers_stay_gap_free_across_kill_9(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, env=FAST)
    await srv.astart()
    one: list[StreamEvent] = []
    everything: list[StreamEvent] = []
    stop = asyncio.Event()
    try:
        async with client.History(srv.http_url, user="reader") as h:
            tasks = [
                asyncio.create_task(_follow(h.stream("notes", updates=False), one, stop)),
                asyncio.create_task(_follow(h.stream_all(), everything, stop)),
            ]
            for round_ in range(3):
                await asyncio.gather(
                    type_into(srv.ws_url, "notes", [f"{round_}:{i} " for i in range(15)]),
                    type_into(srv.ws_url, "side", [f"<{round_}.{i}>" for i in range(10)]),
                )
                await srv.akill9()
                await asyncio.sleep(0.5)  # the followers fail to reconnect meanwhile
                await srv.astart()
            await type_into(srv.ws_url, "notes", ["end"])
            log = await stored(srv.db_path)
            await eventually(lambda: len(everything) >= len(log), timeout=20,
                             what="the global follower catches up")  # fmt: skip
            notes = [e for e in log if e[0] == "notes"]
            await eventually(lambda: len(one) >= len(notes), timeout=20, what="doc follower")
            stop.set()
            for t in tasks:
                t.cancel()
    finally:
        await srv.astop()
    assert [(e.doc, e.seq, e.pos) for e in everything] == log
    assert [e.seq for e in one] == list(range(1, len(notes) + 1))
    # and the content: the global stream's updates fold to each document's text
    by_doc: dict[str, list[bytes]] = {}
    for e in everything:
        assert e.update is not None
        by_doc.setdefault(e.doc, []).append(e.update)
    text = fold(by_doc["notes"])
    assert text.endswith("end") and all(f"2:{i} " in text for i in range(15))
    assert json.dumps(sorted(by_doc)) == '["notes", "side"]'


async def test_a_shutdown_ends_open_streams_instead_of_waiting_for_them(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, env=FAST)
    await srv.astart()
    try:
        await type_into(srv.ws_url, "notes", ["a"])
        async with RawStream(f"{srv.http_url}/api/events/stream") as s:
            await s.events(1)
            await srv.astop()
            with pytest.raises(StopAsyncIteration):  # ended by the server, cleanly
                while True:
                    await s.next()
    finally:
        await srv.astop()
    assert "graceful shutdown exceeded" not in srv.log_text()


async def test_streams_per_address_are_bounded(tmp_path: Path) -> None:
    env = {**FAST, "PALIMPSEST_CHANGEFEED_MAX_STREAMS_PER_IP": "3"}
    async with ServerProcess(tmp_path, env=env) as srv:
        url = f"{srv.http_url}/api/events/stream"
        await type_into(srv.ws_url, "first", ["x"])
        async with RawStream(url) as a, RawStream(url) as b, RawStream(url) as c:
            for s in (a, b, c):
                await s.events(1)  # all three are running
            async with RawStream(url) as d:
                assert d.status == 429 and "CHANGEFEED_MAX_STREAMS_PER_IP" in d.body

        # closed streams count no more (once the server has seen them go)
        async def admitted() -> bool:
            async with RawStream(url) as e:
                return e.status == 200 and [ev["doc"] for ev in await e.events(1)] == ["first"]

        await eventually(admitted, timeout=10, interval=0.2, what="a stream admitted again")

        # asked for all at once, as many as the bound: each was counted only once its
        # response ran, and 80 at once all passed a bound of 64
        async with contextlib.AsyncExitStack() as stack:
            streams = await asyncio.gather(
                *(stack.enter_async_context(RawStream(url)) for _ in range(8))
            )
            assert sorted(st.status for st in streams) == [200] * 3 + [429] * 5


async def test_a_stream_ends_when_the_token_expires(tmp_path: Path) -> None:
    secret = "e" * 32
    # the heartbeat left at its 15 s: the stream ended at the first heartbeat after exp,
    # and now ends when the token does (next() below gives up after 10 s)
    async with ServerProcess(tmp_path, extra_args=["--jwt-secret", secret]) as srv:
        # valid for two seconds more thanks to the leeway (a websocket closes at exp +
        # LEEWAY, and so does a stream now)
        token = mint(secret, "brief", "read", ["*"], ttl=-LEEWAY + 2)
        async with RawStream(
            f"{srv.http_url}/api/events/stream", {"Authorization": f"Bearer {token}"}
        ) as s:
            assert s.status == 200
            with pytest.raises(StopAsyncIteration):  # ended by the server at the expiry
                while True:
                    await s.next(timeout=10)
            assert s.heartbeats >= 1  # it was open and idle until then


async def test_a_restored_backup_never_gives_a_followers_positions_out_again(
    tmp_path: Path,
) -> None:
    """A backup restored with `backup --replace` gave out positions 6..10 again (its
    position counter was the backup's): a follower resuming after 10 waited past the new
    events 6..10 without a word, and a webhook deduping by pos threw them away. The
    restored file now goes on after the replaced one's last position; a cursor past a
    log's end (a copy, a document written again) is refused, 409, instead of waited on."""
    from palimpsest.cli.backup import backup

    async with ServerProcess(tmp_path, env=FAST) as srv:
        await type_into(srv.ws_url, "kept", list("abcde"))
        bk = tmp_path / "backup.db"
        await asyncio.to_thread(backup, str(srv.db_path), str(bk))
        await type_into(srv.ws_url, "lost", list("fghij"))
        async with RawStream(f"{srv.http_url}/api/events/stream") as s:
            seen = await s.events(10)
        assert [e["pos"] for e in seen] == list(range(1, 11))
        await srv.astop()
        await asyncio.to_thread(backup, str(bk), str(srv.db_path), replace=True)
        await srv.astart()
        await type_into(srv.ws_url, "after", list("xyz"))
        async with RawStream(f"{srv.http_url}/api/events/stream", {"Last-Event-ID": "10"}) as s:
            assert s.status == 200
            resumed = await s.events(3)
        assert [(e["doc"], e["seq"], e["pos"]) for e in resumed] == [
            ("after", 1, 11), ("after", 2, 12), ("after", 3, 13)
        ]  # fmt: skip
        async with httpx.AsyncClient(base_url=srv.http_url) as http:
            r = await http.get("/api/events/stream", headers={"Last-Event-ID": "1000"})
            assert r.status_code == 409 and "past this log's last position 13" in r.text
            # the lost document's cursor names events its log no longer has
            r = await http.get("/api/docs/lost/events/stream", params={"after": "5"})
            assert r.status_code == 409 and "past the last seq of 'lost', 0" in r.text
            r = await http.get("/api/docs/kept/events/stream", params={"after": "6"})
            assert r.status_code == 409
        async with client.History(srv.http_url) as h:
            with pytest.raises(client.Refused, match="read it again from 0"):
                async for _ in h.stream_all(after=1000):
                    pass


async def test_a_follower_waits_out_a_full_stream_limit(tmp_path: Path) -> None:
    """A 429 (every stream slot of the address taken) stopped the Python follower with
    RateLimited, as if refused for good; the slots come back, and it now retries."""
    env = {**FAST, "PALIMPSEST_CHANGEFEED_MAX_STREAMS_PER_IP": "1"}
    async with ServerProcess(tmp_path, env=env) as srv:
        await type_into(srv.ws_url, "notes", ["a"])
        got: list[StreamEvent] = []
        async with client.History(srv.http_url) as h:
            async with RawStream(f"{srv.http_url}/api/events/stream") as held:
                assert held.status == 200
                follower = h.stream_all()

                async def first() -> None:
                    async for ev in follower:
                        got.append(ev)
                        return

                task = asyncio.create_task(first())
                await asyncio.sleep(1.0)  # refused with 429 meanwhile, and retrying
                assert not task.done() and not got
            await asyncio.wait_for(task, 20)  # the slot came back
        assert [(e.doc, e.seq) for e in got] == [("notes", 1)]


async def test_others_edits_in_documents_one_may_not_read_are_not_timed(tmp_path: Path) -> None:
    """The cursor moves past what the caller may not see only in place of a heartbeat,
    not as each such commit lands (ftsec: a reader got a bare ``id:`` line within a moment
    of every edit in a document it may not read, which timed them). Here the heartbeat
    is 30 s away: an edit in `private`, then one in `team-a`; the next message is
    team-a's event, no id before it."""
    secret = "s" * 32
    env = {"PALIMPSEST_CHANGEFEED_HEARTBEAT": "30"}
    async with ServerProcess(tmp_path, extra_args=["--jwt-secret", secret], env=env) as srv:
        admin = mint(secret, "root", "admin", ["*"])
        team = mint(secret, "tess", "read", ["team-*"])
        bearer = {"Authorization": f"Bearer {team}"}
        async with (
            client.connect(srv.ws_url, "team-a", token=admin) as a,
            client.connect(srv.ws_url, "private", token=admin) as p,
        ):
            a.text().insert(0, "a")
            await a.flush()
            async with RawStream(f"{srv.http_url}/api/events/stream", bearer) as s:
                (first,) = await s.events(1)
                assert first["doc"] == "team-a"
                for word in ("one ", "two "):
                    p.text().insert(0, word)
                    await p.flush()
                    await asyncio.sleep(0.3)  # (the stream wakes for each, reads, waits)
                a.text().insert(1, "b")
                await a.flush()
                msg = await s.next()
                assert msg.data, f"an id line ({msg.id}) came before team-a's next event"
                assert json.loads(msg.data)["doc"] == "team-a"
                assert int(msg.id or 0) == json.loads(msg.data)["pos"] == 4


async def _put_texts(base: str, token: str, docs: list[str]) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for doc in docs:
            r = await http.put(f"{base}/api/docs/{doc}/text", json={"text": f"hi {doc}"},
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert r.status_code == 200, r.text


async def test_the_backlog_ends_with_the_cursor_past_what_one_may_not_read(
    tmp_path: Path,
) -> None:
    """Events the reader may not see at the end of the backlog move its cursor once the
    backlog is read (devfeed: a reader of 'a-*' after position 4, with b-3 at 5 and b-1's
    deletion at 6 after it, got nothing until the next heartbeat, 15 s away, or the next
    commit: a reconnect read positions 5 and 6 again each time). The heartbeat here is
    30 s away; the Python client's cursor moves too, with no event to hand out."""
    secret = "s" * 32
    env = {"PALIMPSEST_CHANGEFEED_HEARTBEAT": "30"}
    async with ServerProcess(tmp_path, extra_args=["--jwt-secret", secret], env=env) as srv:
        admin = mint(secret, "root", "admin", ["*"])
        reader = mint(secret, "rita", "read", ["a-*"])
        await _put_texts(srv.http_url, admin, ["a-1", "b-1", "b-2", "a-2", "b-3"])
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.delete(f"{srv.http_url}/api/docs/b-1",
                                  headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
            assert r.status_code == 200, r.text
        url = f"{srv.http_url}/api/events/stream?updates=false&after=4"
        async with RawStream(url, {"Authorization": f"Bearer {reader}"}) as s:
            msg = await s.next(timeout=10)
            assert (msg.id, msg.data) == ("6", "")
            assert s.heartbeats == 0
        # from 0: a-1 and a-2, then the id past b-3 and the deletion
        async with RawStream(url.replace("after=4", "after=0"),
                             {"Authorization": f"Bearer {reader}"}) as s:  # fmt: skip
            got = [await s.next(timeout=10) for _ in range(3)]
            assert [(m.id, bool(m.data)) for m in got] == [("1", True), ("4", True), ("6", False)]
        async with client.History(srv.http_url, token=reader) as h:
            feed = h.stream_all(after=4, updates=False)
            task = asyncio.create_task(anext(aiter(feed)))
            try:
                await eventually(lambda: feed.after == 6, what="the client's cursor at 6")
                assert not task.done()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_others_steady_edits_do_not_silence_the_stream(tmp_path: Path) -> None:
    """A commit in a document the reader may not see wakes the stream, which reads it and
    waits again: the heartbeat's wait started anew at each such commit, so that a reader
    of a few documents among busy others heard nothing at all, neither a heartbeat nor
    the id that moves its cursor, for as long as the others kept writing more often than
    the heartbeat (and a client's idle timeout reconnected it, to read it all again). The
    heartbeat is now due that long after the last thing the stream sent."""
    secret = "s" * 32
    env = {"PALIMPSEST_CHANGEFEED_HEARTBEAT": "1.5"}
    async with ServerProcess(tmp_path, extra_args=["--jwt-secret", secret], env=env) as srv:
        admin = mint(secret, "root", "admin", ["*"])
        reader = mint(secret, "rita", "read", ["a-*"])
        await _put_texts(srv.http_url, admin, ["a-1"])
        url = f"{srv.http_url}/api/events/stream?updates=false"
        stop = asyncio.Event()

        async def busy() -> None:  # an edit elsewhere every 0.2 s, until told to stop
            async with client.connect(srv.ws_url, "b-busy", token=admin) as b:
                while not stop.is_set():
                    b.text().insert(0, "x")
                    await b.flush()
                    await asyncio.sleep(0.2)

        async with RawStream(url, {"Authorization": f"Bearer {reader}"}) as s:
            (first,) = await s.events(1)
            assert first["doc"] == "a-1"
            writer = asyncio.create_task(busy())
            try:
                msg = await s.next(timeout=15)  # (the writer goes on meanwhile)
                assert not stop.is_set() and not writer.done()
            finally:
                stop.set()
                await writer
            assert msg.data == "" and msg.id is not None and int(msg.id) > first["pos"]
