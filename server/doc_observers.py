"""Transaction observers of a room's document that the room may mute.

pycrdt builds a full event for every observed transaction (the update, both state
vectors and the delete set, encoded), whether or not the observer reads them: about
20 µs per transaction, more than applying a keystroke's update itself. For a client's
edit the room already knows what the transaction will insert and delete (ownership's
admission parsed the update), so it mutes these observers around that one transaction
and hands the change over instead (``Room.current_change``). Every other transaction
(server changes, events from other processes, replay) is observed as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pycrdt import Doc, Subscription, TransactionEvent

Callback = Callable[[TransactionEvent], None]


class DocObservers:
    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self._subs: dict[Callback, Subscription | None] = {}

    def add(self, callback: Callback) -> None:
        if callback not in self._subs:
            self._subs[callback] = self.doc.observe(callback)

    def remove(self, callback: Callback) -> None:
        sub = self._subs.pop(callback, None)
        if sub is not None:
            try:
                self.doc.unobserve(sub)
            except Exception:  # the doc may already be gone
                pass

    @contextmanager
    def muted(self) -> Iterator[None]:
        """No observer sees the transactions made inside (re-subscribed on the way out,
        whatever happens inside)."""
        if not self._subs:
            yield
            return
        for cb, sub in self._subs.items():
            if sub is not None:
                self.doc.unobserve(sub)
                self._subs[cb] = None
        try:
            yield
        finally:
            for cb in self._subs:
                if self._subs[cb] is None:
                    self._subs[cb] = self.doc.observe(cb)


__all__ = ["DocObservers"]
