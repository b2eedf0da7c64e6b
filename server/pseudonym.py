"""Renaming an actor across a whole store (``palimpsest rename-actor``): pseudonymising a
user for an erasure request, so that the store names them by another name from then on.

Where an actor's name is kept, and what becomes of it:

- the log: actors are interned (``symbols``), so every event of theirs, tail and sealed
  segments alike, is renamed with that one row (the store's rename_actor);
- tags: their ``actor`` column;
- snapshots (compaction bases and ladder rungs too): the undo stacks in their meta are
  keyed by actor (:data:`server.undo.META_KEY`), and the owners of Yjs client ids
  (:data:`server.ownership.META_KEY`) are actors; both are rewritten here;
- the stored attribution index (``derived``): a cache, dropped for the documents the
  actor wrote and rebuilt on the next blame or diff;
- a server's memory (symbol caches, live rooms' undo stacks and owners, attribution
  indexes, presence): why the rename is done with no server serving the store.

What is not in the store cannot be renamed: changefeed deliveries and webhook bodies sent
before, backups, and the entries of other extensions' snapshot meta (their keys are
reported when they still hold the old name as a JSON string).
"""

from __future__ import annotations

import json
from typing import Any

from .ownership import META_KEY as OWNERS_KEY
from .store.base import ActorRenamed, EventStore
from .undo import META_KEY as UNDO_KEY

#: snapshot meta entries that this module rewrites (the others are not ours to read)
KNOWN_KEYS = frozenset({UNDO_KEY, OWNERS_KEY})


class MetaRenamer:
    """Rewrites a snapshot's meta for the rename; remembers the entries it does not know
    that still hold the old name (another extension's)."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new
        self._quoted = json.dumps(old)
        #: keys of meta entries, not ours, whose JSON holds the old name as a string
        self.unknown: set[str] = set()

    def __call__(self, meta: dict[str, Any]) -> dict[str, Any] | None:
        old, new = self.old, self.new
        out = dict(meta)
        undo = meta.get(UNDO_KEY)
        if isinstance(undo, dict) and isinstance(undo.get("actors"), dict):
            actors = undo["actors"]
            if old in actors:
                out[UNDO_KEY] = {
                    **undo,
                    "actors": {(new if a == old else a): st for a, st in actors.items()},
                }
        owners = meta.get(OWNERS_KEY)
        if isinstance(owners, dict):
            renamed: dict[str, Any] = {}
            for client, owner in owners.items():
                if client == "server" and isinstance(owner, list):
                    # runs of the server's client id: [start, the actor it wrote for]
                    owner = [
                        [run[0], new] if isinstance(run, list) and run[1:] == [old] else run
                        for run in owner
                    ]
                elif owner == old:
                    owner = new
                renamed[client] = owner
            if renamed != owners:
                out[OWNERS_KEY] = renamed
        for key, value in meta.items():
            if key not in KNOWN_KEYS and self._quoted in json.dumps(value):
                self.unknown.add(key)
        return out if out != meta else None


async def rename_actor(store: EventStore, old: str, new: str) -> tuple[ActorRenamed, set[str]]:
    """Rename `old` to `new` in `store` (no server may serve it: their memory holds the
    old name). Returns what changed and the keys of snapshot meta entries of other
    extensions that still name `old`. Raises ValueError for names that cannot be
    renamed, ActorTaken when `new` is an actor already or `old` is also an event kind."""
    if not old or not new:
        raise ValueError("both names must be non-empty")
    if old == new:
        raise ValueError(f"{old!r} is already its name")
    renamer = MetaRenamer(old, new)
    done = await store.rename_actor(old, new, renamer)
    return done, renamer.unknown


__all__ = ["KNOWN_KEYS", "MetaRenamer", "rename_actor"]
