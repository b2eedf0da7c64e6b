"""The tables of the schema (both stores'), as a start checks that they are all there.

A table dropped by hand, or left out of a partial restore, used to go unnoticed at
start: in the drill, with `snapshots` dropped the server started and every document's
load failed for ever, and `verify` printed a "cannot be read" line per document. Now a
start makes a missing table of caches of the log again, empty, and says so (the
README's schema steps that only add tables run by themselves at start); one that
nothing rebuilds stops it, named. (`deletions` and the side tables, `revoked_users`
and `webhooks`, are made whenever they are missing: on SQLite at first use.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import TagMove

#: tables the log rebuilds, made again empty when missing: snapshots are checkpoints,
#: derived holds caches (the stored attribution indexes)
REBUILT = ("snapshots", "derived")
#: tables nothing rebuilds, and what each holds: without one the store refuses to start
KEPT = {
    "symbols": "the names of the event log's actors and kinds",
    "docs": "the documents and their heads",
    "log": "the event log's newest events",
    "segments": "the event log's sealed events",
    "log_position": "the changefeed's last position",
    "tags": "the named versions",
    "tombstones": "the deleted documents' last states",
}


def missing_tables(have: set[str]) -> tuple[list[str], list[str]]:
    """Of the schema's tables, those not in `have`: (the ones nothing rebuilds, the
    REBUILT ones)."""
    return [t for t in KEPT if t not in have], [t for t in REBUILT if t not in have]


def refusal(where: str, kept: list[str]) -> str:
    """Why a store that lacks tables nothing rebuilds is not opened (`where`: "database
    'p.db'")."""
    what = "; ".join(f"{t}: {KEPT[t]}" for t in kept)
    many = len(kept) > 1
    return (
        f"{where} lacks the table{'s' if many else ''} {', '.join(kept)} ({what}): "
        f"nothing rebuilds {'them' if many else 'it'}, and {'they are' if many else 'it is'} "
        "not made again empty. Restore from a backup (`palimpsest verify` the backup "
        "first; docs/operations.md#backups)"
    )


def rebuilt_words(rebuilt: list[str], compacted: int) -> str:
    """What missing REBUILT tables mean, for the warning of a start that makes them
    again (and verify's line): `compacted` documents have their base in a snapshot."""
    words = f"the {' and '.join(rebuilt)} table{'s were' if len(rebuilt) > 1 else ' was'} missing"
    if "snapshots" in rebuilt:
        words += (
            ": snapshots are checkpoints of the log, so every document loads from its "
            "whole log until new snapshots are taken"
        )
        if compacted:
            words += (
                f"; but {compacted} compacted document{'s' if compacted > 1 else ''} had "
                "its base in a snapshot, and cannot load: restore from a backup "
                "(docs/operations.md#backups)"
            )
    if "derived" in rebuilt:
        words += "; derived holds caches (attribution indexes), rebuilt when asked for"
    return words


#: the tables beside the log's schema (side_tables) that a start makes when missing, and
#: what the loss of one with rows costs. Made again empty, each would be silent: a store
#: keeps a row per side table it has made (SIDE_MARKER), so that one missing after that
#: was dropped (by hand, a partial restore), and is said, or refused (`revoked_users`).
SIDE = {
    "revoked_users": (
        "every user revocation (`palimpsest revoke`): revoked users' old tokens would be "
        "let in again"
    ),
    "webhooks": (
        "the webhooks' delivery cursors and states: each webhook starts again at the log's "
        "end (the events in between are never delivered) and a disabled one is enabled again"
    ),
    "doc_locks": (
        "every document lock (`palimpsest lock`): locked documents would take edits again"
    ),
    "tag_history": (
        "the record of every tag's creations, moves and deletions (who, when, from which "
        "version to which): it starts again empty, and a tag's earlier positions are unknown"
    ),
}
#: the tags' changes (EventStore.tag_history), a side table: `n` numbers a tag's changes
#: (1, 2, ...), its key with the tag's; `seq` is NULL for a deletion, `was` for a
#: creation. The same statement for SQLite and PostgreSQL.
TAG_HISTORY_SQL = """CREATE TABLE IF NOT EXISTS tag_history (
    doc TEXT NOT NULL,
    name TEXT NOT NULL,
    n BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    seq BIGINT,
    was BIGINT,
    PRIMARY KEY (doc, name, n)
)"""
#: one change of a tag (``?`` placeholders: doc, name, doc, name, ts, actor, action, seq,
#: was), inside the transaction that changes the tag
TAG_MOVE_INSERT = (
    "INSERT INTO tag_history (doc, name, n, ts, actor, action, seq, was) VALUES (?, ?, "
    "COALESCE((SELECT MAX(n) FROM tag_history WHERE doc = ? AND name = ?), 0) + 1, "
    "?, ?, ?, ?, ?)"
)
#: a change copied as it is (``?``: doc, name, n, ts, actor, action, seq, was): an import
#: (palimpsest copy) writes the source's, numbered by tag_moves_numbered
TAG_MOVE_COPY = (
    "INSERT INTO tag_history (doc, name, n, ts, actor, action, seq, was) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def tag_moves_numbered(doc: str, moves: Sequence[TagMove]) -> list[tuple[Any, ...]]:
    """The rows of TAG_MOVE_COPY for `moves` (in their order, oldest first) of `doc`:
    each tag's numbered 1, 2, ... as put_tag and delete_tag number them."""
    n: dict[str, int] = {}
    rows: list[tuple[Any, ...]] = []
    for m in moves:
        n[m.name] = n.get(m.name, 0) + 1
        rows.append((doc, m.name, n[m.name], m.ts, m.actor, m.action, m.seq, m.was))
    return rows


#: a document's tags' changes, oldest first (``?``: doc; TAG_MOVES_OF_ONE: doc, name)
TAG_MOVES = (
    "SELECT doc, name, ts, actor, action, seq, was FROM tag_history WHERE doc = ? "
    "ORDER BY ts, name, n"
)
TAG_MOVES_OF_ONE = (
    "SELECT doc, name, ts, actor, action, seq, was FROM tag_history WHERE doc = ? "
    "AND name = ? ORDER BY ts, name, n"
)
#: the table that names the side tables a store has made (one row each)
SIDE_MARKER = "side_tables"
SIDE_MARKER_SQL = f"CREATE TABLE IF NOT EXISTS {SIDE_MARKER} (name TEXT PRIMARY KEY)"
#: the flag of `palimpsest migrate` that makes a lost revoked_users again, empty
ACCEPT_FLAG = "--accept-lost-revocations"


def lost_side_tables(have: set[str], made: set[str]) -> list[str]:
    """The side tables this store made (`made`, from SIDE_MARKER) that are not in `have`
    now: dropped since. (A store older than the marker names none: its missing side
    tables are made without a word, as they always were.)"""
    return [t for t in SIDE if t in made and t not in have]


def side_refusal(where: str) -> str:
    """Why a start stops on a lost revoked_users table (`where`: "database 'p.db'")."""
    return (
        f"{where} lacks the table revoked_users, which it had ({SIDE['revoked_users']}). "
        "A server started on it would let every revoked user in again, so it does not "
        "start. Restore the table from a backup (`palimpsest verify` the backup first; "
        "docs/operations.md#backups); or, to go on with no revocations (revoke again "
        f"whoever must stay out), run `palimpsest migrate {ACCEPT_FLAG}` once"
    )


def side_words(lost: list[str]) -> str:
    """What side tables found dropped cost, for a start's warning and verify's line."""
    return "; ".join(
        f"the {t} table was missing, though this store had made it: lost {SIDE[t]}; "
        "restore it from a backup if it held rows (docs/operations.md#backups)"
        for t in lost
    )
