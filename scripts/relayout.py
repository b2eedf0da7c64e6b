#!/usr/bin/env python3
# ruff: noqa: E501  (patterns and generated code are quoted whole)
"""The mechanical part of issue 17 (import names, layout by concept), as scripted steps.

    scripts/relayout.py names      # distribution provides `palimpsest` (+ palimpsest.client)
    scripts/relayout.py history    # server/history*.py -> server/history/
    scripts/relayout.py undo       # server/undo.py -> server/undo/
    scripts/relayout.py cli        # server/cli*.py -> server/cli/
    scripts/relayout.py auth       # server/auth.py + tokens.py -> server/auth/, limits.py

Each step moves files with `git mv` (so history follows them), rewrites the imports that
name the moved modules (server, tests, bench, scripts, examples, docs) and leaves the
tree for `ruff check --fix` (unused imports of the split modules) and the test suite.
Kept in the repository so that the steps can be re-run on a branch that predates them;
on a tree where a step is done it says so and changes nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"
#: where code that imports Palimpsest lives, outside the two packages
OUTSIDE = ["tests", "bench", "scripts", "examples"]
TEXTS = ["README.md", "docs", "bench/README.md", "web/README.md"]


def sh(*args: str) -> None:
    subprocess.run(args, cwd=ROOT, check=True)


def mv(src: str, dst: str) -> None:
    (ROOT / dst).parent.mkdir(parents=True, exist_ok=True)
    sh("git", "mv", src, dst)


def read(path: str | Path) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def write(path: str | Path, text: str) -> None:
    (ROOT / path).write_text(text, encoding="utf-8")


def edit(path: str | Path, fn: Callable[[str], str]) -> None:
    old = read(path)
    new = fn(old)
    if new != old:
        write(path, new)


def py_files(where: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for w in where:
        p = ROOT / w
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(
                f
                for f in p.rglob("*.py")
                if "node_modules" not in f.parts and ".venv" not in f.parts
            )
    return sorted(f for f in out if f.resolve() != Path(__file__).resolve())


def text_files() -> list[Path]:
    out: list[Path] = []
    for w in TEXTS:
        p = ROOT / w
        out.extend([p] if p.is_file() else sorted(p.rglob("*.md")) if p.is_dir() else [])
    return out


def rename_modules(mapping: dict[str, str], where: Iterable[Path]) -> None:
    """Rewrite dotted module names (absolute imports, `-m` arguments, prose)."""
    for f in where:

        def fix(text: str) -> str:
            for old, new in mapping.items():
                text = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w])", new, text)
            return text

        edit(f, fix)


def relative_up(path: str, siblings: set[str]) -> None:
    """A module moved one package down: its `from .x` imports of modules that did not
    move with it become `from ..x`."""

    def fix(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(2)
            if name.split(".")[0] in siblings:
                return m.group(0)
            return f"{m.group(1)}from ..{name}"

        text = re.sub(r"^([ \t]*)from \.(?!\.)([\w.]+)", one, text, flags=re.M)
        return re.sub(r"^([ \t]*)from \. import ", r"\1from .. import ", text, flags=re.M)

    edit(path, fix)


def add_package(name: str) -> None:
    """List a new subpackage in pyproject's packages (a wheel holds only those)."""

    def fix(t: str) -> str:
        m = re.search(r"^packages = \[([^\]]*)\]", t, flags=re.M)
        if m is None or f'"{name}"' in m.group(1):
            return t
        names = sorted([*(n.strip() for n in m.group(1).split(",") if n.strip()), f'"{name}"'])
        return t[: m.start(1)] + ", ".join(names) + t[m.end(1) :]

    edit("pyproject.toml", fix)


def cut(text: str, start: str, end: str | None) -> tuple[str, str]:
    """(text without [start, end), the part cut out)."""
    i = text.index(start)
    j = text.index(end, i) if end is not None else len(text)
    return text[:i] + text[j:], text[i:j]


