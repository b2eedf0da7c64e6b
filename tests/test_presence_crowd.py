"""Many y-websocket providers with presence in ONE document (server/presence.py,
server/awareness.py): each provider sends back every presence change it applies, so a
room of N sees about N^2 echoes as it fills. They must cost the server a look-up each
(not a pass over the room's states), must not count against the sender's message rate
(honest clients were closed with 1013), and the clock-0 ``{}`` every provider starts
with, which y-protocols drops, must not be relayed to everyone. The changes a room
accepts within one loop turn go to each connection as one frame (Room._broadcast_presence):
a provider sends back each frame that changes something for it, so a frame per change
made N^2 frames each way, more than a busy process driving 500 providers kept up with.

Unit tests of the bookkeeping first, then bursts from many connections over real sockets,
then 100 real providers (tests/node) against the real server.

Run:  .venv/bin/pytest tests/test_presence_crowd.py   (the Node part is marked ``node``)
"""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import eventually, run_server
from serverproc import ServerProcess
from test_interop_node import node_modules, node_scenario
from yclient import YClient, connect

from palimpsest import presence as presence_module
from palimpsest import protocol as P
from palimpsest.awareness import Awareness
from palimpsest.presence import PresenceGuard
from palimpsest.settings import Settings

__all__ = ["node_modules"]  # the session fixture that runs `npm ci` when needed


def entries(*items: tuple[int, int, str]) -> bytes:
    return P.encode_awareness_entries(list(items))


def total(a: Awareness) -> int:
    return sum(len(e.state.encode()) for e in a.entries.values())


class NoScan(dict[int, Any]):
    """A room's states that refuse to be walked (only looked up)."""

    def values(self) -> Any:
        raise AssertionError("the room's states were walked")

    def items(self) -> Any:
        raise AssertionError("the room's states were walked")

    def __iter__(self) -> Any:
        raise AssertionError("the room's states were walked")


def room_of(a: Awareness) -> Any:
    return SimpleNamespace(presence=a, name="crowd", presence_frames=0)


# ------------------------------------------------------------------ bookkeeping


def test_the_total_size_of_the_states_is_kept_as_they_change() -> None:
    a = Awareness()
    live = {"c1", "c2"}
    a.merge("c1", entries((7, 1, '{"n":"ada"}'), (8, 1, '{"n":"é"}')), live)
    assert a.bytes == total(a) == 11 + 10
    a.merge("c1", entries((7, 2, '{"n":"ada lovelace"}')), live)  # replaced
    a.merge("c1", entries((7, 2, '{"n":"other"}')), live)  # same clock: not taken
    assert a.bytes == total(a) == 20 + 10
    a.merge("c2", entries((9, 3, '{"n":"bob"}')), live)
    a.merge("c1", entries((8, 2, "null")), live)  # removed
    assert a.bytes == total(a) == 20 + 11
    a.drop("c2")
    assert a.bytes == total(a) == 20
    a.expire(time.monotonic() + 1)
    assert a.bytes == 0 and not a.entries


def test_a_clock_0_state_of_a_stranger_is_remembered_not_relayed() -> None:
    a = Awareness()
    live = {"c1", "c2"}
    # the {} every provider's Awareness starts with: y-protocols drops it (clock 0 is
    # what it holds for a client it does not know)
    assert a.merge("c1", entries((7, 0, "{}")), live) is None
    assert not a.entries and a.payload() == entries() and a.bytes == 0
    assert not a.changes("c1", 7, 0, "{}") and not a.changes("c2", 7, 1, "{}")
    assert a.owner(7) == "c1"  # announced (its step 2 may claim client 7: ownership.py)
    assert a.merge("c2", entries((7, 1, '{"n":"eve"}')), live) is None  # c1's while here
    got = a.merge("c1", entries((7, 1, '{"n":"ada"}')), live)
    assert got is not None and P.decode_awareness(got) == [(7, 1, '{"n":"ada"}')]
    assert not a.quiet and a.owner(7) == "c1"
    a.merge("c2", entries((8, 0, "{}")), live)
    assert a.quiet == {8: "c2"}
    assert a.drop("c2") is None and not a.quiet  # nothing to tell anyone
    # a known client's state at clock 0 is no stranger's: newer clocks win as ever
    b = Awareness()
    b.merge("c1", entries((9, 1, "{}")), live)
    assert b.merge("c1", entries((9, 0, '{"x":1}')), live) is None


