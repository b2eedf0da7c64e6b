"""The browser page to people who do not see it as its designer does: a screen reader,
the keyboard alone, forced colours (Windows High Contrast), right-to-left scripts, and
axe-core's checks (web/package.json pins it; its script is injected with evaluate, for
the page's CSP refuses inline scripts). Debian's Chromium driven by Playwright against
the real server, with tests/test_browser.py's fixtures and helpers."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from editor_shapes import write_blocknote, write_milkdown
from playwright.sync_api import Page, expect
from pycrdt import Map, XmlElement, XmlFragment, XmlText
from serverproc import REPO_ROOT, ServerProcess
from test_browser import (  # noqa: F401 (browser: the fixture)
    browser,
    eventually,
    open_doc,
    type_at_end,
)

from palimpsest.client import connect

pytestmark = pytest.mark.browser

AXE = REPO_ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("browser-a11y")) as srv:
        yield srv


def axe(page: Page, within: list[str] | None = None, rules: list[str] | None = None) -> list[str]:
    """axe-core's violations on `page` (only in the elements `within` selects), one line each."""
    if not AXE.exists():
        pytest.fail(f"{AXE} missing: ./scripts/test runs npm ci in web/")
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text() + "\n;0")
    found = page.evaluate(
        """async ([within, rules]) => {
          const context = within ? { include: within.map((sel) => [sel]) } : document
          const { violations } = await axe.run(context, rules ? { runOnly: rules } : {})
          return violations.flatMap((v) => v.nodes.map((n) => {
            const why = (n.any[0] || n.all[0] || n.none[0] || {}).message || ''
            return `${v.id} (${v.impact}) ${n.target.join(' ')}: ${why}`
          }))
        }""",
        [within, rules],
    )
    return list(found)


