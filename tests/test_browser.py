"""End-to-end tests of the browser page: Debian's Chromium driven by Playwright,
against the real server (a subprocess on a free port with its own SQLite file).

Each simulated person gets their own browser context (own localStorage, own
websocket), as two people on two machines would. Tests wait on conditions
(Playwright's auto-retrying `expect`, or `eventually` below), never on fixed sleeps.

Screenshots are written to build/screenshots/ (or $PALIMPSEST_SCREENSHOTS), never into
the tree: `scripts/screenshots` runs the two tests that take them and copies them to docs/.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from pycrdt import Array, Map, XmlElement, XmlFragment, XmlText
from serverproc import ServerProcess

from palimpsest.client import connect

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("PALIMPSEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS_DIR = Path(
    os.environ.get(
        "PALIMPSEST_SCREENSHOTS", Path(__file__).resolve().parent.parent / "build" / "screenshots"
    )
)
TIMEOUT_MS = 15_000

expect.set_options(timeout=TIMEOUT_MS)


# ---------------------------------------------------------------- helpers


def eventually(check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns a truthy value (returned) or time runs out."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, OSError, ValueError, KeyError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        time.sleep(0.05)


class Http:
    """The server's JSON API, as the test sees it (standard library only)."""

    def __init__(self, base: str, user: str = "tester") -> None:
        self.base = base
        self.user = user

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({**params, "user": self.user})
        with urllib.request.urlopen(f"{self.base}{path}?{query}", timeout=10) as r:
            return json.loads(r.read())

    def doc_head(self, doc: str) -> int:
        for d in self.get("/api/docs")["docs"]:
            if d["doc"] == doc:
                return int(d["head"])
        return 0

    def content_at(self, doc: str, seq: int | str) -> str:
        v = self.get(f"/api/docs/{urllib.parse.quote(doc)}/versions/{seq}")
        root = v["roots"].get("content")
        return str(root["value"]) if root else ""

    def events(self, doc: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.get(f"/api/docs/{urllib.parse.quote(doc)}/events", after=after, limit=500)
            out.extend(page["events"])
            if page.get("next_after") is None:
                return out
            after = page["next_after"]


def editor_text(page: Page) -> str:
    """The editor's text as CodeMirror holds it (lines joined by newlines)."""
    text = page.evaluate("() => window.palimpsest?.session.view.state.doc.toString() ?? null")
    assert text is not None, "no editor on this page (yet)"
    return str(text)


def expect_text(page: Page, text: str) -> None:
    try:
        eventually(lambda: editor_text(page) == text, what=f"editor text == {text!r}")
    except AssertionError as e:
        raise AssertionError(f"{e}; the editor has {editor_text(page)!r}") from None


def open_doc(context: BrowserContext, base: str, doc: str, user: str, extra: str = "") -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{base}/?doc={urllib.parse.quote(doc)}&user={urllib.parse.quote(user)}{extra}")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    return page


def type_at_end(page: Page, text: str) -> None:
    page.locator(".cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.type(text)


def server_undo_ops(page: Page) -> list[str]:
    """The extension operations the server announced in its answer to `hello`."""
    hello = page.evaluate("() => window.palimpsest.session.undo.hello")
    return list((hello or {}).get("ops") or [])


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        # scripts/test installs it: a missing browser is a broken set-up, not a pass
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("browser")) as srv:
        yield srv


# ---------------------------------------------------------------- tests


def test_page_lists_documents_and_opens_one(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    ctx = people()
    page = open_doc(ctx, server.http_url, doc_name, "alice")
    type_at_end(page, "listed")
    http = Http(server.http_url)
    eventually(lambda: http.doc_head(doc_name) > 0, what="the document is on the server")

    home = ctx.new_page()
    home.goto(f"{server.http_url}/")
    row = home.locator(f'#doc-rows tr[data-doc="{doc_name}"]')
    expect(row).to_be_visible()
    # create/open by name from the form
    home.locator("#open-name").fill(f"{doc_name}-new")
    home.locator("#open-form button[type=submit]").click()
    expect(home).to_have_url(re.compile(rf"\?doc={re.escape(doc_name)}-new$"))
    expect(home.locator("#doc-name")).to_have_text(f"{doc_name}-new")
    expect(home.locator("#status")).to_have_attribute("data-state", "connected")
    # opening an existing one from the list shows its text
    home.goto(f"{server.http_url}/")
    home.locator(f'#doc-rows tr[data-doc="{doc_name}"] a').click()
    expect(home).to_have_url(re.compile(rf"\?doc={re.escape(doc_name)}$"))
    expect_text(home, "listed")


def test_name_is_asked_once_and_remembered(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    ctx = people()
    page = ctx.new_page()
    page.goto(f"{server.http_url}/?doc={doc_name}")
    dialog = page.locator("#name-dialog")
    expect(dialog).to_be_visible()
    page.locator("#name-input").fill("dora")
    page.locator("#name-form button[type=submit]").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#user-label")).to_have_text("dora")
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#name-dialog")).not_to_be_visible()
    expect(page.locator("#user-label")).to_have_text("dora")
    awareness_user = page.evaluate(
        "() => window.palimpsest.provider.awareness.getLocalState().user.name"
    )
    assert awareness_user == "dora"


def test_initials_are_whole_characters_emoji_flags_and_accents(
    server: ServerProcess, people: Any
) -> None:
    """The avatar's initials took UTF-16 units: "👩🏽‍💻 dev" showed a lone surrogate
    (drawn as �) and "D", a flag lost half of itself, a decomposed "Á" its accent."""
    doc = "initials"
    coder = open_doc(people(), server.http_url, doc, "👩🏽‍💻 dev")
    expect(coder.locator("#user-avatar")).to_have_text("👩🏽‍💻D")
    flag = open_doc(people(), server.http_url, doc, "🇺🇦 Олена")
    expect(flag.locator("#user-avatar")).to_have_text("🇺🇦О")
    nfd = unicodedata.normalize("NFD", "Ávila João")
    accent = open_doc(people(), server.http_url, doc, nfd)
    expect(accent.locator("#user-avatar")).to_have_text("ÁJ")
    # the presence bar draws everyone here with the same function
    chips = coder.locator("#presence .avatar span[aria-hidden=true]")
    expect(chips).to_have_count(3)
    assert sorted(chips.all_inner_texts()) == sorted(["👩🏽‍💻D", "🇺🇦О", "ÁJ"])
    for page in (coder, flag, accent):
        text = page.locator("#user-avatar").inner_text()
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text), text
        assert not page.errors  # type: ignore[attr-defined]


def test_two_pages_see_each_others_text_and_cursors(server: ServerProcess, people: Any) -> None:
    doc = "field-notes"
    alice = open_doc(people(), server.http_url, doc, "alice")
    bob = open_doc(people(), server.http_url, doc, "bob")

    para1 = (
        "A palimpsest is a page written over again, on which every earlier layer "
        "can still be read.\n\n"
    )
    para2 = "Bob adds this paragraph from another browser, and sees Alice's cursor as she types."
    type_at_end(alice, para1)
    expect_text(bob, para1)
    type_at_end(bob, para2)
    expect_text(alice, para1 + para2)

    # remote carets with the other person's name, and presence avatars
    expect(bob.locator(".cm-ySelectionCaret", has_text="alice")).to_be_visible()
    expect(alice.locator(".cm-ySelectionCaret", has_text="bob")).to_be_visible()
    expect(alice.locator('#presence .avatar[data-user="bob"]')).to_be_visible()
    expect(bob.locator('#presence .avatar[data-user="alice"]')).to_be_visible()
    # everybody sees an author in the same colour
    alice_caret = bob.locator(".cm-ySelectionCaret", has_text="alice")
    alice_avatar = alice.locator("#user-avatar")
    assert alice_caret.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    ) == alice_avatar.evaluate("e => getComputedStyle(e).backgroundColor")
    # a caret follows its owner's typing
    alice.locator(".cm-content").click()
    alice.keyboard.press("Control+Home")
    expect(
        bob.locator(".cm-line").first.locator(".cm-ySelectionCaret", has_text="alice")
    ).to_be_visible()

    # the server has it all: a fresh page (no shared state) loads the same text
    carol = open_doc(people(), server.http_url, doc, "carol")
    expect_text(carol, para1 + para2)
    expect(alice.locator('#presence .avatar[data-user="carol"]')).to_be_visible()
    carol.close()
    expect(alice.locator('#presence .avatar[data-user="carol"]')).to_have_count(0)

    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    alice.locator(".cm-content").click()
    alice.keyboard.press("Control+End")
    expect(
        bob.locator(".cm-line").last.locator(".cm-ySelectionCaret", has_text="alice")
    ).to_be_visible()
    bob.screenshot(path=str(SHOTS_DIR / "editor.png"))
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]


