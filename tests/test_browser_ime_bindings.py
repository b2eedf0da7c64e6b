"""Text composed with an input method (IME) in Tiptap and Quill while someone else types
at the composer's caret, with /static/palimpsest.js's `holdWhileComposing` on the
composer's editor. Chromium's own IME pipeline driven through the DevTools protocol
(`Input.imeSetComposition`, then `Input.insertText` to commit), as in
tests/test_browser_compose.py; the pages are tests/test_browser_tiptap.py's harness.

Without the helper, Tiptap (y-prosemirror) kept every pre-edit state in the text
(`AAAA にほにほん…日本語[1]…BBBB`) and Quill (y-quill) moved or duplicated text, and a
composition typed at a human pace went to the server one pre-edit state at a time, so
that the server's undo brought back kana nobody committed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page
from serverproc import ServerProcess
from test_browser import browser, eventually  # noqa: F401 (browser: the fixture)
from test_browser_tiptap import open_binding_page, open_tiptap, serve_harness

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("browser-ime")) as srv:
        yield srv


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_harness(tmp_path_factory.mktemp("ime-pages")) as url:
        yield url


TOKEN = re.compile(r"\[\d+\]")
JAPANESE = [(["に", "にほ", "にほん", "にほんご"], "日本語")]
KOREAN = [(["ㅎ", "하", "한"], "한"), (["ㄱ", "구", "국"], "국"), (["ㅇ", "어"], "어")]

# per editor: its editable element, the shared text (as a string) and the code that
# inserts before an anchor in it, as the other writer's binding would
EDITORS = {
    "tiptap": {
        "element": "window.harness.editor.view.dom",
        "ytext": "window.harness.ydoc.getXmlFragment('default').get(0).get(0)",
        "click": ".ProseMirror",
    },
    "quill": {
        "element": "window.harness.quill.root",
        "ytext": "window.harness.ydoc.getText('quill')",
        "click": ".ql-editor",
    },
}


class Writer:
    """A harness page of `editor`: what its editor shows and holds, and its IME."""

    def __init__(self, page: Page, editor: str) -> None:
        self.page = page
        self.editor = EDITORS[editor]
        self.cdp = page.context.new_cdp_session(page)

    def shown(self) -> str:
        """The editor's DOM text (Quill's model lags a composition: it reads it at the end)."""
        return str(self.page.evaluate(f"() => {self.editor['element']}.textContent"))

    def ytext(self) -> str:
        return str(self.page.evaluate(f"() => {self.editor['ytext']}.toString()"))

    def insert_before(self, anchor: str, text: str) -> None:
        self.page.evaluate(
            f"([a, t]) => {{ const y = {self.editor['ytext']}; "
            "y.insert(y.toString().indexOf(a), t) }",
            [anchor, text],
        )

    def hold(self) -> None:
        """The two lines the README shows, with the page's modules."""
        self.page.evaluate(
            f"""() => {{
              const {{ palimpsest, provider, Y }} = window.harness
              window.hold = palimpsest.holdWhileComposing(provider, {self.editor["element"]},
                                                          {{ mergeUpdates: Y.mergeUpdates }})
            }}"""
        )

    def listen(self) -> None:
        """Record what the socket receives: a remote edit has reached it, applied or not."""
        self.page.evaluate(
            """() => {
              window.received = ''
              const text = new TextDecoder()
              window.harness.provider.ws.addEventListener('message', (e) => {
                window.received += text.decode(new Uint8Array(e.data))
              })
            }"""
        )

    def wait_received(self, token: str) -> None:
        eventually(
            lambda: self.page.evaluate("(t) => window.received.includes(t)", token),
            what=f"{token} at the composing page's socket",
        )

    def pre_edit(self, text: str) -> None:
        self.cdp.send(
            "Input.imeSetComposition",
            {"text": text, "selectionStart": len(text), "selectionEnd": len(text)},
        )
        eventually(lambda: text in self.shown(), what=f"{text!r} being composed")

    def commit(self, text: str) -> None:
        self.cdp.send("Input.insertText", {"text": text})


def server_text(server: ServerProcess, doc: str, root: str) -> str:
    """The stored text of `root` (a Y.Text, or the first paragraph of Tiptap's fragment)."""
    v = httpx.get(f"{server.http_url}/api/docs/{doc}/versions/head").json()
    value = str(v["roots"][root]["value"])
    return re.sub(r"<[^>]*>", "", value) if v["roots"][root]["type"] == "xml" else value


