"""Blame runs and diff ops joined by who wrote them (``?join=actor``).

The index answers one run per event: an editor that sends each keystroke as its own
update (Tiptap, Lexical, Quill, CodeMirror all do) makes a word typed by one person a
run per character, each with its own seq. That is the truth about the log, and what a
tool that replays or links to events needs; a view of who wrote what wants the word.
With ``join=actor`` each list of runs or ops, at every level of a tree (an XML root's
texts, a Lexical paragraph's), has its neighbours joined where nothing but their seqs
differ: the same op, the same actor, the same formatting (``attributes``, ``was``),
neither an embed nor a node, both with a seq or both without. A joined run's ``seq`` is
the earliest of its events and ``last_seq`` the latest; in this mode every run or op
with a seq carries ``last_seq``.
The text of the joined runs, in order, is the text of the runs they were.
"""

from __future__ import annotations

from typing import Any

#: the values of ``?join=``
EVENT, ACTOR = "event", "actor"
JOINS = (EVENT, ACTOR)

#: what two neighbours must share to be joined
_SAME = ("op", "actor", "attributes", "was")


def _joinable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if "embed" in a or "embed" in b or "node" in a or "node" in b:
        return False
    if (a.get("seq") is None) != (b.get("seq") is None):  # (unknown beside known)
        return False
    return all(a.get(k) == b.get(k) for k in _SAME)


def join_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`runs` (blame runs or diff ops) with neighbours joined, as the module says; the
    nodes inside them joined too."""
    out: list[dict[str, Any]] = []
    for run in runs:
        run = dict(run)
        if "node" in run:
            run["node"] = join_node(run["node"])
        seq = run.get("seq")
        if seq is not None:
            run["last_seq"] = seq
        last = out[-1] if out else None
        if last is not None and _joinable(last, run):
            last["text"] += run["text"]
            if seq is not None:
                last["seq"] = min(last["seq"], seq)
                last["last_seq"] = max(last["last_seq"], seq)
            continue
        out.append(run)
    return out


def join_node(node: dict[str, Any]) -> dict[str, Any]:
    """An XML node (blame's or a diff's) with its runs, ops and children joined (a
    node's own `seq`, who made it, is as it was)."""
    node = dict(node)
    for key in ("runs", "ops"):
        if key in node:
            node[key] = join_runs(node[key])
    if "children" in node:
        node["children"] = [join_node(kid) for kid in node["children"]]
    return node


def join_roots(roots: dict[str, Any]) -> dict[str, Any]:
    """A blame's or diff's roots, each text root's runs (ops) and each XML root's nodes
    joined; other roots as they are."""
    out: dict[str, Any] = {}
    for name, entry in roots.items():
        entry = dict(entry)
        if entry.get("type") == "text":
            for key in ("runs", "ops"):
                if key in entry:
                    entry[key] = join_runs(entry[key])
        if "nodes" in entry:
            entry["nodes"] = [join_node(n) for n in entry["nodes"]]
        out[name] = entry
    return out


__all__ = ["ACTOR", "EVENT", "JOINS", "join_node", "join_roots", "join_runs"]
