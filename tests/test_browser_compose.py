"""Text composed with an input method (IME) in the page while someone else types on the
same line. Chromium's own IME pipeline driven through the DevTools protocol
(`Input.imeSetComposition`, then `Input.insertText` to commit), as a Japanese or Chinese
input method drives it, against the real server; the other writer is a second page.
Fixtures and helpers are tests/test_browser.py's."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page
from serverproc import ServerProcess
from test_browser import (  # noqa: F401 (browser: the fixture)
    Http,
    browser,
    editor_text,
    eventually,
    expect_text,
    open_doc,
    type_at_end,
)

pytestmark = pytest.mark.browser

TOKEN = re.compile(r"\[\d+\]")
COMPOSED = [(["に", "にほ", "にほん", "にほんご"], "日本語"), (["z", "zh", "zhong"], "中")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("browser-compose")) as srv:
        yield srv


class Composer:
    """A page whose editor composes through Chromium's IME, and which records what its
    websocket received (to know that a remote edit has reached it, applied or not)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.cdp = page.context.new_cdp_session(page)
        page.evaluate(
            """() => {
              window.received = ''
              const text = new TextDecoder()
              window.palimpsest.provider.ws.addEventListener('message', (e) => {
                window.received += text.decode(new Uint8Array(e.data))
              })
            }"""
        )

    def pre_edit(self, text: str) -> None:
        self.cdp.send(
            "Input.imeSetComposition",
            {"text": text, "selectionStart": len(text), "selectionEnd": len(text)},
        )
        eventually(lambda: text in editor_text(self.page), what=f"{text!r} being composed")

    def commit(self, text: str) -> None:
        self.cdp.send("Input.insertText", {"text": text})

    def composing(self) -> bool:
        return bool(self.page.evaluate("() => window.palimpsest.session.view.compositionStarted"))

    def wait_received(self, token: str) -> None:
        eventually(
            lambda: self.page.evaluate("(t) => window.received.includes(t)", token),
            what=f"{token} at the composing page's socket",
        )


def insert_before(page: Page, anchor: str, text: str) -> None:
    """Another writer's edit, through their page's Y.Text, right before `anchor`."""
    page.evaluate(
        """([anchor, text]) => {
          const ytext = window.palimpsest.session.ytext
          ytext.insert(ytext.toString().indexOf(anchor), text)
        }""",
        [anchor, text],
    )


