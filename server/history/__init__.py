"""Browsable history: events, editing sessions, any version, attributed diffs, blame,
restore and named versions. ``service`` is the History of a backend, ``attribution``
the who-wrote-what index, ``render`` turns versions into JSON and diffs, ``restore``
makes the live document equal to a version, ``sessions`` groups events, ``joined`` and
``by_actor`` shape blame and diffs (a run per writer; one writer's part)."""

from __future__ import annotations

from .extension import HistoryExtension, history_of
from .service import MAX_PAGE, SESSION_GAP_MS, History, event_json

__all__ = ["MAX_PAGE", "SESSION_GAP_MS", "History", "HistoryExtension", "event_json", "history_of"]
