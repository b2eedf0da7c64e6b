"""A document whose log lacks events its head says it holds (rows deleted by hand, a
partial restore) is refused, never served nor written on top.

In the drill, `delete from log where doc=... and seq>=8` (head 11, a snapshot @11): the
server loaded the document from its snapshot, took new writes on top of it, answered
versions/head with "ts": null, and the next `verify` found a snapshot @12 that the log
contradicts. Only verify had noticed ("the log ends at 7 but the head is 11")."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually, free_port, run_server
from yclient import connect

from palimpsest.settings import Settings

DOC = "notes"
USER = {"user": "bob"}


def settings_for(db: Path) -> Settings:
    return Settings(db=str(db), port=free_port(), unload_after_seconds=0.2)


async def written(db: Path, parts: int = 11) -> str:
    """`parts` events of DOC, each its own, and a snapshot at the head (the unload's)."""
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, DOC, user="ann") as c:
            for k in range(parts):
                c.insert(len(c.content), f"{k} ")
                await eventually(lambda k=k: reached(srv.backend.store, k + 1))  # type: ignore[misc]
            text = c.content
        snaps = await eventually(lambda: srv.backend.store.snapshots(DOC), what="snapshot")
    assert max(s.seq for s in snaps) == parts
    return text


async def reached(store: Any, seq: int) -> bool:
    return bool(await store.head(DOC) >= seq)


def sql(db: Path, statement: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(statement)
    finally:
        conn.close()


def delete_log_rows(db: Path, where: str) -> None:
    sql(db, f"DELETE FROM log WHERE doc = (SELECT id FROM docs WHERE name = '{DOC}') AND {where}")


def log_rows(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT seq FROM log WHERE doc = (SELECT id FROM docs WHERE name = ?) ORDER BY seq",
            (DOC,),
        ).fetchall()
        return [r[0] for r in rows]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "where", ["seq >= 8", "seq >= 8 (no snapshot)", "seq >= 4 AND seq <= 6 (no snapshot)"]
)
async def test_a_document_whose_log_lacks_events_is_refused_and_never_written_on(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The log ends below the head: a snapshot at the head (the drill's case), or none
    (the load replays what is left). A hole the load reads across: refused too."""
    db = tmp_path / "p.db"
    await written(db)
    if "(no snapshot)" in where:
        sql(db, "DELETE FROM snapshots")
        where = where.removesuffix(" (no snapshot)")
    delete_log_rows(db, where)
    rows = log_rows(db)
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        for _ in range(3):  # a client reconnects: refused each time, said once
            async with connect(srv.ws_url, DOC, user="bob", wait_sync=False) as c:
                await eventually(lambda c=c: c.close_code is not None, what="closed")  # type: ignore[misc]
            assert c.close_code == 1011, (c.close_code, c.close_reason)
            assert "damaged" in str(c.close_reason) and "verify" in str(c.close_reason)
            assert not c.synced.is_set()
        # what loads the room over HTTP is refused too: 503, naming verify and the docs
        r = await http.put(f"/api/docs/{DOC}/text", json={"text": "over it"}, params=USER)
        assert r.status_code == 503, r.text
        assert "palimpsest verify" in r.json()["detail"], r.text
        assert "docs/storage.md#a-log-that-lacks-events" in r.json()["detail"], r.text
        if where == "seq >= 8":
            assert "ends at 7 but its head is 11" in r.json()["detail"], r.text
        # versions/head used to answer from the snapshot with "ts": null
        r = await http.get(f"/api/docs/{DOC}/versions/head", params=USER)
        assert r.status_code == 503, r.text
        assert "palimpsest verify" in r.json()["detail"], r.text
    said = [r for r in caplog.records if r.levelno >= logging.ERROR and "damaged" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert "palimpsest verify" in said[0].getMessage()
    # nothing was written on top: no event, no snapshot past the head
    assert log_rows(db) == rows
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT MAX(seq) FROM snapshots").fetchone()[0] in (11, None)
        assert conn.execute("SELECT head FROM docs WHERE name = ?", (DOC,)).fetchone()[0] == 11
    finally:
        conn.close()


async def test_versions_below_the_damage_are_still_served(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    await written(db)
    delete_log_rows(db, "seq >= 8")
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.get(f"/api/docs/{DOC}/versions/5", params=USER)
        assert r.status_code == 200, r.text
        assert r.json()["roots"]["content"]["value"] == "0 1 2 3 4 "
        assert r.json()["ts"] is not None
        # another document of the same file is served as ever
        async with connect(srv.ws_url, "other", user="bob") as c:
            c.insert(0, "fine")
            await eventually(lambda: srv.backend.store.head("other"), what="logged")


async def test_a_sound_document_loads_with_one_more_read(tmp_path: Path) -> None:
    """The check reads the head's event: a sound document (and a compacted one, whose
    base has no event) loads as before."""
    db = tmp_path / "p.db"
    text = await written(db, parts=4)
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "palimpsest", "compact", DOC, "--before", "4", "--yes",
        "--db", str(db), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await done.wait() == 0
    async with run_server(settings_for(db)) as srv:
        async with connect(srv.ws_url, DOC, user="bob") as c:
            assert c.content == text
            c.insert(len(c.content), "more")
            await eventually(lambda: reached(srv.backend.store, 5))


async def test_versions_at_a_snapshot_past_a_damaged_segment_are_served_from_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A segment whose checksum does not hold: versions/head answered 503 (its event's
    ts was read from the segment) although a snapshot at the head held the version,
    and the websocket loaded fine. Now the version is the snapshot's; what still needs
    the segment answers 503, and the server logs it."""
    from pycrdt import Doc, Text

    from palimpsest.store.base import NewEvent
    from palimpsest.store.sqlite import SQLiteStore

    db = tmp_path / "seg.db"
    ydoc: Doc = Doc()
    text = ydoc.get("content", type=Text)
    updates: list[bytes] = []
    ydoc.observe(lambda e: updates.append(e.update))
    for i in range(1024):
        text += "abcdefghij"[i % 10]
    async with SQLiteStore(db) as store:
        await store.append([(DOC, [NewEvent("ann", "edit", u, {}, 1000 + i)
                                   for i, u in enumerate(updates)])])  # fmt: skip
        assert await store.seal(DOC) == 1024
        await store.put_snapshot(DOC, 1024, ydoc.get_update())
    sql(db, "UPDATE segments SET body = randomblob(length(body))")
    want = "abcdefghij" * 102 + "abcd"
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        for ref in ("head", "1024"):
            r = await http.get(f"/api/docs/{DOC}/versions/{ref}", params=USER)
            assert r.status_code == 200, r.text
            assert r.json()["seq"] == 1024 and r.json()["roots"]["content"]["value"] == want
            assert r.json()["ts"] is None  # the event's own time is in the segment
        r = await http.get(f"/api/docs/{DOC}/versions/head", params={**USER, "format": "update"})
        assert r.status_code == 200
        r = await http.get(f"/api/docs/{DOC}/versions/500", params=USER)
        assert r.status_code == 503 and "is damaged" in r.text, r.text
        async with connect(srv.ws_url, DOC, user="bob") as c:
            assert c.content == want
    said = [
        r.getMessage() for r in caplog.records
        if r.levelno >= logging.WARNING and "503" in r.getMessage()
    ]  # fmt: skip
    assert any(f"/api/docs/{DOC}/versions/500" in m and "is damaged" in m for m in said), said
    assert not any("versions/head" in m for m in said), said
