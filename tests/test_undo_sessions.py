"""Two sessions of one user (two tabs, a laptop and a phone) typing in one document:
each session's burst is an undo step of its own, never merged with the other's because
they were typed at the same time, and never cut by the other session's close_group.
Undo from either session, or over HTTP, takes the user's most recent step (the one
typed into last), whichever session made it. Real server, real Python client sessions.

Before (up to Dec 2026) the steps were the user's, not the session's: keystrokes of
two tabs less than ``undo_capture_ms`` apart joined one step (an undo in one tab took
both tabs' words), and one tab's close_group ended the step the other was typing
(its undo took a fragment of its burst)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, free_port, run_server

from palimpsest import client
from palimpsest.settings import Settings


def settings(db: Path, port: int | None = None) -> Settings:
    # a capture window of a minute: every keystroke here is "at the same time"
    return Settings(db=str(db), port=port or free_port(), undo_capture_ms=60_000)


@asynccontextmanager
async def two_tabs(srv: RunningServer, doc: str) -> AsyncIterator[tuple[client.Session, ...]]:
    async with (
        client.connect(srv.ws_url, doc, user="ann") as tab1,
        client.connect(srv.ws_url, doc, user="ann") as tab2,
    ):
        yield tab1, tab2


async def type_(tab: client.Session, at: int | None, chars: str) -> None:
    """`chars` typed into `tab` at `at` (None: at the end), and held by the server."""
    text = tab.text()
    text.insert(len(str(text)) if at is None else at, chars)
    await tab.flush()


async def shows(tab: client.Session, want: str) -> None:
    await tab.wait_for(lambda: str(tab.text()) == want)


async def interleaved(tab1: client.Session, tab2: client.Session) -> None:
    """tab1 types "abc" at the end, tab2 "XYZ" at the start, a key each in turn:
    tab2's "Z" is the last key the user pressed."""
    for i, (a, x) in enumerate(zip("abc", "XYZ", strict=True)):
        await type_(tab1, None, a)
        await type_(tab2, i, x)
    await shows(tab1, "XYZabc")
    await shows(tab2, "XYZabc")


