"""An update past a gap after a connection's sync step 2 (server/resync.py), in raw
frames on both protocols. It used to close a /ws socket with 4400 ("items of client 1001
start at clock 4, the document has 3: re-sync"), and an app that stops its provider on a
44xx close, as the README told it to, lost the text; y-websocket's server keeps such an
update pending and loses nothing. Now it is dropped and the server asks for a re-sync
(a sync step 1): the client's step 2 brings it with what it builds on. Real server, real
SQLite file, real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import websockets
from conftest import RunningServer, eventually
from pycrdt import Doc, Text
from test_hocuspocus import raw_client, srv  # noqa: F401 - the fixture
from yclient import connect

from palimpsest import hocuspocus as H
from palimpsest import protocol as P


class RawWs:
    """A /ws client at the frame level: what it sends is what the test says."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.got: list[P.Message] = []
        self.closed: tuple[int | None, str | None] | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                self.got.append(P.decode(data))
        except websockets.ConnectionClosed:
            pass
        self.closed = (self.ws.close_code, self.ws.close_reason)

    def step1s(self) -> list[P.SyncStep1]:
        return [m for m in self.got if isinstance(m, P.SyncStep1)]

    async def barrier(self) -> None:
        """Wait until the server handled every frame sent before: it answers a sync step
        1 of ours in order with the frames it sent for the earlier ones."""
        n = sum(isinstance(m, P.SyncStep2) for m in self.got)
        await self.ws.send(P.encode_sync_step1(b"\x00"))
        await eventually(lambda: sum(isinstance(m, P.SyncStep2) for m in self.got) > n)


@contextlib.asynccontextmanager
async def raw_ws(server: RunningServer, doc: str, user: str) -> AsyncIterator[RawWs]:
    async with websockets.connect(f"{server.ws_url}/{doc}?user={user}", compression=None) as ws:
        raw = RawWs(ws)
        try:
            # the server's step 1, answered: from now on the connection is synced
            await eventually(raw.step1s, what="the server's step 1")
            await ws.send(P.encode_sync_step2(b"\x00\x00"))
            yield raw
        finally:
            raw.task.cancel()


def edits(*texts: str, client_id: int = 1001) -> tuple[Doc[Any], list[bytes]]:
    """A document that types `texts` one after the other, and each one's update."""
    doc: Doc[Any] = Doc(client_id=client_id)
    return doc, edits_after(doc, *texts)


async def logged_text(server: RunningServer, doc: str) -> str:
    """The log folded in order: what a reload gives."""
    folded: Doc[Any] = Doc()
    for ev in await server.backend.store.read(doc):
        folded.apply_update(ev.update)
    return str(folded.get("content", type=Text))


async def test_an_update_past_a_gap_is_brought_by_the_step_2_a_resync_asks_for(
    server: RunningServer,
) -> None:
    """The field test's frames: U1 "abc", then U3 "e" (past U2), then U2 "d"."""
    doc, (u1, u2, u3) = edits("abc", "d", "e")
    async with (
        connect(server.ws_url, "gap", "bob") as bob,
        raw_ws(server, "gap", "alice") as alice,
    ):
        for u in (u1, u3, u2):
            await alice.ws.send(P.encode_sync_update(u))
        ask = await eventually(lambda: alice.step1s()[1:], what="a re-sync request")
        # (the live document's: U1 and U2 may still be on their way to the log)
        assert P.decode_state_vector(ask[0].state_vector).get(1001, 0) <= 3
        await alice.ws.send(P.encode_sync_step2(doc.get_update(ask[0].state_vector)))
        await eventually(lambda: bob.content == "abcde", what="bob sees every edit")
        # a later gap asks again: a request is outstanding only until its step 2 comes
        (u4, u5) = edits_after(doc, "f", "g")
        await alice.ws.send(P.encode_sync_update(u5))
        ask = await eventually(lambda: alice.step1s()[2:], what="a second re-sync request")
        await alice.ws.send(P.encode_sync_step2(doc.get_update(ask[0].state_vector)))
        await eventually(lambda: bob.content == "abcdefg", what="bob sees the second gap's")
        await alice.barrier()
        assert alice.closed is None and bob.close_code is None
    await server.backend.rooms.get_loaded("gap").flush()  # type: ignore[union-attr]
    assert await logged_text(server, "gap") == "abcdefg"


