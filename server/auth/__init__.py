"""Who is asking and what they may do. ``identity``: identities and the one
authorization rule; ``tokens``: signed tokens (JWT); ``keys``: the keys they are
verified with; ``jwks``: an identity provider's keys, from its JWKS URL; ``open``: open
development mode."""

from __future__ import annotations

from .identity import (
    RANK,
    ROLES,
    ExpiryWatch,
    Identity,
    authorize,
    granted_ranges,
    may_open,
    open_identity,
)

__all__ = [
    "RANK",
    "ROLES",
    "ExpiryWatch",
    "Identity",
    "authorize",
    "granted_ranges",
    "may_open",
    "open_identity",
]
