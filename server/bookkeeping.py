"""Bookkeeping roots: roots of a document that record who edited, not what anyone
wrote, which the server's undo, redo, revert and restore leave as they are now.

Yjs's Y.PermanentUserData (PUD), which y-prosemirror's and y-tiptap's attribution use,
keeps a root map (``users`` as they set it up): per user name a map holding the arrays
``ids`` (the user's Yjs client ids) and ``ds`` (the delete set of each of their
deletions, pushed right after it). Those writes reach the server with the user's edit
and join its undo step; undone with it, an undo of a deletion took its ``ds`` record
out, an undo far enough took the user's whole entry out (made in their first step),
and a restore to a version before another user came took out theirs. Every PUD client
then threw ``TypeError: Cannot read properties of undefined (reading 'get')`` in PUD's
observer (a Node process exited, a browser page failed). Yjs's own UndoManager never
touches PUD: it is scoped to the types it tracks, and y-prosemirror relies on PUD never
being undone.

A root is bookkeeping when it is named in ``settings.undo_skip_roots`` (``serve
--undo-skip-roots``), or when it is a map that looks like PUD's now: not empty, and its
every value a map holding the arrays ``ids`` and ``ds``. Undo, redo and revert leave
such roots out of their scope (recorder.RoomUndo.scopes): what a step wrote there stays;
restore leaves them out of what it makes equal to the version (history.service): their
content now stays, never a version's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pycrdt import Array, Doc, Map

from .history.render import MAP


def is_user_data(root: Any) -> bool:
    """Whether `root` (a root's shared type) is a Y.PermanentUserData's map: a map, not
    empty, whose every value is a map holding the arrays ``ids`` and ``ds``. (Stops at
    the first value that is not: an application's map of maps costs one look.)"""
    if not isinstance(root, Map):
        return False
    seen = False
    for value in root.values():
        if not isinstance(value, Map):
            return False
        if not isinstance(value.get("ids"), Array) or not isinstance(value.get("ds"), Array):
            return False
        seen = True
    return seen


def bookkeeping_roots(roots: Mapping[str, Any], named: Iterable[str] = ()) -> set[str]:
    """The names among `roots` (name: its shared type, None when not typed) that undo,
    redo, revert and restore leave alone: those `named` (the setting) and those that
    look like a PermanentUserData's map now."""
    names = set(named)
    return {n for n, root in roots.items() if n in names or is_user_data(root)}


def bookkeeping_of(
    docs: Iterable[Doc[Any]], types: Mapping[str, str], named: Iterable[str] = ()
) -> set[str]:
    """The names among `types` (name: its kind, as history.render names them) that are
    bookkeeping in any of `docs` (a restore's live document and the version: a user map
    emptied since stays as it is too), or `named`."""
    out = set(named) & set(types)
    for name, kind in types.items():
        if kind != MAP or name in out:
            continue
        for doc in docs:
            if name in doc.keys() and is_user_data(doc.get(name, type=Map)):
                out.add(name)
                break
    return out


__all__ = ["bookkeeping_of", "bookkeeping_roots", "is_user_data"]
