"""The CLI over many documents: `palimpsest ls`, and delete, compact and export of
several documents in one run (DOC..., --prefix, - for names on stdin), on SQLite and
PostgreSQL; `inspect` of a deleted document; the progress bars on a terminal."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import PG_URL, REDIS_URL
from pycrdt import Doc, Text
from serverproc import REPO_ROOT
from test_admin_cli import cli

from palimpsest.cli.listing import DEFAULT_LIMIT
from palimpsest.store import open_store
from palimpsest.store.base import NewEvent

#: the "a:" documents: more than ls prints unasked
MANY = DEFAULT_LIMIT + 15


def edits(*parts: str) -> list[bytes]:
    """Each part typed at the end of the text root, as its own Yjs update."""
    d: Doc = Doc()
    t = d.get("content", type=Text)
    out = []
    for part in parts:
        sv = d.get_state()
        t.insert(len(t), part)
        out.append(d.get_update(sv))
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store of MANY documents a:000... (updated one ms apart, a:000 the oldest) and
    five b:0..b:4 of three events each ("b0-", "x", "y")."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'many.db'}"
        await fill(url)
        yield url
        return
    from scaleout import fresh_schema

    async with fresh_schema(PG_URL) as url:
        await fill(url)
        yield url


async def fill(url: str) -> None:
    store = open_store(url)  # one append: one commit
    await store.start()
    try:
        batches = [(f"a:{i:03}", [NewEvent("ann", "edit", u, ts=1_000_000 + i)])
                   for i in range(MANY) for u in edits(f"a{i}")]  # fmt: skip
        batches += [(f"b:{i}", [NewEvent("bob", "edit", u, ts=2_000_000 + i)
                                for u in edits(f"b{i}-", "x", "y")]) for i in range(5)]  # fmt: skip
        await store.append(batches)
    finally:
        await store.stop()


def store_args(url: str) -> list[str]:
    return ["--store", url]


async def test_ls_pages_counts_and_sorts(store_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    """There was no command that lists documents (GET /api/docs needs a server and a
    token): `ls` prints a page, says how many there are and how many more, and the
    cursor of the next page, as the route does."""
    s = store_args(store_url)
    r = await cli(capfd, "ls", *s)
    lines = r.out.splitlines()
    assert r.code == 0 and len(lines) == DEFAULT_LIMIT, r
    assert lines[0].split() == ["a:000", "1", "1970-01-01T00:16:40.000Z", lines[0].split()[3]]
    total = MANY + 5
    assert f"{DEFAULT_LIMIT} listed; {total} documents, {total - DEFAULT_LIMIT} more" in r.err, r
    assert f"--after a:{DEFAULT_LIMIT - 1:03} the next page" in r.err, r
    # the next page from that cursor, the rest with --limit 0
    r = await cli(capfd, "ls", *s, "--after", f"a:{DEFAULT_LIMIT - 1:03}", "--limit", "0")
    names = [line.split()[0] for line in r.out.splitlines()]
    assert names == [f"a:{i:03}" for i in range(DEFAULT_LIMIT, MANY)] + [f"b:{i}" for i in range(5)]
    assert r.code == 0 and "more" not in r.err, r
    # a prefix; the newest first; as JSON lines, the route's fields
    r = await cli(capfd, "list", *s, "--prefix", "b:", "--sort", "updated", "--limit", "2",
                  "--json")  # fmt: skip
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert [x["doc"] for x in rows] == ["b:4", "b:3"], r
    assert rows[0]["head"] == 3 and rows[0]["size"] > 0 and rows[0]["updated"].endswith("Z")
    assert "2 listed; 5 documents starting with 'b:', 3 more" in r.err, r
    assert "--after 2000003/b:3 the next page" in r.err, r
    r = await cli(capfd, "ls", *s, "--prefix", "b:", "--sort", "updated", "--after", "2000003/b:3")
    assert [line.split()[0] for line in r.out.splitlines()] == ["b:2", "b:1", "b:0"], r
    r = await cli(capfd, "ls", *s, "--prefix", "no such")
    assert r.code == 1 and "--prefix must be (the start of) a document name" in r.err, r


async def test_ls_says_which_documents_are_locked(
    store_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """`ls` shows a locked document as GET /api/docs does (`"locked"`): a last word
    `locked` on its line (the others' lines as they were), `"locked"` in each JSON row."""
    s = store_args(store_url)
    r = await cli(capfd, "lock", "b:1", "--reason", "exam in progress", *s)
    assert r.code == 0, r
    r = await cli(capfd, "ls", *s, "--prefix", "b:")
    lines = {line.split()[0]: line.split() for line in r.out.splitlines()}
    assert lines["b:1"][4:] == ["locked"], r
    assert all(len(words) == 4 for doc, words in lines.items() if doc != "b:1"), r
    r = await cli(capfd, "ls", *s, "--prefix", "b:", "--json")
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert [(x["doc"], x["locked"]) for x in rows] == [
        ("b:0", False),
        ("b:1", True),
        ("b:2", False),
        ("b:3", False),
        ("b:4", False),
    ], rows


async def test_delete_many_in_one_run(store_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    """One `delete` per document cost ~0.5 s of start-up each (hours for 20,000): it
    takes several now, --prefix and - (names on stdin, as `ls` prints them), in one run;
    one that fails is named and the rest go on, exit 1."""
    s = store_args(store_url)
    r = await cli(capfd, "delete", "--prefix", "b:", *s)
    assert r.code == 1 and "this deletes 5 documents (b:0, b:1, b:2, b:3, b:4)" in r.err, r
    assert "--yes" in r.err
    assert (await cli(capfd, "ls", *s, "--prefix", "b:")).out.count("\n") == 5
    r = await cli(capfd, "delete", "b:0", "nope", "b:1", "--yes", *s)
    assert r.code == 1, r
    assert "palimpsest delete: nope: FAILED: no document named 'nope'" in r.err, r
    assert r.out == "palimpsest delete: 2 of 3 documents deleted; 1 failed: nope\n", r
    r = await cli(capfd, "delete", "--prefix", "b:", "--yes", "--verbose", *s)
    assert r.code == 0 and "b:2 deleted (3 events)" in r.out, r
    assert r.out.endswith("palimpsest delete: 3 of 3 documents deleted\n"), r
    # names on stdin: the first word of each line, as ls prints them
    listing = (await cli(capfd, "ls", *s, "--limit", "10")).out
    old = sys.stdin
    sys.stdin = io.StringIO(listing)
    try:
        r = await cli(capfd, "delete", "-", "--yes", *s)
    finally:
        sys.stdin = old
    assert r.code == 0 and "10 of 10 documents deleted" in r.out, r
    r = await cli(capfd, "ls", *s, "--limit", "1")
    assert r.out.startswith("a:010 "), r
    assert f"{MANY - 10} documents" in r.err, r
    # each one deleted is told to the fan-out, as one delete does; a failure said for each
    r = await cli(capfd, "delete", "a:010", "a:011", "--yes", "--fanout", "redis://127.0.0.1:1", *s)
    assert r.code == 1 and r.err.count("deleted, but fan-out not told") == 2, r
    assert "0 of 2 documents deleted; 2 failed: a:010, a:011" in r.out, r
    assert (await cli(capfd, "ls", *s, "--limit", "1")).out.startswith("a:012 ")
    # nothing named: refused (the one-DOC form's usage, kept)
    r = await cli(capfd, "delete", "--yes", *s)
    assert r.code == 1 and "give a DOC, several, --prefix P" in r.err, r


@pytest.mark.redis
async def test_delete_many_tells_the_fan_out_of_each(
    store_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Each document deleted is published on --fanout, as one `delete` publishes it (the
    servers that have it open drop it at once)."""
    import redis.asyncio as aioredis
    from scaleout import fanout_url

    url = fanout_url()
    prefix = url.split("prefix=")[1].split("&")[0]
    r = aioredis.Redis.from_url(REDIS_URL)
    sub = r.pubsub()
    await sub.psubscribe(f"{prefix}:*")
    try:
        assert (await sub.get_message(timeout=5))["type"] == "psubscribe"
        ran = await cli(capfd, "delete", "--prefix", "b:", "--yes", "--fanout", url,
                        *store_args(store_url))  # fmt: skip
        assert ran.code == 0 and "5 of 5 documents deleted" in ran.out, ran
        told = {}
        while len(told) < 5:
            m = await sub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert m is not None, told
            told[m["channel"].decode()] = m["data"]
        assert sorted(told) == [f"{prefix}:b:{i}" for i in range(5)]
        assert all(d.startswith(b"D{") and b'"by":"palimpsest delete"' in d for d in told.values())
    finally:
        await sub.aclose()
        await r.aclose()


async def test_compact_and_export_many(
    store_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    s = store_args(store_url)
    r = await cli(capfd, "compact", "--prefix", "b:", "--before", "2", *s)
    assert r.code == 1 and "of 5 documents (b:0" in r.err and "--yes" in r.err, r
    r = await cli(capfd, "compact", "--prefix", "b:", "--before", "2", "--yes", *s)
    assert r.code == 0 and r.out == "palimpsest compact: 5 of 5 documents compacted (or had " \
        "nothing to fold)\n", r  # fmt: skip
    r = await cli(capfd, "inspect", "b:3", "--json", *s)
    info = json.loads(r.out)
    assert info["base_seq"] == 2 and info["head"] == 3, r
    # again: nothing to fold, not a failure; a tag that one document lacks fails it alone
    r = await cli(capfd, "compact", "b:0", "b:1", "--before", "2", "--yes", "--verbose", *s)
    assert r.code == 0 and "b:0: nothing to do: compacted up to 2" in r.out, r

    r = await cli(capfd, "export", "--prefix", "b:", *s)
    assert r.code == 1 and "give -o DIR" in r.err, r
    out = tmp_path / "out"
    r = await cli(capfd, "export", "--prefix", "b:", "a:007", "-o", str(out), "--format", "update",
                  *s)  # fmt: skip
    assert r.code == 0 and f"6 of 6 documents exported to {out}" in r.out, r
    assert sorted(p.name for p in out.iterdir()) == ["a:007.yjs"] + [f"b:{i}.yjs" for i in range(5)]
    d: Doc = Doc()
    d.apply_update((out / "b:3.yjs").read_bytes())
    assert str(d.get("content", type=Text)) == "b3-xy"
    r = await cli(capfd, "export", "b:1", "b:9", "-o", str(out), *s)
    assert r.code == 1 and "1 of 2 documents exported" in r.out and "failed: b:9" in r.out, r
    assert (out / "b:1.txt").read_text() == "b1-xy"
    # the one-document form, as before: to stdout
    r = await cli(capfd, "export", "b:2", *s)
    assert r.code == 0 and r.out == "b2-xy", r


async def test_inspect_of_a_deleted_document_says_it_was_deleted(
    store_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """It said "no document named ...", as of a name never used; the store keeps the
    tombstone, and GET /api/docs/DOC/... answers 410 saying so (deletion.missing)."""
    s = store_args(store_url)
    assert (await cli(capfd, "delete", "b:0", "--yes", *s)).code == 0
    r = await cli(capfd, "inspect", "b:0", *s)
    assert r.code == 1 and "document 'b:0' was deleted" in r.err, r
    assert "no document named" not in r.err
    r = await cli(capfd, "inspect", "b:9", *s)
    assert r.code == 1 and "no document named 'b:9'" in r.err, r


def on_a_terminal(*argv: str) -> tuple[int, str, str]:
    """`palimpsest ARGV` as its own process with stderr on a terminal (a pty): its exit
    status, stdout and what the terminal got."""
    master, slave = pty.openpty()
    # a window of 24 x 100 (a pty starts at 0 x 0, where tqdm draws nothing)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    p = subprocess.Popen(
        [sys.executable, "-m", "palimpsest", *argv], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert p.stdout is not None
    with p.stdout:
        out = p.stdout.read().decode()
    return p.wait(timeout=120), out, b"".join(chunks).decode(errors="replace")


async def test_many_documents_show_a_progress_bar_on_a_terminal(
    store_url: str, tmp_path: Path
) -> None:
    code, out, err = await asyncio.to_thread(
        on_a_terminal, "export", "--prefix", "a:", "-o", str(tmp_path / "x"), "--store", store_url
    )
    assert code == 0 and f"{MANY} of {MANY} documents exported" in out, (out, err)
    assert f"/{MANY} [" in err and "doc/s" in err, err  # the bar, cleared at the end


async def test_import_from_shows_a_bar_on_a_terminal_and_lines_in_a_pipe(tmp_path: Path) -> None:
    """It printed a line per document on a terminal too: 20,004 lines for a big source.
    A bar there now (lines with --verbose; the skipped and failed always); a pipe keeps
    its lines, as scripts and tests/test_import_from.py read them."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"n{i}.txt").write_text(f"text {i}")
    (src / "bad.yjs").write_bytes(b"\xff\xff")
    db = tmp_path / "i.db"
    code, out, err = await asyncio.to_thread(on_a_terminal, "import-from", "dir", str(src),
                                             "--db", str(db))  # fmt: skip
    assert code == 1 and "31 documents" in out and "30 imported" in out, (out, err)
    assert "doc/s" in err and "/31 [" in err, err
    assert "bad: FAILED" in err and "n3: 1 event" not in err, err
    db.unlink()
    code, out, err = await asyncio.to_thread(on_a_terminal, "import-from", "dir", str(src),
                                             "--db", str(db), "--verbose")  # fmt: skip
    assert "n3: 1 event" in err and "bad: FAILED" in err, err
    db.unlink()
    r = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "palimpsest", "import-from", "dir", str(src),
                         "--db", str(db)], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert "n3: 1 event" in r.stderr and "doc/s" not in r.stderr, r.stderr
