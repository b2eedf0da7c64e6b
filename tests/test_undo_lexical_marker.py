"""A Lexical text node's map is kept when what others typed in it stays: @lexical/yjs
keeps each text node as a Y.Map embedded in the paragraph's Y.XmlText before the node's
characters, and characters with no text node's map before them are dropped by every
Lexical tab. Bob's characters typed at the end of alice's text node are in her node:
her undo of the node used to delete its map with her characters, and the tabs then
deleted bob's (field test: an empty paragraph). Now the map stays, with its entries,
before bob's characters, and the answer says so (``kept_containers``; docs/undo.md)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, free_port, run_server

from palimpsest.settings import Settings

NODE_DIR = Path(__file__).resolve().parent / "node"
ALICE_NODE = {"__type": "text", "__format": 0, "__style": "", "__mode": 0, "__detail": 0}


async def _node(srv: RunningServer, doc: str, mode: str) -> dict[str, Any]:
    """tests/node/lexical_marker.mjs: alice's node, bob's typing in it, alice's undo."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "yjs").is_dir():
        pytest.fail("Node.js or tests/node/node_modules missing (./scripts/test installs them)")
    proc = await asyncio.create_subprocess_exec(
        "node", "lexical_marker.mjs", srv.ws_url, doc, mode, cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    got: dict[str, Any] = json.loads(out)
    return got


def settings(tmp_path: Path) -> Settings:
    # one step per burst of typing, ended by close_group
    return Settings(db=str(tmp_path / "db"), port=free_port(), undo_capture_ms=60_000)


async def test_bobs_text_in_alices_lexical_node_keeps_her_nodes_map(tmp_path: Path) -> None:
    async with run_server(settings(tmp_path)) as srv:
        got = await _node(srv, "plain", "plain")
    answer = got["answer"]
    assert answer["ok"] is True, answer
    # her characters go; her node's map and its 5 entries stay before bob's
    assert got["paragraph"] == [{"map": ALICE_NODE}, " Bob added this."], got
    assert answer["removed"] == {"characters": len("Alice wrote this."), "items": 0}, answer
    assert answer["kept_containers"] == {
        "items": 1,
        "others": [{"user": "bob", "characters": len(" Bob added this."), "items": 0}],
    }, answer
    assert "removed_others" not in answer, answer
    # her redo brings her characters back into her node, before bob's
    assert got["redo"]["ok"] is True, got["redo"]
    assert got["redone"] == [{"map": ALICE_NODE}, "Alice wrote this. Bob added this."], got


async def test_bobs_bold_word_after_his_text_in_alices_node(tmp_path: Path) -> None:
    """Bob's own node (his bold word) has his map; his characters before it are in
    alice's node, whose map stays before them."""
    async with run_server(settings(tmp_path)) as srv:
        got = await _node(srv, "bold", "bold")
    answer = got["answer"]
    assert got["paragraph"] == [
        {"map": ALICE_NODE}, " Bob added ", {"map": {**ALICE_NODE, "__format": 1}}, "bobbold",
    ], got  # fmt: skip
    assert answer["kept_containers"] == {
        "items": 1,
        "others": [{"user": "bob", "characters": len(" Bob added "), "items": 0}],
    }, answer
    assert got["redone"][1] == "Alice wrote this. Bob added ", got
