"""Hostile clients (issue 15): each attack through real sockets, then refused, and the
server keeps serving everyone else. docs/security.md lists the limits these exercise."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from conftest import RunningServer, closed_with, eventually, run_server
from pycrdt import Doc, Text
from serverproc import ServerProcess
from test_hocuspocus import Raw
from test_interop_node import NodeClient, node_modules
from test_limits import raw_handshake
from yclient import connect

from palimpsest import hocuspocus as H
from palimpsest import protocol as P
from palimpsest.auth.tokens import LEEWAY, mint
from palimpsest.repeat_refusals import RepeatRefusals
from palimpsest.routes.ws import Connection
from palimpsest.settings import Settings
from palimpsest.updates import skip_item

__all__ = ["node_modules"]  # the session fixture that runs `npm ci` when needed

SECRET = "hostile-test-secret-of-at-least-32-bytes"


def presence(*entries: tuple[int, int, str]) -> bytes:
    return P.encode_awareness(P.encode_awareness_entries(list(entries)))


def connections(server: RunningServer, doc: str) -> list[Connection]:
    room = server.backend.rooms.get_loaded(doc)
    peers = room.peers.values() if room is not None else []
    return [p for p in peers if isinstance(p, Connection)]


def awareness_frames(client: Any) -> list[P.AwarenessUpdate]:
    return [f for f in client.frames if isinstance(f, P.AwarenessUpdate)]


# --- 6. presence states are validated, never relayed unchecked -------------------------------


@pytest.mark.node
async def test_invalid_presence_is_refused_and_y_websocket_clients_survive(
    node_modules: Path, tmp_path: Path
) -> None:
    doc = "presence-doc"
    async with ServerProcess(tmp_path / "srv") as srv:
        before = NodeClient(srv, doc, "alice", tmp_path / "alice.log")
        after = NodeClient(srv, doc, "bob", tmp_path / "bob.log")
        try:
            async with connect(srv.ws_url, doc, user="writer") as writer:
                await before.start()
                await before.connect()
                await before.call("awareness", state={"user": {"name": "alice"}})
                bad_states = [
                    "{not json",  # y-websocket's JSON.parse throws on it
                    "[" * 200 + "]" * 200,  # a recursive parser overflows
                    '"a string"',
                    '{"n": NaN}',
                    # a cursor plugin writes it into a style attribute as given
                    '{"user": {"name": "m", "color": "red; background: url(//127.0.0.1:9/x)"}}',
                    # Lexical keeps its colour at the top of the state
                    '{"name": "m", "color": "red;background-image:url(//127.0.0.1:9/x)"}',
                ]
                # (each attempt a request of its own: the same one refused 3 times is
                # refused at the handshake, test_a_frame_refused_again_and_again_...)
                for i, state in enumerate(bad_states):
                    url = f"{srv.ws_url}/{doc}?user=mallory&try={i}"
                    async with websockets.connect(url) as ws:
                        await ws.send(presence((777 + i, 1, '{"ok": true}'), (900 + i, 1, state)))
                        code, reason = await closed_with(ws)
                    assert code == 4400, (state[:20], code, reason)
                    assert "presence" in reason and "state" in reason
                # lib0 throws reading a client id or clock past 2^53 - 1: relayed, one
                # such entry killed every Node.js client of the document, and joiners
                for entry in ((1 << 64) - 1, 2**53):
                    url = f"{srv.ws_url}/{doc}?user=mallory&try={entry}"
                    async with websockets.connect(url) as ws:
                        await ws.send(presence((850, entry, '{"ok": true}')))
                        code, reason = await closed_with(ws)
                    assert code == 4400 and "past 2^53 - 1" in reason, (code, reason)
                    async with websockets.connect(f"{url}-clock") as ws:
                        await ws.send(presence((entry, 1, '{"ok": true}')))
                        code, reason = await closed_with(ws)
                    assert code == 4400 and "past 2^53 - 1" in reason, (code, reason)
                writer.insert(0, "still editing")
                assert await before.wait_text(equals="still editing") == "still editing"
                # a newcomer joins after the attempts: it syncs and sees only valid presence
                await after.start()
                await after.connect()
                assert await after.wait_text(equals="still editing") == "still editing"
                await after.call("waitAwareness", name="alice")
                state = await after.call("state")
                remote = state["awareness"]
                assert [r["state"]["user"]["name"] for r in remote] == ["alice"], remote
                writer.insert(0, ">> ")
                assert await after.wait_text(equals=">> still editing")
                assert await before.wait_text(equals=">> still editing")
        finally:
            await before.aclose()
            await after.aclose()


# --- 1. presence flood --------------------------------------------------------------------


async def test_presence_flood_is_bounded_per_connection_and_per_room(settings: Settings) -> None:
    settings.max_awareness_clients_per_room = 5
    doc = "flood"
    async with run_server(settings) as server, connect(server.ws_url, doc, user="w") as peer:

        async def clients(n: int) -> tuple[int | None, str]:
            """A new connection's presence for n clients of its own: how it was closed."""
            async with websockets.connect(f"{server.ws_url}/{doc}?user=mallory") as ws:
                await ws.send(presence(*[(10_000 + i, 1, "{}") for i in range(n)]))
                return await closed_with(ws)

        # one connection claiming more clients than its share is closed; nothing is relayed
        code, reason = await clients(12)
        assert code == 4400, (code, reason)
        assert "presence for 12 clients" in reason
        # thousands in one update: refused before one is read (more than the room's 5
        # states plus a connection's 8 could be an echo of)
        code, reason = await clients(6000)
        assert code == 4413, (code, reason)
        assert "6000 entries" in reason
        room = server.backend.rooms.get_loaded(doc)
        assert room is not None and not room.awareness
        assert not awareness_frames(peer)

        # many connections with one client each: the room keeps at most 5 states, so a
        # newcomer's first presence frame stays bounded
        socks = []
        for i in range(8):
            ws = await websockets.connect(f"{server.ws_url}/{doc}?user=u{i}")
            socks.append(ws)
            await ws.send(presence((20_000 + i, 1, json.dumps({"user": {"name": f"u{i}"}}))))
        try:
            await eventually(lambda: len(room.awareness) == 5, what="5 states")
            async with connect(server.ws_url, doc, user="late") as late:
                first = await eventually(lambda: awareness_frames(late), what="presence")
                assert len(P.decode_awareness(first[0].payload)) == 5
            assert all(ws.close_code is None for ws in socks)  # they still edit, unseen
        finally:
            for ws in socks:
                await ws.close()


async def test_echoed_presence_is_not_counted_but_what_an_update_changes_is(
    settings: Settings,
) -> None:
    """Providers send back every presence state they receive, a newcomer the whole
    snapshot: that echo is not held to max_awareness_bytes (the room's presence may be
    far bigger), what an update changes is. Here 6 states of 1 KB fill more than the
    2,000 bytes one update may change."""
    settings.max_awareness_bytes = 2000
    settings.max_awareness_clients_per_room = 10
    doc = "echo"

    def state(name: str) -> str:
        return json.dumps({"user": {"name": name, "avatar": "a" * 1000}})

    async with run_server(settings) as server, connect(server.ws_url, doc, user="w") as peer:
        socks = []
        try:
            for i in range(6):
                ws = await websockets.connect(f"{server.ws_url}/{doc}?user=u{i}")
                socks.append(ws)
                await ws.send(presence((100 + i, 1, state(f"u{i}"))))
            room = server.backend.rooms.get_loaded(doc)
            assert room is not None
            await eventually(lambda: len(room.awareness) == 6, what="6 states")
            # one of them leaves: a newcomer's echo may still carry its state
            await socks.pop().close()
            await eventually(lambda: len(room.awareness) == 5, what="a state dropped")
            snapshot = [(100 + i, 1, state(f"u{i}")) for i in range(6)]
            before = len(awareness_frames(peer))

            async with websockets.connect(f"{server.ws_url}/{doc}?user=new") as new:
                # the whole snapshot back (one state older than held), and its own
                echo = [*snapshot[:4], (104, 0, state("u4")), snapshot[5]]
                echo.append((200, 1, state("new")))
                await new.send(presence(*echo))
                got = await eventually(
                    lambda: awareness_frames(peer)[before:], what="the newcomer's presence"
                )
                # relayed: its own state only, not one echoed entry
                assert [P.decode_awareness(f.payload) for f in got] == [[echo[-1]]]
                assert len(room.awareness) == 6
                # told once that the client that left is gone (y-protocols then drops it)
                async with asyncio.timeout(10):
                    while True:
                        msg = P.decode(await new.recv())
                        if isinstance(msg, P.AwarenessUpdate):
                            entries = P.decode_awareness(msg.payload)
                            if any(s == "null" for _, _, s in entries):
                                # at the clock it held: y-protocols drops a state on a null
                                # of the same clock
                                assert entries == [(105, 1, "null")]
                                break
                await new.send(presence(*echo))  # again: changes nothing, still allowed
                await new.send(presence((200, 2, state("new!"))))
                await eventually(
                    lambda: json.loads(room.awareness[200].state)["user"]["name"] == "new!",
                    what="its own change",
                )

            # new states are changes: over 2,000 bytes in one update is refused (4413),
            # even when echoes ride along, and nothing of it is relayed
            seen = len(awareness_frames(peer))
            async with websockets.connect(f"{server.ws_url}/{doc}?user=big") as big:
                fresh = [(300 + i, 1, state(f"b{i}")) for i in range(2)]
                await big.send(presence(*snapshot[:5], *fresh))
                code, reason = await closed_with(big)
            assert code == 4413, (code, reason)
            assert "changing 2" in reason and "over the limit of 2000" in reason, reason
            # a state of another connection's client with a newer clock is not its own:
            # neither counted nor relayed, as before
            async with websockets.connect(f"{server.ws_url}/{doc}?user=forger") as forger:
                await forger.send(presence(*[(100 + i, 9, state("forged")) for i in range(5)]))
                await forger.send(presence((400, 1, state("forger"))))
                await eventually(lambda: 400 in room.awareness, what="the forger's own state")
                assert "forged" not in room.awareness[100].state
            # an update may not name more clients than the room holds plus a connection's
            # share (10 + 8 here): each entry is parsed
            async with websockets.connect(f"{server.ws_url}/{doc}?user=many") as many:
                await many.send(presence(*[(100, 1, "{}")] * 19))
                code, reason = await closed_with(many)
            assert code == 4413 and "19 entries" in reason, (code, reason)
            relayed = [P.decode_awareness(f.payload) for f in awareness_frames(peer)[seen:]]
            assert all(c in (400,) for entries in relayed for c, _, s in entries if s != "null")
            assert all(ws.close_code is None for ws in socks)
        finally:
            for ws in socks:
                await ws.close()


