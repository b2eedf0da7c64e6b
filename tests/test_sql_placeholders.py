"""No SQLite statement uses numbered placeholders (``?1``, ``?2``, ...): Python 3.12.0-3.12.3
(gh-117995) warns ``DeprecationWarning: Binding 1 ('?1') is a named parameter, but you
supplied a sequence`` for them with a tuple of values, which is an error under
``-W error`` and fails most of the suite there. Only a static check can show it on
3.11 and on a later 3.12, so this reads the sources."""

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
        if p != Path(__file__).resolve()
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if NUMBERED.search(line)
    ]
    assert found == [], "\n".join(found)
