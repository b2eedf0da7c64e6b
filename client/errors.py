"""The client's exceptions: one small tree, each with a message that says what to do.

::

    ClientError
    ├── Refused                  the server refused for good (close 44xx / HTTP 4xx)
    │   ├── BadDocName           a document name the server does not allow (4400 / 400)
    │   ├── BadRequest           a malformed request or frame (4400 / 400)
    │   ├── AuthFailed           missing, bad or expired token (4401 / 401)
    │   │   └── Forbidden        valid token, not allowed here (4403 / 403)
    │   ├── ReadOnly             edits refused on a read-only connection (by the client at
    │   │                        the edit, or by the server: auth message)
    │   │   └── Locked           edits refused while an admin has the document locked
    │   │                        (auth message "locked: ..."; HTTP 423): for the lock's
    │   │                        time only, the session recovers once it is lifted
    │   ├── TooLarge             a frame or body over the server's limit (4413 / 413)
    │   ├── NotFound             unknown document, seq or tag (404)
    │   │   └── Deleted          the document was deleted, nothing written since (410;
    │   │                        4404 "was deleted" on a websocket)
    │   ├── Replaced             the document was replaced under the session (4409
    │   │                        "was replaced"; 409 Replaced)
    │   └── RateLimited          too many events or connections (4429 / 429)
    ├── ServerGone               cannot reach the server, or it went away for good
    ├── ServerError              the server failed (5xx, close 1011)
    ├── Timeout                  a wait ran out (also a builtin TimeoutError); a request
    │                            sent may still be done: its .late answer says
    └── WrongType                a root asked for as one type holds another (also a TypeError)
"""

from __future__ import annotations

import asyncio
from typing import Any


class ClientError(Exception):
    """Base of every error the Palimpsest client raises on purpose."""

    def __init__(self, message: str, *, code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        #: websocket close code or HTTP status, when there was one
        self.code = code
        self.detail = detail


class Refused(ClientError):
    """The server refused the request; retrying the same thing will not help."""


class BadDocName(Refused):
    pass


class BadRequest(Refused):
    pass


class BadURL(Refused, ValueError):
    """A server URL the client cannot use (raised before anything is sent)."""


class BadTime(Refused, ValueError):
    """A time without an offset that is no local time here, or two (a daylight-saving
    change skipped it or repeated it): raised before anything is sent; add an offset."""


class AuthFailed(Refused):
    pass


class Forbidden(AuthFailed):
    pass


class ReadOnly(Refused):
    pass


class Locked(ReadOnly):
    """Edits refused because an admin locked the document read-only (server.locking:
    ``PUT /api/docs/{doc}/lock``; over HTTP, 423). Unlike a read-only token's refusal it
    lasts as long as the lock: a session keeps the refused edits in its document, and
    once the document is unlocked and the server takes them (the re-sync of the next
    edit, or a ``flush()``, which sends them again) its ``error`` is cleared by itself.
    A ReadOnly, so that a handler of ReadOnly catches it too."""


class TooLarge(Refused):
    pass


class NotFound(Refused):
    pass


class Deleted(NotFound):
    """The document was deleted and nothing has been written under its name since (HTTP
    410; a name never used is a plain `NotFound`), or, on a websocket, the document was
    deleted while connected or the session's copy holds the deleted one's content (4404
    with a reason that says it "was deleted")."""


class Replaced(Refused):
    """The document was replaced while the session had it open (``palimpsest copy
    --replace`` on the server's store: 4409 with a reason that says it "was replaced";
    HTTP 409 ``Replaced`` for a change that ran into it). The session's copy is of the
    old document and its edits since were not saved: open a new session (an empty copy)
    to load the new one. Never sent back on its own: the session stops."""


class RateLimited(Refused):
    pass


class ServerGone(ClientError):
    pass


class ServerError(ClientError):
    pass


class Timeout(ClientError, TimeoutError):
    """A wait ran out. For a request that was sent (undo, redo, close_group,
    ``request``), the server may still do it: ``late`` is then the answer to come, an
    awaitable (an OpResult for undo, redo and close_group), which raises ServerGone if
    the connection drops first (whether it was done is then unknown: the document's
    history says, as an event of kind undo or redo by the session's user)."""

    def __init__(
        self,
        message: str,
        *,
        late: asyncio.Future[Any] | None = None,
        code: int | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message, code=code, detail=detail)
        #: the answer of the request that timed out, should it come; None for other waits
        self.late = late


class WrongType(ClientError, TypeError):
    """A root of the document asked for as one shared type holds another (a map asked
    for as text): raised before anything is written into it."""


#: websocket close code -> the exception a permanent refusal raises
CLOSE_CODES: dict[int, type[Refused]] = {
    4400: BadRequest,
    4401: AuthFailed,
    4403: Forbidden,
    4404: NotFound,
    4413: TooLarge,
    4429: RateLimited,
}

#: HTTP status -> exception
HTTP_STATUSES: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: AuthFailed,
    403: Forbidden,
    404: NotFound,
    410: Deleted,
    413: TooLarge,
    423: Locked,
    429: RateLimited,
}


def from_close(code: int, reason: str, doc: str) -> ClientError:
    """The exception for a websocket closed by the server with `code`."""
    why = reason or "no reason given"
    if code == 4400 and "document name" in reason:
        return BadDocName(f"the server refused document {doc!r}: {why}", code=code)
    if code == 4404 and "was deleted" in reason:
        # the websocket's 410: deleted while connected, or a copy of the deleted one
        return Deleted(f"the server closed the connection to {doc!r} with {code}: {why}", code=code)
    if code == 4409 and "was replaced" in reason:
        return Replaced(f"the server closed the connection to {doc!r} with {code}: {why}",
                        code=code)  # fmt: skip
    cls = CLOSE_CODES.get(code)
    if cls is not None:
        return cls(f"the server closed the connection to {doc!r} with {code}: {why}", code=code)
    if code == 1011:
        return ServerError(f"the server failed on {doc!r} (1011): {why}", code=code)
    return ServerGone(f"the connection to {doc!r} closed with {code}: {why}", code=code)


def from_http(status: int, body: Any, what: str) -> ClientError:
    """The exception for an HTTP error answer ({"error", "detail"} or anything else)."""
    if isinstance(body, dict):
        error = body.get("error") or ""
        detail = body.get("detail") or ""
        text = f"{error}: {detail}" if error and detail else str(error or detail or body)
    else:
        text = str(body)[:300] or "no detail"
    msg = f"{what} failed with HTTP {status}: {text}"
    if status == 404 and not isinstance(body, dict):
        # our server's 404s are JSON; a page is another server's (or a wrong path's)
        return NotFound(
            f"{what} failed with HTTP 404, answered by a page, not the server's JSON: not "
            f"a Palimpsest server at that URL, or the wrong URL (give http://HOST:PORT): "
            f"{text[:120]}",
            code=status,
            detail=body,
        )
    if status == 409 and isinstance(body, dict) and body.get("error") == "Replaced":
        return Replaced(msg, code=status, detail=body)
    if status == 400 and "document name" in text:
        return BadDocName(msg, code=status, detail=body)
    cls = HTTP_STATUSES.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else Refused
    return cls(msg, code=status, detail=body)
