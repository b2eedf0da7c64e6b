"""The readable text of an XML root: its characters, a line per paragraph (no I/O).

What `palimpsest export --format text` and `palimpsest cat` print of an XML root
(Tiptap's and ProseMirror's fragments, Lexical's and Slate's trees of texts), and what
`palimpsest blame` prints the writers of: the characters, each block (a paragraph, a
heading, a list item) ending a line, a line break (Lexical's ``linebreak``, Tiptap's
``hardBreak``) a line break; element names, attributes and Lexical's text-node
properties (the Y.Map before each text node's characters) left out. The XML string
(``--format xml``, the HTTP version's ``value``) keeps all of them.

Two shapes are read: the version's ``?format=tree`` (:func:`tree_text`) and the blame
tree of ``GET .../blame`` (:func:`blame_pieces`, each piece with its writer). Both are
turned into one shape (:class:`Item`) and walked by the same rules (:func:`_walk`):

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


# --- the blame tree (GET .../blame of an XML root) --------------------------------------


def _who(node: dict[str, Any]) -> Who:
    seq, last, actor = node.get("seq"), node.get("last_seq"), node.get("actor")
    return Who(
        seq if isinstance(seq, int) else None,
        last if isinstance(last, int) else None,
        actor if isinstance(actor, str) else None,
    )


def _type_of(attrs: dict[str, Any]) -> str:
    for key in TYPE_KEYS:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return "xmltext"


def _from_blame(nodes: Sequence[Any], embedded: bool = False) -> list[Item]:
    out: list[Item] = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        attrs = node.get("attributes")
        attrs = attrs if isinstance(attrs, dict) else {}
        if "map" in node:
            values = node["map"] if isinstance(node["map"], dict) else {}
            kind = str(values.get("__type") or "map")
            out.append(Item(kind=kind, attrs=values, who=_who(node), is_map=kind not in BREAKS))
        elif "element" in node:
            kids = node.get("children")
            out.append(Item(kind=str(node["element"]), attrs=attrs, who=_who(node),
                            kids=_from_blame(kids if isinstance(kids, list) else [])))  # fmt: skip
        elif isinstance(node.get("runs"), list):
            runs = _runs(node["runs"])
            if embedded or attrs:
                out.append(Item(kind=_type_of(attrs), attrs=attrs, who=_who(node), kids=runs))
            else:
                out.extend(runs)  # (Tiptap's text in a paragraph: its runs in place)
    return out


def _runs(runs: Sequence[Any]) -> list[Item]:
    out: list[Item] = []
    for run in runs:
        if not isinstance(run, dict):
            continue
        inner = run.get("node")
        if isinstance(inner, dict):
            for item in _from_blame([{**inner, **_stamp(run, inner)}], embedded=True):
                out.append(item)
        elif "omitted" not in run:
            out.append(Item(text=str(run.get("text") or ""), who=_who(run)))
    return out


def _stamp(run: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The writer of an embedded node: its own, else its run's."""
    return {k: run[k] for k in ("seq", "last_seq", "actor") if k in run and k not in node}


def blame_pieces(nodes: Sequence[Any]) -> list[tuple[str, Who]]:
    """The readable text of an XML root's blame tree (its ``nodes``) in pieces, each
    with its writer: the same text as :func:`tree_text` of that version, a block's line
    break written by whoever made the block."""
    out: list[tuple[str, Who]] = []
    _walk(_from_blame(nodes), out)
    return out
