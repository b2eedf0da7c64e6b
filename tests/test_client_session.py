"""The client's live session against a real server on a free port: editing, convergence,
presence, undo/redo over the extension message, and every error it raises."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import http.server
import json
import logging
import os
import re
import signal
import threading
import weakref
from pathlib import Path
from typing import Any

import httpx
import pytest
import yclient
from conftest import RunningServer, free_port, run_server
from pycrdt import Array, Doc, Map
from pycrdt import Text as YText
from serverproc import ServerProcess

from palimpsest import client
from palimpsest import protocol as P
from palimpsest.auth.tokens import mint
from palimpsest.client import session as session_module
from palimpsest.settings import Settings
from palimpsest.store.sqlite import SQLiteStore

SECRET = "a-test-secret-that-is-long-enough-for-hs256!"


async def test_two_clients_converge_with_code_point_positions(server: RunningServer) -> None:
    async with (
        client.connect(server.ws_url, "conv", user="ada") as a,
        client.connect(server.ws_url, "conv", user="bob") as b,
    ):
        assert a.connected and a.user == "ada" and b.user == "bob"
        a.text().insert(0, "héllo wörld 🌍!")
        await b.wait_for(lambda: b.text() == "héllo wörld 🌍!", timeout=5)
        # positions count characters, not UTF-8 bytes: 🌍 is one character
        b.text().insert(13, "🌎")
        b.text().delete(1, 1)
        b.text().insert(1, "e")
        await a.wait_for(lambda: a.text() == "hello wörld 🌍🌎!", timeout=5)
        # concurrent edits on both sides
        for i in range(20):
            a.text().insert(0, "a")
            b.text().append("b")
            if i % 5 == 0:
                await asyncio.sleep(0)
        await a.flush()
        await b.flush()
        await a.wait_for(lambda: str(a.text()) == str(b.text()), timeout=5)
        await b.wait_for(lambda: str(a.text()) == str(b.text()), timeout=5)
        assert str(a.text()).count("a") == 20 and str(a.text()).count("b") == 20
        with pytest.raises(IndexError):
            a.text().insert(len(a.text()) + 1, "x")
    # the server holds it: a third client sees the same
    async with client.connect(server.ws_url, "conv", user="cy") as c:
        assert str(c.text()) == "a" * 20 + "hello wörld 🌍🌎!" + "b" * 20


async def test_a_closed_session_that_read_its_text_is_freed(server: RunningServer) -> None:
    """A Text observes its document; pycrdt holds the callback on the Rust side, where the
    garbage collector cannot see it, so the cycle (document, callback, Text, session,
    document) was never freed: every session a bot opened and closed stayed in memory
    with its document. Closing the session lets it go; its text still reads."""
    gone: list[weakref.ref[client.Session]] = []
    texts = []
    for i in range(5):
        async with client.connect(server.ws_url, f"freed{i}", user="bot") as s:
            t = s.text()
            t.insert(len(t), "hello 🌍")
            await s.flush()
            gone.append(weakref.ref(s))
        texts.append(str(t))
        del s, t
    gc.collect()
    assert [r() for r in gone] == [None] * 5
    assert texts == ["hello 🌍"] * 5


async def test_set_is_a_small_diff(server: RunningServer) -> None:
    async with client.connect(server.ws_url, "diffdoc", user="ada") as a:
        a.text().insert(0, "line one\nline two\nline three\n")
        await a.flush()
        spans = a.text().set("line one\nline 2\nline three\nline four\n")
        assert spans == 2
        assert a.text() == "line one\nline 2\nline three\nline four\n"
        await a.flush()
    events = await server.backend.store.read("diffdoc")
    assert len(events) == 2  # one event for the whole set()


async def test_many_local_edits_are_coalesced_under_the_rate_limit(
    server: RunningServer,
) -> None:
    # 3000 one-character transactions, yielding after each: far above the server's
    # 500 updates/s per connection, so the client must coalesce them into frames
    async with client.connect(server.ws_url, "burst", user="ada") as a:
        for i in range(3000):
            a.text().append(chr(ord("a") + i % 26))
            await asyncio.sleep(0)
        await a.flush(timeout=20)
        assert a.connections == 1  # never dropped with 4429
    events = await server.backend.store.read("burst")
    assert 1 <= len(events) < 3000
    async with client.connect(server.ws_url, "burst", user="bob") as b:
        assert len(b.text()) == 3000


async def test_presence_and_wait_for_timeout(server: RunningServer) -> None:
    async with client.connect(server.ws_url, "pres", user="ada") as a:
        async with client.connect(server.ws_url, "pres", user="bob") as b:
            b.set_presence({"name": "bob", "cursor": 3})
            await a.wait_for(lambda: {"name": "bob", "cursor": 3} in a.presence.values())
            b.set_presence({"name": "bob", "cursor": 4})
            await a.wait_for(lambda: {"name": "bob", "cursor": 4} in a.presence.values())
            assert b.doc.client_id in a.presence and a.doc.client_id not in a.presence
        await a.wait_for(lambda: not a.presence, timeout=5)  # bob left
        with pytest.raises(client.Timeout) as e:
            await a.wait_for(lambda: "never" in a.text(), timeout=0.2, what="a word")
        assert isinstance(e.value, TimeoutError) and "a word" in str(e.value)


async def test_undo_redo_close_group_over_the_socket(server: RunningServer) -> None:
    async with (
        client.connect(server.ws_url, "undo", user="ada") as a,
        client.connect(server.ws_url, "undo", user="bob") as b,
    ):
        a.text().insert(0, "ada ")
        assert (await a.close_group()).ok
        await b.wait_for(lambda: b.text() == "ada ")
        b.text().append("bob")
        await a.wait_for(lambda: a.text() == "ada bob")
        # undo goes after the edit sent just before it
        a.text().append("!")
        r = await a.undo()
        assert r.ok and r.seq is not None and r.reason is None
        await b.wait_for(lambda: b.text() == "ada bob", timeout=5)
        r2 = await a.undo()
        assert r2.ok and r2.seq is not None and r2.seq > r.seq
        await b.wait_for(lambda: b.text() == "bob", timeout=5)  # bob's text stays
        r3 = await a.undo()
        assert not r3 and r3.seq is None and "nothing to undo" in (r3.reason or "")
        assert (await a.redo()).ok
        await b.wait_for(lambda: b.text() == "ada bob", timeout=5)
        await a.wait_for(lambda: a.text() == "ada bob", timeout=5)


async def test_a_cancelled_undo_is_still_done_and_a_shielded_one_tells_its_outcome(
    server: RunningServer,
) -> None:
    """An undo cancelled once sent (a bot's task cancelled right after it called undo())
    is not withdrawn: the server does it, the caller sees only CancelledError, and a
    retry undid twice. docs/client.md says so, and how to learn the outcome: shield the
    undo's task and await it after the cancellation (a Timeout's `late`, for a cancel)."""
    async with client.connect(server.ws_url, "cancel-undo", user="bot") as s:
        for step in ("AAA", "BBB", "CCC"):
            s.text().append(step)
            assert await s.close_group()
        undo = asyncio.create_task(s.undo())
        await asyncio.sleep(0)  # (sent: the session is connected)
        undo.cancel()
        with pytest.raises(asyncio.CancelledError):
            await undo
        await s.wait_for(lambda: s.text() == "AAABBB", timeout=5, what="the cancelled undo done")

        undoing = asyncio.ensure_future(s.undo())

        async def caller() -> client.OpResult:
            return await asyncio.shield(undoing)

        bot = asyncio.create_task(caller())
        await asyncio.sleep(0)
        bot.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bot
        result = await undoing  # the outcome, after the caller was cancelled
        assert result.ok and result.removed_characters == 3, result
        await s.wait_for(lambda: s.text() == "AAA", timeout=5)


async def test_an_undos_result_names_the_seqs_it_reverts(server: RunningServer) -> None:
    """The websocket's and HTTP's answers carry ``reverts`` (the seqs of the step an undo
    took back; a redo's: its undo's seq); the client's OpResult dropped it."""
    async with client.connect(server.ws_url, "reverts", user="ada") as a:
        a.text().insert(0, "one ")
        assert (await a.close_group()).ok
        a.text().append("two")
        await a.flush()
        async with client.History(server.url, user="ada") as h:
            edits = [e.seq for e in (await h.events("reverts")).events if e.kind == "edit"]
            assert len(edits) == 2, edits
            undone = await a.undo()
            assert undone.reverts == (edits[1],), undone
            redone = await a.redo()
            assert redone.reverts == (undone.seq,), redone
            again = await h.undo("reverts")  # over HTTP
            assert again.reverts == (redone.seq,), again
            first = await h.undo("reverts")
            assert first.reverts == (edits[0],), first
            nothing = await a.undo()
            assert not nothing.ok and nothing.reverts == (), nothing


