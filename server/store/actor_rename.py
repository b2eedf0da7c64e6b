"""What the SQL stores share to rename an actor (EventStore.rename_actor): the log keeps
actors as ids into ``symbols``, so the log itself needs only that row renamed; a sealed
segment is read to learn whether the actor wrote in its document, and whether its name is
also an event kind (the two share ``symbols``: renaming it would rename that kind too)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ActorTaken
from . import segments as S


@dataclass
class Uses:
    """Where the old name's symbol id is used, gathered row by row and segment by
    segment."""

    old: str
    symbol: int
    docs: set[str] = field(default_factory=set)
    damaged: int = 0

    def segment(self, doc: str, blob: bytes, checksum: bytes) -> None:
        try:
            cols = S.decode(bytes(blob), bytes(checksum))
        except S.SegmentDamaged:
            self.damaged += 1  # its ids are unreadable; no name is stored in it either way
            return
        if self.symbol in cols.kind:
            raise kind_clash(self.old, doc)
        if self.symbol in cols.actor:
            self.docs.add(doc)


def taken(new: str, old_left: bool = True) -> ActorTaken:
    """`new` is an actor already; `old_left`: whether `old` still is one (when it is not,
    the rename was done already: a run again after one that committed)."""
    e = ActorTaken(
        f"{new!r} is an actor of this store already: a rename does not merge two users "
        "(their undo stacks and client ids would mix); choose a name nobody has"
    )
    e.renamed_already = not old_left
    return e


def kind_clash(old: str, doc: str) -> ActorTaken:
    return ActorTaken(
        f"{old!r} is also the name of an event kind (in {doc!r}): renaming it would rename "
        "that kind too; nothing was changed"
    )


__all__ = ["Uses", "kind_clash", "taken"]
