"""The readable text of an XML root: its characters, a line per paragraph (no I/O).

What `palimpsest export --format text` and `palimpsest cat` print of an XML root
(Tiptap's and ProseMirror's fragments, Lexical's and Slate's trees of texts): the
characters, each block (a paragraph, a
heading, a list item) ending a line, a line break (Lexical's ``linebreak``, Tiptap's
``hardBreak``) a line break; element names, attributes and Lexical's text-node
properties (the Y.Map before each text node's characters) left out. The XML string
(``--format xml``, the HTTP version's ``value``) keeps all of them.

The version's ``?format=tree`` (:func:`tree_text`) is turned into one shape
(:class:`Item`, each piece with its writer where the tree says it) and walked by these
rules (:func:`_walk`):

- a run of characters is itself;
- a block is an element (or a typed text: Lexical's, Slate's) among siblings that are
  all elements: its text, then a line break unless its text already ends with one (an
  empty paragraph is an empty line);
- an element among characters is inline (Lexical's link, a mention): its text in place;
- a line break element is ``\\n``; a Lexical text node's properties, nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: names of the elements (or Lexical's maps) that break a line
BREAKS = frozenset({"linebreak", "hardBreak", "hard_break", "hardbreak", "br"})
#: the attributes of a block kept as a text that name its type (render.BLOCK_TYPE_KEYS)
TYPE_KEYS = ("__type", "type")
#: what a Lexical text node's properties hold (TextNode and its kinds: hashtag, tab,
#: code-highlight): a leaf with one of them is such a map, its characters after it
TEXT_NODE_KEYS = frozenset({"__mode", "__detail"})


@dataclass
class Who:
    """The writer of a piece (blame): the event(s) and the actor."""

    seq: int | None = None
    last_seq: int | None = None
    actor: str | None = None


@dataclass
class Item:
    """A run of characters (``text`` set) or a node (``kind``, ``attrs``, ``kids``)."""

    text: str | None = None
    kind: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    kids: list[Item] = field(default_factory=list)
    who: Who = field(default_factory=Who)
    #: a map (a Lexical text node's properties): never a block
    is_map: bool = False


def _is_break(item: Item) -> bool:
    return item.text is None and not item.kids and item.kind in BREAKS


def _is_marker(item: Item) -> bool:
    if item.text is not None or item.kids or _is_break(item):
        return False
    return item.is_map or any(k in item.attrs for k in TEXT_NODE_KEYS)


def _walk(items: Sequence[Item], out: list[tuple[str, Who]], depth: int = 0) -> None:
    inline = any(i.text is not None or _is_marker(i) or _is_break(i) for i in items)
    for item in items:
        if item.text is not None:
            if item.text:
                out.append((item.text, item.who))
        elif _is_break(item):
            out.append(("\n", item.who))
        elif _is_marker(item):
            continue
        else:
            start = len(out)
            _walk(item.kids, out, depth + 1)
            ended = len(out) > start and out[-1][0].endswith("\n")
            if not inline and not ended:
                out.append(("\n", item.who))


# --- the version's tree (?format=tree, render.xml_tree) ---------------------------------


def _from_tree(nodes: Sequence[Any]) -> list[Item]:
    out: list[Item] = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        if "text" in node:
            out.append(Item(text=str(node.get("text") or "")))
        elif "type" in node:
            kids = node.get("children")
            attrs = node.get("attrs")
            out.append(
                Item(
                    kind=str(node["type"]),
                    attrs=attrs if isinstance(attrs, dict) else {},
                    kids=_from_tree(kids if isinstance(kids, list) else []),
                )
            )
        # (an embed in a text, {"embed"}: not text)
    return out


def tree_text(nodes: Sequence[Any]) -> str:
    """The readable text of an XML root given as ``?format=tree`` gives it (its
    ``nodes``): the characters, a line per block (module doc)."""
    out: list[tuple[str, Who]] = []
    _walk(_from_tree(nodes), out)
    return "".join(text for text, _ in out)
