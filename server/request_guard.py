"""ASGI middleware in front of every route: where requests may come from, and what a
request body may be.

- Origin. A browser lets any web page open a websocket to ``ws://127.0.0.1:8000`` or
  POST to it; only the ``Origin`` header tells us which page. Websockets and
  state-changing HTTP requests (POST, PUT, PATCH, DELETE) from a browser are accepted
  from the server's own origin, localhost origins and ``--allow-origin``; a request
  without ``Origin`` (curl, a Python or Node client) is not a browser's and passes.
  In open mode always; for a request that carries a ``Cookie`` header while an
  extension that may authenticate by a cookie is installed (an app that authenticates
  by its session cookie, docs/extending.md: the browser attaches it on its own, to
  requests of any page of the same site, SameSite=Strict or not;
  ``Extension.reads_cookies``); with the built-in tokens only when ``--allow-origin``
  is given, cookie or not, because a token is never sent by the browser on its own, so
  a foreign page can do nothing the token's holder did not hand it (and the site's
  other cookies, a main app's session, prove nothing here).
- Host (open mode). DNS rebinding: a page of ``http://evil.example:8000`` whose name
  the attacker's DNS then points at 127.0.0.1 is a same-origin page for the browser, so
  its requests carry a matching ``Origin`` (or none, on a GET) and ``Host:
  evil.example:8000``. In open mode, where reaching the server is the only credential,
  every request (websocket, read or write) must therefore name the server as it is
  served: a loopback name (``localhost``, ``*.localhost``), an IP address (a literal
  address cannot be rebound), ``--host``, a host of ``--allow-origin``, or one of
  ``--allow-host``; else 403 (close 4403) saying which option to set (``GET /healthz``
  and ``/readyz`` excepted: a health check by a service name). With tokens or
  cookies it is not checked: a token is not sent by the browser on its own, and a
  browser keeps cookies per name, so a rebound name carries none of the real one's.
- Heads: at most ``max_request_head_bytes`` (431; a websocket is closed with 4413). The
  protocol (handshake.py) measures a head that arrives in pieces; one that arrives
  whole in one read is measured here.
- Bodies: at most ``max_http_body_bytes`` (413, error ``BodyTooLarge``), and
  ``application/json`` when not empty (415): a cross-site form or ``text/plain`` fetch
  cannot pose as an API call. The one route that takes bytes (``POST
  /api/docs/{doc}/updates``, a Yjs update) takes ``application/octet-stream`` only,
  which a browser does not send cross-site without a CORS preflight either, and as
  much as a document may hold (``max_doc_bytes``, if larger): a whole document's
  state, copied from elsewhere, is one such update. Its body is not read here but
  handed on as it arrives, counted (413 ``BodyTooLarge`` as soon as it is over, by its
  ``Content-Length`` before a byte is read), so the route reads it only once the
  caller is known to be an admin, and nothing past the limit is ever held.
- Rate. State-changing API requests (restore, revert, undo, a text written whole, tags,
  deletes) do work on the event loop that a websocket's rate limit does not see: at most
  ``max_http_writes_per_second`` per client address (burst 2x), 429 beyond.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from .errors import BodyTooLarge
from .limits import Bucket
from .settings import Settings

log = logging.getLogger("palimpsest.guard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: the origins of pages on this machine (localhost, *.localhost, 127.0.0.1, [::1]; any
#: port, http or https): the Origin check lets them in, CORS answers them (app.py)
LOCAL_ORIGIN = r"(?i)https?://(localhost|[a-z0-9.-]+\.localhost|127\.0\.0\.1|\[::1\])(:[0-9]+)?"
#: the probes a Docker or Kubernetes health check asks by a service name (palimpsest:8000):
#: answered whatever the Host, in open mode too (they show no document, routes/ops.py)
_PROBES = frozenset({"/healthz", "/readyz"})
#: client addresses whose write rate is tracked before the idle ones are forgotten
_MAX_TRACKED = 10_000
#: the routes whose body is bytes (a Yjs update), not JSON
_BINARY_BODY = re.compile(r"/api/docs/[^/]+/updates")
OCTET_STREAM = "application/octet-stream"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def normal_origin(origin: str) -> str:
    """An origin as a browser sends it: lower case, no trailing "/", and no port where it
    is the scheme's default (``https://app.example.com:443`` is ``https://app.example.com``)."""
    origin = origin.strip().rstrip("/").lower()
    for scheme, port in (("http://", ":80"), ("https://", ":443")):
        if origin.startswith(scheme) and origin.endswith(port):
            return origin[: -len(port)]
    return origin


def origin_allowed(origin: str, host: str | None, allow: tuple[str, ...]) -> bool:
    """Whether a browser page at `origin` may talk to the server reached as `host`."""
    origin = normal_origin(origin)
    allowed = {normal_origin(a) for a in allow}
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # "null" (sandboxed frames, file:// pages) and the like
    if re.fullmatch(LOCAL_ORIGIN, origin):
        return True
    return host is not None and parts.netloc == host.strip().lower()


