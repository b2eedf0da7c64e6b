"""An explicit undo group (open_group ... close_group): a bot's streamed answer is ONE
undo step whatever its pauses (past UNDO_CAPTURE_MS), its length (past UNDO_MAX_GROUP
events), a reconnection or a server restart; humans' words typed inside it stay, as
they do for any selective undo. Real server, real Python clients."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, run_server
from pycrdt import Assoc
from pycrdt import Text as YText

from palimpsest import client
from palimpsest.settings import Settings
from palimpsest.store.sqlite import SQLiteStore

INTRO, OUTRO = "Intro by alice. [AI]", "[/AI] Outro."


def tight(db: Path, port: int | None = None, **kw: Any) -> Settings:
    """Settings whose implicit steps are small: a pause of 0.3 s or 10 events split them."""
    return Settings(
        db=str(db), port=port or free_port(), undo_capture_ms=50, undo_max_group=10, **kw
    )


class Bot:
    """Streams tokens after [AI], each one logged as its own event (flushed)."""

    def __init__(self, session: client.Session) -> None:
        self.s = session
        self.t = session.doc.get("content", type=YText)
        self.sticky: Any = None
        self.sent = ""

    async def token(self, tok: str) -> None:
        t = self.t
        cur = self.sticky.get_index() if self.sticky else str(t).index("[AI]") + 4
        t.insert(cur, tok)
        self.sticky = t.sticky_index(cur + len(tok), Assoc.BEFORE)
        self.sent += tok
        await self.s.flush()

    def offline(self, tok: str) -> None:
        cur = self.sticky.get_index()
        self.t.insert(cur, tok)
        self.sticky = self.t.sticky_index(cur + len(tok), Assoc.BEFORE)
        self.sent += tok


async def human_word(alice: client.Session, word: str, after: str) -> None:
    """alice types `word` right after the bot's text `after` (inside the answer)."""
    await alice.wait_for(lambda: after in str(alice.text()))
    text = alice.text()
    text.insert(str(text).index(after) + len(after), word)
    await alice.flush()


async def setup(url: str, doc: str) -> client.Session:
    alice = await client.connect(url, doc, user="alice", max_backoff=0.2).open()
    alice.text().insert(0, INTRO + OUTRO)
    await alice.flush()
    return alice


def without(text: str, *parts: str) -> str:
    for p in parts:
        text = text.replace(p, "", 1)
    return text


async def test_a_streamed_answer_with_a_pause_and_past_the_event_cap_is_one_undo(
    tmp_path: Path,
) -> None:
    async with run_server(tight(tmp_path / "p.db")) as srv:
        alice = await setup(srv.ws_url, "cw")
        try:
            async with client.connect(srv.ws_url, "cw", user="bot") as s:
                bot = Bot(s)
                await s.wait_for(lambda: "[AI]" in str(s.text()))
                async with s.undo_group() as opened:
                    assert opened.ok and opened.group
                    for i in range(30):  # 30 events: three times UNDO_MAX_GROUP
                        await bot.token(f"tok{i:02d} ")
                        if i == 12:
                            await asyncio.sleep(0.3)  # six times UNDO_CAPTURE_MS
                        if i in (5, 20):
                            await human_word(alice, f"ALICE{i} ", f"tok{i:02d} ")
                closed = await s.close_group(group=opened.group)  # closed already
                assert closed.ok and closed.seq is None and closed.steps == 1, closed
                await alice.wait_for(lambda: "tok29" in str(alice.text()))
                full = str(alice.text())
                assert "ALICE5 " in full and "ALICE20 " in full

                undone = await s.undo()
                assert undone.ok, undone
                want = re.sub(r"tok\d\d ", "", full)  # (the bot writes on after her words)
                assert sorted(want[len(INTRO) : -len(OUTRO)].split()) == ["ALICE20", "ALICE5"]
                await alice.wait_for(lambda: str(alice.text()) == want)
                assert not (await s.undo()).ok  # the whole answer was one step
                assert (await s.redo()).ok
                await alice.wait_for(lambda: str(alice.text()) == full)
                # alice's own undo takes her last word only
                assert (await alice.undo()).ok
                await alice.wait_for(lambda: str(alice.text()) == without(full, "ALICE20 "))
        finally:
            await alice.close()
        async with client.History(srv.url, user="bot") as h:
            bots = [e async for e in h.iter_events("cw") if e.actor == "bot" and e.kind == "edit"]
        assert len(bots) == 30 > srv.backend.settings.undo_max_group


