"""`palimpsest migrate` and `palimpsest copy` (SQLite -> PostgreSQL), run as commands."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest
from conftest import eventually, free_port, run_server
from pycrdt import Doc, Text
from scaleout import PG_URL, fresh_schema, open_store
from test_delete import closed_4404, copy_of
from test_undo import converged, edit, make_settings
from webhook_receiver import Receiver
from yclient import connect

from palimpsest.changefeed import Webhook
from palimpsest.settings import Settings
from palimpsest.snapshots import load
from palimpsest.store import open_store as store_at
from palimpsest.store import postgres
from palimpsest.store.base import Event, NewEvent
from palimpsest.store.sqlite import SQLiteStore

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent


def palimpsest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    async with fresh_schema() as url:
        r = palimpsest("migrate", "--store", url)
        assert r.returncode == 0, r.stderr
        assert f"schema version {postgres.SCHEMA_VERSION}" in r.stdout
        schema = url.split("schema=")[1]
        conn = await asyncpg.connect(PG_URL)
        try:
            tables = {
                row[0]
                for row in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                    schema,
                )
            }
        finally:
            await conn.close()
        assert {"docs", "log", "segments", "symbols", "snapshots", "tags", "tombstones",
                "palimpsest_schema"} <= tables  # fmt: skip
        assert "events" not in tables  # the compact log, created at its version directly
        again = palimpsest("migrate", "--store", url)  # idempotent
        assert again.returncode == 0, again.stderr


async def test_migrate_refuses_an_unreachable_store() -> None:
    r = palimpsest("migrate", "--store", "postgresql://postgres@127.0.0.1:1/test")
    assert r.returncode == 1
    assert "cannot connect" in r.stderr


async def test_copy_sqlite_into_postgresql(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    src = SQLiteStore(db)
    await src.start()
    texts = {}
    for name, n in (("notes", 30), ("plans/q3", 5), ("empty-ish", 1)):
        d: Doc = Doc()
        t = d.get("content", type=Text)
        updates = []
        for i in range(n):
            before = d.get_state()
            t.insert(len(str(t)), f"{name}{i} ")
            updates.append(d.get_update(before))
        await src.append([(name, [NewEvent("ann", "edit", u, {"i": i}, 1000 + i)
                                  for i, u in enumerate(updates)])])  # fmt: skip
        texts[name] = str(t)
    await src.put_snapshot("notes", 20, b"not a real state but copied as is", {"undo": {}})
    await src.put_tag("notes", "v1", 10, "bob")
    await src.put_tag("notes", "v1", 12, "cy")
    await src.put_tag("notes", "draft", 5, "ann")
    assert await src.delete_tag("notes", "draft", "eve")
    await src.stop()

    async with fresh_schema() as url:
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url)
        assert r.returncode == 0, r.stderr
        assert "copied 3 of 3 documents (36 events)" in r.stdout
        async with open_store(url) as pg:
            sq = SQLiteStore(db)
            await sq.start()
            try:
                assert [(d.doc, d.head) for d in await pg.list_docs()] == [
                    (d.doc, d.head) for d in await sq.list_docs()
                ]
                for name in texts:
                    # the same events; positions are each store's own commit order
                    copied, source = await pg.read(name), await sq.read(name)
                    assert [replace(e, pos=0) for e in copied] == [
                        replace(e, pos=0) for e in source
                    ]
                    assert [e.pos for e in copied] == sorted(e.pos for e in copied)
                snap = await pg.latest_snapshot("notes")
                assert snap is not None and snap.seq == 20
                assert snap.state == b"not a real state but copied as is"
                assert [(t.name, t.seq, t.actor) for t in await pg.tags("notes")] == [
                    ("v1", 12, "cy")
                ]
                # the record of the tags' changes too, as it is (a deleted tag's included)
                history = await sq.tag_history("notes")
                # (records of one millisecond come by tag name: compared as a set)
                assert sorted((m.name, m.action, m.actor) for m in history) == [
                    ("draft", "create", "ann"), ("draft", "delete", "eve"),
                    ("v1", "create", "bob"), ("v1", "move", "cy"),
                ]  # fmt: skip
                assert await pg.tag_history("notes") == history
            finally:
                await sq.stop()
            loaded = await load(pg, "plans/q3")
            assert str(loaded.doc.get("content", type=Text)) == texts["plans/q3"]
            # appending continues after the copied seqs
            [[e]] = await pg.append([("notes", [NewEvent("ann", "edit", b"\x00\x00")])])
            assert e.seq == 31
        # copying again refuses to overwrite, unless asked
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--quiet")
        assert r.returncode == 1 and "already exists" in r.stderr
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--replace",
                       "--doc", "notes")  # fmt: skip
        assert r.returncode == 0 and "copied 1 of 1" in r.stdout, r.stderr
        async with open_store(url) as pg:
            assert await pg.head("notes") == 30


async def sqlite_tombstone(db: Path, doc: str) -> bytes | None:
    store = SQLiteStore(db)
    await store.start()
    try:
        return await store.tombstone(doc)
    finally:
        await store.stop()


async def test_copy_carries_the_tombstones_and_a_deleted_document_stays_deleted(
    tmp_path: Path,
) -> None:
    """A document deleted on a SQLite server, copied into PostgreSQL: its tombstone goes
    along (it has no log left), so a server on PostgreSQL refuses a stale client's copy
    (4404) as the SQLite one did. It used to be left behind, and the stale copy brought
    the deleted text back. A second run copies nothing again and says so; an older copy of
    the deleted document (a backup) is not brought back into the target; and the
    tombstone goes the other way too."""
    db, backup = tmp_path / "palimpsest.db", tmp_path / "before-delete.db"
    async with run_server(make_settings(db)) as srv, httpx.AsyncClient() as http:
        async with connect(srv.ws_url, "kept", "bob") as b:
            await edit(b, srv, "kept", lambda: b.insert(0, "still here"))
        async with connect(srv.ws_url, "gone", "ann") as a:
            await edit(a, srv, "gone", lambda: a.insert(0, "secret plans"))
            r = palimpsest("backup", "--db", str(db), str(backup))
            assert r.returncode == 0, r.stderr
            r = await http.delete(f"{srv.url}/api/docs/gone", params={"user": "root"})
            assert r.status_code == 200, r.text
            await closed_4404(a)
            stale = a.doc
    tomb = await sqlite_tombstone(db, "gone")
    assert tomb

    async with fresh_schema() as url:
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--quiet")
        assert r.returncode == 0, r.stderr
        settings = Settings(store=url, port=free_port(), unload_after_seconds=0.3,
                            undo_capture_ms=0)  # fmt: skip
        async with run_server(settings) as srv:
            async with connect(srv.ws_url, "gone", "ann", ydoc=copy_of(stale),
                               wait_sync=False) as s:  # fmt: skip
                await closed_4404(s)
                assert "deleted" in (s.close_reason or "")
            assert await srv.backend.store.head("gone") == 0
            async with connect(srv.ws_url, "kept", "bob") as b:
                assert b.content == "still here"
            async with connect(srv.ws_url, "gone", "bob") as b:  # the name starts over
                assert b.content == ""
                await edit(b, srv, "gone", lambda: b.insert(0, "new"))
                await converged(srv, "gone", "new", b)
        assert "copied 1 of 1 documents" in r.stdout, r.stdout
        assert "0 not copied; 1 of 1 tombstones copied (0 already there)" in r.stdout, r.stdout
        async with open_store(url) as pg:
            assert await pg.tombstone("gone") == tomb  # the very bytes (see new_doc)

        # a second run: nothing copied again, the document is there already (exit 0)
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--quiet")
        assert r.returncode == 0 and "not copied" not in r.stderr, r.stderr
        assert "copied 0 of 1 documents (0 events), 1 already there, 0 not copied; " \
            "0 of 1 tombstones copied " \
            "(1 already there)" in r.stdout, r.stdout  # fmt: skip

        # the backup taken before the deletion holds the deleted text: not brought back,
        # even with --replace (the target's new "gone" is left as it is)
        for extra in ([], ["--replace"]):
            r = palimpsest("copy", "--from", f"sqlite:///{backup}", "--to", url, "--quiet",
                           "--doc", "gone", *extra)  # fmt: skip
            assert r.returncode == 1, r
            assert "deleted in the target" in r.stderr, r.stderr
            said = "copied 0 of 1 documents (0 events), 0 already there, 1 not copied"
            assert said in r.stdout, r.stdout
        async with open_store(url) as pg:
            assert str((await load(pg, "gone")).doc.get("content", type=Text)) == "new"
            assert await pg.tombstone("gone") == tomb

        # and back: PostgreSQL -> SQLite carries it as well
        back = tmp_path / "back.db"
        r = palimpsest("copy", "--from", url, "--to", f"sqlite:///{back}", "--quiet")
        assert r.returncode == 0, r.stderr
        assert "copied 2 of 2 documents" in r.stdout and "1 of 1 tombstones copied" in r.stdout
        assert await sqlite_tombstone(back, "gone") == tomb


async def test_copy_of_a_deletion_into_a_store_that_still_holds_the_document(
    tmp_path: Path,
) -> None:
    """The target got the document before the source deleted it: the deletion's tombstone
    is copied, and the deleted content there is deleted with --replace, reported without."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    store = SQLiteStore(src)
    await store.start()
    d: Doc = Doc()
    d.get("content", type=Text).insert(0, "secret")
    await store.append([("gone", [NewEvent("ann", "edit", d.get_update())])])
    await store.stop()
    assert (
        palimpsest("copy", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}").returncode == 0
    )
    r = palimpsest("delete", "gone", "--yes", "--db", str(src))
    assert r.returncode == 0, r.stderr
    tomb = await sqlite_tombstone(src, "gone")
    assert tomb

    r = palimpsest("copy", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}", "--quiet")
    assert r.returncode == 1 and "deleted content is still in the target" in r.stderr, r
    said = "copied 0 of 0 documents (0 events), 0 already there, 0 not copied; 1 of 1 tombstones"
    assert said in r.stdout
    assert await sqlite_tombstone(dst, "gone") == tomb
    r = palimpsest("copy", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}", "--quiet",
                   "--replace")  # fmt: skip
    assert r.returncode == 0, r
    assert "0 of 1 tombstones copied (1 already there)" in r.stdout, r.stdout
    store = SQLiteStore(dst)
    await store.start()
    try:
        assert await store.head("gone") == 0 and await store.list_docs() == []
        assert await store.tombstone("gone") == tomb
        # one record of it on the target's feed: the target's own deletion, at its next
        # position (the source's record names the source's positions: not copied)
        [gone] = await store.deletions()
        assert (gone.doc, gone.seq, gone.pos) == ("gone", 1, await store.last_position())
    finally:
        await store.stop()