def edits_after(doc: Doc[Any], *texts: str) -> list[bytes]:
    """`doc` types `texts` one after the other: each one's update."""
    text = doc.get("content", type=Text)
    updates = []
    for t in texts:
        sv = doc.get_state()
        text += t
        updates.append(doc.get_update(sv))
    return updates


async def test_one_resync_request_at_a_time_and_its_step_2_must_fill_the_gap(
    server: RunningServer,
) -> None:
    """A client that sends gaps on purpose gets one sync step 1 until it answers, and
    an answer that leaves the gap is refused (4400) with the gap it left."""
    _, (u1, _u2, u3, u4) = edits("abc", "d", "e", "f")
    async with raw_ws(server, "gaps", "mallory") as m:
        await m.ws.send(P.encode_sync_update(u1))
        for _ in range(5):
            await m.ws.send(P.encode_sync_update(u3))
            await m.ws.send(P.encode_sync_update(u4))
        await m.barrier()
        assert len(m.step1s()) == 2  # the connection's own, then one request
        await m.ws.send(P.encode_sync_step2(b"\x00\x00"))  # brings nothing
        await eventually(lambda: m.closed, what="the connection closes")
        assert m.closed == (
            4400,
            "gap not filled by your sync step 2: items of client 1001 start at clock 4, "
            "the document has 3",
        )
    await server.backend.rooms.get_loaded("gaps").flush()  # type: ignore[union-attr]
    assert await logged_text(server, "gaps") == "abc"


async def test_a_step_2_with_a_gap_is_refused(server: RunningServer) -> None:
    _, (u1, _u2, u3) = edits("abc", "d", "e")
    async with raw_ws(server, "gap2", "alice") as alice:
        await alice.ws.send(P.encode_sync_update(u1))
        await alice.ws.send(P.encode_sync_step2(u3))
        await eventually(lambda: alice.closed, what="the connection closes")
        assert alice.closed == (
            4400,
            "items of client 1001 start at clock 4, the document has 3: re-sync",
        )
        assert len(alice.step1s()) == 1


async def test_hocuspocus_asks_once_and_owes_a_sync_status_for_each_update(
    srv: Any,  # noqa: F811 - the fixture
) -> None:
    """The same rule on /hocuspocus, where a provider counts its unsynced updates down
    with the sync statuses: one for each update and step 2 it sent, however many gaps."""
    doc, (u1, _u2, u3, u4) = edits("abc", "d", "e", "f")

    def sync(sub: int, payload: bytes) -> bytes:
        return bytes([sub]) + P.write_var_bytes(payload)

    async with raw_client(srv) as raw:
        await raw.auth("hp", "alice", version="3.0.0")
        await raw.send("hp", H.SYNC, sync(P.SYNC_STEP1, b"\x00"))
        await eventually(lambda: len(raw.of("hp", H.SYNC)) >= 2, what="the server's sync")
        await raw.send("hp", H.SYNC, sync(P.SYNC_STEP2, b"\x00\x00"))
        for u in (u1, u3, u4, u3):
            await raw.send("hp", H.SYNC, sync(P.SYNC_UPDATE, u))
        # what a provider waits for: one status for its sync (startSync counts 1), and
        # one for each update it sent; a step 2 it answers a step 1 with counts none
        owed = 1 + 4

        def step1s() -> list[P.SyncStep1]:
            msgs = [H.decode_sync(f.body) for f in raw.of("hp", H.SYNC)]
            return [m for m in msgs if isinstance(m, P.SyncStep1)]

        async def barrier(n: int) -> None:
            await raw.send("hp", H.STATELESS, P.write_var_string('{"type": "hello"}'))
            await eventually(lambda: len(raw.of("hp", H.STATELESS)) == n, what="hello")

        await barrier(1)
        asks = step1s()
        assert len(asks) == 2  # the document's first, then one re-sync request
        await raw.send("hp", H.SYNC, sync(P.SYNC_STEP2, doc.get_update(asks[1].state_vector)))
        async with connect(srv.ws_url, "hp", "bob") as bob:
            await eventually(lambda: bob.content == "abcdef", what="bob sees every edit")
        await eventually(lambda: len(raw.of("hp", H.SYNC_STATUS)) >= owed, what="statuses")
        await srv.backend.rooms.get_loaded("hp").flush()
        await barrier(2)
        assert [f.body for f in raw.of("hp", H.SYNC_STATUS)] == [b"\x01"] * owed
        assert raw.of("hp", H.CLOSE) == [] and raw.refusals("hp") == []


