"""Purging deleted content (compact with purge_deleted, server/erasure.py): text typed
and deleted before the base is in nothing served or stored afterwards; what was deleted
after the base stays; connected clients keep working."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PG_URL, RunningServer, eventually
from pycrdt import Doc
from serverproc import REPO_ROOT, ServerProcess
from test_admin_cli import cli
from test_undo import converged, edit, make_settings, serving, undo
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest.cli import main
from palimpsest.maintenance import compact_doc, plan_compact
from palimpsest.snapshots import load
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


async def stored_states(db: Path | str, doc: str) -> list[bytes]:
    """Every snapshot of `doc` in the store (a SQLite file, or a store URL)."""
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    async with open_store(url) as store:
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


async def test_a_purge_never_leaves_its_base_under_an_unpurged_snapshot(tmp_path: Path) -> None:
    """The snapshots after the base are folded again from the purged base in the
    compaction's own transaction: a room loaded right after the base is written (by a
    server beside the CLI) finds no snapshot above it that still holds the secret."""
    db = tmp_path / "db"
    async with serving(make_settings(db, snapshot_every=1)) as srv:
        async with connect(srv.ws_url, "e3", "alice") as a:
            await edit(a, srv, "e3", lambda: a.text.insert(0, f"my password is {SECRET} ok"))
            await edit(a, srv, "e3", lambda: delete_word(a, SECRET))
            for word in ("one ", "two ", "three "):
                await edit(a, srv, "e3", lambda w=word: a.text.insert(0, w))  # type: ignore[misc]
    async with open_store(f"sqlite:///{db}") as store:
        assert any(s.seq > 2 for s in await store.snapshots("e3"))
        compact = store.compact
        seen: list[bytes] = []

        async def compact_then_load(*args: object, **kw: object) -> int:
            removed = await compact(*args, **kw)  # type: ignore[arg-type]
            seen.append((await load(store, "e3")).doc.get_update())  # as a room loads
            return removed

        store.compact = compact_then_load  # type: ignore[method-assign]
        plan = await plan_compact(store, "e3", 2)
        await compact_doc(store, plan, make_settings(db), purge_deleted=True)
        assert seen and SECRET.encode() not in seen[0]
        assert b"three" in seen[0]
    assert not any(SECRET.encode() in s for s in await stored_states(db, "e3"))


# --- palimpsest compact --purge-deleted on the store, beside a server without fan-out ------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of a server process and the CLI beside it: a SQLite file, or a schema
    of PostgreSQL (no Redis: nobody tells the server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'palimpsest.db'}"
    return f"{PG_URL}?schema={request.getfixturevalue('schema')}"


async def logged(url: str, doc: str) -> int:
    """The head of `doc` in the server's store (0: none yet)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.get(f"/api/docs/{doc}/events", params={"limit": 1000, "user": "ops"})
        if r.status_code != 200:
            return 0
        events = r.json()["events"]
        return int(events[-1]["seq"]) if events else int(r.json()["base_seq"])


async def _at_least(url: str, doc: str, n: int) -> bool:
    return await logged(url, doc) >= n


async def _logged_by(url: str, doc: str, actor: str) -> bool:
    """Whether `doc`'s log (in the server's store) has an event of `actor`'s."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.get(f"/api/docs/{doc}/events", params={"actor": actor, "user": "ops"})
        return r.status_code == 200 and bool(r.json()["events"])


async def cli_process(*argv: str) -> tuple[int, str]:
    """The real `palimpsest` command, in a process of its own."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "palimpsest", *argv, cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def purge_with_the_cli(store_url: str, doc: str, before: int) -> None:
    code, out = await cli_process("compact", doc, "--store", store_url, "--before",
                                  str(before), "--purge-deleted", "--yes")  # fmt: skip
    assert code == 0 and "purged" in out, out