async def test_awareness_and_sync_step1_count_against_the_rate(settings: Settings) -> None:
    settings.max_events_per_second = 50
    async with run_server(settings) as server:
        for frame in (presence((5, 1, '{"a":1}')), P.encode_sync_step1(b"\x00")):
            async with websockets.connect(f"{server.ws_url}/rate?user=m") as ws:
                for clock in range(1, 400):
                    try:
                        await ws.send(frame if frame[0] != 1 else presence((5, clock, "{}")))
                    except websockets.ConnectionClosed:
                        break
                code, reason = await closed_with(ws)
            assert code == 1013, (frame[:2], code, reason)
            assert "messages per second" in reason


# --- 9. read-only connections cannot write through extension ops --------------------------


def token(user: str, role: Any, ttl: float = 600, **claims: Any) -> str:
    """A signed token; extra `claims` (even malformed ones) go in as given."""
    if not claims and isinstance(role, str):
        return mint(SECRET, user, role, ["*"], ttl=ttl)
    body = {"sub": user, "role": role, "docs": ["*"], "exp": int(time.time() + ttl), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


async def test_read_only_close_group_is_refused_and_logs_nothing(settings: Settings) -> None:
    settings.jwt_secret = SECRET
    doc = "ro-close"
    async with run_server(settings) as server:
        async with connect(server.ws_url, doc, token=token("w", "write")) as writer:
            writer.insert(0, "hello")
            await eventually(lambda: server.backend.rooms.get_loaded(doc) is not None)
            room = server.backend.rooms.get_loaded(doc)
            assert room is not None
            await eventually(lambda: room.seq >= 1, what="the edit logged")
            async with connect(server.ws_url, doc, token=token("r", "read")) as reader:
                head = await server.backend.store.head(doc)
                for op in ("close_group", "undo", "redo"):
                    answer = await reader.request({"type": op})
                    assert answer["ok"] is False and answer["status"] == 403, answer
                await room.flush()
                assert await server.backend.store.head(doc) == head


# --- 5. undo/redo count against the connection's byte rate --------------------------------


async def test_undo_redo_amplification_is_rate_limited(settings: Settings) -> None:
    # 256 KiB/s, bursts of 512 KiB: each undo or redo appends 400 KB, so the bucket runs
    # dry unless an op takes over 1.5 s (at 1 MiB/s a loaded machine's 0.4 s per op
    # refilled it as fast as the ops drained it, and the connection was never closed)
    settings.max_bytes_per_second = 256 * 1024
    settings.max_frame_bytes = 2 * 1024 * 1024
    settings.undo_capture_ms = 0
    doc = "amplify"
    async with run_server(settings) as server, connect(server.ws_url, doc, user="m") as c:
        await c.request({"type": "hello"})
        c.insert(0, "x" * 400_000)  # 400 KB, under the 512 KiB burst
        room = await eventually(lambda: server.backend.rooms.get_loaded(doc))
        await eventually(lambda: room.seq >= 1, what="the insert logged")
        head = room.seq
        answers = []
        started = time.monotonic()
        for i in range(40):
            try:
                answers.append(await c.request({"type": "undo" if i % 2 == 0 else "redo"}))
            except (TimeoutError, websockets.ConnectionClosed):
                break
            if c.close_code is not None or c.ws.close_code is not None:
                break
        elapsed = time.monotonic() - started
        await room.flush()
        appended = sum(len(ev.update) for ev in await server.backend.store.read(doc, head))
        # what a rate limit promises: the burst (the insert spent 400 KB of it), what the
        # time taken refilled, and the op that went into debt. On a quiet machine (an op
        # in ~0.4 s) that is a few ops and the connection is closed; on one so loaded
        # that each op took over 1.5 s, the ops themselves kept to the rate
        rate = settings.max_bytes_per_second
        assert appended <= 2 * rate + rate * elapsed + 500_000, (appended, elapsed)
        if len(answers) < 40:
            await eventually(lambda: c.ws.close_code is not None, what="closed")
            assert c.ws.close_code == 1013, (c.ws.close_code, c.ws.close_reason)
            assert "bytes per second" in (c.ws.close_reason or "")


# --- 7. a session ends with its token ----------------------------------------------------


async def test_a_request_refused_again_and_again_is_refused_at_the_handshake(
    settings: Settings,
) -> None:
    """A socket refused for good is accepted, then closed with its reason: y-websocket
    counts that as a success and comes back ten times a second. The same request
    refused 3 times within 30 s is refused at the handshake (HTTP 403, no reason), which
    y-websocket backs off from; a different request is not held back."""
    settings.jwt_secret = SECRET
    good = mint(SECRET, "ann", "write", ["*"])
    async with run_server(settings) as server:
        bad = f"{server.ws_url}/door?token=not-a-token"
        for _ in range(3):
            async with websockets.connect(bad) as ws:
                code, reason = await closed_with(ws)
            assert code == 4401 and "token" in reason, (code, reason)
        for _ in range(2):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(bad):
                    pass
            assert refused.value.response.status_code == 403
        # another document, another token, another origin: each is a request of its own
        async with websockets.connect(f"{server.ws_url}/other?token=not-a-token") as ws:
            assert (await closed_with(ws))[0] == 4401
        async with websockets.connect(bad, origin="http://localhost:3000") as ws:  # type: ignore[arg-type]
            assert (await closed_with(ws))[0] == 4401
        # any header an app's authenticate may read (an X-Api-Key): a valid key sent
        # from the address a revoked one came from was held back with it
        async with websockets.connect(bad, additional_headers={"X-Api-Key": "k2"}) as ws:
            assert (await closed_with(ws))[0] == 4401
        async with connect(server.ws_url, "door", token=good) as ann:
            ann.insert(0, "in")
            await eventually(lambda: ann.content == "in", what="ann edits")


def _foreign_items() -> tuple[bytes, bytes]:
    """An update that ann sends first (client id 4242 is hers from then on), and the
    next items under that client id, which no one else may send."""
    d = Doc(client_id=4242)
    text = d.get("content", type=Text)
    text += "a"
    first = d.get_update()
    sv = d.get_state()
    text += "b"
    return first, d.get_update(sv)


@pytest.mark.parametrize(
    ("refusal", "code"),
    [("frame-too-large", 4413), ("malformed-update", 4400), ("foreign-client-id", 4403)],
)
async def test_a_frame_refused_again_and_again_holds_back_no_other_tab(
    settings: Settings, refusal: str, code: int
) -> None:
    """A refusal for what a connection sent (a frame too large, an update that does not
    decode, items under another user's client id) is not counted towards the handshake
    hold. A provider sends such an update again on every reconnect (it is in its Y.Doc),
    and a second tab of the same user sends the same request (address, URL, headers)
    with nothing refused of its own: it was held back (HTTP 403) for as long as the
    first tab looped, 90 s and more."""
    settings.max_frame_bytes = 1000
    async with run_server(settings) as server:
        if refusal == "frame-too-large":
            frame = P.encode_awareness(b"\x00" * 2000)
        elif refusal == "malformed-update":
            frame = P.encode_sync_update(b"\x05\x05\x05")
        else:
            first, more = _foreign_items()
            async with websockets.connect(f"{server.ws_url}/looping?user=ann") as ws:
                await ws.send(P.encode_sync_update(first))
                room = await eventually(lambda: server.backend.rooms.get_loaded("looping"))
                await eventually(lambda: room.seq >= 1, what="ann's update logged")
            frame = P.encode_sync_update(more)
        # the headers yclient.connect sends (no compression): the same request as tab 2
        url = f"{server.ws_url}/looping?user=u"
        for _ in range(4):
            async with websockets.connect(url, compression=None) as ws:
                await ws.send(frame)
                got, reason = await closed_with(ws)
            assert got == code, (got, reason)
        async with connect(server.ws_url, "looping", "u") as tab2:
            tab2.insert(0, "in")
            await eventually(lambda: server.backend.rooms.get_loaded("looping") is not None)
            # the first tab keeps being refused for its frame, and tab 2 stays
            async with websockets.connect(url, compression=None) as ws:
                await ws.send(frame)
                assert (await closed_with(ws))[0] == code
            tab2.insert(2, "!")
            room = await eventually(lambda: server.backend.rooms.get_loaded("looping"))
            await eventually(lambda: "in!" in str(room.doc.get("content", type=Text)))
            assert tab2.close_code is None, (tab2.close_code, tab2.close_reason)


async def test_a_stale_copy_of_a_deleted_document_is_held_back_at_the_handshake(
    settings: Settings,
) -> None:
    """A refusal after the socket opened that the request brings on still counts: its
    document was deleted (4404; a provider's copy of it comes back on every reconnect).
    After 3 within 30 s, the handshake refuses it."""
    async with run_server(settings) as server, httpx.AsyncClient() as http:
        async with connect(server.ws_url, "gone", "ann") as ann:
            ann.insert(0, "secret")
            room = await eventually(lambda: server.backend.rooms.get_loaded("gone"))
            await eventually(lambda: room.seq >= 1, what="ann's edit logged")
            stale = ann.doc.get_state()
            r = await http.delete(f"{server.url}/api/docs/gone", params={"user": "root"})
            assert r.status_code == 200, r.text
        url = f"{server.ws_url}/gone?user=ann"
        for _ in range(3):
            async with websockets.connect(url) as ws:
                await ws.send(P.encode_sync_step1(stale))
                got, reason = await closed_with(ws)
            assert got == 4404 and "deleted" in reason, (got, reason)
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 403


def test_repeat_refusals_hold_a_request_back_while_its_refusals_are_recent() -> None:
    now = [0.0]
    held = RepeatRefusals(times=3, window=30.0, clock=lambda: now[0])
    for t in (0.0, 1.0):
        now[0] = t
        held.refused(b"k", 4401)
    assert held.holding(b"k") is None
    held.refused(b"k", 4403)  # another answer: counted afresh
    held.refused(b"k", 4429)  # too many connections: about the moment, not counted
    assert held.holding(b"k") is None
    for t in (2.0, 3.0):
        now[0] = t
        held.refused(b"k", 4403)
    assert held.holding(b"k") == 4403 and held.holding(b"j") is None
    now[0] = 30.9
    assert held.holding(b"k") == 4403
    now[0] = 31.0  # the oldest of the three is 30 s old: one attempt goes through
    assert held.holding(b"k") is None
    held.refused(b"k", 4403)
    assert held.holding(b"k") == 4403
    now[0] = 100.0
    assert held.holding(b"k") is None and not held._seen


async def test_token_expiry_closes_open_sockets_with_4401(settings: Settings) -> None:
    settings.jwt_secret = SECRET
    doc = "expiry"
    async with run_server(settings) as server:
        # valid now only thanks to the leeway; it runs out within three seconds (minted
        # once the server is up: a loaded machine's start-up can take longer than that)
        short = token("w", "write", ttl=-LEEWAY + 3)
        async with connect(server.ws_url, doc, token=short) as c:
            c.insert(0, "before")
            room = await eventually(lambda: server.backend.rooms.get_loaded(doc))
            await eventually(lambda: room.seq >= 1)
            await eventually(lambda: c.ws.close_code is not None, what="closed at exp")
            assert c.ws.close_code == 4401, (c.ws.close_code, c.ws.close_reason)
            assert "expired" in (c.ws.close_reason or "")
            seq = room.seq
            c.insert(0, "after")  # sent on a closed socket: never logged
            await room.flush()
            assert room.seq == seq
        # the expiry counts towards the handshake hold as a refusal of the request: a
        # provider that comes back with the same token is refused twice more, then held
        url = f"{server.ws_url}/{doc}?token={short}"
        for _ in range(2):
            async with websockets.connect(url, compression=None) as ws:
                assert (await closed_with(ws))[0] == 4401
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, compression=None):
                pass
        assert refused.value.response.status_code == 403


