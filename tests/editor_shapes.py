"""Documents shaped as BlockNote (0.55) and Milkdown (7.21) keep theirs in Yjs, written
with pycrdt: what the page draws them as is checked by test_browser_page and
test_browser_a11y.

BlockNote keeps no lists: its root holds one ``blockGroup`` of ``blockContainer``s
(each with its ``id``), each holding its content (``paragraph``, ``heading``,
``bulletListItem``, ``numberedListItem``, ``checkListItem``, ``image``...) and, when it
has children, a nested ``blockGroup``. Milkdown's are prosemirror-markdown's names
(``bullet_list``, ``list_item`` with ``checked`` for a task, ``hardbreak``, GFM's
``table_header_row``) and marks (``strong``, ``emphasis``, ``inlineCode``,
``strike_through``, ``link``)."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, XmlElement, XmlFragment, XmlText

#: the roots the editors' collaboration examples use
BLOCKNOTE_ROOT, MILKDOWN_ROOT = "document-store", "prosemirror"
IMAGE_URL = "https://images.example/cat.png"

_COLORS = {"textAlignment": "left", "backgroundColor": "default", "textColor": "default"}


def _block(kind: str, text: str, **attrs: Any) -> XmlElement:
    return XmlElement(kind, {**_COLORS, **attrs}, [XmlText(text)] if text else [])


def _container(cid: str, content: XmlElement, *kids: XmlElement) -> XmlElement:
    children = [content]
    if kids:
        children.append(XmlElement("blockGroup", {}, list(kids)))
    return XmlElement("blockContainer", {"id": cid}, children)


def write_blocknote(doc: Doc[Any]) -> XmlText:
    """A BlockNote document in `doc`'s ``document-store``; returns its last paragraph's
    text (empty), for formatted runs to go in."""
    frag = doc.get(BLOCKNOTE_ROOT, type=XmlFragment)
    last = XmlElement("paragraph", dict(_COLORS), [XmlText()])
    image = XmlElement(
        "image",
        {
            "url": IMAGE_URL,
            "caption": "a cat",
            "name": "cat.png",
            "showPreview": True,
            "textAlignment": "left",
            "backgroundColor": "default",
        },  # fmt: skip
    )
    group = XmlElement(
        "blockGroup",
        {},
        [
            _container("h", _block("heading", "Meeting notes", level=1, isToggleable=False)),
            _container(
                "p1",
                _block("paragraph", "Parent"),
                _container(
                    "p2",
                    _block("paragraph", "Child one"),
                    _container("p3", _block("paragraph", "Grandchild")),
                ),  # fmt: skip
            ),
            _container(
                "b1",
                _block("bulletListItem", "bullet one"),
                _container("b2", _block("bulletListItem", "nested bullet")),
            ),
            _container("n1", _block("numberedListItem", "first")),
            _container(
                "n2",
                _block("numberedListItem", "second"),
                _container("n3", _block("numberedListItem", "sub first")),
            ),
            _container("n4", _block("numberedListItem", "third")),
            _container("m", _block("paragraph", "between")),
            _container("n5", _block("numberedListItem", "seventh", start=7)),
            _container("n6", _block("numberedListItem", "eighth")),
            _container("c1", _block("checkListItem", "done", checked=True)),
            _container("c2", _block("checkListItem", "to do", checked=False)),
            _container("i", image),
            _container("l", last),
        ],
    )
    with doc.transaction():
        frag.children.append(group)
        text = group.children[len(group.children) - 1].children[0].children[0]
        assert isinstance(text, XmlText)
        text.insert(0, "bold", {"bold": {}})
        text.insert(4, " and ")
        text.insert(9, "italic", {"italic": {}})
        text.insert(15, " and ")
        text.insert(20, "a link", {"link": {"href": "https://example.com"}})
    return text


def _p(*kids: XmlText | XmlElement) -> XmlElement:
    return XmlElement("paragraph", {}, list(kids))


def _item(text: str, checked: bool | None = None, list_type: str = "bullet") -> XmlElement:
    label = "•" if list_type == "bullet" else "1."
    attrs = {"label": label, "listType": list_type, "spread": "false", "checked": checked}
    return XmlElement("list_item", attrs, [_p(XmlText(text))])


def write_milkdown(doc: Doc[Any]) -> None:
    """A Milkdown (commonmark + GFM) document in `doc`'s ``prosemirror``."""
    frag = doc.get(MILKDOWN_ROOT, type=XmlFragment)

    def cell(kind: str, text: str) -> XmlElement:
        return XmlElement(kind, {"alignment": "left"}, [_p(XmlText(text))])

    table = XmlElement(
        "table",
        {},
        [
            XmlElement(
                "table_header_row", {}, [cell("table_header", "h1"), cell("table_header", "h2")]
            ),  # fmt: skip
            XmlElement("table_row", {}, [cell("table_cell", "c1"), cell("table_cell", "c2")]),
        ],
    )
    marks = _p(XmlText())
    with doc.transaction():
        frag.children.append(XmlElement("heading", {"level": 1, "id": "design-doc"},
                                        [XmlText("Design doc")]))  # fmt: skip
        frag.children.append(marks)
        frag.children.append(
            XmlElement(
                "bullet_list",
                {"spread": False},
                [_item("plain item"), _item("task done", True), _item("task open", False)],
            )
        )
        frag.children.append(
            XmlElement(
                "ordered_list", {"order": 3, "spread": False}, [_item("third", list_type="ordered")]
            )  # fmt: skip
        )
        frag.children.append(table)
        frag.children.append(_p(XmlText("line one"), XmlElement("hardbreak"), XmlText("line two")))
        text = marks.children[0]
        assert isinstance(text, XmlText)
        at = 0
        for run, attrs in [
            ("Some ", None),
            ("bold", {"strong": {}}),
            (" and ", None),
            ("ital", {"emphasis": {}}),
            (" and ", None),
            ("code", {"inlineCode": {}}),
            (" and ", None),
            ("gone", {"strike_through": {}}),
            (" and ", None),
            ("a link", {"link": {"href": "https://example.com", "title": None}}),
        ]:
            text.insert(at, run, attrs)
            at += len(run)
