"""The browser page as a field tester found it: keyboard use (Tab, focus), a phone's
width, the history panel while others edit, the naming dialog, the server's error
messages, documents with no events or deleted, and deep links to versions. Debian's
Chromium driven by Playwright against the real server, as in tests/test_browser.py
(whose fixtures and helpers these tests share)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from editor_shapes import IMAGE_URL, write_blocknote, write_milkdown
from playwright.sync_api import Page, expect
from pycrdt import Doc, Map, XmlElement, XmlFragment, XmlText
from pycrdt import Text as YText
from serverproc import REPO_ROOT, ServerProcess
from test_browser import (  # noqa: F401 (browser: the fixture)
    Http,
    browser,
    editor_text,
    eventually,
    expect_text,
    open_doc,
    type_at_end,
)

from palimpsest.auth.tokens import mint
from palimpsest.client import connect

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("browser-page")) as srv:
        yield srv


def call(base: str, method: str, path: str, body: Any = None, user: str = "tester") -> Any:
    """The server's JSON API with any method: (status, answer)."""
    data = None if body is None else json.dumps(body).encode()
    sep = "&" if "?" in path else "?"
    request = urllib.request.Request(
        f"{base}{path}{sep}user={urllib.parse.quote(user)}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def focused(page: Page) -> str:
    """What has the keyboard focus: "editor", "#id", or a tag and class."""
    return str(
        page.evaluate(
            """() => {
              const a = document.activeElement
              if (!a || a === document.body) return 'body'
              if (a.closest('.cm-editor')) return 'editor'
              return a.id ? '#' + a.id : a.tagName.toLowerCase() + '.' + a.className
            }"""
        )
    )


def wait_for_head(http: Http, doc: str, text: str) -> int:
    return int(
        eventually(
            lambda: (s := http.doc_head(doc)) and http.content_at(doc, s) == text and s,
            what=f"{text!r} on the server",
        )
    )


def close_toasts(page: Page) -> None:
    for close in page.locator(".toast .toast-close").all():
        close.click()
    expect(page.locator(".toast")).to_have_count(0)


# ---------------------------------------------------------------- document list


def write_text(base: str, doc: str, text: str) -> None:
    """Append a Yjs update that writes `text` into the document's `content` (the admin
    route the bulk import uses: a document a request, no websocket)."""
    ydoc = Doc()
    ydoc["content"] = YText(text)
    request = urllib.request.Request(
        f"{base}/api/docs/{urllib.parse.quote(doc)}/updates?user=tester",
        data=ydoc.get_update(),
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    for _ in range(30):
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200, r.status
                return
        except urllib.error.HTTPError as e:
            # over the HTTP write rate (50 a second per address, bursts of 100): the
            # server says to retry in a second, as a bulk import does
            if e.code != 429:
                raise
            time.sleep(1)
    raise AssertionError(f"{doc}: still 429 after 30 s")


def listed(page: Page) -> list[str]:
    return list(page.eval_on_selector_all("#doc-rows tr", "rs => rs.map(r => r.dataset.doc)"))


def test_the_list_shows_the_last_edited_first_and_pages_through_the_rest(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A field tester's store of 20,003 documents: the page asked for the first 1,000 by
    name, sorted those by time, and left out the document just edited (late in name
    order) without a word. The server now sorts (sort=updated) and pages (next); the page
    shows one page, says more follow, and "Show more" brings the rest, each once."""
    late = f"zz-{doc_name}"
    write_text(server.http_url, late, "old")
    for i in range(130):
        write_text(server.http_url, f"{doc_name}-{i:03}", f"doc {i}")
    write_text(server.http_url, late, "edited last")  # the oldest, edited again

    # every document the server lists, in its order (paged as any client pages)
    http = Http(server.http_url)
    everything: list[str] = []
    after = ""
    while True:
        answer = http.get("/api/docs", sort="updated", limit=1000, after=after)
        everything += [d["doc"] for d in answer["docs"]]
        if answer["next"] is None:
            break
        after = answer["next"]
    assert everything[0] == late and len(everything) > 100

    page = people().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.http_url}/?user=tester")
    rows = page.locator("#doc-rows tr")
    expect(rows).to_have_count(100)
    assert listed(page)[0] == late
    # the list says it is cut short, and how to see the rest
    expect(page.locator("#doc-count")).to_have_text(
        "The 100 most recently edited documents; older ones follow."
    )
    more = page.locator("#doc-more-btn")
    expect(more).to_be_visible()

    clicks = 0
    while more.is_visible():
        before = rows.count()
        more.click()
        clicks += 1
        expect(rows).not_to_have_count(before)
        assert clicks < 10, "Show more never ends"
    expect(page.locator("#doc-count")).to_have_text(f"All {len(everything)} documents.")
    shown = listed(page)
    assert len(shown) == len(set(shown)), "a document listed twice"
    assert shown == everything
    # the last click took the button away: the focus is on the first row it brought
    assert page.evaluate("() => document.activeElement.textContent") == shown[(clicks) * 100]
    assert not errors


# ---------------------------------------------------------------- keyboard


def test_the_editor_has_the_focus_on_load_and_tab_leaves_it(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    page = open_doc(people(), server.http_url, doc_name, "kay")
    # the editor takes the focus once it is editable: typing goes straight in
    eventually(lambda: focused(page) == "editor", what="the focus in the editor")
    page.keyboard.type("Keyboard only.")
    expect_text(page, "Keyboard only.")

    # Tab moves the focus on (here to the history panel's first control) and types
    # nothing into the shared text; Shift+Tab comes back
    page.locator("#history-btn").click()
    expect(page.locator("#history")).to_be_visible()
    page.locator(".cm-content").click()
    page.keyboard.press("End")
    page.keyboard.press("Tab")
    assert focused(page) == "#history-close"
    page.keyboard.press("Shift+Tab")
    assert focused(page) == "editor"
    page.keyboard.press("Home")
    page.keyboard.press("Tab")
    assert focused(page) == "#history-close"
    http = Http(server.http_url)
    wait_for_head(http, doc_name, "Keyboard only.")
    assert editor_text(page) == "Keyboard only."
    assert not page.errors  # type: ignore[attr-defined]


def test_a_deep_link_to_a_version_leaves_the_focus_alone(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """The editor, hidden behind the preview, does not take the focus."""
    alice = open_doc(people(), server.http_url, doc_name, "alice")
    type_at_end(alice, "one")
    http = Http(server.http_url)
    wait_for_head(http, doc_name, "one")
    page = open_doc(people(), server.http_url, doc_name, "kay", "&version=1")
    expect(page.locator("#preview")).to_have_attribute("data-seq", "1")
    eventually(
        lambda: page.evaluate("() => window.palimpsest.session.root") == "content",
        what="the editor bound",
    )
    assert focused(page) != "editor"


# ---------------------------------------------------------------- phone


def test_a_phone_wide_page_does_not_scroll_sideways(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    page = open_doc(people(375, 740), server.http_url, doc_name, "Evelyn")
    type_at_end(page, "The quick brown fox jumps over the lazy dog. " * 6)
    http = Http(server.http_url)
    eventually(lambda: http.doc_head(doc_name) > 20, what="the text on the server")

    def fits() -> None:
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, f"the page is {width} px wide"
        for sel in ("#history-btn", "#undo-btn", "#user-chip", "#status"):
            box = page.locator(sel).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375, (sel, box)

    fits()
    name = page.locator("#doc-name").bounding_box()
    assert name and name["width"] >= 40, name  # shown, with an ellipsis if need be

    page.locator("#history-btn").click()
    expect(page.locator("#history .event").first).to_be_visible()
    fits()
    page.locator("#history .event-row").nth(3).click()
    expect(page.locator("#preview-body")).to_contain_text("quick")
    fits()
    for sel in ("#restore-btn", "#preview-close", "#tag-btn", "#history-close"):
        box = page.locator(sel).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375, (sel, box)
    # the version previewed keeps a fair part of the screen, its left edge on it
    paper = page.locator(".paper").bounding_box()
    preview = page.locator("#preview").bounding_box()
    assert paper and paper["height"] >= 740 / 4, paper
    assert preview and preview["x"] >= 0, preview


# ---------------------------------------------------------------- history panel


def test_the_history_panel_keeps_the_focus_when_someone_edits(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    alice = open_doc(people(), server.http_url, doc_name, "alice")
    bob = open_doc(people(), server.http_url, doc_name, "bob")
    type_at_end(alice, "abcdefgh")
    expect_text(bob, "abcdefgh")
    http = Http(server.http_url)
    wait_for_head(http, doc_name, "abcdefgh")

    alice.locator("#history-btn").click()  # (leaving the editor ends alice's undo group:
    scrub = alice.locator("#scrub")  # one more event, a mark)
    eventually(
        lambda: scrub.get_attribute("max") == str(http.doc_head(doc_name)),
        what="the panel up to date",
    )
    rows = alice.locator('#history .session[data-actor="alice"] .event')
    expect(rows).not_to_have_count(0)
    row = rows.nth(2)
    seq = row.get_attribute("data-seq")
    row.locator(".event-row").focus()

    type_at_end(bob, " and more")
    new_head = wait_for_head(http, doc_name, "abcdefgh and more")
    eventually(lambda: int(scrub.get_attribute("max") or 0) >= new_head, what="the panel redrawn")
    expect(alice.locator('#history .session[data-actor="bob"]')).to_have_count(1)
    assert (
        alice.evaluate("() => document.activeElement.closest('.event')?.dataset.seq ?? null") == seq
    ), focused(alice)
    # and the keyboard goes on from there: Enter previews that version
    alice.keyboard.press("Enter")
    expect(alice.locator("#preview")).to_have_attribute("data-seq", seq or "")

    # a session opened or closed with the keyboard keeps the focus on its head
    head_button = alice.locator('#history .session[data-actor="bob"] .session-head')
    head_button.focus()
    alice.keyboard.press("Enter")
    expect(head_button).to_have_attribute("aria-expanded", "true")
    expect(head_button).to_be_focused()
    alice.keyboard.press("Enter")
    expect(head_button).to_have_attribute("aria-expanded", "false")
    expect(head_button).to_be_focused()
    assert not alice.errors  # type: ignore[attr-defined]


def test_a_name_dialog_closed_with_escape_does_not_name_later(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    page = open_doc(people(), server.http_url, doc_name, "eve")
    posts: list[str] = []
    page.on(
        "request",
        lambda r: (
            posts.append(r.post_data or "") if r.method == "POST" and "/tags" in r.url else None
        ),
    )
    type_at_end(page, "one two")
    http = Http(server.http_url)
    head = wait_for_head(http, doc_name, "one two")
    assert head >= 3

    page.locator("#history-btn").click()
    scrub = page.locator("#scrub")
    eventually(lambda: int(scrub.get_attribute("max") or 0) >= head, what="the panel loaded")
    page.locator("#scrub").fill("1")
    expect(page.locator("#preview")).to_have_attribute("data-seq", "1")
    page.locator("#tag-btn").click()
    expect(page.locator("#tag-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#tag-dialog")).to_be_hidden()
    expect(page.locator("#preview")).to_be_visible()  # (Esc closed the dialog only)

    page.locator("#scrub").fill("2")
    expect(page.locator("#preview")).to_have_attribute("data-seq", "2")
    page.locator("#tag-btn").click()
    page.locator("#tag-dialog-input").fill("chapter-one")
    page.keyboard.press("Enter")
    page.locator('.tabs [data-tab="tags"]').click()
    expect(page.locator('.tag-item[data-name="chapter-one"]')).to_have_attribute("data-seq", "2")
    tags = http.get(f"/api/docs/{doc_name}/tags")["tags"]
    assert [(t["name"], t["seq"]) for t in tags] == [("chapter-one", 2)]
    assert [json.loads(p) for p in posts] == [{"name": "chapter-one", "seq": 2, "move": False}]

    # the cancel button, then the dialog again: one name, on the version shown
    page.locator("#scrub").fill("3")
    expect(page.locator("#preview")).to_have_attribute("data-seq", "3")
    page.locator("#tag-btn").click()
    page.locator("#tag-dialog-cancel").click()
    expect(page.locator("#tag-dialog")).to_be_hidden()
    page.locator("#tag-btn").click()
    page.locator("#tag-dialog-input").fill("three")
    page.locator("#tag-dialog-form button[type=submit]").click()
    expect(page.locator('.tag-item[data-name="three"]')).to_have_attribute("data-seq", "3")
    assert [json.loads(p) for p in posts][1:] == [{"name": "three", "seq": 3, "move": False}]


def test_naming_a_version_with_a_name_in_use_asks_before_moving_it(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A teacher who named a version "before feedback" and later clicked "Name…" again
    with the same name moved the tag without a word, and lost the version it named."""
    page = open_doc(people(), server.http_url, doc_name, "teacher")
    type_at_end(page, "one two")
    http = Http(server.http_url)
    head = wait_for_head(http, doc_name, "one two")
    status, _ = call(
        server.http_url, "POST", f"/api/docs/{doc_name}/tags", {"name": "before feedback", "seq": 2}
    )
    assert status == 201

    def name_version(seq: int) -> None:
        page.locator("#scrub").fill(str(seq))
        expect(page.locator("#preview")).to_have_attribute("data-seq", str(seq))
        page.locator("#tag-btn").click()
        page.locator("#tag-dialog-input").fill("before feedback")
        page.locator("#tag-dialog-form button[type=submit]").click()

    def named() -> list[tuple[str, int]]:
        return [(t["name"], t["seq"]) for t in http.get(f"/api/docs/{doc_name}/tags")["tags"]]

    page.locator("#history-btn").click()
    scrub = page.locator("#scrub")
    eventually(lambda: int(scrub.get_attribute("max") or 0) >= head, what="the panel loaded")
    ask = page.locator("#ask-dialog")
    name_version(head)
    expect(ask).to_be_visible()
    expect(page.locator("#ask-text")).to_have_text(
        f"“before feedback” already names version #2. Move it to #{head}?"
    )
    page.locator("#ask-cancel").click()
    expect(page.locator(".toast", has_text="still names")).to_contain_text(
        "“before feedback” still names version #2"
    )
    assert named() == [("before feedback", 2)]

    name_version(head)
    page.locator("#ask-yes").click()
    expect(page.locator(".toast", has_text="Named version")).to_contain_text(
        f"Named version #{head} “before feedback”"
    )
    assert named() == [("before feedback", head)]
    close_toasts(page)
    posts: list[Any] = []
    page.on(
        "request",
        lambda r: (
            posts.append(r.post_data_json) if r.method == "POST" and "/tags" in r.url else None
        ),
    )
    name_version(head)  # the version it names already: nothing to ask
    expect(page.locator(".toast", has_text="Named version")).to_be_visible()
    expect(ask).to_be_hidden()
    assert posts == [{"name": "before feedback", "seq": head, "move": False}]
    assert named() == [("before feedback", head)]
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_your_name_dialog_can_be_dismissed_after_the_first_time(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    page = people().new_page()
    page.goto(f"{server.http_url}/?doc={doc_name}")
    expect(page.locator("#name-dialog")).to_be_visible()
    page.keyboard.press("Escape")  # the first time a name is needed
    expect(page.locator("#name-dialog")).to_be_visible()
    page.locator("#name-input").fill("dora")
    page.locator("#name-form button[type=submit]").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")

    # later, from the chip: Esc goes back to the page, with the same name
    page.locator("#user-chip").click()
    expect(page.locator("#name-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#name-dialog")).to_be_hidden()
    expect(page.locator("#user-label")).to_have_text("dora")
    assert page.evaluate("() => localStorage.getItem('palimpsest.user')") == "dora"


def test_the_slider_starts_where_a_compacted_history_starts(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """Finding 3b: after `palimpsest compact --before 3` (run while the server serves,
    as an operator may), the history panel's slider starts at version #3, the oldest
    one left, instead of #1 (a 404 "compacted away"); the timeline says where history
    starts, and its sessions, grouped before the compaction, hold only the events left."""
    text = ""
    for i, who in enumerate(["alice", "alice", "bob", "bob", "bob"]):
        text += f"line {i + 1}\n"
        status, answer = call(server.http_url, "PUT", f"/api/docs/{doc_name}/text",
                              {"text": text}, user=who)  # fmt: skip
        assert status == 200 and answer["seq"] == i + 1, answer
    http = Http(server.http_url)
    before = http.get(f"/api/docs/{doc_name}/sessions")  # (grouped now, and kept)
    assert before["base_seq"] == 0
    assert [(s["actor"], s["start_seq"]) for s in before["sessions"]] == [("alice", 1), ("bob", 3)]

    ran = subprocess.run(
        [sys.executable, "-m", "palimpsest", "compact", doc_name, "--before", "3", "--yes",
         "--db", str(server.db_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    after = http.get(f"/api/docs/{doc_name}/sessions")
    assert after["base_seq"] == 3
    assert [(s["actor"], s["start_seq"], s["events"]) for s in after["sessions"]] == [("bob", 4, 2)]
    assert http.get(f"/api/docs/{doc_name}/events")["base_seq"] == 3

    page = open_doc(people(), server.http_url, doc_name, "carol")
    page.locator("#history-btn").click()
    scrub = page.locator("#scrub")
    expect(scrub).to_have_attribute("max", "5")
    expect(scrub).to_have_attribute("min", "3")
    expect(page.locator("#timeline .compacted")).to_have_text(
        "History starts at version #3: the events before it were compacted away."
    )
    scrub.fill("1")  # as far back as it goes: the base
    expect(page.locator("#preview")).to_have_attribute("data-seq", "3")
    expect(page.locator("#scrub-label")).to_have_text("#3 of 5")
    expect(page.locator("#preview-body")).to_contain_text("line 3")
    expect(page.locator("#preview .error")).to_have_count(0)
    scrub.fill("4")
    expect(page.locator("#preview")).to_have_attribute("data-seq", "4")
    expect(page.locator("#preview .error")).to_have_count(0)
    assert not page.errors  # type: ignore[attr-defined]


# ---------------------------------------------------------------- server's answers


def test_errors_show_the_servers_explanation(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    page = open_doc(people(), server.http_url, doc_name, "eve")
    type_at_end(page, "text")
    wait_for_head(Http(server.http_url), doc_name, "text")
    page.locator("#history-btn").click()
    page.locator('.tabs [data-tab="tags"]').click()
    # the server's limit on a name is 64 characters: so are the fields'
    expect(page.locator("#tag-name")).to_have_attribute("maxlength", "64")
    expect(page.locator("#tag-dialog-input")).to_have_attribute("maxlength", "64")
    page.locator("#tag-name").fill("a/b")
    page.locator("#tag-form button[type=submit]").click()
    toast = page.locator(".toast.error")
    expect(toast).to_contain_text("Could not name the version")
    expect(toast).to_contain_text("without '/'")  # the server's detail…
    expect(toast).not_to_contain_text("BadRequest")  # …not its error's class


def test_a_document_with_only_a_name_has_no_edits_yet(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    page = open_doc(people(), server.http_url, doc_name, "eve", "&history=1")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("No edits yet")
    expect(page.locator("#scrub-label")).to_have_text("no versions yet")
    page.locator('.tabs [data-tab="tags"]').click()
    expect(page.locator("#tag-list")).to_have_text("No named versions yet.")
    page.locator('.tabs [data-tab="timeline"]').click()
    for panel in (timeline, page.locator("#tag-list")):
        expect(panel).not_to_contain_text("not available")
        expect(panel).not_to_contain_text("NotFound")

    # the first keystrokes show up
    type_at_end(page, "hi")
    expect(timeline.locator(".event").first).to_be_visible()
    expect(timeline).not_to_contain_text("No edits yet")
    assert not page.errors  # type: ignore[attr-defined]


def test_a_document_deleted_while_open_says_so_in_the_history(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    page = open_doc(people(), server.http_url, doc_name, "wendy", "&history=1")
    type_at_end(page, "doomed text")
    wait_for_head(Http(server.http_url), doc_name, "doomed text")
    expect(page.locator("#timeline .event").first).to_be_visible()

    status, answer = call(server.http_url, "DELETE", f"/api/docs/{doc_name}", user="chief")
    assert status == 200 and answer["deleted"], answer
    expect(page.locator("#status")).to_have_attribute("data-state", "refused")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("This document was deleted")
    expect(timeline).not_to_contain_text("not available")
    expect(page.locator("#scrub-label")).to_have_text("no versions yet")

    # after a reload the connection is accepted (the name is free again): only the
    # server's 410 tells the page it was deleted, not a name never used
    again = open_doc(people(), server.http_url, doc_name, "wendy", "&history=1")
    timeline = again.locator("#timeline")
    expect(timeline).to_contain_text("This document was deleted")
    expect(timeline).to_contain_text("starts a new document of the same name")
    expect(timeline).not_to_contain_text("No edits yet")
    type_at_end(again, "reborn")
    expect(timeline.locator(".event").first).to_be_visible()
    expect(timeline).not_to_contain_text("was deleted")
    assert not again.errors  # type: ignore[attr-defined]


# ---------------------------------------------------------------- previews and deep links


def test_ctrl_z_while_previewing_does_not_undo_the_live_text(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    page = open_doc(people(), server.http_url, doc_name, "eve")
    type_at_end(page, "Important paragraph.")
    http = Http(server.http_url)
    wait_for_head(http, doc_name, "Important paragraph.")
    page.locator("#history-btn").click()
    page.locator("#history .event-row").nth(3).click()
    expect(page.locator("#preview")).to_be_visible()
    page.keyboard.press("Control+z")
    expect(page.locator(".toast")).to_contain_text("go back to it first")
    close_toasts(page)
    page.locator("#undo-btn").click()
    expect(page.locator(".toast")).to_contain_text("go back to it first")
    assert [e["kind"] for e in http.events(doc_name) if e["kind"] in ("undo", "redo")] == []
    assert editor_text(page) == "Important paragraph."

    # back to live, Ctrl+Z undoes as ever
    page.keyboard.press("Escape")
    expect(page.locator("#editor")).to_be_visible()
    page.locator("#history-btn").focus()
    page.keyboard.press("Control+z")
    expect_text(page, "")


def test_an_undo_whose_step_someone_moved_says_so_and_redo_brings_it_back(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """Alice wrote a sentence, then a word (two undo steps); Bob moved her word (deleted
    it and put his copy in its place, as an editor's Enter or a cut and paste does). Her
    undo finds nothing of the word's step left, skips it and undoes the sentence
    (docs/undo.md): the page says so, and its Redo brings the sentence back."""
    sentence, word = "A sentence here.", " alice-word"

    async def write() -> None:
        async with connect(server.ws_url, doc_name, user="alice") as a:
            a.text().insert(0, sentence)
            await a.close_group()
            a.text().insert(len(sentence), word)
            await a.close_group()
            async with connect(server.ws_url, doc_name, user="bob") as b:
                await b.wait_for(lambda: str(b.text()) == sentence + word)
                with b.doc.transaction():
                    t = b.doc.get("content", type=YText)
                    del t[len(sentence) :]
                    t.insert(len(sentence), word)
                await b.flush()
                await a.wait_for(lambda: str(a.text()) == sentence + word)

    writing = threading.Thread(target=asyncio.run, args=(write(),))
    writing.start()
    writing.join(30)
    page = open_doc(people(), server.http_url, doc_name, "alice")
    expect_text(page, sentence + word)
    page.locator("#undo-btn").click()
    expect_text(page, word)
    toast = page.locator(".toast", has_text="moved or removed")
    expect(toast).to_contain_text(
        "Your last change was moved or removed by someone else: undid the one before"
    )
    toast.locator(".toast-action", has_text="Redo").click()
    expect_text(page, sentence + word)
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_an_undo_a_restore_did_already_says_so_and_keeps_the_text(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """Field test s13 on the page: Alice wrote a sentence and deleted its end; Carol
    restored the version with it. Alice's undo finds her deletion done by the restore:
    the page says so, and her text stays as it is (the undo went on to take out her
    typing, the restored sentence with it, and said the step was "moved or removed")."""
    text = "Keep this. Draft sentence."

    async def write() -> None:
        async with connect(server.ws_url, doc_name, user="alice") as a:
            a.text().insert(0, text)
            await a.close_group()
            a.text().delete(len("Keep this."), len(" Draft sentence."))
            await a.close_group()

    writing = threading.Thread(target=asyncio.run, args=(write(),))
    writing.start()
    writing.join(30)
    status, log = call(server.http_url, "GET", f"/api/docs/{doc_name}/events")
    assert status == 200, log
    typed = [e["seq"] for e in log["events"] if e["kind"] == "edit"][0]
    status, restored = call(
        server.http_url, "POST", f"/api/docs/{doc_name}/restore", {"seq": typed}, user="carol"
    )
    assert status == 200 and restored["seq"], restored
    page = open_doc(people(), server.http_url, doc_name, "alice")
    expect_text(page, text)
    page.locator("#undo-btn").click()
    toast = page.locator(".toast", has_text="changed nothing")
    expect(toast).to_contain_text("Undo changed nothing: a restore brought that text back already")
    expect(page.locator(".toast", has_text="moved or removed")).to_have_count(0)
    expect_text(page, text)
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_server_undo_groups_from_the_page_module(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """`ServerUndo.openGroup`/`closeGroup` (static/palimpsest.js): what the page types
    between them, pauses longer than the undo capture time included, is one step; with
    the socket closed they go over HTTP."""
    page = open_doc(people(), server.http_url, doc_name, "gina")
    opened = page.evaluate("() => window.palimpsest.session.undo.openGroup('g-1')")
    assert opened["ok"] is True and opened["group"] == "g-1", opened
    type_at_end(page, "one ")
    page.wait_for_timeout(1200)  # over undo_capture_ms (500): without the group, two steps
    # typed where the caret is: the page's own close on a caret move (an unnamed
    # close_group, which ends the explicit group too) would end the group
    page.keyboard.type("two ")
    closed = page.evaluate("() => window.palimpsest.session.undo.closeGroup('g-1')")
    assert closed["ok"] is True and closed["steps"] == 1, closed
    page.locator("#undo-btn").click()
    expect_text(page, "")

    page.evaluate("() => window.palimpsest.provider.disconnect()")
    expect(page.locator("#status")).not_to_have_attribute("data-state", "connected")
    over_http = page.evaluate(
        """async () => {
          const u = window.palimpsest.session.undo
          return [await u.openGroup('g-2'), await u.closeGroup('g-2')]
        }"""
    )
    assert [r["ok"] for r in over_http] == [True, True], over_http
    assert over_http[0]["group"] == "g-2" and over_http[1]["group"] == "g-2", over_http
    events = Http(server.http_url).events(doc_name)
    marks = [e for e in events if e["kind"] not in ("edit", "undo", "redo")]
    assert len(marks) >= 3, [e["kind"] for e in events]
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def online_then_offline(
    server: ServerProcess, person: Any, doc: str, user: str, offline: str
) -> tuple[Page, Http]:
    """`user`'s page types "online " (one undo step, on the server), then, its socket
    closed, `offline`."""
    page = open_doc(person, server.http_url, doc, user)
    type_at_end(page, "online ")
    http = Http(server.http_url)
    wait_for_head(http, doc, "online ")
    page.evaluate("() => window.palimpsest.session.undo.closeGroup()")
    page.evaluate("() => window.palimpsest.provider.disconnect()")
    expect(page.locator("#status")).not_to_have_attribute("data-state", "connected")
    page.keyboard.type(offline)
    expect_text(page, "online " + offline)
    return page, http


def test_an_undo_asked_for_as_the_socket_opens_undoes_the_offline_typing(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """The page typed online, then offline; as its socket opens again, an undo is asked
    for at once (on `status: connected`, before the provider's sync step 2 carried the
    offline typing). `ServerUndo` waits for the sync, so the server undoes the offline
    typing, not the step before it (which the step 2 arriving after would then have made
    impossible to redo)."""
    page, http = online_then_offline(server, people(), doc_name, "olga", "offline ")
    page.evaluate(
        """() => {
          const { provider, session } = window.palimpsest
          window.undone = null
          const onStatus = ({ status }) => {
            if (status !== 'connected') return
            provider.off('status', onStatus)
            session.undo.undo().then(
              (r) => { window.undone = r }, (e) => { window.undone = String(e) })
          }
          provider.on('status', onStatus)
          provider.connect()
        }"""
    )
    undone = eventually(lambda: page.evaluate("() => window.undone"), what="the undo's answer")
    assert isinstance(undone, dict) and undone["ok"] is True, undone
    assert undone["removed"]["characters"] == len("offline "), undone
    expect_text(page, "online ")
    wait_for_head(http, doc_name, "online ")
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_an_undo_while_the_socket_is_down_with_offline_typing_waits_for_it(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """fteditors: typed online, then with the socket down, then Ctrl-Z: ServerUndo's HTTP
    fallback undid the online words (the server's last step), the offline typing arrived
    after, and the redo was gone. Now the fallback refuses while the doc holds edits the
    server has not seen, saying why; nothing changes; once the socket is back the undo
    takes the offline typing, and redo brings it back. With nothing typed offline, the
    fallback goes over HTTP as before."""
    page, http = online_then_offline(server, people(), doc_name, "pia", "offline")
    refused = page.evaluate(
        "() => window.palimpsest.session.undo.undo().then((r) => r, (e) => String(e))"
    )
    assert isinstance(refused, str) and "undo waits for the connection" in refused, refused
    assert http.content_at(doc_name, http.doc_head(doc_name)) == "online "  # nothing undone
    page.evaluate("() => window.palimpsest.provider.connect()")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    wait_for_head(http, doc_name, "online offline")
    undone = page.evaluate("() => window.palimpsest.session.undo.undo()")
    assert undone["ok"] is True and undone["removed"]["characters"] == len("offline"), undone
    expect_text(page, "online ")
    redone = page.evaluate("() => window.palimpsest.session.undo.redo()")
    assert redone["ok"] is True, redone
    expect_text(page, "online offline")
    # nothing typed while down: the fallback is HTTP, as before
    page.evaluate("() => window.palimpsest.provider.disconnect()")
    expect(page.locator("#status")).not_to_have_attribute("data-state", "connected")
    over_http = page.evaluate("() => window.palimpsest.session.undo.undo()")
    assert over_http["ok"] is True, over_http
    wait_for_head(http, doc_name, "online ")
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_deep_links_by_name_and_bad_ones(server: ServerProcess, people: Any, doc_name: str) -> None:
    alice = open_doc(people(), server.http_url, doc_name, "alice")
    type_at_end(alice, "first")
    http = Http(server.http_url)
    named = wait_for_head(http, doc_name, "first")
    type_at_end(alice, " and second")
    wait_for_head(http, doc_name, "first and second")
    status, _ = call(
        server.http_url, "POST", f"/api/docs/{doc_name}/tags", {"name": "first draft", "seq": named}
    )
    assert status == 201

    page = open_doc(
        people(), server.http_url, doc_name, "eve", "&version=" + urllib.parse.quote("first draft")
    )
    expect(page.locator("#preview-title")).to_have_text(f"“first draft” · version #{named}")
    expect(page.locator("#preview-body")).to_have_text("first")
    expect(page.locator("#scrub")).to_have_value(str(named))
    expect(page.locator("#scrub-label")).to_have_text(re.compile(rf"^#{named} of \d+$"))
    expect(page.locator(f'#timeline .event[data-seq="{named}"]')).to_have_class(
        re.compile("active")
    )
    expect(page.locator("#restore-btn")).to_be_enabled()

    for bad in ("abc", "1.5", "-3"):
        page.goto(f"{server.http_url}/?doc={doc_name}&user=eve&version={urllib.parse.quote(bad)}")
        expect(page.locator("#preview-title")).to_have_text(f"No version “{bad}”")
        body = page.locator("#preview-body")
        head = http.doc_head(doc_name)
        expect(body).to_contain_text(f"“{bad}” is neither a version number (1 to {head})")
        expect(body).not_to_contain_text("#")
        expect(page.locator("#restore-btn")).to_be_disabled()
        expect(page.locator("#tag-btn")).to_be_disabled()
        expect(page.locator("#scrub-label")).not_to_contain_text(bad)


def test_changes_between_two_named_versions_are_shown_in_the_page(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A compliance user asks what changed between "draft-1" and "signed v2": the
    history's "Changes since" only went from a version to the current one, so two named
    versions (or any two) were compared over the API alone. Its "to" list now picks the
    other version: a named one, any version, or the current one again."""
    path = f"/api/docs/{doc_name}/text"
    seqs = []
    writes = [("ann", "Terms.\n"), ("bob", "Terms. Fee 10.\n"), ("cid", "Terms. Fee 12.\n")]
    for user, text in writes:
        status, answer = call(server.http_url, "PUT", path, {"text": text}, user=user)
        assert status == 200, answer
        seqs.append(answer["seq"])
    draft, signed, head = seqs
    for name, seq in (("draft-1", draft), ("signed v2", signed)):
        status, answer = call(
            server.http_url, "POST", f"/api/docs/{doc_name}/tags", {"name": name, "seq": seq}
        )
        assert status == 201, answer

    page = open_doc(people(), server.http_url, doc_name, "eve", "&version=draft-1")
    expect(page.locator("#preview-title")).to_have_text(f"“draft-1” · version #{draft}")
    compare = page.locator("#compare-to")
    expect(compare).to_be_hidden()  # (the text of a version: nothing to compare)
    page.locator("#mode-diff").click()
    body, legend = page.locator("#preview-body"), page.locator("#preview-legend")
    expect(legend).to_contain_text(f"to the current version (#{head})")
    expect(body.locator("ins")).to_have_text([" Fee 1", "2", "."])  # bob's, cid's, bob's

    expect(compare).to_be_visible()
    expect(page.get_by_label("to", exact=True)).to_have_value("")  # labelled: "to"
    compare.select_option(label=f"“signed v2” · #{signed}")
    expect(legend).to_contain_text(f"From #{draft} (“draft-1”) to #{signed} (“signed v2”)")
    expect(body.locator("ins")).to_have_text(" Fee 10.")
    expect(body.locator('ins[data-actor="bob"]')).to_have_count(1)
    expect(body.locator("del")).to_have_count(0)

    # any two versions: from signed v2 to the head, and an older one taken as the start
    page.locator("#tab-tags").click()
    page.locator(f'#tag-list .tag-item[data-seq="{signed}"] button').click()
    compare.select_option(label=f"#{head}")
    expect(legend).to_contain_text(f"From #{signed} (“signed v2”) to #{head}:")
    expect(body.locator("ins")).to_have_text("2")
    expect(body.locator("del")).to_have_text("0")
    compare.select_option(label=f"#{draft}")
    expect(legend).to_contain_text(f"From #{draft} (“draft-1”) to #{signed} (“signed v2”)")
    expect(body.locator("ins")).to_have_text(" Fee 10.")
    compare.select_option(label="the current version")
    expect(legend).to_contain_text(f"From #{signed} (“signed v2”) to the current version")
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_changes_count_characters_not_utf16_units(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    for text in ("a", "a🎉🎉🎉"):
        status, answer = call(
            server.http_url, "PUT", f"/api/docs/{doc_name}/text", {"text": text}, user="wendy"
        )
        assert status == 200, answer
    page = open_doc(people(), server.http_url, doc_name, "eve", "&version=1")
    page.locator('#preview-modes [data-mode="diff"]').click()
    expect(page.locator("#preview-body ins")).to_have_text("🎉🎉🎉")
    expect(page.locator("#preview-legend")).to_contain_text("+3 −0 characters")


def test_an_undo_lists_what_it_reverts_as_ranges(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    page = open_doc(people(), server.http_url, doc_name, "eve")
    type_at_end(page, "abcdef")
    http = Http(server.http_url)
    wait_for_head(http, doc_name, "abcdef")
    page.locator("#undo-btn").click()
    expect_text(page, "")
    undo = eventually(
        lambda: next((e for e in http.events(doc_name) if e["kind"] == "undo"), None),
        what="the undo event",
    )
    reverts = sorted(undo["reverts"])
    assert len(reverts) >= 3 and reverts == list(range(reverts[0], reverts[-1] + 1)), reverts
    page.locator("#history-btn").click()
    row = page.locator(f'#timeline .event[data-seq="{undo["seq"]}"]')
    expect(row.locator(".detail")).to_have_text(f"reverts #{reverts[0]}–#{reverts[-1]}")


def test_a_sessions_count_is_of_the_changes_it_lists(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A field tester's panel said "alice · 7 events · #1–11" over 5 rows: the undo
    marks (an undo step's end) were counted but not listed. It counts what it lists."""
    base = server.http_url
    for text in ("one", "one two", "one two three"):
        status, _ = call(base, "PUT", f"/api/docs/{doc_name}/text", {"text": text}, user="eve")
        assert status == 200, status
        status, closed = call(base, "POST", f"/api/docs/{doc_name}/undo/close", user="eve")
        assert status == 200 and closed["seq"] is not None, closed
    status, sessions = call(base, "GET", f"/api/docs/{doc_name}/sessions")
    assert [(s["events"], s["changes"]) for s in sessions["sessions"]] == [(6, 3)], sessions
    page = open_doc(people(), base, doc_name, "eve", "&history=1")
    session = page.locator("#timeline .session")
    expect(session.locator(".session-meta")).to_have_text("3 changes · #1–6")
    expect(session.locator(".event")).to_have_count(3)
    expect(page.locator("#history-count")).to_have_text("3 changes · 1 session")


def test_an_undo_that_keeps_what_others_typed_in_its_paragraph_says_so(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """Alice pressed Enter in Bob's paragraph (in her Tiptap elsewhere: as y-prosemirror
    does it) and Bob typed "very " in the new paragraph. Undoing the Enter on the page
    puts the tail back in the first paragraph and keeps the new one, which holds Bob's
    words (docs/undo.md, "What others wrote inside what you made stays"; it used to take
    them out with it), and the page says what it kept."""
    line = "The quick brown fox jumps over the lazy dog."

    def paragraphs(s: Any) -> list[str]:
        return [str(p.children[0]) for p in s.doc.get("default", type=XmlFragment).children]

    async def write() -> None:
        async with (
            connect(server.ws_url, doc_name, user="bob") as b,
            connect(server.ws_url, doc_name, user="alice") as a,
        ):
            frag = b.doc.get("default", type=XmlFragment)
            frag.children.append(XmlElement("paragraph", {}, [XmlText(line)]))
            await b.flush()
            await a.wait_for(lambda: paragraphs(a) == [line])
            at = line.index("jumps")
            with a.doc.transaction():
                frag = a.doc.get("default", type=XmlFragment)
                del frag.children[0].children[0][at : len(line)]
                frag.children.insert(1, XmlElement("paragraph", {}, [XmlText(line[at:])]))
            await a.flush()
            await b.wait_for(lambda: len(paragraphs(b)) == 2)
            tail = b.doc.get("default", type=XmlFragment).children[1].children[0]
            tail.insert(str(tail).index("lazy"), "very ")
            await b.flush()
            await a.wait_for(lambda: "very" in paragraphs(a)[1])

    writing = threading.Thread(target=asyncio.run, args=(write(),))
    writing.start()
    writing.join(30)
    page = open_doc(people(), server.http_url, doc_name, "alice")
    expect(page.locator("#live")).to_contain_text("very lazy")
    page.locator("#undo-btn").click()
    toast = page.locator(".toast", has_text="Kept")
    expect(toast).to_contain_text("Kept 5 characters by bob inside what you had made")
    expect(page.locator("#live")).to_contain_text(line)
    expect(page.locator("#live")).to_contain_text("very")
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_a_restore_that_takes_out_what_others_wrote_asks_first(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A teacher brings back a student's deleted paragraph by restoring the version
    before the deletion: that also takes out what classmates wrote since. The page
    restored on one click and said only "Restored version #N"; it now asks first, naming
    who wrote what would go, and its notice after says what went."""
    path = f"/api/docs/{doc_name}/text"
    steps = [
        ("s05", "[s05] I like trees.\n"),
        ("s06", "[s06] My dog is Rex.\n"),
        ("s05", ""),  # s05 deletes their paragraph...
        ("s06", " LATE SENTENCE BY s06.\n"),  # ...s06 and s07 write on
        ("s07", " s07 was here."),
    ]
    text = ""
    for user, more in steps:
        text = text + more if more else text[len("[s05] I like trees.\n") :]
        status, answer = call(server.http_url, "PUT", path, {"text": text}, user=user)
        assert status == 200, answer
        if user == "s06" and not more.startswith(" "):
            version, version_text = answer["seq"], text
    head = answer["seq"]
    http = Http(server.http_url)

    page = open_doc(people(), server.http_url, doc_name, "teacher", f"&version={version}")
    expect(page.locator("#preview-body")).to_have_text(version_text.rstrip("\n"))
    dialog = page.locator("#ask-dialog")
    page.locator("#restore-btn").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Restore version #{version}?")
    expect(dialog).to_contain_text(
        "This removes 23 characters written by s06 and 14 by s07 since that version. Restore?"
    )
    assert focused(page) == "#ask-cancel"  # (Enter alone does not restore)
    page.locator("#ask-cancel").click()
    expect(dialog).to_be_hidden()
    assert http.doc_head(doc_name) == head  # the dry run wrote nothing, nor the cancel
    expect(page.locator("#preview-body")).to_be_visible()  # still on show

    page.locator("#restore-btn").click()
    expect(dialog).to_be_visible()
    page.locator("#ask-yes").click()
    toast = page.locator(".toast", has_text="Restored version")
    expect(toast).to_contain_text(
        f"Restored version #{version} (as event #{head + 1}). It removed 23 characters by s06"
        " and 14 characters by s07; Undo brings them back"
    )
    expect_text(page, version_text)
    assert http.content_at(doc_name, "head") == version_text

    # a restore that takes out nobody else's text is not asked about
    status, answer = call(server.http_url, "PUT", path, {"text": version_text + "mine"}, "teacher")
    assert status == 200, answer
    page.goto(f"{server.http_url}/?doc={doc_name}&user=teacher&version={head + 1}")
    expect(page.locator("#preview-body")).to_have_text(version_text.rstrip("\n"))
    page.locator("#restore-btn").click()
    expect(page.locator(".toast span", has_text="Restored version").last).to_have_text(
        f"Restored version #{head + 1} (as event #{head + 3})"
    )
    expect(dialog).to_be_hidden()
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def test_a_restores_question_gives_each_writers_share_and_an_equal_version_says_so(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A compliance reviewer restores a signed version: alice wrote 611 characters
    since, bob 530. The question said "This removes 1141 characters written by alice and
    1 other", which read as if all were alice's; it now gives each share. A version
    whose text is the current text again is said to be so, with nothing asked nor
    written."""
    path = f"/api/docs/{doc_name}/text"
    signed = "Signed text.\n"
    steps = [("carol", signed), ("alice", "a" * 610 + "\n"), ("bob", "b" * 529 + "\n")]
    text = ""
    for user, more in steps:
        text += more
        status, answer = call(server.http_url, "PUT", path, {"text": text}, user=user)
        assert status == 200, answer
        if user == "carol":
            version = answer["seq"]
    status, would = call(
        server.http_url, "POST", f"/api/docs/{doc_name}/restore?dry_run=true", {"seq": version},
        user="carol",
    )  # fmt: skip
    assert status == 200, would
    assert {(r["user"], r["characters"]) for r in would["removed_others"]} == {
        ("alice", 611), ("bob", 530)
    }, would  # fmt: skip

    page = open_doc(people(), server.http_url, doc_name, "carol", f"&version={version}")
    expect(page.locator("#preview-body")).to_have_text(signed.rstrip("\n"))
    dialog = page.locator("#ask-dialog")
    page.locator("#restore-btn").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(
        "This removes 611 characters written by alice and 530 by bob since that version. Restore?"
    )
    page.locator("#ask-cancel").click()
    expect(dialog).to_be_hidden()

    # the text back as it was at the version (bob's and alice's lines taken out by hand)
    status, answer = call(server.http_url, "PUT", path, {"text": signed}, user="alice")
    assert status == 200, answer
    head = answer["seq"]
    http = Http(server.http_url)
    page.goto(f"{server.http_url}/?doc={doc_name}&user=carol&version={version}")
    expect(page.locator("#preview-body")).to_have_text(signed.rstrip("\n"))
    page.locator("#restore-btn").click()
    expect(page.locator(".toast span", has_text="nothing to restore").last).to_have_text(
        f"Version #{version} is the same as the current text: nothing to restore"
    )
    expect(dialog).to_be_hidden()
    assert http.doc_head(doc_name) == head
    assert not page.errors, page.errors  # type: ignore[attr-defined]


# ---------------------------------------------------------------- line ends


@pytest.mark.parametrize(
    "text",
    [
        "line one\r\nline two\r\nlast no newline",  # Windows line ends
        "line one\rline two\rlast no newline",  # lone CRs (old Mac)
        "crlf\r\nlone cr\rlf\nend",  # all three mixed
    ],
    ids=["crlf", "lone-cr", "mixed"],
)
def test_text_with_carriage_returns_is_edited_where_typed(
    server: ServerProcess, people: Any, doc_name: str, text: str
) -> None:
    """CodeMirror's document is the Y.Text character for character: a \\r is a character
    of its line, not a line break folded into \\n, so typing and deleting after one land
    where the cursor is, and the page's text is the server's."""
    http = Http(server.http_url)
    status, answer = call(
        server.http_url, "PUT", f"/api/docs/{doc_name}/text", {"text": text}, user="wendy"
    )
    assert status == 200, answer
    page = open_doc(people(), server.http_url, doc_name, "eve")
    expect_text(page, text)
    # a \r is drawn visibly (as ␍), and only \n breaks a line
    assert page.locator(".cm-line").count() == text.count("\n") + 1
    assert page.locator(".cm-specialChar").count() == text.count("\r")

    type_at_end(page, "X")
    wait_for_head(http, doc_name, text + "X")
    assert editor_text(page) == text + "X"
    page.keyboard.press("Control+End")
    for _ in range(4):
        page.keyboard.press("Backspace")
    wait_for_head(http, doc_name, text[:-3])
    assert editor_text(page) == text[:-3]

    # Home goes to the start of the line: only \n starts one, a \r is inside its line
    page.keyboard.press("Control+End")
    page.keyboard.press("Home")
    page.keyboard.type("> ")
    start = text.rfind("\n") + 1
    edited = text[:start] + "> " + text[start:-3]
    head = wait_for_head(http, doc_name, edited)
    assert editor_text(page) == edited
    assert not page.errors  # type: ignore[attr-defined]

    # the history's views hold the same characters; a lone \r is marked (drawn as ␍)
    lone = text.count("\r") - text.count("\r\n")
    past = open_doc(people(), server.http_url, doc_name, "eve", f"&version={head}")
    body = past.locator("#preview-body")
    expect(past.locator("#preview")).to_have_attribute("data-seq", str(head))
    eventually(lambda: body.evaluate("e => e.textContent") == edited, what="the text view")
    assert body.locator(".cr").count() == lone
    past.locator('#preview-modes [data-mode="blame"]').click()
    eventually(lambda: body.locator(".blame-run").count() > 0, what="the blame view")
    assert body.evaluate("e => e.textContent") == edited
    assert body.locator(".cr").count() == lone

    first = open_doc(people(), server.http_url, doc_name, "eve", "&version=1")
    first.locator('#preview-modes [data-mode="diff"]').click()
    body = first.locator("#preview-body")
    expect(body.locator("ins").first).to_be_visible()
    without_deleted = """e => {
      const c = e.cloneNode(true)
      c.querySelectorAll('del').forEach((d) => d.remove())
      return c.textContent
    }"""
    assert body.evaluate(without_deleted) == edited
    assert body.locator(".cr").count() == lone
    assert body.locator("ins").all_text_contents() == ["> "]
    assert body.locator("del").all_text_contents() == [text[-3:]]
    assert not first.errors  # type: ignore[attr-defined]


def test_carriage_returns_stay_drawn_right_while_others_write_above_the_view(
    server: ServerProcess, people: Any, doc_name: str, tmp_path: Path
) -> None:
    """Node clients write CRLF lines, astral characters and tabs at the top of a long
    CRLF document while the page types at its end. CodeMirror's highlightSpecialChars
    (through its MatchDecorator) kept its ␍ widgets unmapped when a change fell outside
    the viewport: the next remote insert above the view left a widget on a line break
    ("Decorations that replace line breaks may not be specified via plugins"), the view
    broke ("No tile at position …"), and the tab's own next update split an emoji and
    was refused. Now every drawn line shows exactly its own \\r, and the page's text is
    the server's."""
    http = Http(server.http_url)
    seeded = "\r\n" * 600 + "end\r\n"  # blank CRLF lines: a ␍ next to each line break
    status, answer = call(
        server.http_url, "PUT", f"/api/docs/{doc_name}/text", {"text": seeded}, user="wendy"
    )
    assert status == 200, answer
    page = open_doc(people(), server.http_url, doc_name, "eve")
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    expect_text(page, seeded)
    type_at_end(page, "// typed:")
    view = "window.palimpsest.session.view"
    eventually(lambda: page.evaluate(f"() => {view}.viewport.from") > 0, what="the top out of view")

    chunks = ["x", "if (a) {\r\n", "// 𝔘 comment 😀", "\t", "é\r\n\r\n"]
    node_dir = REPO_ROOT / "tests" / "node"
    writers = []
    for i in range(3):
        actions: list[dict[str, Any]] = [{"op": "connect"}]
        for n in range(20):
            actions += [
                {"op": "insert", "pos": 0, "text": chunks[(n + i) % len(chunks)]},
                {"op": "sleep", "ms": 40},
            ]
        script = tmp_path / f"node{i}.json"
        script.write_text(json.dumps(actions))
        writers.append(
            subprocess.Popen(
                [
                    "node",
                    "client.mjs",
                    "--url",
                    server.ws_url,
                    "--doc",
                    doc_name,
                    "--user",
                    f"node{i}",
                    "--script",
                    str(script),
                ],
                cwd=node_dir,
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    try:
        for keys in ["let y = 2;", "Enter", "// 😀 𝔘", "Enter", "{}", "Backspace", "\tx"] * 3:
            if keys in ("Enter", "Backspace"):
                page.keyboard.press(keys)
            else:
                page.keyboard.type(keys)
        for writer in writers:
            out, _ = writer.communicate(timeout=60)
            assert writer.returncode == 0 and json.loads(out)["ok"], out
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.communicate()

    def in_step() -> bool:
        text = page.evaluate("() => window.palimpsest.session.ytext.toString()")
        return bool(text == editor_text(page) == http.content_at(doc_name, http.doc_head(doc_name)))

    eventually(in_step, what="the page's text equal to the server's")
    assert page.locator("#status").get_attribute("data-state") == "connected"
    # every line drawn shows as many ␍ as it holds \r, no more, no fewer
    drawn = page.evaluate(
        f"""() => [...document.querySelectorAll('.cm-line')].map((el) => {{
          const line = {view}.state.doc.lineAt({view}.posAtDOM(el))
          return [line.text.split('\\r').length - 1, el.querySelectorAll('.cm-specialChar').length]
        }})"""
    )
    assert drawn and all(want == got for want, got in drawn), drawn
    assert not console_errors and not page.errors, (console_errors, page.errors)  # type: ignore[attr-defined]
    # and typing still lands where the cursor is
    before = editor_text(page)
    page.keyboard.press("Control+End")
    page.keyboard.type("!")
    wait_for_head(http, doc_name, before + "!")


def test_a_long_name_of_emoji_is_cut_where_the_server_counts(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """The page cut names to 64 UTF-16 units: a name of 41 or more emoji was cut in the
    middle of one, encodeURIComponent threw ("URI malformed"), and the page stayed idle,
    in every document, for the half emoji stayed in localStorage. It cuts 64 characters
    as the server counts them, and trims a space the cut leaves at the end."""
    ctx = people()
    page = open_doc(ctx, server.http_url, doc_name, "\U0001f600" * 70)
    type_at_end(page, "hi")
    expect_text(page, "hi")
    other = open_doc(ctx, server.http_url, doc_name, "a" * 63 + " tail")
    type_at_end(other, "!")
    expect_text(page, "hi!")
    status, body = call(server.http_url, "GET", f"/api/docs/{doc_name}/events")
    assert status == 200
    assert {e["actor"] for e in body["events"]} == {"\U0001f600" * 64, "a" * 63}
    assert page.errors == [] and other.errors == []  # type: ignore[attr-defined]


# ---------------------------------------------------------------- security headers


def test_the_page_works_under_its_csp_and_other_sites_cannot_frame_it(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """GET / sent no security headers: a page of another site framed the editor
    invisibly and one click of its visitor restored an old version. The page now has a
    CSP (frame-ancestors 'self'), and must still load, edit, sync and show the history
    under it without a single violation."""
    ctx = people()
    ctx.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => "
        "(window.__violations = window.__violations || []).push("
        "e.violatedDirective + ' ' + e.blockedURI))"
    )
    page = open_doc(ctx, server.http_url, doc_name, "alice")
    type_at_end(page, "under a policy")
    other = open_doc(ctx, server.http_url, doc_name, "bob")
    expect_text(other, "under a policy")
    type_at_end(other, ", both of us")
    expect_text(page, "under a policy, both of us")
    page.locator("#history-btn").click()
    expect(page.locator("#timeline")).to_contain_text("bob")
    page.goto(f"{server.http_url}/")
    expect(page.locator("#doc-rows")).to_contain_text(doc_name)
    for p in (page, other):
        assert p.evaluate("() => window.__violations || []") == []
        assert p.errors == []  # type: ignore[attr-defined]
    # a page of another origin (localhost is not 127.0.0.1) frames the editor: the
    # browser refuses to draw it, so there is nothing to click
    target = f"{server.http_url}/?doc={doc_name}&user=alice"
    with _OtherSite(f'<iframe id="f" src="{target}" width="1200" height="700"></iframe>') as evil:
        framing = ctx.new_page()
        said: list[str] = []  # Chromium says the refusal on the framing page's console
        framing.on("console", lambda m: said.append(m.text))
        framing.goto(evil)

        # Blocked: the frame shows Chromium's error page, or the console said the
        # frame-ancestors refusal. (The frames are read again each time: a frame of
        # another origin may be swapped for one in another renderer process, and the first
        # one then keeps its old URL; in a clean-clone run beside other work the frame's
        # URL once stayed '' for 60 s while the refusal had been said.)
        def blocked() -> bool:
            urls = [f.url for f in framing.frames[1:]]
            refused = [m for m in said if "frame-ancestors" in m and "blocked" in m]
            assert [u[:13] for u in urls] == ["chrome-error:"] or refused, (
                f"frames: {urls}; console: {said}"
            )
            return True

        eventually(blocked, timeout=60.0, what="the frame blocked")
        # and in no case is the editor drawn in it
        for f in framing.frames[1:]:
            assert not f.url.startswith(server.http_url), f"the editor loaded framed: {f.url}"
            if f.url.startswith("chrome-error:"):
                assert f.evaluate("() => document.querySelector('#restore-btn')") is None


def test_a_page_of_an_allowed_origin_uses_the_http_api(
    browser: Any,  # noqa: F811 (the fixture)
    tmp_path_factory: pytest.TempPathFactory,
    doc_name: str,
) -> None:
    """`--allow-origin` let a page of another origin open the websocket, but its HTTP
    calls (ServerUndo's fallback, PUT text) failed: the preflight got 405 and no answer
    carried Access-Control-Allow-Origin. Now the listed origin's page reads and writes
    through the API; an origin not listed (nor local: 127.0.0.2 is no localhost origin)
    still reads nothing and writes nothing."""
    with (
        _OtherSite("<p>app</p>", "127.0.0.3") as allowed,
        _OtherSite("<p>other</p>", "127.0.0.2") as other,
    ):
        with ServerProcess(
            tmp_path_factory.mktemp("cors"), extra_args=["--allow-origin", allowed.rstrip("/")]
        ) as srv:
            assert call(srv.http_url, "PUT", f"/api/docs/{doc_name}/text", {"text": "v1"})[0] == 200
            ctx = browser.new_context()
            api = f"{srv.http_url}/api/docs/{doc_name}"
            page = ctx.new_page()
            page.goto(allowed)
            assert page.evaluate(_PUT_AND_READ, [api, "v2 from the app"]) == [
                200,
                "v2 from the app",
            ]
            page.goto(other)
            assert "Failed to fetch" in page.evaluate(_PUT_AND_READ, [api, "v3 from elsewhere"])
            status, head = call(srv.http_url, "GET", f"/api/docs/{doc_name}/versions/head")
            assert (status, head["roots"]["content"]["value"]) == (200, "v2 from the app")
            ctx.close()


def test_a_localhost_page_on_another_port_uses_the_http_api_and_the_module(
    browser: Any,  # noqa: F811 (the fixture)
    tmp_path_factory: pytest.TempPathFactory,
    doc_name: str,
) -> None:
    """A page of localhost on another port (a Vite dev server on :5173) could open the
    websocket and write, but got no CORS: its reads failed and the home page's
    Integrate snippet (`import { ServerUndo } from '<origin>/static/palimpsest.js'`)
    did not load. Localhost origins get CORS now, without --allow-origin."""
    with _OtherSite("<p>vite</p>") as local:
        with ServerProcess(tmp_path_factory.mktemp("cors-local")) as srv:
            ctx = browser.new_context()
            page = ctx.new_page()
            page.goto(local)
            api = f"{srv.http_url}/api/docs/{doc_name}"
            assert page.evaluate(_PUT_AND_READ, [api, "from vite"]) == [200, "from vite"]
            module = """async (url) => {
                try { return typeof (await import(url)).ServerUndo } catch (e) { return String(e) }
            }"""
            assert page.evaluate(module, f"{srv.http_url}/static/palimpsest.js") == "function"
            ctx.close()


def test_a_page_on_another_origin_reads_the_headers_the_api_documents(
    browser: Any,  # noqa: F811 (the fixture)
    tmp_path_factory: pytest.TempPathFactory,
    doc_name: str,
) -> None:
    """A localhost page on another port read a version's update but not its
    X-Palimpsest-Seq (which seq `head` was), nor a 429's Retry-After: no answer named
    them in Access-Control-Expose-Headers, so fetch() gave null for both."""
    with _OtherSite("<p>vite</p>") as local:
        env = {"PALIMPSEST_MAX_HTTP_WRITES_PER_SECOND": "1"}
        with ServerProcess(tmp_path_factory.mktemp("cors-expose"), env=env) as srv:
            assert call(srv.http_url, "PUT", f"/api/docs/{doc_name}/text", {"text": "v1"})[0] == 200
            ctx = browser.new_context()
            page = ctx.new_page()
            page.goto(local)
            api = f"{srv.http_url}/api/docs/{doc_name}"
            assert page.evaluate(_HEADERS_READ, api) == ["1", "1"]
            ctx.close()


#: a page's read of the head's update and its PUTs until one is refused, as
#: [X-Palimpsest-Seq, the refusal's Retry-After] or the error
_HEADERS_READ = """async (url) => {
    try {
        const got = await fetch(url + '/versions/head?format=update&user=ann')
        const seq = got.headers.get('X-Palimpsest-Seq')
        for (let i = 0; i < 20; i++) {
            const put = await fetch(url + '/text?user=ann', {method: 'PUT',
                headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({text: 'v' + i})})
            if (put.status === 429) return [seq, put.headers.get('Retry-After')]
        }
        return [seq, 'never refused']
    } catch (e) { return String(e) }
}"""


#: a page's PUT of a text and its read of the head, as [status, text] or the error
_PUT_AND_READ = """async ([url, text]) => {
    try {
        const put = await fetch(url + '/text?user=ann', {method: 'PUT',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({text})})
        const got = await fetch(url + '/versions/head?user=ann')
        return [put.status, (await got.json()).roots.content.value]
    } catch (e) { return String(e) }
}"""


class _OtherSite:
    """Another site serving one page: http://localhost:PORT, or at another loopback
    address (127.0.0.2: a site that is not local to the server's checks)."""

    def __init__(self, html: str, address: str = "localhost") -> None:
        import http.server
        import threading

        body = html.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.address = address
        bind = "127.0.0.1" if address == "localhost" else address
        self.httpd = http.server.ThreadingHTTPServer((bind, 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://{self.address}:{self.httpd.server_address[1]}/"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- tokens


def test_a_link_with_a_token_signs_in_its_tab_only_and_leaves_the_address(
    people: Any, tmp_path: Path
) -> None:
    """A link's `?token=` replaced the token the browser kept (localStorage) and stayed
    in the address bar and the history: anyone could send a link with their own token
    and have the victim's later visits write as them (token fixation). Now the token is
    taken out of the address, signs in that tab only, the page offers to keep it, and
    "Sign out" forgets it."""
    secret = "a-secret-for-the-page-tests-only-0123456789"
    victim = mint(secret, "victim", "write", ["*"])
    mallory = mint(secret, "mallory", "write", ["*"])
    stored = "() => localStorage.getItem('palimpsest.token')"
    with ServerProcess(tmp_path, extra_args=["--jwt-secret", secret]) as srv:
        ctx = people()
        errors: list[str] = []
        ctx.on("weberror", lambda e: errors.append(str(e.error)))
        first = ctx.new_page()
        first.goto(f"{srv.http_url}/?doc=diary&user=victim&token={victim}")
        expect(first.locator("#status")).to_have_attribute("data-state", "connected")
        assert "token" not in first.url
        note = first.locator(".toast", has_text="by the link you opened")
        expect(note).to_contain_text("signed in as victim")
        assert first.evaluate(stored) is None  # not kept unless asked
        note.locator(".toast-action").click()
        assert first.evaluate(stored) == victim

        # a link someone else sent, in another tab: that tab is theirs, the browser's is not
        lure = ctx.new_page()
        lure.goto(f"{srv.http_url}/?doc=team-notes&token={mallory}")
        expect(lure.locator("#status")).to_have_attribute("data-state", "connected")
        assert "token" not in lure.url
        expect(lure.locator("#user-label")).to_have_text("mallory")
        expect(lure.locator(".toast")).to_contain_text("This browser stays signed in as victim")
        assert lure.evaluate(stored) == victim
        lure.reload()  # (the tab keeps its sign-in)
        expect(lure.locator("#user-label")).to_have_text("mallory")

        # later, in a new tab: the victim's own sign-in writes the victim's document
        later = ctx.new_page()
        later.goto(f"{srv.http_url}/?doc=diary")
        expect(later.locator("#status")).to_have_attribute("data-state", "connected")
        expect(later.locator("#user-label")).to_have_text("victim")
        type_at_end(later, "my private thoughts")
        request = urllib.request.Request(
            f"{srv.http_url}/api/docs/diary/events", headers={"Authorization": f"Bearer {victim}"}
        )

        def actors() -> set[str]:
            with urllib.request.urlopen(request, timeout=10) as r:
                return {e["actor"] for e in json.loads(r.read())["events"]}

        eventually(lambda: actors() == {"victim"}, what="the diary written by the victim")

        later.locator("#user-chip").click()
        later.locator("#signout-btn").click()
        expect(later.locator("#status")).to_have_attribute("data-state", "refused")
        assert later.evaluate(stored) is None
        assert not errors, errors


def test_a_refusal_is_announced_and_says_how_to_sign_in(people: Any, tmp_path: Path) -> None:
    """The server's reason for refusing the document went into #banner, no live region:
    a screen reader said only "Refused" (the status pill; the reason in its title). And
    signed out of a server that needs tokens, the banner read "not authenticated: a
    token is required (?token= on the websocket, Authorization: Bearer on HTTP)": words
    for developers, nothing on how to sign in. The banner is now an alert, and a sign-in
    missing or not accepted is told as how to sign in: with a link."""
    secret = "a-secret-for-the-page-tests-only-0123456789"
    others = mint(secret, "bob", "write", ["other-*"])
    with ServerProcess(tmp_path, extra_args=["--jwt-secret", secret]) as srv:
        page = people().new_page()
        page.goto(f"{srv.http_url}/?doc=secret&user=bob&token={others}")
        expect(page.locator("#status")).to_have_attribute("data-state", "refused")
        banner = page.locator("#banner")
        expect(banner).to_have_role("alert")
        expect(banner).to_have_text(
            "The server refused this document: this token does not grant document 'secret'"
        )

        page.locator("#user-chip").click()
        page.locator("#signout-btn").click()  # (the page has ?user=bob, and now no token)
        expect(page.locator("#status")).to_have_attribute("data-state", "refused")
        expect(banner).to_have_role("alert")
        expect(banner).to_have_text(
            "You are not signed in, and this server opens documents only to people who are. "
            "To sign in, open the sign-in link you were given (an address like "
            f"{srv.http_url}/?doc=secret&token=…). Whoever runs this server can make you one."
        )

        forged = mint("another-secret-0123456789-0123456789-abc", "bob", "write", ["*"])
        page.goto(f"{srv.http_url}/?doc=secret&token={forged}")
        expect(page.locator("#status")).to_have_attribute("data-state", "refused")
        expect(banner).to_have_text(
            re.compile(r"^Your sign-in was not accepted \(token signature does not verify\)\. ")
        )
        expect(banner).to_contain_text("To sign in again, open a new sign-in link")


def test_a_damaged_sign_in_link_is_told_plainly_and_no_link_asks_for_a_name(
    people: Any, tmp_path: Path
) -> None:
    """A sign-in link whose token was damaged (cut short when copied) gave the banner
    "Your sign-in was not accepted (malformed token: Invalid header string: 'utf-8'
    codec can't decode byte 0xb7 ...)", the token decoder's words; and before that, a
    browser new to the page asked "What should we call you?", though a token names its
    user and the server ignores any other name."""
    secret = "a-secret-for-the-page-tests-only-0123456789"
    with ServerProcess(tmp_path, extra_args=["--jwt-secret", secret]) as srv:
        page = people().new_page()
        page.goto(f"{srv.http_url}/?doc=secret&token=abc.def.ghi")
        expect(page.locator("#status")).to_have_attribute("data-state", "refused")
        expect(page.locator("#name-dialog")).to_be_hidden()
        expect(page.locator("#banner")).to_have_text(
            "Your sign-in was not accepted (the token is damaged or not a token). To sign in "
            "again, open a new sign-in link (an address like "
            f"{srv.http_url}/?doc=secret&token=…). Whoever runs this server can make you one."
        )

        page = people().new_page()
        page.goto(f"{srv.http_url}/?doc=secret&token={mint(secret, 'ann', 'write', ['*'])}")
        expect(page.locator("#status")).to_have_attribute("data-state", "connected")
        expect(page.locator("#name-dialog")).to_be_hidden()
        expect(page.locator("#user-label")).to_have_text("ann")


# ---------------------------------------------------------------- wording


def test_the_history_says_what_a_restore_did_and_a_board_is_not_called_text(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A restore was listed as "reverts #1 back to version #1" (the server lists the
    version a restore goes back to under `reverts` too); a document of maps alone was
    said to be "written with an editor ... (Tiptap, Lexical, Quill…)", and the preview
    of one of its versions said "The text as it was at this version. (empty)". A
    binary value (a Uint8Array: a thumbnail) in the live view was {"0": 99}, not
    {"$bytes": base64} as the API renders it."""
    http = Http(server.http_url)
    page = open_doc(people(), server.http_url, doc_name, "alice")
    type_at_end(page, "one")
    wait_for_head(http, doc_name, "one")
    type_at_end(page, " two")
    wait_for_head(http, doc_name, "one two")
    status, answer = call(
        server.http_url, "POST", f"/api/docs/{doc_name}/restore", {"seq": 1}, user="alice"
    )
    assert status == 200, answer
    page.locator("#history-btn").click()
    row = page.locator('#timeline .event[data-kind="restore"]')
    expect(row.locator(".detail")).to_have_text("back to version #1")

    async def write() -> None:
        async with connect(server.ws_url, doc_name + "-board", user="alice") as s:
            with s.doc.transaction():
                state = s.doc.get("appState", type=Map)
                state["viewBackgroundColor"] = "#fafafa"
                state["thumb"] = b"c"
                state["files"] = Map({"list": [b"\x01\x02", 7]})
            await s.flush()

    writing = threading.Thread(target=asyncio.run, args=(write(),))
    writing.start()
    writing.join(30)
    board = open_doc(people(), server.http_url, doc_name + "-board", "alice", "&version=1")
    note = board.locator("#live .live-note")
    expect(note).to_contain_text("holds only maps and arrays")
    expect(note).not_to_contain_text("Tiptap")
    expect(board.locator("#live summary")).to_have_text("Shared types (appState)")
    shown = board.locator("#live details pre")
    expect(shown).to_contain_text("thumb")
    live = json.loads(shown.inner_text().removeprefix("appState (map): "))
    assert live == {
        "viewBackgroundColor": "#fafafa",
        "thumb": {"$bytes": "Yw=="},
        "files": {"list": [{"$bytes": "AQI="}, 7]},
    }, live
    expect(board.locator("#preview-legend")).to_have_text("The document as it was at this version.")
    expect(board.locator("#preview-body")).not_to_contain_text("(empty)")
    expect(board.locator("#preview-extra details[open]")).to_contain_text("appState (map)")
    assert not page.errors and not board.errors  # type: ignore[attr-defined]


def test_a_tiptap_table_and_image_are_drawn_live_and_in_history(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """The page drew a Tiptap table's cells as stacked paragraphs and left an image out
    altogether (in history that read as data loss). Now a table is a table, header
    cells and spans kept, and an image a placeholder naming its alt and src, never
    loaded, live as in a version's preview."""
    src = f"{server.http_url}/static/x.png"

    def cell(kind: str, text: str, span: int = 1) -> XmlElement:
        return XmlElement(
            kind, {"colspan": span, "rowspan": 1}, [XmlElement("paragraph", {}, [XmlText(text)])]
        )

    async def write() -> None:
        async with connect(server.ws_url, doc_name, user="alice") as s:
            frag = s.doc.get("default", type=XmlFragment)
            with s.doc.transaction():
                frag.children.append(XmlElement("paragraph", {}, [XmlText("Before")]))
                header = XmlElement(
                    "tableRow", {}, [cell("tableHeader", "H1"), cell("tableHeader", "H2")]
                )
                row = XmlElement("tableRow", {}, [cell("tableCell", "c1"), cell("tableCell", "c2")])
                wide = XmlElement("tableRow", {}, [cell("tableCell", "wide", 2)])
                frag.children.append(XmlElement("table", {}, [header, row, wide]))
                frag.children.append(XmlElement("image", {"src": src, "alt": "a cat"}))
            await s.flush()

    writing = threading.Thread(target=asyncio.run, args=(write(),))
    writing.start()
    writing.join(30)
    page = open_doc(people(), server.http_url, doc_name, "carol", "&history=1&version=1")
    for view in (page.locator("#live"), page.locator("#preview-body")):
        table = view.locator("table")
        expect(table.locator("tr")).to_have_count(3)
        expect(table.locator("tr").first.locator("th")).to_have_text(["H1", "H2"])
        expect(table.locator("tr").nth(1).locator("td")).to_have_text(["c1", "c2"])
        expect(table.locator("td[colspan='2']")).to_have_text("wide")
        image = view.locator('.x-image[data-element="image"]')
        expect(image).to_contain_text("a cat")
        expect(image).to_contain_text(src)
        expect(view.locator("img")).to_have_count(0)
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def _x(locator: Any) -> float:
    box = locator.bounding_box()
    assert box is not None
    return float(box["x"])


def test_blocknote_and_milkdown_documents_are_drawn_as_their_editors_lay_them_out(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A field tester's BlockNote and Milkdown documents, on the page: BlockNote's nested
    blocks (a blockGroup in a blockContainer) were drawn at the left margin, its list
    items with no bullet or number, its check items with no checkbox, its image as
    "image" alone; Milkdown's table header row was a table of its own, and its
    `emphasis`, `inlineCode` and `strike_through` marks were plain text. Drawn by shape
    now, live, in a version's text and in its blame: nested groups indented, items with
    their bullets, numbers (BlockNote's `start`) and checkboxes, the image's caption and
    address named."""

    async def write() -> None:
        async with connect(server.ws_url, doc_name, user="alice") as s:
            write_blocknote(s.doc)
            await s.flush()
        async with connect(server.ws_url, doc_name + "-md", user="alice") as s:
            write_milkdown(s.doc)
            await s.flush()

    writing = threading.Thread(target=asyncio.run, args=(write(),))
    writing.start()
    writing.join(30)
    ctx = people()
    live = open_doc(ctx, server.http_url, doc_name, "carol")
    page = open_doc(ctx, server.http_url, doc_name, "carol", "&history=1&version=head")
    for view in (live.locator("#live"), page.locator("#preview-body"), "blame"):
        if view == "blame":
            page.locator('#preview-modes [data-mode="blame"]').click()
            view = page.locator("#preview-body")
            expect(view.locator(".made").first).to_be_visible()
        assert not isinstance(view, str)
        expect(view.locator("h1")).to_have_text("Meeting notes")
        para = view.locator('p[data-element="paragraph"]')
        parent, child, grandchild = (para.filter(has_text=t).first
                                     for t in ("Parent", "Child one", "Grandchild"))  # fmt: skip
        assert _x(parent) < _x(child) < _x(grandchild)
        bullets = view.locator('[data-element="bulletListItem"]')
        expect(bullets.locator(".x-marker")).to_have_text(["•", "•"])
        assert _x(bullets.first) < _x(bullets.nth(1))
        numbered = view.locator('[data-element="numberedListItem"]')
        expect(numbered).to_have_text(
            ["1.first", "2.second", "1.sub first", "3.third", "7.seventh", "8.eighth"]
        )
        checks = view.locator('[data-element="checkListItem"] input[type="checkbox"]')
        expect(checks).to_have_count(2)
        expect(checks.first).to_be_checked()
        expect(checks.nth(1)).not_to_be_checked()
        image = view.locator('.x-image[data-element="image"]')
        expect(image).to_contain_text("a cat")
        expect(image).to_contain_text(IMAGE_URL)
        expect(view.locator("strong")).to_have_text("bold")
        expect(view.locator("em")).to_have_text("italic")
        expect(view.locator(".x-link")).to_have_attribute("title", "https://example.com")
        expect(view.locator("img")).to_have_count(0)
    assert not page.errors and not live.errors  # type: ignore[attr-defined]

    page = open_doc(ctx, server.http_url, doc_name + "-md", "carol", "&history=1&version=head")
    for view in (page.locator("#live"), page.locator("#preview-body")):
        expect(view.locator("h1")).to_have_text("Design doc")
        expect(view.locator("table")).to_have_count(1)
        rows = view.locator("table tr")
        expect(rows).to_have_count(2)
        expect(rows.first.locator("th")).to_have_text(["h1", "h2"])
        expect(rows.nth(1).locator("td")).to_have_text(["c1", "c2"])
        for tag, text in (("strong", "bold"), ("em", "ital"), ("code", "code"), ("s", "gone")):
            expect(view.locator(tag)).to_have_text(text)
        expect(view.locator(".x-link")).to_have_text("a link")
        tasks = view.locator('ul > li input[type="checkbox"]')
        expect(tasks).to_have_count(2)
        expect(tasks.first).to_be_checked()
        expect(tasks.nth(1)).not_to_be_checked()
        expect(view.locator("ol")).to_have_attribute("start", "3")
        expect(view.locator("br")).to_have_count(1)
    assert not page.errors, page.errors  # type: ignore[attr-defined]


# ---------------------------------------------------------------- times


def _stamped(db: Path, events: dict[str, list[tuple[str, str, int]]]) -> None:
    """Write each document's (actor, text appended, ts in ms) events into the SQLite
    file `db`, stamped with those times (a server stamps its own clock's)."""
    from palimpsest.store.base import NewEvent
    from palimpsest.store.sqlite import SQLiteStore

    async def write() -> None:
        async with SQLiteStore(db) as store:
            for doc, written in events.items():
                ydoc = Doc()
                ydoc["content"] = text = YText()
                for actor, more, ts in written:
                    before = ydoc.get_state()
                    text += more
                    update = ydoc.get_update(before)
                    await store.append([(doc, [NewEvent(actor, "edit", update, ts=ts)])])

    # (in a thread: Playwright's sync API runs an event loop in this one)
    thread = threading.Thread(target=asyncio.run, args=(write(),))
    thread.start()
    thread.join()


def test_times_of_another_year_say_their_year_and_tooltips_their_zone(
    browser: Any,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    """A field tester's history panel showed a 2027 event as "Dec 6, 07:52 PM" next to
    today's "07:52 PM", and the document list "Dec 6": no year unless in a tooltip, and
    no time zone anywhere. A time of another year says its year; the tooltips (title)
    say the zone's short name and the ISO time with its offset."""
    old = int(datetime(2025, 2, 4, 19, 5, tzinfo=UTC).timestamp() * 1000)  # 14:05 EST
    now = int(time.time() * 1000)
    db = tmp_path / "palimpsest.db"
    _stamped(db, {"long-ago": [("ann", "old text", old)],
                  "then-and-now": [("ann", "old ", old), ("bob", "new", now)]})  # fmt: skip
    with ServerProcess(tmp_path / "srv", db_path=db) as srv:
        ctx = browser.new_context(
            timezone_id="America/New_York", locale="en-US", viewport={"width": 1360, "height": 820}
        )
        try:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{srv.http_url}/?user=tester")
            cell = page.locator('#doc-rows tr[data-doc="long-ago"] td').nth(2)
            expect(cell).to_have_text("Feb 4, 2025")
            title = cell.get_attribute("title") or ""
            assert "2025-02-04T14:05:00-05:00" in title and "EST" in title, title

            page = open_doc(ctx, srv.http_url, "then-and-now", "tester")
            page.locator("#history-btn").click()
            session = page.locator('#history .session[data-actor="ann"] .session-when')
            expect(session).to_have_text("Feb 4, 2025, 02:05 PM")
            page.locator('#history .session[data-actor="ann"] .session-head').click()
            when = page.locator('#history .event[data-seq="1"] .when')
            expect(when).to_have_text("Feb 4, 2025, 02:05:00 PM")
            row = page.locator('#history .event[data-seq="1"] .event-row')
            title = row.get_attribute("title") or ""
            assert "Feb 4, 2025, 2:05:00 PM EST (2025-02-04T14:05:00-05:00)" in title, title
            # today's: the time alone, its tooltip with the zone too
            today = page.locator('#history .event[data-seq="2"] .when')
            expect(today).to_have_text(re.compile(r"^\d\d:\d\d:\d\d [AP]M$"))
            title = page.locator('#history .event[data-seq="2"] .event-row').get_attribute("title")
            assert title and re.search(r"[+-]0[45]:00\)", title), title
            assert not errors and not page.errors  # type: ignore[attr-defined]
        finally:
            ctx.close()