async def test_hocuspocus_asks_at_once_when_no_step_2_is_on_its_way(
    srv: Any,  # noqa: F811 - the fixture
) -> None:
    """A document opened by an auth message alone (no sync step 1 of the client, so none
    of the server's answering it): an update past a gap has no step 2 on its way to carry
    it. It used to be dropped as one typed while connecting, and so was every later
    update of the document, past the same gap, for as long as it stayed open; now the
    server asks for a re-sync at once, and the step 2's sync status stands for it."""
    doc, (_u1, u2, u3) = edits("abc", "d", "e")

    def sync(sub: int, payload: bytes) -> bytes:
        return bytes([sub]) + P.write_var_bytes(payload)

    async with raw_client(srv) as raw:
        await raw.auth("hq", "alice", version="3.0.0")
        for u in (u2, u3):
            await raw.send("hq", H.SYNC, sync(P.SYNC_UPDATE, u))
        ask = await eventually(lambda: raw.of("hq", H.SYNC), what="a re-sync request")
        msg = H.decode_sync(ask[0].body)
        assert isinstance(msg, P.SyncStep1)
        await raw.send("hq", H.SYNC, sync(P.SYNC_STEP2, doc.get_update(msg.state_vector)))
        async with connect(srv.ws_url, "hq", "bob") as bob:
            await eventually(lambda: bob.content == "abcde", what="bob sees every edit")
        await srv.backend.rooms.get_loaded("hq").flush()
        await raw.send("hq", H.STATELESS, P.write_var_string('{"type": "hello"}'))
        await eventually(lambda: raw.of("hq", H.STATELESS), what="hello")
        assert [f.body for f in raw.of("hq", H.SYNC_STATUS)] == [b"\x01"] * 2
        msgs = [H.decode_sync(f.body) for f in raw.of("hq", H.SYNC)]
        assert sum(isinstance(m, P.SyncStep1) for m in msgs) == 1  # one request
        assert raw.of("hq", H.CLOSE) == [] and raw.refusals("hq") == []


async def test_hocuspocus_a_step_2_claims_the_ids_of_the_updates_a_gap_dropped(
    srv: Any,  # noqa: F811 - the fixture
) -> None:
    """A client that sends no presence loses its first edit's frame; the next one, past
    the gap, is dropped and the step 2 that answers the re-sync request brings both. Its
    client id is its own, as the dropped update would have claimed it (it was relayed,
    claimed by nobody: another user's update under it was taken)."""
    doc, (_u1, u2) = edits("abc", "d")

    def sync(sub: int, payload: bytes) -> bytes:
        return bytes([sub]) + P.write_var_bytes(payload)

    async with raw_client(srv) as raw:
        await raw.auth("hc", "alice", version="3.0.0")
        await raw.send("hc", H.SYNC, sync(P.SYNC_STEP1, b"\x00"))
        await eventually(lambda: len(raw.of("hc", H.SYNC)) >= 2, what="the server's sync")
        await raw.send("hc", H.SYNC, sync(P.SYNC_STEP2, b"\x00\x00"))
        await raw.send("hc", H.SYNC, sync(P.SYNC_UPDATE, u2))

        def asks() -> list[P.SyncStep1]:
            msgs = [H.decode_sync(f.body) for f in raw.of("hc", H.SYNC)]
            return [m for m in msgs if isinstance(m, P.SyncStep1)][1:]

        ask = await eventually(asks, what="a re-sync request")
        await raw.send("hc", H.SYNC, sync(P.SYNC_STEP2, doc.get_update(ask[0].state_vector)))
        async with connect(srv.ws_url, "hc", "mallory") as m:
            await eventually(lambda: m.content == "abcd", what="mallory sees alice's edits")
            forged: Doc[Any] = Doc(client_id=1001)
            forged.apply_update(m.doc.get_update())
            (update,) = edits_after(forged, "!")
            await m.send_raw(P.encode_sync_update(update))
            await eventually(lambda: m.close_code, what="mallory's socket closed")
            assert m.close_code == 4403, (m.close_code, m.close_reason)
        await srv.backend.rooms.get_loaded("hc").flush()
    assert await logged_text(srv, "hc") == "abcd"
