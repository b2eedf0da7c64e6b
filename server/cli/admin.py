"""Admin commands that work on the store directly: export, import, snapshot, inspect,
verify, compact, delete, rename-actor, restamp, lock, revoke.

They are meant for a stopped server, or for documents no server has open (compact may
run beside one: its help says so, with its own note). What happens when one does
(SQLite in WAL mode and PostgreSQL both allow it):

- export, inspect, verify only read: always safe (a SQLite file is opened read-only and
  left byte for byte as it was, its -wal too);
- import appends one event; a server that has the document open reads it at its next
  commit (or fan-out gap check) and its clients see it then (``import --url`` goes
  through the running server instead: its clients see it at once);
- snapshot writes a checkpoint equal to the log at its seq: harmless, like the server's;
- compact only touches events at or below --before, which never change, so a moving head
  is harmless; a named version below --before is refused (it would stop rendering);
- delete removes the document under a server that has it open, which would keep writing
  into a fresh log: use ``DELETE /api/docs/DOC`` on a running server instead;
- rename-actor refuses to run while any server serves the store (their memory holds the
  old name: symbol caches, undo stacks, owners), and holds the serving lock meanwhile;
- restamp likewise (their memory holds the old stamps: the tail rows they seal from,
  their rooms' undo stacks), fan-out bus or not; --dry-run only reads;
- lock (and --unlock) without --fanout refuses while a server serves the store (it
  would not hear of it: a room open there took the lock only when it loaded again,
  after edits logged past the lock event, an unlock never), holding the serving lock
  meanwhile; with --fanout the running servers are told through their bus (refused
  too while one serves it without a bus).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import pseudonym, subdoc_options
from ..auth.identity import USER_NAME_RULE, user_name, valid_user_name
from ..checkpoint import Checkpoints
from ..deletion import missing, tombstone_for
from ..errors import ActorTaken, Deleted, PalimpsestError, StoreError, StoreUnavailable
from ..fanout import (
    publish_deleted,
    publish_events,
    publish_purged,
    publish_revocation,
    store_deployment,
)
from ..history.service import tag_key
from ..known import KnownDeletions, adds_anything
from ..locking import LOCK_KIND, UNLOCK_KIND
from ..maintenance import (
    CompactedWithoutStacks,
    MaintenanceError,
    RestampPlan,
    as_update,
    compact_doc,
    events,
    import_data,
    plan_compact,
    plan_restamp,
    rendered,
    require,
    restamp_doc,
    verify_doc,
)
from ..names import validate_doc_name
from ..revocation import REVOCABLE_RULE, revocable, revoke_in_store, revoked_json
from ..room import EMPTY_UPDATE
from ..serving_lock import not_served, pg_not_served, pg_served_alone, served_alone
from ..snapshots import load
from ..store import EventStore, open_store
from ..store.base import MAX_AHEAD_MS, NewEvent, Restamped, TagMove, now_ms
from ..store.doc_locks import DocLock, reason_problem
from ..store.sqlite import SQLiteStore
from ..util import LocalTimeError, iso, parse_iso, with_local_offset
from . import (
    add_store_options,
    bulk,
    not_a_store,
    settings_from,
    setup_logging,
)

LIVE_NOTE = (
    "Meant for a stopped server or for documents no server has open (see docs/operations.md)."
)

#: compact's own note: it may run beside a server that has the document open
COMPACT_LIVE_NOTE = (
    "May run beside a running server, SQLite or PostgreSQL: it touches only events at or "
    "below --before, which never change. A server with the document open notices the new "
    "base within its COMPACTION_CHECK_SECONDS (1 s) and reloads the room: its clients "
    "reconnect at once and their providers send what they typed meanwhile, so nothing "
    "is lost. On SQLite the server's commits wait for the compaction's write "
    "transaction. POST /api/docs/DOC/compact on the server itself keeps the room open "
    "(without purge) (see docs/operations.md)."
)


#: the commands that only read: on SQLite they open the file read-only
READ_ONLY = frozenset({"export", "inspect", "verify", "ls"})


class AdminError(Exception):
    """A refusal or failure of an admin command: printed, exit status 1."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def add(
        name: str, help: str, description: str, func: Callable[..., Any], note: str = LIVE_NOTE
    ) -> Any:
        p = sub.add_parser(
            name,
            help=help,
            description=f"{description} {note}",
        )
        add_store_options(p)
        p.set_defaults(func=lambda args: _run(name, func, args))
        return p

    p = add("export", "print a document (or a past version of it)",
            "Print the document at its head, or at --seq, as text, JSON or a Yjs update.",
            export)  # fmt: skip
    p.description += (
        " Several documents (DOC..., --prefix, - for names on stdin) in one run go into "
        "the directory -o names, a file each: NAME.txt, NAME.xml, NAME.json or NAME.yjs by "
        "--format "
        "(`import-from dir` reads the .yjs and .txt back)."
    )
    bulk.add_doc_options(p, "export")
    version = p.add_mutually_exclusive_group()
    version.add_argument("--seq", type=int, help="the version to export (default: the head)")
    version.add_argument("--tag", help="the version a tag names (as `cat --tag`)")
    version.add_argument("--at", metavar="TIME",
                         help="the version at a time, ISO 8601: the last event at or before "
                         "it, as `cat --at` reads it (without an offset: this machine's local "
                         "time, TZ)")  # fmt: skip
    p.add_argument("--format", choices=["text", "xml", "json", "update"], default="text",
                   help="text: the text and XML roots, an XML root (Tiptap's, Lexical's) "
                   "as its readable text, a line per paragraph (a document with neither: "
                   "its roots as JSON, as cat prints them); xml: as text, but an XML root "
                   "as its XML string, every element and attribute, as Yjs writes it; "
                   "json: every root with its type; update: the Yjs v1 update (binary) "
                   "(default text)")  # fmt: skip
    p.add_argument("-o", "--out", help="write to this file instead of stdout; with several "
                   "documents, the directory to write them into (made if missing)")  # fmt: skip

    p = add("import", "append a Yjs update or a text file to a document",
            "Append FILE as one event of kind 'import': a Yjs v1 update (from export "
            "--format update, or any Yjs app), or plain UTF-8 text, which becomes the text "
            "root of a document that has no events yet. The Yjs client ids the update "
            "carries stay free for the tabs that wrote them elsewhere.", import_)  # fmt: skip
    p.description += (
        " Into a running server, give --url: the update then goes through it (POST "
        "/api/docs/DOC/updates, admin role, up to the server's MAX_DOC_BYTES, whole or "
        "not at all), and its clients get it at once."
    )
    p.set_defaults(func=_import_command)
    p.add_argument("doc", metavar="DOC")
    p.add_argument("file", metavar="FILE", help="the update or text file ('-' for stdin)")
    p.add_argument("--user", default="admin",
                   help="actor of the event (default admin); with --url, the user of open "
                   "mode (a token names its own)")  # fmt: skip
    p.add_argument("--root", default="content", help="text root for plain text (default content)")
    p.add_argument("--text", action="store_true", help="treat FILE as text even if it decodes")
    p.add_argument("--url", help="a running server to import through (http://host:port); "
                   "the store options are then not used")  # fmt: skip
    p.add_argument("--token", default=os.environ.get("PALIMPSEST_TOKEN"),
                   help="with --url: an admin token (env PALIMPSEST_TOKEN)")  # fmt: skip

    p = add("snapshot", "force a checkpoint of a document",
            "Load the document (snapshot + tail) and write a snapshot at its head, with the "
            "undo stacks the server keeps with snapshots.", snapshot)  # fmt: skip
    p.add_argument("doc", metavar="DOC")

    p = add("inspect", "show a document's head, snapshots, sizes, tags (and their last "
            "changes) and actors",
            "Show what the store holds for a document.", inspect)  # fmt: skip
    p.add_argument("doc", metavar="DOC")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("verify", "re-fold every log and compare it with its snapshots",
            "For every document (or each DOC given), fold the log from its start (or its "
            "compaction base) and compare the result with every snapshot: state vectors and "
            "rendered content must match and checksums must hold; seqs must be gap-free and "
            "every event must apply; tags must point into the log. Exits 1 on any problem.",
            verify)  # fmt: skip
    p.add_argument("docs", metavar="DOC", nargs="*", help="only these documents")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"ok", "documents", "problems"}; no progress '
                   "bars")  # fmt: skip
    p.add_argument("--allow-empty", action="store_true",
                   help="a database that holds no document passes (a fresh install); "
                   "without it, that fails: a backup copied wrongly is empty")  # fmt: skip

    p = add("compact", "fold old events into a base snapshot (explicit retention)",
            "Fold events 1..SEQ (or up to TIME) into a base snapshot and delete them. The "
            "document at every later seq stays identical; versions before the base are gone "
            "from history. Named versions pin history: a --before past a tag is refused. "
            "Refuses to run without --yes. Several documents (DOC..., --prefix, - for "
            "names on stdin) are compacted in one run, each up to --before.",
            compact, COMPACT_LIVE_NOTE)  # fmt: skip
    bulk.add_doc_options(p, "compact")
    p.add_argument("--before", required=True,
                   help="a seq, a tag name, or an ISO-8601 time (the last seq at or "
                   "before it); a time without an offset is this machine's local time "
                   "(TZ), as `date` reads it")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="really delete the old events")
    p.add_argument("--purge-deleted", action="store_true",
                   help="write the base with the content of deleted items removed (Yjs "
                   "garbage collection): text deleted before the base is gone from history, "
                   "undo and every reader; at the current base, purges it as it stands. "
                   "On a running server prefer POST /api/docs/DOC/compact")  # fmt: skip
    p.add_argument("--fanout", help="with --purge-deleted: tell the servers on this Redis "
                   "fan-out to reload the document (env PALIMPSEST_FANOUT)")  # fmt: skip

    p = add("delete", "delete a document: its events, snapshots and tags",
            "Delete a document from the store, for good. Refuses to run without --yes. "
            "On a running server prefer DELETE /api/docs/DOC. Several documents (DOC..., "
            "--prefix, - for names on stdin) are deleted in one run.", delete)  # fmt: skip
    bulk.add_doc_options(p, "delete")
    p.add_argument("--yes", action="store_true", help="really delete it")
    p.add_argument("--user", default="admin",
                   help="who deleted it, as the changefeed's deletion record says (default "
                   "admin)")  # fmt: skip
    p.add_argument("--fanout", help="tell the servers on this Redis fan-out at once "
                   "(env PALIMPSEST_FANOUT; else they notice from the store)")  # fmt: skip

    p = add("rename-actor", "rename a user everywhere in the store (pseudonymise them)",
            "Rename actor OLD to NEW in every document: the events they wrote, tags, "
            "the undo stacks and client-id owners kept in snapshots (compaction bases "
            "too); their stored attribution indexes are dropped (rebuilt on demand). The "
            "old name's bytes are scrubbed from the file (SQLite: secure_delete, "
            "checkpoint, VACUUM; PostgreSQL: VACUUM FULL of the tables rewritten). OLD is "
            "taken as written (it may name an actor stored in another Unicode normal form "
            "than NFC); NEW is taken to NFC, as every user name is, and must not be an "
            "actor already (no merge). Every server on the store must be "
            "stopped: refused while one serves it. Refuses to run without --yes.",
            rename_actor)  # fmt: skip
    p.add_argument("old", metavar="OLD", help="the actor (a token's user, `sub`) to rename")
    p.add_argument("new", metavar="NEW", type=user_name,
                   help="the name they get (a pseudonym)")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="really rename")
    p = add("restamp", "pull back a document's events stamped far in the future",
            "When DOC's last event is stamped more than 15 minutes ahead of this "
            "machine's clock (a server whose clock was set ahead wrote it, and every event "
            "after it kept that ts), give its events stamped after now new ts: the first "
            "one the ts of the event before it + 1 ms, the others as far after that as "
            "they were after the first, none later than now; the tags and snapshots "
            "stamped in that span, and the times snapshots keep (undo stacks' last "
            "changes, a compaction base's time), likewise; all in one transaction. Every "
            "server on the store must be stopped: refused while one serves it (its memory "
            "keeps the old stamps). --dry-run only says what it would change.",
            restamp)  # fmt: skip
    p.add_argument("doc", metavar="DOC")
    p.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output (one object)")
    p = sub.add_parser(
        "lock", help="lock a document read-only (or --unlock it, or --list the locked)",
        description="Lock DOC read-only in the store: every edit of it is refused (the "
        "websocket clients stay connected and receive; HTTP writes get 423) until it is "
        "unlocked; the lock and the unlock are events of its history. For a stopped "
        "server, or with --fanout, which tells the running servers at once. It refuses "
        "(exit status 1) while a server serves the store without a fan-out bus: that "
        "server would not hear of it; PUT or DELETE /api/docs/DOC/lock on it does the "
        "same.",
    )  # fmt: skip
    add_store_options(p)
    p.set_defaults(func=lambda args: _run("lock", lock, args))
    p.add_argument("doc", metavar="DOC", nargs="?", help="the document")
    p.add_argument("--reason", default="", help="why (shown to the clients refused)")
    p.add_argument(
        "--by", metavar="NAME", type=_lock_by, default=LOCK_ACTOR,
        help="who locks (or unlocks) it: the lock's `by`, which the clients refused are "
        f"told, and the actor of its event (default {LOCK_ACTOR!r})",
    )  # fmt: skip
    p.add_argument("--unlock", action="store_true", help="unlock DOC")
    p.add_argument("--list", action="store_true", help="list the locked documents (JSON lines)")
    p.add_argument("--fanout", help="tell the servers on this Redis fan-out at once "
                   "(env PALIMPSEST_FANOUT)")  # fmt: skip
    p = sub.add_parser(
        "revoke", help="revoke a user now: their tokens issued before now are refused",
        description="Revoke USER in the store: the servers refuse their tokens issued "
        "before now (or without iat) and close their open connections (4401), at once "
        "with --fanout, else within 5 s (they read the store again). --lift lets their "
        "tokens in again; --list shows who is revoked. On a running server, POST or "
        "DELETE /api/revocations/USER does the same.",
    )  # fmt: skip
    add_store_options(p)
    p.set_defaults(func=lambda args: _run("revoke", revoke, args))
    p.add_argument("user", metavar="USER", nargs="?", type=user_name,
                   help="the user (a token's sub; taken to Unicode NFC, as subs are)")  # fmt: skip
    p.add_argument("--lift", action="store_true", help="lift USER's revocation")
    p.add_argument("--list", action="store_true", help="list the revoked users")
    p.add_argument("--fanout", help="tell the servers on this Redis fan-out at once "
                   "(env PALIMPSEST_FANOUT; else they read it from the store)")  # fmt: skip


