"""Logging: one line per significant thing, human-readable or JSON. Never update contents."""

from __future__ import annotations

import atexit
import contextvars
import itertools
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

#: the fields a line may carry apart from its message (``log.info(..., extra={...})``),
#: each a key of its JSON object when present: the connection id (``peer``), the
#: document, the user, a close code, a disconnect's cause and reason, a duration
FIELDS = ("peer", "doc", "user", "code", "cause", "reason", "seconds", "instance")

#: the name of the Palimpsest instance whose work is running (``Palimpsest(name=...)``):
#: set while its lifespan, its requests and what they start run (asyncio tasks copy it),
#: None when it has none. Every record made meanwhile carries it as ``instance``
#: (_with_instance), a field of a JSON line and ``[name]`` after the logger in text.
INSTANCE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "palimpsest_instance", default=None
)
_make_record = logging.getLogRecordFactory()


def _with_instance(*args: object, **kwargs: object) -> logging.LogRecord:
    record = _make_record(*args, **kwargs)
    name = INSTANCE.get()
    if name is not None and not hasattr(record, "instance"):
        record.instance = name
    return record


def carry_instance() -> None:
    """Make every log record carry the running instance's name (INSTANCE), once per
    process: a record factory, so that a host's own handlers get the field too."""
    global _make_record
    current = logging.getLogRecordFactory()
    if current is not _with_instance:
        _make_record = current
        logging.setLogRecordFactory(_with_instance)


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
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(instance_tag)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        name = getattr(record, "instance", None)
        record.instance_tag = f" [{name}]" if name is not None else ""
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        local = time.localtime(record.created)
        return (
            time.strftime("%Y-%m-%d %H:%M:%S", local)
            + f",{int(record.msecs):03d} "
            + time.strftime("%z", local)
        )


#: log lines the server's event loop queues for the log's writer at most (a few MB at
#: most); past that, while the output does not take them (a pipe nobody reads, a stalled
#: journald), lines are dropped and counted instead of stopping the server
QUEUE_LINES = 10_000
#: at most this long an exit waits for the writer to write out what is queued: an output
#: that takes nothing must not hold a shutdown
DRAIN_SECONDS = 2.0

#: lines dropped by this process (the count so far: itertools.count's next is atomic)
_drop_count = itertools.count(1)
_drops = 0


def dropped() -> int:
    """Log lines dropped by this process because the output did not take them
    (``palimpsest_log_lines_dropped_total``)."""
    return _drops


class _Enqueue(logging.Handler):
    """The handler the loggers write to: it formats the record where it is logged (the
    event loop's thread, as before) and queues the line for the writer's thread, without
    waiting: a full queue drops the line and counts it. What logging.handlers.
    QueueHandler does, with a string on the queue (a formatted line cannot change after)
    and the drop instead of an error."""

    def __init__(self, output: QueuedOutput, stream: IO[str]) -> None:
        super().__init__()
        self.output, self.stream = output, stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.output.put(self.stream, line)


