"""Palimpsest: a collaborative-editor backend where every edit is an event.

    from palimpsest import Extension, Identity, Palimpsest

    collab = Palimpsest(store="sqlite:///app.db", extensions=[MyAuth()])

docs/extending.md describes the extension hooks. The names below are imported on
first use, so that the client (which shares the wire format: ``protocol``, ``errors``,
``names``) never loads the server's web and database stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Palimpsest, create_app
    from .auth import Identity
    from .backend import Backend
    from .changefeed import Changefeed, Webhook
    from .errors import AuthError, Forbidden, PalimpsestError
    from .extensions import Client, Extension, OpContext, Operation
    from .lifecycle import Service
    from .origins import Origin
    from .room import Room, ServerUpdate
    from .settings import Settings
    from .store.base import Event, EventStore

_WHERE = {
    "AuthError": ".errors",
    "Backend": ".backend",
    "Changefeed": ".changefeed",
    "Client": ".extensions",
    "Event": ".store.base",
    "EventStore": ".store.base",
    "Extension": ".extensions",
    "Forbidden": ".errors",
    "Identity": ".auth",
    "OpContext": ".extensions",
    "Operation": ".extensions",
    "Origin": ".origins",
    "Palimpsest": ".app",
    "PalimpsestError": ".errors",
    "Room": ".room",
    "ServerUpdate": ".room",
    "Service": ".lifecycle",
    "Settings": ".settings",
    "Webhook": ".changefeed",
    "create_app": ".app",
}

__all__ = [
    "AuthError",
    "Backend",
    "Changefeed",
    "Client",
    "Event",
    "EventStore",
    "Extension",
    "Forbidden",
    "Identity",
    "OpContext",
    "Operation",
    "Origin",
    "Palimpsest",
    "PalimpsestError",
    "Room",
    "ServerUpdate",
    "Service",
    "Settings",
    "Webhook",
    "create_app",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
