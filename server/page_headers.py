"""ASGI middleware that adds the browser's security headers to every HTTP answer.

- Every answer (the API's too): ``X-Content-Type-Options: nosniff``, so that a browser
  never reads a JSON answer or a document's text as HTML or script.
- The page (``/``) and its files (``/static/...``): a Content-Security-Policy that lets
  them load only their own bundle and styles, talk only to their own server (the API
  and the websocket), and be framed only by pages of the same origin
  (``frame-ancestors 'self'``, and ``X-Frame-Options: SAMEORIGIN`` for older
  browsers): a page of another site framed the editor invisibly, and one click of its
  visitor restored an old version. ``Referrer-Policy: no-referrer``: a document's
  name and ``?user=`` in the page's URL go nowhere else.

An answer that sets one of these headers itself keeps its own.
"""

from __future__ import annotations

from .request_guard import ASGIApp, Message, Receive, Scope, Send, path_in_app

#: the page loads static/app.js and static/style.css, its icon is a data: URL, and its
#: editor (CodeMirror) and cursors set style attributes, hence 'unsafe-inline' for styles
#: only; 'self' covers ws:// and wss:// to the same host and port
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
EVERY_ANSWER = ((b"x-content-type-options", b"nosniff"),)
PAGE_ANSWER = (
    (b"content-security-policy", PAGE_POLICY.encode()),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"referrer-policy", b"no-referrer"),
)


def _is_page(scope: Scope) -> bool:
    path = path_in_app(scope)
    return path in ("", "/") or path.startswith("/static/")


class PageHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = EVERY_ANSWER + (PAGE_ANSWER if _is_page(scope) else ())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {bytes(k).lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


__all__ = ["PAGE_POLICY", "PageHeaders"]
