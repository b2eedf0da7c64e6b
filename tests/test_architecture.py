"""One way to attach a feature (docs/extending.md): the server's code holds none of the
old ones, so that a feature added later cannot quietly bring one back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parent.parent / "server"

#: (what, pattern): each a way features attached before the extension interface
FORBIDDEN = [
    ("a registry keyed by backend", r"weakref\.Weak\w+Dictionary"),
    ("string keys in room.extra", r"\.extra\["),
    ("module scanning", r"\bpkgutil\b|importlib\.import_module|find_spec"),
    ("setattr on the backend", r"setattr\(\s*backend"),
    ("probing the backend or store", r"(?:hasattr|getattr)\(\s*(?:self\.)?(?:backend|store)\b"),
    ("callback lists", r"\bhooks\.\w+\.append|\.on_\w+\.append\("),
    ("install(backend) wiring", r"^def install\(backend"),
]


def sources() -> list[Path]:
    # the package's own __init__ imports its public names on first use: not discovery
    return sorted(p for p in SERVER.rglob("*.py") if p != SERVER / "__init__.py")


@pytest.mark.parametrize(("what", "pattern"), FORBIDDEN, ids=[w for w, _ in FORBIDDEN])
def test_no_other_way_to_attach_a_feature(what: str, pattern: str) -> None:
    found = [
        f"{path.relative_to(SERVER.parent)}:{n}: {line.strip()}"
        for path in sources()
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(pattern, line, flags=re.M) and not line.lstrip().startswith("#")
    ]
    assert not found, f"{what}:\n" + "\n".join(found)


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = "_by_backend: weakref.WeakKeyDictionary[Backend, X] = weakref.WeakKeyDictionary()"
    assert re.search(FORBIDDEN[0][1], bad)
    assert re.search(FORBIDDEN[4][1], 'fanout: Any = getattr(backend, "fanout", None)')
    assert re.search(FORBIDDEN[1][1], 'room.extra["undo"] = state')
