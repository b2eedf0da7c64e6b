"""What a server change (an undo, a redo, a restore) took out that users wrote, and what
it put in, for its answer.

Undoing a step deletes what is left of its insertions, and whatever lies inside a
container they made goes with them, as in Yjs's UndoManager: undoing the Enter that made
a paragraph takes out what others typed in it since (docs/undo.md). A restore makes the
document equal to an old version, and so takes out everything written since that the
version lacks, whoever wrote it (docs/history.md). The answers say so, per user
(``removed_others``), so that the page can tell the user, and a restore's dry run says
it before anything is written.

An undo's own deletions less what the reverted step inserted are what it took out
besides: one range subtraction, nothing more for an ordinary undo. (Less only what the
step inserted under the undoer's own client ids, or the server's: who wrote a text is
the owner of its client id, not whoever's event carried it.) Who wrote them: the
owners of their Yjs client ids (ownership.Owners); for the server's own client id, which
every user's undos, redos, restores and text edits share, the actor of the server change
that wrote each clock (``Owners.server_runs``), so that text an undo put back counts
as the undoer's. How much: read from the document's items of those client ids from
the first clock taken out on (deleted items keep their content: skip_gc), not from the
whole document.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc

from . import cpu_account
from . import protocol as P
from .ownership import Owners
from .ranges import Ranges, subtract
from .updates import UpdateMeta, decode_update_meta, visible_items

#: (client, first clock, end clock, writer): a span of items taken out and who wrote it
_Span = tuple[int, int, int, str | None]


def removed_others(
    doc: Doc[Any],
    owners: Owners,
    actor: str,
    deleted: Ranges,
    own: Ranges | None = None,
    writer: str | None = None,
) -> list[dict[str, Any]]:
    """Per user other than `actor`, what of theirs the change by `actor` that deleted
    `deleted` (in `doc`, whose client ids `owners` knows) took out besides `own` (an
    undo's or a redo's: what the reverted step inserted; a revert's: what `writer`'s
    reverted events inserted), as far as `own` is `writer`'s (default `actor`) by
    client-id ownership: text in characters, anything else (an element, an embed, a
    map or array value) in items. None as the user: written by a client id nobody owns
    (a relayed one)."""
    mine = _theirs(owners, writer or actor, own) if own else None
    besides = subtract(deleted, mine) if mine else deleted
    if not besides:
        return []
    spans = [span for span in _spans(owners, besides) if span[3] != actor]
    return _entries(_totals(doc, spans)) if spans else []


def _theirs(owners: Owners, actor: str, own: Ranges) -> Ranges:
    """What of `own` (what the step an undo or a redo of `actor`'s reverted inserted)
    is `actor`'s text: the items under client ids `actor` owns, and those of the
    server's client id (the step's copies of what an undo brought back: its owner's,
    as blame has them). Items under ids other users own count as theirs, and under ids
    nobody owns (relayed) as nobody's, wherever they were logged: an event may carry
    them (an import, whose ids their writers claim as they type again; a sync step 2
    that brought a restored backup's lost edits back, from before such a step was only
    its sender's own: recorder.RoomUndo._senders_own). Counted by the event, they hid
    what the undo took out of those users' text."""
    known, server = owners.owners, owners.server
    if all(c == server or known.get(c) == actor for c in own):
        return own
    return {c: r for c, r in own.items() if c == server or known.get(c) == actor}


@dataclass(frozen=True, slots=True)
class Change:
    """What a change took out, per writer, and what it put in: a restore's answer."""

    #: per writer (None: a client id nobody owns), [characters, items] taken out
    removed: dict[str | None, list[int]]
    #: [characters, items] put in
    added: tuple[int, int]

    def answer(self, actor: str) -> dict[str, Any]:
        """``removed`` and ``added`` in all, and, when `actor` made the change and it took
        out what others wrote, ``removed_others`` (as an undo's answer has it)."""
        chars = sum(c for c, _ in self.removed.values())
        items = sum(i for _, i in self.removed.values())
        out: dict[str, Any] = {
            "removed": {"characters": chars, "items": items},
            "added": {"characters": self.added[0], "items": self.added[1]},
        }
        others = _entries({u: t for u, t in self.removed.items() if u != actor})
        if others:
            out["removed_others"] = others
        return out


def change_of(doc: Doc[Any], owners: Owners, update: bytes) -> Change:
    """What the change `update`, applied to `doc` (whose client ids `owners` knows),
    took out per writer and put in."""
    meta = decode_update_meta(update)
    spans = list(_spans(owners, meta.deletes))
    return _count(update, meta, spans, _items_of(doc, spans))


async def change_of_off_loop(doc: Doc[Any], owners: Owners, update: bytes) -> Change:
    """change_of, its walks of the updates' items in a worker thread: the undo of a
    restore that took out half a book puts back 0.6 M characters, and reading them (and
    what it took out) held the event loop 0.4-0.8 s in one piece (docs/history.md). On
    the loop only what needs the live document and its owners: their spans and yrs's
    encoding of the items they touch (bytes: the thread reads a copy). The same counts:
    items taken out keep their content (skip_gc), whatever is written meanwhile."""
    meta = await cpu_account.to_thread(decode_update_meta, update)
    spans = list(_spans(owners, meta.deletes))
    items = _items_of(doc, spans)
    return await cpu_account.to_thread(_count, update, meta, spans, items)


def _count(update: bytes, meta: UpdateMeta, spans: list[_Span], items: bytes | None) -> Change:
    chars = n_items = 0
    for client, clock, length, text in visible_items(update):
        # (what it put in and took out again at once is not there)
        for lo, hi in subtract({client: [(clock, clock + length)]}, meta.deletes).get(client, []):
            if text is None:
                n_items += hi - lo
            else:
                chars += _characters(text, lo - clock, hi - clock)
    return Change(_totals_in(items, spans), (chars, n_items))


def change_in_parts(
    doc: Doc[Any], owners: Owners, parts: list[tuple[bytes, dict[Any, int] | None]]
) -> Change:
    """change_of a change made in parts (a restore: a transaction per plain text root,
    one for the rest), each part's update and, where blame named the writers of the
    characters it took out (restore.set_text), how many of each's: those count for
    them, as blame has them (text an undo brought back is its writer's), rather than
    for the owners of its items (the server's client id: the undoer)."""
    removed: dict[str | None, list[int]] = {}
    chars = items = 0
    for update, named in parts:
        got = change_of(doc, owners, update)
        chars, items = chars + got.added[0], items + got.added[1]
        by = got.removed if named is None else {u: [n, 0] for u, n in named.items()}
        for user, (c, i) in by.items():
            total = removed.setdefault(user, [0, 0])
            total[0] += c
            total[1] += i
    return Change(removed, (chars, items))


def _totals(doc: Doc[Any], spans: list[_Span]) -> dict[str | None, list[int]]:
    return _totals_in(_items_of(doc, spans), spans)


def _totals_in(items: bytes | None, spans: list[_Span]) -> dict[str | None, list[int]]:
    totals: dict[str | None, list[int]] = {}
    for text, start, end, user in _taken(items, spans):
        got = totals.setdefault(user, [0, 0])
        if text is None:
            got[1] += end - start
        else:
            got[0] += _characters(text, start, end)
    return totals


def _entries(totals: dict[str | None, list[int]]) -> list[dict[str, Any]]:
    return [
        {"user": user, "characters": chars, "items": items}
        for user, (chars, items) in sorted(totals.items(), key=lambda kv: (kv[0] is None, kv[0]))
        if chars or items
    ]


def _spans(owners: Owners, ids: Ranges) -> Iterator[_Span]:
    for client, ranges in ids.items():
        for start, end in ranges:
            if client != owners.server:
                yield client, start, end, owners.owners.get(client)
                continue
            runs = owners.server_runs
            # runs[i - 1] wrote `start` (none known when i is 0); runs[i] starts after
            i = bisect.bisect_right(runs, start, key=lambda run: run[0])
            at = start
            while at < end:
                upto = min(runs[i][0], end) if i < len(runs) else end
                yield client, at, upto, runs[i - 1][1] if i else None
                at, i = upto, i + 1


def _items_of(doc: Doc[Any], spans: list[_Span]) -> bytes | None:
    """The document's items of the clients of `spans` from the first clock taken out
    on, as an update (None: no span)."""
    if not spans:
        return None
    sv = P.decode_state_vector(doc.get_state())
    for client, start, _end, _user in spans:
        sv[client] = min(start, sv.get(client, start))
    return doc.get_update(P.encode_state_vector(sv))


def _taken(
    update: bytes | None, spans: list[_Span]
) -> Iterator[tuple[str | None, int, int, str | None]]:
    """(text or None, start, end, writer) of each part of an item of `update` (see
    _items_of) inside `spans`: start and end in the item's clock units (UTF-16 code
    units of a text)."""
    if update is None:
        return
    items: dict[int, list[tuple[int, int, str | None]]] = {}
    for client, clock, length, text in visible_items(update):
        items.setdefault(client, []).append((clock, length, text))
    for client, start, end, user in spans:
        mine = items.get(client, [])
        i = max(bisect.bisect_right(mine, start, key=lambda item: item[0]) - 1, 0)
        for clock, length, text in mine[i:]:
            if clock >= end:
                break
            lo, hi = max(start, clock), min(end, clock + length)
            if lo < hi:
                yield text, lo - clock, hi - clock, user


def _characters(text: str, start: int, end: int) -> int:
    """The characters of `text` between UTF-16 offsets `start` and `end`."""
    if text.isascii():
        return end - start
    units = text.encode("utf-16-le", "surrogatepass")[2 * start : 2 * end]
    return len(units.decode("utf-16-le", "surrogatepass"))
