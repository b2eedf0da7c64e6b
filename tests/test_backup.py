"""`palimpsest backup`: a consistent copy of a SQLite database while a server writes to
it, and the restore of one. A real server process, a real client typing, real files,
the real CLI.

Consistent means one moment of the file: the copy's document is what the server had
committed at some instant, a whole number of the client's edits, never a torn mix. The
restore writes over the database only when no server serves it, and drops the old
file's ``-wal`` (which SQLite would otherwise replay into the restored file).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_URL
from serverproc import ServerProcess

from palimpsest import client
from palimpsest.cli.backup import backup


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", *args], capture_output=True, text=True, timeout=120
    )


def words(n: int) -> str:
    return "".join(f"w{i} " for i in range(n))


async def text_of(db: Path, workdir: Path, doc: str = "notes") -> str:
    """The document's text as a server started on ``db`` serves it."""
    async with ServerProcess(workdir, db_path=db) as srv:
        async with client.History(srv.http_url, user="x") as h:
            return (await h.version(doc)).text


async def test_a_backup_taken_while_a_client_types_is_one_moment_of_the_log(
    tmp_path: Path,
) -> None:
    db, out, stepped = tmp_path / "team.db", tmp_path / "copy.db", tmp_path / "stepped.db"
    async with ServerProcess(tmp_path / "srv", db_path=db) as srv:
        async with client.connect(srv.ws_url, "notes", user="ann") as ann:
            typed = 0
            stop, fifty = asyncio.Event(), asyncio.Event()

            async def type_on() -> None:  # one acknowledged edit after another
                nonlocal typed
                while not stop.is_set():
                    ann.text().insert(len(ann.text()), f"w{typed} ")
                    await ann.flush(timeout=10)
                    typed += 1
                    if typed == 50:
                        fifty.set()

            typist = asyncio.create_task(type_on())
            await asyncio.wait_for(fifty.wait(), 60)
            before = typed
            r = await asyncio.to_thread(cli, "backup", "--db", str(db), str(out), "--quiet")
            # the same, copying one page per step: the server commits between the steps
            done = await asyncio.to_thread(backup, str(db), str(stepped), step_pages=1)
            after = typed
            stop.set()
            await typist
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(
        rf"palimpsest: backed up {re.escape(str(db))} to {re.escape(str(out))}: 1 document, "
        r"[0-9.]+ MB in [0-9.]+ s\n",
        r.stdout,
    ), r.stdout
    assert done.docs == 1 and done.tables["docs"] == 1 and done.tables["symbols"] >= 1
    assert not [f for f in os.listdir(tmp_path) if ".partial" in f]
    for copy in (out, stepped):
        v = cli("verify", "--db", str(copy))
        assert v.returncode == 0 and "1 document OK" in v.stdout, (v.stdout, v.stderr)
        text = await text_of(copy, tmp_path / f"read-{copy.stem}")
        n = text.count(" ")
        assert before <= n <= after + 1, (before, n, after)
        assert text == words(n), text[-80:]  # whole edits, in order: one moment
    # into a pipe (a cron job's log) the progress bar is not drawn: it wrote "\r" lines
    again = cli("backup", "--db", str(db), str(tmp_path / "again.db"))
    assert again.returncode == 0 and again.stderr == "", again.stderr[:200]


