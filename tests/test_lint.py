"""The code's own checks, run as part of the suite so that a clean clone sees what a
developer's editor would: ruff's lint rules and formatting (Python files; the docs' code
blocks are prose), and ``mypy --strict`` over ``server/`` and ``client/`` (pyproject's
``[tool.mypy]``) and over the benchmark scripts, ``bench/*.py``. Both tools come with the
``test`` extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), "RUFF_CACHE_DIR": str(tmp / "ruff")},
    )


def test_ruff_lint_and_format(tmp_path: Path) -> None:
    lint = run("ruff", "check", "--no-cache", ".", tmp=tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # --extend-exclude, not --exclude: that one replaces ruff's own list (.venv,
    # node_modules, ...), and only .gitignore would then keep them out, in a git checkout
    fmt = run(
        "ruff", "format", "--check", "--no-cache", "--extend-exclude", "*.md", ".", tmp=tmp_path
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    out = run("mypy", "--cache-dir", str(tmp_path / "mypy"), tmp=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout


def test_mypy_strict_bench(tmp_path: Path) -> None:
    # bench/ is scripts that import each other as top-level modules (`import bench as B`),
    # not a package: mypy is given the files, as `mypy bench/*.py` would, and pyproject's
    # [tool.mypy] still applies (strict; missing imports are Any: the bench's own venv has
    # pycrdt-websocket and matplotlib, the project's need not)
    scripts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "bench").glob("*.py"))
    out = run("mypy", "--cache-dir", str(tmp_path / "mypy"), *scripts, tmp=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Success: no issues found in {len(scripts)} source files" in out.stdout