def test_undo_in_one_page_reverts_only_its_own_typing(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    alice = open_doc(people(), server.http_url, doc_name, "alice")
    bob = open_doc(people(), server.http_url, doc_name, "bob")
    eventually(
        lambda: alice.evaluate("() => window.palimpsest.session.undo.hello"),
        what="the server's answer to hello",
    )
    assert {"undo", "redo"} <= set(server_undo_ops(alice)), server_undo_ops(alice)

    type_at_end(alice, "alpha ")
    expect_text(bob, "alpha ")
    type_at_end(bob, "beta")
    expect_text(alice, "alpha beta")

    # the Undo button: alice's words go, bob's stay, in both pages
    alice.locator("#undo-btn").click()
    expect_text(alice, "beta")
    expect_text(bob, "beta")

    # redo with the keyboard shortcut
    alice.locator(".cm-content").click()
    alice.keyboard.press("Control+y")
    expect_text(alice, "alpha beta")
    expect_text(bob, "alpha beta")

    # Ctrl+Z in bob's page undoes bob's typing only
    bob.locator(".cm-content").click()
    bob.keyboard.press("Control+z")
    expect_text(bob, "alpha ")
    expect_text(alice, "alpha ")

    # nothing left to undo for bob: his Undo button is disabled, and Ctrl+Z gives a clear
    # message, text unchanged
    expect(bob.locator("#undo-btn")).to_be_disabled()
    bob.keyboard.press("Control+z")
    expect(bob.locator(".toast")).to_contain_text(re.compile("nothing to undo", re.I))
    assert editor_text(bob) == "alpha "

    # the log tells who did what
    http = Http(server.http_url)
    kinds = eventually(
        lambda: (
            [(e["actor"], e["kind"]) for e in http.events(doc_name) if e["kind"] != "edit"] or None
        ),
        what="undo/redo events",
    )
    assert ("alice", "undo") in kinds and ("alice", "redo") in kinds and ("bob", "undo") in kinds


def test_undo_and_redo_buttons_follow_the_users_stacks(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A new user on a fresh document had Undo and Redo enabled with nothing to undo or
    redo (a click answered "nothing to undo"). The buttons now start as the server's
    hello says, follow each undo's and redo's answer (can_undo / can_redo) and the
    user's own typing."""
    page = open_doc(people(), server.http_url, doc_name, "newcomer")
    undo, redo = page.locator("#undo-btn"), page.locator("#redo-btn")
    eventually(
        lambda: page.evaluate("() => window.palimpsest.session.undo.hello"),
        what="the server's answer to hello",
    )
    expect(undo).to_be_disabled()
    expect(redo).to_be_disabled()

    type_at_end(page, "first")
    expect(undo).to_be_enabled()
    expect(redo).to_be_disabled()
    undo.click()
    expect_text(page, "")
    expect(undo).to_be_disabled()  # the one step undone
    expect(redo).to_be_enabled()
    redo.click()
    expect_text(page, "first")
    expect(undo).to_be_enabled()
    expect(redo).to_be_disabled()
    undo.click()
    expect(redo).to_be_enabled()
    page.keyboard.type("other")  # typing drops the redo, on the server and here
    expect_text(page, "other")
    expect(undo).to_be_enabled()
    expect(redo).to_be_disabled()

    # a reload (or another tab) starts from the server's stacks
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(undo).to_be_enabled()
    expect(redo).to_be_disabled()
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_history_panel_lists_previews_and_restores(server: ServerProcess, people: Any) -> None:
    doc_name = "launch-notes"
    http = Http(server.http_url)
    alice = open_doc(people(), server.http_url, doc_name, "alice")
    bob = open_doc(people(), server.http_url, doc_name, "bob")

    first = "The quick brown fox jumps over the lazy dog."
    type_at_end(alice, first)
    expect_text(bob, first)
    first_seq = eventually(
        lambda: (s := http.doc_head(doc_name)) and http.content_at(doc_name, s) == first and s,
        what="the first draft on the server",
    )

    # bob rewrites a word and adds a sentence; alice adds one too
    bob.locator(".cm-content").click()
    bob.keyboard.press("Control+End")
    for _ in range(len("lazy dog.")):
        bob.keyboard.press("Shift+ArrowLeft")
    bob.keyboard.type("sleeping cat.")
    type_at_end(bob, " It did not wake up.")
    expect_text(alice, "The quick brown fox jumps over the sleeping cat. It did not wake up.")
    type_at_end(alice, " The end.")
    final = "The quick brown fox jumps over the sleeping cat. It did not wake up. The end."
    expect_text(alice, final)
    expect_text(bob, final)
    eventually(
        lambda: http.content_at(doc_name, http.doc_head(doc_name)) == final,
        what="the final text on the server",
    )

    # the panel lists sessions and events: who, when, what kind
    alice.locator("#history-btn").click()
    panel = alice.locator("#history")
    expect(panel).to_be_visible()
    expect(panel.locator(".session").first).to_be_visible()
    expect(panel.locator('.session[data-actor="bob"]')).not_to_have_count(0)
    expect(panel.locator('.session[data-actor="alice"]')).not_to_have_count(0)
    newest_event = panel.locator(".event").first
    expect(newest_event).to_have_attribute("data-actor", "alice")
    expect(newest_event.locator(".kind")).to_have_text("edit")
    expect(newest_event.locator(".when")).not_to_have_text("")

    # the slider previews any version read-only
    head = http.doc_head(doc_name)
    slider = alice.locator("#scrub")
    expect(slider).to_have_attribute("max", str(head))
    slider.fill(str(first_seq))
    preview = alice.locator("#preview")
    expect(preview).to_be_visible()
    expect(preview).to_have_attribute("data-seq", str(first_seq))
    expect(alice.locator("#preview-body")).to_have_text(first)
    expect(alice.locator("#editor")).to_be_hidden()

    # diff against the current version, with authors and their colours
    alice.locator('#preview-modes [data-mode="diff"]').click()
    body = alice.locator("#preview-body")
    expect(body.locator('del[data-actor="bob"]')).to_have_text("lazy dog.")
    expect(body.locator('ins[data-actor="bob"]')).to_have_text("sleeping cat. It did not wake up.")
    expect(body.locator('ins[data-actor="alice"]')).to_have_text(" The end.")
    expect(body).to_have_text(re.compile(r"^The quick brown fox jumps over the "))
    expect(alice.locator("#preview-legend .author-chip")).to_have_count(2)
    expect(alice.locator("#preview-legend")).to_contain_text(re.compile(r"characters(?!null)"))
    expect(alice.locator("#preview-legend")).not_to_contain_text("null")

    # blame of the previewed version: all alice's at that point
    alice.locator('#preview-modes [data-mode="blame"]').click()
    expect(body.locator(".blame-run").first).to_be_visible()
    actors = body.locator(".blame-run").evaluate_all(
        "els => [...new Set(els.map(e => e.dataset.actor))]"
    )
    assert actors == ["alice"]
    expect(body).to_have_text(first)

    # named versions
    alice.locator("#tag-btn").click()
    alice.locator("#tag-dialog-input").fill("first draft")
    alice.locator("#tag-dialog-form button[type=submit]").click()
    alice.locator('.tabs [data-tab="tags"]').click()
    expect(alice.locator('.tag-item[data-name="first draft"]')).to_have_attribute(
        "data-seq", str(first_seq)
    )
    alice.locator('.tabs [data-tab="timeline"]').click()

    alice.locator('#preview-modes [data-mode="diff"]').click()
    expect(body.locator('ins[data-actor="alice"]')).to_have_text(" The end.")
    for close in alice.locator(".toast .toast-close").all():
        close.click()
    expect(alice.locator(".toast")).to_have_count(0)
    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=str(SHOTS_DIR / "history.png"))

    # restore this version: a new forward event, seen by everybody. It takes out what bob
    # wrote since, so the page asks first, and says so after
    alice.locator("#restore-btn").click()
    expect(alice.locator("#ask-text")).to_have_text(
        "This removes 33 characters written by bob since that version. Restore?"
    )
    alice.locator("#ask-yes").click()
    expect(alice.locator(".toast", has_text="Restored version")).to_contain_text(
        "It removed 33 characters by bob; Undo brings them back"
    )
    expect(alice.locator("#editor")).to_be_visible()
    expect_text(alice, first)
    expect_text(bob, first)
    expect(panel.locator('.event[data-kind="restore"]').first).to_be_visible()
    restore_events = [e for e in http.events(doc_name) if e["kind"] == "restore"]
    assert len(restore_events) == 1 and restore_events[0]["actor"] == "alice"
    assert http.content_at(doc_name, restore_events[0]["seq"]) == first
    # the restore is undoable like any edit
    alice.locator("#undo-btn").click()
    expect_text(alice, final)
    expect_text(bob, final)
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]


