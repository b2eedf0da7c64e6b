"""A server whose wall clock steps (NTP, a VM restored) while it writes: what the log
says and what time lookups answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from conftest import RunningServer, closed_with, eventually, run_server
from pycrdt import Doc, Text
from sqlitehelp import sqlite_conn
from test_hocuspocus import Raw

from palimpsest import client, room
from palimpsest import hocuspocus as H
from palimpsest import protocol as P
from palimpsest.auth import identity
from palimpsest.auth.tokens import mint
from palimpsest.maintenance import plan_compact
from palimpsest.settings import Settings
from palimpsest.store.base import EVENT_CLOCK, MAX_AHEAD_MS, EventClock
from palimpsest.util import iso


class Clock:
    """The server's wall clock, in ms, set by the test (palimpsest.room stamps events)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self, doc: str | None = None) -> int:
        return self.ms


async def test_a_backward_step_keeps_ts_rising_and_time_lookups_right(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events stamped after the clock stepped back 10 minutes get their document's last
    ts, so the version at a time between v1 and v2 is v1's, events?since= and ?until=
    split there, and ``compact --before`` that time folds v1 only (before, it folded
    events written after the time: their ts said earlier)."""
    t0 = 1_800_000_000_000
    clock = Clock(t0)
    monkeypatch.setattr(room, "now_ms", clock)
    async with httpx.AsyncClient(base_url=server.url) as c:

        async def put(text: str, at: int) -> Any:
            clock.ms = at
            r = await c.put("/api/docs/notes/text?user=alice", json={"text": text})
            assert r.status_code == 200, r.text
            return r.json()

        await put("one", t0)
        await put("one two", t0 + 2_000)
        await put("one two three", t0 - 600_000 + 3_000)  # the clock stepped back 10 min
        await put("one two three four", t0 - 600_000 + 4_000)
        r = await c.get("/api/docs/notes/events?user=alice")
        stamps = [(e["seq"], e["ts"]) for e in r.json()["events"]]
        assert [s for s, _ in stamps] == [1, 2, 3, 4]
        assert [t for _, t in stamps] == [iso(t0), *[iso(t0 + 2_000)] * 3]
        between = iso(t0 + 1_000)
        r = await c.get(f"/api/docs/notes/versions?at={between}&user=alice")
        assert r.status_code == 200 and r.json()["seq"] == 1
        assert r.json()["roots"]["content"]["value"] == "one"
        r = await c.get(f"/api/docs/notes/events?since={between}&user=alice")
        assert [e["seq"] for e in r.json()["events"]] == [2, 3, 4]
        r = await c.get(f"/api/docs/notes/events?until={between}&user=alice")
        assert [e["seq"] for e in r.json()["events"]] == [1]
    plan = await plan_compact(server.backend.store, "notes", between)
    assert plan.before == 1


async def _answer_in_a_group(server: RunningServer, clock: Clock, step_back: int) -> str:
    """A bot's streamed answer in one explicit undo group, the server's clock stepped
    back `step_back` ms after its second word; the text."""
    async with client.connect(server.ws_url, "bot", user="bot") as s:
        s.text().insert(0, "Q: ")
        await s.flush()
        await s.close_group()
        async with s.undo_group():
            for i, w in enumerate(["The ", "answer ", "is ", "forty ", "two."]):
                clock.ms += 300
                if i == 2:
                    clock.ms -= step_back
                s.text().append(w)
                await s.flush()
        return str(s.text())


async def test_an_undo_group_survives_a_backward_step(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group's events are stamped rising (the store keeps a document's ts from going
    back), so the recorder sees no negative pause and one undo takes the whole answer
    out (it ended the group on the step: the undo left "Q: The answer ")."""
    clock = Clock(1_800_000_000_000)
    monkeypatch.setattr(room, "now_ms", clock)
    assert await _answer_in_a_group(server, clock, 60_000) == "Q: The answer is forty two."
    async with client.connect(server.ws_url, "bot", user="bot") as s:
        await s.wait_for(lambda: "two." in str(s.text()))
        r = await s.undo()
        assert r.ok
        await s.wait_for(lambda: str(s.text()) == "Q: ")


async def test_an_undo_group_in_an_older_log_whose_ts_go_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log written before ts were kept rising holds the group's later events stamped
    a minute before the earlier ones: loaded from it, the group is still one step (a
    pause is a gap forward; a clock stepped back is none)."""
    clock = Clock(1_800_000_000_000)
    monkeypatch.setattr(room, "now_ms", clock)
    async with run_server(settings) as server:
        await _answer_in_a_group(server, clock, 0)
    with sqlite_conn(settings.db) as db:  # as the older server stored it
        rows = db.execute("SELECT seq, data FROM log ORDER BY seq").fetchall()
        third = next(seq for seq, data in rows if b"is " in data)  # the third word's
        db.execute("UPDATE log SET ts = ts - 60000 WHERE seq >= ?", (third,))
        db.execute("DELETE FROM snapshots")  # the room loads from the log
        stamps = [t for (t,) in db.execute("SELECT ts FROM log ORDER BY seq")]
    assert stamps != sorted(stamps)
    async with run_server(settings) as server:
        async with client.connect(server.ws_url, "bot", user="bot") as s:
            await s.wait_for(lambda: "two." in str(s.text()))
            r = await s.undo()
            assert r.ok
            await s.wait_for(lambda: str(s.text()) == "Q: ")


@pytest.fixture(autouse=True)
def _event_clock_forgets() -> Iterator[None]:
    """A test's stamps (a room clock set years ahead) are not run on from by the tests
    after it: the committer tells the process's EVENT_CLOCK the stamps it committed."""
    yield
    EVENT_CLOCK.reset()


class Stepped:
    """A wall clock and a monotonic clock, in ms, moved by the test."""

    def __init__(self, wall: int) -> None:
        self.wall = wall
        self.mono = 0

    def pass_ms(self, ms: int) -> None:
        self.wall += ms
        self.mono += ms


def test_the_event_clock_runs_on_after_a_backward_step() -> None:
    """Stepped back, the clock rooms stamp with keeps its last reading and runs on by the
    monotonic clock (at 3/4 speed, so that it catches up); stepped forward, it follows;
    a stamp committed later than its own (another process's clock ahead) is taken up and
    run on from."""
    t = Stepped(1_800_000_000_000)
    clock = EventClock(wall=lambda: t.wall, mono=lambda: t.mono)
    assert clock() == 1_800_000_000_000
    t.wall -= 600_000  # NTP steps it back 10 min
    t.pass_ms(1_000)
    assert clock() == 1_800_000_000_750  # runs on, at 3/4 speed while ahead
    t.pass_ms(3_000)
    assert clock() == 1_800_000_003_000  # a pause is still a pause
    t.pass_ms(600_000)
    assert clock() == 1_800_000_453_000 > t.wall
    t.pass_ms(1_800_000)  # the wall clock has caught up: followed again
    assert clock() == t.wall == 1_800_001_804_000
    t.wall += 3_600_000  # stepped forward an hour
    assert clock() == 1_800_005_404_000
    clock.observe(1_800_005_500_000, "d")  # another process's clock ahead
    t.pass_ms(400)
    assert clock("d") == 1_800_005_500_300
    clock.observe(1, "d")  # an older stamp changes nothing
    assert clock("d") == 1_800_005_500_300
    t.wall += 600_000
    clock.observe(t.wall + MAX_AHEAD_MS + 1, "d")  # too far ahead: not taken up
    assert clock("d") == t.wall
    t.wall -= MAX_AHEAD_MS + 60_000  # stepped back by more than it runs ahead: followed
    assert clock() == t.wall


def test_a_stamp_seen_on_one_document_runs_on_that_document_only() -> None:
    """A stamp committed ahead of this process's clock (another process's clock 5 min
    fast wrote the document last, and the store raised this one's event to it) is run on
    from for that document alone. Before, the clock was one per process: every document
    of this process, new ones only it ever wrote too, was stamped 5 min ahead."""
    t = Stepped(1_800_000_000_000)
    clock = EventClock(wall=lambda: t.wall, mono=lambda: t.mono)
    assert clock("shared") == clock("mine") == t.wall
    clock.observe(t.wall + 300_000, "shared")  # written last by a process 5 min ahead
    t.pass_ms(400)
    assert clock("shared") == 1_800_000_300_300  # runs on from it, at 3/4 speed
    assert clock("mine") == t.wall  # another document: the wall clock
    assert clock("fresh") == t.wall
    assert clock() == t.wall  # (a stamp for no document in particular)
    t.pass_ms(1_300_000)  # the wall clock has passed it: the document follows it again
    assert clock("shared") == t.wall
    # a step back of the wall clock is one for every document: each runs on
    t.wall -= 60_000
    t.pass_ms(1_000)
    assert clock("mine") == clock("fresh") == 1_800_001_301_150


async def test_a_document_whose_last_ts_is_far_ahead_is_logged_when_it_loads(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One stamp from a clock set a year ahead: the document's later events keep that ts
    until the wall clock passes it (the event clock runs at most MAX_AHEAD_MS ahead), so
    its time lookups and undo steps are off for a year, and nothing said so. Loading it
    logs a warning that names the document and the lead, once per load."""
    year = 365 * 24 * 3_600_000
    clock = Clock(int(time.time() * 1000) + year)
    monkeypatch.setattr(room, "now_ms", clock)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as c:
        r = await c.put("/api/docs/ahead/text?user=ann", json={"text": "from the future"})
        assert r.status_code == 200, r.text
    monkeypatch.setattr(room, "now_ms", EVENT_CLOCK)  # the clock put right
    caplog.set_level("WARNING", logger="palimpsest.rooms")
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as c:
        for _ in range(2):  # loaded once: said once
            r = await c.put("/api/docs/ahead/text?user=ann", json={"text": "now, really"})
            assert r.status_code == 200, r.text
        r = await c.get("/api/docs/ahead/events?order=desc&limit=1")
        assert r.json()["events"][0]["ts"] >= iso(clock.ms)  # (kept: the ts never go back)
    said = [m.getMessage() for m in caplog.records if "ahead of this server's clock" in
            m.getMessage()]  # fmt: skip
    assert len(said) == 1, said
    assert "'ahead'" in said[0] and ("364 days" in said[0] or "365 days" in said[0]), said
    assert "NTP" in said[0] and "`palimpsest restamp ahead`" in said[0], said


async def test_undo_steps_stay_apart_after_a_backward_step(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typed after the wall clock stepped back 10 min, with pauses: each pause still ends
    an undo step, so one undo takes out the last word only (stamped with the document's
    last ts until the wall clock caught up, the three words were one step and one undo
    took them all)."""
    t = Stepped(1_800_000_000_000)
    monkeypatch.setattr(room, "now_ms", EventClock(wall=lambda: t.wall, mono=lambda: t.mono))
    async with client.connect(server.ws_url, "steps", user="alice") as s:
        s.text().insert(0, "one ")
        await s.flush()
        t.wall -= 600_000
        for w in ["two ", "three "]:
            t.pass_ms(2_000)  # a pause: past the undo capture window
            s.text().append(w)
            await s.flush()
        r = await s.undo()
        assert r.ok
        await s.wait_for(lambda: str(s.text()) == "one two ")


async def test_a_close_after_which_the_clock_steps_back_is_logged(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close_group judged a step over by its time with the wall clock (now - the step's
    last ts >= undo_capture_ms) and then ended it in memory only, logging nothing. The
    next change's ts is not at least that clock's (a clock that then stepped back, here
    the room's 10 minutes behind the one close_group read; another process's): logged
    100 ms after the step's last, it joined that step wherever the stacks were rebuilt
    from the log (a restart, another process), and one undo took out both changes,
    where the live room's took out one. A close is decided by the log now: only a step
    the document's own later ts ended is left unlogged."""
    clock = Clock(int(time.time() * 1000) - 600_000)
    monkeypatch.setattr(room, "now_ms", clock)
    async with run_server(settings) as server:
        async with client.connect(server.ws_url, "steps", user="ann") as s:
            s.text().insert(0, "one ")
            await s.flush()
            closed = await s.close_group()
            assert closed.ok and closed.seq is not None, closed  # (logged: a mark)
            clock.ms += 100
            s.text().append("two")
            await s.flush()
    with sqlite_conn(settings.db) as db:
        db.execute("DELETE FROM snapshots")  # the stacks rebuilt from the log
    async with run_server(settings) as server:
        async with client.connect(server.ws_url, "steps", user="ann") as s:
            await s.wait_for(lambda: str(s.text()) == "one two")
            assert (await s.undo()).ok
            await s.wait_for(lambda: str(s.text()) == "one ")
            assert str(s.text()) == "one "


# --- a token's expiry by a wall clock stepped forward ------------------------------------

SECRET = "clock-steps-test-secret-of-32-bytes-at-least"


class Wall:
    """The wall clock identities read their expiry by (auth.identity.wall), stepped."""

    def __init__(self) -> None:
        self.step = 0.0

    def __call__(self) -> float:
        return time.time() + self.step


async def _edit(ws: Any, src: Doc[Any], text: str) -> None:
    ups: list[bytes] = []
    sub = src.observe(lambda e: ups.append(e.update))
    src.get("content", type=Text).insert(0, text)
    src.unobserve(sub)
    await ws.send(P.encode_sync_update(ups[-1]))


async def test_a_socket_closes_when_the_wall_clock_steps_past_its_exp(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token of 120 s, the server's wall clock stepped a day forward: its socket closed
    at exp by the clock of the connection's start (a timer on the monotonic clock), so it
    kept taking edits for 120 s more. Now an edit after exp by the wall clock closes it
    with 4401 and is not logged; and one that sends nothing is closed by the timer,
    which reads the wall clock again every EXPIRY_RECHECK seconds."""
    settings.jwt_secret = SECRET
    wall = Wall()
    monkeypatch.setattr(identity, "wall", wall)
    t = mint(SECRET, "carol", "write", ["*"], ttl=120)
    async with run_server(settings) as server:
        url = f"{server.ws_url}/tb?token={t}"
        async with websockets.connect(url, compression=None) as ws:
            src: Doc[Any] = Doc()
            await _edit(ws, src, "before the step. ")
            await eventually(lambda: server.backend.rooms.get_loaded("tb") is not None)
            room = server.backend.rooms.get_loaded("tb")
            assert room is not None
            await eventually(lambda: room.seq == 1)
            wall.step = 86_400.0
            await _edit(ws, src, "a day after exp. ")
            code, reason = await closed_with(ws)
        assert code == 4401 and "expired" in reason, (code, reason)
        assert await server.backend.store.head("tb") == 1
        # a socket that sends nothing: closed by its timer's next look at the clock
        monkeypatch.setattr(identity, "EXPIRY_RECHECK", 0.2)
        wall.step = 0.0
        async with websockets.connect(url, compression=None) as ws:
            await ws.send(P.encode_sync_step1(Doc().get_state()))
            await asyncio.sleep(0.5)
            assert ws.close_code is None  # re-armed: not expired yet
            wall.step = 86_400.0
            code, reason = await closed_with(ws)
        assert code == 4401 and "expired" in reason, (code, reason)


async def test_a_hocuspocus_document_closes_when_the_wall_clock_steps_past_its_exp(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on /hocuspocus: an update after exp by the wall clock is not logged, and
    the socket closes (4205: the providers reconnect with fresh tokens); a socket whose
    document sends nothing is closed by its timer's next look at the clock."""
    settings.jwt_secret = SECRET
    wall = Wall()
    monkeypatch.setattr(identity, "wall", wall)
    monkeypatch.setattr(identity, "EXPIRY_RECHECK", 0.2)
    t = mint(SECRET, "w", "write", ["*"], ttl=120)
    async with run_server(settings) as server:
        async with websockets.connect(f"{server.ws_url.rsplit('/', 1)[0]}/hocuspocus") as ws:
            raw = Raw(ws)
            await raw.auth("hp", t)
            await raw.auth("quiet", t)
            await eventually(lambda: raw.of("hp", H.AUTH) and raw.of("quiet", H.AUTH))
            src: Doc[Any] = Doc()
            ups: list[bytes] = []
            src.observe(lambda e: ups.append(e.update))
            src.get("content", type=Text).insert(0, "before ")
            await raw.send("hp", H.SYNC, P.encode_sync_update(ups[-1])[1:])
            room = await eventually(lambda: server.backend.rooms.get_loaded("hp"))
            await eventually(lambda: room.seq >= 1)
            await asyncio.sleep(0.5)
            assert ws.close_code is None
            wall.step = 86_400.0
            src.get("content", type=Text).insert(7, "after ")
            await raw.send("hp", H.SYNC, P.encode_sync_update(ups[-1])[1:])
            await eventually(lambda: ws.close_code is not None, what="closed")
            assert ws.close_code == H.RESET_CONNECTION and "token expired" in ws.close_reason
            await room.flush()
            assert room.seq == 1
            raw.task.cancel()
        wall.step = 0.0
        async with websockets.connect(f"{server.ws_url.rsplit('/', 1)[0]}/hocuspocus") as ws:
            raw = Raw(ws)
            await raw.auth("quiet", t)
            await eventually(lambda: raw.authed("quiet"))
            await asyncio.sleep(0.5)
            assert ws.close_code is None  # re-armed: not expired yet
            wall.step = 86_400.0
            await eventually(lambda: ws.close_code is not None, what="closed by its timer")
            assert ws.close_code == H.RESET_CONNECTION and "token expired" in ws.close_reason
            raw.task.cancel()


# --- times as people write them ------------------------------------------------------------


async def test_at_takes_rfc_3339_forms(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """?at= took ISO 8601's strict form only: RFC 3339's lowercase "t" and "z", and its
    space for the "T" with an offset whose "+" the query string made a space
    (``2026-12-06 20:27:05+05:30`` typed into a URL), were 400s."""
    t0 = 1_796_560_000_000  # 2026-12-06T12:26:40Z
    clock = Clock(t0)
    monkeypatch.setattr(room, "now_ms", clock)
    async with httpx.AsyncClient(base_url=server.url) as c:
        for text, at in (("one", t0), ("one two", t0 + 60_000)):
            clock.ms = at
            r = await c.put("/api/docs/forms/text?user=alice", json={"text": text})
            assert r.status_code == 200, r.text
        # 30 s after the first version: 12:27:10Z = 17:57:10+05:30
        for q in ("2026-12-06T12:27:10Z", "2026-12-06t12:27:10z", "2026-12-06 12:27:10Z",
                  "2026-12-06 17:57:10+05:30", "2026-12-06T17:57:10+05:30",
                  "2026-12-06%2017:57:10%2B05:30", "2026-12-06T07:27:10.000-05:00",
                  "2026-12-06 12:27:10"):  # fmt: skip
            r = await c.get(f"/api/docs/forms/versions?at={q}&user=alice")
            assert r.status_code == 200 and r.json()["seq"] == 1, (q, r.text)
        r = await c.get("/api/docs/forms/versions?at=2026-12-06 12:27:10 x&user=alice")
        assert r.status_code == 400, r.text


async def test_refusals_by_time_say_the_servers_time(settings: Settings) -> None:
    """A token refused as not yet valid (its iat ahead of this server's clock by more
    than the leeway: the issuer's clock is ahead) or expired says this server's time,
    so that clock skew can be told from the message."""
    settings.jwt_secret = SECRET
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as c:
        for now, said in ((time.time() + 120, "not yet valid (iat)"),
                          (time.time() - 7200, "token expired")):  # fmt: skip
            t = mint(SECRET, "u", "write", ["*"], ttl=3600 if said != "token expired" else 60,
                     now=now)  # fmt: skip
            r = await c.get("/api/docs", headers={"Authorization": f"Bearer {t}"})
            detail = r.json()["detail"]
            assert r.status_code == 401 and said in detail, r.text
            assert "this server's time is 20" in detail and "leeway 30 s" in detail, detail


async def test_a_tag_made_after_a_backward_step_is_not_dated_before_its_version(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events were stamped by a clock that then stepped back (here: the room's clock
    ahead of the store's); a tag named afterwards said it was made before the events of
    the version it names. Its ts (as a snapshot's) is raised to the document's last
    event's, as the events' own are."""
    t0 = int(time.time() * 1000) + 3_600_000  # an hour ahead, then back to now
    clock = Clock(t0)
    monkeypatch.setattr(room, "now_ms", clock)
    async with httpx.AsyncClient(base_url=server.url, params={"user": "alice"}) as c:
        for i, text in enumerate(["one", "one two"]):
            clock.ms = t0 + i * 1_000
            r = await c.put("/api/docs/tagged/text", json={"text": text})
            assert r.status_code == 200, r.text
        r = await c.post("/api/docs/tagged/tags", json={"name": "v1", "seq": 1})
        assert r.status_code == 201, r.text
        assert r.json()["tag"]["ts"] >= iso(t0 + 1_000), r.json()
        r = await c.get("/api/docs/tagged/tags")
        assert [(t["name"], t["ts"] >= iso(t0 + 1_000)) for t in r.json()["tags"]] == [
            ("v1", True)
        ], r.json()
        r = await c.get("/api/docs/tagged/versions/v1")
        assert r.json()["ts"] == iso(t0) and r.json()["seq"] == 1, r.json()
    await server.backend.store.put_snapshot("tagged", 2, b"")  # (as a checkpoint writes it)
    (snap,) = await server.backend.store.snapshots("tagged")
    assert snap.ts >= t0 + 1_000
