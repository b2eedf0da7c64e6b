"""History over HTTP: events, sessions, versions, diffs, blame, restore and tags; and a
text root written whole (PUT /text), which restore's smallest-change machinery serves.

Reads need the "read" role, restore and revert (and their dry runs) and PUT /text
"write" (not "edit": a collaborator typing may not take out others' work), creating or
deleting tags "admin".
Wherever a seq is accepted, a tag name or ``head`` is too. Documented in
docs/openapi.yaml and docs/history.md.
"""

from __future__ import annotations

import hashlib
import re
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import cpu_account
from ..auth import Identity
from ..auth.identity import user_name
from ..backend import Backend
from ..bounded_json import loads_bounded
from ..errors import BadRequest
from ..history import MAX_PAGE, SESSION_GAP_MS, History, history_of
from ..history.by_actor import MAX_ACTOR, by_actors
from ..history.joined import EVENT, JOINS, join_roots
from ..history.render import equal_as_counts
from ..history.sliced import json_bytes
from ..names import validate_doc_name
from ..params import check_body
from ..store.base import MAX_SEQ, DocInfo
from ..undo import revert as reverting
from ..util import iso, parse_iso


def _backend(request: Request) -> Backend:
    b: Backend = request.app.state.backend
    return b


async def _open(request: Request, need: str) -> tuple[History, str, str]:
    """(history service, doc name, acting user) after validating the name and the role."""
    history, doc, identity = await _open_as(request, need)
    return history, doc, identity.user


async def _open_as(request: Request, need: str) -> tuple[History, str, Identity]:
    """(history service, doc name, the acting identity), as `_open`."""
    backend = _backend(request)
    doc = validate_doc_name(request.path_params["doc"])
    identity = await backend.authenticate(request, doc, need)
    return history_of(backend), doc, identity


def _int(request: Request, name: str, default: int, lo: int = 0, hi: int = MAX_SEQ) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise BadRequest(f"?{name}= must be an integer, not {raw!r}") from e
    if not lo <= value <= hi:
        raise BadRequest(f"?{name}= must be between {lo} and {hi}, not {raw[:40]}")
    return value


