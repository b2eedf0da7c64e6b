"""The CLI over many documents: `palimpsest ls`, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import PG_URL
from pycrdt import Doc, Text

from palimpsest.cli import main
from palimpsest.cli.listing import DEFAULT_LIMIT
from palimpsest.store import open_store
from palimpsest.store.base import NewEvent

#: the "a:" documents: more than ls prints unasked
MANY = DEFAULT_LIMIT + 15


class Ran:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"<exit {self.code}; out={self.out[-800:]!r}; err={self.err[-800:]!r}>"


async def cli(capfd: pytest.CaptureFixture[str], *argv: str) -> Ran:
    """`palimpsest ARGV` in this process (in a thread: the command runs its own loop)."""
    capfd.readouterr()
    try:
        code = await asyncio.to_thread(main, list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capfd.readouterr()
    return Ran(code, out, err)


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
