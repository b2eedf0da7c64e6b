"""examples/projection.py, run for real: it follows the global stream of a real server
into a SQLite FTS5 table, is killed with -9 in the middle, resumes from its own stored
position, and ends with every document's text equal to the server's."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import eventually
from feedhelp import type_into
from serverproc import REPO_ROOT, ServerProcess

from palimpsest import client
from palimpsest.store.sqlite import SQLiteStore

EXAMPLE = REPO_ROOT / "examples" / "projection.py"


def start(url: str, db: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--url", url, "--db", str(db), "--user", "indexer"],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def projected(db: Path) -> tuple[int, dict[str, str]]:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT pos FROM position").fetchone()
        texts = dict(conn.execute("SELECT doc, body FROM texts").fetchall())
    except sqlite3.OperationalError:  # not created yet
        return 0, {}
    finally:
        conn.close()
    return (int(row[0]) if row else 0), texts


async def server_texts(srv: ServerProcess) -> tuple[int, dict[str, str]]:
    async with client.History(srv.http_url, user="check") as h:
        docs = [d.doc for d in await h.docs()]
        texts = {d: (await h.version(d)).text for d in docs}
    store = SQLiteStore(srv.db_path)
    async with store:
        return await store.last_position(), texts


async def caught_up(db: Path, srv: ServerProcess) -> bool:
    last, _ = await server_texts(srv)
    return projected(db)[0] >= last


async def edit_concurrently(srv: ServerProcess, tag: str) -> None:
    async with client.connect(srv.ws_url, "shared", user="bo") as a, client.connect(
        srv.ws_url, "shared", user="cy"
    ) as b:  # fmt: skip
        for i in range(8):
            a.text().insert(0, f"[{tag}a{i}]")
            b.text().insert(len(b.text()), f"({tag}b{i})")
            await asyncio.gather(a.flush(), b.flush())
        a.text().delete(0, 3)
        await a.flush()


async def test_projection_ends_equal_to_every_document(tmp_path: Path) -> None:
    db, log = tmp_path / "search.db", tmp_path / "projection.log"
    async with ServerProcess(tmp_path / "srv") as srv:
        await asyncio.gather(
            type_into(srv.ws_url, "lovelace", ["Ada ", "wrote ", "the first ", "program"]),
            edit_concurrently(srv, "x"),
        )
        proc = start(srv.http_url, db, log)
        try:
            await eventually(lambda: caught_up(db, srv), timeout=30, what="caught up")
            # killed in the middle of a stream of edits: resumes from its own position
            writing = asyncio.create_task(
                type_into(srv.ws_url, "hopper", [f"cobol{i} " for i in range(30)])
            )
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            await writing
            await edit_concurrently(srv, "y")
            async with client.connect(srv.ws_url, "lovelace", user="ada") as s:
                assert (await s.undo()).ok  # an undo is an event like any other
            before = projected(db)[0]
            proc = start(srv.http_url, db, log)
            await eventually(lambda: caught_up(db, srv), timeout=30, what="caught up again")
            last, texts = await server_texts(srv)
            pos, mine = projected(db)
            assert pos == last and before < last
            assert mine == texts
            assert mine["lovelace"] != "Ada wrote the first program"
            # searchable
            r = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, str(EXAMPLE), "--db", str(db), "--search", "cobol29"],
                cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert r.returncode == 0 and r.stdout.startswith("hopper: "), r.stdout + r.stderr
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
    assert "stopped at position" in log.read_text()


async def test_projection_mends_a_document_written_again_and_a_compacted_one(
    tmp_path: Path,
) -> None:
    """A document deleted and written again starts again at seq 1: the projection took
    its events for repeats of the old one's and never indexed it. A document deleted
    stayed in the table (the feed said nothing of it); its `deleted` record drops it. A
    document compacted before the projection first read it starts at its base's next
    event, which builds on the folded ones: its text came out empty."""
    db, log = tmp_path / "search.db", tmp_path / "projection.log"
    async with ServerProcess(tmp_path / "srv") as srv:
        await type_into(srv.ws_url, "again", list("abcdefghij"))
        await type_into(srv.ws_url, "folded", list("klmnopqrst"))
        await type_into(srv.ws_url, "dropped", list("gone"))
        proc = start(srv.http_url, db, log)
        try:
            await eventually(lambda: caught_up(db, srv), timeout=30, what="caught up")
            assert projected(db)[1]["again"] == "abcdefghij"
            assert projected(db)[1]["dropped"] == "gone"
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            async with httpx.AsyncClient(base_url=srv.http_url) as http:
                for doc in ("again", "dropped"):  # "dropped" is not written again
                    r = await http.delete(f"/api/docs/{doc}", params={"user": "admin"})
                    assert r.status_code == 200, r.text
            await type_into(srv.ws_url, "again", ["XYZ"] * 3)  # seqs 1..3 again
            await type_into(srv.ws_url, "late", list("uvwxyz"))
            await srv.astop()
            r = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "palimpsest", "compact", "late", "--before", "4",
                 "--yes", "--db", str(srv.db_path)],
                cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            await srv.astart()
            await type_into(srv.ws_url, "late", ["!"])
            fresh = tmp_path / "fresh.db"  # a new read model: "late" starts at seq 5
            proc = start(srv.http_url, db, log)
            proc2 = start(srv.http_url, fresh, tmp_path / "fresh.log")
            try:
                await eventually(lambda: caught_up(db, srv), timeout=30, what="caught up")
                await eventually(lambda: caught_up(fresh, srv), timeout=30, what="fresh")
            finally:
                proc2.send_signal(signal.SIGTERM)
                proc2.wait(10)
            _, texts = await server_texts(srv)
            assert texts["again"] == "XYZXYZXYZ" and texts["late"] == "uvwxyz!"
            assert "dropped" not in texts  # and so not in the read model (its deletion)
            assert projected(db)[1] == texts
            assert projected(fresh)[1] == texts
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
