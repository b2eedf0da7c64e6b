"""Webhook delivery cursors, kept in the event store beside the log.

A webhook's row says how far it has been delivered (``cursor``: the last global
position the receiver acknowledged), whether it is ``active``, ``failing`` (too many
failures in a row: not retried until enabled again) or ``disabled`` (by an operator),
and which process delivers it now. Several processes that share a store and are
configured with the same hook take turns through a lease: the owner renews it while it
delivers; another process takes over when it lapses. Cursors only move forward, and only
for the lease holder, so a restart neither skips events nor floods the receiver with
the whole log again.

Every store offers this (``EventStore.webhook_cursors()``); each backend's version lives
in its own module (``sqlite_cursors``, ``postgres_cursors``; the memory one is below),
and all pass ``tests/store/test_cursors.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

from .base import now_ms

ACTIVE, FAILING, DISABLED = "active", "failing", "disabled"
STATES = (ACTIVE, FAILING, DISABLED)


@dataclass(frozen=True, slots=True)
class HookState:
    id: str
    url: str
    #: the last global position delivered (acknowledged by the receiver)
    cursor: int
    state: str = ACTIVE
    #: failed attempts in a row (0 after a success)
    failures: int = 0
    last_error: str = ""
    #: events delivered since the hook was registered
    delivered: int = 0
    #: the process delivering it, and until when (ms) its lease holds
    owner: str = ""
    lease_until: int = 0
    updated_ts: int = 0


class WebhookCursors(ABC):
    """The webhook rows of one store."""

    @abstractmethod
    async def register(self, hook_id: str, url: str, start: int) -> HookState:
        """The hook's row, created at cursor `start` when it has none."""

    @abstractmethod
    async def carry(self, row: HookState) -> bool:
        """Write another store's row of a hook (``palimpsest copy``, which keeps the
        positions its cursor names): cursor, state, failures, last error and count as
        they are, unleased (the lease was a process of the other store's). A hook that
        has a row here already keeps it (a copy run again, or a server of this store
        delivered it since): False then."""

    @abstractmethod
    async def get(self, hook_id: str) -> HookState | None: ...

    @abstractmethod
    async def list(self) -> list[HookState]: ...

    @abstractmethod
    async def claim(self, hook_id: str, owner: str, lease_ms: int) -> HookState | None:
        """Take or renew the lease for `owner` (free, lapsed or already its own): the
        row after that, or None when another process holds it (or there is no row)."""

    @abstractmethod
    async def advance(self, hook_id: str, owner: str, cursor: int, delivered: int) -> bool:
        """A batch up to position `cursor` was acknowledged: move the cursor forward,
        count `delivered` events, clear the failures. False (nothing changed) unless
        `owner` holds the lease."""

    @abstractmethod
    async def failed(
        self, hook_id: str, owner: str, error: str, max_failures: int
    ) -> HookState | None:
        """One more failure in a row (the error kept, 500 characters at most); at
        `max_failures` the hook becomes ``failing``. None unless `owner` holds the lease."""

    @abstractmethod
    async def set_state(self, hook_id: str, state: str) -> HookState | None:
        """An operator's decision: ``active`` (re-enable: failures cleared, delivery
        resumes from the cursor) or ``disabled``. None when there is no such hook."""

    @abstractmethod
    async def release(self, hook_id: str, owner: str) -> None:
        """Give the lease up (on shutdown), so that another process may take over now."""

    @abstractmethod
    async def remove(self, hook_id: str) -> bool: ...


class MemoryCursors(WebhookCursors):
    """The memory store's (one process, lost when it stops, like the rest of it)."""

    def __init__(self) -> None:
        self._rows: dict[str, HookState] = {}

    async def register(self, hook_id: str, url: str, start: int) -> HookState:
        row = self._rows.get(hook_id)
        if row is None:
            row = self._rows[hook_id] = HookState(hook_id, url, start, updated_ts=now_ms())
        return row

    async def carry(self, row: HookState) -> bool:
        if row.id in self._rows:
            return False
        self._rows[row.id] = replace(row, owner="", lease_until=0)
        return True

    async def get(self, hook_id: str) -> HookState | None:
        return self._rows.get(hook_id)

    async def list(self) -> list[HookState]:
        return sorted(self._rows.values(), key=lambda r: r.id)

    async def claim(self, hook_id: str, owner: str, lease_ms: int) -> HookState | None:
        row = self._rows.get(hook_id)
        now = now_ms()
        if row is None or (row.owner not in ("", owner) and row.lease_until > now):
            return None
        row = self._rows[hook_id] = replace(row, owner=owner, lease_until=now + lease_ms)
        return row

    async def advance(self, hook_id: str, owner: str, cursor: int, delivered: int) -> bool:
        row = self._rows.get(hook_id)
        if row is None or row.owner != owner:
            return False
        self._rows[hook_id] = replace(
            row, cursor=max(row.cursor, cursor), delivered=row.delivered + delivered,
            failures=0, last_error="", updated_ts=now_ms(),
        )  # fmt: skip
        return True

    async def failed(
        self, hook_id: str, owner: str, error: str, max_failures: int
    ) -> HookState | None:
        row = self._rows.get(hook_id)
        if row is None or row.owner != owner:
            return None
        failures = row.failures + 1
        state = FAILING if failures >= max_failures and row.state == ACTIVE else row.state
        row = self._rows[hook_id] = replace(
            row, failures=failures, state=state, last_error=error[:500], updated_ts=now_ms()
        )
        return row

    async def set_state(self, hook_id: str, state: str) -> HookState | None:
        if state not in (ACTIVE, DISABLED):
            raise ValueError(f"a hook is set active or disabled, not {state!r}")
        row = self._rows.get(hook_id)
        if row is None:
            return None
        failures = 0 if state == ACTIVE else row.failures
        row = self._rows[hook_id] = replace(
            row, state=state, failures=failures, updated_ts=now_ms()
        )
        return row

    async def release(self, hook_id: str, owner: str) -> None:
        row = self._rows.get(hook_id)
        if row is not None and row.owner == owner:
            self._rows[hook_id] = replace(row, owner="", lease_until=0)

    async def remove(self, hook_id: str) -> bool:
        return self._rows.pop(hook_id, None) is not None


__all__ = [
    "ACTIVE",
    "DISABLED",
    "FAILING",
    "STATES",
    "HookState",
    "MemoryCursors",
    "WebhookCursors",
]
