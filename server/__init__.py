"""Palimpsest: a collaborative-editor backend where every edit is an event."""

from __future__ import annotations

from .app import create_app
from .backend import Backend
from .errors import PalimpsestError
from .settings import Settings

__all__ = ["Backend", "PalimpsestError", "Settings", "create_app"]