def _run(
    name: str, func: Callable[[EventStore, argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
) -> int:  # fmt: skip
    settings = settings_from(args)
    args.settings = settings
    # the commands print their own results; the core's log lines would only be noise here
    # (e.g. the open-mode warning of the Backend that `snapshot` builds), errors still show
    setup_logging("error")

    async def main() -> int:
        # refuses a URL of no store we know; the commands that only read leave a SQLite
        # file byte for byte as they found it (a backup's sha256 holds)
        store = open_store(settings.store_url, read_only=name in READ_ONLY)
        if name not in ("import", "import-from"):  # the others need a store that is one
            problem = await not_a_store(store, settings.store_url)
            if problem:
                raise AdminError(problem)
        await store.start()
        try:
            return await func(store, args)
        finally:
            await store.stop()

    try:
        return asyncio.run(main())
    except BrokenPipeError:  # `palimpsest export DOC | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (AdminError, PalimpsestError, ValueError) as e:
        print(f"palimpsest {name}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"palimpsest {name}: {e}", file=sys.stderr)
        return 1


async def _require(store: EventStore, doc: str) -> Any:
    return await require(store, doc)


async def _require_or_deleted(store: EventStore, doc: str) -> Any:
    """The document's info; for a name not in the store, what the HTTP API answers
    (deletion.missing): a deleted one says so (the store keeps its tombstone), not "no
    document named", as of a name never used. (inspect's: the other commands still say
    "no document named", which scripts and tests/test_admin_cli.py read.)"""
    try:
        return await require(store, doc)
    except MaintenanceError:
        gone = await missing(store, doc)
        if isinstance(gone, Deleted):
            raise AdminError(f"{gone} (`palimpsest ls` lists the documents there are)") from None
        raise


def _progress(total: int, desc: str, quiet: bool = False) -> Any:
    from tqdm import tqdm

    # disable=None: bars only on a terminal, never in pipes and logs
    return tqdm(total=total, desc=desc, unit="ev", disable=True if quiet else None,
                file=sys.stderr, leave=False)  # fmt: skip


# --- export -----------------------------------------------------------------------------


#: the file of each document that `export --prefix ... -o DIR` writes, by --format
EXPORT_SUFFIX = {"text": ".txt", "xml": ".xml", "json": ".json", "update": ".yjs"}


async def export(store: EventStore, args: argparse.Namespace) -> int:
    if not bulk.single(args):
        return await _export_many(store, args)
    data, seq = await _exported(store, args.doc, await _export_seq(store, args), args.format)
    if args.out:
        await asyncio.to_thread(Path(args.out).write_bytes, data)
        print(f"palimpsest export: {args.doc}@{seq} -> {args.out} ({len(data)} bytes)",
              file=sys.stderr)  # fmt: skip
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


async def _export_seq(store: EventStore, args: argparse.Namespace) -> int | None:
    """The version --seq, --tag or --at names (None: the head). A stopped server's
    export took --seq only, while `cat`, which needs a server, took all three."""
    if args.tag is None and args.at is None:
        return int(args.seq) if args.seq is not None else None
    if not bulk.single(args):
        raise AdminError("--tag and --at name a version of one document: export one")
    await _require(store, args.doc)
    if args.tag is not None:
        key = tag_key(args.tag)  # (in NFC, as the HTTP API compares tag names)
        for t in await store.tags(args.doc):
            if tag_key(t.name) == key:
                return t.seq
        raise AdminError(f"{args.doc!r} has no tag named {key!r}")
    try:
        ts = parse_iso(with_local_offset(args.at))
    except LocalTimeError as e:
        raise AdminError(str(e)) from None
    except ValueError:
        raise AdminError(f"--at {args.at!r} is not an ISO-8601 time") from None
    seq = await store.seq_at(args.doc, ts)
    if seq == 0:
        raise AdminError(f"{args.doc!r} had no events at that time ({iso(ts)})")
    return seq


async def _exported(store: EventStore, doc: str, at: int | None, fmt: str) -> tuple[bytes, int]:
    """The document at seq `at` (None: its head) in --format `fmt`, and that seq."""
    info = await _require(store, doc)
    seq = info.head if at is None else at
    if seq > info.head or seq < info.base_seq:
        raise AdminError(f"{doc!r} has versions {info.base_seq}..{info.head}, not {seq}")
    loaded = await load(store, doc, upto=seq)
    if fmt == "update":
        data = subdoc_options.restored(loaded.doc, loaded.doc.get_update())
    else:
        roots = rendered(loaded.doc, readable=fmt == "text")
        if fmt == "json":
            out = {"doc": doc, "seq": loaded.seq, "roots": roots}
            data = (json.dumps(out, ensure_ascii=False, indent=2, allow_nan=False) + "\n").encode()
        else:
            data = _as_text(doc, roots).encode()
    return data, loaded.seq


async def _export_many(store: EventStore, args: argparse.Namespace) -> int:
    if not args.out:
        raise AdminError(
            "several documents are exported into a directory: give -o DIR (a file each: "
            f"NAME{EXPORT_SUFFIX[args.format]} for --format {args.format})"
        )
    if args.seq is not None:
        raise AdminError("--seq is a version of one document: give one DOC with it")
    docs = await bulk.docs_of(store, args, "export")
    folder = Path(args.out)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)

    async def one(doc: str) -> str:
        data, seq = await _exported(store, doc, None, args.format)
        path = folder / f"{doc}{EXPORT_SUFFIX[args.format]}"
        await asyncio.to_thread(path.write_bytes, data)
        return f"{doc}@{seq} -> {path} ({len(data)} bytes)"

    return await bulk.run("export", docs, args, one, f"exported to {folder}", (AdminError,))


def _as_text(doc: str, roots: dict[str, dict[str, Any]]) -> str:
    """`export --format text` (an XML root's value its readable text) and `--format xml`
    (its XML string): the text and XML roots, one bare, several each under a
    ``=== name ===`` line. A document with neither prints its roots as JSON, as `cat`
    prints a map or array root (a notebook's cells, a spreadsheet); map and array roots
    beside text are left out, and stderr says which (never an empty answer that looks
    like an empty text)."""
    texts = {n: r["value"] for n, r in roots.items() if isinstance(r["value"], str)}
    others = {n: r for n, r in roots.items() if n not in texts}
    listing = ", ".join(f"{n} ({r['type']})" for n, r in others.items())
    if not texts and others:
        print(f"palimpsest export: {doc!r} has no text root: its {listing} printed as JSON "
              "(as cat prints it; --format json has every root with its type)",
              file=sys.stderr)  # fmt: skip
        texts = {n: json.dumps(r["value"], indent=2, ensure_ascii=False) + "\n"
                 for n, r in others.items()}  # fmt: skip
    elif others:
        print(f"palimpsest export: left out {listing}, not text: --format json has every root",
              file=sys.stderr)  # fmt: skip
    if len(texts) == 1:
        return next(iter(texts.values()))
    return "".join(f"=== {n} ===\n{v}\n" for n, v in texts.items())


# --- import -----------------------------------------------------------------------------


async def import_(store: EventStore, args: argparse.Namespace) -> int:
    if args.file == "-":
        data = await asyncio.to_thread(sys.stdin.buffer.read)
    else:
        data = await asyncio.to_thread(Path(args.file).read_bytes)
    source = Path(args.file).name if args.file != "-" else "stdin"
    update = None if args.text else as_update(data)
    loaded = None
    if update is not None:
        # the no-op rule, as for a live update and `import --url`: an update the document
        # already holds (the same file imported twice) is no event
        validate_doc_name(args.doc)
        loaded = await load(store, args.doc)
        if not adds_anything(update, loaded.doc.get_state(), KnownDeletions.of_doc(loaded.doc)):
            print(f"palimpsest import: {args.doc} already holds all of {source}: nothing "
                  "imported")  # fmt: skip
            return 0
    ev = await import_data(store, args.doc, data, user=args.user, source=source,
                           root=args.root, as_text=args.text, loaded=loaded)  # fmt: skip
    # one event per run, but a script that imports many updates one by one runs it
    # many times: the run that brings the count past snapshot_every writes a snapshot
    async with Checkpoints(store, args.settings) as checkpoints:
        snap = await checkpoints.after_import(args.doc)
    print(f"palimpsest import: {args.doc}@{ev.seq} ({len(ev.update)} bytes, "
          f"{ev.meta['format']}, by {args.user}"
          + (f"; snapshot @{snap}" if snap is not None else "") + ")")  # fmt: skip
    return 0


def _import_command(args: argparse.Namespace) -> int:
    """`import` on the store (as the other commands), or with --url through a server."""
    if not args.url:
        return _run("import", import_, args)
    from ..client.errors import ClientError  # (the client library: only with --url)

    setup_logging("error")
    try:
        return asyncio.run(_import_over_http(args))
    except (AdminError, PalimpsestError, ClientError, ValueError, OSError) as e:
        print(f"palimpsest import: {e}", file=sys.stderr)
        return 1


async def _import_over_http(args: argparse.Namespace) -> int:
    from ..client.history import History

    if args.file == "-":
        data = await asyncio.to_thread(sys.stdin.buffer.read)
    else:
        data = await asyncio.to_thread(Path(args.file).read_bytes)
    source = Path(args.file).name if args.file != "-" else "stdin"
    if args.text or as_update(data) is None:
        raise AdminError(
            f"{source} is not a Yjs update: a running server takes text with `palimpsest "
            "edit DOC FILE` (PUT /api/docs/DOC/text), or import it without --url while "
            "no server has the document open"
        )
    async with History(args.url, user=args.user, token=args.token) as h:
        seq = await h.import_update(args.doc, data, source=source)
    if seq is None:
        print(f"palimpsest import: {args.doc} already holds all of {source}: nothing imported")
    else:
        print(f"palimpsest import: {args.doc}@{seq} ({len(data)} bytes, update, through "
              f"{h.url})")  # fmt: skip
    return 0


# --- snapshot ---------------------------------------------------------------------------


async def snapshot(store: EventStore, args: argparse.Namespace) -> int:
    await _require(store, args.doc)
    # Through a Backend over this store, so that the features' snapshot meta (undo stacks)
    # is written as the server writes it. Nothing listens; no fan-out.
    from ..backend import Backend

    settings = dataclasses.replace(args.settings, fanout=None)
    backend = Backend(settings, store=store)
    await backend.committer.start()
    try:
        room = await backend.rooms.get(args.doc)
        captured = backend.snapshots.capture(room)
        if captured is None:
            raise AdminError(f"{args.doc!r} has no events to snapshot")
        seq, state, meta = captured
        await store.put_snapshot(args.doc, seq, state, meta)
        await room.stop()
    finally:
        await backend.committer.stop()
    # the stored size, as `inspect` lists it (the state plus the meta: undo bookkeeping…)
    stored = next((x.size for x in await store.snapshots(args.doc) if x.seq == seq), None)
    held = f", {_size(stored)} stored" if stored is not None else ""
    print(f"palimpsest snapshot: {args.doc}@{seq} written ({_size(len(state))} of state{held})")
    return 0


# --- inspect ----------------------------------------------------------------------------

#: how many of the last records of tag changes inspect lists (all are counted)
INSPECT_TAG_CHANGES = 5


def _tag_change(m: TagMove) -> str:
    """Where a record of tag changes left its tag: @seq, @was -> @seq, @was -> deleted."""
    if m.was is None:
        return f"@{m.seq}"
    return f"@{m.was} -> " + ("deleted" if m.seq is None else f"@{m.seq}")


async def inspect(store: EventStore, args: argparse.Namespace) -> int:
    info = await _require_or_deleted(store, args.doc)
    snaps = await store.snapshots(args.doc)
    tags = await store.tags(args.doc)
    moves = await store.tag_history(args.doc)
    last = moves[-INSPECT_TAG_CHANGES:]
    actors: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    first_ts = None
    bar = _progress(info.head - info.base_seq, f"reading {args.doc}")
    async for ev in events(store, args.doc, info.base_seq, info.head):
        actors[ev.actor] += 1
        kinds[ev.kind] += 1
        first_ts = ev.ts if first_ts is None else first_ts
        bar.update(1)
    bar.close()
    out = {
        "doc": args.doc,
        "head": info.head,
        "base_seq": info.base_seq,
        "events": sum(kinds.values()),
        "events_bytes": info.events_bytes,
        "first": iso(first_ts) if first_ts else None,
        "updated": iso(info.updated_ts) if info.updated_ts else None,
        "kinds": dict(kinds.most_common()),
        "actors": dict(actors.most_common()),
        "snapshots": [
            {"seq": s.seq, "at": iso(s.ts), "bytes": s.size, "valid": s.valid} for s in snaps
        ],
        "tags": [{"name": t.name, "seq": t.seq, "actor": t.actor, "at": iso(t.ts)} for t in tags],
        "tag_history": {
            "changes": len(moves),
            "last": [
                {
                    "name": m.name,
                    "action": m.action,
                    "seq": m.seq,
                    "was": m.was,
                    "actor": m.actor,
                    "at": iso(m.ts),
                }
                for m in last
            ],
        },
    }
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(f"document   {args.doc}")
    base = f" (compacted up to {info.base_seq})" if info.base_seq else ""
    print(f"head       {info.head}{base}")
    print(f"events     {out['events']} ({_size(info.events_bytes)} of updates)")
    print(f"first      {out['first'] or '-'}")
    print(f"updated    {out['updated'] or '-'}")
    print("kinds      " + (", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "-"))
    print("actors     " + (", ".join(f"{a} {n}" for a, n in actors.most_common()) or "-"))
    print(f"snapshots  {len(snaps)}")
    for s in snaps:
        bad = "" if s.valid else f"  DAMAGED ({s.damage or 'checksum'})"
        print(f"  @{s.seq:<10} {_size(s.size):>10}  {iso(s.ts)}{bad}")
    print(f"tags       {len(tags)}")
    for t in tags:
        print(f"  {t.name:<20} @{t.seq}  by {t.actor}")
    shown = f", the last {len(last)}:" if len(last) < len(moves) else ""
    print(f"history    {_n(len(moves), 'tag change')}{shown}")
    for m in last:
        print(f"  {iso(m.ts)}  {m.action:<6}  {m.name:<20} {_tag_change(m)}  by {m.actor or '-'}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# --- verify -----------------------------------------------------------------------------


def _n(count: int, noun: str, plural: str = "") -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {plural or noun + 's'}"


async def verify(store: EventStore, args: argparse.Namespace) -> int:
    docs = list(args.docs) or [d.doc for d in await store.list_docs()]
    # a table of the schema that is missing (a cache of the log: read as empty), said
    # once, not as a "cannot be read" line per document
    problems: list[str] = [f"the database: {note}" for note in store.schema_notes()]
    from tqdm import tqdm

    quiet = args.quiet or args.json
    if not args.json:
        for p in problems:
            print(f"PROBLEM {p}")
    for doc in tqdm(docs, desc="documents", unit="doc", file=sys.stderr,
                    disable=True if quiet else None):  # fmt: skip
        try:
            info = await store.doc_info(doc)
            bar = _progress((info.head - info.base_seq) if info else 0, doc, quiet)
            try:
                found = await verify_doc(store, doc, bar.update)
            finally:
                bar.close()
        except StoreError as e:
            found = [f"{doc}: cannot be read: {e}"]
        if not args.json:
            for p in found:
                print(f"PROBLEM {p}")
        problems.extend(found)
    empty = not docs and not args.allow_empty
    if args.json:
        print(json.dumps({"ok": not problems and not empty, "documents": len(docs),
                          "problems": problems}))  # fmt: skip
    if problems:
        print(f"palimpsest verify: {_n(len(problems), 'problem')} in "
              f"{_n(len(docs), 'document')}", file=sys.stderr)  # fmt: skip
        return 1
    if empty:
        # (a SQLite file copied without its -wal while a server ran holds only what was
        # checkpointed into it: often nothing; it said "0 documents OK")
        print("palimpsest verify: the database holds no documents at all. If it should (a "
              "backup), it is not the copy you meant: a SQLite file copied while a server "
              "ran, without its -wal file, holds only what was checkpointed into it; copy "
              "with `palimpsest backup` (docs/operations.md#backups)", file=sys.stderr)  # fmt: skip
        return 1
    if not args.json:
        print(f"palimpsest verify: {_n(len(docs), 'document')} OK")
    return 0


# --- compact ----------------------------------------------------------------------------


async def compact(store: EventStore, args: argparse.Namespace) -> int:
    if not bulk.single(args):
        return await _compact_many(store, args)
    plan = await plan_compact(store, args.doc, args.before, local=True)
    purge = bool(args.purge_deleted)
    if purge and plan.events == 0 and plan.base_seq:
        if not args.yes:
            raise AdminError(f"this purges the deleted content of {args.doc!r}'s base "
                             f"@{plan.base_seq} for good; run again with --yes")  # fmt: skip
    elif plan.events == 0:
        print(f"palimpsest compact: nothing to do: {args.doc!r} is compacted up to "
              f"{plan.base_seq}")  # fmt: skip
        return 0
    elif not args.yes:
        raise AdminError(
            f"this deletes the {plan.events} oldest events of {args.doc!r} (seqs "
            f"{plan.base_seq + 1}..{plan.before}) for good; run again with --yes"
        )
    try:
        removed = await compact_doc(store, plan, args.settings, purge_deleted=purge)
    except CompactedWithoutStacks as e:
        print(f"palimpsest compact: {e}", file=sys.stderr)
        removed = e.removed
    base = max(plan.before, plan.base_seq)
    purged = ", deleted content purged" if purge else ""
    print(f"palimpsest compact: {args.doc}: {removed} events folded into a base snapshot "
          f"@{base}{purged}; history now starts at {base}")  # fmt: skip
    url = args.fanout or args.settings.fanout
    if purge and url:  # the processes serving it reload it from the purged base
        try:
            await publish_purged(url, args.doc, "palimpsest compact", await store_deployment(store))
        except Exception as e:  # (NotPrimary: a replica, nothing published)
            print(f"palimpsest compact: fan-out not told ({e}): a server with the document "
                  "open holds the purged content in memory until it notices the new base "
                  "(within its COMPACTION_CHECK_SECONDS)", file=sys.stderr)  # fmt: skip
            return 1
    return 0


async def _compact_many(store: EventStore, args: argparse.Namespace) -> int:
    docs = await bulk.docs_of(store, args, "compact")
    if not args.yes:
        raise AdminError(
            f"this deletes the events up to {args.before} of {bulk.some(docs)} for good; "
            "run again with --yes"
        )
    purge = bool(args.purge_deleted)
    url = args.fanout or args.settings.fanout
    deployment = await store_deployment(store) if purge and url else None

    async def one(doc: str) -> str:
        plan = await plan_compact(store, doc, args.before, local=True)
        if plan.events == 0 and not (purge and plan.base_seq):
            return f"{doc}: nothing to do: compacted up to {plan.base_seq}"
        try:
            removed = await compact_doc(store, plan, args.settings, purge_deleted=purge)
        except CompactedWithoutStacks as e:
            bulk.say(f"palimpsest compact: {e}")
            removed = e.removed
        if purge and url:
            try:
                await publish_purged(url, doc, "palimpsest compact", deployment)
            except Exception as e:  # (NotPrimary: a replica, nothing published)
                raise AdminError(
                    f"purged, but fan-out not told ({e}): a server with the document open "
                    "holds the purged content in memory until it notices the new base "
                    "(within its COMPACTION_CHECK_SECONDS)"
                ) from None
        base = max(plan.before, plan.base_seq)
        return f"{doc}: {removed} events folded into a base snapshot @{base}"

    return await bulk.run("compact", docs, args, one, "compacted (or had nothing to fold)",
                          (AdminError,))  # fmt: skip


# --- delete -----------------------------------------------------------------------------


async def delete(store: EventStore, args: argparse.Namespace) -> int:
    if not bulk.single(args):
        return await _delete_many(store, args)
    info = await _require(store, args.doc)
    if await store.doc_locks().get(args.doc) is not None:
        raise AdminError(f"{args.doc!r} is locked read-only: unlock it first "
                         f"(`palimpsest lock {args.doc} --unlock`)")  # fmt: skip
    if not args.yes:
        raise AdminError(
            f"this deletes {args.doc!r} ({info.head} events, its snapshots and tags) for good; "
            "run again with --yes"
        )
    await store.delete_doc(args.doc, await tombstone_for(store, args.doc), by=args.user)
    url = args.fanout or args.settings.fanout
    told = 0
    if url:  # the processes serving it drop it now (else at their next gap check)
        try:
            await publish_deleted(url, args.doc, "palimpsest delete", await store_deployment(store))
        except Exception as e:  # (NotPrimary: a replica, nothing published)
            print(f"palimpsest delete: fan-out not told ({e}); the servers notice from the "
                  "store within two gap checks", file=sys.stderr)  # fmt: skip
            told = 1
    print(f"palimpsest delete: {args.doc} deleted ({info.head} events)")
    return told


async def _delete_many(store: EventStore, args: argparse.Namespace) -> int:
    docs = await bulk.docs_of(store, args, "delete")
    if not args.yes:
        raise AdminError(f"this deletes {bulk.some(docs)} (their events, snapshots and tags) "
                         "for good; run again with --yes")  # fmt: skip
    url = args.fanout or args.settings.fanout
    deployment = await store_deployment(store) if url else None

    async def one(doc: str) -> str:
        info = await _require(store, doc)
        await store.delete_doc(doc, await tombstone_for(store, doc), by=args.user)
        if url:  # as one delete does: the processes serving it drop it now
            try:
                await publish_deleted(url, doc, "palimpsest delete", deployment)
            except Exception as e:  # (NotPrimary: a replica, nothing published)
                raise AdminError(f"deleted, but fan-out not told ({e}); the servers notice "
                                 "from the store within two gap checks") from None  # fmt: skip
        return f"{doc} deleted ({info.head} events)"

    return await bulk.run("delete", docs, args, one, "deleted", (AdminError,))


# --- rename-actor -----------------------------------------------------------------------


async def rename_actor(store: EventStore, args: argparse.Namespace) -> int:
    if not args.yes:
        raise AdminError(
            f"this renames {args.old!r} to {args.new!r} in every document, for good; stop "
            "every server on the store and run again with --yes"
        )
    try:
        async with not_served_store(store):
            done, unknown = await pseudonym.rename_actor(store, args.old, args.new)
    except ActorTaken as e:
        if not e.renamed_already:
            raise
        # a run again after one that committed (killed before it said so)
        print(f"palimpsest rename-actor: {args.old} -> {args.new}: already done "
              f"({args.old!r} is no actor of this store, {args.new!r} is): "
              "nothing to do")  # fmt: skip
        return 0
    except StoreUnavailable as e:
        if "serves" not in str(e):
            raise
        raise AdminError(f"{e} (every server on this store: they hold the old name in "
                         "memory)") from None  # fmt: skip
    if not (done.symbol or done.tags or done.snapshots or done.tag_moves):
        raise AdminError(f"{args.old!r} is no actor of this store: nothing to rename")
    moves = f" ({_n(done.tag_moves, 'record')} of tag changes)" if done.tag_moves else ""
    print(f"palimpsest rename-actor: {args.old} -> {args.new}: "
          f"{_n(len(done.docs), 'document')} written by them, {_n(done.tags, 'tag')}{moves}, "
          f"{_n(done.snapshots, 'snapshot')} rewritten, "
          f"{_n(done.derived, 'attribution index', 'attribution indexes')} dropped")  # fmt: skip
    if done.damaged_snapshots:
        print(f"palimpsest rename-actor: {_n(done.damaged_snapshots, 'damaged snapshot')} "
              "could not be read and may still name the old actor (palimpsest verify)",
              file=sys.stderr)  # fmt: skip
    if unknown:
        print("palimpsest rename-actor: snapshot meta entries of other extensions still "
              f"name {args.old!r}: {', '.join(sorted(unknown))}", file=sys.stderr)  # fmt: skip
    return 0


def not_served_store(
    store: EventStore, by: str = "rename-actor"
) -> contextlib.AbstractAsyncContextManager[None]:
    """No server serves the store meanwhile, nor starts on it (`by`: the command)."""
    if isinstance(store, SQLiteStore):
        if store.path == ":memory:":
            return contextlib.nullcontext()

        @contextlib.asynccontextmanager
        async def held() -> AsyncIterator[None]:
            with not_served(store.path, by):
                yield

        return held()
    from ..store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return pg_not_served(store.dsn, store.schema, by)
    return contextlib.nullcontext()


async def _served_alone(store: EventStore) -> str | None:
    """Who serves the store without a fan-out bus (serving_lock.served_alone)."""
    if isinstance(store, SQLiteStore):
        return None if store.path == ":memory:" else served_alone(store.path)
    from ..store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return await pg_served_alone(store.dsn, store.schema, "lock")
    return None


# --- restamp ----------------------------------------------------------------------------


async def restamp(store: EventStore, args: argparse.Namespace) -> int:
    """Restamp a document's far-future events (maintenance.plan_restamp): with every
    server on the store stopped, and the serving lock held meanwhile (a server's memory
    keeps the old stamps: rows it seals from, its rooms' undo stacks)."""
    if args.dry_run:
        plan = await plan_restamp(store, args.doc)
        counts = await _restamp_counts(store, plan) if plan.events else (0, 0, 0)
        return _restamp_report(args, plan, None, counts)
    try:
        async with not_served_store(store, "restamp"):
            plan = await plan_restamp(store, args.doc)
            done = await restamp_doc(store, plan)
    except StoreUnavailable as e:
        if "serves" not in str(e):
            raise
        raise AdminError(f"{e} (every server on this store: its memory keeps the old "
                         "stamps)") from None  # fmt: skip
    return _restamp_report(args, plan, done, None)


async def _restamp_counts(store: EventStore, plan: RestampPlan) -> tuple[int, int, int]:
    """The tags, snapshots and records of tag changes the plan would change (stamped
    after its now; a snapshot whose meta keeps a time after it was written after it
    too)."""
    tags = sum(1 for t in await store.tags(plan.doc) if t.ts > plan.now)
    snaps = sum(1 for s in await store.snapshots(plan.doc) if s.ts > plan.now)
    return tags, snaps, sum(1 for m in await store.tag_history(plan.doc) if m.ts > plan.now)


def _restamp_report(
    args: argparse.Namespace,
    plan: RestampPlan,
    done: Restamped | None,
    counts: tuple[int, int, int] | None,
) -> int:
    tags, snaps, moves = ((done.tags, done.snapshots, done.tag_moves) if done is not None
                          else counts or (0, 0, 0))  # fmt: skip
    if args.json:
        out: dict[str, Any] = {"doc": plan.doc, "dry_run": bool(args.dry_run),
                               "events": plan.events}  # fmt: skip
        if plan.events:
            out.update(first_seq=plan.first, last_seq=plan.last,
                       old=[iso(plan.old_first), iso(plan.old_last)],
                       new=[iso(plan.new_first), iso(plan.new_last)],
                       tags=tags, tag_changes=moves, snapshots=snaps)  # fmt: skip
        print(json.dumps(out))
        return 0
    if not plan.events:
        print(f"palimpsest restamp: {plan.doc}: nothing to restamp (its last event is not "
              f"more than {MAX_AHEAD_MS // 60_000} min ahead of this machine's clock, "
              f"{iso(plan.now)})")  # fmt: skip
        return 0
    what = "would restamp" if args.dry_run else "restamped"
    records = f" ({_n(moves, 'record')} of tag changes)" if moves else ""
    print(f"palimpsest restamp: {plan.doc}: {what} {_n(plan.events, 'event')} (seq "
          f"{plan.first}..{plan.last}) from {iso(plan.old_first)}..{iso(plan.old_last)} "
          f"to {iso(plan.new_first)}..{iso(plan.new_last)}; {_n(tags, 'tag')}{records}, "
          f"{_n(snaps, 'snapshot')}")  # fmt: skip
    return 0


# --- revoke -----------------------------------------------------------------------------


async def revoke(store: EventStore, args: argparse.Namespace) -> int:
    if args.list:
        for row in await store.revocations().list():
            print(json.dumps(revoked_json(row)))
        return 0
    if not args.user or not revocable(args.user):
        raise AdminError(f"give the USER to revoke: {REVOCABLE_RULE}")
    if args.lift:
        if not await store.revocations().remove(args.user):
            # done already: as a second revoke is, not an error a script must tell apart
            print(f"palimpsest revoke: {args.user} was not revoked: nothing to lift")
            return 0
        since = None
    else:
        since = (await revoke_in_store(store, args.user, "palimpsest revoke")).since
    url = args.fanout or args.settings.fanout
    told = 0
    if url:  # the servers act now (else at their next read of the store)
        try:
            await publish_revocation(
                url, args.user, since, "palimpsest revoke", await store_deployment(store)
            )
        except Exception as e:  # (NotPrimary: a replica, nothing published)
            print(f"palimpsest revoke: fan-out not told ({e}); the servers read it from the "
                  "store within 5 s", file=sys.stderr)  # fmt: skip
            told = 1
    if since is None:
        print(f"palimpsest revoke: {args.user} no longer revoked")
    else:
        print(f"palimpsest revoke: {args.user} revoked: tokens issued before "
              f"{iso(since * 1000)} are refused")  # fmt: skip
    return told


# --- lock -------------------------------------------------------------------------------

#: the actor of the lock and unlock events the CLI logs (unless --by names one)
LOCK_ACTOR = "palimpsest lock"


def _lock_by(raw: str) -> str:
    """--by: a name a user may have (the actor of the lock's event)."""
    name = user_name(raw)
    if not valid_user_name(name):
        raise argparse.ArgumentTypeError(f"{raw!r} is no user name: {USER_NAME_RULE}")
    return name


async def lock(store: EventStore, args: argparse.Namespace) -> int:
    """Lock or unlock in the store (server.locking): the row, then the event; told to
    the servers through the fan-out as an events message, which their rooms apply as
    another process's event."""
    if args.list:
        for row in await store.doc_locks().list():
            print(json.dumps({"doc": row.doc, **row.json()}))
        return 0
    if not args.doc:
        raise AdminError("give the DOC to lock (or --list)")
    await _require_or_deleted(store, args.doc)
    problem = reason_problem(args.reason)
    if problem is not None:
        raise AdminError(f"--reason is {problem}")
    url = args.fanout or args.settings.fanout
    if url:
        alone = await _served_alone(store)
        if alone is not None:
            raise AdminError(
                f"{alone} serves this store without a fan-out bus: it would not hear of "
                f"it; use {'DELETE' if args.unlock else 'PUT'} /api/docs/{args.doc}/lock "
                "on the running server (role admin)"
            )
        return await _lock(store, args, url)
    # no bus: a running server would never hear of it (a room open there took the lock
    # only when it loaded again, an unlock never): refused while one serves the store
    try:
        async with not_served_store(store, "lock"):
            return await _lock(store, args, None)
    except StoreUnavailable as e:
        if "serves" not in str(e):
            raise
        what = "DELETE" if args.unlock else "PUT"
        served = str(e).removesuffix(": stop it first")
        raise AdminError(
            f"{served}: it would not hear of it without a fan-out bus; use "
            f"{what} /api/docs/{args.doc}/lock on the running server (role admin), or "
            "--fanout URL when the servers share a Redis bus"
        ) from None


async def _lock(store: EventStore, args: argparse.Namespace, url: str | None) -> int:
    if args.unlock:
        if not await store.doc_locks().remove(args.doc):
            print(f"palimpsest lock: {args.doc} was not locked: nothing to unlock")
            return 0
        new = NewEvent(args.by, UNLOCK_KIND, EMPTY_UPDATE, {}, now_ms())
    else:
        row = DocLock(args.doc, args.by, now_ms(), args.reason)
        await store.doc_locks().put(row)
        new = NewEvent(args.by, LOCK_KIND, EMPTY_UPDATE, {"reason": args.reason}, row.ts)
    [[ev]] = await store.append([(args.doc, [new])])
    told = 0
    if url:
        try:
            await publish_events(url, args.doc, [ev], await store_deployment(store))
        except Exception as e:  # (NotPrimary: a replica, nothing published)
            print(f"palimpsest lock: fan-out not told ({e})", file=sys.stderr)
            told = 1
    print(f"palimpsest lock: {args.doc} {'unlocked' if args.unlock else 'locked'} "
          f"(event {ev.seq})")  # fmt: skip
    return told


__all__ = ["register"]
