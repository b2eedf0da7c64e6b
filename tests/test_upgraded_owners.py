"""A document written before the attribution rule (server/ownership.py), upgraded: its
snapshots carry no owner map (``owners`` in their meta), so the client ids they hold
belonged to nobody once loaded from one. An undo then counted the undoer's own text as
nobody's (``removed_others`` with user null, though blame names the undoer), and the
first user to write under such an id took it. Now a load from a snapshot without the
map rebuilds it from the log up to the snapshot (every event names its writer), and so
does `palimpsest compact`'s fold before it drops that log.

The old data is made with this code, then the map is taken out of the snapshot rows, as
a version before the rule wrote them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from conftest import RunningServer, free_port, run_server
from pycrdt import Doc, Text
from sqlitehelp import sqlite_conn
from test_forgery import closed
from yclient import connect

from palimpsest import client
from palimpsest import protocol as P
from palimpsest.settings import Settings
from palimpsest.store import snapshot_codec

ALICE_TEXT = "Hello from alice. "
BOB_TEXT = "Hi from bob. "


def make_settings(db: Path) -> Settings:
    return Settings(db=str(db), port=free_port(), unload_after_seconds=0.3, undo_capture_ms=0)


async def typed_together(settings: Settings, doc: str) -> tuple[bytes, int]:
    """alice and bob type into `doc`, one step each; the server stops (a snapshot is
    written as the room unloads). Returns alice's document state and client id."""
    async with run_server(settings) as srv:
        async with (
            client.connect(srv.ws_url, doc, user="alice") as a,
            client.connect(srv.ws_url, doc, user="bob") as b,
        ):
            a.text().insert(0, ALICE_TEXT)
            await a.flush()
            await b.wait_for(lambda: str(b.text()) == ALICE_TEXT)
            b.text().insert(len(ALICE_TEXT), BOB_TEXT)
            await b.flush()
            await a.wait_for(lambda: str(a.text()) == ALICE_TEXT + BOB_TEXT)
            alice: bytes = a.doc.get_update()
            alice_id: int = a.doc.client_id
    return alice, alice_id


def strip_owners(db: Path, doc: str) -> None:
    """Every snapshot of `doc` as a version before the attribution rule wrote it."""
    with sqlite_conn(db) as conn:
        rows = conn.execute(
            "SELECT seq, state, checksum, meta FROM snapshots WHERE doc = ?", (doc,)
        ).fetchall()
        assert rows, "no snapshot was written"
        for seq, stored, checksum, column in rows:
            state, meta = snapshot_codec.decode(stored, checksum, column)
            assert "owners" in meta, meta
            del meta["owners"]
            packed = snapshot_codec.pack(
                state,
                json.dumps(meta),
                snapshot_codec.delta_of(column),
                snapshot_codec.is_bare(column),
            )
            conn.execute(
                "UPDATE snapshots SET state = ?, checksum = ?, meta = ? WHERE doc = ? AND seq = ?",
                (*packed, doc, seq),
            )


async def upgraded(tmp_path: Path, doc: str) -> tuple[Settings, Doc[Any], int]:
    settings = make_settings(tmp_path / "p.db")
    state, alice_id = await typed_together(settings, doc)
    strip_owners(tmp_path / "p.db", doc)
    alice: Doc[Any] = Doc(client_id=alice_id)
    alice.apply_update(state)
    return settings, alice, alice_id


async def forged_by_mallory(srv: RunningServer, doc: str, alice: Doc[Any], alice_id: int) -> Any:
    """Mallory sends text written under alice's client id (her next clocks)."""
    forged: Doc[Any] = Doc(client_id=alice_id)
    forged.apply_update(alice.get_update())
    before = forged.get_state()
    forged.get("content", type=Text).insert(0, "FORGED ")
    async with connect(srv.ws_url, doc, "mallory") as mallory:
        await mallory.send_raw(P.encode_sync_update(forged.get_update(before)))
        return await closed(mallory)


async def test_an_undo_of_ones_own_text_in_an_upgraded_document_names_nobody_else(
    tmp_path: Path,
) -> None:
    settings, _alice, _ = await upgraded(tmp_path, "alpha")
    async with run_server(settings) as srv, httpx.AsyncClient() as http:
        blame = (await http.get(f"{srv.url}/api/docs/alpha/blame")).json()
        r = await http.post(f"{srv.url}/api/docs/alpha/undo?user=alice")
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["ok"] is True, answer
        assert answer["removed"] == {"characters": len(ALICE_TEXT), "items": 0}, answer
        # blame names alice for all of it; the undo's answer agrees
        assert "removed_others" not in answer, (answer, blame)
        # bob's undo of his own line, through the Python client, the same
        async with client.History(srv.url, user="bob") as h:
            got = await h.undo("alpha")
        assert got.ok and got.removed_characters == len(BOB_TEXT), got
        assert got.removed_others == (), got


async def test_an_upgraded_documents_client_ids_stay_their_writers(tmp_path: Path) -> None:
    """The first user to write under an unowned id claimed it: mallory could write as
    alice (and alice's own next edits, at the same clocks, were then dropped)."""
    settings, alice, alice_id = await upgraded(tmp_path, "beta")
    async with run_server(settings) as srv:
        code, reason = await forged_by_mallory(srv, "beta", alice, alice_id)
        assert code == 4403 and "belongs to another user" in (reason or ""), (code, reason)
        room = srv.backend.rooms.loaded["beta"]
        assert room.owners.owners.get(alice_id) == "alice", room.owners.owners
        # alice types on under her id, as herself
        async with client.connect(srv.ws_url, "beta", user="alice", ydoc=alice) as a:
            a.text().insert(0, "> ")
            await a.flush()
        assert [e.actor for e in await srv.backend.store.read("beta")] == ["alice", "bob", "alice"]
    # the map goes with the next snapshot: a later load needs no rebuild
    async with run_server(settings) as srv:
        snap = await srv.backend.store.latest_snapshot("beta")
        assert snap is not None and snap.meta["owners"].get(str(alice_id)) == "alice", snap


async def test_compacting_an_upgraded_document_keeps_its_owners(tmp_path: Path) -> None:
    """`palimpsest compact` folds the log into a base snapshot and drops it: from a
    snapshot without the map, the folded events' ids belonged to nobody for good."""
    from palimpsest.maintenance import compact_doc, plan_compact
    from palimpsest.store.sqlite import SQLiteStore

    settings, alice, alice_id = await upgraded(tmp_path, "gamma")
    store = SQLiteStore(settings.db)
    async with store:
        head = await store.head("gamma")
        assert await compact_doc(store, await plan_compact(store, "gamma", head), settings)
        base = await store.latest_snapshot("gamma")
        assert base is not None and base.meta["owners"].get(str(alice_id)) == "alice", base
    async with run_server(settings) as srv:
        code, reason = await forged_by_mallory(srv, "gamma", alice, alice_id)
        assert code == 4403 and "belongs to another user" in (reason or ""), (code, reason)
