"""Keeping the disk warm (server/store/disk_warm.py): a real SQLite file, a real thread,
real fdatasyncs counted. While writes come in, the thread syncs the database file every
period that passes without a commit; it stops a window after the last write, does
nothing while commits come faster than the period, and only exists for a file store
with durability fsync. Its timing is not asserted, only what it does."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import eventually
from serverproc import ServerProcess
from yclient import connect as raw_connect

from palimpsest.backend import Backend
from palimpsest.metrics import metrics_of
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent
from palimpsest.store.disk_warm import DiskWarmer
from palimpsest.store.sqlite import SQLiteStore

UPDATE = b"\x01\x01\xb9\xe3\xa4\x8a\x0c\x00\x04\x01\x07content\x01a\x00"


def ev(i: int = 0) -> NewEvent:
    return NewEvent("ann", "edit", UPDATE, {"conn": "t/1"}, 1_000 + i)


def warm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "palimpsest-disk-warm"]


async def test_writes_keep_the_disk_warm_until_a_pause(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "w.db", warm_disk_ms=2) as store:
        warmer = store.writer.warmer
        assert warmer is not None and warmer.running
        warmer.window = 0.3
        await asyncio.sleep(0.2)
        assert warmer.syncs == 0  # nothing written since the start: nothing to keep warm
        await store.append([("doc", [ev()])])
        await eventually(lambda: warmer.syncs >= 5)
        # a pause longer than the window: it stops by itself
        await asyncio.sleep(0.3 + 0.2)
        settled = warmer.syncs
        await asyncio.sleep(0.3)
        assert warmer.syncs == settled
        # and starts again with the next write
        await store.append([("doc", [ev(1)])])
        await eventually(lambda: warmer.syncs >= settled + 5)
        assert [e.seq for e in await store.read("doc")] == [1, 2]


async def test_commits_faster_than_the_period_need_no_warming(tmp_path: Path) -> None:
    # a period of 200 ms and a commit every ~10 ms: each time the thread looks, a commit
    # came along less than a period ago
    async with SQLiteStore(tmp_path / "w.db", warm_disk_ms=200) as store:
        warmer = store.writer.warmer
        assert warmer is not None
        for i in range(60):
            await store.append([("doc", [ev(i)])])
            await asyncio.sleep(0.01)
        assert warmer.syncs <= 1  # the first look may come just before the first commit
        await eventually(lambda: warmer.syncs >= 1)  # then quiet: it syncs
        assert await store.head("doc") == 60


@pytest.mark.parametrize(
    ("where", "kwargs"),
    [
        ("file", {"warm_disk_ms": 0}),
        ("file", {"warm_disk_ms": 2, "durability": "os"}),
        (":memory:", {"warm_disk_ms": 2}),
    ],
)
async def test_no_warming_without_fsync_a_file_or_a_period(
    tmp_path: Path, where: str, kwargs: dict[str, object]
) -> None:
    path = tmp_path / "w.db" if where == "file" else where
    async with SQLiteStore(path, **kwargs) as store:  # type: ignore[arg-type]
        await store.append([("doc", [ev()])])
        assert store.writer.warmer is None
        assert warm_threads() == []


async def test_stop_ends_the_thread_and_closes_the_file(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db", warm_disk_ms=2)
    await store.start()
    warmer = store.writer.warmer
    assert warmer is not None
    await store.append([("doc", [ev()])])
    await eventually(lambda: warmer.syncs >= 1)
    await store.stop()
    assert not warmer.running and warm_threads() == []
    assert warmer._fd == -1


def test_a_period_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DiskWarmer(str(tmp_path / "x"), 0)
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "w.db", warm_disk_ms=-1)


async def test_the_server_keeps_its_disk_warm_by_default_and_the_setting_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().warm_disk_ms == 2.0
    on = Backend(Settings(db=str(tmp_path / "on.db")))
    await on.start()
    try:
        assert isinstance(on.store, SQLiteStore)
        warmer = on.store.writer.warmer
        assert warmer is not None and warmer.period == pytest.approx(0.002)
        await on.store.append([("doc", [ev()])])
        await eventually(lambda: warmer.syncs >= 3)
        # /metrics counts them (what it costs is visible to the operator)
        shown = metric(on, "palimpsest_disk_warm_syncs_total")
        assert shown is not None and shown >= 3
    finally:
        await on.stop()
    monkeypatch.setenv("PALIMPSEST_WARM_DISK_MS", "0")
    off = Backend(Settings.from_env(db=str(tmp_path / "off.db")))
    await off.start()
    try:
        assert isinstance(off.store, SQLiteStore)
        await off.store.append([("doc", [ev()])])
        assert off.store.writer.warmer is None and off.store.disk_warm_syncs is None
        assert metric(off, "palimpsest_disk_warm_syncs_total") is None
        assert metric(off, "palimpsest_rooms_open") == 0  # the page itself is there
    finally:
        await off.stop()


def metric(backend: Backend, name: str) -> float | None:
    m = metrics_of(backend)
    assert m is not None
    for line in m.render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_no_sync_joins_a_write_in_flight(tmp_path: Path) -> None:
    # a write that holds the connection for 0.3 s (another connection's lock, say): the
    # thread waits for it instead of adding its own flush to the disk's queue
    async with SQLiteStore(tmp_path / "w.db", warm_disk_ms=2) as store:
        warmer = store.writer.warmer
        assert warmer is not None
        await store.append([("doc", [ev()])])
        await eventually(lambda: warmer.syncs >= 1)

        def slow(conn: object) -> int:
            before = warmer.syncs
            time.sleep(0.3)
            return warmer.syncs - before

        # one sync may have begun just before the write did and end during it (a slow
        # disk's flush takes milliseconds); a warmer that ignored the write would have
        # issued one every 2 ms of the 0.3 s
        assert await store.on_writer(slow) <= 1
        await eventually(lambda: warmer.syncs >= 1 + 5)  # and goes on afterwards


async def test_a_warmer_that_cannot_start_leaves_the_store_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(self: DiskWarmer) -> None:
        raise PermissionError(13, "Permission denied", self.path)

    monkeypatch.setattr(DiskWarmer, "start", refuse)
    async with SQLiteStore(tmp_path / "w.db", warm_disk_ms=2) as store:
        await store.append([("doc", [ev()])])
        assert store.writer.warmer is None and store.disk_warm_syncs is None
        assert [e.seq for e in await store.read("doc")] == [1]
    assert "not keeping the disk" in caplog.text


@pytest.mark.parametrize("flag", ["5", "0"])
async def test_palimpsest_serve_takes_the_flag(tmp_path: Path, flag: str) -> None:
    """A real `palimpsest serve`: edits over its websocket keep the disk warm with
    ``--warm-disk-ms 5`` (its /metrics counts the syncs) and not with ``0``."""
    srv = ServerProcess(tmp_path, extra_args=["--warm-disk-ms", flag])
    await srv.astart()
    try:
        async with raw_connect(srv.ws_url, "warm", "ann") as ann:
            for i in range(5):
                ann.insert(len(ann.content), str(i))
                await asyncio.sleep(0.03)  # lone edits, each its own commit

            async def syncs() -> float | None:  # None: /metrics has no such line
                async with httpx.AsyncClient() as http:
                    text = (await http.get(srv.http_url + "/metrics")).text
                for line in text.splitlines():
                    if line.startswith("palimpsest_disk_warm_syncs_total "):
                        return float(line.split()[1])
                return None

            async def three() -> bool:
                return (await syncs() or 0) >= 3

            if flag == "0":
                assert await syncs() is None
            else:
                await eventually(three, what="3 warm syncs on /metrics")
    finally:
        await srv.astop()


async def test_a_failed_sync_pauses_the_warmer_which_resumes_when_it_works_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One fdatasync error (a transient EIO) used to stop the warmer for good. It now
    tries again with a back-off, says once that it paused and once that it resumed. The
    failure is a real one: the warmer's descriptor is made, by dup2, a pipe's (fdatasync
    of a pipe fails with EINVAL), then the database file's again."""
    caplog.set_level(logging.INFO, logger="palimpsest.store")
    async with SQLiteStore(tmp_path / "w.db", warm_disk_ms=2) as store:
        warmer = store.writer.warmer
        assert warmer is not None
        warmer.window = 3600.0  # warm throughout
        await store.append([("doc", [ev()])])
        await eventually(lambda: warmer.syncs >= 1)
        r, w = os.pipe()
        fd = warmer._fd
        try:
            os.dup2(r, fd)
            await eventually(lambda: warmer.failed >= 2, what="tried again after a failure")
            assert warmer.running
            back = os.open(tmp_path / "w.db", os.O_RDONLY)
            os.dup2(back, fd)
            os.close(back)
            settled = warmer.syncs
            await eventually(lambda: warmer.syncs >= settled + 5, what="resumed")
        finally:
            os.close(r)
            os.close(w)
        assert warmer.running
    said = [r.getMessage() for r in caplog.records if "warm" in r.getMessage()]
    assert len([m for m in said if "paused" in m]) == 1, said
    assert len([m for m in said if "resumed" in m]) == 1, said
