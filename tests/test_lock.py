"""Locking a document read-only (server.locking): an admin locks it over HTTP; the real
clients (npm y-websocket and @hocuspocus/provider under Node.js, the Python one) stay
connected and keep receiving, and their edits are refused as a read-only token's are;
every HTTP write is refused with 423; nothing refused is logged; the lock and the unlock
are events of the history; the lock survives a restart on SQLite and PostgreSQL; the
CLI locks a stopped server's store; an older store (no doc_locks table) is upgraded on
start.

Run:  .venv/bin/pytest tests/test_lock.py        (the Node.js tests: -m node)
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import PG_URL, RunningServer, eventually
from pycrdt import Doc, Text
from scaleout import cluster, fanout_url, fresh_schema
from scaleout import open_store as open_pg
from serverproc import REPO_ROOT, ServerProcess
from test_hocuspocus_node import Driver, stored_text
from test_interop_node import node_modules
from test_read_only_node import TokenNodeClient
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest.auth.tokens import mint
from palimpsest.store import open_store
from palimpsest.store.base import NewEvent, now_ms
from palimpsest.store.doc_locks import DocLock
from palimpsest.store.sqlite import SQLiteStore

__all__ = ["node_modules"]  # the session fixture that runs `npm ci` when needed

SECRET = "lock-test-secret-that-is-32-bytes-long"
DOC = "lk-doc"
REASON = "exam in progress"


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def denials(c: YClient) -> list[str]:
    """The permission-denied reasons the Python client got."""
    return [m.reason for m in c.frames if isinstance(m, P.AuthMessage)]


def update_of(text: str) -> bytes:
    d: Doc = Doc()
    d.get("content", type=Text).insert(0, text)
    return d.get_update()


async def kinds_logged(db: Path, doc: str) -> list[tuple[str, str]]:
    async with SQLiteStore(str(db)) as store:
        return [(e.kind, e.actor) for e in await store.read(doc)]


async def _at_least(fetch: Any, n: int) -> list[str] | None:
    got = await fetch()
    return got if len(got) >= n else None


@pytest.mark.node
async def test_a_locked_document_refuses_every_edit_and_the_unlock_lets_them_in(
    node_modules: Path, tmp_path: Path
) -> None:
    admin = mint(SECRET, "teacher", "admin", ["lk-*"])
    writer = mint(SECRET, "pupil", "write", ["lk-*"])
    other = mint(SECRET, "other", "write", ["lk-*"])
    async with (
        ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv,
        Driver(srv, tmp_path / "hp.log") as hp,
        httpx.AsyncClient(base_url=srv.http_url) as http,
    ):
        node = TokenNodeClient(srv, DOC, writer, tmp_path / "node.log")
        try:
            async with connect(srv.ws_url, DOC, token=writer) as py:
                py.insert(0, "hello ")
                await node.start()
                await node.connect()
                assert await node.wait_text(equals="hello ") == "hello "
                await hp.socket("s3", 3)
                await hp.open("h", "s3", DOC, token=other)
                await hp.wait("h", "text", equals="hello ")

                # only an admin locks
                r = await http.put(f"/api/docs/{DOC}/lock", headers=bearer(writer), json={})
                assert r.status_code == 403, r.text
                r = await http.put(
                    f"/api/docs/{DOC}/lock", headers=bearer(admin), json={"reason": REASON}
                )
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["locked"] is True and body["by"] == "teacher"
                assert body["reason"] == REASON and isinstance(body["seq"], int)
                r = await http.get(f"/api/docs/{DOC}/lock", headers=bearer(writer))
                assert r.json()["locked"] is True and r.json()["reason"] == REASON
                listed = (await http.get("/api/docs", headers=bearer(writer))).json()["docs"]
                assert [(d["doc"], d["locked"]) for d in listed] == [(DOC, True)]

                # y-websocket (Node.js): every update is answered permission-denied
                await node.call("frames", clear=True)
                await node.call("type", text="SECRET", pos=0)

                async def node_denials() -> list[str]:
                    frames = (await node.call("frames"))["frames"]
                    return [
                        f["reason"]
                        for f in frames
                        if f["dir"] == "recv" and f.get("type") == "auth"
                    ]

                got = await eventually(lambda: _at_least(node_denials, 6), what="six denials")
                assert all("locked" in g and REASON in g for g in got), got
                # the Python client too
                py.insert(len(py.content), "PY")
                await eventually(lambda: denials(py), what="the Python client's denial")
                assert "locked" in denials(py)[0] and "teacher" in denials(py)[0]
                # Hocuspocus: not acknowledged (SyncStatus false), still connected
                await hp.call("insert", name="h", text="HP", pos=0)
                hello = await hp.request("h", {"type": "hello", "id": "x"})
                assert hello["ok"]
                state = await hp.call("state", name="h")
                assert state["hasUnsynced"] is True and state["connected"] is True
                undo = await hp.request("h", {"type": "undo", "id": "u"})
                assert undo["ok"] is False and undo["code"] == "Locked", undo

                # every HTTP write: 423 with a JSON error saying why
                who = bearer(admin)
                refused = [
                    await http.put(f"/api/docs/{DOC}/text", headers=who, json={"text": "x"}),
                    await http.post(f"/api/docs/{DOC}/restore", headers=who, json={"seq": 1}),
                    await http.post(
                        f"/api/docs/{DOC}/revert", headers=who, json={"actor": "pupil", "since": 0}
                    ),  # fmt: skip
                    await http.post(f"/api/docs/{DOC}/undo", headers=bearer(writer)),
                    await http.post(f"/api/docs/{DOC}/redo", headers=bearer(writer)),
                    await http.post(
                        f"/api/docs/{DOC}/updates",
                        headers={**who, "Content-Type": "application/octet-stream"},
                        content=update_of("IMP"),
                    ),  # fmt: skip
                    await http.delete(f"/api/docs/{DOC}", headers=who),
                ]
                for r in refused:
                    assert r.status_code == 423, (r.request.url, r.text)
                    assert r.json()["error"] == "Locked" and REASON in r.json()["detail"]

                # everyone still receives: the lock holds no reader back
                async with connect(srv.ws_url, DOC, token=other) as late:
                    assert late.content == "hello "
                    assert node.wait_text  # (the node client is still connected)
                    assert (await node.call("state"))["connected"] is True

                # unlocked: edits are taken again
                r = await http.delete(f"/api/docs/{DOC}/lock", headers=bearer(admin))
                assert r.status_code == 200 and r.json()["locked"] is False, r.text
                r = await http.delete(f"/api/docs/{DOC}/lock", headers=bearer(admin))
                assert r.json() == {"doc": DOC, "locked": False, "seq": None}
                r = await http.put(
                    f"/api/docs/{DOC}/text", headers=bearer(writer),
                    json={"text": "hello world"},
                )  # fmt: skip
                assert r.status_code == 200, r.text
                await hp.wait("h", "text", contains="world")

                # the history shows the lock and the unlock, with the reason
                r = await http.get(f"/api/docs/{DOC}/events", headers=bearer(writer))
                events = r.json()["events"]
                marks = [(e["kind"], e["actor"]) for e in events if e["kind"] in ("lock", "unlock")]
                assert marks == [("lock", "teacher"), ("unlock", "teacher")], events
                lock_ev = next(e for e in events if e["kind"] == "lock")
                assert lock_ev["meta"]["reason"] == REASON
        finally:
            await node.aclose()
    logged = await kinds_logged(srv.db_path, DOC)
    at_lock = logged.index(("lock", "teacher"))
    at_unlock = logged.index(("unlock", "teacher"))
    assert at_unlock == at_lock + 1, f"nothing refused was logged between: {logged}"


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_the_lock_survives_a_restart(kind: str, tmp_path: Path) -> None:
    async with fresh_schema() as pg_url:
        extra = ["--store", pg_url] if kind == "postgres" else []
        srv = ServerProcess(tmp_path / "srv", extra_args=extra)
        async with srv, httpx.AsyncClient() as http:
            q = {"user": "root"}
            r = await http.put(f"{srv.http_url}/api/docs/contract/text", params=q,
                               json={"text": "terms"})  # fmt: skip
            assert r.status_code == 200, r.text
            r = await http.get(f"{srv.http_url}/api/docs/contract/lock", params=q)
            assert r.json() == {"doc": "contract", "locked": False}
            r = await http.put(f"{srv.http_url}/api/docs/contract/lock", params=q)
            assert r.status_code == 200 and r.json()["reason"] == "", r.text
            await srv.arestart()
            r = await http.get(f"{srv.http_url}/api/docs", params=q)
            assert [(d["doc"], d["locked"]) for d in r.json()["docs"]] == [("contract", True)]
            r = await http.put(f"{srv.http_url}/api/docs/contract/text", params=q,
                               json={"text": "changed"})  # fmt: skip
            assert r.status_code == 423, r.text
            async with connect(srv.ws_url, "contract", user="bob") as bob:
                assert bob.content == "terms"
                bob.insert(0, "no ")
                await eventually(lambda: denials(bob), what="bob's edit refused")
            await srv.arestart()
            async with connect(srv.ws_url, "contract", user="eve") as eve:
                assert eve.content == "terms", "the refused edit was not stored"
            r = await http.delete(f"{srv.http_url}/api/docs/contract/lock", params=q)
            assert r.status_code == 200, r.text
            await srv.arestart()
            r = await http.put(f"{srv.http_url}/api/docs/contract/text", params=q,
                               json={"text": "changed"})  # fmt: skip
            assert r.status_code == 200, r.text
            # locking a document that does not exist
            r = await http.put(f"{srv.http_url}/api/docs/nothing/lock", params=q)
            assert r.status_code == 404, r.text


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_the_cli_locks_and_unlocks_a_stopped_servers_document(tmp_path: Path) -> None:
    db = tmp_path / "srv" / "palimpsest.db"
    srv = ServerProcess(tmp_path / "srv", db_path=db)
    async with srv, httpx.AsyncClient() as http:
        r = await http.put(f"{srv.http_url}/api/docs/paper/text", params={"user": "t"},
                           json={"text": "questions"})  # fmt: skip
        assert r.status_code == 200, r.text
    out = cli("lock", "paper", "--reason", "exam", "--store", str(db))
    assert out.returncode == 0, out.stderr
    assert "locked" in out.stdout
    out = cli("lock", "--list", "--store", str(db))
    listed = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(x["doc"], x["reason"], x["by"]) for x in listed] == [
        ("paper", "exam", "palimpsest lock")
    ]
    out = cli("lock", "absent", "--store", str(db))
    assert out.returncode == 1 and "no document" in out.stderr
    async with srv, httpx.AsyncClient() as http:
        r = await http.put(f"{srv.http_url}/api/docs/paper/text", params={"user": "t"},
                           json={"text": "answers"})  # fmt: skip
        assert r.status_code == 423 and "exam" in r.json()["detail"], r.text
        r = await http.get(f"{srv.http_url}/api/docs/paper/events", params={"user": "t"})
        assert [e["kind"] for e in r.json()["events"]][-1] == "lock"
    out = cli("lock", "paper", "--unlock", "--store", str(db))
    assert out.returncode == 0, out.stderr
    async with srv, httpx.AsyncClient() as http:
        r = await http.put(f"{srv.http_url}/api/docs/paper/text", params={"user": "t"},
                           json={"text": "answers"})  # fmt: skip
        assert r.status_code == 200, r.text
    assert [k for k, _ in await kinds_logged(db, "paper")][-3:] == ["lock", "unlock", "edit"]


async def test_the_cli_lock_records_who_with_by(tmp_path: Path) -> None:
    """`palimpsest lock --by NAME` records a person: the lock's `by` (what refused
    clients are told, `--list`, GET …/lock) and the lock and unlock events' actor; the
    default stays "palimpsest lock". A NAME no user may have is refused (exit 2)."""
    db = tmp_path / "p.db"
    store = SQLiteStore(str(db))
    async with store:
        await store.append([("paper", [NewEvent("t", "edit", update_of("Q1"), ts=now_ms())])])
    out = cli("lock", "paper", "--by", "ann", "--reason", "exam", "--store", str(db))
    assert out.returncode == 0, out.stderr
    out = cli("lock", "--list", "--store", str(db))
    assert [(x["doc"], x["by"]) for x in map(json.loads, out.stdout.splitlines())] == [
        ("paper", "ann")
    ]
    out = cli("lock", "paper", "--unlock", "--by", "bob", "--store", str(db))
    assert out.returncode == 0, out.stderr
    out = cli("lock", "paper", "--store", str(db))  # the default
    assert out.returncode == 0, out.stderr
    assert (await kinds_logged(db, "paper"))[1:] == [
        ("lock", "ann"),
        ("unlock", "bob"),
        ("lock", "palimpsest lock"),
    ]
    out = cli("lock", "paper", "--unlock", "--by", " ann", "--store", str(db))
    assert out.returncode == 2 and "--by" in out.stderr, out.stderr
    assert (await kinds_logged(db, "paper"))[-1] == ("lock", "palimpsest lock")


async def test_a_store_of_the_previous_release_gets_the_locks_table_on_start(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.db"
    async with SQLiteStore(str(db)):
        pass  # (a store of this release: doc_locks made on open)
    # what the previous release left: no doc_locks table, no marker row of it
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE doc_locks")
    conn.execute("DELETE FROM side_tables WHERE name = 'doc_locks'")
    conn.commit()
    conn.close()
    async with SQLiteStore(str(db)) as store:
        assert await store.doc_locks().get("x") is None
        assert not store.schema_notes(), "a table the store never had is made without a word"


@pytest.mark.postgres
async def test_a_postgres_schema_of_the_previous_release_gets_the_locks_table(
    tmp_path: Path,
) -> None:
    from palimpsest.store.doc_locks import DocLock

    async with fresh_schema() as url:
        store = open_store(url)
        await store.start()
        await store.stop()
        schema = url.split("schema=")[1]
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP TABLE "{schema}".doc_locks')
            await conn.execute(f"DELETE FROM \"{schema}\".side_tables WHERE name = 'doc_locks'")
        finally:
            await conn.close()
        store = open_store(url)
        await store.start()
        try:
            await store.doc_locks().put(DocLock("a", "ann", 1, "why"))
            assert await store.doc_locks().get("a") == DocLock("a", "ann", 1, "why")
            assert await store.doc_locks().remove("a") is True
            assert await store.doc_locks().of(["a"]) == {}
        finally:
            await store.stop()


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_lock_set_on_one_process_holds_on_the_other(tmp_path: Path) -> None:
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
        httpx.AsyncClient() as http,
    ):
        q = {"user": "root"}
        p0, p1 = c.procs[0].http_url, c.procs[1].http_url

        async def put_same_text(base: str) -> int:
            # the same text: changes nothing when unlocked (no event), 423 when locked
            r = await http.put(f"{base}/api/docs/deal/text", params=q, json={"text": "draft"})
            return r.status_code

        async with (
            connect(c.ws(0), "deal", user="ann") as a,
            connect(c.ws(1), "deal", user="bob") as b,
        ):
            a.insert(0, "draft")
            await eventually(lambda: b.content == "draft", what="bob has the draft")
            r = await http.put(f"{p0}/api/docs/deal/lock", params=q, json={"reason": "signed"})
            assert r.status_code == 200, r.text

            async def p1_locked() -> bool:
                return await put_same_text(p1) == 423

            await eventually(p1_locked, timeout=15, what="the other process holds the lock")
            b.insert(0, "X")
            await eventually(lambda: denials(b), what="bob's edit refused on the other process")
            assert "signed" in denials(b)[0]
            # unlocked on the other process: the first one takes edits again
            r = await http.delete(f"{p1}/api/docs/deal/lock", params=q)
            assert r.status_code == 200 and r.json()["seq"] is not None, r.text

            async def p0_unlocked() -> bool:
                return await put_same_text(p0) == 200

            await eventually(p0_unlocked, timeout=15, what="the first process lifts the lock")
            a.insert(len(a.content), " ok")
            await eventually(lambda: "draft ok" in b.content, what="bob has ann's edit")
        async with open_pg(store_url) as store:
            events = await store.read("deal")
            logged = [(e.kind, e.actor) for e in events]
            texts: Doc = Doc()  # the document as the unlock found it
            for e in events:
                if (e.kind, e.actor) == ("unlock", "root"):
                    break
                texts.apply_update(e.update)
        assert ("lock", "root") in logged and ("unlock", "root") in logged, logged
        at = logged.index(("lock", "root"))
        assert logged[at + 1] == ("unlock", "root"), f"nothing taken while locked: {logged}"
        # bob's refused "X" was not taken under the lock (the unlock's re-sync may bring
        # it in after it, as documented)
        assert "X" not in str(texts.get("content", type=Text))


@pytest.mark.postgres
async def test_a_copy_to_postgresql_keeps_the_document_locked(tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    async with SQLiteStore(str(db)) as src:
        await src.append([("frozen", [NewEvent("ann", "edit", update_of("terms"), {}, 1000)])])
        await src.append([("free", [NewEvent("ann", "edit", update_of("notes"), {}, 1000)])])
    out = cli("lock", "frozen", "--reason", "signed", "--store", str(db))
    assert out.returncode == 0, out.stderr
    async with fresh_schema() as url:
        out = cli("copy", "--from", f"sqlite:///{db}", "--to", url, "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["locks"] == 1
        srv = ServerProcess(tmp_path / "pg", extra_args=["--store", url])
        async with srv, httpx.AsyncClient() as http:
            q = {"user": "t"}
            r = await http.put(f"{srv.http_url}/api/docs/frozen/text", params=q,
                               json={"text": "changed"})  # fmt: skip
            assert r.status_code == 423 and "signed" in r.json()["detail"], r.text
            r = await http.put(f"{srv.http_url}/api/docs/free/text", params=q,
                               json={"text": "changed"})  # fmt: skip
            assert r.status_code == 200, r.text


@pytest.mark.postgres
@pytest.mark.redis
async def test_the_cli_lock_with_fanout_reaches_a_running_process(tmp_path: Path) -> None:
    fanout = fanout_url(check=3600)  # (no gap check meanwhile: only the message tells)
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 1, store_url=store_url, fanout=fanout) as c,
        connect(c.ws(0), "memo", user="ann") as ann,
    ):
        ann.insert(0, "draft")
        async with open_pg(store_url) as store:

            async def logged() -> bool:
                return await store.head("memo") > 0

            await eventually(logged, what="ann's edit logged")
        out = cli("lock", "memo", "--reason", "frozen", "--store", store_url, "--fanout", fanout)
        assert out.returncode == 0, out.stderr
        # the room open on the server takes the lock from the published event, with no
        # restart, no reload and no read of the store: once the message is in, ann's
        # first edit is refused (without it that edit was logged, and only then the lock
        # read from the store after it)
        async with httpx.AsyncClient() as http:

            async def message_in() -> bool:
                r = await http.get(f"{c.procs[0].http_url}/metrics")
                return any(
                    line.startswith("palimpsest_fanout_received_messages")
                    and float(line.split()[-1]) >= 1
                    for line in r.text.splitlines()
                )

            await eventually(message_in, timeout=15, what="the CLI's message received")
        ann.insert(len(ann.content), " more")
        await eventually(lambda: denials(ann), timeout=15, what="ann's edit refused")
        assert "frozen" in denials(ann)[0]
        async with open_pg(store_url) as store:
            kinds = [e.kind for e in await store.read("memo")]
        assert kinds[-1] == "lock", kinds


async def test_the_python_session_says_locked_and_recovers_after_the_unlock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Python client (palimpsest.client) during a lock: flush() raises Locked (a
    ReadOnly, so existing handlers still catch it), one WARNING for the lock however
    many edits are refused (DEBUG after), and once unlocked the session recovers by
    itself: its error cleared, flush() succeeding, the refused edits on the server."""
    from palimpsest import client

    caplog.set_level("DEBUG", logger="palimpsest.client")
    doc = "lk-py"
    async with (
        ServerProcess(tmp_path / "srv") as srv,
        httpx.AsyncClient(base_url=srv.http_url, params={"user": "admin"}) as http,
        client.connect(srv.ws_url, doc, user="pyL") as s,
    ):
        s.text().insert(0, "base.")
        await s.flush()
        r = await http.put(f"/api/docs/{doc}/lock", json={"reason": REASON})
        assert r.status_code == 200, r.text

        for i in range(4):
            s.text().append(f"[during{i}]")
            # each edit is answered with its own refusal
            await eventually(lambda i=i: len(_lock_refusals(caplog)) > i, what=f"refusal {i}")
        assert isinstance(s.error, client.Locked) and isinstance(s.error, client.ReadOnly)
        assert REASON in str(s.error)
        with pytest.raises(client.Locked, match="locked"):
            await s.flush(timeout=5)
        # an HTTP write says it too (423)
        async with client.History(srv.http_url, user="admin") as h:
            with pytest.raises(client.Locked) as e:
                await h.put_text(doc, "overwritten")
            assert e.value.code == 423
        refusals = _lock_refusals(caplog)
        warned = [r for r in refusals if r.levelname == "WARNING"]
        assert len(warned) == 1, [(r.levelname, r.getMessage()) for r in refusals]
        assert all(r.levelname == "DEBUG" for r in refusals if r not in warned)

        r = await http.delete(f"/api/docs/{doc}/lock")
        assert r.status_code == 200 and r.json()["locked"] is False, r.text
        s.text().append("[after]")
        await s.wait_for(lambda: s.error is None, timeout=10)
        await s.flush(timeout=10)
        async with client.History(srv.http_url, user="admin") as h:
            text = (await h.version(doc)).text
        assert text == str(s.text()) == "base.[during0][during1][during2][during3][after]"

        # a second lock is said again, once
        caplog.clear()
        r = await http.put(f"/api/docs/{doc}/lock", json={})
        assert r.status_code == 200, r.text
        s.text().append("[again]")
        await s.wait_for(lambda: isinstance(s.error, client.Locked), timeout=10)
        with pytest.raises(client.Locked):
            await s.flush(timeout=5)
        warned = [r for r in _lock_refusals(caplog) if r.levelname == "WARNING"]
        assert len(warned) == 1, warned
        # unlocked, nothing typed since: flush() sends the refused edit again itself
        r = await http.delete(f"/api/docs/{doc}/lock")
        assert r.status_code == 200, r.text
        await s.flush(timeout=10)
        assert s.error is None and s.denied is None
        async with client.History(srv.http_url, user="admin") as h:
            assert (await h.version(doc)).text.endswith("[after][again]")


