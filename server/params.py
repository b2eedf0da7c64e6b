"""What each HTTP API route takes: its query parameters and its JSON body's keys, and
nothing else.

A key the server does not read was ignored, and an ignored key can destroy data: a
teacher's ``POST /api/docs/D/revert`` with ``"dry_run": true`` in the JSON body (it is a
query parameter) really reverted, and ``POST /api/docs/D/undo?user=s05`` (or
``{"actor": "s05"}``) ran the caller's own undo. So every API route refuses, with a 400
that names the key and lists the ones it takes, a query parameter or a body key it does
not read; a key given in the wrong place (``dry_run`` in the body, ``since`` in the
query) is told where it goes. ``GET /api/docs`` did this already (routes/docs.py).

The table is checked against docs/openapi.yaml by tests/test_route_params.py, so the
spec and the server list the same parameters. The checks run in
``Backend.authenticate`` (every API route calls it, after the router has set the
route on the scope) once the caller is known, so that a stranger learns nothing from
a 400 that a 401 would not have told them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection, Request

from .bounded_json import loads_bounded
from .errors import BadRequest

#: query parameters any route takes: the credentials the built-in authenticators read
#: (JWT ``?token=``, open mode's ``?user=``)
CREDENTIALS = ("token", "user")


@dataclass(frozen=True)
class Takes:
    """What a route reads. `body` None: no body at all (an empty one, or ``{}``, is
    let through); a tuple: a JSON object with these keys at most."""

    query: tuple[str, ...] = ()
    body: tuple[str, ...] | None = None


#: (method, path template) -> what the route takes (docs/openapi.yaml says the same)
TAKES: dict[tuple[str, str], Takes] = {
    ("GET", "/api/docs"): Takes(("prefix", "after", "limit", "sort")),
    ("GET", "/api/me"): Takes(),
    ("DELETE", "/api/docs/{doc}"): Takes(),
    ("GET", "/api/docs/{doc}/lock"): Takes(),
    ("PUT", "/api/docs/{doc}/lock"): Takes(body=("reason",)),
    ("DELETE", "/api/docs/{doc}/lock"): Takes(),
    ("POST", "/api/docs/{doc}/compact"): Takes(body=("before", "purge_deleted")),
    ("GET", "/api/docs/{doc}/events"): Takes(
        ("after", "before", "order", "limit", "actor", "since", "until", "kind")
    ),
    ("GET", "/api/docs/{doc}/versions"): Takes(("at", "seq", "format")),
    ("GET", "/api/docs/{doc}/versions/{ref}"): Takes(("format",)),
    ("GET", "/api/docs/{doc}/sessions"): Takes(("gap", "actor", "after", "limit")),
    ("GET", "/api/docs/{doc}/diff"): Takes(("from", "to", "root", "equal", "join", "actor")),
    ("GET", "/api/docs/{doc}/blame"): Takes(("seq", "at", "root", "path", "join", "actor")),
    ("GET", "/api/docs/{doc}/tags"): Takes(("history",)),
    ("POST", "/api/docs/{doc}/tags"): Takes(body=("name", "seq", "move")),
    ("PUT", "/api/docs/{doc}/tags/{name}"): Takes(body=("seq", "move")),
    ("DELETE", "/api/docs/{doc}/tags/{name}"): Takes(),
    ("GET", "/api/docs/{doc}/tags/{name}/history"): Takes(),
    ("POST", "/api/docs/{doc}/restore"): Takes(("dry_run",), ("seq",)),
    ("POST", "/api/docs/{doc}/revert"): Takes(("dry_run",), ("actor", "since", "until")),
    # a Yjs update (bytes): its body is not JSON, and is read by the route only
    ("POST", "/api/docs/{doc}/updates"): Takes(("source",)),
    ("PUT", "/api/docs/{doc}/text"): Takes(body=("text", "root", "base")),
    ("POST", "/api/docs/{doc}/undo"): Takes(),
    ("POST", "/api/docs/{doc}/redo"): Takes(),
    ("POST", "/api/docs/{doc}/undo/open"): Takes(body=("group",)),
    ("POST", "/api/docs/{doc}/undo/close"): Takes(body=("group",)),
    ("GET", "/api/docs/{doc:path}/events/stream"): Takes(("after", "updates")),
    ("GET", "/api/events/stream"): Takes(("after", "updates")),
    ("GET", "/api/webhooks"): Takes(),
    ("POST", "/api/webhooks/{hook}/{action:str}"): Takes(),
    ("GET", "/api/revocations"): Takes(),
    ("POST", "/api/revocations/{user:path}"): Takes(),
    ("DELETE", "/api/revocations/{user:path}"): Takes(),
}

#: what an unknown parameter of a route was probably meant for
HINTS = {
    (("GET", "/api/events/stream"), "doc"): (
        "the global stream has no ?doc= filter: follow one document at "
        "/api/docs/{doc}/events/stream"
    ),
}

#: the methods whose routes' unwanted bodies are refused
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: the route whose body is bytes (a Yjs update), read by the route once it is let in
_BYTES = frozenset({("POST", "/api/docs/{doc}/updates")})
#: in token mode a write to a document acts as the token's user: ``?user=`` naming
#: another is refused
#: (a teacher's ``undo?user=s05`` ran the teacher's own undo); the undo routes' names
_ACTS = {
    "/api/docs/{doc}/undo": "undo",
    "/api/docs/{doc}/redo": "redo",
    "/api/docs/{doc}/undo/open": "undo/open",
    "/api/docs/{doc}/undo/close": "undo/close",
}


#: a name an extension may declare in ``Extension.takes_query``: ASCII letters first,
#: then letters, digits, ``_``, ``-`` and ``.``, 64 at most (``api_key``, ``x-tenant``)
_QUERY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")


def core_names() -> frozenset[str]:
    """Every name the core reads from a request: the routes' query parameters and body
    keys (TAKES), the credentials, and the names HINTS answers. An extension taking one
    of them on every route would cancel that route's guard: ``?dry_run=`` taken for an
    extension, ``DELETE /api/docs/D?dry_run=true`` deleted for real; a body key, it
    would no longer be told it goes in the body, and was ignored."""
    names: set[str] = set(CREDENTIALS)
    for takes in TAKES.values():
        names.update(takes.query)
        names.update(takes.body or ())
    names.update(name for _route, name in HINTS)
    return frozenset(names)


def declared_query(owner: str, value: object) -> tuple[str, ...]:
    """An extension's ``takes_query`` (`owner`: how errors name it), checked when the
    app is built: a tuple, list or set of plausible parameter names that no core route
    reads. TypeError or ValueError saying what is wrong: a plain string was taken
    letter by letter, and a core route's own name cancelled its unknown-parameter
    guard on every route."""
    what = f"{owner}.takes_query"
    if not isinstance(value, (tuple, list, set, frozenset)):
        hint = f" (write ({value!r},) for one name)" if isinstance(value, str) else ""
        raise TypeError(
            f"{what} must be a tuple, list or set of query parameter names, not "
            f"{type(value).__name__} {str(value)[:80]!r}{hint}"
        )
    names = tuple(value)
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise TypeError(
            f"{what} must hold strings only, not {', '.join(repr(w)[:40] for w in wrong[:5])}"
        )
    bad = [n for n in names if not _QUERY_NAME.fullmatch(n)]
    if bad:
        raise ValueError(
            f"{what}: {_quoted(bad)} is not a query parameter name (an ASCII letter, then "
            "up to 63 letters, digits, _ . -)"
        )
    core = sorted(set(names) & core_names())
    if core:
        raise ValueError(
            f"{what} claims {_quoted(core)}, which Palimpsest reads itself (a route's query "
            "parameter or body key, or the credentials token and user): taken on every "
            "route, it would cancel their refusal of parameters they do not take "
            "(?dry_run=true on DELETE /api/docs/{doc} would delete for real). Give the "
            "extension's parameter a name of its own (api_key, x_tenant, ...)"
        )
    return tuple(dict.fromkeys(names))


def _listed(names: tuple[str, ...] | None) -> str:
    return ", ".join(names) if names else "none"


def _and(names: tuple[str, ...] | list[str]) -> str:
    """Names joined as a sentence lists them: "a", "a and b", "a, b and c"."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _takes(what: str, names: tuple[str, ...]) -> str:
    """What a route takes of one kind, as a 400 says it: "the query parameter at", "the
    body keys actor, since and until"; "no query parameters" for none."""
    if not names:
        return f"no {what}s"
    return f"the {what}{'s' if len(names) > 1 else ''} {_and(names)}"


