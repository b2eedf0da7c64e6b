"""The changefeed in a real browser: Chromium's own EventSource follows a document's
stream, and after the server restarts it reconnects by itself with Last-Event-ID and
gets exactly the events it had not seen."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from serverproc import REPO_ROOT, ServerProcess
from test_browser import browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.browser


def edit(srv: ServerProcess, doc: str, text: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "palimpsest", "edit", doc, "-", "--url", srv.http_url],
        input=text, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def wait_for(page: Page, expr: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expr)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{expr} still false after {timeout}s")
        time.sleep(0.05)


def test_eventsource_resumes_after_a_restart(tmp_path: Path, browser: Browser) -> None:  # noqa: F811
    with ServerProcess(tmp_path) as srv:
        edit(srv, "notes", "one")
        edit(srv, "notes", "one two")
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            page.goto(srv.http_url + "/")
            page.evaluate("""() => {
                window.got = []; window.opens = 0;
                const es = new EventSource('api/docs/notes/events/stream?updates=false');
                es.onopen = () => { window.opens += 1; };
                es.onmessage = (m) => {
                    const ev = JSON.parse(m.data);
                    window.got.push([Number(m.lastEventId), ev.seq, ev.doc]);
                };
            }""")
            wait_for(page, "window.got.length >= 2")
            srv.restart()  # SIGTERM ends the stream; the browser reconnects by itself
            edit(srv, "notes", "one two three")
            edit(srv, "notes", "one two three four")
            heads = page.evaluate("fetch('api/docs/notes/events?limit=1000').then(r => r.json())")
            n = len(heads["events"])
            wait_for(page, f"window.got.length >= {n}")
            time.sleep(0.5)  # anything repeated would arrive now
            got = page.evaluate("window.got")
            opens = page.evaluate("window.opens")
        finally:
            ctx.close()
    assert [g[1] for g in got] == list(range(1, n + 1))
    assert all(g[0] == g[1] and g[2] == "notes" for g in got)
    assert opens >= 2