async def test_without_a_group_the_same_stream_takes_several_undos(tmp_path: Path) -> None:
    """The control: what the group changes (a pause and the event cap split the answer)."""
    async with run_server(tight(tmp_path / "p.db")) as srv:
        alice = await setup(srv.ws_url, "plain")
        try:
            async with client.connect(srv.ws_url, "plain", user="bot") as s:
                bot = Bot(s)
                await s.wait_for(lambda: "[AI]" in str(s.text()))
                for i in range(30):
                    await bot.token(f"tok{i:02d} ")
                    if i == 12:
                        await asyncio.sleep(0.3)
                assert (await s.undo()).ok
                await alice.wait_for(lambda: "tok29" not in str(alice.text()))
                assert "tok00" in str(alice.text())
        finally:
            await alice.close()


async def test_a_group_survives_a_server_restart_and_an_outage_past_its_idle_time(
    tmp_path: Path,
) -> None:
    """The bot keeps streaming while the server is down; the restarted server rebuilds
    the group from the log, and the client opens it again (by its id) before its step 2
    brings the offline tokens: the group had ended by its idle time meanwhile, and goes
    on with its step, the latest of the bot's."""
    settings = tight(tmp_path / "p.db", undo_group_idle_ms=200)
    async with run_server(settings) as srv:
        alice = await setup(srv.ws_url, "rs")
        await alice.close()
        s = await client.connect(srv.ws_url, "rs", user="bot", max_backoff=0.2).open()
        bot = Bot(s)
        await s.wait_for(lambda: "[AI]" in str(s.text()))
        opened = await s.open_group()
        assert opened.ok and opened.group
        for i in range(8):
            await bot.token(f"a{i} ")
    try:
        await s.wait_for(lambda: not s.connected)
        for i in range(4):
            bot.offline(f"off{i} ")  # typed while the server is down
        await asyncio.sleep(0.4)  # past the group's idle time
        async with run_server(tight(tmp_path / "p.db", port=settings.port, undo_group_idle_ms=200)):
            await s.wait_connected()
            for i in range(8):
                await bot.token(f"b{i} ")
            closed = await s.close_group(group=opened.group)
            assert closed.ok and closed.seq is not None and closed.steps == 1, closed
            assert (await s.undo()).ok
            await s.wait_for(lambda: str(s.text()) == INTRO + OUTRO)
            assert not (await s.undo()).ok
    finally:
        await s.close()


async def test_a_group_outgrowing_its_bounds_goes_on_in_new_steps(tmp_path: Path) -> None:
    async with run_server(
        tight(tmp_path / "p.db", undo_group_max_events=5, undo_group_max_bytes=5_000)
    ) as srv:
        alice = await setup(srv.ws_url, "big")
        await alice.close()
        async with client.connect(srv.ws_url, "big", user="bot") as s:
            bot = Bot(s)
            await s.wait_for(lambda: "[AI]" in str(s.text()))
            opened = await s.open_group("answer-1")
            assert opened.group == "answer-1"
            for i in range(12):  # 5 + 5 + 2 events
                await bot.token(f"t{i:02d} ")
            closed = await s.close_group(group="answer-1")
            assert closed.steps == 3, closed
            assert (await s.undo()).ok
            await s.wait_for(lambda: "t09 " in str(s.text()) and "t10" not in str(s.text()))
            # bytes: one event of 6,000 characters is over the bound by itself; the next
            # token starts another step
            async with s.undo_group() as g:
                await bot.token("x" * 6000)
                await bot.token("after ")
            assert (await s.close_group(group=g.group)).steps == 2
            assert (await s.undo()).ok
            await s.wait_for(lambda: "after" not in str(s.text()) and "x" * 6000 in str(s.text()))


