"""Hostile input: the frame decoder and the update path under generated frames.

Hypothesis drives the pure decoders and the room's update path in process; the harness of
bench/fuzz_bench.py (which runs 100k frames) sends a few thousand generated frames to a
real server: no crash, no hang, the predicted clean 44xx close for every refused frame,
a document that only accepted refusals is unchanged, and the others keep working."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually, run_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yclient import connect

from palimpsest import protocol as P
from palimpsest.backend import Backend
from palimpsest.errors import ProtocolError, UpdateRejected
from palimpsest.settings import Settings
from palimpsest.snapshots import load

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fuzz_bench import (  # noqa: E402
    LIMITS,
    OK,
    UPDATE,
    UPDATE_FRAME_LIMIT,
    FrameGen,
    Fuzzer,
    WireModel,
    predict,
)

CORPUS = FrameGen(0).corpus
UPDATES = FrameGen(0).updates


# --- the pure decoders ------------------------------------------------------------------------


def _decode_only_protocol_errors(frame: bytes) -> None:
    try:
        msg = P.decode(frame)
    except ProtocolError as e:
        assert str(e), "a ProtocolError says what was wrong"
        return
    # what decodes re-encodes to a frame that decodes to the same message
    assert P.decode(P.encode(msg)) == msg


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=64))
def test_decoder_raises_only_protocol_errors_on_random_bytes(frame: bytes) -> None:
    _decode_only_protocol_errors(frame)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(frame)))
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if op == "set" and pos < len(frame):
            frame[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del frame[pos : pos + draw(st.integers(1, 4))]
        else:
            del frame[pos:]
    return bytes(frame)


@settings(max_examples=1500, deadline=None)
@given(mutated_frames())
def test_decoder_raises_only_protocol_errors_on_mutated_frames(frame: bytes) -> None:
    _decode_only_protocol_errors(frame)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=48))
def test_payload_decoders_raise_only_protocol_errors(payload: bytes) -> None:
    for decoder in (P.decode_state_vector, P.decode_awareness):
        try:
            decoder(payload)
        except ProtocolError:
            pass


messages = st.one_of(
    st.binary(max_size=40).map(P.SyncStep1),
    st.binary(max_size=40).map(P.SyncStep2),
    st.binary(max_size=40).map(P.SyncUpdate),
    st.binary(max_size=40).map(P.AwarenessUpdate),
    st.just(P.QueryAwareness()),
    st.builds(P.AuthMessage, st.integers(0, 2**32), st.text(max_size=20)),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4).map(
        P.Extension
    ),
)


@settings(max_examples=500, deadline=None)
@given(messages)
def test_every_message_round_trips(msg: P.Message) -> None:
    assert P.decode(P.encode(msg)) == msg


# --- the update path, in process ---------------------------------------------------------------


class RecordingPeer:
    """The room's view of a connection: what it was sent, how it was closed."""

    def __init__(self, pid: str) -> None:
        self.id = pid
        self.actor = "fuzzer"
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed = self.closed or (code, reason)


@st.composite
def damaged_updates(draw: st.DrawFn) -> bytes:
    upd = bytearray(draw(st.sampled_from(UPDATES)))
    for _ in range(draw(st.integers(0, 3))):
        if not upd:
            break
        i = draw(st.integers(0, len(upd) - 1))
        kind = draw(st.integers(0, 2))
        if kind == 0:
            upd[i] = draw(st.integers(0, 255))
        elif kind == 1:
            del upd[i:]
        else:
            upd[i:i] = draw(st.binary(min_size=1, max_size=3))
    return bytes(upd)


async def _update_path(updates: list[tuple[bytes, bool]]) -> None:
    async with Backend(Settings(store="memory://", unload_after_seconds=60)) as backend:
        room = await backend.rooms.get("h")
        peer = RecordingPeer("p1")
        room.join(peer)
        for update, as_step2 in updates:
            try:
                room.receive_update(peer, update, reply_to_step1=as_step2)
            except UpdateRejected:
                pass  # refused at the door: the sender is closed with 4400
        await room.flush()
        # the live document holds exactly what the log holds, and every logged event applies
        loaded = await load(backend.store, "h")
        assert loaded.failed == 0, "an event in the log does not apply"
        assert loaded.seq == room.seq
        assert P.decode_state_vector(loaded.doc.get_state()) == P.decode_state_vector(
            room.doc.get_state()
        )
        assert peer.closed is None or peer.closed[0] == 4400, peer.closed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(damaged_updates(), st.booleans()), min_size=1, max_size=12))
