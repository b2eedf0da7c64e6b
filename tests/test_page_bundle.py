"""The page's JavaScript is committed as one bundle (static/app.js), so that running the
server needs no Node.js. It must be what its sources build: a change to web/src/ whose
bundle was not rebuilt would pass every browser test against the old page and ship it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"


def test_the_committed_bundle_is_what_the_sources_build(tmp_path: Path) -> None:
    if shutil.which("npx") is None:
        pytest.fail("Node.js/npx not installed")
    if not (WEB / "node_modules" / "esbuild").is_dir():
        pytest.fail("npm packages missing: ./scripts/test runs npm ci in web/")
    out = tmp_path / "app.js"
    subprocess.run([str(WEB / "build.sh"), "--no-install", str(out)], check=True, timeout=120,
                   capture_output=True)  # fmt: skip
    built = out.read_bytes()
    committed = (ROOT / "static" / "app.js").read_bytes()
    assert built == committed, (
        f"static/app.js ({len(committed)} bytes) is not what web/src builds ({len(built)} "
        "bytes): run web/build.sh and commit static/app.js"
    )
