"""Upgrading a database of the row-per-event layout (schema version 2, and 1) to the
compact log: the server refuses it until `palimpsest migrate`, then every history answer
is the one the old code gave (tests/fixtures/history-v2.json, recorded by
tests/fixtures/make_history_fixture.py with the code of version 2)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from serverproc import ServerProcess

from palimpsest.store.sqlite_schema import OLD_STEPS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

import make_history_fixture as fixture  # noqa: E402
from sqlitehelp import sqlite_conn  # noqa: E402


def _unknown_is_null(value: Any) -> Any:
    """The recorded answers name the writer of a compacted log's base text "": it is
    null now, as every writer nobody knows is (attribution.py, start_from)."""
    if isinstance(value, dict):
        return {k: None if k == "actor" and v == "" else _unknown_is_null(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_unknown_is_null(v) for v in value]
    return value


RECORDED = _unknown_is_null(json.loads((FIXTURES / "history-v2.json").read_text()))


def without(value: Any, keys: set[str]) -> Any:
    """The value with these dict keys dropped everywhere (what the old API did not say)."""
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


def deletions_first(value: Any) -> Any:
    """The value with each text diff as the API now gives it (since 3 Dec 2026,
    docs/history.md): between two `equal` runs, the deletions, then the insertions, runs
    of the same op and seq joined. The recorded answers interleaved them as the index of
    that time happened to hold its tombstones; what is inserted and deleted, by whom, and
    both texts are the same."""
    if isinstance(value, list):
        return [deletions_first(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: deletions_first(v) for k, v in value.items()}
    if out.get("type") == "text" and isinstance(out.get("ops"), list):
        ops: list[dict[str, Any]] = []
        gap: list[dict[str, Any]] = []

        def flush() -> None:
            for kind in ("delete", "insert"):
                for o in gap:
                    if o["op"] != kind:
                        continue
                    if ops and ops[-1]["op"] == kind and ops[-1]["seq"] == o["seq"]:
                        ops[-1] = {**ops[-1], "text": ops[-1]["text"] + o["text"]}
                    else:
                        ops.append(dict(o))
            gap.clear()

        for o in out["ops"]:
            if o["op"] == "equal":
                flush()
                ops.append(o)
            else:
                gap.append(o)
        flush()
        out["ops"] = ops
    return out


def copies_kept(
    got: dict[str, Any], recorded: dict[str, Any], kinds: dict[int, str], key: str = "runs"
) -> None:
    """A blame (`key` "runs") as the API now gives it (since 5 Dec 2026, docs/history.md)
    or a diff (`key` "ops", since 7 Dec 2026): the same text, each character named as
    recorded, except that text an undo, a redo or a restore brought back (which the
    recorded answers named for the event that did) may name an earlier edit, the one
    that wrote what it copies (and, in a diff, its writer)."""
    assert got.keys() == recorded.keys()
    for root, runs in got["roots"].items():
        old = recorded["roots"][root]
        if key not in runs:
            assert runs == old
            continue

        def chars(runs: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None, int]]:
            return [(c, r.get("op"), r["actor"], r["seq"]) for r in runs for c in r["text"]]

        now, then = chars(runs[key]), chars(old[key])
        assert [(c, op) for c, op, _, _ in now] == [(c, op) for c, op, _, _ in then]
        for (_, _, actor, seq), (_, _, was_actor, was_seq) in zip(now, then, strict=True):
            if (actor, seq) != (was_actor, was_seq):
                assert kinds[was_seq] in ("undo", "redo", "restore"), (seq, was_seq)
                assert seq < was_seq and kinds[seq] == "edit", (seq, was_seq)
                assert key == "ops" or actor == was_actor, (actor, was_actor)


def migrate(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", "migrate", "--db", str(db)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("version", [2, 1])
async def test_an_old_database_is_refused_then_migrated_with_the_same_history(
    tmp_path: Path, version: int
) -> None:
    db = tmp_path / "history.db"
    shutil.copy(FIXTURES / f"history-v{version}.db", db)
    before = db.read_bytes()
    srv = ServerProcess(tmp_path / "srv", db_path=db, extra_args=["--snapshot-every", "20"])
    # refused, with what to do, and the file untouched
    with pytest.raises(RuntimeError) as refused:
        await srv.astart()
    assert f"schema version {version}" in str(refused.value)
    assert "palimpsest migrate" in str(refused.value)
    assert db.read_bytes() == before

    done = await asyncio.to_thread(migrate, db)
    assert done.returncode == 0, done.stderr
    assert "schema version 5" in done.stdout
    # some versions that wrote schema 2 refused tabs typing at once (server.upgrade_notes)
    assert ("--recovering 60" in done.stdout) == (version == 2), done.stdout
    with sqlite_conn(db) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        segments = c.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
        tail = c.execute("SELECT COUNT(*) FROM log").fetchone()[0]
    assert "events" not in tables and {"log", "segments", "symbols"} <= tables
    assert tail > 0  # runs shorter than a segment stay rows (sealed later, when whole)
    # migrating again changes nothing, and has nothing to tell
    again = await asyncio.to_thread(migrate, db)
    assert again.returncode == 0 and "--recovering" not in again.stdout, again

    await srv.astart()
    try:
        bases = {"old": 20}
        got = await fixture.answers(srv.http_url, bases)
        want = deletions_first({k: v for k, v in RECORDED.items() if k != "after"})
        for d in fixture.DOCS:
            kinds = {e["seq"]: e["kind"] for e in got[d]["events"]["events"]}
            for key in ("blame", "blame_mid"):
                copies_kept(got[d][key], want[d][key], kinds)
                got[d][key] = want[d][key] = None
            copies_kept(got[d]["diff"], want[d]["diff"], kinds, "ops")
            got[d]["diff"] = want[d]["diff"] = None
        # `pos` (the global position), `base_seq` (where the history starts), `loaded` and
        # `locked` (server.locking), a session's `changes` (its events less undo marks) are
        # new or live: the rest must be equal
        new = {"pos", "loaded", "base_seq", "locked", "changes"}
        assert without(got, new) == without(want, new)
        # the undo stacks and the log carry on: an undo, an edit, a redo, as before
        assert await fixture.after_undo(srv) == RECORDED["after"]
    finally:
        await srv.astop()
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "palimpsest", "verify", "--db", str(db), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert segments == 0  # a fixture's documents are shorter than one segment


@pytest.mark.parametrize("version", [3, 4])
def test_migrate_tells_what_to_do_after_the_versions_that_refused_tabs_typing_at_once(
    tmp_path: Path, version: int
) -> None:
    """Every version that wrote schema 3 or 4 refused users typing at once in tabs of one
    browser in a loop, their text left in the tabs (server.upgrade_notes): migrate says
    to start with a recovery window open. The database of such a version is made from
    the schema-2 fixture by that version's own steps."""
    db = tmp_path / "history.db"
    shutil.copy(FIXTURES / "history-v2.db", db)
    with sqlite_conn(db) as c:
        for v in range(3, version + 1):
            for stmt in OLD_STEPS[v]:
                c.execute(stmt)
        c.execute(f"PRAGMA user_version = {version}")
    done = migrate(db)
    assert done.returncode == 0, done.stderr
    assert "schema version 5" in done.stdout
    assert f"(schema version {version}) refused two users typing at once" in done.stdout
    assert "--recovering 60" in done.stdout


