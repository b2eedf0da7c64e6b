"""The changefeed as an extension: its SSE routes, its webhooks, what wakes them.

Built by ``server.features.builtin_extensions`` from the settings (``--webhook``,
``--webhook-secret``, …); an app that embeds Palimpsest passes its own::

    Palimpsest(settings=Settings(webhooks=("https://example.com/hook",),
                                 webhook_secret="s3cret"))

What wakes the followers (server.changefeed.wakeup): ``on_logged`` for this process's
events; ``on_peer_commit``, the fan-out's messages (events written by other processes,
through the fan-out's own Redis subscription); and a poller that reads the store's last
position every ``poll`` seconds, for whatever else wrote to the store (and any message
Redis lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..errors import Forbidden, NotFound, StoreError
from ..extensions import Extension
from ..lifecycle import Service, cancel_and_wait
from ..metrics import metrics_of
from ..settings import Settings
from ..store.base import Event
from ..store.cursors import ACTIVE, DISABLED, HookState, WebhookCursors
from .sse import Streams
from .wakeup import Wakeup
from .webhooks import Deliverer, Webhook, masked_url

if TYPE_CHECKING:
    from ..backend import Backend
    from ..room import Room

log = logging.getLogger("palimpsest.changefeed")


class Changefeed(Extension, Service):
    """SSE streams of the log and webhooks. One per backend."""

    name = "changefeed"

    def __init__(
        self,
        webhooks: Sequence[Webhook] = (),
        *,
        heartbeat: float = 15.0,
        poll: float = 2.0,
        page: int = 500,
        max_failures: int = 10,
        retry_first: float = 0.5,
        retry_max: float = 60.0,
        webhook_batch: int = 100,
        webhook_batch_bytes: int = 1 << 20,
        webhook_timeout: float = 10.0,
        lease_seconds: float = 10.0,
        max_streams_per_ip: int = 64,
    ) -> None:
        ids = [h.id for h in webhooks]
        if len(set(ids)) != len(ids):
            raise ValueError("the same webhook URL is configured twice")
        self.webhooks = tuple(webhooks)
        self.heartbeat = heartbeat
        self.poll = poll
        self.page = page
        self.max_failures = max(1, max_failures)
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.webhook_batch = max(1, webhook_batch)
        self.webhook_batch_bytes = webhook_batch_bytes
        self.webhook_timeout = webhook_timeout
        self.lease_seconds = lease_seconds
        self.max_streams_per_ip = max_streams_per_ip
        self.wakeup = Wakeup()
        self.streams = Streams(self)
        self.deliverers: list[Deliverer] = []
        self.closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._collector: _Collector | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Changefeed:
        return cls(
            [Webhook(url, settings.webhook_secret) for url in settings.webhooks],
            heartbeat=settings.changefeed_heartbeat,
            poll=settings.changefeed_poll,
            max_failures=settings.webhook_max_failures,
            retry_first=settings.webhook_retry_first,
            retry_max=settings.webhook_retry_max,
            webhook_batch=settings.webhook_batch,
            lease_seconds=settings.webhook_lease_seconds,
            max_streams_per_ip=settings.changefeed_max_streams_per_ip,
        )

    # --- wiring ----------------------------------------------------------------------------

    def setup(self, backend: Backend) -> None:
        self.backend = backend
        self.cursors: WebhookCursors = backend.store.webhook_cursors()

    def routes(self) -> Sequence[BaseRoute]:
        return [
            *self.streams.routes(),
            Route("/api/webhooks", self.list_endpoint),
            Route("/api/webhooks/{hook}/{action:str}", self.set_endpoint, methods=["POST"]),
        ]

    def services(self) -> Sequence[Service]:
        return [self]

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.closing = False
        metrics = metrics_of(self.backend)
        if metrics is not None and self._collector is None:
            self._collector = _Collector(self)
            metrics.registry.register(self._collector)
        self._tasks = [
            asyncio.create_task(self._poller(), name="changefeed-poller"),
            asyncio.create_task(self._until_stopping(), name="changefeed-stopping"),
        ]
        start = await self.backend.store.last_position()
        self.deliverers = []
        for hook in self.webhooks:
            row = await self.cursors.register(hook.id, hook.url, start)
            log.info("webhook %s -> %s: %s at position %d%s", hook.id, masked_url(hook.url),
                     row.state, row.cursor, "" if hook.secret else " (unsigned)")  # fmt: skip
            d = Deliverer(self, hook)
            d.state = row
            d.start()
            self.deliverers.append(d)

    async def stop(self) -> None:
        self.closing = True
        self.wakeup.notify_all()
        for d in self.deliverers:
            await d.stop()
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    async def _until_stopping(self) -> None:
        """The server begins to shut down: end the streams (clients reconnect later)."""
        await self.backend.stopping.wait()
        self.closing = True
        self.wakeup.notify_all()

    # --- waking ----------------------------------------------------------------------------

    async def wait(self, ticket: asyncio.Event, seconds: float | None = None) -> bool:
        """Wait for a commit (True) or `seconds` (default: the heartbeat; False)."""
        if self.closing:
            return True
        return await self.wakeup.wait(ticket, self.heartbeat if seconds is None else seconds)

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        self.wakeup.notify(room.name)

    async def _poller(self) -> None:
        last = -1
        while True:
            try:
                pos = await self.backend.store.last_position()
                if pos != last:
                    if last != -1:
                        self.wakeup.notify_all()
                    last = pos
            except StoreError as e:
                log.debug("changefeed poll failed: %s", e)
            await asyncio.sleep(self.poll)

    def on_peer_commit(self, doc: str) -> None:
        """Another process committed events of `doc` (its fan-out message)."""
        self.wakeup.notify(doc)

    # --- the operator's view -----------------------------------------------------------------

    async def _operator(self, request: Request) -> None:
        """An admin of every document: the webhooks carry every document's events (an
        admin of some documents saw every document's activity, and could stop them)."""
        identity = await self.backend.authenticate(request, None, "admin")
        if "*" not in identity.docs:
            raise Forbidden(
                "the webhooks carry every document's events: they need an admin token for "
                'every document (docs ["*"])'
            )

    async def list_endpoint(self, request: Request) -> Response:
        await self._operator(request)
        last = await self.backend.store.last_position()
        return JSONResponse({"position": last, "webhooks": [
            hook_json(row, last) for row in await self.cursors.list()
        ]})  # fmt: skip

    async def set_endpoint(self, request: Request) -> Response:
        await self._operator(request)
        action = request.path_params["action"]
        states = {"enable": ACTIVE, "disable": DISABLED}
        if action not in states:
            raise NotFound(f"no webhook action {action!r}: enable or disable")
        row = await self.cursors.set_state(request.path_params["hook"], states[action])
        if row is None:
            raise NotFound(f"no webhook {request.path_params['hook']!r}")
        self.wakeup.notify_all()
        return JSONResponse(hook_json(row, await self.backend.store.last_position()))


