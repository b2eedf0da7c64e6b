"""One server process per SQLite file, unless they share a fan-out bus.

Two `palimpsest serve` processes on one SQLite file without `--fanout` both start and
both commit, but neither hears of the other's edits: a client of one sees what the
other's clients typed only after its room reloads, and an edit made in between is made
against text that is no longer there. The log stays whole (each process brings in what
the other appended when it next appends); the live views do not. The usual way into it
is by accident: a second `serve` left running, `uvicorn --workers 4` on an embedding
app, a supervisor and a shell.

So a server holds a lock on ``<database>-serving`` (next to SQLite's ``-wal`` and
``-shm``) while it serves: exclusive without a fan-out bus, shared with one (processes
that share a bus hear each other). The operating system drops it when the process ends,
kill -9 included. Admin commands take no lock: they work beside a running server. The
file holds the pid of the last process that took the lock, for the message.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import StoreUnavailable

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks; not guarded there
    fcntl = None  # type: ignore[assignment]

SUFFIX = "-serving"
log = logging.getLogger("palimpsest.store")


class ServingLock:
    def __init__(self, db_path: str, shared: bool) -> None:
        """``shared``: this process has a fan-out bus (so may others)."""
        self.path = db_path + SUFFIX
        self.db_path = db_path
        self.shared = shared
        self._fd = -1

    def acquire(self) -> None:
        """Takes the lock, or raises StoreUnavailable saying who holds it and what to do."""
        if fcntl is None:
            return
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)  # as the store does
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            # the store's own start meets the same trouble and says it in its words
            log.warning("no lock on %s (%s): a second server would not be refused", self.path, e)
            return
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"another server (pid {holder})" if holder else "another server"
            if self.shared:
                why = f"{who} serves it without a fan-out bus, so it would not hear this one"
            else:  # held exclusively (no bus there) or shared (a bus this one lacks)
                why = f"{who} serves it, and this one has no fan-out bus to hear its edits by"
            raise StoreUnavailable(
                f"SQLite database {self.db_path!r} is in use: {why}. Stop it, or run every "
                "server on it with the same --fanout redis://... (docs/scaleout.md)"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    except (OSError, ValueError):
        return None


__all__ = ["SUFFIX", "ServingLock"]