async def test_token_expiry_closes_a_hocuspocus_socket_until_a_fresh_token(
    settings: Settings,
) -> None:
    """On /hocuspocus each document is authenticated in-band; an expired token kept its
    access for as long as the socket lived (a write 40 s past exp was logged). Now the
    socket closes at exp (+ leeway), 4205 saying why (the providers reconnect on it and
    send their tokens again); the expired token opens nothing on the next socket, and a
    fresh one opens the document again, which takes the edit."""
    settings.jwt_secret = SECRET
    fresh = token("w", "write")
    async with run_server(settings) as server:
        url = f"{server.ws_url.rsplit('/', 1)[0]}/hocuspocus"
        async with websockets.connect(url) as ws:
            short = token("w", "write", ttl=-LEEWAY + 3)  # (minted once the socket is up)
            raw = Raw(ws)
            await raw.auth("exp", short)
            await raw.auth("long", fresh)
            await eventually(lambda: raw.of("exp", H.AUTH) and raw.of("long", H.AUTH))
            src: Doc[Any] = Doc()
            text = src.get("content", type=Text)
            ups: list[bytes] = []
            src.observe(lambda e: ups.append(e.update))
            text.insert(0, "before ")
            await raw.send("exp", H.SYNC, P.encode_sync_update(ups[-1])[1:])
            room = await eventually(lambda: server.backend.rooms.get_loaded("exp"))
            await eventually(lambda: room.seq >= 1)
            await eventually(lambda: ws.close_code is not None, what="closed at exp")
            assert ws.close_code == H.RESET_CONNECTION and "token expired" in ws.close_reason
            assert "'exp'" in ws.close_reason
            raw.task.cancel()
        text.insert(7, "after ")
        async with websockets.connect(url) as ws:
            raw = Raw(ws)
            await raw.auth("exp", short)
            denied = await eventually(lambda: raw.refusals("exp"), what="refused")
            assert "token expired" in H.decode_string(denied[0].body, "reason")
            await raw.auth("exp", fresh)
            await eventually(lambda: raw.authed("exp"), what="open again")
            await raw.send("exp", H.SYNC, P.encode_sync_update(ups[-1])[1:])
            room = await eventually(lambda: server.backend.rooms.get_loaded("exp"))
            await eventually(lambda: str(room.doc.get("content", type=Text)) == "before after ")
            raw.task.cancel()


