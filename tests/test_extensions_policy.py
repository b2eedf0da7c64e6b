"""A content policy as an extension (docs/extending.md, "A content policy"): it sees
the content of every change before it is logged, a client's (``on_update``) and one the
server makes for a user over HTTP (``on_server_update``), and refuses what it forbids:
nothing logged, nothing applied, the reason said."""

from __future__ import annotations

from typing import Any

import httpx
from conftest import eventually, run_server
from pycrdt import Doc, Text
from yclient import connect

from palimpsest import Client, Extension, Room, ServerUpdate
from palimpsest.backend import Backend
from palimpsest.errors import Forbidden
from palimpsest.features import builtin_extensions
from palimpsest.settings import Settings

DOC = "policed"


class ContentPolicy(Extension):
    """No "badword", at most 40 characters: extending.md's example."""

    def __init__(self) -> None:
        self.on = True
        self.refuse_all = False
        self.seen: list[tuple[str, str, str, str]] = []

    def check(self, text: str) -> None:
        if self.refuse_all:
            raise Forbidden("nothing more")
        if not self.on:
            return
        if "badword" in text.lower():
            raise Forbidden("forbidden word: badword")
        if len(text) > 40:
            raise Forbidden("longer than 40 characters")

    def on_update(self, room: Room, client: Client, update: bytes) -> None:
        scratch: Doc[Any] = Doc()
        scratch.apply_update(room.doc.get_update())
        scratch.apply_update(update)
        self.check(str(scratch.get("content", type=Text)))

    def on_server_update(self, room: Room, change: ServerUpdate) -> None:
        before = str(room.doc.get("content", type=Text))
        after = str(change.doc.get("content", type=Text))
        self.seen.append((change.kind, change.actor, before, after))
        # the update is what will be logged: applied to the document as it is now, it
        # gives the document the hook was handed
        scratch: Doc[Any] = Doc()
        scratch.apply_update(room.doc.get_update())
        scratch.apply_update(change.update)
        assert str(scratch.get("content", type=Text)) == after
        self.check(after)


