"""Library hygiene: the public names, and a client that does not drag the server in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER_STACK = ("starlette", "uvicorn", "aiosqlite", "asyncpg", "redis", "jwt", "prometheus_client")


def fresh(code: str) -> str:
    """Run `code` in a new interpreter at the repository root; its stdout."""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    return out.stdout


def test_importing_the_client_loads_none_of_the_server_stack() -> None:
    loaded = json.loads(fresh(
        "import json, sys\n"
        "import client, client.cli\n"
        f"print(json.dumps([m for m in {SERVER_STACK!r} if m in sys.modules]))\n"
    ))  # fmt: skip
    assert loaded == []
    # and the check can fail: the server does load them
    loaded = json.loads(fresh(
        "import json, sys\n"
        "from server import Palimpsest, Extension, Identity\n"
        f"print(json.dumps([m for m in {SERVER_STACK!r} if m in sys.modules]))\n"
    ))  # fmt: skip
    assert {"starlette", "aiosqlite"} <= set(loaded)


def test_public_names() -> None:
    import server

    assert server.__all__ == sorted(server.__all__)
    for name in server.__all__:
        assert getattr(server, name) is not None, name
    assert {"Palimpsest", "Extension", "Identity"} <= set(server.__all__)
