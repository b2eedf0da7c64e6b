"""Tiptap 3 + its Collaboration extension, Quill 2, Lexical and Monaco, in Chromium,
through the real server.

The page (tests/browser_tiptap: pinned npm packages, bundled with esbuild at set-up) is
what Tiptap's docs tell people to build: StarterKit, Collaboration with its own
client-side undo (y-tiptap's Y.UndoManager), and a provider chosen by the query:
`?provider=y-websocket` (against /ws) or `?provider=hocuspocus` (against /hocuspocus).
The Quill page (quill.html, bundled beside it) binds Quill 2 to a Y.Text with y-quill,
the Lexical page (lexical.html) binds Lexical with @lexical/yjs, and the Monaco page
(monaco.html) binds Monaco with y-monaco, all through y-websocket. All are served from
a loopback HTTP server of its own; each user is a browser context.

The first scenario is issue 16's: Alice types, presses Ctrl-Z, Bob edits, Alice types again.
Without the server echoing each update to its sender, Alice's binding keeps a stale
position after the undo, never draws Bob's change, and her next keystroke writes her
stale view back: Bob's text is deleted for everyone (ueberdosis/y-tiptap#48).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect  # noqa: E402
from serverproc import ServerProcess, free_port  # noqa: E402
from test_browser import browser, eventually  # noqa: E402, F401 (browser: the fixture)

pytestmark = pytest.mark.browser

HARNESS = Path(__file__).resolve().parent / "browser_tiptap"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bundle the harness and serve it over HTTP on loopback; yields its base URL."""
    with serve_harness(tmp_path_factory.mktemp("tiptap-page")) as url:
        yield url


@contextlib.contextmanager
def serve_harness(out: Path) -> Iterator[str]:
    """Bundle the harness into `out` and serve it on loopback; yields index.html's URL
    (tests/test_browser_ime_bindings.py's pages too)."""
    if shutil.which("npx") is None:
        pytest.fail("Node.js/npx not installed")
    if not (HARNESS / "node_modules" / "@tiptap" / "core").is_dir():
        pytest.fail("npm packages missing: ./scripts/test runs npm ci in tests/browser_tiptap")
    subprocess.run([str(HARNESS / "build.sh"), str(out)], check=True, timeout=120)
    handler = functools.partial(_QuietHandler, directory=str(out))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("tiptap")) as srv:
        yield srv


@pytest.fixture
def people(browser: Browser) -> Iterator[Callable[[], BrowserContext]]:  # noqa: F811
    made: list[BrowserContext] = []

    def make() -> BrowserContext:
        ctx = browser.new_context()
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


# ---------------------------------------------------------------- helpers


def open_tiptap(
    ctx: BrowserContext, page_url: str, *, provider: str, ws: str, doc: str, user: str
) -> Page:
    """Open the harness page as `user` and wait until its provider has synced."""
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # y-websocket catches what a Yjs observer throws and only logs it
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    query = urllib.parse.urlencode({"provider": provider, "ws": ws, "doc": doc, "user": user})
    page.goto(f"{page_url}?{query}")
    eventually(
        lambda: page.evaluate("() => window.harness?.ready() ?? false"),
        what=f"{user}'s {provider} provider synced",
    )
    return page


def view_text(page: Page) -> str:
    return str(page.evaluate("() => window.harness.viewText()"))


def view_json(page: Page) -> Any:
    return page.evaluate("() => window.harness.viewJSON()")


def fragment(page: Page) -> str:
    return str(page.evaluate("() => window.harness.fragmentXML()"))


def type_at_end(page: Page, text: str) -> None:
    page.locator(".ProseMirror").click()
    page.keyboard.press("Control+End")
    page.keyboard.type(text)


def explain(*pages: Page) -> str:
    """What each page shows, for failure messages."""
    out = []
    for p in pages:
        user = p.evaluate("() => new URLSearchParams(location.search).get('user')")
        out.append(
            f"{user}: view={view_text(p)!r} fragment={fragment(p)!r} "
            f"errors={p.errors + p.evaluate('() => window.harness.errors')}"  # type: ignore[attr-defined]
        )
    return "\n".join(out)


def ws_base(server: ServerProcess, provider: str) -> str:
    return (
        server.ws_url
        if provider == "y-websocket"
        else f"ws://{server.host}:{server.port}/hocuspocus"
    )


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("provider", ["y-websocket", "hocuspocus"])
def test_tiptap_client_undo_then_remote_change_loses_nothing(
    server: ServerProcess, page_url: str, people: Any, doc_name: str, provider: str
) -> None:
    """Issue 16's sequence: Alice types, presses Ctrl-Z (Tiptap's own Y.UndoManager), Bob
    makes a change, Alice types again; nobody's text is lost.

    After the undo, y-tiptap's binding keeps the selection from before Alice's typing
    as its "selection before the next transaction" until a transaction comes. With the
    echo, that transaction is the echo of Alice's undo. Without it, it is Bob's change:
    when the document shrank under Alice's caret meanwhile (here Bob clears his first
    paragraph while Alice types; in the issue, his undo), the binding resolves the stale
    offset, throws RangeError, never draws Bob's change, and Alice's next keystroke
    writes her stale view back: Bob's change is deleted for everyone."""
    ws = ws_base(server, provider)
    bob = open_tiptap(people(), page_url, provider=provider, ws=ws, doc=doc_name, user="bob")
    type_at_end(bob, "Bob's long first paragraph, with many words in it")
    bob.keyboard.press("Enter")
    bob.keyboard.type("Short")
    alice = open_tiptap(people(), page_url, provider=provider, ws=ws, doc=doc_name, user="alice")
    eventually(lambda: "Short" in view_text(alice), what="Alice sees Bob's text")

    # Alice types
    type_at_end(alice, " Alice wrote this")
    eventually(lambda: "Alice wrote this" in view_text(bob), what="Bob sees Alice's text")
    # Bob clears his first paragraph: the document shrinks under Alice's caret
    bob.locator(".ProseMirror").click()
    bob.keyboard.press("Control+Home")
    bob.keyboard.press("Shift+End")
    bob.keyboard.press("Backspace")
    eventually(lambda: "many words" not in view_text(alice), what="Alice sees Bob's deletion")

    # Alice presses Ctrl-Z
    alice.keyboard.press("Control+z")
    eventually(lambda: "Alice" not in view_text(alice), what="Alice's undo in her view")
    eventually(lambda: "Alice" not in view_text(bob), what="Alice's undo reaches Bob")

    # Bob makes a change: one transaction, as a redo or a paste would be
    bob.locator(".ProseMirror").click()
    bob.keyboard.press("Control+End")
    bob.keyboard.insert_text(" and Bob's words")
    # Alice's Y document receives it whatever her view does: wait for that, not the view
    eventually(lambda: "Bob's words" in fragment(alice), what="Bob's change reaches Alice")

    # Alice types again
    type_at_end(alice, " Alice again")

    def converged() -> bool:
        return (
            fragment(alice) == fragment(bob)
            and view_json(alice) == view_json(bob)
            and "Alice again" in fragment(bob)
        )

    try:
        eventually(converged, what="both views and fragments identical")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{explain(alice, bob)}") from None
    for page in (alice, bob):
        text = view_text(page)
        assert "Short and Bob's words" in text, explain(alice, bob)  # Bob's change kept
        assert "Alice again" in text, explain(alice, bob)
        assert "Alice wrote this" not in text, explain(alice, bob)  # undone stays undone
        assert "many words" not in text, explain(alice, bob)
    assert not alice.errors and not bob.errors, explain(alice, bob)  # type: ignore[attr-defined]


