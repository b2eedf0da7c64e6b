"""`palimpsest copy --replace` as an operator runs it: `--quiet` says nothing but errors,
a document the target deleted can be brought back on purpose, and edits a server
commits to the replaced document while the copy runs end up in the name's tombstone.
Real SQLite files and the real PostgreSQL (a schema per test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import eventually
from pycrdt import Doc, Text
from scaleout import fresh_schema
from test_admin_cli import cli
from test_replace_open import source_with
from test_undo import edit, make_settings, serving
from yclient import connect

from palimpsest import protocol as P
from palimpsest.cli.copy import copy
from palimpsest.deletion import replaces_in
from palimpsest.snapshots import load
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


async def _typed(url: str, doc: Doc, doc_name: str, text: str) -> None:
    """`text` typed at the end of `doc` and committed to the store at `url` by a writer
    of its own (another connection, as a server beside the copy is)."""
    before = doc.get_state()
    content = doc.get("content", type=Text)
    content.insert(len(str(content)), text)
    store = open_store(url)
    await store.start()
    try:
        await store.append([(doc_name, [NewEvent("ann", "edit", doc.get_update(before))])])
    finally:
        await store.stop()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_edits_committed_while_the_copy_reads_go_into_the_tombstone(
    tmp_path: Path, kind: str
) -> None:
    """An edit committed to the target's document after the copy read its state vector
    and before the import was left out of the replace's tombstone (a documented window):
    a tab whose only edits were those could bring them back into the new document. The
    import now refuses a document that moved since the read (in its own transaction),
    and the copy reads it again: the tombstone holds every edit the old document had."""
    async with fresh_schema() as pg:
        dst = f"sqlite:///{tmp_path / 'dst.db'}" if kind == "sqlite" else pg
        await _window(tmp_path, dst)


async def _window(tmp_path: Path, dst: str) -> None:
    src = await source_with(tmp_path / "src.db", "d", "new text")
    old = await target_with(dst, "d", "old")
    typed = []

    async def between(doc: str) -> None:  # a server beside the copy commits an edit
        if not typed:
            typed.append(doc)
            await _typed(dst, old, doc, " and more")

    assert await copy(src, dst, replace=True, quiet=True, between=between) == 0
    assert typed == ["d"]
    store = open_store(dst)
    await store.start()
    try:
        tomb = await store.tombstone("d")
        assert tomb is not None
        sv = P.decode_state_vector(tomb)
        assert sv[77] == len("old and more"), sv  # 3 before: " and more" was left out
        assert replaces_in(sv) == 1, sv
        assert str((await load(store, "d")).doc.get("content", type=Text)) == "new text"
    finally:
        await store.stop()


async def test_a_document_that_never_stops_moving_is_not_replaced(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A writer that commits between every read and import: the copy gives up on that
    document (exit 1) after a few tries, says why and what to do, and leaves the
    target's document as it is, every edit in it."""
    src = await source_with(tmp_path / "src.db", "d", "new text")
    dst = f"sqlite:///{tmp_path / 'dst.db'}"
    old = await target_with(dst, "d", "old")

    async def between(doc: str) -> None:
        await _typed(dst, old, doc, "!")

    capfd.readouterr()
    assert await copy(src, dst, replace=True, quiet=True, between=between) == 1
    err = capfd.readouterr().err
    assert "d: not copied" in err and "kept changing" in err, err
    assert "stop the servers" in err, err
    store = open_store(dst)
    await store.start()
    try:
        text = str((await load(store, "d")).doc.get("content", type=Text))
        assert text.startswith("old!") and set(text[3:]) == {"!"}, text
        assert await store.tombstone("d") is None
    finally:
        await store.stop()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_document_deleted_after_a_replace_is_brought_back_on_purpose(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], kind: str
) -> None:
    """A document replaced from the source, then deleted in the target: a copy (with
    --replace too) refuses to bring it back, as documented, and said neither in its
    message nor in --help how to do it on purpose. The message names --undelete, which
    copies it: the source's document, log and all, is the name's again; the tombstone
    stays, so a client's copy of the target's old document is still refused."""
    async with fresh_schema() as pg:
        dst = f"sqlite:///{tmp_path / 'dst.db'}" if kind == "sqlite" else pg
        await _undelete(tmp_path, capfd, dst)


