"""Blame runs and diff ops joined by who wrote them (``?join=actor``).

The index answers one run per event: an editor that sends each keystroke as its own
update (Tiptap, Lexical, Quill, CodeMirror all do) makes a word typed by one person a
run per character, each with its own seq. That is the truth about the log, and what a
tool that replays or links to events needs; a view of who wrote what wants the word.
With ``join=actor`` each list of runs or ops, at every level of a tree (an XML root's
texts, a Lexical paragraph's), has its neighbours joined where nothing but their seqs
differ: the same op, the same actor, the same formatting (``attributes``, ``was``),
neither an embed nor a node, both with a seq or both without, (a diff's inserts)
both text moved or neither, and both of a compaction's base (``compacted``) or
neither. A joined run's ``seq`` is the earliest of its events and ``last_seq`` the
latest; in this mode every run or op with a seq carries ``last_seq``.
The text of the joined runs, in order, is the text of the runs they were.
"""

from __future__ import annotations

from typing import Any

from .attribution import gc_paused

#: the values of ``?join=``
EVENT, ACTOR = "event", "actor"
JOINS = (EVENT, ACTOR)


def join_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`runs` (blame runs or diff ops) with neighbours joined, as the module says; the
    nodes inside them joined too. One pass, each joined run's text joined once (a
    keystroke trace's blame is 100k runs)."""
    out: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None  # the run being joined to, if it can be
    last_key: tuple[Any, ...] = ()
    texts: list[str] = []
    for run in runs:
        seq = run.get("seq")
        if "node" in run or "embed" in run:
            if last is not None:
                last["text"] = "".join(texts)
                last = None
            run = dict(run)
            if "node" in run:
                run["node"] = join_node(run["node"])
            if seq is not None:
                run["last_seq"] = seq
            out.append(run)
            continue
        key = (run.get("op"), run.get("actor"), run.get("attributes"), run.get("was"),
               seq is None, run.get("moved"), run.get("compacted"))  # fmt: skip
        if last is not None and key == last_key:
            texts.append(run["text"])
            if seq is not None:
                last["seq"] = min(last["seq"], seq)
                last["last_seq"] = max(last["last_seq"], seq)
            continue
        if last is not None:
            last["text"] = "".join(texts)
        last, last_key = dict(run), key
        if seq is not None:
            last["last_seq"] = seq
        texts = [run["text"]]
        out.append(last)
    if last is not None:
        last["text"] = "".join(texts)
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
    joined; other roots as they are. (34 ms for a keystroke trace's 105k runs, up to 210: the
    route runs it in a worker thread.)"""
    with gc_paused():
        return _join_roots(roots)


def _join_roots(roots: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, entry in roots.items():
        entry = dict(entry)
        if entry.get("type") == "text":
            for key in ("runs", "ops"):
                if key in entry:
                    entry[key] = join_runs(entry[key])
        if "nodes" in entry:
            entry["nodes"] = [join_node(n) for n in entry["nodes"]]
        if "texts" in entry:  # (a map's or array's nested texts)
            entry["texts"] = [{**t, "runs": join_runs(t["runs"])} for t in entry["texts"]]
        out[name] = entry
    return out


__all__ = ["ACTOR", "EVENT", "JOINS", "join_node", "join_roots", "join_runs"]
