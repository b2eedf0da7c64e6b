"""Edits the store lost come back from the clients that hold them (ownership.py).

Restoring a backup, losing the database file, a crash with ``--durability os`` or a
database failover lose edits the clients still hold: everyone's, since each client got
the others' through the server. Their sync step 2 carries them back. The attribution
rule used to refuse such a step 2 whole (4403, "client id N belongs to another user"),
and y-websocket reconnects at once: every client was locked out, and every edit made
since the backup was lost. Real server, real SQLite files, raw y-websocket clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import RunningServer, eventually, run_server
from pycrdt import Doc, Text
from sqlitehelp import sqlite_conn
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest.cli.backup import backup
from palimpsest.recovery import RESTORED_MINUTES, recovery_marker, restored_minutes
from palimpsest.settings import Settings

DOC = "chapter"


async def _type(c: YClient, text: str) -> None:
    c.insert(len(c.content), text)


async def _head(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as h:
        r = await h.get(f"/api/docs/{DOC}/versions/head")
        return str(r.json()["roots"]["content"]["value"]) if r.status_code == 200 else ""


async def _write_after_backup(settings: Settings, bk: Path) -> tuple[Doc[Any], Doc[Any]]:
    """Alice and Bob type; a backup is taken; they type more; the server stops. Their
    documents (each holds both people's text)."""
    docs: tuple[Doc[Any], Doc[Any]] = (Doc(), Doc())
    async with run_server(settings) as server:
        async with (
            connect(server.ws_url, DOC, "alice", ydoc=docs[0]) as a,
            connect(server.ws_url, DOC, "bob", ydoc=docs[1]) as b,
        ):
            await _type(a, "A1 ")
            await eventually(lambda: b.content == "A1 ")
            await _type(b, "B1 ")
            await eventually(lambda: a.content == "A1 B1 ")
            await eventually(lambda: _head(server.url), what="logged")
            await asyncio.to_thread(backup, settings.db, str(bk))
            await _type(a, "A2 ")
            await eventually(lambda: b.content == "A1 B1 A2 ")
            await _type(b, "B2 ")
            await eventually(lambda: a.content == "A1 B1 A2 B2 ")
    return docs


async def test_a_restored_backup_takes_back_what_the_clients_hold(
    tmp_path: Path, settings: Settings
) -> None:
    """`palimpsest backup --replace` restores; the server started on it next takes the
    clients' copies back for an hour: both reconnect, nobody is refused, and what was
    typed after the backup is in the log again, once."""
    bk = tmp_path / "backup.db"
    alice, bob = await _write_after_backup(settings, bk)
    await asyncio.to_thread(backup, str(bk), settings.db, replace=True)
    marker = recovery_marker(settings.db)
    assert marker.read_text().strip() == "60"
    async with run_server(settings) as server:
        # the window is an hour from this start: a restart within it keeps what is left
        assert marker.read_text().startswith("until ")
        assert server.backend.rooms.relay_until > time.monotonic() + 59 * 60
        assert await _head(server.url) == "A1 B1 "
        async with connect(server.ws_url, DOC, "alice", ydoc=alice) as a:
            # her step 2 carries Bob's "B2 " as well as her own "A2 "
            await eventually(lambda: _has(server.url, "A1 B1 A2 B2 "), what="taken back")
            async with connect(server.ws_url, DOC, "bob", ydoc=bob) as b:
                await _type(b, "B3 ")
                await eventually(lambda: a.content == "A1 B1 A2 B2 B3 ")
                await _type(a, "A3 ")
                await eventually(lambda: b.content == "A1 B1 A2 B2 B3 A3 ")
            assert b.close_code in (None, 1000), b.close_reason
        assert a.close_code in (None, 1000), a.close_reason
        assert await _head(server.url) == "A1 B1 A2 B2 B3 A3 "
    async with run_server(settings) as server:
        assert 58 * 60 < server.backend.rooms.relay_until - time.monotonic() <= 60 * 60
    # once the hour has passed, the marker goes and the rule holds again
    marker.write_text(f"until {time.time() - 1:.0f}\n")
    async with run_server(settings) as server:
        assert server.backend.rooms.relay_until == 0.0
        assert not marker.exists()


async def test_a_recovery_window_is_never_longer_than_it_was_opened_for(
    tmp_path: Path, settings: Settings
) -> None:
    """The window is kept as a wall-clock deadline: a restart with the clock a day
    behind the one that opened it read a day and an hour left ("recovering lost edits
    for 1499.95 min"). What is left is capped at the window's minutes (said in the
    marker since; RESTORED_MINUTES for a marker that does not say)."""
    marker = recovery_marker(settings.db)
    marker.write_text("30\n")
    assert 29.9 < restored_minutes(marker) <= 30
    until, window = marker.read_text().split()[1:]
    assert float(until) > time.time() + 29 * 60 and window == "30"
    marker.write_text(f"until {time.time() + 86_400 + 1_800:.3f} 30\n")  # the clock -1 day
    assert restored_minutes(marker) == 30
    marker.write_text(f"until {time.time() + 86_400 + 3_600:.3f}\n")  # an older marker
    assert restored_minutes(marker) == RESTORED_MINUTES
    async with run_server(settings) as server:
        assert 59 * 60 < server.backend.rooms.relay_until - time.monotonic() <= 60 * 60
    assert marker.exists()  # not passed by this clock


async def test_outside_a_recovery_the_rule_holds(tmp_path: Path, settings: Settings) -> None:
    """Without the window (the marker gone, no setting), a step 2 that carries another
    user's items the store lacks does not write them: a writer may not write under
    someone else's client id. It used to be refused whole (4403), Alice's own lost
    edits with it, on every reconnect; now she is asked again without Bob's client id
    (server.resync), her own come back, and Bob's come back with Bob, as his."""
    bk = tmp_path / "backup.db"
    alice, bob = await _write_after_backup(settings, bk)
    await asyncio.to_thread(backup, str(bk), settings.db, replace=True)
    recovery_marker(settings.db).unlink()
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "alice", ydoc=alice) as a:
            await eventually(lambda: _has(server.url, "A1 B1 A2 "), what="hers taken back")
            async with connect(server.ws_url, DOC, "bob", ydoc=bob) as b:
                await eventually(lambda: _has(server.url, "A1 B1 A2 B2 "), what="his")
        for c in (a, b):
            assert c.close_code in (None, 1000), c.close_reason
        async with httpx.AsyncClient(base_url=server.url) as http:
            got = (await http.get(f"/api/docs/{DOC}/blame")).json()
        runs = [(r["text"], r["actor"]) for r in got["roots"]["content"]["runs"]]
        assert runs[-2:] == [("A2 ", "alice"), ("B2 ", "bob")], runs
    # with the window opened by the setting (a database failover, say), Alice's step 2
    # brings Bob's back too
    await asyncio.to_thread(backup, str(bk), settings.db, replace=True)
    recovery_marker(settings.db).unlink()
    settings.recovering_minutes = 5
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "alice", ydoc=alice):
            await eventually(lambda: _has(server.url, "A1 B1 A2 B2 "), what="taken back")


