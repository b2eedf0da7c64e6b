"""Pure encode/decode of frames, including every malformed case."""

from __future__ import annotations

import pytest

from palimpsest import protocol as P
from palimpsest.errors import ProtocolError


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16384, 2**32 - 1, 2**53])
def test_var_uint_round_trip(value: int) -> None:
    r = P.Reader(P.write_var_uint(value))
    assert r.read_var_uint() == value
    r.expect_end("varUint")


def test_var_uints_in_a_row_every_width() -> None:
    """The reader's fast paths (1-3 bytes inline, longer ones scanned and remembered by
    their bytes) read every width back to back, from bytes and from a memoryview; a
    truncated or over-long one is refused with its offset, not misread."""
    values = [2**k + d for k in range(64) for d in (-1, 0, 1) if 2**k + d >= 0]
    values += [2**64 - 1, 5, 2**53 - 1, 5, 2**53 - 1]  # a client id seen again
    frame = b"".join(P.write_var_uint(v) for v in values)
    for data in (frame, memoryview(frame)):
        r = P.Reader(data)
        assert [r.read_var_uint() for _ in values] == values
        r.expect_end("varUints")
    long = P.write_var_uint(2**53 - 1)
    for cut in range(len(long)):
        with pytest.raises(ProtocolError, match="truncated"):
            P.Reader(long[:cut]).read_var_uint()
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        P.Reader(b"\x80" * 10 + b"\x01").read_var_uint()


@pytest.mark.parametrize(
    "msg",
    [
        P.SyncStep1(b"\x01\x02\x03"),
        P.SyncStep2(b"\x00\x00"),
        P.SyncUpdate(b"\x01" * 300),
        P.AwarenessUpdate(P.encode_awareness_entries([(7, 3, '{"user":"a"}')])),
        P.QueryAwareness(),
        P.AuthMessage(0, "read-only"),
        P.Extension({"type": "undo", "id": 4}),
    ],
)
def test_messages_round_trip(msg: P.Message) -> None:
    assert P.decode(P.encode(msg)) == msg


def test_y_websocket_byte_layout() -> None:
    # what y-websocket sends: [0 sync][0 step1][len][sv]
    assert P.encode_sync_step1(b"\x00") == b"\x00\x00\x01\x00"
    assert P.encode_sync_update(b"\x00\x00") == b"\x00\x02\x02\x00\x00"
    assert P.encode_permission_denied("no") == b"\x02\x00\x02no"
    assert P.encode_query_awareness() == b"\x03"


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b"", "empty frame"),
        (b"\x80", "truncated message type"),
        (b"\x00", "truncated sync message type"),
        (b"\x00\x07\x00", "unknown sync message type 7"),
        (b"\x09", "unknown message type 9"),
        (b"\x00\x02\x05\x00\x00", "declares 5 bytes but only 2 remain"),
        (b"\x00\x02\x01\x00\x00", "unexpected trailing bytes"),
        (b"\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "longer than 10 bytes"),
        (b"\x01", "truncated length of awareness update"),
        (b"\x02\x00\x02\xff\xfe", "not valid UTF-8"),
        (P.write_var_uint(100) + P.write_var_string("[1]"), "must be a JSON object"),
        (P.write_var_uint(100) + P.write_var_string("{nope"), "not JSON"),
        (b"\x03\x00", "trailing bytes"),
    ],
)
def test_malformed_frames_say_what_is_wrong(frame: bytes, expected: str) -> None:
    with pytest.raises(ProtocolError, match=expected):
        P.decode(frame)


def test_state_vector_and_awareness_decoding() -> None:
    sv = (
        P.write_var_uint(2)
        + P.write_var_uint(5)
        + P.write_var_uint(10)
        + P.write_var_uint(9)
        + P.write_var_uint(1)
    )
    assert P.decode_state_vector(sv) == {5: 10, 9: 1}
    with pytest.raises(ProtocolError):
        P.decode_state_vector(sv[:-1])
    entries = [(1, 2, "null"), (300, 1, '{"x":1}')]
    assert P.decode_awareness(P.encode_awareness_entries(entries)) == entries


@pytest.mark.parametrize("size", [0, 1, 27, 127, 128, 129, 5000, 16383, 16384, 70000])
def test_the_sync_update_fast_path_reads_what_decode_reads(size: int) -> None:
    """`sync_update_of` (the keystroke's path in the connection) returns the update
    `decode` reads, or None and leaves the frame to `decode`: never another answer."""
    update = bytes((i * 7 + 3) % 256 for i in range(size))
    frame = P.encode_sync_update(update)
    got = P.sync_update_of(frame)
    if size < 16384:  # a length of one or two bytes
        assert got == update
    else:
        assert got is None
    assert P.decode(frame) == P.SyncUpdate(update)
    # cut short or with a byte too many: not a sync update of this shape
    for bad in (frame[:-1], frame + b"\x00"):
        assert P.sync_update_of(bad) is None
        if size:
            with pytest.raises(ProtocolError):
                P.decode(bad)


@pytest.mark.parametrize(
    "frame",
    [
        P.encode_sync_step1(b"\x00"),
        P.encode_sync_step2(b"\x00\x00"),
        P.encode_awareness(b"\x00"),
        b"\x00\x02",
        b"\x00\x02\x80",
        b"\x00\x02\x81\x80\x01",
        b"",
    ],
)
def test_other_frames_are_left_to_decode(frame: bytes) -> None:
    assert P.sync_update_of(frame) is None
