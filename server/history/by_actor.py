"""Blame runs and diff ops of some writers only (``?actor=``): what one student wrote,
what they changed between two versions.

Blame keeps the runs the actors wrote, as blame names writers (text an editor moved, or
an undo or a restore brought back, stays its writer's). A diff keeps the ops their
events made: text they inserted, text they deleted (an event of theirs deleted it, an
undo or a restore included, whoever had written it: the index records who deleted a
run, not who wrote it as well) and text whose formatting they changed. Text of theirs
written after the diff's `from` that an undo, a redo or a restore copied is an
insertion of theirs too, in their event, as blame names it (attribution.diff_steps):
a restore that took it out and the undo of that restore together are nobody's change.

Everything else in a text, before, between and after theirs, becomes one run per
stretch, marked ``omitted`` (its length in characters, a diff's in the later version)
and holding only that stretch's line breaks as its text. So the runs of an answer,
concatenated, are the actors' text in document order with the document's lines kept,
and positions can still be counted: a run's position is the length of the runs before
it, ``omitted`` counted for those that have it. A text with nothing of theirs has no
runs.

In an XML tree (Tiptap's, Lexical's) a node is kept when something in it is the
actors', or when it holds nothing and they made it (an image, an empty paragraph), or,
in a diff, when they inserted, deleted or reformatted it; other nodes are left out, so
each paragraph left is one with text of theirs. Of a map's or array's nested texts
(a notebook's cells' sources) those with something of theirs are kept, filtered as a
text root's. What the server cannot attribute, and so
cannot filter, is left out too: a diff's map and array roots and an XML root's character
diff of its string (its ``ops``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from .attribution import gc_paused

#: the longest actor a filter may name (a user name is 1-64 characters)
MAX_ACTOR = 64
#: what an omitted stretch keeps of its text
_NOT_A_BREAK = re.compile(r"[^\r\n]+")
#: the ops a diff's actor made
_CHANGES = ("insert", "delete", "format")

Run = dict[str, Any]


class _Filter:
    def __init__(self, actors: Collection[str], diff: bool) -> None:
        self.actors = frozenset(actors)
        self.diff = diff

    def runs(self, runs: list[Run]) -> tuple[list[Run], bool]:
        """`runs` (a text's blame runs or diff ops) with those not the actors' collapsed
        into omitted stretches, and whether any was theirs ([] when none was)."""
        keep = self.op if self.diff else self.run
        out: list[Run] = []
        skipped: list[str] = []  # the text, as the version has it, of the stretch so far

        def flush() -> None:
            text = "".join(skipped)
            skipped.clear()
            if not text:
                return
            run = {"text": _NOT_A_BREAK.sub("", text), "actor": None, "seq": None,
                   "omitted": len(text)}  # fmt: skip
            out.append({"op": "omitted", **run} if self.diff else run)

        mine = False
        for run in runs:
            kept = keep(run)
            if kept is None:
                if not self.diff or run.get("op") != "delete":  # (not in the later version)
                    skipped.append(run.get("text") or "")
                continue
            flush()
            out.append(kept)
            mine = True
        flush()
        return (out, True) if mine else ([], False)

    def run(self, run: Run) -> Run | None:
        """A blame run, if it is the actors' (a node embedded in it: if anything in it is)."""
        node = run.get("node")
        if isinstance(node, dict):
            inner, kept = self.blame_node(node)
            return {**run, "node": inner} if kept or run.get("actor") in self.actors else None
        return run if run.get("actor") in self.actors else None

    def op(self, op: Run) -> Run | None:
        """A diff op, if the actors' event made it (a node embedded in it: if anything in
        it is theirs)."""
        theirs = op.get("op") in _CHANGES and op.get("actor") in self.actors
        node = op.get("node")
        if isinstance(node, dict):
            inner, kept = self.diff_node(node)
            return {**op, "node": inner} if kept or theirs else None
        return op if theirs else None

    def blame_node(self, node: Run) -> tuple[Run, bool]:
        """An XML blame node filtered, and whether it is kept."""
        made = node.get("actor") in self.actors
        if isinstance(node.get("runs"), list):
            runs, mine = self.runs(node["runs"])
            return {**node, "runs": runs}, mine or (made and not node["runs"])
        if isinstance(node.get("children"), list):
            kids = self.nodes(node["children"], self.blame_node)
            return {**node, "children": kids}, bool(kids) or (made and not node["children"])
        return node, made  # a map (Lexical's text node), or an element with no children

    def diff_node(self, node: Run) -> tuple[Run, bool]:
        """An XML diff node filtered, and whether it is kept."""
        if node.get("op") == "format" and isinstance(node.get("changed"), dict):
            node = self.reformatted(node)
        made = node.get("op") in _CHANGES and node.get("actor") in self.actors
        if isinstance(node.get("ops"), list):
            ops, mine = self.runs(node["ops"])
            return {**node, "ops": ops}, mine or made
        if isinstance(node.get("children"), list):
            kids = self.nodes(node["children"], self.diff_node)
            return {**node, "children": kids}, bool(kids) or made
        return node, made

    def reformatted(self, node: Run) -> Run:
        """A format node (its attributes or entries differ) as the actors' events left
        it: `changed` only the attributes they last set, named for the last of those, and
        `was` the later attributes with only those set back (so `was` and the later ones
        differ in theirs alone). None of theirs: an ``equal`` node, nobody's, as
        others' reformatting of a text is omitted. (One op named for whoever set any
        attribute last credited Ann's level to Bob, who set the align after her.)"""
        changed: dict[str, Any] = node["changed"]
        theirs = {k: v for k, v in changed.items() if v.get("actor") in self.actors}
        if not theirs:
            rest = {k: v for k, v in node.items() if k not in ("was", "changed")}
            return {**rest, "op": "equal", "actor": None, "seq": None}
        key = "map" if isinstance(node.get("map"), dict) else "attributes"
        was: dict[str, Any] = dict(node.get(key) or {})
        before: dict[str, Any] = node.get("was") or {}
        for k in theirs:
            if k in before:
                was[k] = before[k]
            else:
                was.pop(k, None)
        seq = max(v["seq"] for v in theirs.values())
        actor = next(v["actor"] for v in theirs.values() if v["seq"] == seq)
        return {**node, "actor": actor, "seq": seq, "was": was, "changed": theirs}

    @staticmethod
    def nodes(nodes: list[Run], one: Callable[[Run], tuple[Run, bool]]) -> list[Run]:
        return [kept for kept, keep in map(one, nodes) if keep]

    def roots(self, roots: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, entry in roots.items():
            key = "ops" if self.diff else "runs"
            if entry.get("type") == "text" and isinstance(entry.get(key), list):
                out[name] = {**entry, key: self.runs(entry[key])[0]}
            elif entry.get("type") == "xml" and isinstance(entry.get("nodes"), list):
                one = self.diff_node if self.diff else self.blame_node
                # (its `ops`, the XML string's character diff, are nobody's)
                rest = {k: v for k, v in entry.items() if k != "ops"}
                out[name] = {**rest, "nodes": self.nodes(entry["nodes"], one)}
            elif not self.diff and isinstance(entry.get("texts"), list):
                # a map's or array's nested texts: those with something of theirs
                out[name] = {**entry, "texts": self.nodes(entry["texts"], self.blame_node)}
        return out


def by_actors(roots: dict[str, Any], actors: Collection[str], *, diff: bool) -> dict[str, Any]:
    """A blame's (``diff`` false) or a diff's roots, keeping what `actors` wrote (made),
    as the module says. The answer is new; `roots` is not changed."""
    with gc_paused():
        return _Filter(actors, diff).roots(roots)


__all__ = ["MAX_ACTOR", "by_actors"]
