"""A notebook (a root Y.Array of Y.Map cells, each with a Y.Text source): its versions,
diffs and restores are answered as before, and the work on its cells runs in a worker
thread, never on the event loop's.

A field tester's notebook of 10,000 cells froze every document of the server for
seconds per request: the cells were read on the event loop, each one by a walk of the
array from its start (pycrdt's item access), then rendered, diffed or restored there.
The checks here see which thread read the cells, never time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pycrdt
import pytest
from conftest import RunningServer, eventually
from pycrdt import Array, Doc, Map, Text
from yclient import People, two_people

from palimpsest.history.render import READ_THROUGH_COPY, array_items, copy_with_items, jsonable

#: more cells than are read one by one (the rest through a copy: render.array_items)
N = READ_THROUGH_COPY + 88


def _cell(i: int) -> Map[Any]:
    return Map({"id": f"c{i}", "source": Text(f"x = {i}"), "metadata": Map({"i": i})})


def _json(i: int, source: str | None = None) -> dict[str, Any]:
    return {"id": f"c{i}", "source": source or f"x = {i}", "metadata": {"i": i}}


def test_the_items_read_through_a_copy_are_the_arrays() -> None:
    """Two writers' interleaved inserts, deletions, nested types, bytes, floats: read
    through a copy, the items are the array's, in its order."""
    a: Doc[Any] = Doc(client_id=1)
    b: Doc[Any] = Doc(client_id=2)
    cells = a.get("cells", type=Array)
    for i in range(N):
        cells.append(_cell(i) if i % 3 else i + 0.5)
    b.apply_update(a.get_update())
    theirs = b.get("cells", type=Array)
    with b.transaction():
        theirs.insert(7, b"\x00\x01")
        theirs.insert(300, Array([1, Map({"k": Text("v")})]))
        del theirs[100:140]
    with a.transaction():
        cells.insert(7, "mine")
        del cells[200:210]
    a.apply_update(b.get_update())
    b.apply_update(a.get_update())
    assert len(cells) > READ_THROUGH_COPY
    want = jsonable(list(cells))
    assert jsonable(array_items(a, "cells")) == want == jsonable(list(theirs))
    copy, items = copy_with_items(a.get_update(), ["cells"], client_id=5)
    assert copy.client_id == 5 and jsonable(items["cells"]) == want
    # the items are the copy's own: changed through them, the copy changes
    items["cells"][1]["id"] = "changed"
    assert copy.get("cells", type=Array)[1]["id"] == "changed"


async def _notebook(p: People) -> tuple[list[Any], list[Any], list[Any]]:
    """Seq 1: ann writes N cells; 2: bob edits two sources; 3: ann deletes ten cells.
    The three versions' cells."""
    cells = p.ann.get("cells", type=Array)
    with p.ann.transaction():
        for i in range(N):
            cells.append(_cell(i))
    await eventually(lambda: p.logged(1), what="ann's cells logged")
    theirs = p.bob.get("cells", type=Array)
    await eventually(lambda: len(theirs) == N, what="bob has the cells")
    with p.bob.transaction():
        theirs[0]["source"].insert(0, "#b ")
        theirs[300]["source"].insert(0, "#b ")
    await eventually(lambda: p.logged(2), what="bob's edits logged")
    del cells[100:110]
    await eventually(lambda: p.logged(3), what="ann's deletion logged")
    await eventually(lambda: len(theirs) == N - 10, what="bob has it")
    v1 = [_json(i) for i in range(N)]
    v2 = [_json(i, "#b " + v1[i]["source"] if i in (0, 300) else None) for i in range(N)]
    return v1, v2, v2[:100] + v2[110:]


@pytest.fixture
def cell_readers(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[int]]:
    """The threads that read a value of a Y.Map (a cell's id, source, metadata), while
    the set is not frozen: add -1 to it to stop recording."""
    seen: set[int] = set()
    read = pycrdt.Map.__getitem__

    def spy(self: Map[Any], key: str) -> Any:
        if -1 not in seen:
            seen.add(threading.get_ident())
        return read(self, key)

    monkeypatch.setattr(pycrdt.Map, "__getitem__", spy)
    seen.add(-1)
    yield seen


