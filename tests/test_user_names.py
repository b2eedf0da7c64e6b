"""User names that differ only in Unicode normalisation are one user: every name is
taken to NFC where it enters (a token's sub, ?user= in open mode, the websocket's user,
?actor= filters, a revert's actor, the CLI's arguments naming users), so "José" typed as
é (NFC) and as e + U+0301 (NFD) is one actor in the log, the history, blame and undo."""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, eventually, run_server
from test_admin_cli import cli, settings_for

from palimpsest import client
from palimpsest.auth.tokens import mint
from palimpsest.client.cli import main as client_main
from palimpsest.settings import Settings

NFC = "Jos\u00e9"
NFD = "Jose\u0301"
SECRET = "test-secret-of-at-least-thirty-two-bytes!"


def test_the_two_spellings_differ() -> None:
    assert NFC != NFD and unicodedata.normalize("NFC", NFD) == NFC


async def test_open_mode_user_and_actor_filters_take_either_spelling_as_one_user(
    server: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for user, text in ((NFC, "one"), (NFD, "one two")):
            r = await http.put("/api/docs/names/text", params={"user": user}, json={"text": text})
            assert r.status_code == 200, r.text
            r = await http.post("/api/docs/names/undo/close", params={"user": user})
            assert r.status_code == 200, r.text
        events = (await http.get("/api/docs/names/events")).json()["events"]
        assert {e["actor"] for e in events} == {NFC}
        assert [e["kind"] for e in events].count("edit") == 2
        for spelling in (NFC, NFD):
            got = await http.get("/api/docs/names/events", params={"actor": spelling})
            assert got.json()["events"] == events
            got = await http.get("/api/docs/names/sessions", params={"actor": spelling})
            assert [s["actor"] for s in got.json()["sessions"]] == [NFC]
            blame = await http.get("/api/docs/names/blame", params={"actor": spelling})
            assert blame.status_code == 200, blame.text
            assert blame.json()["actors"] == [NFC]
            runs = blame.json()["roots"]["content"]["runs"]
            assert "".join(r["text"] for r in runs if r.get("actor")) == "one two"
        # one undo stack: the NFC spelling undoes what the NFD one wrote last
        r = await http.post("/api/docs/names/undo", params={"user": NFC})
        assert r.status_code == 200, r.text
        got = await http.get("/api/docs/names/versions/head")
        assert got.json()["roots"]["content"]["value"] == "one"
        # a revert of the NFD spelling takes out the (one) user's words
        r = await http.post(
            "/api/docs/names/revert", params={"user": "x"}, json={"actor": NFD, "since": 0}
        )
        assert r.status_code == 200, r.text
        assert r.json()["actor"] == NFC and r.json()["removed"]["characters"] == 3


async def test_websocket_users_in_either_spelling_are_one_actor(server: RunningServer) -> None:
    for user, word in ((NFD, "a"), (NFC, "b")):
        async with client.connect(server.ws_url, "ws-names", user=user) as s:
            t = s.text()
            t.insert(len(t), word)
            await s.flush()
    async with client.History(server.url, user="obs") as h:
        events = (await h.events("ws-names")).events
        assert {e.actor for e in events} == {NFC}
        assert await h.text_by("ws-names", NFD) == "ab"
        runs = await h.blame("ws-names", join="actor")
        assert [(r.text, r.actor) for r in runs] == [("ab", NFC)]


async def test_a_tokens_sub_is_taken_to_nfc(tmp_path: Path) -> None:
    async with run_server(Settings(db=str(tmp_path / "t.db"), jwt_secret=SECRET)) as srv:
        token = mint(SECRET, NFD, "write", ["*"])
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.put(
                "/api/docs/jwt-names/text", params={"token": token}, json={"text": "hi"}
            )
            assert r.status_code == 200, r.text
            events = await http.get("/api/docs/jwt-names/events", params={"token": token})
            assert [e["actor"] for e in events.json()["events"]] == [NFC]


async def test_revoke_of_either_spelling_revokes_the_one_user(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "rev.db"
    async with run_server(settings_for(db, jwt_secret=SECRET)) as srv:
        ran = await cli(capfd, "revoke", NFD, "--db", str(db))
        assert ran.code == 0, ran
        ran = await cli(capfd, "revoke", "--list", "--db", str(db))
        assert [json.loads(line)["user"] for line in ran.out.splitlines()] == [NFC]
        token = mint(SECRET, NFC, "write", ["*"], now=time.time() - 60)
        async with httpx.AsyncClient(base_url=srv.url) as http:

            async def refused() -> bool:
                r = await http.get("/api/docs", params={"token": token})
                return r.status_code == 401

            await eventually(refused)
            admin = mint(SECRET, "op", "admin", ["*"])
            r = await http.delete(f"/api/revocations/{NFD}", params={"token": admin})
            assert r.status_code == 200 and r.json()["user"] == NFC, r.text


async def test_client_cli_revert_actor_in_nfd(
    server: RunningServer, capfd: pytest.CaptureFixture[str]
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.put("/api/docs/cli-names/text", params={"user": NFC}, json={"text": "x"})
        assert r.status_code == 200
    capfd.readouterr()
    code = await asyncio.to_thread(
        client_main,
        [
            "revert",
            "cli-names",
            "--actor",
            NFD,
            "--since",
            "0",
            "--dry-run",
            "--json",
            "--url",
            server.url,
            "--user",
            "op",
        ],  # fmt: skip
    )
    out = capfd.readouterr().out
    assert code == 0, out
    assert '"removed": {"characters": 1' in out
