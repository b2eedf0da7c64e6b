"""Keeping the disk's I/O path warm while edits arrive (SQLite with ``--durability fsync``).

On a virtual machine a commit's ``fdatasync`` costs far more after the disk has been
idle a few milliseconds than back to back: on this project's test machines (a
virtual machine, virtio block device) four WAL frames written and synced cost 126-134 µs
back to back, 124-159 µs 1 ms after the last write, 206-301 µs after 5 ms and
427-494 µs after 20 ms (``bench/disk_warm.py``, docs/durability.md). Someone typing
sends an edit every 50-300 ms, so every keystroke paid the cold price. What goes cold
is the I/O path, not the CPU: a busy process on the other core, or a thread waking up
without doing I/O, changes little or nothing reliably; periodic I/O does.

So while the store is being written to, a thread issues an ``fdatasync`` of the
database file (opened read-only; nothing of ours is dirty in it, so this is a device
cache flush, about 50 µs of the device's time) every ``period`` in which no commit came
along and none is under way, and stops ``window`` seconds after the last one. It never
touches SQLite or its locks (``busy`` only asks whether a write holds the connection)
and never runs while commits keep the path warm anyway (a burst), so a busy server
does little extra I/O, and an idle one none at all. An ingest's commits leave a gap over
the period now and then: 100-124 syncs in one of 20,000 events, and 2-3 µs of CPU per
event more than with the warmer off (bench/notes.md, 3 Dec 2026). A failed sync (an
EIO of a flaky disk) pauses it: tried again after 0.1 s, doubling up to 30 s, logged
once when it pauses and once when it resumes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("palimpsest.store")

#: how long after the last write the path is kept warm (a pause in the typing)
WINDOW_SECONDS = 1.0
#: after a failed fdatasync (a transient EIO), the first wait before trying again; it
#: doubles with each failure in a row, up to RETRY_MAX_SECONDS
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 30.0
#: macOS has no fdatasync; its fsync does the same for a file with nothing dirty
_sync = getattr(os, "fdatasync", os.fsync)


class DiskWarmer:
    """One thread per store that keeps ``path``'s device warm while ``touch`` is called."""

    def __init__(
        self,
        path: str,
        period: float,
        window: float = WINDOW_SECONDS,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        """``busy``: whether a write is in flight now (then it is not joined by a sync)."""
        if period <= 0:
            raise ValueError("the period must be positive")
        self.path = path
        self.period = period
        self.window = window
        self.busy = busy
        #: fdatasyncs issued so far (tests, the bench), and those that failed
        self.syncs = 0
        self.failed = 0
        self._stopped = threading.Event()  # wakes a back-off's wait at stop()
        self._last = -window  # perf_counter of the last touch
        self._active = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._fd = -1

    def touch(self) -> None:
        """A write just ended (called from any thread): keep warm for `window` seconds."""
        self._last = time.perf_counter()
        if not self._active.is_set():
            self._active.set()

    def start(self) -> None:
        self._fd = os.open(self.path, os.O_RDONLY)
        self._thread = threading.Thread(target=self._run, name="palimpsest-disk-warm", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread (blocks for at most one period and one sync; a back-off's wait
        ends at once)."""
        thread, self._thread = self._thread, None
        self._stopping = True
        self._stopped.set()
        self._active.set()
        if thread is not None:
            thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        retry = 0.0  # the back-off while fdatasync fails (0: it works)
        try:
            while not self._stopping:
                idle = time.perf_counter() - self._last
                if idle > self.window:
                    self._active.clear()
                    # a touch between the check and the clear is seen here
                    if time.perf_counter() - self._last > self.window:
                        self._active.wait()
                    continue
                if idle < self.period:  # a commit kept it warm
                    time.sleep(self.period - idle)
                    continue
                if self.busy is not None and self.busy():  # one is keeping it warm
                    time.sleep(self.period)
                    continue
                try:
                    _sync(self._fd)
                except OSError as e:
                    # a transient error (an EIO of a flaky disk) must not end the warming
                    # for good: tried again with a back-off, said once
                    self.failed += 1
                    if not retry:
                        log.warning(
                            "keeping %s warm paused: fdatasync failed: %s; trying again "
                            "with a back-off (up to %.0f s)", self.path, e, RETRY_MAX_SECONDS,
                        )  # fmt: skip
                    retry = min(RETRY_MAX_SECONDS, max(retry * 2, RETRY_FIRST_SECONDS))
                    self._stopped.wait(retry)
                    continue
                if retry:
                    log.info("keeping %s warm resumed: fdatasync works again", self.path)
                    retry = 0.0
                self.syncs += 1
                time.sleep(self.period)
        finally:
            os.close(self._fd)
            self._fd = -1


__all__ = ["RETRY_FIRST_SECONDS", "RETRY_MAX_SECONDS", "WINDOW_SECONDS", "DiskWarmer"]