async def test_a_lost_database_file_is_rebuilt_from_the_clients(
    tmp_path: Path, settings: Settings
) -> None:
    """The database file is gone and the server starts on a new one. Carol, who only
    watched, reconnects first: her step 2 relays everyone's text. It is taken (nobody
    owns those client ids now) but claimed by nobody: Alice and Bob, reconnecting after
    her, go on typing under their own client ids, never refused."""
    docs: list[Doc[Any]] = [Doc(), Doc(), Doc()]
    async with run_server(settings) as server:
        async with (
            connect(server.ws_url, DOC, "alice", ydoc=docs[0]) as a,
            connect(server.ws_url, DOC, "bob", ydoc=docs[1]) as b,
            connect(server.ws_url, DOC, "carol", ydoc=docs[2]) as c,
        ):
            await _type(a, "Alice. ")
            await eventually(lambda: b.content == "Alice. ")
            await _type(b, "Bob. ")
            await eventually(lambda: c.content == "Alice. Bob. ")
    _lose(settings.db)
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "carol", ydoc=docs[2]):
            await eventually(lambda: _has(server.url, "Alice. Bob. "), what="relayed")
        async with (
            connect(server.ws_url, DOC, "alice", ydoc=docs[0]) as a,
            connect(server.ws_url, DOC, "bob", ydoc=docs[1]) as b,
        ):
            await _type(a, "Alice again. ")
            await eventually(lambda: b.content == "Alice. Bob. Alice again. ")
            await _type(b, "Bob again.")
            await eventually(lambda: a.content == "Alice. Bob. Alice again. Bob again.")
        for c in (a, b):
            assert c.close_code in (None, 1000), c.close_reason
        assert await _head(server.url) == "Alice. Bob. Alice again. Bob again."
        # Alice's own client id is hers again: a forged update of it by Carol is refused
        forged: Doc[Any] = Doc(client_id=docs[0].client_id)
        forged.apply_update(docs[0].get_update())
        with contextlib.suppress(Exception):
            forged.get("content", type=Text).insert(0, "Carol as Alice: ")
        # (in its step 2 it is left out: Carol is asked again without Alice's client id,
        # server.resync; an update with it is refused)
        async with connect(server.ws_url, DOC, "carol", ydoc=forged) as c:
            await c.send_raw(P.encode_sync_update(forged.get_update(docs[0].get_state())))
            await eventually(lambda: c.close_code is not None, what="refused")
        assert c.close_code == 4403
        assert await _head(server.url) == "Alice. Bob. Alice again. Bob again."