def logged_seq(page: Page, api: str) -> int | None:
    """The head's seq once the server's head version holds everything the page's Y.Doc
    holds (the same state vector, both encoded by the page's Yjs), else None."""
    r = httpx.get(f"{api}/versions/head", params={"format": "update"})
    same = page.evaluate(
        """(b64) => {
        const { Y, ydoc } = window.harness
        const head = new Y.Doc()
        Y.applyUpdate(head, Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)))
        const a = Y.encodeStateVector(head), b = Y.encodeStateVector(ydoc)
        return a.length === b.length && a.every((x, i) => x === b[i])
    }""",
        base64.b64encode(r.content).decode(),
    )
    return int(r.headers["X-Palimpsest-Seq"]) if same else None


def _marked(doc: Any) -> list[tuple[str, str, list[str]]]:
    """(node type, text, mark types) of every text node in a Tiptap JSON document."""
    out: list[tuple[str, str, list[str]]] = []
    for node in doc.get("content", []):
        for leaf in node.get("content", []):
            marks = [m["type"] for m in leaf.get("marks", [])]
            out.append((node["type"], leaf.get("text", ""), marks))
    return out


def test_restore_brings_back_marks_and_headings(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Alice writes a heading and a paragraph with a bold word, then rewrites it all; a
    restore of the first version over HTTP gives her editor back the heading, the
    paragraph and the bold mark. y-prosemirror keeps a mark as the formatting of the
    XML's text ({"bold": {}}): a restore that copied text nodes as XML strings put the
    literal text "<bold>bold</bold>" into her paragraph, and one that compared plain
    text found a version that differed in its marks alone "already equal"."""
    ws = ws_base(server, "y-websocket")
    alice = open_tiptap(people(), page_url, provider="y-websocket", ws=ws, doc=doc_name,
                        user="alice")  # fmt: skip
    alice.locator(".ProseMirror").click()
    alice.keyboard.type("# Title")  # StarterKit's input rule: a heading, level 1
    alice.keyboard.press("Enter")
    alice.keyboard.type("Some ")
    alice.keyboard.press("Control+b")
    alice.keyboard.type("bold")
    alice.keyboard.press("Control+b")
    alice.keyboard.type(" words")
    want = [("heading", "Title", []), ("paragraph", "Some ", []),
            ("paragraph", "bold", ["bold"]), ("paragraph", " words", [])]  # fmt: skip
    eventually(lambda: _marked(view_json(alice)) == want, what="alice's first version")
    api = f"{server.http_url}/api/docs/{doc_name}"

    seq = eventually(lambda: logged_seq(alice, api), what="the first version logged")

    # the bold taken off, the heading made a paragraph, the words changed
    alice.keyboard.press("Control+a")
    alice.keyboard.type("Rewritten")
    eventually(lambda: _marked(view_json(alice)) == [("paragraph", "Rewritten", [])],
               what="alice's rewrite")  # fmt: skip
    eventually(lambda: (logged_seq(alice, api) or 0) > seq, what="the rewrite logged")
    r = httpx.post(f"{api}/restore", json={"seq": seq}, params={"user": "bob"})
    assert r.status_code == 200 and r.json()["seq"], r.text
    restored = r.json()["seq"]
    try:
        eventually(lambda: _marked(view_json(alice)) == want, what="the version in her editor")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{explain(alice)}") from None
    assert "<bold>" not in view_text(alice), explain(alice)
    assert not alice.errors, explain(alice)  # type: ignore[attr-defined]

    # the formatting alone: bold taken off, then the version restored again
    alice.locator(".ProseMirror").click()
    alice.keyboard.press("Control+a")
    alice.keyboard.press("Control+b")  # all bold
    alice.keyboard.press("Control+b")  # none bold
    eventually(lambda: all(not m for _, _, m in _marked(view_json(alice))), what="no bold")
    eventually(lambda: (logged_seq(alice, api) or 0) > restored, what="the unbolding logged")
    r = httpx.post(f"{api}/restore", json={"seq": seq}, params={"user": "bob"})
    assert r.status_code == 200 and r.json()["seq"], r.text
    eventually(lambda: _marked(view_json(alice)) == want, what="the bold back in her editor")


def test_server_undo_skips_a_paragraph_a_restore_brought_back(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Field test s13b: Bob writes two paragraphs, Alice deletes the second in her
    editor, Carol restores the version that had it, and Alice's server undo of her
    deletion finds it done by the restore, and changes nothing: both editors show the two
    paragraphs once. It brought the deleted paragraph back beside the restore's, and
    everyone read it twice (tests/test_undo_restored.py plays it without a browser)."""
    ws = ws_base(server, "y-websocket")
    bob = open_tiptap(people(), page_url, provider="y-websocket", ws=ws, doc=doc_name, user="bob")
    bob.locator(".ProseMirror").click()
    bob.keyboard.type("Intro paragraph.")
    bob.keyboard.press("Enter")
    bob.keyboard.type("Second paragraph draft.")
    both = [("paragraph", "Intro paragraph.", []), ("paragraph", "Second paragraph draft.", [])]
    api = f"{server.http_url}/api/docs/{doc_name}"
    seq = eventually(lambda: logged_seq(bob, api), what="bob's paragraphs logged")
    alice = open_tiptap(people(), page_url, provider="y-websocket", ws=ws, doc=doc_name,
                        user="alice")  # fmt: skip
    eventually(lambda: _marked(view_json(alice)) == both, what="alice sees them")
    alice.evaluate(
        """() => { const e = window.harness.editor, d = e.state.doc
        e.commands.deleteRange({ from: d.child(0).nodeSize, to: d.content.size }) }"""
    )
    eventually(lambda: _marked(view_json(bob)) == both[:1], what="alice's deletion at bob's")
    eventually(lambda: (logged_seq(alice, api) or 0) > seq, what="the deletion logged")
    r = httpx.post(f"{api}/restore", json={"seq": seq}, params={"user": "carol"})
    assert r.status_code == 200 and r.json()["seq"], r.text
    eventually(lambda: _marked(view_json(alice)) == both, what="the restore in her editor")

    r = httpx.post(f"{api}/undo", params={"user": "alice"})
    # done by the restore: it stops there, changing nothing
    assert r.status_code == 200 and r.json()["already"] == "restored", r.text
    assert r.json()["skipped"] and r.json()["removed"]["characters"] == 0, r.text
    for page in (alice, bob):
        eventually(lambda p=page: _marked(view_json(p)) == both, what="the paragraphs once")
    assert not alice.errors and not bob.errors, explain(alice, bob)  # type: ignore[attr-defined]


def plan_with_bold_words(
    server: ServerProcess, page_url: str, people: Any, doc: str
) -> tuple[Page, Page, str, int]:
    """Alice writes a heading "Plan" and a paragraph in Tiptap, then Bob adds bold words
    " today" from his; both logged. Returns their pages, the document's API URL and the
    seq of Alice's version."""
    ws = ws_base(server, "y-websocket")
    alice = open_tiptap(people(), page_url, provider="y-websocket", ws=ws, doc=doc, user="alice")
    alice.locator(".ProseMirror").click()
    alice.keyboard.type("# Plan")
    alice.keyboard.press("Enter")
    alice.keyboard.type("We ship it")
    api = f"{server.http_url}/api/docs/{doc}"
    mine = int(eventually(lambda: logged_seq(alice, api), what="alice's text logged"))
    bob = open_tiptap(people(), page_url, provider="y-websocket", ws=ws, doc=doc, user="bob")
    eventually(lambda: "We ship it" in view_text(bob), what="bob sees alice's text")
    type_at_end(bob, "")
    bob.keyboard.press("Control+b")
    bob.keyboard.type(" today")
    eventually(lambda: "today" in view_text(alice), what="alice sees bob's words")
    eventually(lambda: (logged_seq(bob, api) or 0) > mine, what="bob's words logged")
    return alice, bob, api, mine


def test_tiptap_blame_and_diff_name_who_wrote_each_part(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Alice writes a heading and a paragraph in Tiptap, Bob adds bold words to her
    paragraph from his: the XML root's blame names Alice for the heading, the paragraph
    and her words, Bob for his, with his bold mark; the diff since Alice's version
    shows his words as his insert."""
    alice, bob, api, mine = plan_with_bold_words(server, page_url, people, doc_name)

    blame = httpx.get(f"{api}/blame", params={"root": "default"}).json()["roots"]["default"]
    assert blame["type"] == "xml", blame
    # the tree is the editor's: a block per element, each with its text
    blocks = [(n["element"], "".join(r["text"] for t in n["children"] for r in t["runs"]))
              for n in blame["nodes"]]  # fmt: skip
    shown = [(b["type"], "".join(x.get("text", "") for x in b.get("content", [])))
             for b in view_json(alice)["content"]]  # fmt: skip
    assert blocks == shown, blame
    heading = blame["nodes"][0]
    assert (heading["element"], heading["attributes"], heading["actor"]) == (
        "heading",
        {"level": 1},
        "alice",
    ), blame
    # who wrote each character, and bob's words in his bold
    written: dict[str, str] = {}
    for node in blame["nodes"]:
        assert node["actor"] == "alice"  # alice made every block (bob typed into hers)
        for run in (r for t in node["children"] for r in t["runs"]):
            written[run["actor"]] = written.get(run["actor"], "") + run["text"]
            assert (run.get("attributes") == {"bold": {}}) == (run["actor"] == "bob"), blame
    assert written == {"alice": "PlanWe ship it", "bob": " today"}, blame

    d = httpx.get(f"{api}/diff", params={"from": mine, "root": "default"}).json()
    nodes = d["roots"]["default"]["nodes"]
    assert {n["op"] for n in nodes} == {"equal"}, d
    changed = [o for n in nodes for t in n["children"] for o in t["ops"] if o["op"] != "equal"]
    # an op per keystroke (each its own seq), as a text root's diff has
    assert "".join(o["text"] for o in changed) == " today", d
    assert {(o["op"], o["actor"], str(o.get("attributes"))) for o in changed} == {
        ("insert", "bob", "{'bold': {}}")
    }, d
    assert not alice.errors and not bob.errors, explain(alice, bob)  # type: ignore[attr-defined]


def test_tiptap_enter_keeps_who_wrote_the_text_it_moves(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Bob presses Enter in the middle of Alice's paragraph: y-prosemirror moves the
    text after the caret into a new paragraph (deleted, and inserted again in it).
    Blame names Bob for the new paragraph and still Alice for its words; a Backspace
    that joins them back keeps them hers too."""
    ws = ws_base(server, "y-websocket")
    alice = open_tiptap(people(), page_url, provider="y-websocket", ws=ws, doc=doc_name,
                        user="alice")  # fmt: skip
    type_at_end(alice, "Hello world")
    api = f"{server.http_url}/api/docs/{doc_name}"
    mine = eventually(lambda: logged_seq(alice, api), what="alice's text logged")
    bob = open_tiptap(people(), page_url, provider="y-websocket", ws=ws, doc=doc_name,
                      user="bob")  # fmt: skip
    eventually(lambda: view_text(bob) == "Hello world", what="bob sees alice's text")
    bob.locator(".ProseMirror").click()
    bob.evaluate("() => window.harness.editor.commands.setTextSelection(7)")  # after "Hello "
    bob.keyboard.press("Enter")
    blocks = lambda p: [[x.get("text") for x in b.get("content", [])]  # noqa: E731
                        for b in view_json(p)["content"]]  # fmt: skip
    eventually(lambda: blocks(alice) == [["Hello "], ["world"]], what="alice sees the split")
    eventually(lambda: (logged_seq(bob, api) or 0) > mine, what="bob's Enter logged")

    def blame() -> list[Any]:
        q = {"root": "default", "join": "actor"}
        nodes = httpx.get(f"{api}/blame", params=q).json()["roots"]["default"]["nodes"]
        return [(n["actor"], [(r["text"], r["actor"]) for t in n["children"] for r in t["runs"]])
                for n in nodes]  # fmt: skip

    assert blame() == [("alice", [("Hello ", "alice")]), ("bob", [("world", "alice")])]
    seen = logged_seq(bob, api)
    # Palimpsest's page draws the split as Bob's new paragraph, its words moved there
    carol = open_page(people(), server, doc_name, "carol", f"&history=1&version={mine}")
    body = preview_mode(carol, "diff")
    expect(body.locator('p.node-insert[data-actor="bob"] ins.moved')).to_have_text("world")
    expect(body.locator("del.moved")).to_have_text("world")
    expect(body.locator("ins:not(.moved), del:not(.moved)")).to_have_count(0)
    bob.keyboard.press("Backspace")  # (the caret is at the start of the new paragraph)
    eventually(lambda: blocks(alice) == [["Hello world"]], what="alice sees the join")
    eventually(lambda: (logged_seq(bob, api) or 0) > (seen or 0), what="bob's join logged")
    assert blame() == [("alice", [("Hello world", "alice")])]
    assert not alice.errors and not bob.errors, explain(alice, bob)  # type: ignore[attr-defined]


def open_binding_page(
    ctx: BrowserContext,
    page_url: str,
    name: str,
    server: ServerProcess,
    doc: str,
    user: str = "ann",
    **more: str,
) -> tuple[Page, list[str]]:
    """Open the harness page `name` (quill.html, lexical.html, monaco.html) as `user` on
    y-websocket, with `more` in its query, and wait until it has synced; returns the
    page and the list its errors go to."""
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    query = urllib.parse.urlencode({"ws": server.ws_url, "doc": doc, "user": user, **more})
    page.goto(f"{page_url.rsplit('/', 1)[0]}/{name}?{query}")
    eventually(lambda: page.evaluate("() => window.harness?.ready() ?? false"), what="synced")
    return page, errors


def test_quill_restore_brings_back_formatting_and_images(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Quill 2 with y-quill: a bold word, a header line and an image (an embed in the
    Y.Text), then the bold taken off and the image deleted; a restore over HTTP gives
    Quill the version back, as Quill's own delta shows it. The old restore compared the
    plain text, which these changes leave as it was: "already equal", nothing done. The
    restore's diff shows the formatting it brought back and the image."""
    page, errors = open_binding_page(people(), page_url, "quill.html", server, doc_name)
    page.locator(".ql-editor").click()
    page.keyboard.type("Title")
    page.keyboard.press("Enter")
    page.keyboard.type("Hello world")
    contents = lambda: page.evaluate("() => window.harness.contents()")  # noqa: E731
    eventually(lambda: contents() == [{"insert": "Title\nHello world\n"}], what="typed")
    for _ in range(5):
        page.keyboard.press("Shift+ArrowLeft")
    page.keyboard.press("Control+b")
    page.keyboard.press("End")
    gif = "data:image/gif;base64,R0lGODlhAQABAAAAACw="
    page.evaluate(
        """(gif) => {
        const q = window.harness.quill
        q.formatLine(0, 1, 'header', 1, 'user')
        q.insertEmbed(q.getLength() - 1, 'image', gif, 'user')
    }""",
        gif,
    )
    want = [
        {"insert": "Title"},
        {"attributes": {"header": 1}, "insert": "\n"},
        {"insert": "Hello "},
        {"attributes": {"bold": True}, "insert": "world"},
        {"insert": {"image": gif}},
        {"insert": "\n"},
    ]
    eventually(lambda: contents() == want, what="ann's version in Quill")
    api = f"{server.http_url}/api/docs/{doc_name}"
    head = lambda: httpx.get(f"{api}/versions/head").json()  # noqa: E731
    ytext = page.evaluate("() => window.harness.ytext()")

    def all_logged() -> int | None:
        """The head version's delta is what ann's Y.Text holds: all of it is logged."""
        v = head()
        return v["seq"] if v["roots"].get("quill", {}).get("delta") == ytext else None

    seq = eventually(all_logged, what="ann's version logged, formatting and image included")

    # the plain text stays; the bold, the header and the image go
    page.evaluate(
        """() => {
        const q = window.harness.quill
        q.formatText(0, q.getLength(), {bold: false, header: false}, 'user')
        q.deleteText(q.getText().indexOf('world') + 5, 1, 'user')
    }"""
    )
    eventually(lambda: contents() == [{"insert": "Title\nHello world\n"}], what="unformatted")
    # plain text again: the head version has no delta any more
    eventually(lambda: "delta" not in head()["roots"]["quill"], what="the change logged")
    plain = head()["seq"]
    r = httpx.post(f"{api}/restore", json={"seq": seq}, params={"user": "bob"})
    assert r.status_code == 200 and r.json()["seq"], r.text
    eventually(lambda: contents() == want, what="the version back in Quill")
    assert page.evaluate("() => window.harness.ytext()") == ytext
    assert head()["roots"]["quill"]["delta"] == ytext
    # the diff of the restore shows what it did: the header and the bold as format ops
    # by bob, who restored, and the image he inserted
    d = httpx.get(f"{api}/diff", params={"from": plain, "to": r.json()["seq"]}).json()
    ops = [(o["op"], o["text"], o.get("attributes"), o.get("was"), o.get("embed"), o["actor"])
           for o in d["roots"]["quill"]["ops"]]  # fmt: skip
    assert ops == [
        ("equal", "Title", None, None, None, None),
        ("format", "\n", {"header": 1}, {}, None, "bob"),
        ("equal", "Hello ", None, None, None, None),
        ("format", "world", {"bold": True}, {}, None, "bob"),
        ("insert", "\ufffc", None, None, {"image": gif}, "bob"),
    ], ops  # (Quill's last newline is its own, not the Y.Text's)
    assert not errors and not page.evaluate("() => window.harness.errors"), errors


def test_lexical_restore_brings_back_its_nodes_and_formats(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Lexical with @lexical/yjs keeps its document unlike ProseMirror: the root is a
    Y.XmlText, each paragraph a Y.XmlText embedded in it, each text node a Y.Map (its
    format bits, 1 for bold) embedded before its characters. A bold word,
    rewritten, then restored over HTTP comes back as Lexical's own nodes. (pycrdt's
    insert_embed of an integrated Y.Map makes an empty one: copied that way, the text
    nodes lost their type and format.)"""
    page, errors = open_binding_page(people(), page_url, "lexical.html", server, doc_name)
    nodes = lambda: page.evaluate("() => window.harness.nodes()")  # noqa: E731
    page.locator("#editor").click()
    page.keyboard.type("Hello world")
    typed = [{"type": "paragraph", "text": [["Hello world", 0]]}]
    eventually(lambda: nodes() == typed, what="ann's typing in Lexical")
    page.evaluate("() => window.harness.select(0, 6, 11)")  # "world", as a drag would
    page.keyboard.press("Control+b")
    want = [{"type": "paragraph", "text": [["Hello ", 0], ["world", 1]]}]
    eventually(lambda: nodes() == want, what="ann's bold word in Lexical")
    api = f"{server.http_url}/api/docs/{doc_name}"
    seq = eventually(lambda: logged_seq(page, api), what="all of it logged")

    page.keyboard.press("Control+a")
    page.keyboard.type("Rewritten")
    rewritten = [{"type": "paragraph", "text": [["Rewritten", 0]]}]
    eventually(lambda: nodes() == rewritten, what="ann's rewrite")
    eventually(lambda: (logged_seq(page, api) or 0) > seq, what="the rewrite logged")
    r = httpx.post(f"{api}/restore", json={"seq": seq}, params={"user": "bob"})
    assert r.status_code == 200 and r.json()["seq"], r.text
    eventually(lambda: nodes() == want, what="the version back in Lexical")
    # server-side undo on Lexical's layout: bob's undo takes his restore back
    r = httpx.post(f"{api}/undo", params={"user": "bob"})
    assert r.status_code == 200, r.text
    eventually(lambda: nodes() == rewritten, what="bob's restore undone in Lexical")
    assert not errors and not page.evaluate("() => window.harness.errors"), errors


def test_lexical_client_undo_then_remote_change_loses_nothing(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Issue 16's sequence in Lexical, with its own undo (a Y.UndoManager, as
    @lexical/react's CollaborationPlugin wires it): Ann types, Bob clears his paragraph
    under her, Ann presses Ctrl-Z, Bob adds words, Ann types again. Both editors end
    alike, with Bob's words and Ann's new ones, her undone text gone, and the server's
    state is theirs."""
    bob, bob_errors = open_binding_page(people(), page_url, "lexical.html", server, doc_name,
                                        user="bob")  # fmt: skip
    text = lambda p: [("".join(t for t, _ in n["text"])) for n in p.evaluate(  # noqa: E731
        "() => window.harness.nodes()")]  # fmt: skip
    bob.locator("#editor").click()
    bob.keyboard.type("Bob's long first paragraph, with many words in it")
    bob.keyboard.press("Enter")
    bob.keyboard.type("Short")
    ann, ann_errors = open_binding_page(people(), page_url, "lexical.html", server, doc_name)
    eventually(lambda: text(ann) == text(bob) and "Short" in text(ann), what="ann sees bob's")
    ann.locator("#editor").click()
    ann.keyboard.press("Control+End")
    ann.keyboard.type(" Ann wrote this")
    eventually(lambda: text(bob)[-1] == "Short Ann wrote this", what="bob sees ann's words")
    bob.evaluate("(n) => window.harness.select(0, 0, n)", len(text(bob)[0]))
    bob.keyboard.press("Backspace")
    eventually(lambda: text(ann)[0] == "", what="ann sees bob's paragraph cleared")
    ann.keyboard.press("Control+z")
    eventually(lambda: text(ann) == ["", "Short"] and text(bob) == ["", "Short"],
               what="ann's undo in both editors")  # fmt: skip
    bob.keyboard.press("Control+End")
    bob.keyboard.insert_text(" and Bob's words")
    eventually(lambda: text(ann) == ["", "Short and Bob's words"], what="bob's words reach ann")
    ann.keyboard.press("Control+End")
    ann.keyboard.type(" Ann again")
    want = ["", "Short and Bob's words Ann again"]
    eventually(lambda: text(ann) == want and text(bob) == want, what="both editors alike")
    api = f"{server.http_url}/api/docs/{doc_name}"
    eventually(lambda: logged_seq(ann, api) and logged_seq(bob, api), what="the server's")
    assert not ann_errors and not bob_errors, (ann_errors, bob_errors)
    for page in (ann, bob):
        assert not page.evaluate("() => window.harness.errors")


def test_quill_client_undo_then_remote_change_loses_nothing(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Issue 16's sequence in Quill 2 with its own undo (its history module, for the
    user's own changes only, as y-quill's binding is used): Ann types, Bob clears his
    first line under her, Ann presses Ctrl-Z, Bob adds words, Ann types again. Both
    editors end alike, with Bob's words and Ann's new ones, her undone text gone, and
    the server's state is theirs."""
    bob, bob_errors = open_binding_page(people(), page_url, "quill.html", server, doc_name,
                                        user="bob")  # fmt: skip
    text = lambda p: p.evaluate("() => window.harness.quill.getText()")  # noqa: E731
    bob.locator(".ql-editor").click()
    bob.keyboard.type("Bob's long first line, with many words in it")
    bob.keyboard.press("Enter")
    bob.keyboard.type("Short")
    ann, ann_errors = open_binding_page(people(), page_url, "quill.html", server, doc_name)
    eventually(lambda: "Short" in text(ann), what="ann sees bob's text")
    ann.locator(".ql-editor").click()
    ann.keyboard.press("Control+End")
    ann.keyboard.type(" Ann wrote this")
    eventually(lambda: "Short Ann wrote this" in text(bob), what="bob sees ann's words")
    n = len("Bob's long first line, with many words in it")
    bob.evaluate("(n) => window.harness.quill.setSelection(0, n, 'user')", n)
    bob.keyboard.press("Backspace")
    eventually(lambda: text(ann).startswith("\nShort"), what="ann sees bob's line cleared")
    ann.keyboard.press("Control+z")
    eventually(lambda: text(ann) == "\nShort\n" and text(bob) == "\nShort\n",
               what="ann's undo in both editors")  # fmt: skip
    bob.keyboard.press("Control+End")
    bob.keyboard.insert_text(" and Bob's words")
    eventually(lambda: text(ann) == "\nShort and Bob's words\n", what="bob's words reach ann")
    ann.keyboard.press("Control+End")
    ann.keyboard.type(" Ann again")
    want = "\nShort and Bob's words Ann again\n"
    eventually(lambda: text(ann) == want and text(bob) == want, what="both editors alike")
    api = f"{server.http_url}/api/docs/{doc_name}"
    eventually(lambda: logged_seq(ann, api) and logged_seq(bob, api), what="the server's")
    assert not ann_errors and not bob_errors, (ann_errors, bob_errors)


def hello_bold_world(
    server: ServerProcess, page_url: str, people: Any, doc: str
) -> tuple[tuple[Page, list[str]], tuple[Page, list[str]], str, int]:
    """Ann types "Hello " in Lexical, then Bob adds a bold "world" from his; both logged.
    Returns each page with its errors, the document's API URL and the seq of Ann's
    version."""
    ann, ann_errors = open_binding_page(people(), page_url, "lexical.html", server, doc)
    nodes = lambda p: p.evaluate("() => window.harness.nodes()")  # noqa: E731
    ann.locator("#editor").click()
    ann.keyboard.type("Hello ")
    eventually(lambda: nodes(ann) == [{"type": "paragraph", "text": [["Hello ", 0]]}],
               what="ann's typing")  # fmt: skip
    api = f"{server.http_url}/api/docs/{doc}"
    mine = int(eventually(lambda: logged_seq(ann, api), what="ann's text logged"))
    bob, bob_errors = open_binding_page(people(), page_url, "lexical.html", server, doc, "bob")
    eventually(lambda: nodes(bob) == nodes(ann), what="bob sees ann's paragraph")
    bob.locator("#editor").click()
    bob.keyboard.press("Control+End")
    bob.keyboard.press("Control+b")
    bob.keyboard.type("world")
    want = [{"type": "paragraph", "text": [["Hello ", 0], ["world", 1]]}]
    eventually(lambda: nodes(ann) == want, what="ann sees bob's bold word")
    eventually(lambda: (logged_seq(bob, api) or 0) > mine, what="bob's word logged")
    return (ann, ann_errors), (bob, bob_errors), api, mine


def test_lexical_blame_and_diff_name_who_wrote_each_part(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Ann types a paragraph in Lexical, Bob adds a bold word to it from his: the blame
    of Lexical's root (a root of paragraphs, served as an XML root) gives the paragraph
    as Ann's, each of its text nodes (Y.Maps) with who made it and its format bits, and
    each character with who typed it; the diff since Ann's version shows Bob's text
    node and word as his inserts. Then Ann bolds Bob's next word, which Lexical does by
    moving it into a text node of its own (deleted and inserted again): blame names Ann
    for that text node and still Bob for the word."""
    (ann, ann_errors), (bob, bob_errors), api, mine = hello_bold_world(
        server, page_url, people, doc_name
    )
    nodes = lambda p: p.evaluate("() => window.harness.nodes()")  # noqa: E731

    per_key = httpx.get(f"{api}/blame", params={"root": "root"}).json()["roots"]["root"]
    assert len(per_key["nodes"][0]["runs"]) > 4  # a run per keystroke, each its own seq
    # joined by who typed them
    q = {"root": "root", "join": "actor"}
    blame = httpx.get(f"{api}/blame", params=q).json()["roots"]["root"]
    assert blame["type"] == "xml", blame
    (para,) = blame["nodes"]
    assert (para["actor"], para["attributes"]["__type"]) == ("ann", "paragraph"), blame
    # as Lexical holds it: a text node (its map) before its characters
    parts = [("node", r["node"]["map"]["__format"], r["node"]["actor"]) if "node" in r
             else ("text", r["text"], r["actor"]) for r in para["runs"]]  # fmt: skip
    assert parts == [
        ("node", 0, "ann"),
        ("text", "Hello ", "ann"),
        ("node", 1, "bob"),
        ("text", "world", "bob"),
    ], blame

    d = httpx.get(f"{api}/diff", params={"from": mine, **q}).json()
    (para,) = d["roots"]["root"]["nodes"]
    assert para["op"] in ("equal", "format"), d
    changed = [(o["op"], o["actor"], o["node"]["map"]["__format"] if "node" in o else o["text"])
               for o in para["ops"] if o["op"] != "equal"]  # fmt: skip
    assert changed == [("insert", "bob", 1), ("insert", "bob", "world")], d

    bob.keyboard.press("Control+b")  # (bold off)
    bob.keyboard.type(" again")
    want = [{"type": "paragraph", "text": [["Hello ", 0], ["world", 1], [" again", 0]]}]
    eventually(lambda: nodes(ann) == want, what="ann sees bob's plain words")
    seen = logged_seq(ann, api)
    ann.locator("#editor").click()
    ann.keyboard.press("Control+End")
    selected = lambda: ann.evaluate("""() => {  // Lexical's own selection, not the DOM's
        const state = window.harness.editor.getEditorState()
        return state.read(() => state._selection ? state._selection.getTextContent() : null)
    }""")  # noqa: E731
    eventually(lambda: selected() == "" and nodes(ann) == want, what="ann's caret at the end")
    for _ in range(5):  # (each key checked: Lexical reads the DOM's selection late)
        n = len(selected())
        ann.keyboard.press("Shift+ArrowLeft")
        eventually(lambda n=n: len(selected()) == n + 1, what="one more character selected")
    assert selected() == "again"
    ann.keyboard.press("Control+b")
    want = [{"type": "paragraph",
             "text": [["Hello ", 0], ["world", 1], [" ", 0], ["again", 1]]}]  # fmt: skip
    eventually(lambda: nodes(bob) == want, what="bob sees ann's bold on his word")
    eventually(lambda: (logged_seq(ann, api) or 0) > (seen or 0), what="ann's bold logged")
    blame = httpx.get(f"{api}/blame", params=q).json()["roots"]["root"]
    parts = [("node", r["node"]["map"]["__format"], r["node"]["actor"]) if "node" in r
             else ("text", r["text"], r["actor"]) for r in blame["nodes"][0]["runs"]]  # fmt: skip
    assert parts == [
        ("node", 0, "ann"),
        ("text", "Hello ", "ann"),
        ("node", 1, "bob"),
        ("text", "world", "bob"),
        ("node", 0, "bob"),
        ("text", " ", "bob"),
        ("node", 1, "ann"),  # the text node ann's bold made
        ("text", "again", "bob"),  # bob's word, moved into it
    ], blame
    assert not ann_errors and not bob_errors, (ann_errors, bob_errors)
    for page in (ann, bob):
        assert not page.evaluate("() => window.harness.errors")


def monaco_value(page: Page) -> str:
    return str(page.evaluate("() => window.harness.value()"))


def monaco_pair(
    server: ServerProcess,
    page_url: str,
    people: Any,
    doc: str,
    key: str,
    typed: str,
    want: str,
    **ann_query: str,
) -> tuple[tuple[Page, list[str]], tuple[Page, list[str]], str]:
    """Ann (her page's query with `ann_query`) types "Hello world" in Monaco; Bob presses
    `key` in his and types `typed`; both see `want`, and both edits are logged. Returns
    each page with its errors, and the document's API URL."""
    ann, ann_errors = open_binding_page(people(), page_url, "monaco.html", server, doc,
                                        **ann_query)  # fmt: skip
    bob, bob_errors = open_binding_page(people(), page_url, "monaco.html", server, doc, "bob")
    ann.locator(".monaco-editor").click()
    ann.keyboard.type("Hello world")
    eventually(lambda: monaco_value(bob) == "Hello world", what="ann's typing in bob's Monaco")
    bob.locator(".monaco-editor").click()
    bob.keyboard.press(key)
    bob.keyboard.type(typed)
    eventually(lambda: monaco_value(ann) == want, what="bob's typing in ann's Monaco")
    api = f"{server.http_url}/api/docs/{doc}"
    eventually(lambda: logged_seq(ann, api), what="both logged")
    return (ann, ann_errors), (bob, bob_errors), api


def test_monaco_edits_carets_and_server_undo(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Monaco (VS Code's editor) with y-monaco, the binding Yjs's docs name for it: two
    people type into one document, each sees the other's text, a caret stays where its
    owner left it when text arrives before it (y-monaco keeps selections as relative
    positions), and a server-side undo reaches both editors."""
    (ann, ann_errors), (bob, bob_errors), api = monaco_pair(
        server, page_url, people, doc_name, "Control+End", "!", "Hello world!"
    )
    value = monaco_value
    ann.wait_for_timeout(600)  # past the server's undo capture (500 ms): a group of its own
    ann.keyboard.press("Control+Home")
    ann.keyboard.type("Oh, ")
    want = "Oh, Hello world!"
    eventually(lambda: value(ann) == want and value(bob) == want, what="ann's second edit")
    # bob's caret stayed after his "!", with ann's text arriving before it
    assert bob.evaluate("() => window.harness.caret()") == len(want)
    eventually(lambda: logged_seq(ann, api), what="ann's second edit logged")
    r = httpx.post(f"{api}/undo", params={"user": "ann"})
    assert r.status_code == 200 and r.json()["ok"], r.text
    eventually(
        lambda: value(ann) == "Hello world!" and value(bob) == "Hello world!",
        what="ann's undo in both editors",
    )
    for page in (ann, bob):
        assert page.evaluate("() => window.harness.text()") == "Hello world!"
    assert bob.evaluate("() => window.harness.caret()") == len("Hello world!")
    bob.keyboard.type("?")
    eventually(lambda: value(ann) == "Hello world!?", what="bob typing on after the undo")
    harness_errors = [p.evaluate("() => window.harness.errors") for p in (ann, bob)]
    assert not ann_errors and not bob_errors and harness_errors == [[], []], (
        ann_errors, bob_errors, harness_errors)  # fmt: skip


def test_monaco_ctrl_z_through_the_server_undoes_after_a_remote_edit(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Monaco's own undo does nothing once a collaborator's edit has come in (y-monaco
    does not bind one). Bound to the server's undo as docs/undo.md shows (the harness's
    undo=server), Ctrl-Z takes back Ann's typing after Bob's edit, keeps Bob's, and
    Ctrl-Shift-Z brings it back, in both editors."""
    (ann, ann_errors), (bob, bob_errors), api = monaco_pair(
        server, page_url, people, doc_name, "Control+Home", "Bob: ", "Bob: Hello world",
        undo="server",
    )  # fmt: skip
    value = monaco_value
    ann.keyboard.press("Control+z")
    eventually(lambda: value(ann) == "Bob: " and value(bob) == "Bob: ",
               what="ann's undo in both editors, bob's words kept")  # fmt: skip
    ann.keyboard.press("Control+Shift+z")
    eventually(lambda: value(ann) == "Bob: Hello world" and value(bob) == "Bob: Hello world",
               what="ann's redo in both editors")  # fmt: skip
    kinds = [e["kind"] for e in httpx.get(f"{api}/events", params={"limit": 1000}).json()["events"]]
    assert kinds[-2:] == ["undo", "redo"], kinds
    assert not ann_errors and not bob_errors, (ann_errors, bob_errors)


# ---------------------------------------------------------------- Palimpsest's own page


def open_page(ctx: BrowserContext, server: ServerProcess, doc: str, user: str,
              extra: str = "") -> Page:  # fmt: skip
    """Palimpsest's page (the server's `/`) on `doc`, connected."""
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    query = urllib.parse.urlencode({"doc": doc, "user": user})
    page.goto(f"{server.http_url}/?{query}{extra}")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    return page


def preview_mode(page: Page, mode: str) -> Locator:
    """Switch the page's preview of a version to `mode`; its body, once drawn."""
    page.click(f'#preview-modes [data-mode="{mode}"]')
    expect(page.locator("#preview")).to_have_attribute("data-mode", mode)
    expect(page.locator("#preview")).not_to_have_class(re.compile("loading"))
    return page.locator("#preview-body")


def texts(locator: Locator) -> list[str]:
    return list(locator.all_text_contents())


def scrub_to(page: Page, seq: int) -> None:
    """Move the history panel's version slider to `seq` (once the panel knows the head)
    and wait for that version's preview."""
    scrub = page.locator("#scrub")
    eventually(lambda: int(scrub.get_attribute("max") or 0) >= seq, what="the panel's head")
    scrub.fill(str(seq))
    expect(page.locator("#preview")).to_have_attribute("data-seq", str(seq))
    expect(page.locator("#preview")).not_to_have_class(re.compile("loading"))


def test_the_page_shows_a_tiptap_document_live_and_its_history_by_author(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """A document written in Tiptap, opened in Palimpsest's own page: it used to show an
    empty plain-text editor that invited typing, and a keystroke there added a stray
    `content` text root to the Tiptap document; its history showed the tree as JSON.
    Now the page draws the document as Tiptap lays it out (heading, paragraph, Bob's
    bold), live and read-only, and its history draws any version, the changes since
    (Bob's words as his insert, in bold) and blame (who made each block, who wrote each
    run) on the tree."""
    alice, bob, api, first = plan_with_bold_words(server, page_url, people, doc_name)

    carol = open_page(people(), server, doc_name, "carol")
    live = carol.locator("#live")
    expect(live.locator("h1")).to_have_text("Plan")
    # (bob's click put his words in a paragraph of their own, as Tiptap shows them)
    expect(live.locator("p.x-node")).to_have_text(["We ship it", " today"])
    expect(live.locator("p.x-node strong")).to_have_text(" today")
    expect(carol.locator(".cm-editor")).to_be_hidden()
    live.click()
    carol.keyboard.type("zzz")
    type_at_end(alice, "!")
    expect(live.locator("p.x-node")).to_have_text(["We ship it", " today!"])  # live
    head = eventually(lambda: logged_seq(alice, api), what="alice's ! logged")
    version = httpx.get(f"{api}/versions/head").json()
    assert list(version["roots"]) == ["default"], version  # no stray root from carol's keys
    actors = {
        e["actor"] for e in httpx.get(f"{api}/events", params={"limit": 1000}).json()["events"]
    }
    assert actors == {"alice", "bob"}, actors

    carol.goto(f"{server.http_url}/?doc={doc_name}&user=carol&history=1&version={first}")
    body = carol.locator("#preview-body")
    expect(body.locator("h1")).to_have_text("Plan")
    expect(body.locator("p").first).to_have_text("We ship it")
    expect(body).not_to_contain_text("today")
    body = preview_mode(carol, "diff")
    expect(body.locator('ins[data-actor="bob"]')).to_have_text(" today")
    expect(body.locator('ins[data-actor="bob"] strong')).to_have_text(" today")
    expect(body.locator('ins[data-actor="alice"]')).to_have_text("!")
    expect(body.locator("h1")).to_have_text("Plan")  # unchanged: no mark
    expect(body.locator("[data-op=delete]")).to_have_count(0)
    expect(carol.locator("#preview-legend")).to_contain_text(f"(#{head})")
    expect(carol.locator("#preview-legend")).not_to_contain_text("null")
    body = preview_mode(carol, "blame")
    expect(body.locator('h1.made[data-actor="alice"]')).to_have_text("Plan")
    expect(body.locator('p.made[data-actor="alice"]').first).to_have_text("We ship it")
    assert texts(body.locator('.blame-run[data-actor="alice"]')) == ["Plan", "We ship it"]
    expect(body.locator('.blame-run[data-actor="bob"]')).to_have_count(0)  # not yet, at #first
    scrub_to(carol, head)  # the slider to the live head
    expect(carol.locator("#preview")).to_have_attribute("data-seq", str(head))
    expect(body.locator('.blame-run[data-actor="bob"] strong')).to_have_text(" today")
    expect(carol.locator("#preview-legend .author-chip")).to_have_text(["alice", "bob"])
    scrub_to(carol, first)  # and restored from the page: back to alice's first version
    carol.click("#restore-btn")  # which takes out what bob and alice wrote since: asked
    expect(carol.locator("#ask-text")).to_have_text(
        "This removes 6 characters written by bob and 1 by alice since that version. Restore?"
    )
    carol.click("#ask-yes")
    eventually(lambda: "today" not in view_text(alice), what="the restore in alice's Tiptap")
    assert "PlanWe ship it" in view_text(alice).replace("\n", ""), explain(alice)
    expect(carol.locator("#live")).to_be_visible()
    expect(carol.locator("#live")).not_to_contain_text("today")
    expect(carol.locator("#live h1")).to_have_text("Plan")
    assert not carol.errors and not alice.errors and not bob.errors, (  # type: ignore[attr-defined]
        carol.errors, explain(alice, bob))  # type: ignore[attr-defined]  # fmt: skip


def test_the_page_shows_lexical_and_quill_documents_as_their_editors_lay_them_out(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """Lexical keeps a bold word as a text node (a Y.Map with __format 1) before its
    characters, Quill as a bold attribute and an image as an embed: Palimpsest's page
    draws both as their editors do, live, and Lexical's blame names Bob for his bold
    word on the tree."""
    (ann, ann_errors), (bob, bob_errors), api, mine = hello_bold_world(
        server, page_url, people, doc_name
    )
    carol = open_page(people(), server, doc_name, "carol", "&history=1")
    live = carol.locator("#live")
    expect(live.locator('p[data-element="paragraph"]')).to_have_text("Hello world")
    expect(live.locator("p strong")).to_have_text("world")
    scrub_to(carol, mine)
    body = carol.locator("#preview-body")
    expect(body.locator("p")).to_have_text("Hello ")
    body = preview_mode(carol, "diff")
    expect(body.locator('ins[data-actor="bob"] strong')).to_have_text("world")
    body = preview_mode(carol, "blame")
    expect(body.locator('p.made[data-actor="ann"]')).to_have_text("Hello ")
    assert not carol.errors and not ann_errors and not bob_errors, (  # type: ignore[attr-defined]
        carol.errors, ann_errors, bob_errors)  # type: ignore[attr-defined]  # fmt: skip

    quill_doc = doc_name + "-quill"
    quill, quill_errors = open_binding_page(people(), page_url, "quill.html", server, quill_doc)
    quill.locator(".ql-editor").click()
    quill.keyboard.type("Title")
    quill.keyboard.press("Enter")
    quill.keyboard.type("Hello world")
    for _ in range(5):
        quill.keyboard.press("Shift+ArrowLeft")
    quill.keyboard.press("Control+b")
    quill.keyboard.press("End")
    gif = "data:image/gif;base64,R0lGODlhAQABAAAAACw="
    quill.evaluate("(gif) => { const q = window.harness.quill; q.formatLine(0, 1, 'header', 1, "
                   "'user'); q.formatLine(6, 1, 'list', 'bullet', 'user'); q.insertEmbed("
                   "q.getLength() - 1, 'image', gif, 'user') }", gif)  # fmt: skip
    quill_api = f"{server.http_url}/api/docs/{quill_doc}"
    eventually(lambda: logged_seq(quill, quill_api), what="the image logged")
    page = open_page(people(), server, quill_doc, "carol")
    live = page.locator("#live")
    expect(live.locator("h1")).to_have_text("Title")  # Quill's line formats: on its newlines
    expect(live.locator(".x-li")).to_have_text(re.compile(r"^Hello world\s*image$"))  # (the chip)
    expect(live.locator(".x-li strong")).to_have_text("world")
    expect(live.locator(".x-embed")).to_have_text("image")
    expect(live.locator("img")).to_have_count(0)  # a document's URLs are never loaded
    assert not page.errors and not quill_errors, (page.errors, quill_errors)  # type: ignore[attr-defined]


def test_the_page_edits_a_monaco_documents_text_where_monaco_keeps_it(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """y-monaco keeps its text in a root named `monaco`: Palimpsest's page edits that
    root (it used to edit an empty `content` beside it, which Monaco never showed), and
    Monaco sees what is typed there, with its writer in the page's blame."""
    ann, ann_errors = open_binding_page(people(), page_url, "monaco.html", server, doc_name)
    value = lambda: ann.evaluate("() => window.harness.value()")  # noqa: E731
    ann.locator(".monaco-editor").click()
    ann.keyboard.type("Hello world")
    api = f"{server.http_url}/api/docs/{doc_name}"
    eventually(lambda: logged_seq(ann, api), what="ann's text logged")
    carol = open_page(people(), server, doc_name, "carol")
    editor = carol.locator(".cm-content")
    shown = "() => window.palimpsest.session.view.state.doc.toString()"  # (ann's caret: not text)
    eventually(lambda: carol.evaluate(shown) == "Hello world", what="ann's text on the page")
    expect(editor).to_have_attribute("contenteditable", "true")
    editor.click()
    carol.keyboard.press("Control+End")
    carol.keyboard.type("!")
    eventually(lambda: value() == "Hello world!", what="carol's typing in ann's Monaco")
    head = eventually(lambda: logged_seq(ann, api), what="carol's ! logged")
    assert list(httpx.get(f"{api}/versions/head").json()["roots"]) == ["monaco"]
    carol.goto(f"{server.http_url}/?doc={doc_name}&user=carol&history=1&version={head}")
    body = preview_mode(carol, "blame")
    expect(body.locator('.blame-run[data-actor="carol"]')).to_have_text("!")
    expect(body.locator('.blame-run[data-actor="ann"]')).to_have_text("Hello world")
    assert not carol.errors and not ann_errors, (carol.errors, ann_errors)  # type: ignore[attr-defined]


def monaco_typed_by_ann(
    ctx: BrowserContext, page_url: str, server: ServerProcess, doc: str
) -> tuple[Page, list[str]]:
    """The Monaco harness page as ann (named and coloured in its awareness, as the page
    reads a caret's owner), with "Hello world" typed into it."""
    ann, errors = open_binding_page(ctx, page_url, "monaco.html", server, doc)
    ann.evaluate("() => window.harness.provider.awareness.setLocalStateField("
                 "'user', { name: 'ann', color: '#1f77b4' })")  # fmt: skip
    ann.locator(".monaco-editor").click()
    ann.keyboard.type("Hello world")
    return ann, errors


def test_the_page_and_monaco_see_each_others_carets(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """y-monaco keeps a caret in the awareness field `selection`, y-codemirror.next (the
    page's binding) in `cursor`: the page drew no caret for a Monaco user, nor Monaco one
    for the page's. The page now draws Monaco's caret, with its user's name, where it is,
    and publishes its own caret in `selection` too, in positions Monaco resolves in its
    Y.Text to where the page's caret is; another page still draws that caret once."""
    ann, ann_errors = monaco_typed_by_ann(people(), page_url, server, doc_name)
    ann.keyboard.press("Control+Home")
    for _ in range(5):
        ann.keyboard.press("ArrowRight")
    assert ann.evaluate("() => window.harness.caret()") == 5
    carol = open_page(people(), server, doc_name, "carol")
    shown = "() => window.palimpsest.session.view.state.doc.toString()"  # (not the carets' names)
    eventually(lambda: carol.evaluate(shown) == "Hello world", what="ann's text on the page")
    caret = carol.locator(".cm-ySelectionCaret", has_text="ann")
    expect(caret).to_have_count(1)
    expect(caret.locator(".cm-ySelectionInfo")).to_have_text("ann")
    at = "(el) => window.palimpsest.session.view.posAtDOM(el)"
    assert caret.evaluate(at) == 5
    carol.locator(".cm-content").click()
    carol.keyboard.press("Control+End")
    carol.keyboard.press("ArrowLeft")
    carol.keyboard.press("ArrowLeft")
    resolved = """() => {
      const { Y, ydoc, provider } = window.harness
      const text = ydoc.getText('monaco')
      for (const state of provider.awareness.getStates().values()) {
        if (!state.user || state.user.name !== 'carol' || !state.selection) continue
        return ['anchor', 'head'].map((end) => {
          const abs = Y.createAbsolutePositionFromRelativePosition(state.selection[end], ydoc)
          return abs && abs.type === text ? abs.index : null
        })
      }
      return null
    }"""
    eventually(lambda: ann.evaluate(resolved) == [9, 9], what="carol's caret in ann's awareness")
    expect(ann.locator(".yRemoteSelectionHead")).to_have_count(1)  # (Monaco draws it)
    ann.keyboard.press("End")  # ann's caret moves: the page follows
    expect(caret).to_have_count(1)
    eventually(lambda: caret.evaluate(at) == len("Hello world"), what="ann's caret moved")
    dave = open_page(people(), server, doc_name, "dave")
    expect(dave.locator(".cm-ySelectionCaret", has_text="carol")).to_have_count(1)
    expect(dave.locator(".cm-ySelectionCaret", has_text="ann")).to_have_count(1)
    harness_errors = ann.evaluate("() => window.harness.errors")
    assert not ann_errors and not harness_errors and not carol.errors and not dave.errors, (  # type: ignore[attr-defined]
        ann_errors, harness_errors, carol.errors, dave.errors)  # type: ignore[attr-defined]  # fmt: skip


def test_no_carets_cross_between_the_page_and_monaco_on_different_roots(
    server: ServerProcess, page_url: str, people: Any, doc_name: str
) -> None:
    """The page edits `content` where a document has it, while Monaco edits `monaco`
    beside it: a caret's positions are in one Y.Text, so neither draws the other's (a
    position 5 of Monaco's text is not position 5 of the page's)."""
    carol = open_page(people(), server, doc_name, "carol")
    carol.locator(".cm-content").click()
    carol.keyboard.type("Page text here")
    ann, ann_errors = monaco_typed_by_ann(people(), page_url, server, doc_name)
    ann.keyboard.press("Control+Home")
    ann.keyboard.press("ArrowRight")
    carol.locator(".cm-content").click()
    carol.keyboard.press("Control+Home")
    has = """(name) => [...window.%s.provider.awareness.getStates().values()].some(
      (s) => s.user && s.user.name === name && s.selection && s.selection.head)"""
    eventually(lambda: carol.evaluate(has % "palimpsest", "ann"), what="ann's caret at carol's")
    eventually(lambda: ann.evaluate(has % "harness", "carol"), what="carol's caret at ann's")
    shown = "() => window.palimpsest.session.view.state.doc.toString()"
    assert carol.evaluate(shown) == "Page text here"
    expect(carol.locator(".cm-ySelectionCaret")).to_have_count(0)
    expect(ann.locator(".yRemoteSelectionHead")).to_have_count(0)
    assert not ann_errors and not carol.errors, (ann_errors, carol.errors)  # type: ignore[attr-defined]


def test_harness_refuses_an_unknown_provider(page_url: str, people: Any) -> None:
    """The harness fails loudly rather than silently picking a default."""
    page = people().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{page_url}?provider=nope&ws=ws://127.0.0.1:1/ws&doc=x")
    eventually(lambda: any("unknown provider" in e for e in errors), what="an error")