def test_an_echo_is_admitted_without_parsing_it_or_walking_the_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings()
    a = Awareness()
    live = {f"c{i}" for i in range(50)}
    for i in range(50):
        a.merge(f"c{i}", entries((100 + i, 1, json.dumps({"user": {"name": f"u{i}"}}))), live)
    room = room_of(a)
    guard = PresenceGuard(settings)
    # c0's own state, then an echo of everyone else's (as a provider re-sends them)
    guard.admit(room, entries((100, 2, '{"user":{"name":"u0!"}}')), "c0")
    a.entries = NoScan(a.entries)

    def no_parse(*_: Any, **__: Any) -> Any:
        raise AssertionError("an echo was parsed")

    monkeypatch.setattr(P, "check_awareness_state", no_parse)
    monkeypatch.setattr(presence_module, "check_state", no_parse)
    for i in range(1, 50):
        echo = entries((100 + i, 1, a.entries[100 + i].state))
        assert guard.admit(room, echo, "c0") == [] and guard.echo
    # what changes, or is not the state held, is still parsed and checked
    monkeypatch.undo()
    with pytest.raises(P.ProtocolError, match="not JSON"):
        guard.admit(room, entries((101, 1, '{"user":{"name":"u1"}')), "c0")
    with pytest.raises(P.ProtocolError):
        guard.admit(room, entries((100, 3, '{"user":{"color":"red; x: url(y)"}}')), "c0")
    assert guard.admit(room, entries((100, 3, '{"user":{"name":"u0"}}')), "c0")
    assert not guard.echo


def test_echoes_are_let_off_only_as_many_as_frames_the_room_sent() -> None:
    settings = Settings()
    a = Awareness()
    a.merge("c1", entries((7, 1, "{}")), {"c1"})
    room = room_of(a)
    room.presence_frames = 5
    guard = PresenceGuard(settings)
    guard.joining(room)  # the room has presence: its snapshot is the first frame sent
    echo = entries((7, 1, "{}"))
    guard.admit(room, echo, "c2")
    assert guard.refund(room) and not guard.refund(room)  # one frame sent, one echo off
    room.presence_frames += 2
    assert guard.admit(room, echo, "c2") == [] and guard.refund(room)
    assert guard.admit(room, echo, "c2") == [] and guard.refund(room)
    assert guard.admit(room, echo, "c2") == [] and not guard.refund(room)
    # a change is never let off
    room.presence_frames += 10
    assert guard.admit(room, entries((8, 1, "{}")), "c2") and not guard.refund(room)


# ------------------------------------------------------------------ bursts


def presence_frames(c: YClient) -> list[list[tuple[int, int, str]]]:
    """The entries of each presence frame a client was sent, in order."""
    return [P.decode_awareness(f.payload) for f in c.frames if isinstance(f, P.AwarenessUpdate)]


def held(c: YClient) -> dict[int, tuple[int, str]]:
    """The presence a client holds after applying what it was sent as y-protocols does
    (a newer clock wins; a null at the clock held removes): client id -> (clock, state)."""
    clocks: dict[int, int] = {}
    states: dict[int, tuple[int, str]] = {}
    for frame in presence_frames(c):
        for client, clock, state in frame:
            now = clocks.get(client, 0)
            if clock > now or (clock == now and state == "null" and client in states):
                clocks[client] = clock
                if state == "null":
                    states.pop(client, None)
                else:
                    states[client] = (clock, state)
    return states


async def test_a_burst_of_presence_from_many_clients_reaches_each_in_fewer_frames(
    tmp_path: Path,
) -> None:
    """Many connections change their presence at once (each frame written before the
    server, which shares the test's event loop, reads any). Every connection ends up
    holding every state at its newest clock, and was sent fewer presence frames than
    there were changes: what the room accepts within a loop turn goes out as one frame,
    one entry per client."""
    m = 30
    settings = Settings(db=str(tmp_path / "p.db"))
    async with run_server(settings) as srv, AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(connect(srv.ws_url, "burst", user=f"u{i}"))
            for i in range(m)
        ]

        def state(i: int, v: int) -> str:
            return json.dumps({"user": {"name": f"u{i}"}, "cursor": v})

        def everyone_holds(v: int) -> bool:
            want = {1000 + i: (v, state(i, v)) for i in range(m)}
            return all(held(c) == want for c in clients)

        for i, c in enumerate(clients):
            await c.send_raw(P.encode_awareness(entries((1000 + i, 1, state(i, 1)))))
        await eventually(lambda: everyone_holds(1), what="every state at clock 1")
        before = [len(presence_frames(c)) for c in clients]
        for i, c in enumerate(clients):  # (no await here yields to the loop)
            await c.send_raw(P.encode_awareness(entries((1000 + i, 2, state(i, 2)))))
        await eventually(lambda: everyone_holds(2), what="every state at clock 2")
        sent = [len(presence_frames(c)) - n for c, n in zip(clients, before, strict=True)]
        assert max(sent) < m, sent  # (a frame per change: m each)
        # each change was relayed once to each connection, its sender included
        for c, n in zip(clients, before, strict=True):
            got = [e for frame in presence_frames(c)[n:] for e in frame]
            assert sorted(got) == [(1000 + i, 2, state(i, 2)) for i in range(m)]
        assert all(c.close_code is None for c in clients)


