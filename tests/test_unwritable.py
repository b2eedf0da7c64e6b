"""A data directory this user cannot write. A field tester ran `palimpsest serve` as a
service user on a directory it did not own: the start said "/… is read-only … copy the
file somewhere writable" for a database that did not exist yet (there was nothing to
copy), after a WARNING "no lock on …-serving" that the refusal made moot. `migrate --db
NEW.db` refused to create a database, and `backup` into a directory it cannot write
ended in a traceback (sqlite3.OperationalError: unable to open database file)."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import free_port
from sqlitehelp import sqlite_conn


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[Path]:
    """`folder`, made and then not writable by this user: mode 555, or for root (whom
    modes do not stop) the immutable attribute (skipped where it cannot be set)."""
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make {folder} immutable here: {made.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


def user_name() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def palimpsest(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palimpsest", *argv], cwd="/",
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def made_db(path: Path) -> Path:
    """A Palimpsest database at `path` (what migrate --create makes)."""
    r = palimpsest("migrate", "--create", "--db", str(path))
    assert r.returncode == 0, r.stderr
    return path


def test_serve_on_a_new_database_in_a_directory_it_cannot_write(tmp_path: Path) -> None:
    with unwritable(tmp_path / "data") as data:
        r = palimpsest("serve", "--port", str(free_port()), "--db", str(data / "p.db"))
    said = r.stdout + r.stderr
    assert r.returncode == 3, said
    assert (
        f"cannot create SQLite database {str(data / 'p.db')!r}: the directory {data} is not "
        f"writable by user {user_name()}"
    ) in said, said
    assert "copy the file" not in said and "no lock on" not in said, said
    assert "Traceback" not in said, said


def test_serve_on_an_existing_database_in_a_directory_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    made_db(tmp_path / "data" / "p.db")
    with unwritable(tmp_path / "data") as data:
        r = palimpsest("serve", "--port", str(free_port()), "--db", str(data / "p.db"))
    said = r.stdout + r.stderr
    assert r.returncode == 3, said
    assert f"the directory {data} is not writable by user {user_name()}" in said, said
    assert "-wal and -shm" in said and "no lock on" not in said, said


def test_migrate_creates_a_database_when_asked(tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    r = palimpsest("migrate", "--db", str(new))
    assert r.returncode == 1 and not new.exists(), r
    assert f"no SQLite database at {new}" in r.stderr and "--create" in r.stderr, r.stderr
    r = palimpsest("migrate", "--create", "--db", str(new))
    assert r.returncode == 0, r.stderr
    assert f"created SQLite database {new}" in r.stdout, r.stdout
    with sqlite_conn(new) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "docs" in tables
    with unwritable(tmp_path / "data") as data:
        r = palimpsest("migrate", "--create", "--db", str(data / "p.db"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"the directory {data} is not writable by user {user_name()}" in r.stderr


def test_backup_into_a_directory_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    db = made_db(tmp_path / "p.db")
    with unwritable(tmp_path / "out") as out:
        r = palimpsest("backup", "--db", str(db), str(out / "b.db"))
        assert r.returncode == 1, r
        assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"palimpsest backup: cannot write {out / 'b.db'}: "), r.stderr
        assert f"the directory {out} is not writable by user {user_name()}" in r.stderr
        assert os.listdir(out) == []