def _quoted(keys: list[str]) -> str:
    return ", ".join(repr(k[:40]) for k in keys[:5])


def route_of(conn: HTTPConnection) -> tuple[str, str] | None:
    """(method, path template) of an HTTP request the router has matched; None for a
    websocket, or a route not in the table (an extension's own)."""
    if conn.scope.get("type") != "http":
        return None
    path = getattr(conn.scope.get("route"), "path", None)
    key = (str(conn.scope.get("method", "")), str(path))
    return key if key in TAKES else None


def everywhere(extra: tuple[str, ...] = (), too: bool = True) -> str:
    """What a 400 says every route takes besides its own parameters: the credentials
    and the extensions' own (``Extension.takes_query``); `too` after a list of the
    route's own."""
    names = list(dict.fromkeys((*CREDENTIALS, *extra)))
    return f"; every route takes {_and(names)}" + (" too" if too else "")


def check_query(conn: HTTPConnection, extra: tuple[str, ...] = ()) -> None:
    """400 for a query parameter the route does not take (`extra`: those every route
    takes for the extensions, Extensions.takes_query)."""
    key = route_of(conn)
    if key is None:
        return
    takes = TAKES[key]
    unknown = sorted(
        set(conn.query_params.keys()) - set(takes.query) - set(CREDENTIALS) - set(extra)
    )
    if not unknown:
        return
    where = f"{key[0]} {key[1]}"
    for name in unknown:
        if (key, name) in HINTS:
            raise BadRequest(HINTS[(key, name)])
    misplaced = [u for u in unknown if u in (takes.body or ())]
    if misplaced:
        raise BadRequest(
            f"{_quoted(misplaced)} goes in the JSON body, not the query: {where} takes "
            f"{_takes('body key', takes.body or ())} and {_takes('query parameter', takes.query)}"
        )
    # (it read "takes the query parameters none; every route takes token, user too")
    own = (
        _takes("query parameter", takes.query) if takes.query else "no query parameters of its own"
    )
    raise BadRequest(
        f"unknown query parameter {_quoted(unknown)}: {where} takes {own}"
        + (f" and {_takes('body key', takes.body)}" if takes.body else "")
        + everywhere(extra, too=bool(takes.query))
    )


