"""ASGI middleware that tells the extensions (``on_request``) of every HTTP request
answered: its route's template, never its path, so that document names (any number of
them) add no label value to ``palimpsest_http_requests_total``.

Outermost, so that the refusals of the middleware inside it (the request guard's 403
and 413, CORS preflights) are counted too: the route is then matched here, as the
router would have, since the router never saw the request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute, Match, Mount

from .request_guard import ASGIApp, Message, Receive, Scope, Send

#: the methods counted by name; any other is counted as ``other``
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: the route of a request no route takes
UNMATCHED = "unmatched"


def template_of(route: BaseRoute | None) -> str:
    """``/api/docs/{doc}``: the path template of `route`; a Mount's ends ``/{path}``."""
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return path + "/{path}" if isinstance(route, Mount) else path


class CountRequests:
    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        counted: Callable[[str, str, int], None],
    ) -> None:
        self.app = app
        self.routes = routes
        self.counted = counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # an exception that escapes: the server error handler's answer

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope.get("method", "")
            self.counted(self._route(scope), method if method in METHODS else "other", status)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")  # the router's (starlette sets it on the scope)
        if route is not None:
            return template_of(route)
        partial = None
        for candidate in self.routes:  # the request never reached the router
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                return template_of(candidate)
            if match is Match.PARTIAL and partial is None:
                partial = candidate
        return template_of(partial)


__all__ = ["METHODS", "UNMATCHED", "CountRequests", "template_of"]
