"""Undo steps and each actor's undo and redo stacks, as persisted in snapshot meta, and the
bounds of an explicit undo group."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol import decode_state_vector, encode_state_vector
from ..ranges import Ranges, decode_ranges, encode_ranges

if TYPE_CHECKING:
    from ..settings import Settings

#: the longest id of an explicit undo group a client may choose
GROUP_ID_MAX = 64


@dataclass(frozen=True, slots=True)
class GroupLimits:
    """What one step of an explicit undo group (open_group ... close_group) may hold, and
    how long the group stays open without a change or a renewal by its actor. Past
    `max_events` or `max_bytes` (of updates) the group goes on in a new step; after
    `idle_ms` it ends by itself (a client that died with a group open does not capture
    its user's next day of typing)."""

    max_events: int = 10_000
    max_bytes: int = 8 * 1024 * 1024
    idle_ms: int = 60_000

    @classmethod
    def from_settings(cls, settings: Settings) -> GroupLimits:
        return cls(
            settings.undo_group_max_events,
            settings.undo_group_max_bytes,
            settings.undo_group_idle_ms,
        )


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
    #: the explicit group this step belongs to (None: a step of the capture timeout)
    group: str | None = None
    #: bytes of the updates of its events (counted for a group's step only)
    nbytes: int = 0
    #: the document's clocks before its first event, or lower: what anyone made inside
    #: what it inserted lies above them (containers.py). Only the clients whose clocks
    #: differ from a base state vector (RoomUndo's ``_base``: RoomUndo.floor adds it);
    #: in the snapshot's meta (``floor``) with the base it is relative to named by its
    #: actor's entry (``base``, RoomUndo.to_meta). None: not known (a step from a meta
    #: written before floors were kept: the whole document is read then)
    floor: dict[int, int] | None = field(default=None, compare=False, repr=False)
    #: an undo's or a redo's (its deletions are exactly what that server change
    #: replaced: mapkeys.value_after); in the snapshot's meta as ``inverse``
    inverse: bool = False
    #: whether the step may still grow (on the undo stack only): its session's next
    #: change joins it within the capture timeout, or the explicit group's next change
    open: bool = False
    #: the session (connection id, the ``conn`` of its events' meta) whose typing it
    #: holds, while open: each session of a user grows its own step (two tabs typing at
    #: once make a step each); None: changes that came through no connection (HTTP)
    conn: str | None = None
    #: the ts of its last event, while open (the pause its session's next change made)
    last_ts: int = 0

    def close(self) -> None:
        if self.open:
            self.open, self.conn = False, None
            self.touch()

    def touch(self) -> None:
        self._json = None

    def to_json(self) -> dict[str, Any]:
        if self._json is None:
            self._json = {
                "runs": _runs(self.seqs),
                "ins": base64.b64encode(encode_ranges(self.ins)).decode(),
                "dels": base64.b64encode(encode_ranges(self.dels)).decode(),
            }
            if self.group is not None:
                self._json["group"], self._json["nbytes"] = self.group, self.nbytes
            if self.inverse:
                self._json["inverse"] = True
            if self.floor is not None:
                self._json["floor"] = base64.b64encode(encode_state_vector(self.floor)).decode()
            if self.open:
                self._json["open"], self._json["last_ts"] = True, self.last_ts
                if self.conn is not None:
                    self._json["conn"] = self.conn
        return self._json

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        seqs = (
            [s for a, b in d["runs"] for s in range(int(a), int(b) + 1)]
            if "runs" in d
            else [int(s) for s in d["seqs"]]
        )
        group = d.get("group")
        floor = d.get("floor")
        conn = d.get("conn")
        return cls(
            seqs,
            decode_ranges(base64.b64decode(d["ins"])),
            decode_ranges(base64.b64decode(d["dels"])),
            group=group if isinstance(group, str) else None,
            nbytes=int(d.get("nbytes", 0)),
            # (relative to its entry's base: RoomUndo.get makes it relative to its own)
            floor=decode_state_vector(base64.b64decode(floor)) if isinstance(floor, str) else None,
            inverse=d.get("inverse") is True,
            open=d.get("open") is True,
            conn=conn if isinstance(conn, str) else None,
            last_ts=int(d.get("last_ts", 0)),
        )


@dataclass
class Stacks:
    """One actor's undo and redo stacks (which of their steps may still grow: each
    step's ``open``), and the explicit group the actor has open, if any."""

    undo: list[Step] = field(default_factory=list)
    redo: list[Step] = field(default_factory=list)
    #: the ts of the actor's last change (from any session): an explicit group's idle
    last_ts: int = 0
    #: the id of the explicit undo group the actor opened and has not closed
    group: str | None = None
    #: whether steps of the actor's went off the bottom of the undo stack (past
    #: ``undo_max_depth``): an undo with none left says so, not "nothing to undo"
    past_limit: bool = False

    @property
    def open(self) -> bool:
        """Whether any of the actor's steps may still grow."""
        return any(s.open for s in self.undo)

    def open_step(self, conn: str | None) -> Step | None:
        """The step session `conn` is typing (open, of no explicit group), if any."""
        for s in reversed(self.undo):
            if s.open and s.conn == conn and s.group is None:
                return s
        return None

    def close_steps(self, conn: str | None = None) -> None:
        """End the steps that may still grow: every one, or (`conn` given) that
        session's and the explicit group's."""
        for s in self.undo:
            if s.open and (conn is None or s.conn == conn or s.group is not None):
                s.close()

    def to_json(self) -> dict[str, Any]:
        out = {
            "undo": [s.to_json() for s in self.undo],
            "redo": [s.to_json() for s in self.redo],
            "last_ts": self.last_ts,
            # (what a release before per-session steps reads: its last step may grow)
            "open": bool(self.undo and self.undo[-1].open),
        }
        if self.group is not None:
            out["group"] = self.group
        if self.past_limit:
            out["past_limit"] = True
        return out

    def group_steps(self, group: str) -> int:
        """How many steps on the undo stack `group` made (1 unless it outgrew a step's
        bounds, or an undo, a restore or an expiry cut it)."""
        return sum(1 for s in self.undo if s.group == group)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stacks:
        st = cls(
            [Step.from_json(s) for s in d.get("undo", [])],
            [Step.from_json(s) for s in d.get("redo", [])],
            int(d.get("last_ts", 0)),
            d["group"] if isinstance(d.get("group"), str) else None,
            d.get("past_limit") is True,
        )
        if d.get("open") is True and st.undo and not st.open:
            # written before per-session steps (Dec 2026): the last step may grow, of
            # whichever session (one that reconnects after the restart is a new one)
            top = st.undo[-1]
            top.open, top.last_ts = True, st.last_ts
            top.touch()
        for s in st.redo:
            s.open = False
        return st
