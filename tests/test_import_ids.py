"""A document moved here with `palimpsest import` while its editors' tabs stayed open
on the old server: each tab keeps its Y.Doc and its Yjs client id, and when it
reconnects here its step 2 (its offline edits) and what it types next carry that id.
The import is the importer's event, but it claims none of the client ids it carries
(ownership.py): they go to the first user who writes under them again, on a reload
and from a snapshot as well. Before, every id went to `--user` (default admin), and
every tab was refused for good (4403 `client id N belongs to another user`): what it
held and everything typed in it afterwards was never logged."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually, run_server
from pycrdt import Doc, Text
from serverproc import REPO_ROOT, ServerProcess
from test_admin_cli import cli
from test_hocuspocus_node import Driver, stored_text
from test_interop_node import node_modules
from yclient import connect

from palimpsest.ownership import META_KEY as OWNERS
from palimpsest.settings import Settings

__all__ = ["node_modules"]  # the session fixture that runs `npm ci` when needed

DOC = "moved"


def _text(d: Doc[Any]) -> Text:
    return d.get("content", type=Text)


def _append(d: Doc[Any], s: str) -> None:
    t = _text(d)
    t.insert(len(t), s)


async def _forged_write_refused(ws_url: str, victim: Doc[Any], user: str) -> None:
    """`user` writes under `victim`'s client id, which `victim`'s user has written under
    again since the import: refused, 4403."""
    forged: Doc[Any] = Doc(client_id=victim.client_id)
    forged.apply_update(victim.get_update())
    async with connect(ws_url, DOC, user, ydoc=forged) as c:
        _append(forged, f"{user} as another")
        await eventually(lambda: c.close_code is not None, what="refused")
    assert c.close_code == 4403 and "belongs to another user" in str(c.close_reason)


def _sync(*docs: Doc[Any]) -> None:
    """What the old server did: everyone gets everyone's edits."""
    for a in docs:
        for b in docs:
            if a is not b:
                b.apply_update(a.get_update(b.get_state()))


def _old_server(*parts: str) -> list[Doc[Any]]:
    """One tab per writer on the old server, each writing its part in turn."""
    tabs: list[Doc[Any]] = []
    for part in parts:
        tab: Doc[Any] = Doc()
        tabs.append(tab)
        _sync(*tabs)
        _append(tab, part)
        _sync(*tabs)
    return tabs


async def _head(url: str) -> str:
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{url}/api/docs/{DOC}/versions/head")
    r.raise_for_status()
    return str(r.json()["roots"]["content"]["value"])


async def test_tabs_open_during_a_move_go_on_writing_after_the_import(
    tmp_path: Path, settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    """Alice, Bob and Dave wrote the document on the old server. It is imported by
    `migrator`; Alice and Bob reconnect with offline edits and type on: all logged,
    nobody refused. Their ids are theirs from then on (Carol cannot write as Alice),
    Dave's is still nobody's after a reload from a snapshot, and he comes back too."""
    alice, bob, dave = _old_server("Alice. ", "Bob. ", "Dave. ")
    moved = tmp_path / "moved.yjs"
    moved.write_bytes(alice.get_update())
    r = await cli(capfd, "import", DOC, str(moved), "--user", "migrator", "--db", settings.db)
    assert r.code == 0, r
    _append(alice, "[alice offline] ")
    _append(bob, "[bob offline] ")

    async with run_server(settings) as server:
        async with (
            connect(server.ws_url, DOC, "alice", ydoc=alice) as a,
            connect(server.ws_url, DOC, "bob", ydoc=bob) as b,
        ):
            for c in (a, b):
                await eventually(
                    lambda c=c: "[alice offline]" in c.content and "[bob offline]" in c.content,
                    what="both offline edits",
                )
            a.insert(len(a.content), "Alice here. ")
            await eventually(lambda: "Alice here." in b.content, what="alice typed on")
            b.insert(len(b.content), "Bob here.")
            await eventually(lambda: "Bob here." in a.content, what="bob typed on")
        for c in (a, b):
            assert c.close_code in (None, 1000), c.close_reason
        head = await _head(server.url)
        for part in ("Alice. Bob. Dave. ", "[alice offline]", "[bob offline]", "Alice here."):
            assert part in head
        assert head.endswith("Bob here.")
        # the imported text is the importer's, what each tab wrote here its user's
        by: dict[str, str] = {}
        for text, actor in await _blame(server.url):
            by[actor] = by.get(actor, "") + text
        assert by == {
            "migrator": "Alice. Bob. Dave. ",
            "alice": "[alice offline] Alice here. ",
            "bob": "[bob offline] Bob here.",
        }
        ev, *later = await server.backend.store.read(DOC)
        assert (ev.kind, ev.actor) == ("import", "migrator")
        assert ev.meta["relays"] == sorted(d.client_id for d in (alice, bob, dave))
        assert {e.actor for e in later} == {"alice", "bob"}

        # an id its tab wrote under again is its user's: nobody else writes under it
        await _forged_write_refused(server.ws_url, alice, "carol")

    # the room unloaded with a snapshot: it says who owns what, and Dave's id is nobody's
    snap = await _latest_snapshot(settings)
    owners = snap.meta[OWNERS]
    assert owners[str(alice.client_id)] == "alice" and owners[str(bob.client_id)] == "bob"
    assert str(dave.client_id) not in owners and "migrator" not in owners.values()
    _append(dave, "[dave offline]")
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "dave", ydoc=dave) as d:
            await eventually(lambda: _has(server.url, "[dave offline]"), what="dave's step 2")
            _append(dave, " Dave here.")
            await eventually(lambda: _has(server.url, "Dave here."), what="dave typed on")
        assert d.close_code in (None, 1000), d.close_reason