def test_update_path_logs_only_what_applies(updates: list[tuple[bytes, bool]]) -> None:
    asyncio.run(_update_path(updates))


def test_predictions_on_hand_made_frames() -> None:
    """The fuzz oracle (an independent model of the wire format, plus pycrdt) on frames
    whose fate is worked out by hand from the protocol."""
    assert predict(P.encode_sync_update(UPDATES[0])) == UPDATE
    assert predict(bytes([0, 2, len(UPDATES[0])]) + UPDATES[0]) == UPDATE
    assert predict(P.encode_sync_update(b"\xff" * 20)) == 4400
    assert predict(b"\x07") == OK  # unknown message type: ignored, as y-websocket does
    assert predict(b"\x80\x01\xff") == OK  # type 128, its body not read
    assert predict(b"\x80") == 4400  # no message type
    assert predict(b"\x00\x03\x01\x00") == 4400  # unknown sync type
    assert predict(b"\x00\x00\x01\x00") == OK  # step 1, empty state vector
    assert predict(b"\x00\x00\x01\x00\x00") == 4400  # a trailing byte
    assert predict(b"\x00\x00\x05\x00") == 4400  # declares more than there is
    assert predict(b"\x80\x00\x00\x01\x00") == OK  # non-minimal varUint 0
    assert predict(b"\x80" * 9 + b"\x00\x00\x01\x00") == OK  # 10 bytes: the most read
    assert predict(b"\x80" * 10 + b"\x00\x00\x01\x00") == 4400  # 11 bytes
    assert predict(b"\x03") == OK  # query awareness
    assert predict(b"\x03\x00") == 4400
    assert predict(b"\x01\x05\x01\x2a\x01\x01\x31") == 4400  # state "1": not an object
    assert predict(b"\x01\x06\x01\x2a\x01\x02{}") == OK  # 1 entry: 42, clock 1, "{}"
    assert predict(b"\x01\x08\x01\x2a\x01\x04null") == OK  # a removal
    assert predict(b"\x01\x05\x01\x2a\x01\x01\x7b") == 4400  # state "{": not JSON
    assert predict(b"\x01\x07\x01\x2a\x01\x03NaN") == 4400  # JSON.parse refuses it
    assert predict(b"\x01\x05\x01\x2a\x01\x02\x31") == 4400  # state overruns
    assert predict(b"\x01\x04\x01\x2a\x01\x01") == 4400  # state missing
    assert predict(b"\x64\x02{}") == OK  # extension: a JSON object
    assert predict(b"\x64\x02[]") == 4400  # a JSON array
    assert predict(b"\x64\x02\xc3\x28") == 4400  # invalid UTF-8
    assert predict(b"\x64\x13" + b'{"type":"fuzz-x"}  ') == OK
    assert predict(b"\x64\x10" + b'{"type":"undo"}!') == 4400  # not JSON
    assert predict(b"\x64\x0f" + b'{"type":"undo"}') == UPDATE  # a real operation
    assert predict(b"\x02\x00\x01x") == OK  # a client's auth message: ignored
    assert predict(b"\x02\x00\x02\xff\xfe") == OK  # not read, so never malformed
    # an update over the frame limit is judged by what it holds, up to the document's size
    assert predict(P.encode_sync_update(b"\x00" * LIMITS["max_frame_bytes"])) != 4413
    assert predict(P.encode_sync_update(b"\x00" * UPDATE_FRAME_LIMIT)) == 4413
    assert predict(P.encode_awareness(b"\x00" * LIMITS["max_frame_bytes"])) == 4413
    assert predict(P.encode_permission_denied("x")) == OK


def test_the_model_and_the_servers_decoder_agree() -> None:
    """Two independent readings of the wire format, on generated frames: a disagreement
    means one of them is wrong (the real-server run below says which)."""
    gen = FrameGen(seed=11)
    for _ in range(20_000):
        frame = next(gen)
        try:
            model: tuple[str, Any] | None = WireModel.message(frame)
        except Exception:
            model = None
        try:
            msg: P.Message | None = P.decode(frame)
        except ProtocolError:
            msg = None
        assert (model is None) == (msg is None), (frame, model, msg)
        if model is not None and model[0] == "awareness" and isinstance(msg, P.AwarenessUpdate):
            try:
                entries: list[tuple[int, int, str]] | None = WireModel.awareness(model[1])
            except Exception:
                entries = None
            try:
                theirs: list[tuple[int, int, str]] | None = P.decode_awareness(msg.payload)
            except ProtocolError:
                theirs = None
            assert entries == theirs, frame


