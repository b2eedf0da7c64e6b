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
content now stays, never a version's.

Nor is a change made only there an undo step (``BookkeepingIds``, recorder.RoomUndo.record):
PUD's writes alone (a tab's new client id registered after a reload, a ``ds`` record
pushed after a deletion) neither start nor extend a step, nor clear the redo stack; a step
of them alone from before is passed over without a word by undo and redo. As steps, an
undo reaching them answered 409 "others deleted or moved all that your changes
inserted", and a reload after an undo cleared the user's redo stack."""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pycrdt import Array, Doc, Map

from .ranges import Ranges, from_b64, subtract, to_b64, union_into

if TYPE_CHECKING:
    from .history import yupdate

# (history's modules are imported where they are used: the history package imports this
# module as it starts, and this one imported first must not start it half-way)

log = logging.getLogger("palimpsest.undo")


# Per document (by id(); the most recent _MAX_DOCS), keys whose values last showed a root
# not to be PUD's (a value that is not a map holding ``ids`` and ``ds``): looked at
# first, by key, so that a map of many maps (a whiteboard's 50,000 shapes) is not
# enumerated on every undo (pycrdt lists all its keys to give one value: 15-30 ms). A
# witness proves the answer only as it is now, read again on every call in the root it
# is asked of: one gone or changed sends the call to the whole scan, and a witness of
# another document (an id reused) proves nothing wrong either.
_WITNESSES: OrderedDict[int, list[str]] = OrderedDict()
_MAX_WITNESSES = 8
_MAX_DOCS = 1024


def _fits(value: Any) -> bool:
    return (
        isinstance(value, Map)
        and isinstance(value.get("ids"), Array)
        and isinstance(value.get("ds"), Array)
    )


def is_user_data(root: Any) -> bool:
    """Whether `root` (a root's shared type) is a Y.PermanentUserData's map: a map, not
    empty, whose every value is a map holding the arrays ``ids`` and ``ds``. (Stops at
    the first value that is not, and remembers its key for the next call on the same
    document: an application's map of maps costs a look or two, not its every key.)"""
    if not isinstance(root, Map):
        return False
    doc = root.doc
    with doc.transaction():  # (no len(): yrs counts the entries one by one)
        witnesses = _WITNESSES.get(id(doc))
        if witnesses:
            for key in witnesses:
                if key in root and not _fits(root[key]):
                    return False
        seen = False
        for key in root.keys():
            seen = True
            if not _fits(root[key]):
                if witnesses is None:
                    witnesses = _WITNESSES.setdefault(id(doc), [])
                    while len(_WITNESSES) > _MAX_DOCS:
                        _WITNESSES.popitem(last=False)
                if key not in witnesses:
                    witnesses.insert(0, key)
                    del witnesses[_MAX_WITNESSES:]
                return False
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
    from .history.render import MAP

    out = set(named) & set(types)
    for name, kind in types.items():
        if kind != MAP or name in out:
            continue
        for doc in docs:
            if name in doc.keys() and is_user_data(doc.get(name, type=Map)):
                out.add(name)
                break
    return out


def _holds(ranges: Ranges, ref: tuple[int, int]) -> bool:
    spans = ranges.get(ref[0])
    if not spans:
        return False
    i = bisect.bisect_right(spans, (ref[1], float("inf"))) - 1
    return i >= 0 and spans[i][0] <= ref[1] < spans[i][1]


class BookkeepingIds:
    """The Yjs IDs of a live document's items that lie in its bookkeeping roots, kept up
    to date event by event, so that the undo recorder can tell a change made only there
    (``only``), which is no undo step.

    An item never leaves the root it was put in, so whether an ID is bookkeeping depends
    on the log alone, not on when a process reads it: every process, and a restart
    rebuilding the stacks from the log, tells alike. The roots are found (as
    ``bookkeeping_roots``) when the document's root names change, and the whole document
    is read then (once per load of a document that has some, and when a new one comes);
    otherwise each event's update only: an item is bookkeeping when its parent is such
    a root or such an item, or (parent implied) its origin is. What cannot be read (a
    v2 update) counts as content, as before: a step of the user's. The undo stacks'
    snapshot meta carries what was found (``to_json``), so that loading a document does
    not read it whole again (77 ms for a 550 kB one with PUD)."""

    def __init__(self, named: Iterable[str] = ()) -> None:
        self.named = tuple(named)
        self.names: set[str] = set()
        self.ids: Ranges = {}
        self._keys: tuple[str, ...] | None = None

    def follow(
        self, doc: Doc[Any], update: bytes | None, roots: Callable[[Doc[Any]], Mapping[str, Any]]
    ) -> None:
        """Take in one event applied to `doc` (`update`: its update, None: none to read;
        `roots`: the document's roots, typed, for ``bookkeeping_roots``)."""
        keys = tuple(sorted(doc.keys()))
        if keys != self._keys:
            self._keys = keys
            names = bookkeeping_roots(roots(doc), self.named) if keys else set()
            if names != self.names:
                self.names, self.ids = names, {}
                if names:
                    self._fold(doc.get_update(), causal=True)  # this event's items too
                return
        if self.names and update:
            self._fold(update)

    def to_json(self) -> dict[str, Any]:
        """What was found, for a snapshot's meta: a function of the log, as the stacks
        are (not the root names the live document knows: a root asked for by name is
        one, empty, on that process only)."""
        return {"names": sorted(self.names), "ids": to_b64(self.ids)}

    def load_json(self, raw: Any) -> None:
        """Take up what `to_json` gave (from a snapshot's meta). The roots are looked at
        again at the next event (their names are not kept): the whole document is read
        again only when they are not those."""
        if not isinstance(raw, dict):
            return
        names, ids = raw.get("names"), raw.get("ids")
        if isinstance(names, list) and isinstance(ids, str):
            try:
                found = from_b64(ids)
            except Exception as e:  # damaged: found anew, the undo stacks kept
                log.warning("bookkeeping items in the snapshot unreadable: %r", e)
                return
            self.names = {str(n) for n in names}
            self.ids = found

    def only(self, ins: Ranges, dels: Ranges) -> bool:
        """Whether inserting `ins` and deleting `dels` changed bookkeeping roots alone
        (False for no change at all)."""
        if not self.names or not (ins or dels):
            return False
        return not subtract(ins, self.ids) and not subtract(dels, self.ids)

    def _fold(self, update: bytes, causal: bool = False) -> None:
        from .history import yupdate

        try:
            left, _ = yupdate.decode(update, gc=True)
            if causal:  # a whole document: its clients in id order, not causal
                left = yupdate.in_causal_order(left)
        except yupdate.Unsupported as e:
            log.debug("bookkeeping items not read (counted as content): %s", e)
            return
        # an item's origin may come later in an update (another client's): again, until
        # nothing more joins
        while left:
            rest = [s for s in left if not self._joins(s)]
            if len(rest) == len(left):
                return
            left = rest

    def _joins(self, s: yupdate.Struct) -> bool:
        parent = s.parent
        if isinstance(parent, str):
            mine = parent in self.names
        else:
            ref = parent if parent is not None else (s.origin or s.right)
            mine = ref is not None and _holds(self.ids, ref)
        if mine:
            union_into(self.ids, {s.client: [(s.clock, s.clock + s.length)]})
        return mine


__all__ = ["BookkeepingIds", "bookkeeping_of", "bookkeeping_roots", "is_user_data"]
