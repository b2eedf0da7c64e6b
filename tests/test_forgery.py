"""The attribution rule (server/ownership.py, docs/security.md "Forged attribution").

A Yjs client id belongs to the user who first wrote it in a document; new items under
someone else's client id, or items that could only wait as pending (a clock gap, an
origin the document does not hold), are refused whole and never logged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import websockets
from conftest import RunningServer, closed_with, eventually, run_server
from pycrdt import Doc, Text
from roomhelp import Peer
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest import resync
from palimpsest.backend import Backend
from palimpsest.errors import Forbidden, UpdateGap
from palimpsest.ownership import OwnIds
from palimpsest.resync import MAX_CLOCK
from palimpsest.settings import Settings
from palimpsest.store.memory import MemoryStore
from palimpsest.updates import decode_update_meta, ready_part, ready_parts

ALICE, MALLORY = 1111, 2222


def doc_of(client_id: int, *updates: bytes) -> Doc[Any]:
    d: Doc[Any] = Doc(client_id=client_id)
    for u in updates:
        d.apply_update(u)
    return d


async def events(server: RunningServer, doc: str) -> list[Any]:
    return await server.backend.store.read(doc)


async def closed(client: YClient) -> tuple[int | None, str | None]:
    assert client._reader is not None
    await eventually(lambda: client._reader.done(), what="the connection closes")  # type: ignore[union-attr]
    return client.close_code, client.close_reason


async def as_alice_by_mallory(
    ws_url: str, doc: str, alice: Doc[Any], pos: int, text: str
) -> tuple[int | None, str | None]:
    """Mallory sends `text` at `pos` written under Alice's client id (her next clocks):
    how her connection was closed."""
    forged = doc_of(ALICE, alice.get_update())
    before = forged.get_state()
    forged.get("content", type=Text).insert(pos, text)
    async with connect(ws_url, doc, "mallory") as mallory:
        await mallory.send_raw(P.encode_sync_update(forged.get_update(before)))
        return await closed(mallory)


async def blame_actors(server: RunningServer, doc: str) -> list[tuple[str, str]]:
    async with httpx.AsyncClient(base_url=server.url) as c:
        runs = (await c.get(f"/api/docs/{doc}/blame")).json()["roots"]["content"]["runs"]
    return [(x["text"], x["actor"]) for x in runs]


async def test_an_insert_after_another_users_next_clock_is_refused(server: RunningServer) -> None:
    async with connect(server.ws_url, "f1", "alice", ydoc=Doc(client_id=ALICE)) as alice:
        alice.insert(0, "hi")
        await eventually(lambda: _len(events(server, "f1"), 1), what="alice logged")
        # mallory imagines alice's next character and inserts after it
        future = doc_of(ALICE, alice.doc.get_update())
        future.get("content", type=Text).insert(2, "!")
        forged = doc_of(MALLORY, future.get_update())
        before = forged.get_state()
        forged.get("content", type=Text).insert(3, "FORGED")
        update = forged.get_update(before)
        async with connect(server.ws_url, "f1", "mallory") as mallory:
            await mallory.send_raw(P.encode_sync_update(update))
            code, reason = await closed(mallory)
        assert code == 4400 and "does not have" in (reason or "")
        alice.insert(2, "!")  # the clock mallory's item waited for
        alice.insert(3, " there")
        await eventually(lambda: alice.content == "hi! there", what="alice's own edits")
        await eventually(lambda: _len(events(server, "f1"), 3), what="alice's edits logged")
    logged = await events(server, "f1")
    assert [e.actor for e in logged] == ["alice"] * 3
    room = await server.backend.rooms.get("f1")
    assert str(room.doc.get("content", type=Text)) == "hi! there"
    runs = await blame_actors(server, "f1")
    assert "".join(t for t, _ in runs) == "hi! there" and {a for _, a in runs} == {"alice"}


async def test_items_under_another_users_client_id_are_refused(server: RunningServer) -> None:
    async with connect(server.ws_url, "f2", "alice", ydoc=Doc(client_id=ALICE)) as alice:
        alice.insert(0, "hi")
        await eventually(lambda: _len(events(server, "f2"), 1), what="alice logged")
        # mallory writes alice's next clocks before alice does
        code, reason = await as_alice_by_mallory(server.ws_url, "f2", alice.doc, 2, " evil")
        assert code == 4403 and "belongs to another user" in (reason or "")
        # and a clock gap under a client id of her own: it would wait forever as pending
        gap = doc_of(MALLORY)
        gap.get("content", type=Text).insert(0, "ab")
        s1 = gap.get_state()
        gap.get("content", type=Text).insert(2, "cd")
        async with connect(server.ws_url, "f2", "mallory", ydoc=Doc()) as mallory:
            await mallory.send_raw(P.encode_sync_update(gap.get_update(s1)))
            code, reason = await closed(mallory)
        assert code == 4400 and "start at clock 2" in (reason or "")
        alice.insert(2, " there")  # the clocks mallory tried to take
        await eventually(lambda: _len(events(server, "f2"), 2), what="alice's edit logged")
    room = await server.backend.rooms.get("f2")
    assert str(room.doc.get("content", type=Text)) == "hi there"
    assert [e.actor for e in await events(server, "f2")] == ["alice", "alice"]
    runs = await blame_actors(server, "f2")
    assert "".join(t for t, _ in runs) == "hi there" and {a for _, a in runs} == {"alice"}


async def test_a_deletion_of_another_users_next_clocks_is_refused(server: RunningServer) -> None:
    async with connect(server.ws_url, "f3", "alice", ydoc=Doc(client_id=ALICE)) as alice:
        alice.insert(0, "hi")
        await eventually(lambda: _len(events(server, "f3"), 1), what="alice logged")
        # mallory deletes what alice will type next: Yjs would keep the deletion pending
        # and take alice's text out as she types it, in alice's name
        future = doc_of(ALICE, alice.doc.get_update())
        future.get("content", type=Text).insert(2, " there")
        before = future.get_state()
        del future.get("content", type=Text)[2:8]
        deletion = future.get_update(before)
        async with connect(server.ws_url, "f3", "mallory") as mallory:
            await mallory.send_raw(P.encode_sync_update(deletion))
            code, reason = await closed(mallory)
        assert code == 4400 and "deletes items of client" in (reason or ""), (code, reason)
        alice.insert(2, " there")
        await eventually(lambda: _len(events(server, "f3"), 2), what="alice's edit logged")
    room = await server.backend.rooms.get("f3")
    assert str(room.doc.get("content", type=Text)) == "hi there"
    assert [e.actor for e in await events(server, "f3")] == ["alice", "alice"]


async def test_the_same_user_may_reuse_a_client_id_across_tabs_and_reconnects(
    server: RunningServer,
) -> None:
    ydoc: Doc[Any] = Doc(client_id=ALICE)
    async with connect(server.ws_url, "f3", "alice", ydoc=ydoc) as tab:
        tab.insert(0, "one")
        await eventually(lambda: _len(events(server, "f3"), 1), what="logged")
    # offline edits, then a reconnect with the same client id: sent in sync step 2
    ydoc.get("content", type=Text).insert(3, " two")
    async with connect(server.ws_url, "f3", "alice", ydoc=ydoc) as tab:
        await eventually(lambda: _len(events(server, "f3"), 2), what="offline edit logged")
        # a second tab of alice's that writes under the same client id
        other = doc_of(ALICE, ydoc.get_update())
        before = other.get_state()
        other.get("content", type=Text).insert(7, " three")
        async with connect(server.ws_url, "f3", "alice") as tab2:
            await tab2.send_raw(P.encode_sync_update(other.get_update(before)))
            await eventually(lambda: tab.content == "one two three", what="tab sees tab2")
            assert tab2._reader is not None and not tab2._reader.done()
    assert [e.actor for e in await events(server, "f3")] == ["alice"] * 3


async def test_ownership_survives_a_restart_from_a_snapshot(settings: Settings) -> None:
    async with run_server(settings) as server:
        async with connect(server.ws_url, "f4", "alice", ydoc=Doc(client_id=ALICE)) as alice:
            alice.insert(0, "hi")
            await eventually(lambda: _len(events(server, "f4"), 1), what="logged")
            state = alice.doc.get_update()
    async with run_server(settings) as server:
        snap = await server.backend.store.latest_snapshot("f4")
        assert snap is not None and snap.seq == 1
        assert snap.meta["owners"] == {str(ALICE): "alice"}
        forged = doc_of(ALICE, state)
        before = forged.get_state()
        forged.get("content", type=Text).insert(2, " evil")
        async with connect(server.ws_url, "f4", "mallory") as mallory:
            room = server.backend.rooms.loaded["f4"]
            assert room.seq == 1 and room.owners.owners == {ALICE: "alice"}
            await mallory.send_raw(P.encode_sync_update(forged.get_update(before)))
            code, _ = await closed(mallory)
        assert code == 4403
        async with connect(server.ws_url, "f4", "alice", ydoc=doc_of(ALICE, state)) as alice:
            alice.insert(2, " there")
            await eventually(lambda: _len(events(server, "f4"), 2), what="alice's edit")
        assert [e.actor for e in await events(server, "f4")] == ["alice", "alice"]


async def _len(coro: Any, n: int) -> bool:
    return len(await coro) >= n


def test_the_log_decides_an_owner_over_a_claim_not_yet_logged() -> None:
    """Another process may log a first write of a client id before this one logs its own
    claim; the log's order wins, here as on reload."""
    from palimpsest.ownership import Owners

    d = doc_of(ALICE)
    d.get("content", type=Text).insert(0, "hi")
    update = d.get_update()
    owners = Owners(server_client=9)
    owners.admit("mallory", update, lambda: {})  # admitted here, not logged yet
    owners.record("alice", update)  # alice's event, logged first elsewhere
    owners.record("mallory", update)
    assert owners.owners == {ALICE: "alice"} and not owners.claims
    s = d.get_state()
    d.get("content", type=Text).insert(2, "!")
    owners.admit("alice", d.get_update(s), lambda: {ALICE: 2})
    s = d.get_state()
    d.get("content", type=Text).insert(3, "?")
    with pytest.raises(Forbidden):
        owners.admit("mallory", d.get_update(s), lambda: {ALICE: 2})
    server_side = doc_of(9, d.get_update())
    s = server_side.get_state()
    server_side.get("content", type=Text).insert(0, ">")
    with pytest.raises(Forbidden):  # the server's own client id
        owners.admit("alice", server_side.get_update(s), lambda: {ALICE: 3})