def test_a_migration_killed_halfway_leaves_the_old_database(tmp_path: Path) -> None:
    """The rewrite is one transaction: a process killed in it leaves the rows as they were
    (version 2, or 3 when the step before it was done); migrating again completes it."""
    db = tmp_path / "history.db"
    shutil.copy(FIXTURES / "history-v2.db", db)
    # make it big enough to be killed mid-way: many events in one more document
    with sqlite_conn(db) as c:
        rows = [("big", i, 1_796_000_000_000 + i, "zed", "edit", bytes([i % 251]) * 40,
                 '{"conn":"x"}') for i in range(1, 200_001)]  # fmt: skip
        c.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)", rows)
        c.execute("INSERT INTO docs VALUES ('big', 200000, 0, 1, 1, 8000000)")
        count = c.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    # killed in the middle of the rewrite: as soon as it says it has begun (a fixed
    # 1.5 s, about half of it once, came after its end on a faster machine)
    proc = subprocess.Popen(
        [sys.executable, "-m", "palimpsest", "migrate", "--db", str(db)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()
    proc.kill()
    proc.wait()
    proc.stderr.close()
    assert first.startswith("palimpsest migrate: rewriting the log: 1,024 of "), first
    with sqlite_conn(db) as c:
        version = c.execute("PRAGMA user_version").fetchone()[0]
        # each step is one transaction: positions (3) and the derived table (4) may be
        # done, the rewrite (5) not
        assert version in (2, 3, 4), "the migration finished before it was killed"
        # nothing of the rewrite shows
        assert c.execute("SELECT COUNT(*) FROM events").fetchone()[0] == count
        assert "segments" not in {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    done = migrate(db)
    assert done.returncode == 0, done.stderr
    with sqlite_conn(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 5
        n = c.execute(
            "SELECT (SELECT COUNT(*) FROM log WHERE doc = d.id) + "
            "(SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM segments WHERE doc = d.id) "
            "FROM docs d WHERE name = 'big'"
        ).fetchone()[0]
        assert n == 200_000
        # whole runs were sealed at once: 195 segments of 1,024, and 320 rows
        assert c.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == 200_000 // 1024
