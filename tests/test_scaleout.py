"""Several `palimpsest serve` processes on the machine's PostgreSQL (a schema per test) and
Redis (a channel prefix per test): clients spread over them converge, a client survives its
process being killed, undo works from any process, snapshots are taken once."""

from __future__ import annotations

import asyncio
import contextlib
import string
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from conftest import PG_URL, eventually
from pycrdt import Map
from scaleout import cluster, fanout_url, fresh_schema, open_store
from serverproc import ServerProcess
from yclient import YClient, connect

from palimpsest.maintenance import verify_doc
from palimpsest.store.sqlite import SQLiteStore

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def type_into(c: YClient, text: str, pause: float = 0.0) -> None:
    for ch in text:
        c.insert(len(c.content), ch)
        await asyncio.sleep(pause)


async def test_clients_on_three_processes_converge(tmp_path: Path) -> None:
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 3, store_url=store_url, fanout=fanout_url()) as c,
    ):
        async with (
            connect(c.ws(0), "shared", user="ann") as a0,
            connect(c.ws(0), "shared", user="bob") as b0,
            connect(c.ws(1), "shared", user="cy") as a1,
            connect(c.ws(1), "shared", user="dee") as b1,
            connect(c.ws(2), "shared", user="eve") as a2,
            connect(c.ws(2), "shared", user="fay") as b2,
        ):
            clients = [a0, b0, a1, b1, a2, b2]
            # concurrent typing interleaves: each client types letters of its own, and
            # every client's letters must all be there, in the order it typed them
            letters = string.printable[:72]  # no whitespace, all distinct
            words = [letters[12 * i : 12 * i + 12] for i in range(6)]
            await asyncio.gather(
                *(type_into(cl, w, 0.002) for cl, w in zip(clients, words, strict=True))
            )

            def in_order(word: str, text: str) -> bool:
                return "".join(ch for ch in text if ch in word) == word

            def converged() -> bool:
                texts = {cl.content for cl in clients}
                if len(texts) != 1:
                    return False
                text = next(iter(texts))
                return len(text) == 72 and all(in_order(w, text) for w in words)

            await eventually(converged, timeout=15, what="six clients agree")
            total = sum(len(w) for w in words)
            async with open_store(store_url) as store:
                assert await store.head("shared") == total  # every keystroke logged once
                log = await store.read("shared")
                assert [e.seq for e in log] == list(range(1, total + 1))
                assert {e.actor for e in log} == {"ann", "bob", "cy", "dee", "eve", "fay"}


async def test_a_client_moves_after_its_process_is_killed(tmp_path: Path) -> None:
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
    ):
        async with connect(c.ws(1), "moving", user="watcher") as watcher:
            async with connect(c.ws(0), "moving", user="mover") as mover:
                await type_into(mover, "before the crash. ")
                await eventually(
                    lambda: watcher.content == "before the crash. ",
                    what="the other process saw the edits",
                )
                ydoc = mover.doc
                await c.procs[0].akill9()
                # the mover keeps typing while it has no server (offline edits)
                await type_into(mover, "typed offline. ")
            # reconnect to the surviving process with the same local document
            async with connect(c.ws(1), "moving", user="mover", ydoc=ydoc) as again:
                await type_into(again, "after the move.")
                want = "before the crash. typed offline. after the move."
                await eventually(lambda: again.content == want, what="mover's doc")
                await eventually(lambda: watcher.content == want, what="watcher sees all")
        async with open_store(store_url) as store:
            from palimpsest.snapshots import load

            loaded = await load(store, "moving")
            assert str(loaded.doc.get("content", type=__import__("pycrdt").Text)) == want


