"""Small helpers shared by routes and the CLI."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Sequence
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


class LocalTimeError(ValueError):
    """A local time without an offset that a daylight-saving change made no time (the
    clocks went forward past it) or two (they went back over it): refused rather than
    read as one moment picked silently."""


def with_local_offset(text: str) -> str:
    """A time as a command line or a client is given it, written for the HTTP API: a
    date-time (or a date: its midnight) without an offset is this machine's local time,
    as `date` reads one, and gets its offset (ISO 8601, to the microsecond); anything
    else (an offset or Z given, not a time at all) is returned as it is, for the server
    to read or refuse. The server reads a time without an offset as UTC. A local time
    that is no time or two here (a daylight-saving change) raises LocalTimeError."""
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
    return local_iso(naive, text.strip())


def local_iso(moment: datetime, given: str | None = None) -> str:
    """`moment` in ISO 8601 with its offset: a naive datetime is this machine's local
    time (as Python reads one); an aware one keeps its own offset. A naive one that this
    machine's local time skips (the clocks went forward past it) or has twice (they went
    back over it) raises LocalTimeError, which says what offsets to add; `given`: how
    the time was written, for that message."""
    if moment.tzinfo is not None:
        return moment.isoformat()
    early = moment.replace(fold=0).astimezone()
    late = moment.replace(fold=1).astimezone()
    if early.utcoffset() == late.utcoffset():
        return early.isoformat()
    said = given or moment.isoformat()
    wall = moment.replace(fold=0).isoformat()
    before, after = (_offset(t) for t in (early, late))
    if early.replace(tzinfo=None) != moment.replace(fold=0):
        meant = moment.replace(fold=0, tzinfo=early.tzinfo).astimezone(late.tzinfo)
        raise LocalTimeError(
            f"{said} is no time here: the local clocks skipped it (a daylight-saving change "
            f"from {before} to {after}); add an offset, e.g. {wall}{before} (a clock not yet "
            f"changed: {meant.isoformat()} here)"
        )
    raise LocalTimeError(
        f"{said} is twice here: the local clocks went back over it (a daylight-saving "
        f"change from {before} to {after}); add an offset: {wall}{before} (the first) or "
        f"{wall}{after} (the second)"
    )


def _offset(moment: datetime) -> str:
    """`moment`'s UTC offset as ISO 8601 writes it (+01:00)."""
    return moment.isoformat()[-6:]


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


def text_output() -> None:
    """Make stdout able to print any text, whatever the locale says. Written to a file or a
    pipe it is UTF-8, as ``export`` writes (``palimpsest cat doc > doc.txt`` holds the
    document's characters on Windows' cp1252 too, or under ``PYTHONIOENCODING=latin-1``);
    to a terminal it keeps the terminal's encoding, and a character that it cannot show is
    printed as ``?`` rather than ending the command with UnicodeEncodeError."""
    out = sys.stdout
    if not isinstance(out, io.TextIOWrapper):
        return
    try:
        if out.isatty():
            out.reconfigure(errors="replace")
        else:
            out.reconfigure(encoding="utf-8", errors="strict")
    except (OSError, ValueError):  # closed, or a wrapper that cannot change
        pass


def argv_text(argv: Sequence[str]) -> list[str]:
    """The command line's arguments as the characters typed. Under the C locale without
    UTF-8 mode (LC_ALL=C PYTHONUTF8=0) Python decodes argv as ASCII, a byte past it as
    a lone surrogate: `cat doc --tag 初稿` then sent those, and the request's encoding
    ended the command with UnicodeEncodeError and a traceback. An argument whose bytes
    are UTF-8 is read as that; any other is left as it is (a file name still names its
    file), and said in one line should it reach a request (_runner)."""
    out = []
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            with contextlib.suppress(UnicodeDecodeError):
                arg = os.fsencode(arg).decode("utf-8")
        out.append(arg)
    return out
