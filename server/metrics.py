"""Prometheus metrics, one registry per backend (several backends in one process never
collide). Every name starts with ``palimpsest_``.

Counters and histograms are fed by the hooks the core offers (group-commit batches,
snapshots taken, rooms loaded, events committed, refusals); gauges that describe the
present (connections, open rooms, fan-out state) are read at scrape time by a collector,
so they can never drift from the truth. ``GET /metrics`` (server.routes.ops) renders it.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .room import Room
from .store.base import Event, now_ms

if TYPE_CHECKING:
    from .backend import Backend

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    """The metrics of one backend."""

    def __init__(self, backend: Backend) -> None:
        self._backend = weakref.ref(backend)
        self.instance = backend.settings.instance
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
        self.fanout_lag = Histogram(
            "palimpsest_fanout_lag_seconds",
            "Age of events written by another process when they are applied here",
            buckets=_SLOW, registry=r,
        )  # fmt: skip
        r.register(_LiveCollector(self))

    @property
    def backend(self) -> Backend | None:
        return self._backend()

    # --- hooks ---------------------------------------------------------------------------

    def on_batch(self, n_events: int, seconds: float) -> None:
        self.batch_events.observe(n_events)
        self.batch_seconds.observe(seconds)

    def on_snapshot(self, name: str, seq: int, size: int, seconds: float) -> None:
        self.snapshots.inc()
        self.snapshot_seconds.observe(seconds)
        self.snapshot_bytes.inc(size)

    def on_loaded(self, name: str, seconds: float, replayed: int) -> None:
        self.load_seconds.observe(seconds)
        self.load_replayed.observe(replayed)

    def on_committed(self, room: Room, events: list[Event]) -> None:
        if len(events) > 1 and all(ev.kind == "edit" for ev in events):
            self.events.labels("edit").inc(len(events))  # the common batch: one call
            return
        for ev in events:
            self.events.labels(ev.kind).inc()
            if ev.kind in ("undo", "redo"):
                self.undo_ops.labels(ev.kind).inc()

    def on_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def after_apply(self, room: Room, ev: Event) -> None:
        """Events applied to a live room that another process wrote: their age is the
        fan-out lag (own client edits carry this instance's connection id in meta)."""
        conn = ev.meta.get("conn")
        if isinstance(conn, str) and conn.startswith(self.instance + "/"):
            return
        self.fanout_lag.observe(max(0.0, (now_ms() - ev.ts) / 1000.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
        yield _gauge("palimpsest_commit_pending_events", "Events queued for the next group commit",
                     backend.committer.pending)  # fmt: skip
        yield _gauge("palimpsest_start_time_seconds", "When this backend started (unix time)",
                     self.started)  # fmt: skip
        fanout: Any = getattr(backend, "fanout", None)
        if fanout is None:
            return
        yield _gauge("palimpsest_fanout_connected", "1 when subscribed to the fan-out bus",
                     1 if fanout.connected else 0)  # fmt: skip
        behind = sum(
            max(0, head - rooms[name].seq) for name, head in fanout._behind.items() if name in rooms
        )
        yield _gauge("palimpsest_fanout_behind_events",
                     "Events the store has that loaded rooms had not applied at the last check",
                     behind)  # fmt: skip
        for name, attr, doc in (
            ("palimpsest_fanout_published_messages", "published", "Messages published"),
            ("palimpsest_fanout_received_messages", "received", "Messages from other processes"),
            ("palimpsest_fanout_dropped_messages", "dropped", "Messages that could not go out"),
            ("palimpsest_fanout_healed_events", "healed", "Events read from the store (gaps)"),
        ):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(getattr(fanout, attr)))
            yield c


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


_by_backend: weakref.WeakKeyDictionary[Backend, Metrics] = weakref.WeakKeyDictionary()


def metrics_of(backend: Backend) -> Metrics:
    m = _by_backend.get(backend)
    if m is None:
        m = _by_backend[backend] = Metrics(backend)
    return m


def install(backend: Backend) -> None:
    """Wired by server.features."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise
    m = metrics_of(backend)
    previous = backend.committer.on_batch
    if previous is None:
        backend.committer.on_batch = m.on_batch
    else:

        def both(n: int, seconds: float) -> None:
            previous(n, seconds)
            m.on_batch(n, seconds)

        backend.committer.on_batch = both
    backend.snapshots.on_taken.append(m.on_snapshot)
    backend.rooms.on_loaded.append(m.on_loaded)
    backend.hooks.committed.append(m.on_committed)
    backend.hooks.after_apply.append(m.after_apply)
    backend.on_refused.append(m.on_refused)


__all__ = ["CONTENT_TYPE", "Metrics", "install", "metrics_of"]