def ruff_fix(*paths: str) -> None:
    """Drop the imports a split left unused (twice: an emptied TYPE_CHECKING block goes
    in between, and its import after)."""
    ruff = [str(ROOT / ".venv/bin/ruff"), "check", "--fix", "-q", "--select", "F401,I001"]
    subprocess.run([*ruff, *paths], cwd=ROOT)
    for f in py_files(paths):
        edit(f, lambda t: t.replace("\nif TYPE_CHECKING:\n    pass\n", "\n"))
    subprocess.run([*ruff, *paths], cwd=ROOT)


# --- names -------------------------------------------------------------------------------


def names() -> None:
    # rewriting imports is idempotent: run again after a merge brings code that still
    # imports server or client
    done = "palimpsest.cli:main" in read("pyproject.toml")

    def pyproject(text: str) -> str:
        text = text.replace('palimpsest = "server.cli:main"', 'palimpsest = "palimpsest.cli:main"')
        text = re.sub(
            r"\[tool\.setuptools\]\npackages = \[[^\]]*\]\n\n\[tool\.setuptools\.package-data\]\n"
            r"server = \[\"py.typed\"\]\nclient = \[\"py.typed\"\]",
            "[tool.setuptools]\n"
            "# the repository keeps server/ and client/; installed, they are one package\n"
            'packages = ["palimpsest", "palimpsest.store", "palimpsest.routes", '
            '"palimpsest.client"]\n\n'
            "[tool.setuptools.package-dir]\n"
            'palimpsest = "server"\n'
            '"palimpsest.client" = "client"\n\n'
            "[tool.setuptools.package-data]\n"
            'palimpsest = ["py.typed"]\n'
            '"palimpsest.client" = ["py.typed"]',
            text,
        )
        return text.replace(
            "[tool.ruff.lint.per-file-ignores]",
            '[tool.ruff.lint.isort]\nknown-first-party = ["palimpsest"]\n\n'
            "[tool.ruff.lint.per-file-ignores]",
        )

    if not done:
        edit("pyproject.toml", pyproject)
    if (SERVER / "cli.py").exists():
        edit(
            "server/cli.py",
            lambda t: t.replace(
                "from client import cli as client_cli", "from .client import cli as client_cli"
            ),
        )
    # the client imports the wire format from the package it is installed in
    for f in py_files(["client"]):
        edit(f, lambda t: re.sub(r"^from server(\.| )", r"from palimpsest\1", t, flags=re.M))
    outside = py_files(OUTSIDE)
    for f in outside:

        def fix(t: str) -> str:
            t = re.sub(r"^(\s*)import client$", r"\1from palimpsest import client", t, flags=re.M)
            t = re.sub(r"^(\s*)import server$", r"\1import palimpsest", t, flags=re.M)
            t = re.sub(r"^(\s*)import server\.", r"\1import palimpsest.", t, flags=re.M)
            t = re.sub(r"^(\s*)import client\.", r"\1import palimpsest.client.", t, flags=re.M)
            t = re.sub(r"^(\s*)from client(\.| )", r"\1from palimpsest.client\2", t, flags=re.M)
            t = re.sub(r"^(\s*)from server(\.| )", r"\1from palimpsest\2", t, flags=re.M)
            t = re.sub(r"^(\s*)from palimpsest\.client import (\w+) as server_cli$",
                       r"\1from palimpsest.client import \2 as server_cli", t, flags=re.M)  # fmt: skip
            # subprocesses: python -m server …
            t = re.sub(r'"-m",(\s*)"server"', r'"-m",\1"palimpsest"', t)
            t = re.sub(r'"-m",(\s*)"client"', r'"-m",\1"palimpsest.client"', t)
            t = t.replace(
                '[sys.executable, "-m", "palimpsest.client", "--help"], capture_output=True, text=True, check=True',
                '[sys.executable, "-m", "palimpsest.client", "--help"],\n        capture_output=True, text=True, check=True,',
            )  # noqa: E501
            return t.replace("-m server serve", "-m palimpsest serve")

        edit(f, fix)
    for f in text_files():

        def prose(t: str) -> str:
            t = re.sub(r"^import client$", "from palimpsest import client", t, flags=re.M)
            t = re.sub(r"^from server import", "from palimpsest import", t, flags=re.M)
            t = t.replace("python -m client", "python -m palimpsest.client")
            t = t.replace("python -m server", "python -m palimpsest")
            return t.replace("  # `from palimpsest import Palimpsest` once installed", "")

        edit(f, prose)
    print("names: done; reinstall (pip install -e .) so that `palimpsest` resolves")