# --- errors ------------------------------------------------------------------------------


async def test_bad_doc_name_is_refused_before_connecting(server: RunningServer) -> None:
    with pytest.raises(client.BadDocName, match="not allowed"):
        client.connect(server.ws_url, "no/slashes", user="ada")
    async with client.History(server.url, user="ada") as h:
        with pytest.raises(client.BadDocName):
            await h.events("bad name")


def test_a_url_that_names_no_server_is_refused_before_connecting() -> None:
    for url in ("localhost:8000", "notaurl", "ftp://127.0.0.1/ws"):
        with pytest.raises(client.BadURL, match="is not a server URL"):
            client.connect(url, "notes", user="ada")
        with pytest.raises(ValueError, match="is not a server URL"):  # BadURL is one
            client.History(url, user="ada")


async def test_server_gone() -> None:
    port = free_port()  # nobody listens there
    with pytest.raises(client.ServerGone, match="cannot connect.*tried for 0.5 s"):
        async with client.connect(
            f"ws://127.0.0.1:{port}/ws", "doc", user="ada", connect_timeout=0.5
        ):
            pass
    # without reconnecting, at once
    with pytest.raises(client.ServerGone, match="cannot connect"):
        async with client.connect(f"ws://127.0.0.1:{port}/ws", "doc", user="ada", reconnect=False):
            pass
    async with client.History(f"http://127.0.0.1:{port}") as h:
        with pytest.raises(client.ServerGone):
            await h.docs()


