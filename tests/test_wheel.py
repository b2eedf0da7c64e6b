"""What a wheel built from the repository holds, and what a server installed from it
serves. A field tester installed a built wheel outside the repository and ran it from
cwd=/: `/` said "The page is not built" and /static/palimpsest.js was a 404, because
the wheel held only the Python packages (static/ is at the repository's root, and
app.py looked for it next to the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from serverproc import REPO_ROOT, ServerProcess

PAGE = ("index.html", "app.js", "palimpsest.js", "style.css")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built as a packager would, from the repository's files (tracked, or new
    and not ignored) copied away: no build/ left over from an earlier build counts."""
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, src / name)
    out = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True, capture_output=True, timeout=170,
    )  # fmt: skip
    return next(out.glob("palimpsest-*.whl"))


@pytest.mark.slow
def test_the_wheel_holds_the_page(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"palimpsest/static/{f}" for f in PAGE} <= names, sorted(names)


@pytest.mark.slow
def test_a_server_installed_from_the_wheel_serves_the_page(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    # the installed copy, not the repository's (its dependencies: this environment's)
    env = {"PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import palimpsest.app as a; print(a.STATIC_DIR)"],
        cwd="/", env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where) == target / "palimpsest" / "static"
    with ServerProcess(tmp_path / "srv", env=env, cwd="/") as srv:
        with httpx.Client(base_url=srv.http_url, timeout=10) as h:
            page = h.get("/")
            assert page.status_code == 200
            assert "not built" not in page.text and "<html" in page.text.lower()
            js = h.get("/static/palimpsest.js")
            assert js.status_code == 200 and len(js.content) > 1000
    assert "the page is not there" not in srv.log_text()


async def test_a_server_without_the_page_says_so_at_start(tmp_path: Path) -> None:
    env = {"PALIMPSEST_STATIC": str(tmp_path / "nothing")}
    async with ServerProcess(tmp_path, env=env) as srv:
        async with httpx.AsyncClient(base_url=srv.http_url, timeout=10) as h:
            assert "not built" in (await h.get("/")).text
    assert f"the page is not there (no {tmp_path / 'nothing' / 'index.html'})" in srv.log_text()