def test_reload_keeps_text_history_and_undo(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    http = Http(server.http_url)
    alice = open_doc(people(), server.http_url, doc_name, "alice")
    bob = open_doc(people(), server.http_url, doc_name, "bob")
    type_at_end(bob, "kept ")
    expect_text(alice, "kept ")
    type_at_end(alice, "mine")
    expect_text(bob, "kept mine")
    eventually(
        lambda: http.content_at(doc_name, http.doc_head(doc_name)) == "kept mine",
        what="the text on the server",
    )
    head = http.doc_head(doc_name)

    for page in (alice, bob):
        page.reload()
        expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        expect_text(page, "kept mine")

    # history survives the reload
    alice.locator("#history-btn").click()
    expect(alice.locator("#scrub")).to_have_attribute("max", str(head))
    expect(alice.locator('#history .session[data-actor="bob"]')).not_to_have_count(0)

    # and so does alice's undo stack: it lives on the server, not in the tab
    alice.locator("#undo-btn").click()
    expect_text(alice, "kept ")
    expect_text(bob, "kept ")
    # a brand-new tab of alice's redoes it
    alice2 = open_doc(people(), server.http_url, doc_name, "alice")
    alice2.locator("#redo-btn").click()
    expect_text(bob, "kept mine")
    expect_text(alice, "kept mine")


def test_status_shows_offline_edits_pending_and_delivers_them(
    browser: Browser, tmp_path: Path, doc_name: str
) -> None:
    srv = ServerProcess(tmp_path)
    with srv:
        ctx = browser.new_context()
        try:
            page = open_doc(ctx, srv.http_url, doc_name, "alice")
            pill = page.locator("#status")
            expect(pill).to_have_text("Connected")
            type_at_end(page, "online. ")
            http = Http(srv.http_url)
            eventually(lambda: http.doc_head(doc_name) > 0, what="the first edit on the server")

            srv.stop()
            expect(pill).to_have_attribute("data-state", re.compile("reconnecting|connecting"))
            type_at_end(page, "offline")
            expect(pill).to_have_attribute("data-state", "offline")
            expect(pill).to_contain_text("pending")

            srv.start()  # same port, same database
            expect(pill).to_have_attribute("data-state", "connected", timeout=30_000)
            expect(pill).to_have_text("Connected")
            # a fresh page, with nothing of the first one's state, gets the offline edits
            other = open_doc(ctx, srv.http_url, doc_name, "bob")
            expect_text(other, "online. offline")
        finally:
            ctx.close()


def test_a_refused_document_says_why_and_stops_retrying(server: ServerProcess, people: Any) -> None:
    page = people().new_page()
    page.goto(f"{server.http_url}/?doc={urllib.parse.quote('no spaces allowed')}&user=alice")
    pill = page.locator("#status")
    expect(pill).to_have_attribute("data-state", "refused")
    expect(page.locator("#banner")).to_contain_text("not allowed")
    expect(page.locator(".cm-content")).to_have_attribute("contenteditable", "false")
    expect(page.locator(".cm-placeholder")).to_have_count(0)  # (not "Opening the document…")
    # y-websocket would retry forever; the page stops on a 44xx close
    assert page.evaluate("() => window.palimpsest.provider.shouldConnect") is False


def test_a_line_moved_keeps_its_writer_in_blame(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """CodeMirror moves a line down (Alt+ArrowDown) by moving the line below it up:
    deleting it and inserting it above, one Yjs transaction. Blame still names Bob for
    the line he wrote, though Alice's keystroke moved it."""
    alice = open_doc(people(), server.http_url, doc_name, "alice")
    bob = open_doc(people(), server.http_url, doc_name, "bob")
    type_at_end(alice, "first line")
    alice.keyboard.press("Enter")
    expect_text(bob, "first line\n")
    type_at_end(bob, "second line")
    expect_text(alice, "first line\nsecond line")
    alice.locator(".cm-content").click()
    alice.keyboard.press("Control+Home")  # (on her own line)
    alice.keyboard.press("Alt+ArrowDown")
    expect_text(bob, "second line\nfirst line")
    http = Http(server.http_url)
    path = f"/api/docs/{urllib.parse.quote(doc_name)}/blame"

    def blame() -> list[tuple[str, str]]:
        runs = http.get(path, root="content", join="actor")["roots"]["content"]["runs"]
        return [(r["text"], r["actor"]) for r in runs]

    eventually(lambda: "".join(t for t, _ in blame()) == "second line\nfirst line",
               what="the move logged")  # fmt: skip
    # (CodeMirror moves "\nsecond line" to "second line\n": alice's newline moves too)
    assert blame() == [("second line", "bob"), ("\nfirst line", "alice")]
    # the page's diff since before the move shows the line as moved by alice, from
    # where it was to where it is, apart from what was typed, and the legend counts it
    head = Http(server.http_url).doc_head(doc_name)
    alice.goto(f"{server.http_url}/?doc={doc_name}&user=alice&history=1&version={head - 1}")
    alice.click('#preview-modes [data-mode="diff"]')
    body = alice.locator("#preview-body")
    expect(body.locator("ins.moved")).to_have_text("second line")
    expect(body.locator("ins.moved")).to_have_attribute("title", re.compile("^moved here by alice"))
    expect(body.locator("ins:not(.moved)")).to_have_count(0)
    expect(body.locator("del.moved")).to_have_text("second line")  # where it was
    expect(body.locator("del.moved")).to_have_attribute("title", re.compile("^moved away by alice"))
    expect(alice.locator("#preview-legend")).to_contain_text("+12 −12 characters (12 moved)")
    assert not alice.errors and not bob.errors  # type: ignore[attr-defined]


def test_a_document_nested_thousands_deep_is_drawn_without_breaking_the_page(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A hostile client's texts nested 5,000 deep, then typed around (Node's Yjs: pycrdt
    cannot nest a text in a text): the page drew such a document by recursion and threw
    "Maximum call stack size exceeded" in the live view and in every preview. It now
    draws a hundred levels and a "…" below them."""
    node_dir = Path(__file__).resolve().parent / "node"
    out = subprocess.run(["node", "lexical_session.mjs", "deep", "5000"], cwd=node_dir,
                         check=True, capture_output=True, timeout=120).stdout  # fmt: skip
    updates = [bytes.fromhex(u) for _, u in json.loads(out)]

    async def push() -> None:  # (one client id: one user)
        async with connect(server.ws_url, doc_name, user="eve") as s:
            for update in updates:
                s.doc.apply_update(update)
            await s.flush()

    pushing = threading.Thread(target=asyncio.run, args=(push(),))
    pushing.start()
    pushing.join(60)
    page = open_doc(people(), server.http_url, doc_name, "carol", "&history=1&version=head")
    expect(page.locator("#live")).to_contain_text("more")
    expect(page.locator("#live .x-cut")).to_have_count(1)
    expect(page.locator("#preview-body .x-cut")).to_have_count(1)
    expect(page.locator("#preview-body")).to_contain_text("typed")
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_a_slate_document_is_drawn_block_by_block(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """@slate-yjs keeps each element as a Y.XmlText typed by its `type` attribute (Lexical:
    `__type`), a list's items embedded in the list (tests/node/block_docs.mjs writes
    such a document with Node's Yjs): the page read only `__type` and drew every
    paragraph, the heading and the list as one line, live and in the history."""
    node_dir = Path(__file__).resolve().parent / "node"
    out = subprocess.run(["node", "block_docs.mjs"], cwd=node_dir,
                         check=True, capture_output=True, timeout=120).stdout  # fmt: skip
    update = bytes.fromhex(json.loads(out)["slate"])

    async def push() -> None:
        async with connect(server.ws_url, doc_name, user="eve") as s:
            s.doc.apply_update(update)
            await s.flush()

    pushing = threading.Thread(target=asyncio.run, args=(push(),))
    pushing.start()
    pushing.join(60)
    page = open_doc(people(), server.http_url, doc_name, "carol", "&history=1&version=head")
    for where in ("#live", "#preview-body"):
        view = page.locator(where)
        expect(view.locator('h1[data-element="heading-one"]')).to_have_text("Title of the doc")
        expect(view.locator('p[data-element="paragraph"]')).to_have_text(
            ["First bold here.", "Last."]
        )
        expect(view.locator('p[data-element="paragraph"] strong')).to_have_text("bold")
        expect(view.locator('ul[data-element="bulleted-list"] > li')).to_have_text(["one", "two"])
    page.locator('#preview-modes [data-mode="blame"]').click()
    body = page.locator("#preview-body")
    expect(body.locator("h1")).to_have_text("Title of the doc")
    expect(body.locator("ul > li")).to_have_text(["one", "two"])
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_names_of_object_members_are_drawn_like_any_other(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """Elements named `constructor`, `__proto__`, `toString`, `hasOwnProperty`, a Lexical
    paragraph of `__type` `constructor`, a root named `toString`: the page looked names up
    on plain objects (`BLOCKS[name] || 'div'`), found Object.prototype's members, handed a
    function to createElement and drew nothing of the document, live or in its history
    (the status stayed "Syncing…"). Names are looked up in Maps and as own properties."""
    names = ["constructor", "__proto__", "toString", "hasOwnProperty"]
    http = Http(server.http_url)

    async def seed() -> None:
        async with connect(server.ws_url, doc_name, user="mallory") as s:
            tree = s.doc.get("prosemirror", type=XmlFragment)
            tree.children.append(XmlElement("paragraph", {}, [XmlText("before")]))
            for name in names:
                tree.children.append(XmlElement(name, {}, [XmlText(f"in {name}")]))
            lexical = tree.children.append(XmlText("lexical constructor"))
            lexical.attributes["__type"] = "constructor"
            await s.flush()

    async def add_root() -> None:
        async with connect(server.ws_url, doc_name, user="mallory") as s:
            root = s.doc.get("toString", type=XmlFragment)
            root.children.append(XmlElement("paragraph", {}, [XmlText("a root named toString")]))
            await s.flush()

    for step in (seed, add_root):  # (a thread of its own: Playwright's loop runs here)
        writing = threading.Thread(target=asyncio.run, args=(step(),))
        writing.start()
        writing.join(30)
        if step is seed:
            before_root = http.doc_head(doc_name)

    page = open_doc(people(), server.http_url, doc_name, "carol")
    live = page.locator("#live")
    for text in [*(f"in {name}" for name in names), "lexical constructor", "a root named toString"]:
        expect(live).to_contain_text(text)
    for name in names:
        expect(live.locator(f'div[data-element="{name}"]').first).to_have_text(f"in {name}")
    expect(live.locator('div[data-element="constructor"]')).to_have_text(
        ["in constructor", "lexical constructor"]
    )

    past = open_doc(people(), server.http_url, doc_name, "carol", f"&version={before_root}")
    expect(past.locator("#preview-body")).to_contain_text("in hasOwnProperty")
    for mode in ("blame", "diff"):
        past.locator(f'#preview-modes [data-mode="{mode}"]').click()
        body = past.locator("#preview-body")
        expect(body.locator('section[data-root="prosemirror"]')).to_contain_text("in toString")
        expect(body.locator('section[data-root="toString"]')).to_contain_text(
            "(empty)" if mode == "blame" else "a root named toString"
        )
    assert not page.errors and not past.errors, (page.errors, past.errors)  # type: ignore[attr-defined]


def test_a_board_of_maps_in_an_array_is_shown_with_its_other_roots(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """Excalidraw keeps its shapes as `getArray('elements')` of Y.Maps. The page took a
    root holding only shared types for an XML tree, drew the maps as nothing and listed
    only the document's other map; a document of maps and arrays alone got an empty
    editor ("Start writing") whose first keystroke would add a text root to the board.
    Both are shown as they are now, as JSON, open, and kept current."""

    async def write(doc: str, board: bool) -> None:
        async with connect(server.ws_url, doc, user="alice") as s:
            if board:
                elements = s.doc.get("elements", type=Array)
                for i in range(3):
                    elements.append(Map({"id": f"rect{i}", "type": "rectangle", "x": 10 * i}))
            state = s.doc.get("appState", type=Map)
            state["viewBackgroundColor"] = "#fafafa"
            await s.flush()

    for doc, board in ((doc_name, True), (doc_name + "-map", False)):
        writing = threading.Thread(target=asyncio.run, args=(write(doc, board),))
        writing.start()
        writing.join(30)

    page = open_doc(people(), server.http_url, doc_name, "carol")
    shown = page.locator("#live details.other-roots[open]")
    expect(shown).to_contain_text("elements (array)")
    expect(shown).to_contain_text('"id": "rect2"')
    expect(shown).to_contain_text("appState (map)")
    assert page.evaluate("() => window.palimpsest.session.root") is None

    async def move() -> None:
        async with connect(server.ws_url, doc_name, user="bob") as s:
            s.doc.get("elements", type=Array)[1]["x"] = 999
            await s.flush()

    moving = threading.Thread(target=asyncio.run, args=(move(),))
    moving.start()
    moving.join(30)
    expect(shown).to_contain_text('"x": 999')

    maps = open_doc(people(), server.http_url, doc_name + "-map", "carol")
    expect(maps.locator("#live details.other-roots[open]")).to_contain_text("appState (map)")
    assert maps.evaluate("() => window.palimpsest.session.root") is None
    assert not maps.evaluate("() => window.palimpsest.ydoc.share.has('content')")

    past = open_doc(people(), server.http_url, doc_name, "carol", "&version=1")
    expect(past.locator("#preview-extra")).to_contain_text("elements (array)")
    assert not page.errors and not maps.errors and not past.errors  # type: ignore[attr-defined]
