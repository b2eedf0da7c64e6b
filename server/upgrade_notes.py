"""What to do after upgrading a database that certain older versions wrote, as far as
its schema version tells: `palimpsest migrate` prints it (docs/storage.md, "After
upgrading from the versions of 1-6 December 2026").

The versions from cb701aa (the attribution rule, 1 December 2026) up to c024d5c (6
December) refused two users typing at once in tabs of one browser (y-websocket shares
edits between tabs over a BroadcastChannel, quicker than the socket), in a loop: 4400
"an item refers to client ... which the document does not have: re-sync", then 4403
"client id ... belongs to another user" at every reconnect. The document's log stopped
there; the text typed since is held only by those tabs. The current version takes each
tab's own text back when it reconnects, and another user's held by it only inside a
recovery window (``--recovering``). Every version of schema 3 and 4 had that bug, and
some of schema 2; schema 5 is also this version's, so a database of it cannot be told
apart by its schema (c11da25 and 47f57d2 wrote such ones): the docs say so.
"""

from __future__ import annotations

#: schema versions that only affected versions wrote
AFFECTED = frozenset({3, 4})
#: schema versions that some affected versions wrote
MAYBE_AFFECTED = frozenset({2})


def after_migrate(found: int) -> str | None:
    """The advice for a database found at schema version `found` before the upgrade, or
    None when its schema says nothing worth telling."""
    if found in AFFECTED:
        wrote = f"A version that wrote this database (schema version {found})"
    elif found in MAYBE_AFFECTED:
        wrote = f"Versions of 1 December 2026 that wrote schema version {found}"
    else:
        return None
    return (
        f"{wrote} refused two users typing at once (4400 'an item refers to client ... "
        "which the document does not have: re-sync', then 4403 'client id ... belongs to "
        "another user' at every reconnect): the text typed since may be held only by the "
        "editors' open tabs. Start the upgraded server with `--recovering 60` (every "
        "process of a scale-out) and ask the editors to keep those tabs open until they "
        "have reconnected: each tab's own text comes back anyway, another user's text "
        "held by it only inside the window. See docs/storage.md, 'After upgrading'."
    )


__all__ = ["AFFECTED", "MAYBE_AFFECTED", "after_migrate"]