async def test_undo_and_history_work_on_whichever_process(tmp_path: Path) -> None:
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
    ):
        async with (
            connect(c.ws(0), "undo", user="ann") as ann0,
            connect(c.ws(1), "undo", user="bob") as bob1,
        ):
            await type_into(ann0, "ann wrote this.")
            await eventually(lambda: bob1.content == "ann wrote this.")
            await ann0.request({"type": "close_group"})
            await type_into(bob1, " bob too.")
            await eventually(lambda: ann0.content == "ann wrote this. bob too.")
            # ann's second tab lands on the other process and undoes there
            async with connect(c.ws(1), "undo", user="ann") as ann1:
                answer = await ann1.request({"type": "undo"})
                assert answer["ok"] is True, answer
                await eventually(lambda: ann0.content == " bob too.", what="undo everywhere")
                await eventually(lambda: bob1.content == " bob too.")
                answer = await ann0.request({"type": "redo"})  # and redo on the first one
                assert answer["ok"] is True, answer
                await eventually(lambda: ann1.content == "ann wrote this. bob too.")
                await eventually(lambda: bob1.content == "ann wrote this. bob too.")
            # history read on one process, restore made on the other
            async with httpx.AsyncClient() as http:
                r = await http.get(f"{c.procs[1].http_url}/api/docs/undo/versions/15?user=bob")
                assert r.status_code == 200 and "ann wrote this." in r.text, r.text
                r = await http.post(
                    f"{c.procs[0].http_url}/api/docs/undo/restore?user=cy", json={"seq": 15}
                )
                assert r.status_code == 200, r.text
            await eventually(lambda: bob1.content == "ann wrote this.", what="restore seen")
            await eventually(lambda: ann0.content == "ann wrote this.")
        async with open_store(store_url) as store:
            kinds = [e.kind for e in await store.read("undo")]
            assert kinds.count("undo") == 1 and kinds.count("redo") == 1
            assert kinds[-1] == "restore"


@contextlib.asynccontextmanager
async def holding_the_row(store_url: str, doc: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that holds `doc`'s row in the store (FOR UPDATE) until the block
    ends: every append to it waits in PostgreSQL meanwhile, each process's in the order
    it came, and the first commits first."""
    schema = parse_qs(urlsplit(store_url).query)["schema"][0]
    conn = await asyncpg.connect(PG_URL)
    try:
        async with conn.transaction():
            await conn.execute(f'SELECT 1 FROM "{schema}".docs WHERE name = $1 FOR UPDATE', doc)
            yield conn
    finally:
        await conn.close()


async def appends_waiting(conn: asyncpg.Connection, n: int) -> bool:
    """Whether `n` statements of the database wait for a lock (the held row's appends)."""
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    return int(waiting) >= n


@pytest.mark.parametrize("change", ["restore", "text"])
async def test_a_server_change_follows_the_head_it_was_made_on(tmp_path: Path, change: str) -> None:
    """A restore (a text written whole) made through one process while its user types
    through the other: the edit that process logs after the change's read of the log
    and before its append (held here on the document's row, so that it comes exactly
    there) used to come before the change in the log, unseen by it, and survived it:
    the version at the restore's seq still held it (a field test: "BASE TEXT. [a-35]").
    The change is made again on the log's head: its version is exactly what it wrote."""
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
        httpx.AsyncClient(timeout=30) as http,
    ):
        a, b = (p.http_url for p in c.procs)
        async with connect(c.ws(0), "race", user="ann") as ann:
            ann.insert(0, "BASE TEXT.")

            async def text_at(base: str, version: str) -> str | None:
                r = await http.get(f"{base}/api/docs/race/versions/{version}?user=cy")
                return r.json()["roots"]["content"]["value"] if r.status_code == 200 else None

            await eventually(lambda: _is(text_at(b, "head"), "BASE TEXT."), what="logged")
            ann.insert(len(ann.content), " [one]")  # (seq 2: what the restore takes out)
            await eventually(lambda: _is(text_at(b, "head"), "BASE TEXT. [one]"))
            async with holding_the_row(store_url, "race") as held:
                ann.insert(len(ann.content), " [typed]")  # p0's append waits
                await eventually(lambda: appends_waiting(held, 1), what="ann's edit held")
                if change == "restore":
                    call = http.post(f"{b}/api/docs/race/restore?user=cy", json={"seq": 1})
                    want = "BASE TEXT."
                else:
                    call = http.put(f"{b}/api/docs/race/text?user=cy", json={"text": "NEW."})
                    want = "NEW."
                answer = asyncio.ensure_future(call)
                # p1's change read the log (ann's edit not committed) and waits to append
                await eventually(lambda: appends_waiting(held, 2), what="the change held")
            r = await answer
            assert r.status_code == 200, r.text
            seq = r.json()["seq"]
            got = await text_at(a, str(seq))
            assert got == want, (seq, got, c.logs())
            await eventually(lambda: ann.content == want, what=f"ann has {ann.content!r}")
        async with open_store(store_url) as store:
            kinds = [(e.seq, e.actor, e.kind) for e in await store.read("race")]
            assert kinds[-2:] == [(seq - 1, "ann", "edit"), (seq, "cy", kinds[-1][2])], kinds


async def _is(value: Awaitable[object], want: object) -> bool:
    return await value == want


async def undo_and_redo_at_once(procs: list[ServerProcess], doc: str) -> None:
    """ann on one process and bob on the other each add a shape, then undo at the same
    moment, each on his own process, and redo: every shape must be back everywhere."""
    async with (
        connect(procs[0].ws_url, doc, user="ann") as ann,
        connect(procs[1].ws_url, doc, user="bob") as bob,
        httpx.AsyncClient() as http,
    ):
        boards = [cl.doc.get("records", type=Map) for cl in (ann, bob)]
        want: dict[str, object] = {}

        def agree() -> bool:
            return [b.to_py() or {} for b in boards] == [want, want]

        async def both(action: str) -> None:
            answers = await asyncio.gather(
                http.post(f"{procs[0].http_url}/api/docs/{doc}/{action}?user=ann"),
                http.post(f"{procs[1].http_url}/api/docs/{doc}/{action}?user=bob"),
            )
            assert all(r.status_code == 200 and r.json()["ok"] for r in answers), [
                r.text for r in answers
            ]

        for k in range(5):
            boards[0][f"a{k}"] = Map({"x": k})
            boards[1][f"b{k}"] = Map({"x": k})
            want.update({f"a{k}": {"x": k}, f"b{k}": {"x": k}})
            await eventually(agree, what=f"round {k}'s shapes")
            await both("undo")
            await both("redo")
        await eventually(agree, what="every shape back after the undos and redos")
        for p in procs:
            r = await http.get(f"{p.http_url}/api/docs/{doc}/versions/head?user=cy")
            assert r.json()["roots"]["records"]["value"] == want, r.text
        assert ann.close_code is None and bob.close_code is None


async def test_undo_and_redo_at_once_on_two_processes_lose_nothing(tmp_path: Path) -> None:
    """Server-made changes all carry the document's one server Yjs client id: two processes
    undoing at the same moment both wrote the items that continue its clock, one of the
    two applied nowhere, and shapes were silently lost (reported: bob's five shapes
    gone from every copy, events that do not apply, clients closed with 4400 / 4403)."""
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
    ):
        await undo_and_redo_at_once(c.procs, "board")
        async with open_store(store_url) as store:
            assert await verify_doc(store, "board") == []


