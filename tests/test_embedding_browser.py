"""The editor page of Palimpsest mounted at /collab inside examples/notes_app.py, in
Chromium: logging in through the app's own form, editing, history, undo, all through
URLs relative to the mount point."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Browser, expect  # noqa: E402
from test_browser import browser, editor_text, eventually  # noqa: E402, F401 (browser: the fixture)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def notes_app(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = open(tmp_path / "app.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "notes_app.py"), "--port", str(port),
         "--db", str(tmp_path / "app.db"), "--store", f"sqlite:///{tmp_path / 'collab.db'}"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            with urllib.request.urlopen(f"{base}/login", timeout=2) as r:
                return r.status == 200

        eventually(up, what="the example app listens")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def copy_of(base: str, doc: str, session: str) -> dict[str, object] | None:
    """The app's copy of `doc`, asked with a session (the app's route needs a login)."""
    request = urllib.request.Request(f"{base}/copies/{doc}", headers={"Cookie": session})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError:
        return None


def test_the_page_works_mounted_inside_an_app(notes_app: str, browser: Browser) -> None:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{notes_app}/login")
    page.locator("input[name=user]").fill("grace")
    page.locator("input[name=password]").fill("hopper")
    page.locator("button").click()
    page.get_by_text("Edit the notes").click()
    expect(page).to_have_url(f"{notes_app}/collab/?doc=notes&user=grace")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=15_000)
    page.locator(".cm-content").click()
    page.keyboard.type("from the browser")
    session = "; ".join(f"{c['name']}={c['value']}" for c in ctx.cookies(notes_app))
    eventually(
        lambda: (copy_of(notes_app, "notes", session) or {}).get("text") == "from the browser",
        what="the app's plain-text copy",
    )
    # the page's HTTP API calls go under the mount point, with the session cookie
    events = page.evaluate("() => window.palimpsest.api.events('notes')")
    assert events["events"] and {e["actor"] for e in events["events"]} == {"grace"}
    # server-side undo over the websocket, then the page's home lists the document
    page.locator("#undo-btn").click()
    eventually(lambda: editor_text(page) == "", what="undo in the page")
    page.goto(f"{notes_app}/collab/")
    expect(page.locator('#doc-rows tr[data-doc="notes"]')).to_be_visible()
    assert not errors, errors
    ctx.close()