async def test_an_undo_group_refused_for_a_lock_raises_locked(server: RunningServer) -> None:
    """`async with session.undo_group()` on a locked document raises client.Locked,
    with the lock's reason, as docs/client.md says a lock shows up: it raised a plain
    ReadOnly, since the refusal ("locked: ... is locked read-only by ...") holds the
    words "read-only" that the client took for a read-only token's. The same over HTTP
    (History's undo groups: 423)."""
    from palimpsest import client

    doc = "lk-group"
    async with httpx.AsyncClient(base_url=server.url, params={"user": "admin"}) as http:
        r = await http.put(f"/api/docs/{doc}/text", json={"text": "x"})
        assert r.status_code == 200, r.text
        r = await http.put(f"/api/docs/{doc}/lock", json={"reason": REASON})
        assert r.status_code == 200, r.text
    async with client.connect(server.url, doc, user="bot") as s:
        with pytest.raises(client.Locked, match=REASON):
            async with s.undo_group():
                s.text().append("y")
        for answer in (await s.open_group(), await s.undo(), await s.redo()):
            assert not answer.ok and (answer.reason or "").startswith("locked:"), answer
    async with client.History(server.url, user="bot") as h:
        with pytest.raises(client.Locked, match=REASON):
            await h.open_group(doc)


