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

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, eventually, run_server
from nodehelp import scenario
from pycrdt import Array, Doc, Map, Text
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture
from yclient import connect

from palimpsest.bookkeeping import is_user_data
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
#: write and delete; then alice undoes her deletion, her insertion, and twice more (her
#: mapping is no step: nothing to undo), redoes, restores seq 1 (part of alice's mapping alone: bob
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
            # PUD's mapping alone is no step of alice's: nothing to undo, and no word of
            # it (it was skipped, with a reason blaming others for it)
            assert answer == {"status": 409, "body": {"ok": False, "reason": "nothing to undo"}}
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


#: alice, with a PermanentUserData as y-prosemirror sets it up, types, deletes (PUD pushes
#: its ds record, an event of its own), undoes both, and undoes once more: her only older
#: steps are PUD's mapping. Then her tab reloads: a new Y.Doc, whose new client id PUD
#: registers in users.alice.ids. (The redos come after, in RELOADED_REDO.)
PUD_ONLY_STEPS = scenario("""
const withPud = async (user) => {
  const c = connect(user)
  await c.synced
  c.pud = new Y.PermanentUserData(c.ydoc, c.ydoc.getMap('users'))
  c.pud.setUserMapping(c.ydoc, c.ydoc.clientID, user)
  return c
}
const serverDoc = async () => {
  const r = await fetch(`${HTTP}/api/docs/${DOC}/versions/head?format=update`)
  const d = new Y.Doc()
  Y.applyUpdate(d, new Uint8Array(await r.arrayBuffer()))
  return d
}
const onServer = (what, check) => until(what, async () => check(await serverDoc()))
const ids = (d) => d.getMap('users').get('alice')?.get('ids').length
const serverText = async () => (await serverDoc()).getText('content').toString()
const alice = await withPud('alice')
await onServer('alice mapped', (d) => ids(d) === 1)
alice.ydoc.getText('content').insert(0, 'Hello world')
await until('typed', async () => (await serverText()) === 'Hello world')
alice.ydoc.getText('content').delete(5, 6)
await onServer('ds pushed', (d) => d.getMap('users').get('alice')?.get('ds').length === 1)
const answers = []
for (const want of ['Hello world', '', '']) {
  answers.push(await post('undo?user=alice'))
  await until(`undone to ${want}`, async () => (await serverText()) === want)
}
alice.provider.destroy()
const again = await withPud('alice')  // the reload
await onServer('the new tab registered', (d) => ids(d) === 2)
process.stdout.write(JSON.stringify({ answers }))
again.provider.destroy()
process.exit(0)
""")

#: alice's tab reloads once more (a third client id in PUD), then she redoes three times.
RELOADED_REDO = scenario("""
const serverDoc = async () => {
  const r = await fetch(`${HTTP}/api/docs/${DOC}/versions/head?format=update`)
  const d = new Y.Doc()
  Y.applyUpdate(d, new Uint8Array(await r.arrayBuffer()))
  return d
}
const c = connect('alice')
await c.synced
const pud = new Y.PermanentUserData(c.ydoc, c.ydoc.getMap('users'))
pud.setUserMapping(c.ydoc, c.ydoc.clientID, 'alice')
await until('registered', async () =>
  (await serverDoc()).getMap('users').get('alice').get('ids').length === 3)
const answers = []
for (const want of ['Hello world', 'Hello', 'Hello']) {
  answers.push(await post('redo?user=alice'))
  await until(`redone to ${want}`, async () =>
    (await serverDoc()).getText('content').toString() === want)
}
process.stdout.write(JSON.stringify({ answers }))
c.provider.destroy()
process.exit(0)
""")


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
@pytest.mark.parametrize("restart", [False, True], ids=["live", "restarted"])
async def test_writes_to_user_data_alone_are_not_undo_steps(
    settings: Settings, restart: bool
) -> None:
    """PUD's writes alone (the mapping of a new client id, a ds record pushed after a
    deletion) are no step of the user's: an undo never stops at them ("nothing to undo"
    when only they are left, not a 409 blaming others), and a reload of the page, which
    registers the tab's new client id, keeps the redo stack. Alike with the stacks
    rebuilt from the log after a restart."""
    async with contextlib.AsyncExitStack() as stack:
        srv = await stack.enter_async_context(run_server(settings))
        out = json.loads(await node_scenario(PUD_ONLY_STEPS, srv.ws_url, srv.url, "pudonly"))
        deletion, insertion, nothing = out["answers"]
        for answer in (deletion, insertion):
            assert answer["status"] == 200, answer
            assert "skipped" not in answer["body"], answer  # no PUD step passed over
        assert nothing == {"status": 409, "body": {"ok": False, "reason": "nothing to undo"}}
        if restart:
            await srv.stop()
            srv = await stack.enter_async_context(run_server(settings))
        out = json.loads(await node_scenario(RELOADED_REDO, srv.ws_url, srv.url, "pudonly"))
        first, second, third = out["answers"]
        assert first["status"] == second["status"] == 200, out
        assert third == {"status": 409, "body": {"ok": False, "reason": "nothing to redo"}}


