"""`palimpsest restamp DOC`: a document whose events a server with its clock a year ahead
stamped (and every event after them kept that ts, the store never lets a document's ts
go back) gets them pulled back to now, on SQLite and PostgreSQL: the run starts 1 ms
after the last sound event, keeps its spacing, and ends no later than now; the tags and
snapshots stamped in that span follow (a snapshot's undo stacks too); `versions?at=`,
`since=` and the next edit's ts then work; `--dry-run` says the same and changes nothing;
a store a server serves is refused.

Run:  .venv/bin/pytest tests/test_restamp.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, run_server
from scaleout import fresh_schema
from serverproc import REPO_ROOT, ServerProcess
from test_cli_docs import edits

from palimpsest.settings import Settings
from palimpsest.store import open_store
from palimpsest.store.base import MAX_AHEAD_MS, EventStore, NewEvent, now_ms
from palimpsest.util import iso

DOC = "notes"
HOUR = 3_600_000
YEAR = 365 * 24 * HOUR
MINUTE = 60_000


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'palimpsest.db'}"
        return
    async with fresh_schema() as url:
        yield url


async def opened(url: str) -> EventStore:
    store = open_store(url)
    await store.start()
    return store


async def seed(url: str) -> dict[str, int]:
    """ "a" and "b" an hour apart, an hour ago; then "c", "d", "e" by a clock a year ahead
    ("d" a minute after "c", "e" with the same ts as "d", as the store raised it); a tag
    named at "d" (its ts raised to the last event's). Their ts by name."""
    now = now_ms()
    far = now + YEAR
    ts = {"a": now - 2 * HOUR, "b": now - HOUR, "c": far, "d": far + MINUTE, "e": far + MINUTE}
    store = await opened(url)
    try:
        for part, update in zip("abcde", edits(*"abcde"), strict=True):
            await store.append([(DOC, [NewEvent("ann", "edit", update, {}, ts[part])])])
        await store.put_tag(DOC, "far-tag", 4, "ann")
        await store.append([("other", [NewEvent("bob", "edit", edits("x")[0], {}, far)])])
    finally:
        await store.stop()
    return ts


async def stamps(url: str, doc: str = DOC) -> list[int]:
    store = await opened(url)
    try:
        return [e.ts for e in await store.read(doc)]
    finally:
        await store.stop()


async def test_restamp_pulls_the_far_future_run_back_and_history_by_time_works(
    store_url: str,
) -> None:
    ts = await seed(store_url)
    # a snapshot as the server writes it: with the undo stacks (ann's last change at "e")
    out = cli("snapshot", DOC, "--store", store_url)
    assert out.returncode == 0, out.stderr
    store = await opened(store_url)
    try:
        # the bug: the version "now" misses the three edits stamped a year ahead
        assert await store.seq_at(DOC, now_ms()) == 2
        [snap] = await store.snapshots(DOC)
        assert snap.ts == ts["e"]
    finally:
        await store.stop()
    before = await stamps(store_url)
    b = ts["b"]

    out = cli("restamp", DOC, "--dry-run", "--json", "--store", store_url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "doc": DOC, "dry_run": True, "events": 3, "first_seq": 3, "last_seq": 5,
        "old": [iso(ts["c"]), iso(ts["e"])], "new": [iso(b + 1), iso(b + 1 + MINUTE)],
        "tags": 1, "tag_changes": 1, "snapshots": 1,
    }  # fmt: skip
    out = cli("restamp", DOC, "--dry-run", "--store", store_url)
    assert out.returncode == 0, out.stderr
    assert "would restamp 3 events (seq 3..5)" in out.stdout, out.stdout
    assert await stamps(store_url) == before  # nothing changed

    out = cli("restamp", DOC, "--store", store_url)
    assert out.returncode == 0, out.stderr
    said = (f"restamped 3 events (seq 3..5) from {iso(ts['c'])}..{iso(ts['e'])} to "
            f"{iso(b + 1)}..{iso(b + 1 + MINUTE)}; 1 tag (1 record of tag changes), "
            "1 snapshot")  # fmt: skip
    assert said in out.stdout, out.stdout
    assert await stamps(store_url) == [ts["a"], b, b + 1, b + 1 + MINUTE, b + 1 + MINUTE]
    assert await stamps(store_url, "other") == [ts["c"]]  # another document: left alone
    store = await opened(store_url)
    try:
        [tag] = await store.tags(DOC)
        assert tag.ts == b + 1 + MINUTE
        # its record of creation follows it: not a year ahead of the tag it made
        [made] = await store.tag_history(DOC, "far-tag")
        assert (made.action, made.ts) == ("create", tag.ts)
        latest = await store.latest_snapshot(DOC)
        assert latest is not None and latest.valid and latest.ts == b + 1 + MINUTE
        actors: dict[str, Any] = latest.meta["undo"]["actors"]
        assert actors["ann"]["last_ts"] == b + 1 + MINUTE, actors
        # and the pause of the step ann's session was typing (it may still grow)
        [grows] = [s for s in actors["ann"]["undo"] if s.get("open")]
        assert grows["last_ts"] == b + 1 + MINUTE, actors
        info = await store.doc_info(DOC)
        assert info is not None and info.updated_ts == b + 1 + MINUTE
    finally:
        await store.stop()

    settings = Settings(store=store_url, port=free_port())
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:

        async def at(when: int) -> tuple[int, str]:
            r = await http.get(f"/api/docs/{DOC}/versions", params={"at": iso(when)})
            assert r.status_code == 200, r.text
            return r.json()["seq"], r.json()["roots"]["content"]["value"]

        assert await at(b + 30_000) == (3, "abc")
        assert await at(b + 1 + MINUTE) == (5, "abcde")
        assert await at(now_ms()) == (5, "abcde")
        r = await http.get(f"/api/docs/{DOC}/events", params={"since": iso(b + 30_000)})
        assert [e["seq"] for e in r.json()["events"]] == [4, 5], r.text
        r = await http.get(f"/api/docs/{DOC}/versions/far-tag")
        assert r.json()["roots"]["content"]["value"] == "abcd", r.text
        # the next edit is stamped by the clock, not raised to a year ahead
        r = await http.put(f"/api/docs/{DOC}/text", json={"text": "abcdef"})
        assert r.status_code == 200, r.text
        r = await http.get(f"/api/docs/{DOC}/events", params={"after": 5})
        assert all(e["ts"] <= iso(now_ms()) for e in r.json()["events"]), r.text
        assert await at(now_ms()) == (6, "abcdef")

    out = cli("restamp", DOC, "--store", store_url)  # again: nothing ahead now
    assert out.returncode == 0 and "nothing to restamp" in out.stdout, (out.stdout, out.stderr)


async def test_restamp_of_a_run_at_the_start_of_the_log_ends_it_at_now(tmp_path: Path) -> None:
    """No sound event before the run: it is placed so that it ends at now, its spacing
    kept."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    far = now_ms() + YEAR
    store = await opened(url)
    try:
        for i, update in enumerate(edits("x", "y")):
            await store.append([(DOC, [NewEvent("ann", "edit", update, {}, far + i * MINUTE)])])
    finally:
        await store.stop()
    start = now_ms()
    out = cli("restamp", DOC, "--store", url, "--json")
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)
    assert done["events"] == 2 and not done["dry_run"], done
    new = await stamps(url)
    assert new[1] - new[0] == MINUTE, new
    assert start <= new[1] <= now_ms(), (start, new)


async def test_restamp_leaves_a_sound_document_alone_and_refuses_an_unknown_one(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    now = now_ms()
    store = await opened(url)
    try:
        # within the event clock's own lead (MAX_AHEAD_MS): not a clock set ahead
        await store.append([(DOC, [NewEvent("ann", "edit", edits("x")[0], {},
                                            now + MAX_AHEAD_MS // 2)])])  # fmt: skip
    finally:
        await store.stop()
    out = cli("restamp", DOC, "--store", url)
    assert out.returncode == 0 and "nothing to restamp" in out.stdout, (out.stdout, out.stderr)
    assert await stamps(url) == [now + MAX_AHEAD_MS // 2]
    out = cli("restamp", DOC, "--store", url, "--json")
    assert json.loads(out.stdout) == {"doc": DOC, "dry_run": False, "events": 0}
    out = cli("restamp", "nope", "--store", url)
    assert out.returncode == 1 and "no document named 'nope'" in out.stderr, out.stderr


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_restamp_refuses_a_store_a_server_serves(kind: str, tmp_path: Path) -> None:
    """A server's memory keeps the old stamps (the rows it seals from, its rooms' undo
    stacks): refused while one serves the store, changing nothing; --dry-run only reads
    and answers; with the server stopped it works."""
    async with fresh_schema() as pg_url:
        db = tmp_path / "srv" / "palimpsest.db"
        url = pg_url if kind == "postgres" else f"sqlite:///{db}"
        db.parent.mkdir(parents=True, exist_ok=True)
        await seed(url)
        before = await stamps(url)
        extra = ["--store", pg_url] if kind == "postgres" else []
        srv = ServerProcess(tmp_path / "srv", db_path=db, extra_args=extra)
        async with srv:
            out = cli("restamp", DOC, "--store", url)
            assert out.returncode == 1 and "serves" in out.stderr, (out.stdout, out.stderr)
            assert await stamps(url) == before
            out = cli("restamp", DOC, "--dry-run", "--store", url)
            assert out.returncode == 0 and "would restamp 3 events" in out.stdout, out.stderr
        out = cli("restamp", DOC, "--store", url)
        assert out.returncode == 0 and "restamped 3 events" in out.stdout, out.stderr
        assert max(await stamps(url)) <= now_ms()


async def test_restamp_after_a_compaction_base(tmp_path: Path) -> None:
    """The run right after a compaction base starts 1 ms after the base's time; a base
    whose own time is ahead (it folded events stamped ahead) gets its time restamped
    with the run, which then ends at now: `?at=` before it says compacted away, at now
    it is the head."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    now = now_ms()
    far = now + YEAR
    ts = [now - 2 * HOUR, now - HOUR, far, far + MINUTE, far + MINUTE]
    store = await opened(url)
    try:
        for doc in ("sound-base", "far-base"):
            for t, update in zip(ts, edits(*"abcde"), strict=True):
                await store.append([(doc, [NewEvent("ann", "edit", update, {}, t)])])
    finally:
        await store.stop()
    for doc, before in (("sound-base", "2"), ("far-base", "4")):
        out = cli("compact", doc, "--before", before, "--yes", "--store", url)
        assert out.returncode == 0, out.stderr
    out = cli("restamp", "sound-base", "--store", url)
    assert out.returncode == 0, out.stderr
    b = ts[1]
    assert await stamps(url, "sound-base") == [b + 1, b + 1 + MINUTE, b + 1 + MINUTE]
    start = now_ms()
    out = cli("restamp", "far-base", "--store", url)
    assert out.returncode == 0 and "restamped 1 event (seq 5..5)" in out.stdout, out.stdout
    [last] = await stamps(url, "far-base")
    assert start <= last <= now_ms()
    store = await opened(url)
    try:
        base = await store.latest_snapshot("far-base")
        assert base is not None and base.seq == 4 and base.valid
        assert base.meta["base_ts"] == last and base.ts <= last, (base.meta["base_ts"], last)
    finally:
        await store.stop()
    settings = Settings(store=url, port=free_port())
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.get("/api/docs/sound-base/versions", params={"at": iso(b + 30_000)})
        assert r.status_code == 200 and r.json()["seq"] == 3, r.text
        r = await http.get("/api/docs/far-base/versions", params={"at": iso(now_ms())})
        assert r.status_code == 200 and r.json()["roots"]["content"]["value"] == "abcde", r.text
