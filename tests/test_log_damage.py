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


async def verify_out(db: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "palimpsest", "verify", "--db", str(db),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return int(proc.returncode or 0), out.decode() + err.decode()


async def test_a_hole_below_the_snapshot_is_named_by_verify_and_by_what_needs_it(
    tmp_path: Path,
) -> None:
    """Events 4..5 deleted, a snapshot @11 (the head) above them: the document loads from
    the snapshot and is sound from there, so it is served; what needs the missing events
    is not. verify said the hole and then two problems of the snapshot @11 (its state
    vector and content "differ from the log", which it was the log that lacked);
    versions 4 and 5 answered "its log ends at 3", versions 6..10 "skips seqs between 0
    and 6 ... after the snapshot" and that the document "is not served"; a diff from 2
    to 11 and the blame at the head answered 200 with three of the eleven parts."""
    db = tmp_path / "p.db"
    text = await written(db)
    delete_log_rows(db, "seq >= 4 AND seq <= 5")
    assert log_rows(db) == [1, 2, 3, 6, 7, 8, 9, 10, 11]
    code, out = await verify_out(db)
    assert code == 1, out
    assert (
        "PROBLEM notes: events 4..5 are missing from the log: versions 4..10 cannot be "
        "rebuilt (they need the missing events); the others, the current document with "
        "them (loaded from the snapshot @11), are served\n"
    ) in out, out
    assert "1 problem in 1 document" in out, out  # the snapshot @11 is not blamed
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        async with connect(srv.ws_url, DOC, user="bob") as c:
            assert c.content == text  # the current document: from the snapshot
        for ref in ("3", "11", "head"):
            r = await http.get(f"/api/docs/{DOC}/versions/{ref}", params=USER)
            assert r.status_code == 200, r.text
        assert r.json()["roots"]["content"]["value"] == text
        asks = [
            ("versions/4", {}, "version 4 was asked for"),
            ("versions/6", {}, "version 6 was asked for"),
            ("versions/10", {"format": "update"}, "version 10 was asked for"),
            ("diff", {"from": "2", "to": "6"}, "version 6 was asked for"),
            ("diff", {"from": "2", "to": "11"}, "a diff from 2 to 11 folds the events between"),
            ("blame", {}, "blame and diffs fold every event of the log"),
        ]
        for path, params, what in asks:
            r = await http.get(f"/api/docs/{DOC}/{path}", params={**USER, **params})
            assert r.status_code == 503, (path, params, r.text)
            detail = r.json()["detail"]
            assert detail.startswith(f"'notes' is damaged: its log lacks events 4..5 ({what}")
            assert "versions 4..10 cannot be rebuilt" in detail, detail
            assert "the current document with them (loaded from the snapshot @11)" in detail
            assert "not served" not in detail, detail
            assert "palimpsest verify" in detail and "#a-log-that-lacks-events" in detail
        r = await http.post(f"/api/docs/{DOC}/restore", params=USER, json={"seq": 6})
        assert r.status_code == 503 and "lacks events 4..5" in r.text, r.text
        # the document still takes edits (it is sound from its snapshot on)
        async with connect(srv.ws_url, DOC, user="bob") as c:
            c.insert(0, "new ")
            await eventually(lambda: reached(srv.backend.store, 12))
    code, out = await verify_out(db)
    assert "events 4..5 are missing" in out and "1 problem in 1 document" in out, out


def test_what_a_hole_costs_is_said_for_each_shape() -> None:
    """Unit (the words verify and the 503s use): holes before, at and after snapshots."""
    from palimpsest.log_damage import lost_words

    # below the snapshot the load starts from: served, the versions up to it lost
    assert lost_words([(4, 5)], [11], 11) == (
        "versions 4..10 cannot be rebuilt (they need the missing events); the others, the "
        "current document with them (loaded from the snapshot @11), are served",
        True,
    )
    # a snapshot at the hole's last seq holds that version; one after it, the rest
    assert lost_words([(4, 5)], [5, 11], 11)[0].startswith("version 4 cannot be rebuilt (it")
    assert lost_words([(4, 5), (8, 8)], [6, 11], 11)[0].startswith("versions 4..5, 8..10 ")
    assert lost_words([(4, 4)], [4], 11) == (
        "every version is still held by a snapshot or the log; the current document "
        "(loaded from the snapshot @4) is served",
        True,
    )
    # no snapshot after it, or a hole that reaches the head: the load refuses it
    for found, snaps in (([(4, 5)], []), ([(4, 5), (9, 11)], [11]), ([(4, 11)], [11])):
        words, served = lost_words(found, snaps, 11)
        assert not served and words.startswith("versions 4..11 cannot be rebuilt, the current")
