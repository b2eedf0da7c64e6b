"""What an undo took out and put in is counted off the event loop, the same counts.

An undo of a restore that took out half a book puts back 0.6 M characters; reading
them item by item (``removed.change_of``) held the event loop 0.4-0.8 s in one piece
(docs/history.md). The walks now run in a worker thread, on bytes taken from the
document on the loop. The checks compare the counts and name the thread that walked,
never time."""

from __future__ import annotations

import threading
from typing import Any

from pycrdt import Doc, Text, UndoManager

from palimpsest import removed
from palimpsest.ownership import Owners

SERVER = 99


def _undo_of_a_restore() -> tuple[Doc[Any], Owners, bytes]:
    """ann and bob write, the server (a restore by cy) takes most of it out, and the
    server (cy's undo) puts it back: the undo's update, as applied to the document."""
    doc: Doc[Any] = Doc(client_id=SERVER, skip_gc=True)
    text = doc.get("t", type=Text)
    owners = Owners(SERVER)
    owners.owners.update({1: "ann", 2: "bob"})
    for i, who in enumerate([1, 2] * 40):
        writer: Doc[Any] = Doc(client_id=who)
        writer.apply_update(doc.get_update())
        wt = writer.get("t", type=Text)
        before = doc.get_state()
        wt.insert(len(wt) if i % 3 else 0, f"word{i} 🌍é ")
        doc.apply_update(writer.get_update(before))
    undo = UndoManager(scopes=[text], capture_timeout_millis=0)
    owners.server_runs.append((0, "cy"))
    with doc.transaction():  # the restore: most of it out, its version's text in
        del text[5 : len(text) - 5]
        text.insert(5, "the old version's text")
    sub = []
    doc.observe(lambda e: sub.append(e.update))
    undo.undo()
    [update] = sub
    return doc, owners, update


async def test_an_undos_change_is_counted_off_the_loop_the_same(monkeypatch: Any) -> None:
    doc, owners, update = _undo_of_a_restore()
    expected = removed.change_of(doc, owners, update)
    assert expected.added[0] > 500 and expected.removed == {"cy": [22, 0]}
    walked: list[int] = []  # the threads that read items
    visible_items = removed.visible_items

    def spy(u: bytes) -> Any:
        walked.append(threading.get_ident())
        return visible_items(u)

    decode = removed.decode_update_meta

    def spy_decode(u: bytes) -> Any:
        walked.append(threading.get_ident())
        return decode(u)

    monkeypatch.setattr(removed, "visible_items", spy)
    monkeypatch.setattr(removed, "decode_update_meta", spy_decode)
    got = await removed.change_of_off_loop(doc, owners, update)
    assert got == expected
    assert len(walked) == 3  # the update's structs, its items, and what it took out
    assert threading.get_ident() not in walked
