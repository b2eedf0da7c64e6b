"""Which extension hook held the event loop, and for how long.

A plain hook (``on_update``, ``on_applied``, ``on_logged``…) runs on the event loop:
while it runs, every document and connection of the process waits. One that blocks (a
``time.sleep``, a synchronous HTTP call, a query on a database driver that is not
async) stalls them all, and what the log then said blamed the innocent: an awaited
hook of another extension "did not return within 3 s", "edits have waited 5.7 s here
for the sqlite store".

So each plain hook call of an app's extension is timed (two clock reads; Palimpsest's
own are not), and so is each step of an awaited hook's coroutine, from one await to the
next (:class:`Steps`): an ``async def`` that calls ``time.sleep`` or a blocking driver
between its awaits holds the loop just the same. One that takes
:data:`SLOW_HOOK_SECONDS` or more is logged as a warning naming the extension and the
hook, at most once a minute per hook (with how many such calls there were meanwhile
and the slowest), and kept in a ledger: the diagnostics that see the loop was late
(an awaited hook's timeout, the committer's watch of waiting edits) say from it who
held the loop meanwhile. The stall watch (server.stall_watch) reads :attr:`running`
and names the hook it caught holding the loop.

One ledger per process: the loop a hook holds is the process's.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any

log = logging.getLogger("palimpsest.extensions")

#: a plain hook call this long or longer is logged and noted
SLOW_HOOK_SECONDS = 0.1
#: seconds between two warnings about one hook
LOG_EVERY = 60.0
#: slow calls kept, the newest
LEDGER_MAX = 1000


class HookClock:
    """The slow plain hook calls of this process."""

    def __init__(self, threshold: float = SLOW_HOOK_SECONDS) -> None:
        self.threshold = threshold
        #: the plain hook running now ("Extension.hook"), None between hooks
        self.running: str | None = None
        #: (when it ended, "Extension.hook", seconds), time.monotonic()
        self.ledger: deque[tuple[float, str, float]] = deque(maxlen=LEDGER_MAX)
        #: per hook: when it was last said, slow calls since, the slowest of them
        self._said: dict[str, tuple[float, int, float]] = {}

    def slow(self, name: str, took: float, awaited: bool = False) -> None:
        now = time.monotonic()
        self.ledger.append((now, name, took))
        last = self._said.get(name)
        if last is not None and now - last[0] < LOG_EVERY:
            self._said[name] = (last[0], last[1] + 1, max(last[2], took))
            return
        more = ""
        if last is not None and last[1]:
            more = (
                f"; {last[1]} more such calls since it was last said, the slowest {last[2]:.2f} s"
            )
        self._said[name] = (now, 0, 0.0)
        log.warning(
            "%s took %.2f s%s, holding the event loop: every document and connection of "
            "this process waited meanwhile. %s (docs/extending.md)%s",
            name,
            took,
            " between its awaits" if awaited else "",
            "An async hook must never block between its awaits: await the slow call, or "
            "run it with asyncio.to_thread"
            if awaited
            else "A plain hook must be quick and never block: hand slow work to a task, or "
            "to on_committed",
            more,
        )

    def held_since(self, since: float) -> str:
        """Who held the loop since `since` (time.monotonic()) in slow hook calls: ""
        for nobody, else e.g. "the event loop was held 6.0 s meanwhile by extension
        hooks: Misbehaving.on_update (30 calls, the slowest 0.20 s)"."""
        per: dict[str, tuple[int, float, float]] = {}
        for ended, name, took in reversed(self.ledger):
            if ended < since:
                break
            n, total, slowest = per.get(name, (0, 0.0, 0.0))
            # (a call that began before `since` held the loop only from then on)
            per[name] = (n + 1, total + min(took, ended - since), max(slowest, took))
        if not per:
            return ""
        ranked = sorted(per.items(), key=lambda kv: -kv[1][1])
        total = sum(t for _, t, _ in per.values())
        who = ", ".join(
            f"{name} ({n} call{'s' if n > 1 else ''}, the slowest {slowest:.2f} s)"
            for name, (n, _, slowest) in ranked[:3]
        )
        return f"the event loop was held {total:.1f} s meanwhile by extension hooks: {who}"


#: this process's
CLOCK = HookClock()


def timed(ext: Any, hook: str) -> Callable[..., Any]:
    """`ext`'s plain `hook`, bound: timed (:class:`Timed`) unless the extension is one of
    Palimpsest's own, whose plain hooks are quick (and run on every event: a timed call
    costs about half a microsecond more)."""
    if type(ext).__module__.startswith(__package__ + "."):
        return getattr(ext, hook)  # type: ignore[no-any-return]
    return Timed(ext, hook)


class Timed:
    """A plain hook of one extension, bound, called through the clock."""

    __slots__ = ("ext", "fn", "name")

    def __init__(self, ext: Any, hook: str) -> None:
        self.ext = ext
        self.fn: Callable[..., Any] = getattr(ext, hook)
        self.name = f"{getattr(ext, 'name', '') or type(ext).__name__}.{hook}"

    def __call__(self, *args: Any) -> Any:
        clock = CLOCK
        clock.running = self.name
        start = time.monotonic()
        try:
            return self.fn(*args)
        finally:
            took = time.monotonic() - start
            clock.running = None
            if took >= clock.threshold:
                clock.slow(self.name, took)

    def __repr__(self) -> str:
        return repr(self.ext)


class Steps:
    """An awaited hook's call (its coroutine, or any awaitable), each step of it (from
    one await to the next) timed as a plain hook's call is, under the hook's name, so
    that the stall watch and the ledger name it too. Two clock reads a step; only an
    app's extensions' hooks are wrapped (server.dispatch)."""

    __slots__ = ("awaitable", "name")

    def __init__(self, awaitable: Awaitable[Any], name: str) -> None:
        self.awaitable = awaitable
        self.name = name

    def __await__(self) -> Generator[Any, Any, Any]:
        steps = self.awaitable.__await__()
        name, clock = self.name, CLOCK
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            outer = clock.running  # (a step never runs inside a plain hook, but be exact)
            clock.running = name
            start = time.monotonic()
            try:
                if thrown is None:
                    out = steps.send(sent)
                else:
                    out = steps.throw(thrown)
            except StopIteration as e:
                return e.value
            finally:
                took = time.monotonic() - start
                clock.running = outer
                if took >= clock.threshold:
                    clock.slow(name, took, awaited=True)
            try:
                sent, thrown = (yield out), None
            except GeneratorExit:
                close = getattr(steps, "close", None)
                if close is not None:
                    close()
                raise
            except BaseException as e:  # a cancel, most often: handed to the hook
                sent, thrown = None, e