# --- history/ ----------------------------------------------------------------------------

HISTORY = {"attribution", "render", "restore", "service", "sessions", "extension"}


def history() -> None:
    if (SERVER / "history").is_dir():
        print("history: done already")
        return
    mv("server/history.py", "server/history/service.py")
    for part in ("attribution", "render", "restore"):
        mv(f"server/history_{part}.py", f"server/history/{part}.py")
    for part in ("service", "attribution", "render", "restore"):
        path = f"server/history/{part}.py"
        edit(path, lambda t: re.sub(r"from \.history_(\w+) import", r"from .\1 import", t))
        relative_up(path, HISTORY)
    service = read("server/history/service.py")
    service, sessions = cut(service, "@dataclass\nclass _Sessions:", "class History:")
    service, ext = cut(service, "class HistoryExtension(Extension):", "__all__ = [")
    service = service.replace("_Sessions", "Sessions")
    service = re.sub(
        r"__all__ = \[[^\]]*\]",
        '__all__ = ["History", "MAX_PAGE", "SESSION_GAP_MS", "event_json"]',
        service,
    )
    service = service.replace(
        "from .render import", "from .sessions import Sessions\nfrom .render import", 1
    )
    write("server/history/service.py", service)
    write(
        "server/history/sessions.py",
        '"""Editing sessions: each actor\'s events separated by less than a gap."""\n\n'
        "from __future__ import annotations\n\n"
        "from dataclasses import dataclass, field\nfrom typing import Any\n\n"
        "from ..store.base import Event\nfrom ..util import iso\n\n\n"
        + sessions.replace("class _Sessions", "class Sessions").rstrip()
        + '\n\n\n__all__ = ["Sessions"]\n',
    )
    write(
        "server/history/extension.py",
        '"""History as an extension: the service of a backend and its HTTP routes."""\n\n'
        "from __future__ import annotations\n\n"
        "from collections.abc import Sequence\nfrom typing import TYPE_CHECKING\n\n"
        "from starlette.routing import BaseRoute\n\n"
        "from ..errors import NotFound\nfrom ..extensions import Extension\n"
        "from .service import History\n\n"
        "if TYPE_CHECKING:\n    from ..backend import Backend\n\n\n"
        + ext.rstrip().replace("from .routes.history import", "from ..routes.history import")
        + '\n\n\n__all__ = ["HistoryExtension", "history_of"]\n',
    )
    write(
        "server/history/__init__.py",
        '"""Browsable history: events, editing sessions, any version, attributed diffs, blame,\n'
        "restore and named versions. ``service`` is the History of a backend, ``attribution``\n"
        "the who-wrote-what index, ``render`` turns versions into JSON and diffs, ``restore``\n"
        'makes the live document equal to a version, ``sessions`` groups events."""\n\n'
        "from __future__ import annotations\n\n"
        "from .extension import HistoryExtension, history_of\n"
        "from .service import MAX_PAGE, SESSION_GAP_MS, History, event_json\n\n"
        '__all__ = ["MAX_PAGE", "SESSION_GAP_MS", "History", "HistoryExtension", '
        '"event_json", "history_of"]\n',
    )
    mapping = {
        "palimpsest.history_attribution": "palimpsest.history.attribution",
        "palimpsest.history_render": "palimpsest.history.render",
        "palimpsest.history_restore": "palimpsest.history.restore",
        "server.history_attribution": "server.history.attribution",
        "server.history_render": "server.history.render",
        "server.history_restore": "server.history.restore",
    }
    rename_modules(mapping, py_files(OUTSIDE))
    for f in py_files(["server"]):
        edit(f, lambda t: re.sub(r"from (\.+)history_(\w+) import", r"from \1history.\2 import", t))
    ruff_fix("server/history")
    add_package("palimpsest.history")
    print("history: done")


