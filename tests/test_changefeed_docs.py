"""docs/changefeed.md against the code: its list of the events' `kind` values names every
kind the server writes into the log (devfeed: `lock` and `unlock` were on the feed,
`["ops", 8, 2265, "lock"]`, and missing from the list a consumer reads)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from palimpsest.store.base import DELETED
from palimpsest.undo.recorder import MARK, REDO, REVERT, UNDO

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"
DOC = ROOT / "docs" / "changefeed.md"

#: calls whose argument names the kind of the event logged: (function, positional index)
_WRITERS = {"server_change": 1, "NewEvent": 1, "_server_change": 2}


def _module(path: Path) -> str:
    parts = path.relative_to(SERVER).with_suffix("").parts
    return ".".join(("palimpsest", *(p for p in parts if p != "__init__")))


def _kind_arg(call: ast.Call) -> ast.expr | None:
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    if name not in _WRITERS:
        return None
    for kw in call.keywords:
        if kw.arg == "kind":
            return kw.value
    index = _WRITERS[name]
    return call.args[index] if len(call.args) > index else None


def written_kinds() -> set[str]:
    """Every kind the server's code logs events of, as a string or a module constant
    (a kind passed on in a variable is counted where it was named)."""
    kinds = {DELETED, UNDO, REDO, MARK, REVERT}  # (the feed's deletion record; undo's)
    for path in sorted(SERVER.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        module = None
        for node in ast.walk(tree):
            arg = _kind_arg(node) if isinstance(node, ast.Call) else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                kinds.add(arg.value)
            elif isinstance(arg, ast.Name):
                module = module or importlib.import_module(_module(path))
                value = getattr(module, arg.id, None)  # (a parameter: not a constant)
                if isinstance(value, str):
                    kinds.add(value)
    return kinds


def documented_kinds() -> set[str]:
    text = DOC.read_text()
    start = text.index("`kind` says what made the event:")
    paragraph = text[start : text.index("\n\n", start)]
    return set(re.findall(r"`([a-z_]+)`", paragraph)) - {"kind"}


def test_the_scan_finds_the_kinds_it_must() -> None:
    """(so that the next test cannot pass on a scan that finds nothing)"""
    assert {"edit", "restore", "import", "seed", "lock", "unlock", "undo_mark"} <= written_kinds()


def test_changefeed_md_lists_every_kind_the_server_writes() -> None:
    missing = written_kinds() - documented_kinds()
    assert not missing, f"docs/changefeed.md's list of `kind` values leaves out {sorted(missing)}"
