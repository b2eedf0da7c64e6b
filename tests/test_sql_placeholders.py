"""SQLite use that every Python we support accepts, checked in the sources (a static
check: 3.11 never shows either problem).

No statement uses numbered placeholders (``?1``, ``?2``, ...): Python 3.12.0-3.12.3
(gh-117995) warn ``DeprecationWarning: Binding 1 ('?1') is a named parameter, but you
supplied a sequence`` for them with a tuple of values, which is an error under
``-W error`` and failed most of the suite there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ``?`` then a digit, inside a string literal's text (a `?` of a URI such as
#: ``file:x?mode=ro`` is followed by a letter)
NUMBERED = re.compile(r"\?\d")


def test_no_numbered_sqlite_placeholders() -> None:
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for d in ("server", "client", "bench", "tests")
        for p in sorted((ROOT / d).rglob("*.py"))
        if p != Path(__file__).resolve() and ".peers" not in p.parts  # (bench/run's venv)
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if NUMBERED.search(line)
    ]
    assert found == [], "\n".join(found)


#: ``with sqlite3.connect(path) as conn:`` ends the transaction but leaves the connection
#: open: Python 3.13 reports each as ``ResourceWarning: unclosed database`` (an error
#: under the suite's filterwarnings). tests/sqlitehelp.sqlite_conn commits and closes.
WITH_CONNECT = re.compile(r"^\s*(async\s+)?with\s+sqlite3\.connect\(")


def test_no_sqlite_connection_is_left_open_by_a_with_statement() -> None:
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for d in ("server", "client", "bench", "tests")
        for p in sorted((ROOT / d).rglob("*.py"))
        if ".peers" not in p.parts  # (bench/run's venv of the peers)
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if WITH_CONNECT.search(line)
    ]
    assert found == [], "\n".join(found)
