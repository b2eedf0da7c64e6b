"""Transaction observers of a room's document that the room may mute.

pycrdt builds a full event for every observed transaction (the update, both state
vectors and the delete set, encoded), whether or not the observer reads them: about
20 µs per transaction, more than applying a keystroke's update itself. For a client's
edit the room already knows what the transaction will insert and delete (ownership's
admission parsed the update), so it mutes these observers around that one transaction
and hands the change over instead (``Room.current_change``). Every other transaction
(server changes, events from other processes, replay) is observed as usual. The room
keeps them muted from one batch of client edits to the next while it is busy
(``hold``/``release``), and subscribes them again before any other change and when idle.
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
        #: between `hold()` and `release()`: muting stays on between muted transactions
        #: (re-subscribing costs ~4 µs per observer: pycrdt inspects the callback each time)
        self._held = 0
        self._off = False

    def add(self, callback: Callback) -> None:
        if callback not in self._subs:
            # while muted, subscribed with the others on `resume()`
            self._subs[callback] = None if self._off else self.doc.observe(callback)

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
        whatever happens inside; inside a `hold()`, at its `release()` or `resume()`)."""
        if not self._subs:
            yield
            return
        self._mute()
        try:
            yield
        finally:
            if not self._held:
                self.resume()

    def hold(self) -> None:
        """A run of muted transactions (the room's batches of client edits, one after
        another, while its task is busy): from here to the matching `release()`,
        observers unsubscribed by `muted()` stay so, and are subscribed again once, at
        the release. A transaction inside that must be observed calls `resume()` first."""
        self._held += 1

    def release(self) -> None:
        self._held -= 1
        if not self._held:
            self.resume()

    @property
    def quiet(self) -> bool:
        """Inside a `hold()` with every observer unsubscribed already (or none at all): a
        muted transaction needs nothing done around it."""
        return not self._subs or (self._off and self._held > 0)

    def resume(self) -> None:
        """Every observer subscribed again (nothing to do unless muted)."""
        if not self._off:
            return
        for cb in self._subs:
            if self._subs[cb] is None:
                self._subs[cb] = self.doc.observe(cb)
        self._off = False

    def _mute(self) -> None:
        if self._off:
            return
        for cb, sub in self._subs.items():
            if sub is not None:
                self.doc.unobserve(sub)
                self._subs[cb] = None
        self._off = True


__all__ = ["DocObservers"]