async def test_undo_and_redo_at_once_on_one_sqlite_file(tmp_path: Path) -> None:
    """The same with two processes serving one SQLite file on one bus."""
    db, bus = tmp_path / "shared.db", fanout_url()
    procs = [
        ServerProcess(tmp_path / f"p{i}", db_path=db, extra_args=["--fanout", bus])
        for i in range(2)
    ]
    try:
        await asyncio.gather(*(p.astart() for p in procs))
        await undo_and_redo_at_once(procs, "board")
    finally:
        for p in procs:
            await asyncio.to_thread(p.stop)
    async with SQLiteStore(db) as store:
        assert await verify_doc(store, "board") == []


async def test_snapshots_are_taken_by_one_process_at_a_time(tmp_path: Path) -> None:
    async with (
        fresh_schema() as store_url,
        cluster(
            tmp_path,
            2,
            store_url=store_url,
            fanout=fanout_url(),
            extra=["--snapshot-every", "20"],
            # every snapshot written stays (retention would keep the newest 3 of these)
            env={"PALIMPSEST_SNAPSHOT_KEEP_RECENT": "1000"},
        ) as c,
    ):
        async with (
            connect(c.ws(0), "snap", user="ann") as a,
            connect(c.ws(1), "snap", user="bob") as b,
        ):
            await asyncio.gather(type_into(a, "a" * 100, 0.003), type_into(b, "b" * 100, 0.003))
            await eventually(lambda: a.content == b.content and len(a.content) == 200)
            async with open_store(store_url) as store:

                async def enough() -> bool:
                    snaps = await store.snapshots("snap")
                    return len(snaps) >= 4

                await eventually(enough, what="snapshots written")
                snaps = await store.snapshots("snap")
                assert all(s.valid for s in snaps)
                seqs = [s.seq for s in snaps]
                gaps = [b - a for a, b in zip(seqs, seqs[1:], strict=False)]
                # both processes count all 200 events; without coordination each would
                # write one every 20, i.e. pairs a few seqs apart
                assert all(g >= 10 for g in gaps), seqs
                assert len(snaps) <= 200 // 10, seqs