#: an update that changes nothing (the copy never folds these logs)
EMPTY = b"\x00\x00"


def log_of(events: list[Event]) -> list[tuple[str, int, int]]:
    return [(e.doc, e.seq, e.pos) for e in events]


@contextlib.asynccontextmanager
async def new_store(tmp_path: Path, target: str) -> AsyncIterator[str]:
    """The URL of a store that never had an event: a PostgreSQL schema of its own, or a
    SQLite file that `copy` creates."""
    if target == "sqlite":
        yield f"sqlite:///{tmp_path / 'copy.db'}"
        return
    async with fresh_schema() as url:
        assert palimpsest("migrate", "--store", url).returncode == 0
        yield url


@pytest.mark.parametrize("target", ["postgresql", "sqlite"])
async def test_a_copy_into_a_new_store_keeps_every_events_position(
    tmp_path: Path, target: str
) -> None:
    """The source's commit order, interleaved across documents, is the copy's: a follower
    of the source resumes on the copy after its cursor (it got a document's events again
    and another's never when copy numbered them document by document), and positions go
    on after the source's last one, a deleted document's (and its deletion's) included."""
    db = tmp_path / "src.db"
    async with SQLiteStore(db) as src:
        for i in range(11):  # a's first 1,024 events are sealed into a segment in the copy
            a, b = NewEvent("ann", "edit", EMPTY, None, i), NewEvent("bob", "edit", EMPTY)
            await src.append([("a", [a] * 100), ("b", [b] * 3)])
        await src.append([("gone", [NewEvent("ann", "edit", EMPTY)])])
        assert await src.delete_doc("gone")
        source = log_of(await src.read_all(limit=10_000))
        last = await src.last_position()
    assert last == source[-1][2] + 2  # "gone"'s event, then its deletion (on the feed)
    cursor = next(i for i, (doc, _, _) in enumerate(source) if doc == "b") + 1
    async with new_store(tmp_path, target) as url:
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--quiet")
        assert r.returncode == 0 and "restart" not in r.stderr, r
        dst = store_at(url)
        async with dst:
            assert log_of(await dst.read_all(limit=10_000)) == source
            assert log_of(await dst.read_all(after=source[cursor - 1][2])) == source[cursor:][:1000]
            assert await dst.last_position() == last
            [[e]] = await dst.append([("b", [NewEvent("bob", "edit", EMPTY)])])
            assert (e.seq, e.pos) == (34, last + 1)