async def test_a_bot_started_before_its_server_waits_for_it(settings: Settings) -> None:
    """The first connection is tried again until connect_timeout, so a bot started
    with its server (or while it restarts) connects once the server is up."""
    opening = asyncio.create_task(
        client.connect(f"ws://127.0.0.1:{settings.port}/ws", "early", user="bot").open()
    )
    await asyncio.sleep(0.5)
    assert not opening.done()
    async with run_server(settings):
        session = await asyncio.wait_for(opening, 15)
        try:
            session.text().insert(0, "up")
            await session.flush()
        finally:
            await session.close()


async def test_requests_while_the_server_is_gone_raise_server_gone(
    settings: Settings,
) -> None:
    async with run_server(settings) as srv:
        s = client.connect(srv.ws_url, "gone", user="ada", max_backoff=0.2)
        await s.open()
        s.text().insert(0, "x")
        await s.flush()
    # the server stopped; the session keeps trying to reconnect
    await s.wait_for(lambda: not s.connected, timeout=5)
    with pytest.raises(client.ServerGone, match="not connected"):
        await s.undo(timeout=0.3)
    with pytest.raises(client.ServerGone):
        await s.flush(timeout=0.3)
    await s.close()


async def test_give_up_after(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """Once the session has given up, an edit raises why at once (it was kept in the
    local document without a word, only flush() or close()'s warning saying it was lost),
    and changes nothing."""
    async with run_server(settings) as srv:
        s = client.connect(srv.ws_url, "giveup", user="ada", max_backoff=0.1, give_up_after=0.5)
        await s.open()
        s.text().append("kept")
        await s.flush()
    with pytest.raises(client.ServerGone, match="gave up"):
        await s.wait_for(lambda: False, timeout=10)
    with pytest.raises(client.ServerGone, match="gave up"):
        s.text().append(" lost")
    assert s.text() == "kept" and s.pending == 0
    caplog.set_level(logging.WARNING, logger="palimpsest.client")
    await s.close()
    assert "did not reach the server" not in caplog.text, caplog.text


async def test_an_edit_after_the_token_expired_raises_at_once(settings: Settings) -> None:
    """A fixed token that expires ends the session (4401): an edit after that raises
    the AuthFailed that ended it, at once, instead of being kept for nobody to send."""
    settings = dataclasses.replace(settings, jwt_secret=SECRET)
    async with run_server(settings) as srv:
        # taken for about 1 s (exp 29 s ago, a leeway of 30)
        token = mint(SECRET, "ada", "write", ["expiring"], ttl=-29)
        async with client.connect(srv.ws_url, "expiring", token=token) as s:
            s.text().append("kept")
            await s.flush()
            with pytest.raises(client.AuthFailed, match="4401"):
                await s.wait_for(lambda: False, timeout=30)
            with pytest.raises(client.AuthFailed, match="4401"):
                s.text().append(" lost")
            assert s.text() == "kept" and s.pending == 0


async def test_tokens_bad_forbidden_and_read_only(settings: Settings) -> None:
    settings = dataclasses.replace(settings, jwt_secret=SECRET)
    async with run_server(settings) as srv:
        with pytest.raises(client.AuthFailed) as bad:
            async with client.connect(srv.ws_url, "secret", token="not-a-token"):
                pass
        assert bad.value.code == 4401 and not isinstance(bad.value, client.Forbidden)
        with pytest.raises(client.AuthFailed):  # no token at all
            async with client.connect(srv.ws_url, "secret", user="ada"):
                pass

        other = mint(SECRET, "ada", "write", ["other-*"])
        with pytest.raises(client.Forbidden) as forbidden:
            async with client.connect(srv.ws_url, "secret", token=other):
                pass
        assert forbidden.value.code == 4403

        writer = mint(SECRET, "ada", "write", ["secret"])
        async with client.connect(srv.ws_url, "secret", token=writer) as w:
            assert w.user == "ada" and w.role == "write"
            w.text().insert(0, "signed")
            await w.flush()

        reader = mint(SECRET, "rex", "read", ["secret"])
        async with client.connect(srv.ws_url, "secret", token=reader) as r:
            assert r.role == "read" and r.text() == "signed"
            # refused at once, before anything changes: the local text still matches
            with pytest.raises(client.ReadOnly, match="read-only"):
                r.text().insert(0, "nope ")
            with pytest.raises(client.ReadOnly, match="read-only"):
                r.text().set("nope")
            assert r.text() == "signed" and r.error is None
            await r.flush(timeout=5)  # nothing to send, nothing refused
            with pytest.raises(client.ReadOnly, match="read-only"):
                async with r.undo_group():
                    pass
            # and so do undo, redo and the groups' calls: undo() answered ok=False
            # ("read-only: you cannot undo"), which `if not await s.undo()` read as
            # nothing to undo
            for op in (r.undo, r.redo, r.open_group, r.close_group):
                with pytest.raises(client.ReadOnly, match="read-only"):
                    await op()
            # an edit through pycrdt itself cannot be stopped before it happens: the
            # session says so at once, and sends nothing
            r.doc.get("content", type=YText).insert(0, "raw ")
            assert isinstance(r.error, client.ReadOnly), r.error
            with pytest.raises(client.ReadOnly, match="read-only"):
                await r.flush(timeout=5)
        async with client.connect(srv.ws_url, "secret", token=writer) as w:
            assert w.text() == "signed"  # the read-only edits never landed

        # what the server refuses (a document brought with local changes, ydoc=) is the
        # session's error too
        ydoc: Doc[Any] = Doc()
        ydoc.get("content", type=YText).insert(0, "offline ")
        async with client.connect(srv.ws_url, "secret", token=reader, ydoc=ydoc) as r:
            await r.wait_for(lambda: r.error is not None)
            assert isinstance(r.error, client.ReadOnly) and "refused" in str(r.error)
            with pytest.raises(client.ReadOnly):
                await r.flush(timeout=5)
            r.text()  # still reads

        async with client.History(srv.url, token="garbage") as h:
            with pytest.raises(client.AuthFailed) as e:
                await h.docs()
            assert e.value.code == 401
        async with client.History(srv.url, token=other) as h:
            with pytest.raises(client.Forbidden):
                await h.undo("secret")
        async with client.History(srv.url, token=reader) as h:
            with pytest.raises(client.Forbidden):
                await h.undo("secret")


async def test_a_server_that_never_syncs_times_out() -> None:
    # a TCP listener that accepts and says nothing: the websocket handshake never ends
    handlers: list[asyncio.Task[None]] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.create_task(silent(reader, writer)))

    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(client.Timeout):
            async with client.connect(
                f"ws://127.0.0.1:{port}/ws", "doc", user="ada", connect_timeout=0.5
            ):
                pass
    finally:
        srv.close()
        await srv.wait_closed()
        await asyncio.wait_for(asyncio.gather(*handlers), 5)