async def test_restore_replaces_the_database_only_when_no_server_serves_it(
    tmp_path: Path,
) -> None:
    db, saved = tmp_path / "team.db", tmp_path / "saved.db"
    srv = ServerProcess(tmp_path / "srv", db_path=db)
    async with srv:
        async with client.connect(srv.ws_url, "notes", user="ann") as ann:
            ann.text().insert(0, "kept in the backup")
            await ann.flush(timeout=10)
            assert cli("backup", "--db", str(db), str(saved)).returncode == 0
            ann.text().insert(len(ann.text()), ", typed after it")
            await ann.flush(timeout=10)

        # over a database that is being served: refused, before and whatever --replace says
        r = cli("backup", "--db", str(saved), str(db), "--replace")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"a server (pid {srv.pid}) serves {db}: stop it first" in r.stderr, r.stderr
        async with client.History(srv.http_url, user="x") as h:
            assert (await h.version("notes")).text == "kept in the backup, typed after it"
        # without --replace an existing file is never written over
        r = cli("backup", "--db", str(db), str(saved))
        assert r.returncode == 1 and "saved.db exists" in r.stderr, r.stderr
        await srv.akill9()  # leaves a -wal with the last edit in it

    assert "team.db-wal" in os.listdir(tmp_path)
    r = cli("backup", "--db", str(saved), str(db), "--replace")
    assert r.returncode == 0, r.stderr
    assert "team.db-wal" not in os.listdir(
        tmp_path
    )  # the old file's: replayed it would tear the copy
    assert await text_of(db, tmp_path / "after") == "kept in the backup"
    assert await text_of(saved, tmp_path / "saved") == "kept in the backup"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--db", "{tmp}/missing.db", "{tmp}/out.db"], "no SQLite database at"),
        (["--db", "{tmp}/plain.db", "{tmp}/plain.db"], "is the database itself"),
        (["--db", "{tmp}/other.db", "{tmp}/out.db"], "is not a Palimpsest database"),
        (["--db", "{tmp}/plain.db", "{tmp}/nodir/out.db"], "the directory of"),
        (["--store", f"{PG_URL}?schema=nothing", "{tmp}/out.db"], "use pg_dump"),
        (["--store", "memory://", "{tmp}/out.db"], "not a memory store"),
    ],
)
def test_what_cannot_be_backed_up_is_said_in_one_line(
    tmp_path: Path, args: list[str], says: str
) -> None:
    import sqlite3

    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    assert (
        cli("import", "--db", str(tmp_path / "plain.db"), "--text", "d", "/dev/null").returncode
        == 0
    )
    r = cli("backup", *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out.db").exists()


async def test_a_restore_over_a_damaged_file_says_it_cannot_carry_positions(
    tmp_path: Path,
) -> None:
    """A restore over a file that cannot say which changefeed positions it gave out (it
    is damaged: a common reason to restore) numbered them from the backup's end again,
    silently; it now says so, and `--positions-from` carries them on by hand."""
    from pycrdt import Doc, Text

    from palimpsest.store.base import NewEvent
    from palimpsest.store.sqlite import SQLiteStore

    db, bk = tmp_path / "p.db", tmp_path / "bk.db"

    def damage(path: Path) -> None:  # its header written over
        with open(path, "r+b") as f:
            f.write(b"\xff" * 100)

    async def append(n: int) -> None:
        store = SQLiteStore(db)
        async with store:
            d: Doc[Any] = Doc()
            for _ in range(n):
                before = d.get_state()
                d.get("content", type=Text).insert(0, "x")
                await store.append([("notes", [NewEvent("ada", "edit", d.get_update(before))])])

    await append(5)
    backup(str(db), str(bk))
    await append(5)  # positions 6..10 given out
    damage(db)
    r = cli("backup", "--db", str(bk), str(db), "--replace", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and "after 5" in r.stderr and "--positions-from" in r.stderr
    damage(db)
    done = backup(str(bk), str(db), replace=True, positions_from=10)
    assert done.unknown_positions and done.position == 10
    store = SQLiteStore(db)
    async with store:
        assert await store.last_position() == 10


async def test_the_serving_lock_of_rename_actor_and_restore_follows_a_symlink(
    tmp_path: Path,
) -> None:
    """With link.db -> real.db and a server on real.db, `rename-actor --db link.db` and
    `backup --db snap.db link.db --replace` took the lock of link.db-serving (the server
    holds real.db's): the rename ran under the server, the restore put a regular file in
    place of the link and said it was done. Both lock the file the link leads to now,
    a restore writes over that file (the link stays), and neither leaves a -serving file
    it made behind."""
    real, link, snap = tmp_path / "real.db", tmp_path / "link.db", tmp_path / "snap.db"
    (tmp_path / "t.txt").write_text("hello")
    assert cli("import", "notes", str(tmp_path / "t.txt"), "--db", str(real), "--user",
               "ann").returncode == 0  # fmt: skip
    assert cli("backup", "--db", str(real), str(snap)).returncode == 0
    link.symlink_to(real.name)
    r = cli("rename-actor", "ann", "anna", "--yes", "--db", str(link))  # no server: runs
    assert r.returncode == 0, r.stderr
    assert cli("rename-actor", "anna", "ann", "--yes", "--db", str(link)).returncode == 0
    r = cli("backup", "--db", str(snap), str(link), "--replace")
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == real.name
    assert not [n for n in os.listdir(tmp_path) if n.endswith("-serving")]
    srv = ServerProcess(tmp_path / "srv", db_path=real)
    async with srv:
        r = cli("rename-actor", "ann", "anna", "--yes", "--db", str(link))
        assert r.returncode == 1 and f"a server (pid {srv.pid}) serves" in r.stderr, r.stderr
        r = cli("backup", "--db", str(snap), str(link), "--replace")
        assert r.returncode == 1 and f"a server (pid {srv.pid}) serves" in r.stderr, r.stderr
        assert link.is_symlink()
    r = cli("backup", "--db", str(snap), str(link), "--replace")
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == real.name
    assert (tmp_path / "real.db.recovering").exists()
    assert not (tmp_path / "link.db.recovering").exists()
    assert await text_of(link, tmp_path / "after") == "hello"
