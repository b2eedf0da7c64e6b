"""File descriptors: the process's limit, and the reserve that websockets may not take.

Every open websocket holds one descriptor (its socket), as does every HTTP request while
it runs; the store holds a few (SQLite: the database twice, its WAL twice, the shared
memory and the serving lock, 7 in all) and the loop some more (about 20 at the start).
Once the table is full, accept() fails with EMFILE: asyncio's loop logs it and retries a
second later, uvloop's (libuv's) accepts the connection and closes it at once, without
a word. Either way health checks, /metrics and history requests went unanswered while
the websockets already open were served fine: a liveness probe restarted a server that
only lacked room for more.

So a websocket upgrade is refused (HTTP 503, Retry-After, ``palimpsest_refused_total
{reason="fd_limit"}``) while the descriptors in use would leave fewer than
``fd_reserve`` free, and HTTP requests go on into that reserve. What is in use is
counted cheaply: the client sockets the ASGI server holds, plus what the process held
besides them when last measured (/proc/self/fd, listed only near the limit: listing
tens of thousands of entries takes milliseconds to a third of a second).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

try:
    import resource
except ImportError:  # (not on Windows)
    resource = None  # type: ignore[assignment]

log = logging.getLogger("palimpsest.descriptors")

#: seconds between two log lines about refusals (the count in between is said)
LOG_EVERY = 10.0
#: seconds between two listings of /proc/self/fd while near the limit
MEASURE_EVERY = 2.0


def nofile_limits() -> tuple[int, int] | None:
    """The soft and hard RLIMIT_NOFILE (-1 for unlimited), None where unknown."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    return (-1 if soft == inf else soft, -1 if hard == inf else hard)


def raise_nofile_limit() -> tuple[int, int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard one (what a process may do unprivileged:
    shells and systemd start services at a soft 1024 whatever the hard limit). Returns
    (soft before, soft now, hard), None where there are no such limits."""
    limits = nofile_limits()
    if limits is None:
        return None
    soft, hard = limits
    if soft == hard:
        return soft, soft, hard
    raw_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raw_hard, raw_hard))
    except (ValueError, OSError) as e:  # (macOS refuses RLIM_INFINITY: keep what is)
        log.info("could not raise the open-files limit from %d to %d: %s", soft, hard, e)
        return soft, soft, hard
    return soft, hard, hard


def open_descriptors() -> int | None:
    """The descriptors this process holds now, None where that cannot be listed."""
    for where in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(where)) - 1  # (the listing's own)
        except OSError:
            continue
    return None


class DescriptorGate:
    """Whether one more websocket may open: :meth:`refusal` with the number of client
    sockets open now (uvicorn's ``server_state.connections``)."""

    def __init__(
        self,
        reserve: int,
        refused: Callable[[str], None] = lambda reason: None,
        *,
        limit: int | None = None,
    ) -> None:
        self.reserve = reserve
        self.refused = refused
        if limit is None:
            limits = nofile_limits()
            limit = limits[0] if limits is not None else -1
        #: the soft limit (-1: none, nothing is refused)
        self.limit = limit
        #: descriptors held besides client sockets, when last measured (None: not yet)
        self.others: int | None = None
        self._measured = -MEASURE_EVERY
        self._unlogged = 0
        self._logged = -LOG_EVERY

    @property
    def ceiling(self) -> int:
        """The descriptors in use past which no websocket opens."""
        return self.limit - self.reserve

    def _measure(self, sockets: int, now: float) -> None:
        n = open_descriptors()
        self._measured = now
        if n is not None:
            self.others = max(0, n - sockets)

    def refusal(self, sockets: int) -> str | None:
        """None when a websocket may open with `sockets` client sockets open (its own
        included), else why not, counted and logged (at most every LOG_EVERY s)."""
        if self.limit < 0:
            return None
        now = time.monotonic()
        if self.others is None:
            self._measure(sockets, now)
        in_use = (self.others or 0) + sockets
        if in_use >= self.ceiling and now - self._measured >= MEASURE_EVERY:
            self._measure(sockets, now)  # what else held descriptors may have closed
            in_use = (self.others or 0) + sockets
        if in_use < self.ceiling:
            return None
        self.refused("fd_limit")
        self._unlogged += 1
        if now - self._logged >= LOG_EVERY:
            log.warning(
                "refused %d websocket%s with 503: %d of %d file descriptors in use, the "
                "last %d kept for HTTP (health checks, metrics, history) and the store; "
                "raise the open-files limit (LimitNOFILE=, ulimit -n; docs/operations.md)",
                self._unlogged, "" if self._unlogged == 1 else "s", in_use, self.limit,
                self.reserve,
            )  # fmt: skip
            self._unlogged, self._logged = 0, now
        return (
            "the server has no file descriptors to spare for another websocket "
            f"({in_use} of {self.limit} in use); try again later"
        )


class AcceptFailures:
    """accept() failing for want of descriptors (EMFILE, ENFILE) anyway, which asyncio's
    loop reports to its exception handler ("socket.accept() out of system resource")
    once per failed attempt, a second apart, with a traceback: counted
    (``palimpsest_refused_total{reason="accept_failed"}``) and logged in one line at
    most every LOG_EVERY seconds."""

    def __init__(self, refused: Callable[[str], None] = lambda reason: None) -> None:
        self.refused = refused
        self._unlogged = 0
        self._logged = -LOG_EVERY

    def handle(self, context: dict[str, object]) -> bool:
        """True when `context` (a loop exception handler's) was such a failure."""
        exc = context.get("exception")
        handle = context.get("handle")
        callback = getattr(getattr(handle, "_callback", None), "__name__", "")
        if isinstance(exc, ValueError) and callback == "_start_serving":
            # asyncio retries the accept a second after an EMFILE, with the socket it had:
            # one closed meanwhile (the server stopping) is fd -1, and the retry raises
            log.debug("the retry of a failed accept found its server closed: %s", exc)
            return True
        if not isinstance(exc, OSError) or "accept" not in str(context.get("message", "")):
            return False
        self.refused("accept_failed")
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY:
            limits = nofile_limits()
            log.error(
                "accept() failed %d time%s (%s): connections wait in the listen queue or "
                "are dropped; open-files limit %s (docs/operations.md)",
                self._unlogged, "" if self._unlogged == 1 else "s", exc,
                limits[0] if limits else "unknown",
            )  # fmt: skip
            self._unlogged, self._logged = 0, now
        return True


__all__ = [
    "AcceptFailures",
    "DescriptorGate",
    "nofile_limits",
    "open_descriptors",
    "raise_nofile_limit",
]