def compose_beside_a_typist(
    editor: str,
    server: ServerProcess,
    page_url: str,
    people: Any,
    doc: str,
    plan: list[tuple[list[str], str]],
    pause: float = 0.0,
) -> tuple[Writer, Writer, Any]:
    """Aiko (holding while composing) types "AAAA BBBB", puts the caret before BBBB and
    composes `plan`; Remo inserts [n] at her caret during each composition. Returns both
    and Aiko's ServerUndo once every page and the server hold the same text."""
    if editor == "tiptap":
        open_page = lambda user: open_tiptap(  # noqa: E731
            people(), page_url, provider="y-websocket", ws=server.ws_url, doc=doc, user=user
        )
    else:

        def open_page(user: str) -> Page:
            page, errors = open_binding_page(people(), page_url, "quill.html", server, doc, user)
            page.errors = errors  # type: ignore[attr-defined]
            return page

    aiko = Writer(open_page("aiko"), editor)
    remo = Writer(open_page("remo"), editor)
    undo = aiko.page.evaluate_handle(
        "() => new window.harness.palimpsest.ServerUndo(window.harness.provider, {user: 'aiko'})"
    )
    aiko.hold()
    aiko.page.locator(EDITORS[editor]["click"]).click()
    aiko.page.keyboard.type("AAAA BBBB")
    for _ in range(4):
        aiko.page.keyboard.press("ArrowLeft")  # the caret: "AAAA |BBBB"
    eventually(lambda: server_text(server, doc, root(editor)) == "AAAA BBBB", what="typed")
    eventually(lambda: remo.ytext() == "AAAA BBBB", what="Remo has the line")
    undo.evaluate("(u) => u.closeGroup()")  # the typing is a step of its own
    aiko.listen()

    remote = 0
    for steps, committed in plan:
        for step in steps:
            aiko.pre_edit(step)
            remote += 1
            remo.insert_before("BBBB", f"[{remote}]")  # at Aiko's caret, as Remo sees it
            aiko.wait_received(f"[{remote}]")
            time.sleep(pause)
        aiko.commit(committed)

    def agreed() -> str | None:
        stored = server_text(server, doc, root(editor))
        return stored if seen(aiko, remo) == {stored} and stored.count("[") == remote else None

    text = agree(agreed, aiko, remo, "both pages and the server agreeing on every edit")
    committed_text = "".join(c for _, c in plan)
    assert TOKEN.sub("", text) == f"AAAA {committed_text}BBBB", text
    assert sorted(TOKEN.findall(text)) == sorted(f"[{n}]" for n in range(1, remote + 1)), text
    return aiko, remo, undo


def seen(aiko: Writer, remo: Writer, each: bool = False) -> Any:
    """What both pages' editors show and their Y documents hold (as a set, or each)."""
    views = [aiko.ytext(), aiko.shown(), remo.ytext(), remo.shown()]
    return views if each else set(views)


def agree(check: Any, aiko: Writer, remo: Writer, what: str) -> str:
    """eventually(check), failing with what each page holds and shows."""
    try:
        return str(eventually(check, what=what))
    except AssertionError as e:
        raise AssertionError(
            f"{e}\nAiko's Y, view, Remo's Y, view: {seen(aiko, remo, True)}"
        ) from None


def root(editor: str) -> str:
    return "default" if editor == "tiptap" else "quill"


def undo_once_takes_it_back(server: ServerProcess, doc: str, editor: str, aiko: Writer,
                            remo: Writer, undo: Any) -> None:  # fmt: skip
    """One server undo of Aiko's leaves "AAAA BBBB" with Remo's edits, everywhere."""
    result = undo.evaluate("(u) => u.undo()")
    assert result["ok"], result

    def agreed() -> str | None:
        stored = server_text(server, doc, root(editor))
        return (
            stored
            if seen(aiko, remo) == {stored} and TOKEN.sub("", stored) == "AAAA BBBB"
            else None
        )

    text = agree(agreed, aiko, remo, f"one undo taking the composition back ({result})")
    assert text.count("[") == 4, text


@pytest.mark.parametrize("editor", ["tiptap", "quill"])
def test_japanese_composed_at_a_typists_caret_is_stored_as_committed_and_undone_at_once(
    server: ServerProcess, page_url: str, people: Any, doc_name: str, editor: str
) -> None:
    """Aiko composes にほんご → 日本語 at a human pace (longer than the server's 500 ms
    grouping between pre-edit states) while Remo types at her caret. Every page and the
    server hold "AAAA 日本語BBBB" with Remo's four edits, and one server undo takes 日本語
    away (it came as one update with its commit, not one step per pre-edit state)."""
    aiko, remo, undo = compose_beside_a_typist(
        editor, server, page_url, people, doc_name, JAPANESE, pause=0.6
    )
    undo_once_takes_it_back(server, doc_name, editor, aiko, remo, undo)
    for w in (aiko, remo):
        assert not w.page.errors, w.page.errors  # type: ignore[attr-defined]


def test_korean_syllables_composed_back_to_back_in_quill(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """A Korean IME commits each syllable and starts the next one's composition at once;
    Remo types at the caret during each. Every page and the server hold "AAAA 한국어BBBB"
    with Remo's edits."""
    aiko, remo, _ = compose_beside_a_typist("quill", server, page_url, people, doc_name, KOREAN)
    for w in (aiko, remo):
        assert not w.page.errors, w.page.errors  # type: ignore[attr-defined]