async def test_an_old_undo_of_user_data_alone_is_no_redo_step(settings: Settings) -> None:
    """The log the previous release left when its undo took back a step of PUD writes
    alone (a ds record pushed by itself): an ``undo`` event that deletes only PUD items.
    Its redo was refused for good ("cannot redo: the place what it brings back was in is
    gone"), and came back on top of the redo stack after every other undo and redo. Now
    it is no redo step: nothing to redo, and alice's real steps undo and redo as usual,
    alike on the server that reads that log first and after a restart."""
    from pycrdt import Array, Doc

    from palimpsest.store import NewEvent, open_store

    d: Doc[Any] = Doc(client_id=101)
    users, text = d.get("users", type=Map), d.get("content", type=Text)
    updates: list[bytes] = []

    def write(change: Any) -> None:
        sv = d.get_state()
        with d.transaction():
            change()
        updates.append(d.get_update(sv))

    def first() -> None:  # PUD's mapping and the first words: one step
        users["alice"] = Map({"ids": Array([101]), "ds": Array()})
        text.insert(0, "first step. ")

    write(first)
    write(lambda: text.insert(len(text), "second step. "))
    write(lambda: users["alice"]["ds"].append(b"\x00\x01a delete set"))  # PUD alone
    server: Doc[Any] = Doc(client_id=7)  # the old release's undo: the ds record goes
    server.apply_update(d.get_update())
    sv = server.get_state()
    del server.get("users", type=Map)["alice"]["ds"][0]
    undone = server.get_update(sv)
    async with open_store(f"sqlite:///{settings.db}") as store:
        ts = 1_000_000
        events = [NewEvent("alice", "edit", u, ts=ts + i * 10_000) for i, u in enumerate(updates)]
        events.append(NewEvent("alice", "undo", undone, {"reverts": [3], "at": 3}, ts + 40_000))
        await store.append([("oldpud", events)])

    async def post(srv: RunningServer, op: str) -> tuple[int, dict[str, Any], str]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            r = await http.post(f"/api/docs/oldpud/{op}", params={"user": "alice"})
            head = await http.get("/api/docs/oldpud/versions/head")
            return r.status_code, r.json(), head.json()["roots"]["content"]["value"]

    nothing = {"ok": False, "reason": "nothing to redo"}
    for _ in range(2):  # the second time after a restart: the stacks rebuilt from the log
        async with run_server(settings) as srv:
            assert await post(srv, "redo") == (409, nothing, "first step. second step. ")
            status, body, now = await post(srv, "undo")  # the second step (or its redo)
            assert (status, now) == (200, "first step. "), body
            status, body, now = await post(srv, "redo")
            assert (status, now) == (200, "first step. second step. "), body
            assert await post(srv, "redo") == (409, nothing, "first step. second step. ")


