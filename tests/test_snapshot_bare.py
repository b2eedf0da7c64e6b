"""Ladder rungs older than the newest few are made bare (server.retention): their meta
keeps no undo stacks and no owners. A room never restores those from a bare rung: it
loads from the newest snapshot that is not bare, or replays the whole log. SQLite
through a real server, and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import eventually, free_port, run_server
from pycrdt import Text
from sqlitehelp import sqlite_conn
from test_snapshot_retention import bench, trace_texts
from yclient import connect

from palimpsest.backend import Backend
from palimpsest.history import history_of
from palimpsest.maintenance import verify_doc
from palimpsest.retention import Retention, bare_meta, prune, to_strip
from palimpsest.settings import Settings
from palimpsest.snapshots import load
from palimpsest.store import open_store
from palimpsest.store.base import SnapshotInfo


def info(seq: int, bare: bool = False, valid: bool = True) -> SnapshotInfo:
    return SnapshotInfo("d", seq, 0, 100, valid, "" if valid else "checksum", 0, bare)


def test_what_is_made_bare() -> None:
    rules = Retention(keep_recent=2, max_gap=1000)
    infos = [info(s) for s in (500, 1000, 2000, 3000, 4000, 5000)]
    # the newest two keep their meta, and so do the compaction base and what is before it
    assert to_strip(infos, 1000, rules) == [2000, 3000]
    assert to_strip(infos, 0, rules) == [500, 1000, 2000, 3000]
    # a damaged snapshot is not rewritten, nor one bare already; a damaged newest one
    # does not count among the newest few
    infos = [info(1000, bare=True), info(2000), info(3000), info(4000, valid=False), info(5000)]
    assert to_strip(infos, 0, rules) == [2000]
    assert bare_meta({"undo": {"x": 1}, "owners": {"1": "a"}, "delta_of": 7, "base": True}) == {
        "delta_of": 7, "base": True, "bare": True,
    }  # fmt: skip


def settings(db: Path) -> Settings:
    return Settings(
        db=str(db), port=free_port(), unload_after_seconds=0.3, undo_capture_ms=0,
        snapshot_every=3, snapshot_quiet_seconds=0, snapshot_keep_recent=2,
        snapshot_max_gap=4,
    )  # fmt: skip


async def _write(db: Path) -> tuple[list[str], int]:
    """alice types words one edit each, through a real server; the texts after each edit
    and her Yjs client id."""
    texts = []
    async with run_server(settings(db)) as srv:
        async with connect(srv.ws_url, "b1", "alice") as a:
            for i in range(25):  # 25: the last snapshot is the idle one, which converts
                room = srv.backend.rooms.get_loaded("b1")
                want = (room.seq if room else 0) + 1
                a.insert(len(a.content), f"w{i} ")
                texts.append(a.content)
                await eventually(
                    lambda w=want: srv.backend.rooms.get_loaded("b1").seq >= w  # type: ignore[union-attr,misc]
                )
            client = a.doc.client_id
        await eventually(lambda: "b1" not in srv.backend.rooms)
        await srv.backend.snapshots.drain()
    return texts, client


async def _infos(db: Path) -> list[SnapshotInfo]:
    async with open_store(f"sqlite:///{db}") as store:
        return await store.snapshots("b1")


async def _undo_works(db: Path, texts: list[str], client: int) -> Any:
    """After a restart alice's undo takes back her last two edits (the room got her undo
    stacks), and the room knows her client id is hers; returns the room's LoadInfo.
    `texts`: the texts before each of her edits still undoable, the last one last."""
    async with run_server(settings(db)) as srv:
        async with connect(srv.ws_url, "b1", "alice") as a:
            room = srv.backend.rooms.get_loaded("b1")
            assert room is not None
            loaded = room.loaded
            assert room.owners.owners.get(client) == "alice"
            r = await a.request({"type": "undo"})
            assert r["ok"], r
            await eventually(lambda: str(room.doc.get("content", type=Text)) == texts[-2])
            r = await a.request({"type": "undo"})
            assert r["ok"], r
            await eventually(lambda: str(room.doc.get("content", type=Text)) == texts[-3])
    return loaded


async def test_a_room_never_loads_undo_stacks_from_a_bare_rung(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    texts, client = await _write(db)
    infos = await _infos(db)
    valid = [s for s in infos if s.valid]
    assert len(valid) >= 4 and all(s.valid for s in infos)
    # the newest two keep the undo stacks and owners, every older rung is bare
    assert [s.bare for s in valid[-2:]] == [False, False]
    assert valid[:-2] and all(s.bare for s in valid[:-2]), [(s.seq, s.bare) for s in valid]
    async with open_store(f"sqlite:///{db}") as store:
        for s in valid:
            snap = await store.latest_snapshot("b1", s.seq)
            assert snap is not None and snap.seq == s.seq and snap.bare == s.bare
            if s.bare:
                assert set(snap.meta) <= {"bare", "delta_of", "base"}, snap.meta
            else:
                assert "undo" in snap.meta and "owners" in snap.meta, snap.meta
        # versions read bare rungs as any other, exactly
        for n in range(1, len(texts) + 1):
            loaded = await load(store, "b1", upto=n)
            assert str(loaded.doc.get("content", type=Text)) == texts[n - 1], n
        assert await verify_doc(store, "b1") == []
    loaded = await _undo_works(db, texts, client)
    assert loaded.snapshot_seq == valid[-1].seq  # from the newest, which has the stacks
    del texts[-2:]  # undone

    # the newest two damaged: only bare rungs are valid; the room does not take one of
    # them (no stacks, no owners) but replays the whole log, which rebuilds both
    valid = [s for s in await _infos(db) if s.valid]
    assert [s.bare for s in valid[-2:]] == [False, False] and all(s.bare for s in valid[:-2])
    with sqlite_conn(db) as c:
        for s in valid[-2:]:
            (blob,) = c.execute("SELECT state FROM snapshots WHERE seq = ?", (s.seq,)).fetchone()
            # the last byte flipped (set to 0 it was no damage when it was 0 already)
            bad = blob[:-1] + bytes([blob[-1] ^ 0xFF])
            c.execute("UPDATE snapshots SET state = ? WHERE seq = ?", (bad, s.seq))
    async with open_store(f"sqlite:///{db}") as store:
        newest = await store.latest_snapshot("b1")
        assert newest is not None and newest.bare  # what a version would start from
        assert (await load(store, "b1", with_meta=True)).snapshot is None
    loaded = await _undo_works(db, texts, client)
    assert loaded.snapshot_seq is None and loaded.replayed == valid[-1].seq


@pytest.mark.postgres
async def test_bare_rungs_on_postgresql() -> None:
    from scaleout import fresh_schema

    n = 5000
    events, _ = bench.trace_events("automerge-paper", limit=n)
    texts = trace_texts("automerge-paper", n)
    meta = {"undo": {"actors": {"ann": {"undo": [], "redo": []}}}, "owners": {"7": "ann"}}
    async with fresh_schema() as url, Backend(Settings(store=url, snapshot_every=500)) as backend:
        store = backend.store
        await bench.write_log(store, "paper", events, 500)
        for s in await store.snapshots("paper"):  # as a server writes them: with meta
            snap = await store.latest_snapshot("paper", s.seq)
            assert snap is not None
            await store.put_snapshot("paper", s.seq, snap.state, meta)
        before = sum(s.size for s in await store.snapshots("paper"))
        await prune(store, "paper", Retention(keep_recent=2, max_gap=1000, key_every=3))
        infos = await store.snapshots("paper")
        assert all(s.valid for s in infos)
        assert [s.bare for s in infos[-2:]] == [False, False]
        assert all(s.bare for s in infos[:-2]) and any(s.delta_of for s in infos[:-2])
        assert sum(s.size for s in infos) < before
        loaded = await load(store, "paper", with_meta=True)
        assert loaded.snapshot is not None and loaded.snapshot.meta["owners"] == {"7": "ann"}
        # the newest two gone: a version starts from a bare rung, a room from the log
        await store.delete_snapshots("paper", [s.seq for s in infos[-2:]])
        assert (await load(store, "paper")).snapshot.bare  # type: ignore[union-attr]
        full = await load(store, "paper", with_meta=True)
        assert full.snapshot is None and full.replayed == n
        assert str(full.doc.get("content", type=Text)) == texts[n]
        h = history_of(backend)
        for s in (1, 999, 2500, 3333, 4999):
            v = await h.version("paper", s)
            assert v["roots"]["content"]["value"] == texts[s], s
        assert await verify_doc(store, "paper") == []
