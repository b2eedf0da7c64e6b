"""History as an extension: the service of a backend and its HTTP routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from ..errors import NotFound
from ..extensions import Extension
from .service import History

if TYPE_CHECKING:
    from ..backend import Backend


class HistoryExtension(Extension):
    """The history service of a backend, and its HTTP routes (server.routes.history)."""

    def setup(self, backend: Backend) -> None:
        self.service = History(backend)

    def routes(self) -> Sequence[BaseRoute]:
        from ..routes.history import routes

        return routes


def history_of(backend: Backend) -> History:
    """The backend's history service (its HistoryExtension's)."""
    ext = backend.extension(HistoryExtension)
    if ext is None:
        raise NotFound("history is not served here")
    return ext.service


__all__ = ["HistoryExtension", "history_of"]
