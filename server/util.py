"""Small helpers shared by routes and the CLI."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from .errors import BadRequest


def iso(ts_ms: int) -> str:
    """Milliseconds since the epoch as an ISO-8601 UTC timestamp."""
    return (
        datetime.fromtimestamp(ts_ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


#: RFC 3339's date-time, with what it allows beside ISO 8601's strict form: a space for
#: the "T", lowercase "t" and "z"; and a space for the "+" of an offset (a query string's
#: unencoded "+", which means a space there)
_DATE_TIME = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) ?([Zz]|[-+ ]\d{2}(?::?\d{2})?)?"
)


#: a date alone, or a date-time without an offset (the forms _DATE_TIME takes)
_NAIVE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?")


def with_local_offset(text: str) -> str:
    """A time as a command line or a client is given it, written for the HTTP API: a
    date-time (or a date: its midnight) without an offset is this machine's local time,
    as `date` reads one, and gets its offset (ISO 8601, to the microsecond); anything
    else (an offset or Z given, not a time at all) is returned as it is, for the server
    to read or refuse. The server reads a time without an offset as UTC."""
    m = _NAIVE.fullmatch(text.strip())
    if m is None:
        return text
    date, hour, minute, second, fraction = m.groups()
    try:
        naive = datetime.fromisoformat(date).replace(
            hour=int(hour or 0), minute=int(minute or 0), second=int(second or 0),
            microsecond=int((fraction or "0")[:6].ljust(6, "0")),
        )  # fmt: skip
    except ValueError:
        return text  # (no such date or hour: the server says so)
    return local_iso(naive)


def local_iso(moment: datetime) -> str:
    """`moment` in ISO 8601 with its offset: a naive datetime is this machine's local
    time (as Python reads one); an aware one keeps its own offset."""
    return (moment.astimezone() if moment.tzinfo is None else moment).isoformat()


def parse_iso(text: str) -> int:
    """An ISO-8601 / RFC 3339 timestamp as milliseconds since the epoch; one without an
    offset is UTC (the HTTP API's rule: docs/openapi.yaml)."""
    m = _DATE_TIME.fullmatch(text.strip())
    if m is not None:
        date, clock, offset = m.groups()
        if offset is None:
            offset = ""
        elif offset in ("Z", "z"):
            offset = "+00:00"
        elif offset[0] == " ":
            offset = "+" + offset[1:]
        form = f"{date}T{clock}{offset}"
    else:
        form = text.replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(form)
    except ValueError as e:
        raise BadRequest(f"not an ISO-8601 timestamp: {text!r}") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def without_password(url: str) -> str:
    """A store or fan-out URL as it may be printed or logged: its password, in the
    authority (`postgresql://ann:***@host/db`, `redis://:***@host`) or as a ``password=``
    option (libpq and redis-py both take one), written as ``***``."""
    return masked_url(url)


def _first_segment(path: str) -> str:
    """`/services/T0/B0/XyZ` as `/services/***`; `/hook` and `/hook/` as they are."""
    first, _, rest = path.lstrip("/").partition("/")
    return f"/{first}/***" if rest else path


def masked_url(url: str, every_secret: bool = False) -> str:
    """`url` with its password written as ``***`` (in the authority, or a ``password=``
    option). `every_secret` (a webhook's URL, whose receiver is often authenticated by
    any part of it): also a lone user name (often a token), the path past its first
    segment (Slack's /services/T/B/SECRET, Discord's /api/webhooks/ID/SECRET), every
    value of the query string and the ``#fragment``. The ``//`` of an empty authority is
    kept (urlunsplit writes unix:///p as unix:/p)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": settings refuse it; not shown, in any case
        return "(a URL that cannot be read)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if colon:
            netloc = f"{user}:***@{hostport}"
        elif every_secret:
            netloc = f"***@{hostport}"
    items = [item.partition("=") for item in parts.query.split("&")] if parts.query else []
    query = "&".join(
        f"{name}=***" if eq and (every_secret or name.lower() == "password") else name + eq + value
        for name, eq, value in items
    )
    fragment = "***" if every_secret and parts.fragment else parts.fragment
    path = _first_segment(parts.path) if every_secret else parts.path
    if (netloc, path, query, fragment) == parts[1:]:
        return url
    masked = urlunsplit(parts._replace(netloc=netloc, path=path, query=query, fragment=fragment))
    written = f"{parts.scheme}://"
    if url.startswith(written) and not masked.startswith(written):  # unix:///p?password=
        masked = written + masked[len(parts.scheme) + 1 :]
    return masked


#: what a websocket close frame's reason may hold: 125 bytes of payload less the code's 2
CLOSE_REASON_BYTES = 123


def close_reason(reason: str) -> str:
    """`reason` as a close frame can carry it: at most 123 bytes of UTF-8. A longer one is
    cut at the last space that leaves room for "…" (at a character otherwise), so that a
    client shows words, not a word cut in half with no sign that more was meant."""
    data = reason.encode()
    if len(data) <= CLOSE_REASON_BYTES:
        return reason
    room = CLOSE_REASON_BYTES - len("…".encode())
    cut = data[:room].decode(errors="ignore")
    space = cut.rfind(" ")
    if space > room // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + "…"
