"""A store that refuses writes for a while (issue 19, faults 2 and 3), with real parts: a
real SQLite file whose database may grow no further (SQLITE_FULL, "database or disk is
full", exactly as on a full disk), unmodified y-websocket clients under Node.js typing
through it, /readyz asked over HTTP.

What must hold: the clients keep their connections (at most a few reconnects, not the
~9 a second a close-on-every-failed-commit server caused), nothing typed is lost, the log
names the real cause and never "cannot rollback", and /readyz is 503 while commits are
refused and 200 once they are taken again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually, free_port, run_server
from pycrdt import Doc, Text
from test_interop_node import NodeClient, node_modules  # noqa: F401 - the fixture
from yclient import connect

from palimpsest import client
from palimpsest.errors import StoreUnavailable
from palimpsest.settings import Settings
from palimpsest.store.sqlite import SQLiteStore

#: how long the store refuses writes (the figure of issue 19's fault injection)
OUTAGE_S = 15.0
CLIENTS = 3


class InProcessServer:
    """What NodeClient needs of a server, for one run in this process."""

    def __init__(self, ws_url: str, log_path: Path) -> None:
        self.ws_url = ws_url
        self.log_path = log_path

    def log_tail(self, lines: int = 30) -> str:
        return "(in-process server: its lines are in the test's captured log)"


async def _refuse_growth(store: SQLiteStore, refuse: bool) -> None:
    """max_page_count is a setting of the connection, so it is set on the store's own."""
    if refuse:
        pages = await store.on_writer(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store.on_writer(lambda c: c.execute(f"PRAGMA max_page_count = {int(pages)}"))
    else:
        await store.on_writer(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_a_full_disk_for_15_s_holds_editors_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="palimpsest")
    settings = Settings(db=str(tmp_path / "outage.db"), port=free_port())
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        store = srv.backend.store
        assert isinstance(store, SQLiteStore)
        fake = InProcessServer(srv.ws_url, tmp_path / "server.log")
        clients: list[NodeClient] = []
        try:
            for i in range(CLIENTS):
                c = NodeClient(fake, "outage", f"u{i}", tmp_path / f"node-{i}.log")  # type: ignore[arg-type]
                clients.append(await c.start())
                await c.connect()
            before = [f"<{i}:before>" for i in range(CLIENTS)]
            for c, text in zip(clients, before, strict=True):
                await c.call("insert", text=text)
            for c in clients:
                await c.wait_text(containsAll=before)
            assert (await http.get("/readyz")).status_code == 200

            await _refuse_growth(store, True)
            # each client types one character every 100 ms for longer than the outage
            during = [f"[{i}:" + "abcdefghij" * 18 + "]" for i in range(CLIENTS)]
            typing = [
                asyncio.create_task(c.call("type", text=t, delayMs=100, timeout=60_000))
                for c, t in zip(clients, during, strict=True)
            ]
            committer = srv.backend.committer
            await eventually(lambda: committer.refusing is not None and committer.held,
                             timeout=30, what="the store refusing commits")  # fmt: skip
            refused_at = asyncio.get_running_loop().time()

            r = await http.get("/readyz")
            assert r.status_code == 503, r.text
            assert "database or disk is full" in r.json()["commits"], r.text
            # how much waits: the events held, and every edit queued behind them (it
            # said "1 appends held" while hundreds of edits waited)
            m = re.search(r"of (\d+) events held.* (\d+) bytes of edits waiting in 1 document$",
                          r.json()["commits"])  # fmt: skip
            assert m is not None and int(m[1]) >= 1 and int(m[2]) > 0, r.text
            assert (await http.get("/healthz")).status_code == 200
            # readers keep working: a newcomer loads the document (what was committed)
            rd = NodeClient(fake, "outage", "reader", tmp_path / "reader.log")  # type: ignore[arg-type]
            clients.append(await rd.start())
            await rd.connect()
            seen = await rd.text()
            assert all(t in seen for t in before), seen
            # a Python client's flush says why it waits (it said the server did not
            # answer a sync step 1)
            async with client.connect(srv.ws_url, "outage-py", user="py") as py:
                py.text().insert(0, "held")
                with pytest.raises(client.Timeout, match="store refuses writes"):
                    await py.flush(timeout=1)

            await asyncio.sleep(max(0.0, refused_at + OUTAGE_S - asyncio.get_running_loop().time()))
            await _refuse_growth(store, False)
            await asyncio.gather(*typing)

            # typed concurrently at the end, the runs interleave: compare the characters
            want = "".join(before + during)
            texts = [await c.wait_text(length=len(want), timeout=30_000) for c in clients[:CLIENTS]]
            assert len(set(texts)) == 1, texts
            assert sorted(texts[0]) == sorted(want)

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready, timeout=15, what="/readyz 200 once the store takes writes")
            closes = []
            for c in clients:
                frames: list[dict[str, Any]] = (await c.call("frames"))["frames"]
                closes.append([f for f in frames if f["dir"] == "close"])
        finally:
            for c in clients:
                await c.aclose()
        # the log holds every keystroke: its fold is what the clients show
        events = await store.read("outage")
    fold: Doc[Any] = Doc()
    fold["content"] = Text()
    for ev in events:
        fold.apply_update(ev.update)
    assert str(fold["content"]) == texts[0]
    # at most a few reconnects per client over the whole outage (none expected)
    assert all(len(cl) <= 2 for cl in closes), closes
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "database or disk is full" in text
    assert "takes commits again" in text
    assert "cannot rollback" not in text


