"""What one websocket connection may cost the server: its message and byte rates, its
share of the answer budgets of its address and document, its presence, the documents
its identity may create, and how long its token lets it stay.

The connection (``server.routes.ws``) asks; this module decides and keeps the counts."""

from __future__ import annotations

import asyncio
from typing import Any

from .auth import Identity
from .errors import RateLimited
from .limits import Bucket, Budget, CreationQuota, Limits
from .presence import PresenceGuard
from .settings import Settings


class ConnectionGuard:
    def __init__(
        self, backend: Any, settings: Settings, identity: Identity, doc: str, host: str
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.identity = identity
        self.doc = doc
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        # every frame kind counts, by number and by bytes
        self.frames = Bucket(settings.max_events_per_second, now)
        self.bytes = Bucket(settings.max_bytes_per_second, now)
        self.presence = PresenceGuard(settings)
        limits = backend.extension(Limits)
        # without the Limits extension: the connection's own (no bound shared with others)
        self._budget = limits.budget if limits is not None else Budget()
        self._quota = limits.quota if limits is not None else CreationQuota()
        self._keys = [
            ("ip:" + host, settings.max_send_queue_bytes_per_ip),
            ("doc:" + doc, settings.max_send_queue_bytes_per_room),
        ]

    def check_rate(self, nbytes: int) -> None:
        """Count one inbound message of `nbytes`; RateLimited (1013) over either rate."""
        now = self._loop.time()
        if not self.frames.take(1, now):
            # transient: the client keeps its unsent edits and re-sends them on re-sync
            raise RateLimited(
                f"more than {self.frames.rate:g} messages per second on this connection; "
                "reconnect to re-sync"
            )
        if not self.bytes.take(nbytes, now):
            raise RateLimited(
                f"more than {self.bytes.rate:g} bytes per second on this connection; "
                "reconnect to re-sync"
            )

    def refund_message(self) -> None:
        """The message just counted changed nothing and was let off (an echo of what the
        server sent: PresenceGuard.refund): its message token back."""
        self.frames.refund(1, self._loop.time())

    def charge(self, nbytes: int) -> None:
        """Bytes written on the client's behalf (an undo or redo appends as much as the
        edit it reverts) count against its byte rate."""
        self.bytes.charge(nbytes, asyncio.get_running_loop().time())

    def reserve(self, nbytes: int) -> str | None:
        """Reserve an answer's bytes under the address and document budgets; None when
        done, else the budget that is full (nothing reserved)."""
        return self._budget.reserve(self._keys, nbytes)

    def release(self, nbytes: int) -> None:
        if nbytes:
            self._budget.release((k for k, _ in self._keys), nbytes)

    def check_creation(self) -> None:
        """Called before the first write into an empty document, which would create it:
        Forbidden over the quota of new documents. Nothing is counted yet."""
        self._quota.check(self.identity, self.doc, self.settings.max_new_docs_per_hour, count=False)

    def created(self) -> None:
        """That write was taken (queued for the log): the document is created, counted."""
        self._quota.check(self.identity, self.doc, self.settings.max_new_docs_per_hour)

    def seconds_left(self) -> float | None:
        """Until the token expires (plus the leeway its verification allowed); None for
        identities without expiry (open mode)."""
        return self.identity.seconds_left()


__all__ = ["ConnectionGuard"]