def test_a_snapshot_without_an_owner_map_leaves_its_client_ids_to_the_first_writer() -> None:
    from palimpsest.ownership import Owners

    d = doc_of(ALICE)
    d.get("content", type=Text).insert(0, "hi")
    s = d.get_state()
    d.get("content", type=Text).insert(2, "!")
    owners = Owners(server_client=9)
    owners.restore(None)  # an old snapshot's meta
    owners.admit("alice", d.get_update(s), lambda: {ALICE: 2})
    s = d.get_state()
    d.get("content", type=Text).insert(3, "?")
    with pytest.raises(Forbidden):
        owners.admit("bob", d.get_update(s), lambda: {ALICE: 2})


async def test_the_hocuspocus_endpoint_refuses_forged_client_ids(server: RunningServer) -> None:
    from palimpsest import hocuspocus as H

    async with connect(server.ws_url, "f5", "alice", ydoc=Doc(client_id=ALICE)) as alice:
        alice.insert(0, "hi")
        await eventually(lambda: _len(events(server, "f5"), 1), what="alice logged")
        forged = doc_of(ALICE, alice.doc.get_update())
        before = forged.get_state()
        forged.get("content", type=Text).insert(2, " evil")
        url = f"ws://127.0.0.1:{server.port}/hocuspocus"
        async with websockets.connect(url) as ws:
            auth = bytes([H.AUTH_TOKEN]) + P.write_var_string("mallory")
            await ws.send(H.prefix("f5") + P.write_var_uint(H.AUTH) + auth)
            body = bytes([P.SYNC_UPDATE]) + P.write_var_bytes(forged.get_update(before))
            await ws.send(H.prefix("f5") + P.write_var_uint(H.SYNC) + body)
            # that document is closed, saying why (as Hocuspocus closes a document whose
            # message failed); the socket stays open for the others
            reason = None
            while reason is None:
                frame = H.decode(await asyncio.wait_for(ws.recv(), 10))
                if frame.doc == "f5" and frame.type == H.AUTH and frame.body[0] != 2:
                    reason = H.decode_string(frame.body[1:], "reason")  # PermissionDenied
            assert "belongs to another user" in reason
            await ws.send(H.prefix("f5") + P.write_var_uint(H.SYNC) + body)  # dropped
            await asyncio.wait_for(await ws.ping(), 10)  # still open, still answering
            assert ws.close_code is None
        alice.insert(2, " there")
        await eventually(lambda: alice.content == "hi there", what="alice's edit")
        await eventually(lambda: _len(events(server, "f5"), 2), what="alice's edit logged")
    assert [e.actor for e in await events(server, "f5")] == ["alice", "alice"]


