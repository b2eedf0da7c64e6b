"""A real y-websocket client (npm `y-websocket` under Node.js) with a read token types:
nobody else sees it, the log has no event of it, the document is unchanged; and it keeps
receiving everybody else's edits. The server runs as `palimpsest serve --jwt-secret`,
and the tokens come from `palimpsest token`.

Run:  .venv/bin/pytest -m node tests/test_read_only_node.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import eventually
from serverproc import REPO_ROOT, ServerProcess
from test_interop_node import CLIENT_JS, NODE_DIR, STEP_TIMEOUT_MS, NodeClient, node_modules
from yclient import connect

from palimpsest.store.sqlite import SQLiteStore

pytestmark = pytest.mark.node
__all__ = ["node_modules"]  # the session fixture that runs `npm ci` when needed

SECRET = "read-only-node-test-secret-32-bytes-long"
DOC = "ro-doc"


def cli_token(user: str, role: str) -> str:
    """A token from the real `palimpsest token` command."""
    out = subprocess.run(
        [sys.executable, "-m", "palimpsest", "token", "--user", user, "--role", role,
         "--docs", "ro-*", "--ttl", "600", "--secret", SECRET],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout.strip()


class TokenNodeClient(NodeClient):
    """client.mjs with ?token= (y-websocket's `params`) and frame tracing."""

    def __init__(self, server: ServerProcess, doc: str, tok: str, log_path: Path) -> None:
        super().__init__(server, doc, None, log_path)
        self.token = tok

    async def start(self) -> NodeClient:
        args = ["node", str(CLIENT_JS), "--url", self.server.ws_url, "--doc", self.doc,
                "--param", f"token={self.token}", "--param", "user=mallory",
                "--interactive", "--trace", "--timeout", str(STEP_TIMEOUT_MS)]  # fmt: skip
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *args, cwd=NODE_DIR, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=self._log, limit=16 << 20,
        )  # fmt: skip
        return self


async def test_read_only_y_websocket_client_cannot_edit(node_modules: Path, tmp_path: Path) -> None:
    write_tok, read_tok = cli_token("writer", "write"), cli_token("reader", "read")
    async with ServerProcess(tmp_path / "srv", extra_args=["--jwt-secret", SECRET]) as srv:
        assert "signed tokens required" in srv.log_text()
        reader = TokenNodeClient(srv, DOC, read_tok, tmp_path / "reader.log")
        try:
            async with connect(srv.ws_url, DOC, token=write_tok) as writer, \
                    connect(srv.ws_url, DOC, token=read_tok) as observer:  # fmt: skip
                writer.insert(0, "hello ")
                await eventually(lambda: observer.content == "hello ", what="observer synced")

                await reader.start()
                await reader.connect()
                assert await reader.wait_text(equals="hello ") == "hello "
                await reader.call("frames", clear=True)
                await reader.call("type", text="SECRET", pos=0)  # six updates, one per key

                async def denials() -> list[str]:
                    frames = (await reader.call("frames"))["frames"]
                    return [
                        f["reason"]
                        for f in frames
                        if f["dir"] == "recv" and f.get("type") == "auth"
                    ]

                # each update frame is answered with permission-denied: the server has
                # handled all six when the sixth answer arrives
                got = await eventually(lambda: _at_least(denials, 6), what="six denials")
                assert all("read-only" in r for r in got)

                # a barrier through the room's pipeline: the writer's next edit reaches the
                # observer and the reader; the reader's would have come before it
                writer.insert(len(writer.content), "MARK")
                await eventually(lambda: "MARK" in observer.content, what="observer sees MARK")
                reader_text = await reader.wait_text(contains="MARK")
                assert "SECRET" in reader_text, "the reader keeps its local edits"
                assert observer.content == "hello MARK"
                assert writer.content == "hello MARK"
                state = await reader.call("state")
                assert state["connected"] is True, "the read-only client stays connected"

            # a newcomer loads the document from the log: unchanged by the reader
            async with connect(srv.ws_url, DOC, token=write_tok) as late:
                assert late.content == "hello MARK"
        finally:
            await reader.aclose()
        async with SQLiteStore(str(srv.db_path)) as store:
            events = await store.read(DOC)
        assert events, "the writer's edits are logged"
        assert {e.actor for e in events} == {"writer"}, "no event of the reader in the log"


async def _at_least(fetch: object, n: int) -> list[str] | None:
    got = await fetch()  # type: ignore[operator]
    return got if len(got) >= n else None
