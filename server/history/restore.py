"""Restore: the smallest change that makes a live document's content equal to a version.

Runs inside the caller's transaction on the live document (see History.restore, which
wraps it in Room.server_change with a ServerOrigin, so the change is logged as one
event of kind ``restore``, broadcast, and tracked for undo as the restoring user's own
edit). Being an ordinary forward change, it merges with whatever others type at the
same moment: every replica converges.

Text is changed by a character diff (render.string_opcodes: over code points, after
trimming the common prefix and suffix, its work bounded by bounded_diff.py; pycrdt
positions are UTF-8 byte offsets), so that untouched text keeps its identity (cursors,
attribution). Maps set and delete keys; arrays
replace the differing slices; XML fragments are rebuilt when they differ.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from .bounded_diff import opcodes
from .render import ARRAY, MAP, ROOT_CLASSES, TEXT, XML, jsonable, string_opcodes


def byte_offsets(s: str) -> list[int]:
    """offsets[i] = UTF-8 byte offset of code point i (len(s)+1 entries)."""
    if s.isascii():
        return list(range(len(s) + 1))
    return [0, *accumulate(len(c.encode()) for c in s)]


def set_text(text: Text, target: str) -> None:
    current = str(text)
    if current == target:
        return
    offs = byte_offsets(current)
    for tag, i1, i2, j1, j2 in reversed(string_opcodes(current, target)):
        if tag == "equal":
            continue
        if i2 > i1:
            del text[offs[i1] : offs[i2]]
        if j2 > j1:
            text.insert(offs[i1], target[j1:j2])


def prelim(value: Any) -> Any:
    """A value of the target version, ready to be inserted into the live document."""
    if isinstance(value, Text):
        return Text(str(value))
    if isinstance(value, Map):
        return Map({k: prelim(v) for k, v in value.items()})
    if isinstance(value, Array):
        return Array([prelim(v) for v in value])
    if isinstance(value, XmlText):
        return XmlText(str(value))
    if isinstance(value, XmlElement):
        attrs: list[tuple[str, Any]] = [*value.attributes]  # type: ignore[misc]
        return XmlElement(value.tag, attrs, [prelim(c) for c in value.children])
    return value


def set_map(live: Map[Any], target: Map[Any] | None) -> None:
    want = {k: target[k] for k in target.keys()} if target is not None else {}
    for key in list(live.keys()):
        if key not in want:
            del live[key]
    for key, value in want.items():
        if key not in live or jsonable(live[key]) != jsonable(value):
            live[key] = prelim(value)


def set_array(live: Array[Any], target: Array[Any] | None) -> None:
    want = list(target) if target is not None else []
    a = [json.dumps(jsonable(v), sort_keys=True) for v in live]
    b = [json.dumps(jsonable(v), sort_keys=True) for v in want]
    if a == b:
        return
    for tag, i1, i2, j1, j2 in reversed(opcodes(a, b)):
        if tag == "equal":
            continue
        if i2 > i1:
            del live[i1:i2]
        for k, v in enumerate(want[j1:j2]):
            live.insert(i1 + k, prelim(v))


def set_xml(live: XmlFragment, target: XmlFragment | None) -> None:
    want = list(target.children) if target is not None else []
    if str(live) == (str(target) if target is not None else ""):
        return
    n = len(list(live.children))
    if n:
        del live.children[0:n]
    for child in want:
        live.children.append(prelim(child))


def make_equal(live: Doc[Any], target: Doc[Any], types: dict[str, str]) -> None:
    """Change every root of `live` listed in `types` to equal the same root of `target`
    (a scratch document at the restored version; a root it lacks counts as empty)."""
    target_names = set(target.keys())
    for name, kind in sorted(types.items()):
        cls = ROOT_CLASSES[kind]
        root = live.get(name, type=cls)
        other = target.get(name, type=cls) if name in target_names else None
        if kind == TEXT:
            set_text(root, str(other) if other is not None else "")
        elif kind == MAP:
            set_map(root, other)
        elif kind == ARRAY:
            set_array(root, other)
        elif kind == XML:
            set_xml(root, other)