def check_body(conn: HTTPConnection, body: dict[str, Any]) -> None:
    """400 for a key of a route's JSON body that it does not read."""
    key = route_of(conn)
    if key is None:
        return
    takes = TAKES[key]
    unknown = sorted(set(body) - set(takes.body or ()))
    if not unknown:
        return
    where = f"{key[0]} {key[1]}"
    misplaced = [u for u in unknown if u in takes.query]
    if misplaced:
        example = "?" + "&".join(f"{m}=true" if m == "dry_run" else f"{m}=..." for m in misplaced)
        raise BadRequest(
            f"{_quoted(misplaced)} is a query parameter, not a body key: {where}{example} "
            f"(the body takes {_listed(takes.body)}); nothing was done"
        )
    if takes.body is None:
        raise BadRequest(
            f"{where} takes no body, not the keys {_quoted(unknown)} "
            f"(query parameters: {_listed(takes.query)}); nothing was done"
        )
    raise BadRequest(
        f"unknown body key {_quoted(unknown)}: {where} takes the body keys "
        f"{_listed(takes.body)} (query parameters: {_listed(takes.query)}); nothing was done"
    )


async def check_request(
    conn: HTTPConnection, user: str, is_open: bool, extra: tuple[str, ...] = ()
) -> None:
    """The query's parameters, ``?user=`` of a route that acts as the token's user, and
    the body of a write route that takes none (the routes that take one check theirs
    as they parse it: check_body). `extra`: the query parameters every route takes for
    the extensions."""
    key = route_of(conn)
    if key is None:
        return
    check_query(conn, extra)
    named = conn.query_params.get("user")
    if (
        not is_open
        and key[0] in _WRITES
        and key[1].startswith("/api/docs/{doc}")  # (an admin route's own checks first)
        and named is not None
        and unicodedata.normalize("NFC", named) != user
    ):
        what = _ACTS.get(key[1], f"{key[0]} {key[1]}")
        raise BadRequest(
            f"?user={named[:40]!r} is not the token's user ({user[:40]!r}): {what} acts for "
            "the token's user only, and nothing was done. To take out another user's "
            'changes, POST /api/docs/{doc}/revert {"actor": "NAME", "since": VERSION}'
        )
    if (
        key[0] in _WRITES
        and TAKES[key].body is None
        and key not in _BYTES
        and isinstance(conn, Request)
    ):
        raw = await conn.body()
        if not raw.strip():
            return
        try:
            body = loads_bounded(raw, text_only=True)
        except (ValueError, json.JSONDecodeError) as e:
            raise BadRequest(f"the body is not JSON: {str(e)[:200]}") from e
        if not isinstance(body, dict):
            raise BadRequest(f"{key[0]} {key[1]} takes no body")
        check_body(conn, body)
