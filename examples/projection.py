"""A read model of every document, fed by the changefeed: full-text search over the
current text of each document, in a SQLite database of its own (FTS5).

It follows ``GET /api/events/stream`` (every document, in global commit order), folds
each event's Yjs update into that document's state, and stores, in one transaction per
batch: the documents' states, their text in an FTS5 table, and the global position it
has reached. Killed at any moment, it restarts from that stored position, so the table
always equals the documents as of some position of the log, and catches up from there.
It needs nothing from the server but read access (a token or open mode).

    .venv/bin/python examples/projection.py --url http://127.0.0.1:8000 --db search.db
    .venv/bin/python examples/projection.py --db search.db --search "lovelace"

tests/test_projection_example.py runs it against a real server, kills it with -9 in the
middle, and checks that its table ends equal to every document's text.

Two things break a document's run of seqs, and it mends both: a document deleted and
written again starts again at seq 1 (at a new position): its old state is dropped; and a
document compacted (``palimpsest compact``) before the projection read it starts at its
oldest kept event, which builds on the folded ones: the version before it is read once,
as a Yjs update (``versions/{seq}?format=update``), and the events go on from there.

A document deleted on the server comes as a record of kind ``deleted`` at its own
position: its state and its text leave the tables in the batch that reaches it.

Limits of the example: it reads the ``content`` text root (``--root``); a document
deleted by a server older than the ``deleted`` records stays in the table until its name
is written again (seen as above).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sqlite3
import sys
import time
from typing import Any

from pycrdt import Doc, Text

from palimpsest.client import History, StreamEvent

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 1), pos INTEGER)",
    "CREATE TABLE IF NOT EXISTS states (doc TEXT PRIMARY KEY, seq INTEGER, state BLOB)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS texts USING fts5(doc UNINDEXED, body)",
]

#: events folded before their documents are written out together (one transaction)
BATCH = 500
#: ... or after this long without a new event
IDLE_FLUSH = 0.2


class Projection:
    """The read model's database: positions, states and the searchable texts."""

    def __init__(self, path: str, root: str = "content") -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        for stmt in SCHEMA:
            self.db.execute(stmt)
        self.root = root
        self.docs: dict[str, tuple[Doc[Any], int]] = {}
        self.dirty: set[str] = set()
        #: documents deleted since the last flush (their rows go then)
        self.gone: set[str] = set()
        self.pos = self.position()

    def position(self) -> int:
        row = self.db.execute("SELECT pos FROM position WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def _load(self, name: str) -> tuple[Doc[Any], int]:
        if name not in self.docs:
            doc: Doc[Any] = Doc()
            row = self.db.execute("SELECT seq, state FROM states WHERE doc = ?", (name,)).fetchone()
            seq = 0
            if row is not None and name not in self.gone:  # (its row goes at the flush)
                seq = int(row[0])
                doc.apply_update(row[1])
            self.docs[name] = (doc, seq)
        return self.docs[name]

    def _seq(self, ev: StreamEvent) -> int:
        """The seq the event's document has reached here, 0 when the event starts it
        again: a seq at or below ours at a position past ours is a new document under the
        same name (the old one was deleted)."""
        _, seq = self._load(ev.doc)
        return 0 if ev.seq <= seq else seq

    def needs_base(self, ev: StreamEvent) -> bool:
        """Whether the event comes after events this model never had (a compacted log
        starts at its base): the version before it must be read first (`apply`'s base)."""
        if ev.kind == "deleted":
            return False
        return bool(ev.pos > self.pos and ev.seq > self._seq(ev) + 1)

    def apply(self, ev: StreamEvent, base: bytes | None = None) -> None:
        """Fold one event in; `base`: the document at seq ``ev.seq - 1``, when
        `needs_base` said so."""
        if ev.pos <= self.pos:
            return  # had it already (the stream resumes after the stored position)
        if ev.kind == "deleted":  # the document is gone: so is its row
            self.docs.pop(ev.doc, None)
            self.dirty.discard(ev.doc)
            self.gone.add(ev.doc)
            self.pos = ev.pos
            return
        doc, seq = self._load(ev.doc)
        if self._seq(ev) == 0 and seq:
            doc, seq = Doc(), 0  # deleted and written again: the old text goes
        if base is not None:
            doc = Doc()
            doc.apply_update(base)
        if ev.update is not None:
            doc.apply_update(ev.update)
        self.docs[ev.doc] = (doc, ev.seq)
        self.dirty.add(ev.doc)
        self.pos = ev.pos

    def text(self, name: str) -> str:
        return str(self.docs[name][0].get(self.root, type=Text))

    def flush(self) -> None:
        """Write the changed documents and the position, atomically."""
        if not self.dirty and not self.gone and self.pos == self.position():
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for name in sorted(self.gone):
                self.db.execute("DELETE FROM states WHERE doc = ?", (name,))
                self.db.execute("DELETE FROM texts WHERE doc = ?", (name,))
            for name in sorted(self.dirty):
                doc, seq = self.docs[name]
                self.db.execute(
                    "INSERT INTO states (doc, seq, state) VALUES (?, ?, ?) ON CONFLICT (doc) "
                    "DO UPDATE SET seq = excluded.seq, state = excluded.state",
                    (name, seq, doc.get_update()),
                )
                self.db.execute("DELETE FROM texts WHERE doc = ?", (name,))
                self.db.execute(
                    "INSERT INTO texts (doc, body) VALUES (?, ?)", (name, self.text(name))
                )
            self.db.execute(
                "INSERT INTO position (id, pos) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET pos = excluded.pos",
                (self.pos,),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.dirty.clear()
        self.gone.clear()
        # documents stay in memory only while they change: drop the quiet ones
        if len(self.docs) > 1000:
            self.docs.clear()

    def search(self, query: str, limit: int = 20) -> list[tuple[str, str]]:
        rows = self.db.execute(
            "SELECT doc, snippet(texts, 1, '[', ']', '…', 12) FROM texts WHERE texts MATCH ? "
            "ORDER BY rank LIMIT ?",
            (query, limit),
        ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]


async def follow(args: argparse.Namespace) -> None:
    proj = Projection(args.db, args.root)
    print(f"projection: {args.db} at position {proj.pos}; following {args.url}", flush=True)
    queue: asyncio.Queue[StreamEvent] = asyncio.Queue(maxsize=BATCH * 2)  # bounded

    async def pull(h: History) -> None:
        async for ev in h.stream_all(after=proj.pos):
            await queue.put(ev)

    async with History(args.url, user=args.user, token=args.token) as h:
        puller = asyncio.create_task(pull(h))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        last_report = time.monotonic()
        ev: StreamEvent | None = None  # taken from the queue, not applied yet
        try:
            while not stop.is_set() and not puller.done():
                n = 0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_FLUSH):
                        while n < BATCH:
                            if ev is None:
                                ev = await queue.get()
                            base = None
                            if proj.needs_base(ev):  # (a timeout here: tried again)
                                base = await h.version_update(ev.doc, ev.seq - 1)
                            proj.apply(ev, base)
                            ev = None
                            n += 1
                proj.flush()
                if n and time.monotonic() - last_report > 2:
                    print(f"projection: position {proj.pos}", flush=True)
                    last_report = time.monotonic()
        finally:
            proj.flush()
            puller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await puller
    print(f"projection: stopped at position {proj.pos}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the Palimpsest server")
    p.add_argument("--db", default="projection.db", help="the read model's SQLite file")
    p.add_argument("--user", help="user name (open mode)")
    p.add_argument("--token", help="a token with the read role")
    p.add_argument("--root", default="content", help="the Y.Text root to index")
    p.add_argument("--search", metavar="QUERY", help="search the table instead of following")
    args = p.parse_args(argv)
    if args.search:
        for doc, snippet in Projection(args.db, args.root).search(args.search):
            print(f"{doc}: {snippet}")
        return 0
    asyncio.run(follow(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
