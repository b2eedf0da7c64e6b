"""Library hygiene: one import name (`palimpsest`), its public names, and a client that
does not drag the server in."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from serverproc import REPO_ROOT

SERVER_STACK = ("starlette", "uvicorn", "aiosqlite", "asyncpg", "redis", "jwt", "prometheus_client")


def fresh(code: str, cwd: Path) -> str:
    """Run `code` in a new interpreter in `cwd` (not the repository: what an installed
    distribution provides, not what the checkout's folders happen to offer); its stdout."""
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    return out.stdout


def test_importing_the_client_loads_none_of_the_server_stack(tmp_path: Path) -> None:
    loaded = json.loads(fresh(
        "import json, sys\n"
        "from palimpsest import client\n"
        "import palimpsest.client.cli\n"
        "assert callable(client.connect) and client.History\n"
        f"print(json.dumps([m for m in {SERVER_STACK!r} if m in sys.modules]))\n",
        tmp_path,
    ))  # fmt: skip
    assert loaded == []
    # and the check can fail: the server does load them
    loaded = json.loads(fresh(
        "import json, sys\n"
        "from palimpsest import Palimpsest, Extension, Identity\n"
        "assert Palimpsest and Extension and Identity\n"
        f"print(json.dumps([m for m in {SERVER_STACK!r} if m in sys.modules]))\n",
        tmp_path,
    ))  # fmt: skip
    assert {"starlette", "aiosqlite"} <= set(loaded)


def test_the_distribution_has_no_top_level_server_or_client(tmp_path: Path) -> None:
    found = json.loads(fresh(
        "import importlib.util, json\n"
        "print(json.dumps({n: importlib.util.find_spec(n) is not None\n"
        "                  for n in ('palimpsest', 'palimpsest.client', 'server', 'client')}))\n",
        tmp_path,
    ))  # fmt: skip
    assert found == {"palimpsest": True, "palimpsest.client": True, "server": False,
                     "client": False}  # fmt: skip


def test_public_names() -> None:
    import palimpsest

    assert palimpsest.__all__ == sorted(palimpsest.__all__)
    for name in palimpsest.__all__:
        assert getattr(palimpsest, name) is not None, name
    assert {"Palimpsest", "Extension", "Identity"} <= set(palimpsest.__all__)


def test_mypy_sees_the_installed_client_from_another_project(tmp_path: Path) -> None:
    """The client is typed (py.typed) for the user's own project: mypy run there, outside
    the checkout, finds `palimpsest` and its types. The default editable install (an
    import hook, since the checkout maps server/ and client/ into one package) is
    invisible to mypy; scripts/ install with editable_mode=strict (docs/client.md)."""
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    (tmp_path / "bot.py").write_text(
        "from palimpsest import client\n"
        "async def main() -> None:\n"
        "    async with client.connect('ws://127.0.0.1:8000/ws', 'notes', user='ada') as s:\n"
        "        s.text().insert('zero', 5)\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "bot.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "import-not-found" not in out.stdout, out.stdout
    assert out.stdout.count("[arg-type]") == 2, out.stdout


def test_the_clients_documented_late_answer_type_checks(tmp_path: Path) -> None:
    """docs/client.md's example of awaiting a timed-out undo's late answer failed `mypy
    --strict` (``Timeout.late`` may be None), in a package that says it is typed for it."""
    doc = (REPO_ROOT / "docs" / "client.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "e.late" in b]
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    (tmp_path / "bot.py").write_text(
        "import asyncio\nfrom palimpsest import client\n\n\n"
        "async def example(session: client.Session) -> None:\n"
        + textwrap.indent(block, "    ")
        + "    print(result.seq)\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "bot.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout


def test_a_tag_type_checks_wherever_a_version_is_named(tmp_path: Path) -> None:
    """diff(), blame(), blame_texts(), blame_tree() and text_by() take a tag in a seq's
    place at run time (tests/test_client_history.py), as version() and restore() do, but
    were typed ``int``: `mypy --strict` refused a bot's ``blame(doc, seq="before-ai")``."""
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    (tmp_path / "bot.py").write_text(
        "from palimpsest import client\n"
        "async def main(h: client.History) -> None:\n"
        "    await h.diff('notes', 'before-ai', 'after-ai', join='actor')\n"
        "    await h.diff('notes', 3, 'after-ai')\n"
        "    await h.blame('notes', seq='after-ai', join='actor')\n"
        "    await h.blame_texts('notes', 'cells', seq='after-ai')\n"
        "    await h.blame_tree('notes', seq='after-ai')\n"
        "    await h.text_by('notes', 'bot', seq='after-ai')\n"
        "    await h.text_by('notes', 'bot', 'after-ai')\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "bot.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout
