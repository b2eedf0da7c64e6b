"""A server undo in real Lexical (@lexical/yjs over y-websocket, in Chromium) keeps what
others typed in the text node it takes out.

@lexical/yjs keeps each text node as a Y.Map embedded in its paragraph's Y.XmlText before
the node's characters, and every Lexical tab drops characters with no text node's map
before them. Bob typing at the end of Alice's paragraph types into her text node: her
server undo (``POST /api/docs/{doc}/undo?user=alice``) used to delete her node's map with
her characters, and the tabs then deleted Bob's (field test: an empty paragraph; with a
bold word of Bob's, open tabs that showed something else than the server until reloaded).
Here both tabs, a tab opened afterwards (Lexical's view of the server's document) and the
answer agree: Bob's text stays, and Alice's redo brings hers back before it.
tests/test_undo_lexical_marker.py builds the same shape with plain Yjs in Node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Browser, BrowserContext, Page  # noqa: E402
from serverproc import ServerProcess  # noqa: E402
from test_browser import browser, eventually  # noqa: E402, F401 (browser: the fixture)
from test_browser_tiptap import logged_seq, open_binding_page, serve_harness  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("lexical-undo")) as srv:
        yield srv


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_harness(tmp_path_factory.mktemp("lexical-undo-pages")) as url:
        yield url


@pytest.fixture
def people(browser: Browser) -> Iterator[Callable[[], BrowserContext]]:  # noqa: F811
    """A new browser context (a user of its own) per call; all closed at the end."""
    made: list[BrowserContext] = []

    def make() -> BrowserContext:
        made.append(browser.new_context())
        return made[-1]

    yield make
    for ctx in made:
        ctx.close()


ALICE = "Alice wrote this."
BOB = " Bob added this."


def nodes(page: Page) -> Any:
    """Per paragraph, its text nodes as [text, format bits], from Lexical's editor state."""
    return page.evaluate("() => window.harness.nodes()")


def root_text(page: Page) -> str:
    """What Lexical's editor state holds, as $getRoot().getTextContent() gives it."""
    return str(page.evaluate("() => window.harness.rootText()"))


def tab(server: ServerProcess, page_url: str, people: Any, doc: str, user: str) -> Page:
    """`user`'s Lexical tab on `doc`, synced; the errors thrown in it go to its .errors."""
    page, errors = open_binding_page(people(), page_url, "lexical.html", server, doc, user)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def errors_of(*pages: Page) -> list[str]:
    """What was thrown in the pages, uncaught or caught by the harness."""
    return [e for p in pages for e in p.errors + p.evaluate("() => window.harness.errors")]  # type: ignore[attr-defined]


def alice_then_bob(
    server: ServerProcess, page_url: str, people: Any, doc: str
) -> tuple[Page, Page, str]:
    """Alice types her paragraph, Bob opens the document and types at the end of it (into
    her text node); both logged. Returns both pages and the API URL."""
    alice = tab(server, page_url, people, doc, "alice")
    alice.locator("#editor").click()
    alice.keyboard.type(ALICE)
    eventually(lambda: nodes(alice) == [{"type": "paragraph", "text": [[ALICE, 0]]}],
               what="alice's typing")  # fmt: skip
    api = f"{server.http_url}/api/docs/{doc}"
    mine = int(eventually(lambda: logged_seq(alice, api), what="alice's text logged"))
    bob = tab(server, page_url, people, doc, "bob")
    eventually(lambda: nodes(bob) == nodes(alice), what="bob sees alice's paragraph")
    bob.locator("#editor").click()
    bob.keyboard.press("Control+End")
    bob.keyboard.type(BOB)
    # Lexical put his characters into her text node: one node, as both tabs show
    both = [{"type": "paragraph", "text": [[ALICE + BOB, 0]]}]
    eventually(lambda: nodes(alice) == both and nodes(bob) == both, what="bob's typing")
    eventually(lambda: (logged_seq(bob, api) or 0) > mine, what="bob's text logged")
    return alice, bob, api


LAST_WORD = len(ALICE + BOB) - len("this.")
# per case: what bob bolds (a range of the paragraph's text, or None); then the text nodes
# before the undo, after it, and the answer's kept_containers
CASES = {
    "plain": (None, [[ALICE + BOB, 0]], [[BOB, 0]], {"items": 2, "bob": (16, 0)}),
    # Lexical splits her node: "this" and "." in text nodes of his (maps of 5 entries
    # each, in her paragraph); " Bob added " stays in her node, and her map with it
    "bold": (
        (LAST_WORD, LAST_WORD + 4),
        [[ALICE + " Bob added ", 0], ["this", 1], [".", 0]],
        [[" Bob added ", 0], ["this", 1], [".", 0]],
        {"items": 2, "bob": (16, 12)},
    ),
    # all he typed moved to a text node of his: nothing of his is left in her node, whose
    # map goes with her characters (no empty text node); her paragraph alone is kept
    "bold-all": (
        (len(ALICE), len(ALICE + BOB)),
        [[ALICE, 0], [BOB, 1]],
        [[BOB, 1]],
        {"items": 1, "bob": (16, 6)},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_alices_server_undo_keeps_bobs_text_in_her_lexical_node(
    server: ServerProcess, page_url: str, people: Any, doc_name: str, case: str
) -> None:
    """Alice types, Bob types at the end of her paragraph (and bolds his last word, or all
    he typed), Alice asks for a server undo: her text goes, Bob's stays in both tabs, in a
    tab opened now and in the server's document, and the answer names Bob; her redo brings
    hers back before his, in every tab. (Before: an empty paragraph in every tab; with
    Bob's bold word, a new tab showed "this." while the open tabs showed nothing.)"""
    selection, text, undone, kept = CASES[case]
    doc_name = f"{doc_name[:40]}-{case}"  # (doc_name cuts the ids)
    alice, bob, api = alice_then_bob(server, page_url, people, doc_name)
    if selection:  # bob bolds it, with Lexical's shortcut
        bob.evaluate("([s, e]) => window.harness.select(0, s, e)", list(selection))
        bob.keyboard.press("Control+b")
        want = [{"type": "paragraph", "text": text}]
        eventually(lambda: nodes(alice) == want and nodes(bob) == want, what="bob's bold")
        eventually(lambda: logged_seq(bob, api), what="bob's bold logged")
    seen = logged_seq(alice, api)

    r = httpx.post(f"{api}/undo", params={"user": "alice"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["ok"] is True, answer
    assert answer["removed"]["characters"] == len(ALICE), answer
    assert "removed_others" not in answer, answer
    want = [{"type": "paragraph", "text": undone}]
    eventually(lambda: (logged_seq(alice, api) or 0) > (seen or 0), what="the undo reached alice")
    try:
        eventually(lambda: nodes(alice) == want and nodes(bob) == want,
                   what="bob's text in both tabs after alice's undo")  # fmt: skip
    except AssertionError as e:  # what each tab shows, and a tab opened now (the server's)
        now = tab(server, page_url, people, doc_name, "carol")
        views = {"alice": nodes(alice), "bob": nodes(bob), "a new tab": nodes(now)}
        raise AssertionError(f"{e}: {views}, answer {answer}") from None
    assert root_text(alice) == root_text(bob) == BOB
    # the tabs wrote nothing back that the server does not hold, nor the reverse
    eventually(lambda: logged_seq(alice, api) and logged_seq(bob, api), what="the server's")
    carol = tab(server, page_url, people, doc_name, "carol")
    assert nodes(carol) == want and root_text(carol) == BOB, nodes(carol)

    # kept: her paragraph (her first keystroke made it) and, while Bob's characters are in
    # it, her text node's map; the counts of Bob's are of all he has in the paragraph
    chars, items = kept["bob"]
    assert answer["kept_containers"] == {
        "items": kept["items"],
        "others": [{"user": "bob", "characters": chars, "items": items}],
    }, answer

    r = httpx.post(f"{api}/redo", params={"user": "alice"})
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    want = [{"type": "paragraph", "text": text}]
    eventually(lambda: all(nodes(p) == want for p in (alice, bob, carol)),
               what="alice's redo in every tab")  # fmt: skip
    assert root_text(alice) == root_text(bob) == root_text(carol) == ALICE + BOB
    eventually(lambda: all(logged_seq(p, api) for p in (alice, bob, carol)), what="all logged")
    later = tab(server, page_url, people, doc_name, "carol")
    assert nodes(later) == want, nodes(later)
    assert not errors_of(alice, bob, carol, later)