async def test_shares_a_caller_doc(server: RunningServer) -> None:
    mine: Doc[Any] = Doc()
    async with client.connect(server.ws_url, "own", user="ada", ydoc=mine) as a:
        assert a.doc is mine
        a.text().insert(0, "x")
        await a.flush()
    events = await server.backend.store.read("own")
    assert [e.actor for e in events] == ["ada"]


async def test_rate_limited_connection_comes_back_and_loses_nothing(settings: Settings) -> None:
    # a server that allows 10 updates/s (burst 20) and a client that does not throttle:
    # the server drops the connection (1013 or 4429), the client backs off, reconnects,
    # and its step 2 carries everything the server did not take
    settings = dataclasses.replace(settings, max_events_per_second=10.0)
    async with run_server(settings) as srv:
        async with client.connect(
            srv.ws_url, "ratelimited", user="ada", max_frames_per_second=0, max_backoff=0.2
        ) as a:
            for i in range(100):
                a.text().append(str(i % 10))
                await asyncio.sleep(0.001)
            await a.wait_for(lambda: a.connections >= 2, timeout=10, what="a reconnection")
            await a.flush(timeout=20)
        async with client.connect(srv.ws_url, "ratelimited", user="bob") as b:
            assert b.text() == "0123456789" * 10


async def test_a_wrong_url_says_so(server: RunningServer) -> None:
    with pytest.raises(client.NotFound, match="ws://HOST:PORT/ws"):
        async with client.connect(f"ws://127.0.0.1:{server.port}/nope", "doc", user="ada"):
            pass
    # an http:// base URL is understood
    async with client.connect(server.url, "doc", user="ada") as s:
        assert s.connected


# --- what field testing found -----------------------------------------------------------


async def test_a_big_document_brought_with_ydoc_is_published(server: RunningServer) -> None:
    # 9 MiB made before connecting: the first step 2 is over the server's 8 MiB frame
    # limit, so it goes as a step 2 and sync updates of about 1 MiB
    mine: Doc[Any] = Doc()
    text = mine.get("content", type=YText)
    for i in range(9):
        text += chr(ord("a") + i) * (1 << 20)
    async with client.connect(server.ws_url, "bigydoc", user="ada", ydoc=mine) as a:
        await a.flush(timeout=120)
        assert a.error is None and a.connections == 1
    async with client.connect(server.ws_url, "bigydoc", user="bob") as b:
        assert b.text() == str(text)


async def test_one_value_over_the_document_limit_fails_once_with_its_size(
    settings: Settings,
) -> None:
    # what cannot be cut (one binary value) may be over the frame limit: an update's frame
    # is bounded by the document's size. Over that: TooLarge, whose message gives the
    # sizes, and no reconnecting to send it again and again
    settings = dataclasses.replace(settings, max_frame_bytes=2 << 20, max_doc_bytes=8 << 20)
    async with run_server(settings) as srv:
        async with client.connect(srv.ws_url, "blob", user="ada") as a:
            a.text().insert(0, "x" * (3 << 20))  # text is cut: it goes
            await a.flush(timeout=60)
            a.doc.get("m", type=Map)["blob"] = b"\x01" * (3 << 20)  # over a frame: it goes
            await a.flush(timeout=60)
            a.doc.get("m", type=Map)["more"] = b"\x02" * (3 << 20)  # 9 MiB in all
            with pytest.raises(client.TooLarge, match=r"would grow over the limit of 8388608"):
                await a.flush(timeout=60)
            assert a.connections == 1 and isinstance(a.error, client.TooLarge)
        async with client.connect(srv.ws_url, "blob", user="bob") as b:
            assert len(b.text()) == 3 << 20
            assert len(b.doc.get("m", type=Map)["blob"]) == 3 << 20
            assert "more" not in b.doc.get("m", type=Map)