def _lock_refusals(caplog: pytest.LogCaptureFixture) -> list[Any]:
    """The client's log records of refusals for a lock."""
    said = [(r, r.getMessage()) for r in caplog.records if r.name == "palimpsest.client"]
    return [r for r, m in said if "refused" in m and "locked" in m]


@pytest.mark.node
async def test_a_client_that_connected_while_locked_gets_its_edits_in_after_the_unlock(
    node_modules: Path, tmp_path: Path
) -> None:
    """y-websocket and Hocuspocus providers that connect while the document is locked
    and type (refused): the unlock brings in everything they typed (and deleted), and
    their next edits are taken (they were dropped silently, built on the refused ones,
    until the client reconnected)."""
    admin = mint(SECRET, "teacher", "admin", ["lk-*"])
    writer = mint(SECRET, "pupil", "write", ["lk-*"])
    doc = "lk-late"
    async with (
        ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv,
        Driver(srv, tmp_path / "hp.log") as hp,
        httpx.AsyncClient(base_url=srv.http_url) as http,
    ):
        r = await http.put(f"/api/docs/{doc}/text", headers=bearer(writer), json={"text": "base "})
        assert r.status_code == 200, r.text
        r = await http.put(f"/api/docs/{doc}/lock", headers=bearer(admin), json={"reason": "r"})
        assert r.status_code == 200, r.text
        node = TokenNodeClient(srv, doc, writer, tmp_path / "node.log")
        try:
            await node.start()
            await node.connect()
            assert await node.wait_text(equals="base ") == "base "
            await hp.socket("s3", 3)
            await hp.open("h", "s3", doc, token=writer)
            await hp.wait("h", "text", equals="base ")

            # typed and deleted while locked: refused
            await node.call("type", text="NODE", pos=0)
            await node.call("delete", pos=len("NODEbase"))  # (the space)

            async def node_denials() -> list[str]:
                frames = (await node.call("frames"))["frames"]
                return [
                    f["reason"] for f in frames if f["dir"] == "recv" and f.get("type") == "auth"
                ]

            await eventually(lambda: _at_least(node_denials, 5), what="five denials")
            await hp.call("insert", name="h", text="HP", pos=0)
            await hp.wait("h", "statuses", contains="0")

            r = await http.delete(f"/api/docs/{doc}/lock", headers=bearer(admin))
            assert r.status_code == 200 and r.json()["locked"] is False, r.text

            # the unlock asks both for a re-sync: what they typed and deleted comes in,
            # with no further edit (the tab may close right after)
            async def stored(*parts: str) -> str | None:
                text = await stored_text(srv, doc)
                return text if all(s in text for s in parts) and " " not in text else None

            text = await eventually(lambda: stored("NODE", "HP", "base"), what="edits stored")
            assert len(text) == len("NODEHPbase"), text
            await hp.wait("h", "unsynced", equals=0)
            assert await node.wait_text(equals=text) == text

            # and the next edits are taken as any
            await node.call("type", text="-")
            await hp.call("insert", name="h", text="+")
            text = await eventually(lambda: stored("-", "+"), what="the next edits stored")
            assert len(text) == len("NODEHPbase-+"), text
            await hp.wait("h", "unsynced", equals=0)
            assert await node.wait_text(equals=text) == text
        finally:
            await node.aclose()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_the_cli_lock_refuses_a_store_a_server_serves_without_fanout(
    kind: str, tmp_path: Path
) -> None:
    """Without a bus the CLI cannot tell a running server: a lock it wrote was taken by
    an open room only when it loaded again (an edit logged after the lock event), an
    unlock never (edits refused long after). So it refuses, names the HTTP route, and
    changes nothing; with the server stopped it works."""
    async with fresh_schema() as pg_url:
        db = tmp_path / "srv" / "palimpsest.db"
        store = pg_url if kind == "postgres" else str(db)
        extra = ["--store", pg_url] if kind == "postgres" else []
        srv = ServerProcess(tmp_path / "srv", db_path=db, extra_args=extra)
        q = {"user": "t"}
        async with srv, httpx.AsyncClient(base_url=srv.http_url) as http:
            r = await http.put("/api/docs/paper/text", params=q, json={"text": "questions"})
            assert r.status_code == 200, r.text
            out = cli("lock", "paper", "--reason", "exam", "--store", store)
            assert out.returncode == 1, (out.stdout, out.stderr)
            assert "serves" in out.stderr and "/api/docs/paper/lock" in out.stderr, out.stderr
            # --fanout tells only the servers on that bus: this one has none
            out = cli("lock", "paper", "--store", store, "--fanout", fanout_url())
            assert out.returncode == 1 and "without a fan-out bus" in out.stderr, out.stderr
            r = await http.put("/api/docs/paper/text", params=q, json={"text": "answers"})
            assert r.status_code == 200, r.text
            r = await http.get("/api/docs/paper/lock", params=q)
            assert r.json()["locked"] is False
            # locked over HTTP: the CLI's unlock is refused as well, and the lock holds
            r = await http.put("/api/docs/paper/lock", params=q, json={"reason": "exam"})
            assert r.status_code == 200, r.text
            out = cli("lock", "paper", "--unlock", "--store", store)
            assert out.returncode == 1 and "serves" in out.stderr, (out.stdout, out.stderr)
            r = await http.get("/api/docs/paper/lock", params=q)
            assert r.json()["locked"] is True
            out = cli("lock", "--list", "--store", store)  # (reading is fine)
            assert out.returncode == 0 and '"paper"' in out.stdout, out.stderr
        out = cli("lock", "paper", "--unlock", "--store", store)
        assert out.returncode == 0 and "unlocked" in out.stdout, out.stderr
    if kind == "sqlite":
        kinds = [k for k, _ in await kinds_logged(db, "paper")]
        assert kinds[-2:] == ["lock", "unlock"] and kinds.count("lock") == 1, kinds


