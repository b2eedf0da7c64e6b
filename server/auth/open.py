"""Open development mode: whoever ?user= names, every right."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import HTTPConnection

from ..extensions import Extension
from .identity import Identity, open_identity
from .tokens import OPEN_MODE_WARNING

log = logging.getLogger("palimpsest.auth")


class OpenAccess(Extension):
    """Open development mode: the user is whoever ``?user=`` names, with every right.

    Accepts every request, so it goes last; a server that lists it says so loudly."""

    reads_cookies = False  # (open mode checks every Origin anyway)

    def setup(self, backend: Any) -> None:
        log.warning(OPEN_MODE_WARNING)

    async def authenticate(self, conn: HTTPConnection) -> Identity:
        return open_identity(conn.query_params.get("user"))


__all__ = ["OpenAccess"]
