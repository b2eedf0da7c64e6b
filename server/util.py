"""Small helpers shared by routes and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .errors import BadRequest


def iso(ts_ms: int) -> str:
    """Milliseconds since the epoch as an ISO-8601 UTC timestamp."""
    return (
        datetime.fromtimestamp(ts_ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def parse_iso(text: str) -> int:
    """An ISO-8601 timestamp (naive = UTC) as milliseconds since the epoch."""
    try:
        if "T" in text and " " in text:  # a "+" of an offset that a query string turned into " "
            text = text.replace(" ", "+")
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise BadRequest(f"not an ISO-8601 timestamp: {text!r}") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def without_password(url: str) -> str:
    """A store or fan-out URL as it may be printed or logged: its password, in the
    authority (`postgresql://ann:***@host/db`, `redis://:***@host`) or as a ``password=``
    option (libpq and redis-py both take one), written as ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = parts.query
    if any(k.lower() == "password" for k, _ in parse_qsl(query, keep_blank_values=True)):
        query = "&".join(
            "password=***" if item.split("=", 1)[0].lower() == "password" else item
            for item in query.split("&")
        )
    if netloc == parts.netloc and query == parts.query:
        return url  # unchanged, as written (urlunsplit would write unix:///p as unix:/p)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
