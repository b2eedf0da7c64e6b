"""`palimpsest migrate` (create or update a store's schema) and `palimpsest copy` (copy every
document of one store into another, e.g. SQLite into PostgreSQL, seqs and all)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from dataclasses import replace as replaced
from pathlib import Path
from typing import Any

from .. import protocol as P
from ..deletion import merge_state_vectors, replace_tombstone
from ..errors import MovedMeanwhile, PalimpsestError
from ..serving_lock import Served
from ..snapshots import load
from ..store import EventStore, MemoryStore, SQLiteStore, open_store
from ..store.base import DocInfo, Event, Snapshot, Tag, TagMove
from ..store.cursors import HookState
from ..store.sqlite import schema_version_at as sqlite_schema_version_at
from ..store.sqlite_schema import SCHEMA_VERSION
from ..upgrade_notes import after_migrate
from ..util import without_password
from . import SQLITE_URL_HINT, add_store_options, missing_sqlite_file, settings_from
from .admin import not_served_store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "migrate",
        help="create or update the store's schema (--create: a new SQLite file too)",
        description="Create the tables of a store, or bring them to this version. A SQLite "
        "file must exist (a typo in --db would otherwise make a new, empty database), "
        "unless --create is given: then a new one is made, in an existing directory. Upgrading "
        "to version 5 (the compact event log) rewrites every event in one transaction: stop "
        "the servers first (they refuse to start until it is done). While a server serves "
        "a store of an older version, migrate refuses, naming it, and changes nothing; only "
        "servers from 4 December 2026 on say they serve (the serving lock): stop older ones "
        "yourself, it cannot see them. A store at this version already is only said so, "
        "exit 0, whatever serves it (harmless during a rolling upgrade). An upgrade holds the "
        "serving lock: a server started meanwhile waits for it. Safe to run from several "
        "machines at once (a second one waits for the first, then finds the store at this "
        "version), and again.",
    )
    add_store_options(p)
    p.add_argument(
        "--create", action="store_true",
        help="SQLite: create the database file when there is none (in an existing directory "
        "this user can write), as `palimpsest serve` does",
    )  # fmt: skip
    p.add_argument(
        "--accept-lost-revocations", action="store_true",
        help="a revoked_users table this store had is missing (dropped, a partial restore): "
        "make it again, empty, and go on; every revocation is lost (revoke again whoever "
        "must stay out). Without it a start refuses such a store: restore the table from "
        "a backup instead if you can",
    )  # fmt: skip
    p.set_defaults(func=run_migrate)

    p = sub.add_parser(
        "copy",
        help="copy every document of one store into another (e.g. SQLite -> PostgreSQL)",
        description="Copy documents with their whole logs (same seqs), valid snapshots and "
        "tags, one transaction per document, and the tombstones deleted documents left (so "
        "that stale copies of them stay refused). A document deleted in the target is not "
        "brought back (--undelete to bring it back on purpose). Into a new store the "
        "events keep their changefeed positions, and "
        "deletion records and webhook cursors are copied, so its followers resume on the "
        "target; so does a copy run again to finish one (documents already there, as in "
        "the source, are left as they are and count as copied), unless a server "
        "wrote on the target since. Into one with events of its own they are numbered "
        "anew: followers restart from 0, webhooks start at the target's end, deletion "
        "records stay behind. Stop the "
        "servers of the source first.",
    )
    p.description += (
        " The revoked users are carried too, with their times, whatever --doc picks (one "
        "revoked in the target already, as late or later, stays as it is)."
    )
    p.add_argument("--from", dest="source", required=True,
                   help="sqlite:////abs/path.db (four slashes: absolute; sqlite:///rel.db "
                   "is relative to the working directory), or any store URL")  # fmt: skip
    p.add_argument("--to", dest="target", required=True, help="postgresql://… (created if needed)")
    p.add_argument("--doc", action="append", help="copy only this document (repeatable)")
    p.add_argument(
        "--replace", action="store_true",
        help="overwrite documents that exist in the target (each one said on stderr; a "
        "server with one open closes its connections with 4409, \"was replaced\"); the "
        "replaced document's state vector goes into the name's tombstone, so that a "
        "client that reconnects with its copy of it is refused (4409)",
    )  # fmt: skip
    p.add_argument(
        "--undelete", action="store_true",
        help="copy also the documents the target deleted (or replaced) whose content the "
        "source holds, which a copy otherwise skips: the source's document, log and all, "
        "is the name's again (a name that holds a new document in the target needs "
        "--replace too); the name's tombstone stays, so a client's copy of what the "
        "target deleted beyond it is still refused",
    )  # fmt: skip
    p.add_argument(
        "--quiet", action="store_true",
        help="nothing on stderr but errors: no progress bar, no line per replaced "
        "document (the summary counts them), no note on the changefeed's positions, "
        "deletion records or webhook cursors; the summary (or --json) still goes to stdout",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="what it copied, as one JSON object")
    p.set_defaults(func=run_copy)


def run_migrate(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def main() -> int:
        store = open_store(
            settings.store_url,
            migrate=True,
            accept_lost_revocations=bool(getattr(args, "accept_lost_revocations", False)),
        )
        missing = missing_sqlite_file(settings.store_url)
        if missing and not getattr(
            args, "create", False
        ):  # a typo in --db would make a new, empty database
            raise ValueError(
                f"no SQLite database at {missing} (give --db or --store; {SQLITE_URL_HINT}). "
                "`palimpsest migrate --create` or `palimpsest serve` creates a new one"
            )
        if isinstance(store, SQLiteStore):
            store.rewrite_progress = _progress_line()
        async with await _not_served_unless_current(store, missing is not None):
            await store.start()  # creates the schema, or upgrades it (migrate=True)
            try:
                version = await store.schema_version()
            finally:
                await store.stop()
        if missing:
            print(f"palimpsest: created SQLite database {missing}")
        shown = without_password(settings.store_url)
        print(f"palimpsest: {store.name} store {shown} at schema version {version}")
        advice = after_migrate(store.found_schema_version)
        if advice:
            print(f"palimpsest migrate: {advice}")
        return 0

    try:
        return asyncio.run(main())
    except (PalimpsestError, ValueError) as e:  # ValueError: a store URL of no store
        print(f"palimpsest migrate: {e}", file=sys.stderr)
        return 1


async def _version_now(store: EventStore) -> int | None:
    """The store's schema version as it is, nothing written (None: not known)."""
    if isinstance(store, SQLiteStore):
        if store.path == ":memory:":
            return None
        return await asyncio.to_thread(sqlite_schema_version_at, store.path)
    from ..store.postgres import PostgresStore, schema_version_at

    if isinstance(store, PostgresStore):  # (the same version number as SQLite's)
        return await schema_version_at(store.dsn, store.schema)
    return None