def feed_of(events: list[Event]) -> list[tuple[str, str, int, int, str]]:
    return [(e.doc, e.kind, e.seq, e.pos, e.actor) for e in events]


async def test_a_copy_keeping_positions_carries_the_deletion_records(tmp_path: Path) -> None:
    """SQLite -> PostgreSQL -> SQLite, each a new store: the source's `deleted` records
    are on the copy's changefeed where they were on the source's (they were left behind:
    a follower of the copy never learnt of the deletion). A copy run again writes none
    twice; one of some --doc carries theirs."""
    db = tmp_path / "src.db"
    async with SQLiteStore(db) as src:
        await src.append([("a", [NewEvent("ann", "edit", EMPTY)]), ("gone", [NewEvent("ann",
                          "edit", EMPTY)] * 2)])  # fmt: skip
        assert await src.delete_doc("gone", b"", by="ada")
        await src.append([("gone", [NewEvent("bob", "edit", EMPTY)])])  # the name again
        await src.append([("b", [NewEvent("bob", "edit", EMPTY)])])
        assert await src.delete_doc("b", b"", by="root")
        await src.append([("a", [NewEvent("ann", "edit", EMPTY)])])
        feed = feed_of(await src.read_feed())
        last = await src.last_position()
    assert [k for _, k, _, _, _ in feed].count("deleted") == 2
    back = tmp_path / "back.db"
    async with fresh_schema() as url:
        assert palimpsest("migrate", "--store", url).returncode == 0
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--quiet")
        assert r.returncode == 0 and "restart" not in r.stderr, r
        assert "2 of 2 deletion records copied (0 already there)" in r.stdout, r.stdout
        async with open_store(url) as pg:
            assert feed_of(await pg.read_feed()) == feed
            assert await pg.last_position() == last
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--quiet")
        assert r.returncode == 0 and "restart" not in r.stderr, r
        assert "0 of 2 deletion records copied (2 already there)" in r.stdout, r.stdout
        r = palimpsest("copy", "--from", url, "--to", f"sqlite:///{back}", "--quiet", "--json")
        assert r.returncode == 0, r
        assert '"deletions": {"copied": 2, "of": 2}' in r.stdout, r.stdout
        async with open_store(url) as pg:
            assert feed_of(await pg.read_feed()) == feed
    async with SQLiteStore(back) as copy:
        assert feed_of(await copy.read_feed()) == feed
        assert await copy.last_position() == last
    one = tmp_path / "one.db"
    r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", f"sqlite:///{one}", "--quiet",
                   "--doc", "b")  # fmt: skip
    assert r.returncode == 0 and "1 of 1 deletion records copied" in r.stdout, r
    async with SQLiteStore(one) as copy:
        assert feed_of(await copy.read_feed()) == [f for f in feed if f[0] == "b"]