async def test_steps_of_user_data_alone_from_a_snapshot_are_passed_over(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stacks in a snapshot's meta written while PUD's writes alone were steps (the
    previous release's, and this one's before): undo passes such a step over without a
    word (not "skipped", not a 409 blaming others), and answers "nothing to undo" when
    only such steps are left."""
    from pycrdt import Array, Doc

    import palimpsest.history  # noqa: F401 - first: it imports bookkeeping, not the reverse
    from palimpsest.bookkeeping import BookkeepingIds
    from palimpsest.store import NewEvent, open_store

    d: Doc[Any] = Doc(client_id=101)
    users, text = d.get("users", type=Map), d.get("content", type=Text)
    updates: list[bytes] = []
    for change in (
        lambda: users.__setitem__("alice", Map({"ids": Array([101]), "ds": Array()})),
        lambda: text.insert(0, "hello"),
        lambda: users["alice"]["ds"].append(b"\x00\x01a delete set"),
    ):
        sv = d.get_state()
        with d.transaction():
            change()
        updates.append(d.get_update(sv))
    async with open_store(f"sqlite:///{settings.db}") as store:
        ts = 1_000_000
        events = [NewEvent("alice", "edit", u, ts=ts + i * 10_000) for i, u in enumerate(updates)]
        await store.append([("metapud", events)])
    settings.snapshot_every = 1
    with monkeypatch.context() as m:  # recorded as before: every write a step
        m.setattr(BookkeepingIds, "only", lambda self, ins, dels: False)
        async with run_server(settings) as srv:
            await srv.backend.rooms.get("metapud")  # (loaded: a snapshot of the stacks)
    async with open_store(f"sqlite:///{settings.db}") as store:
        snap = await store.latest_snapshot("metapud")
        assert snap is not None and snap.seq == 3
        assert len(snap.meta["undo"]["actors"]["alice"]["undo"]) == 3  # PUD's two too
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        answers = [
            (r.status_code, r.json())
            for r in [
                await http.post("/api/docs/metapud/undo", params={"user": "alice"})
                for _ in range(2)
            ]
        ]
        assert answers[0][0] == 200 and answers[0][1]["reverts"] == [2], answers
        assert "skipped" not in answers[0][1], answers
        assert answers[1] == (409, {"ok": False, "reason": "nothing to undo"}), answers


def _user(doc_map: Map, name: str) -> None:
    doc_map[name] = Map({"ids": Array([1]), "ds": Array([])})


def test_a_root_seen_not_user_data_is_looked_at_again_as_it_changes() -> None:
    """is_user_data remembers the key that showed a root not to be PUD's (so that a map
    of many maps is not enumerated on every undo): its answer still follows the root as
    it becomes and stops being PUD-like, whatever becomes of that key."""
    doc: Doc[Any] = Doc()
    root = doc.get("users", type=Map)
    assert not is_user_data(root)  # empty
    with doc.transaction():
        root["shape-1"] = Map({"x": 1})
        root["shape-2"] = Map({"x": 2})
        _user(root, "ann")
    assert not is_user_data(root)
    assert not is_user_data(doc.get("users", type=Map))  # asked again, a wrapper anew
    del root["shape-1"]
    assert not is_user_data(root)  # the other shape still
    _user(root, "shape-2")  # the shape that answered becomes a user's entry
    assert is_user_data(root)
    root["shape-3"] = 3  # not a map
    assert not is_user_data(root)
    _user(root, "shape-3")
    assert is_user_data(root)
    root["shape-2"]["ds"] = Map()  # an entry that stops holding the arrays
    assert not is_user_data(root)
    root["shape-2"]["ds"] = Array([])
    assert is_user_data(root)
    # another root answered by a key remembered from the first
    other = doc.get("other", type=Map)
    _user(other, "shape-2")
    assert is_user_data(other)
    with doc.transaction():
        for key in list(root.keys()):
            del root[key]
    assert not is_user_data(root)  # empty again


def test_many_maps_are_not_user_data() -> None:
    doc: Doc[Any] = Doc()
    root = doc.get("shapes", type=Map)
    with doc.transaction():
        for i in range(2000):
            root[f"s{i}"] = Map({"x": i})
    for _ in range(3):
        assert not is_user_data(root)
    with doc.transaction():
        for i in range(2000):
            root[f"s{i}"] = Map({"ids": Array([i]), "ds": Array([])})
    assert is_user_data(root)
