"""Editing sessions: each actor's events separated by less than a gap."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..store.base import Event
from ..util import iso


@dataclass
class Sessions:
    gap_ms: int
    seq: int = 0
    #: the log's compaction base they were grouped from (another one: group again)
    base: int = 0
    done: list[dict[str, Any]] = field(default_factory=list)
    open: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, ev: Event) -> None:
        cur = self.open.get(ev.actor)
        if cur is not None and ev.ts - cur["_end"] < self.gap_ms:
            cur.update(end_seq=ev.seq, _end=max(cur["_end"], ev.ts), events=cur["events"] + 1)
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
            }
        self.seq = ev.seq

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
            }
            for s in out
        ]


__all__ = ["Sessions"]
