"""A kept container that is a Y.Map keeps the keys its step set (docs/undo.md, "What
others wrote inside what you made stays"): they are its attributes, as a BlockNote
block's ``id`` is an element's.

Shaped as jupyter_ydoc writes a notebook: a ``cells`` Y.Array of Y.Maps, each with
``id``, ``cell_type``, ``source`` (a Y.Text), ``metadata`` (a Y.Map), ``outputs`` (a
Y.Array of Y.Maps) and ``execution_count`` (written with pycrdt, as jupyter_ydoc does,
and with Yjs). Alice adds a cell, someone else writes in
it, Alice undoes: the cell used to stay with only the other user's keys (no ``id``, no
``cell_type``), which no notebook reader takes. Real clients over real websockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, free_port, run_server
from nodehelp import scenario
from pycrdt import Array, Map, Text
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture

from palimpsest import client
from palimpsest.settings import Settings


def make_settings(db: Path) -> Settings:
    return Settings(db=str(db), port=free_port(), unload_after_seconds=0.3, undo_capture_ms=0)


def cells(s: client.Session) -> Array[Any]:
    return s.doc.get("cells", type=Array)


def notebook(s: client.Session) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = cells(s).to_py() or []
    return got


ALICE_OUTPUT = {"output_type": "stream", "name": "stdout", "text": "alice\n"}
KERNEL_OUTPUT = {"output_type": "execute_result", "data": {"text/plain": "2"}, "metadata": {}}


def code_cell(ident: str, source: str) -> Map[Any]:
    """A cell as jupyter_ydoc's ``create_ycell`` makes it, with an output of its own."""
    return Map(
        {
            "id": ident,
            "cell_type": "code",
            "source": Text(source),
            "metadata": Map({"tags": ["alice"]}),
            "outputs": Array([Map(ALICE_OUTPUT)]),
            "execution_count": None,
        }
    )


def bob_types(cell: Map[Any]) -> None:
    cell["source"].insert(5, "  # bob: keep this")


def kernel_runs(cell: Map[Any]) -> None:
    cell["outputs"].append(Map(KERNEL_OUTPUT))
    cell["execution_count"] = 1


def bob_collapses(cell: Map[Any]) -> None:
    cell["metadata"]["collapsed"] = True


#: after alice's undo: her cell's keys stay (her text and her output go); her other
#: cell, which nobody wrote in, goes with its keys
AFTER_UNDO = {
    "bob types": {
        "id": "new",
        "cell_type": "code",
        "source": "  # bob: keep this",
        "metadata": {"tags": ["alice"]},
        "outputs": [],
        "execution_count": None,
    },
    "kernel runs": {
        "id": "new",
        "cell_type": "code",
        "source": "",
        "metadata": {"tags": ["alice"]},
        "outputs": [KERNEL_OUTPUT],
        "execution_count": 1,
    },
    "bob collapses": {
        "id": "new",
        "cell_type": "code",
        "source": "",
        "metadata": {"tags": ["alice"], "collapsed": True},
        "outputs": [],
        "execution_count": None,
    },
}


async def undo_the_cell(
    tmp_path: Path,
    other: str,
    write: Callable[[Map[Any]], None],
    after_undo: dict[str, Any],
    others: dict[str, Any],
) -> None:
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "nb", user="alice") as a,
            client.connect(srv.ws_url, "nb", user=other) as o,
        ):
            first = {"id": "first", "cell_type": "markdown", "source": "intro", "metadata": {}}
            cells(a).append(Map({**first, "source": Text("intro"), "metadata": Map()}))
            await a.flush()
            # one step: her code cell, and a markdown cell nobody writes in
            with a.doc.transaction():
                cells(a).append(code_cell("new", "1 + 1"))
                cells(a).append(
                    Map(
                        {
                            "id": "md",
                            "cell_type": "markdown",
                            "source": Text("alone"),
                            "metadata": Map({"k": "v"}),
                        }
                    )
                )
            await a.flush()
            await o.wait_for(lambda: len(cells(o)) == 3)
            write(cells(o)[1])
            await o.flush()
            before = notebook(o)
            await a.wait_for(lambda: notebook(a) == before)

            answer: dict[str, Any] = await a.request({"type": "undo"})
            assert answer["ok"] is True, answer
            assert "removed_others" not in answer, answer
            for s in (a, o):
                await s.wait_for(lambda s=s: len(cells(s)) == 2)
                assert notebook(s) == [first, after_undo], notebook(s)
            # kept: her cell, its source, metadata and outputs, holding what the other wrote
            assert answer["kept_containers"] == {"items": 4, "others": [others]}, answer
            # her "1 + 1" and her other cell's "alone"
            assert answer["removed"]["characters"] == 10, answer

            answer = await a.request({"type": "redo"})
            assert answer["ok"] is True and "removed_others" not in answer, answer
            for s in (a, o):
                await s.wait_for(lambda s=s: len(cells(s)) == 3)
                assert notebook(s) == before, notebook(s)


async def test_a_cell_another_user_typed_in_keeps_its_keys(tmp_path: Path) -> None:
    """Bob types in the source of Alice's new cell; her undo keeps the cell with its id,
    cell_type, metadata, outputs and execution_count, and the source with Bob's words
    (hers go); her redo brings back her text, her output and her other cell."""
    typed = {"user": "bob", "characters": 18, "items": 0}
    await undo_the_cell(tmp_path, "bob", bob_types, AFTER_UNDO["bob types"], typed)


