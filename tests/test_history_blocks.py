"""The value of a document whose blocks are Y.XmlTexts embedded in a Y.XmlText root
(Lexical's, Slate's): every block in place, nested ones (a list's items) too, each as
an element named by its type attribute (docs/history.md), in a version, `palimpsest
export --format xml` and `palimpsest cat --format xml` (by default they print the
text, a line per block). The documents are written by real Yjs under Node as the
editors write them (tests/node/block_docs.mjs; pycrdt cannot embed an XmlText in a text)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer
from pycrdt import Doc, Map, Text, XmlElement, XmlFragment, XmlText

from palimpsest.cli import main as admin_main
from palimpsest.client.cli import main as client_main
from palimpsest.history.render import MAX_EMBED_DEPTH, infer_root_types, root_entry

NODE_DIR = Path(__file__).resolve().parent / "node"

LEXICAL_TEXT = '<text __detail="0" __format="{}" __mode="0" __style=""/>'
BLOCK = '__format="0" __indent="0"'
LEXICAL = (
    f"<paragraph {BLOCK}>{LEXICAL_TEXT.format(0)}Para one</paragraph>"
    f'<list {BLOCK} __listType="bullet" __start="1" __tag="ul">'
    f'<listitem {BLOCK} __value="1">{LEXICAL_TEXT.format(0)}Item text</listitem></list>'
    f"<paragraph {BLOCK}>{LEXICAL_TEXT.format(1)}Bold{LEXICAL_TEXT.format(0)} plain</paragraph>"
)
SLATE = (
    "<heading-one>Title of the doc</heading-one>"
    "<paragraph>First <bold>bold</bold> here.</paragraph>"
    "<bulleted-list><list-item>one</list-item><list-item>two</list-item></bulleted-list>"
    "<paragraph>Last.</paragraph>"
)
#: each editor's document: (its root, its value)
WANT = {"lexical": ("root", LEXICAL), "slate": ("content", SLATE)}
#: what `cat` and `export` print of each by default: its readable text (test_readable_text)
TEXT = {
    "lexical": "Para one\nItem text\nBold plain\n",
    "slate": "Title of the doc\nFirst bold here.\none\ntwo\nLast.\n",
}


def _node(script: str, *args: str) -> Any:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "yjs").is_dir():
        pytest.fail("Node.js or tests/node/node_modules missing (./scripts/test installs them)")
    out = subprocess.run(["node", script, *args], cwd=NODE_DIR, check=True,
                         capture_output=True, timeout=120).stdout  # fmt: skip
    return json.loads(out)


@pytest.fixture(scope="module")
def updates() -> dict[str, bytes]:
    return {kind: bytes.fromhex(u) for kind, u in _node("block_docs.mjs").items()}


async def _run(main: Any, capfd: pytest.CaptureFixture[str], *argv: str) -> str:
    capfd.readouterr()
    assert await asyncio.to_thread(main, list(argv)) == 0
    return str(capfd.readouterr().out)


async def test_every_block_of_a_lexical_or_slate_document_is_in_its_value(
    server: RunningServer,
    db_path: Path,
    updates: dict[str, bytes],
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with httpx.AsyncClient(base_url=server.url, params={"user": "ann"}) as c:
        for kind, update in updates.items():
            r = await c.post(f"/api/docs/{kind}/updates", content=update,
                             headers={"content-type": "application/octet-stream"})  # fmt: skip
            assert r.status_code == 200, r.text
        for kind, (root, value) in WANT.items():
            for version in ("head", "1"):
                r = await c.get(f"/api/docs/{kind}/versions/{version}")
                assert r.json()["roots"] == {root: {"type": "xml", "value": value}}
    for kind, (_, value) in WANT.items():
        url, db = ("--url", server.url), ("--db", str(db_path))
        assert await _run(client_main, capfd, "cat", kind, "--format", "xml", *url) == value
        assert await _run(admin_main, capfd, "export", kind, "--format", "xml", *db) == value
        assert await _run(client_main, capfd, "cat", kind, *url) == TEXT[kind]
        assert await _run(admin_main, capfd, "export", kind, *db) == TEXT[kind]


def test_plain_xml_texts_and_text_roots_render_as_before() -> None:
    """Tiptap's texts (no attributes, nothing embedded) are their runs; a text root is
    its characters, whatever it holds."""
    doc: Doc[Any] = Doc()
    doc["pm"] = frag = XmlFragment()
    doc["t"] = text = Text("ab")
    p = frag.children.append(XmlElement("paragraph", {"level": "1"}))
    t = p.children.append(XmlText())
    t.insert(0, "Hi ")
    t.insert(3, "there", {"bold": True})
    text.insert_embed(1, Map({"k": 1}))
    want = '<paragraph level="1">Hi <bold>there</bold></paragraph>'
    assert root_entry(doc, "pm", "xml")["value"] == want
    assert root_entry(doc, "t", "text")["value"] == "ab"


def test_blocks_nested_too_deep_are_cut() -> None:
    """A hostile client's texts nested 500 deep: the value stops at MAX_EMBED_DEPTH,
    and the text typed into the root is in it."""
    doc: Doc[Any] = Doc()
    for _, update in _node("lexical_session.mjs", "deep", "500"):
        doc.apply_update(bytes.fromhex(update))
    kind = infer_root_types(doc, ["root"])["root"]
    assert kind == "text"
    entry = root_entry(doc, "root", kind)
    assert entry["value"].endswith("typed")
    [nested] = [d["insert"] for d in entry["delta"] if d["insert"].startswith("<")]
    assert nested.count("<xmltext>") == MAX_EMBED_DEPTH + 1
    assert nested.startswith("<xmltext><xmltext>") and nested.endswith("</xmltext></xmltext>")
