"""How a failing extension hook is logged: its traceback once a minute, then a count.

A hook with a bug usually fails every time it is called: an ``on_applied`` at every
event, an ``on_update`` at every frame a client sends (when its failure closed the
socket with 1011, y-websocket reconnected and sent the same update again: 26 full
tracebacks in 8 s were seen). So each (extension, hook) logs its first failure with its
traceback; the failures in the following TRACEBACK_EVERY_SECONDS are counted, and said in
one line when that time is up; the next failure after it logs a traceback again.

Hooks are named ``Name.hook`` (the extension's ``name``, by default its class name), as
errors name them. Every failure is also counted for good (``total``: the metric
``palimpsest_extension_hook_failures{hook}``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

log = logging.getLogger("palimpsest.extensions")

#: seconds between two tracebacks of one extension's hook
TRACEBACK_EVERY_SECONDS = 60.0


@dataclass(slots=True)
class _Stretch:
    """The failures of one hook since its last traceback."""

    more: int = 0
    last: str = ""


class HookFailures:
    """The failures of every extension's hooks, logged as the module says."""

    def __init__(self) -> None:
        self._open: dict[str, _Stretch] = {}
        #: every failure since the start, per hook (``Name.hook``)
        self.total: dict[str, int] = {}

    def failed(self, hook: str, about: str, error: BaseException, also: str = "") -> None:
        """`hook` (``Name.hook``) failed with `error` on `about` (a document, ``doc@seq``);
        `also`: what happens now, said after "failed" (e.g. "; the next batch goes on")."""
        self.total[hook] = self.total.get(hook, 0) + 1
        stretch = self._open.get(hook)
        if stretch is not None:
            stretch.more += 1
            stretch.last = f"{hook}({about}): {type(error).__name__}: {error}"
            return
        log.error("%s(%s) failed%s", hook, about, also, exc_info=error)
        self._open[hook] = _Stretch()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to count on: the next failure logs its traceback
            del self._open[hook]
            return
        loop.call_later(TRACEBACK_EVERY_SECONDS, self._close, hook)

    def close(self) -> None:
        """Say the failures counted since each hook's last traceback (the server stops:
        the timers that would have said them go with its event loop; a later start, on
        another, logs the next failure's traceback again)."""
        for hook in list(self._open):
            self._close(hook)

    def _close(self, hook: str) -> None:
        stretch = self._open.pop(hook, None)
        if stretch is not None and stretch.more:
            log.error("%s failed %d more times in %g s (traceback above; the last: %s)",
                      hook, stretch.more, TRACEBACK_EVERY_SECONDS, stretch.last)  # fmt: skip


__all__ = ["TRACEBACK_EVERY_SECONDS", "HookFailures"]