async def test_a_reason_with_control_or_format_characters_is_refused(tmp_path: Path) -> None:
    """A reason is shown to every refused client (and in the server's log): NUL, ANSI
    escapes, line breaks and bidi overrides (which show a reason other than the one
    stored) are refused with 400 over HTTP and by the CLI, and nothing is locked;
    the joiners of emoji and scripts stay allowed."""
    bad = ["a\x00b", "\x1b[31mred\x1b[0m", "exam\u202eog.exe", "two\nlines", "tab\there",
           "zero\u200bwidth", "\u2028", "\x7f", "\x85"]  # fmt: skip
    db = tmp_path / "srv" / "palimpsest.db"
    srv = ServerProcess(tmp_path / "srv", db_path=db)
    q = {"user": "root"}
    async with srv, httpx.AsyncClient(base_url=srv.http_url) as http:
        r = await http.put("/api/docs/memo/text", params=q, json={"text": "x"})
        assert r.status_code == 200, r.text
        for reason in bad:
            r = await http.put("/api/docs/memo/lock", params=q, json={"reason": reason})
            assert r.status_code == 400, (reason, r.text)
            assert "control" in r.json()["detail"], r.text
            r = await http.get("/api/docs/memo/lock", params=q)
            assert r.json()["locked"] is False, reason
        # (a subdivision flag is 🏴 and tag characters, taken in user names too)
        flag = "🏴" + "".join(chr(0xE0000 + ord(c)) for c in "gbsct") + "\U000e007f"
        good = f"exam 📝 in progress — Prüfung 👨‍👩‍👧 می‌خواهم {flag}"
        r = await http.put("/api/docs/memo/lock", params=q, json={"reason": good})
        assert r.status_code == 200 and r.json()["reason"] == good, r.text
        r = await http.delete("/api/docs/memo/lock", params=q)
        assert r.status_code == 200, r.text
    for reason in bad[1:]:  # (no NUL in a command line)
        out = cli("lock", "memo", "--reason", reason, "--store", str(db))
        assert out.returncode == 1 and "control" in out.stderr, (reason, out.stderr)
    out = cli("lock", "--list", "--store", str(db))
    assert out.stdout == "", out.stdout
    # a row written before they were refused: the clients are told it without them
    async with SQLiteStore(str(db)) as store:
        await store.doc_locks().put(DocLock("memo", "old", now_ms(), "\x1b[2Jgone\u202e"))
    async with srv, connect(srv.ws_url, "memo", user="bob") as bob:
        bob.insert(0, "no ")
        await eventually(lambda: denials(bob), what="bob's edit refused")
        assert "\ufffd[2Jgone\ufffd" in denials(bob)[0], denials(bob)


