"""Text another user moved is the mover's copy: Bob's Enter in a Lexical document (as
@lexical/yjs makes it: alice's characters deleted from her paragraph, a copy of them,
bob's, in a new one) leaves alice's undo nothing of her word to take out. The undo says
what it visibly did (``removed``, ``added``) and which of her steps it skipped as having
nothing left (``skipped``), as Yjs's UndoManager skips them (docs/undo.md)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, free_port, run_server

from palimpsest.settings import Settings

NODE_DIR = Path(__file__).resolve().parent / "node"
SENTENCE = "A sentence here."


async def _node(srv: RunningServer, doc: str, mode: str) -> list[str]:
    """tests/node/moved_split.mjs: alice's sentence and word, then bob's Enter (mode
    exact or space); or (read) the paragraphs as a fresh client sees them."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "yjs").is_dir():
        pytest.fail("Node.js or tests/node/node_modules missing (./scripts/test installs them)")
    proc = await asyncio.create_subprocess_exec(
        "node", "moved_split.mjs", srv.ws_url, doc, mode, cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    got: list[str] = json.loads(out)["paragraphs"]
    return got


def settings(tmp_path: Path) -> Settings:
    # one step per burst of typing: alice's word is one step, her sentence another
    return Settings(db=str(tmp_path / "db"), port=free_port(), undo_capture_ms=60_000)


async def _undo(srv: RunningServer, doc: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{srv.url}/api/docs/{doc}/undo?user=alice")
    answer: dict[str, Any] = r.json()
    return r.status_code, answer


async def _word_seqs(srv: RunningServer, doc: str) -> list[int]:
    """The seqs of alice's keystrokes of " alice-word" (her edits after the close)."""
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{srv.url}/api/docs/{doc}/events?actor=alice&user=x")
    events = r.json()["events"]
    mark = next(e["seq"] for e in events if e["kind"] == "undo_mark")
    return [e["seq"] for e in events if e["kind"] == "edit" and e["seq"] > mark]


async def test_an_undo_skips_the_step_whose_text_another_user_moved_and_says_so(
    tmp_path: Path,
) -> None:
    async with run_server(settings(tmp_path)) as srv:
        assert await _node(srv, "exact", "exact") == [SENTENCE, " alice-word"]
        word = await _word_seqs(srv, "exact")
        assert len(word) == len(" alice-word")
        status, answer = await _undo(srv, "exact")
        # nothing of the word's step is left (bob's copy is bob's): skipped, and the undo
        # reverts the step below it, her paragraph and sentence, and says so
        assert status == 200, answer
        assert answer["skipped"] == [word], answer
        assert answer["reverts"] == [word[0] - 2], answer  # (her sentence; then the close)
        # the sentence, and the paragraph's 3 attributes, its text node and its 5 entries
        assert answer["removed"] == {"characters": len(SENTENCE), "items": 9}, answer
        assert answer["added"] == {"characters": 0, "items": 0}, answer
        assert "removed_others" not in answer, answer
        assert await _node(srv, "exact", "read") == [" alice-word"]
        # the skipped step is gone from her stack: nothing is left to undo
        status, answer = await _undo(srv, "exact")
        assert (status, answer) == (409, {"ok": False, "reason": "nothing to undo"})


async def test_an_undo_of_a_step_partly_moved_by_another_user_counts_what_it_removed(
    tmp_path: Path,
) -> None:
    """Bob's caret after the space: the space stays alice's, and all her undo of the
    word's step can take out is that one character."""
    async with run_server(settings(tmp_path)) as srv:
        assert await _node(srv, "space", "space") == [SENTENCE + " ", "alice-word"]
        word = await _word_seqs(srv, "space")
        status, answer = await _undo(srv, "space")
        assert status == 200, answer
        assert answer["reverts"] == word and "skipped" not in answer, answer
        assert answer["removed"] == {"characters": 1, "items": 0}, answer
        assert answer["added"] == {"characters": 0, "items": 0}, answer
        assert await _node(srv, "space", "read") == [SENTENCE, "alice-word"]
        # her next undo takes her sentence; bob's copy of her word stays
        status, answer = await _undo(srv, "space")
        assert status == 200 and answer["reverts"] == [word[0] - 2], answer
        assert answer["removed"] == {"characters": len(SENTENCE), "items": 9}, answer
        assert await _node(srv, "space", "read") == ["alice-word"]