async def test_a_content_policy_refuses_server_changes_before_they_are_logged(
    settings: Settings,
) -> None:
    """PUT /text with a forbidden word, a PUT past the length limit, POST /updates and a
    restore of a version the policy forbids all passed: ``on_server_change`` is not
    given the change and ``before_apply`` runs once the event is durable, so nothing an
    extension could do refused them. ``on_server_update`` sees the change made on a
    copy, before anything is logged or applied: refused, they answer 403 with the
    policy's reason, the log and the document unchanged, the clients told nothing."""
    policy = ContentPolicy()
    backend = Backend(settings, extensions=[policy, *builtin_extensions(settings)])
    async with (
        run_server(settings, backend) as srv,
        httpx.AsyncClient(base_url=srv.url, params={"user": "ada"}) as http,
        connect(srv.ws_url, DOC, "bob") as bob,
    ):
        policy.on = False  # written before the policy
        r = await http.put(f"/api/docs/{DOC}/text", json={"text": "a BADWORD here"})
        assert r.status_code == 200, r.text
        r = await http.put(f"/api/docs/{DOC}/text", json={"text": "a here"})
        assert r.status_code == 200, r.text
        policy.on = True
        await eventually(lambda: str(bob.text) == "a here")
        room = backend.rooms.get_loaded(DOC)
        assert room is not None
        head = await backend.store.head(DOC)

        async def refused(r: httpx.Response, reason: str) -> None:
            assert r.status_code == 403, (r.status_code, r.text)
            assert r.json()["detail"] == reason, r.text
            assert await backend.store.head(DOC) == head
            assert str(room.doc.get("content", type=Text)) == "a here"

        await refused(
            await http.put(f"/api/docs/{DOC}/text", json={"text": "now badword"}),
            "forbidden word: badword",
        )
        await refused(
            await http.put(f"/api/docs/{DOC}/text", json={"text": "y" * 41}),
            "longer than 40 characters",
        )
        await refused(
            await http.post(f"/api/docs/{DOC}/restore", json={"seq": 1}),
            "forbidden word: badword",
        )
        # ada's second PUT took "BADWORD " out: reverting it brings the word back
        await refused(
            await http.post(f"/api/docs/{DOC}/revert", json={"actor": "ada", "since": 1}),
            "forbidden word: badword",
        )
        elsewhere: Doc[Any] = Doc()
        r = await http.get(f"/api/docs/{DOC}/versions/head", params={"format": "update"})
        elsewhere.apply_update(r.content)
        elsewhere.get("content", type=Text).insert(0, "imported badword ")
        await refused(
            await http.post(
                f"/api/docs/{DOC}/updates",
                content=elsewhere.get_update(),
                headers={"content-type": "application/octet-stream"},
            ),
            "forbidden word: badword",
        )
        kinds = [k for k, _, _, _ in policy.seen]
        assert kinds[-5:] == ["edit", "edit", "restore", "revert", "import"], policy.seen
        # the hook saw the document before the change in room.doc, after it in change.doc
        assert policy.seen[-5][2:] == ("a here", "now badword")
        # what the policy allows goes through, and the clients get it
        r = await http.put(f"/api/docs/{DOC}/text", json={"text": "a fine text"})
        assert r.status_code == 200, r.text
        await eventually(lambda: str(bob.text) == "a fine text")
        r = await http.post(f"/api/docs/{DOC}/restore", json={"seq": 2})
        assert r.status_code == 200, r.text
        await eventually(lambda: str(bob.text) == "a here")
        elsewhere = Doc()
        r = await http.get(f"/api/docs/{DOC}/versions/head", params={"format": "update"})
        elsewhere.apply_update(r.content)
        elsewhere.get("content", type=Text).insert(0, "imported ")
        r = await http.post(
            f"/api/docs/{DOC}/updates",
            content=elsewhere.get_update(),
            headers={"content-type": "application/octet-stream"},
        )
        assert r.status_code == 200, r.text
        await eventually(lambda: str(bob.text) == "imported a here")
        assert [k for k, *_ in policy.seen[-3:]] == ["edit", "restore", "import"]
        head += 3
        assert await backend.store.head(DOC) == head
        # the live document got what the copy did: bob's tab, and a fresh load, agree
        assert str(room.doc.get("content", type=Text)) == "imported a here"
        # an undo is not the policy's to refuse (docs/extending.md): it brings back
        # what the document held, and a refused undo would stay on top of its user's
        # stack, refusing every undo after it
        policy.refuse_all = True
        seen = len(policy.seen)
        r = await http.post(f"/api/docs/{DOC}/undo")
        assert r.status_code == 200 and r.json()["seq"] == head + 1, r.text
        await eventually(lambda: str(bob.text) != "imported a here")
        assert len(policy.seen) == seen


class Buggy(Extension):
    def on_server_update(self, room: Room, change: ServerUpdate) -> None:
        raise RuntimeError("a bug")


async def test_a_bug_in_on_server_update_refuses_the_change(settings: Settings) -> None:
    """An exception other than a PalimpsestError refuses as ExtensionFailed (500, the
    extension and the hook named), as from on_server_change; nothing is logged."""
    backend = Backend(settings, extensions=[Buggy(), *builtin_extensions(settings)])
    async with (
        run_server(settings, backend) as srv,
        httpx.AsyncClient(base_url=srv.url, params={"user": "ada"}) as http,
    ):
        r = await http.put(f"/api/docs/{DOC}/text", json={"text": "anything"})
        assert r.status_code == 500 and r.json()["error"] == "ExtensionFailed", r.text
        assert "Buggy" in r.text and "on_server_update" in r.text
        assert await backend.store.head(DOC) == 0