async def test_a_notebooks_history_is_answered_off_the_event_loop(
    server: RunningServer, cell_readers: set[int]
) -> None:
    loop_thread = threading.get_ident()
    async with two_people(server, "notebook", ("ann", "bob")) as p:
        v1, v2, v3 = await _notebook(p)
        cells, theirs = p.ann.get("cells", type=Array), p.bob.get("cells", type=Array)

        async def ask(method: str, path: str, **kw: Any) -> Any:
            cell_readers.clear()  # record the cells' readers during this request only
            r = await p.http.request(method, f"/api/docs/notebook/{path}", timeout=60, **kw)
            cell_readers.add(-1)
            assert r.status_code == 200, r.text
            assert loop_thread not in cell_readers, f"{path}: cells read on the event loop"
            assert cell_readers - {-1}, f"{path}: no cell read at all"
            return r.json()

        got = await ask("GET", "versions/1")
        assert got["roots"] == {"cells": {"type": "array", "value": v1}}
        got = await ask("GET", "versions/head")
        assert got["roots"] == {"cells": {"type": "array", "value": v3}}
        got = await ask("GET", "diff", params={"from": 1, "to": 2})
        assert got["roots"]["cells"] == {
            "type": "array",
            "ops": [
                {"op": "delete", "index": 0, "values": v1[:1]},
                {"op": "insert", "index": 0, "values": v2[:1]},
                {"op": "equal", "index": 1, "values": v1[1:300]},
                {"op": "delete", "index": 300, "values": v1[300:301]},
                {"op": "insert", "index": 300, "values": v2[300:301]},
                {"op": "equal", "index": 301, "values": v1[301:]},
            ],
        }
        got = await ask("GET", "diff", params={"from": 2, "to": 3})
        assert got["roots"]["cells"]["ops"] == [
            {"op": "equal", "index": 0, "values": v2[:100]},
            {"op": "delete", "index": 100, "values": v2[100:110]},
            {"op": "equal", "index": 110, "values": v2[110:]},
        ]
        # ?equal=count: the cells that did not change as a count, not their values
        got = await ask("GET", "diff", params={"from": 1, "to": 2, "equal": "count"})
        assert got["roots"]["cells"]["ops"] == [
            {"op": "delete", "index": 0, "values": v1[:1]},
            {"op": "insert", "index": 0, "values": v2[:1]},
            {"op": "equal", "index": 1, "count": 299},
            {"op": "delete", "index": 300, "values": v1[300:301]},
            {"op": "insert", "index": 300, "values": v2[300:301]},
            {"op": "equal", "index": 301, "count": len(v1) - 301},
        ]
        r = await p.http.get("/api/docs/notebook/diff", params={"equal": "none"})
        assert r.status_code == 400 and "values or count" in r.text, r.text

        dry = await ask("POST", "restore", params={"user": "bob", "dry_run": "true"},
                        json={"seq": 1})  # fmt: skip
        assert dry["dry_run"] is True and dry["head"] == 3
        done = await ask("POST", "restore", params={"user": "bob"}, json={"seq": 1})
        assert done["seq"] == 4
        for key in ("removed", "added", "removed_others"):
            assert dry.get(key) == done.get(key), key
        # bob's "#b " twice out; ten cells back (sources of 7 characters; each cell, its
        # id, metadata and number)
        assert done["removed"] == {"characters": 6, "items": 0}
        assert done["added"] == {"characters": 70, "items": 40}
        await eventually(lambda: jsonable(list(cells)) == v1, what="ann has version 1")
        assert jsonable(list(theirs)) == v1


async def test_a_restore_worked_out_while_the_notebook_changes_is_worked_out_again(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ann sets a key of a cell while each plan of bob's restore is worked out (the worker
    waits until it is logged): planned 3 times (RESTORE_TRIES), then the last plan is
    applied, and the edit made meanwhile taken out on the loop: the document is version
    1 exactly. (Until 7 Dec 2026 the last plan was applied as it stood, merged with that
    edit, which stayed in the version at the restore's seq.)"""
    from palimpsest.history import service

    loop = asyncio.get_running_loop()
    plans: list[int] = []
    real = service._plan
    async with two_people(server, "notebook", ("ann", "bob")) as p:
        v1, _, _ = await _notebook(p)
        cells = p.ann.get("cells", type=Array)

        async def edit(k: int) -> None:
            cells[5]["metadata"][f"during{k}"] = k
            await eventually(lambda: p.logged(4 + k), what=f"ann's edit {k} logged")

        def planned(*args: Any) -> Any:  # (in the worker thread)
            plans.append(len(plans))
            asyncio.run_coroutine_threadsafe(edit(len(plans) - 1), loop).result(30)
            return real(*args)

        monkeypatch.setattr(service, "_plan", planned)
        r = await p.http.post("/api/docs/notebook/restore", params={"user": "bob"},
                              json={"seq": 1}, timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        assert plans == list(range(service.RESTORE_TRIES))
        assert r.json()["seq"] == 4 + service.RESTORE_TRIES
        want = [dict(c) for c in v1]
        version = await p.http.get(f"/api/docs/notebook/versions/{r.json()['seq']}")
        assert version.json()["roots"]["cells"]["value"] == want
        await eventually(lambda: jsonable(list(cells)) == want, what="ann has it")
        theirs = p.bob.get("cells", type=Array)
        await eventually(lambda: jsonable(list(theirs)) == want, what="bob has it")