async def test_a_hocuspocus_document_renews_its_session_with_a_fresh_token(
    settings: Settings,
) -> None:
    """Before its token expires, a provider sends the document a new auth message
    (``sendToken()``): the same user's fresh token renews the session, answered
    Authenticated, and the document stays open past the old token's expiry; a token
    of another user, or a bad one, closes the document with PermissionDenied."""
    settings.jwt_secret = SECRET
    async with run_server(settings) as server:
        async with websockets.connect(f"{server.ws_url.rsplit('/', 1)[0]}/hocuspocus") as ws:
            # minted once the server and the socket are up (a loaded machine's start-up
            # took longer than the 1.5 s this token used to have), expiring 4 s from now:
            # time for the renewal to be sent and answered
            short_ttl = 4.0
            short = token("w", "write", ttl=-LEEWAY + short_ttl)
            expires = time.monotonic() + short_ttl
            raw = Raw(ws)
            await raw.auth("renew", short)
            await raw.auth("other", token("w", "write"))
            await eventually(lambda: raw.of("renew", H.AUTH) and raw.of("other", H.AUTH))
            await raw.auth("renew", token("w", "read"))  # renewed, as a reader now
            answers = await eventually(lambda: raw.of("renew", H.AUTH)[1:], what="renewed")
            assert answers[0].body[0] == H.AUTH_AUTHENTICATED
            assert H.decode_string(answers[0].body[1:], "scope") == "readonly"
            await asyncio.sleep(max(0.0, expires - time.monotonic()) + 1.0)  # past its expiry
            assert raw.refusals("renew") == [] and ws.close_code is None
            src: Doc[Any] = Doc()
            ups: list[bytes] = []
            src.observe(lambda e: ups.append(e.update))
            src.get("content", type=Text).insert(0, "read only now")
            await raw.send("renew", H.SYNC, P.encode_sync_update(ups[-1])[1:])
            status = await eventually(lambda: raw.of("renew", H.SYNC_STATUS), what="status")
            assert status[0].body == b"\x00"  # refused: the renewed role is read
            await raw.auth("renew", token("mallory", "write"))
            denied = await eventually(
                lambda: [f for f in raw.of("renew", H.AUTH) if f.body[0] != H.AUTH_AUTHENTICATED]
            )
            assert "cannot renew 'w'" in H.decode_string(denied[0].body[1:], "reason")
            room = await eventually(lambda: server.backend.rooms.get_loaded("renew"))
            await eventually(lambda: not room.peers, what="renew closed")
            other = server.backend.rooms.get_loaded("other")
            assert other is not None and len(other.peers) == 1 and ws.close_code is None
            raw.task.cancel()


# --- 2. step-1 amplification: answers queued are bounded by bytes -------------------------


async def test_sync_step1_amplification_is_bounded_per_address(settings: Settings) -> None:
    settings.max_send_queue_bytes_per_ip = 6 * 1024 * 1024
    settings.max_frame_bytes = 2 * 1024 * 1024
    settings.max_events_per_second = 0
    settings.max_bytes_per_second = 0
    doc = "amplify-step1"
    async with run_server(settings) as server:
        async with connect(server.ws_url, doc, user="w") as w:
            for _ in range(4):
                w.insert(0, "y" * 250_000)
                await asyncio.sleep(0)
            room = await eventually(lambda: server.backend.rooms.get_loaded(doc))
            await eventually(lambda: len(room.doc.get_update()) > 900_000, what="1 MB doc")
        socks = [
            await asyncio.to_thread(raw_handshake, server.port, f"/ws/{doc}?user=m{i}")
            for i in range(8)
        ]
        try:
            step1 = P.encode_sync_step1(b"\x00")
            header = bytes([0x82, 0x80 | len(step1)]) + b"\x00\x00\x00\x00"  # masked, key 0
            for s in socks:
                for _ in range(15):
                    s.sendall(header + step1)

            def queued() -> int:
                return sum(c._queued_bytes for c in connections(server, doc))

            def settled() -> bool:
                conns = connections(server, doc)
                # (today's code has no answer count: a queued byte stands in for it)
                return len(conns) < 8 or all(
                    getattr(c, "_answers_queued", c._queued_bytes) for c in conns
                )

            await eventually(settled, what="every step 1 handled")
            await asyncio.sleep(0.2)  # let late frames arrive (nothing asserted on time)
            # 8 x 15 answers of 1 MB would be 120 MB: deduplicated per connection and
            # bounded per address
            limit = settings.max_send_queue_bytes_per_ip
            assert queued() <= limit + 2 * 1024 * 1024, queued()
        finally:
            for s in socks:
                s.close()


# --- 8. browsers: Origin allow-list and JSON-only bodies ----------------------------------


async def test_foreign_origins_are_refused_in_open_mode(settings: Settings) -> None:
    settings.allow_origin = ("https://app.example",)
    doc = "origins"
    async with run_server(settings) as server:
        async with connect(server.ws_url, doc, user="w") as w:
            w.insert(0, "keep me")
            room = await eventually(lambda: server.backend.rooms.get_loaded(doc))
            await eventually(lambda: room.seq >= 1)
        url = f"{server.ws_url}/{doc}?user=evil"
        async with websockets.connect(url, origin="https://evil.example") as ws:  # type: ignore[arg-type]
            code, reason = await closed_with(ws)
        assert code == 4403 and "origin" in reason, (code, reason)
        for origin in (
            "http://localhost:5173",
            "https://vite.localhost:5173",
            "https://app.example",
            f"http://127.0.0.1:{server.port}",
        ):
            async with websockets.connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                assert P.decode(await ws.recv())  # the server's sync step 1
        async with httpx.AsyncClient(base_url=server.url) as http:
            restore = f"/api/docs/{doc}/restore"
            r = await http.post(
                restore, json={"seq": 0}, headers={"origin": "https://evil.example"}
            )
            assert r.status_code == 403 and "origin" in r.json()["detail"]
            # the cross-site form / no-cors fetch shape: text/plain, no preflight
            plain = {"content-type": "text/plain"}
            r = await http.post(restore, content=b'{"seq": 0}', headers=plain)
            assert r.status_code == 415
            r = await http.post(restore, content=b"{" + b" " * (2 << 20) + b"}",
                                headers={"content-type": "application/json"})  # fmt: skip
            assert r.status_code == 413
            assert (await http.get(f"/api/docs/{doc}/versions/head")).json()["roots"]
            await room.flush()
            assert str(room.doc.get("content", type=Text)) == "keep me"
            # non-browser clients send no Origin and pass
            r = await http.post(f"/api/docs/{doc}/undo/close")
            assert r.status_code == 200, r.text


async def test_the_sites_cookies_do_not_turn_the_origin_check_on_for_tokens(
    settings: Settings,
) -> None:
    """Behind a proxy that passes its upstream's name as Host (nginx's default, or
    `$host` without the port), the page's own origin does not match the Host. With
    tokens that is no matter, until the browser held any cookie for the site (the main
    app's session): a Cookie header turned the Origin check on, and the page's websocket
    and writes were refused. The built-in token auth reads no cookie: cookies change
    nothing (with --allow-origin the check applies as before, cookie or not)."""
    settings.jwt_secret = SECRET
    page = {"origin": "https://example.org:8443", "cookie": "main_site=1"}
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        upstream = {**page, "host": "palimpsest", **_bearer(token("w", "write"))}
        r = await http.put("/api/docs/cookied/text", json={"text": "hi"}, headers=upstream)
        assert r.status_code == 200, r.text
        url = f"{server.ws_url}/cookied?token={token('w', 'write')}"
        async with websockets.connect(url, additional_headers=page) as ws:  # type: ignore[arg-type]
            assert P.decode(await ws.recv())  # the server's sync step 1
    settings.allow_origin = ("https://app.example",)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        for headers in (upstream, {k: v for k, v in upstream.items() if k != "cookie"}):
            r = await http.put("/api/docs/cookied/text", json={"text": "x"}, headers=headers)
            assert r.status_code == 403 and "origin" in r.json()["detail"], r.text


async def test_open_mode_answers_only_to_its_own_names(settings: Settings) -> None:
    """DNS rebinding: a page of http://evil.example:PORT whose name then resolves to
    127.0.0.1 sends `Host: evil.example:PORT` and an Origin that matches it (none on a
    GET). The Origin check compared the two and let it read, write, delete and open the
    websocket; in open mode the Host must now be a name the server is served as."""
    settings.allow_origin = ("https://app.example",)
    settings.allow_host = ("collab.internal", ".dev.example")
    doc = "rebinding"
    async with run_server(settings) as server:
        port = server.port
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.put(f"/api/docs/{doc}/text?user=alice", json={"text": "secret"})
            assert r.status_code == 200, r.text
            evil = {"host": f"evil.example:{port}", "origin": f"http://evil.example:{port}"}
            for method, path, body in (
                ("GET", f"/api/docs/{doc}/versions/head", None),
                ("PUT", f"/api/docs/{doc}/text?user=mallory", {"text": "pwned"}),
                ("DELETE", f"/api/docs/{doc}?user=mallory", None),
                ("GET", "/", None),
            ):
                headers = evil if method != "GET" else {"host": evil["host"]}
                r = await http.request(method, path, json=body, headers=headers)
                assert r.status_code == 403, (method, path, r.status_code, r.text)
                detail = r.json()["detail"]
                assert "'evil.example'" in detail and "--allow-host evil.example" in detail
            # the names it is served as: loopback names, addresses, --allow-host (a
            # domain with its subdomains), the hosts of --allow-origin
            for host in ("localhost", "app.localhost", "127.0.0.1", "[::1]", "10.1.2.3",
                         "collab.internal", "dev.example", "a.dev.example", "app.example",
                         "LOCALHOST."):  # fmt: skip
                r = await http.get(f"/api/docs/{doc}/versions/head",
                                   headers={"host": f"{host}:{port}"})  # fmt: skip
                assert r.status_code == 200, (host, r.status_code, r.text)
            assert (await http.get(f"/api/docs/{doc}/versions/head")).json()["roots"]
        # the websocket, as a browser on the rebound name opens it
        for name, code in (("evil.example", 4403), ("localhost", None)):
            sock = socket.create_connection(("127.0.0.1", port))
            url = f"ws://{name}:{port}/ws/{doc}?user=mallory"
            async with websockets.connect(url, sock=sock, origin=f"http://{name}:{port}") as ws:  # type: ignore[arg-type]
                if code is None:
                    assert P.decode(await ws.recv())  # the server's sync step 1
                    continue
                got, reason = await closed_with(ws)
            assert got == code and "--allow-host" in reason, (got, reason)
        room = await eventually(lambda: server.backend.rooms.get_loaded(doc))
        await room.flush()
        assert str(room.doc.get("content", type=Text)) == "secret"
    # with tokens the name is not checked: a token is not sent by the browser on its own
    settings.jwt_secret = SECRET
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/api/docs", headers={
            "host": f"evil.example:{server.port}", **_bearer(token("r", "read"))
        })  # fmt: skip
        assert r.status_code == 200, r.text


