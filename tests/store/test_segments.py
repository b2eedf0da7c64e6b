"""The segment codec (server/store/segments.py): round trips, and damage always found."""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palimpsest.store import log_layout as L
from palimpsest.store import segments as S


def cols(n: int = 5, first_seq: int = 7) -> S.Columns:
    return S.Columns(
        first_seq,
        ts=[1_796_120_546_598 + 40 * i for i in range(n)],
        pos=[1000 + 3 * i for i in range(n)],
        actor=[i % 2 + 1 for i in range(n)],
        kind=[1] * n,
        meta=['{"conn":"vm:1/1"}' if i % 3 else "" for i in range(n)],
        updates=[bytes([i % 256]) * (i + 1) for i in range(n)],
    )


def test_round_trip_and_index_fields() -> None:
    c = cols()
    sealed = S.encode(c)
    assert (sealed.first_seq, sealed.last_seq) == (7, 11)
    assert (sealed.first_pos, sealed.last_pos) == (1000, 1012)
    assert (sealed.ts_min, sealed.ts_max) == (c.ts[0], c.ts[-1])
    assert sealed.raw_bytes == sum(range(1, 6))
    assert S.decode(sealed.blob, sealed.checksum) == c


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**62),  # ts: any order (clocks step back)
            st.integers(1, 2**40),  # pos step
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.text(max_size=20),
            st.binary(max_size=50),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 2**50),
)
def test_any_run_round_trips(rows: list[tuple[int, int, int, int, str, bytes]], first: int) -> None:
    pos, acc = [], 0
    for r in rows:
        acc += r[1]
        pos.append(acc)
    c = S.Columns(first, [r[0] for r in rows], pos, [r[2] for r in rows],
                  [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows])  # fmt: skip
    sealed = S.encode(c)
    assert S.decode(sealed.blob, sealed.checksum) == c


