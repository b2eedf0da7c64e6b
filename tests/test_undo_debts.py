"""Undo debts of issue 19: map keys in split multi-range steps, restored copies of a
deletion that spanned several steps after a reload, and undo stacks across `compact`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually
from pycrdt import Map
from test_admin_cli import cli
from test_undo import converged, edit, make_settings, serving, undo
from yclient import YClient, connect


def server_map(srv: RunningServer, doc: str) -> dict[str, Any] | None:
    room = srv.backend.rooms.get_loaded(doc)
    return None if room is None else room.doc.get("m", type=Map).to_py()


async def maps_are(srv: RunningServer, doc: str, expected: dict[str, Any], *cs: YClient) -> None:
    await eventually(
        lambda: (
            server_map(srv, doc) == expected
            and all(c.doc.get("m", type=Map).to_py() == expected for c in cs)
        ),
        what=f"every map is {expected}: server {server_map(srv, doc)}, "
        f"clients {[c.doc.get('m', type=Map).to_py() for c in cs]}",
    )


def head(srv: RunningServer, doc: str) -> int:
    room = srv.backend.rooms.get_loaded(doc)
    assert room is not None
    return room.seq


async def test_undo_of_a_two_range_step_brings_an_overwritten_map_key_back(
    tmp_path: Path,
) -> None:
    """Alice restores twice (server-made, so under the server's Yjs client id) with
    bob's redo in between; the first restore overwrote bob's value of "k", the second
    overwrote the first's. Undoing both must bring bob's value back (yrs refuses to
    restore a map entry whose newer values it is not told are going). (The two restores
    were once one step of two ranges of that client; a restore is now a step of its own,
    whatever the capture window.)"""
    async with serving(make_settings(tmp_path / "db", undo_capture_ms=60_000)) as srv:
        async with (
            connect(srv.ws_url, "mk", "alice") as a,
            connect(srv.ws_url, "mk", "bob") as b,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            mb = b.doc.get("m", type=Map)

            async def bob(fn: Any) -> None:
                await edit(b, srv, "mk", fn)
                assert (await b.request({"type": "close_group"}))["ok"]

            async def restore(seq: int) -> None:
                r = await http.post(
                    "/api/docs/mk/restore", params={"user": "alice"}, json={"seq": seq}
                )
                assert r.status_code == 200 and r.json()["seq"], r.text

            await bob(lambda: mb.__setitem__("k", "B"))
            v1 = head(srv, "mk")
            await bob(lambda: mb.__setitem__("k", "B2"))
            v2 = head(srv, "mk")
            await restore(v1)  # alice: k = "B" (a server-made item)
            await maps_are(srv, "mk", {"k": "B"}, a, b)
            await bob(lambda: mb.__setitem__("j", "J"))
            assert (await undo(b))["ok"]
            assert (await undo(b, "redo"))["ok"]  # J comes back as a server-made copy
            await maps_are(srv, "mk", {"k": "B", "j": "J"}, a, b)
            await restore(v2)  # alice again, a step of its own: k = "B2", j goes
            await maps_are(srv, "mk", {"k": "B2"}, a, b)
            room = srv.backend.rooms.get_loaded("mk")
            assert room is not None
            from palimpsest.undo import state_of

            steps = state_of(room).stacks("alice").undo
            assert [len(step.seqs) for step in steps] == [1, 1]

            assert (await undo(a))["ok"]  # the second restore
            await maps_are(srv, "mk", {"k": "B", "j": "J"}, a, b)
            assert (await undo(a))["ok"]  # and the first: as if alice had restored nothing
            await maps_are(srv, "mk", {"k": "B2", "j": "J"}, a, b)
            assert (await undo(a, "redo"))["ok"]
            await maps_are(srv, "mk", {"k": "B", "j": "J"}, a, b)
            assert (await undo(a))["ok"]
            await maps_are(srv, "mk", {"k": "B2", "j": "J"}, a, b)


async def unloaded(srv: RunningServer, doc: str) -> None:
    await eventually(lambda: doc not in srv.backend.rooms, what=f"{doc} unloads")


async def test_deletion_across_steps_undone_after_reload_takes_its_copies_along(
    tmp_path: Path,
) -> None:
    """Alice types "abc", then "def" (two steps), then deletes "bcde" (a third). The
    deletion is undone after a reload: each insertion step owns the restored copy of
    what it inserted, so undoing "def" after another reload removes "de" too."""
    async with serving(make_settings(tmp_path / "db")) as srv:
        for reload_between in (True, False):
            doc = f"spans{int(reload_between)}"
            async with connect(srv.ws_url, doc, "alice") as a:
                await edit(a, srv, doc, lambda: a.insert(0, "abc"))
                await edit(a, srv, doc, lambda: a.insert(3, "def"))
                await converged(srv, doc, "abcdef", a)
                await edit(a, srv, doc, lambda: a.text.__delitem__(slice(1, 5)))
                await converged(srv, doc, "af", a)
            await unloaded(srv, doc)
            async with connect(srv.ws_url, doc, "alice") as a:
                assert (await undo(a))["ok"]
                await converged(srv, doc, "abcdef", a)
            if reload_between:
                await unloaded(srv, doc)
            async with connect(srv.ws_url, doc, "alice") as a:
                assert (await undo(a))["ok"]  # "def", the restored "de" with it
                await converged(srv, doc, "abc", a)
                assert (await undo(a))["ok"]  # "abc", the restored "bc" with it
                await converged(srv, doc, "", a)
                assert (await undo(a, "redo"))["ok"]
                await converged(srv, doc, "abc", a)
            await unloaded(srv, doc)
            async with connect(srv.ws_url, doc, "alice") as a:
                assert (await undo(a, "redo"))["ok"]
                await converged(srv, doc, "abcdef", a)
                assert (await undo(a, "redo"))["ok"]
                await converged(srv, doc, "af", a)


async def test_copies_of_copies_go_to_each_insertion_step_whoever_undoes(
    tmp_path: Path,
) -> None:
    """Bob deletes across alice's two steps and undoes it; carol deletes the restored
    copies and undoes that. Each of alice's steps owns its part of both generations of
    copies (bob's undo step owns all of the first), so after a reload undoing alice's
    "def" removes every copy of "de"."""
    async with serving(make_settings(tmp_path / "db")) as srv:
        async with (
            connect(srv.ws_url, "cc", "bob") as b,
            connect(srv.ws_url, "cc", "alice") as a,
            connect(srv.ws_url, "cc", "carol") as c,
        ):
            await edit(b, srv, "cc", lambda: b.insert(0, ">"))
            await edit(a, srv, "cc", lambda: a.insert(1, "abc"))
            await edit(a, srv, "cc", lambda: a.insert(4, "def"))
            await converged(srv, "cc", ">abcdef", a, b, c)
            await edit(b, srv, "cc", lambda: b.text.__delitem__(slice(2, 6)))
            await converged(srv, "cc", ">af", a, b, c)
            assert (await undo(b))["ok"]
            await converged(srv, "cc", ">abcdef", a, b, c)
            await edit(c, srv, "cc", lambda: c.text.__delitem__(slice(2, 6)))
            await converged(srv, "cc", ">af", a, b, c)
            assert (await undo(c))["ok"]
            await converged(srv, "cc", ">abcdef", a, b, c)
        await unloaded(srv, "cc")
        async with connect(srv.ws_url, "cc", "alice") as a:
            assert (await undo(a))["ok"]
            await converged(srv, "cc", ">abc", a)
            assert (await undo(a))["ok"]
            await converged(srv, "cc", ">", a)
            assert (await undo(a, "redo"))["ok"]
            assert (await undo(a, "redo"))["ok"]
            await converged(srv, "cc", ">abcdef", a)


async def test_compact_keeps_the_undo_stacks_of_folded_events(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "db"
    async with serving(make_settings(db)) as srv:
        async with connect(srv.ws_url, "c1", "alice") as a, connect(srv.ws_url, "c1", "bob") as b:
            await edit(a, srv, "c1", lambda: a.insert(0, "hello world"))
            await edit(a, srv, "c1", lambda: a.text.__delitem__(slice(5, 11)))
            await edit(b, srv, "c1", lambda: b.insert(5, "!"))
            await edit(a, srv, "c1", lambda: a.text.__delitem__(slice(0, 2)))
            await converged(srv, "c1", "llo!", a, b)
    r = await cli(capfd, "compact", "c1", "--before", "4", "--yes", "--db", str(db))
    assert r.code == 0 and "4 events folded" in r.out, r
    r = await cli(capfd, "inspect", "c1", "--json", "--db", str(db))
    info = json.loads(r.out)
    assert info["base_seq"] == 4 and info["events"] == 0, info
    assert (await cli(capfd, "verify", "--db", str(db))).code == 0

    async with serving(make_settings(db)) as srv:
        async with connect(srv.ws_url, "c1", "alice") as a:
            assert (await undo(a))["ok"]
            await converged(srv, "c1", "hello!", a)
            assert (await undo(a))["ok"]  # " world" comes back at its place
            await converged(srv, "c1", "hello world!", a)
            assert (await undo(a))["ok"]
            await converged(srv, "c1", "!", a)  # bob's edit stays
            r = await undo(a)
            assert r["ok"] is False and r["reason"] == "nothing to undo"
            assert (await undo(a, "redo"))["ok"]
            await converged(srv, "c1", "hello world!", a)