async def test_health_checks_by_a_service_name_pass_the_host_check(settings: Settings) -> None:
    """A Docker or Kubernetes health check asks by the service's name (`Host:
    palimpsest:8000`): in open mode the Host check answered 403, and the container was
    taken for dead. /healthz and /readyz disclose nothing: any Host gets them (GET);
    the rest of the server is still answered only by its own names."""
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        service = {"host": "palimpsest:8000"}
        r = await http.get("/healthz", headers=service)
        assert r.status_code == 200 and r.json()["status"] == "alive", r.text
        r = await http.get("/readyz", headers=service)
        assert r.status_code == 200 and r.json()["status"] == "ready", r.text
        for path in ("/metrics", "/api/docs", "/", "/healthz/x"):
            r = await http.get(path, headers=service)
            assert r.status_code == 403 and "--allow-host palimpsest" in r.text, (path, r.text)


async def test_allow_host_and_allow_origin_match_as_they_are_commonly_spelt(
    settings: Settings,
) -> None:
    """Spellings accepted at start that never matched: `--allow-host example.com.` (an
    absolute name: the 403 advised the dot), `--allow-host '*.example.com'`, and
    `--allow-origin https://app.example.com:443` (a browser's Origin never names the
    default port), for the Origin check and CORS both."""
    settings.allow_host = ("example.com.", "*.dev.example")
    settings.allow_origin = ("https://app.example.com:443", "http://plain.example:80")
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        for host in ("example.com", "example.com.", "a.dev.example", "dev.example",
                     "app.example.com", "plain.example"):  # fmt: skip
            r = await http.get("/api/docs", headers={"host": host})
            assert r.status_code == 200, (host, r.text)
        r = await http.get("/api/docs", headers={"host": "evil.example."})
        assert r.status_code == 403 and "--allow-host evil.example " in r.json()["detail"]
        for origin in ("https://app.example.com", "http://plain.example"):
            r = await http.put("/api/docs/spelt/text?user=a", json={"text": origin},
                               headers={"origin": origin})  # fmt: skip
            assert r.status_code == 200, (origin, r.text)
            assert r.headers["access-control-allow-origin"] == origin
            r = await http.options("/api/docs/spelt/text", headers={
                "origin": origin, "access-control-request-method": "PUT"})  # fmt: skip
            assert r.status_code == 200, (origin, r.text)
        r = await http.put("/api/docs/spelt/text?user=a", json={"text": "x"},
                           headers={"origin": "https://app.example.com:8443"})  # fmt: skip
        assert r.status_code == 403, r.text


async def test_security_headers_on_the_page_and_every_answer(server: RunningServer) -> None:
    """The page could be framed by any site (clickjacking) and no answer said nosniff:
    the page and its files now carry a CSP with frame-ancestors 'self', X-Frame-Options,
    nosniff and a Referrer-Policy; every other answer, refusals included, nosniff."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/", "/?doc=x&user=u", "/static/app.js", "/static/style.css"):
            r = await http.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "frame-ancestors 'self'" in csp and "script-src 'self';" in csp, csp
            assert r.headers["x-frame-options"] == "SAMEORIGIN"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
        answers = (
            await http.get("/api/docs"),
            await http.get("/api/docs/nothing-here/versions/head"),
            await http.get("/api/nowhere"),
            await http.post("/api/docs/x/undo", headers={"origin": "https://evil.example"}),
            await http.get("/healthz"),
        )
        for r in answers:
            assert r.headers.get("x-content-type-options") == "nosniff", (r.url, r.headers)
            assert "content-security-policy" not in r.headers, r.url


# --- 4. handshakes that never end ---------------------------------------------------------


def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(timeout)
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


async def _held_then_408(server: RunningServer, n: int, first: bytes) -> list[bytes]:
    """`n` sockets that send `first` and stop there: while they wait they count against
    the address (a websocket is refused with 429); what each is answered once the
    handshake timeout closes it."""
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(n)]
    try:
        for s in held:
            s.sendall(first)
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"{server.ws_url}/d?token={token('u', 'write')}"):
                pass
        assert refused.value.response.status_code == 429
        answers = []
        for s in held:
            s.settimeout(10)
            answers.append(await asyncio.to_thread(s.recv, 200))
        return answers
    finally:
        for s in held:
            s.close()


async def test_handshakes_are_bounded_in_time_size_and_number(settings: Settings) -> None:
    settings.handshake_timeout = 1.0
    settings.max_connections_per_ip = 4
    settings.jwt_secret = SECRET
    async with run_server(settings) as server:
        port = server.port
        half = await asyncio.to_thread(_raw, port, b"GET /ws/x HTTP/1.1\r\nHost: a\r\n")
        assert half.startswith(b"HTTP/1.1 408"), half
        long_line = b"GET /" + b"a" * (settings.max_request_head_bytes + 10) + b" HTTP/1.1\r\n"
        answer = await asyncio.to_thread(_raw, port, long_line)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
        # sockets still in their handshake count against the address, until the
        # timeout closes them
        for answer in await _held_then_408(server, 4, b"GET /ws/"):
            assert answer.startswith(b"HTTP/1.1 408"), answer
        # a legitimate token of 16 KB opens a websocket
        big = token("u", "write", pad="p" * 16_000)
        assert len(big) > 16_000
        async with connect(server.ws_url, "d", token=big) as c:
            c.insert(0, "ok")
            room = await eventually(lambda: server.backend.rooms.get_loaded("d"))
            await eventually(lambda: room.seq >= 1)


async def test_handshake_timeouts_are_said_a_few_then_counted_in_one_line(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slowloris (a header byte every 3 s from hundreds of sockets) made one INFO line
    per socket, "closing a connection from (…): no complete request head within 10s":
    295 lines in 10 s in a field test. The first few of an interval are said; the rest
    at DEBUG, counted exactly in one INFO line when the interval ends."""
    import logging

    from palimpsest import handshake

    monkeypatch.setattr(handshake, "HEAD_TIMEOUTS_EVERY", 4.0)
    caplog.set_level(logging.DEBUG, logger="palimpsest")
    settings.handshake_timeout = 0.5
    settings.max_connections_per_ip = 100
    n = 20
    async with run_server(settings) as server:
        answers = await asyncio.gather(
            *(asyncio.to_thread(_raw, server.port, b"GET /ws/x HTTP/1.1\r\nHost: a\r\n")
              for _ in range(n))
        )  # fmt: skip
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers

        def summary() -> list[str]:
            return [r.getMessage() for r in caplog.records
                    if r.levelno == logging.INFO and "more connections" in r.getMessage()
                    and "no complete request" in r.getMessage()]  # fmt: skip

        await eventually(summary, timeout=10, what="the count said")
    lines = [r for r in caplog.records if r.getMessage().startswith("closing a connection from")]
    said = [r for r in lines if r.levelno >= logging.INFO]
    assert len(lines) == n, len(lines)
    assert 1 <= len(said) <= handshake.HEAD_TIMEOUTS_SAID, [r.getMessage() for r in said]
    [line] = summary()
    assert line.startswith(f"{n - len(said)} more connections"), line


