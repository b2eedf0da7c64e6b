"""A room's snapshot is never written into another generation of its name: a server
whose room of a document unloads just after ``palimpsest copy --replace`` overwrote the
document in the store (the CLI beside the server on the same SQLite file, no fan-out)
wrote the room's final snapshot, at the old document's seq, over the new document, and
the name then loaded the old content. Real websocket client, real server, the CLI's copy."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from pycrdt import Text
from test_admin_cli import cli
from test_replace_open import source_with
from test_undo import edit, make_settings, serving
from yclient import connect

from palimpsest.snapshots import load
from palimpsest.store import open_store


async def test_a_room_unloading_after_a_replace_does_not_snapshot_over_the_new_document(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="palimpsest")
    src = await source_with(tmp_path / "src.db", "d", "new text")
    db = tmp_path / "db"
    # no background generation check (it would drop the room before it unloads: the
    # race is the unload's final snapshot reaching the store first)
    settings = make_settings(db, unload_after_seconds=1.5, compaction_check_seconds=0)
    async with serving(settings) as srv:
        async with connect(srv.ws_url, "d", "ann") as a:
            await edit(a, srv, "d", lambda: a.insert(0, "old words of the target"))
        r = await cli(capfd, "copy", "--from", src, "--to", f"sqlite:///{db}", "--doc", "d",
                      "--replace", "--quiet")  # fmt: skip
        assert r.code == 0, r
        # the room is still there (no client: it unloads after 1.5 s, writing its final
        # snapshot, at the old document's seq)
        assert srv.backend.rooms.get_loaded("d") is not None, "unloaded before the copy"
        for _ in range(100):
            if srv.backend.rooms.get_loaded("d") is None:
                break
            await asyncio.sleep(0.1)
        assert srv.backend.rooms.get_loaded("d") is None
    store = open_store(f"sqlite:///{db}")
    await store.start()
    try:
        text = str((await load(store, "d")).doc.get("content", type=Text))
        assert text == "new text", text
    finally:
        await store.stop()
    # refused for that reason, said; not taken for a compaction under the room (which
    # would reload it)
    said = [r.getMessage() for r in caplog.records if r.name == "palimpsest.snapshots"]
    assert any("d@1 not written: the document was deleted or replaced" in m for m in said), said
    assert not [r for r in caplog.records if "compacted under its room" in r.getMessage()]