async def test_an_observer_that_raises_is_the_callers_bug_not_the_servers(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="palimpsest.client")
    async with (
        client.connect(server.ws_url, "observed", user="bot") as bot,
        client.connect(server.ws_url, "observed", user="human") as human,
    ):
        ytext = bot.doc.get("content", type=YText)
        calls: list[int] = []

        def buggy(_event: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise KeyError("a bug in my handler")

        ytext.observe(buggy)
        human.text().append("hello")
        await bot.wait_for(lambda: str(ytext) == "hello", timeout=5)
        # logged as the caller's, with its traceback; the session goes on
        (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "observer raised" in record.getMessage()
        assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)
        assert bot.error is None and bot.connected and bot.connections == 1
        human.text().append(" again")
        await bot.wait_for(lambda: bot.text() == "hello again", timeout=5)
        bot.text().append("!")
        await human.wait_for(lambda: human.text() == "hello again!", timeout=5)

        # an observer may not edit inside the remote transaction (pycrdt refuses: logged
        # the same way); scheduled after it, as docs/client.md says, the edit goes out
        loop = asyncio.get_running_loop()

        def answer(_event: Any) -> None:
            if str(ytext).endswith("ping"):
                loop.call_soon(lambda: bot.text().append(" pong"))

        ytext.observe(answer)
        human.text().append(" ping")
        await human.wait_for(lambda: human.text() == "hello again! ping pong", timeout=5)
        assert bot.error is None and bot.connections == 1


async def test_presence_not_renewed_expires(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # y-protocols drops an entry not renewed for 30 s; the test shortens that to 1 s
    monkeypatch.setattr(session_module, "_PRESENCE_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(session_module, "_PRESENCE_CHECK_SECONDS", 0.05)

    def entry(clock: int) -> bytes:
        state = json.dumps({"name": "ghost"})
        return P.encode_awareness(P.encode_awareness_entries([(4242, clock, state)]))

    async with (
        client.connect(server.ws_url, "stale", user="ada") as a,
        yclient.connect(server.ws_url, "stale", user="ghost") as ghost,
    ):
        await ghost.send_raw(entry(1))
        await a.wait_for(lambda: a.presence.get(4242) == {"name": "ghost"}, timeout=5)
        # still connected, never renewing, never withdrawing: it goes all the same
        await a.wait_for(lambda: 4242 not in a.presence, timeout=10)
        assert a.connected
        await ghost.send_raw(entry(2))  # a renewal brings it back
        await a.wait_for(lambda: a.presence.get(4242) == {"name": "ghost"}, timeout=5)


async def test_text_of_a_root_of_another_type_is_refused(server: RunningServer) -> None:
    async with client.connect(server.ws_url, "typed", user="ada") as a:
        a.doc.get("m", type=Map)["k"] = "v"
        a.doc.get("arr", type=Array).append(1)
        await a.flush()
        with pytest.raises(client.WrongType, match="holds a map"):
            a.text("m")  # a root this doc typed itself
    before = len(await server.backend.store.read("typed"))
    async with client.connect(server.ws_url, "typed", user="bob") as b:
        # roots only received: pycrdt has not typed them yet
        with pytest.raises(client.WrongType, match="the root 'm' of 'typed' holds a map") as e:
            b.text("m")
        assert isinstance(e.value, TypeError)
        with pytest.raises(client.WrongType, match="holds an array, not text"):
            b.text("arr")
        # nothing was fixed as text nor written: the map reads as before
        assert b.doc.get("m", type=Map).to_py() == {"k": "v"}
        b.text("content").insert(0, "a text root beside them")  # a new root is fine
        await b.flush()
    assert len(await server.backend.store.read("typed")) == before + 1


async def test_no_message_quotes_the_token(settings: Settings) -> None:
    settings = dataclasses.replace(settings, jwt_secret=SECRET)
    token = mint(SECRET, "ada", "write", ["doc"])
    messages: list[str] = []
    async with run_server(settings) as srv:
        with pytest.raises(client.NotFound) as wrong_path:
            async with client.connect(f"ws://127.0.0.1:{srv.port}/nope", "doc", token=token):
                pass
        messages.append(str(wrong_path.value))
        s = client.connect(srv.ws_url, "doc", token=token, max_backoff=0.1, give_up_after=1)
        await s.open()
        messages.append(s.url)
    with pytest.raises(client.ServerGone) as not_connected:
        await s.flush(timeout=0.3)
    messages.append(str(not_connected.value))
    with pytest.raises(client.ServerGone, match="gave up") as gave_up:
        await s.wait_for(lambda: False, timeout=10)
    messages.append(str(gave_up.value))
    await s.close()
    with pytest.raises(client.ServerGone) as unreachable:
        async with client.connect(
            f"ws://127.0.0.1:{free_port()}/ws", "doc", token=token, connect_timeout=0.3
        ):
            pass
    messages.append(str(unreachable.value))
    for m in messages:
        assert token not in m and "token=…" in m, m
    # durations read as durations, not as 0.29999513s
    assert not re.search(r"\d\.\d{3,}", messages[2]), messages[2]
    assert "not connected" in messages[2] and " s " in messages[2]


async def test_a_flush_that_times_out_says_its_timeout_and_the_possible_causes(
    tmp_path: Path,
) -> None:
    """The message gave the time left when it ran out ("within 0 s") and blamed the
    store whatever the cause. Two real causes: a store that refuses writes (SQLite's
    query_only, as a read-only file) and a server that stopped answering (SIGSTOP)."""
    settings = Settings(db=str(tmp_path / "held.db"), port=free_port())
    async with run_server(settings) as srv:
        store = srv.backend.store
        assert isinstance(store, SQLiteStore)
        async with client.connect(srv.ws_url, "held", user="ada") as s:
            s.text().insert(0, "before")
            await s.flush()
            await store.on_writer(lambda c: c.execute("PRAGMA query_only = 1"))
            s.text().append(" held")
            with pytest.raises(client.Timeout) as held:
                await s.flush(timeout=1.5)
            await store.on_writer(lambda c: c.execute("PRAGMA query_only = 0"))
            await s.flush(timeout=30)
    assert "within 1.5 s" in str(held.value), held.value
    assert "/readyz" in str(held.value) and "not answering" in str(held.value), held.value

    srv2 = ServerProcess(tmp_path / "frozen")
    await srv2.astart()
    try:
        async with client.connect(srv2.ws_url, "frozen", user="ada") as s:
            s.text().insert(0, "x")
            await s.flush()
            assert srv2.pid is not None
            os.kill(srv2.pid, signal.SIGSTOP)
            try:
                s.text().append("y")
                with pytest.raises(client.Timeout) as frozen:
                    await s.flush(timeout=2)
            finally:
                os.kill(srv2.pid, signal.SIGCONT)
            await s.flush(timeout=30)
    finally:
        await srv2.astop()
    assert "within 2 s" in str(frozen.value), frozen.value
    assert "not answering" in str(frozen.value), frozen.value


async def test_a_session_whose_document_is_deleted_raises_deleted(server: RunningServer) -> None:
    """The server closes a deleted document's sessions with 4404 "was deleted", and
    refuses a later session whose copy still holds the deleted content the same way:
    both are the documented `Deleted` (HTTP 410's), not a plain `NotFound`."""
    async with client.connect(server.ws_url, "gone", user="bot") as s:
        s.text().append("hello")
        await s.flush()
        kept = Doc()
        kept.apply_update(s.doc.get_update())
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.delete("/api/docs/gone", params={"user": "admin"})
            assert r.status_code == 200, r.text
        with pytest.raises(client.Deleted, match="was deleted") as closed:
            await s.wait_for(lambda: False, timeout=30)
        assert closed.value.code == 4404 and "admin" not in str(closed.value)
    with pytest.raises(client.Deleted, match="was deleted and this copy holds its content"):
        async with client.connect(server.ws_url, "gone", user="bot", ydoc=kept):
            pass


async def test_a_long_deleted_name_keeps_the_reason_whole_enough(server: RunningServer) -> None:
    """A close frame's reason holds 123 bytes. The 4404 for a copy that holds a deleted
    document's content named the document last, and with a long name the end of the
    sentence was cut ("…to use the name…", a field test in Chromium). It names none now
    (the client knows its own; the server's log names it), so it is whole whatever the
    name's length, "was deleted" (the client's `Deleted` reads it) and what to do
    included."""
    name = "n" * 128
    async with client.connect(server.ws_url, name, user="bot") as s:
        s.text().append("hello")
        await s.flush()
        kept = Doc()
        kept.apply_update(s.doc.get_update())
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.delete(f"/api/docs/{name}", params={"user": "admin"})
            assert r.status_code == 200, r.text
        with pytest.raises(client.Deleted):
            await s.wait_for(lambda: False, timeout=30)
    with pytest.raises(client.Deleted) as refused:
        async with client.connect(server.ws_url, name, user="bot", ydoc=kept):
            pass
    reason = str(refused.value)
    assert "start from an empty document" in reason, reason
    assert reason.endswith("start from an empty document to use the name again"), reason
    assert len(reason.split(": ", 1)[1].encode()) <= 123, reason


async def test_a_token_provider_keeps_a_long_running_bot_connected(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """connect(token=str) took one fixed token: once it expired (4401), the session
    failed for good and the bot's later edits stayed local. A callable (sync or async)
    is called at each (re)connection for a fresh token, and an expiry is a reconnection
    (routine: said at INFO)."""
    caplog.set_level(logging.INFO, logger="palimpsest.client")
    settings = dataclasses.replace(settings, jwt_secret=SECRET)
    # a token the server takes for about 3 s: its exp is 27 s ago, within the leeway of 30
    short = -27
    async with run_server(settings) as srv:
        issued: list[str] = []

        def sync_provider() -> str:
            issued.append("sync")
            return mint(SECRET, "bot", "write", ["renewed"], ttl=short)

        async def async_provider() -> str:
            await asyncio.sleep(0)
            issued.append("async")
            return mint(SECRET, "bot", "write", ["renewed"], ttl=short)

        for provider in (sync_provider, async_provider):
            async with client.connect(srv.ws_url, "renewed", token=provider) as s:
                assert "token=…" in s.url
                s.text().append(f"<{provider.__name__} before>")
                await s.flush()
                await s.wait_for(lambda: s.connections >= 2, timeout=30, what="a reconnection")
                assert s.error is None
                s.text().append(f"<{provider.__name__} after>")
                await s.flush()
            assert issued.count(provider.__name__.split("_")[0]) >= 2
        expiries = [r for r in caplog.records if "4401" in r.getMessage()]
        assert expiries and all(r.levelno == logging.INFO for r in expiries)
        assert all("reconnecting" in r.getMessage() for r in expiries)

        # a provider whose token is refused at once fails open(), as a bad string does
        def bad() -> str:
            return "not-a-token"

        with pytest.raises(client.AuthFailed):
            await client.connect(srv.ws_url, "renewed", token=bad).open()

        def broken() -> str:
            raise OSError("the identity provider is down")

        with pytest.raises(client.AuthFailed, match="identity provider is down"):
            await client.connect(srv.ws_url, "renewed", token=broken).open()

        reader = mint(SECRET, "check", "read", ["renewed"])
        async with client.connect(srv.ws_url, "renewed", token=reader) as r:
            for name in ("sync_provider", "async_provider"):
                assert f"<{name} before><{name} after>" in str(r.text())


async def test_a_new_session_on_an_expired_ones_doc_takes_its_changes_over(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """With a fixed token, the way on after a 4401 is a new session with ydoc=old.doc
    and a fresh token: it sends what the old one could not, and closing the old one
    warned "N local change(s) ... they are lost", which was false."""
    caplog.set_level(logging.WARNING, logger="palimpsest.client")
    settings = dataclasses.replace(settings, jwt_secret=SECRET)
    async with run_server(settings) as srv:
        old = client.connect(
            srv.ws_url, "handover", token=mint(SECRET, "bot", "write", ["handover"], ttl=-27)
        )
        await old.open()
        old.text().append("sent. ")
        await old.flush()
        with pytest.raises(client.AuthFailed, match="4401"):
            await old.wait_for(lambda: False, timeout=30)
        with pytest.raises(client.AuthFailed, match="4401"):
            old.text().append("refused. ")  # (session.text() says it at once)
        # what pycrdt itself made after (or what the dying connection did not deliver)
        old.doc.get("content", type=YText).insert(6, "typed after it expired. ")
        assert old.pending == 1
        fresh = mint(SECRET, "bot", "write", ["handover"])
        async with client.connect(srv.ws_url, "handover", token=fresh, ydoc=old.doc) as new:
            await new.flush()
            assert new.text() == "sent. typed after it expired. "
        await old.close()
        assert "local change" not in caplog.text, caplog.text

        # the takeover counts them as the new session's own: lost with it, it says so
        old = client.connect(
            srv.ws_url, "handover", token=mint(SECRET, "bot", "write", ["handover"], ttl=-27)
        )
        await old.open()
        with pytest.raises(client.AuthFailed, match="4401"):
            await old.wait_for(lambda: False, timeout=30)
        old.doc.get("content", type=YText).insert(0, "never sent. ")
        other = mint(SECRET, "bot", "write", ["other"])
        new = client.connect(srv.ws_url, "other", token=other, ydoc=old.doc)
        await new.open()  # another document: what it sends does not reach "handover"
        await new.close()
        await old.close()
        assert "closed with 1 local change(s)" in caplog.text, caplog.text


@contextlib.asynccontextmanager
async def _other_http_server(version: str = "1.1") -> Any:
    """An HTTP server that is not ours (a proxy's error page, another app): it answers
    GET /STATUS/... with that status and an HTML page, anything else with 404. Yields
    its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            first = path.split("/")[1]
            status = int(first) if first.isdigit() else 404
            body = f"<html>status {status} from some other server</html>".encode()
            writer.write(
                f"HTTP/{version} {status} Whatever\r\ncontent-type: text/html\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


async def test_a_handshake_answered_by_another_http_server_says_what_answered() -> None:
    """A proxy's 500/502/503 in front of a server that is down raised `Timeout ...
    (server not answering?)` after connect_timeout; a 200 page raised a bare
    `Refused code=200`; another app's 404 page over HTTP was NotFound, as if the
    document were unknown."""
    async with _other_http_server() as port:
        for status in (500, 502, 503):
            with pytest.raises(client.ServerError) as e:
                await client.connect(
                    f"ws://127.0.0.1:{port}/{status}", "doc", user="ada", connect_timeout=1
                ).open()
            assert e.value.code == status and f"HTTP {status}" in str(e.value), e.value
        with pytest.raises(client.Refused, match="not a Palimpsest server") as ok:
            await client.connect(f"ws://127.0.0.1:{port}/200", "doc", user="ada").open()
        assert ok.value.code == 200
        async with client.History(f"http://127.0.0.1:{port}", user="ada") as h:
            with pytest.raises(client.NotFound, match="not a Palimpsest server"):
                await h.version("notes")


@contextlib.contextmanager
def _python_http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Any:
    """Python's own http.server (HTTP/1.0, as ``python -m http.server``) in a thread on a
    free loopback port; yields the port."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@contextlib.asynccontextmanager
async def _answers_and_stays(answer: bytes) -> Any:
    """A server that answers any request with `answer` and keeps the connection open
    (never closes it: only the client can end it). Yields its port."""
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            await done.wait()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        done.set()
        srv.close()
        await srv.wait_closed()


class _NoGet(http.server.BaseHTTPRequestHandler):
    """http.server with no do_GET: every GET is answered 501 (Unsupported method)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_a_handshake_answered_over_http_1_0_says_what_answered(tmp_path: Path) -> None:
    """A server that speaks only HTTP/1.0 (``python -m http.server``: 404 or 501), or
    answers with anything that is not HTTP/1.1 (a malformed response, a protocol that is
    not HTTP), can never upgrade to a websocket. The
    client tried again until connect_timeout and raised ServerGone ``did not receive a
    valid HTTP response``, or, when that server kept the connection open (a bare HTTP/1.0
    200, a banner that is not HTTP at all), waited for it to close until connect_timeout:
    Timeout ``server not answering?``. Now it is refused at once, naming what answered
    (its status line and Server header)."""
    _Files.directory = str(tmp_path)  # (serves nothing: every path is a 404)
    with _python_http_server(_Files) as port:
        with pytest.raises(client.Refused) as e:
            await client.connect(
                f"ws://127.0.0.1:{port}/ws", "doc", user="ada", connect_timeout=5
            ).open()
        msg = str(e.value)
        assert e.value.code == 404 and "'HTTP/1.0 404 File not found'" in msg, msg
        assert "SimpleHTTP/" in msg and "not a Palimpsest server" in msg, msg
    with _python_http_server(_NoGet) as port:
        with pytest.raises(client.Refused) as e:
            await client.connect(
                f"ws://127.0.0.1:{port}/ws", "doc", user="ada", connect_timeout=5
            ).open()
        assert e.value.code == 501 and "HTTP/1.0 501" in str(e.value), e.value
    async with _answers_and_stays(b"HTTP/1.0 200 OK\r\nServer: bare/1\r\n\r\nhello") as port:
        with pytest.raises(client.Refused) as e:
            await client.connect(
                f"ws://127.0.0.1:{port}/ws", "doc", user="ada", connect_timeout=5
            ).open()
        msg = str(e.value)
        assert e.value.code == 200 and "'HTTP/1.0 200 OK'" in msg and "bare/1" in msg, msg
    bad = b"HTTP/1.1 200 OK\r\nServer: odd/2\r\nno colon here\r\n\r\n"
    async with _answers_and_stays(bad) as port:
        with pytest.raises(client.Refused, match="does not read as HTTP/1.1") as e:
            await client.connect(
                f"ws://127.0.0.1:{port}/ws", "doc", user="ada", connect_timeout=5
            ).open()
        assert e.value.code == 200 and "odd/2" in str(e.value), e.value
    async with _answers_and_stays(b"SSH-2.0-OpenSSH_9.6\r\n") as port:
        with pytest.raises(client.Refused, match="'SSH-2.0-OpenSSH_9.6', not HTTP") as e:
            await client.connect(
                f"ws://127.0.0.1:{port}/ws", "doc", user="ada", connect_timeout=5
            ).open()
        assert e.value.code is None


async def test_history_takes_a_token_provider_as_connect_does(settings: Settings) -> None:
    """History(token=...) took a fixed string only: a function (what connect() takes)
    was sent as its repr, "the token is damaged". A function or an async def is asked
    at the first request, and again when the server answers 401 (the token expired)."""
    settings = dataclasses.replace(settings, jwt_secret=SECRET)
    async with run_server(settings) as srv:
        writer = mint(SECRET, "ada", "write", ["hist-*"])
        async with client.connect(srv.ws_url, "hist-renewed", token=writer) as s:
            s.text().append("one")
            await s.flush()
        issued: list[int] = []

        def sync_provider() -> str:
            issued.append(1)
            # the first is taken for about 1 s (exp 29 s ago, a leeway of 30)
            return mint(SECRET, "bot", "read", ["hist-*"], ttl=-29 if len(issued) == 1 else 600)

        async def async_provider() -> str:
            await asyncio.sleep(0)
            return mint(SECRET, "bot", "read", ["hist-*"])

        async with client.History(srv.url, token=async_provider) as h:
            assert (await h.version("hist-renewed")).text == "one"
        async with client.History(srv.url, token=sync_provider) as h:
            assert (await h.version("hist-renewed")).text == "one"
            assert len(issued) == 1  # not asked per request
            await asyncio.sleep(1.5)  # its first token expired
            assert (await h.version("hist-renewed")).text == "one"
            assert len(issued) == 2

        def bad() -> str:
            return "not-a-token"

        with pytest.raises(client.AuthFailed):
            async with client.History(srv.url, token=bad) as h:
                await h.version("hist-renewed")

        def broken() -> str:
            raise OSError("the identity provider is down")

        with pytest.raises(client.AuthFailed, match="identity provider is down"):
            async with client.History(srv.url, token=broken) as h:
                await h.version("hist-renewed")
