"""Every module imports on its own, first, in a fresh interpreter: a circular import
between packages (history imports undo's helpers, which import history) shows only when
a module of the cycle is the first one imported, which the suite, importing the app
first, never does; a tool or an extension importing that one module would fail."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules() -> list[str]:
    out = []
    for top, package in (("server", "palimpsest"), ("client", "palimpsest.client")):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT / top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts[-1:] == ["__main__"]:
                continue  # (running it is the CLI)
            out.append(".".join([package, *parts]))
    return out


def _import(name: str) -> tuple[str, str]:
    run = subprocess.run(
        [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120
    )
    return name, run.stderr.strip().splitlines()[-1] if run.returncode else ""


def test_every_module_imports_first() -> None:
    names = modules()
    assert "palimpsest.bookkeeping" in names and "palimpsest.client.session" in names
    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = {name: err for name, err in pool.map(_import, names) if err}
    assert not failed, failed
