"""A WAL checkpoint that failed for a full disk is tried again once there is room: the
WAL stayed 14 MB against a 745 KB database through idle periods until a restart, the
failed checkpoint having counted its pages as done."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import eventually

from palimpsest.store import open_store
from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import CHECKPOINT_PAGES, SQLiteStore


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `where` (root only; skipped where it cannot be mounted)."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the disk is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
        with contextlib.suppress(OSError):
            f.close()


def event() -> NewEvent:
    return NewEvent("ann", "edit", os.urandom(3000))


async def test_a_checkpoint_that_failed_for_a_full_disk_is_tried_again(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        store = open_store(f"sqlite:///{disk / 'p.db'}")
        assert isinstance(store, SQLiteStore)
        await store.start()
        try:
            writer = store.writer
            # a WAL file that has room (checkpointed whole, it is written again from its
            # start), then events in it that the database file has no room for
            await store.append([("d", [event() for _ in range(150)])])
            await writer.call(lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
            await store.append([("d", [event() for _ in range(100)])])
            fill(disk / "filler")
            checkpoints = writer.checkpoints
            # enough pages due: the writer checkpoints after this call, and fails
            await writer.call(lambda c: None, pages=CHECKPOINT_PAGES)
            wal = disk / "p.db-wal"
            assert wal.stat().st_size > 500_000
            (disk / "filler").unlink()
            # no more writes: the checkpoint is tried again all the same
            await eventually(lambda: writer.checkpoints > checkpoints, timeout=20)
            frames, done = writer.last_checkpoint
            assert frames == done > 0
        finally:
            await store.stop()