def test_the_one_run_path_of_admit_decides_as_the_general_one() -> None:
    """`Owners.admit` takes a shortcut for one run of new items of one client; on a mix of
    keystrokes, pastes, deletions, replays, clock gaps, forged client ids and references
    to items nobody has, it answers (reach, refusal, claims, clocks) exactly as the
    general path alone does."""
    import random

    from palimpsest.errors import PalimpsestError
    from palimpsest.ownership import Owners

    rng = random.Random(7)
    clients = {ALICE: "alice", MALLORY: "mallory", 3333: "bob"}
    docs = {c: doc_of(c) for c in clients}
    made: list[bytes] = []  # each local transaction's update, as a provider sends it
    for d in docs.values():
        d.observe(lambda e: made.append(e.update))
    sent: list[tuple[str, bytes]] = []
    for step in range(300):
        c = rng.choice(list(clients))
        d = docs[c]
        other = docs[rng.choice(list(clients))]
        if other is not d and rng.random() < 0.3:  # catch up on someone's edits
            d.apply_update(other.get_update(d.get_state()))
        text = d.get("content", type=Text)
        made.clear()
        if len(text) and rng.random() < 0.3:
            start = rng.randrange(len(text))
            del text[start : min(len(text), start + rng.randint(1, 3))]
        else:
            text.insert(rng.randint(0, len(text)), rng.choice(["a", "bc", "def"]))
        (update,) = made
        if step > 30 and rng.random() < 0.1:  # each id is its owner's by then
            thief = rng.choice([a for a in clients.values() if a != clients[c]])
            sent.append((thief, update))  # a forged copy first
        sent.append((clients[c], update))
        if rng.random() < 0.1:
            sent.append((clients[c], update))  # sent again (a replay)
        if rng.random() < 0.1:
            sent.append((clients[c], d.get_update()))  # the whole state
    tail = sent[-40:]
    rng.shuffle(tail)  # gaps and references to what has not come yet
    sent[-40:] = tail
    # at the edge: an insertion after the one item of another client not sent yet
    carol, dave = doc_of(4444), doc_of(5555)
    for d in (carol, dave):
        d.observe(lambda e: made.append(e.update))
    made.clear()
    typed = carol.get("content", type=Text)
    for ch in "xyz":
        typed += ch
    sent += [("carol", made[0]), ("carol", made[1])]  # "z" is held back
    dave.apply_update(carol.get_update())
    made.clear()
    dave.get("content", type=Text).insert(3, "!")
    sent.append(("dave", made[0]))

    class GeneralOnly(Owners):
        def _admit_one_run(self, *args: Any) -> None:
            return None

    def run(fast: bool) -> list[Any]:
        owners = Owners(server_client=9) if fast else GeneralOnly(server_client=9)
        answers: list[Any] = []
        for actor, update in sent:
            try:
                answers.append(owners.admit(actor, update, lambda: {}))
            except PalimpsestError as e:
                answers.append(f"{type(e).__name__}: {e}")
            if not isinstance(answers[-1], str):
                owners.written(actor, answers[-1])  # logged
        return [*answers, dict(owners.clocks or {}), owners.claims, owners.owners]

    general = run(fast=False)
    assert run(fast=True) == general
    refused = [a for a in general[:-3] if isinstance(a, str)]
    assert len(sent) - len(refused) > 200
    # (ForeignItems: the Forbidden of items under another user's client id)
    assert {a.split(":")[0] for a in refused} == {"ForeignItems", "UpdateGap"}


