"""Text composed with an input method (IME) in the page while someone else types on the
same line. Chromium's own IME pipeline driven through the DevTools protocol
(`Input.imeSetComposition`, then `Input.insertText` to commit), as a Japanese or Chinese
input method drives it, against the real server; the other writer is a second page.
Fixtures and helpers are tests/test_browser.py's."""

from __future__ import annotations

import re
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
    pages, and a composition left open holds them back only for a bounded time."""
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

    # a composition left open: Remo's edit arrives all the same, composition or not
    aiko.pre_edit("か")
    eventually(lambda: "か" in editor_text(remo), what="the pre-edit text at Remo's")
    insert_before(remo, "BBBB", "[open]")
    aiko.wait_received("[open]")
    expect_text(aiko_page, editor_text(remo))
    assert aiko.composing()
    assert not aiko_page.errors and not remo.errors  # type: ignore[attr-defined]
