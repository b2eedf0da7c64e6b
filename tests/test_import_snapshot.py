"""An import on the store directly (`palimpsest import-from`, `palimpsest import`) leaves a
snapshot at the head of a document with `snapshot_every` events or more since its last
one, written as a room writes it: a fresh server's first load reads it instead of
replaying every event (a pycrdt-websocket YStore comes over one row per event), serves
the same document, and the Yjs client ids the import carries stay nobody's (owners).
Before, no snapshot was written, and the first load replayed every imported event."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import PG_URL, eventually, free_port, run_server
from pycrdt import Doc, Text
from serverproc import REPO_ROOT
from test_import_from import ystore_write
from test_import_ids import DOC, _forged_write_refused
from yclient import connect

from palimpsest.ownership import META_KEY as OWNERS
from palimpsest.settings import Settings
from palimpsest.store import open_store

EVERY = 50
ROWS = 130


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'p.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield f"{PG_URL}?schema={schema}"
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def palimpsest(*argv: str, every: int = EVERY) -> subprocess.CompletedProcess[str]:
    """`palimpsest ARGV` as its own process, with snapshots every `every` events."""
    env = {**os.environ, "PALIMPSEST_SNAPSHOT_EVERY": str(every)}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "palimpsest", *argv],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def _text(d: Doc[Any]) -> Text:
    return d.get("content", type=Text)


def old_server(rows: int) -> tuple[Doc[Any], Doc[Any], list[bytes]]:
    """Alice's and Bob's tabs on a pycrdt-websocket server, taking turns: each update one
    YStore row."""
    alice: Doc[Any] = Doc()
    bob: Doc[Any] = Doc()
    out: list[bytes] = []
    for i in range(rows):
        tab, other = (alice, bob) if i % 2 == 0 else (bob, alice)
        before = tab.get_state()
        t = _text(tab)
        t.insert(len(t), f"{'ab'[i % 2]}{i} ")
        update = tab.get_update(before)
        other.apply_update(update)
        out.append(update)
    return alice, bob, out


async def stored(url: str) -> tuple[int, Any]:
    store = open_store(url)
    async with store:
        return await store.head(DOC), await store.latest_snapshot(DOC)


async def test_a_ystore_import_leaves_a_snapshot_the_first_load_reads(
    tmp_path: Path, store_url: str
) -> None:
    alice, bob, rows = old_server(ROWS)
    src = tmp_path / "ystore.db"
    await ystore_write(src, "/" + DOC, rows)

    r = await palimpsest("import-from", "ystore", str(src), "--store", store_url)
    assert r.returncode == 0, r
    assert f"/{DOC} -> {DOC}: {ROWS} events, snapshot @{ROWS}" in r.stderr, r
    head, snap = await stored(store_url)
    assert head == ROWS and snap is not None and snap.seq == ROWS
    # written as a room writes it: the features' meta, the imported ids nobody's
    assert {"undo", OWNERS, "astral"} <= set(snap.meta), snap.meta
    assert snap.meta[OWNERS] == {}

    settings = Settings(store=store_url, port=free_port(), snapshot_every=EVERY)
    async with run_server(settings) as server:
        assert server.backend.rooms.loaded == {}
        async with connect(server.ws_url, DOC, "reader") as c:
            room = server.backend.rooms.loaded[DOC]
            assert (room.loaded.snapshot_seq, room.loaded.replayed) == (ROWS, 0)
            assert c.content == str(_text(alice)) == str(_text(bob))
            assert room.owners.to_meta() == {}
        # the imported ids are still nobody's: Alice and Bob come back and type on
        for user, tab in (("alice", alice), ("bob", bob)):
            async with connect(server.ws_url, DOC, user, ydoc=tab) as c:
                c.insert(len(c.content), f"[{user} back]")
                await eventually(lambda u=user: f"[{u} back]" in str(_text(room.doc)),
                                 what=f"{user}'s edit")  # fmt: skip
            assert c.close_code in (None, 1000), c.close_reason
        # and once written under again, theirs
        assert room.owners.to_meta() == {str(alice.client_id): "alice", str(bob.client_id): "bob"}
        await _forged_write_refused(server.ws_url, alice, "carol")


async def test_imports_one_at_a_time_snapshot_when_the_count_is_reached(
    tmp_path: Path, store_url: str
) -> None:
    """`palimpsest import` brings one update per run: the run that takes the events since
    the last snapshot to `snapshot_every` writes one; the runs before it do not."""
    every = 4
    alice, _, rows = old_server(every + 1)
    for i, row in enumerate(rows, start=1):
        f = tmp_path / f"{i}.yjs"
        f.write_bytes(row)
        r = await palimpsest("import", DOC, str(f), "--store", store_url, "--user", "mover",
                             every=every)  # fmt: skip
        assert r.returncode == 0, r
        assert ("snapshot @" in r.stdout) == (i == every), r.stdout
    head, snap = await stored(store_url)
    assert head == every + 1 and snap is not None and snap.seq == every
    assert snap.meta[OWNERS] == {}
    settings = Settings(store=store_url, port=free_port(), snapshot_every=every)
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "reader") as c:
            room = server.backend.rooms.loaded[DOC]
            assert (room.loaded.snapshot_seq, room.loaded.replayed) == (every, 1)
            assert c.content == str(_text(alice))


async def test_imports_through_a_live_server_are_snapshotted_by_its_room(
    store_url: str,
) -> None:
    """POST /api/docs/{doc}/updates goes through the room, whose policy counts its events
    like any other: past `snapshot_every` of them, a snapshot, with the ids unclaimed."""
    every = 4
    alice, _, rows = old_server(every + 2)
    settings = Settings(store=store_url, port=free_port(), snapshot_every=every)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        for row in rows:
            r = await http.post(f"/api/docs/{DOC}/updates", content=row, params={"user": "ops"},
                                headers={"content-type": "application/octet-stream"})  # fmt: skip
            assert r.status_code == 200, r.text
        store = server.backend.store

        async def snapshotted() -> Any:
            snap = await store.latest_snapshot(DOC)
            return snap if snap is not None and snap.seq >= every else None

        snap = await eventually(snapshotted, what="a snapshot")
        assert snap.meta[OWNERS] == {}
        assert str(_text(server.backend.rooms.loaded[DOC].doc)) == str(_text(alice))
