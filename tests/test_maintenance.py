"""The maintenance domain functions the CLI calls, used directly on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycrdt import Doc, Text

from palimpsest.maintenance import (
    MaintenanceError,
    as_update,
    compact_doc,
    import_data,
    plan_compact,
    rendered,
    verify_doc,
)
from palimpsest.settings import Settings
from palimpsest.snapshots import load
from palimpsest.store.sqlite import SQLiteStore


async def test_import_verify_compact(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "m.db")
    async with store:
        ev = await import_data(store, "m", b"hello", user="ada", source="t.txt")
        assert (ev.seq, ev.kind, ev.actor, ev.meta["format"]) == (1, "import", "ada", "text")
        with pytest.raises(MaintenanceError, match="already has 1 events"):
            await import_data(store, "m", b"more text", user="ada", source="t.txt")
        # a Yjs update continues the document
        ydoc = (await load(store, "m")).doc
        before = ydoc.get_state()
        ydoc.get("content", type=Text).insert(5, " world")
        ev2 = await import_data(store, "m", ydoc.get_update(before), user="bob", source="u")
        assert ev2.meta["format"] == "update"
        assert rendered((await load(store, "m")).doc)["content"]["value"] == "hello world"
        await store.put_snapshot("m", 1, (await load(store, "m", upto=1)).doc.get_update())
        seen: list[int] = []
        assert await verify_doc(store, "m", lambda: seen.append(1)) == []
        assert len(seen) == 2
        # a snapshot that does not equal the fold is a problem
        await store.put_snapshot("m", 2, Doc().get_update())
        assert any("@2" in p for p in await verify_doc(store, "m"))
        await store.put_snapshot("m", 2, (await load(store, "m", upto=1)).doc.get_update())
        assert any("@2" in p for p in await verify_doc(store, "m"))  # still not the fold
        await store.put_snapshot("m", 2, ydoc.get_update())
        assert await verify_doc(store, "m") == []
        await store.put_tag("m", "v1", 1, "ada")
        with pytest.raises(MaintenanceError, match="named version 'v1'"):
            await plan_compact(store, "m", "2")
        await store.delete_tag("m", "v1")
        plan = await plan_compact(store, "m", 1)
        assert (plan.before, plan.events) == (1, 1)
        assert await compact_doc(store, plan, Settings()) == 1
        base = await store.latest_snapshot("m", at_most=1)
        assert base is not None and base.meta["base"] is True and "undo" in base.meta
        assert (await plan_compact(store, "m", "1")).events == 0
        assert rendered((await load(store, "m")).doc)["content"]["value"] == "hello world"
        with pytest.raises(MaintenanceError, match="no seq 9"):
            await plan_compact(store, "m", 9)


def test_a_yjs_xml_hook_is_not_imported_as_text() -> None:
    """A Yjs update holding a Y.XmlHook, which yrs cannot read: `palimpsest import` and
    import-from took it for "not an update" (then text, or "not a Yjs v1 update"); now it
    is refused as what it is."""
    hook = bytes.fromhex("0102009102470089020504686f6f6b2800009102017a017d0100")
    with pytest.raises(MaintenanceError, match="Y.XmlHook is not supported"):
        as_update(hook)