def test_a_flipped_byte_anywhere_is_found() -> None:
    sealed = S.encode(cols(300))
    for i in range(0, len(sealed.blob), max(1, len(sealed.blob) // 50)):
        bad = bytearray(sealed.blob)
        bad[i] ^= 0x40
        assert S.damage(bytes(bad), sealed.checksum) == "checksum does not match"
        with pytest.raises(S.SegmentDamaged, match="checksum"):
            S.decode(bytes(bad), sealed.checksum)


def test_a_wrong_checksum_is_found() -> None:
    sealed = S.encode(cols())
    with pytest.raises(S.SegmentDamaged):
        S.decode(sealed.blob, bytes(32))


def _lzma(body: bytes) -> bytes:
    return lzma.compress(body, format=lzma.FORMAT_RAW, filters=S.LZMA_FILTERS)


def _unlzma(packed: bytes) -> bytes:
    return lzma.decompress(packed, format=lzma.FORMAT_RAW, filters=S.LZMA_FILTERS)


Codec = Callable[[bytes], bytes]


@pytest.mark.parametrize(
    ("fmt", "pack", "unpack"),
    [(S.FORMAT, _lzma, _unlzma), (S.FORMAT_ZLIB, zlib.compress, zlib.decompress)],
)
def test_structure_is_checked_even_when_the_checksum_matches(
    fmt: int, pack: Codec, unpack: Codec
) -> None:
    # a blob written by a broken encoder: the checksum is of the bad blob itself
    sealed = S.encode(cols(), fmt)
    assert sealed.blob[0] == fmt
    body = unpack(sealed.blob[S._HEADER.size :])
    # cut in the updates, one byte too many, cut in the metas
    cut_in_metas = body[: len(body) - sum(map(len, cols().updates)) - 1]
    for bad_body in (body[:-1], body + b"x", cut_in_metas):
        blob = sealed.blob[: S._HEADER.size] + pack(bad_body)
        with pytest.raises(S.SegmentDamaged):
            S.decode(blob, S.checksum(blob))
    # a body that is not a stream of its format at all
    blob = sealed.blob[: S._HEADER.size] + b"\xff" * 40
    with pytest.raises(S.SegmentDamaged, match="does not decompress"):
        S.decode(blob, S.checksum(blob))
    blob = bytes([99]) + sealed.blob[1:]
    with pytest.raises(S.SegmentDamaged, match="format"):
        S.decode(blob, S.checksum(blob))


def test_segments_of_the_zlib_format_still_read() -> None:
    # stores sealed before format 2 hold format-1 blobs; both read back the same columns
    c = cols(300)
    old, new = S.encode(c, S.FORMAT_ZLIB), S.encode(c)
    assert (old.blob[0], new.blob[0]) == (1, 2)
    assert S.decode(old.blob, old.checksum) == S.decode(new.blob, new.checksum) == c
    assert S.damage(old.blob, old.checksum) is None
    with pytest.raises(ValueError):
        S.encode(c, 3)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        S.encode(S.Columns(1, [], [], [], [], [], []))
    c = cols()
    with pytest.raises(ValueError):
        S.encode(S.Columns(1, c.ts[:-1], c.pos, c.actor, c.kind, c.meta, c.updates))


def test_a_run_of_similar_updates_compresses() -> None:
    # 256 keystroke-like updates: the same client id, growing clocks
    head = b"\x01\x01\xc9\xd5\xba\x9f\x0f"
    ups = [head + bytes([i % 128, 0x84]) + b"\x01a\x00" for i in range(256)]
    c = S.Columns(1, [1000 + 90 * i for i in range(256)], list(range(1, 257)), [1] * 256,
                  [1] * 256, ['{"conn":"vm:1/1"}'] * 256, ups)  # fmt: skip
    sealed = S.encode(c)
    assert len(sealed.blob) < 0.3 * sum(map(len, ups))


def _symbols() -> L.Symbols:
    sym = L.Symbols()
    sym.add([(1, "alice"), (2, "bob")])
    return sym


def test_a_read_builds_only_the_events_of_its_range() -> None:
    sealed = S.encode(cols(300, first_seq=101))
    row = L.SegmentRow("d", 101, 400, sealed.blob, sealed.checksum)
    every = L.segment_events(row, _symbols())
    assert [e.seq for e in every] == list(range(101, 401))
    for lo, hi in ((100, 400), (150, 160), (0, 101), (399, 10_000), (400, 500), (0, 100)):
        part = L.segment_events(row, _symbols(), (lo, hi))
        assert part == [e for e in every if lo < e.seq <= hi], (lo, hi)


def test_each_event_gets_its_own_meta() -> None:
    # metas are parsed once per distinct text (most events of a connection share one):
    # changing one event's meta must not change another's
    sealed = S.encode(cols(6))
    row = L.SegmentRow("d", 7, 12, sealed.blob, sealed.checksum)
    events = L.segment_events(row, _symbols())
    shared = [e for e in events if e.meta]
    assert len(shared) == 4 and all(e.meta == {"conn": "vm:1/1"} for e in shared)
    shared[0].meta["conn"] = "changed"
    assert all(e.meta == {"conn": "vm:1/1"} for e in shared[1:])
    again = L.segment_events(row, _symbols())
    assert [e.meta for e in again] == [e.meta for e in L.segment_events(row, _symbols())]
    assert again[1].meta == {"conn": "vm:1/1"}
    # a meta holding a list or an object is parsed afresh each time (never shared)
    nested = '{"clients":[1,2],"x":{"y":1}}'
    a, b = L.parse_meta(nested), L.parse_meta(nested)
    a["clients"].append(3)
    assert b == {"clients": [1, 2], "x": {"y": 1}}
    with pytest.raises(L.StoreError, match="not an object"):
        L.parse_meta("[1]")


def test_a_decoded_segment_is_kept_and_its_blob_checked_again() -> None:
    L.DECODED.clear()
    sealed = S.encode(cols(300, first_seq=101))
    row = L.SegmentRow("d", 101, 400, sealed.blob, sealed.checksum)
    first = L.decode_segment(row)
    assert L.decode_segment(row) is first  # kept: not decoded again
    # the same stored checksum over a blob damaged since: found, never served
    bad = bytearray(sealed.blob)
    bad[len(bad) // 2] ^= 0x01
    with pytest.raises(L.StoreError, match="damaged"):
        L.decode_segment(L.SegmentRow("d", 101, 400, bytes(bad), sealed.checksum))
    # a segment of huge updates is not kept
    big = S.Columns(1, [1, 2], [1, 2], [1, 1], [1, 1], ["", ""], [b"x" * (3 << 20)] * 2)
    sealed = S.encode(big)
    row = L.SegmentRow("d", 1, 2, sealed.blob, sealed.checksum)
    one = L.decode_segment(row)
    again = L.decode_segment(row)
    assert one == again == big and one is not again


@pytest.mark.parametrize("fmt", [S.FORMAT, S.FORMAT_ZLIB])
def test_a_partial_read_is_the_whole_decode_of_what_it_picks(fmt: int) -> None:
    """decode_some gives exactly what decode gives for the events picked, in either
    format, and inflates the body only up to the last update picked."""
    n = 300
    c = S.Columns(
        1,
        ts=[5_000 - 7 * i for i in range(n)],
        pos=[10 + 2 * i for i in range(n)],
        actor=[i % 3 for i in range(n)],
        kind=[i % 2 for i in range(n)],
        meta=[f'{{"i":{i},"é":1}}' if i % 4 else "" for i in range(n)],
        updates=[i.to_bytes(2, "big") * (i % 50 + 100) for i in range(n)],
    )
    sealed = S.encode(c, fmt)
    whole = S.decode(sealed.blob, sealed.checksum)
    body = 32 * n + sum(len(m.encode()) for m in c.meta) + sum(map(len, c.updates))
    for picked in ([], [0], list(range(50)), [3, 150, 299], [299], list(range(n))):
        before = S.DECOMPRESSED.bytes
        index, got, metas, updates = S.decode_some(
            sealed.blob, sealed.checksum, lambda i, p=picked: p
        )
        spent = S.DECOMPRESSED.bytes - before
        assert (index.ts, index.pos, index.actor, index.kind) == (c.ts, c.pos, c.actor, c.kind)
        assert got == picked
        assert metas == [whole.meta[i] for i in picked]
        assert updates == [bytes(whole.updates[i]) for i in picked]
        # the body up to the end of its last update (the whole body for the last event)
        last = picked[-1] if picked else -1
        need = body - sum(len(u) for u in c.updates[last + 1 :]) if picked else 32 * n
        assert spent == need, (picked[:3], spent, need)
    with pytest.raises(S.SegmentDamaged):
        S.decode_some(
            sealed.blob[:-1] + bytes([sealed.blob[-1] ^ 1]), sealed.checksum, lambda i: [0]
        )