@pytest.mark.parametrize("snapshot_first", [False, True])
async def test_a_compacted_users_client_id_stays_theirs(
    settings: Settings, snapshot_first: bool
) -> None:
    """`palimpsest compact` wrote the base snapshot's undo stacks but not the owners of
    the folded events' client ids: after a restart anyone could write under an offline
    user's id, and the user's own edits, at the same clocks, were then dropped as known.
    `snapshot_first`: the fold starts from a snapshot's owners, not from the whole log."""
    from palimpsest.maintenance import compact_doc, plan_compact
    from palimpsest.store.sqlite import SQLiteStore

    async with run_server(settings) as srv:
        async with connect(srv.ws_url, "cmp", "alice", ydoc=Doc(client_id=ALICE)) as alice:
            alice.insert(0, "alice's line")
            await eventually(lambda: _len(events(srv, "cmp"), 1), what="alice logged")
        async with connect(srv.ws_url, "cmp", "bob") as bob:
            bob.insert(0, "bob: ")
            await eventually(lambda: _len(events(srv, "cmp"), 2), what="bob logged")
        if snapshot_first:
            room = await srv.backend.rooms.get("cmp")
            task = srv.backend.snapshots.take(room)  # owners of seqs 1..2 in its meta
            assert task is not None
            await task
            snap = await srv.backend.store.latest_snapshot("cmp")
            assert snap is not None and snap.seq == 2 and str(ALICE) in snap.meta["owners"]
        async with connect(srv.ws_url, "cmp", "bob") as bob:
            bob.insert(0, "> ")
            await eventually(lambda: _len(events(srv, "cmp"), 3), what="bob logged")
    store = SQLiteStore(settings.db)
    async with store:
        assert await compact_doc(store, await plan_compact(store, "cmp", 3), settings) == 3
    async with run_server(settings) as srv:
        code, reason = await as_alice_by_mallory(srv.ws_url, "cmp", alice.doc, 0, "FORGED ")
        assert code == 4403 and "belongs to another user" in (reason or "")
        # alice's own next clocks still go in, as hers
        async with connect(srv.ws_url, "cmp", "alice", ydoc=alice.doc) as again:
            again.insert(len(again.content), "!")
            await eventually(lambda: _len(events(srv, "cmp"), 1), what="alice's edit logged")
        logged = await events(srv, "cmp")
        assert [(e.seq, e.actor) for e in logged] == [(4, "alice")]
        room = await srv.backend.rooms.get("cmp")
        assert str(room.doc.get("content", type=Text)) == "> bob: alice's line!"


BOB, CAROL = 3333, 4444


