"""Editing sessions: each actor's events separated by less than a gap; and the cache of
them, bounded (a reader may ask for any gap of any document it can read)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..store.base import Event, Made
from ..util import iso

#: the kind of the events that change nothing (an undo step's end, an explicit undo
#: group's open and its renewals: server/undo), which a timeline leaves out
MARK = "undo_mark"

#: what one session kept in memory takes, roughly: its dict of seven entries and their
#: ints (200 sessions grew the process by 60 kB)
SESSION_BYTES = 400


@dataclass
class Sessions:
    gap_ms: int
    seq: int = 0
    #: the log's compaction base they were grouped from (another one: group again)
    base: int = 0
    #: the DocInfo.made of the document they were grouped from (another one: the name
    #: was deleted and written again, group again)
    created: Made | None = None
    done: list[dict[str, Any]] = field(default_factory=list)
    open: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, ev: Event) -> None:
        cur = self.open.get(ev.actor)
        change = int(ev.kind != MARK)
        if cur is not None and ev.ts - cur["_end"] < self.gap_ms:
            cur.update(
                end_seq=ev.seq,
                _end=max(cur["_end"], ev.ts),
                events=cur["events"] + 1,
                changes=cur["changes"] + change,
            )
        else:
            if cur is not None:
                self.done.append(cur)
            self.open[ev.actor] = {
                "actor": ev.actor,
                "start_seq": ev.seq,
                "end_seq": ev.seq,
                "_start": ev.ts,
                "_end": ev.ts,
                "events": 1,
                "changes": change,
            }
        self.seq = ev.seq

    def estimated_bytes(self) -> int:
        return (len(self.done) + len(self.open)) * SESSION_BYTES

    def all(self) -> list[dict[str, Any]]:
        out = sorted([*self.done, *self.open.values()], key=lambda s: s["start_seq"])
        return [
            {
                "actor": s["actor"],
                "start_seq": s["start_seq"],
                "end_seq": s["end_seq"],
                "start": iso(s["_start"]),
                "end": iso(s["_end"]),
                "events": s["events"],
                "changes": s["changes"],
            }
            for s in out
        ]


class SessionsCache:
    """Sessions by (document, gap), least recently used first out: at most `max_entries`
    of them, of at most `max_bytes` together as Sessions.estimated_bytes estimates them
    (the one just used stays, however large). A reader who asks for many gaps, or many
    documents, costs reads of the log, not memory beyond these bounds."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int], Sessions] = OrderedDict()
        #: observable: entries dropped to keep within the bounds
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def kept_bytes(self) -> int:
        return sum(s.estimated_bytes() for s in self._entries.values())

    def get(self, doc: str, gap_ms: int) -> Sessions | None:
        return self._entries.get((doc, gap_ms))

    def keep(self, doc: str, sessions: Sessions) -> None:
        """Keep `sessions` (of `doc`, extended to the head just now), the most recently
        used, and drop the least recently used others while over the bounds."""
        key = (doc, sessions.gap_ms)
        self._entries[key] = sessions
        self._entries.move_to_end(key)
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or self.kept_bytes > self.max_bytes
        ):
            self._entries.popitem(last=False)
            self.evicted += 1

    def forget(self, doc: str) -> None:
        for key in [k for k in self._entries if k[0] == doc]:
            del self._entries[key]


__all__ = ["SESSION_BYTES", "Sessions", "SessionsCache"]
