"""What an undo or a redo took out that other users wrote, for its answer.

Undoing a step deletes what is left of its insertions, and whatever lies inside a
container they made goes with them, as in Yjs's UndoManager: undoing the Enter that made
a paragraph takes out what others typed in it since (docs/undo.md). The answer says so,
per user (``removed_others``), so that the page can tell the undoer.

The undo's own deletions less what the reverted step inserted are what it took out
besides: one range subtraction, nothing more for an ordinary undo. Who wrote them: the
owners of their Yjs client ids (ownership.Owners); for the server's own client id, which
every user's undos, redos, restores and text edits share, the actor of the server change
that wrote each clock (``Owners.server_runs``), so that text an undo put back counts
as the undoer's. How much: read from the live document's items of those client ids from
the first clock taken out on (deleted items keep their content: skip_gc), not from the
whole document.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from .. import protocol as P
from ..ownership import Owners
from ..ranges import Ranges, subtract
from ..room import Room
from ..updates import visible_items

#: (client, first clock, end clock, writer): a span of items taken out and who wrote it
_Span = tuple[int, int, int, str | None]


def removed_others(room: Room, actor: str, deleted: Ranges, own: Ranges) -> list[dict[str, Any]]:
    """Per user other than `actor`, what of theirs the undo or redo by `actor` that
    deleted `deleted` took out besides `own` (what the reverted step inserted): text in
    characters, anything else (an element, an embed, a map or array value) in items.
    None as the user: written by a client id nobody owns (a relayed one)."""
    besides = subtract(deleted, own)
    if not besides:
        return []
    spans = [span for span in _spans(room.owners, besides) if span[3] != actor]
    if not spans:
        return []
    totals: dict[str | None, list[int]] = {}
    for text, start, end, user in _taken(room, spans):
        got = totals.setdefault(user, [0, 0])
        if text is None:
            got[1] += end - start
        else:
            got[0] += _characters(text, start, end)
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


def _taken(room: Room, spans: list[_Span]) -> Iterator[tuple[str | None, int, int, str | None]]:
    """(text or None, start, end, writer) of each part of an item inside `spans`: start
    and end in the item's clock units (UTF-16 code units of a text)."""
    sv = P.decode_state_vector(room.doc.get_state())
    for client, start, _end, _user in spans:
        sv[client] = min(start, sv.get(client, start))
    items: dict[int, list[tuple[int, int, str | None]]] = {}
    update = room.doc.get_update(P.encode_state_vector(sv))
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
