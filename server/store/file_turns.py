"""Server changes of one document, one process at a time, on a SQLite file that several
processes serve (they share a fan-out bus: server/serving_lock.py).

What PostgreSQL does with an advisory lock (``PostgresStore.server_changes``) is done here
with an fcntl lock on one byte of ``<database>-changes`` picked by the document's name
(2^31 of them: two documents share one seldom, and then only take turns). fcntl locks
belong to the process, not to the holder: two holders in one process would not exclude
each other, and the first to unlock would free the other's; so within the process an
asyncio lock per byte comes first. The operating system drops the locks with the
process, kill -9 included.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator

from ..errors import StoreUnavailable
from ..keyed_locks import KeyedLocks

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks; several processes not guarded there
    fcntl = None  # type: ignore[assignment]

SUFFIX = "-changes"


class FileTurns:
    def __init__(self, db_path: str) -> None:
        self.path = db_path + SUFFIX
        self._fd = -1
        #: byte -> this process's lock on it, while held or awaited
        self._held: KeyedLocks[int] = KeyedLocks()

    @contextlib.asynccontextmanager
    async def turn(self, doc: str) -> AsyncIterator[None]:
        """Hold `doc`'s turn: wait (polling, every few ms) until no other process does."""
        if fcntl is None:
            yield
            return
        byte = int.from_bytes(hashlib.blake2b(doc.encode(), digest_size=4).digest(), "big") >> 1
        async with self._held.hold(byte):
            fd = self._open()
            delay = 0.002
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
                    break
                except (BlockingIOError, PermissionError):  # held by another process
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 0.05)
                except OSError as e:
                    raise StoreUnavailable(f"cannot lock {self.path}: {e}") from e
            try:
                yield
            finally:
                with contextlib.suppress(OSError):  # closed by stop(): released already
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, byte)

    def _open(self) -> int:
        if self._fd < 0:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise StoreUnavailable(f"cannot open {self.path}: {e}") from e
        return self._fd

    def close(self) -> None:
        """Close the file (every lock of this process on it goes with it)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
