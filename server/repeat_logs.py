"""Log lines of a refusal that comes straight back, said once a minute with a count.

A y-websocket provider keeps an update the server refused for what it is (4400: it
splits a character past U+FFFF, it does not decode; 4403: items under another user's
client id; 4413: too large) in its Y.Doc and sends it again in the sync step 2 of every
reconnect, about ten times a second for as long as the page is open. Such refusals do
not count towards the handshake's hold (server/repeat_refusals.py: a second tab of the
same user sends the same request with nothing refused of its own), so each reconnect
was accepted, refused and logged in three INFO lines (connect, closing with, disconnect):
3,400 lines in minutes from one tab, thirty times the log of a busy server.

So the same refusal (same document, client address, user, close code and reason: the
reason names the Yjs client id and clock where it has them) is said at INFO the first
time; its repeats within `every` seconds go to DEBUG (the connect line of a connection
from that address and user to that document too, and the disconnect line of one refused
again), counted; when the interval ends with repeats, one INFO line says how many, and a
new interval begins. An interval without one forgets the refusal. The metrics
(palimpsest_refused_total, palimpsest_disconnects_total) still count every one, and each
connection is still refused with its reason.

(server.logs.OncePerMinute rate-limits one message of the process's, whoever it is
about, and drops the count: here each refusal is its own, and its count is the news.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: seconds a refusal's repeats are held back from INFO
EVERY = 60.0
#: refusals remembered at most (the oldest forgotten first, its count said)
MOST = 10_000

#: (document, client address, user): whose repeats
Who = tuple[str, str, str]


@dataclass
class _Repeats:
    said: float  # when the interval began (clock())
    count: int = 0  # repeats held back in it


class RepeatLines:
    """The refusals said recently and their repeats held back since, for one backend."""

    def __init__(
        self,
        log: logging.Logger,
        every: float = EVERY,
        most: int = MOST,
        clock: Callable[[], float] = time.monotonic,
        note: str = "their connect, closing and disconnect lines at DEBUG",
    ) -> None:
        self.log = log
        #: what the count's line says in parentheses of the lines held back
        self.note = note
        self.every = every
        self.most = most
        self.clock = clock
        #: (who, code, reason) -> its repeats, oldest interval first
        self._seen: OrderedDict[tuple[Who, int, str], _Repeats] = OrderedDict()
        #: who -> how many of its refusals are in _seen (for connecting())
        self._who: dict[Who, int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def connecting(self, who: Who) -> bool:
        """Whether a connection of `who` is one whose refusals are being held back: its
        connect line goes to DEBUG (if it is not refused, its disconnect line is INFO)."""
        self._expire()
        return who in self._who

    def refused(self, who: Who, code: int, reason: str) -> bool:
        """A connection of `who` refused with `code` and `reason`: True to say it at INFO
        (the first time, or the first after a quiet interval), False for a repeat,
        counted (say it at DEBUG)."""
        self._expire()
        key = (who, code, reason)
        seen = self._seen.get(key)
        if seen is not None:
            seen.count += 1
            return False
        while len(self._seen) >= self.most:
            self._end(*self._seen.popitem(last=False))
        self._seen[key] = _Repeats(self.clock())
        self._who[who] = self._who.get(who, 0) + 1
        self._arm()
        return True

    def _expire(self) -> None:
        """End the intervals that are over: say the repeats of each, and keep watching
        it for another interval; forget one that had none."""
        now = self.clock()
        while self._seen:
            key, seen = next(iter(self._seen.items()))
            if now - seen.said < self.every:
                break
            del self._seen[key]
            if seen.count:
                self._said(key, seen)
                self._seen[key] = _Repeats(now)  # (its repeats go on: held back again)
            else:
                self._forget(key[0])

    def _tick(self) -> None:
        self._timer = None
        self._expire()
        self._arm()

    def _end(self, key: tuple[Who, int, str], seen: _Repeats) -> None:
        if seen.count:
            self._said(key, seen)
        self._forget(key[0])

    def _forget(self, who: Who) -> None:
        n = self._who.get(who, 0) - 1
        if n > 0:
            self._who[who] = n
        else:
            self._who.pop(who, None)

    def _said(self, key: tuple[Who, int, str], seen: _Repeats) -> None:
        (doc, host, user), code, reason = key
        self.log.info(
            "%d more connections of %s from %s on %s refused with %d in the last %.0f s, "
            "for the same reason (%s): %s",
            seen.count, user, host, doc, code, self.clock() - seen.said, self.note, reason,
            extra={"doc": doc, "user": user, "code": code, "reason": reason},
        )  # fmt: skip

    def _arm(self) -> None:
        """A timer for the end of the oldest interval, so that repeats that stop are
        still said (without a running loop, the next refusal or connect says them)."""
        if self._timer is not None or not self._seen:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        first = next(iter(self._seen.values()))
        self._timer = loop.call_later(max(0.0, first.said + self.every - self.clock()), self._tick)

    def close(self) -> None:
        """Say the repeats held back and forget them all (the server stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._seen:
            self._end(*self._seen.popitem(last=False))


#: documents a line that stands for many names (the others are counted)
SOME = 5


class FailedLines:
    """One kind of failure said for many documents, of one cause: a store that is down
    (PostgreSQL unavailable) fails the snapshot of every busy document and the generation
    read of every new one, and each said its own WARNING line (220 and 82 in a field
    test's outage). The first is said at WARNING; those that follow within `every`
    seconds are held back (the caller says each at DEBUG), counted with a few of their
    documents, and said in the next WARNING line, at least `every` seconds after the
    last; the first that works again after failures says so at INFO, with their count.

    `what` names the failure in the plural ("snapshots not written"), `again` what the
    success says ("snapshots written")."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        again: str,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.what, self.again = log, what, again
        self.every, self.clock = every, clock
        #: failures since the last success, and when the first of them came
        self.failures = 0
        self.since = 0.0
        #: when a failure was last said at WARNING; those held back since, a few by name
        self._said = 0.0
        self._held = 0
        self._names: list[str] = []

    def failed(self, doc: str) -> str | None:
        """A failure for `doc`: what to add to its WARNING line (its count of failures
        held back since the last, or ""), or None to say it at DEBUG (held back)."""
        now = self.clock()
        if not self.failures:
            self.since = now
        self.failures += 1
        if self.failures > 1 and now - self._said < self.every:
            self._held += 1
            if doc not in self._names and len(self._names) < SOME:
                self._names.append(doc)
            return None
        tail = ""
        if self._held:
            more = ", ..." if self._held > len(self._names) else ""
            tail = (f" ({self._held} more {self.what} in the last {now - self._said:.0f} s, "
                    f"each at DEBUG: {', '.join(self._names)}{more})")  # fmt: skip
        self._said, self._held, self._names = now, 0, []
        return tail

    def worked(self) -> None:
        """A success: after failures, one INFO line says how many there were."""
        if not self.failures:
            return
        self.log.info("%s again, after %d %s in %.0f s", self.again, self.failures,
                      self.what, self.clock() - self.since)  # fmt: skip
        self.failures, self._held, self._names = 0, 0, []
