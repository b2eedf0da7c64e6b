"""Prometheus metrics, one registry per backend (several backends in one process never
collide). Every name starts with ``palimpsest_``.

An extension: counters and histograms are fed by its hooks (group-commit batches,
snapshots written, rooms loaded, events committed, events from other processes,
refusals); gauges that describe the present (connections, open rooms, fan-out state)
are read at scrape time by a collector, so they can never drift from the truth. Its
route ``GET /metrics`` renders them, after having the store count its documents
(``palimpsest_documents``) when its last count is DOCS_SECONDS old.

Also in each registry: prometheus_client's standard ``process_*`` (RSS, CPU seconds,
open fds, start time) and ``python_gc_*`` collectors, which name the process, not the
backend; ``palimpsest_build_info`` (version, source revision, Python, the instance id
that tells processes apart); and a probe of the event loop's lag, always on (_LoopProbe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import platform
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import logs
from .closes import CAUSES, Closed
from .extensions import Client, Extension
from .lifecycle import Service
from .origins import Origin, PeerOrigin
from .revision import revision
from .room import Room
from .snapshots import SnapshotWritten
from .store.base import Event, now_ms

if TYPE_CHECKING:
    from .backend import Backend

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: seconds between two probes of the event loop's lag: 20 timer wake-ups a second
PROBE_SECONDS = 0.05
#: a lag counted as a stall when the stall watch is off (Settings.stall_report_ms unset)
STALL_SECONDS = 0.1
#: seconds a count of the store's documents (palimpsest_documents) is served before a
#: scrape has the store count them again: one COUNT(*) of the docs table per this many
#: seconds at most, whatever the number of scrapers
DOCS_SECONDS = 15.0
#: how long a scrape waits for that count; past it the scrape is answered with the last
#: count (none yet: the gauge is left out) and the count goes on for the next one
DOCS_WAIT_SECONDS = 2.0

log = logging.getLogger("palimpsest.metrics")


#: the reasons of palimpsest_refused_total served from the start at 0 (as every cause of
#: palimpsest_disconnects_total is), so that rate() and an alert see the first refusal
#: of each: those docs/operations.md lists. A reason not here (an extension's refusal's
#: class in snake case) still counts, from its first.
REFUSED_REASONS = (
    "doc_name_error", "auth_error", "forbidden", "protocol_error", "update_rejected",
    "frame_too_large", "rate_limited", "read_only", "locked", "too_many_connections",
    "send_queue_overflow", "send_budget_overflow", "token_expired", "origin", "host",
    "head_too_large", "body_too_large", "not_found", "unsupported_media_type",
    "store_unavailable", "fd_limit", "accept_failed", "store_error", "repeated_refusal",
    "waits_for_other_users_edits", "http_write_rate", "too_many_streams",
)  # fmt: skip


class Metrics(Extension):
    """The metrics of one backend, and ``GET /metrics``."""

    reads_doc_per_event = False  # on_applied reads the event's time

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "palimpsest_events_appended", "Events appended to the log by this process",
            ["kind"], registry=r,
        )  # fmt: skip
        self.undo_ops = Counter(
            "palimpsest_undo_operations", "Undo and redo operations that changed a document",
            ["op"], registry=r,
        )  # fmt: skip
        self.batch_events = Histogram(
            "palimpsest_commit_batch_events", "Events per group-commit transaction",
            buckets=_COUNTS, registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "palimpsest_commit_batch_seconds", "Duration of a group-commit transaction",
            buckets=_FAST, registry=r,
        )  # fmt: skip
        self.snapshot_seconds = Histogram(
            "palimpsest_snapshot_seconds", "Time to write a snapshot", buckets=_SLOW, registry=r
        )
        self.snapshots = Counter(
            "palimpsest_snapshots", "Snapshots written by this process", registry=r
        )
        self.snapshot_bytes = Counter(
            "palimpsest_snapshot_bytes", "Bytes of snapshot state written", registry=r
        )
        self.load_seconds = Histogram(
            "palimpsest_room_load_seconds", "Time to load a document (snapshot + tail)",
            buckets=_SLOW, registry=r,
        )  # fmt: skip
        self.load_replayed = Histogram(
            "palimpsest_room_load_replayed_events", "Events replayed after the snapshot on load",
            buckets=_COUNTS, registry=r,
        )  # fmt: skip
        self.refused = Counter(
            "palimpsest_refused", "Connections and frames refused, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        for reason in REFUSED_REASONS:  # (at 0 from the start, as disconnects below)
            self.refused.labels(reason)
        self.ignored = Counter(
            "palimpsest_ignored_frames",
            "Websocket frames ignored: message types the server does not read from clients, "
            "by endpoint and type (its number up to 15, else other)",
            ["endpoint", "type"], registry=r,
        )  # fmt: skip
        self.fanout_lag = Histogram(
            "palimpsest_fanout_lag_seconds",
            "Age of events written by another process when they are applied here",
            buckets=_SLOW, registry=r,
        )  # fmt: skip
        self.loop_lag = Histogram(
            "palimpsest_loop_lag_seconds",
            f"How late the event loop ran a timer due every {PROBE_SECONDS:g} s",
            buckets=_LAG, registry=r,
        )  # fmt: skip
        self.loop_stalls = Counter(
            "palimpsest_loop_stalls",
            "Probes of the event loop that found it held past the stall threshold",
            registry=r,
        )  # fmt: skip
        self.http_requests = Counter(
            "palimpsest_http_requests",
            "HTTP requests answered, by route template, method and status class",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.disconnects = Counter(
            "palimpsest_disconnects",
            "Websocket connections ended, by cause (docs/operations.md lists them)",
            ["cause"], registry=r,
        )  # fmt: skip
        for cause in CAUSES:  # every series there from the start: rate() sees the first
            self.disconnects.labels(cause)
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "palimpsest_build_info",
            "1, labelled with the version, the Python, the instance id and the source "
            "revision (a commit id, or unknown) of this process",
            ["version", "python", "instance_id", "revision"], registry=r,
        )  # fmt: skip
        self.backend: Backend | None = None
        self.probe: _LoopProbe | None = None
        #: the store's documents at the last count (None: not counted yet, or the last
        #: count failed), and the loop time that count began; docs_seconds: DOCS_SECONDS
        self.documents: int | None = None
        self.docs_seconds = DOCS_SECONDS
        self._docs_at = -math.inf
        self._counting: asyncio.Task[None] | None = None

    def setup(self, backend: Backend) -> None:
        self.backend = backend
        self.registry.register(_LiveCollector(self))
        self.build_info.labels(
            _version(), platform.python_version(), backend.settings.instance, revision()
        ).set(1)
        threshold = backend.settings.stall_report_ms / 1000.0 or STALL_SECONDS
        self.probe = _LoopProbe(self, threshold)

    def services(self) -> Sequence[Service]:
        return [self.probe] if self.probe is not None else []

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/metrics", self.endpoint)]

    async def endpoint(self, request: Request) -> Response:
        await self.count_documents()
        return Response(self.render(), media_type=CONTENT_TYPE)

    async def count_documents(self) -> None:
        """Have the store count its documents when the last count began `docs_seconds`
        ago or more (one count at a time: concurrent scrapes wait for the same one), and
        wait DOCS_WAIT_SECONDS at most for it."""
        if self.backend is None:
            return
        loop = asyncio.get_running_loop()
        if self._counting is None and loop.time() - self._docs_at >= self.docs_seconds:
            self._docs_at = loop.time()
            self._counting = loop.create_task(self._count())
        if self._counting is not None:
            await asyncio.wait({self._counting}, timeout=DOCS_WAIT_SECONDS)

    async def _count(self) -> None:
        assert self.backend is not None
        try:
            self.documents = await self.backend.store.doc_count()
        except Exception as e:  # the store down: the gauge is left out until it answers
            if self.documents is not None:
                log.warning("cannot count the store's documents for /metrics: %s", e)
            self.documents = None
        finally:
            self._counting = None

    # --- hooks ---------------------------------------------------------------------------

    def on_commit_batch(self, events: int, seconds: float) -> None:
        self.batch_events.observe(events)
        self.batch_seconds.observe(seconds)

    def on_snapshot(self, written: SnapshotWritten) -> None:
        self.snapshots.inc()
        self.snapshot_seconds.observe(written.seconds)
        self.snapshot_bytes.inc(written.size)

    async def on_load(self, room: Room) -> None:
        self.load_seconds.observe(room.loaded.seconds)
        self.load_replayed.observe(room.loaded.replayed)

    def on_logged(self, room: Room, events: Sequence[Event]) -> None:
        if len(events) > 1 and all(ev.kind == "edit" for ev in events):
            self.events.labels("edit").inc(len(events))  # the common batch: one call
            return
        for ev in events:
            self.events.labels(ev.kind).inc()
            if ev.kind in ("undo", "redo"):
                self.undo_ops.labels(ev.kind).inc()

    def on_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def on_ignored(self, endpoint: str, mtype: str) -> None:
        self.ignored.labels(endpoint, mtype).inc()

    def on_closed(self, client: Client, closed: Closed) -> None:
        self.disconnects.labels(closed.cause if closed.cause in CAUSES else "error").inc()

    def on_request(self, route: str, method: str, status: int) -> None:
        self.http_requests.labels(route, method, f"{status // 100}xx").inc()

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        """Events applied to a live room that another process wrote: their age is the
        fan-out lag."""
        if isinstance(origin, PeerOrigin):
            self.fanout_lag.observe(max(0.0, (now_ms() - event.ts) / 1000.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LoopProbe(Service):
    """The event loop's lag, always on and cheap: a timer due every PROBE_SECONDS
    observes how late the loop ran it (what every callback due then waited). A lag past
    `threshold` (the stall watch's, Settings.stall_report_ms, or STALL_SECONDS) is a
    stall. A stall of at least `threshold` + PROBE_SECONDS is always seen, once; a
    shorter one only when it held the loop while the probe was due (the stall watch,
    server/stall_watch.py, sees every one and where it was, at a higher cost). A plain
    callback, no task: a sleeping task costs a future and a wake-up of its own."""

    def __init__(self, metrics: Metrics, threshold: float) -> None:
        self.threshold = threshold
        self._observe = metrics.loop_lag.observe
        self._stalled = metrics.loop_stalls.inc
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._schedule(loop, loop.time() + PROBE_SECONDS)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self._timer = loop.call_at(due, self._tick, loop, due)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        lag = max(0.0, now - due)
        self._observe(lag)
        if lag >= self.threshold:
            self._stalled()
        self._schedule(loop, now + PROBE_SECONDS)


def _version() -> str:
    with contextlib.suppress(PackageNotFoundError):
        return version("palimpsest")
    return "unknown"


class _LiveCollector(Collector):
    """Gauges read from the backend at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.started = time.time()

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        backend = self.metrics.backend
        if backend is None:
            return
        rooms = backend.rooms.loaded
        yield _gauge("palimpsest_connections", "Open websocket connections",
                     sum(len(r.peers) for r in rooms.values()))  # fmt: skip
        yield _gauge("palimpsest_rooms_open", "Documents loaded in memory", len(rooms))
        if self.metrics.documents is not None:
            yield _gauge("palimpsest_documents",
                         "Documents in the store (every process's: the same number from each "
                         "process of a deployment), as the store counted them at a scrape "
                         "at most 15 s ago",
                         self.metrics.documents)  # fmt: skip
        committer = backend.committer
        yield _gauge("palimpsest_commit_pending_events",
                     "Events queued in the group committer for its next transaction (held "
                     "ones included); edits their rooms still queue are in "
                     "palimpsest_commit_waiting_edits",
                     committer.pending)  # fmt: skip
        waiting = committer.waiting()
        yield _gauge("palimpsest_commit_waiting_edits",
                     "Client edits received and not committed yet: queued in their rooms, "
                     "held after a refusal, or in a transaction in flight",
                     waiting.edits)  # fmt: skip
        yield _gauge("palimpsest_commit_waiting_bytes", "Update bytes of those edits",
                     waiting.bytes)  # fmt: skip
        yield _gauge("palimpsest_commit_stalled",
                     "1 while the store refuses commits, or has not answered one for 5 s",
                     1 if committer.stalled() else 0)  # fmt: skip
        yield _gauge("palimpsest_commit_since_success_seconds",
                     "Seconds since a group-commit transaction last committed",
                     committer.since_commit())  # fmt: skip
        commit_failures = CounterMetricFamily(
            "palimpsest_commit_failures",
            "Group-commit attempts the store refused or failed (a transaction, or the look "
            "in the log for held edits that may have committed): not 0 in a window means "
            "the store was unavailable or failing then",
        )
        commit_failures.add_metric([], float(committer.failures))
        yield commit_failures
        yield _gauge("palimpsest_start_time_seconds", "When this backend started (unix time)",
                     self.started)  # fmt: skip
        tasks = _loop_tasks()
        if tasks is not None:
            yield _gauge("palimpsest_event_loop_tasks",
                         "asyncio tasks not done on the event loop that answers this scrape "
                         "(the process's, with every backend it runs): a few per connection "
                         "and per loaded document, so a count that grows while connections "
                         "and rooms do not is a leak",
                         tasks)  # fmt: skip
        dropped = CounterMetricFamily(
            "palimpsest_log_lines_dropped",
            "Log lines this process dropped because the log's output (stderr) did not take "
            "them in time (a pipe nobody reads): the log says how many once it writes again",
        )
        dropped.add_metric([], float(logs.dropped()))
        yield dropped
        failures = CounterMetricFamily(
            "palimpsest_extension_hook_failures",
            "Calls of an extension's hook that raised (or timed out), by hook (Name.hook); "
            "the log has the tracebacks",
            labels=["hook"],
        )
        for hook, n in sorted(backend.extensions.failures.total.items()):
            failures.add_metric([hook], float(n))
        yield failures
        from .fanout import Fanout
        from .history.extension import HistoryExtension
        from .sealing import Sealing

        sealing = backend.extension(Sealing)
        if sealing is not None:
            c = CounterMetricFamily(
                "palimpsest_sealed_events", "Events sealed into compressed segments by this process"
            )
            c.add_metric([], float(sealing.sealed))
            yield c
        history = backend.extension(HistoryExtension)
        if history is not None:
            c = CounterMetricFamily(
                "palimpsest_attribution_indexes_stored",
                "Who-wrote-what indexes stored for cold servers by this process",
            )
            c.add_metric([], float(history.service.attribution.stored))
            yield c
            c = CounterMetricFamily(
                "palimpsest_attribution_upkeep_cpu_seconds",
                "CPU seconds this process spent building and encoding who-wrote-what indexes "
                "in the background (after a document unloads)",
            )
            c.add_metric([], history.service.attribution.upkeep.seconds)
            yield c
        warm_syncs = backend.store.disk_warm_syncs
        if warm_syncs is not None:
            c = CounterMetricFamily(
                "palimpsest_disk_warm_syncs",
                "fdatasyncs of the SQLite file issued between commits to keep the disk "
                "awake while edits come in (--warm-disk-ms)",
            )
            c.add_metric([], float(warm_syncs))
            yield c

        fanout = backend.extension(Fanout)
        if fanout is None:
            return
        yield _gauge("palimpsest_fanout_connected",
                     "1 when the fan-out bus works: subscribed, Redis answering, publishes "
                     "going through",
                     1 if fanout.trouble() is None else 0)  # fmt: skip
        if fanout.cutoff is not None:
            yield _gauge("palimpsest_store_cut_off",
                         "1 while this process is cut off from a store that other processes "
                         "commit to: its websockets are closed with 1013 and new ones refused",
                         1 if fanout.cutoff.cut_off_since is not None else 0)  # fmt: skip
            c = CounterMetricFamily(
                "palimpsest_store_cutoff_closes",
                "websockets closed with 1013 because this process was cut off from the store",
            )
            c.add_metric([], float(fanout.cutoff.closed))
            yield c
        behind = fanout.behind()
        yield _gauge("palimpsest_fanout_behind_events",
                     "Events the store has that loaded rooms had not applied at the last check",
                     behind)  # fmt: skip
        for name, attr, doc in (
            ("palimpsest_fanout_published_messages", "published", "Messages published"),
            ("palimpsest_fanout_received_messages", "received", "Messages from other processes"),
            ("palimpsest_fanout_dropped_messages", "dropped", "Messages that could not go out"),
            (
                "palimpsest_fanout_foreign_messages",
                "foreign",
                "Messages of another deployment (another store) on this bus, dropped",
            ),
            (
                "palimpsest_fanout_healed_events",
                "healed",
                "Other processes' events applied from the store, not from a message",
            ),
        ):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(getattr(fanout, attr)))
            yield c


def _loop_tasks() -> int | None:
    """The tasks not done on the running event loop (asyncio.all_tasks: the loop's own
    bookkeeping, counted at the scrape, nothing kept per task), None when no loop runs
    here (a registry rendered from another thread)."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return None


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def metrics_of(backend: Backend) -> Metrics | None:
    """The backend's Metrics extension, if it has one."""
    return backend.extension(Metrics)


__all__ = ["CONTENT_TYPE", "Metrics", "metrics_of"]
