"""The backbone end to end: real websockets on a free port, a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets
from conftest import RunningServer, eventually, run_server
from pycrdt import Doc, Text
from sqlitehelp import sqlite_conn
from yclient import connect

from palimpsest import protocol as P
from palimpsest.backend import Backend
from palimpsest.extensions import Extension
from palimpsest.features import builtin_extensions
from palimpsest.room import Room
from palimpsest.settings import Settings
from palimpsest.snapshots import load
from palimpsest.store.memory import MemoryStore
from palimpsest.store.sqlite import SQLiteStore

#: Yjs v2 updates (Node's yjs, ``Y.encodeStateAsUpdateV2``): "hello" typed into
#: Y.Text "content" by client 1001; an empty document
V2_TEXT = bytes.fromhex("000002a90f000001040f0c636f6e74656e7468656c6c6f07050101000001010000")
V2_EMPTY = bytes.fromhex("00000000000001000000000000")


async def raw(server: RunningServer, doc: str, q: str = "") -> websockets.ClientConnection:
    return await websockets.connect(f"{server.ws_url}/{doc}{q}", compression=None, max_size=None)


async def closed_with(ws: websockets.ClientConnection) -> tuple[int, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None, "server closed without a close frame"
        return e.rcvd.code, e.rcvd.reason


async def test_server_sends_step1_first_and_answers_step1(server: RunningServer) -> None:
    async with connect(server.ws_url, "d", "alice") as a:
        a.insert(0, "abc")
        await eventually(lambda: server.backend.store.head("d"))
    ws = await raw(server, "d")
    first = P.decode(await ws.recv())
    assert isinstance(first, P.SyncStep1)
    await ws.send(P.encode_sync_step1(b"\x00"))
    step2 = None
    while step2 is None:
        m = P.decode(await ws.recv())
        if isinstance(m, P.SyncStep2):
            step2 = m
    d: Doc = Doc()
    d.apply_update(step2.update)
    assert str(d.get("content", type=Text)) == "abc"
    await ws.close()


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (b"\x00\x02\x05\x00", 4400, "declares 5 bytes"),
        (b"\x00\x07\x00", 4400, "unknown sync message type 7"),
        (b"\x03\x00", 4400, "trailing bytes"),
        (b"\x80", 4400, "truncated"),
        (P.encode_sync_update(b"\x01\x01\x05\x00\x44"), 4400, "does not decode"),
        (P.encode_sync_update(b"\xff" * 40), 4400, "does not decode"),
        # v1 readers take most v2 updates for an empty update, then bytes they ignore: it
        # was dropped as a no-op, without a word
        (P.encode_sync_update(V2_TEXT), 4400, "not a Yjs v1 update (v2 encoding?)"),
        (P.encode_sync_step2(V2_EMPTY), 4400, "not a Yjs v1 update (v2 encoding?)"),
        (P.encode_sync_update(b"\x00\x00\x05"), 4400, "update does not parse: 1 unexpected"),
        # no Yjs client sends one (an update that changes nothing is 0x00 0x00): yrs said
        # only "Cannot encode state vector from update"
        (P.encode_sync_update(b""), 4400, "empty update: 0 bytes"),
        (P.encode_sync_step2(b""), 4400, "empty update: 0 bytes"),
    ],
)
async def test_malformed_frames_close_4400_and_change_nothing(
    server: RunningServer, frame: bytes, code: int, reason: str
) -> None:
    async with connect(server.ws_url, "m", "bob") as bob:
        bob.insert(0, "kept")
        await eventually(lambda: server.backend.store.head("m"))
        head = await server.backend.store.head("m")
        ws = await raw(server, "m", "?user=mallory")
        await ws.send(frame)
        got_code, got_reason = await closed_with(ws)
        assert got_code == code
        assert reason in got_reason
        # everyone else keeps working, nothing was logged for mallory
        bob.insert(4, "!")

        async def bob_logged() -> bool:
            return await server.backend.store.head("m") == head + 1

        await eventually(bob_logged, what="bob still edits")
        events = await server.backend.store.read("m")
        assert "mallory" not in {e.actor for e in events}
    async with connect(server.ws_url, "m") as c:
        assert c.content == "kept!"


@pytest.mark.parametrize("which", ["origin", "right origin"])
async def test_an_item_that_names_itself_as_a_neighbour_is_refused_4400(
    server: RunningServer, which: str
) -> None:
    """pycrdt 0.14's Text.insert at a UTF-8 byte index inside "😀" made an item whose
    right origin is its own id. It was logged, yet yrs kept it pending for good (never in
    the text; the sender's flush never confirmed, nothing said why) and Yjs's
    applyUpdate throws "Unexpected case" on it: every browser in the document would."""
    async with connect(server.ws_url, "selfref", "bob") as bob:
        bob.insert(0, "A😀B")
        await eventually(lambda: server.backend.store.head("selfref"))
        head = await server.backend.store.head("selfref")
        ws = await raw(server, "selfref", "?user=mallory")
        await ws.send(P.encode_sync_step1(b"\x00"))
        while not isinstance(m := P.decode(await ws.recv()), P.SyncStep2):
            pass
        d: Doc = Doc()
        d.apply_update(m.update)
        ((bob_id, bob_clock),) = P.decode_state_vector(d.get_state()).items()
        me = 424242
        self_id = P.write_var_uint(me) + P.write_var_uint(0)
        bobs = P.write_var_uint(bob_id) + P.write_var_uint(bob_clock - 1)
        origins = self_id + bobs if which == "origin" else bobs + self_id
        update = (
            b"\x01\x01" + P.write_var_uint(me) + b"\x00\xc4" + origins
            + P.write_var_string("x") + b"\x00"
        )  # fmt: skip
        await ws.send(P.encode_sync_update(update))
        code, reason = await closed_with(ws)
        assert code == 4400, (code, reason)
        assert f"as its {which}, so it can never be integrated" in reason, reason
        # nothing of mallory's was logged, and bob goes on
        bob.insert(0, ">")

        async def bob_logged() -> bool:
            return await server.backend.store.head("selfref") == head + 1

        await eventually(bob_logged, what="bob still edits")
        events = await server.backend.store.read("selfref")
        assert "mallory" not in {e.actor for e in events}
    async with connect(server.ws_url, "selfref") as c:
        assert c.content == ">A😀B"


async def test_text_frame_and_oversized_frame_are_refused(settings: Settings) -> None:
    """A frame over max_frame_bytes is refused, but one that carries an update, which
    may be as large as the document may be (limits.frame_limit)."""
    settings.max_frame_bytes = 1000
    settings.max_doc_bytes = 1500
    async with run_server(settings) as server:
        ws = await raw(server, "big")
        await ws.send(P.encode_awareness(b"\x00" * 2000))
        code, reason = await closed_with(ws)
        assert code == 4413 and "over the limit of 1000" in reason
        ws = await raw(server, "big")
        await ws.send(P.encode_sync_update(b"\x00" * 2000))
        code, reason = await closed_with(ws)
        assert code == 4413 and "over the limit of 1516" in reason
        ws = await raw(server, "big")
        await ws.send("hello")
        code, reason = await closed_with(ws)
        assert code == 4400 and "binary" in reason
        assert await server.backend.store.head("big") == 0


@pytest.mark.parametrize(
    "name",
    [
        "..",
        ".",
        "%2e%2e",
        "%2E",
        "",
        ".hidden",
        "a%20b",
        "a%2Fb",
        "x" * 129,
        "semi;colon",
        "%C3%A9",
    ],
)
async def test_bad_doc_names_are_refused_with_a_reason(server: RunningServer, name: str) -> None:
    ws = await raw(server, name)
    code, reason = await closed_with(ws)
    assert code == 4400
    assert "document name" in reason


def test_a_refused_name_shows_each_character_by_its_code_point() -> None:
    """A combining mark shown raw sat on the quote around it (['́'] read as ['']): each
    refused character is named by its code point, and the name is shown in ASCII."""
    from palimpsest.errors import DocNameError
    from palimpsest.names import validate_doc_name

    with pytest.raises(DocNameError) as e:
        validate_doc_name("cafe\u0301 \u200f")
    said = str(e.value)
    assert "U+0301 (COMBINING ACUTE ACCENT)" in said and "U+200F (RIGHT-TO-LEFT MARK)" in said
    assert "U+0020 (SPACE)" in said and "'cafe\\u0301 \\u200f'" in said, said


async def test_a_refused_non_ascii_name_shows_its_characters(server: RunningServer) -> None:
    """A name of letters a user typed is shown as they are, in the refusal and the
    websocket's close reason (which the page's banner shows); they read
    'caf\\xe9-\\u65e5\\u672c\\u8a9e' before. A long one is cut, within the close
    reason's 123 bytes, at a character."""
    ws = await raw(server, "caf%C3%A9-%E6%97%A5%E6%9C%AC%E8%AA%9E")
    code, reason = await closed_with(ws)
    assert code == 4400 and "'café-日本語'" in reason, reason
    ws = await raw(server, "%E6%97%A5" * 60)
    code, reason = await closed_with(ws)
    assert code == 4400 and "'日日日" in reason and len(reason.encode()) <= 123, reason