@pytest.mark.node
def test_every_presence_the_server_relays_y_protocols_can_read() -> None:
    """The reference reader as the oracle: every awareness update the server accepts (and
    so relays to everyone) must go through y-protocols' applyAwarenessUpdate under Node.js,
    whose throw kills a y-websocket client. Damaged updates are not held to this: y-protocols
    catches what Y.applyUpdate throws (see the report of the fuzz run in docs/security.md)."""
    node_dir = Path(__file__).resolve().parent / "node"
    if not (node_dir / "node_modules" / "y-protocols").is_dir():
        pytest.fail(f"npm packages missing: run `npm ci` in {node_dir} (scripts/test does)")
    gen = FrameGen(seed=5)
    relayed: list[bytes] = []
    for _ in range(20_000):
        frame = next(gen)
        try:
            msg = P.decode(frame)
            if isinstance(msg, P.AwarenessUpdate):
                P.decode_awareness(msg.payload)
                relayed.append(msg.payload)
        except ProtocolError:
            pass
    assert len(relayed) > 500
    lines = "".join(json.dumps({"kind": "awareness", "hex": p.hex()}) + "\n" for p in relayed)
    r = subprocess.run(["node", "yreaders.mjs"], input=lines, capture_output=True, text=True,
                       cwd=node_dir, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(answers) == len(relayed)
    refused = [(p, a["error"]) for p, a in zip(relayed, answers, strict=True) if not a["ok"]]
    assert not refused, refused[:5]


# --- a real server --------------------------------------------------------------------------


async def test_thousands_of_generated_frames_against_a_real_server(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.max_frame_bytes = LIMITS["max_frame_bytes"]
    settings.max_doc_bytes = LIMITS["max_doc_bytes"]
    settings.max_awareness_bytes = LIMITS["max_awareness_bytes"]
    settings.max_events_per_second = 0  # the decoder, not the rate limit
    settings.max_bytes_per_second = 0
    # presence limits that depend on earlier frames are not predicted per frame
    settings.max_awareness_clients_per_connection = 10**6
    settings.unload_after_seconds = 30
    caplog.set_level(logging.WARNING)
    uvicorn_errors = logging.getLogger("uvicorn.error")  # does not propagate to the root
    uvicorn_errors.addHandler(caplog.handler)
    async with run_server(settings) as server, \
            connect(server.ws_url, "fuzz-a", "owner") as owner, \
            connect(server.ws_url, "fuzz-a", "watcher") as watcher:  # fmt: skip
        owner.insert(0, "unchanged")
        await eventually(lambda: watcher.content == "unchanged", what="watcher synced")
        store = server.backend.store
        head_a = await store.head("fuzz-a")

        fuzzer = Fuzzer(server.ws_url, "fuzz-a", "fuzz-b", batch=60)
        report = await fuzzer.run(FrameGen(seed=7), 3000, concurrency=4)
        summary: dict[str, Any] = report.summary()
        assert not report.failures, "\n".join(report.failures[:10])
        assert report.closes[4400] > 500 and report.closes[4413] > 0, summary
        assert summary["predicted"].get(UPDATE, 0) > 50, summary

        # doc A only ever got frames that must not change it
        assert await store.head("fuzz-a") == head_a
        assert watcher.content == owner.content == "unchanged"
        # and its clients are still connected and working
        owner.insert(9, "!")
        await eventually(lambda: watcher.content == "unchanged!", what="the watcher still syncs")
        async with connect(server.ws_url, "fuzz-a", "late") as late:
            assert late.content == "unchanged!"

        # doc B took the updates that decode: its log replays without a failure and
        # equals the live document
        room_b = server.backend.rooms.get_loaded("fuzz-b")
        assert room_b is not None
        await room_b.flush()
        loaded = await load(store, "fuzz-b")
        assert loaded.failed == 0
        assert P.decode_state_vector(loaded.doc.get_state()) == P.decode_state_vector(
            room_b.doc.get_state()
        )
        assert not server.task.done(), "the server is still running"
    uvicorn_errors.removeHandler(caplog.handler)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
