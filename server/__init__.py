"""Palimpsest: a collaborative-editor backend where every edit is an event.

    from palimpsest import Extension, Identity, Palimpsest

    collab = Palimpsest(store="sqlite:///app.db", extensions=[MyAuth()])

docs/extending.md describes the extension hooks.
"""

from __future__ import annotations

from .app import Palimpsest, create_app
from .auth import Identity
from .backend import Backend
from .errors import PalimpsestError
from .extensions import Client, Extension, OpContext
from .origins import Origin
from .room import Room
from .settings import Settings
from .store.base import Event, EventStore

__all__ = [
    "Backend",
    "Client",
    "Event",
    "EventStore",
    "Extension",
    "Identity",
    "OpContext",
    "Origin",
    "Palimpsest",
    "PalimpsestError",
    "Room",
    "Settings",
    "create_app",
]
