"""What `palimpsest export --format text` and `palimpsest cat` print of an XML root: its
readable text (the characters, a line per block, a line break where a Lexical linebreak
or Tiptap hardBreak is), not Yjs's XML string full of an editor's internals (Lexical's
__dir, __format... on every paragraph and a <text .../> before every text node), which
`--format xml` still prints; and `palimpsest blame` of one: who wrote each stretch of
that text. A field tester's Lexical document printed as
``<paragraph __dir="null" __format="0" ...><text __detail="0" .../>Alice one. ...``,
and its blame was refused. The Lexical document is written by real Yjs under Node as
@lexical/yjs writes one (tests/node/lexical_doc.mjs), by two writers, through a server.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually
from pycrdt import Doc, XmlElement, XmlFragment, XmlText
from yclient import connect

from palimpsest.cli import main as admin_main
from palimpsest.client.cli import main as client_main
from palimpsest.readable import tree_text

NODE_DIR = Path(__file__).resolve().parent / "node"
DOC = "lx2"
#: the document's readable text: heading, alice's and bob's paragraph, one with a link
#: and a line break, an empty one, a list's two items
TEXT = "Notes\nAlice one. bob plain bobbold\nSee the site.\nnext line\n\none\ntwo\n"


def _lexical_log() -> list[tuple[str, bytes]]:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "yjs").is_dir():
        pytest.fail("Node.js or tests/node/node_modules missing (./scripts/test installs them)")
    out = subprocess.run(["node", "lexical_doc.mjs"], cwd=NODE_DIR, check=True,
                         capture_output=True, timeout=120).stdout  # fmt: skip
    return [(str(a), bytes.fromhex(u)) for a, u in json.loads(out)]


async def _run(main: Any, capfd: pytest.CaptureFixture[str], *argv: str) -> str:
    capfd.readouterr()
    assert await asyncio.to_thread(main, list(argv)) == 0, capfd.readouterr().err
    return str(capfd.readouterr().out)


async def test_a_lexical_document_prints_as_its_text_and_blames_by_line(
    server: RunningServer, db_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as c:
        for actor, update in _lexical_log():
            r = await c.post(f"/api/docs/{DOC}/updates", content=update, params={"user": actor},
                             headers={"content-type": "application/octet-stream"})  # fmt: skip
            assert r.status_code == 200, r.text
        xml = (await c.get(f"/api/docs/{DOC}/versions/head")).json()["roots"]["root"]["value"]
    # the HTTP version is the XML string, as before
    assert xml.startswith('<heading __dir="null" __format="0" __indent="0" __style="" __tag="h1"')
    assert '<text __detail="0" __format="1" __mode="0" __style=""/>bobbold</paragraph>' in xml

    url = ("--url", server.url)
    assert await _run(client_main, capfd, "cat", DOC, *url) == TEXT
    assert await _run(client_main, capfd, "cat", DOC, "--format", "xml", *url) == xml
    db = ("--db", str(db_path))
    assert await _run(admin_main, capfd, "export", DOC, *db) == TEXT
    assert await _run(admin_main, capfd, "export", DOC, "--format", "text", *db) == TEXT
    assert await _run(admin_main, capfd, "export", DOC, "--format", "xml", *db) == xml
    assert await _run(admin_main, capfd, "export", DOC, "--seq", "1", *db) == (
        "Notes\nAlice one.\nSee the site.\nnext line\n\none\ntwo\n"
    )
    # --by, as before: bob's text alone
    assert await _run(client_main, capfd, "cat", DOC, "--by", "bob", *url) == " bob plain bobbold\n"

    # blame: who wrote each stretch of that text, a paragraph's line break its maker's
    out = await _run(client_main, capfd, "blame", DOC, *url)
    assert out.splitlines() == [
        '           #1  alice  "Notes\\nAlice one."',
        '           #2  bob  " bob plain bobbold"',
        '           #1  alice  "\\nSee the site.\\nnext line\\n\\none\\ntwo\\n"',
    ], out
    lines = (await _run(client_main, capfd, "blame", DOC, "--json", *url)).splitlines()
    runs = [json.loads(line) for line in lines]
    assert "".join(r["text"] for r in runs) == TEXT
    assert [(r["seq"], r["actor"]) for r in runs] == [(1, "alice"), (2, "bob"), (1, "alice")]


async def test_a_tiptap_document_prints_as_its_text(
    server: RunningServer, db_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """ProseMirror's blocks are elements: a line each, a hardBreak a line break, marks
    and attributes left out; a list item's paragraph one line."""
    ydoc: Doc[Any] = Doc()
    async with connect(server.ws_url, "tt", "ann", ydoc=ydoc):
        frag = ydoc.get("default", type=XmlFragment)
        with ydoc.transaction():
            frag.children.append(XmlElement("heading", {"level": 1}, [XmlText("Minutes")]))
            p = frag.children.append(XmlElement("paragraph"))
            t = p.children.append(XmlText())
            t.insert(0, "the ")
            t.insert(4, "hall", {"bold": {}})
            p.children.append(XmlElement("hardBreak"))
            p.children.append(XmlText("at ten"))
            frag.children.append(XmlElement("paragraph"))
            item = XmlElement("listItem", {}, [XmlElement("paragraph", {}, [XmlText("one")])])
            frag.children.append(XmlElement("bulletList", {}, [item]))

        async def logged() -> bool:
            return await server.backend.store.head("tt") >= 1

        await eventually(logged, what="the edit logged")
    want = "Minutes\nthe hall\nat ten\n\none\n"
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.get("/api/docs/tt/versions/head", params={"format": "tree"})
        assert tree_text(r.json()["roots"]["default"]["nodes"]) == want
    assert await _run(client_main, capfd, "cat", "tt", "--url", server.url) == want
    assert await _run(admin_main, capfd, "export", "tt", "--db", str(db_path)) == want
    out = await _run(client_main, capfd, "blame", "tt", "--url", server.url)
    assert out == f"           #1  ann  {json.dumps(want)}\n"


async def test_a_tree_nested_too_deep_for_its_text_prints_its_xml_string(
    server: RunningServer, db_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Elements nested deeper than the history gives as a tree (``?format=tree``: 422
    TooDeep) have no readable text from it: `cat` and `export` print the XML string, as
    before, which has no such limit (cat says so on stderr)."""
    ydoc: Doc[Any] = Doc()
    async with connect(server.ws_url, "deep", "eve", ydoc=ydoc):
        with ydoc.transaction():
            node = ydoc.get("default", type=XmlFragment).children.append(XmlElement("div"))
            for _ in range(299):
                node = node.children.append(XmlElement("div"))
            node.children.append(XmlText("bottom"))

        async def logged() -> bool:
            return await server.backend.store.head("deep") >= 1

        await eventually(logged, what="the edit logged")
    want = "<div>" * 300 + "bottom" + "</div>" * 300
    capfd.readouterr()
    assert await asyncio.to_thread(client_main, ["cat", "deep", "--url", server.url]) == 0
    out, err = capfd.readouterr()
    assert out == want and "its XML string instead" in err, err
    assert await _run(admin_main, capfd, "export", "deep", "--db", str(db_path)) == want