def _lose(db: str) -> None:
    """The database file is gone (a disk replaced, a volume lost)."""
    for extra in ("", "-wal", "-shm"):
        Path(db + extra).unlink(missing_ok=True)


async def _has(url: str, text: str) -> bool:
    return await _head(url) == text


async def test_typing_while_connecting_is_not_refused(server: RunningServer) -> None:
    """A client that types as its connection opens (after a restart, say) sends that
    edit before its sync step 2; the edit builds on what it typed offline, which only
    the step 2 carries, so it has a gap. It used to close the connection (4400), and the
    client reconnected: noise, an error count per restart. Now such an update is skipped
    (its step 2 carries it); after the step 2, a gap is answered with a sync step 1, whose
    step 2 carries it likewise (tests/test_resync.py)."""
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    text.insert(0, "offline ")  # never sent
    sv = doc.get_state()
    text.insert(len(text), "typing")  # the edit sent as the socket opens
    typed = doc.get_update(sv)
    async with websockets.connect(f"{server.ws_url}/{DOC}?user=alice") as ws:
        await ws.send(P.encode_sync_step1(Doc().get_state()))
        await ws.send(P.encode_sync_update(typed))  # before the step 2: skipped
        await _answer_step1(ws, doc)
        await eventually(lambda: _has(server.url, "offline typing"), what="the step 2")
        # a gap after the step 2 is a lost frame: dropped, and a re-sync asked for
        text.insert(0, "lost ")
        sv2 = doc.get_state()
        text.insert(0, ">")
        await ws.send(P.encode_sync_update(doc.get_update(sv2)))
        await _answer_step1(ws, doc)
        await eventually(lambda: _has(server.url, ">lost offline typing"), what="the re-sync")


def _copy_db(src: str, dst: str) -> None:
    """A copy of a stopped server's database, its WAL folded in first."""
    with sqlite_conn(src) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for extra in ("-wal", "-shm"):
        Path(dst + extra).unlink(missing_ok=True)
    shutil.copyfile(src, dst)


