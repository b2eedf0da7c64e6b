"""Small helpers shared by routes and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime

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
