"""The history of documents over HTTP (httpx): events, versions, diffs, blame, restore, tags,
and an update imported.

    async with History("http://127.0.0.1:8000", user="ada") as h:
        page = await h.events("notes", limit=50)
        v = await h.version("notes", 12)          # or at="2026-11-27T10:00:00Z", or tag=
        print(v.text)
        r = await h.restore("notes", 12, dry_run=True)  # what it would take out, per user
        await h.restore("notes", 12)
        await h.revert("notes", "s06", since=12)  # only s06's changes since version 12

One method per route of the HTTP API; errors become :mod:`client.errors` exceptions.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from palimpsest.errors import DocNameError
from palimpsest.names import validate_doc_name
from palimpsest.util import LocalTimeError, local_iso, with_local_offset

from .errors import BadDocName, BadTime, ServerGone, Timeout, from_http
from .session import (
    KeptContainers,
    OpResult,
    Removed,
    TokenProvider,
    _kept,
    _removed,
    ask_token,
    merge_query,
    op_result,
    split_base,
)
from .stream import Follower

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class DocInfo:
    doc: str
    head: int
    updated: str | None
    size: int


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    ts: str
    actor: str
    kind: str
    size: int
    meta: dict[str, Any] = field(default_factory=dict)
    reverts: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Restored:
    """The answer to restore(): the restore's event, or why there is none, and what it
    took out (a dry run: would take out) and put in. A restore makes the document equal
    to the version, so it takes out whatever was written since that the version lacks,
    other users' text too: ``removed_others`` says whose, as an undo's OpResult does."""

    #: the restore event's seq; None when the document already was equal, or a dry run
    seq: int | None
    #: the version restored
    restores: int
    #: why nothing was done ("already equal")
    reason: str | None = None
    #: nothing was written: what a restore would do now
    dry_run: bool = False
    #: a dry run's: the head it was computed at
    head: int | None = None
    #: what it took out that users other than the caller wrote, per user
    removed_others: tuple[Removed, ...] = ()
    #: characters and items taken out in all (the caller's own included), and put in
    removed_characters: int = 0
    removed_items: int = 0
    added_characters: int = 0
    added_items: int = 0


@dataclass(frozen=True, slots=True)
class Reverted:
    """The answer to revert(): the revert's event, or why there is none, and what it took
    out (a dry run: would take out) and put in. A revert takes out one writer's changes
    over a range of versions (what they inserted deleted, what they deleted brought
    back) and keeps everybody else's. The writer's elements that others wrote in (a
    paragraph they made, with a classmate's words in it) are kept, and said in
    ``kept_containers``; what it took out nonetheless that others wrote is in
    ``removed_others``."""

    #: the revert event's seq; None when there was nothing to revert, or a dry run
    seq: int | None
    #: whose changes, and over which versions: since < seq <= until
    actor: str
    since: int
    until: int
    #: the writer's events in the range (what is reverted)
    reverts: list[int] = field(default_factory=list)
    #: why nothing was done ("nothing to revert")
    reason: str | None = None
    #: nothing was written: what a revert would do now
    dry_run: bool = False
    #: a dry run's: the head it was computed at
    head: int | None = None
    #: what it took out that users other than the writer and the caller wrote, per user
    removed_others: tuple[Removed, ...] = ()
    #: characters and items taken out in all (the writer's included), and put in
    removed_characters: int = 0
    removed_items: int = 0
    added_characters: int = 0
    added_items: int = 0
    #: the writer's elements it kept (would keep) because others wrote in them (a
    #: paragraph their Enter made that a classmate typed in), and what the others
    #: wrote there, as an undo's ``OpResult.kept_containers``; None when it kept none
    kept_containers: KeptContainers | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[Event]
    #: pass as ``after=`` for the next page; None at the end
    next_after: int | None


@dataclass(frozen=True, slots=True)
class Version:
    """A document at a version. Before its first event (seq 0, as ``at=`` a time before
    it answers): ts None and no roots, and ``.text`` "" as for any root it lacks."""

    seq: int
    ts: str | None
    #: every root type: {"content": {"type": "text", "value": "..."}}
    roots: dict[str, Any]

    @property
    def text(self) -> str:
        """The value of the "content" text root ("" when there is none)."""
        return self.root_text("content")

    def root_text(self, name: str) -> str:
        root = self.roots.get(name)
        if isinstance(root, dict):
            value = root.get("value")
            return value if isinstance(value, str) else ""
        return ""


@dataclass(frozen=True, slots=True)
class BlameRun:
    text: str
    #: None where blame cannot say (text folded into a compacted base; a stretch
    #: ``omitted`` by an actor filter)
    actor: str | None
    seq: int
    #: with join="actor": the latest event of the runs joined (`seq` the earliest)
    last_seq: int | None = None
    #: with actor=: a stretch of other writers' text, this many characters long (`text`
    #: holds only its line breaks; `actor` and `seq` say nothing)
    omitted: int | None = None


@dataclass(frozen=True, slots=True)
class NestedBlame:
    """A text nested in a map or array root (a notebook cell's source) and its blame."""

    #: where it is at the version blamed: the root, then each array index or map key,
    #: "/"-separated (a "/" in a key is "~1", a "~" is "~0"), as ``?path=`` takes it
    path: str
    #: the same, as a list: the root's name, array indices (int), map keys (str)
    keys: tuple[str | int, ...]
    #: the string ``id`` of the innermost map holding it, if any (a Jupyter cell's id)
    id: str | None
    #: who made the text (inserted it, or the cell holding it) and in which event
    actor: str | None
    seq: int
    runs: tuple[BlameRun, ...]


def _runs(runs: list[dict[str, Any]]) -> list[BlameRun]:
    return [BlameRun(str(r["text"]), _opt_str(r.get("actor")), int(r.get("seq") or 0),
                     r.get("last_seq"), r.get("omitted")) for r in runs]  # fmt: skip


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


#: whose runs a blame or diff keeps: one user, several, or (None) everyone
Actors = str | Sequence[str] | None

_BLANK_LINES = re.compile(r"\n{3,}")


def _runs_text(runs: Sequence[BlameRun] | Sequence[dict[str, Any]]) -> str:
    """The text of blame runs, concatenated (with actor=: the writers' text, other
    writers' stretches reduced to their line breaks)."""
    return "".join(r.text if isinstance(r, BlameRun) else str(r.get("text") or "") for r in runs)


def _tree_text(nodes: Sequence[dict[str, Any]]) -> str:
    """The text of an XML blame tree (blame_tree()), a line per block: each element, and
    each text at the top level (Lexical's paragraphs), ends a line."""
    out: list[str] = []

    def walk(nodes: Sequence[dict[str, Any]], top: bool) -> None:
        for node in nodes:
            if isinstance(node.get("runs"), list):
                for run in node["runs"]:
                    inner = run.get("node")
                    if isinstance(inner, dict) and "runs" in inner:
                        walk([inner], True)  # a paragraph embedded in a text
                    elif not isinstance(inner, dict):  # (a map is a text node's properties)
                        out.append(str(run.get("text") or ""))
            walk(node.get("children") or [], False)
            if (top or "element" in node) and out and not out[-1].endswith("\n"):
                out.append("\n")

    walk(nodes, True)
    return "".join(out)


def _squeeze(text: str) -> str:
    """`text` (a writer's paragraphs of a tree, a line each) with no blank line at either
    end and at most one in a row: paragraphs apart, however many lines of others' were
    between them."""
    return _BLANK_LINES.sub("\n\n", text).strip("\n")


def _actors(actor: Actors) -> list[str] | None:
    if actor is None:
        return None
    return [actor] if isinstance(actor, str) else list(actor)


def http_url(url: str) -> str:
    """An HTTP base URL from http(s):// or ws(s)://HOST:PORT[/PREFIX][/ws][?QUERY], without
    its query (see :func:`split_base`) and without a trailing ``/``."""
    base, _query = split_base(url)
    if base.startswith("ws://") or base.startswith("wss://"):
        base = "http" + base[2:]
        if base.endswith("/ws"):
            base = base[:-3]
    return base


def _doc_path(doc: str) -> str:
    try:
        validate_doc_name(doc)
    except DocNameError as e:
        raise BadDocName(str(e)) from None
    return f"/api/docs/{quote(doc, safe='')}"


def _iso(at: str | datetime) -> str:
    """A time as sent to the server, which reads one without an offset as UTC: a naive
    datetime, or a string without an offset (``2026-11-27T10:00``, a date alone: its
    midnight), is this machine's local time, as ``date`` reads it, and is sent with its
    offset; an aware datetime or a string with an offset (or ``Z``) is sent as it is. A
    local time that a daylight-saving change skipped or repeated here raises BadTime
    (nothing is sent: which moment was meant is not known)."""
    try:
        return local_iso(at) if isinstance(at, datetime) else with_local_offset(at)
    except LocalTimeError as e:
        raise BadTime(str(e)) from None


class _FreshToken(httpx.Auth):
    """``Authorization: Bearer`` from a token provider (``connect(token=...)``'s: a
    function or an ``async def`` that returns a fresh token): asked at the first
    request, then again when the server answers 401 (the token expired), and that
    request sent once more with the new one."""

    def __init__(self, provider: TokenProvider, url: str) -> None:
        self._provider = provider
        self._url = url
        self._token: str | None = None

    async def _fresh(self) -> str:
        return await ask_token(self._provider, self._url)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        fresh = self._token is None
        if self._token is None:
            self._token = await self._fresh()
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401 and not fresh:
            self._token = await self._fresh()
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request


class History:
    """An HTTP client for one server. ``user`` names you in open development mode,
    ``token`` is sent as ``Authorization: Bearer``: a JWT, or, as for ``connect()``, a
    function (or an ``async def``) that returns a fresh one, asked at the first request
    and again when the server answers 401 (an expired token; the request is then sent
    once more)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        user: str | None = None,
        token: str | TokenProvider | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        #: the server's base URL, a path prefix kept (``http://H/collab``), its query not:
        #: that query's parameters (``?user=ann``) go with every request (a name the
        #: request gives too, as `user` here, takes the request's value)
        self.url = http_url(url)
        auth = _FreshToken(token, self.url) if callable(token) else None
        headers = {"Authorization": f"Bearer {token}"} if token and not auth else {}
        own = {"user": user} if user and not token else {}
        params = tuple(merge_query(split_base(url)[1], own))
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, params=params, timeout=timeout,
            transport=transport, auth=auth,
        )  # fmt: skip
        #: the streams handed out, ended before the connection pool closes
        self._followers: weakref.WeakSet[Follower] = weakref.WeakSet()

    async def aclose(self) -> None:
        for follower in list(self._followers):
            await follower.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        what: str,
    ) -> httpx.Response:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {"Content-Type": "application/octet-stream"} if content is not None else None
        try:
            r = await self._http.request(
                method, path, params=clean, json=json, content=content, headers=headers
            )
        except httpx.TimeoutException as e:
            raise Timeout(f"{what}: no answer from {self.url} ({e!r})") from e
        except httpx.TransportError as e:
            raise ServerGone(f"{what}: cannot reach {self.url}: {e}") from e
        if r.status_code >= 400:
            try:
                body: Any = r.json()
            except ValueError:
                body = r.text
            raise from_http(r.status_code, body, what)
        return r

    async def _json(self, method: str, path: str, what: str, **kw: Any) -> dict[str, Any]:
        r = await self._call(method, path, what=what, **kw)
        try:
            body = r.json()
        except ValueError as e:
            raise from_http(502, f"not JSON: {r.text[:200]}", what) from e
        if not isinstance(body, dict):
            raise from_http(502, f"expected a JSON object, got {body!r:.200}", what)
        return body

    # --- documents ---------------------------------------------------------------------------

    async def docs(
        self, prefix: str = "", *, sort: str = "name", page_size: int = 1000
    ) -> list[DocInfo]:
        """Every document the token grants whose name starts with `prefix`, by name or
        newest change first (`sort`: "name" or "updated"), read a page of `page_size`
        (1-1000) at a time, following each page's ``next``."""
        out: list[DocInfo] = []
        params: dict[str, Any] = {"sort": sort, "limit": page_size}
        if prefix:
            params["prefix"] = prefix
        while True:
            body = await self._json("GET", "/api/docs", "listing documents", params=params)
            for d in body.get("docs", []):
                head, size = int(d.get("head") or 0), int(d.get("size") or 0)
                out.append(DocInfo(d["doc"], head, d.get("updated"), size))
            after = body.get("next")
            if not after:  # null on the last page (an older server sends none: one page)
                return out
            params["after"] = after

    async def position(self) -> int:
        """The log's last global position: where :meth:`stream_all` is now."""
        body = await self._json(
            "GET", "/api/docs", "reading the log's position", params={"limit": 1}
        )
        return int(body.get("position") or 0)

    # --- events --------------------------------------------------------------------------------

    async def events(
        self,
        doc: str,
        *,
        after: int | None = None,
        limit: int | None = None,
        actor: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
    ) -> EventPage:
        """One page of the event log (oldest first), filtered by actor and time (`since`,
        `until`: a naive time is this machine's local time, as for :meth:`version`)."""
        params = {
            "after": after, "limit": limit, "actor": actor,
            "since": None if since is None else _iso(since),
            "until": None if until is None else _iso(until),
        }  # fmt: skip
        body = await self._json(
            "GET", f"{_doc_path(doc)}/events", f"listing events of {doc!r}", params=params
        )
        events = [
            Event(
                int(e["seq"]),
                str(e.get("ts")),
                str(e.get("actor")),
                str(e.get("kind")),
                int(e.get("size") or 0),
                dict(e.get("meta") or {}),
                list(e.get("reverts") or []),
            )  # fmt: skip
            for e in body.get("events", [])
        ]
        nxt = body.get("next_after")
        return EventPage(events, int(nxt) if nxt is not None else None)

    def stream(
        self,
        doc: str,
        *,
        after: int = 0,
        updates: bool = True,
        idle_timeout: float = 60.0,
        give_up: float | None = None,
    ) -> Follower:
        """The document's events after seq `after`, then live, for ever: an async
        iterator of :class:`~client.stream.StreamEvent` that reconnects by itself and
        resumes after the last seq it handed out (``.after``). ``updates=False`` leaves the
        Yjs updates out; ``give_up``: raise ServerGone after so many seconds without a
        connection (an attempt the server never answers ends then too).
        A document with no events yet is no error: the stream waits for its first."""
        return self._follow(Follower(
            self._http, f"{_doc_path(doc)}/events/stream", after=after, updates=updates,
            idle_timeout=idle_timeout, give_up=give_up,
        ))  # fmt: skip

    def stream_all(
        self,
        *,
        after: int = 0,
        updates: bool = True,
        idle_timeout: float = 60.0,
        give_up: float | None = None,
    ) -> Follower:
        """Every document's events (those you may read) after global position `after`, in
        commit order, then live, for ever (like :meth:`stream`; ``.after`` is a position).
        A document's deletion comes at its own position as a StreamEvent of kind
        ``deleted`` (its last seq, who deleted it; ``update`` None)."""
        return self._follow(Follower(
            self._http, "/api/events/stream", after=after, updates=updates,
            idle_timeout=idle_timeout, give_up=give_up,
        ))  # fmt: skip

    def _follow(self, follower: Follower) -> Follower:
        self._followers.add(follower)
        return follower

    async def iter_events(
        self, doc: str, *, after: int | None = None, page_size: int = 500, **filters: Any
    ) -> AsyncIterator[Event]:
        """Every event (matching the filters), page after page."""
        while True:
            page = await self.events(doc, after=after, limit=page_size, **filters)
            for e in page.events:
                yield e
            if page.next_after is None or not page.events:
                return
            after = page.next_after

    # --- versions -------------------------------------------------------------------------------

    def _version_path(
        self, doc: str, seq: int | str | None, tag: str | None, at: str | datetime | None
    ) -> tuple[str, dict[str, Any]]:
        given = sum(x is not None for x in (seq, tag, at))
        if given > 1:
            raise ValueError("give one of seq, tag or at")
        path = f"{_doc_path(doc)}/versions"
        if at is not None:
            return path, {"at": _iso(at)}
        if isinstance(seq, str):  # a tag name (or a seq written out), as restore() takes
            ref = seq
        elif seq is not None:
            ref = str(int(seq))
        else:
            ref = tag if tag is not None else "head"
        if not ref:
            raise ValueError("an empty tag name")
        return f"{path}/{quote(ref, safe='')}", {}

    async def version(
        self,
        doc: str,
        seq: int | str | None = None,
        *,
        at: str | datetime | None = None,
        tag: str | None = None,
        tree: bool = False,
    ) -> Version:
        """The document after event `seq`, at a named version `tag` (also given in `seq`'s
        place, as restore() takes it), at time `at`, or now. `at` is a datetime or an
        ISO-8601 string; a naive one (``datetime.now()``, ``"2026-11-27T10:00"``) is this
        machine's local time and is sent with its offset, an aware one as it is. `tree`:
        each XML root as a JSON tree (``{"type": "xml", "nodes"}``, ``?format=tree``)
        instead of its XML string."""
        path, params = self._version_path(doc, seq, tag, at)
        if tree:
            params = {**params, "format": "tree"}
        body = await self._json("GET", path, f"reading {doc!r} ({path})", params=params)
        return Version(int(body.get("seq") or 0), body.get("ts"), dict(body.get("roots") or {}))

    async def version_update(
        self,
        doc: str,
        seq: int | str | None = None,
        *,
        at: str | datetime | None = None,
        tag: str | None = None,
    ) -> bytes:
        """The document at a version as one Yjs update (apply it to a pycrdt Doc)."""
        path, params = self._version_path(doc, seq, tag, at)
        r = await self._call(
            "GET", path, params={**params, "format": "update"},
            what=f"reading {doc!r} ({path}) as an update",
        )  # fmt: skip
        return r.content

    async def diff(
        self,
        doc: str,
        from_: int | str,
        to: int | str | None = None,
        join: str = "event",
        actor: Actors = None,
    ) -> dict[str, Any]:
        """What changed between two versions (each a seq or a tag name; `to`: now by
        default), per root type, with attribution; `join`:
        "event" (an op per event) or "actor" (neighbours by the same actor joined);
        `actor` (a user or several): only what their events inserted, deleted or
        formatted, other writers' stretches reduced to ``omitted`` ops (docs/history.md)."""
        return await self._json(
            "GET", f"{_doc_path(doc)}/diff", f"diffing {doc!r} {from_}..{to}",
            params={"from": from_, "to": to, "join": join, "actor": _actors(actor)},
        )  # fmt: skip

    async def blame(
        self,
        doc: str,
        seq: int | str | None = None,
        root: str = "content",
        join: str = "event",
        actor: Actors = None,
    ) -> list[BlameRun]:
        """Who wrote each piece of the text root `root` at `seq` (a seq or a tag name; now
        by default);
        `join`: "event" (a run per event) or "actor" (neighbours by the same actor
        joined: a word typed key by key is one run); `actor` (a user or several): only
        their runs, each stretch of others' text between one run with its ``omitted``
        length and only its line breaks ([] when nothing of theirs is left)."""
        entry = await self._blamed(doc, seq, root, join, actor)
        if entry.get("type") == "xml":
            raise ValueError(f"root {root!r} of {doc!r} is XML: blame_tree() gives its tree")
        if "texts" in entry:
            raise ValueError(
                f"root {root!r} of {doc!r} is a {entry.get('type')}: blame_texts() gives "
                "the texts in it"
            )
        return _runs(entry.get("runs") or [])

    async def blame_texts(
        self,
        doc: str,
        path: str,
        seq: int | str | None = None,
        join: str = "event",
        actor: Actors = None,
    ) -> list[NestedBlame]:
        """Who wrote the texts nested in a map or array root (a notebook's cells'
        sources: ``"cells"``), or at or under `path` in it (``"cells/3/source"``,
        ``"cells/3"``), at `seq`: each text's path, its map's ``id``, who made it and
        its runs (docs/history.md); `join` and `actor` as for blame()."""
        root = path.strip("/").split("/")[0]
        body = await self._json(
            "GET", f"{_doc_path(doc)}/blame", f"blaming {doc!r}",
            params={"seq": seq, "path": path, "join": join, "actor": _actors(actor)},
        )  # fmt: skip
        entry = (body.get("roots") or {}).get(root) or {}
        return [
            NestedBlame(
                str(t["path"]),
                tuple(t["keys"]),
                _opt_str(t.get("id")),
                _opt_str(t.get("actor")),
                int(t.get("seq") or 0),
                tuple(_runs(t.get("runs") or [])),
            )  # fmt: skip
            for t in entry.get("texts") or []
        ]

    async def blame_tree(
        self,
        doc: str,
        seq: int | str | None = None,
        root: str = "default",
        join: str = "event",
        actor: Actors = None,
    ) -> list[dict[str, Any]]:
        """Who made each element and wrote each text of the XML root `root` (Tiptap's,
        ProseMirror's and Lexical's documents; "default" is Tiptap's usual name,
        "root" Lexical's) at `seq`: the server's tree as it gives it
        (docs/history.md), [] when there is no such root; `join` as for blame();
        `actor`: only the nodes with something of theirs, their texts' runs as blame()'s."""
        entry = await self._blamed(doc, seq, root, join, actor)
        if entry and entry.get("type") != "xml":
            raise ValueError(f"root {root!r} of {doc!r} is not XML: blame() gives its runs")
        return list(entry.get("nodes") or [])

    async def _blamed(
        self, doc: str, seq: int | str | None, root: str, join: str, actor: Actors
    ) -> dict[str, Any]:
        body = await self._json(
            "GET", f"{_doc_path(doc)}/blame", f"blaming {doc!r}",
            params={"seq": seq, "join": join, "actor": _actors(actor)},
        )  # fmt: skip
        entry = (body.get("roots") or {}).get(root) or {}
        return entry if isinstance(entry, dict) else {}

    async def text_by(
        self,
        doc: str,
        actor: str | Sequence[str],
        seq: int | str | None = None,
        root: str = "content",
    ) -> str:
        """The text `actor` (or several) wrote that is still in root `root` (a text or an
        XML tree) at `seq` (a seq or a tag name; now by default), in document order:
        exactly their characters, their paragraphs apart by one blank line where others'
        text was between (in a tree: a line per paragraph of theirs, with no line break
        after the last), nothing else of others' ("" when nothing of theirs is left).
        Blame names the writer: text of theirs that an editor moved or an undo brought
        back is theirs.
        (``palimpsest cat --by`` prints it as lines: with a line break at the end.)"""
        entry = await self._blamed(doc, seq, root, "actor", actor)
        if entry.get("type") == "xml":
            return _squeeze(_tree_text(entry.get("nodes") or []))
        runs: list[dict[str, Any]] = list(entry.get("runs") or [])
        # others' stretches at either end are not the writers' text, not even their
        # line breaks; the writers' own line breaks there are
        while runs and "omitted" in runs[0]:
            runs.pop(0)
        while runs and "omitted" in runs[-1]:
            runs.pop()
        return _BLANK_LINES.sub("\n\n", _runs_text(runs))

    # --- changes -------------------------------------------------------------------------------

    async def restore(self, doc: str, seq: int | str, *, dry_run: bool = False) -> Restored:
        """Make the document equal its version at `seq` (a seq or a tag name) with a new,
        undoable event: its seq is the answer's (None when the document already was
        equal), with what the restore took out that others wrote (``removed_others``).
        `dry_run`: write nothing, answer what a restore would take out and put in now."""
        body = await self._json(
            "POST", f"{_doc_path(doc)}/restore", f"restoring {doc!r} to {seq}",
            json={"seq": seq}, params={"dry_run": "true"} if dry_run else None,
        )  # fmt: skip
        new, head = body.get("seq"), body.get("head")
        removed, added = body.get("removed") or {}, body.get("added") or {}
        return Restored(
            int(new) if new is not None else None,
            int(body.get("restores") or 0),
            str(body["reason"]) if body.get("reason") else None,
            bool(body.get("dry_run")),
            int(head) if head is not None else None,
            tuple(_removed(body.get("removed_others"))),
            int(removed.get("characters") or 0),
            int(removed.get("items") or 0),
            int(added.get("characters") or 0),
            int(added.get("items") or 0),
        )

    async def revert(
        self,
        doc: str,
        actor: str,
        since: int | str,
        until: int | str | None = None,
        *,
        dry_run: bool = False,
    ) -> Reverted:
        """Take out what `actor` did after version `since` (a seq or a tag name) up to
        `until` (the head by default): their insertions deleted, what they deleted brought
        back, everybody else's changes kept; a new event of kind revert, which your undo
        takes back. `dry_run`: write nothing, answer what it would take out and put in."""
        body: dict[str, Any] = {"actor": actor, "since": since}
        if until is not None:
            body["until"] = until
        got = await self._json(
            "POST", f"{_doc_path(doc)}/revert", f"reverting {actor!r}'s changes to {doc!r}",
            json=body, params={"dry_run": "true"} if dry_run else None,
        )  # fmt: skip
        new, head = got.get("seq"), got.get("head")
        removed, added = got.get("removed") or {}, got.get("added") or {}
        return Reverted(
            int(new) if new is not None else None,
            str(got.get("actor") or actor),
            int(got.get("since") or 0),
            int(got.get("until") or 0),
            [int(s) for s in got.get("reverts") or []],
            str(got["reason"]) if got.get("reason") else None,
            bool(got.get("dry_run")),
            int(head) if head is not None else None,
            tuple(_removed(got.get("removed_others"))),
            int(removed.get("characters") or 0),
            int(removed.get("items") or 0),
            int(added.get("characters") or 0),
            int(added.get("items") or 0),
            _kept(got.get("kept_containers")),
        )

    async def put_text(
        self, doc: str, text: str, root: str | None = None, base: int | None = None
    ) -> int | None:
        """Make the text root `root` equal `text` by the smallest edit, as this user (an
        undoable event of kind edit; the document is created if need be); returns its
        seq, or None when the text already was equal (or the edit changed nothing).
        Without `root`, the server picks as `palimpsest edit` does: `content` when the
        document has it or no root yet, else its one text root (BadRequest naming the
        roots when it has several, or none).

        `base`: the seq of the version `text` was derived from (a Version's ``seq``).
        With it the server makes the edit you made to that version and merges it with
        what others typed since, as a Yjs client would; without it the live text is
        overwritten, and what was typed since you read it is deleted. NotFound when
        `base` is past the head or was compacted away."""
        body: dict[str, Any] = {"text": text}
        if root is not None:
            body["root"] = root
        if base is not None:
            body["base"] = base
        answer = await self._json(
            "PUT", f"{_doc_path(doc)}/text", f"writing the text of {doc!r}", json=body
        )
        new = answer.get("seq")
        return int(new) if new is not None else None

    async def import_update(self, doc: str, update: bytes, source: str | None = None) -> int | None:
        """Append the Yjs v1 `update` to `doc` through the running server (admin only):
        one event of kind import, sent to the connected clients, whose Yjs client ids
        stay free for the tabs that wrote them elsewhere; `source` is kept in its meta.
        Returns its seq, or None when the document held all of it already. The update
        may be as large as the server's MAX_DOC_BYTES (a whole document); over it, or
        when the document would grow past it, TooLarge (413). Whole or not at all: after
        a lost connection, call it again (what the document holds is not logged twice)."""
        answer = await self._json(
            "POST", f"{_doc_path(doc)}/updates", f"importing an update into {doc!r}",
            params={"source": source}, content=update,
        )  # fmt: skip
        new = answer.get("seq")
        return int(new) if new is not None else None

    async def tags(self, doc: str) -> list[dict[str, Any]]:
        body = await self._json("GET", f"{_doc_path(doc)}/tags", f"listing tags of {doc!r}")
        return list(body.get("tags") or [])

    async def tag(
        self, doc: str, name: str, seq: int | None = None, *, move: bool = True
    ) -> list[dict[str, Any]]:
        """Name the version `seq` (the head by default); returns every tag of the doc. A
        name in use moves to `seq`, unless not `move`: then Refused (code 409) when it
        names another version, and nothing changes."""
        payload: dict[str, Any] = {"name": name}
        if seq is not None:
            payload["seq"] = seq
        if not move:
            payload["move"] = False
        body = await self._json("POST", f"{_doc_path(doc)}/tags", f"tagging {doc!r}", json=payload)
        return list(body.get("tags") or [])

    async def undo(self, doc: str) -> OpResult:
        """Undo the user's most recent change group (as over the websocket)."""
        return await self._op(doc, "undo", "undo")

    async def redo(self, doc: str) -> OpResult:
        return await self._op(doc, "redo", "redo")

    async def close_group(self, doc: str, group: str | None = None) -> OpResult:
        """End the user's current undo step, and their explicit undo group; with
        `group`, only that group, if it is still open (``steps``: the steps it made)."""
        return await self._op(doc, "undo/close", "close_group", {"group": group} if group else {})

    async def open_group(self, doc: str, group: str | None = None) -> OpResult:
        """Open an explicit undo group (docs/undo.md): the user's changes from now on,
        over any protocol, are one undo step until ``close_group``. ``group``: its id
        (the server makes one when not given; the answer's ``group``)."""
        return await self._op(doc, "undo/open", "open_group", {"group": group} if group else {})

    async def _op(
        self, doc: str, path: str, op: str, request: dict[str, Any] | None = None
    ) -> OpResult:
        what = f"{op} on {doc!r}"
        try:
            r = await self._http.post(f"{_doc_path(doc)}/{path}", json=request or {})
        except httpx.TimeoutException as e:
            raise Timeout(f"{what}: no answer from {self.url} ({e!r})") from e
        except httpx.TransportError as e:
            raise ServerGone(f"{what}: cannot reach {self.url}: {e}") from e
        try:
            body: Any = r.json()
        except ValueError:
            body = r.text
        # 409 {"ok": false, "reason"} is an answer ("nothing to undo"), not an error
        if r.status_code >= 400 and not (r.status_code == 409 and isinstance(body, dict)):
            raise from_http(r.status_code, body, what)
        if not isinstance(body, dict):
            raise from_http(502, f"expected a JSON object, got {body!r:.200}", what)
        return op_result(body)