# --- undo/ -------------------------------------------------------------------------------


def undo() -> None:
    if (SERVER / "undo").is_dir():
        print("undo: done already")
        return
    mv("server/undo.py", "server/undo/recorder.py")
    text = read("server/undo/recorder.py")
    header = text[: text.index("# --- ID ranges")]
    doc_end = header.index('"""', 3) + 3
    imports = header[doc_end : header.index("\nlog = ")]
    text, ranges = cut(text, "# --- ID ranges", "# --- steps and stacks")
    text, stacks = cut(text, "# --- steps and stacks", "_ROOT_TYPES")
    text, actions = cut(text, "# --- the room pipeline side", "# --- the extension")
    text, ext = cut(text, "# --- the extension", None)
    ext = re.sub(r"__all__ = \[[^\]]*\]", '__all__ = ["Undo"]', ext)
    siblings = {"ranges", "stacks", "recorder", "actions", "extension"}

    def module(name: str, doc: str, body: str, extra: str) -> None:
        path = f"server/undo/{name}.py"
        head = imports.strip()
        if extra and "\nif TYPE_CHECKING:" in head:
            head = head.replace("\nif TYPE_CHECKING:", f"{extra}\n\nif TYPE_CHECKING:", 1)
            extra = ""
        write(path, f'"""{doc}"""\n\n{head}\n{extra}\n\n\n{body.strip()}\n')
        relative_up(path, siblings)

    module("ranges", "Sets of Yjs item IDs as sorted, disjoint ranges per client (an IdSet),\n"
           "and the arithmetic undo needs on them.", ranges, "")  # fmt: skip
    module(
        "stacks",
        "Undo steps and each actor's undo and redo stacks, as persisted in snapshot meta.",
        stacks,
        "from .ranges import Ranges, decode_ranges, encode_ranges",
    )
    module("actions", "Undo, redo and closing a step on a live room, as server changes.",
           actions, "from .recorder import MARK, REDO, UNDO, RoomUndo\n\n"
           'log = logging.getLogger("palimpsest.undo")')  # fmt: skip
    module("extension", "Undo as an extension: the recorder fed by the room's hooks, persisted"
           " in snapshot\nmeta, and the websocket operations and HTTP routes.", ext,
           "from .actions import close_group, perform\n"
           "from .recorder import META_KEY, REDO, UNDO, RoomUndo")  # fmt: skip
    recorder = text.replace(
        "\nlog = logging",
        "from .ranges import Ranges, decode_ranges, encode_ranges, intersect,"
        " size, subtract, union, union_into\nfrom .stacks import Stacks, Step\n\nlog = logging",
        1,
    )
    recorder = recorder.rstrip() + (
        '\n\n\n__all__ = ["MARK", "META_KEY", "REDO", "UNDO", "RoomUndo", "infer_root_types"]\n'
    )
    write("server/undo/recorder.py", recorder)
    relative_up("server/undo/recorder.py", siblings)
    write(
        "server/undo/__init__.py",
        '"""Per-user, selective, server-side undo and redo (see recorder.py for how).\n\n'
        "``ranges``: ID sets; ``stacks``: steps and stacks; ``recorder``: what each change\n"
        "did, per actor, in a live room; ``actions``: undo, redo, close a step;\n"
        '``extension``: the hooks, operations and routes."""\n\n'
        "from __future__ import annotations\n\n"
        "from .actions import close_group, perform, state_of\n"
        "from .extension import Undo\n"
        "from .recorder import MARK, META_KEY, REDO, UNDO, RoomUndo\n"
        "from .stacks import Stacks, Step\n\n"
        '__all__ = ["MARK", "META_KEY", "REDO", "UNDO", "RoomUndo", "Stacks", "Step", "Undo",\n'
        '           "close_group", "perform", "state_of"]\n',
    )
    for f in py_files(OUTSIDE):
        edit(f, lambda t: t.replace(
            "from palimpsest.undo import Step, _normalize, _runs, union_into",
            "from palimpsest.undo.ranges import _normalize, union_into\n"
            "from palimpsest.undo.stacks import Step, _runs"))  # fmt: skip
    ruff_fix("server/undo")
    add_package("palimpsest.undo")
    print("undo: done")


