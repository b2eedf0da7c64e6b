"""Webhooks: batches of events POSTed to a URL, in global commit order, at least once.

Each configured hook has a deliverer task that follows the log like a stream does, but
from the cursor stored in the event store (server.store.cursors): it reads a page after
the cursor (at most ``batch`` events and about ``batch_bytes`` of them), POSTs it, and
moves the cursor once the receiver answers 2xx. Nothing is queued in memory beyond
that one page, whatever the backlog.

- Order: batches go one at a time, in position order, so every document's events
  arrive in seq order (and all of them in commit order).
- At least once: a batch is sent again until it is acknowledged, the same batch (the
  same events, the same ``X-Palimpsest-Delivery``), however many events came meanwhile:
  it grew at each retry, so one event came under several delivery ids. A receiver
  dedupes by each event's ``pos``: a crash between the receiver's 2xx and the cursor's
  write, or another process taking the hook over, re-sends from the cursor in batches
  cut anew, and a receiver slower than ``webhook_timeout`` gets the retry while it still
  handles the first try.
- Signature: with a secret, ``X-Palimpsest-Signature: sha256=<hex HMAC-SHA256 of the
  exact body>``.
- Failures (an answer other than 2xx, a refused connection, a timeout): retried with
  exponential back-off (``retry_first`` doubling up to ``retry_max`` seconds). After
  ``max_failures`` in a row the hook is marked ``failing`` in the store and not tried
  again until an operator enables it (``palimpsest webhooks enable``, or
  ``POST /api/webhooks/{id}/enable``); it then resumes from its cursor.
- Several processes configured with the same hook share its row: the lease holder
  delivers, the others wait for the lease to lapse (``lease_seconds``, 10: also how long
  a restarted process waits after a crash of its predecessor).
- A hook new to the store starts at the log's current end (it is told what happens
  from now on, not the whole history).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import util
from ..errors import StoreError
from ..lifecycle import cancel_and_wait
from ..store.base import Event
from ..store.cursors import ACTIVE, HookState
from .events import feed_json

if TYPE_CHECKING:
    import httpx

    from .extension import Changefeed

log = logging.getLogger("palimpsest.webhooks")


@dataclass(frozen=True, slots=True)
class Webhook:
    """One receiver. ``secret`` signs the bodies (None: unsigned)."""

    url: str
    secret: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(
                f"a webhook URL starts with http:// or https://, not {shown_url(self.url)}"
            )

    @property
    def id(self) -> str:
        """A stable short name (metrics, CLI, the store's row): from the URL."""
        return "wh-" + hashlib.sha256(self.url.encode()).hexdigest()[:12]


def masked_url(url: str) -> str:
    """The URL as the log, ``GET /api/webhooks`` and ``palimpsest webhooks`` show it:
    its password, a lone user name, every query value and its ``#fragment`` as ``***``,
    since receivers are often authenticated that way (util.masked_url)."""
    return util.masked_url(url, every_secret=True)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def shown_url(text: str) -> str:
    """What a message says of `text`, given as a webhook's URL: quoted and masked
    (masked_url) when it reads as scheme://…; otherwise not shown, since without the
    ``//`` of an authority no part of it can be told from a password or token
    (``user:pass@host/…`` reads as the scheme ``user``)."""
    if _SCHEME.match(text):
        return repr(masked_url(text))
    return "a text that is not scheme://… (not shown: it may hold a password)"


def sign(secret: str, body: bytes) -> str:
    """The value of X-Palimpsest-Signature for this body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver checks (constant-time). A header that is not ASCII is no signature
    of ours: False (``compare_digest`` raises TypeError on such a str)."""
    return hmac.compare_digest(sign(secret, body).encode(), header.encode("utf-8", "replace"))


def batch_body(hook: Webhook, events: list[Event]) -> bytes:
    payload = {
        "webhook": hook.id,
        "first": events[0].pos,
        "last": events[-1].pos,
        "events": [feed_json(ev) for ev in events],
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def trim(events: list[Event], max_bytes: int) -> list[Event]:
    """The longest prefix whose updates fit `max_bytes` (at least one event)."""
    total = 0
    for i, ev in enumerate(events):
        total += len(ev.update) + 200
        if total > max_bytes and i > 0:
            return events[:i]
    return events


class Deliverer:
    """The delivery of one hook by this process: a task, started and stopped by the
    Changefeed service."""

    def __init__(self, feed: Changefeed, hook: Webhook) -> None:
        self.feed = feed
        self.hook = hook
        self.owner = feed.backend.settings.instance
        self.state: HookState | None = None
        #: observable, for /metrics and tests
        self.attempts = 0
        self.failed_attempts = 0
        self.delivered = 0
        self.holding = False
        self._lease_until = 0
        #: the last position of a batch that failed: its retry sends the same batch
        self._retry_upto: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    def start(self) -> None:
        # (httpx, with its rich, is imported by a server that has webhooks: not at start-up)
        import httpx

        self._http = httpx.AsyncClient(timeout=self.feed.webhook_timeout)
        self._task = asyncio.create_task(self._run(), name=f"webhook {self.hook.id}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self.holding:
            with contextlib.suppress(StoreError):
                await self.feed.cursors.release(self.hook.id, self.owner)
            self.holding = False

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        feed = self.feed
        while True:
            try:
                pause = await self._step()
            except StoreError as e:
                log.warning("webhook %s: the store failed (%s); retrying", self.hook.id, e)
                pause = feed.poll
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook %s: unexpected failure; retrying", self.hook.id)
                pause = feed.poll
            # always through the loop: a store whose calls never suspend (memory) must not
            # starve the other tasks
            await asyncio.sleep(pause)

    async def _lease(self) -> HookState | None:
        """The row, with our lease renewed when half of it is used (None: not ours)."""
        lease_ms = int(self.feed.lease_seconds * 1000)
        loop_ms = int(asyncio.get_running_loop().time() * 1000)
        if self.holding and self.state is not None and loop_ms < self._lease_until - lease_ms // 2:
            return self.state  # renewed when half of it is used
        state = await self.feed.cursors.claim(self.hook.id, self.owner, lease_ms)
        self.holding = state is not None
        if state is not None:
            self._lease_until = loop_ms + lease_ms
            self.state = state
        return state

    async def _step(self) -> float:
        """One round: deliver a page, or wait. Returns how long to pause before the next."""
        feed = self.feed
        state = await self._lease()
        if state is None:
            self.state = await feed.cursors.get(self.hook.id)
            return feed.poll  # another process delivers it
        if state.state != ACTIVE:
            # failing or disabled: look again later (an operator may enable it)
            self.holding = False
            await feed.cursors.release(self.hook.id, self.owner)
            self.state = await feed.cursors.get(self.hook.id)
            return feed.poll
        ticket = feed.wakeup.ticket()
        events = await feed.backend.store.read_feed(after=state.cursor, limit=feed.webhook_batch)
        if not events:
            if feed.closing:  # shutting down: nothing will wake us any more
                return feed.poll
            await feed.wait(ticket, min(feed.poll * 5, feed.heartbeat))
            return 0.0
        events = trim(events, feed.webhook_batch_bytes)
        upto = self._retry_upto
        if upto is not None and events[0].pos <= upto:
            events = [ev for ev in events if ev.pos <= upto]
        error = await self._post(events)
        self._retry_upto = None if error is None else events[-1].pos
        if error is None:
            if await feed.cursors.advance(self.hook.id, self.owner, events[-1].pos, len(events)):
                self.delivered += len(events)
                self.state = await feed.cursors.get(self.hook.id)
            else:
                self.holding = False  # the lease lapsed meanwhile: another process took it
            return 0.0
        self.failed_attempts += 1
        after = await feed.cursors.failed(self.hook.id, self.owner, error, feed.max_failures)
        if after is None:
            self.holding = False
            return feed.poll
        self.state = after
        if after.state != ACTIVE:
            log.error("webhook %s (%s) is failing after %d attempts in a row: %s; "
                      "`palimpsest webhooks enable %s` resumes it from position %d",
                      self.hook.id, masked_url(self.hook.url), after.failures, error, self.hook.id,
                      after.cursor)  # fmt: skip
            return 0.0
        delay = min(feed.retry_first * 2.0 ** (after.failures - 1), feed.retry_max)
        log.warning("webhook %s: delivery of %d..%d failed (%s); retry %d in %.1fs",
                    self.hook.id, events[0].pos, events[-1].pos, error, after.failures,
                    delay)  # fmt: skip
        return delay

    async def _post(self, events: list[Event]) -> str | None:
        """POST one batch; None when acknowledged, else what went wrong."""
        import httpx

        assert self._http is not None
        body = batch_body(self.hook, events)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "palimpsest-webhook",
            "X-Palimpsest-Webhook": self.hook.id,
            "X-Palimpsest-Delivery": f"{self.hook.id}:{events[0].pos}-{events[-1].pos}",
        }
        if self.hook.secret:
            headers["X-Palimpsest-Signature"] = sign(self.hook.secret, body)
        self.attempts += 1
        try:
            r = await self._http.post(self.hook.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            text = f"{type(e).__name__}: {e}".replace(self.hook.url, masked_url(self.hook.url))
            return text[:500]
        if 200 <= r.status_code < 300:
            return None
        if 300 <= r.status_code < 400:  # not followed: the hook's URL is the one to fix
            location = r.headers.get("location")
            where = masked_url(location)[:200] if location else "?"
            return f"HTTP {r.status_code} to {where}: not followed"
        return f"HTTP {r.status_code}: {r.text[:200]}"


__all__ = [
    "Deliverer",
    "Webhook",
    "batch_body",
    "masked_url",
    "shown_url",
    "sign",
    "trim",
    "verify",
]