async def type_secret_and_delete(url: str, a: YClient, doc: str) -> None:
    a.text.insert(0, f"my password is {SECRET} ok")
    await eventually(lambda: _at_least(url, doc, 1), what="the secret logged")
    delete_word(a, SECRET)
    await eventually(lambda: _at_least(url, doc, 2), what="its deletion logged")


async def first_step2_at(ws_url: str, doc: str) -> bytes:
    async with connect(ws_url, doc, "reader") as r:
        return next(m.update for m in r.frames if isinstance(m, P.SyncStep2))


async def test_cli_purge_beside_a_server_without_fanout_reloads_its_open_room(
    tmp_path: Path, store_url: str
) -> None:
    """The room stays open (alice), nobody types, nobody joins: the server notices the
    purge by itself (its background check of the compaction bases), closes alice with
    1013 and drops the room; what anyone loads or stores afterwards holds no secret."""
    async with ServerProcess(
        tmp_path / "srv", extra_args=["--store", store_url, "--snapshot-every", "1"]
    ) as srv:
        async with connect(srv.ws_url, "p1", "alice") as a:
            await type_secret_and_delete(srv.http_url, a, "p1")
            assert SECRET.encode() in await first_step2_at(srv.ws_url, "p1")  # as it is
            await purge_with_the_cli(store_url, "p1", 2)
            await eventually(lambda: a.close_code == 1013, timeout=30, what="alice reconnects")
            kept = Doc()
            kept.apply_update(a.doc.get_update())  # her copy still holds the secret
        got = await first_step2_at(srv.ws_url, "p1")
        assert SECRET.encode() not in got and b"my password is" in got
        # alice comes back with her copy: her edits apply, nothing brings the secret back
        async with connect(srv.ws_url, "p1", "alice", ydoc=kept) as a:
            a.text.insert(0, "back: ")
            await eventually(lambda: _at_least(srv.http_url, "p1", 3), what="her edit")
            assert SECRET.encode() not in await first_step2_at(srv.ws_url, "p1")
        await srv.astop()
    states = await stored_states(store_url, "p1")
    assert len(states) > 1 and not any(SECRET.encode() in s for s in states)


async def test_a_room_compacted_under_it_writes_no_snapshot_and_reloads(
    tmp_path: Path, store_url: str
) -> None:
    """With the background check off, the room's next snapshot finds the compaction
    base changed in its own transaction: nothing is written, and the room reloads."""
    async with ServerProcess(
        tmp_path / "srv",
        extra_args=["--store", store_url, "--snapshot-every", "1"],
        env={"PALIMPSEST_COMPACTION_CHECK_SECONDS": "0"},
    ) as srv:
        async with connect(srv.ws_url, "p2", "bob") as b:
            await type_secret_and_delete(srv.http_url, b, "p2")
            await purge_with_the_cli(store_url, "p2", 2)
            # The snapshot that finds the new base is the one bob's edit makes due, or
            # the quiet one the deletion left for 10 s later, when the CLI takes longer
            # than that (a loaded machine): then the room reloads before bob types, and
            # his edit is not logged (a provider re-sends it on reconnecting; this
            # client does not reconnect). Either way bob is closed with 1013.
            b.text.insert(len(str(b.text)), " and more")
            await eventually(lambda: b.close_code == 1013, timeout=30, what="bob reconnects")
        assert SECRET.encode() not in await first_step2_at(srv.ws_url, "p2")
        async with connect(srv.ws_url, "p2", "carol") as c:  # snapshots from the purged base
            c.text.insert(0, "new text ")
            await eventually(lambda: _logged_by(srv.http_url, "p2", "carol"), what="carol's edit")
        await srv.astop()
    states = await stored_states(store_url, "p2")
    assert len(states) > 1 and not any(SECRET.encode() in s for s in states)