async def test_presence_crosses_processes(tmp_path: Path) -> None:
    from palimpsest import protocol as P

    def states(c: YClient) -> dict[int, str]:
        seen: dict[int, str] = {}
        for f in c.frames:
            if isinstance(f, P.AwarenessUpdate):
                for client, _clock, state in P.decode_awareness(f.payload):
                    seen[client] = state
        return seen

    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
    ):
        async with connect(c.ws(1), "presence", user="bob") as bob:
            async with connect(c.ws(0), "presence", user="ann") as ann:
                entry = P.encode_awareness_entries([(4242, 1, '{"user":{"name":"ann"}}')])
                await ann.send_raw(P.encode_awareness(entry))
                await eventually(
                    lambda: states(bob).get(4242) == '{"user":{"name":"ann"}}',
                    what="ann's cursor on the other process",
                )
                # a newcomer on the other process gets it with the known states
                async with connect(c.ws(1), "presence", user="cy") as cy:
                    await eventually(lambda: 4242 in states(cy), what="known presence on join")
            # ann leaves: her state is withdrawn on the other process too
            await eventually(lambda: states(bob).get(4242) == "null", what="ann's cursor gone")


async def test_presence_expires_on_every_process_once(tmp_path: Path) -> None:
    """A state not renewed within the timeout is removed on every process, once: its
    own process removes it and publishes that, the other removes its relayed copy
    itself, and whichever comes second changes nothing. A renewal brings it back. When
    its process dies (nothing is published any more), the others still drop it."""
    from palimpsest import protocol as P

    def seen(c: YClient) -> list[tuple[int, str]]:
        return [
            (clock, state)
            for f in c.frames
            if isinstance(f, P.AwarenessUpdate)
            for client, clock, state in P.decode_awareness(f.payload)
            if client == 4242
        ]

    def aw(clock: int) -> bytes:
        return P.encode_awareness(P.encode_awareness_entries([(4242, clock, ann)]))

    ann = '{"user":{"name":"ann"}}'
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 0, store_url=store_url, fanout=fanout_url()) as c,
    ):
        # processes 0 and 1 expire presence after 1 s; 2 (which dies) would keep it a minute
        for timeout in ("1", "1", "60"):
            c.env = {"PALIMPSEST_AWARENESS_TIMEOUT_SECONDS": timeout}
            c.add()
        await asyncio.gather(*(p.astart() for p in c.procs))
        async with connect(c.ws(1), "expiring", user="bob") as bob:
            async with connect(c.ws(0), "expiring", user="ann") as silent:
                await silent.send_raw(aw(1))
                await eventually(lambda: seen(bob) == [(1, ann)], what="ann's state there")
                await eventually(lambda: len(seen(bob)) > 1, what="ann's state removed")
                async with connect(c.ws(1), "expiring", user="cy") as cy:
                    assert seen(cy) == []  # (the known presence comes before the step 2)
                    await silent.send_raw(aw(2))
                    await eventually(lambda: seen(cy) == [(2, ann)], what="back for cy")
                    await eventually(lambda: seen(bob)[-1:] == [(2, ann)], what="back for bob")
                assert seen(bob) == [(1, ann), (1, "null"), (2, ann)]

        async with connect(c.ws(1), "orphaned", user="bob") as bob:
            async with connect(c.ws(2), "orphaned", user="ann") as dying:
                await dying.send_raw(aw(1))
                await eventually(lambda: seen(bob) == [(1, ann)], what="ann's state there")
                await c.procs[2].akill9()
            # the state ann's dead process relayed goes too, by process 1's own timeout
            await eventually(lambda: seen(bob) == [(1, ann), (1, "null")], what="removed")
            async with connect(c.ws(1), "orphaned", user="dee") as dee:
                assert seen(dee) == []


