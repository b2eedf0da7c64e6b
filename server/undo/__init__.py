"""Per-user, selective, server-side undo and redo (see recorder.py for how).

``stacks``: steps and stacks (ID sets are ``palimpsest.ranges``); ``recorder``: what each change
did, per actor, in a live room; ``actions``: undo, redo, open and close a step;
``revert``: one writer's changes over a range of the log taken out;
``extension``: the hooks, operations and routes."""

from __future__ import annotations

from .actions import GroupAnswer, Outcome, close_group, group_id, open_group, perform, state_of
from .extension import Undo
from .recorder import MARK, META_KEY, REDO, REVERT, UNDO, RoomUndo, fold
from .stacks import GroupLimits, Stacks, Step

__all__ = [
    "MARK",
    "META_KEY",
    "REDO",
    "REVERT",
    "UNDO",
    "GroupAnswer",
    "GroupLimits",
    "Outcome",
    "RoomUndo",
    "Stacks",
    "Step",
    "Undo",
    "close_group",
    "fold",
    "group_id",
    "open_group",
    "perform",
    "state_of",
]