@contextlib.asynccontextmanager
async def three_words(tmp_path: Path, doc: str) -> AsyncIterator[tuple[Any, Any, YClient, Any]]:
    """A server without the background base check, alice in `doc` with three words
    typed (seqs 1-3): the server, its BaseWatch, alice, and the room."""
    from palimpsest.base_watch import BaseWatch

    async with serving(make_settings(tmp_path / "db", compaction_check_seconds=0)) as srv:
        watch = srv.backend.extension(BaseWatch)
        assert watch is not None
        async with connect(srv.ws_url, doc, "alice") as a:
            for word in ("one ", "two ", "three "):
                await edit(a, srv, doc, lambda w=word: a.text.insert(0, w))  # type: ignore[misc]
            room = srv.backend.rooms.get_loaded(doc)
            assert room is not None
            yield srv, watch, a, room


async def test_a_base_check_between_a_compaction_here_and_its_adoption_reloads_nothing(
    tmp_path: Path,
) -> None:
    """The route's compaction commits, then the room takes the new base: a background
    check that reads the store's base in between (a CI run drew it) does not take the
    room for stale, and neither does a snapshot refused for the old base."""
    async with three_words(tmp_path, "e5") as (srv, watch, a, room):
        old = room.base
        async with srv.backend.rooms.adopting("e5"):
            plan = await plan_compact(srv.backend.store, "e5", 2)
            assert await compact_doc(srv.backend.store, plan, srv.backend.settings) == 2
            assert await srv.backend.store.compaction_base("e5") != old  # committed
            assert await watch.check() == 0  # not stale for a background check...
            watch.stale(room)  # ...nor for a refused snapshot
            assert room.base == old
        assert room.base != old  # taken at the end
        assert await watch.check() == 0
        await asyncio.sleep(0.1)
        assert a.close_code is None and watch.reloaded == 0
        await edit(a, srv, "e5", lambda: a.text.insert(0, "four "))
        await converged(srv, "e5", "four three two one ", a)


async def test_a_snapshot_refused_for_a_base_the_room_took_meanwhile_reloads_nothing(
    tmp_path: Path,
) -> None:
    """A snapshot captured with the room's old base is refused when the compaction here
    committed first; if the room has taken the new base by the time the refusal is
    read, the room is not stale: no reload, no warning."""
    async with three_words(tmp_path, "e6") as (srv, watch, a, room):
        old = room.base
        plan = await plan_compact(srv.backend.store, "e6", 2)
        assert await compact_doc(srv.backend.store, plan, srv.backend.settings) == 2
        new = await srv.backend.store.compaction_base("e6")
        assert new != old
        task = srv.backend.snapshots.take(room)
        assert task is not None
        await asyncio.sleep(0)  # the write has begun, with the room's old base
        room.base = new  # ...and the room takes the new one, as the route's adoption does
        await task
        assert watch.reloaded == 0 and a.close_code is None
        assert room.base == new and srv.backend.rooms.get_loaded("e6") is room


async def test_a_compaction_through_the_route_keeps_the_room_here(tmp_path: Path) -> None:
    """A plain compaction through the route leaves the same content: the room here takes
    the new base as its own, and the background check does not reload it."""
    from palimpsest.base_watch import BaseWatch

    db = tmp_path / "db"
    async with serving(make_settings(db, compaction_check_seconds=0.05)) as srv:
        watch = srv.backend.extension(BaseWatch)
        assert watch is not None
        async with connect(srv.ws_url, "e4", "alice") as a:
            for word in ("one ", "two ", "three "):
                await edit(a, srv, "e4", lambda w=word: a.text.insert(0, w))  # type: ignore[misc]
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
                r = await http.post("/api/docs/e4/compact", params={"user": "ops"},
                                    json={"before": 2})  # fmt: skip
                assert r.status_code == 200 and r.json()["removed"] == 2, r.text
            checks = watch.checks
            await eventually(lambda: watch.checks >= checks + 3, what="three checks")
            assert a.close_code is None and watch.reloaded == 0
            await edit(a, srv, "e4", lambda: a.text.insert(0, "four "))
            await converged(srv, "e4", "four three two one ", a)