async def test_a_stalled_body_is_bounded_in_time_and_number_and_a_whole_head_in_size(
    settings: Settings,
) -> None:
    """A request whose body never ends (``content-length: 1000`` and four bytes of it)
    held its socket, and what had come of the body, for good: 600 of them stayed open a
    minute, without a token. Now the body is part of the request that must arrive within
    handshake_timeout (408), and until it has, the socket counts against the address.
    And a head over max_request_head_bytes that arrives in one read (which h11 does not
    measure) is refused with 431, a websocket's with 4413."""
    settings.handshake_timeout = 1.0
    settings.max_connections_per_ip = 3
    settings.max_request_head_bytes = 16 * 1024
    settings.jwt_secret = SECRET
    stall = (
        b"PUT /api/docs/d/text HTTP/1.1\r\nHost: a\r\ncontent-type: application/json\r\n"
        b'content-length: 1000\r\n\r\n{"te'
    )
    async with run_server(settings) as server:
        port = server.port
        for answer in await _held_then_408(server, 3, stall):
            assert answer.startswith(b"HTTP/1.1 408") and b"body" in answer, answer
        # a whole body within the time is answered (401: no token) and frees the slot
        whole = stall.replace(b"content-length: 1000", b"content-length: 12") + b'xt": "a"}'
        assert (await asyncio.to_thread(_raw, port, whole)).startswith(b"HTTP/1.1 401")
        big = b"x-big: " + b"a" * 30_000 + b"\r\n"
        head = b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + big + b"connection: close\r\n\r\n"
        answer = await asyncio.to_thread(_raw, port, head)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
        ok = head.replace(big, b"x-small: a\r\n")
        assert (await asyncio.to_thread(_raw, port, ok)).startswith(b"HTTP/1.1 200")
        url = f"{server.ws_url}/d?token={token('u', 'write', pad='p' * 30_000)}"
        async with websockets.connect(url, max_size=None) as ws:
            code, reason = await closed_with(ws)
        assert code == 4413 and "head" in reason, (code, reason)
        async with connect(server.ws_url, "d", token=token("u", "write")) as c:
            c.insert(0, "still serving")
            room = await eventually(lambda: server.backend.rooms.get_loaded("d"))
            await eventually(lambda: room.seq >= 1)


# --- 11. bad input gets a clean 4xx / 44xx ----------------------------------------------


async def test_bad_claims_refs_and_json_get_clean_refusals(settings: Settings) -> None:
    settings.jwt_secret = SECRET
    doc = "bad-input"
    async with run_server(settings) as server:
        async with connect(server.ws_url, doc, token=token("w", "write")) as w:
            w.insert(0, "x")
            room = await eventually(lambda: server.backend.rooms.get_loaded(doc))
            await eventually(lambda: room.seq >= 1)
        bad_tokens = {
            # a list is read for the highest role in it; one with none is refused
            "role list without a role": token("m", ["offline_access", 7]),
            "exp string": token("m", "write", exp=str(int(time.time()) + 600)),
            "exp 10^30": token("m", "write", exp=10**30),
        }
        async with httpx.AsyncClient(base_url=server.url) as http:
            for what, tok in bad_tokens.items():
                r = await http.get(f"/api/docs/{doc}/events", headers=_bearer(tok))
                assert r.status_code == 401, (what, r.status_code, r.text)
                async with websockets.connect(f"{server.ws_url}/{doc}?token={tok}") as ws:
                    assert (await closed_with(ws))[0] == 4401, what
            reader = _bearer(token("r", "read"))
            writer = {**_bearer(token("w", "write")), "content-type": "application/json"}
            digits = "9" * 5000
            for url in (f"/api/docs/{doc}/versions/{digits}", f"/api/docs/{doc}/blame?seq={digits}",
                        f"/api/docs/{doc}/diff?from=1&to={digits}"):  # fmt: skip
                r = await http.get(url, headers=reader)
                assert r.status_code == 400, (url[:40], r.status_code)
            for body in (b"[" * 100_000, b'{"seq": "' + digits.encode() + b'"}'):
                r = await http.post(f"/api/docs/{doc}/restore", content=body, headers=writer)
                assert r.status_code == 400, (body[:12], r.status_code, r.text[:100])
            # a lone surrogate is JSON but not text: 400, where the text, the root's name
            # and the tag's name each gave a 500 (UTF-8, pycrdt, the store)
            admin = {**_bearer(token("a", "admin")), "content-type": "application/json"}
            for url, body, who in (
                (f"/api/docs/{doc}/text", rb'{"text": "a\ud800b"}', writer),
                (f"/api/docs/{doc}/text", rb'{"text": "x", "root": "\udfff"}', writer),
                (f"/api/docs/{doc}/tags", rb'{"name": "a\ud800"}', admin),
            ):
                r = await (http.put if url.endswith("text") else http.post)(
                    url, content=body, headers=who
                )
                assert r.status_code == 400 and "surrogate" in r.text, (url, r.status_code, r.text)
            for name in (" ", "v1 ", " v1"):  # no name, or one that looks like another
                r = await http.post(f"/api/docs/{doc}/tags", json={"name": name}, headers=admin)
                assert r.status_code == 400, (name, r.status_code)
            r = await http.put(
                f"/api/docs/{doc}/text", json={"text": "x \U0001f600"}, headers=writer
            )
            assert r.status_code == 200, r.text  # (an astral character is text)
            # readers do not learn the server's host name and pid from event metadata
            events = (await http.get(f"/api/docs/{doc}/events", headers=reader)).json()["events"]
            conn = events[0]["meta"]["conn"]
            assert server.backend.settings.instance.split(":")[0] not in conn, conn
        # extension messages: NaN ids, huge numbers, deep nesting: 4400, never invalid JSON
        for body in ('{"type":"hello","id":NaN}', '{"type":"hello","id":' + digits + "}",
                     '{"type":"hello","x":' + "[" * 5000 + "]" * 5000 + "}",
                     # read as inf, the answer's id was Infinity (JSON.parse throws)
                     '{"type":"hello","id":1e400}', '{"type":"hello","id":-1e400}'):  # fmt: skip
            # (a request of its own each time, as the same one refused 3 times is
            # refused at the handshake)
            url = f"{server.ws_url}/{doc}?token={token('w', 'write')}&try={len(body)}"
            async with websockets.connect(url) as ws:
                await ws.send(P.write_var_uint(P.MSG_EXTENSION) + P.write_var_string(body))
                code, reason = await closed_with(ws)
            assert code == 4400 and "not JSON" in reason, (body[:30], code, reason)
        # (read over HTTP: the room captured above unloads once idle for 0.5 s, which a
        # loaded machine reaches within this test, and a reload is another Room)
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.get(f"/api/docs/{doc}/versions/head", headers=reader)
        assert r.json()["roots"]["content"]["value"] == "x \U0001f600", r.text