async def _not_served_unless_current(
    store: EventStore, new_file: bool
) -> contextlib.AbstractAsyncContextManager[Any]:
    """What `palimpsest migrate` holds while it works on `store`: nothing when the store
    is at this version already (the start changes nothing a server relies on: a migrate
    on a current store during a rolling upgrade is harmless, docs/operations.md);
    otherwise the serving lock, so that no server serves the store while its schema is
    rewritten under it (a server of an older version that takes the lock failed every
    commit after, "no such table: events") nor starts meanwhile. Raises MigrateRefused
    when a server serves it; waits while another migrate holds it (then finds the store
    at this version, as a run after it does). A server older than 4 December 2026 holds
    no lock, and is not seen (docs/storage.md)."""
    if new_file or isinstance(store, MemoryStore) or _in_memory(store):
        return contextlib.nullcontext()
    now = await _version_now(store)
    if now is not None and now >= SCHEMA_VERSION:  # (newer: the start says so)
        return contextlib.nullcontext()
    waiting = False
    while True:
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(not_served_store(store, "migrate"))
            return stack
        except Served as e:
            again = await _version_now(store)
            if again is not None and again >= SCHEMA_VERSION:
                # another migrate finished meanwhile, and a server serves the store now
                return contextlib.nullcontext()
            if e.command is None:
                raise MigrateRefused(_refusal(e, again)) from None
            # another migrate (or an admin command that keeps servers off): it ends
            if not waiting:
                held = str(e).removesuffix(": wait for it to finish")
                print(f"palimpsest migrate: {held}: waiting for it to finish",
                      file=sys.stderr, flush=True)  # fmt: skip
                waiting = True
            await asyncio.sleep(_WAIT_SECONDS)
        except OSError as e:  # no lock file can be made here: nor could a server make one
            print(f"palimpsest migrate: no serving lock taken ({e}): a server serving "
                  "this store would not be noticed", file=sys.stderr)  # fmt: skip
            return contextlib.nullcontext()