async def test_a_copy_numbering_anew_leaves_the_deletion_records_and_says_so(
    tmp_path: Path,
) -> None:
    """Into a store with events of its own (PostgreSQL -> SQLite), the source's deletion
    records are not copied: they name the source's positions, and the deleted documents'
    events were not copied either, so the target's followers never had them (a record
    would drop a document of that name the target has). The copy says so."""
    dst = tmp_path / "dst.db"
    async with SQLiteStore(dst) as store:
        await store.append([("gone", [NewEvent("ann", "edit", EMPTY)] * 3)])  # the target's own
    async with fresh_schema() as url:
        async with open_store(url) as pg:
            await pg.append([("a", [NewEvent("ann", "edit", EMPTY)]),
                             ("gone", [NewEvent("ann", "edit", EMPTY)])])  # fmt: skip
            assert await pg.delete_doc("gone", b"", by="ada")
        # (not --quiet: it says nothing but errors, and this is none)
        r = palimpsest("copy", "--from", url, "--to", f"sqlite:///{dst}", "--json")
        assert r.returncode == 0, r
        assert '"deletions": {"copied": 0, "of": 1}' in r.stdout, r.stdout
        assert "the source's 1 deletion record stays behind" in r.stderr, r.stderr
    async with SQLiteStore(dst) as store:
        assert await store.deletions() == []
        assert [e.doc for e in await store.read_feed()] == ["gone"] * 3 + ["a"]


