"""Every module imports on its own, first, in a fresh interpreter: a circular import
between packages (history imports undo's helpers, which import history) shows only when
a module of the cycle is the first one imported, which the suite, importing the app
first, never does; a tool or an extension importing that one module would fail."""

from __future__ import annotations

import json
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


#: libraries only an optional feature needs: redis (--fanout), PyJWT (a secret, a key or
#: a JWKS URL; a token given in open mode), httpx and its rich (webhooks, a JWKS URL),
#: cryptography (a public key or a JWKS URL)
OPTIONAL = ("httpx", "redis", "jwt", "rich", "cryptography")


def _loaded(code: str) -> list[str]:
    said = f"json.dumps(sorted(set({OPTIONAL!r}) & set(sys.modules)))"
    check = f"{code}; import sys, json; print({said})"
    run = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=True
    )
    loaded: list[str] = json.loads(run.stdout.splitlines()[-1])  # (after any --help)
    return loaded


def test_the_app_imports_no_optional_library() -> None:
    """Start-up on the default set-up (SQLite, open mode, no fan-out, no webhooks) loads
    none of them: they were 0.5 s of the 1.3 s of CPU before /healthz answered."""
    assert _loaded("import palimpsest.app") == []
    # what the check looks for is found when loaded: the test can fail
    assert "redis" in _loaded("import palimpsest.app, redis")


def test_serve_and_the_admin_commands_import_no_client_library() -> None:
    """`palimpsest serve` (as the admin commands) parses its command line without the
    client's commands, which import the client library (httpx, rich): 0.4 s more of the
    server's start-up. The client's commands, and --help, still have them."""
    run = "from palimpsest.cli import main\ntry: main({!r})\nexcept SystemExit: pass"
    for argv in (["serve", "--help"], ["verify", "--help"]):
        assert _loaded(run.format(argv)) == [], argv
    assert "httpx" in _loaded(run.format(["cat", "--help"]))
    assert "httpx" in _loaded(run.format(["--help"]))