def _in_memory(store: EventStore) -> bool:
    return isinstance(store, SQLiteStore) and store.path == ":memory:"


#: seconds between two tries of the serving lock while another migrate holds it
_WAIT_SECONDS = 0.2


def _refusal(e: Served, version: int | None) -> str:
    at = f"schema version {version}" if version is not None else "an older schema version"
    return (
        f"{e} (every server on this store), then run `palimpsest migrate` again. The store "
        f"is at {at} and this version's is {SCHEMA_VERSION}: migrating rewrites its tables, "
        "which a running server cannot follow (each of its commits would fail). Nothing "
        "was changed"
    )


class MigrateRefused(PalimpsestError):
    """`palimpsest migrate` refused: a server serves the store (exit status 1)."""


def _progress_line() -> Callable[[int, int], None]:
    """A rewrite's progress on stderr: a line every half second at most, and the last."""
    last = [0.0]

    def tell(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 0.5:
            return
        last[0] = now
        pct = 100 * done // max(total, 1)
        print(f"palimpsest migrate: rewriting the log: {done:,} of {total:,} events ({pct}%)",
              file=sys.stderr, flush=True)  # fmt: skip

    return tell


def _same_store(source: EventStore, target: EventStore, source_url: str, target_url: str) -> bool:
    if isinstance(source, SQLiteStore) and isinstance(target, SQLiteStore):
        files = (source.path, target.path)
        return ":memory:" not in files and Path(files[0]).resolve() == Path(files[1]).resolve()
    if isinstance(source, MemoryStore):  # each memory:// is a store of its own
        return False
    return source_url.rstrip("/") == target_url.rstrip("/")


def run_copy(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(
            copy(
                args.source,
                args.target,
                args.doc,
                args.replace,
                args.quiet,
                args.json,
                undelete=args.undelete,
            )
        )
    except (PalimpsestError, ValueError) as e:  # ValueError: a store URL of no store
        print(f"palimpsest copy: {e}", file=sys.stderr)
        return 1


def _holds_deleted(sv: bytes, tomb: bytes | None, have: bytes | None = None) -> bool:
    """Whether a document of state vector `sv` holds items of the deleted (or replaced)
    document that `tomb` recorded: the test a server's room makes (server.deletion), for
    a room that holds `have` (the state vector of what the target holds of the name), or
    nothing: a room that has nothing refuses any update bringing a client the tombstone
    knows; one that holds a document takes what it has already (a document replaced
    again from the same source shares its client ids with the one the tombstone
    recorded)."""
    if not tomb:
        return False
    dead = P.decode_state_vector(tomb)
    ours = P.decode_state_vector(have) if have else {}
    return any(
        end > ours.get(client, 0) and ours.get(client, 0) < dead.get(client, 0)
        for client, end in P.decode_state_vector(sv).items()
    )


async def _state_vector(store: EventStore, doc: str) -> bytes:
    return (await load(store, doc)).doc.get_state()


#: said when a copy into a store that has events already numbers them anew
_NEW_POSITIONS = (
    "palimpsest copy: the target had events of its own: the copied ones have new global "
    "positions, so followers of the source's changefeed (global stream, webhooks) "
    "restart from 0 on the target (their cursors cannot be told from the target's own)"
)


async def _ends(store: EventStore, info: DocInfo) -> tuple[int, ...]:
    """The positions of a document's first and last events (none when it has none)."""
    first = await store.read(info.doc, after=info.base_seq, limit=1)
    last = await store.read(info.doc, after=info.head - 1)
    return tuple(e.pos for e in (*first, *last))


async def _keeps_positions(
    source: EventStore, target: EventStore, sources: Sequence[DocInfo]
) -> bool:
    """Whether the copy keeps every event's global position: into a store that has given
    out none (a new one), where they take no one's place, or into one that holds nothing
    but what an earlier copy from this source brought, positions kept (a copy run again
    after it was interrupted, or after one of some ``--doc``): every document there is
    one of `sources` as it is in the source (head, base, first and last positions), no
    document was deleted there (tombstones, deletion records), and its last position is
    not past the source's (a server that wrote there after a copy moved it past:
    carry_positions). The source's commit order and its followers' cursors
    (`Last-Event-ID`, webhook cursors) then stay valid on the target; numbered document
    by document instead, a cursor within the copy's range was taken and misread (another
    document's events again, a later one's never). What a server writes on the target
    during the copy is refused by import_doc."""
    last = await target.last_position()
    if last == 0:
        return True
    if last > await source.last_position():
        return False
    if not set(await target.tombstones()) <= set(await source.tombstones()):
        return False
    # every deletion record there is one an earlier copy brought (see import_deletions)
    theirs_gone = {(e.pos, e.doc, e.seq) for e in await _deletion_records(source, None)}
    if any((e.pos, e.doc, e.seq) not in theirs_gone for e in await _deletion_records(target, None)):
        return False
    theirs = {d.doc: d for d in sources}
    for mine in await target.list_docs():
        src = theirs.get(mine.doc)
        if src is None or (src.head, src.base_seq) != (mine.head, mine.base_seq):
            return False
        if await _ends(source, src) != await _ends(target, mine):
            return False
    return True


async def _carry_webhooks(rows: Sequence[HookState], target: EventStore) -> int:
    """Copy the source's webhook rows, their cursors valid on a target that kept the
    positions, so that a hook resumes there where it was (a hook new to a store starts
    at its end: the events after its cursor would never be delivered); how many."""
    into = target.webhook_cursors()
    return sum([await into.carry(row) for row in rows])


async def _deletion_records(store: EventStore, wanted: set[str] | None) -> list[Event]:
    """The store's deletion records (its changefeed's `deleted` ones), in pos order, of
    the `wanted` names only when some are given."""
    out: list[Event] = []
    after = 0
    while page := await store.deletions(after=after):
        out += [e for e in page if wanted is None or e.doc in wanted]
        after = page[-1].pos
    return out


async def _already_there(
    target: EventStore,
    info: DocInfo,
    events: Sequence[Event],
    tags: Sequence[Tag],
    moves: Sequence[TagMove],
) -> bool:
    """Whether the target holds the document as the source does (an earlier run of the
    copy brought it): the same base and head, the same events (positions aside: a copy
    into a store with events of its own numbers them anew), the same tags and the same
    record of their changes (a copy by a release that left that record behind is not
    there already: --replace brings it)."""
    mine = await target.doc_info(info.doc)
    if mine is None or (mine.head, mine.base_seq) != (info.head, info.base_seq):
        return False
    theirs = await target.read(info.doc)
    if [replaced(e, pos=0) for e in theirs] != [replaced(e, pos=0) for e in events]:
        return False
    if await target.tags(info.doc) != list(tags):
        return False
    return await target.tag_history(info.doc) == list(moves)


#: how many times a replace reads the target's document again when a writer committed
#: to it between the read and the import (MovedMeanwhile)
REPLACE_TRIES = 5


async def _import(
    target: EventStore,
    info: DocInfo,
    events: Sequence[Event],
    snaps: Sequence[Snapshot],
    tags: Sequence[Tag],
    moves: Sequence[TagMove],
    *,
    replace: bool,
    keep_positions: bool,
    between: Callable[[str], Awaitable[None]] | None,
) -> tuple[DocInfo | None, PalimpsestError | None]:
    """Import one document; what the target held of it that the import replaced (None:
    nothing), and the error that kept it out (None: imported).

    With `replace`, what the replaced document held is refused from then on, as a
    deleted one's is: its state vector goes into the name's tombstone, written with the
    new document (a tab that kept the old Y.Doc and reconnects after the 4409 would sync
    it into the new one). The state vector is read before the import's transaction (a
    fold of the document, too long to hold the store's write lock for), so the import
    checks there that the document is still the one read, at the head read
    (import_doc's `replacing`): an edit a server committed in between is refused
    (MovedMeanwhile), the document read again and the import tried again, up to
    REPLACE_TRIES times. `between`: for tests, run between the read and the import."""
    had: DocInfo | None = None
    for _ in range(REPLACE_TRIES):
        had = await target.doc_info(info.doc) if replace else None
        tomb: bytes | None = None
        replacing: tuple[int | None, int] | None = (None, 0) if replace else None
        if had is not None:
            loaded = await load(target, info.doc)
            tomb = replace_tombstone(await target.tombstone(info.doc), loaded.doc.get_state())
            replacing = (had.generation, loaded.seq)
        if between is not None:
            await between(info.doc)
        try:
            await target.import_doc(
                info, events, snaps, tags, replace=replace, keep_positions=keep_positions,
                tombstone=tomb, replacing=replacing, tag_moves=moves,
            )  # fmt: skip
        except MovedMeanwhile:
            continue
        except PalimpsestError as e:
            return had, e
        return had, None
    return had, MovedMeanwhile(
        f"the target's document kept changing while the copy read it ({REPLACE_TRIES} "
        "tries: a server is writing to it); stop the servers (or their writes to it) "
        "and run the copy again"
    )


async def copy(
    source_url: str,
    target_url: str,
    only: list[str] | None = None,
    replace: bool = False,
    quiet: bool = False,
    as_json: bool = False,
    *,
    undelete: bool = False,
    between: Callable[[str], Awaitable[None]] | None = None,
) -> int:
    """Copy documents and tombstones; returns 0 when every document is in the target
    (copied now, or already there as in the source: an earlier run copied it), 1 when
    one could not be copied.

    Tombstones (what a deletion leaves: the deleted document's state vector) are copied
    too, those of names with no document left included, before the document of the same
    name: a server on the target refuses a stale client's copy of a deleted document as
    one on the source does. A tombstone the target has already is kept, merged with the
    source's when they differ; the source's is written as it is otherwise (its bytes
    also choose the server's Yjs client id of the name's new document, see
    snapshots.new_doc). A document the target deleted is not brought back: one whose
    content the target's tombstone covers, past what the target holds of the name, is
    skipped, unless ``undelete`` (the operator means it: the name's tombstone stays).
    With ``replace``, the state vector of each document replaced goes into its name's
    tombstone, written with the new document (deletion.replace_tombstone): a
    client's copy of the replaced one is refused by the servers as a deleted one's is.
    A document the source deleted that the target still holds is deleted there with
    ``replace``, reported otherwise.

    Into a new store, or one that earlier runs of this copy filled, the events keep
    their global positions (`_keeps_positions`), and the source's deletion records (its
    changefeed's ``deleted`` records) and webhook rows are copied: the target's feed is
    the source's, positions and all. Into one with events of its own, the events get new
    ones, and stderr says that followers restart (when any event was copied) and that
    webhooks start at the target's end; the deletion records are not copied then (said
    on stderr): they name the source's positions, the deleted documents' events were
    never copied, and a record would make the target's followers drop a document of
    that name the target holds. A deletion the copy makes in the target (``replace``, of
    a document the source deleted whose content the target still holds) is the
    target's own, at a position of the target's, after the events of it that the
    target's followers had: it happens only when numbering anew (a target that still
    holds a document the source deleted is not one that keeps positions)."""
    from tqdm import tqdm

    source, target = open_store(source_url), open_store(target_url)
    if _same_store(source, target, source_url, target_url):
        raise ValueError(
            f"--from and --to are the same store ({without_password(source_url)}): nothing to copy"
        )
    missing = missing_sqlite_file(source_url)
    if missing:  # opening it would create an empty database, and copy nothing from it
        raise ValueError(f"no SQLite database at {missing} (--from; {SQLITE_URL_HINT})")
    await source.start()
    try:
        await target.start()
        try:
            wanted = set(only) if only else None
            everything = await source.list_docs()
            docs = [d for d in everything if wanted is None or d.doc in wanted]
            tombs = {
                doc: sv
                for doc, sv in (await source.tombstones()).items()
                if wanted is None or doc in wanted
            }
            there = await target.tombstones()
            keep_positions = await _keeps_positions(source, target, everything)
            failed = skipped = there_already = copied_events = tombs_copied = 0
            replaced_docs = 0

            def warn(msg: str) -> None:
                tqdm.write(msg, file=sys.stderr)

            def note(msg: str) -> None:  # what was done, not an error: --quiet drops it
                if not quiet:
                    warn(msg)

            # tombstones first: a document never reaches the target before its tombstone
            for doc, sv in tombs.items():
                old = there.get(doc)
                new = sv if not old else merge_state_vectors(old, sv)
                if new != old:
                    await target.put_tombstone(doc, new)
                    tombs_copied += 1
            copying = {d.doc for d in docs}
            for doc, sv in tombs.items():
                if doc in copying or await target.doc_info(doc) is None:
                    continue
                live = await _state_vector(target, doc)
                if not _holds_deleted(live, sv):
                    continue  # a new document of the name, made in the target
                if not replace:
                    failed += 1
                    warn(f"{doc}: deleted in the source, its deleted content is still in the "
                         "target: left as it is (--replace deletes it there)")  # fmt: skip
                    continue
                await target.delete_doc(
                    doc, merge_state_vectors(await target.tombstone(doc), live), by="admin"
                )
                note(f"{doc}: deleted in the target too, as in the source")

            total = sum(d.head - d.base_seq for d in docs)
            with tqdm(
                total=total,
                unit="ev",
                disable=True if quiet else None,
                desc="copy",
                file=sys.stderr,
            ) as bar:
                for info in docs:
                    bar.set_postfix_str(info.doc[:40])
                    # the target deleted this name: what the source holds of the deleted
                    # document must not come back (a document made anew there may)
                    dead = there.get(info.doc)
                    revived = bool(dead) and _holds_deleted(
                        await _state_vector(source, info.doc),
                        dead,
                        await _state_vector(target, info.doc),
                    )
                    if revived and not undelete:
                        skipped += 1
                        warn(f"{info.doc}: not copied: it was deleted in the target (or "
                             "replaced there) and this copy holds the content it had "
                             "(--undelete brings it back, if that is what you want)")  # fmt: skip
                        bar.update(info.head - info.base_seq)
                        continue
                    events = await source.read(info.doc)
                    snaps: list[Snapshot] = []
                    for s in await source.snapshots(info.doc):
                        snap = await source.latest_snapshot(info.doc, at_most=s.seq)
                        if snap is not None and snap.seq == s.seq:
                            snaps.append(snap)  # damaged ones are left behind
                    tags = await source.tags(info.doc)
                    # who created, moved and deleted them when: copied as it is
                    moves = await source.tag_history(info.doc)
                    if not replace and await _already_there(target, info, events, tags, moves):
                        there_already += 1  # an earlier run copied it: nothing to do
                        bar.update(info.head - info.base_seq)
                        continue
                    had, error = await _import(
                        target, info, events, snaps, tags, moves, replace=replace,
                        keep_positions=keep_positions, between=between,
                    )  # fmt: skip
                    if error is not None:
                        skipped += 1
                        differs = not replace and await target.doc_info(info.doc) is not None
                        warn(f"{info.doc}: not copied: {error}"
                             + (" and differs from the source (--replace overwrites it)"
                                if differs else ""))  # fmt: skip
                    else:
                        head = await target.head(info.doc)
                        if head != info.head:
                            skipped += 1
                            warn(f"{info.doc}: head {head} != {info.head}")
                        else:
                            copied_events += len(events)
                            if revived:
                                note(f"{info.doc}: brought back (--undelete): the "
                                     "target had deleted (or replaced) it; its tombstone "
                                     "stays")  # fmt: skip
                            if had is not None:
                                # what the target held of it is gone: said, never silent
                                # (--quiet: counted in the summary)
                                replaced_docs += 1
                                note(f"{info.doc}: replaced: the target's {had.head} events "
                                     "of it are gone (a server that has it open closes its "
                                     "connections with 4409, \"was replaced\": their edits "
                                     "since were not saved; a client that reconnects with "
                                     "its old copy is refused, 4409)")  # fmt: skip
                    bar.update(info.head - info.base_seq)
            # the source's deletion records, where its changefeed has them; numbered
            # anew, the target's feed has neither the deleted documents' events nor
            # their records (see copy's docstring)
            deleted = await _deletion_records(source, wanted)
            deletions_copied = 0
            if keep_positions and deleted:
                try:
                    deletions_copied = await target.import_deletions(deleted)
                except PalimpsestError as e:
                    failed += 1
                    warn(f"deletion records not copied: {e}")
            hooks = await source.webhook_cursors().list()
            hooks_copied = 0
            if keep_positions:
                await target.carry_positions(await source.last_position())
                hooks_copied = await _carry_webhooks(hooks, target)
            revocations = await _carry_revocations(source, target)
            locks = await _carry_locks(source, target, [d.doc for d in docs])
            if as_json:
                print(json.dumps({
                    "documents": {"copied": len(docs) - skipped - there_already,
                                  "of": len(docs), "already_there": there_already,
                                  "skipped": skipped, "replaced": replaced_docs},
                    "events": copied_events,
                    "tombstones": {"copied": tombs_copied, "of": len(tombs)},
                    "deletions": {"copied": deletions_copied, "of": len(deleted)},
                    "webhook_cursors": {"copied": hooks_copied, "of": len(hooks)},
                    "positions_kept": keep_positions,
                    "revocations": revocations.as_json(),
                    "locks": locks,
                }))  # fmt: skip
            else:
                print(
                    f"palimpsest: copied {len(docs) - skipped - there_already} of {len(docs)} "
                    f"documents ({copied_events} events), {there_already} already there, "
                    f"{skipped} not copied; {tombs_copied} of {len(tombs)} "
                    f"tombstones copied ({len(tombs) - tombs_copied} already there)"
                    + (f"; {replaced_docs} replaced" if replaced_docs else "")
                    + (f"; {deletions_copied} of {len(deleted)} deletion records copied "
                       f"({len(deleted) - deletions_copied} already there)"
                       if keep_positions and deleted else "")
                    + (f"; {hooks_copied} of {len(hooks)} webhook cursors copied "
                       f"({len(hooks) - hooks_copied} already there)" if keep_positions and hooks
                       else "")
                )  # fmt: skip
                print(f"palimpsest copy: revocations: {revocations}")
                if locks:
                    print(f"palimpsest copy: {locks} document locks carried")
            if not keep_positions and copied_events:
                note(_NEW_POSITIONS)
            if not keep_positions and deleted:
                # (those an earlier run that kept the positions copied are there already)
                have = {(e.pos, e.doc, e.seq) for e in await _deletion_records(target, wanted)}
                n = sum((e.pos, e.doc, e.seq) not in have for e in deleted)
                if n:
                    note(f"palimpsest copy: the source's {n} deletion record"
                         f"{' stays' if n == 1 else 's stay'} behind: they name its "
                         "positions, and the deleted documents' events were not copied "
                         "either, so the target's followers never had them")  # fmt: skip
            if not keep_positions and hooks:
                note(f"palimpsest copy: webhook cursors are not copied ({len(hooks)} in the "
                     "source; they name its positions): a hook configured on the target "
                     "starts at the end of its log")  # fmt: skip
            return 0 if failed == skipped == 0 else 1
        finally:
            await target.stop()
    finally:
        await source.stop()


@dataclass(frozen=True)
class CarriedRevocations:
    """What _carry_revocations did: the users it revoked in the target, of how many the
    source has revoked."""

    carried: list[str]
    of: int

    def as_json(self) -> dict[str, int]:
        return {"carried": len(self.carried), "of": self.of}

    def __str__(self) -> str:
        users = f" ({', '.join(self.carried)})" if self.carried else ""
        there = self.of - len(self.carried)
        return f"{len(self.carried)} of {self.of} carried{users}, {there} already there"


async def _carry_locks(source: EventStore, target: EventStore, docs: list[str]) -> int:
    """Lock in the target the documents of `docs` the source has locked (server.locking):
    a contract frozen on SQLite stays frozen on PostgreSQL. How many; nothing is
    unlocked in the target."""
    rows = await source.doc_locks().of(docs)
    for row in rows.values():
        await target.doc_locks().put(row)
    return len(rows)


async def _carry_revocations(source: EventStore, target: EventStore) -> CarriedRevocations:
    """Revoke in the target every user the source has revoked (`revoked_users`), with
    the source's time: a user revoked on SQLite got back in after the documented copy
    to PostgreSQL. Store-wide, whatever ``--doc`` picks (a revocation is about a user,
    not a document). A revocation the target has already, from the same second or a
    later one, is kept as it is; nothing is lifted in the target (one revoked there
    and not in the source stays revoked)."""
    theirs = {r.user: r for r in await target.revocations().list()}
    rows = await source.revocations().list()
    carried = []
    for row in rows:
        mine = theirs.get(row.user)
        if mine is not None and mine.since >= row.since:
            continue
        await target.revocations().put(row)
        carried.append(row.user)
    return CarriedRevocations(carried, len(rows))
