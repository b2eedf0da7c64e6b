"""The way out of y-websocket's y-leveldb that docs/migrating.md gives: its Node script,
as printed there, dumps a LevelDB store written by y-leveldb itself; `palimpsest
import-from dir` takes the files; a real server serves the documents.

Run:  .venv/bin/pytest -m node tests/test_import_from_node.py
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import run_server
from pycrdt import Doc, Text
from serverproc import REPO_ROOT
from test_import_from import palimpsest, settings_for
from test_interop_node import NODE_DIR, node_modules

pytestmark = pytest.mark.node
__all__ = ["node_modules"]  # the session fixture that runs `npm ci` when needed

#: a y-websocket server's persistence, as @y/websocket-server's utils use it: every update
#: of a document stored as it comes (storeUpdate), several per document; the documents
#: named (comma-separated) after the directory, or two
WRITE_LEVELDB = """
import * as Y from "yjs"
import { LeveldbPersistence } from "y-leveldb"
const ldb = new LeveldbPersistence(process.argv[1])
const texts = {}
for (const name of process.argv[2] ? process.argv[2].split(",") : ["notes", "org/team/plan"]) {
  const d = new Y.Doc()
  const stored = []
  d.on("update", u => stored.push(ldb.storeUpdate(name, u)))
  const t = d.getText("content")
  t.insert(0, `written on y-websocket: ${name} é 😀\\n`)
  t.insert(t.length, "a second line\\n")
  t.delete(0, 8)
  await Promise.all(stored)
  texts[name] = t.toString()
}
await ldb.destroy()
console.log(JSON.stringify(texts))
"""


def documented_script() -> str:
    """The Node script of docs/migrating.md's y-leveldb section, as a reader copies it."""
    doc = (REPO_ROOT / "docs" / "migrating.md").read_text()
    m = re.search(r"node --input-type=module -e '\n(.*?)\n' \./db \./ydocs", doc, re.S)
    assert m, "docs/migrating.md has no y-leveldb script"
    return m.group(1)


async def node(script: str, *args: str) -> str:
    r = await asyncio.to_thread(
        subprocess.run, ["node", "--input-type=module", "-e", script, *args],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r
    return r.stdout + r.stderr


async def test_y_leveldb_documents_through_the_documented_script(
    node_modules: Path, tmp_path: Path
) -> None:
    texts = json.loads(await node(WRITE_LEVELDB, str(tmp_path / "leveldb")))
    out = await node(documented_script(), str(tmp_path / "leveldb"), str(tmp_path / "ydocs"))
    assert "2 documents written" in out, out
    assert (tmp_path / "ydocs" / "org" / "team" / "plan.yjs").is_file()

    db = tmp_path / "p.db"
    r = await palimpsest("import-from", "dir", str(tmp_path / "ydocs"), "--db", str(db))
    assert r.returncode == 0, r
    assert "org/team/plan -> org:team:plan: 1 event" in r.stderr, r
    async with run_server(settings_for(db)) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        for name, text in texts.items():
            got = await http.get(f"/api/docs/{name.replace('/', ':')}/versions/head",
                                 params={"format": "update"})  # fmt: skip
            d: Doc = Doc()
            d.apply_update(got.content)
            assert str(d.get("content", type=Text)) == text


async def test_the_documented_script_counts_one_document_in_the_singular(
    node_modules: Path, tmp_path: Path
) -> None:
    """It printed "1 documents written"."""
    await node(WRITE_LEVELDB, str(tmp_path / "leveldb"), "notes")
    out = await node(documented_script(), str(tmp_path / "leveldb"), str(tmp_path / "ydocs"))
    assert f"1 document written to {tmp_path / 'ydocs'}" in out, out