async def test_a_websocket_without_a_document_name_is_told_why(server: RunningServer) -> None:
    """Where a browser's or Node's URL parser sends /ws/.. and /ws/. (test_interop_node):
    the 4400 close with a reason every bad name gets, not a 403 at the handshake."""
    for url, said in ((server.url.replace("http", "ws", 1) + "/", "no document name in /: y-"),
                      (server.ws_url + "/", "document name is empty")):  # fmt: skip
        ws = await websockets.connect(url, compression=None)
        code, reason = await closed_with(ws)
        assert code == 4400 and said in reason and "'.'" in reason and "'..'" in reason, reason
        assert not reason.endswith("…"), reason  # (a close reason holds 123 bytes)


async def test_a_websocket_at_a_path_of_no_route_is_told_where_to_connect(
    server: RunningServer,
) -> None:
    """fteditors: y-websocket given the site's root (it connects to /notes), pointed at
    /hocuspocus, or a Hocuspocus provider at /ws got a bare 403 at the handshake, no
    reason, no log line. Now a 404 whose body says where (what the Python client reads
    as NotFound, test_client_session), and a line in the log."""
    root = server.url.replace("http", "ws", 1)
    for path in ("/notes", "/hocuspocus/notes", "/ws", "/api/docs/notes"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(root + path + "?user=ada", compression=None)
        said = refused.value.response.body.decode()
        assert refused.value.response.status_code == 404, (path, said)
        assert f"no websocket at {path}:" in said, (path, said)
        assert "/ws/{doc}" in said and "/hocuspocus" in said, said
    # the server goes on serving the right place
    async with connect(server.ws_url, "after-wrong-paths", "ada") as a:
        a.insert(0, "fine")


async def test_a_question_mark_in_a_name_put_into_the_url_unencoded_is_refused(
    server: RunningServer,
) -> None:
    """y-websocket puts the document name into the URL as it is: 'notes?x=1' with
    params {user: 'alice'} became /ws/notes?x=1?user=alice, and the text went into
    'notes' as 'anonymous', without a word (fteditors). Refused, saying why."""
    ws = await websockets.connect(server.ws_url + "/notes?x=1?user=alice", compression=None)
    code, reason = await closed_with(ws)
    assert code == 4400 and "a document name cannot hold '?'" in reason, reason
    assert "/ws/notes?x=1?user=alice has two" in reason and not reason.endswith("…"), reason
    assert await server.backend.store.head("notes") == 0


async def test_offline_edits_merge_after_reconnect(server: RunningServer) -> None:
    ydoc: Doc = Doc()
    async with connect(server.ws_url, "off", "alice", ydoc=ydoc) as a:
        a.insert(0, "online ")
        await eventually(lambda: server.backend.store.head("off"))
    # offline: nobody hears this edit until the next sync
    ydoc.get("content", type=Text).insert(7, "offline")
    async with connect(server.ws_url, "off", "bob") as b:
        assert b.content == "online "
        async with connect(server.ws_url, "off", "alice", ydoc=ydoc):
            await eventually(lambda: b.content == "online offline", what="offline edit merged")
    events = await server.backend.store.read("off")
    assert [e.actor for e in events] == ["alice", "alice"]


async def test_reconnect_with_nothing_new_logs_nothing(server: RunningServer) -> None:
    ydoc: Doc = Doc()
    async with connect(server.ws_url, "noop", "alice", ydoc=ydoc) as a:
        a.insert(0, "abc")
        del a.text[0:1]

        async def two() -> bool:
            return await server.backend.store.head("noop") == 2

        await eventually(two)
    for _ in range(3):
        async with connect(server.ws_url, "noop", "alice", ydoc=ydoc):
            pass
    await server.backend.rooms.get("noop")
    assert await server.backend.store.head("noop") == 2


async def test_many_edits_then_immediate_close_lose_nothing(settings: Settings) -> None:
    """Read every socket eagerly: a client that types and closes loses nothing."""
    settings.max_events_per_second = 0  # unlimited: this test is about reading, not limits
    async with run_server(settings) as server:
        await _type_and_close(server)


async def _type_and_close(server: RunningServer) -> None:
    ydoc: Doc = Doc()
    text = ydoc.get("content", type=Text)
    updates: list[bytes] = []
    ydoc.observe(lambda e: updates.append(e.update))
    for i in range(2000):
        text.insert(i, "x")
    ws = await raw(server, "burst", "?user=typist")
    for u in updates:
        await ws.send(P.encode_sync_update(u))
    await ws.close()
    await eventually(lambda: server.backend.store.head("burst"), what="events logged")

    async def all_logged() -> bool:
        return await server.backend.store.head("burst") == 2000

    await eventually(all_logged, timeout=20, what="2000 events logged")
    async with connect(server.ws_url, "burst") as c:
        assert c.content == "x" * 2000


async def test_awareness_is_relayed_and_dropped_on_leave(server: RunningServer) -> None:
    state = '{"user":{"name":"alice"}}'
    async with connect(server.ws_url, "aw", "bob") as b:
        a = await raw(server, "aw", "?user=alice")
        await a.send(P.encode_awareness(P.encode_awareness_entries([(42, 1, state)])))

        def seen(want: str, client: int = 42) -> bool:
            return any(
                isinstance(f, P.AwarenessUpdate)
                and any(c == client and s == want for c, _, s in P.decode_awareness(f.payload))
                for f in b.frames
            )

        await eventually(lambda: seen(state), what="bob sees alice's presence")
        # an older clock is not relayed: another client's state after it is, in the same
        # frame as the old one if that was (the changes of a loop turn go out together)
        await a.send(P.encode_awareness(P.encode_awareness_entries([(42, 0, '{"old":1}')])))
        await a.send(P.encode_awareness(P.encode_awareness_entries([(43, 1, "{}")])))
        await eventually(lambda: seen("{}", 43), what="bob sees alice's other client")
        assert not seen('{"old":1}')
        # a newer clock: relayed
        later = '{"user":{"name":"alice","later":true}}'
        await a.send(P.encode_awareness(P.encode_awareness_entries([(42, 2, later)])))
        await eventually(lambda: seen(later), what="bob sees alice's newer presence")
        await a.close()
        await eventually(lambda: seen("null"), what="alice's presence removed when she leaves")
        # bob has a presence too: a newcomer is told the known states (bob's, not the gone
        # alice's) in the answer that follows the server's step 1
        bobs = '{"user":{"name":"bob"}}'
        await b.send_raw(P.encode_awareness(P.encode_awareness_entries([(7, 1, bobs)])))
        await eventually(
            lambda: any(
                isinstance(f, P.AwarenessUpdate)
                and any(cl == 7 for cl, _, _ in P.decode_awareness(f.payload))
                for f in b.frames
            ),
            what="bob's own presence echoed",
        )
        async with connect(server.ws_url, "aw", "carol") as c:

            def states() -> dict[int, str]:
                out: dict[int, str] = {}
                for f in c.frames:
                    if isinstance(f, P.AwarenessUpdate):
                        out.update({cl: s for cl, _, s in P.decode_awareness(f.payload)})
                return out

            await eventually(lambda: 7 in states(), what="carol is told bob's presence")
            assert states().get(42, "null") == "null", states()


class LoadRecorder(Extension):
    def __init__(self) -> None:
        self.loads: list[str] = []

    async def on_load(self, room: Room) -> None:
        self.loads.append(room.name)


async def test_concurrent_first_connections_load_once(settings: Settings) -> None:
    recorder = LoadRecorder()
    backend = Backend(settings, extensions=[recorder, *builtin_extensions(settings)])
    async with run_server(settings, backend) as server:
        await _load_once(server, recorder.loads)


async def _load_once(server: RunningServer, loads: list[str]) -> None:
    async with connect(server.ws_url, "once", "a") as a:
        a.insert(0, "hi")
        await eventually(lambda: server.backend.store.head("once"))
    await eventually(lambda: "once" not in server.backend.rooms, what="room unloads when idle")
    loads.clear()

    async def one() -> str:
        async with connect(server.ws_url, "once") as c:
            return c.content

    contents = await asyncio.gather(*(one() for _ in range(8)))
    assert contents == ["hi"] * 8
    assert loads == ["once"]


async def test_restart_reloads_log_and_snapshots(settings: Settings, db_path: Path) -> None:
    settings.snapshot_every = 10
    async with run_server(settings) as server:
        async with connect(server.ws_url, "r", "alice") as a:
            for i in range(25):
                a.insert(i, chr(ord("a") + i % 26))
            await eventually(lambda: server.backend.store.head("r"))

            async def done() -> bool:
                return await server.backend.store.head("r") == 25

            await eventually(done)
            expected = a.content
    # unload on shutdown wrote a final snapshot at the head (how many were written before
    # it depends on timing: the writes at 10 and 20 run in the background, and on a loaded
    # machine they may capture a later head, or be the one the final write replaces)
    store = SQLiteStore(db_path)
    async with store:
        snaps = await store.snapshots("r")
        assert snaps and snaps[-1].seq == 25 and all(s.valid for s in snaps)
    async with run_server(settings) as server:
        async with connect(server.ws_url, "r") as c:
            assert c.content == expected


async def test_snapshot_equals_fold_of_events(settings: Settings, db_path: Path) -> None:
    settings.snapshot_every = 7
    async with run_server(settings) as server:
        async with (
            connect(server.ws_url, "fold", "a") as a,
            connect(server.ws_url, "fold", "b") as b,
        ):
            for i in range(30):
                (a if i % 2 else b).insert(0, str(i % 10))

            async def done() -> bool:
                return await server.backend.store.head("fold") == 30

            await eventually(done)
        store = server.backend.store
        await eventually(lambda: server.backend.store.snapshots("fold"))
        await server.backend.snapshots.drain()
        for info in await store.snapshots("fold"):
            snap = await store.latest_snapshot("fold", info.seq)
            assert snap is not None and snap.seq == info.seq
            folded: Doc = Doc()
            for ev in await store.read("fold", upto=info.seq):
                folded.apply_update(ev.update)
            from_snap: Doc = Doc()
            from_snap.apply_update(snap.state)
            assert str(from_snap.get("content", type=Text)) == str(folded.get("content", type=Text))
            assert P.decode_state_vector(from_snap.get_state()) == P.decode_state_vector(
                folded.get_state()
            )


async def test_damaged_snapshot_falls_back_to_an_older_one(tmp_path: Path) -> None:
    path = tmp_path / "dmg.db"
    async with SQLiteStore(path) as store:
        from palimpsest.store.base import NewEvent

        d: Doc = Doc()
        t = d.get("content", type=Text)
        ups: list[bytes] = []
        d.observe(lambda e: ups.append(e.update))
        for i in range(6):
            t.insert(i, "ab"[i % 2])
        await store.append([("doc", [NewEvent("u", "edit", u) for u in ups])])
        folded: Doc = Doc()
        for u in ups[:3]:
            folded.apply_update(u)
        await store.put_snapshot("doc", 3, folded.get_update())
        await store.put_snapshot("doc", 6, d.get_update())
    with sqlite_conn(path) as db:  # corrupt the newest one on disk
        db.execute("UPDATE snapshots SET state = X'0102' WHERE seq = 6")
    async with SQLiteStore(path) as store:
        infos = await store.snapshots("doc")
        assert [(i.seq, i.valid) for i in infos] == [(3, True), (6, False)]
        loaded = await load(store, "doc")
        assert loaded.snapshot is not None and loaded.snapshot.seq == 3
        assert loaded.replayed == 3 and loaded.seq == 6
        assert str(loaded.doc.get("content", type=Text)) == "ababab"


async def test_store_down_holds_edits_and_loses_nothing(settings: Settings) -> None:
    store = MemoryStore()
    from palimpsest.backend import Backend

    backend = Backend(settings, store=store)
    async with run_server(settings, backend) as server:
        ydoc: Doc = Doc()
        async with connect(server.ws_url, "sd", "alice", ydoc=ydoc) as a:
            a.insert(0, "safe")
            await eventually(lambda: store._heads.get("sd") == 1)
            # the store goes down: the edit is held (not applied, not acknowledged), the
            # connection stays open, and it commits once the store is back
            store.down = True
            a.insert(4, " held")
            committer = backend.committer
            await eventually(lambda: committer.refusing is not None and committer.held,
                             what="the edit held")  # fmt: skip
            room = backend.rooms.get_loaded("sd")
            assert room is not None and room.seq == 1  # held: not applied
            store.down = False
            await eventually(lambda: store._heads.get("sd") == 2, what="committed when back")
            assert a.close_code is None
            # an undo (a server-made change) waits for the store the same way
            store.down = True
            undo = asyncio.create_task(a.request({"type": "undo"}, timeout=30))
            await eventually(lambda: committer.refusing is not None and committer.held,
                             what="the undo held")  # fmt: skip
            assert not undo.done() and store._heads["sd"] == 2
            store.down = False
            answer = await undo
            assert answer["ok"] and answer["seq"] == 3, answer
            await eventually(lambda: a.content == "", what="the undo reaches its author")
            a.insert(0, "safe held")
            await eventually(lambda: store._heads.get("sd") == 4, what="typed again")
            assert a.close_code is None
            # past the bound of held bytes, the sender is closed with 1013 instead
            room.hold_max_bytes = 0
            store.down = True
            a.insert(9, " lost?")
            await eventually(lambda: a._reader is not None and a._reader.done(), what="closed")
            assert a.close_code == 1013
        assert store._heads["sd"] == 4
        store.down = False
        # the client comes back and its step 2 re-sends the unacknowledged edit
        async with connect(server.ws_url, "sd", "alice", ydoc=ydoc):
            await eventually(lambda: store._heads.get("sd") == 5, what="re-sent after reconnect")
        async with connect(server.ws_url, "sd") as c:
            assert c.content == "safe held lost?"


async def test_unknown_message_types_and_client_auth_are_ignored(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame of a message type the protocol does not define (an app's own, added with
    y-websocket's ``messageHandlers``) and an auth message sent by a client are ignored,
    as y-websocket's server does: the socket stays open and keeps working. They are
    counted by type, the types bucketed so that a client cannot make new series, and
    said once per connection in the log."""
    from test_ops import scrape, val

    caplog.set_level("DEBUG", logger="palimpsest.ws")
    ws = await raw(server, "ign", "?user=ann")
    frames = [
        b"\x09\x05hello",  # an app's own message type 9
        b"\x09",
        P.write_var_uint(77) + b"\x01\x02",
        P.write_var_uint(2**40) + b"xyz",  # a type past every bucket
        b"\x02\x00\x05hello",  # an auth message from the client
        b"\x02",  # one the server does not read: ignored all the same
    ]
    for frame in frames:
        await ws.send(frame)
    d: Doc = Doc()
    text = d.get("content", type=Text)
    text += "still here"
    await ws.send(P.encode_sync_update(d.get_update()))

    async def logged() -> bool:
        return await server.backend.store.head("ign") == 1

    await eventually(logged, what="the update after the ignored frames is logged")
    m = await scrape(server.url)
    name = "palimpsest_ignored_frames_total"
    assert val(m, name, endpoint="ws", type="9") == 2
    assert val(m, name, endpoint="ws", type="other") == 2
    assert val(m, name, endpoint="ws", type="2") == 2
    assert not [k for k in m if k[0] == name and dict(k[1]).get("type") not in ("2", "9", "other")]
    said = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert len(said) == len(frames), [r.getMessage() for r in said]
    assert [r.levelname for r in said] == ["INFO"] + ["DEBUG"] * (len(frames) - 1)
    assert "message type 9" in said[0].getMessage()
    await ws.send(b"\x07")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(closed_with(ws), 0.5)  # still open
    await ws.close()


async def test_ignored_frames_count_against_the_rate_limit(settings: Settings) -> None:
    settings.max_events_per_second = 5
    async with run_server(settings) as server:
        ws = await raw(server, "ign-rate")
        for _ in range(40):
            await ws.send(b"\x09")
        code, reason = await closed_with(ws)
        assert code == 1013 and "messages per second" in reason