async def _undelete(tmp_path: Path, capfd: pytest.CaptureFixture[str], dst: str) -> None:
    src = await source_with(tmp_path / "src.db", "d", "new text")
    old = await target_with(dst, "d", "old")
    r = await cli(capfd, "copy", "--from", src, "--to", dst, "--replace", "--quiet")
    assert r.code == 0, r
    r = await cli(capfd, "delete", "d", "--yes", "--store", dst)
    assert r.code == 0, r
    for extra in ([], ["--replace"]):
        r = await cli(capfd, "copy", "--from", src, "--to", dst, "--doc", "d", *extra)
        assert r.code == 1, r
        assert "d: not copied: it was deleted in the target" in r.err, r.err
        assert "--undelete" in r.err, r.err  # what to do, when it is meant
    r = await cli(capfd, "copy", "--help")
    assert "--undelete" in r.out, r.out
    store = open_store(dst)
    await store.start()
    try:
        tomb = await store.tombstone("d")
    finally:
        await store.stop()
    assert tomb is not None
    r = await cli(capfd, "copy", "--from", src, "--to", dst, "--doc", "d", "--undelete")
    assert r.code == 0, r
    assert "d: brought back" in r.err, r.err
    assert "copied 1 of 1 documents (1 events)" in r.out, r.out
    store = open_store(dst)
    await store.start()
    try:
        assert str((await load(store, "d")).doc.get("content", type=Text)) == "new text"
        assert await store.tombstone("d") == tomb  # what was deleted stays refused
    finally:
        await store.stop()
    # run again: already there, nothing to bring back
    r = await cli(capfd, "copy", "--from", src, "--to", dst, "--doc", "d")
    assert r.code == 0 and "1 already there" in r.out, r
    if not dst.startswith("sqlite:"):
        return
    # a server serves it: a fresh client gets it and edits it; a client's copy of the
    # target's old document (client 77) is still refused
    async with serving(make_settings(Path(dst.removeprefix("sqlite:///")))) as srv:
        async with connect(srv.ws_url, "d", "ann") as fresh:
            assert fresh.content == "new text", fresh.content
            await edit(fresh, srv, "d", lambda: fresh.insert(0, "back: "))
        async with connect(srv.ws_url, "d", "dan", ydoc=old, wait_sync=False) as stale:
            await eventually(lambda: stale.close_code is not None, what="the stale copy refused")
            assert stale.close_code == 4409, (stale.close_code, stale.close_reason)
        async with connect(srv.ws_url, "d", "eve") as after:
            assert after.content == "back: new text", after.content


async def test_a_deleted_document_is_brought_back_from_a_backup(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """docs/operations.md's recipe: a document deleted by mistake, brought back from a
    backup taken before, with `copy --doc NAME --undelete` (skipped without it)."""
    db, backup = tmp_path / "live.db", tmp_path / "backup.db"
    await target_with(f"sqlite:///{db}", "d", "precious")
    r = await cli(capfd, "backup", "--db", str(db), str(backup), "--quiet")
    assert r.code == 0, r
    r = await cli(capfd, "delete", "d", "--yes", "--db", str(db))
    assert r.code == 0, r
    args = ("copy", "--from", f"sqlite:///{backup}", "--to", f"sqlite:///{db}", "--doc", "d")
    r = await cli(capfd, *args)
    assert r.code == 1 and "--undelete brings it back" in r.err, r
    r = await cli(capfd, *args, "--undelete", "--quiet")
    assert r.code == 0 and r.err == "", r
    store = open_store(f"sqlite:///{db}")
    await store.start()
    try:
        assert str((await load(store, "d")).doc.get("content", type=Text)) == "precious"
        assert await store.tombstone("d") is not None
    finally:
        await store.stop()
