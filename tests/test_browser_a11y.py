"""The browser page to people who do not see it as its designer does: a screen reader,
the keyboard alone, forced colours (Windows High Contrast), right-to-left scripts, and
axe-core's checks (web/package.json pins it; its script is injected with evaluate, for
the page's CSP refuses inline scripts). Debian's Chromium driven by Playwright against
the real server, with tests/test_browser.py's fixtures and helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from serverproc import REPO_ROOT, ServerProcess
from test_browser import (  # noqa: F401 (browser: the fixture)
    browser,
    eventually,
    open_doc,
    type_at_end,
)

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
