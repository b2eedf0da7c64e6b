"""The editor page of Palimpsest mounted at /collab inside examples/notes_app.py, in
Chromium: logging in through the app's own form, editing, history, undo, all through
URLs relative to the mount point."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Browser, expect  # noqa: E402
from serverproc import ServerProcess  # noqa: E402
from test_browser import browser, editor_text, eventually  # noqa: E402, F401 (browser: the fixture)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _answering(proc: subprocess.Popen[bytes], url: str, what: str) -> Iterator[None]:
    """Wait until `url` answers 200 (`what` names the wait), then stop `proc` after."""
    try:

        def up() -> bool:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)

        eventually(up, what=what)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


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
        with _answering(proc, f"{base}/login", "the example app listens"):
            yield base
    finally:
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


def test_the_page_does_not_ask_a_signed_in_user_for_a_name(
    notes_app: str,
    browser: Browser,  # noqa: F811
) -> None:
    """The app signed grace in (its cookie session, its own authenticate): the page,
    opened without ?user=, asks the server who she is (GET api/me) instead of "What
    should we call you?", and her edits are hers."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{notes_app}/login")
    page.locator("input[name=user]").fill("grace")
    page.locator("input[name=password]").fill("hopper")
    page.locator("button").click()
    page.goto(f"{notes_app}/collab/?doc=signed")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=15_000)
    expect(page.locator("#user-label")).to_have_text("grace")
    assert not page.locator("#name-dialog").evaluate("d => d.open")
    page.locator(".cm-content").click()
    page.keyboard.type("no name asked")
    eventually(lambda: editor_text(page) == "no name asked", what="the typing")
    events = eventually(
        lambda: page.evaluate("() => window.palimpsest.api.events('signed')")["events"],
        what="the events",
    )
    assert {e["actor"] for e in events} == {"grace"}
    assert not errors, errors
    ctx.close()


#: nginx in front of `palimpsest serve --root-path /collab`, as docs/operations.md has it
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  log_format no_query '$remote_addr - [$time_local] "$request_method $uri" $status '
                      '$body_bytes_sent $request_time';
  access_log {dir}/access.log no_query;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port};
    location /collab/ {{
      proxy_pass http://127.0.0.1:{upstream}/;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_read_timeout 3600s;
    }}
  }}
}}
"""


@pytest.fixture
def behind_nginx(tmp_path: Path) -> Iterator[str]:
    """`palimpsest serve --root-path /collab` behind a real nginx that serves it under
    /collab/ (and strips the prefix); yields the proxy's URL."""
    nginx = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if nginx is None:
        # scripts/test installs it: a missing nginx is a broken set-up, not a pass
        pytest.fail("nginx not found (apt-get install nginx-light)")
    conf = tmp_path / "nginx"
    conf.mkdir()
    port = _free_port()
    with ServerProcess(tmp_path / "srv", extra_args=["--root-path", "/collab"]) as srv:
        (conf / "nginx.conf").write_text(NGINX_CONF.format(dir=conf, port=port, upstream=srv.port))
        proc = subprocess.Popen(
            [nginx, "-c", str(conf / "nginx.conf"), "-p", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}/collab"
        with _answering(proc, f"{base}/healthz", "nginx passes requests on"):
            yield base

            # the access log as docs/operations.md sets it: paths without their query
            # string, where a websocket URL carries its token (a websocket's own line is
            # written only when it ends, which the page's may not have yet: a request
            # with a query string that ends at once stands for it)
            def healthz_lines() -> int:
                return (conf / "access.log").read_text().count("GET /collab/healthz")

            before = healthz_lines()
            with urllib.request.urlopen(f"{base}/healthz?token=SECRET-IN-URL", timeout=10):
                pass
            eventually(lambda: healthz_lines() > before, what="the request's access-log line")
        logged = (conf / "access.log").read_text()
        assert "SECRET-IN-URL" not in logged and "?" not in logged, logged


def test_the_page_works_behind_a_reverse_proxy_under_a_path(
    behind_nginx: str,
    browser: Browser,  # noqa: F811
) -> None:
    """Behind nginx's `location /collab/` the page came with `<base href="/">`, so its
    script (/static/app.js) and websocket went to the proxy's root and the page never
    ran. With `serve --root-path /collab` the page's URLs are under the prefix."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    page = ctx.new_page()
    errors: list[str] = []
    failed: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"{behind_nginx}/?doc=proxied&user=ann")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=15_000)
    page.locator(".cm-content").click()
    page.keyboard.type("through the proxy")
    eventually(lambda: editor_text(page) == "through the proxy", what="typed in the page")
    # the page's HTTP API calls go under the prefix too, and the edit is in the log
    events = page.evaluate("() => window.palimpsest.api.events('proxied')")
    assert events["events"] and {e["actor"] for e in events["events"]} == {"ann"}
    assert not errors and not failed, (errors, failed)
    ctx.close()