def _hostname(netloc: str) -> str:
    """The name in a Host header (or an origin's netloc), lower case, without the port
    and the brackets of an IPv6 address."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc[1:]
    return netloc.rpartition(":")[0] if netloc.count(":") == 1 else netloc


def _allowed_name(name: str) -> str:
    """An ``--allow-host`` entry as it is compared: without a port, the final dot of an
    absolute name (``example.com.``), and ``*.example.com`` spelt ``.example.com``."""
    name = _hostname(name).rstrip(".")
    return name[1:] if name.startswith("*.") else name


def served_names(settings: Settings) -> frozenset[str]:
    """The names besides loopback ones and IP addresses the server answers to in open
    mode: the one it listens on, the hosts of ``allow_origin`` and those of
    ``allow_host`` (``*`` any, ``.example.com`` that domain and its subdomains)."""
    allowed = {_allowed_name(h) for h in settings.allow_host} | {settings.host.lower()}
    allowed |= {(urlsplit(o.strip().lower()).hostname or "") for o in settings.allow_origin}
    return frozenset(allowed)


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """Whether the server may answer a request for `host` (a Host header) in open mode:
    a loopback name, an IP address, or one of `allowed` (served_names)."""
    name = _hostname(host).rstrip(".")
    if not name or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    if "*" in allowed or name in allowed:
        return True
    return any(a.startswith(".") and (name == a[1:] or name.endswith(a)) for a in allowed)


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        is_open: Callable[[], bool],
        cookie_auth: Callable[[], bool] = lambda: True,
        refused: Callable[[str], None] = lambda reason: None,
        admin_of: Callable[[Scope], Awaitable[str | None]] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.is_open = is_open
        #: whether an extension may authenticate by a cookie (Extension.reads_cookies)
        self.cookie_auth = cookie_auth
        self.refused = refused
        #: the user a request's verified credentials name when their role is admin, else
        #: None: their writes are counted in a bucket of their own (_over_write_rate)
        self.admin_of = admin_of
        #: the names open mode answers to besides loopback ones and IP addresses
        self.served_names = served_names(settings)
        #: per client address, for max_http_writes_per_second
        self._writes: dict[str, Bucket] = {}
        self._pruned = 0.0

    async def _over_write_rate(self, scope: Scope) -> str | None:
        rate = self.settings.max_http_writes_per_second
        if rate <= 0 or not path_in_app(scope).startswith("/api/"):
            return None
        client = scope.get("client")
        host = str(client[0]) if client else "?"
        # an admin's writes (a verified token of role admin) have a bucket of their own,
        # at the same rate, keyed by the user: a bulk operation from the office NAT its
        # users write from neither meets their 429s nor throttles them
        admin = await self.admin_of(scope) if self.admin_of is not None else None
        if admin is not None:
            host = f"admin {admin}"  # (no address has a space)
        now = time.monotonic()
        bucket = self._writes.get(host)
        if bucket is None:
            if len(self._writes) >= _MAX_TRACKED and now - self._pruned >= 1.0:
                # at most once a second: many addresses at once must not make each new
                # one cost a pass over all the others
                self._pruned = now
                self._writes = {k: b for k, b in self._writes.items() if not b.full(now)}
            bucket = self._writes[host] = Bucket(rate, now)
        if bucket.take(1, now, debt=False):
            return None
        self.refused("http_write_rate")
        return (
            f"too many write requests from {host}: at most {rate:g} a second "
            f"(bursts of {2 * rate:g}); retry in a second"
        )

    def _origin_refusal(self, scope: Scope, headers: dict[str, str]) -> str | None:
        origin = headers.get("origin")
        if origin is None:
            return None
        # credentials the browser adds on its own
        ambient = self.is_open() or ("cookie" in headers and self.cookie_auth())
        if not ambient and not self.settings.allow_origin:
            return None
        if origin_allowed(origin, headers.get("host"), self.settings.allow_origin):
            return None
        self.refused("origin")
        # both names: the flag of `palimpsest serve`, the setting of an app that embeds
        # it (short: a websocket's close reason keeps 120 bytes of it)
        return (
            f"origin {origin[:100]!r} is not allowed here (see --allow-origin, "
            "Settings(allow_origin=...))"
        )

    def _host_refusal(self, scope: Scope, headers: dict[str, str]) -> str | None:
        host = headers.get("host")
        if host is None or not self.is_open() or host_allowed(host, self.served_names):
            return None
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            if path_in_app(scope) in _PROBES:
                return None  # a health check by a service name; they disclose nothing
        self.refused("host")
        name = _hostname(host).rstrip(".")[:100]
        return (
            f"not served as {name!r}: open mode needs --allow-host {name} "
            "(PALIMPSEST_ALLOW_HOST; Settings(allow_host=...) in an app that embeds it) "
            "for a name other than localhost or an IP address "
            "(a guard against DNS rebinding)"
        )

    def _head_refusal(self, scope: Scope) -> str | None:
        limit = self.settings.max_request_head_bytes
        if _head_bytes(scope) <= limit:
            return None
        self.refused("head_too_large")
        return f"the request head is over {limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        refusal = self._head_refusal(scope)
        if refusal is not None:
            if scope["type"] == "http":
                return await _answer(send, 431, "HeadTooLarge", refusal)
            return await _close_websocket(receive, send, 4413, refusal)
        headers = _headers(scope)
        refusal = self._host_refusal(scope, headers)
        if refusal is not None:
            log.warning("refused %s %s: %s", scope.get("method", "websocket"),
                        scope.get("path"), refusal)  # fmt: skip
            if scope["type"] == "http":
                return await _answer(send, 403, "Forbidden", refusal)
            return await _close_websocket(receive, send, 4403, refusal)
        if scope["type"] == "websocket":
            refusal = self._origin_refusal(scope, headers)
            if refusal is not None:
                log.warning("refused websocket %s: %s", scope.get("path"), refusal)
                return await _close_websocket(receive, send, 4403, refusal)
            # this frame lives as long as the socket: no copy of its headers with it
            del headers
        elif scope["method"] in _WRITES:
            refusal = self._origin_refusal(scope, headers)
            if refusal is not None:
                log.warning("refused %s %s: %s", scope["method"], scope.get("path"), refusal)
                return await _answer(send, 403, "Forbidden", refusal)
            refusal = await self._over_write_rate(scope)
            if refusal is not None:
                return await _answer(send, 429, "RateLimited", refusal, ((b"retry-after", b"1"),))
            await self._with_body(scope, receive, send, headers)
            return
        await self.app(scope, receive, send)

    async def _with_body(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        streamed = _BINARY_BODY.fullmatch(path_in_app(scope)) is not None
        limit, too_large = self._body_limit(streamed)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:  # 413 before a byte is read
            self.refused("body_too_large")
            return await _answer(send, 413, "BodyTooLarge", too_large)
        if streamed:
            return await self._streamed(scope, receive, send, headers, limit, too_large)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                self.refused("body_too_large")
                return await _answer(send, 413, "BodyTooLarge", too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip() and _media_type(headers) != "application/json":
            return await self._unsupported(send, "application/json", headers)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _body_limit(self, streamed: bool) -> tuple[int, str]:
        """The bytes a request body may have, and what one over them is told (naming
        the setting): a JSON body's limit; the update-import route's (`streamed`), as
        much as a document may hold, if larger."""
        http, doc = self.settings.max_http_body_bytes, self.settings.max_doc_bytes
        if not streamed:
            return http, (
                f"the request body is over the limit of {http} bytes (MAX_HTTP_BODY_BYTES), "
                "whatever the document's size limit"
            )
        if http >= doc:
            return http, (
                f"the update is over the request body limit of {http} bytes "
                "(MAX_HTTP_BODY_BYTES): nothing of it was applied"
            )
        return doc, (
            f"the update is over the document size limit of {doc} bytes (MAX_DOC_BYTES): "
            "no document may hold it; nothing of it was applied"
        )

    async def _streamed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        limit: int,
        too_large: str,
    ) -> None:
        """The update-import route: its body (at most `limit` bytes, within its declared
        length) handed on as it arrives; the route reads it after authenticating the
        caller. BodyTooLarge (413, `too_large`) is raised in the reader as soon as what
        arrived is over, and the rest is never read."""
        first = await receive()
        if first["type"] != "http.request":
            return  # the client went away
        if (first.get("body") or first.get("more_body")) and _media_type(headers) != OCTET_STREAM:
            return await self._unsupported(send, OCTET_STREAM, headers)
        pending: Message | None = first
        size = 0

        async def counted() -> Message:
            nonlocal pending, size
            message, pending = (pending, None) if pending is not None else (await receive(), None)
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    self.refused("body_too_large")
                    raise BodyTooLarge(too_large)
            return message

        await self.app(scope, counted, send)

    async def _unsupported(self, send: Send, want: str, headers: dict[str, str]) -> None:
        self.refused("unsupported_media_type")
        kind = _media_type(headers)
        await _answer(
            send, 415, "UnsupportedMediaType",
            f"the request body must be {want}, not {kind[:60] or 'untyped'}",
        )  # fmt: skip


def _media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


async def _close_websocket(receive: Receive, send: Send, code: int, reason: str) -> None:
    """Refuse a websocket with a close code and reason a client can read (a refusal
    before the accept is only an HTTP 403 to it)."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason[:120]})


def path_in_app(scope: Scope) -> str:
    """The request's path under the app (without the mount point of an embedding app)."""
    root, path = str(scope.get("root_path", "")), str(scope.get("path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def _head_bytes(scope: Scope) -> int:
    """About the size of the request head as sent: its request line and its headers."""
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 1
    return target + 24 + sum(len(k) + len(v) + 4 for k, v in scope["headers"])


async def _answer(
    send: Send, status: int, error: str, detail: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    # as Starlette's JSONResponse writes every other error body
    payload = json.dumps(
        {"error": error, "detail": detail}, ensure_ascii=False, separators=(",", ":")
    ).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()), *extra],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


__all__ = [
    "LOCAL_ORIGIN",
    "RequestGuard",
    "host_allowed",
    "normal_origin",
    "origin_allowed",
    "path_in_app",
    "served_names",
]