# --- cli/ --------------------------------------------------------------------------------


def cli() -> None:
    if (SERVER / "cli").is_dir():
        print("cli: done already")
        return
    mv("server/cli.py", "server/cli/__init__.py")
    # named after their commands: `migrate`/`copy`, `token`
    moved = {"serve": "cli_serve", "admin": "cli_admin", "copy": "cli_store",
             "token": "cli_tokens"}  # fmt: skip
    for new, old in moved.items():
        mv(f"server/{old}.py", f"server/cli/{new}.py")
    for path in ["server/cli/__init__.py", *(f"server/cli/{n}.py" for n in moved)]:
        relative_up(path, set())
        edit(path, lambda t: re.sub(r"^from \.\.cli import", "from . import", t, flags=re.M))
    rename_modules({f"palimpsest.{old}": f"palimpsest.cli.{new}" for new, old in moved.items()},
                   py_files(OUTSIDE))  # fmt: skip

    def explicit(t: str) -> str:
        t = re.sub(r"from \.\.? import cli_admin, cli_serve, cli_store, cli_tokens",
                   "from . import admin, copy, serve, token", t)  # fmt: skip
        for new, old in moved.items():
            t = t.replace(f"        {old},  #", f"        {new},  #")
        return t

    edit("server/cli/__init__.py", explicit)
    ruff_fix("server/cli")
    add_package("palimpsest.cli")
    print("cli: done")


# --- auth/ and limits.py ---------------------------------------------------------------------


def move_name(text: str, source: str, name: str, new_module: str) -> str:
    """`from SOURCE import a, NAME, b` -> `from SOURCE import a, b` + `from NEW import NAME`."""

    def fix(m: re.Match[str]) -> str:
        indent, module, names = m.group(1), m.group(2), [n.strip() for n in m.group(3).split(",")]
        if module != source or name not in names:
            return m.group(0)
        rest = [n for n in names if n != name]
        out = f"{indent}from {new_module} import {name}"
        return out if not rest else f"{indent}from {module} import {', '.join(rest)}\n{out}"

    return re.sub(r"^([ \t]*)from ([\w.]+) import ([\w, ]+)$", fix, text, flags=re.M)


