"""Logging: one line per significant thing, human-readable or JSON. Never update contents."""

from __future__ import annotations

import json
import logging
import sys
import time

#: the fields a line may carry apart from its message (``log.info(..., extra={...})``),
#: each a key of its JSON object when present: the connection id (``peer``), the
#: document, the user, a close code, a disconnect's cause and reason, a duration
FIELDS = ("peer", "doc", "user", "code", "cause", "reason", "seconds")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        for name in FIELDS:
            if name in fields:
                out[name] = fields[name]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class OncePerMinute(logging.Filter):
    """asyncpg's pool logs "Failed to restore the pool connection floor" with a 30-line
    traceback at every retry while PostgreSQL is down (55 times a process in a field
    test's outage): one line, its cause, at most once a minute. Other records pass.

    Any line said again and again while a store is down is rate-limited the same way:
    ``starts`` is the beginning of its message, ``every`` the seconds between two (the
    fan-out's failed gap checks, every 2 s otherwise: server.fanout)."""

    def __init__(self, starts: str = "Failed to restore", every: float = 60.0) -> None:
        super().__init__()
        self.starts, self.every = starts, every
        self.last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.starts):
            return True
        now = time.monotonic()
        if self.last is not None and now - self.last < self.every:
            return False
        self.last = now
        cause = f": {record.exc_info[1]}" if record.exc_info and record.exc_info[1] else ""
        said = "once a minute" if self.every == 60 else f"at most every {self.every:g} s"
        record.msg, record.args = f"{record.getMessage()}{cause} (said {said})", ()
        record.exc_info = record.exc_text = None
        return True


class TextFormatter(logging.Formatter):
    """The plain-text line: local time with its UTC offset (``2026-12-06 15:27:26,251
    +0100``: a local time without one reads as another instant in another zone, and
    twice in the hour a DST change repeats), level, logger, message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        local = time.localtime(record.created)
        return (
            time.strftime("%Y-%m-%d %H:%M:%S", local)
            + f",{int(record.msecs):03d} "
            + time.strftime("%z", local)
        )


def configure(level: str = "info", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.palimpsest = True  # type: ignore[attr-defined]  # (ours: configure may run again)
    root = logging.getLogger("palimpsest")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # the libraries' loggers (asyncpg's pool, asyncio's "Task exception was never
    # retrieved", redis...) propagate to Python's root logger: without a handler there,
    # their lines went out through logging.lastResort, as bare text amid JSON lines. Ours
    # takes them, at WARNING at least (their INFO and DEBUG are not ours to show), unless
    # the process configured its own (an embedding app, pytest)
    top = logging.getLogger()
    if all(getattr(h, "palimpsest", False) for h in top.handlers):
        top.handlers[:] = [handler]
        top.setLevel(max(logging.WARNING, root.level))
    pool = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, OncePerMinute) for f in pool.filters):
        pool.addFilter(OncePerMinute())