async def test_readyz_is_503_while_the_database_is_read_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody editing: readiness itself tries a write (SQLite's query_only makes the
    store's connection refuse every write, SQLITE_READONLY, like a read-only file)."""
    caplog.set_level(logging.INFO, logger="palimpsest")
    settings = Settings(db=str(tmp_path / "ro.db"), port=free_port())
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        store = srv.backend.store
        assert isinstance(store, SQLiteStore)
        assert (await http.get("/readyz")).status_code == 200
        await store.on_writer(lambda c: c.execute("PRAGMA query_only = 1"))
        r = await http.get("/readyz")
        assert r.status_code == 503, r.text
        assert "readonly" in r.json()["commits"], r.text
        # an edit meanwhile is held, not lost, and its sender stays connected
        async with connect(srv.ws_url, "ro", user="ann") as c:
            c.insert(0, "kept")
            committer = srv.backend.committer
            await eventually(lambda: committer.held, what="the edit held")
            assert await store.head("ro") == 0
            await store.on_writer(lambda c: c.execute("PRAGMA query_only = 0"))
            await eventually(lambda: store.head("ro"), what="committed once writable")
            assert c.close_code is None
        assert (await http.get("/readyz")).status_code == 200
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "attempt to write a readonly database" in text
    assert "cannot rollback" not in text


async def test_edits_held_for_a_sender_who_left_survive_the_idle_unload(tmp_path: Path) -> None:
    """A client types while the store refuses writes, then closes its tab. The room's
    idle unload (0.3 s here) used to stop it, which gave the held edits up: the first
    part of the text was logged and the rest was gone, with no line saying so. An undo
    over HTTP, held the same way in a room nobody is connected to, failed likewise."""
    settings = Settings(
        db=str(tmp_path / "left.db"), port=free_port(), unload_after_seconds=0.3,
        undo_capture_ms=0,
    )  # fmt: skip
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        store = srv.backend.store
        assert isinstance(store, SQLiteStore)
        async with connect(srv.ws_url, "left", user="ann") as c:
            c.insert(0, "logged ")
            await eventually(lambda: store.head("left"), what="the first edit")
            await store.on_writer(lambda c: c.execute("PRAGMA query_only = 1"))
            c.insert(7, "held")
            await eventually(lambda: srv.backend.committer.held, what="the edit held")
        await asyncio.sleep(1.5)  # five unload periods with the sender gone
        room = srv.backend.rooms.get_loaded("left")
        assert room is not None, "unloaded with an edit held"
        undo = asyncio.create_task(http.post("/api/docs/left/undo", params={"user": "ann"}))
        await asyncio.sleep(1.0)  # held too, in a room nobody is connected to
        await store.on_writer(lambda c: c.execute("PRAGMA query_only = 0"))
        r = await undo
        assert r.status_code == 200 and r.json()["ok"], r.text
        await eventually(lambda: srv.backend.rooms.get_loaded("left") is None, what="unloaded")
    async with run_server(settings) as srv:
        async with connect(srv.ws_url, "left", user="bob") as b:
            assert b.content == "logged ", b.content  # "held" logged, then undone
        events = await srv.backend.store.read("left")
        assert [e.kind for e in events] == ["edit", "edit", "undo"]


class FlakyReads(SQLiteStore):
    """A real SQLite store whose next `fail` reads raise as an unreachable store's do."""

    fail = 0
    #: while not set, reads wait for it (a store that does not answer); `held` counts them
    hold: asyncio.Event | None = None
    held = 0

    async def read(
        self, doc: str, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> Any:  # noqa: E501
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("the store cannot be reached (read)")
        if self.hold is not None and not self.hold.is_set():
            self.held += 1
            await self.hold.wait()
        return await super().read(doc, after, upto, limit)


async def test_a_failed_read_after_a_commit_is_waited_out_not_a_reload(tmp_path: Path) -> None:
    """A room behind the log (another process committed in between) reads what it
    missed after its own commit. A read refused for a moment there dropped the room
    and closed every client with 1013 ("the document is being reloaded"), though the
    commit was durable: it is now waited out, as a refused write is."""
    from palimpsest.backend import Backend
    from palimpsest.store.base import NewEvent

    settings = Settings(db=str(tmp_path / "flaky.db"), port=free_port())
    store = FlakyReads(tmp_path / "flaky.db")
    async with run_server(settings, Backend(settings, store=store)) as srv:
        async with connect(srv.ws_url, "flaky", user="ann") as a:
            a.insert(0, "a")
            await eventually(lambda: srv.backend.rooms.get_loaded("flaky").seq == 1)  # type: ignore[union-attr]
            # another process's edit, which this room has not seen
            other: Doc[Any] = Doc()
            other.apply_update(a.doc.get_update())
            ups: list[bytes] = []
            other.observe(lambda e: ups.append(e.update))
            other.get("content", type=Text).insert(1, "X")
            await store.append([("flaky", [NewEvent("bob", "edit", ups[0], {})])])
            store.fail = 3
            a.insert(0, "b")
            await eventually(lambda: a.content == "baX", what="a sees bob's edit and its own")
            room = srv.backend.rooms.get_loaded("flaky")
            assert room is not None and room.seq == 3 and room.broken is None
            assert a.close_code is None, (a.close_code, a.close_reason)
            assert store.fail == 0


async def test_what_a_room_waits_behind_after_its_commit_is_said_in_words(
    tmp_path: Path,
) -> None:
    """The committer's watch says what a room's waiting edits wait behind (`… those of
    DOC wait behind …`). A room whose commit came just after another process's event
    waits for that event (the fan-out or a read of the log, whichever comes first):
    that was said by the innermost coroutine's name, "wait behind _wait" (a field test's
    line), which no operator can read."""
    from palimpsest.backend import Backend
    from palimpsest.store.base import NewEvent

    settings = Settings(db=str(tmp_path / "held.db"), port=free_port())
    store = FlakyReads(tmp_path / "held.db")
    async with run_server(settings, Backend(settings, store=store)) as srv:
        async with connect(srv.ws_url, "held", user="ann") as a:
            a.insert(0, "a")
            await eventually(lambda: srv.backend.rooms.get_loaded("held").seq == 1)  # type: ignore[union-attr]
            other: Doc[Any] = Doc()
            other.apply_update(a.doc.get_update())
            ups: list[bytes] = []
            other.observe(lambda e: ups.append(e.update))
            other.get("content", type=Text).insert(1, "X")
            await store.append([("held", [NewEvent("bob", "edit", ups[0], {})])])
            store.hold = hold = asyncio.Event()
            try:
                a.insert(0, "b")
                await eventually(lambda: store.held > 0, what="the read after the commit held")
                room = srv.backend.rooms.get_loaded("held")
                assert room is not None
                words = room.awaiting()
                assert not re.search(r"(^|\s)_\w+", words), words
                assert "another process" in words and "fan-out" in words, words
            finally:
                hold.set()
            await eventually(lambda: a.content == "baX", what="the read answered")


async def test_edits_given_up_at_shutdown_whose_senders_left_are_logged_as_not_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store refuses writes for good, the typist has left, the server stops: the
    room gives its held edits up. The log said the senders would re-send them, though
    nobody was left to; then an ERROR that they "are lost", though the clients still
    hold them and resend them on reconnecting (to another process behind the same
    balancer, as a field test saw: nothing was lost). It now says, as a WARNING, what
    is known: how many bytes, whose, not stored here, resent by a client that comes
    back, lost only if it never does."""
    caplog.set_level(logging.INFO, logger="palimpsest")
    settings = Settings(db=str(tmp_path / "gone.db"), port=free_port())
    async with run_server(settings) as srv:
        store = srv.backend.store
        assert isinstance(store, SQLiteStore)
        await store.on_writer(lambda c: c.execute("PRAGMA query_only = 1"))
        async with connect(srv.ws_url, "gone", user="ann") as c:
            c.insert(0, "never logged")
            await eventually(lambda: srv.backend.committer.held, what="the edit held")
    said = [r for r in caplog.records if "bytes of edits by ann" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records][-20:]
    text = said[0].getMessage()
    assert said[0].levelno == logging.WARNING, text
    assert "are not stored here: the store refused them" in text, text
    assert "resends them" in text and "lost only if" in text, text
    assert "are lost:" not in text, text
    assert getattr(said[0], "doc", None) == "gone", text


def _scrape(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if not s.labels
    }


async def test_metrics_say_how_much_waits_for_a_store_that_refuses_commits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/readyz said "202400 bytes of edits waiting in 2 documents" while /metrics had
    palimpsest_commit_pending_events 2 (the batches held in the committer; the edits
    queued behind them in their rooms counted nowhere) and no metric said that commits
    were refused. The refusal's log line counted the held batches too ("holding 3
    events" with thousands waiting)."""
    caplog.set_level(logging.INFO, logger="palimpsest")
    settings = Settings(db=str(tmp_path / "waits.db"), port=free_port())
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        store = srv.backend.store
        assert isinstance(store, SQLiteStore)
        async with connect(srv.ws_url, "waits", user="ann") as a:
            a.insert(0, "logged ")
            await eventually(lambda: store.head("waits"), what="the first edit")
            m = _scrape((await http.get("/metrics")).text)
            assert m["palimpsest_commit_stalled"] == 0 and m["palimpsest_commit_waiting_edits"] == 0
            # no counter recorded an outage: the commit attempts that failed, from 0
            assert m["palimpsest_commit_failures_total"] == 0, m
            await store.on_writer(lambda c: c.execute("PRAGMA query_only = 1"))
            a.insert(len(a.content), "x")
            await eventually(lambda: srv.backend.committer.held, what="the first edit held")
            for _ in range(40):  # queued in the room behind the held one
                a.insert(len(a.content), "y")
                await asyncio.sleep(0.005)

            async def all_waiting() -> bool:
                got = _scrape((await http.get("/metrics")).text)
                return got["palimpsest_commit_waiting_edits"] == 41

            await eventually(all_waiting, what="every edit typed counted as waiting")
            m = _scrape((await http.get("/metrics")).text)
            assert m["palimpsest_commit_stalled"] == 1
            assert m["palimpsest_commit_failures_total"] >= 1, m
            assert m["palimpsest_commit_waiting_bytes"] > 41
            assert m["palimpsest_commit_pending_events"] < 41  # what the committer holds
            before = m["palimpsest_commit_since_success_seconds"]
            r = await http.get("/readyz")
            assert f"{int(m['palimpsest_commit_waiting_bytes'])} bytes of edits waiting" in r.text

            async def ages() -> bool:
                got = _scrape((await http.get("/metrics")).text)
                return got["palimpsest_commit_since_success_seconds"] > before

            await eventually(ages, what="seconds since the last commit growing")
            await store.on_writer(lambda c: c.execute("PRAGMA query_only = 0"))
            await eventually(lambda: a.content == "logged x" + "y" * 40, what="all committed")

            async def clear() -> bool:
                got = _scrape((await http.get("/metrics")).text)
                return (
                    got["palimpsest_commit_stalled"] == 0
                    and not got["palimpsest_commit_waiting_edits"]
                )

            await eventually(clear, what="nothing waits once the store takes commits")
            failed = _scrape((await http.get("/metrics")).text)["palimpsest_commit_failures_total"]
            head = await store.head("waits")

            async def logged() -> bool:
                return await store.head("waits") > head

            a.insert(0, "z")
            await eventually(logged, what="one more edit committed")
            await asyncio.sleep(0.2)  # (a commit that failed would be counted by now)
            m = _scrape((await http.get("/metrics")).text)
            assert m["palimpsest_commit_failures_total"] == failed, (m, failed)
    refused = [r.getMessage() for r in caplog.records if "refuses commits" in r.getMessage()]
    assert refused and re.search(
        r"holding 1 events of 1 appends, retrying with back-off; \d+ edits \(\d+ bytes\) of "
        r"1 document wait for the store in all",
        refused[0],
    ), refused


async def test_every_refusal_reason_the_docs_list_is_served_from_the_start_at_0(
    tmp_path: Path,
) -> None:
    """palimpsest_disconnects_total served each cause at 0 from the start;
    palimpsest_refused_total had a series only once a refusal of its reason happened,
    so rate() and increase() missed the first outage (store_unavailable) and an alert
    on it had nothing to compare with. Every reason docs/operations.md lists is served
    at 0 by a server that refused nothing."""
    from prometheus_client.parser import text_string_to_metric_families

    doc = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `palimpsest_refused_total"))
    listed = set(re.findall(r"`([a-z_]+)`", row.split("|")[3]))
    assert {"store_unavailable", "auth_error", "repeated_refusal"} <= listed, listed
    async with run_server(Settings(db=str(tmp_path / "r.db"), port=free_port())) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            text = (await http.get("/metrics")).text
    served = {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "palimpsest_refused_total"
    }
    assert listed <= set(served), listed - set(served)
    assert all(served[r] == 0 for r in listed), served