def _damage_table(db: str, table: str) -> None:
    """Write garbage over the root page of `table` (the server stopped, the WAL folded
    into the file)."""
    with sqlite_conn(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page,) = c.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
        (size,) = c.execute("PRAGMA page_size").fetchone()
    with open(db, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(bytes(range(256)) * (size // 256))


async def test_a_damaged_snapshots_table_is_passed_over_for_the_log(
    tmp_path: Path, settings: Settings
) -> None:
    """Snapshots are a cache: with their table's root page garbage, every document used
    to fail to load (1013, again and again) though its log was whole. It loads from the
    log alone now; only a compacted document, whose base is a snapshot, still cannot."""
    settings.snapshot_every = 5
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "alice") as a:
            for k in range(12):
                await _type(a, f"{k} ")
        await eventually(lambda: _has(server.url, "".join(f"{k} " for k in range(12))))
        assert await server.backend.store.snapshots(DOC)
    good = str(tmp_path / "good.db")
    await asyncio.to_thread(_copy_db, settings.db, good)
    await asyncio.to_thread(_damage_table, settings.db, "snapshots")
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "bob") as b:
            assert b.content == "".join(f"{k} " for k in range(12))
            await _type(b, "and on")
            await eventually(
                lambda: _has(server.url, "".join(f"{k} " for k in range(12)) + "and on")
            )
        assert b.close_code in (None, 1000), b.close_reason
    # a compacted document's base is a snapshot: it cannot load, and says so (1011, not
    # the 1013 of a store that is down for a moment)
    await asyncio.to_thread(_copy_db, good, settings.db)
    compact = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "palimpsest", "compact", DOC, "--before", "6", "--yes",
        "--db", settings.db, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await compact.wait() == 0
    await asyncio.to_thread(_damage_table, settings.db, "snapshots")
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "carol", wait_sync=False) as c:
            await eventually(lambda: c.close_code is not None, what="closed")
        assert c.close_code == 1011 and "cannot be read" in str(c.close_reason)


async def test_a_client_id_relayed_alone_is_not_taken(settings: Settings) -> None:
    """Carol, who only watched, reconnects first to the new database: her step 2 carries
    Alice's text alone (one client id, not her own). It is taken, and claimed by nobody:
    Alice, reconnecting after her, goes on typing (she used to get 4403 for good)."""
    alice_doc: Doc[Any] = Doc()
    carol_doc: Doc[Any] = Doc()
    async with run_server(settings) as server:
        async with (
            connect(server.ws_url, DOC, "alice", ydoc=alice_doc) as a,
            connect(server.ws_url, DOC, "carol", ydoc=carol_doc) as c,
        ):
            await _type(a, "Alice. ")
            await eventually(lambda: c.content == "Alice. ")
    _lose(settings.db)
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "carol", ydoc=carol_doc):
            await eventually(lambda: _has(server.url, "Alice. "), what="relayed")
        async with connect(server.ws_url, DOC, "alice", ydoc=alice_doc) as a:
            await _type(a, "More.")
            await eventually(lambda: _has(server.url, "Alice. More."), what="typed on")
        assert a.close_code in (None, 1000), a.close_reason


async def test_a_step_2_claims_the_client_id_its_connection_announced(
    server: RunningServer,
) -> None:
    """Dan's offline edits come in his step 2, after his presence named his client id
    (as y-websocket's provider does on connecting): the id is his from that step 2, so
    Eve cannot write under it before he types again."""
    dan: Doc[Any] = Doc()
    dan.get("content", type=Text).insert(0, "offline by dan")
    async with websockets.connect(f"{server.ws_url}/{DOC}?user=dan") as ws:
        state = P.encode_awareness_entries([(dan.client_id, 1, '{"user":{"name":"dan"}}')])
        await ws.send(P.encode_awareness(state))
        await ws.send(P.encode_sync_step1(Doc().get_state()))
        while not isinstance(msg := P.decode(await asyncio.wait_for(ws.recv(), 10)), P.SyncStep1):
            pass
        await ws.send(P.encode_sync_step2(dan.get_update(msg.state_vector)))
        await eventually(lambda: _has(server.url, "offline by dan"), what="the step 2")
        forged: Doc[Any] = Doc(client_id=dan.client_id)
        forged.apply_update(dan.get_update())
        async with connect(server.ws_url, DOC, "eve", ydoc=forged) as e:
            forged.get("content", type=Text).insert(0, "eve as dan: ")
            await eventually(lambda: e.close_code is not None, what="refused")
        assert e.close_code == 4403
    assert await _head(server.url) == "offline by dan"