async def test_a_tab_that_forwards_its_neighbours_presence_does_not_take_its_client_id(
    server: RunningServer,
) -> None:
    """Two tabs of one browser (y-websocket's BroadcastChannel): carol's tab types before
    its socket opens, bob's tab gets that over the channel, forwards carol's presence on
    its own socket and answers the server's step 1 with a step 2 that holds carol's text.
    Every id a connection's presence named was its own: bob's step 2 claimed carol's id,
    and each of her edits was refused (4403) on every reconnect. Now only the id of a
    connection's first presence update is its own: carol's text is relayed (claimed by
    nobody), and carol, connecting, types on under her id as herself."""
    carol: Doc[Any] = Doc(client_id=CAROL)
    carol.get("content", type=Text).insert(0, "carol offline. ")
    bob = doc_of(BOB, carol.get_update())
    bob.get("content", type=Text).insert(15, "bob. ")
    state = '{"user":{"name":"%s"}}'
    async with websockets.connect(f"{server.ws_url}/bc1?user=bob") as ws:
        await ws.send(P.encode_awareness(P.encode_awareness_entries([(BOB, 1, state % "bob")])))
        await ws.send(P.encode_sync_step1(bob.get_state()))
        # carol's state, forwarded from the channel (her socket is not open yet)
        await ws.send(P.encode_awareness(P.encode_awareness_entries([(CAROL, 1, state % "carol")])))
        while not isinstance(msg := P.decode(await asyncio.wait_for(ws.recv(), 10)), P.SyncStep1):
            pass
        await ws.send(P.encode_sync_step2(bob.get_update(msg.state_vector)))
        await eventually(lambda: _len(events(server, "bc1"), 1), what="bob's step 2")
        async with connect(server.ws_url, "bc1", "carol", ydoc=carol) as c:
            await eventually(lambda: c.content == "carol offline. bob. ", what="synced")
            c.insert(len(c.content), "carol online.")
            await eventually(lambda: _len(events(server, "bc1"), 2), what="carol's edit")
            assert c.close_code is None, c.close_reason
    evs = await events(server, "bc1")
    assert [(e.actor, e.meta.get("relays")) for e in evs] == [("bob", [CAROL]), ("carol", None)]
    assert await blame_actors(server, "bc1") == [
        ("carol offline. bob. ", "bob"),  # (relayed in bob's step 2: his event)
        ("carol online.", "carol"),
    ]
    # and carol's id is hers: bob may not write under it
    forged = doc_of(CAROL, carol.get_update())
    before = forged.get_state()
    forged.get("content", type=Text).insert(0, "bob as carol: ")
    async with connect(server.ws_url, "bc1", "bob") as b:
        await b.send_raw(P.encode_sync_update(forged.get_update(before)))
        assert (await closed(b))[0] == 4403


def test_a_connections_own_client_id_is_the_one_its_first_presence_names() -> None:
    """ownership.OwnIds: the first presence update of a connection names its own id
    (y-websocket and Hocuspocus send exactly their own state first); what it forwards
    later is not its own; an id two live connections named first is neither's."""
    ids = OwnIds()
    s = '{"a":1}'
    ids.first("bob", [(BOB, 1, s)])
    ids.first("bob", [(CAROL, 1, s)])  # forwarded from another tab: not bob's
    assert ids.own("bob") == {BOB}
    ids.first("carol", [(CAROL, 1, s)])
    assert ids.own("carol") == {CAROL}
    ids.first("many", [(5, 1, s), (6, 1, s)])  # whose is not said
    ids.first("gone", [(7, 1, "null")])
    ids.first("other", [(BOB, 2, s)])  # a second connection names bob's first too
    assert ids.own("many") == ids.own("gone") == ids.own("other") == ids.own("bob") == set()
    ids.left("other")
    assert ids.own("bob") == set()  # (which of the two wrote it is no clearer now)
    ids.left("bob")
    ids.first("bob again", [(BOB, 3, s)])
    assert ids.own("bob again") == {BOB}
    ids.left("carol")
    assert ids.own("carol") == set() and ids.noted("bob again") and not ids.noted("carol")


# --- another user's edits on their way (server/resync.py) ---------------------------------

STATE = '{"user":{"name":"%s"}}'


async def _next(ws: Any, kind: type) -> Any:
    """The next message of `kind` the server sends on raw socket `ws` (others skipped)."""
    while not isinstance(msg := P.decode(await asyncio.wait_for(ws.recv(), 10)), kind):
        pass
    return msg


async def _bob_socket(server: RunningServer, doc: str) -> Any:
    ws = await websockets.connect(f"{server.ws_url}/{doc}?user=bob")
    await ws.send(P.encode_awareness(P.encode_awareness_entries([(BOB, 1, STATE % "bob")])))
    return ws


def _typed(doc: Doc[Any], pos: int, text: str) -> bytes:
    """Insert `text` at `pos` of `doc`; the update of it."""
    before = doc.get_state()
    doc.get("content", type=Text).insert(pos, text)
    return doc.get_update(before)