async def test_a_presence_frame_holds_no_more_entries_than_the_room_holds_states(
    tmp_path: Path,
) -> None:
    """A provider sends back the entries of each frame it applies, and the room takes
    an update of no more entries than its presence may hold (with the sender's own):
    so no frame it relays carries more, even when more clients leave and arrive within
    one loop turn than it holds."""
    limit = 4
    settings = Settings(db=str(tmp_path / "p.db"), max_awareness_clients_per_room=limit)
    old = [(10 + i, 1, f'{{"n":{i}}}') for i in range(limit)]
    new = [(20 + i, 1, f'{{"n":{i}}}') for i in range(limit)]
    async with (
        run_server(settings) as srv,
        connect(srv.ws_url, "few", user="ann") as ann,
        connect(srv.ws_url, "few", user="bob") as bob,
    ):
        await ann.send_raw(P.encode_awareness(entries(*old)))
        await eventually(lambda: len(held(bob)) == limit, what="ann's states")
        # in one loop turn: ann's clients go, others come
        await ann.send_raw(P.encode_awareness(entries(*((c, 2, "null") for c, _, _ in old))))
        await ann.send_raw(P.encode_awareness(entries(*new)))
        want = {c: (k, s) for c, k, s in new}
        await eventually(lambda: held(bob) == want, what="the new states")
        assert max(len(f) for f in presence_frames(bob)) <= limit
        assert ann.close_code is None and held(ann) == want


# ------------------------------------------------------------------ 100 real providers

CROWD = """
import * as Y from 'yjs'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'
import { WebsocketProvider } from 'y-websocket'
const { WS, DOC } = process.env
const N = Number(process.env.N)
globalThis.WebSocket ??= WebSocket
process.setMaxListeners(0)
const stats = []
const closes = {}
const providers = []
let synced = 0
let seeAll = 0
const done = new Promise(resolve => {
  for (let i = 0; i < N; i++) {
    const s = { frames: 0, entries: 0, clock0: 0 }
    stats.push(s)
    // counts the presence frames this provider receives, as sent
    class Counting extends WebSocket {
      constructor (...a) {
        super(...a)
        this.addEventListener('message', e => {
          const d = decoding.createDecoder(new Uint8Array(e.data))
          if (decoding.readVarUint(d) !== 1) return
          const u = decoding.createDecoder(decoding.readVarUint8Array(d))
          s.frames++
          for (let n = decoding.readVarUint(u); n > 0; n--) {
            decoding.readVarUint(u)
            if (decoding.readVarUint(u) === 0) s.clock0++
            decoding.readVarString(u)
            s.entries++
          }
        })
      }
    }
    const p = new WebsocketProvider(WS, DOC, new Y.Doc(),
      { WebSocketPolyfill: Counting, disableBc: true, params: { user: `u${i}` } })
    providers.push(p)
    p.on('connection-close', e => { if (e) closes[e.code] = (closes[e.code] || 0) + 1 })
    let once = false
    // a page sets its user once it has synced: its first presence is the clock-0 {}
    p.on('sync', ok => {
      if (ok && !once) {
        once = true
        synced++
        p.awareness.setLocalStateField('user', { name: `u${i}`, color: '#30bced' })
      }
    })
    let sees = false
    p.awareness.on('change', () => {
      if (!sees && p.awareness.getStates().size === N) {
        sees = true
        if (++seeAll === N) resolve()
      }
    })
  }
})
await Promise.race([done, new Promise(resolve => setTimeout(resolve, 45000))])
await new Promise(resolve => setTimeout(resolve, 300))  // (frames still on their way)
console.log(JSON.stringify({ synced, seeAll, closes, stats }))
for (const p of providers) p.destroy()
setTimeout(() => process.exit(0), 100)
"""


@pytest.mark.node
@pytest.mark.usefixtures("node_modules")
async def test_a_hundred_providers_in_one_room_all_see_each_other_and_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 providers join one document at once, each setting its user once synced.
    Every one syncs and sees all 100 states; none is closed, though each sends back
    about 100 echoes within seconds against a message rate of 20 per second (burst 40);
    no clock-0 state is relayed; each receives its snapshot and each provider's state
    once (at most once more per provider for a renewal, 15 s on)."""
    n = 100
    env = {
        "PALIMPSEST_MAX_EVENTS_PER_SECOND": "20",
        "PALIMPSEST_MAX_CONNECTIONS_PER_IP": "1000",
    }
    monkeypatch.setenv("N", str(n))
    async with ServerProcess(tmp_path / "server", env=env) as server:
        out = await node_scenario(CROWD, server.ws_url, server.http_url, "crowd")
    got = json.loads(out)
    stats = got.pop("stats")
    assert got == {"synced": n, "seeAll": n, "closes": {}}, got
    assert sum(s["clock0"] for s in stats) == 0, [s["clock0"] for s in stats]
    # the snapshot at join, then one frame per provider's state (and per renewal)
    assert max(s["frames"] for s in stats) <= 1 + 2 * n, stats
    assert max(s["entries"] for s in stats) <= 3 * n, stats