def put_text(server: ServerProcess, doc: str, user: str, text: str) -> None:
    """`user` makes the document's text `text` (PUT /text: the least edit that does it)."""
    request = urllib.request.Request(
        f"{server.http_url}/api/docs/{doc}/text?user={urllib.parse.quote(user)}",
        data=json.dumps({"text": text}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200


def two_authors(server: ServerProcess, doc: str) -> None:
    """Version #1 frank's sentence, #2 grace's added after it."""
    put_text(server, doc, "frank", "Frank wrote this. ")
    put_text(server, doc, "grace", "Frank wrote this. Grace added this.")


def preview(page: Page, mode: str) -> Any:
    """Switch the version previewed to `mode` (text, diff, blame); its body once drawn."""
    page.click(f'#preview-modes [data-mode="{mode}"]')
    expect(page.locator("#preview")).to_have_attribute("data-mode", mode)
    expect(page.locator("#preview")).not_to_have_class(re.compile("loading"))
    return page.locator("#preview-body")


def style(locator: Any, prop: str) -> str:
    return str(locator.evaluate(f"(e) => getComputedStyle(e).{prop}"))


def palette_index(name: str) -> int:
    """Which of colors.js's 12 colours the page gives an ASCII `name` (FNV-1a of it)."""
    h = 0x811C9DC5
    for c in name:
        h ^= ord(c)
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h % 12


def test_every_author_colour_carries_its_white_initials_and_cursor_name(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """White 11px initials and remote cursors' names on six of the twelve author
    colours (lime, amber, orange, cyan, teal, emerald) were 3.1 to 3.8:1, under WCAG's
    4.5:1; another app's light colour (y-codemirror.next's default) got white initials
    too. Each colour on the name chip, then two people's cursors and avatars in a
    document, then one of them with a colour of their own."""
    names: dict[int, str] = {}
    n = 0
    while len(names) < 12:
        names.setdefault(palette_index(f"p{n}"), f"p{n}")
        n += 1
    home = people().new_page()
    for name in names.values():
        home.goto(f"{server.http_url}/?user={name}")
        expect(home.locator("#user-avatar")).to_be_visible()
        assert axe(home, ["#user-chip"], ["color-contrast"]) == [], name

    lime, amber = names[3], names[7]  # (3.1:1 and 3.2:1 before)
    ctx = people()
    pages = [open_doc(ctx, server.http_url, doc_name, name) for name in (lime, amber)]
    for page in pages:
        type_at_end(page, "x")  # a cursor, whose name the other sees
    first = pages[0]
    expect(first.locator("#presence .avatar")).to_have_count(2)
    expect(first.locator(".cm-ySelectionInfo")).to_have_text(amber)
    assert axe(first, ["#presence", ".cm-ySelectionInfo"], ["color-contrast"]) == []

    pages[1].evaluate(
        """() => {
          const awareness = window.palimpsest.provider.awareness
          const user = awareness.getLocalState().user
          awareness.setLocalStateField('user', { ...user, color: '#30bced' })
        }"""
    )
    light = first.locator(f'#presence .avatar[data-user="{amber}"]')
    expect(light).to_have_css("background-color", "rgb(48, 188, 237)")
    assert axe(first, ["#presence"], ["color-contrast"]) == []
    assert not any(p.errors for p in pages)  # type: ignore[attr-defined]


def test_forced_colours_keep_insertions_the_selected_tab_and_blame_authors_apart(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """In forced colours (Windows High Contrast) backgrounds, box-shadows and author
    colours are gone: inserted text (a background and an inset shadow) looked unchanged,
    the selected view tab like the others, and every blame run had the same line under
    it. Now insertions are underlined, the selected tab is in the system's highlight,
    and each author's runs have a line style of their own, which the legend repeats."""
    two_authors(server, doc_name)
    page = people().new_page()
    page.emulate_media(forced_colors="active")
    page.goto(f"{server.http_url}/?doc={doc_name}&user=frank&version=1")
    body = preview(page, "diff")
    inserted = body.locator('ins[data-actor="grace"]')
    expect(inserted).to_have_text("Grace added this.")
    assert style(inserted, "textDecorationLine") == "underline"
    assert style(body, "textDecorationLine") == "none"
    tabs = page.locator("#preview-modes [role=tab]")
    selected = page.locator('#preview-modes [aria-selected="true"]')
    expect(selected).to_have_text("Changes since")
    others = {
        style(tab, "color") for tab in tabs.all() if tab.get_attribute("aria-selected") == "false"
    }
    assert len(others) == 1 and style(selected, "color") not in others

    page.goto(f"{server.http_url}/?doc={doc_name}&user=frank&version=2")
    body = preview(page, "blame")
    frank = body.locator('.blame-run[data-actor="frank"]')
    grace = body.locator('.blame-run[data-actor="grace"]')
    expect(grace).to_have_text("Grace added this.")
    lines = {
        who: style(run, "borderBottomStyle") for who, run in (("frank", frank), ("grace", grace))
    }
    assert lines["frank"] != lines["grace"] and "none" not in lines.values(), lines
    for who, line in lines.items():
        chip = page.locator("#preview-legend .author-chip", has_text=who).locator("[data-mark]")
        assert style(chip, "borderBottomStyle") == line, who


LOOKS = """([selector, key]) => {
  const looks = {}
  for (const e of document.querySelectorAll(selector)) {
    const s = getComputedStyle(e)
    const look = `${s.borderBottomColor} ${s.borderBottomStyle} ${s.borderBottomWidth}`
    ;(looks[key === 'text' ? e.textContent : e.dataset.actor] ||= new Set()).add(look)
  }
  return Object.fromEntries(Object.entries(looks).map(([who, set]) => [who, [...set]]))
}"""


def looks(page: Page, selector: str, key: str = "actor") -> dict[str, str]:
    """Author → the look (line colour, style, width) of the elements `selector` picks,
    named by their data-actor or (key "text") their text; each has one look."""
    found: dict[str, list[str]] = page.evaluate(LOOKS, [selector, key])
    assert all(len(each) == 1 for each in found.values()), found
    return {who: each[0] for who, each in found.items()}


def test_forty_authors_of_a_class_each_have_a_look_of_their_own(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A class of 40 and their teacher in one document: blame gave 41 authors 12
    colours (each the hash of a name), and a line style only in forced colours, given
    in order of appearance whatever the colour, so that s09's text looked like the
    teacher's; the legend's chips and the timeline showed only a coloured dot. Each
    author now has their colour and a line under their text, their chip's name and
    their session's name that no other author of that colour in the view has: five of
    these names share orange (s05, s09, s12, s34, teacher)."""
    authors = [f"s{i:02}" for i in range(1, 41)] + ["teacher"]
    text = ""
    for who in authors:
        text += f"[{who}] wrote this sentence. "
        put_text(server, doc_name, who, text)
    page = open_doc(people(), server.http_url, doc_name, "teacher", "&history=1&version=head")
    body = preview(page, "blame")
    expect(body.locator(".blame-run")).to_have_count(len(authors))
    runs = looks(page, "#preview-body .blame-run")
    assert sorted(runs) == authors
    assert len(set(runs.values())) == len(authors), runs
    assert len({look.split(" ")[0] for look in runs.values()}) == 12  # (colours: as before)
    chips = looks(page, "#preview-legend .author-chip [data-mark]", "text")
    assert chips == runs

    expect(page.locator("#timeline .session")).to_have_count(len(authors))
    assert looks(page, "#timeline .session-who", "text") == runs
    assert not page.errors  # type: ignore[attr-defined]


def accessible_texts(page: Page) -> list[str]:
    """The text a screen reader is given: Chromium's accessibility tree's static texts."""
    cdp = page.context.new_cdp_session(page)
    nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    cdp.detach()
    return [
        str(n["name"]["value"])
        for n in nodes
        if n.get("role", {}).get("value") == "StaticText" and n.get("name", {}).get("value")
    ]


def test_blame_and_diff_name_each_parts_author_to_a_screen_reader_and_the_keyboard(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """Who wrote each part of a blame, and who added or deleted each part of a diff, was
    only in the `title` of a span no keyboard reaches, and in its colour. Each part now
    says it (generated text a screen reader reads before the part, not in the text
    itself), and the parts are one Tab stop whose arrow keys go from part to part,
    showing each one's author."""
    two_authors(server, doc_name)
    page = people().new_page()
    page.goto(f"{server.http_url}/?doc={doc_name}&user=frank&version=2")
    body = preview(page, "blame")
    expect(body.locator(".blame-run")).to_have_count(2)
    said = accessible_texts(page)
    assert "written by frank in #1:" in said and "written by grace in #2:" in said, said
    assert body.evaluate("(e) => e.textContent") == "Frank wrote this. Grace added this."

    page.focus("#preview-close")
    page.keyboard.press("Tab")
    focused = "() => document.activeElement.dataset.who ?? document.activeElement.id"
    assert page.evaluate(focused) == "written by frank in #1"
    page.keyboard.press("ArrowRight")
    assert page.evaluate(focused) == "written by grace in #2"
    label = "(e) => getComputedStyle(e, '::before').width"
    assert float(body.locator('[data-actor="grace"]').evaluate(label).removesuffix("px")) > 50
    page.keyboard.press("Tab")  # one stop: Tab leaves the text
    assert page.evaluate("() => !document.activeElement.closest('#preview-body')")

    page.goto(f"{server.http_url}/?doc={doc_name}&user=frank&version=1")
    body = preview(page, "diff")
    expect(body.locator("ins")).to_have_text("Grace added this.")
    assert "added by grace in #2:" in accessible_texts(page)


ARABIC = "مرحبا بالعالم."

# where the first letter and the final full stop of ARABIC are drawn (x of their left
# edges), in the first text node under `root` that holds it
DRAWN_AT = """([root, line]) => {
  const walker = document.createTreeWalker(document.querySelector(root), NodeFilter.SHOW_TEXT)
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const i = n.data.indexOf(line)
    if (i < 0) continue
    const x = (at) => {
      const r = document.createRange()
      r.setStart(n, at)
      r.setEnd(n, at + 1)
      return r.getBoundingClientRect().left
    }
    return { first: x(i), stop: x(i + line.length - 1) }
  }
  return null
}"""


def right_to_left(page: Page, root: str) -> bool:
    """ARABIC is laid out right to left under `root`: its full stop left of its start."""
    at = page.evaluate(DRAWN_AT, [root, ARABIC])
    assert at is not None, f"{ARABIC!r} not drawn under {root}"
    return bool(at["stop"] < at["first"])


def test_right_to_left_paragraphs_are_laid_out_right_to_left_and_bidi_controls_act(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """An Arabic or Hebrew paragraph was laid out left to right in the editor and in the
    history's views (its full stop at its right end, the line aligned left): nothing
    gave a line the direction of its text. And the editor replaced the bidi controls
    people type on purpose (RLM, RLI…PDI) with bullets, which ordered nothing."""
    isolated = "\u2067abc\u2069"
    put_text(server, doc_name, "layla", f"English first.\n{ARABIC}\nשלום עולם.\u200f {isolated}")
    put_text(
        server, doc_name, "omar",
        f"English first.\n{ARABIC}\nשלום עולם.\u200f {isolated}\u200b\u202e",
    )  # fmt: skip
    page = open_doc(people(), server.http_url, doc_name, "layla")
    lines = page.locator(".cm-line")
    expect(lines).to_have_count(3)
    assert right_to_left(page, ".cm-content")
    directions = lines.evaluate_all("(ls) => ls.map((l) => getComputedStyle(l).direction)")
    assert directions == ["ltr", "rtl", "rtl"]
    assert page.evaluate("() => window.palimpsest.session.view.textDirectionAt(20)") == 1  # RTL
    # the marks and isolates act (kept as characters, drawn as nothing); a zero-width
    # space is still shown, and so is a right-to-left override, which reverses what
    # follows it and hides what a text says
    shown = page.locator(".cm-specialChar")
    expect(shown).to_have_count(2)
    expect(shown.first).to_have_attribute("title", re.compile("zero width"))
    expect(shown.last).to_have_attribute("title", re.compile("right-to-left override"))

    page.goto(f"{server.http_url}/?doc={doc_name}&user=layla&version=1")
    expect(page.locator("#preview-body")).to_contain_text(ARABIC)
    assert right_to_left(page, "#preview-body")
    for mode in ("diff", "blame"):
        preview(page, mode)
        assert right_to_left(page, "#preview-body"), mode


#: "evil" behind a right-to-left override reads "live" where the override acts
TROJAN = "Pay the vendor \u202eevil\u202c now"


def reads_evil(page: Page, root: str) -> bool:
    """The "evil" of TROJAN is laid out under `root` as stored: its e left of its l."""
    at = page.evaluate(DRAWN_AT, [root, "evil"])
    assert at is not None, f"'evil' not drawn under {root}"
    return bool(at["first"] < at["stop"])


def test_bidi_embeddings_and_overrides_are_drawn_not_applied_in_every_view(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """Trojan Source: the editor drew a right-to-left override as a mark, but the
    history's text, diff and blame, and a Tiptap document drawn live or as a version,
    let it act, and "Pay the vendor <RLO>evil<PDF> now" read "live" there; the editor let
    the embeddings (LRE, RLE) and PDF act. Each is now a mark that reorders nothing, its
    character kept in the text."""
    put_text(server, doc_name, "mallory", TROJAN)
    put_text(server, doc_name, "mallory", f"{TROJAN}! \u202aa\u202bb\u202c\u202c")
    page = open_doc(people(), server.http_url, doc_name, "ann")
    shown = page.locator(".cm-specialChar")
    expect(shown).to_have_count(6)
    titles = shown.evaluate_all(
        "(els) => els.map((e) => e.title.replace(/^Control character /, ''))"
    )
    assert titles == [
        "right-to-left override",
        "pop directional formatting",
        "left-to-right embedding",
        "right-to-left embedding",
        "pop directional formatting",
        "pop directional formatting",
    ], titles
    assert reads_evil(page, ".cm-content")

    page.goto(f"{server.http_url}/?doc={doc_name}&user=ann&version=1")
    for mode in ("text", "diff", "blame"):
        body = preview(page, mode)
        expect(body).to_contain_text("evil")
        assert reads_evil(page, "#preview-body"), mode
        expect(body.locator(".bidi-control").first).to_have_attribute(
            "title", re.compile("^right-to-left override")
        )
    assert axe(page, ["#preview-body"]) == []

    async def write() -> None:
        async with connect(server.ws_url, doc_name + "-rich", user="mallory") as s:
            frag = s.doc.get("default", type=XmlFragment)
            frag.children.append(XmlElement("paragraph", {}, [XmlText(TROJAN)]))
            s.doc.get("board", type=Map)["note"] = TROJAN  # (drawn as JSON beside it)
            await s.flush()
            frag.children.append(XmlElement("paragraph", {}, [XmlText("Thanks.")]))
            await s.flush()

    writing = threading.Thread(target=asyncio.run, args=(write(),))
    writing.start()
    writing.join(30)
    rich = open_doc(people(), server.http_url, doc_name + "-rich", "ann")
    expect(rich.locator("#live")).to_contain_text("Thanks.")
    assert reads_evil(rich, "#live")
    expect(rich.locator("#live .other-roots pre .bidi-control")).to_have_count(2)
    rich.goto(f"{server.http_url}/?doc={doc_name}-rich&user=ann&version=1")
    for mode in ("text", "diff", "blame"):
        body = preview(rich, mode)
        expect(body).to_contain_text("evil")
        assert reads_evil(rich, "#preview-body"), mode
        assert body.evaluate("(e) => e.textContent").startswith(TROJAN), mode
    assert not page.errors and not rich.errors  # type: ignore[attr-defined]


def test_axe_finds_nothing_on_the_home_page_editor_history_diff_and_blame(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """axe-core found: an aria-label on a div with no role (#presence); text under 4.5:1
    (the home page's lede, the "Connected" pill, the slider's "first" and "now", the
    times and seqs of the history's rows); no level-one heading in a document. Beyond
    axe: the version slider said its bare number, the view tabs had no arrow keys nor
    tabpanel, the editor no focus ring, the people here only their initials, and
    nothing heeded a wish for reduced motion."""
    two_authors(server, doc_name)
    page = people().new_page()
    page.goto(f"{server.http_url}/?user=frank")
    expect(page.locator(f'#doc-rows tr[data-doc="{doc_name}"]')).to_be_visible()
    assert axe(page) == []

    page = open_doc(people(), server.http_url, doc_name, "frank", "&history=1")
    expect(page.locator("#timeline .event").first).to_be_visible()
    assert axe(page) == []
    assert "frank (you)" in accessible_texts(page)
    assert style(page.locator(".editor"), "outlineStyle") == "solid"  # it has the focus
    expect(page.locator("#scrub")).to_have_attribute("aria-valuetext", "version 2, the live one")

    page.locator('#timeline .event[data-seq="2"] .event-row').click()
    expect(page.locator("#scrub")).to_have_attribute("aria-valuetext", "version 2 of 2")
    for mode in ("text", "diff", "blame"):
        preview(page, mode)
        # (the diff's "to" list, labelled, is on show in its view only)
        expect(page.get_by_label("to", exact=True)).to_be_visible(visible=mode == "diff")
        assert axe(page) == [], mode
    page.keyboard.press("Escape")
    page.goto(f"{server.http_url}/?doc={doc_name}&user=frank&version=1")
    text = page.locator("#mode-text")
    expect(page.locator("#preview")).to_have_attribute("aria-labelledby", "mode-text")
    text.focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#mode-diff")).to_be_focused()
    expect(page.locator("#mode-diff")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#preview")).to_have_attribute("aria-labelledby", "mode-diff")
    expect(page.locator("#preview-body ins")).to_have_text("Grace added this.")
    page.keyboard.press("End")
    expect(page.locator("#mode-blame")).to_be_focused()
    assert page.evaluate(
        "() => [...document.querySelectorAll('#preview-modes [tabindex=\"0\"]')].map((t) => t.id)"
    ) == ["mode-blame"]
    assert axe(page) == []

    page.emulate_media(reduced_motion="reduce")
    page.evaluate("() => { document.querySelector('#status').dataset.state = 'reconnecting' }")
    assert style(page.locator("#status .pill-dot"), "animationName") == "none"


def test_axe_finds_nothing_on_a_long_tiptap_document_live_and_in_its_diff(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """A Tiptap document's diff drew a deleted paragraph at opacity .75, its deleted text
    3.8:1 (under 4.5:1); and a long document, drawn live or as a version's text, was a
    scrolling area (.paper) the keyboard could not reach, nothing in it taking the
    focus. The deleted text is now at full strength, and the live document and a
    version's text are Tab stops, whose arrow keys scroll them."""

    def paragraph(text: str) -> XmlElement:
        return XmlElement("paragraph", {}, [XmlText(text)])

    async def write() -> None:
        async with connect(server.ws_url, doc_name, user="tina") as s:
            frag = s.doc.get("default", type=XmlFragment)
            row = XmlElement("tableRow", {}, [XmlElement("tableCell", {}, [paragraph("cell")])])
            with s.doc.transaction():
                frag.children.append(paragraph("First paragraph stays."))
                frag.children.append(paragraph("Second paragraph goes away."))
                frag.children.append(XmlElement("table", {}, [row]))
                for n in range(60):
                    frag.children.append(paragraph(f"Paragraph {n} of a long document."))
            await s.flush()
            del frag.children[1]
            await s.flush()

    writing = threading.Thread(target=asyncio.run, args=(write(),))
    writing.start()
    writing.join(30)
    page = open_doc(people(), server.http_url, doc_name, "tina")
    expect(page.locator("#live")).to_contain_text("Paragraph 59")
    expect(page.locator("#live")).not_to_contain_text("Second paragraph")
    assert axe(page) == []

    page.goto(f"{server.http_url}/?doc={doc_name}&user=tina&version=1")
    for mode in ("text", "diff", "blame"):
        body = preview(page, mode)
        expect(body).to_contain_text("Paragraph 59")
        assert axe(page) == [], mode
    deleted = page.locator("#preview-body p.node-delete")
    preview(page, "diff")
    expect(deleted).to_have_text("Second paragraph goes away.")
    assert style(deleted, "opacity") == "1"

    preview(page, "text")
    page.focus("#preview-close")
    page.keyboard.press("Tab")
    expect(page.locator("#preview")).to_be_focused()
    page.keyboard.press("End")
    eventually(lambda: page.locator(".paper").evaluate("(e) => e.scrollTop") > 0, what="scrolled")
    assert not page.errors  # type: ignore[attr-defined]


def test_axe_finds_nothing_on_blocknote_and_milkdown_documents(
    server: ServerProcess, people: Any, doc_name: str
) -> None:
    """BlockNote's and Milkdown's documents are drawn with list markers and checkboxes
    (read-only, named: "done", "not done") and nested groups: live, as a version's text
    and in its blame, axe finds nothing."""

    async def write() -> None:
        for name, fill in ((doc_name, write_blocknote), (doc_name + "-md", write_milkdown)):
            async with connect(server.ws_url, name, user="tina") as s:
                fill(s.doc)
                await s.flush()

    writing = threading.Thread(target=asyncio.run, args=(write(),))
    writing.start()
    writing.join(30)
    for name, last in ((doc_name, "a link"), (doc_name + "-md", "line two")):
        page = open_doc(people(), server.http_url, name, "tina")
        expect(page.locator("#live")).to_contain_text(last)
        expect(page.locator('#live input[type="checkbox"]')).to_have_count(2)
        assert axe(page) == [], name
        page.goto(f"{server.http_url}/?doc={name}&user=tina&version=1")
        for mode in ("text", "blame"):
            expect(preview(page, mode)).to_contain_text(last)
            assert axe(page) == [], (name, mode)