async def test_a_step_2_with_another_users_edits_on_their_way_is_asked_again_without_them(
    server: RunningServer,
) -> None:
    """Bob's tab got carol's text over the BroadcastChannel before her socket delivered
    it, and typed after it: his step 2 carries her undelivered items. It was refused
    with 4403 and bob closed (every reconnect, for as long as hers were on their way).
    Now nothing of it is logged, and bob is asked again, with carol's client id left out
    of the state vector (held whole); his answer, built on her text, is held until her
    socket delivers it, then asked for again and logged: his text as his, hers as hers."""
    carol: Doc[Any] = Doc(client_id=CAROL)
    async with connect(server.ws_url, "fly1", "carol", ydoc=carol) as c:
        c.insert(0, "carol. ")
        await eventually(lambda: _len(events(server, "fly1"), 1), what="carol logged")
        tab = doc_of(CAROL, carol.get_update())
        in_flight = _typed(tab, 7, "in flight. ")  # on her socket's slow way
        bob = doc_of(BOB, tab.get_update())
        _typed(bob, 18, "after it. ")
        ws = await _bob_socket(server, "fly1")
        try:
            join = await _next(ws, P.SyncStep1)
            await ws.send(P.encode_sync_step2(bob.get_update(join.state_vector)))
            again = await _next(ws, P.SyncStep1)
            assert P.decode_state_vector(again.state_vector)[CAROL] == MAX_CLOCK
            answer = bob.get_update(again.state_vector)
            assert set(decode_update_meta(answer).structs) == {BOB}  # carol's left out
            await ws.send(P.encode_sync_step2(answer))  # on carol's text: held
            await asyncio.wait_for(await ws.ping(), 10)  # (read, and still open)
            assert len(await events(server, "fly1")) == 1
            # woken by the room when it logs carol's items (Room.waking), not polling
            room = server.backend.rooms.get_loaded("fly1")
            assert room is not None
            await eventually(lambda: set(room._waking) == {CAROL}, what="bob's wait")
            await c.send_raw(P.encode_sync_update(in_flight))  # her socket delivers it
            again = await _next(ws, P.SyncStep1)  # asked again, now that it is held
            assert not room._waking  # (the wait ended with the request)
            await ws.send(P.encode_sync_step2(bob.get_update(again.state_vector)))
            await eventually(lambda: _len(events(server, "fly1"), 3), what="bob's step 2")
            assert ws.close_code is None
        finally:
            await ws.close()
    evs = await events(server, "fly1")
    assert [(e.actor, e.meta.get("relays")) for e in evs] == [
        ("carol", None), ("carol", None), ("bob", None)
    ]  # fmt: skip
    assert await blame_actors(server, "fly1") == [
        ("carol. ", "carol"),
        ("in flight. ", "carol"),
        ("after it. ", "bob"),
    ]


async def test_a_forged_write_under_another_users_id_is_still_never_logged(
    server: RunningServer,
) -> None:
    """Items under carol's client id at clocks she never writes, in bob's step 2: not
    logged; bob is asked again without carol's id. A client that sends them again
    anyway ignored that request: closed with 4403 as before. One that answers it has its
    own edits logged, and nothing of the forged ones; carol's own next edits (the clocks
    the forgery took) are hers."""
    carol: Doc[Any] = Doc(client_id=CAROL)
    async with connect(server.ws_url, "fly2", "carol", ydoc=carol) as c:
        c.insert(0, "carol. ")
        await eventually(lambda: _len(events(server, "fly2"), 1), what="carol logged")
        forged = doc_of(CAROL, carol.get_update())
        _typed(forged, 7, "forged. ")
        bob = doc_of(BOB, forged.get_update())
        _typed(bob, 0, "bob. ")  # on nothing of the forged text
        ws = await _bob_socket(server, "fly2")
        try:
            join = await _next(ws, P.SyncStep1)
            step2 = P.encode_sync_step2(bob.get_update(join.state_vector))
            await ws.send(step2)
            again = await _next(ws, P.SyncStep1)
            assert P.decode_state_vector(again.state_vector)[CAROL] == MAX_CLOCK
            await ws.send(step2)  # the forged items again: the request ignored
            code, reason = await closed_with(ws)
        finally:
            await ws.close()
        assert code == 4403 and "belongs to another user" in reason
        assert len(await events(server, "fly2")) == 1
        ws = await _bob_socket(server, "fly2")
        try:
            join = await _next(ws, P.SyncStep1)
            await ws.send(P.encode_sync_step2(bob.get_update(join.state_vector)))
            again = await _next(ws, P.SyncStep1)
            await ws.send(P.encode_sync_step2(bob.get_update(again.state_vector)))
            await eventually(lambda: _len(events(server, "fly2"), 2), what="bob's own text")
        finally:
            await ws.close()
        await eventually(lambda: c.content == "bob. carol. ", what="carol has bob's text")
        c.insert(len(c.content), "carol again.")  # the clocks the forgery took
        await eventually(lambda: _len(events(server, "fly2"), 3), what="carol's edit")
    assert [e.actor for e in await events(server, "fly2")] == ["carol", "bob", "carol"]
    room = await server.backend.rooms.get("fly2")
    assert str(room.doc.get("content", type=Text)) == "bob. carol. carol again."
    assert await blame_actors(server, "fly2") == [
        ("bob. ", "bob"),
        ("carol. ", "carol"),
        ("carol again.", "carol"),
    ]


