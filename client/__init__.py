"""The Palimpsest Python client: live sessions over the y-websocket protocol, and the
history over HTTP.

    from palimpsest import client

    async with client.connect("ws://127.0.0.1:8000/ws", "notes", user="ada") as s:
        s.text().insert(0, "hello")
        await s.flush()

    async with client.History("http://127.0.0.1:8000", user="ada") as h:
        print((await h.version("notes")).text)
"""

from .errors import (
    AuthFailed,
    BadDocName,
    BadRequest,
    BadTime,
    BadURL,
    ClientError,
    Deleted,
    Forbidden,
    Locked,
    NotFound,
    RateLimited,
    ReadOnly,
    Refused,
    Replaced,
    ServerError,
    ServerGone,
    Timeout,
    TooLarge,
    WrongType,
)
from .history import (
    BlameRun,
    DocInfo,
    Event,
    EventPage,
    History,
    NestedBlame,
    Restored,
    Reverted,
    Version,
)
from .session import (
    KeptContainers,
    OpResult,
    Removed,
    Session,
    TokenProvider,
    UndoGroup,
    connect,
    ws_url,
)
from .stream import StreamEvent
from .text import Sticky, Text

__all__ = [
    "AuthFailed",
    "BadDocName",
    "BadRequest",
    "BadTime",
    "BadURL",
    "BlameRun",
    "ClientError",
    "Deleted",
    "DocInfo",
    "Event",
    "EventPage",
    "Forbidden",
    "History",
    "KeptContainers",
    "Locked",
    "NestedBlame",
    "NotFound",
    "OpResult",
    "RateLimited",
    "ReadOnly",
    "Refused",
    "Removed",
    "Replaced",
    "Restored",
    "Reverted",
    "ServerError",
    "ServerGone",
    "Session",
    "Sticky",
    "StreamEvent",
    "Text",
    "Timeout",
    "TokenProvider",
    "TooLarge",
    "UndoGroup",
    "Version",
    "WrongType",
    "connect",
    "ws_url",
]
