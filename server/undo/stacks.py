"""Undo steps and each actor's undo and redo stacks, as persisted in snapshot meta."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from ..ranges import Ranges, decode_ranges, encode_ranges

# --- steps and stacks ---------------------------------------------------------------------


def _runs(seqs: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7, 8] -> [[1, 3], [7, 8]]: a step's seqs, compact in snapshot meta."""
    out: list[list[int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


@dataclass
class Step:
    """One undoable unit: the seqs of its events and the IDs they inserted and deleted."""

    seqs: list[int]
    ins: Ranges
    dels: Ranges
    #: to_json() of an unchanged step, reused by every snapshot; touch() forgets it
    _json: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def touch(self) -> None:
        self._json = None

    def to_json(self) -> dict[str, Any]:
        if self._json is None:
            self._json = {
                "runs": _runs(self.seqs),
                "ins": base64.b64encode(encode_ranges(self.ins)).decode(),
                "dels": base64.b64encode(encode_ranges(self.dels)).decode(),
            }
        return self._json

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        seqs = (
            [s for a, b in d["runs"] for s in range(int(a), int(b) + 1)]
            if "runs" in d
            else [int(s) for s in d["seqs"]]
        )
        return cls(
            seqs,
            decode_ranges(base64.b64decode(d["ins"])),
            decode_ranges(base64.b64decode(d["dels"])),
        )


@dataclass
class Stacks:
    """One actor's undo and redo stacks, and whether their last step may still grow."""

    undo: list[Step] = field(default_factory=list)
    redo: list[Step] = field(default_factory=list)
    last_ts: int = 0
    open: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "undo": [s.to_json() for s in self.undo],
            "redo": [s.to_json() for s in self.redo],
            "last_ts": self.last_ts,
            "open": self.open,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stacks:
        return cls(
            [Step.from_json(s) for s in d.get("undo", [])],
            [Step.from_json(s) for s in d.get("redo", [])],
            int(d.get("last_ts", 0)),
            bool(d.get("open", False)),
        )