async def _blame(url: str) -> list[tuple[str, str]]:
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{url}/api/docs/{DOC}/blame", params={"join": "actor"})
    r.raise_for_status()
    return [(run["text"], run["actor"]) for run in r.json()["roots"]["content"]["runs"]]


async def _has(url: str, part: str) -> bool:
    return part in await _head(url)


async def _latest_snapshot(settings: Settings) -> Any:
    from palimpsest.store.sqlite import SQLiteStore

    async with SQLiteStore(settings.db) as store:
        snap = await store.latest_snapshot(DOC)
    assert snap is not None
    return snap


@pytest.mark.node
async def test_open_hocuspocus_and_y_websocket_tabs_reconnect_after_an_import(
    node_modules: Path, tmp_path: Path
) -> None:
    """The field report: documents written by two users on Hocuspocus, imported with
    `--user migrator`, both users' tabs (a @hocuspocus/provider 3.x and a y-websocket
    provider here, each keeping its Y.Doc and client id) reconnect with an offline edit
    and type on. Every edit is logged; nobody is refused (it was 58 of 58 tabs)."""
    alice, bob = _old_server("Alice wrote this. ", "Bob wrote that. ")
    moved = tmp_path / "moved.yjs"
    moved.write_bytes(alice.get_update())
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    db = srv_dir / "palimpsest.db"
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "palimpsest", "import", "hp-moved", str(moved),
         "--user", "migrator", "--db", str(db)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    state = base64.b64encode(alice.get_update()).decode()

    def tab(d: Doc[Any], offline: str) -> dict[str, Any]:
        return {"state": state, "clientID": d.client_id, "offline": offline}

    async with (
        ServerProcess(srv_dir, db_path=db) as srv,
        Driver(srv, tmp_path / "d.log") as drv,
    ):
        await drv.socket("s3", 3)
        await drv.call(
            "open", name="alice", socket="s3", doc="hp-moved", token="alice",
            tab=tab(alice, "[alice offline] "),
        )  # fmt: skip
        await drv.call(
            "yws", name="bob", url=srv.ws_url, doc="hp-moved", params={"user": "bob"},
            tab=tab(bob, "[bob offline] "),
        )  # fmt: skip
        both = ["[alice offline]", "[bob offline]"]
        for name in ("alice", "bob"):
            await drv.wait(name, "text", contains=both)
        await drv.call("insert", name="alice", text="Alice is back.")
        await drv.call("insert", name="bob", text="Bob is back.")
        for name in ("alice", "bob"):
            await drv.wait(name, "text", contains=["Alice is back.", "Bob is back."])
        await drv.wait("alice", "unsynced", equals=0)
        stored = await eventually(
            lambda: _holds(srv, [*both, "Alice is back.", "Bob is back."]), what="all logged"
        )
        assert "Alice wrote this. Bob wrote that. " in stored
        for name in ("alice", "bob"):
            s = await drv.call("state", name=name)
            assert s["closes"] == [] and s["denied"] == [], s
        assert "4403" not in srv.log_text()


async def _holds(srv: ServerProcess, parts: list[str]) -> str | None:
    text = await stored_text(srv, "hp-moved")
    return text if all(p in text for p in parts) else None
