"""Why a websocket connection ended: one cause from a closed set, for the metric
``palimpsest_disconnects_total{cause}`` and the ``disconnect`` log line.

The set is closed so that the metric's series are bounded and an alert can name them.
A close made by the server says its cause where it is made (the connection's own
refusals) or is told from its close code (what a room, the deletion or the shutdown
closes through the Peer interface); a close made by the client is ``client_closed``,
or ``connection_lost`` when no close frame came (the network, a killed process). The
server's keepalive closing a peer that answers no ping and takes nothing is
``keepalive_timeout`` (uvicorn reports it as the peer's going: keepalive.keepalive_cut).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import (
    AuthError,
    Forbidden,
    FrameTooLarge,
    NotFound,
    PalimpsestError,
    ProtocolError,
    RateLimited,
    ReplacedMeanwhile,
    StaleReplacedCopy,
    StoreError,
    UpdateRejected,
)

#: every cause, with what it means (docs/operations.md has the same table)
CAUSES: dict[str, str] = {
    "client_closed": "the client closed the socket (a close frame from it)",
    "connection_lost": "the socket went away without a close frame (reported as 1005 or 1006)",
    "keepalive_timeout": "the server's keepalive closed it (1011 keepalive ping timeout): "
    "no answer to its ping while taking none of the server's bytes and sending none (a "
    "frozen tab, a client that stopped reading, a peer gone without a word)",
    "rate_limit": "over a rate of frames or bytes (1013), or too many connections (4429)",
    "slow_client": "the client did not read: its send queue or its address's or document's "
    "send budget overflowed (1013), or its socket was aborted",
    "auth_expired": "its token expired (4401)",
    "auth_revoked": 'its user was revoked (4401, the reason begins "access revoked")',
    "forbidden": "refused access after it opened (4403)",
    "too_large": "a frame or an update over a size limit (4413; 1009 from websockets)",
    "protocol_error": "a malformed frame or an update that does not apply (4400; 1002 or "
    "1007 from websockets)",
    "doc_deleted": "its document was deleted (4404)",
    "doc_replaced": "its document was replaced under it, by palimpsest copy --replace, or it "
    "came back with its copy of the replaced document (4409)",
    "reloading": "its room was reloaded, the client to reconnect at once (1013): mostly "
    "routine, after a compaction with --purge-deleted or one by another process "
    "(server.erasure, server.base_watch); also after its room failed",
    "store_error": "the store refused or failed its edits, or the document could not be "
    "loaded (1011, 1013)",
    "server_shutdown": "the server is going away (1001; 1012 when the ASGI server, not "
    "Palimpsest, closed it at its shutdown)",
    "error": "anything else (an extension failed, an unexpected error: 1011)",
}

_BY_CODE = {
    1001: "server_shutdown",
    1011: "error",
    4400: "protocol_error",
    4401: "auth_expired",
    4403: "forbidden",
    4404: "doc_deleted",
    4413: "too_large",
    4429: "rate_limit",
}

#: how the reason of a close for a revoked user begins (revocation.REVOKED)
REVOKED = "access revoked"
#: the close the server's keepalive makes (uvicorn's words), and its cause
KEEPALIVE_TIMEOUT = (1011, "keepalive ping timeout")
#: the reason a room gives when it closes its peers to reload (room.py, undo/actions.py)
RELOADING = "the document is being reloaded"
#: the reason a room gives the senders of edits the store refused for good (room.py):
#: a 1011 that is the store's, not a bug's
STORE_FAILED = "the store failed to log your edits"


@dataclass(frozen=True, slots=True)
class Closed:
    """How one websocket connection ended."""

    #: one of CAUSES
    cause: str
    #: the close code sent (by the server) or received (from the client; 1006: none)
    code: int
    reason: str
    #: seconds the connection was open
    seconds: float
    #: the client closed first (or went away)
    by_client: bool


def cause_of_code(code: int, reason: str = "") -> str:
    """The cause of a close the server made for `code` (and `reason`) with no cause
    said where it was made."""
    if code == 1013:
        return "reloading" if reason.startswith(RELOADING) else "store_error"
    if code == 1011 and reason.startswith(STORE_FAILED):
        return "store_error"
    if code == 4401 and reason.startswith(REVOKED):
        return "auth_revoked"
    if code == 4409 and "was replaced" in reason:  # (errors.replaced_reason)
        return "doc_replaced"
    return _BY_CODE.get(code, "error")


def cause_of_error(e: PalimpsestError) -> str:
    """The cause of a close for an error a connection raised."""
    if isinstance(e, RateLimited):
        return "rate_limit"
    if isinstance(e, FrameTooLarge):
        return "too_large"
    if isinstance(e, ProtocolError | UpdateRejected):
        return "protocol_error"
    if isinstance(e, StoreError):
        return "store_error"
    if isinstance(e, Forbidden):
        return "forbidden"
    if isinstance(e, AuthError):
        return "auth_expired"
    if isinstance(e, ReplacedMeanwhile | StaleReplacedCopy):
        return "doc_replaced"
    if isinstance(e, NotFound):
        return "doc_deleted"
    return cause_of_code(e.close_code, str(e))


def cause_of_client(code: int | None, framed: bool) -> str:
    """The cause of a close the client made: `code` is what the ASGI server reported,
    `framed` whether its disconnect message carried a reason (a close frame came).
    uvicorn reports a socket that went without a close frame as 1005 with no reason
    (1006 before the handshake ended), and the close its keepalive made too (told apart
    by keepalive.keepalive_cut); a close frame with no code (a browser's ``ws.close()``)
    is 1005 with a reason ("")."""
    if code is None or code == 1006 or (code == 1005 and not framed):
        return "connection_lost"
    return "client_closed"


#: "service restart": the close uvicorn makes itself, at its shutdown, of every websocket
#: still open (under gunicorn, hypercorn... the app has no say), reported to the app as
#: a disconnect with this code and no reason
SERVER_RESTART = 1012


#: the codes websockets closes with itself when it refuses what a client sent (a frame
#: over ``ws_max_size``, an unmasked or malformed frame, text that is not UTF-8), which
#: uvicorn reports to the app as a disconnect with the close frame it sent
LIBRARY_REFUSALS = {1002: "protocol_error", 1007: "protocol_error", 1009: "too_large"}


def library_refused(code: int | None, reason: str | None) -> str | None:
    """The cause of a disconnect that is the websocket library's refusal of a client's
    frame (a close frame with a reason: uvicorn passes the one websockets sent), not the
    client's own close: it was logged ``cause=client_closed … (closed by the client)``.
    None for any other disconnect."""
    if reason is None or code is None:
        return None
    return LIBRARY_REFUSALS.get(code)


def server_closed(code: int | None, reason: str | None) -> bool:
    """Whether a disconnect the ASGI server reported is its own close at its shutdown
    (1012 without a close frame's reason; a client sends no 1012, a server-only code),
    not the client's: it was logged ``cause=client_closed … (closed by the client)``."""
    return code == SERVER_RESTART and not reason


__all__ = [
    "CAUSES",
    "KEEPALIVE_TIMEOUT",
    "SERVER_RESTART",
    "RELOADING",
    "STORE_FAILED",
    "Closed",
    "cause_of_client",
    "cause_of_code",
    "cause_of_error",
    "library_refused",
    "server_closed",
]