async def test_a_step_2_that_waits_long_for_another_users_edits_says_so(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner does not deliver (her tab closed before its socket sent them, say):
    bob's edits built on hers cannot be logged without taking her items from him. Past
    OVERDUE_SECONDS he is told so (a "permission denied" message, which y-websocket
    prints; the connection stays open, no reconnect loop), and his edits are still
    taken once her items arrive."""
    monkeypatch.setattr(resync, "OVERDUE_SECONDS", 0.2)
    carol: Doc[Any] = Doc(client_id=CAROL)
    async with connect(server.ws_url, "fly3", "carol", ydoc=carol) as c:
        c.insert(0, "carol. ")
        await eventually(lambda: _len(events(server, "fly3"), 1), what="carol logged")
        tab = doc_of(CAROL, carol.get_update())
        in_flight = _typed(tab, 7, "in flight. ")
        bob = doc_of(BOB, tab.get_update())
        _typed(bob, 18, "after it. ")
        ws = await _bob_socket(server, "fly3")
        try:
            join = await _next(ws, P.SyncStep1)
            await ws.send(P.encode_sync_step2(bob.get_update(join.state_vector)))
            again = await _next(ws, P.SyncStep1)
            await ws.send(P.encode_sync_step2(bob.get_update(again.state_vector)))
            denied = await _next(ws, P.AuthMessage)
            assert f"another user's edits (client id {CAROL})" in denied.reason, denied
            await asyncio.wait_for(await ws.ping(), 10)
            assert ws.close_code is None and len(await events(server, "fly3")) == 1
            await c.send_raw(P.encode_sync_update(in_flight))
            again = await _next(ws, P.SyncStep1)
            await ws.send(P.encode_sync_step2(bob.get_update(again.state_vector)))
            await eventually(lambda: _len(events(server, "fly3"), 3), what="bob's step 2")
        finally:
            await ws.close()
    assert [e.actor for e in await events(server, "fly3")] == ["carol", "carol", "bob"]


async def test_a_held_step_2_is_asked_again_when_what_it_waits_for_came_before_its_wait() -> None:
    """Bob's step 2 waits for carol's edits (a gap on her left-out id), and her update is
    admitted in the same turn of the event loop, before the task of bob's wait first
    runs. That task read what the document held of her id as it began (her update in
    it) as what it held when the step 2 was held, so her update's logging did not end
    the wait: bob's step 2, and every update he sent meanwhile (dropped), waited until
    she typed again, for good if she did not. The base is read as the step 2 is held."""
    backend = Backend(Settings(), MemoryStore(), [])
    async with backend:
        room = await backend.rooms.get("held-base")
        carol: Doc[Any] = Doc(client_id=CAROL)
        carol.get("content", type=Text).insert(0, "carol. ")
        wait = resync.Resync()
        wait.left_out.add(CAROL)  # (bob's step 2 carried her items: asked again without them)
        assert wait.hold(UpdateGap("an item refers to client CAROL clock 6", CAROL, 7))
        asked = asyncio.Event()
        task = asyncio.create_task(wait.wait(room, asked.set, lambda gap: None))
        try:
            assert room.receive_update(Peer("carol/1", "carol"), carol.get_update())
            await asyncio.wait_for(asked.wait(), 5)  # before: never asked again
        finally:
            task.cancel()


async def test_the_hocuspocus_endpoint_asks_again_without_another_users_edits(
    server: RunningServer,
) -> None:
    """The same rule on /hocuspocus: a step 2 with carol's undelivered items closed
    bob's document there (4403's words in a close message); now it is asked for again
    without them, held until her socket delivers them, then logged as bob's."""
    from palimpsest import hocuspocus as H

    def sync(body: bytes) -> bytes:
        return H.prefix("fly4") + P.write_var_uint(H.SYNC) + body

    async def next_step1(ws: Any) -> P.SyncStep1:
        while True:
            frame = H.decode(await asyncio.wait_for(ws.recv(), 10))
            refused = frame.type == H.AUTH and frame.body[:1] == bytes([H.AUTH_PERMISSION_DENIED])
            assert not isinstance(frame, H.Frame) or not (frame.type == H.CLOSE or refused), frame
            if isinstance(frame, H.Frame) and frame.type == H.SYNC:
                msg = H.decode_sync(frame.body)
                if isinstance(msg, P.SyncStep1):
                    return msg

    carol: Doc[Any] = Doc(client_id=CAROL)
    async with connect(server.ws_url, "fly4", "carol", ydoc=carol) as c:
        c.insert(0, "carol. ")
        await eventually(lambda: _len(events(server, "fly4"), 1), what="carol logged")
        tab = doc_of(CAROL, carol.get_update())
        in_flight = _typed(tab, 7, "in flight. ")
        bob = doc_of(BOB, tab.get_update())
        _typed(bob, 18, "after it. ")
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/hocuspocus") as ws:
            auth = bytes([H.AUTH_TOKEN]) + P.write_var_string("bob")
            await ws.send(H.prefix("fly4") + P.write_var_uint(H.AUTH) + auth)
            mine = P.encode_awareness_entries([(BOB, 1, STATE % "bob")])
            await ws.send(
                H.prefix("fly4") + P.write_var_uint(H.AWARENESS) + P.write_var_bytes(mine)
            )
            await ws.send(sync(bytes([P.SYNC_STEP1]) + P.write_var_bytes(bob.get_state())))
            join = await next_step1(ws)
            step2 = bob.get_update(join.state_vector)
            await ws.send(sync(bytes([P.SYNC_STEP2]) + P.write_var_bytes(step2)))
            again = await next_step1(ws)
            assert P.decode_state_vector(again.state_vector)[CAROL] == MAX_CLOCK
            step2 = bob.get_update(again.state_vector)
            await ws.send(sync(bytes([P.SYNC_STEP2]) + P.write_var_bytes(step2)))  # held
            await asyncio.wait_for(await ws.ping(), 10)
            assert len(await events(server, "fly4")) == 1
            await c.send_raw(P.encode_sync_update(in_flight))
            again = await next_step1(ws)
            step2 = bob.get_update(again.state_vector)
            await ws.send(sync(bytes([P.SYNC_STEP2]) + P.write_var_bytes(step2)))
            await eventually(lambda: _len(events(server, "fly4"), 3), what="bob's step 2")
    assert [e.actor for e in await events(server, "fly4")] == ["carol", "carol", "bob"]
    room = await server.backend.rooms.get("fly4")
    assert str(room.doc.get("content", type=Text)) == "carol. in flight. after it. "


