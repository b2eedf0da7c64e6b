"""Revert one writer's changes since a version (POST /api/docs/{doc}/revert), keeping
everybody else's: a teacher takes out what one student did in a class document.

Before, a restore was the only way back, and it is whole-document: it took out every
other student's later text too; only the student's own undo could take out theirs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, run_server
from nodehelp import scenario
from test_auth import SECRET, token
from test_interop_node import node_modules, node_scenario  # noqa: F401 - the fixture
from yclient import connect

from palimpsest import client
from palimpsest.client.cli import main
from palimpsest.settings import Settings

ANN = "Ann: intro.\n"
S06 = "s06: first.\n"
LATE = "s06: LATE.\n"
BOB = "Bob: later.\n"
ANN2 = "Ann: later.\n"
#: the text before the revert: s06 wrote LATE and deleted ann's "intro"
BEFORE = "Ann: .\n" + S06 + LATE + BOB + ANN2
#: after: s06's later insert gone, ann's word back, bob's and ann's later lines kept
AFTER = ANN + S06 + BOB + ANN2


@pytest.fixture
def settings(db_path: Path) -> Settings:
    # every event its own undo step: which step an undo takes is then certain
    return Settings(db=str(db_path), unload_after_seconds=0.5, undo_capture_ms=0)


async def _head(c: httpx.AsyncClient, doc: str) -> dict[str, Any]:
    r = await c.get(f"/api/docs/{doc}/versions/head")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _revert(
    c: httpx.AsyncClient, doc: str, body: dict[str, Any], user: str = "teacher", **params: str
) -> dict[str, Any]:
    r = await c.post(f"/api/docs/{doc}/revert", json=body, params={"user": user, **params})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _write_the_class(server: RunningServer, doc: str) -> int:
    """ann, s06 and bob write `BEFORE` into `doc`; the seq before s06's later changes."""
    async with (
        client.connect(server.ws_url, doc, user="ann") as ann,
        client.connect(server.ws_url, doc, user="s06") as s06,
        client.connect(server.ws_url, doc, user="bob") as bob,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        ann.text().insert(0, ANN)
        await ann.flush()
        await s06.wait_for(lambda: str(s06.text()) == ANN)
        s06.text().insert(len(ANN), S06)
        await s06.flush()
        version = (await _head(c, doc))["seq"]
        s06.text().insert(len(ANN + S06), LATE)
        await s06.flush()
        s06.text().delete(len("Ann: "), len("intro"))
        await s06.flush()
        await bob.wait_for(lambda: str(bob.text()) == "Ann: .\n" + S06 + LATE)
        bob.text().insert(len(str(bob.text())), BOB)
        await bob.flush()
        await ann.wait_for(lambda: str(ann.text()).endswith(BOB))
        ann.text().insert(len(str(ann.text())), ANN2)
        await ann.flush()
        assert (await _head(c, doc))["roots"]["content"]["value"] == BEFORE
        return int(version)


async def test_revert_takes_out_one_writers_changes_and_keeps_the_others(
    server: RunningServer,
) -> None:
    version = await _write_the_class(server, "class")
    async with (
        client.connect(server.ws_url, "class", user="ann") as ann,
        client.connect(server.ws_url, "class", user="bob") as bob,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        await ann.wait_for(lambda: str(ann.text()) == BEFORE)
        head = (await _head(c, "class"))["seq"]

        # the dry run says what it would do, and writes nothing
        would = await _revert(c, "class", {"actor": "s06", "since": version}, dry_run="true")
        assert would == {
            "seq": None,
            "actor": "s06",
            "since": version,
            "until": head,
            "dry_run": True,
            "head": head,
            "reverts": [version + 1, version + 2],
            "removed": {"characters": len(LATE), "items": 0},
            "added": {"characters": len("intro"), "items": 0},
        }
        assert (await _head(c, "class"))["seq"] == head

        did = await _revert(c, "class", {"actor": "s06", "since": version})
        assert did["seq"] == head + 1 and did["reverts"] == [version + 1, version + 2]
        assert (did["removed"], did["added"]) == (would["removed"], would["added"])
        assert "removed_others" not in did  # only s06's own text went
        now = await _head(c, "class")
        assert now["roots"]["content"]["value"] == AFTER
        # the open clients converge to it
        await ann.wait_for(lambda: str(ann.text()) == AFTER)
        await bob.wait_for(lambda: str(bob.text()) == AFTER)

        # one event of kind revert by the teacher, naming what it reverted
        r = await c.get("/api/docs/class/events", params={"after": head})
        (ev,) = r.json()["events"]
        assert (ev["kind"], ev["actor"], ev["reverts"]) == (
            "revert", "teacher", [version + 1, version + 2],
        )  # fmt: skip
        assert (ev["meta"]["writer"], ev["meta"]["since"]) == ("s06", version)

        # the words brought back are their writer's in blame, not the teacher's
        r = await c.get("/api/docs/class/blame", params={"join": "actor"})
        runs = [(run["text"], run["actor"]) for run in r.json()["roots"]["content"]["runs"]]
        assert runs == [(ANN, "ann"), (S06, "s06"), (BOB, "bob"), (ANN2, "ann")], runs

        # done again: nothing left to revert, and no event
        again = await _revert(c, "class", {"actor": "s06", "since": version})
        assert (again["seq"], again["reason"]) == (None, "nothing to revert")
        assert (await _head(c, "class"))["seq"] == head + 1

        # the teacher's undo takes the revert back, their redo does it again
        r = await c.post("/api/docs/class/undo", params={"user": "teacher"})
        assert r.status_code == 200 and r.json()["reverts"] == [head + 1], r.text
        await ann.wait_for(lambda: str(ann.text()) == BEFORE)
        assert (await _head(c, "class"))["roots"]["content"]["value"] == BEFORE
        r = await c.post("/api/docs/class/redo", params={"user": "teacher"})
        assert r.status_code == 200, r.text
        await bob.wait_for(lambda: str(bob.text()) == AFTER)

        # the Python client
        async with client.History(server.url, user="teacher") as h:
            nothing = await h.revert("class", "s06", since=head + 3)
            assert (nothing.seq, nothing.reason, nothing.reverts) == (
                None, "nothing to revert", [],
            )  # fmt: skip


async def test_a_writers_delete_and_their_undo_of_it_are_reverted_as_nothing(
    server: RunningServer,
) -> None:
    """s06 deletes a word of ann's and takes it back with Ctrl-Z (an undo event), then
    writes on: the revert takes out what they wrote and keeps ann's word. (Counted in,
    the undo's copy of the word was deleted and the original, which Yjs brings back
    only once, stayed deleted: the revert lost ann's word.)"""
    async with (
        client.connect(server.ws_url, "ctrl-z", user="ann") as ann,
        client.connect(server.ws_url, "ctrl-z", user="s06") as s06,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        ann.text().insert(0, "hello world")
        await ann.flush()
        await s06.wait_for(lambda: str(s06.text()) == "hello world")
        version = (await _head(c, "ctrl-z"))["seq"]
        s06.text().delete(0, len("hello "))
        await s06.flush()
        assert (await s06.undo()).ok
        await s06.wait_for(lambda: str(s06.text()) == "hello world")
        s06.text().insert(len("hello world"), " (s06)")
        await s06.flush()
        await ann.wait_for(lambda: str(ann.text()) == "hello world (s06)")
        for params in ({"dry_run": "true"}, {}):
            got = await _revert(c, "ctrl-z", {"actor": "s06", "since": version}, **params)
            assert got["reverts"] == [version + 1, version + 2, version + 3], got
            assert (got["removed"], got["added"]) == (
                {"characters": len(" (s06)"), "items": 0}, {"characters": 0, "items": 0},
            ), got  # fmt: skip
        await ann.wait_for(lambda: str(ann.text()) == "hello world")
        assert (await _head(c, "ctrl-z"))["roots"]["content"]["value"] == "hello world"


async def test_a_writers_text_their_own_undo_brought_back_is_reverted(
    server: RunningServer,
) -> None:
    """s06 writes a line, deletes it, and brings it back with their undo (a copy): the
    line is theirs in blame, and a revert of s06 takes it out. (The delete and its undo
    were left out as nothing, and the line's items, deleted, were all the revert looked
    at: the copy stayed.)"""
    async with (
        client.connect(server.ws_url, "mine", user="ann") as ann,
        client.connect(server.ws_url, "mine", user="s06") as s06,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        ann.text().insert(0, ANN)
        await ann.flush()
        await s06.wait_for(lambda: str(s06.text()) == ANN)
        version = (await _head(c, "mine"))["seq"]
        s06.text().insert(len(ANN), S06)
        await s06.flush()
        s06.text().delete(len(ANN), len(S06))
        await s06.flush()
        assert (await s06.undo()).ok
        await ann.wait_for(lambda: str(ann.text()) == ANN + S06)
        r = await c.get("/api/docs/mine/blame", params={"join": "actor"})
        runs = [(x["text"], x["actor"]) for x in r.json()["roots"]["content"]["runs"]]
        assert runs == [(ANN, "ann"), (S06, "s06")], runs
        for params in ({"dry_run": "true"}, {}):
            got = await _revert(c, "mine", {"actor": "s06", "since": version}, **params)
            assert got["reverts"] == [version + 1, version + 2, version + 3], got
            assert (got.get("reason"), got.get("removed")) == (
                None, {"characters": len(S06), "items": 0},
            ), got  # fmt: skip
        await ann.wait_for(lambda: str(ann.text()) == ANN)
        assert (await _head(c, "mine"))["roots"]["content"]["value"] == ANN


async def test_text_an_undo_of_a_restore_brought_back_is_its_writers_in_blame_diff_and_revert(
    settings: Settings,
) -> None:
    """bob writes, ann writes, bob restores the version before ann's text and undoes
    the restore: ann's text is back, as new items the server inserted (copies). Blame
    named ann, but a diff credited the insertion to bob's undo (``diff?actor=ann`` was
    empty) and a revert of ann answered "nothing to revert" (it looked only at ann's
    own items, deleted by the restore). All three now say ann's, also in a new
    process (the copies are read from the log, not from the room's memory)."""
    intro, words = "Bob: intro.\n", "Ann: her words.\n"
    async with (
        run_server(settings) as server,
        client.connect(server.ws_url, "undone", user="bob") as bob,
        client.connect(server.ws_url, "undone", user="ann") as ann,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        bob.text().insert(0, intro)
        await bob.flush()
        await ann.wait_for(lambda: str(ann.text()) == intro)
        version = (await _head(c, "undone"))["seq"]
        ann.text().insert(len(intro), words)
        await ann.flush()
        await bob.wait_for(lambda: str(bob.text()) == intro + words)
        r = await c.post("/api/docs/undone/restore", json={"seq": version}, params={"user": "bob"})
        assert r.status_code == 200 and r.json()["seq"] == version + 2, r.text
        await ann.wait_for(lambda: str(ann.text()) == intro)
        r = await c.post("/api/docs/undone/undo", params={"user": "bob"})
        assert r.status_code == 200 and r.json()["seq"] == version + 3, r.text
        await ann.wait_for(lambda: str(ann.text()) == intro + words)

        async def views() -> tuple[Any, ...]:
            r = await c.get("/api/docs/undone/blame", params={"join": "actor"})
            blame = [(x["text"], x["actor"]) for x in r.json()["roots"]["content"]["runs"]]
            ops = {}
            for who in ("ann", "bob"):
                params = {"from": version, "actor": who, "join": "actor"}
                r = await c.get("/api/docs/undone/diff", params=params)
                assert r.status_code == 200, r.text
                ops[who] = [(x["op"], x["text"], x["actor"], x["seq"])
                            for x in r.json()["roots"]["content"]["ops"]]  # fmt: skip
            return blame, ops["ann"], ops["bob"]

        blame, by_ann, by_bob = await views()
        assert blame == [(intro, "bob"), (words, "ann")], blame
        # since the version before her text: her insertion, in her event; bob's restore
        # and its undo together changed nothing
        assert by_ann == [("omitted", "\n", None, None),
                          ("insert", words, "ann", version + 1)], by_ann  # fmt: skip
        assert by_bob == [], by_bob
        # a diff spanning the undo but not the restore: what the undo brought back is
        # the undoer's change (as before)
        r = await c.get("/api/docs/undone/diff", params={"from": version + 2, "actor": "bob"})
        ops = [(x["op"], x["text"], x["actor"]) for x in r.json()["roots"]["content"]["ops"]]
        assert ops == [("omitted", "\n", None), ("insert", words, "bob")], ops
        would = await _revert(c, "undone", {"actor": "ann", "since": version}, dry_run="true")
        assert (would["reverts"], would.get("reason"), would.get("removed")) == (
            [version + 1], None, {"characters": len(words), "items": 0},
        ), would  # fmt: skip

    # a new process: the room and its undo stacks are loaded from the store
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as c:
        # (a cold server's diff folds just the range, from version `version`)
        params = {"from": version, "to": version + 3, "actor": "ann", "join": "actor"}
        r = await c.get("/api/docs/undone/diff", params=params)
        ops = [(x["op"], x["text"], x["actor"]) for x in r.json()["roots"]["content"]["ops"]]
        assert ops == [("omitted", "\n", None), ("insert", words, "ann")], ops
        did = await _revert(c, "undone", {"actor": "ann", "since": version})
        assert (did["seq"], did["reverts"]) == (version + 4, [version + 1]), did
        assert did["removed"] == {"characters": len(words), "items": 0}, did
        assert "removed_others" not in did, did
        assert (await _head(c, "undone"))["roots"]["content"]["value"] == intro
        again = await _revert(c, "undone", {"actor": "ann", "since": version})
        assert (again["seq"], again["reason"]) == (None, "nothing to revert"), again
        r = await c.get("/api/docs/undone/blame", params={"join": "actor"})
        runs = [(x["text"], x["actor"]) for x in r.json()["roots"]["content"]["runs"]]
        assert runs == [(intro, "bob")], runs


async def test_revert_of_a_writer_who_did_nothing_since_writes_nothing(
    server: RunningServer,
) -> None:
    version = await _write_the_class(server, "quiet")
    async with httpx.AsyncClient(base_url=server.url) as c:
        head = (await _head(c, "quiet"))["seq"]
        # s06 wrote nothing after the head, and "until" bounds the range: nothing either
        for body in ({"actor": "s06", "since": head}, {"actor": "s06", "since": 0, "until": 1},
                     {"actor": "nobody", "since": 0}):  # fmt: skip
            for params in ({}, {"dry_run": "true"}):
                got = await _revert(c, "quiet", body, **params)
                assert (got["seq"], got["reason"], got["reverts"]) == (
                    None, "nothing to revert", [],
                ), (body, got)  # fmt: skip
        assert (await _head(c, "quiet"))["seq"] == head
        # up to a version: only s06's events up to it
        got = await _revert(c, "quiet", {"actor": "s06", "since": version, "until": version + 1})
        assert got["reverts"] == [version + 1]
        text = (await _head(c, "quiet"))["roots"]["content"]["value"]
        assert text == "Ann: .\n" + S06 + BOB + ANN2  # LATE gone, "intro" still deleted

        # bad requests say what is wrong
        for body, status in [
            ({"since": 0}, 400),
            ({"actor": "s06"}, 400),
            ({"actor": "s06", "since": head + 5}, 404),
            ({"actor": "s06", "since": 3, "until": 2}, 400),
            ({"actor": "s06", "since": "no such tag"}, 404),
        ]:
            r = await c.post("/api/docs/quiet/revert", json=body, params={"user": "t"})
            assert r.status_code == status, (body, r.text)


@pytest.mark.parametrize("capture_ms", [0, 60_000], ids=["steps-apart", "one-step"])
async def test_revert_since_a_tag_survives_a_reload(settings: Settings, capture_ms: int) -> None:
    # one-step: s06's first line and later changes are one undo step, which the revert
    # cuts: the step keeps the first line
    settings.undo_capture_ms = capture_ms
    async with run_server(settings) as server:
        version = await _write_the_class(server, "kept")
        async with httpx.AsyncClient(base_url=server.url) as c:
            tag = {"name": "before the test", "seq": version}
            r = await c.post("/api/docs/kept/tags", json=tag, params={"user": "teacher"})
            assert r.status_code == 201, r.text
            did = await _revert(c, "kept", {"actor": "s06", "since": "before the test"})
            assert did["since"] == version and did["seq"] is not None
    # a new process (a new room, loaded from the store)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as c:
        assert (await _head(c, "kept"))["roots"]["content"]["value"] == AFTER
        # done again: nothing to revert (it brought "intro" back a second time, once the
        # room had forgotten which items the first revert copied)
        again = await _revert(c, "kept", {"actor": "s06", "since": version})
        assert (again["seq"], again["reason"]) == (None, "nothing to revert"), again
        assert (await _head(c, "kept"))["roots"]["content"]["value"] == AFTER
        # s06's steps the revert reverted are gone from their stack: their undo takes
        # back their first line, and brings back no second copy of "intro"
        r = await c.post("/api/docs/kept/undo", params={"user": "s06"})
        assert r.status_code == 200 and r.json()["reverts"] == [version], r.text
        assert (await _head(c, "kept"))["roots"]["content"]["value"] == ANN + BOB + ANN2
        r = await c.post("/api/docs/kept/undo", params={"user": "teacher"})
        assert r.status_code == 200, r.text
        assert (await _head(c, "kept"))["roots"]["content"][
            "value"
        ] == "Ann: .\n" + LATE + BOB + ANN2
        async with client.connect(server.ws_url, "kept", user="ann") as ann:
            await ann.wait_for(lambda: str(ann.text()) == "Ann: .\n" + LATE + BOB + ANN2)


async def test_revert_from_the_command_line(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    version = await _write_the_class(server, "cli")
    head = version + 4

    async def run(*argv: str) -> int:
        # the commands call asyncio.run(): a thread of their own
        args = [*argv, "--url", server.url, "--user", "teacher"]
        return await asyncio.to_thread(main, args)

    assert await run("revert", "cli", "--actor", "s06", "--since", str(version), "--dry-run") == 0
    assert capsys.readouterr().out == (
        f"cli: dry run: reverting s06's changes after #{version} up to #{head} (2 events) would "
        f"take out {len(LATE)} characters and would put back 5 characters\n"
    )
    assert await run("revert", "cli", "--actor", "s06", "--since", str(version), "--json") == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["seq"], got["reverts"]) == (head + 1, [version + 1, version + 2])
    assert await run("revert", "cli", "--actor", "s06", "--since", str(version)) == 0
    assert capsys.readouterr().out == (
        f"cli: nothing to revert (s06's changes after #{version} up to #{head + 1})\n"
    )
    assert await run("history", "cli", "--after", str(head)) == 0
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith(f"teacher  reverts s06's {version + 1},{version + 2}")
    )


@pytest.fixture
def jwt_settings(settings: Settings) -> Settings:
    settings.jwt_secret = SECRET
    return settings


async def test_a_reader_cannot_revert(jwt_settings: Settings) -> None:
    async with run_server(jwt_settings) as server, httpx.AsyncClient(base_url=server.url) as c:
        write = {"authorization": f"Bearer {token('write', user='s06')}"}
        r = await c.put("/api/docs/matrix-r/text", json={"text": "s06 was here"}, headers=write)
        assert r.status_code == 200, r.text
        body = {"actor": "s06", "since": 0}
        for params in ({}, {"dry_run": "true"}):
            read = {"authorization": f"Bearer {token('read', user='reader')}"}
            r = await c.post("/api/docs/matrix-r/revert", json=body, headers=read, params=params)
            assert r.status_code == 403, r.text
        r = await c.post("/api/docs/matrix-r/revert", json=body, headers=write)
        assert r.status_code == 200 and r.json()["seq"] == 2, r.text
        r = await c.get("/api/docs/matrix-r/versions/head", headers=write)
        assert r.json()["roots"]["content"]["value"] == ""


#: ann and s06 write a Tiptap-shaped XML document (paragraphs of XmlText) with real
#: y-websocket clients; s06 adds a paragraph after the version, bob types in it, s06
#: deletes a word of ann's; the teacher reverts s06 since the version
XML_SCENARIO = scenario("""
const para = (text) => {
  const p = new Y.XmlElement('paragraph')
  p.insert(0, [new Y.XmlText(text)])
  return p
}
const xml = (c) => c.ydoc.getXmlFragment('default').toString()
const ann = connect('ann')
const s06 = connect('s06')
const bob = connect('bob')
await Promise.all([ann.synced, s06.synced, bob.synced])
ann.ydoc.getXmlFragment('default').insert(0, [para('Ann wrote this.')])
await logged(1)
await until('s06 has it', () => s06.ydoc.getXmlFragment('default').length === 1)
s06.ydoc.getXmlFragment('default').insert(1, [para('s06 first.')])
await logged(2)
const version = (await head()).seq
s06.ydoc.getXmlFragment('default').insert(2, [para('s06 late.')])
await logged(3)
// s06 deletes "wrote " from ann's paragraph
s06.ydoc.getXmlFragment('default').get(0).get(0).delete(4, 6)
await logged(4)
await until('bob has it all', () => xml(bob).includes('s06 late.') && !xml(bob).includes('wrote'))
// bob types into s06's late paragraph, and adds one of his own
bob.ydoc.getXmlFragment('default').get(2).get(0).insert(9, ' bob inside')
bob.ydoc.getXmlFragment('default').insert(3, [para('Bob later.')])
await logged(6)
const before = xml(ann)
const dry = await post('revert?user=teacher&dry_run=true', { actor: 's06', since: version })
const revert = await post('revert?user=teacher', { actor: 's06', since: version })
const want = (await head()).roots.default.value
await until('ann converges', () => xml(ann) === want)
await until('bob converges', () => xml(bob) === want)
await until('s06 converges', () => xml(s06) === want)
const after = xml(ann)
const undo = await post('undo?user=teacher')
await until('bob has the undo', () => xml(bob) === before)
process.stdout.write(JSON.stringify({ version, before, dry, revert, want, after,
  undo, undone: (await head()).roots.default.value }))
for (const c of [ann, s06, bob]) c.provider.destroy()
process.exit(0)
""")


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_revert_in_an_xml_document_written_by_yjs_clients(server: RunningServer) -> None:
    out = json.loads(await node_scenario(XML_SCENARIO, server.ws_url, server.url, "tiptap"))
    p = "<paragraph>{}</paragraph>".format
    assert out["before"] == p("Ann this.") + p("s06 first.") + p("s06 late. bob inside") + p(
        "Bob later."
    )
    assert out["revert"]["status"] == 200, out
    # s06's words went; s06's paragraph stayed, with bob's words inside it (named), ann's
    # words are back, bob's own paragraph stayed
    assert (
        out["want"]
        == out["after"]
        == p("Ann wrote this.") + p("s06 first.") + p(" bob inside") + p("Bob later.")
    )
    body = out["revert"]["body"]
    assert body["reverts"] == [out["version"] + 1, out["version"] + 2]
    assert "removed_others" not in body, body
    assert body["kept_containers"] == {
        "items": 2,  # the paragraph and its text
        "others": [{"user": "bob", "characters": len(" bob inside"), "items": 0}],
    }, body
    dry = out["dry"]["body"]
    assert dry["dry_run"] is True and dry["kept_containers"] == body["kept_containers"]
    assert (dry["removed"], dry["added"]) == (body["removed"], body["added"])
    # the teacher's undo brings it all back
    assert out["undo"]["status"] == 200, out
    assert out["undone"] == out["before"]


@pytest.mark.parametrize("base", [True, False])
async def test_a_rewrite_by_put_keeps_its_words_when_the_writer_before_is_reverted(
    server: RunningServer, base: bool
) -> None:
    """stu appends " answer" to ann's "Q1" over the websocket; ann rewrites the whole text
    by PUT /text (from the version she read, or without a base) to "Q1 changed at
    source"; then stu's changes are reverted. The PUT's character diff kept a, n, s, e, r
    of "answer" as equal inside ann's new words, so they stayed stu's items, and the
    revert took them out of her sentence: "Q1chged at ourc". Now the rewritten run is
    ann's whole."""
    doc = "quiz"
    rewrite = "Q1 changed at source"
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.put(f"/api/docs/{doc}/text", params={"user": "ann"}, json={"text": "Q1"})
        assert r.status_code == 200, r.text
        since = (await _head(c, doc))["seq"]
        async with connect(server.ws_url, doc, user="stu") as stu:
            stu.insert(2, " answer")
            for _ in range(500):
                head = await _head(c, doc)
                if head["roots"]["content"]["value"] == "Q1 answer":
                    break
                await asyncio.sleep(0.01)
            assert head["roots"]["content"]["value"] == "Q1 answer"
        body: dict[str, Any] = {"text": rewrite}
        if base:
            body["base"] = head["seq"]
        r = await c.put(f"/api/docs/{doc}/text", params={"user": "ann"}, json=body)
        assert r.status_code == 200, r.text
        assert (await _head(c, doc))["roots"]["content"]["value"] == rewrite
        r = await c.get(f"/api/docs/{doc}/blame")
        runs = r.json()["roots"]["content"]["runs"]
        assert [(run["actor"], run["text"]) for run in runs] == [
            ("ann", "Q1"),
            ("stu", " "),
            ("ann", "changed at source"),
        ], runs
        did = await _revert(c, doc, {"actor": "stu", "since": since})
        assert did["seq"] is not None and did["reverts"] == [since + 1], did
        # ann's words whole; the space after "Q1" is stu's, which ann's PUT did not
        # write (the texts' common prefix, "Q1 ", stays as it was), so it goes with stu
        assert (await _head(c, doc))["roots"]["content"]["value"] == "Q1changed at source"


async def test_text_a_restore_wrote_again_is_its_writers_in_blame_diff_and_revert(
    server: RunningServer,
) -> None:
    """ann writes a line, bob deletes it, carol restores the version that had it: the
    restore writes it as new text, which its meta ``copies`` pairs with ann's deleted
    items. Blame and a diff since before the line name ann (they match the text); a
    revert of ann takes it out (it could not tell it from carol's and left it, before
    the restore recorded its copies); a revert of bob's deletion finds it back already."""
    async with (
        client.connect(server.ws_url, "again", user="ann") as ann,
        client.connect(server.ws_url, "again", user="bob") as bob,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        bob.text().insert(0, BOB)
        await bob.flush()
        await ann.wait_for(lambda: str(ann.text()) == BOB)
        version = (await _head(c, "again"))["seq"]
        ann.text().insert(len(BOB), ANN)
        await ann.flush()
        await bob.wait_for(lambda: str(bob.text()) == BOB + ANN)
        bob.text().delete(len(BOB), len(ANN))
        await bob.flush()
        r = await c.post("/api/docs/again/restore", json={"seq": version + 1},
                         params={"user": "carol"})  # fmt: skip
        assert r.status_code == 200 and r.json()["seq"] == version + 3, r.text
        await ann.wait_for(lambda: str(ann.text()) == BOB + ANN)
        r = await c.get("/api/docs/again/blame", params={"join": "actor"})
        runs = [(x["text"], x["actor"]) for x in r.json()["roots"]["content"]["runs"]]
        assert runs == [(BOB, "bob"), (ANN, "ann")], runs
        r = await c.get("/api/docs/again/diff", params={"from": version, "actor": "ann"})
        ops = [(x["op"], x["text"], x["actor"]) for x in r.json()["roots"]["content"]["ops"]]
        assert ops == [("omitted", "\n", None), ("insert", ANN, "ann")], ops
        got = await _revert(c, "again", {"actor": "bob", "since": version + 1})
        assert (got["seq"], got["reason"]) == (None, "nothing to revert"), got
        got = await _revert(c, "again", {"actor": "ann", "since": version})
        assert got["seq"] == version + 4, got
        assert got["removed"] == {"characters": len(ANN), "items": 0}, got
        await ann.wait_for(lambda: str(ann.text()) == BOB)
