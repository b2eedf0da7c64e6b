"""`palimpsest copy --replace` as an operator runs it: `--quiet` says nothing but errors,
a document the target deleted can be brought back on purpose, and edits a server
commits to the replaced document while the copy runs end up in the name's tombstone.
Real SQLite files and the real PostgreSQL (a schema per test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycrdt import Doc, Text
from test_admin_cli import cli
from test_replace_open import source_with

from palimpsest.store import open_store
from palimpsest.store.base import NewEvent


async def target_with(url: str, doc: str, text: str, client_id: int = 77) -> Doc:
    """`doc` written into the store at `url` by a Yjs client of `client_id`, plus another
    document, so that the target has events of its own; the Y.Doc."""
    d: Doc = Doc(client_id=client_id)
    d["content"] = Text(text)
    other: Doc = Doc(client_id=client_id + 1)
    other["content"] = Text("other")
    store = open_store(url)
    await store.start()
    try:
        await store.append([(doc, [NewEvent("ann", "edit", d.get_update())]),
                            ("other", [NewEvent("ann", "edit", other.get_update())])])  # fmt: skip
    finally:
        await store.stop()
    return d


async def test_quiet_says_nothing_but_errors(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`copy --replace --quiet` into a store with events of its own printed the
    changefeed note (followers restart from 0) and the replaced line on stderr: only
    errors go there with --quiet; the summary (stdout) says what was replaced."""
    src = await source_with(tmp_path / "src.db", "d", "new text")
    dst = f"sqlite:///{tmp_path / 'dst.db'}"
    await target_with(dst, "d", "old")
    r = await cli(capfd, "copy", "--from", src, "--to", dst, "--replace", "--quiet")
    assert r.code == 0, r
    assert r.err == "", r.err
    assert "copied 1 of 1 documents" in r.out and "1 replaced" in r.out, r.out
    # an error still goes to stderr with --quiet
    r = await cli(capfd, "copy", "--from", src, "--to", dst, "--doc", "other", "--quiet")
    assert r.code == 0 and r.err == "", r  # nothing of "other" in the source: nothing to say
    await target_with(dst, "d2", "theirs")
    await target_with(src, "d2", "mine", client_id=90)
    r = await cli(capfd, "copy", "--from", src, "--to", dst, "--doc", "d2", "--quiet")
    assert r.code == 1, r
    assert "d2: not copied" in r.err and "--replace overwrites it" in r.err, r.err
    # without --quiet the notes are there, as before
    r = await cli(capfd, "copy", "--from", src, "--to", dst, "--replace", "--doc", "d")
    assert r.code == 0, r
    assert "d: replaced: the target's" in r.err, r.err
    assert "followers of the source's changefeed" in r.err, r.err