@pytest.mark.parametrize("change", ["undo", "text"])
async def test_a_restored_backup_takes_back_the_servers_own_changes(
    tmp_path: Path, settings: Settings, change: str
) -> None:
    """An undo, a redo, a restore or a `PUT /text` after the backup is an item of the
    server's own client id, which every client holds. A step 2 carrying one was refused
    (4403, "is the server's") even while the store recovered: the clients were locked out
    for good, and everything typed after the backup was lost with it."""
    bk = tmp_path / "backup.db"
    alice, bob = Doc(), Doc()
    async with run_server(settings) as server:
        async with (
            connect(server.ws_url, DOC, "alice", ydoc=alice) as a,
            connect(server.ws_url, DOC, "bob", ydoc=bob) as b,
        ):
            await _type(a, "A1 ")
            await eventually(lambda: b.content == "A1 ")
            await eventually(lambda: _has(server.url, "A1 "), what="logged")
            await asyncio.to_thread(backup, settings.db, str(bk))
            await _type(b, "B1 ")
            await eventually(lambda: a.content == "A1 B1 ")
            async with httpx.AsyncClient(base_url=server.url) as h:
                if change == "undo":  # alice deletes her text and undoes that: the
                    # server writes it again, as items of its own client id
                    await asyncio.sleep(0.6)  # (a step of its own)
                    del a.text[0:3]
                    await eventually(lambda: _has(server.url, "B1 "), what="logged")
                    r = await h.post(f"/api/docs/{DOC}/undo", params={"user": "alice"})
                    want = "A1 B1 "
                else:
                    r = await h.put(
                        f"/api/docs/{DOC}/text", params={"user": "cms"}, json={"text": "CMS "}
                    )
                    want = "CMS "
                assert r.status_code == 200, r.text
            await eventually(lambda: a.content == want and b.content == want)
            await _type(a, "A2 ")
            await eventually(lambda: b.content == want + "A2 ")
    await asyncio.to_thread(backup, str(bk), settings.db, replace=True)
    async with run_server(settings) as server:
        assert await _head(server.url) == "A1 "
        async with connect(server.ws_url, DOC, "bob", ydoc=bob) as b:
            await eventually(lambda: _has(server.url, want + "A2 "), what="taken back")
            async with connect(server.ws_url, DOC, "alice", ydoc=alice) as a:
                await _type(a, "A3 ")
                await eventually(lambda: b.content == want + "A2 A3 ")
            assert a.close_code in (None, 1000), a.close_reason
        assert b.close_code in (None, 1000), b.close_reason
        assert await _head(server.url) == want + "A2 A3 "
        # the server's next change continues past the clocks taken back
        async with httpx.AsyncClient(base_url=server.url) as h:
            r = await h.put(f"/api/docs/{DOC}/text", params={"user": "cms"}, json={"text": "Z"})
            assert r.status_code == 200, r.text
        assert await _head(server.url) == "Z"
    async with run_server(settings) as server:  # and all of it loads again
        assert await _head(server.url) == "Z"
        async with connect(server.ws_url, DOC, "carol") as c:
            assert c.content == "Z"


async def _answer_step1(ws: Any, doc: Doc[Any]) -> None:
    """Read until the server's sync step 1 and answer it with `doc`'s step 2."""
    while True:
        msg = P.decode(await asyncio.wait_for(ws.recv(), 10))
        if isinstance(msg, P.SyncStep1):
            await ws.send(P.encode_sync_step2(doc.get_update(msg.state_vector)))
            return


