"""The scale-out under faults: Redis restarted, messages lost, PostgreSQL restarted.

Redis and PostgreSQL are private servers started by the test (PrivateRedis, PrivatePostgres
in scaleout.py), so stopping them never disturbs anyone else's tests; the tests that only
lose messages use the shared PostgreSQL with a schema of their own."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from pathlib import Path

import httpx
import pytest
from conftest import PG_PORT, eventually, free_port, run_server
from pycrdt import Doc, Text
from redis import asyncio as aioredis
from scaleout import (
    PrivateRedis,
    cluster,
    fanout_url,
    fresh_schema,
    open_store,
    private_postgres,
)
from serverproc import ServerProcess
from stallproxy import StallingProxy
from yclient import YClient, connect

from palimpsest.deletion import tombstone_for
from palimpsest.fanout import Fanout, encode, parse_url
from palimpsest.settings import Settings
from palimpsest.store.base import Event, NewEvent

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def type_into(c: YClient, text: str, pause: float = 0.0) -> None:
    for ch in text:
        c.insert(len(c.content), ch)
        await asyncio.sleep(pause)


async def converge(
    clients: list[YClient], pieces: list[str], what: str, within: float = 10
) -> None:
    def ok() -> bool:
        texts = {c.content for c in clients}
        return len(texts) == 1 and all(p in next(iter(texts)) for p in pieces)

    try:
        await eventually(ok, timeout=within, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}: {[c.content for c in clients]}") from None


def foreign_update(text: str) -> bytes:
    """An update made by a client the servers never saw: inserts `text` into "content"."""
    d: Doc = Doc()
    t = d.get("content", type=Text)
    t.insert(0, text)
    return d.get_update()


async def test_an_event_never_published_is_found_by_the_gap_check(tmp_path: Path) -> None:
    # a process that crashed between its commit and its publish: the log has the event,
    # Redis never carried it
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url(check=0.3)) as c,
    ):
        async with (
            connect(c.ws(0), "gap", user="ann") as a,
            connect(c.ws(1), "gap", user="bob") as b,
        ):
            await type_into(a, "hello")
            await eventually(lambda: b.content == "hello")
            async with open_store(store_url) as store:
                await store.append([("gap", [NewEvent("ghost", "edit", foreign_update("[x]"))])])
            await eventually(lambda: "[x]" in a.content and "[x]" in b.content, timeout=5)
            assert a.content == b.content


async def test_a_server_change_on_a_room_behind_the_log_sees_the_log_first(
    tmp_path: Path,
) -> None:
    """Ann's latest edit is in the log but the process she undoes on has not heard of it
    (Redis down, a message lost; here never published, and no gap check within the
    test). The undo reverted her older step, and a text written whole there was diffed
    against an old text. The room now reads the log to its end before a server change."""
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url(check=3600)) as c,
        httpx.AsyncClient() as http,
    ):
        async with (
            connect(c.ws(0), "lag", user="ann") as ann,
            connect(c.ws(1), "lag", user="bob") as bob,
        ):
            await type_into(ann, "one ")
            await eventually(lambda: bob.content == "one ")
            await ann.request({"type": "close_group"})
            async with open_store(store_url) as store:
                (ev,) = (
                    await store.append([("lag", [NewEvent("ann", "edit", foreign_update("[x]"))])])
                )[0]
            undo = f"{c.procs[1].http_url}/api/docs/lag/undo?user=ann"
            r = await http.post(undo)
            assert r.status_code == 200 and r.json()["reverts"] == [ev.seq], r.text
            await eventually(lambda: bob.content == "one ", what="the latest step undone")
            put = f"{c.procs[1].http_url}/api/docs/lag/text?user=bob"
            async with open_store(store_url) as store:
                await store.append([("lag", [NewEvent("cy", "edit", foreign_update("[y]"))])])
            r = await http.put(put, json={"text": "REPLACED"})
            assert r.status_code == 200, r.text
            await eventually(lambda: ann.content == "REPLACED" and bob.content == "REPLACED")


async def test_a_room_that_missed_its_documents_deletion_is_dropped_not_kept_writing(
    tmp_path: Path,
) -> None:
    """A deletion whose message never came (Redis down), and a new document of the name
    already past the old room's seq: the gap check only took a head below the room's seq
    for a deletion, so the old room went on, logging its client's edits into the new
    document, and its snapshot at unload became the head. Now events that reach a room
    from the store make it read its tombstone: newer than the one it loaded with, the
    room is dropped and its clients are closed with 4404."""
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url(check=3600)) as c,
    ):
        async with connect(c.ws(1), "ghost", user="bob") as bob:
            await type_into(bob, "OLD")
            room = f"{c.procs[1].http_url}/api/docs"
            async with open_store(store_url) as store, httpx.AsyncClient() as http:

                async def logged() -> bool:
                    r = await http.get(f"{room}/ghost/versions/head?user=x")
                    return r.status_code == 200 and "OLD" in r.text

                await eventually(logged, what="OLD logged")
                room_seq = await store.head("ghost")
                tomb = await tombstone_for(store, "ghost")
                assert await store.delete_doc("ghost", tomb)  # no message: nobody is told
                for i in range(room_seq + 2):  # the new document, past the old room's seq
                    await store.append(
                        [("ghost", [NewEvent("cy", "edit", foreign_update(f"n{i} "))])]
                    )
            bob.insert(0, "B")
            await eventually(lambda: bob.ws.close_code is not None, what="bob closed")
            assert bob.ws.close_code == 4404, (bob.ws.close_code, bob.ws.close_reason)
        async with open_store(store_url) as store:
            events = await store.read("ghost")
            snaps = await store.snapshots("ghost")
        # one edit of bob's got in before the room learnt (as the docs say of a late
        # deletion), and no snapshot of the old document's state became the head
        assert [e.actor for e in events].count("bob") <= 1, [e.actor for e in events]
        assert not snaps, snaps


async def test_a_message_after_a_gap_brings_the_missing_events(tmp_path: Path) -> None:
    # the gap check is off (an hour): only the seq gap in a message can heal it
    fan = fanout_url(check=3600)
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fan) as c,
    ):
        async with (
            connect(c.ws(0), "gap2", user="ann") as a,
            connect(c.ws(1), "gap2", user="bob") as b,
        ):
            await type_into(a, "hi")
            await eventually(lambda: b.content == "hi")
            async with open_store(store_url) as store:
                [lost, sent] = (
                    await store.append(
                        [("gap2", [NewEvent("ghost", "edit", foreign_update("[lost]"))]),
                         ("gap2", [NewEvent("ghost", "edit", foreign_update("[sent]"))])]
                    )
                )  # fmt: skip
            redis_url, prefix, _ = parse_url(fan)
            r = aioredis.Redis.from_url(redis_url)
            try:
                await r.publish(f"{prefix}:gap2", encode("ghost-process", sent))
            finally:
                await r.aclose()
            for cl in (a, b):
                await eventually(
                    lambda cl=cl: "[lost]" in cl.content and "[sent]" in cl.content, timeout=5
                )
            assert lost[0].seq + 1 == sent[0].seq


async def test_redis_restarted_mid_editing(tmp_path: Path) -> None:
    with PrivateRedis() as redis:
        async with (
            fresh_schema() as store_url,
            cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url(redis.url, check=0.5)) as c,
        ):
            await eventually(lambda: redis.subscribers() == 2, what="subscribed")
            async with (
                connect(c.ws(0), "r", user="ann") as a,
                connect(c.ws(1), "r", user="bob") as b,
            ):
                await type_into(a, "one ")
                await eventually(lambda: b.content == "one ")
                redis.kill()
                # Redis is down: edits still go through (write-ahead to PostgreSQL) and
                # reach the other process through the gap check
                await type_into(a, "two ")
                await converge([a, b], ["one two "], "a -> b without Redis")
                await type_into(b, "deux ")
                await converge([a, b], ["one two deux "], "b -> a without Redis")
                redis.start()
                await eventually(lambda: redis.subscribers() == 2, timeout=15, what="resubscribed")
                await type_into(a, "three ")
                await converge([a, b], ["one two deux three "], "a -> b after Redis is back")
                await type_into(b, "trois ")
                await converge([a, b], ["one two deux three trois "], "b -> a")
            async with open_store(store_url) as store:
                assert await store.head("r") == len("one two deux three trois ")


async def test_a_paused_subscriber_cut_off_by_redis_heals_from_the_log(tmp_path: Path) -> None:
    # Redis cuts a subscriber that does not read (output buffer over 256 KiB); the
    # messages it missed are gone. The gap check is off: only the heal after the
    # resubscription can bring them back.
    with PrivateRedis("--client-output-buffer-limit", "pubsub 262144 131072 1") as redis:
        async with (
            fresh_schema() as store_url,
            cluster(
                tmp_path, 2, store_url=store_url, fanout=fanout_url(redis.url, check=3600)
            ) as c,
        ):
            await eventually(lambda: redis.subscribers() == 2, what="subscribed")
            async with (
                connect(c.ws(0), "p", user="ann") as a,
                connect(c.ws(1), "p", user="bob") as b,
            ):
                await type_into(a, "start.")
                await eventually(lambda: b.content == "start.")
                c.pause(1)
                try:
                    chunk = "x" * (512 * 1024)
                    for i in range(12):  # 6 MiB: more than the sockets buffer
                        a.insert(len(a.content), f"[{i}]{chunk}")
                        await asyncio.sleep(0.05)

                    def cut() -> bool:
                        return redis.subscribers() < 2

                    await eventually(cut, timeout=15, what="Redis cut the paused subscriber")
                finally:
                    c.resume(1)
                await type_into(a, "end.")
                await eventually(
                    lambda: b.content == a.content and a.content.endswith("end."),
                    timeout=20, what="the paused process healed",
                )  # fmt: skip
                assert "[11]" in b.content


async def test_postgresql_restarted_mid_editing(tmp_path: Path) -> None:
    with private_postgres() as pg:
        store_url = f"{pg.url}?schema=palimpsest"
        async with cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url(check=0.5)) as c:
            async with connect(c.ws(1), "pgr", user="bob") as b:
                async with connect(c.ws(0), "pgr", user="ann") as a:
                    await type_into(a, "acknowledged. ")
                    await eventually(lambda: b.content == "acknowledged. ")
                    acked = b.content
                    await asyncio.to_thread(pg.stop, "immediate")
                    # an edit while PostgreSQL is down is held: acknowledged to nobody,
                    # and the sender keeps its connection (no reconnect storm)
                    await type_into(a, "held. ")

                    async def readyz() -> int:
                        async with httpx.AsyncClient() as http:
                            r = await http.get(c.procs[0].http_url + "/readyz", timeout=10)
                        return r.status_code

                    await eventually(lambda: _is(readyz(), 503), timeout=15,
                                     what="process 0 not ready while commits are held")  # fmt: skip
                    assert "held." not in b.content and a.close_code is None
                    await asyncio.to_thread(pg.start)
                    # the servers recover by themselves: what was held commits, in order
                    await eventually(lambda: b.content == "acknowledged. held. ", timeout=30,
                                     what="the held edit committed and fanned out")  # fmt: skip
                    await type_into(a, "after.")
                    want = "acknowledged. held. after."
                    await eventually(lambda: a.content == want and b.content == want, timeout=15)
                    assert a.close_code is None and b.close_code is None
                    await eventually(lambda: _is(readyz(), 200), timeout=15, what="ready again")
            async with open_store(store_url) as store:
                from palimpsest.snapshots import load

                loaded = await load(store, "pgr")
                text = str(loaded.doc.get("content", type=Text))
                assert text == "acknowledged. held. after."
                assert text.startswith(acked)


async def _is(status: Awaitable[int], want: int) -> bool:
    return await status == want


async def test_servers_on_one_store_with_different_buses_are_told(tmp_path: Path) -> None:
    """Two servers on one SQLite file, each with a bus, but not the same one (another
    prefix here; another Redis is the same): the serving lock lets both start, and their
    users see each other's edits only as the gap check heals them, seconds late. The
    one whose rooms keep falling behind says why in its log; a pair on one bus does not."""
    db = tmp_path / "shared.db"

    async def pair(urls: tuple[str, str], doc: str) -> tuple[ServerProcess, ServerProcess]:
        procs = tuple(
            ServerProcess(tmp_path / f"{doc}-{i}", db_path=db, extra_args=["--fanout", url])
            for i, url in enumerate(urls)
        )
        try:  # (a pair of which one did not start is stopped too)
            await asyncio.gather(*(p.astart() for p in procs))
            async with connect(procs[0].ws_url, doc, user="ann") as a:
                async with connect(procs[1].ws_url, doc, user="bob") as b:
                    await asyncio.sleep(1.0)  # both subscribed a while: nothing is new
                    await type_into(a, "twelve chars", pause=0.3)
                    await eventually(lambda: b.content == "twelve chars", timeout=10)
                    # (a message may come late: the bus is given a grace to bring it)
                    await asyncio.sleep(2.5)
        finally:
            for p in procs:
                await asyncio.to_thread(p.stop)
        return procs[0], procs[1]

    same = fanout_url(check=0.5)  # a message late by a whole check is not what we look for
    ok = await pair((same, same), "one-bus")
    assert "never delivered" not in ok[0].log_text() + ok[1].log_text()

    writer, reader = await pair((fanout_url(check=0.25), fanout_url(check=0.25)), "two-buses")
    assert "never delivered" in reader.log_text(), reader.log_tail()
    assert "does every server on this store use the same --fanout" in reader.log_text()
    assert "never delivered" not in writer.log_text()


async def test_messages_the_bus_brings_late_are_not_taken_for_another_bus(
    tmp_path: Path,
) -> None:
    """Three processes on one --fanout URL under load (load average ~10) said "3 times in
    the last 60 s a room here was behind the store by events the bus never delivered …
    does every server on this store use the same --fanout URL": a gap check that found a
    room behind healed it from the store, and the message that came a moment later was
    never asked after. Here the reader's link to Redis (the same Redis and prefix)
    holds every message 0.4 s, longer than a gap check: its rooms are found behind and
    healed, again and again, and the bus brings every event all the same. Nothing is
    said; the other buses' case (above) still is."""
    db = tmp_path / "shared.db"
    fan = fanout_url(check=0.25)
    redis_port = int(parse_url(fan)[0].split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    with StallingProxy(redis_port, delay=0.4) as slow:
        late = fan.replace(f":{redis_port}/", f":{slow.port}/", 1)
        procs = (
            ServerProcess(tmp_path / "late-0", db_path=db, extra_args=["--fanout", fan]),
            ServerProcess(tmp_path / "late-1", db_path=db, extra_args=["--fanout", late]),
        )
        try:
            await asyncio.gather(*(p.astart() for p in procs))
            writer, reader = procs
            async with connect(writer.ws_url, "late", user="ann") as a:
                async with connect(reader.ws_url, "late", user="bob") as b:
                    await asyncio.sleep(1.5)  # both subscribed a while: nothing is new
                    await type_into(a, "twenty-four characters..", pause=0.3)
                    await eventually(lambda: b.content == a.content, timeout=10)
                    healed = await _metric(reader.http_url, "palimpsest_fanout_healed_events_total")
                    assert healed >= 3, "the gap check did not find the reader behind"
                    await asyncio.sleep(3.0)  # (a late delivery's grace, and then some)
        finally:
            for p in procs:
                await asyncio.to_thread(p.stop)
    assert "never delivered" not in reader.log_text(), reader.log_tail()


async def test_servers_that_cannot_publish_do_not_blame_the_configuration(
    tmp_path: Path,
) -> None:
    """Two servers on one SQLite file and one bus, through a Redis user that may subscribe
    but not publish: each falls behind the other, subscribed throughout, and heals from
    the log. Each says it cannot publish; neither asks whether the servers share a bus
    (they do: Redis is what fails them, as a hung one does)."""
    with PrivateRedis() as redis:
        redis.cli("ACL", "SETUSER", "mute", "on", ">pw", "~*", "&*", "+@all", "-publish")
        url = fanout_url(redis.url.replace("redis://", "redis://mute:pw@"), check=0.25)
        procs = [
            ServerProcess(
                tmp_path / f"p{i}", db_path=tmp_path / "shared.db", extra_args=["--fanout", url]
            )
            for i in range(2)
        ]
        try:
            await asyncio.gather(*(p.astart() for p in procs))
            async with (
                connect(procs[0].ws_url, "muted", user="ann") as a,
                connect(procs[1].ws_url, "muted", user="bob") as b,
            ):
                await asyncio.sleep(1.0)  # both subscribed a while: nothing is new
                for word in ("one ", "two ", "three ", "four "):
                    await type_into(a, word, pause=0.1)
                    await eventually(lambda: b.content == a.content, timeout=10)
                    await type_into(b, word.upper(), pause=0.1)
                    await eventually(lambda: a.content == b.content, timeout=10)
        finally:
            for p in procs:
                await asyncio.to_thread(p.stop)
    for p in procs:
        assert "fan-out cannot publish" in p.log_text(), p.log_tail()
        assert "same --fanout URL" not in p.log_text(), p.log_tail()
        assert "behind the log" in p.log_text(), p.log_tail()  # healed, as said


async def test_a_server_started_with_redis_unreachable_says_so(tmp_path: Path) -> None:
    """Nothing listens where --fanout points: the log said so only at the first publish
    that failed, and a server nobody wrote to said nothing at all."""
    from conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    srv = ServerProcess(tmp_path / "no-redis", extra_args=["--fanout", url])
    await srv.astart()
    try:
        await eventually(lambda: "fan-out cannot reach Redis" in srv.log_text(), timeout=10)
        await asyncio.sleep(2.5)  # four more tries (0.2, 0.4, 0.8, 1.6 s apart)
        assert srv.log_text().count("fan-out cannot reach Redis") == 1  # once, not per try
    finally:
        await asyncio.to_thread(srv.stop)


async def test_edits_behind_a_read_the_store_does_not_answer_are_logged(
    tmp_path: Path,
) -> None:
    """PostgreSQL hangs while a room reads events another process logged (a message
    after a gap): the edits typed meanwhile queue in the room behind that read, with no
    commit of this process's in flight, and only a process with a commit in flight said
    "has not answered a commit" (a drill's other process held ~400 edits for 40 s and
    said nothing of them). Now the process says so, what they wait behind, and when
    they move again; palimpsest_commit_stalled is 1 meanwhile."""
    fan = fanout_url(check=3600)  # the gap check off: the message is what reads the log
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as store_url:
            via = store_url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
            async with cluster(tmp_path, 1, store_url=via, fanout=fan) as c:
                p = c.procs[0]
                async with connect(c.ws(0), "hang", user="ann") as a:
                    await type_into(a, "hi")
                    sent = await _ghost_events_behind(store_url, p, "hang")
                    await asyncio.to_thread(proxy.stall)
                    await _publish_as_ghost(fan, "hang", sent)
                    # The message and the keystrokes come on two connections: nothing
                    # orders them, and a keystroke first is committed first (its commit
                    # hangs, "has not answered a commit", and the rest waits behind it:
                    # one run in eight drew that on a loaded machine). The process counts
                    # a message as it queues it in the room, so what is typed after the
                    # count moved waits behind the read the message makes.
                    await eventually(
                        lambda: _metric_is(
                            p.http_url, "palimpsest_fanout_received_messages_total", 1
                        ),
                        what="the message in the room",
                    )
                    await type_into(a, " held", pause=0.05)

                    def said() -> bool:
                        return "edits have waited" in p.log_text()

                    await eventually(said, timeout=40, what="the waiting edits logged")
                    line = next(ln for ln in p.log_text().splitlines() if "edits have waited" in ln)
                    # five keystrokes, as one to five updates (a client merges what it
                    # has not sent yet when its socket is slow to take them)
                    waiting = re.search(r"(\d+) edits", line)
                    assert waiting and 1 <= int(waiting[1]) <= 5, line
                    assert "behind a read of the log" in line, line
                    assert "no commit of this process's is in flight" in line, line
                    async with httpx.AsyncClient() as http:
                        m = (await http.get(p.http_url + "/metrics", timeout=10)).text
                    assert "palimpsest_commit_stalled 1.0" in m
                    assert f"palimpsest_commit_waiting_edits {int(waiting[1])}.0" in m, m
                    await asyncio.to_thread(proxy.resume)
                    await eventually(
                        lambda: all(t in a.content for t in ("[lost]", "[sent]", "hi held")),
                        timeout=30, what="the read answered, the edits committed",
                    )  # fmt: skip
                    await eventually(
                        lambda: "move again after" in p.log_text(), what="the end logged"
                    )


async def test_a_read_of_the_log_the_store_refuses_is_waited_out_not_a_reload(
    tmp_path: Path,
) -> None:
    """PostgreSQL cut while a room reads events another process logged (a message after
    a gap): the read failed with StoreUnavailable, the room was dropped and its clients
    closed with 1013 "the document is being reloaded", and refused until PostgreSQL came
    back (a field test's 20 s cut). The events are durable: the read is now waited out,
    as a refused commit is; the connection stays open and its edits are held."""
    fan = fanout_url(check=3600)  # the gap check off: the message is what reads the log
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as store_url:
            via = store_url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
            async with cluster(tmp_path, 1, store_url=via, fanout=fan) as c:
                p = c.procs[0]
                async with connect(c.ws(0), "cut", user="ann") as a:
                    await type_into(a, "hi")
                    sent = await _ghost_events_behind(store_url, p, "cut")
                    await asyncio.to_thread(proxy.cut)
                    await _publish_as_ghost(fan, "cut", sent)
                    await eventually(
                        lambda: "catching up to seq" in p.log_text()
                        or "pipeline failed" in p.log_text(),
                        timeout=15, what="the read refused",
                    )  # fmt: skip
                    await type_into(a, " held", pause=0.05)
                    await asyncio.sleep(1.0)  # (the room would have been dropped by now)
                    assert a.close_code is None, (a.close_code, a.close_reason)
                    assert "pipeline failed" not in p.log_text(), p.log_text()[-3000:]
                    await asyncio.to_thread(proxy.resume)
                    await eventually(
                        lambda: all(t in a.content for t in ("[lost]", "[sent]", "hi held")),
                        timeout=30, what="the read answered, the edits committed",
                    )  # fmt: skip
                    assert a.close_code is None, (a.close_code, a.close_reason)
                    assert "dropped after a failure" not in p.log_text()


async def _ghost_events_behind(store_url: str, p: ServerProcess, doc: str) -> Event:
    """Once `p` has logged and been answered for `doc`'s "hi" (seq 2: logged is not
    answered, and an answer held by a stall keeps a commit in flight), two events of a
    "ghost" process written straight into the store (not through a proxy): "[lost]",
    which no message brings, and "[sent]", returned, for _publish_as_ghost to bring
    after that gap, so that the room reads the log."""
    async with open_store(store_url) as store:
        await eventually(lambda: _is_at(store.head(doc), 2), what="hi")
        await eventually(
            lambda: _metric_is(p.http_url, "palimpsest_commit_waiting_edits", 0),
            what="hi answered",
        )
        [_lost, sent] = await store.append(
            [(doc, [NewEvent("ghost", "edit", foreign_update("[lost]"))]),
             (doc, [NewEvent("ghost", "edit", foreign_update("[sent]"))])]
        )  # fmt: skip
    return sent


async def _publish_as_ghost(fan: str, doc: str, event: Event) -> None:
    """`event` published on the fan-out `fan` as another process's message."""
    redis_url, prefix, _ = parse_url(fan)
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.publish(f"{prefix}:{doc}", encode("ghost-process", event))
    finally:
        await r.aclose()


async def _metric(url: str, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(url + "/metrics", timeout=10)).text
    [line] = [ln for ln in text.splitlines() if ln.split(" ")[0] == name]
    return float(line.split()[-1])


async def _metric_is(url: str, name: str, want: float) -> bool:
    return await _metric(url, name) == want


async def _healed(url: str) -> float:
    return await _metric(url, "palimpsest_fanout_healed_events_total")


async def test_events_a_room_reads_from_the_store_count_as_healed(tmp_path: Path) -> None:
    """Redis hangs: the other process's events reach a room through the read it makes
    before applying its own commit (it lacks the seqs in between), not through the
    fan-out's heal. palimpsest_fanout_healed_events_total did not move in a 20-s Redis
    hang although each process applied ~115 of the other's events that way."""
    with PrivateRedis() as redis:
        async with (
            fresh_schema() as store_url,
            # the gap check off: only the rooms' own reads can bring the events
            cluster(
                tmp_path, 2, store_url=store_url, fanout=fanout_url(redis.url, check=3600)
            ) as c,
        ):
            await eventually(lambda: redis.subscribers() == 2, what="subscribed")
            async with (
                connect(c.ws(0), "h", user="ann") as a,
                connect(c.ws(1), "h", user="bob") as b,
            ):
                await type_into(a, "one ")
                await eventually(lambda: b.content == "one ")
                assert await _healed(c.procs[1].http_url) == 0
                redis.pause()
                try:
                    await type_into(a, "abc")  # committed; its messages go nowhere
                    async with open_store(store_url) as store:
                        await eventually(lambda: _is_at(store.head("h"), 7), what="logged")
                    await type_into(b, "x")  # its commit lands past a's: the room reads them
                    await eventually(lambda: "abc" in b.content, what="b has a's edits")
                    assert await _healed(c.procs[1].http_url) == 3
                finally:
                    redis.resume()


async def _is_at(head: Awaitable[int], want: int) -> bool:
    return await head == want


async def test_failed_gap_checks_are_logged_at_most_every_10_s(tmp_path: Path) -> None:
    """PostgreSQL down: "fan-out gap check failed: PostgreSQL is unavailable (heads)"
    came at WARNING every check period (2 s) per process, while the commit errors of
    the same outage are said once per 10 s. Now the same: one line for a short outage,
    then one when the checks work again."""
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as store_url:
            via = store_url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
            async with cluster(tmp_path, 1, store_url=via, fanout=fanout_url(check=0.1)) as c:
                p = c.procs[0]
                async with connect(c.ws(0), "gc", user="ann") as a:  # a room to check
                    await type_into(a, "x")
                    await asyncio.to_thread(proxy.cut)

                    def failed() -> int:
                        return p.log_text().count("fan-out gap check failed")

                    await eventually(lambda: failed() == 1, what="a failed check said")
                    await asyncio.sleep(2)  # some 20 checks, all failing
                    await asyncio.to_thread(proxy.resume)
                    await eventually(
                        lambda: "gap check works again" in p.log_text(), timeout=20,
                        what="the end said",
                    )  # fmt: skip
                    assert failed() == 1, p.log_tail()
                    assert "(said at most every 10 s)" in p.log_text()
                    # the end at INFO: an alert on warnings fires on the trouble only
                    [back] = [ln for ln in p.log_text().splitlines() if "works again" in ln]
                    assert " INFO " in back and "WARNING" not in back, back


async def test_the_gap_check_never_brings_a_new_document_into_an_old_room(
    tmp_path: Path,
) -> None:
    """A deletion whose message never came, and a new document of the name already past
    the old room's seq: the gap check read the new document's events and applied them to
    the old room, which sent them to its clients before it learnt (from the tombstone)
    that it was stale. Now the check reads the generation after the events, and drops
    the room without applying any."""
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url(check=0.2)) as c,
    ):
        async with connect(c.ws(1), "ghost2", user="bob") as bob:
            await type_into(bob, "OLD")
            async with open_store(store_url) as store:

                async def logged() -> bool:
                    return await store.head("ghost2") == 3

                await eventually(logged, what="OLD logged")
                tomb = await tombstone_for(store, "ghost2")
                assert await store.delete_doc("ghost2", tomb)  # no message: nobody is told
                await store.append(
                    [("ghost2", [NewEvent("cy", "edit", foreign_update(f"n{i} "))])
                     for i in range(5)]
                )  # fmt: skip
            await eventually(lambda: bob.ws.close_code is not None, what="bob closed")
            assert bob.ws.close_code == 4404, (bob.ws.close_code, bob.ws.close_reason)
            assert bob.content == "OLD", bob.content


async def test_a_fanout_task_that_ignores_its_cancel_does_not_hold_up_the_shutdown(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server of a clean-clone CI run took over 15 s to stop after SIGTERM, its last
    line "going away": the fan-out's stop() waited on its tasks and on Redis's close
    with no bound. Now each wait is bounded (STOP_WITHIN), and what it left is said."""
    monkeypatch.setattr("palimpsest.fanout.STOP_WITHIN", 0.5)
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue  # ignores its cancel, as a task stuck in a library might

    async with fresh_schema() as url:
        settings = Settings(store=url, fanout=fanout_url(), port=free_port(), instance="stuck")
        task: asyncio.Task[None] | None = None
        try:
            async with run_server(settings) as srv:
                fanout = srv.backend.extension(Fanout)
                assert fanout is not None
                await eventually(lambda: fanout.connected, what="subscribed")
                task = asyncio.create_task(stubborn(), name="stuck-heal")
                fanout._heals.add(task)
            # the server stopped while the task still runs
            assert not task.done()
            said = [
                r.getMessage() for r in caplog.records if "without waiting for" in r.getMessage()
            ]
            assert said and "stuck-heal" in said[0], said
        finally:
            released.set()
            if task is not None:
                await task
