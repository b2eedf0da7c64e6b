"""Purging deleted content (compact with purge_deleted, server/erasure.py): text typed
and deleted before the base is in nothing served or stored afterwards; what was deleted
after the base stays; connected clients keep working."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
from conftest import RunningServer, eventually
from pycrdt import Doc
from test_admin_cli import cli
from test_undo import converged, edit, make_settings, serving, undo
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest.cli import main
from palimpsest.store import open_store

SECRET = "ZQXPASSWORD99"
LATER = "KEEPDELETED77"


async def first_step2(srv: RunningServer, doc: str) -> bytes:
    """What a new reader (an empty Y.Doc) receives as its sync step 2."""
    async with connect(srv.ws_url, doc, "reader") as r:
        return next(m.update for m in r.frames if isinstance(m, P.SyncStep2))


async def head_update(srv: RunningServer, doc: str) -> bytes:
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
        r = await http.get(f"/api/docs/{doc}/versions/head", params={"format": "update"})
        assert r.status_code == 200, r.text
        return r.content


async def purge(srv: RunningServer, doc: str, before: int) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
        r = await http.post(f"/api/docs/{doc}/compact", params={"user": "ops"},
                            json={"before": before, "purge_deleted": True})  # fmt: skip
        assert r.status_code == 200, r.text
        answer: dict[str, object] = r.json()
        return answer


def delete_word(c: YClient, word: str) -> None:
    i = str(c.text).index(word)
    del c.text[i : i + len(word)]


async def stored_states(db: Path, doc: str) -> list[bytes]:
    async with open_store(f"sqlite:///{db}") as store:
        out = []
        for s in await store.snapshots(doc):
            snap = await store.latest_snapshot(doc, s.seq)
            assert snap is not None
            out.append(snap.state)
        return out


async def test_purge_removes_text_deleted_before_the_base_from_all_a_reader_gets(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    async with serving(make_settings(db, snapshot_every=2)) as srv:
        async with connect(srv.ws_url, "e1", "alice") as a:
            await edit(a, srv, "e1", lambda: a.text.insert(0, f"my password is {SECRET} ok"))
            await edit(a, srv, "e1", lambda: delete_word(a, SECRET))
            await edit(a, srv, "e1", lambda: a.text.insert(len(str(a.text)), f" {LATER}"))
            # the old behaviour: a new reader gets the deleted secret
            assert SECRET.encode() in await first_step2(srv, "e1")
            assert SECRET.encode() in await head_update(srv, "e1")
            answer = await purge(srv, "e1", 3)
            assert answer["purged"] is True and answer["base"] == 3
            assert answer["closed"] == 1  # alice: reconnect (1013)
            await eventually(lambda: a.close_code == 1013, what="alice told to reconnect")
            kept = Doc()
            kept.apply_update(a.doc.get_update())  # her copy still holds the secret
        # alice comes back with her copy: same state vector, her edits still apply
        async with connect(srv.ws_url, "e1", "alice", ydoc=kept) as a:
            await edit(a, srv, "e1", lambda: delete_word(a, LATER))  # deleted after the base
            await edit(a, srv, "e1", lambda: a.text.insert(3, "new "))
            await converged(srv, "e1", "my new password is  ok ", a)
            got = await first_step2(srv, "e1")
            assert SECRET.encode() not in got
            assert LATER.encode() in got  # deleted after the base: history keeps it
            head = await head_update(srv, "e1")
            assert SECRET.encode() not in head and LATER.encode() in head
            # undo can no longer bring the purged text back
            for _ in range(6):
                await undo(a)
            room = srv.backend.rooms.get_loaded("e1")
            assert room is not None
            assert SECRET.encode() not in room.doc.get_update()
            assert SECRET not in str(room.doc.get("content", type=type(a.text)))
    for state in await stored_states(db, "e1"):
        assert SECRET.encode() not in state
    ran = await cli_export(db, "e1")
    assert SECRET.encode() not in ran


async def cli_export(db: Path, doc: str) -> bytes:
    """`palimpsest export DOC --format update` (in a thread: it runs its own loop)."""
    out = db.parent / "export.yjs"
    with contextlib.suppress(SystemExit):
        await asyncio.to_thread(
            main, ["export", doc, "--db", str(db), "--format", "update", "-o", str(out)]
        )
    return out.read_bytes()


async def test_cli_purge_deleted_on_the_store(tmp_path: Path, capfd: object) -> None:
    db = tmp_path / "db"
    async with serving(make_settings(db, snapshot_every=1)) as srv:
        async with connect(srv.ws_url, "e2", "alice") as a:
            await edit(a, srv, "e2", lambda: a.text.insert(0, f"a {SECRET} b"))
            await edit(a, srv, "e2", lambda: delete_word(a, SECRET))
            await edit(a, srv, "e2", lambda: a.text.insert(0, ">"))
    assert any(SECRET.encode() in s for s in await stored_states(db, "e2"))
    ran = await cli(capfd, "compact", "e2", "--db", str(db), "--before", "2")  # type: ignore[arg-type]
    assert ran.code != 0 and "--yes" in ran.err
    ran = await cli(capfd, "compact", "e2", "--db", str(db), "--before", "2", "--yes",  # type: ignore[arg-type]
                    "--purge-deleted")  # fmt: skip
    assert ran.code == 0, ran.err
    assert "purged" in ran.out
    states = await stored_states(db, "e2")
    assert states and not any(SECRET.encode() in s for s in states)  # the rung @3 too
    assert SECRET.encode() not in await cli_export(db, "e2")
    async with serving(make_settings(db)) as srv:
        assert SECRET.encode() not in await first_step2(srv, "e2")
        async with connect(srv.ws_url, "e2", "bob") as b:
            await edit(b, srv, "e2", lambda: b.text.insert(len(str(b.text)), "!"))
            await converged(srv, "e2", ">a  b!", b)
