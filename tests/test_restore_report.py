"""A restore says what it took out that others wrote, and a dry run says it before.

A restore makes the document equal to an old version, so it takes out whatever was
written since that the version lacks, classmates' sentences too (a field test: a
teacher brought back a student's deleted paragraph and wiped another's later sentence,
and nothing said so). Its answer names them per user (``removed_others``, as an undo's
does), and ``?dry_run=true`` answers the same without writing anything."""

from __future__ import annotations

from typing import Any

import httpx
from conftest import RunningServer
from pycrdt import XmlElement, XmlFragment, XmlText

from palimpsest import client
from palimpsest.client import Removed

ANN = "Ann's paragraph.\n"
BOB = "Bob's paragraph.\n"
LATE = " A LATE SENTENCE BY BOB."


async def _head(c: httpx.AsyncClient, doc: str) -> dict[str, Any]:
    r = await c.get(f"/api/docs/{doc}/versions/head")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _restore(
    c: httpx.AsyncClient, doc: str, seq: int, user: str, dry_run: bool = False
) -> dict[str, Any]:
    params = {"user": user, **({"dry_run": "true"} if dry_run else {})}
    r = await c.post(f"/api/docs/{doc}/restore", json={"seq": seq}, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_restore_names_the_later_text_of_others_it_took_out(server: RunningServer) -> None:
    async with (
        client.connect(server.ws_url, "class", user="ann") as ann,
        client.connect(server.ws_url, "class", user="bob") as bob,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        ann.text().insert(0, ANN)
        await ann.flush()
        await bob.wait_for(lambda: str(bob.text()) == ANN)
        bob.text().insert(len(ANN), BOB)
        await bob.flush()
        version = (await _head(c, "class"))["seq"]
        ann.text().delete(0, len(ANN) - 1)  # ann deletes her paragraph
        await ann.flush()
        await bob.wait_for(lambda: str(bob.text()) == "\n" + BOB)
        bob.text().insert(len("\n" + BOB) - 1, LATE)  # bob writes on
        await bob.flush()
        head = (await _head(c, "class"))["seq"]

        # the dry run: what the restore would take out and put in, nothing written
        would = await _restore(c, "class", version, "ann", dry_run=True)
        assert would == {
            "seq": None,
            "restores": version,
            "dry_run": True,
            "head": head,
            "removed": {"characters": len(LATE), "items": 0},
            "added": {"characters": len(ANN) - 1, "items": 0},
            "removed_others": [{"user": "bob", "characters": len(LATE), "items": 0}],
        }
        now = await _head(c, "class")
        assert now["seq"] == head and LATE in now["roots"]["content"]["value"]

        # the restore: the same, and done
        did = await _restore(c, "class", version, "ann")
        assert did["seq"] == head + 1 and did["restores"] == version
        assert did["removed_others"] == would["removed_others"]
        assert (did["removed"], did["added"]) == (would["removed"], would["added"])
        await bob.wait_for(lambda: str(bob.text()) == ANN + BOB)

        # the Python client's answer carries it too
        async with client.History(server.url, user="cy") as h:
            again = await h.restore("class", head, dry_run=True)
            assert (again.seq, again.dry_run, again.head) == (None, True, head + 1)
            assert again.removed_others == (Removed("ann", len(ANN) - 1, 0),)
            back = await h.restore("class", head)
            assert back.seq == head + 2 and not back.dry_run
            assert back.removed_others == again.removed_others
            assert (back.removed_characters, back.added_characters) == (len(ANN) - 1, len(LATE))
            same = await h.restore("class", head)
            assert (same.seq, same.reason, same.removed_others) == (None, "already equal", ())


async def test_restore_that_takes_out_only_the_callers_text_names_nobody(
    server: RunningServer,
) -> None:
    async with (
        client.connect(server.ws_url, "own", user="ann") as ann,
        client.connect(server.ws_url, "own", user="bob") as bob,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        bob.text().insert(0, BOB)
        await bob.flush()
        await ann.wait_for(lambda: str(ann.text()) == BOB)
        version = (await _head(c, "own"))["seq"]
        ann.text().insert(len(BOB), "ann's second thoughts")
        await ann.flush()

        would = await _restore(c, "own", version, "ann", dry_run=True)
        assert "removed_others" not in would
        assert would["removed"] == {"characters": len("ann's second thoughts"), "items": 0}
        did = await _restore(c, "own", version, "ann")
        assert did["seq"] is not None and "removed_others" not in did
        await bob.wait_for(lambda: str(bob.text()) == BOB)
        # (already equal: the dry run says so, as the restore does)
        assert await _restore(c, "own", version, "ann", dry_run=True) == {
            "seq": None,
            "restores": version,
            "dry_run": True,
            "head": did["seq"],
            "reason": "already equal",
        }


async def test_restore_names_a_paragraph_of_others_as_an_item(server: RunningServer) -> None:
    """In an editor's XML (Tiptap's) a classmate's paragraph is an element and its
    characters: one item and so many characters."""
    async with (
        client.connect(server.ws_url, "xml", user="ann") as ann,
        client.connect(server.ws_url, "xml", user="bob") as bob,
        httpx.AsyncClient(base_url=server.url) as c,
    ):
        frag = ann.doc.get("default", type=XmlFragment)
        frag.children.append(XmlElement("paragraph")).children.append(XmlText()).insert(0, "mine")
        await ann.flush()
        version = (await _head(c, "xml"))["seq"]
        other = bob.doc.get("default", type=XmlFragment)
        await bob.wait_for(lambda: len(other.children) == 1)
        other.children.append(XmlElement("paragraph")).children.append(XmlText()).insert(0, "bob!")
        await bob.flush()

        would = await _restore(c, "xml", version, "ann", dry_run=True)
        assert would["removed_others"] == [{"user": "bob", "characters": 4, "items": 1}]
        did = await _restore(c, "xml", version, "ann")
        assert did["removed_others"] == would["removed_others"]
        await ann.wait_for(lambda: len(frag.children) == 1)


async def test_a_dry_run_flag_that_is_not_a_boolean_is_refused(server: RunningServer) -> None:
    async with client.connect(server.ws_url, "flag", user="ann") as ann:
        ann.text().insert(0, "x")
        await ann.flush()
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post("/api/docs/flag/restore?dry_run=perhaps&user=ann", json={"seq": 0})
        assert r.status_code == 400 and "dry_run" in r.text, r.text
        assert (await _head(c, "flag"))["seq"] == 1  # nothing written


async def test_restore_names_the_writers_of_text_an_undo_brought_back(
    server: RunningServer,
) -> None:
    # ann restores the version before bob's sentence and undoes that: the sentence is
    # back, its items the server's (the undo's copies), and blame names bob for it. A
    # restore that would take it out again names bob too, whoever makes it: ann's did
    # not (nothing of others': the page would not ask), bob's named ann
    late = "Bob's sentence."
    async with (
        client.History(server.url, user="ann") as ha,
        client.History(server.url, user="bob") as hb,
    ):
        await ha.put_text("back", "Base. ")
        version = (await ha.version("back", "head")).seq
        await hb.put_text("back", "Base. " + late)
        first = await ha.restore("back", version)
        assert first.removed_others == (Removed("bob", len(late), 0),)
        assert (await ha.undo("back")).ok
        blame = await ha.blame("back", join="actor")
        assert [(b.text, b.actor) for b in blame] == [("Base. ", "ann"), (late, "bob")]

        anns = await ha.restore("back", version, dry_run=True)
        assert anns.removed_others == (Removed("bob", len(late), 0),)
        assert anns.removed_characters == len(late)
        bobs = await hb.restore("back", version, dry_run=True)
        assert (bobs.removed_others, bobs.removed_characters) == ((), len(late))
        did = await hb.restore("back", version)
        assert did.seq is not None and did.removed_others == ()
        assert (did.removed_characters, did.added_characters) == (len(late), 0)


async def test_a_restore_keeps_a_paragraph_between_what_it_puts_in_and_takes_out(
    server: RunningServer,
) -> None:
    """s06's paragraph, kept, lies between the 20 characters a restore puts back (s05's
    deleted paragraph) and the 37 it takes out (s06's and s07's later sentences). A fold
    of short kept runs between changes (diff-match-patch's rule: no longer than the
    changes on both sides) re-wrote it, taking it from s06 and counting its 18
    characters as removed (the page said 55 characters, not 37). The restore diffs one
    stand-in per character and writer, so the word test must see the characters."""
    doc, path = "quiz", "/api/docs/quiz/text"
    para5, para6 = "[s05] I like trees.\n", "[s06] My dog is Rex.\n"
    late6, late7 = " LATE SENTENCE BY s06.\n", " s07 was here."
    async with httpx.AsyncClient(base_url=server.url) as c:
        for user, text in [
            ("s05", para5),
            ("s06", para5 + para6),
            ("s05", para6),
            ("s06", para6 + late6),
            ("s07", para6 + late6 + late7),
        ]:
            r = await c.put(path, params={"user": user}, json={"text": text})
            assert r.status_code == 200, r.text
        version = 2
        would = await _restore(c, doc, version, "teacher", dry_run=True)
        assert would["removed"] == {"characters": len(late6 + late7), "items": 0}, would
        assert would["removed_others"] == [
            {"user": "s06", "characters": len(late6), "items": 0},
            {"user": "s07", "characters": len(late7), "items": 0},
        ], would
        await _restore(c, doc, version, "teacher")
        r = await c.get(f"/api/docs/{doc}/blame")
        runs = [(run["actor"], run["text"]) for run in r.json()["roots"]["content"]["runs"]]
        assert runs == [("s05", para5), ("s06", para6)], runs
