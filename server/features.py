"""The feature modules the backend wires in at construction.

Each feature (undo, fan-out, tokens, metrics, …) lives in its own module with
``install(backend)``, which registers room hooks, extension handlers and services.
A module listed here that is not present is skipped."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import Backend

FEATURE_MODULES = [
    "server.tokens",  # JWT auth and limits
    "server.ownership",  # who may write which Yjs client ids
    "server.undo",  # per-user server-side undo/redo
    "server.history",  # restore, tags
    "server.fanout",  # Redis fan-out between processes
    "server.deletion",  # deleting a document on every process
    "server.metrics",  # Prometheus metrics
    "server.hocuspocus_peer",  # sync-status acknowledgements for Hocuspocus clients
]


def installers() -> list[Callable[[Backend], None]]:
    out = []
    for name in FEATURE_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        install = getattr(module, "install", None)
        if install is not None:
            out.append(install)
    return out