async def _three_write_after_backup(settings: Settings, bk: Path) -> list[Doc[Any]]:
    """Alice, Bob and Carol type a line each; a backup is taken; each types another,
    Carol deletes her first, Bob his, and undoes that; the server stops. Their documents (each holds
    everyone's text)."""
    docs: list[Doc[Any]] = [Doc(), Doc(), Doc()]
    settings.undo_capture_ms = 0  # (each edit a step of its own)
    async with run_server(settings) as server:
        async with (
            connect(server.ws_url, DOC, "alice", ydoc=docs[0]) as a,
            connect(server.ws_url, DOC, "bob", ydoc=docs[1]) as b,
            connect(server.ws_url, DOC, "carol", ydoc=docs[2]) as c,
        ):
            text = ""
            for who, line in ((a, "A1 "), (b, "B1 "), (c, "C1 ")):
                await _type(who, line)
                text += line
                await eventually(lambda: all(x.content == text for x in (a, b, c)))  # noqa: B023
            await eventually(lambda: _has(server.url, text), what="logged")
            await asyncio.to_thread(backup, settings.db, str(bk))
            for who, line in ((a, "A2 "), (b, "B2 "), (c, "C2 ")):
                await _type(who, line)
                text += line
                await eventually(lambda: all(x.content == text for x in (a, b, c)))  # noqa: B023
            c.text.__delitem__(slice(6, 9))  # her "C1 "
            text = "A1 B1 A2 B2 C2 "
            await eventually(lambda: all(x.content == text for x in (a, b, c)))
            # Bob deletes his "B1 ", and his undo brings it back (a copy of the server's)
            b.text.__delitem__(slice(3, 6))
            await eventually(lambda: _has(server.url, "A1 A2 B2 C2 "), what="deleted")
            async with httpx.AsyncClient(base_url=server.url) as http:
                r = await http.post(f"/api/docs/{DOC}/undo", params={"user": "bob"})
                assert r.status_code == 200 and r.json()["added"]["characters"] == 3, r.text
            await eventually(lambda: all(x.content == text for x in (a, b, c)))
            await eventually(lambda: _has(server.url, text), what="logged")
    return docs


@pytest.mark.parametrize("restart", [False, True])
async def test_an_undo_after_a_recovery_takes_out_only_the_undoers_own_text(
    tmp_path: Path, settings: Settings, restart: bool
) -> None:
    """A restored backup; Bob types offline, then reconnects first: his step 2 carries
    everyone's edits since the backup, logged as one event of his. His undo then meant
    his last typing, and took out Alice's and Carol's lines too (and brought back the
    line Carol had deleted, and his own a second time beside the copy his lost undo had
    made of it), with no `removed_others` to say so: the whole event was his undo step.
    Only what is under his own client ids is his typing: the rest of the event is his
    to have sent, not to undo, and its deletions nobody's. (`restart`: the stacks rebuilt from the
    log decide the same.)"""
    bk = tmp_path / "backup.db"
    _alice, bob, _carol = await _three_write_after_backup(settings, bk)
    await asyncio.to_thread(backup, str(bk), settings.db, replace=True)
    bob.get("content", type=Text).insert(len(str(bob.get("content", type=Text))), "B3 ")
    if restart:
        async with run_server(settings) as server:
            async with connect(server.ws_url, DOC, "bob", ydoc=bob):
                await eventually(lambda: _has(server.url, "A1 B1 A2 B2 C2 B3 "), what="back")
    async with run_server(settings) as server:
        async with connect(server.ws_url, DOC, "bob", ydoc=bob) as b:
            await eventually(lambda: _has(server.url, "A1 B1 A2 B2 C2 B3 "), what="taken back")
            async with httpx.AsyncClient(base_url=server.url) as http:
                blame = (await http.get(f"/api/docs/{DOC}/blame?join=actor")).json()
                runs = [(r["text"], r["actor"]) for r in blame["roots"]["content"]["runs"]]
                # as documented: what a step 2 brought back is its sender's in blame
                assert runs == [("A1 ", "alice"), ("B1 A2 B2 C2 B3 ", "bob")], runs
                r = await http.post(f"/api/docs/{DOC}/undo", params={"user": "bob"})
                assert r.status_code == 200, r.text
                got = r.json()
                assert got["removed"] == {"characters": 6, "items": 0}, got
                assert "removed_others" not in got, got
                assert got["added"] == {"characters": 0, "items": 0}, got
                await eventually(lambda: b.content == "A1 B1 A2 C2 ", what="undone")
                assert await _head(server.url) == "A1 B1 A2 C2 "
                # his redo brings back his own again
                r = await http.post(f"/api/docs/{DOC}/redo", params={"user": "bob"})
                assert r.status_code == 200, r.text
                await eventually(lambda: _has(server.url, "A1 B1 A2 B2 C2 B3 "), what="redone")
        assert b.close_code in (None, 1000), b.close_reason