async def test_a_number_too_long_to_read_is_refused_in_our_words(server: RunningServer) -> None:
    """An integer of more than Python's 4,300 digits was refused with Python's own
    wording, telling the client to "use sys.set_int_max_str_digits()"."""
    digits = "9" * 5000
    async with httpx.AsyncClient(base_url=server.url) as http:
        for number in (digits, "-" + digits):
            r = await http.put(
                "/api/docs/long-number/text?user=u",
                content=b'{"text": "x", "n": ' + number.encode() + b"}",
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 400, r.text
            detail = r.json()["detail"]
            assert "a number of 5000 digits is too long (at most 4300)" in detail, detail
            assert "sys." not in detail, detail
    async with websockets.connect(f"{server.ws_url}/long-number?user=u") as ws:
        body = '{"type":"hello","id":' + digits + "}"
        await ws.send(P.write_var_uint(P.MSG_EXTENSION) + P.write_var_string(body))
        code, reason = await closed_with(ws)
    assert code == 4400 and "5000 digits is too long" in reason and "sys." not in reason, reason


def _bearer(tok: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tok}"}


def test_short_hs256_secrets_are_refused_at_start_up(tmp_path: Path) -> None:
    from palimpsest.backend import Backend

    with pytest.raises(ValueError, match="at least 32"):
        Backend(Settings(db=str(tmp_path / "x.db"), jwt_secret="123456"))


async def test_document_creation_quota_per_identity(settings: Settings) -> None:
    settings.jwt_secret = SECRET
    settings.max_new_docs_per_hour = 3
    async with run_server(settings) as server:
        tok = token("spammer", "write")
        for i in range(3):
            async with connect(server.ws_url, f"spam-{i}", token=tok) as c:
                c.insert(0, "x")
                room = await eventually(lambda i=i: server.backend.rooms.get_loaded(f"spam-{i}"))
                await eventually(lambda room=room: room.seq >= 1)
        async with connect(server.ws_url, "spam-3", token=tok) as c:
            c.insert(0, "x")
            await eventually(lambda: c.ws.close_code is not None, what="refused")
            assert c.ws.close_code == 4403 and "max_new_docs_per_hour" in (c.ws.close_reason or "")
        assert await server.backend.store.head("spam-3") == 0
        # writing into documents it already made is not creating
        async with connect(server.ws_url, "spam-0", token=tok) as c:
            c.insert(0, "more ")
            room = server.backend.rooms.get_loaded("spam-0")
            assert room is not None
            await eventually(lambda: room.seq >= 2)
        # PUT /text creates documents too, and counts against the same quota (110 PUTs
        # of new names were all made, and then 100 more over sockets)
        writer = {**_bearer(tok), "content-type": "application/json"}
        async with httpx.AsyncClient(base_url=server.url, headers=writer) as http:
            r = await http.put("/api/docs/spam-4/text", json={"text": "x"})
            assert r.status_code == 403 and "max_new_docs_per_hour" in r.text, r.text
            assert await server.backend.store.head("spam-4") == 0
            r = await http.put("/api/docs/spam-1/text", json={"text": "rewritten"})
            assert r.status_code == 200 and r.json()["seq"] == 2, r.text
            other = {**_bearer(token("other", "write")), "content-type": "application/json"}
            r = await http.put("/api/docs/other-0/text", json={"text": "x"}, headers=other)
            assert r.status_code == 200, r.text
            for i in range(1, 3):
                r = await http.put(f"/api/docs/other-{i}/text", json={"text": "x"}, headers=other)
                assert r.status_code == 200, r.text
        async with connect(server.ws_url, "other-3", token=token("other", "write")) as c:
            c.insert(0, "x")  # its fourth: the HTTP ones counted
            await eventually(lambda: c.ws.close_code is not None, what="refused")
            assert c.ws.close_code == 4403 and "max_new_docs_per_hour" in (c.ws.close_reason or "")


async def test_creation_quota_is_not_shared_by_tenants_with_one_user_name(
    settings: Settings,
) -> None:
    """Two tenants whose tokens share a secret may each have an 'alice': the quota is
    counted per identity as the token defines it (sub and docs), so one tenant's alice
    using hers up leaves the other's whole."""
    settings.jwt_secret = SECRET
    settings.max_new_docs_per_hour = 2
    acme = mint(SECRET, "alice", "write", ["acme-*"], ttl=600)
    globex = mint(SECRET, "alice", "write", ["globex-*"], ttl=600)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        for doc in ("acme-1", "acme-2"):
            r = await http.put(f"/api/docs/{doc}/text", json={"text": "x"}, headers=_bearer(acme))
            assert r.status_code == 200, r.text
        r = await http.put("/api/docs/acme-3/text", json={"text": "x"}, headers=_bearer(acme))
        assert r.status_code == 403 and "max_new_docs_per_hour" in r.text, r.text
        r = await http.put("/api/docs/globex-1/text", json={"text": "x"}, headers=_bearer(globex))
        assert r.status_code == 200, r.text
        async with connect(server.ws_url, "globex-2", token=globex) as c:
            c.insert(0, "x")
            room = await eventually(lambda: server.backend.rooms.get_loaded("globex-2"))
            await eventually(lambda: room.seq >= 1)
            assert c.ws.close_code is None


async def test_http_writes_are_rate_limited_per_address(settings: Settings) -> None:
    """State-changing API requests do their work on the event loop (a restore, a text
    written whole, an undo) where the websocket's rate limit does not see them: at most
    max_http_writes_per_second per client address, 429 beyond; reads are not counted,
    and another address has its own allowance."""
    settings.max_http_writes_per_second = 2  # bursts of 4
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        started = time.monotonic()
        statuses = []
        for i in range(20):
            r = await http.put("/api/docs/rated/text", json={"text": f"v{i}"})
            statuses.append(r.status_code)
            if r.status_code != 200:
                break
        elapsed = time.monotonic() - started
        accepted = statuses.count(200)
        # the burst, plus what refilled while the requests ran (a slow machine)
        assert 4 <= accepted <= 4 + 2 * elapsed + 1, (statuses, elapsed)
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "RateLimited" and r.headers["retry-after"] == "1"
        assert "too many write requests from 127.0.0.1: at most 2 a second" in r.json()["detail"]
        assert await server.backend.store.head("rated") == accepted  # the refused did nothing
        for _ in range(20):  # reads are not counted
            assert (await http.get("/api/docs/rated/events")).status_code == 200
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=server.url, transport=other) as elsewhere:
            r = await elsewhere.put("/api/docs/rated/text", json={"text": "from elsewhere"})
            assert r.status_code == 200, r.text
        await asyncio.sleep(1.0)  # two a second come back
        r = await http.put("/api/docs/rated/text", json={"text": "later"})
        assert r.status_code == 200, r.text
        metrics = (await http.get("/metrics")).text
        assert 'reason="http_write_rate"' in metrics, metrics[-500:]


async def test_client_ids_and_clocks_past_what_a_document_keeps_are_refused(
    settings: Settings,
) -> None:
    """The document keeps a client id in 53 bits and a clock in 32: an update under
    2^53 + alice's id passed the ownership check (a new id) and wrote over alice's items
    (her text replaced, her later edits lost), and 2^32 + x was read as x."""

    def item(client: int, clock: int, text: str) -> bytes:
        body = P.write_var_uint(1) + P.write_var_uint(1) + P.write_var_uint(client)
        body += P.write_var_uint(clock) + b"\x04" + P.write_var_uint(1)
        body += P.write_var_string("content") + P.write_var_string(text) + b"\x00"
        return P.encode_sync_update(body)

    async with run_server(settings) as srv:
        async with connect(srv.ws_url, "ids", "alice") as alice:
            alice.insert(0, "alice's text")
            await eventually(lambda: srv.backend.rooms.get_loaded("ids").seq == 1)  # type: ignore[union-attr]
            alice_id = alice.doc.client_id
            for client, clock, why in (
                (2**53 + alice_id, 0, "past 2^53 - 1"),
                ((1 << 64) - 1, 0, "past 2^53 - 1"),
                (12345, 2**32, "past 2^32 - 1"),
            ):
                async with websockets.connect(f"{srv.ws_url}/ids?user=mal") as ws:
                    await ws.send(item(client, clock, "M" * 50))
                    code, reason = await closed_with(ws)
                assert code == 4400 and why in reason, (client, code, reason)
            alice.insert(len(alice.content), "!")
            await eventually(lambda: srv.backend.rooms.get_loaded("ids").seq == 2)  # type: ignore[union-attr]
            room = srv.backend.rooms.get_loaded("ids")
            assert room is not None and str(room.doc.get("content", type=Text)) == "alice's text!"
            assert alice.close_code is None


async def test_a_hocuspocus_document_is_authenticated_by_its_own_token_not_the_header(
    settings: Settings,
) -> None:
    """docs/hocuspocus.md: each document is authenticated by the token in its auth
    message. An Authorization header on the upgrade was read first, so a document's
    read-only or garbage token opened it read-write."""
    settings.jwt_secret = SECRET
    header = {"Authorization": f"Bearer {token('w', 'write')}"}
    async with run_server(settings) as server:
        url = f"{server.ws_url.rsplit('/', 1)[0]}/hocuspocus"
        async with websockets.connect(url, additional_headers=header) as ws:
            raw = Raw(ws)
            await raw.auth("ro", token("w", "read"))
            await raw.auth("bad", "garbage.token.x")
            ro = await eventually(lambda: raw.of("ro", H.AUTH), what="ro answered")
            assert ro[0].body == bytes([H.AUTH_AUTHENTICATED]) + P.write_var_string("readonly")
            bad = await eventually(lambda: raw.of("bad", H.AUTH), what="bad answered")
            assert bad[0].body[0] == H.AUTH_PERMISSION_DENIED, bad[0].body
            raw.task.cancel()


def test_presence_colours_are_colours_as_css_writes_them() -> None:
    """What editors send passes (CSS colour syntaxes, var()); what could end the style
    declaration or fetch does not, wherever in the state its key says colour."""
    from palimpsest.errors import ProtocolError

    def state(value: Any) -> bytes:
        return P.encode_awareness_entries([(5, 1, json.dumps(value))])

    for ok in ("#30bced", "#30bced33", "red", "rgb(1 2 3 / 50%)", "rgba(1,2,3,0.5)",
               "hsl(120 50% 50%)", "hwb(200 10% 10%)", "oklch(70% 0.1 200)",
               "lab(50% 40 59.5)", "color(display-p3 1 0 0)", "var(--accent)"):  # fmt: skip
        P.decode_awareness(state({"user": {"name": "a", "color": ok, "colorLight": ok}}))
        P.decode_awareness(state({"name": "a", "color": ok}))  # Lexical's
    for bad in ("red;background:url(//x)", "url(//x)", "expression(alert(1))",
                "rgb(1,2,3);x:y", "var(--a);b", "x" * 40):  # fmt: skip
        for where in ({"user": {"color": bad}}, {"color": bad}, {"user": {"colour": bad}},
                      {"user": {"cursor": {"color": bad}}}):  # fmt: skip
            with pytest.raises(ProtocolError, match="is not a colour"):
                P.decode_awareness(state(where))