def test_text_composed_while_someone_types_beside_it_is_stored_as_committed(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """Remo types at Aiko's caret while she composes にほんご → 日本語 and zhong → 中.
    CodeMirror redrew the line for each remote edit, Chromium lost the range of the
    composition, and every pre-edit state stayed in the text for everyone
    ("ににほにほんにほんご日本語"). Remote edits now wait for the composition's commit: the
    stored text is the committed words with Remo's edits beside them, the same in both
    pages."""
    aiko_page = open_doc(people(), server.http_url, doc_name, "aiko")
    remo = open_doc(people(), server.http_url, doc_name, "remo")
    type_at_end(aiko_page, "AAAA BBBB")
    expect_text(remo, "AAAA BBBB")
    aiko_page.keyboard.press("Home")
    for _ in range(5):
        aiko_page.keyboard.press("ArrowRight")  # the caret: "AAAA |BBBB"
    aiko = Composer(aiko_page)

    remote = 0
    for steps, committed in COMPOSED:
        for step in steps:
            aiko.pre_edit(step)
            remote += 1
            insert_before(remo, "BBBB", f"[{remote}]")  # at Aiko's caret, as Remo sees it
            aiko.wait_received(f"[{remote}]")
        aiko.commit(committed)

    http = Http(server.http_url)

    def agreed() -> str | None:
        text = http.content_at(doc_name, http.doc_head(doc_name))
        ytext = aiko_page.evaluate("() => window.palimpsest.session.ytext.toString()")
        seen = [editor_text(aiko_page), ytext, editor_text(remo)]
        return text if seen == [text] * 3 and text.count("[") == remote else None

    text = eventually(agreed, what="both pages and the server agreeing on every edit")
    assert TOKEN.sub("", text) == "AAAA 日本語中BBBB", text
    assert sorted(TOKEN.findall(text)) == sorted(f"[{n}]" for n in range(1, remote + 1)), text
    assert not aiko_page.errors and not remo.errors  # type: ignore[attr-defined]


def caret_before_bbbb(page: Page) -> None:
    """Type "AAAA BBBB" and put the caret at "AAAA |BBBB" (moving it closes the undo step)."""
    type_at_end(page, "AAAA BBBB")
    page.keyboard.press("Home")
    for _ in range(5):
        page.keyboard.press("ArrowRight")


def agreed_text(http: Http, doc_name: str, *pages: Page) -> str | None:
    """The stored text once every page's editor shows it, else None."""
    text = http.content_at(doc_name, http.doc_head(doc_name))
    return text if all(editor_text(page) == text for page in pages) else None


def test_korean_syllables_composed_back_to_back_get_remote_edits_between_them(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A Korean IME commits each syllable and starts the next one's composition at once,
    so the pause after a commit that released held remote edits never came: they waited
    for the 5 s limit, which applied them inside an open composition, and a syllable was
    stored twice for everyone (한국어르르이…). Held edits now go in between two
    compositions: each syllable's remote edit is in the editor as the next one starts."""
    aiko_page = open_doc(people(), server.http_url, doc_name, "aiko")
    remo = open_doc(people(), server.http_url, doc_name, "remo")
    caret_before_bbbb(aiko_page)
    expect_text(remo, "AAAA BBBB")
    aiko = Composer(aiko_page)
    syllables = [(["ㅎ", "하", "한"], "한"), (["ㄱ", "구", "국"], "국"), (["ㅇ", "어"], "어")]
    syllables += [(["ㄹ", "르"], "르"), (["ㅇ", "이"], "이")]
    for n, (steps, committed) in enumerate(syllables, 1):
        aiko.pre_edit(steps[0])
        if n > 1:  # the edit Remo made during the syllable before: applied between the two
            assert f"[{n - 1}]" in editor_text(aiko_page), editor_text(aiko_page)
        insert_before(remo, "BBBB", f"[{n}]")
        aiko.wait_received(f"[{n}]")
        for step in steps[1:]:
            aiko.pre_edit(step)
        aiko.commit(committed)

    http = Http(server.http_url)
    text = eventually(lambda: agreed_text(http, doc_name, aiko_page, remo), what="agreement")
    assert TOKEN.sub("", text) == "AAAA 한국어르이BBBB", text
    assert text.count("[") == len(syllables), text
    assert not aiko_page.errors and not remo.errors  # type: ignore[attr-defined]


def test_a_composition_open_past_the_limit_is_committed_before_the_held_edits(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A phrase composed for longer than the hold's limit (15 s) while Remo types at the
    caret. The held edits were applied into the open composition and every pre-edit
    state stayed in the text (きょうきょうは…). The composition is now ended first: the
    pre-edit text is committed as it stands, then Remo's edits are applied beside it,
    and the composition's text reaches Remo only then, as one update."""
    aiko_page = open_doc(people(), server.http_url, doc_name, "aiko")
    remo = open_doc(people(), server.http_url, doc_name, "remo")
    caret_before_bbbb(aiko_page)
    expect_text(remo, "AAAA BBBB")
    aiko = Composer(aiko_page)
    kana = "きょうは"
    for n in range(1, len(kana) + 1):
        aiko.pre_edit(kana[:n])
        insert_before(remo, "BBBB", f"[{n}]")
        aiko.wait_received(f"[{n}]")
    assert "き" not in editor_text(remo)  # pre-edit states are not sent
    eventually(lambda: not aiko.composing(), timeout=30,
               what="the composition ended by the hold's limit")  # fmt: skip

    http = Http(server.http_url)
    text = eventually(lambda: agreed_text(http, doc_name, aiko_page, remo), what="agreement")
    assert TOKEN.sub("", text) == "AAAA きょうはBBBB", text
    assert text.count("[") == len(kana), text
    assert aiko_page.evaluate("() => window.palimpsest.session.view.hasFocus")

    aiko.pre_edit("ね")  # the IME starts afresh; the editor kept the focus
    aiko.commit("ね")
    text = eventually(lambda: agreed_text(http, doc_name, aiko_page, remo), what="agreement")
    assert TOKEN.sub("", text) == "AAAA きょうはねBBBB", text
    assert not aiko_page.errors and not remo.errors  # type: ignore[attr-defined]


def test_one_undo_takes_back_a_composition_typed_at_a_human_pace(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """The server groups a user's edits less than 500 ms apart into one undo step, and a
    pre-edit state went out as each was typed: composed slowly, each was a step, and
    Ctrl-Z after the commit brought back にほんご, then にほん… Now a composition goes
    out with its commit as one update: one undo takes the committed 日本語 away."""
    aiko_page = open_doc(people(), server.http_url, doc_name, "aiko")
    caret_before_bbbb(aiko_page)
    http = Http(server.http_url)
    eventually(lambda: agreed_text(http, doc_name, aiko_page) == "AAAA BBBB", what="typed")
    aiko = Composer(aiko_page)
    for step in ["に", "にほ", "にほん", "にほんご"]:
        aiko.pre_edit(step)
        time.sleep(0.6)  # a human pace: longer than the server's grouping (500 ms)
    aiko.commit("日本語")
    eventually(lambda: agreed_text(http, doc_name, aiko_page) == "AAAA 日本語BBBB", what="commit")

    aiko_page.keyboard.press("Control+z")
    eventually(lambda: agreed_text(http, doc_name, aiko_page) == "AAAA BBBB", what="one undo")
