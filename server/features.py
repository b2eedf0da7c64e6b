"""Palimpsest's own features, as the extensions a server is built with.

Listed here, explicitly, in the order their hooks run (after the app's own extensions):
nothing is discovered by scanning modules. ``palimpsest serve`` and ``create_app`` use
:func:`builtin_extensions`; ``Palimpsest(extensions=[...])`` puts the app's first.
"""

from __future__ import annotations

from collections.abc import Sequence

from .auth.open import OpenAccess
from .auth.tokens import JWTAuth
from .base_watch import BaseWatch
from .changefeed import Changefeed
from .deletion import Deletion
from .extensions import Extension
from .fanout import Fanout
from .history import HistoryExtension
from .hocuspocus_peer import SyncStatus
from .limits import Limits
from .locking import Locking
from .metrics import Metrics
from .ownership_extension import Ownership
from .revocation import Revocation
from .routes.admin import Admin
from .sealing import Sealing
from .settings import Settings
from .surrogates import SurrogateSplits
from .undo import Undo


def builtin_extensions(settings: Settings, *, others: Sequence[Extension] = ()) -> list[Extension]:
    """The features of a server with these settings.

    Auth: signed tokens when a JWT secret, public key or JWKS URL is configured; otherwise open
    development mode, unless one of `others` authenticates (an app with its own users)."""
    out: list[Extension] = []
    if settings.signed_tokens:
        out.append(JWTAuth.from_settings(settings))
    elif not any(_authenticates(e) for e in others):
        out.append(OpenAccess())
    out += [
        Limits(settings),
        SurrogateSplits(),
        Ownership(),
        Deletion(),
        Locking(),
        Undo.from_settings(settings),
        HistoryExtension(),
        Admin(),
        Revocation(),
        SyncStatus(),
        Sealing(settings.segment_events),
        BaseWatch(settings.compaction_check_seconds),
    ]
    if settings.fanout:
        out.append(Fanout(settings.fanout))
    if not any(isinstance(e, Changefeed) for e in others):  # an app may bring its own
        out.append(Changefeed.from_settings(settings))
    out.append(Metrics())
    return out


def _authenticates(ext: Extension) -> bool:
    return type(ext).authenticate is not Extension.authenticate


__all__ = ["builtin_extensions"]
