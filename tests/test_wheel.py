"""What the sdist and the wheel built from the repository hold, and what a server
installed from the wheel serves. A field tester installed a built wheel outside the
repository and ran it from cwd=/: `/` said "The page is not built" and
/static/palimpsest.js was a 404, because the wheel held only the Python packages
(static/ is at the repository's root, and app.py looked for it next to the package);
the sdist had no LICENSE, and not the files its tests read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
from serverproc import REPO_ROOT, ServerProcess

PAGE = ("index.html", "app.js", "palimpsest.js", "style.css")


def tracked() -> list[str]:
    """The repository's files: tracked, or new and not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return [name for name in out.split("\0") if name and (REPO_ROOT / name).is_file()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist, and the wheel built from it (python -m build: what a packager runs), from
    the repository's files copied away: no build/ left over from an earlier build counts."""
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    for name in tracked():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, src / name)
    out = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        check=True, capture_output=True, timeout=170,
    )  # fmt: skip
    return next(out.glob("palimpsest-*.tar.gz")), next(out.glob("palimpsest-*.whl"))


@pytest.fixture(scope="module")
def wheel(dist: tuple[Path, Path]) -> Path:
    return dist[1]


@pytest.mark.slow
def test_the_wheel_holds_the_page_and_the_licence(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta).decode()
    assert {f"palimpsest/static/{f}" for f in PAGE} <= names, sorted(names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    assert "License-Expression: MIT" in metadata


@pytest.mark.slow
def test_the_sdist_holds_what_its_tests_need(dist: tuple[Path, Path]) -> None:
    """The licence, the README and docs, and every file of tests/ and of what they read
    (the traces, the page and its sources, the benchmarks test_lint type-checks)."""
    sdist, _ = dist
    with tarfile.open(sdist) as t:
        top = t.getnames()[0].split("/")[0]
        names = {n.removeprefix(f"{top}/") for n in t.getnames()}
    wanted = {"LICENSE", "README.md", "pyproject.toml"} | {
        name for name in tracked()
        if name.split("/")[0] in ("docs", "tests", "data", "static", "web", "bench", "examples",
                                  "scripts", "server", "client")
    }  # fmt: skip
    assert not wanted - names, sorted(wanted - names)


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