async def test_a_struct_of_length_0_is_refused(settings: Settings) -> None:
    """A GC of length 0 at another user's client and clock 0 covers nothing, so no rule
    saw that client id: it was logged, and at the next load the other user's whole text
    was gone (the live room still showed it)."""

    async with run_server(settings) as srv:
        async with connect(srv.ws_url, "gc0", "alice") as alice:
            alice.insert(0, "hello")
            await eventually(lambda: srv.backend.rooms.get_loaded("gc0").seq == 1)  # type: ignore[union-attr]
            for victim in (alice.doc.client_id, alice.doc.client_id + 2**53):
                # one client, two structs: mallory's own item, then a GC of length 0
                body = P.write_var_uint(2)
                body += P.write_var_uint(1) + P.write_var_uint(777) + P.write_var_uint(0)
                body += b"\x04" + P.write_var_uint(1) + P.write_var_string("m")
                body += P.write_var_string("x")
                body += P.write_var_uint(1) + P.write_var_uint(victim) + P.write_var_uint(0)
                body += b"\x00" + P.write_var_uint(0) + b"\x00"
                async with websockets.connect(f"{srv.ws_url}/gc0?user=mallory") as ws:
                    await ws.send(P.encode_sync_update(body))
                    code, reason = await closed_with(ws)
                assert code == 4400 and ("length 0" in reason or "2^53" in reason), reason
            alice.insert(5, "XYZ")
            await eventually(lambda: srv.backend.rooms.get_loaded("gc0").seq == 2)  # type: ignore[union-attr]
    async with run_server(settings) as srv:  # the next load: alice's text is all there
        async with connect(srv.ws_url, "gc0", "bob") as b:
            assert b.content == "helloXYZ", b.content


async def test_a_client_section_that_covers_no_clock_is_refused(settings: Settings) -> None:
    """A client's structs that cover no clock (none at all, or only items of length 0)
    were logged and broadcast, and yrs panics applying them to a document that knows
    the client: every Python client of the document died, and the room closed its
    sender after logging them. yrs's own item of length 0 (it writes one when a
    deletion ends where an append began) comes with the next item at its clock, and
    passes."""
    from pycrdt import Doc

    def section(client: int, clock: int, *structs: bytes) -> bytes:
        body = P.write_var_uint(len(structs)) + P.write_var_uint(client)
        return body + P.write_var_uint(clock) + b"".join(structs)

    def structs_of(update: bytes) -> list[tuple[int, int, int]]:  # (client, clock, length)
        r, out = P.Reader(update), []
        for _ in range(r.read_var_uint()):
            n, client, clock = r.read_var_uint(), r.read_var_uint(), r.read_var_uint()
            for _ in range(n):
                info = update[r.pos]
                r.pos += 1
                length = skip_item(r, info, {})  # (no GC or Skip in these)
                out.append((client, clock, length))
                clock += length
        return out

    def text_after(client: int, clock: int, text: str) -> bytes:  # info 0x84: origin, string
        origin = P.write_var_uint(client) + P.write_var_uint(clock)
        return b"\x84" + origin + P.write_var_string(text)

    async with run_server(settings) as srv:
        async with connect(srv.ws_url, "empty", "alice") as alice:
            alice.insert(0, "hello")
            await eventually(lambda: srv.backend.rooms.get_loaded("empty").seq == 1)  # type: ignore[union-attr]
            a = alice.doc.client_id

            def mine(i: int) -> bytes:  # mallory's own item: "m" at the start
                body = b"\x04" + P.write_var_uint(1) + P.write_var_string("content")
                return section(777 + i, 0, body + P.write_var_string("m"))

            for i, empty in enumerate((
                section(a, 2, text_after(a, 1, "")),
                section(a, 5, text_after(a, 4, "")),
                section(a, 5, text_after(a, 4, ""), text_after(a, 4, "")),
                section(a, 5),
            )):  # fmt: skip
                update = P.write_var_uint(2) + mine(2 * i) + empty + b"\x00"
                probe: Doc[Any] = Doc()  # a Python client, had the server relayed it
                probe.apply_update(alice.doc.get_update())
                with pytest.raises(BaseException, match="unwrap"):  # pyo3's PanicException
                    probe.apply_update(update)
                # (a request of its own each time: the same one refused 3 times is
                # refused at the handshake)
                url = f"{srv.ws_url}/empty?user=mallory&try={i}"
                async with websockets.connect(url) as ws:
                    await ws.send(P.encode_sync_update(update))
                    code, reason = await closed_with(ws)
                assert code == 4400 and "cover no clock" in reason, reason
                # alone it would add nothing, and it is refused all the same: an update
                # that does not parse was dropped as a no-op, without a word (a Yjs v2
                # update sent by mistake was, so)
                async with websockets.connect(f"{url}&alone=1") as ws:
                    await ws.send(P.encode_sync_update(P.write_var_uint(1) + empty + b"\x00"))
                    code, reason = await closed_with(ws)
                assert code == 4400 and "cover no clock" in reason, reason
                async with websockets.connect(f"{srv.ws_url}/empty?user=mallory") as ws:
                    await ws.send(
                        P.encode_sync_update(P.write_var_uint(1) + mine(2 * i + 1) + b"\x00")
                    )
                    await eventually(lambda: alice.content == "mhello", what="mallory's m")
                    del alice.text[0:1]
                    seq = 3 + 2 * i  # mallory's m and alice's deletion of it: nothing else
                    await eventually(lambda: srv.backend.rooms.get_loaded("empty").seq == seq)  # type: ignore[union-attr]  # noqa: B023
            # what yrs writes itself: a deletion that ends where an append began leaves
            # an item of length 0 before the appended text, at the same clock
            bob: Doc[Any] = Doc()
            bob.apply_update(alice.doc.get_update())
            t = bob.get("content", type=Text)
            t.insert(3, "é🌍abc" * 200)
            t += "z" * 500
            del t[10:400]
            assert (bob.client_id, 1200, 0) in structs_of(bob.get_update())
            async with connect(srv.ws_url, "empty", "bob") as b:
                b.doc.apply_update(bob.get_update())
                await eventually(lambda: alice.content == str(t), what="bob's text reached alice")
            alice.insert(0, "!")
            room = srv.backend.rooms.get_loaded("empty")
            assert room is not None
            await eventually(lambda: str(room.doc.get("content", type=Text)) == "!" + str(t))
            assert alice.close_code is None
    async with run_server(settings) as srv:  # the next load has it all
        async with connect(srv.ws_url, "empty", "carol") as c:
            assert c.content == "!" + str(t), c.content


def _text_section(client: int, clock: int, text: str) -> bytes:
    """One client's structs: one string item in the root text "content"."""
    head = P.write_var_uint(1) + P.write_var_uint(client) + P.write_var_uint(clock)
    return (
        head
        + b"\x04"
        + P.write_var_uint(1)
        + P.write_var_string("content")
        + (P.write_var_string(text))
    )


#: two sections of one client in one update, at the same clocks ("x"@0 and "yz"@0)
TWO_SECTIONS = (
    P.write_var_uint(2) + _text_section(777, 0, "x") + _text_section(777, 0, "yz") + b"\x00"
)


async def test_a_client_with_two_sets_of_structs_in_one_update_is_refused(
    settings: Settings,
) -> None:
    """Two sections of one client in one update ("x"@0 and "yz"@0, under the sender's own
    new client id) passed every rule and made yrs panic applying it after it was logged:
    the Python clients died, and the document could not be read again (every newcomer
    was refused, the replay failed at every load)."""

    update = TWO_SECTIONS
    with pytest.raises(BaseException, match="divide by zero"):  # what yrs does with it
        Doc().apply_update(update)
    async with run_server(settings) as srv:
        async with connect(srv.ws_url, "twice", "alice") as alice:
            alice.insert(0, "hello")
            await eventually(lambda: srv.backend.rooms.get_loaded("twice").seq == 1)  # type: ignore[union-attr]
            async with websockets.connect(f"{srv.ws_url}/twice?user=mallory") as ws:
                await ws.send(P.encode_sync_update(update))
                code, reason = await closed_with(ws)
            assert code == 4400 and "two sets of structs" in reason, reason
            alice.insert(5, "!")
            await eventually(lambda: srv.backend.rooms.get_loaded("twice").seq == 2)  # type: ignore[union-attr]
            assert alice.close_code is None
    async with run_server(settings) as srv:  # the next load reads it all
        async with connect(srv.ws_url, "twice", "bob") as b:
            assert b.content == "hello!", b.content