class QueuedOutput:
    """A thread that writes the log's lines to their stream, so that a stream that blocks
    (a full pipe) blocks that thread only, never the event loop nor a signal handler.
    ``handler`` is the logging handler that feeds it; ``put`` queues a line for any
    stream (serve's start-up lines on stdout, in order with the log's). Lines past
    ``capacity`` queued are dropped and counted; the next line written after them is
    followed by one saying how many (at WARNING, formatted by ``formatter``).

    No lock of Python's on the way in: a signal handler logs (the shutdown's lines) on the
    main thread, which the signal may have interrupted in the middle of a put, and a
    queue.Queue's lock would then never be released. queue.SimpleQueue's put is
    reentrant; the counts are plain numbers, approximate under races, which only moves
    the bound by a line or two."""

    def __init__(
        self, stream: IO[str], formatter: logging.Formatter, capacity: int = QUEUE_LINES
    ) -> None:
        self.queue: queue.SimpleQueue[tuple[IO[str], str] | None] = queue.SimpleQueue()
        self.capacity = capacity
        self.formatter = formatter
        self.handler = _Enqueue(self, stream)
        self.handler.setFormatter(formatter)
        self.stream = stream
        self._puts = itertools.count(1)
        self.queued = 0  # lines put (the number of the last one)
        self.written = 0  # lines taken off the queue and written (or failed)
        self.said = _drops  # drops said so far (or before this output)
        self.thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self.thread.start()

    def put(self, stream: IO[str], line: str) -> None:
        global _drops
        if self.queue.qsize() >= self.capacity:
            _drops = next(_drop_count)
            return
        self.queue.put((stream, line))
        self.queued = next(self._puts)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            try:
                _write(*item)
                n = _drops - self.said
                if n > 0:
                    self.said += n
                    said = logging.LogRecord(
                        "palimpsest.logs", logging.WARNING, __file__, 0,
                        "%d log lines dropped: the log's output did not take them in time "
                        "(palimpsest_log_lines_dropped_total)", (n,), None,
                    )  # fmt: skip
                    _write(self.stream, self.formatter.format(said))
            except Exception:  # nothing to say it on
                pass
            finally:
                self.written += 1

    def drain(self, timeout: float = DRAIN_SECONDS) -> bool:
        """Wait, at most `timeout` seconds, for what is queued to be written."""
        deadline = time.monotonic() + timeout
        target = self.queued
        while self.written < target:
            if time.monotonic() >= deadline or not self.thread.is_alive():
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = DRAIN_SECONDS) -> None:
        """Write out what is queued and end the thread, in `timeout` seconds at most (a
        writer still blocked then is a daemon thread: the exit does not wait for it)."""
        start = time.monotonic()
        self.drain(timeout)
        self.queue.put(None)
        self.thread.join(max(0.0, timeout - (time.monotonic() - start)))


def _write(stream: IO[str], line: str) -> None:
    """One line to the stream: straight to its file descriptor when it has one (a
    thread blocked there holds no lock of Python's; in the stream's buffer, it would
    hold the buffer's lock, and the interpreter's exit, flushing it, would abort)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        stream.write(line + "\n")
        stream.flush()
        return
    data = (line + "\n").encode(getattr(stream, "encoding", None) or "utf-8", "backslashreplace")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


#: the output `configure` set up, if any
_output: QueuedOutput | None = None


def echo(text: str, stream: IO[str] | None = None) -> None:
    """A line printed as it is (serve's start-up lines), in order with the log's and
    without waiting for the output when the log is queued (`configure`)."""
    stream = stream if stream is not None else sys.stdout
    if _output is None:
        print(text, file=stream, flush=True)
    else:
        _output.put(stream, text)


def flush(timeout: float = DRAIN_SECONDS) -> bool:
    """Wait, at most `timeout` seconds, for the queued lines to be written (before an
    exit). False if some were not."""
    return _output.drain(timeout) if _output is not None else True


def _at_exit() -> None:
    if _output is not None:
        _output.stop(DRAIN_SECONDS)


def take_over(level: str = "info", json_lines: bool = False) -> Callable[[], None]:
    """`configure`, and return what gives the loggers back: the ``palimpsest`` logger
    and the root logger get the handlers, level and propagation they had before (a
    logger whose handlers were changed meanwhile keeps the new ones: someone set up
    their own), and the output's thread ends once what it queued is written. For an
    app's lifespan (app._default_logging): the logging an embedding host sets up after
    it ended was never given Palimpsest's lines (its logger kept its own handler and
    did not propagate)."""
    loggers = (logging.getLogger("palimpsest"), logging.getLogger())
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    configure(level, json_lines)
    output = _output
    ours = [list(lg.handlers) for lg in loggers]

    def give_back() -> None:
        global _output
        for (lg, handlers, lvl, propagate), set_up in zip(saved, ours, strict=True):
            if lg.handlers == set_up:
                lg.handlers[:] = handlers
                lg.setLevel(lvl)
                lg.propagate = propagate
        if output is None or _output is not output:
            return  # (configured again since: that output is the one in use)
        if any(output.handler in lg.handlers for lg in loggers):
            return  # still in use: it writes until the exit
        _output = None
        output.stop()

    return give_back


def configure(level: str = "info", json_lines: bool = False) -> None:
    global _output
    formatter: logging.Formatter = JSONFormatter() if json_lines else TextFormatter()
    previous, _output = _output, QueuedOutput(sys.stderr, formatter)
    if previous is None:
        atexit.register(_at_exit)  # (before logging's own, which runs after it)
    else:
        previous.stop()
    handler = _output.handler
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