def test_the_ready_part_of_an_update_is_what_applies_now() -> None:
    """updates.ready_part: per client, whole structs up to the first that names an item
    the document does not hold, and the deletions of held items; a valid update that
    the attribution rule admits, whose rest waits."""
    carol: Doc[Any] = Doc(client_id=CAROL)
    carol.get("content", type=Text).insert(0, "carol. ")
    server = doc_of(9, carol.get_update())
    held = P.decode_state_vector(server.get_state())
    tab = doc_of(CAROL, carol.get_update())
    _typed(tab, 7, "in flight. ")  # not delivered
    bob = doc_of(BOB, tab.get_update())
    _typed(bob, 0, "bob. ")  # on held items only
    del bob.get("content", type=Text)[5:7]  # "ca": held, deleted
    _typed(bob, len(str(bob.get("content", type=Text))), "after it.")  # on carol's
    step2 = bob.get_update(P.encode_state_vector({**held, CAROL: MAX_CLOCK}))
    part = ready_part(step2, lambda c: held.get(c, 0))
    assert part is not None
    meta = decode_update_meta(part)
    assert meta.structs == {BOB: [(0, 5)]} and meta.deletes == {CAROL: [(0, 2)]}
    server.apply_update(part)
    assert str(server.get("content", type=Text)) == "bob. rol. "
    # nothing held: every client's first struct starts past it
    assert ready_part(bob.get_update(server.get_state()), lambda c: 0) is None


def test_held_updates_that_build_on_each_other_are_taken_in_turns() -> None:
    """updates.ready_parts: Bob's and carol's lost edits build on each other's (b1, c1 on
    b1, b2 on c1, c2 on b2). Each one's step 2, the other's items left out, has a gap
    on the other's: alone, neither goes past its first turn. Together they come out as
    parts in the order they build on each other, each of its own update's client id,
    and with them the deletions; they fold to what both hold."""
    base: Doc[Any] = Doc(client_id=9)
    base.get("content", type=Text).insert(0, "base. ")
    server = doc_of(9, base.get_update())
    held = P.decode_state_vector(server.get_state())
    bob, carol = doc_of(BOB, base.get_update()), doc_of(CAROL, base.get_update())
    for i in range(2):
        carol.apply_update(_typed(bob, len(str(bob.get("content", type=Text))), f"b{i} "))
        bob.apply_update(_typed(carol, len(str(carol.get("content", type=Text))), f"c{i} "))
    before = bob.get_state()
    del bob.get("content", type=Text)[6:8]  # "b0": bob deletes his own first turn
    carol.apply_update(bob.get_update(before))
    step2s = [
        bob.get_update(P.encode_state_vector({**held, CAROL: MAX_CLOCK})),
        carol.get_update(P.encode_state_vector({**held, BOB: MAX_CLOCK})),
    ]
    for step2 in step2s:  # alone, each stops at its first turn on the other's
        part = ready_part(step2, lambda c: held.get(c, 0))
        assert part is None or max(e for _, e in decode_update_meta(part).structs[BOB]) == 3
    parts, done = ready_parts(step2s, lambda c: held.get(c, 0))
    assert done == [True, True]
    assert [i for i, _ in parts] == [0, 1, 0, 1], parts  # in turns
    assert decode_update_meta(parts[0][1]).deletes == {BOB: [(0, 2)]}  # (with its items)
    for i, part in parts:
        meta = decode_update_meta(part)
        assert set(meta.structs) <= {(BOB, CAROL)[i]}
        server.apply_update(part)
        assert str(server.get("content", type=Text)).startswith("base. ")
    assert (
        str(server.get("content", type=Text))
        == "base.  c0 b1 c1 "
        == str(carol.get("content", type=Text))
    )
    # nothing held: nothing comes out, nothing is done
    assert ready_parts(step2s, lambda c: 0) == ([], [False, False])