def auth() -> None:
    if (SERVER / "auth").is_dir():
        print("auth: done already")
        return
    mv("server/auth.py", "server/auth/identity.py")
    mv("server/tokens.py", "server/auth/tokens.py")
    relative_up("server/auth/identity.py", {"identity", "tokens", "open"})
    text = read("server/auth/tokens.py")
    text, limits = cut(text, "# --- limits", "__all__ = [")
    text, opened = cut(text, "class OpenAccess(Extension):", "def identity_from_claims")
    text = text.replace("from .auth import", "from .identity import")
    text = re.sub(r'\n    "(Limits|OpenAccess)",', "", text)
    write("server/auth/tokens.py", text)
    relative_up("server/auth/tokens.py", {"identity", "tokens", "open"})
    header = text[: text.index("log = logging")]
    body_imports = header[header.index('"""', 3) + 3 :]
    write("server/auth/open.py", '"""Open development mode: whoever ?user= names, every right."""'
          + body_imports + "from .tokens import OPEN_MODE_WARNING\n\n"
          + 'log = logging.getLogger("palimpsest.auth")\n\n\n' + opened.rstrip()
          + '\n\n\n__all__ = ["OpenAccess"]\n')  # fmt: skip
    relative_up("server/auth/open.py", {"identity", "tokens", "open"})
    limits = limits.split("\n", 1)[1].lstrip()  # the section's marker line
    limits_imports = body_imports.replace("from ..", "from .").replace(
        "from .identity", "from .auth"
    )
    if (SERVER / "limits.py").exists():
        # a limits module exists (the primitives): the extension joins them, and its
        # bounded-JSON reader moves out, since the wire format (protocol.py, which the
        # client imports) uses it and must not import the extension interface
        split_bounded_json()
        existing = read("server/limits.py")
        head_end = existing.index('"""', 3) + 3
        own = re.sub(r"^from \.limits import .*\n", "", limits_imports, flags=re.M)
        if "\nlog = " not in existing:
            own = own.rstrip() + "\nimport logging\n"
            limits = 'log = logging.getLogger("palimpsest.limits")\n\n\n' + limits
        existing = existing[:head_end] + own + existing[head_end:]
        existing = existing.replace(
            "__all__ = [", limits.rstrip() + '\n\n\n__all__ = [\n    "Limits",', 1
        )
        write("server/limits.py", existing)
    else:
        write("server/limits.py", '"""The limits that protect a server on the open internet:'
              ' websockets per client\naddress and the size of documents (an extension)."""'
              + limits_imports
              + '\nlog = logging.getLogger("palimpsest.limits")\n\n\n' + limits.rstrip()
              + '\n\n\n__all__ = ["Limits"]\n')  # fmt: skip
    write(
        "server/auth/__init__.py",
        '"""Who is asking and what they may do. ``identity``: identities and the one\n'
        "authorization rule; ``tokens``: signed tokens (JWT); ``open``: open development\n"
        'mode."""\n\n'
        "from __future__ import annotations\n\n"
        "from .identity import RANK, ROLES, Identity, authorize, may_open, open_identity\n\n"
        '__all__ = ["RANK", "ROLES", "Identity", "authorize", "may_open", "open_identity"]\n',
    )
    for f in py_files(["server"]):
        if "auth" in f.relative_to(SERVER).parts[:1]:
            continue
        edit(f, lambda t: re.sub(r"from (\.+)tokens import", r"from \1auth.tokens import", t))
    rename_modules({"palimpsest.tokens": "palimpsest.auth.tokens"}, py_files(OUTSIDE))
    for f in [*py_files(["server"]), *py_files(OUTSIDE)]:

        def names_move(t: str) -> str:
            for p in ("palimpsest.", ".", ".."):
                t = move_name(t, f"{p}auth.tokens", "OpenAccess", f"{p}auth.open")
                t = move_name(t, f"{p}auth.tokens", "Limits", f"{p}limits")
            return t

        edit(f, names_move)
    ruff_fix("server/auth", "server/limits.py", "server/features.py", "tests")
    add_package("palimpsest.auth")
    print("auth: done")


def split_bounded_json() -> None:
    text = read("server/limits.py")
    if "def loads_bounded" not in text:
        return
    text, part = cut(text, "#: nesting depth of a JSON value", "class ")
    write("server/limits.py", text)
    write(
        "server/bounded_json.py",
        '"""JSON from clients, read without letting it exhaust the stack or make answers\n'
        'invalid (extension messages, awareness states, HTTP bodies)."""\n\n'
        "from __future__ import annotations\n\nimport json\nimport re\nfrom typing import Any\n\n"
        + part.rstrip()
        + '\n\n\n__all__ = ["MAX_JSON_DEPTH", "json_depth", "loads_bounded"]\n',
    )
    for f in [*py_files(["server"]), *py_files(OUTSIDE)]:

        def fix(t: str) -> str:
            for name in ("loads_bounded", "json_depth", "MAX_JSON_DEPTH"):
                for p in ("palimpsest.", ".", ".."):
                    t = move_name(t, f"{p}limits", name, f"{p}bounded_json")
            return t

        edit(f, fix)
    edit(
        "server/limits.py",
        lambda t: re.sub(r'\n    "(MAX_JSON_DEPTH|json_depth|loads_bounded)",', "", t),
    )
    ruff_fix("server/limits.py", "server/bounded_json.py")


STEPS = {"names": names, "history": history, "undo": undo, "cli": cli, "auth": auth}

if __name__ == "__main__":
    if len(sys.argv) < 2 or any(a not in STEPS for a in sys.argv[1:]):
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(STEPS)}}} ...")
    for step in sys.argv[1:]:
        STEPS[step]()
