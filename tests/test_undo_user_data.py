"""Server-side undo, redo, restore and revert leave Yjs's Y.PermanentUserData alone.

Editors with y-prosemirror's (or y-tiptap's) attribution keep a Y.PermanentUserData
(PUD) in a root map (``users``): per user name a map holding the arrays ``ids`` (their
Yjs client ids) and ``ds`` (the delete sets of their deletions, pushed right after each).
Those writes arrive with the user's edit and joined its undo step. Before, an undo of a
deletion took its ``ds`` record out with it, an undo far enough took out the user's whole
entry (made in their first step), and a restore to a version before another user came
took out theirs: every PUD client then threw ``TypeError: Cannot read properties of
undefined (reading 'get')`` in PUD's observer (Node exited, a browser page failed).
Yjs's own UndoManager never touches PUD: it is scoped to the types it tracks, and
y-prosemirror relies on PUD never being undone (docs/undo.md, "Bookkeeping roots")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually, run_server
from nodehelp import scenario
from pycrdt import Map, Text
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture
from yclient import connect

from palimpsest.settings import Settings


@pytest.fixture
def settings(db_path: Path) -> Settings:
    # every event its own undo step: which step an undo takes is then certain
    return Settings(db=str(db_path), undo_capture_ms=0)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with run_server(settings) as s:
        yield s


#: alice and bob, each with a PermanentUserData on ``users`` as y-prosemirror sets it up,
#: write and delete; then alice undoes her deletion, her insertion and (nothing left of
#: them but PUD) her mapping, redoes, restores seq 1 (part of alice's mapping alone: bob
#: not in ``users`` yet), undoes that, and a teacher reverts alice. After each, every client's
#: ``users`` and the server's are what they were after the edits; no client throws; a
#: client joining at the end sets up its PUD without throwing.
PUD_SCENARIO = scenario("""
const errors = []
let steps = []
process.on('uncaughtException', (e, origin) => {
  if (origin === 'unhandledRejection') {  // the scenario's own failure (until's)
    console.error(e, JSON.stringify({ steps, errors }))
    process.exit(1)
  }
  errors.push(String(e && e.stack || e))  // a client's: PUD's observers
})
const users = (ydoc) => Object.fromEntries([...ydoc.getMap('users').entries()].map(
  ([name, u]) => [name, u && u.get ? { ids: u.get('ids')?.toArray(),
    ds: u.get('ds')?.length } : String(u)]))
const serverDoc = async () => {
  const r = await fetch(`${HTTP}/api/docs/${DOC}/versions/head?format=update`)
  const d = new Y.Doc()
  Y.applyUpdate(d, new Uint8Array(await r.arrayBuffer()))
  return d
}
const withPud = async (user) => {
  const c = connect(user)
  await c.synced
  c.pud = new Y.PermanentUserData(c.ydoc, c.ydoc.getMap('users'))
  c.pud.setUserMapping(c.ydoc, c.ydoc.clientID, user)
  return c
}
const text = (c) => c.ydoc.getText('content').toString()
const onServer = (what, check) => until(what, async () => check(await serverDoc()))
const mapped = (user) => (d) => d.getMap('users').get(user)?.get('ids').length === 1
const alice = await withPud('alice')
await onServer('alice mapped', mapped('alice'))
const bob = await withPud('bob')
await onServer('bob mapped', mapped('bob'))
alice.ydoc.getText('content').insert(0, 'Hello world. ')
await until('bob has it', () => text(bob) === 'Hello world. ')
bob.ydoc.getText('content').insert(13, 'Bob was here.')
await until('alice has it', () => text(alice) === 'Hello world. Bob was here.')
alice.ydoc.getText('content').delete(6, 7)   // "world. "; PUD pushes its ds record
await until('alice ds on the server', async () =>
  (await serverDoc()).getMap('users').get('alice')?.get('ds').length === 1)
await until('bob has the ds', () => bob.ydoc.getMap('users').get('alice').get('ds').length === 1)
steps = [{ step: 'edits', text: text(alice), users: users(alice.ydoc) }]
const settle = async (step, answer, want) => {
  await until(`${step}: alice has ${want}`, () => text(alice) === want)
  await until(`${step}: bob has ${want}`, () => text(bob) === want)
  const s = await serverDoc()
  await new Promise((resolve) => setTimeout(resolve, 100))  // PUD's setTimeout observers
  steps.push({ step, answer, text: text(alice), server: s.getText('content').toString(),
    users: users(alice.ydoc), bobUsers: users(bob.ydoc), serverUsers: users(s) })
}
await settle('undo deletion', await post('undo?user=alice'), 'Hello world. Bob was here.')
await settle('undo insertion', await post('undo?user=alice'), 'Bob was here.')
await settle('undo mapping', await post('undo?user=alice'), 'Bob was here.')
await settle('undo mapping 2', await post('undo?user=alice'), 'Bob was here.')
await settle('redo', await post('redo?user=alice'), 'Hello world. Bob was here.')
await settle('restore 1', await post('restore?user=alice', { seq: 1 }), '')
await settle('undo restore', await post('undo?user=alice'), 'Hello world. Bob was here.')
await settle('revert alice', await post('revert?user=teacher', { actor: 'alice', since: 0 }),
  'Bob was here.')