@pytest.mark.parametrize("restart", [False, True])
async def test_two_tabs_typing_at_once_make_a_step_each(tmp_path: Path, restart: bool) -> None:
    """Undo in tab 1 takes back tab 2's burst, the most recent (its "Z" came last),
    whole, and nothing of tab 1's; the next undo takes tab 1's, whole. The same over
    HTTP, and after a restart (the stacks come back from the snapshot's meta)."""
    db = tmp_path / "db"
    async with run_server(settings(db)) as srv, two_tabs(srv, "s1") as (tab1, tab2):
        await interleaved(tab1, tab2)
        if not restart:
            undone = await tab1.undo()
            assert undone.ok and undone.removed_characters == 3, undone
            await shows(tab1, "abc")
            await shows(tab2, "abc")
            undone = await tab2.undo()
            assert undone.ok and undone.removed_characters == 3, undone
            await shows(tab1, "")
            assert not (await tab1.undo()).ok
            assert (await tab2.redo()).ok  # tab 1's burst back
            await shows(tab1, "abc")
            assert (await tab1.redo()).ok  # then tab 2's
            await shows(tab2, "XYZabc")
    if restart:
        async with (
            run_server(settings(db)) as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            r = await http.post("/api/docs/s1/undo", params={"user": "ann"})
            assert r.status_code == 200 and r.json()["removed"]["characters"] == 3, r.text
            async with client.connect(srv.ws_url, "s1", user="ann") as tab:
                await shows(tab, "abc")
                r = await http.post("/api/docs/s1/undo", params={"user": "ann"})
                assert r.status_code == 200 and r.json()["removed"]["characters"] == 3, r.text
                await shows(tab, "")
                r = await http.post("/api/docs/s1/undo", params={"user": "ann"})
                assert r.status_code == 409, r.text


async def test_the_step_typed_into_last_is_undone_first(tmp_path: Path) -> None:
    """tab 1 starts its burst first, tab 2 starts one, then tab 1 types on: tab 1's
    burst is the most recent step (as if each tab had its own Yjs UndoManager and the
    user pressed undo in the tab typed into last); over HTTP too."""
    async with run_server(settings(tmp_path / "db")) as srv, two_tabs(srv, "s2") as (t1, t2):
        await type_(t1, 0, "one")
        await type_(t2, None, " TWO")
        await type_(t1, 3, " more")
        await shows(t2, "one more TWO")
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/api/docs/s2/undo", params={"user": "ann"})
            assert r.status_code == 200, r.text
            await shows(t2, " TWO")
            r = await http.post("/api/docs/s2/undo", params={"user": "ann"})
            assert r.status_code == 200, r.text
            await shows(t1, "")


async def test_a_close_in_one_tab_does_not_cut_the_other_tabs_step(tmp_path: Path) -> None:
    """close_group from tab 1 (its Enter, its pointer up) ends tab 1's step only: tab 2
    typing "12" around it has one step, which its undo takes back whole."""
    async with run_server(settings(tmp_path / "db")) as srv, two_tabs(srv, "s3") as (t1, t2):
        await type_(t1, 0, "tab1 ")
        await type_(t2, None, "1")
        closed = await t1.close_group()
        assert closed.ok and closed.seq is not None, closed  # tab 1's step was open
        await type_(t2, None, "2")
        await type_(t1, 0, "more ")  # after its close: a new step of tab 1's
        await shows(t2, "more tab1 12")
        assert (await t2.undo()).ok  # tab 1's "more ": the latest step
        await shows(t2, "tab1 12")
        undone = await t2.undo()  # tab 2's "12", whole
        assert undone.ok and undone.removed_characters == 2, undone
        await shows(t1, "tab1 ")
        # a close from a tab with no step open logs nothing, whatever the other has open
        await type_(t1, None, "x")
        closed = await t2.close_group()
        assert closed.ok and closed.seq is None, closed
        async with httpx.AsyncClient(base_url=srv.url) as http:
            # over HTTP (no session), a close ends the user's step in every session
            r = await http.post("/api/docs/s3/undo/close", params={"user": "ann"})
            assert r.status_code == 200 and r.json()["seq"] is not None, r.text
            # the marks say whose step they closed, as readers see a connection: a digest
            r = await http.get("/api/docs/s3/events", params={"user": "ann"})
            marks = [e["meta"] for e in r.json()["events"] if e["kind"] == "undo_mark"]
            edits = [e["meta"]["conn"] for e in r.json()["events"] if e["kind"] == "edit"]
            assert [m.get("session") for m in marks] == [edits[0], None], (marks, edits)
        await type_(t1, None, "y")
        assert (await t1.undo()).ok
        await shows(t2, "tab1 x")


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_tabs_on_two_processes_make_the_same_steps_on_both(tmp_path: Path) -> None:
    """ann's tabs on two processes of a scale-out (PostgreSQL + Redis), typing at once:
    each process tells the steps apart from the log (each edit's connection), so an
    undo made on one is on the other's stacks too, and the next one, made there, takes
    the other tab's burst."""
    from scaleout import cluster, fanout_url, fresh_schema

    async with (
        fresh_schema() as store_url,
        cluster(
            tmp_path, 2, store_url=store_url, fanout=fanout_url(),
            env={"PALIMPSEST_UNDO_CAPTURE_MS": "60000"},
        ) as c,
        client.connect(c.ws(0), "s4", user="ann") as tab1,
        client.connect(c.ws(1), "s4", user="ann") as tab2,
        httpx.AsyncClient(timeout=30) as http,
    ):  # fmt: skip
        await interleaved(tab1, tab2)
        a, b = (p.http_url for p in c.procs)
        r = await http.post(f"{a}/api/docs/s4/undo", params={"user": "ann"})
        assert r.status_code == 200 and r.json()["removed"]["characters"] == 3, r.text
        await shows(tab2, "abc")
        r = await http.post(f"{b}/api/docs/s4/undo", params={"user": "ann"})
        assert r.status_code == 200 and r.json()["removed"]["characters"] == 3, r.text
        await shows(tab1, "")
        r = await http.post(f"{a}/api/docs/s4/redo", params={"user": "ann"})
        assert r.status_code == 200, r.text
        await shows(tab2, "abc")
        r = await http.post(f"{b}/api/docs/s4/redo", params={"user": "ann"})
        assert r.status_code == 200, r.text
        await shows(tab1, "XYZabc")