def _ts(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    return parse_iso(raw) if raw else None


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = loads_bounded(raw, text_only=True)
    except ValueError as e:
        raise BadRequest(f"the body is not JSON: {str(e)[:200]}") from e
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    check_body(request, body)
    return body


async def events(request: Request) -> Response:
    history, doc, _ = await _open(request, "read")
    order = request.query_params.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise BadRequest(
            f"?order= is asc (oldest first) or desc (newest first), not {order[:20]!r}"
        )
    kinds = [k for raw in request.query_params.getlist("kind") for k in raw.split(",") if k] or None
    since, until = _ts(request, "since"), _ts(request, "until")
    if since is not None and until is not None and since > until:
        raise BadRequest("?since= is after ?until=")
    before = _int(request, "before", 0, 1) or None
    return JSONResponse(
        await history.events(
            doc,
            after=_int(request, "after", 0),
            limit=_int(request, "limit", 100, 1, MAX_PAGE),
            actor=_actor(request),
            since_ts=since,
            until_ts=until,
            kinds=kinds,
            before=before,
            desc=order == "desc",
        )
    )


async def sessions(request: Request) -> Response:
    history, doc, _ = await _open(request, "read")
    info = await history.info(doc)
    gap_s = _int(request, "gap", SESSION_GAP_MS // 1000, 1, 7 * 24 * 3600)
    return JSONResponse(
        await history.sessions(
            doc,
            info,
            gap_ms=gap_s * 1000,
            after=_int(request, "after", 0),
            limit=_int(request, "limit", 100, 1, MAX_PAGE),
            actor=_actor(request),
        )
    )


#: how long a browser keeps a version at a fixed seq without asking again (a document
#: deleted and written again under its name reuses its seqs: what a browser cached of
#: the old one may be shown for this long; revalidated, the ETag tells them apart)
IMMUTABLE_MAX_AGE = 24 * 3600
#: bumped when a version's rendering changes (the ETags of the old renderings then lapse)
RENDERING = "1"


async def _version_etag(history: History, doc: str, info: DocInfo, seq: int, fmt: str) -> str:
    """The ETag of the version at `seq` in `fmt`: what it is built from, and nothing
    the head moving on changes. Which document of its name it is (a name deleted and
    written again reuses seqs): DocInfo.made, its generation in the store (created_ts
    alone, in milliseconds, was the same for one written again within the same
    millisecond, whose versions were then answered 304 to a cache of the old ones);
    its compaction base (a purge
    rewrites what versions after it hold: their updates lose deleted content) and the
    rendering's own version."""
    base: tuple[int, str] = (0, "")
    if info.base_seq:
        base = await history.store.compaction_base(doc)
    key = "\0".join(map(str, (RENDERING, doc, *info.made, base[0], base[1], seq, fmt)))
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def _matches(request: Request, etag: str) -> bool:
    """Whether If-None-Match names `etag` (weakly compared, as RFC 9110 says for it)."""
    raw = request.headers.get("if-none-match")
    if not raw:
        return False
    tags = [t.strip().removeprefix("W/") for t in raw.split(",")]
    return "*" in tags or etag in tags


async def version(request: Request) -> Response:
    history, doc, _ = await _open(request, "read")
    info = await history.info(doc)
    ref = request.path_params.get("ref") or request.query_params.get("seq")
    at = request.query_params.get("at")
    if at:
        if ref:
            raise BadRequest("give a seq (or tag) or ?at=, not both")
        seq = await history.seq_at(doc, parse_iso(at), info)
    else:
        seq = await history.resolve(doc, ref, info)
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "tree", "update"):
        raise BadRequest(f"?format= is json, tree or update, not {fmt[:40]!r}")
    # a seq named by its number is that version for good; the head, a tag (it moves) and
    # a time (the head's until a later event) are revalidated, by the same ETag
    fixed = not at and isinstance(ref, str) and _SEQ.fullmatch(ref) is not None
    etag = await _version_etag(history, doc, info, seq, fmt)
    cache = f"private, max-age={IMMUTABLE_MAX_AGE}, immutable" if fixed else "private, no-cache"
    headers = {"ETag": etag, "Cache-Control": cache}
    if fmt == "update":
        headers["X-Palimpsest-Seq"] = str(seq)
    if _matches(request, etag):
        return Response(status_code=304, headers=headers)
    if fmt == "update":
        return Response(
            await history.version_update(doc, seq),
            media_type="application/octet-stream",
            headers=headers,
        )
    return JSONResponse(await history.version(doc, seq, tree=fmt == "tree"), headers=headers)


#: a seq written as its number (history.resolve refuses a sign, spaces are stripped)
_SEQ = re.compile(r"\s*[0-9]+\s*")


def _join(request: Request) -> str:
    """``?join=``: a run per event (as the index answers), or neighbours by the same
    actor joined (history.joined)."""
    join = request.query_params.get("join") or EVENT
    if join not in JOINS:
        raise BadRequest(f"?join= is {' or '.join(JOINS)}, not {join[:40]!r}")
    return join


#: why ?actor= leaves a root out of a diff
BY_ACTOR_LEFT_OUT = "?actor= keeps text and XML changes only: a map's or array's are nobody's"


def _actor(request: Request) -> str | None:
    """``?actor=`` of the event and session lists: one user (in NFC, as actors are
    written), or None for everyone."""
    actor = request.query_params.get("actor")
    return user_name(actor) if actor else None


def _actors(request: Request) -> list[str]:
    """``?actor=`` (repeated for several; empty values ignored): whose runs or ops a
    blame or diff keeps (history.by_actor); [] for everyone's. Taken to NFC, as actors
    are written (auth.identity.user_name)."""
    actors = [user_name(a) for a in request.query_params.getlist("actor") if a]
    for actor in actors:
        if len(actor) > MAX_ACTOR:
            raise BadRequest(
                f"?actor= is a user name of at most {MAX_ACTOR} characters, not {actor[:40]!r}..."
            )
    return list(dict.fromkeys(actors))


async def _shaped(
    join: str, actors: list[str], answer: dict[str, Any], *, diff: bool
) -> dict[str, Any]:
    """The answer, filtered to `actors` (if any) and joined as asked."""
    if join == EVENT and not actors:
        return answer
    roots = answer["roots"]
    if actors:
        # (a keystroke trace's blame is 100k runs: filtered and joined off the event loop)
        kept = await cpu_account.to_thread(partial(by_actors, diff=diff), roots, actors)
        answer = {**answer, "actors": actors}
        # a diff's maps and arrays: their ops are nobody's, so no writer's (said, not hidden)
        left = [
            {"root": n, "type": e.get("type"), "reason": BY_ACTOR_LEFT_OUT}
            for n, e in roots.items()
            if n not in kept
        ]
        if left:
            answer["not_attributed"] = [*answer.get("not_attributed", []), *left]
        roots = kept
    if join != EVENT:
        roots = await cpu_account.to_thread(join_roots, roots)
    return {**answer, "roots": roots}


async def diff(request: Request) -> Response:
    join, actors = _join(request), _actors(request)
    history, doc, _ = await _open(request, "read")
    info = await history.info(doc)
    q = request.query_params
    # by default from the oldest version kept: 0, or a compacted log's base (0 was a 404);
    # each a seq, a tag or a time (the version at it, as versions?at=)
    a = await history.resolve_or_time(doc, q.get("from") or str(info.base_seq), info)
    b = await history.resolve_or_time(doc, q.get("to") or "head", info)
    equal = q.get("equal") or "values"
    if equal not in ("values", "count"):
        raise BadRequest(f"?equal= must be values or count, not {equal[:20]!r}")
    answer = await history.diff(doc, a, b, info, q.get("root") or None)
    shaped = await _shaped(join, actors, answer, diff=True)
    if equal == "count":
        shaped = {**shaped, "roots": equal_as_counts(shaped["roots"])}
    return await _json(shaped)


async def blame(request: Request) -> Response:
    join, actors = _join(request), _actors(request)
    history, doc, _ = await _open(request, "read")
    info = await history.info(doc)
    q = request.query_params
    if q.get("at"):  # as versions?at= (it was ignored: the head's blame answered)
        if q.get("seq"):
            raise BadRequest("give a seq (or tag) or ?at=, not both")
        seq = await history.seq_at(doc, parse_iso(q["at"]), info)
    else:
        seq = await history.resolve(doc, q.get("seq") or "head", info)
    answer = await history.blame(doc, seq, info, q.get("root") or None, q.get("path") or None)
    return await _json(await _shaped(join, actors, answer, diff=False))


async def _json(answer: dict[str, Any]) -> Response:
    """A JSONResponse's body, encoded in slices on the event loop (history.sliced): a
    book's blame is 5 MB of JSON, ~0.15 s in one piece."""
    return Response(await json_bytes(answer), media_type="application/json")


async def restore(request: Request) -> Response:
    """Restore a version; with ``?dry_run=true``, only say what that would do."""
    history, doc, user = await _open(request, "write")
    dry_run = _flag(request, "dry_run")
    body = await _body(request)
    if body.get("seq") in (None, ""):
        raise BadRequest(
            'the body must name the version to restore: {"seq": N} or {"seq": "TAG NAME"}'
        )
    info = await history.info(doc)
    seq = await history.resolve(doc, body["seq"], info)
    if dry_run:
        head, would = await history.restore_preview(doc, user, seq)
        answer: dict[str, Any] = {"seq": None, "restores": seq, "dry_run": True, "head": head}
        if would is None:
            return JSONResponse({**answer, "reason": "already equal"})
        return JSONResponse({**answer, **would.answer(user)})
    ev, did = await history.restore(doc, user, seq)
    if ev is None:
        return JSONResponse({"seq": None, "restores": seq, "reason": "already equal"})
    return JSONResponse({"seq": ev.seq, "restores": seq, "ts": iso(ev.ts), **did.answer(user)})


async def revert(request: Request) -> Response:
    """Take out one writer's changes since a version (their insertions deleted, what they
    deleted brought back), keeping everybody else's; ``?dry_run=true``: only say what
    that would do. The "write" role, as restore, which takes out more (everybody's
    later text): see docs/history.md."""
    history, doc, user = await _open(request, "write")
    dry_run = _flag(request, "dry_run")
    body = await _body(request)
    writer = body.get("actor")
    if not isinstance(writer, str) or not 0 < len(writer) <= MAX_ACTOR:
        raise BadRequest(
            "the body must name the writer whose changes to revert and since which version: "
            '{"actor": "s06", "since": N or "TAG NAME"}'
        )
    writer = user_name(writer)
    if body.get("since") in (None, ""):
        raise BadRequest('the body must name the version to revert since: {"since": N}')
    if body.get("until") == "":
        raise BadRequest('"until" is a seq or a tag name (leave it out, or null, for the head)')
    info = await history.info(doc)
    since = await history.resolve(doc, body["since"], info)
    until = await history.resolve(doc, body.get("until"), info)
    if until < since:
        raise BadRequest(f'"until" ({until}) is before "since" ({since})')
    said: dict[str, Any] = {"actor": writer, "since": since, "until": until}
    backend = _backend(request)
    if dry_run:
        would = await reverting.preview(backend, doc, user, writer, since, until)
        answer: dict[str, Any] = {"seq": None, **said, "dry_run": True, "head": would.head,
                                  "reverts": would.did.seqs}  # fmt: skip
        if would.change is None:
            return JSONResponse({**answer, "reason": "nothing to revert"})
        return JSONResponse({**answer, **would.answer(user)})
    did = await reverting.revert(backend, doc, user, writer, since, until)
    if did.event is None:
        return JSONResponse(
            {"seq": None, **said, "reverts": did.did.seqs, "reason": "nothing to revert"}
        )
    ev = did.event
    return JSONResponse(
        {"seq": ev.seq, **said, "reverts": did.did.seqs, "ts": iso(ev.ts), **did.answer(user)}
    )


def _flag(request: Request, name: str) -> bool:
    """``?name=true`` or ``false`` (``1``, ``0``; empty or absent: false)."""
    raw = (request.query_params.get(name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest(f"?{name}= must be true or false, not {raw[:20]!r}")
    return raw in ("true", "1")


#: the longest root name PUT /text accepts
MAX_ROOT_NAME = 128


async def put_text(request: Request) -> Response:
    """PUT a text root's whole new content; the server writes the smallest change."""
    history, doc, identity = await _open_as(request, "write")
    body = await _body(request)
    text, root = body.get("text"), body.get("root")
    if not isinstance(text, str):
        raise BadRequest('the body must hold the new text: {"text": "...", "root": "content"}')
    if root is not None and (not isinstance(root, str) or not 0 < len(root) <= MAX_ROOT_NAME):
        raise BadRequest(f'"root" must be a name of 1 to {MAX_ROOT_NAME} characters')
    base = body.get("base")
    if isinstance(base, float) and base.is_integer():
        base = int(base)  # JSON's 12.0 is the integer 12
    if base is not None and (isinstance(base, bool) or not isinstance(base, int)):
        raise BadRequest(
            '"base" must be the seq of the version the text was derived from (an integer)'
        )
    if base is not None and not 0 <= base <= MAX_SEQ:
        raise BadRequest(f'"base" must be a seq from 0, not {str(base)[:24]}')
    if root is None:  # the document's own text root, as the CLI's edit picks it
        root = await history.default_text_root(doc)
    ev = await history.put_text(doc, identity.user, root, text, creator=identity, base=base)
    if ev is None:
        return JSONResponse({"seq": None, "root": root, "reason": "already equal"})
    return JSONResponse({"seq": ev.seq, "root": root, "ts": iso(ev.ts)})


def _move(body: dict[str, Any]) -> bool:
    """``"move"``: whether naming a version with a name in use moves the tag (true, by
    default, as always) or is refused (false: 409)."""
    move = body.get("move")
    if move is None:
        return True
    if not isinstance(move, bool):
        raise BadRequest('"move" must be true (a name in use moves) or false (409 then)')
    return move


async def tags(request: Request) -> Response:
    if request.method == "POST":
        history, doc, user = await _open(request, "admin")
        body = await _body(request)
        tag, created = await history.put_tag_created(
            doc, body.get("name"), body.get("seq"), user, _move(body)
        )
        # 201 for a new name; 200 for one there already (moved, or naming that version)
        status = 201 if created else 200
        return JSONResponse({"tag": tag, "tags": await history.tags(doc)}, status_code=status)
    history, doc, _ = await _open(request, "read")
    await history.info(doc)
    if _flag(request, "history"):
        # the deleted tags' changes too: names a reader could not ask for one by one
        return JSONResponse({"tags": await history.tags(doc),
                             "history": await history.tag_history(doc)})  # fmt: skip
    return JSONResponse({"tags": await history.tags(doc)})


async def tag_history(request: Request) -> Response:
    """Where the tag has pointed: its creations, moves and deletions, oldest first."""
    history, doc, _ = await _open(request, "read")
    name = request.path_params["name"]
    moves = await history.tag_history(doc, name)
    return JSONResponse({"name": moves[-1]["name"], "history": moves})


async def one_tag(request: Request) -> Response:
    """PUT names a version (body {"seq"}, head by default; {"move": false}: not a name in
    use); DELETE removes the name."""
    history, doc, user = await _open(request, "admin")
    name = request.path_params["name"]
    if request.method == "PUT":
        body = await _body(request)
        tag = await history.put_tag(doc, name, body.get("seq"), user, _move(body))
        return JSONResponse({"tag": tag, "tags": await history.tags(doc)})
    deleted = await history.delete_tag(doc, name, user)
    return JSONResponse({"deleted": deleted, "tags": await history.tags(doc)})


routes = [
    Route("/api/docs/{doc}/events", events),
    Route("/api/docs/{doc}/sessions", sessions),
    Route("/api/docs/{doc}/versions", version),
    Route("/api/docs/{doc}/versions/{ref}", version),
    Route("/api/docs/{doc}/diff", diff),
    Route("/api/docs/{doc}/blame", blame),
    Route("/api/docs/{doc}/restore", restore, methods=["POST"]),
    Route("/api/docs/{doc}/revert", revert, methods=["POST"]),
    Route("/api/docs/{doc}/text", put_text, methods=["PUT"]),
    Route("/api/docs/{doc}/tags", tags, methods=["GET", "POST"]),
    Route("/api/docs/{doc}/tags/{name}", one_tag, methods=["PUT", "DELETE"]),
    Route("/api/docs/{doc}/tags/{name}/history", tag_history),
]