async def test_open_and_close_over_http_group_edits_made_over_http(tmp_path: Path) -> None:
    async with (
        run_server(tight(tmp_path / "p.db")) as srv,
        client.History(srv.url, user="bot") as h,
        httpx.AsyncClient(base_url=srv.url) as http,
    ):
        await h.put_text("web", "start.")
        opened = await h.open_group("web")
        assert opened.ok and opened.group
        text = "start."
        for i in range(3):
            await asyncio.sleep(0.1)  # twice UNDO_CAPTURE_MS between edits
            text += f" w{i}"
            await h.put_text("web", text)
        closed = await h.close_group("web", opened.group)
        assert closed.ok and closed.steps == 1, closed
        assert (await h.undo("web")).ok
        assert (await h.version("web")).text == "start."
        r = await http.post("/api/docs/web/undo/open?user=bot", json={"group": 7})
        assert r.status_code == 400, r.text
        r = await http.post("/api/docs/web/undo/open?user=bot", json=["g"])
        assert r.status_code == 400, r.text


async def test_the_group_marks_are_in_the_log(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    async with run_server(tight(db)) as srv:
        async with client.connect(srv.ws_url, "log", user="bot") as s:
            async with s.undo_group("g-1"):
                s.text().insert(0, "hi")
    store = SQLiteStore(db)
    await store.start()
    try:
        events = await store.read("log")
    finally:
        await store.stop()
    assert [(e.kind, e.meta.get("open")) for e in events] == [
        ("undo_mark", "g-1"),
        ("edit", None),
        ("undo_mark", None),
    ]


def test_a_group_id_is_refused_for_nul_and_lone_surrogates_only() -> None:
    """The API's schema allows any characters but NUL and lone surrogates; the server
    refused more ("printable characters": \\x05, a soft hyphen, a no-break space), which
    schemathesis found as a schema-valid request refused, and must refuse those (neither
    could be stored in the mark's meta on PostgreSQL)."""
    from palimpsest.errors import BadRequest
    from palimpsest.undo import group_id

    for ok in ["answer-7", "\x05", "a\x7fb", "a\u00adb", "x\u00a0y", "日本語", "😀" * 64]:
        assert group_id(ok) == ok
    for bad in ["\x00", "a\x00b", "a\ud800", "\udc00b", "", "x" * 65, 7]:
        with pytest.raises(BadRequest):
            group_id(bad)


async def test_undo_group_keeps_its_group_alive_through_a_pause_past_its_idle_time(
    tmp_path: Path,
) -> None:
    """The promise of undo_group(): one step however long the bot pauses. The server
    ends a group UNDO_GROUP_IDLE_MS after the user's last change or renewal; the client
    renews it while the context is open, and the close's answer (steps) is on the
    object the context yields."""
    async with run_server(tight(tmp_path / "p.db", undo_group_idle_ms=300)) as srv:
        alice = await setup(srv.ws_url, "idle")
        await alice.close()
        async with client.connect(srv.ws_url, "idle", user="bot") as s:
            bot = Bot(s)
            await s.wait_for(lambda: "[AI]" in str(s.text()))
            async with s.undo_group() as g:
                assert g.closed is None and g.steps is None
                assert g.opened.idle_ms == 300  # (the server says; renewed at a third)
                for i in range(3):
                    await bot.token(f"before{i} ")
                await asyncio.sleep(1.2)  # four idle times: the model thinks
                for i in range(3):
                    await bot.token(f"after{i} ")
            assert g.closed is not None and g.closed.ok, g.closed
            assert g.closed.seq is not None  # still open at the close: nothing ended it
            assert g.steps == 1, g.closed
            assert (await s.undo()).ok
            await s.wait_for(lambda: str(s.text()) == INTRO + OUTRO)
            assert not (await s.undo()).ok


async def test_undo_group_says_when_the_group_outgrew_a_step(tmp_path: Path) -> None:
    async with run_server(tight(tmp_path / "p.db", undo_group_max_events=4)) as srv:
        alice = await setup(srv.ws_url, "outgrew")
        await alice.close()
        async with client.connect(srv.ws_url, "outgrew", user="bot") as s:
            bot = Bot(s)
            await s.wait_for(lambda: "[AI]" in str(s.text()))
            async with s.undo_group() as g:
                for i in range(10):  # 4 + 4 + 2 events
                    await bot.token(f"t{i} ")
            assert g.steps == 3, g.closed


async def _marks(http: httpx.AsyncClient, url: str, doc: str, after: int) -> list[dict[str, Any]]:
    """The undo_mark events of `doc` after seq `after` (the events API)."""
    r = await http.get(f"{url}/api/docs/{doc}/events", params={"after": after, "kind": "undo_mark"})
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


async def _last_seq(http: httpx.AsyncClient, url: str, doc: str) -> int:
    r = await http.get(f"{url}/api/docs/{doc}/events", params={"order": "desc", "limit": 1})
    assert r.status_code == 200, r.text
    seq: int = r.json()["events"][0]["seq"]
    return seq


async def test_undo_group_renews_only_in_pauses_not_while_streaming(tmp_path: Path) -> None:
    """The renewal is an undo_mark event in the log (webhooks and streams see each one):
    sent every third of the idle time whatever the bot did, a bot streaming into an
    undo_group() wrote one every 20 s for ever, although its edits keep the group alive
    already (the server ends it idle_ms after the user's last change or renewal). The
    session renews only after a third of the idle time without an edit of its own:
    none while it streams, and still one step across a pause of several idle times."""
    idle = 1200  # renewed after 0.4 s without an edit
    async with (
        run_server(tight(tmp_path / "p.db", undo_group_idle_ms=idle)) as srv,
        httpx.AsyncClient() as http,
    ):
        alice = await setup(srv.ws_url, "renew")
        await alice.close()
        async with client.connect(srv.ws_url, "renew", user="bot") as s:
            bot = Bot(s)
            await s.wait_for(lambda: "[AI]" in str(s.text()))
            async with s.undo_group("answer") as g:
                start = await _last_seq(http, srv.url, "renew")  # the group's open mark
                # stream for eight renewal periods: a token every ~30 ms
                began = asyncio.get_running_loop().time()
                n = 0
                while asyncio.get_running_loop().time() - began < 8 * idle / 3000:
                    await bot.token(f"s{n} ")
                    n += 1
                    await asyncio.sleep(0.03)
                streamed = await _last_seq(http, srv.url, "renew")
                await asyncio.sleep(2 * idle / 1000)  # two idle times: the model thinks
                paused = await _last_seq(http, srv.url, "renew")
                for i in range(3):
                    await bot.token(f"after{i} ")
            while_streaming = [
                e for e in await _marks(http, srv.url, "renew", start) if e["seq"] <= streamed
            ]
            in_pause = [
                e for e in await _marks(http, srv.url, "renew", streamed) if e["seq"] <= paused
            ]
            # a renewal every 0.4 s would have been ~8 marks; a stall of the test's own
            # loop past 0.4 s between two tokens (a loaded machine) may make one
            assert len(while_streaming) <= 2, while_streaming
            assert in_pause and all(e["meta"].get("open") == "answer" for e in in_pause), in_pause
            assert g.steps == 1, g.closed
            assert (await s.undo()).ok
            await s.wait_for(lambda: str(s.text()) == INTRO + OUTRO)
            assert not (await s.undo()).ok