@pytest.mark.parametrize("locked", [True, False])
async def test_edits_the_lock_refused_stay_their_writers_after_the_unlock(
    server: Any, locked: bool
) -> None:
    """A client that sends no presence (the Python one) types while the document is
    locked: refused, and brought in by the step 2 that answers the unlock's re-sync.
    Those items are its writer's, as the same edit taken unlocked is: a revert of the
    writer's edits names nobody else's text (it said 5 characters "by an unknown
    writer": the step 2 relayed the client id, claimed by nobody), and blame agrees."""
    doc = f"lk-own-{locked}"
    async with httpx.AsyncClient(base_url=server.url, params={"user": "ann"}) as http:
        r = await http.put(f"/api/docs/{doc}/text", json={"text": "Q1"})
        assert r.status_code == 200, r.text
        async with connect(server.ws_url, doc, "stu") as stu:
            assert stu.content == "Q1"
            if locked:
                r = await http.put(f"/api/docs/{doc}/lock", json={"reason": "r"})
                assert r.status_code == 200, r.text
            stu.insert(2, " answer")
            if locked:
                await eventually(lambda: denials(stu) or None, what="the edit refused")
                r = await http.delete(f"/api/docs/{doc}/lock")
                assert r.status_code == 200 and r.json()["locked"] is False, r.text

            async def taken() -> bool:
                return await head_text(http, doc) == "Q1 answer"

            await eventually(taken, what="stu's edit logged")
        r = await http.put(f"/api/docs/{doc}/text", json={"text": "Q1 changed at source"})
        assert r.status_code == 200, r.text

        r = await http.get(f"/api/docs/{doc}/blame")
        runs = r.json()["roots"]["content"]["runs"]
        by_stu = "".join(run["text"] for run in runs if run["actor"] == "stu")
        # (the PUT's rewrite keeps only the common "Q1 ": it kept " anse", letters of
        # "answer" scattered through ann's words, until bounded_diff._folded)
        assert by_stu == " ", runs
        r = await http.get(f"/api/docs/{doc}/events")
        kinds = [(e["kind"], e["actor"]) for e in r.json()["events"]]
        assert (("lock", "ann") in kinds) is locked, kinds

        body = {"actor": "stu", "since": 1}
        dry = await http.post(f"/api/docs/{doc}/revert", params={"dry_run": "true"}, json=body)
        assert dry.status_code == 200, dry.text
        assert dry.json()["removed"] == {"characters": 1, "items": 0}, dry.text
        assert "removed_others" not in dry.json(), dry.text
        done = await http.post(f"/api/docs/{doc}/revert", json=body)
        assert done.status_code == 200, done.text
        assert "removed_others" not in done.json(), done.text
        assert await head_text(http, doc) == "Q1changed at source"


async def head_text(http: httpx.AsyncClient, doc: str) -> str:
    r = await http.get(f"/api/docs/{doc}/versions/head")
    assert r.status_code == 200, r.text
    return str(r.json()["roots"]["content"]["value"])
