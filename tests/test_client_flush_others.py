"""flush() and other users' edits that the document here holds but the server does not
take from this session: bob's edits typed after the backup a server was restored from
(his tab closed since), which alice's session still holds. The server takes a client
id's items from its writer only (server/ownership.py): it asks alice's session again
without them (its step 1 claims them whole). flush() confirmed the WHOLE local document,
so it never returned (a Timeout after `timeout`, asking for the server's full state every
50 ms meanwhile), though alice's own edits had reached the server."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import RunningServer
from pycrdt import Doc
from pycrdt import Text as YText

from palimpsest import client


async def bobs_edits_the_server_lacks(server: RunningServer, name: str) -> Doc[Any]:
    """Bob's document: "bob1 " on the server (written through a session of his, so his
    client id is his), then " bob2" typed after it closed, which the server never had
    (as after a restore from a backup taken before it)."""
    bob: Doc[Any] = Doc()
    async with client.connect(server.ws_url, name, user="bob", ydoc=bob) as b:
        b.text().insert(0, "bob1 ")
        await b.flush()
    text = bob.get("content", type=YText)
    text.insert(len(text), " bob2")
    return bob


async def test_flush_confirms_our_edits_beside_others_the_server_does_not_take(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    bob = await bobs_edits_the_server_lacks(server, "flushothers")
    # alice's tab held bob's later edits (it heard them before the restore) and types on
    mine: Doc[Any] = Doc()
    mine.apply_update(bob.get_update())
    text = mine.get("content", type=YText)
    text.insert(0, "alice ")  # (before bob's text: not built on his missing edit)
    assert str(text) == "alice bob1  bob2"
    with caplog.at_level(logging.INFO, logger="palimpsest.client"):
        async with client.connect(server.ws_url, "flushothers", user="alice", ydoc=mine) as a:
            await a.flush(timeout=5)  # raised Timeout: the server lacks " bob2"
            a.text().insert(0, ">")
            await a.flush(timeout=5)
            assert str(a.text()) == ">alice bob1  bob2"
    events = await server.backend.store.read("flushothers")
    assert [e.actor for e in events] == ["bob", "alice", "alice"], events
    async with client.connect(server.ws_url, "flushothers", user="reader") as r:
        assert str(r.text()) == ">alice bob1 "  # bob's later edit: not on the server
    said = [r.getMessage() for r in caplog.records if "other users' edits" in r.getMessage()]
    assert said and str(bob.client_id) in said[0], said


async def test_a_flush_of_an_edit_built_on_others_the_server_does_not_take_names_them(
    server: RunningServer,
) -> None:
    bob = await bobs_edits_the_server_lacks(server, "flushbuilt")
    mine: Doc[Any] = Doc()
    mine.apply_update(bob.get_update())
    text = mine.get("content", type=YText)
    text.insert(len(text), "!")  # right after bob's missing " bob2": the server waits for it
    async with client.connect(server.ws_url, "flushbuilt", user="alice", ydoc=mine) as a:
        with pytest.raises(client.Timeout) as e:
            await a.flush(timeout=2)
        assert f"client ids {bob.client_id}" in str(e.value), e.value
        assert "other users' edits" in str(e.value), e.value