async def test_a_cell_the_kernel_ran_keeps_its_keys(tmp_path: Path) -> None:
    """The kernel's writer appends an output to Alice's new cell and sets its
    execution_count (a plain key of her cell, now the kernel's): her undo keeps the cell
    with her keys, the kernel's output and count; her own output goes."""
    # its output: the map and its three keys; the execution_count
    ran = {"user": "kernel", "characters": 0, "items": 5}
    await undo_the_cell(tmp_path, "kernel", kernel_runs, AFTER_UNDO["kernel runs"], ran)


async def test_a_cell_whose_metadata_another_user_set_keeps_its_keys(tmp_path: Path) -> None:
    """Bob collapses Alice's new cell (a key in its metadata map): her undo keeps the
    cell with its keys and the metadata with hers and Bob's."""
    collapsed = {"user": "bob", "characters": 0, "items": 1}
    await undo_the_cell(tmp_path, "bob", bob_collapses, AFTER_UNDO["bob collapses"], collapsed)


#: the same with Yjs clients (y-websocket): alice adds the cell, the kernel runs it,
#: alice's undo and redo over HTTP; what the kernel's tab holds after each
SCENARIO = """
const alice = connect('alice')
const kernel = connect('kernel')
await alice.synced
await kernel.synced
const mine = alice.ydoc.getArray('cells')
alice.ydoc.transact(() => {
  const cell = new Y.Map()
  cell.set('id', 'new')
  cell.set('cell_type', 'code')
  cell.set('source', new Y.Text('1 + 1'))
  cell.set('metadata', new Y.Map([['tags', ['alice']]]))
  const outputs = new Y.Array()
  outputs.push([new Y.Map(Object.entries(%(alice_output)s))])
  cell.set('outputs', outputs)
  cell.set('execution_count', null)
  mine.push([cell])
})
await logged(1)
const cells = kernel.ydoc.getArray('cells')
await until('the kernel has the cell', () => cells.length === 1)
kernel.ydoc.transact(() => {
  cells.get(0).get('outputs').push([new Y.Map(Object.entries(%(kernel_output)s))])
  cells.get(0).set('execution_count', 1)
})
await logged(2)
const undo = await post('undo?user=alice')
await until('the kernel has the undo', () => cells.get(0).get('outputs').length === 1)
const undone = cells.toJSON()
const redo = await post('redo?user=alice')
await until('the kernel has the redo', () => cells.get(0).get('outputs').length === 2)
process.stdout.write(JSON.stringify({ undo, undone, redo, redone: cells.toJSON(),
                                      head: (await head()).roots.cells.value }))
alice.provider.destroy()
kernel.provider.destroy()
process.exit(0)
"""


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_a_cell_yjs_clients_made_and_ran_keeps_its_keys(server: RunningServer) -> None:
    """Alice's Yjs tab adds the cell, the kernel's runs it: her undo keeps the cell's
    keys with the kernel's output and count, her redo brings back her text and output."""
    outputs = {"alice_output": json.dumps(ALICE_OUTPUT), "kernel_output": json.dumps(KERNEL_OUTPUT)}
    script = scenario(SCENARIO % outputs)
    got = json.loads(await node_scenario(script, server.ws_url, server.url, "nb"))
    assert got["undo"]["status"] == 200, got
    assert got["undone"] == [AFTER_UNDO["kernel runs"]], got
    assert got["undo"]["body"]["kept_containers"]["items"] == 4, got
    assert got["redo"]["status"] == 200, got
    cell = {**AFTER_UNDO["kernel runs"], "source": "1 + 1"}
    cell["outputs"] = [ALICE_OUTPUT, KERNEL_OUTPUT]
    assert got["redone"] == got["head"] == [cell], got


async def test_a_cell_kept_whole_is_skipped(tmp_path: Path) -> None:
    """Alice adds an empty cell and Bob types in it: all her step made stays (the cell,
    its keys, the source holding Bob's words), nothing of it is left to revert, so her
    undo skips it and reverts the step before it, as for any step with nothing left
    (docs/undo.md), and says so."""
    async with run_server(make_settings(tmp_path / "db")) as srv:
        async with (
            client.connect(srv.ws_url, "nb", user="alice") as a,
            client.connect(srv.ws_url, "nb", user="bob") as b,
        ):
            cells(a).append(Map({"id": "one", "cell_type": "markdown", "source": Text("intro")}))
            await a.flush()
            empty = {"id": "two", "cell_type": "code", "source": "", "metadata": {}, "outputs": []}
            cells(a).append(Map({**empty, "source": Text(), "metadata": Map(), "outputs": Array()}))
            await a.flush()
            await b.wait_for(lambda: len(cells(b)) == 2)
            cells(b)[1]["source"].insert(0, "bob's code")
            await b.flush()
            await a.wait_for(lambda: "bob" in str(notebook(a)))

            answer: dict[str, Any] = await a.request({"type": "undo"})
            assert answer["ok"] is True, answer
            assert answer["skipped"] == [[2]] and answer["reverts"] == [1], answer
            for s in (a, b):
                await s.wait_for(lambda s=s: len(cells(s)) == 1)
                assert notebook(s) == [{**empty, "source": "bob's code"}], notebook(s)