async def test_a_copy_carries_the_tag_history_and_a_copy_without_it_is_not_there_already(
    tmp_path: Path,
) -> None:
    """A copied document's tags keep who changed them when (SQLite to SQLite): their
    history answers the same on the target. A target that holds the document with the
    same tags but not their history (copied by a release that left it behind) is not
    taken for a copy already there: --replace brings the history."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    async with SQLiteStore(src) as store:
        await store.append([("a", [NewEvent("ann", "edit", EMPTY)] * 3)])
        await store.put_tag("a", "v1", 1, "bob")
        await store.put_tag("a", "v1", 3, "cy")
        history = await store.tag_history("a")
        events, tags = await store.read("a"), await store.tags("a")
        info = await store.doc_info("a")
    assert [(m.action, m.seq, m.was, m.actor) for m in history] == [
        ("create", 1, None, "bob"), ("move", 3, 1, "cy")]  # fmt: skip
    r = palimpsest("copy", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}", "--quiet")
    assert r.returncode == 0, r
    async with SQLiteStore(dst) as store:
        assert await store.tag_history("a") == history
        assert await store.tag_history("a", "v1") == history
    r = palimpsest("copy", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}")
    assert r.returncode == 0 and "1 already there" in r.stdout, r
    # the document as a copy without the history left it
    assert info is not None
    async with SQLiteStore(dst) as store:
        await store.import_doc(info, events, [], tags, replace=True)
        assert await store.tag_history("a") == []
    r = palimpsest("copy", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}", "--quiet")
    assert r.returncode == 1 and "already exists" in r.stderr, r
    r = palimpsest("copy", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}", "--quiet",
                   "--replace")  # fmt: skip
    assert r.returncode == 0, r
    async with SQLiteStore(dst) as store:
        assert await store.tag_history("a") == history


async def test_a_copy_into_a_store_with_events_numbers_them_anew_and_says_so(
    tmp_path: Path,
) -> None:
    """Positions the target gave out already cannot be given again: the copied events
    come after them, and the copy says that the source's followers restart from 0."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    async with SQLiteStore(src) as store:
        await store.append([("a", [NewEvent("ann", "edit", EMPTY)] * 2)])
        await store.webhook_cursors().register("wh-1", "http://127.0.0.1:9/hook", 1)
    async with SQLiteStore(dst) as store:
        await store.append([("mine", [NewEvent("ann", "edit", EMPTY)] * 3)])
    r = palimpsest("copy", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}")
    assert r.returncode == 0, r
    assert "followers of the source's changefeed" in r.stderr
    assert "restart from 0 on the target" in r.stderr
    assert "webhook cursors are not copied (1 in the source" in r.stderr
    assert "a hook configured on the target starts at the end of its log" in r.stderr
    async with SQLiteStore(dst) as store:
        assert await store.webhook_cursors().list() == []
        assert log_of(await store.read_all()) == [
            ("mine", 1, 1), ("mine", 2, 2), ("mine", 3, 3), ("a", 1, 4), ("a", 2, 5)
        ]  # fmt: skip