def test_fanout_messages_round_trip() -> None:
    from palimpsest.fanout import decode, decode_message, encode, encode_awareness, parse_url
    from palimpsest.store.base import Event

    events = [
        Event("d", 7, 1000, "ann", "edit", b"\x01\n\x02", {"conn": "x"}),
        Event("d", 8, 1001, "bob", "undo", b"", {"reverts": [3]}),
        Event("d", 9, 1002, "é", "edit", bytes(range(256)), {}),
    ]
    assert decode("d", encode("p1", events)) == ("p1", events)
    assert decode_message("d", encode("p1", events, "dep", 42)) == ("p1", events, 42)
    assert decode_message("d", encode("p1", events)) == ("p1", events, None)
    assert decode("d", encode_awareness("p2", b"\x01\x02\n")) == ("p2", b"\x01\x02\n")
    assert decode_message("d", encode_awareness("p2", b"\x01\n", "dep", 7)) == ("p2", b"\x01\n", 7)
    assert decode_message("d", encode_awareness("p2", b"\x01\n")) == ("p2", b"\x01\n", None)
    assert parse_url("redis://h:1/3?prefix=ab&check=0.25") == ("redis://h:1/3", "ab", 0.25)
    assert parse_url("redis://h:1/0")[1:] == ("palimpsest", 2.0)
    with pytest.raises(ValueError):
        parse_url("redis://h/0?prefix=a*")


# an embedding app whose on_load hook seeds an empty document, slowly (an outside source):
# two processes loading one new document at once both seed it
SEEDING_APP = """
import asyncio
import sys

import uvicorn
from pycrdt import Text

from palimpsest import Extension, Palimpsest, Settings


class Seed(Extension):
    async def on_load(self, room):
        text = room.doc.get("content", type=Text)
        if room.seq == 0 and len(text) == 0:
            await asyncio.sleep(0.3)
            text += "the contract's first draft"


collab = Palimpsest(store=sys.argv[1], extensions=[Seed()],
                    settings=Settings(fanout=sys.argv[2]))
uvicorn.run(collab, host="127.0.0.1", port=int(sys.argv[3]), log_level="info")
"""


class AppProcess(ServerProcess):
    """A Python app file run as the server, its arguments the store, the bus and the port."""

    def __init__(self, workdir: Path, app: Path, store_url: str, bus: str) -> None:
        super().__init__(workdir)
        self.app, self.store_url, self.bus = app, store_url, bus

    def command(self) -> list[str]:
        return [sys.executable, str(self.app), self.store_url, self.bus, str(self.port)]


async def test_two_processes_seeding_one_new_document_at_once(tmp_path: Path) -> None:
    """Reported: the process whose seed came second failed the load ("another process
    made a server change (event 1, seed) while this one seeded the document"), its
    client was closed 1013 "the store is unavailable, try again" and its next handshakes
    refused 503 for some 3 s. That process loads the document again itself, the other's
    seed in it: both clients sync at once, the seed once, nothing closed."""
    app = tmp_path / "app.py"
    app.write_text(SEEDING_APP)
    async with fresh_schema() as store_url:
        bus = fanout_url()
        procs = [AppProcess(tmp_path / f"p{i}", app, store_url, bus) for i in range(2)]
        try:
            await asyncio.gather(*(p.astart() for p in procs))
            async with contextlib.AsyncExitStack() as stack:
                clients = await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            stack.enter_async_context(
                                connect(p.ws_url, "contract-3", user=who, wait_sync=False)
                            )
                            for p, who in zip(procs, ("alice", "bob"), strict=True)
                        )
                    ),
                    5,
                )
                synced = [asyncio.create_task(cl.synced.wait()) for cl in clients]
                await asyncio.wait(synced, timeout=3)
                assert all(cl.synced.is_set() for cl in clients), [
                    (cl.close_code, cl.close_reason) for cl in clients
                ]
                await eventually(
                    lambda: all(cl.content == "the contract's first draft" for cl in clients),
                    timeout=3, what="the seed, once, on both clients",
                )  # fmt: skip
                await asyncio.sleep(0.3)
                assert [cl.close_code for cl in clients] == [None, None]
            async with open_store(store_url) as store:
                assert [(e.actor, e.kind) for e in await store.read("contract-3")] == [
                    ("server", "seed")
                ]
            logs = "".join(p.log_text() for p in procs)
            assert "cannot load" not in logs and "unavailable" not in logs, logs
            assert "loading contract-3 again" in logs, logs
        finally:
            for p in procs:
                await asyncio.to_thread(p.stop)