def hook_json(row: HookState, last: int) -> dict[str, object]:
    return {
        "id": row.id,
        "url": masked_url(row.url),
        "state": row.state,
        "cursor": row.cursor,
        "behind": max(0, last - row.cursor),
        "failures": row.failures,
        "last_error": row.last_error,
        "delivered": row.delivered,
        "owner": row.owner,
    }


class _Collector(Collector):
    """The changefeed's gauges and counters, read at scrape time."""

    def __init__(self, feed: Changefeed) -> None:
        self.feed = feed

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        feed = self.feed
        yield GaugeMetricFamily(
            "palimpsest_changefeed_streams", "Open SSE changefeed streams",
            value=float(feed.streams.open),
        )  # fmt: skip
        if not feed.deliverers:
            return
        failing = GaugeMetricFamily(
            "palimpsest_webhook_failing",
            "1 when the webhook is failing or disabled (not delivered until enabled)",
            labels=["webhook"],
        )
        cursor = GaugeMetricFamily(
            "palimpsest_webhook_cursor", "Last global position the receiver acknowledged",
            labels=["webhook"],
        )  # fmt: skip
        failures = GaugeMetricFamily(
            "palimpsest_webhook_failures", "Failed deliveries in a row", labels=["webhook"]
        )
        delivered = CounterMetricFamily(
            "palimpsest_webhook_delivered_events", "Events delivered by this process",
            labels=["webhook"],
        )  # fmt: skip
        attempts = CounterMetricFamily(
            "palimpsest_webhook_failed_attempts", "Deliveries that failed, by this process",
            labels=["webhook"],
        )  # fmt: skip
        for d in feed.deliverers:
            row = d.state
            label = [d.hook.id]
            failing.add_metric(label, 0.0 if row is None or row.state == ACTIVE else 1.0)
            cursor.add_metric(label, float(row.cursor if row else 0))
            failures.add_metric(label, float(row.failures if row else 0))
            delivered.add_metric(label, float(d.delivered))
            attempts.add_metric(label, float(d.failed_attempts))
        yield from (failing, cursor, failures, delivered, attempts)


__all__ = ["Changefeed", "hook_json"]