const carol = await withPud('carol')
await until('carol mapped', () => alice.ydoc.getMap('users').has('carol'))
const ids = { alice: alice.ydoc.clientID, bob: bob.ydoc.clientID }
process.stdout.write(JSON.stringify({ steps, errors, ids, carol: users(carol.ydoc) }))
for (const c of [alice, bob, carol]) c.provider.destroy()
process.exit(0)
""")


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_undo_redo_restore_revert_keep_permanent_user_data(server: RunningServer) -> None:
    out = json.loads(await node_scenario(PUD_SCENARIO, server.ws_url, server.url, "pud"))
    assert out["errors"] == [], out["errors"]
    ids = out["ids"]
    first, *after = out["steps"]
    users: dict[str, Any] = {
        "alice": {"ids": [ids["alice"]], "ds": 1},
        "bob": {"ids": [ids["bob"]], "ds": 0},
    }
    assert first == {"step": "edits", "text": "Hello Bob was here.", "users": users}
    for step in after:
        where = step["step"]
        assert step["text"] == step["server"], step
        assert step["users"] == step["bobUsers"] == step["serverUsers"] == users, step
        answer = step["answer"]
        if where.startswith("undo mapping"):
            # alice's steps below hold nothing but PUD's mapping: nothing of them to undo
            assert answer["status"] == 409 and answer["body"]["ok"] is False, step
            assert answer["body"]["skipped"] == [[2], [1]], step
        else:
            assert answer["status"] == 200 and answer["body"].get("ok", True) is True, step
    assert out["carol"]["alice"] == users["alice"] and out["carol"]["bob"] == users["bob"]


async def test_roots_named_in_undo_skip_roots_are_left_as_they_are(db_path: Path) -> None:
    """A root named in ``undo_skip_roots`` (an editor's own bookkeeping, which no
    detection knows) keeps what it holds now through undo, redo and restore; a root not
    named, written in the same transactions, is undone with the text."""
    settings = Settings(db=str(db_path), undo_capture_ms=0, undo_skip_roots=("stats",))
    async with (
        run_server(settings) as srv,
        connect(srv.ws_url, "named", "alice") as a,
        connect(srv.ws_url, "named", "bob") as b,
        httpx.AsyncClient(base_url=srv.url, timeout=10) as http,
    ):

        def live() -> tuple[str, dict[str, Any], dict[str, Any]] | None:
            room = srv.backend.rooms.get_loaded("named")
            if room is None:
                return None
            d = room.doc
            return (
                str(d.get("content", type=Text)),
                d.get("stats", type=Map).to_py() or {},
                d.get("other", type=Map).to_py() or {},
            )

        def write(c: Any, pos: int, text: str, edits: int) -> None:
            with c.doc.transaction():
                c.doc.get("content", type=Text).insert(pos, text)
                c.doc.get("stats", type=Map)["edits"] = edits
                c.doc.get("other", type=Map)["edits"] = edits

        async def has(want: tuple[str, dict[str, Any], dict[str, Any]]) -> None:
            await eventually(lambda: live() == want, what=f"{want} on the server: {live()}")

        write(a, 0, "hello", 1)
        await has(("hello", {"edits": 1}, {"edits": 1}))
        await eventually(lambda: b.content == "hello", what="bob has alice's word")
        write(b, 5, " world", 2)
        await has(("hello world", {"edits": 2}, {"edits": 2}))

        async def post(path: str, user: str, body: Any = None) -> dict[str, Any]:
            r = await http.post(f"/api/docs/named/{path}", params={"user": user}, json=body)
            assert r.status_code == 200, r.text
            return dict(r.json())

        await post("undo", "bob")
        await has(("hello", {"edits": 2}, {"edits": 1}))
        await post("redo", "bob")
        await has(("hello world", {"edits": 2}, {"edits": 2}))
        await post("restore", "bob", {"seq": 1})
        await has(("hello", {"edits": 2}, {"edits": 1}))
        await post("undo", "bob")  # the restore
        await has(("hello world", {"edits": 2}, {"edits": 2}))
        await post("revert", "teacher", {"actor": "alice", "since": 0})
        await has((" world", {"edits": 2}, {"edits": 2}))


def test_undo_skip_roots_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALIMPSEST_UNDO_SKIP_ROOTS", "stats, meta")
    assert Settings.from_env().undo_skip_roots == ("stats", "meta")


def test_undo_skip_roots_flag_is_repeatable_and_comma_separated() -> None:
    import argparse

    from palimpsest.cli import serve

    sub = argparse.ArgumentParser().add_subparsers()
    serve.register(sub)
    args = sub.choices["serve"].parse_args(["--undo-skip-roots", "users", "--undo-skip-roots=a, b"])
    assert serve._roots(args.undo_skip_roots) == ("users", "a", "b")
    assert serve._roots(sub.choices["serve"].parse_args([]).undo_skip_roots) is None