@pytest.mark.parametrize("target", ["postgresql", "sqlite"])
async def test_a_webhook_behind_on_the_source_resumes_from_its_cursor_on_the_copy(
    tmp_path: Path, target: str
) -> None:
    """The copy writes the hook's row (cursor, failures, count) into the target: it wrote
    none, and a hook new to a store starts at its log's end, so the events its receiver
    had not acknowledged were never delivered. The row comes unleased: the lease was
    held by a process of the source, and must not keep the target's server waiting."""
    db = tmp_path / "src.db"
    rx = Receiver().up()
    hook = Webhook(rx.url).id
    try:
        async with SQLiteStore(db) as src:
            await src.append([("a", [NewEvent("ann", "edit", EMPTY)] * 6)])
            cursors = src.webhook_cursors()
            await cursors.register(hook, rx.url, 0)
            await cursors.claim(hook, "a process of the source", 3_600_000)
            assert await cursors.advance(hook, "a process of the source", 4, 4)
            await cursors.failed(hook, "a process of the source", "HTTP 500", 10)
        async with new_store(tmp_path, target) as url:
            r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--quiet")
            assert r.returncode == 0, r
            assert "1 of 1 webhook cursors copied" in r.stdout
            async with store_at(url) as dst:
                row = await dst.webhook_cursors().get(hook)
            assert row is not None
            assert (row.cursor, row.failures, row.last_error, row.delivered, row.owner,
                    row.lease_until) == (4, 1, "HTTP 500", 4, "", 0)  # fmt: skip
            settings = Settings(store=url, port=free_port(), webhooks=(rx.url,),
                                webhook_retry_first=0.05)  # fmt: skip
            async with run_server(settings):
                await eventually(lambda: len(rx.accepted_events()) >= 2, timeout=20,
                                 what="the events after the cursor")  # fmt: skip
            assert [(e["doc"], e["seq"], e["pos"]) for e in rx.accepted_events()] == [
                ("a", 5, 5), ("a", 6, 6)
            ]  # fmt: skip
    finally:
        rx.down()


@pytest.mark.parametrize("target", ["postgresql", "sqlite"])
async def test_a_copy_run_again_keeps_the_positions_of_the_rest(
    tmp_path: Path, target: str
) -> None:
    """A copy cut off after some documents (or one of some --doc), run again, copies the
    rest at their source positions: the target held events, so they were numbered anew
    and the source's followers told to restart. A run that copies nothing says nothing
    of positions; one into a target a server wrote on since still numbers anew."""
    db = tmp_path / "src.db"
    async with SQLiteStore(db) as src:
        for _ in range(3):
            await src.append([(doc, [NewEvent("ann", "edit", EMPTY)] * 2) for doc in "abc"])
        source = log_of(await src.read_all())
        a_info, a_events = await src.doc_info("a"), await src.read("a")
    assert a_info is not None
    async with new_store(tmp_path, target) as url:
        async with store_at(url) as dst:  # a copy cut off after its first document
            await dst.import_doc(a_info, a_events, [], [], keep_positions=True)
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--doc", "b")
        assert r.returncode == 0 and "restart" not in r.stderr, r
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url)
        assert "copied 1 of 3 documents (6 events), 2 already there" in r.stdout, r
        assert "restart" not in r.stderr, r
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url)
        assert "copied 0 of 3 documents" in r.stdout and "restart" not in r.stderr, r
        async with store_at(url) as dst:
            assert log_of(await dst.read_all()) == source
            [[e]] = await dst.append([("d", [NewEvent("bob", "edit", EMPTY)])])
            assert e.pos == len(source) + 1
        async with SQLiteStore(db) as src:
            await src.append([("e", [NewEvent("ann", "edit", EMPTY)] * 3)])
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--doc", "e")
        assert r.returncode == 0 and "restart from 0 on the target" in r.stderr, r
        async with store_at(url) as dst:
            assert log_of(await dst.read("e")) == [("e", 1, 20), ("e", 2, 21), ("e", 3, 22)]
        r = palimpsest("copy", "--from", f"sqlite:///{db}", "--to", url, "--doc", "e")
        assert "copied 0 of 1 documents" in r.stdout and "restart" not in r.stderr, r
